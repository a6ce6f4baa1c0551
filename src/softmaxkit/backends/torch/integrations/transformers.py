r"""Hugging Face ``transformers`` integration: logits processors for ``generate()`` that truncate by
:func:`softmaxkit.truncate`, and a causal language model's training loss by
:func:`softmaxkit.torch.linear_cross_entropy`.

:func:`use_fused_loss` makes a ``*ForCausalLM`` model compute its loss from
the hidden states that reach ``lm_head`` and its weight, without forming the
logits; :func:`remove_fused_loss` undoes it.  Their documentation states the
contract; the rest of this text is about the logits processors.

Pass the logits processors as ``model.generate(..., do_sample=True, top_k=0,
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

import inspect
import math
from typing import Any

import torch

try:
    import transformers
    from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedModel
except ImportError as exc:  # pragma: no cover - exercised only without transformers
    raise ImportError(
        "softmaxkit.torch.integrations.transformers needs Hugging Face transformers: pip install 'transformers>=4.40'"
    ) from exc

from softmaxkit.backends.torch.linear import linear_cross_entropy
from softmaxkit.frontend import validate
from softmaxkit.frontend.sampling import _min_p, _temperature, _top_k, _top_p, truncate

__all__ = [
    "MinPLogitsWarper",
    "TemperatureLogitsWarper",
    "TopKLogitsWarper",
    "TopPLogitsWarper",
    "TruncationLogitsWarper",
    "logits_processor",
    "remove_fused_loss",
    "use_fused_loss",
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


# --- the training loss of a causal language model, without its logits ---------------------

# transformers 4.50: model.loss_function settable per instance, logits_to_keep in the Llama family.
_FUSED_LOSS_SINCE = (4, 50)
# Config fields of models that scale the logits after the head (Cohere, Granite): the fused loss
# would leave the scale out.
_LOGIT_SCALES = ("logit_scale", "logits_scaling")
_ABSENT = object()


def _head(model: Any) -> torch.nn.Linear:
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        raise TypeError(
            f"model.get_output_embeddings() must be a torch.nn.Linear (the lm_head); got {type(head).__module__}.{type(head).__name__}"
        )
    return head


class _FusedLossForward:
    """The ``forward`` that :func:`use_fused_loss` sets on one model instance.

    A callable object holding its model, not a closure: ``copy.deepcopy`` and
    ``pickle`` of the model then copy it along with the model it belongs to.
    """

    def __init__(self, model: Any, previous: Any, return_logits: bool) -> None:
        self.model = model
        # The instance's own forward before (another wrapper), or None for the class's.
        self.previous = previous
        self.return_logits = return_logits

    def inner(self) -> Any:
        """The forward this one calls: the previous instance forward, or the class's, bound."""
        if self.previous is not None:
            return self.previous
        return type(self.model).forward.__get__(self.model)

    @property
    def __signature__(self) -> inspect.Signature:
        # generate() and Trainer read the forward's parameters (logits_to_keep, **kwargs).
        return inspect.signature(self.inner())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        inner = self.inner()
        labels = kwargs.get("labels")
        if "labels" not in kwargs:
            positional = [
                p.name for p in inspect.signature(inner).parameters.values()
                if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            ]
            if "labels" in positional and positional.index("labels") < len(args):
                labels = args[positional.index("labels")]
        if labels is None:
            return inner(*args, **kwargs)
        return _fused_call(self.model, inner, self.return_logits, args, kwargs)


def _fused_call(model: Any, inner: Any, return_logits: bool, args: tuple, kwargs: dict) -> Any:
    """One forward with labels: the model's own forward, with the head's input kept (and the head
    run on no tokens unless logits are wanted) and ``model.loss_function`` replaced for the call."""
    head = _head(model)
    return_dict = kwargs.pop("return_dict", None)
    if return_dict is None:
        return_dict = getattr(model.config, "return_dict", True)
    hidden: list[torch.Tensor] = []
    losses: list[torch.Tensor] = []

    def keep_hidden(module: torch.nn.Module, head_args: tuple) -> tuple | None:
        hidden.append(head_args[0])
        if return_logits:
            return None
        # The positions axis is the one before the features (the boolean logits_to_keep flattens it).
        return (head_args[0][..., :0, :],) + tuple(head_args[1:])

    def loss_function(logits, labels, vocab_size=None, num_items_in_batch=None, ignore_index=-100, shift_labels=None, **_):
        if len(hidden) != 1:
            raise RuntimeError(
                f"use_fused_loss: {type(model).__name__}'s forward ran its lm_head {len(hidden)} times before "
                "computing the loss; it supports forwards that run it once, on the final hidden states"
            )
        loss = _causal_lm_loss(model, head, hidden[0], labels, num_items_in_batch, ignore_index, shift_labels)
        losses.append(loss)
        return loss

    handle = head.register_forward_pre_hook(keep_hidden)
    own = model.__dict__.get("_loss_function", _ABSENT)
    model.loss_function = loss_function
    try:
        output = inner(*args, return_dict=True, **kwargs)
    finally:
        handle.remove()
        if own is _ABSENT:
            del model._loss_function
        else:
            model._loss_function = own
    if not losses:
        raise RuntimeError(
            f"use_fused_loss: {type(model).__name__}'s forward computed its loss without self.loss_function; "
            "it supports forwards that call it (transformers' *ForCausalLM models)"
        )
    if not return_logits:
        output = type(output)(**{k: v for k, v in output.items() if k != "logits"})
    return output if return_dict else output.to_tuple()


