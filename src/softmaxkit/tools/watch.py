"""watch: stop a PyTorch model at the first NaN or inf, and say where it came from.

Three kinds of hook watch a model:

* forward hooks on every module check each module's outputs (and the root
  model's inputs);
* in backward, tensor hooks check the gradient arriving at each module's
  outputs and at each parameter, and a hook on each module's last autograd
  node checks the gradient it makes (which names a custom
  ``autograd.Function`` that returns NaN);
* a ``TorchFunctionMode`` (opt-in, ``functions=True``) checks the output of
  every torch function called while watching and attributes it to the
  innermost running module (a stack kept by forward pre-hooks), so a NaN in
  an intermediate value that never leaves the module is still caught; it
  also hooks each function's autograd node, so a NaN made by the backward of
  ``torch.sqrt`` is named as such.

A check is one ``sum`` per tensor: a finite sum proves every element finite,
and only a non-finite sum (a non-finite element, or a sum that overflowed)
pays for the exact ``isfinite`` test.  Statistics are computed only for a
report.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable

try:
    import torch
    from torch.overrides import TorchFunctionMode
except ImportError:
    raise ImportError("softmaxkit.torch needs PyTorch: pip install 'softmaxkit[torch]'") from None

from softmaxkit.frontend import validate
from softmaxkit.tools.report import diagnose
from softmaxkit.tools.stats import array_stats

__all__ = [
    "NonFiniteError",
    "NonFiniteReport",
    "TensorStats",
    "Watch",
    "watch",
]

logger = logging.getLogger("softmaxkit.watch")

_MODES = ("raise", "record")
# Reports list at most this many tensors of each side; a torch.cat of
# hundreds of tensors would otherwise bury the one that matters.
_MAX_LISTED = 8

# Turns torch-function handling off, the function mode included, for the
# watch's own tensor calls.  Private, but the one switch that also covers
# modes entered by the user above ours.
_mode_off = torch._C.DisableTorchFunction


@dataclass(frozen=True)
class TensorStats:
    """Summary of one tensor in a report; ranges are over finite values."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    min: float | None
    max: float | None
    abs_max: float | None
    nan_count: int
    posinf_count: int
    neginf_count: int

    @property
    def nonfinite_count(self) -> int:
        return self.nan_count + self.posinf_count + self.neginf_count

    def __str__(self) -> str:
        rng = (
            "no finite values"
            if self.min is None
            else f"min {self.min:.6g}  max {self.max:.6g}  abs-max {self.abs_max:.6g}"
        )
        return (
            f"{self.name}: {tuple(self.shape)} {self.dtype}  {rng}  "
            f"NaN {self.nan_count}  +inf {self.posinf_count}  -inf {self.neginf_count}"
        )


@dataclass(frozen=True)
class NonFiniteReport:
    """Where and when the first non-finite value appeared.

    Attributes
    ----------
    step : int
        The watcher's step (see :class:`Watch`).
    phase : {"forward", "backward"}
    module : str or None
        Qualified name of the module, as in ``model.named_modules()``
        (``""`` is the root model); None for code outside the model run
        while watching, such as the loss.
    module_type : str or None
        The module's class name.
    function : str or None
        The torch function whose output (forward) or whose backward
        (backward) was non-finite, when the function check found it.
    tensor : str
        Which tensor: ``"output[0]"``, ``"input[1]"`` (root model inputs),
        ``"grad of output[0]"``, ``"grad of parameter weight"`` or
        ``"grad_input[0]"`` (a function's backward).
    kind : {"NaN", "inf", "NaN and inf"}
    inputs, outputs : tuple of TensorStats
        The tensors that went in and came out (in backward: the gradients
        that arrived and those produced).
    """

    step: int
    phase: str
    module: str | None
    module_type: str | None
    function: str | None
    tensor: str
    kind: str
    inputs: tuple[TensorStats, ...]
    outputs: tuple[TensorStats, ...]

    @property
    def location(self) -> str:
        if self.module is None:
            return "outside the model"
        return f"{self.module or '(root model)'} ({self.module_type})"

    def __str__(self) -> str:
        what = f"{self.kind} in {self.phase}, step {self.step}, at {self.location}"
        if self.function is not None:
            what += f", {'backward of ' if self.phase == 'backward' else ''}{self.function}"
        lines = [what, f"  tensor   {self.tensor}"]
        for label, stats in (("inputs", self.inputs), ("outputs", self.outputs)):
            for i, s in enumerate(stats[:_MAX_LISTED]):
                lines.append(f"  {label if i == 0 else '':<8} {s}")
            if len(stats) > _MAX_LISTED:
                lines.append(f"  {'':<8} ... and {len(stats) - _MAX_LISTED} more")
        return "\n".join(lines)


