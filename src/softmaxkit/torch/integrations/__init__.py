"""softmaxkit.torch's integrations with other libraries, one module each, imported on demand.

``transformers``: logits processors for Hugging Face ``generate()``
(``softmaxkit.torch.integrations.transformers``).
"""
