"""Diagnostics: tools that find numerical problems in code that uses softmax.

``softmaxkit.diagnostics.lint`` checks source files statically.
"""
