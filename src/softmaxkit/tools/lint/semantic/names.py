"""Import and alias resolution: which library function a name in a file denotes.

Qualified names are the dotted paths users import (``torch.nn.functional.softmax``).
Each known function maps to the operation it computes, so that rules speak of
operations ("softmax", "log") rather than of spellings.
"""

from __future__ import annotations

import ast

FUNCTIONS: dict[str, str] = {}


def _add(op: str, *names: str) -> None:
    for name in names:
        FUNCTIONS[name] = op


_add("exp", "numpy.exp", "torch.exp", "jax.numpy.exp", "math.exp")
_add("log", "numpy.log", "torch.log", "jax.numpy.log", "math.log")
_add("sum", "numpy.sum", "torch.sum", "jax.numpy.sum", "builtins.sum")
_add("mean", "numpy.mean", "torch.mean", "jax.numpy.mean")
_add(
    "max",
    "numpy.max",
    "numpy.amax",
    "numpy.nanmax",
    "torch.max",
    "torch.amax",
    "jax.numpy.max",
    "jax.numpy.amax",
    "builtins.max",
)
_add(
    "logsumexp",
    "torch.logsumexp",
    "torch.special.logsumexp",
    "scipy.special.logsumexp",
    "jax.nn.logsumexp",
    "jax.scipy.special.logsumexp",
)
_add(
    "softmax",
    "torch.softmax",
    "torch.nn.functional.softmax",
    "torch.special.softmax",
    "scipy.special.softmax",
    "jax.nn.softmax",
)
_add(
    "log_softmax",
    "torch.log_softmax",
    "torch.nn.functional.log_softmax",
    "torch.special.log_softmax",
    "scipy.special.log_softmax",
    "jax.nn.log_softmax",
)
_add("softmin", "torch.nn.functional.softmin")
# flax.linen and flax.nnx re-export jax.nn's activations under their own names.
for _module in ("flax.linen", "flax.linen.activation", "flax.nnx", "flax.nnx.nn.activations"):
    _add("softmax", f"{_module}.softmax")
    _add("log_softmax", f"{_module}.log_softmax")
    _add("sigmoid", f"{_module}.sigmoid")
    _add("logsumexp", f"{_module}.logsumexp")
_add(
    "sigmoid",
    "torch.sigmoid",
    "torch.nn.functional.sigmoid",
    "torch.special.expit",
    "scipy.special.expit",
    "jax.nn.sigmoid",
    "jax.scipy.special.expit",
)
_add(
    "cross_entropy",
    "torch.nn.functional.cross_entropy",
    # optax's losses take logits, like torch's cross_entropy.
    "optax.softmax_cross_entropy",
    "optax.softmax_cross_entropy_with_integer_labels",
    "optax.losses.softmax_cross_entropy",
    "optax.losses.softmax_cross_entropy_with_integer_labels",
)
_add("nll_loss", "torch.nn.functional.nll_loss")
_add("binary_cross_entropy", "torch.nn.functional.binary_cross_entropy")
_add("kl_div", "torch.nn.functional.kl_div", "optax.kl_divergence", "optax.losses.kl_divergence")
_add("masked_fill", "torch.masked_fill")
_add("topk", "torch.topk", "jax.lax.top_k")
_add("cumsum", "torch.cumsum", "numpy.cumsum", "jax.numpy.cumsum")
_add("tril", "torch.tril", "numpy.tril", "jax.numpy.tril")
_add("triu", "torch.triu", "numpy.triu", "jax.numpy.triu")
_add("arange", "torch.arange", "numpy.arange", "jax.numpy.arange")
_add("vector", "torch.zeros", "torch.ones", "torch.empty", "torch.randn", "torch.rand")
_add("concat", "torch.cat", "torch.concat", "torch.stack", "numpy.concatenate", "numpy.stack", "jax.numpy.concatenate", "jax.numpy.stack")
# Functions whose result holds the kind of values of their first argument.
_add(
    "reshape",
    "torch.reshape",
    "torch.flatten",
    "torch.permute",
    "torch.transpose",
    "torch.squeeze",
    "torch.unsqueeze",
    "numpy.reshape",
    "numpy.transpose",
    "numpy.squeeze",
    "numpy.expand_dims",
    "numpy.moveaxis",
    "numpy.swapaxes",
    "jax.numpy.reshape",
    "jax.numpy.transpose",
    "jax.numpy.squeeze",
    "jax.numpy.expand_dims",
    "jax.numpy.moveaxis",
    "jax.numpy.swapaxes",
    "einops.rearrange",
    "einops.repeat",
)
# Calls the module given first on the arguments that follow.
_add("apply_module", "torch.nn.parallel.data_parallel")
_add("multinomial", "torch.multinomial", "numpy.random.multinomial")
# Integer-valued results (sizes, counts) and rounding.
_add(
    "integer",
    "builtins.len",
    "builtins.int",
    "builtins.round",
    "math.floor",
    "math.ceil",
    "math.comb",
    "math.factorial",
    "numpy.floor",
    "numpy.ceil",
    "numpy.round",
    "numpy.rint",
    "torch.floor",
    "torch.ceil",
    "torch.round",
)
_add("where", "torch.where", "numpy.where", "jax.numpy.where")
_add("nan_to_num", "torch.nan_to_num", "numpy.nan_to_num", "jax.numpy.nan_to_num")
_add("clamp", "torch.clamp", "torch.clip", "numpy.clip", "jax.numpy.clip")
_add(
    "constant",
    "torch.tensor",
    "torch.as_tensor",
    "torch.full",
    "torch.full_like",
    "numpy.array",
    "numpy.full",
    "numpy.full_like",
    "jax.numpy.array",
    "jax.numpy.full",
    "jax.numpy.full_like",
)