def _causal_lm_loss(model, head, hidden, labels, num_items_in_batch, ignore_index, shift_labels) -> torch.Tensor:
    """``transformers``' ``ForCausalLMLoss`` on the head's input, by :func:`linear_cross_entropy`."""
    if shift_labels is None:
        # As ForCausalLMLoss: position i is scored on label i + 1, the last position on none.
        shift_labels = torch.nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    h = hidden.reshape(-1, hidden.shape[-1])
    if h.dtype in (torch.float16, torch.bfloat16):
        # transformers' loss of a 16-bit model is float32 (the logits are float32 in the pass anyway).
        h = h.float()
    target = shift_labels.reshape(-1).to(h.device)
    if target.shape[0] != h.shape[0]:
        raise ValueError(
            f"labels must hold one label per position the lm_head scores: {h.shape[0]} positions "
            f"(hidden states of shape {tuple(hidden.shape)}) but {target.shape[0]} shifted labels "
            f"(labels of shape {tuple(labels.shape)}); with logits_to_keep, pass the labels of the kept positions"
        )
    return linear_cross_entropy(
        h, head.weight, target, linear_bias=head.bias,
        reduction="mean" if num_items_in_batch is None else "sum", normalizer=num_items_in_batch,
        ignore_index=ignore_index, softcap=getattr(model.config, "final_logit_softcapping", None),
    )