class NonFiniteError(FloatingPointError):
    """Raised by :func:`watch` in ``mode="raise"``; ``.report`` holds the details."""

    def __init__(self, report: NonFiniteReport):
        super().__init__(f"non-finite value: {report}")
        self.report = report


def _tensors(obj: Any, prefix: str) -> list[tuple[str, torch.Tensor]]:
    """The tensors in a (nested) output or argument structure, with names."""
    if isinstance(obj, torch.Tensor):
        return [(prefix, obj)]
    if isinstance(obj, (list, tuple)):
        out = []
        for i, item in enumerate(obj):
            out.extend(_tensors(item, f"{prefix}[{i}]"))
        return out
    if isinstance(obj, dict):
        out = []
        for key, item in obj.items():
            out.extend(_tensors(item, f"{prefix}[{key!r}]"))
        return out
    return []


def _checkable(t: torch.Tensor) -> bool:
    return t.is_floating_point() and t.layout == torch.strided


def _is_finite(t: torch.Tensor) -> bool:
    # A finite sum proves every element finite; a non-finite one may only
    # have overflowed, so it is confirmed exactly.
    t = t.detach()
    return math.isfinite(t.sum().item()) or bool(torch.isfinite(t).all())


def _first_bad(named: list[tuple[str, torch.Tensor]]) -> tuple[str, torch.Tensor] | None:
    for name, t in named:
        if _checkable(t) and not _is_finite(t):
            return name, t
    return None


def _stats(name: str, t: torch.Tensor) -> TensorStats:
    return TensorStats(
        name=name,
        shape=tuple(t.shape),
        dtype=str(t.dtype).removeprefix("torch."),
        **dataclasses.asdict(array_stats(t)),
    )


def _kind(t: torch.Tensor) -> str:
    t = t.detach()
    nan = bool(torch.isnan(t).any())
    inf = bool(torch.isinf(t).any())
    return "NaN and inf" if nan and inf else ("NaN" if nan else "inf")


def _function_name(func: Any) -> str:
    name = getattr(func, "__name__", None) or repr(func)
    qualname = getattr(func, "__qualname__", "") or ""
    module = getattr(func, "__module__", None)
    if qualname.startswith(("TensorBase.", "Tensor.")):
        return f"Tensor.{name}"
    if qualname.startswith("_VariableFunctionsClass.") or module == "torch":
        return f"torch.{name}"
    if module == "torch._C._nn":
        # The C bindings behind torch.nn.functional (linear, gelu, ...).
        return f"torch.nn.functional.{name}"
    return f"{module}.{name}" if module else name


class _FunctionCheck(TorchFunctionMode):
    """Checks the output of every torch function while a watch is on."""

    def __init__(self, owner: Watch):
        super().__init__()
        self.owner = owner

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        owner = self.owner
        # Property reads (``.grad``, ``.data``, ``.T``) return tensors that
        # were checked when they were made.
        if owner._active and getattr(func, "__name__", None) != "__get__":
            owner._after_function(func, args, kwargs, out)
        return out


