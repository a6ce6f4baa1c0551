"""Triton kernels for ``softmaxkit.torch``: the softmax family, cross-entropy and the fused linear loss.

What runs where
---------------
On CUDA tensors of dtype float32, bfloat16 or float16, ``softmaxkit.torch``
runs these kernels in place of the chunked formulas, in eager mode and under
``torch.compile`` (the custom operators of ``backends/torch/ops.py`` run the
same passes, so compiled code calls the kernels inside one opaque node).
float64 keeps the existing path.  CPU tensors go to the native C kernels,
unless the switch below is on.  The backend asks
``backends.torch.execution.triton_ready`` before each pass; triton itself is
imported only when a kernel first runs, so importing softmaxkit or
softmaxkit.torch never imports it.

Numerics
--------
The kernels restate ``softmaxkit.numerics`` (``rows.py``, ``precision.py``,
``softmax.py``) in float32 working precision with compensation, the path the
formulas take on a device without a wider type: for a row with maximum ``a``
at index ``k``,

* the exact shift ``x - a = hi + lo`` (TwoSum), and ``exp(hi + lo)``
  computed by an accurate exp written here (``_math.py``: Cody-Waite
  reduction, a degree-7 polynomial, the low part folded into the reduced
  argument), not the hardware's approximate ``ex2``;
* ``s = sum_{i != k} exp(x_i - a)``, the argmax term left out, summed with
  Neumaier compensation, and ``log1p(s)`` from an accurate log written here;
* softmax ``e_i / (1 + s)``, log_softmax ``(hi + lo) - log1p(s)``, logsumexp
  ``a + log1p(s)``;
* rows wider than one block are read with the online rule (a running maximum
  and a rescaled compensated sum, the running maximum's own term kept out of
  the sum), narrower rows in one pass.

Statistics are float32 whatever the input; 16-bit inputs are widened exactly
on load and the result rounded once on store.  The contract is that of a
device without float64: float32 within 6 ULP, float16 and bfloat16 within
2 ULP, with the edge rows of the README's table.

Running the kernels on CPU
--------------------------
Triton's interpreter runs kernels on CPU tensors when ``TRITON_INTERPRET=1``
is set before the kernels are first used.  With ``SOFTMAXKIT_TRITON_ON_CPU=1``
(read when this module is imported) ``softmaxkit.torch`` sends CPU tensors of
those dtypes through the Triton kernels instead of the C kernels, in eager
mode and under ``torch.compile``: the GPU numerics, tested without a GPU.
Tests can flip the module attribute :data:`on_cpu` instead (for example with
``monkeypatch.setattr(softmaxkit.kernels.triton, "on_cpu", True)``).

Example
-------
>>> import softmaxkit.kernels.triton as smk_triton
>>> isinstance(smk_triton.available(), bool)
True
"""

from __future__ import annotations

import functools
import importlib
import os

__all__ = [
    "available",
    "on_cpu",
]

#: Whether CPU tensors take the Triton kernels (``SOFTMAXKIT_TRITON_ON_CPU=1``
#: at import); the backend reads it on every call.
on_cpu: bool = os.environ.get("SOFTMAXKIT_TRITON_ON_CPU", "") == "1"


@functools.cache
def available() -> bool:
    """Whether ``triton`` can be imported (it is imported by this check, once).

    Returns
    -------
    bool
        True when the ``triton`` package imports; the kernels then run on
        CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1`` with
        :data:`on_cpu` set.

    Example
    -------
    >>> import softmaxkit.kernels.triton as smk_triton
    >>> smk_triton.available() in (True, False)
    True
    """
    try:
        importlib.import_module("triton.language")
    except ImportError:
        return False
    return True
