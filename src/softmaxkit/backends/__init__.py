"""Backends: autograd adapters that run the shared formulas on torch tensors and JAX arrays."""
