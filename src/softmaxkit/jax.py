"""softmaxkit for JAX: ``jax.nn``-style functions with exact derivative rules.

The forward passes call the formulas in ``softmaxkit.numerics`` with
``xp = jax.numpy``, so results agree with the NumPy and PyTorch APIs.

Attention
---------
``dot_product_attention`` (``jax.nn.dot_product_attention``'s layout and
arguments, plus ``softcap``, ``sinks`` and ``return_lse``) and
``merge_attention_states`` run the formulas of :func:`softmaxkit.attention`
and :func:`softmaxkit.merge_attention_states` on ``jax.numpy``; each is a
``jax.custom_vjp`` whose backward is the VJP of ``numerics.attention``
(reverse mode only).  Empty rows give 0 and zero gradients.

Derivatives
-----------
Each function is a ``jax.custom_jvp`` with an exact tangent rule, so
``jax.jvp``, ``jax.jacfwd``, ``jax.linearize``, ``jax.grad``,
``jax.value_and_grad``, ``jax.jacrev``, ``jax.hessian`` and any nesting of
them work, under ``jax.jit`` and ``jax.vmap``:

* softmax: ``p * (t - <p, t>)``; log_softmax: ``t - <p, t>``;
  logsumexp: ``<p, t>`` (entries with ``p = 0`` take no part, so fully
  masked rows have zero derivatives);
* cross-entropy: ``<g, t>`` with ``g`` the exact gradient ``(C + 2 z w lse)
  p - c`` computed in the forward pass (its target entry is ``-s/(1+s)``,
  never ``p_t - 1``).  Reverse mode is JAX's transpose of this rule,
  ``g * cotangent``, so confident rows keep their exact gradients;
  the gradient itself has a tangent rule, so Hessians are exact formulas
  too.  The derivative in probability labels (and class weights) is
  ``-log p_j``, which is ``+inf`` on a ``-inf`` class: differentiating in
  those arguments where a logit is ``-inf`` gives ``inf`` (reverse mode) or
  NaN (forward mode, ``inf * 0``) there; the derivative in the logits never
  meets it.

Paths
-----
On the CPU backend the forward passes run softmaxkit's native kernels as
XLA custom calls (``jax.ffi`` handlers compiled on first use against the
installed jaxlib; see ``softmaxkit.backends.jax.native``): softmax,
log_softmax, logsumexp, and cross-entropy, whose loss and gradient come
from one pass over the logits (float16, bfloat16, float32, float64; any
axis, batch dimensions and ``vmap``); and ``dot_product_attention``,
forward and backward, for float32 and bfloat16.  The derivative rules above are the
same on both paths: their tangents are ``jax.numpy`` expressions XLA fuses.
On GPU and TPU, with the kernels switched off (``SOFTMAXKIT_DISABLE_NATIVE``
or ``softmaxkit.kernels.disabled()`` when a function is traced), or where
the handlers cannot be built (no C++ compiler), the forward passes run the
``jax.numpy`` formulas of ``softmaxkit.numerics`` instead; XLA fuses them on
accelerators.  :func:`kernel_path` says which path is in use, in one line.

Precision
---------
JAX computes in float32 unless x64 is enabled.

* Native path: every dtype meets the package's contract (2 ULP for float16,
  bfloat16 and float32, 4 for float64): float32 and narrower are computed in
  float64 and rounded once, float64 uses the compensated kernels.  The
  kernels run in IEEE arithmetic although XLA flushes subnormals on its
  threads, so confident rows keep their subnormal probabilities, losses and
  gradients (margins beyond 87 in float32).
* Formulas with ``jax_enable_x64``: float32 and narrower are computed in
  float64 and rounded once (within 2 ULP); float64 uses the compensated path.
* Formulas without it (the default): float16 and bfloat16 are computed in
  float32 and rounded once; float32 uses the compensated float32 path of
  ``softmaxkit.numerics`` (exact shift ``hi + lo``, ``exp(hi)(1 + lo)``,
  cascaded sums).  The shift is exact, so confident rows keep their full
  relative accuracy, but ``exp``, ``log1p`` and the division each round in
  float32: within 4 ULP (tested against mpmath), and only while results stay
  normal: XLA flushes subnormal results to 0 (float32 margins beyond about
  87).

softmaxkit does not switch x64 on for you: the flag is global in JAX and
changing it inside a traced function is not supported.

Checks
------
Option, dtype and shape checks always run.  Value checks (label range,
signs of weights and probabilities) raise ``ValueError`` on concrete arrays
and are skipped on tracers (inside ``jit``, ``vmap`` or ``grad``), where
they cannot be evaluated without a host round trip.  On the native path the
kernel still checks class indices when it runs: a label outside
``[0, n_classes)`` that is not ``ignore_index`` makes the call raise
(``JaxRuntimeError``, naming ``labels``) instead of giving a loss.
"""

from softmaxkit.backends.jax.attention import (
    dot_product_attention,
    merge_attention_states,
)
from softmaxkit.backends.jax.distillation import distillation_loss
from softmaxkit.backends.jax.functions import (
    cross_entropy,
    kl_div,
    log_softmax,
    logsumexp,
    softmax,
)
from softmaxkit.backends.jax.linear import linear_cross_entropy
from softmaxkit.backends.jax.linear_distillation import linear_distillation_loss
from softmaxkit.backends.jax.native import path as kernel_path
from softmaxkit.backends.jax.vocab_parallel import vocab_parallel_cross_entropy

__all__ = [
    "cross_entropy",
    "distillation_loss",
    "dot_product_attention",
    "kernel_path",
    "kl_div",
    "linear_cross_entropy",
    "linear_distillation_loss",
    "log_softmax",
    "logsumexp",
    "merge_attention_states",
    "softmax",
    "vocab_parallel_cross_entropy",
]
