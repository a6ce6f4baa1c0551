"""SMK000 syntax-error: a file or notebook cell that cannot be parsed."""

from __future__ import annotations

from softmaxkit.tools.lint.rule import Rule


class ParseFailure(Rule):
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

    This rule is an error: nothing in the file was checked.

    ## Why is this bad?
    Nothing in the file was checked.

    ## Example
    ```python
    import torch.nn.functional as F

    loss = F.cross_entropy(logits, target
    ```

    ## Use instead
    ```python
    import torch.nn.functional as F

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
    severity = "error"