# Tensor methods. NumPy arrays have no ``exp``/``log``/``softmax`` methods, so
# a method spelling of those means a torch tensor.
METHODS: dict[str, str] = {
    "exp": "exp",
    "log": "log",
    "sum": "sum",
    "mean": "mean",
    "max": "max",
    "amax": "max",
    "logsumexp": "logsumexp",
    "softmax": "softmax",
    "log_softmax": "log_softmax",
    "sigmoid": "sigmoid",
    "masked_fill": "masked_fill",
    "masked_fill_": "masked_fill_",
    "nan_to_num": "nan_to_num",
    "nan_to_num_": "nan_to_num",
    "clamp": "clamp",
    "clamp_": "clamp",
    "clamp_min": "clamp",
    "clip": "clamp",
    "topk": "topk",
    "cumsum": "cumsum",
    "tril": "tril",
    "tril_": "tril",
    "triu": "triu",
    "triu_": "triu",
}

# Methods whose result holds the same kind of values as their receiver.
PASSTHROUGH_METHODS = frozenset(
    {
        "abs",
        "bfloat16",
        "bool",
        "clone",
        "contiguous",
        "cpu",
        "cuda",
        "detach",
        "double",
        "flatten",
        "float",
        "half",
        "logical_not",
        "numpy",
        "permute",
        "reshape",
        "reshape_as",
        "scatter",
        "squeeze",
        "to",
        "transpose",
        "type",
        "type_as",
        "unsqueeze",
        "view",
        "view_as",
    }
)

# torch.nn classes whose instances the rules follow.
CLASSES: dict[str, str] = {
    "torch.nn.Softmax": "softmax",
    "torch.nn.LogSoftmax": "log_softmax",
    "torch.nn.Softmin": "softmin",
    "torch.nn.Sigmoid": "sigmoid",
    "torch.nn.Sequential": "sequential",
    "torch.nn.CrossEntropyLoss": "cross_entropy",
    "torch.nn.NLLLoss": "nll_loss",
    "torch.nn.BCELoss": "binary_cross_entropy",
    "torch.nn.KLDivLoss": "kl_div",
}

LOSSES = frozenset({"cross_entropy", "nll_loss", "binary_cross_entropy", "kl_div"})

_BUILTINS = frozenset({"sum", "max", "float", "len", "int", "round", "range", "enumerate"})


class Imports:
    """What each imported name of one file denotes."""

    def __init__(self, tree: ast.Module) -> None:
        # Every import in the file counts, wherever it is: a module imported
        # inside a function still tells what the name means there.
        self.aliases: dict[str, str] = {}
        # Only module-level imports may be used to spell a fix.
        self.module_aliases: dict[str, str] = {}
        # Names the file binds itself; only needed to tell whether ``sum``,
        # ``max`` and ``float`` are still the builtins.
        self.bound: set[str] = set()
        top = set(map(id, _top_level_imports(tree)))
        # Imports are statements: walking statements only, not expressions,
        # keeps this pass cheap.
        pending = list(tree.body)
        while pending:
            node = pending.pop()
            kind = type(node)
            if kind is ast.Import or kind is ast.ImportFrom:
                pairs = _import_pairs(node)
                self.aliases.update(pairs)
                if id(node) in top:
                    self.module_aliases.update(pairs)
                continue
            if kind in (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef):
                self.bound.add(node.name)
                if kind is not ast.ClassDef:
                    args = node.args
                    for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
                        if arg is not None:
                            self.bound.add(arg.arg)
            elif kind in (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor):
                targets = node.targets if kind is ast.Assign else [node.target]
                for target in targets:
                    for name in ast.walk(target):
                        if type(name) is ast.Name:
                            self.bound.add(name.id)
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                pending.extend(getattr(node, field, ()))

    def qualname(self, expr: ast.expr) -> str | None:
        """The dotted name ``expr`` denotes through the imports, if any."""
        parts = []
        while type(expr) is ast.Attribute:
            parts.append(expr.attr)
            expr = expr.value
        if type(expr) is not ast.Name:
            return None
        base = self.aliases.get(expr.id)
        if base is None:
            if not parts and expr.id in _BUILTINS and expr.id not in self.bound:
                return "builtins." + expr.id
            return None
        if not parts:
            return base
        parts.append(base)
        return ".".join(reversed(parts))

    def is_module_name(self, expr: ast.expr) -> bool:
        """Whether ``expr`` is an imported name (or an attribute of one)."""
        while type(expr) is ast.Attribute:
            expr = expr.value
        return type(expr) is ast.Name and expr.id in self.aliases

    def spell(self, qualname: str) -> str | None:
        """The shortest expression that names ``qualname`` with the file's imports."""
        best = None
        for alias, target in self.module_aliases.items():
            if qualname == target:
                text = alias
            elif qualname.startswith(target + "."):
                text = alias + qualname[len(target) :]
            else:
                continue
            if best is None or len(text) < len(best):
                best = text
        return best


def _import_pairs(node: ast.Import | ast.ImportFrom) -> dict[str, str]:
    pairs = {}
    if type(node) is ast.Import:
        for alias in node.names:
            if alias.asname:
                pairs[alias.asname] = alias.name
            else:
                top = alias.name.partition(".")[0]
                pairs[top] = top
    elif not node.level and node.module:
        for alias in node.names:
            if alias.name != "*":
                pairs[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return pairs


def _top_level_imports(tree: ast.Module) -> list[ast.stmt]:
    found = []
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.If, ast.Try)):
            # ``try: import x`` / ``if TYPE_CHECKING:`` still bind module-level names.
            pending.extend(node.body)
            pending.extend(node.orelse)
            if isinstance(node, ast.Try):
                pending.extend(node.finalbody)
                for handler in node.handlers:
                    pending.extend(handler.body)
    return found
