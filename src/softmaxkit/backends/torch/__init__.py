"""The PyTorch backend: autograd Functions, the functional API and nn.Modules (public face: ``softmaxkit.torch``)."""
