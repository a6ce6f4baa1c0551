r"""Logits processors for Hugging Face ``generate()`` that truncate by :func:`softmaxkit.truncate`.

Pass them as ``model.generate(..., do_sample=True, top_k=0,
logits_processor=...)``: each call returns :func:`softmaxkit.truncate` of
the scores, so the classes kept at each step are exactly those
:func:`softmaxkit.sample` would draw from.  ``generate()`` puts its own
warpers (built from its generation config, whose ``top_k`` is 50 unless set)
after custom processors: ``top_k=0`` switches its top-k off, and its
``temperature``, ``top_p`` and ``min_p`` are off while left unset.

The classes take the arguments of ``transformers``' own warpers of the same
name and apply the same rules; one call of :class:`TruncationLogitsWarper`
(what :func:`logits_processor` builds) applies them all, in ``generate()``'s
order: temperature, then top-k, top-p and min-p, each on the distribution
the previous ones left.

Where the results differ from ``transformers``' warpers
--------------------------------------------------------
For the same scores, the kept classes are the same except in the cases
below, where ``transformers`` decides by rounding or by sort order and
softmaxkit by the rule itself.

* **Values.**  Kept entries are ``(x - max x) / T`` (``truncate``'s
  output), not ``x / T``: a constant apart in each row, so the
  probabilities, and the draw, are the same.  The largest kept entry is 0.
  Classes not kept get ``filter_value``, ``-inf`` inputs included.
* **+inf scores.**  The ``+inf`` entries of a row are kept (value 0) and
  share its mass; every other entry of that row is dropped.
  ``transformers``' softmax gives NaN there, and ``generate()`` then fails
  in ``torch.multinomial``.
* **Rows with nothing to draw** (every score ``-inf``) and NaN scores raise
  ``ValueError`` naming the row; ``transformers`` passes them on, to the
  same failure in ``torch.multinomial``.
* **Temperature.**  ``T = 0`` keeps the argmax alone (the first among
  ties); ``transformers`` refuses 0 and ints.  ``transformers`` rounds
  ``x / T`` to float32, which can make two logits near the maximum equal
  (then both survive a top-k of 1); softmaxkit subtracts the maximum first,
  in float64 for float32 scores, and :class:`TruncationLogitsWarper` ranks
  the logits themselves.
* **Top-k.**  The same rule: every class whose score equals the ``k``-th
  largest is kept, and ``k`` is at least ``min_tokens_to_keep``.
* **Top-p.**  A class is kept when the probability of the classes ranked
  before it is below ``top_p``, in both.  ``transformers`` evaluates it as
  "the float32 cumulative sum of the float32 softmax, in increasing order,
  exceeds ``1 - top_p`` rounded to float32", so a class whose mass before
  it lies within float32 rounding (about ``1e-7``) of ``top_p`` may be
  kept or dropped either way; softmaxkit sums ``exp((x - max x) / T)`` in
  float64 and compares with ``top_p`` times the total.  At the boundary
  ``transformers`` keeps some of a tie, chosen by ``torch.sort``;
  softmaxkit keeps all of it.  With ``top_p = 1`` ``transformers`` drops
  the classes whose float32 probability is 0 (scores more than about 104
  below the maximum); softmaxkit keeps every class.  ``top_p = 0`` is
  refused (``transformers`` keeps ``min_tokens_to_keep`` classes).
* **Min-p.**  A class is kept when ``p_j >= min_p * max p``, in both.
  ``transformers`` compares float32 probabilities, so a class whose ratio
  ``p_j / max p`` lies within float32 rounding of ``min_p`` (a relative
  ``1e-7``, coarser where ``p_j`` is subnormal, below ``1.2e-38``) may go
  either way; softmaxkit computes the ratio as ``exp((x_j - max x) / T)``
  in float64 and compares it with ``min_p``.
* **min_tokens_to_keep.**  The classes that ``top_k = min_tokens_to_keep``
  keeps are kept whatever the other settings say, ties with the
  ``min_tokens_to_keep``-th largest score included; ``transformers``'
  top-p and min-p keep exactly that many, chosen among ties by sort order.
"""

