"""PyTorch integration: ``watch`` stops a model at the first NaN or inf."""

from softmaxkit.diagnostics._watch import NonFiniteError, watch

__all__ = [
    "NonFiniteError",
    "watch",
]
