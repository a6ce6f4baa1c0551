"""The front end: validation, layout, the backend registry and the public NumPy/array-API functions."""
