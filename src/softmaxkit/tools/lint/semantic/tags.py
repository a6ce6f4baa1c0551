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
# ``sum ** -1`` (or ``1 / sum``) of the sums above.
RECIP_SUM_EXP = "recip_sum_exp"
RECIP_SUM_EXP_SHIFTED = "recip_sum_exp_shifted"
SHIFTED = "shifted"
MAX = "max"
# Scores with entries set to -inf where some row may lose every entry.
MASKED = "masked"
# Scores with entries set to -inf by a mask that leaves every row an entry:
# causal, sliding-window (band) and top-k masks.
MASKED_PARTIAL = "masked_partial"
# A mask built from tril/triu or from comparing positions (causal, band).
STRUCTURAL = "structural"
# The values of a top-k, and the mask that compares scores with them.
TOPK = "topk"
TOPK_MASK = "topk_mask"
# The cumulative sum of probabilities, which top-p (nucleus) sampling thresholds.
CUMULATIVE_PROB = "cumulative_prob"
# Positions (arange); comparing two of them gives a structural mask, while one
# compared with lengths gives a padding mask.
POSITIONS = "positions"
# Differences of positions (``i - j``), which compared with anything give a
# structural (causal or band) mask.
OFFSETS = "offsets"
# An array with one axis (``torch.zeros(n)``), or two (``x.view(n, -1)``), whatever it holds.
VECTOR = "vector"
MATRIX = "matrix"
# An array in extended precision (``np.float128``): its exp overflows only above about 11356.
EXTENDED = "extended"
# Integer-valued: sizes, counts, lengths, loop indices, rounded values.
INTEGER = "integer"

# Indexing, reshaping and concatenating a tensor keeps the kind of its values.
INDEXABLE = frozenset(
    {
        PROB,
        LOGPROB,
        SIGMOID,
        EXP,
        EXP_SHIFTED,
        SUM_EXP,
        SUM_EXP_SHIFTED,
        RECIP_SUM_EXP,
        RECIP_SUM_EXP_SHIFTED,
        MAX,
        MASKED,
        MASKED_PARTIAL,
        STRUCTURAL,
        TOPK,
        TOPK_MASK,
        CUMULATIVE_PROB,
        POSITIONS,
        OFFSETS,
        INTEGER,
    }
)
# Masks whose True (or kept) entries leave every row at least one entry.
ROW_PRESERVING = frozenset({STRUCTURAL, TOPK_MASK})


class Bounded:
    """An array built from numeric literals, whose entries are at most ``bound`` in magnitude.

    ``torch.tensor([1.1]) * torch.tensor([2.2])`` is ``Bounded(2.42)``: its
    sigmoid cannot saturate and its exponential cannot overflow.
    """

    __slots__ = ("bound",)

    def __init__(self, bound: float) -> None:
        self.bound = bound

    def __eq__(self, other: object) -> bool:
        return type(other) is Bounded and other.bound == self.bound

    def __hash__(self) -> int:
        return hash((Bounded, self.bound))


class Items:
    """A tuple whose elements hold values of the kinds ``tags`` (``return probs, mu, logvar``)."""

    __slots__ = ("tags",)

    def __init__(self, tags: tuple[object, ...]) -> None:
        self.tags = tags

    def __eq__(self, other: object) -> bool:
        return type(other) is Items and other.tags == self.tags

    def __hash__(self) -> int:
        return hash((Items, self.tags))


class Modal:
    """A value whose kind depends on a mode: ``cases`` maps ``(name, constant)`` to a kind.

    ``if self.mode == "mean": x = sigmoid(x) elif self.mode == "argmax": x =
    softmax(x)`` gives ``x`` the cases ``("mode", "mean")`` and ``("mode",
    "argmax")``; where code tests the same name against the same constant
    (``if cfg.mode == "mean":``), the value has that case's kind, and where
    it tests it against another, ``default``'s. Elsewhere it has no kind.
    """

    __slots__ = ("cases", "default")

    def __init__(self, cases: dict[tuple[str, object], object], default: object) -> None:
        self.cases = cases
        self.default = default

    def __eq__(self, other: object) -> bool:
        return type(other) is Modal and other.cases == self.cases and other.default == self.default

    def __hash__(self) -> int:
        return hash((Modal, tuple(self.cases)))


class Calls:
    """A callable object whose calls return values of kind ``result``.

    ``origin`` is the call that built it (``nn.Softmax()``), where known; it
    does not take part in comparisons.
    """

    __slots__ = ("result", "origin")

    def __init__(self, result: object, origin: object = None) -> None:
        self.result = result
        self.origin = origin

    def __eq__(self, other: object) -> bool:
        return type(other) is Calls and other.result == self.result

    def __hash__(self) -> int:
        return hash((Calls, self.result))


class Loss:
    """An instance of a torch loss class."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __eq__(self, other: object) -> bool:
        return type(other) is Loss and other.kind == self.kind

    def __hash__(self) -> int:
        return hash((Loss, self.kind))