def use_fused_loss(model: Any, *, return_logits: bool = False) -> Any:
    r"""Make a causal language model compute its training loss by :func:`softmaxkit.torch.linear_cross_entropy`.

    With ``labels``, the model's loss becomes

    .. math:: \ell = \frac{1}{D} \sum_{i:\ t_i \ne -100} \Bigl(\log \sum_j e^{z_{ij}} - z_{i t_i}\Bigr),
              \qquad z_i = \operatorname{cap}(W h_i + b),\quad t_i = \mathtt{labels}_{i+1}

    computed from the final hidden states ``h`` and ``lm_head``'s weight
    ``W`` (and bias ``b``) in chunks of tokens, so that the
    ``tokens x vocabulary`` logits are never held.  ``cap`` is Gemma-2's
    ``c tanh(z / c)`` with ``c = config.final_logit_softcapping`` (identity
    when that is unset or absent); ``D`` is the number of labels that are
    not ignored, or ``num_items_in_batch`` when the call passes it (then
    the sum is divided by it, as ``transformers`` does for gradient
    accumulation).  The labels are shifted as ``transformers``'
    ``ForCausalLMLoss`` shifts them (or taken from ``shift_labels``);
    ``ignore_index`` is honoured.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A ``*ForCausalLM`` whose forward computes
        ``logits = self.lm_head(hidden_states[:, slice])`` (soft-capped by
        ``config.final_logit_softcapping`` if set) and then
        ``self.loss_function(logits, labels, ...)``: GPT-2, Llama, Mistral,
        Qwen, Gemma and Gemma-2 among others.  ``lm_head`` must be a
        ``torch.nn.Linear``.
    return_logits : bool, default False
        With ``labels``: False leaves ``output.logits`` None (the head runs
        on no tokens, so no logits are formed); True computes the logits
        as before as well (the loss is still the fused one).  Without
        ``labels`` the model returns its logits as before either way.

    Returns
    -------
    The model itself, changed in place: its ``forward`` is an
    instance attribute that runs the class's forward (or the instance's
    earlier one) unchanged when ``labels`` is None or absent, so inference
    and ``generate()`` are as before.  Calling again only sets
    ``return_logits`` (nothing is wrapped twice);
    :func:`remove_fused_loss` undoes it.

    Raises
    ------
    TypeError
        ``model`` is not a ``transformers.PreTrainedModel``, its
        ``get_output_embeddings()`` is not a ``torch.nn.Linear``, or
        ``return_logits`` is not a bool.
    ValueError
        The forward takes no ``labels``, or the config scales the logits
        after the head (``logit_scale`` of Cohere, ``logits_scaling`` of
        Granite), which the fused loss would leave out.

    Notes
    -----
    For each call with labels, a forward pre-hook on ``lm_head`` keeps its
    input (after ``logits_to_keep``) and, without ``return_logits``, hands
    the head no positions; ``model.loss_function`` is replaced for the
    duration of the call by one that computes the loss from the kept input.
    Whatever else the forward does with the loss (an auxiliary router loss,
    say) is kept.  The call returns a ``ModelOutput`` or, with
    ``return_dict=False``, its tuple (without the logits when they are not
    returned).  A forward that does not call ``self.loss_function`` with the
    head run once raises ``RuntimeError``.  One model's calls should not
    overlap in threads.

    Accuracy and edge behaviour are those of
    :func:`softmaxkit.torch.linear_cross_entropy`: the loss and the
    gradients meet softmaxkit's cross-entropy contract on float32 logits
    (float64 for a float64 model), where ``transformers`` uses torch's
    float32 cross-entropy.  The loss is float32 for float32 and 16-bit
    models (as in ``transformers``) and float64 for a float64 model (where
    ``transformers`` rounds the logits to float32).  Where ``transformers``
    gives NaN, this gives 0 with zero gradients: every label ignored, or
    ``num_items_in_batch`` 0.  A label outside ``[0, vocab_size)`` other
    than ``ignore_index`` raises ``ValueError``.

    Needs ``transformers`` 4.50 or later (``model.loss_function`` settable
    per instance), below 6; tested with 4.50.0, 4.57.1 and 5.24.0.  Older
    versions raise ``ImportError``.

    Examples
    --------
    >>> import torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from softmaxkit.torch.integrations.transformers import remove_fused_loss, use_fused_loss
    >>> _ = torch.manual_seed(0)
    >>> model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=40)).eval()
    >>> ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    >>> labels = torch.tensor([[1, 2, -100, 4, 5, 6]])
    >>> reference = model(ids, labels=labels).loss
    >>> out = use_fused_loss(model)(ids, labels=labels)
    >>> out.logits is None, bool(torch.isclose(out.loss, reference, rtol=1e-6))
    (True, True)
    >>> out.loss.backward()  # gradients reach every parameter, the tied lm_head included
    >>> model(ids).logits.shape  # without labels, the model is as before
    torch.Size([1, 6, 40])
    >>> remove_fused_loss(model)(ids, labels=labels).logits.shape
    torch.Size([1, 6, 40])
    """
    if tuple(int(part) for part in transformers.__version__.split(".")[:2]) < _FUSED_LOSS_SINCE:
        raise ImportError(
            f"use_fused_loss needs transformers 4.50 or later (a settable model.loss_function); "
            f"transformers {transformers.__version__} is installed: pip install 'transformers>=4.50,<6'"
        )
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"model must be a transformers.PreTrainedModel; got {type(model).__module__}.{type(model).__name__}")
    if not isinstance(return_logits, bool):
        raise TypeError(f"return_logits must be a bool; got {return_logits!r}")
    _head(model)
    if "labels" not in inspect.signature(type(model).forward).parameters:
        raise ValueError(f"model's forward must take labels; {type(model).__name__}.forward does not")
    for name in _LOGIT_SCALES:
        value = getattr(model.config, name, None)
        if value is not None and value != 1:
            raise ValueError(
                f"model.config.{name} is {value!r}: {type(model).__name__} scales its logits after the lm_head, "
                "which use_fused_loss does not apply; it needs 1 or unset"
            )
    current = model.__dict__.get("forward")
    if isinstance(current, _FusedLossForward):
        current.return_logits = return_logits
    else:
        model.forward = _FusedLossForward(model, current, return_logits)
    return model


def remove_fused_loss(model: Any) -> Any:
    """Undo :func:`use_fused_loss`: the model's forward becomes the one it had before.

    Parameters
    ----------
    model : transformers.PreTrainedModel

    Returns
    -------
    The model itself.  A model without the fused loss is returned unchanged.

    Examples
    --------
    >>> import torch
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> from softmaxkit.torch.integrations.transformers import remove_fused_loss, use_fused_loss
    >>> model = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
    ...                                      num_attention_heads=2, num_key_value_heads=2, vocab_size=50))
    >>> "forward" in vars(use_fused_loss(model)), "forward" in vars(remove_fused_loss(model))
    (True, False)
    """
    current = model.__dict__.get("forward")
    if isinstance(current, _FusedLossForward):
        if current.previous is None:
            del model.forward
        else:
            model.forward = current.previous
    return model