class Watch:
    """A running or stopped watch over one model; made by :func:`watch`.

    Attributes
    ----------
    reports : list of NonFiniteReport
        In ``mode="record"``, the first report of each step and phase.
    diagnostics : list of (int, LogitReport)
        ``(step, report)`` for the logits, when ``diagnose_logits`` is set.
    current_step : int
        The step reports are filed under.  Counts forward passes of the root
        model from 0, until :meth:`step` is first called; from then on only
        :meth:`step` changes it.
    """

    def __init__(self, model, mode, functions, diagnose_logits, diagnose_every):
        self.model = model
        self.mode = mode
        self.functions = functions
        self.diagnose_logits = diagnose_logits
        self.diagnose_every = diagnose_every
        self.reports: list[NonFiniteReport] = []
        self.diagnostics: list[tuple[int, Any]] = []
        self.current_step = 0
        self._manual_steps = False
        self._forwards = 0
        self._active = False
        self._stack: list[tuple[str, torch.nn.Module]] = []
        # The tensor checked last (and its version counter) and the one given
        # backward hooks last: a container's output is its last child's
        # output, and a module's output the last function's, so neither needs
        # a second look.
        self._last_checked: tuple[torch.Tensor, int] | None = None
        self._last_hooked: torch.Tensor | None = None
        self._handles: list[Any] = []
        self._mode_ctx: _FunctionCheck | None = None
        self._reported: set[tuple[int, str]] = set()

    # --- public API ---------------------------------------------------------

    def start(self) -> Watch:
        """Install the hooks (and the function mode); returns ``self``."""
        if self._active:
            raise RuntimeError("this watch is already started; call stop() first")
        for path, module in self.model.named_modules():
            # The module stack serves only the function mode.
            if self.functions or module is self.model:
                self._handles.append(module.register_forward_pre_hook(self._make_pre_hook(path, module)))
            self._handles.append(module.register_forward_hook(self._make_post_hook(path, module), always_call=True))
        seen = set()  # a tied parameter is checked once, under its first owner
        for path, module in self.model.named_modules():
            for name, p in module.named_parameters(recurse=False):
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    hook = self._make_grad_hook(path, module, f"grad of parameter {name}")
                    self._handles.append(p.register_hook(hook))
        self._stack = []
        self._active = True
        if self.functions:
            self._mode_ctx = _FunctionCheck(self)
            self._mode_ctx.__enter__()
        return self

    def stop(self) -> None:
        """Remove every hook; a stopped watch checks nothing.  Idempotent."""
        if not self._active:
            return
        self._active = False
        if self._mode_ctx is not None:
            self._mode_ctx.__exit__(None, None, None)
            self._mode_ctx = None
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._stack = []
        self._last_checked = None
        self._last_hooked = None

    def step(self, value: int | None = None) -> int:
        """Advance the step by one, or set it to ``value``; returns it.

        After the first call, forward passes no longer advance the step.
        """
        if value is not None:
            value = validate.integer(value, "value")
        self._manual_steps = True
        self.current_step = self.current_step + 1 if value is None else value
        return self.current_step

    def __enter__(self) -> Watch:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- forward ------------------------------------------------------------
    #
    # The hooks run where the function mode is on; they turn it off so that
    # their own torch calls are neither checked nor slowed by it.  (Inside
    # ``__torch_function__`` the mode is off by itself.)

    def _make_pre_hook(self, path: str, module: torch.nn.Module):
        is_root = module is self.model

        def pre_hook(mod, args):
            if not self._active:
                return
            if is_root:
                self._stack = []
                if not self._manual_steps:
                    self.current_step = self._forwards
                    self._forwards += 1
                with _mode_off():
                    self._check_forward(path, mod, None, _tensors(args, "input"), args, None, [])
            if self.functions:
                self._stack.append((path, mod))

        return pre_hook

    def _make_post_hook(self, path: str, module: torch.nn.Module):
        is_root = module is self.model

        def post_hook(mod, args, output):
            if not self._active:
                return
            if self.functions and self._stack:
                self._stack.pop()
            if output is None:
                return
            with _mode_off():
                named = _tensors(output, "output")
                self._check_forward(path, mod, None, self._unchecked(named), args, None, named)
                if torch.is_grad_enabled():
                    self._hook_backward(path, mod, named)
                if is_root and self.diagnose_logits and self.current_step % self.diagnose_every == 0:
                    self._diagnose(output)

        return post_hook

    def _hook_backward(self, path, mod, named) -> None:
        # The gradient arriving at each output, and the one the module's
        # last autograd node makes from it: that node may be a custom
        # autograd.Function, which the function mode never sees.
        fresh = []
        for name, t in named:
            if t.requires_grad and _checkable(t) and t is not self._last_hooked:
                self._last_hooked = t
                t.register_hook(self._make_grad_hook(path, mod, f"grad of {name}"))
                fresh.append(t)
        self._hook_nodes(path, mod, None, fresh)

    def _hook_nodes(self, path, mod, func, tensors) -> None:
        """Check the gradients made by the autograd nodes of ``tensors``."""
        nodes = {id(t.grad_fn): t.grad_fn for t in tensors if t.grad_fn is not None}
        for node in nodes.values():
            # Without a function name the node's own name says what made it.
            # (The hook holds the name, not the node: a node that held a hook
            # holding itself would never be freed.)
            of_node = "" if func is not None else f" of {node.name()}"
            node.register_hook(self._make_node_hook(path, mod, func, of_node))

    def _unchecked(self, named):
        last = self._last_checked
        if last is None:
            return named
        return [(n, t) for n, t in named if t is not last[0] or t._version != last[1]]

    def _after_function(self, func, args, kwargs, out) -> None:
        named = [("output", out)] if type(out) is torch.Tensor else _tensors(out, "output")
        # A view shares the memory of a tensor that was checked when made.
        named = [(n, t) for n, t in named if _checkable(t) and not t._is_view()]
        if not named:
            return
        path, mod = self._stack[-1] if self._stack else (None, None)
        self._check_forward(path, mod, func, named, args, kwargs, named)
        if torch.is_grad_enabled():
            self._hook_nodes(path, mod, func, [t for _, t in named])

    def _check_forward(self, path, mod, func, candidates, args, kwargs, outputs) -> None:
        if not candidates:
            return
        bad = _first_bad(candidates)
        if bad is not None:
            inputs = _tensors(args, "input") + _tensors(kwargs or {}, "input")
            self._report("forward", path, mod, func, bad[0], bad[1], inputs, outputs)
        last = candidates[-1][1]
        self._last_checked = (last, last._version)

    def _diagnose(self, output: Any) -> None:
        pick = self.diagnose_logits
        logits = output if pick is True else pick(output)
        if not isinstance(logits, torch.Tensor):
            raise TypeError(
                f"diagnose_logits must pick a tensor of logits from the model output; got {validate.describe(logits)}"
            )
        report = diagnose(logits.detach())
        self.diagnostics.append((self.current_step, report))
        logger.info("step %d logits:\n%s", self.current_step, report)

    # --- backward -----------------------------------------------------------

    def _make_grad_hook(self, path, mod, what):
        def grad_hook(grad):
            if not self._active:
                return
            with _mode_off():
                if _checkable(grad) and not _is_finite(grad):
                    self._report("backward", path, mod, None, what, grad, [], [(what, grad)])

        return grad_hook

    def _make_node_hook(self, path, mod, func, of_node):
        def node_hook(grad_inputs, grad_outputs):
            if not self._active:
                return
            with _mode_off():
                produced = [(f"grad_input[{i}]{of_node}", g) for i, g in enumerate(grad_inputs) if g is not None]
                bad = _first_bad(produced)
                arrived = [(f"grad_output[{i}]{of_node}", g) for i, g in enumerate(grad_outputs) if g is not None]
                # A non-finite gradient that arrived from further down is
                # reported where it was made, not at every node it passes.
                if bad is not None and _first_bad(arrived) is None:
                    self._report("backward", path, mod, func, bad[0], bad[1], arrived, produced)

        return node_hook

    # --- reporting ----------------------------------------------------------

    def _report(self, phase, path, mod, func, tensor_name, bad, inputs, outputs) -> None:
        key = (self.current_step, phase)
        if self.mode == "record" and key in self._reported:
            return
        report = NonFiniteReport(
            step=self.current_step,
            phase=phase,
            module=path,
            module_type=None if mod is None else type(mod).__name__,
            function=None if func is None else _function_name(func),
            tensor=tensor_name,
            kind=_kind(bad),
            inputs=tuple(_stats(n, t) for n, t in inputs if _checkable(t)),
            outputs=tuple(_stats(n, t) for n, t in outputs if _checkable(t)),
        )
        if self.mode == "raise":
            raise NonFiniteError(report)
        self._reported.add(key)
        self.reports.append(report)
        logger.warning("non-finite value: %s", report)