from __future__ import annotations

import math
from typing import Any

import torch

try:
    from transformers import LogitsProcessor, LogitsProcessorList
except ImportError as exc:  # pragma: no cover - exercised only without transformers
    raise ImportError(
        "softmaxkit.torch.integrations.transformers needs Hugging Face transformers: pip install 'transformers>=4.40'"
    ) from exc

from softmaxkit.frontend import validate
from softmaxkit.frontend.sampling import _min_p, _temperature, _top_k, _top_p, truncate

__all__ = [
    "MinPLogitsWarper",
    "TemperatureLogitsWarper",
    "TopKLogitsWarper",
    "TopPLogitsWarper",
    "TruncationLogitsWarper",
    "logits_processor",
]


class TruncationLogitsWarper(LogitsProcessor):
    r"""Temperature, top-k, top-p and min-p in one step: :func:`softmaxkit.truncate` as a ``transformers`` logits processor.

    .. math:: \mathrm{out}_{bj} = \begin{cases} (x_{bj} - \max_i x_{bi}) / T & j \in S_b \\
              \mathtt{filter\_value} & j \notin S_b \end{cases}

    for each row ``b`` of the scores, where ``S_b`` is the set of classes
    :func:`softmaxkit.sample` draws from with these settings (see
    :func:`softmaxkit.truncate`), together with the classes that
    ``top_k = min_tokens_to_keep`` keeps.

    Parameters
    ----------
    temperature : float, default 1.0
        Finite and ``>= 0``; 0 keeps the argmax alone.
    top_k : int >= 1 or None, optional
        Keep the ``top_k`` largest scores, and every score equal to the
        ``top_k``-th.
    top_p : float in (0, 1] or None, optional
        Keep a class when the probability of the classes ranked before it is
        below ``top_p``.
    min_p : float in [0, 1] or None, optional
        Keep a class when ``p_j >= min_p * max p``.
    filter_value : float, default -inf
        The value of the classes not kept.
    min_tokens_to_keep : int >= 1, default 1
        Keep at least the ``min_tokens_to_keep`` largest scores (and their
        ties).

    The call takes ``(input_ids, scores)``, ``scores`` of shape
    ``(batch, vocabulary)``, and returns a tensor of the scores' shape,
    dtype and device.  Each row is truncated on its own.  The settings are
    applied in ``generate()``'s order, all on the scaled logits computed once
    (in float64 for float32 scores, so no rounding comes between the
    steps); where this differs from ``transformers``' warpers is listed in
    the module's documentation.

    Raises
    ------
    ValueError, TypeError
        At construction, for a setting out of range or of the wrong kind (as
        :func:`softmaxkit.sample`); when called, for a NaN score or a row
        whose scores are all ``-inf``.

    Examples
    --------
    >>> import torch
    >>> from softmaxkit.torch.integrations.transformers import TruncationLogitsWarper
    >>> scores = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 3.0, 3.0, 1.0]])
    >>> TruncationLogitsWarper(temperature=0.5, top_k=2)(None, scores)
    tensor([[ 0., -2., -inf, -inf],
            [-inf,  0.,  0., -inf]])
    """

    def __init__(
        self,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        filter_value: float = -math.inf,
        min_tokens_to_keep: int = 1,
    ) -> None:
        self.temperature = _temperature(temperature)
        self.top_k = _top_k(top_k)
        self.top_p = _top_p(top_p)
        self.min_p = _min_p(min_p)
        self.filter_value = validate.real_number(filter_value, "filter_value")
        self.min_tokens_to_keep = validate.count(min_tokens_to_keep, "min_tokens_to_keep", 1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        """The truncated, shifted scores: ``scores``' shape, dtype and device."""
        out = truncate(scores, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, min_p=self.min_p)
        if self.min_tokens_to_keep > 1:
            # The union of two kept sets: kept entries hold the same value in both, the others -inf.
            out = torch.maximum(out, truncate(scores, temperature=self.temperature, top_k=self.min_tokens_to_keep))
        if self.filter_value != -math.inf:
            out = out.masked_fill(out == -math.inf, self.filter_value)
        return out


class TemperatureLogitsWarper(TruncationLogitsWarper):
    r"""``transformers.TemperatureLogitsWarper`` by :func:`softmaxkit.truncate`: ``(x - max x) / T``.

    .. math:: \mathrm{out}_{bj} = (x_{bj} - \max_i x_{bi}) / T

    ``transformers``' warper returns ``x / T``: the same probabilities.
    ``x - max x`` is exact for float32 scores (computed in float64) and the
    quotient is rounded once, so logits near the maximum stay apart where
    ``x / T`` in float32 can round them together.  ``T = 0`` keeps the
    argmax alone (``transformers`` refuses it).  A row holding ``+inf``
    keeps its ``+inf`` entries, with value 0; a row of ``-inf`` or with a
    NaN raises ``ValueError``.

    Parameters
    ----------
    temperature : float
        Finite and ``>= 0``.

    Examples
    --------
    >>> import torch
    >>> from softmaxkit.torch.integrations.transformers import TemperatureLogitsWarper
    >>> TemperatureLogitsWarper(0.5)(None, torch.tensor([[1.0, 2.0, -float("inf")]]))
    tensor([[-2., 0., -inf]])
    """

    def __init__(self, temperature: float) -> None:
        super().__init__(temperature=temperature)


class TopKLogitsWarper(TruncationLogitsWarper):
    r"""``transformers.TopKLogitsWarper`` by :func:`softmaxkit.truncate`: the ``k`` largest scores and their ties.

    .. math:: \mathrm{out}_{bj} = \begin{cases} x_{bj} - \max_i x_{bi} & x_{bj} \ge x_{b(k)} \\
              \mathtt{filter\_value} & \text{otherwise} \end{cases}

    with ``x_(k)`` the ``k``-th largest score of the row and
    ``k = max(top_k, min_tokens_to_keep)``; ``k`` at least the vocabulary
    keeps every class.  The kept classes are those of ``transformers``'
    warper, which keeps ties too; its values are ``x``, a constant apart.

    Parameters
    ----------
    top_k : int >= 1
    filter_value : float, default -inf
    min_tokens_to_keep : int >= 1, default 1

    Examples
    --------
    >>> import torch
    >>> from softmaxkit.torch.integrations.transformers import TopKLogitsWarper
    >>> TopKLogitsWarper(2)(None, torch.tensor([[3.0, 2.0, 2.0, 1.0]]))
    tensor([[ 0., -1., -1., -inf]])
    """

    def __init__(self, top_k: int, filter_value: float = -math.inf, min_tokens_to_keep: int = 1) -> None:
        super().__init__(top_k=top_k, filter_value=filter_value, min_tokens_to_keep=min_tokens_to_keep)


class TopPLogitsWarper(TruncationLogitsWarper):
    r"""``transformers.TopPLogitsWarper`` by :func:`softmaxkit.truncate`: nucleus sampling decided exactly.

    .. math:: j \text{ kept} \iff \sum_{i:\ p_i > p_j} p_i < \mathtt{top\_p}
              \ \text{ or }\ p_j = p_{j'} \text{ for a kept } j'

    (the most probable class is always kept), plus the
    ``min_tokens_to_keep`` largest scores and their ties; kept entries are
    ``x - max x``, the others ``filter_value``.  The sum is a float64
    cumulative sum of ``exp(x - max x)``, compared with ``top_p`` times the
    total.  ``transformers``' warper decides by float32 rounding within
    about ``1e-7`` of ``top_p``, keeps part of a tie at the boundary, and
    with ``top_p = 1`` drops the classes whose float32 probability is 0;
    this one keeps whole ties and, with ``top_p = 1``, every class.

    Parameters
    ----------
    top_p : float in (0, 1]
    filter_value : float, default -inf
    min_tokens_to_keep : int >= 1, default 1

    Examples
    --------
    Four equally likely classes and ``top_p = 0.5``: two reach the mass, and
    the tie keeps all four.  ``transformers`` keeps two of them.

    >>> import torch, transformers
    >>> from softmaxkit.torch.integrations.transformers import TopPLogitsWarper
    >>> scores = torch.zeros(1, 4)
    >>> TopPLogitsWarper(0.5)(None, scores)
    tensor([[0., 0., 0., 0.]])
    >>> int((transformers.TopPLogitsWarper(0.5)(None, scores) > -float("inf")).sum())
    2
    """

    def __init__(self, top_p: float, filter_value: float = -math.inf, min_tokens_to_keep: int = 1) -> None:
        super().__init__(top_p=top_p, filter_value=filter_value, min_tokens_to_keep=min_tokens_to_keep)


class MinPLogitsWarper(TruncationLogitsWarper):
    r"""``transformers.MinPLogitsWarper`` by :func:`softmaxkit.truncate`: ``p_j >= min_p * max p``.

    .. math:: j \text{ kept} \iff \exp(x_j - \max_i x_i) \ge \mathtt{min\_p}

    plus the ``min_tokens_to_keep`` largest scores and their ties; kept
    entries are ``x - max x``, the others ``filter_value``.  The ratio is
    computed directly, in float64 for float32 scores, where
    ``transformers``' warper compares float32 probabilities, deciding
    ratios within float32 rounding of ``min_p`` either way.

    Parameters
    ----------
    min_p : float in [0, 1]
    filter_value : float, default -inf
    min_tokens_to_keep : int >= 1, default 1

    Examples
    --------
    >>> import math, torch
    >>> from softmaxkit.torch.integrations.transformers import MinPLogitsWarper
    >>> MinPLogitsWarper(0.1)(None, torch.tensor([[0.0, math.log(0.2), math.log(0.05)]]))
    tensor([[ 0.0000, -1.6094,    -inf]])
    """

    def __init__(self, min_p: float, filter_value: float = -math.inf, min_tokens_to_keep: int = 1) -> None:
        super().__init__(min_p=min_p, filter_value=filter_value, min_tokens_to_keep=min_tokens_to_keep)


def logits_processor(
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    min_tokens_to_keep: int = 1,
) -> Any:
    r"""A ``transformers.LogitsProcessorList`` that truncates as :func:`softmaxkit.sample` does.

    One :class:`TruncationLogitsWarper` with these settings: at each step of
    ``generate()`` the scores become :func:`softmaxkit.truncate` of them
    (temperature, then top-k, top-p and min-p, on scaled logits computed
    once), the classes not kept ``-inf``.  Pass it with ``do_sample=True``
    and ``top_k=0``, so that ``generate()`` adds no truncation of its own.

    Parameters
    ----------
    temperature, top_k, top_p, min_p, min_tokens_to_keep
        As in :class:`TruncationLogitsWarper`.

    Returns
    -------
    transformers.LogitsProcessorList

    Examples
    --------
    >>> import torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from softmaxkit.torch.integrations.transformers import logits_processor
    >>> _ = torch.manual_seed(0)
    >>> model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=40)).eval()
    >>> prompt = torch.tensor([[1, 2, 3]])
    >>> out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_k=0,
    ...                      max_new_tokens=4, pad_token_id=0, logits_processor=logits_processor(top_k=1))
    >>> bool((out == model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
    ...                             max_new_tokens=4, pad_token_id=0)).all())
    True
    """
    return LogitsProcessorList(
        [
            TruncationLogitsWarper(
                temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, min_tokens_to_keep=min_tokens_to_keep
            )
        ]
    )
