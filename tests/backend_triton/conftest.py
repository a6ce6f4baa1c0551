"""The Triton kernels under test: on CUDA tensors where a GPU is present,
otherwise on CPU tensors through Triton's interpreter.

Without a GPU, ``TRITON_INTERPRET=1`` is set here, at collection, before any
test runs: the kernels read it when their modules are first imported, which
happens at a kernel's first launch (``softmaxkit`` and ``softmaxkit.torch``
do not import them).  :func:`_interpreted_kernels` checks that, and reloads
kernel modules imported earlier without it.  The autouse fixture turns on
``softmaxkit.kernels.triton.on_cpu`` (the ``SOFTMAXKIT_TRITON_ON_CPU``
switch), so CPU tensors in ``softmaxkit.torch`` go through the kernels.
Without ``triton`` (or torch) every module here is skipped.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import pytest

if importlib.util.find_spec("triton") is None or importlib.util.find_spec("torch") is None:
    collect_ignore_glob = ["test_*.py"]
    DEVICE = "cpu"
else:
    import torch

    DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    if DEVICE == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"

_KERNELS = "softmaxkit.kernels.triton"


def _interpreted_kernels() -> None:
    """Reload the kernel modules that were imported before ``TRITON_INTERPRET`` was set."""
    import triton

    if not triton.knobs.runtime.interpret:
        return
    from triton.runtime.interpreter import InterpretedFunction

    loaded = [name for name in sys.modules if name.startswith(_KERNELS + ".")]
    stale = any(
        isinstance(value, triton.runtime.JITFunction) and not isinstance(value, InterpretedFunction)
        for name in loaded
        for value in vars(sys.modules[name]).values()
    )
    if stale:
        # the helpers first: the kernels' modules take them at import
        for name in sorted(loaded, key=lambda n: (not n.endswith(("launch", "_math")), n)):
            importlib.reload(sys.modules[name])


@pytest.fixture(autouse=True)
def triton_path(monkeypatch):
    """The Triton kernels take this test's tensors (CPU tensors too); yields the device to use."""
    import softmaxkit.kernels.triton as kernels

    _interpreted_kernels()
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
