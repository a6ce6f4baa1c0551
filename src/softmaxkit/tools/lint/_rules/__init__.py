"""The rules, one module per family: SMK1xx softmax, SMK2xx losses, SMK3xx element-wise."""

from __future__ import annotations

from softmaxkit.tools.lint.rule import Rule
from softmaxkit.tools.lint._rules.elementwise import ExpMinusOne, LogOfSigmoid, LogOnePlus
from softmaxkit.tools.lint._rules.losses import (
    KlDivOnProbabilities,
    ManualCrossEntropy,
    NllLossOnProbabilities,
    SigmoidBeforeBinaryCrossEntropy,
    SoftmaxBeforeCrossEntropy,
)
from softmaxkit.tools.lint._rules.softmax import (
    LogOfSoftmax,
    ManualLogSumExp,
    NaiveSoftmax,
    SoftmaxImplicitDim,
    TemperatureAfterSoftmax,
    UnguardedMaskedSoftmax,
)


class SyntaxError_(Rule):
    """
    ## What it does
    Reports a file (or notebook cell) that cannot be parsed as Python, with
    the parser's message; code nested too deeply to parse (an expression
    of some 3000 levels: a chain of that many operators, calls or
    attributes, or of unary minus signs); a file whose encoding cannot be
    decoded; and a notebook that is not
    valid JSON or whose JSON does not have a notebook's shape (a cell's
    `source` that is not a string or a list of strings, say). The other
    rules cannot check such a file; the run goes on with the next one.

    This code is always reported: `--select`, `--ignore` and `# noqa` do not
    apply to it.

    ## Why is this bad?
    Nothing in the file was checked.

    ## Example
    ```python
    loss = F.cross_entropy(logits, target
    ```

    ## Use instead
    ```python
    loss = F.cross_entropy(logits, target)
    ```

    ## Fix safety
    No fix is offered.

    ## References
    - Python documentation of the `ast` module.
    """

    code = "SMK000"
    name = "syntax-error"
    message = "the file could not be parsed"


SYNTAX_ERROR = SyntaxError_()

RULES: tuple[Rule, ...] = (
    NaiveSoftmax(),
    LogOfSoftmax(),
    ManualLogSumExp(),
    SoftmaxImplicitDim(),
    TemperatureAfterSoftmax(),
    UnguardedMaskedSoftmax(),
    SoftmaxBeforeCrossEntropy(),
    NllLossOnProbabilities(),
    ManualCrossEntropy(),
    SigmoidBeforeBinaryCrossEntropy(),
    KlDivOnProbabilities(),
    LogOnePlus(),
    ExpMinusOne(),
    LogOfSigmoid(),
)

ALL_RULES: tuple[Rule, ...] = (SYNTAX_ERROR, *RULES)


def find_rule(code_or_name: str) -> Rule | None:
    """The rule with this code (any case) or name."""
    wanted = code_or_name.strip()
    for rule in ALL_RULES:
        if rule.code == wanted.upper() or rule.name == wanted:
            return rule
    return None
