"""The Triton kernels under test: on CUDA tensors where a GPU is present,
otherwise on CPU tensors through Triton's interpreter.

Without a GPU, ``TRITON_INTERPRET=1`` is set by ``tests/conftest.py`` before
any test module is collected: the kernels read it when their modules are
first imported.  The autouse fixture turns on
``softmaxkit.kernels.triton.on_cpu`` (the ``SOFTMAXKIT_TRITON_ON_CPU``
switch), so CPU tensors in ``softmaxkit.torch`` go through the kernels.
Without ``triton`` (or torch) every module here is skipped.
"""

from __future__ import annotations

import importlib.util

import pytest

if importlib.util.find_spec("triton") is None or importlib.util.find_spec("torch") is None:
    collect_ignore_glob = ["test_*.py"]
    DEVICE = "cpu"
else:
    import torch

    # tests/conftest.py sets TRITON_INTERPRET=1 without a GPU
    DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def triton_path(monkeypatch):
    """The Triton kernels take this test's tensors (CPU tensors too); yields the device to use."""
    import softmaxkit.kernels.triton as kernels

    monkeypatch.setattr(kernels, "on_cpu", True)
    yield DEVICE


@pytest.fixture
def launches(monkeypatch):
    """The names of the Triton kernels launched during the test, in order."""
    from softmaxkit.kernels.triton import launch

    names = []
    original = launch.launch

    def counted(kernel, geometry, *args, **meta):
        names.append(getattr(kernel, "__name__", None) or kernel.fn.__name__)
        return original(kernel, geometry, *args, **meta)

    monkeypatch.setattr(launch, "launch", counted)
    return names


@pytest.fixture
def wide_rows(monkeypatch):
    """Blocks of 16 entries, so that rows of a few dozen take the online (multi-block) path."""
    from softmaxkit.kernels.triton import launch

    monkeypatch.setattr(launch, "MAX_BLOCK", 16)