def watch(
    model: torch.nn.Module,
    *,
    mode: str = "raise",
    functions: bool = False,
    diagnose_logits: bool | Callable[[Any], torch.Tensor] | None = None,
    diagnose_every: int = 1,
) -> Watch:
    """Watch a model for the first NaN or inf, forward and backward.

    Use it as a context manager, ``with watch(model): ...``, or call
    ``w = watch(model); w.start(); ...; w.stop()``.  Only the code run while
    it is started is watched.

    Parameters
    ----------
    model : torch.nn.Module
        Every module in ``model.named_modules()`` at ``start()`` is hooked.
    mode : {"raise", "record"}, default "raise"
        "raise" stops at the first non-finite value with
        :class:`NonFiniteError`; "record" appends a :class:`NonFiniteReport`
        to ``reports`` (the first of each step and phase, where the value
        was made, not every place it flowed to), logs it on the
        ``softmaxkit.watch`` logger, and lets the run go on.
    functions : bool, default False
        Also check the output of every torch function called while watching
        (a ``TorchFunctionMode``) and hook its backward, naming the function
        (``torch.log``) and the module it ran in.  This finds NaNs in
        intermediate values that never leave a module (masked out by
        ``torch.where``, say) and names the function whose backward made a
        NaN.  It costs a few microseconds per torch call, several times the
        module checks on small models (see ``benchmarks/results/watch.md``),
        so it is off by default: without it, module outputs, root inputs and
        gradients are checked.
    diagnose_logits : bool or callable, optional
        True: the root model's output is logits; a callable picks the
        logits from the output.  Each step a multiple of ``diagnose_every``
        appends ``(step, softmaxkit.diagnose(logits))`` to ``diagnostics``
        and logs it at INFO.
    diagnose_every : int >= 1, default 1

    Returns
    -------
    Watch
        Not started yet; ``with`` or ``start()`` starts it.

    Notes
    -----
    Steps: the root model's forward passes are counted from 0 and the
    backward pass is filed under the latest forward; call ``w.step()`` (or
    ``w.step(n)``) to number steps yourself instead.  Gradients are checked
    where they arrive at each module's outputs and at each parameter, and,
    with ``functions=True``, as each function's backward makes them.  Only
    real floating, strided tensors are checked.  On a GPU every check
    synchronises with the device, so watch is a debugging tool, not one to
    leave on.  The function mode sees only the calling thread.

    Examples
    --------
    >>> import torch
    >>> from softmaxkit.torch import watch
    >>> class SafeLog(torch.nn.Module):
    ...     def forward(self, x):  # the NaN of log(-1) is masked out
    ...         return torch.where(x > 0, torch.log(x), 0.0)
    >>> net = torch.nn.Sequential(SafeLog())
    >>> try:
    ...     with watch(net, functions=True):
    ...         net(torch.tensor([-1.0, 2.0]))
    ... except FloatingPointError as e:  # NonFiniteError
    ...     print(e.report.function, "in", e.report.location)
    torch.log in 0 (SafeLog)
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {validate.describe(model)}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, _MODES))}; got {validate.describe(mode)}")
    validate.flag(functions, "functions")
    if not (diagnose_logits is None or isinstance(diagnose_logits, bool) or callable(diagnose_logits)):
        raise TypeError(f"diagnose_logits must be None, True, False or a callable; got {validate.describe(diagnose_logits)}")
    every = validate.count(diagnose_every, "diagnose_every", 1)
    return Watch(model, mode, functions, diagnose_logits, every)
