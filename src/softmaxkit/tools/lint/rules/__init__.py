"""The rules, one module per rule named after its code and name, in code order.

SMK000 reports files that cannot be checked; SMK1xx softmax, log-softmax,
logsumexp and attention masks; SMK2xx losses given the wrong kind of input; SMK3xx element-wise
log and exp that lose accuracy. Patterns shared by several rules live in
``patterns``.
"""

from __future__ import annotations

from softmaxkit.tools.lint.rule import Rule
from softmaxkit.tools.lint.rules.smk000_syntax_error import ParseFailure
from softmaxkit.tools.lint.rules.smk101_naive_softmax import NaiveSoftmax
from softmaxkit.tools.lint.rules.smk102_log_of_softmax import LogOfSoftmax
from softmaxkit.tools.lint.rules.smk103_manual_logsumexp import ManualLogSumExp
from softmaxkit.tools.lint.rules.smk104_softmax_implicit_dim import SoftmaxImplicitDim
from softmaxkit.tools.lint.rules.smk105_temperature_after_softmax import TemperatureAfterSoftmax
from softmaxkit.tools.lint.rules.smk106_unguarded_masked_softmax import UnguardedMaskedSoftmax
from softmaxkit.tools.lint.rules.smk107_min_sentinel_mask_sum import MinSentinelMaskSum
from softmaxkit.tools.lint.rules.smk108_multihead_attention_padded_weights import MultiheadAttentionPaddedWeights
from softmaxkit.tools.lint.rules.smk201_softmax_before_cross_entropy import SoftmaxBeforeCrossEntropy
from softmaxkit.tools.lint.rules.smk202_nll_loss_on_probabilities import NllLossOnProbabilities
from softmaxkit.tools.lint.rules.smk203_manual_cross_entropy import ManualCrossEntropy
from softmaxkit.tools.lint.rules.smk204_sigmoid_before_binary_cross_entropy import SigmoidBeforeBinaryCrossEntropy
from softmaxkit.tools.lint.rules.smk205_kl_div_on_probabilities import KlDivOnProbabilities
from softmaxkit.tools.lint.rules.smk301_log_one_plus import LogOnePlus
from softmaxkit.tools.lint.rules.smk302_exp_minus_one import ExpMinusOne
from softmaxkit.tools.lint.rules.smk303_log_of_sigmoid import LogOfSigmoid

# Always reported: selection and noqa comments do not apply to it.
PARSE_FAILURE = ParseFailure()

# The rules that selection chooses from.
RULES: tuple[Rule, ...] = (
    NaiveSoftmax(),
    LogOfSoftmax(),
    ManualLogSumExp(),
    SoftmaxImplicitDim(),
    TemperatureAfterSoftmax(),
    UnguardedMaskedSoftmax(),
    MinSentinelMaskSum(),
    MultiheadAttentionPaddedWeights(),
    SoftmaxBeforeCrossEntropy(),
    NllLossOnProbabilities(),
    ManualCrossEntropy(),
    SigmoidBeforeBinaryCrossEntropy(),
    KlDivOnProbabilities(),
    LogOnePlus(),
    ExpMinusOne(),
    LogOfSigmoid(),
)

ALL_RULES: tuple[Rule, ...] = (PARSE_FAILURE, *RULES)


def find_rule(code_or_name: str) -> Rule | None:
    """The rule with this code (any case) or name."""
    wanted = code_or_name.strip()
    for rule in ALL_RULES:
        if rule.code == wanted.upper() or rule.name == wanted:
            return rule
    return None
