"""Diagnostics: tools that find numerical problems in code that uses softmax.

``softmaxkit.tools.lint`` checks source files statically;
:func:`softmaxkit.diagnose` reports what a batch of logits would do to a naive
softmax; ``softmaxkit.torch.watch`` stops a PyTorch model at the first
non-finite value; ``softmaxkit check FILE`` prints the report for saved logits.
"""
