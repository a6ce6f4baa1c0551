"""softmaxkit for JAX: ``jax.nn``-style functions with exact derivative rules.

The forward passes call the formulas in ``softmaxkit.numerics`` with
``xp = jax.numpy``, so results agree with the NumPy and PyTorch APIs.

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

Precision
---------
JAX computes in float32 unless x64 is enabled.

* With ``jax_enable_x64``: float32 and narrower are computed in float64 and
  rounded once (within 2 ULP); float64 uses the compensated path.
* Without it (the default): float16 and bfloat16 are computed in float32 and
  rounded once; float32 uses the compensated float32 path of ``softmaxkit.numerics``
  (exact shift ``hi + lo``, ``exp(hi)(1 + lo)``, cascaded sums).  The shift
  is then exact, so confident rows keep their full relative accuracy, but
  ``exp``, ``log1p`` and the division each round in float32: expect a few
  ULP rather than 2 (see ``docs/torch.md`` for the measured figures).

softmaxkit does not switch x64 on for you: the flag is global in JAX and
changing it inside a traced function is not supported.

Checks
------
Option, dtype and shape checks always run.  Value checks (label range,
signs of weights and probabilities) raise ``ValueError`` on concrete arrays
and are skipped on tracers (inside ``jit``, ``vmap`` or ``grad``), where
they cannot be evaluated without a host round trip.
"""

from softmaxkit.backends.jax.functions import cross_entropy, kl_div, log_softmax, logsumexp, softmax
from softmaxkit.backends.jax.native import path as kernel_path

__all__ = [
    "cross_entropy",
    "kernel_path",
    "kl_div",
    "log_softmax",
    "logsumexp",
    "softmax",
]
