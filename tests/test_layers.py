"""The import rule of docs/architecture.md, read from the source.

Each module of ``src/softmaxkit`` belongs to a layer; a module imports only
from its own layer or the layers below it, lazy imports (inside functions)
included, the backends do not import each other, and no two modules import
each other, directly or round a longer cycle.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first.  The public modules at the top are thin: re-exports and the
# registrations that wire backends and kernels into the front end.
LAYERS = ("numerics", "frontend", "backends", "kernels", "tools", "public")
PUBLIC = {
    "softmaxkit",
    "softmaxkit.__main__",
    "softmaxkit.torch",
    "softmaxkit.torch.distributed",
    "softmaxkit.torch.integrations",
    "softmaxkit.torch.integrations.transformers",
    "softmaxkit.jax",
    "softmaxkit.sparse",
    "softmaxkit.sampling",
    "softmaxkit.calibration",
    "softmaxkit.conformal",
    "softmaxkit.naive",
}


def module_names(src: Path) -> dict[str, Path]:
    """Every source module of the package, by dotted name."""
    names = {}
    for path in (src / "softmaxkit").rglob("*.py"):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def layer(name: str) -> str:
    if name in PUBLIC:
        return "public"
    part = name.split(".")[1]
    if part not in LAYERS:
        raise AssertionError(f"{name} is in no layer: put it under one of {LAYERS} or list it as public")
    return part


def imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports, at any depth of its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # "from a import b" names the module a.b where b is one.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def graph(src: Path) -> dict[str, set[str]]:
    modules = module_names(src)
    return {name: imports(name, path, modules) for name, path in modules.items()}


def violations(src: Path) -> list[str]:
    """Every import that breaks the rule, and every cycle, in words."""
    edges = graph(src)
    found = []
    for name, targets in sorted(edges.items()):
        for target in sorted(targets):
            low, high = LAYERS.index(layer(target)), LAYERS.index(layer(name))
            if low > high:
                found.append(f"{name} ({layer(name)}) imports {target} ({layer(target)}), a layer above it")
            elif layer(name) == layer(target) == "backends" and name.split(".")[2] != target.split(".")[2]:
                found.append(f"{name} imports {target}: one backend imports another")
    found.extend(f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(edges))
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [group + [group[0]] for group in groups]


def test_every_import_follows_the_layer_rule():
    assert violations(SRC) == []


def test_every_module_has_a_layer():
    for name in module_names(SRC):
        layer(name)


@pytest.fixture
def copy_of_src(tmp_path):
    shutil.copytree(SRC / "softmaxkit", tmp_path / "softmaxkit", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    return tmp_path


def _inject(src: Path, module: str, line: str) -> None:
    path = src / "softmaxkit" / module
    path.write_text(path.read_text() + "\n\ndef _injected():\n    " + line + "\n")


def test_an_injected_upward_import_is_found(copy_of_src):
    _inject(copy_of_src, "numerics/precision.py", "from softmaxkit.frontend import validate")
    found = violations(copy_of_src)
    assert "softmaxkit.numerics.precision (numerics) imports softmaxkit.frontend.validate (frontend), a layer above it" in found


def test_an_injected_cycle_inside_a_layer_is_found(copy_of_src):
    _inject(copy_of_src, "numerics/precision.py", "from softmaxkit.numerics import rows")
    found = violations(copy_of_src)
    assert any(v.startswith("import cycle:") and "softmaxkit.numerics.precision" in v and "softmaxkit.numerics.rows" in v for v in found)


def test_a_backend_importing_another_is_found(copy_of_src):
    _inject(copy_of_src, "backends/torch/entry.py", "import softmaxkit.backends.jax.entry")
    assert "softmaxkit.backends.torch.entry imports softmaxkit.backends.jax.entry: one backend imports another" in violations(copy_of_src)


def test_the_tools_may_not_import_the_package_root(copy_of_src):
    _inject(copy_of_src, "tools/report.py", "import softmaxkit")
    assert "softmaxkit.tools.report (tools) imports softmaxkit (public), a layer above it" in violations(copy_of_src)
