"""Value kinds ("tags"): what an expression is known to hold.

A tag is one of the kind strings below, or an object that says what calling
the value gives: ``Calls``, ``Loss`` and the records of :mod:`.scopes`.
"""

from __future__ import annotations

PROB = "prob"
LOGPROB = "logprob"
SIGMOID = "sigmoid"
EXP = "exp"
EXP_SHIFTED = "exp_shifted"
SUM_EXP = "sum_exp"
SUM_EXP_SHIFTED = "sum_exp_shifted"
SHIFTED = "shifted"
MAX = "max"
MASKED = "masked"

# Indexing a tensor keeps the kind of its values.
INDEXABLE = frozenset({PROB, LOGPROB, SIGMOID, EXP, EXP_SHIFTED, SUM_EXP, SUM_EXP_SHIFTED, MAX, MASKED})


class Calls:
    """A callable object whose calls return values of kind ``result``."""

    __slots__ = ("result",)

    def __init__(self, result: object) -> None:
        self.result = result


class Loss:
    """An instance of a torch loss class."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind
