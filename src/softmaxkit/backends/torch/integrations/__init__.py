"""The PyTorch backend's integrations with other libraries, one module each, imported on demand
(public face: ``softmaxkit.torch.integrations``).

``transformers``: logits processors for Hugging Face ``generate()``.
"""
