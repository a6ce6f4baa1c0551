"""Every example in softmaxkit's docstrings runs as written.

The examples of a module that needs an optional library (PyTorch, JAX,
matplotlib) are skipped where that library is not installed; any other
failure to import a module is an error.
"""

from __future__ import annotations

import doctest
import importlib
import io
from pathlib import Path

import pytest

import softmaxkit

OPTIONAL = ("torch", "jax", "matplotlib", "transformers", "triton")
MATCH = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
PACKAGE = Path(softmaxkit.__file__).parent


def module_names() -> list[str]:
    """Every module of the package; ``__main__`` runs the command line, so it is left out."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def missing_optional(error: ImportError) -> str | None:
    """The optional library whose absence caused ``error``, if one did."""
    while error is not None:
        if isinstance(error, ModuleNotFoundError) and error.name and error.name.split(".")[0] in OPTIONAL:
            return error.name.split(".")[0]
        error = error.__cause__ or error.__context__
    return None


def docstring_examples():
    for name in module_names():
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            library = missing_optional(error)
            if library is None:
                raise
            yield pytest.param(None, id=name, marks=pytest.mark.skip(reason=f"{name} needs {library}"))
            continue
        for test in doctest.DocTestFinder().find(module, name):
            if test.examples:
                yield pytest.param(test, id=test.name)


@pytest.mark.parametrize("test", list(docstring_examples()))
def test_docstring_example(test):
    out = io.StringIO()
    result = doctest.DocTestRunner(optionflags=MATCH).run(test, out=out.write)
    assert result.failed == 0, out.getvalue()
