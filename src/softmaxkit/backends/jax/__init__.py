"""The JAX backend (public face: ``softmaxkit.jax``)."""
