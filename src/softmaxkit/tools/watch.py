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

A check of a module's output or a parameter's gradient is one reduction
(``aminmax`` on the CPU, the inf-norm on an accelerator): the abs-max is
finite exactly when every element is (NaN propagates through it), and the
trail keeps it.  Other gradients are checked with one ``sum`` (a finite sum
proves every element finite; a non-finite one, which may only have
overflowed, is confirmed).  The abs-max of each module's outputs is kept for
the last few steps (a ring buffer of one float per module and step), so that
a report can name the module where values started to grow, not only the one
where they overflowed.  While watching, a post-hook on every optimizer step
checks the watched model's parameters, and compiled code runs eagerly
(``torch.compiler.set_stance("force_eager")``) so that the hooks see every
module.  Statistics are computed only for a report.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable

try:
    import torch
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )
    from torch.overrides import TorchFunctionMode
except ImportError:
    raise ImportError("softmaxkit.torch needs PyTorch: pip install 'softmaxkit[torch]'") from None

from softmaxkit.frontend import validate
from softmaxkit.tools.report import diagnose
from softmaxkit.tools.stats import array_stats

__all__ = [
    "GradientTrail",
    "Growth",
    "ModuleTrail",
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
# Steps of module abs-maxima kept for a report, and the factor by which a
# module's outputs must rise, over the steps kept or above everything before
# it in one step, to be named as where values grew.
_TRAIL_STEPS = 8
_GROWTH = 100.0
# Rows of the trail printed in a report (the report holds every module).
_TRAIL_ROWS = 8

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
class ModuleTrail:
    """The abs-max of one module's outputs over the steps of a report's trail.

    ``abs_max[i]`` belongs to step ``NonFiniteReport.trail_steps[i]``; it is
    the largest ``|value|`` over the module's floating outputs in that step
    (the largest of its calls), NaN or inf when one was not finite, and None
    when the module did not run in that step.
    """

    module: str
    module_type: str
    abs_max: tuple[float | None, ...]


@dataclass(frozen=True)
class GradientTrail:
    """The abs-max of one parameter's gradient over the steps of a report's trail.

    ``parameter`` is the qualified name, as in ``model.named_parameters()``;
    ``abs_max[i]`` belongs to step ``NonFiniteReport.trail_steps[i]``, None
    when no gradient reached the parameter in that step.
    """

    parameter: str
    abs_max: tuple[float | None, ...]


@dataclass(frozen=True)
class Growth:
    """Where the values started to grow, found from the trail.

    Either over steps: the module's output abs-max rose from ``baseline`` at
    ``baseline_step`` to ``abs_max`` at ``step``; or within one step
    (``baseline_step`` None): its output abs-max was ``abs_max``, and the
    largest value before it in that step (the model's inputs and the outputs
    of the modules that finished before it) was ``baseline``.  Modules
    downstream rise with it, or faster (a product of two grown values squares
    the rise); the one named is the first, in order of execution, whose rise
    is at least the fourth root of the largest rise (a quarter of it in
    orders of magnitude), and a rise counts from 100 times.
    """

    module: str
    module_type: str
    step: int
    abs_max: float
    baseline: float
    baseline_step: int | None

    @property
    def factor(self) -> float:
        return self.abs_max / self.baseline

    def __str__(self) -> str:
        since = (
            "the largest value before it in that step"
            if self.baseline_step is None
            else f"its {self.baseline:.3g} at step {self.baseline_step}"
        )
        return (
            f"{self.module or '(root model)'} ({self.module_type}): output abs-max {self.abs_max:.3g} "
            f"at step {self.step}, {self.factor:.3g} times {since}"
        )


@dataclass(frozen=True)
class NonFiniteReport:
    """Where and when the first non-finite value appeared, and where it came from.

    Attributes
    ----------
    step : int
        The watcher's step (see :class:`Watch`).
    phase : {"forward", "backward", "optimizer"}
        ``"optimizer"``: an optimizer's ``step()`` left a parameter
        non-finite.
    module : str or None
        Qualified name of the module, as in ``model.named_modules()``
        (``""`` is the root model); None for code outside the model run
        while watching, such as the loss.
    module_type : str or None
        The module's class name.
    function : str or None
        The torch function whose output (forward) or whose backward
        (backward) was non-finite, when the function check found it; in
        the optimizer phase, the optimizer's step and its learning rate
        (``"SGD.step, lr=1e+20"``).
    tensor : str
        Which tensor: ``"output[0]"``, ``"input[1]"`` (root model inputs),
        ``"grad of output[0]"``, ``"grad of parameter weight"``,
        ``"grad_input[0]"`` (a function's backward) or ``"parameter
        weight"`` (optimizer).
    kind : {"NaN", "inf", "NaN and inf"}
    inputs, outputs : tuple of TensorStats
        The tensors that went in and came out (in backward: the gradients
        that arrived and those produced; in the optimizer phase: the
        parameter's gradient, and the parameter).
    growth : Growth or None
        The module where values started to grow, found from the trail;
        None when no module's outputs rose 100 times (a NaN made from
        finite, ordinary values, such as ``log`` of a negative number).
    parameters : tuple of TensorStats
        The parameters of the ``growth`` module (else of ``module``), and
        their gradients where they still have one (``"grad of weight"``;
        ``optimizer.zero_grad()`` drops them, which is why ``grad_trail``
        keeps their abs-max).
    trail_steps : tuple of int
        The steps of the trail, oldest first (up to the last 8).
    trail : tuple of ModuleTrail
        Per module, in order of execution, the abs-max of its outputs in
        each of ``trail_steps``.
    grad_trail : tuple of GradientTrail
        For the parameters in ``parameters``, the abs-max of their gradient
        in each of ``trail_steps``.
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
    growth: Growth | None = None
    parameters: tuple[TensorStats, ...] = ()
    trail_steps: tuple[int, ...] = ()
    trail: tuple[ModuleTrail, ...] = ()
    grad_trail: tuple[GradientTrail, ...] = ()

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
        lines.extend(_listed("inputs", self.inputs))
        lines.extend(_listed("outputs", self.outputs))
        if self.growth is not None:
            lines.append(f"  grew at  {self.growth}")
        # The parameters are the growth module's, else the reported module's.
        lines.extend(_listed("params", self.parameters))
        lines.extend(self._trail_lines())
        return "\n".join(lines)

    def _trail_lines(self) -> list[str]:
        """The trail's most telling rows: the growth, the module before it, the largest."""
        if not self.trail:
            return []
        names = [t.module for t in self.trail]
        keep = set()
        if self.growth is not None and self.growth.module in names:
            at = names.index(self.growth.module)
            keep.update(names[max(at - 1, 0) : at + 1])
        by_size = sorted(self.trail, key=lambda t: _latest(t.abs_max), reverse=True)
        for t in by_size:
            if len(keep) >= _TRAIL_ROWS:
                break
            keep.add(t.module)
        rows = [t for t in self.trail if t.module in keep]
        head = "".join(f"{f'step {s}':>10}" for s in self.trail_steps)
        shown = f"{len(rows)} of {len(self.trail)} modules" if len(rows) < len(self.trail) else "every module"
        labelled = [
            ("> " if self.growth is not None and t.module == self.growth.module else "  ", t.module or "(root model)", t.abs_max)
            for t in rows
        ] + [("  ", f"grad of {g.parameter}", g.abs_max) for g in self.grad_trail]
        width = max(len(name) for _, name, _ in labelled)
        out = [f"  trail    abs-max of module outputs ({shown}, in order of execution)", f"  {'':<8} {'':<{width}}  {head}"]
        for mark, name, values in labelled:
            cells = "".join(f"{'-' if v is None else f'{v:.3g}':>10}" for v in values)
            out.append(f"  {'':<7}{mark}{name:<{width}}  {cells}")
        return out


def _listed(label: str, stats: tuple[TensorStats, ...]) -> list[str]:
    lines = [f"  {label if i == 0 else '':<8} {s}" for i, s in enumerate(stats[:_MAX_LISTED])]
    if len(stats) > _MAX_LISTED:
        lines.append(f"  {'':<8} ... and {len(stats) - _MAX_LISTED} more")
    return lines


def _latest(values: tuple[float | None, ...]) -> float:
    """The last value of a trail row that is not None; a non-finite one ranks highest."""
    for v in reversed(values):
        if v is not None:
            return math.inf if math.isnan(v) else v
    return -math.inf


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


def _abs_max(t: torch.Tensor) -> float:
    """The largest ``|value|`` of ``t``: NaN or inf exactly when some element is not finite.

    One reduction that propagates NaN (``aminmax`` on the CPU, the
    inf-norm elsewhere), so the finite check and the figure the trail keeps
    are the same reduction.
    """
    if not t.numel():
        return 0.0
    if t.element_size() == 1:
        t = t.float()  # aminmax has no float8 kernels
    if not t.is_cpu:
        # On an accelerator, one kernel and one synchronisation: the
        # inf-norm is the abs-max, and NaN propagates through it.
        return torch.linalg.vector_norm(t.detach(), math.inf).item()
    # On the CPU the inf-norm is several times slower than aminmax.
    lo, hi = torch.aminmax(t.detach())
    hi = hi.item()
    return hi if math.isnan(hi) else max(-lo.item(), hi)


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    """True only if every element of every tensor is finite; False may be an overflow, to be confirmed.

    One ``sum`` per tensor and one synchronisation per device: a finite
    total of the sums proves every sum, hence every element, finite.
    """
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for t in tensors:
        by_device.setdefault(t.device, []).append(t.detach().sum(dtype=torch.float32) if t.element_size() == 1 else t.detach().sum())
    return all(math.isfinite(torch.stack([s.float() for s in sums]).sum().item()) for sums in by_device.values())


def _is_finite(t: torch.Tensor) -> bool:
    """Whether every element is finite, for a tensor whose abs-max is not kept.

    A ``sum`` is cheaper than ``aminmax`` on large tensors; a finite sum
    proves every element finite, and a non-finite one, which may only have
    overflowed, is confirmed exactly.
    """
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
        if owner._active and not owner._in_optimizer and getattr(func, "__name__", None) != "__get__":
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
        self._root = model
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
        # The tensor checked last (its version counter and abs-max) and the
        # one given backward hooks last: a container's output is its last
        # child's output, and a module's output the last function's, so
        # neither needs a second look.
        self._last_checked: tuple[torch.Tensor, int, float] | None = None
        self._last_hooked: torch.Tensor | None = None
        self._handles: list[Any] = []
        self._mode_ctx: _FunctionCheck | None = None
        self._reported: set[tuple[int, str]] = set()
        self._trail: collections.deque[_StepTrail] = collections.deque(maxlen=_TRAIL_STEPS)
        self._modules: dict[str, torch.nn.Module] = {}
        self._params: dict[int, tuple[str, torch.nn.Module, str]] = {}
        self._stance: Any = None
        self._in_optimizer = False

    # --- public API ---------------------------------------------------------

    def start(self) -> Watch:
        """Install the hooks (and the function mode); returns ``self``."""
        if self._active:
            raise RuntimeError("this watch is already started; call stop() first")
        self._root, compiled = _uncompiled(self.model)
        set_stance = getattr(torch.compiler, "set_stance", None)
        if compiled and set_stance is None:
            logger.warning(
                "softmaxkit.watch: torch %s cannot run a compiled model eagerly (torch.compiler.set_stance needs "
                "torch 2.6), so only its parameter gradients and optimizer steps are checked; watch the "
                "uncompiled model to check every module",
                torch.__version__,
            )
        elif compiled:
            logger.warning(
                "softmaxkit.watch: the model is compiled; it runs eagerly while watched "
                "(torch.compiler.set_stance('force_eager')) so that every module can be checked"
            )
        modules = [] if compiled and set_stance is None else list(self._root.named_modules())
        for path, module in modules:
            # The module stack serves only the function mode.
            if self.functions or module is self._root:
                self._handles.append(module.register_forward_pre_hook(self._make_pre_hook(path, module)))
            self._handles.append(module.register_forward_hook(self._make_post_hook(path, module), always_call=True))
        self._modules = dict(self._root.named_modules())
        self._params = {}  # a tied parameter is checked once, under its first owner
        for path, module in self._modules.items():
            for name, p in module.named_parameters(recurse=False):
                if p.requires_grad and id(p) not in self._params:
                    self._params[id(p)] = (path, module, name)
                    hook = self._make_grad_hook(path, module, f"grad of parameter {name}", f"{path}.{name}" if path else name)
                    self._handles.append(p.register_hook(hook))
        # Every optimizer, so that none has to be passed in; only the watched
        # model's parameters are checked.
        self._handles.append(register_optimizer_step_pre_hook(self._before_optimizer_step))
        self._handles.append(register_optimizer_step_post_hook(self._after_optimizer_step))
        self._stack = []
        self._trail.clear()
        self._in_optimizer = False
        self._active = True
        if set_stance is not None:
            # The hooks synchronise and read values: under Dynamo each one
            # would be a graph break with a page of warnings.
            self._stance = set_stance("force_eager")
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
        if self._stance is not None:
            self._stance.__exit__(None, None, None)  # the stance from before start()
            self._stance = None
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
        is_root = module is self._root

        def pre_hook(mod, args):
            if not self._active:
                return
            if is_root:
                self._stack = []
                self._in_optimizer = False
                if not self._manual_steps:
                    self.current_step = self._forwards
                    self._forwards += 1
                with _mode_off():
                    self._check_forward(path, mod, None, _tensors(args, "input"), args, None, "inputs")
            if self.functions:
                self._stack.append((path, mod))

        return pre_hook

    def _make_post_hook(self, path: str, module: torch.nn.Module):
        is_root = module is self._root

        def post_hook(mod, args, output):
            if not self._active:
                return
            if self.functions and self._stack:
                self._stack.pop()
            if output is None:
                return
            with _mode_off():
                named = _tensors(output, "output")
                self._check_forward(path, mod, None, named, args, None, "outputs")
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

    def _after_function(self, func, args, kwargs, out) -> None:
        named = [("output", out)] if type(out) is torch.Tensor else _tensors(out, "output")
        # A view shares the memory of a tensor that was checked when made.
        named = [(n, t) for n, t in named if _checkable(t) and not t._is_view()]
        if not named:
            return
        path, mod = self._stack[-1] if self._stack else (None, None)
        self._check_forward(path, mod, func, named, args, kwargs, None)
        if torch.is_grad_enabled():
            self._hook_nodes(path, mod, func, [t for _, t in named])

    def _check_forward(self, path, mod, func, named, args, kwargs, trail) -> None:
        """Check ``named`` tensors; keep their abs-max in the trail as ``trail`` ("inputs", "outputs" or None)."""
        largest = None
        bad = None
        for name, t in named:
            if not _checkable(t):
                continue
            last = self._last_checked
            if last is not None and t is last[0] and t._version == last[1]:
                value = last[2]
            else:
                value = _abs_max(t)
                self._last_checked = (t, t._version, value)
            largest = value if largest is None else _larger(largest, value)
            if not math.isfinite(value):
                bad = (name, t)
                break
        if largest is not None and trail is not None:
            self._step_trail().add(trail, path, largest)
        if bad is not None:
            inputs = _tensors(args, "input") + _tensors(kwargs or {}, "input")
            self._report("forward", path, mod, func, bad[0], bad[1], inputs, [] if trail == "inputs" else named)

    def _step_trail(self) -> _StepTrail:
        if not self._trail or self._trail[-1].step != self.current_step:
            self._trail.append(_StepTrail(self.current_step))
        return self._trail[-1]

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

    def _make_grad_hook(self, path, mod, what, parameter=None):
        def grad_hook(grad):
            if not self._active or not _checkable(grad):
                return
            with _mode_off():
                # Only a parameter's gradient has its abs-max kept.
                if parameter is None:
                    finite = _is_finite(grad)
                else:
                    value = _abs_max(grad)
                    self._step_trail().add("grads", parameter, value)
                    finite = math.isfinite(value)
                if not finite:
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

    # --- optimizer ----------------------------------------------------------

    def _before_optimizer_step(self, optimizer, args, kwargs) -> None:
        # The function mode would see the update's own arithmetic and report
        # it as a function outside the model; the post-hook names the step.
        self._in_optimizer = self._active

    def _after_optimizer_step(self, optimizer, args, kwargs) -> None:
        self._in_optimizer = False
        if not self._active:
            return
        with _mode_off():
            watched = [(group, p) for group in optimizer.param_groups for p in group["params"] if id(p) in self._params]
            if not watched or _all_finite([p for _, p in watched]):
                return
            for group, p in watched:
                if math.isfinite(_abs_max(p)):
                    continue
                path, mod, name = self._params[id(p)]
                what = f"{type(optimizer).__name__}.step"
                lr = group.get("lr")
                if isinstance(lr, (int, float, torch.Tensor)):
                    what += f", lr={float(lr):.3g}"
                grads = [] if p.grad is None else [(f"grad of {name}", p.grad)]
                self._report("optimizer", path, mod, what, f"parameter {name}", p, grads, [(name, p)])
                return

    # --- reporting ----------------------------------------------------------

    def _report(self, phase, path, mod, func, tensor_name, bad, inputs, outputs) -> None:
        key = (self.current_step, phase)
        if self.mode == "record" and key in self._reported:
            return
        types = {p: type(m).__name__ for p, m in self._modules.items()}
        growth = _find_growth(self._trail, types)
        # The parameters of where the values grew, else of the module that
        # made the value; a bad input to the model is no module's doing.
        owner = growth.module if growth is not None else None if tensor_name.startswith("input") else path
        steps, trail = _trail_rows(self._trail, types)
        params = self._owned_parameters(owner)
        report = NonFiniteReport(
            step=self.current_step,
            phase=phase,
            module=path,
            module_type=None if mod is None else type(mod).__name__,
            function=None if func is None else func if isinstance(func, str) else _function_name(func),
            tensor=tensor_name,
            kind=_kind(bad),
            inputs=tuple(_stats(n, t) for n, t in inputs if _checkable(t)),
            outputs=tuple(_stats(n, t) for n, t in outputs if _checkable(t)),
            growth=growth,
            parameters=tuple(_parameter_stats(params)),
            trail_steps=steps,
            trail=trail,
            grad_trail=tuple(
                GradientTrail(name, tuple(rec.grads.get(name) for rec in self._trail)) for name, _ in params
            ),
        )
        if self.mode == "raise":
            raise NonFiniteError(report)
        self._reported.add(key)
        self.reports.append(report)
        logger.warning("non-finite value: %s", report)

    def _owned_parameters(self, path: str | None) -> list[tuple[str, torch.nn.Parameter]]:
        """The first few parameters of module ``path`` (its own, else its children's), with qualified names."""
        module = self._modules.get(path) if path is not None else None
        if module is None:
            return []
        params = list(module.named_parameters(recurse=False)) or list(module.named_parameters())
        return [(f"{path}.{name}" if path else name, p) for name, p in params[:_MAX_LISTED]]


def _parameter_stats(params):
    """Each parameter's statistics (named as in its module), and its gradient's where it has one."""
    for qualified, p in params:
        name = qualified.rsplit(".", 1)[-1]
        yield _stats(name, p)
        if p.grad is not None and _checkable(p.grad):
            yield _stats(f"grad of {name}", p.grad)


class _StepTrail:
    """One step's abs-maxima: of the root model's inputs, and of each module's outputs in order of execution."""

    __slots__ = ("grads", "inputs", "outputs", "step")

    def __init__(self, step: int):
        self.step = step
        self.inputs: float | None = None
        self.outputs: dict[str, float] = {}
        self.grads: dict[str, float] = {}

    def add(self, which: str, name: str, value: float) -> None:
        """Keep ``value`` for the model's inputs, a module's outputs or a parameter's gradient (``which``)."""
        # A module called twice in a step (shared, or accumulated
        # micro-batches) keeps the larger value; a forward post-hook runs
        # when a module finishes, so the order is that of completion.
        if which == "inputs":
            self.inputs = value if self.inputs is None else _larger(self.inputs, value)
            return
        kept = self.outputs if which == "outputs" else self.grads
        old = kept.get(name)
        kept[name] = value if old is None else _larger(old, value)


def _larger(a: float, b: float) -> float:
    """The larger of two abs-maxima, NaN if either is NaN."""
    return math.nan if math.isnan(a) or math.isnan(b) else max(a, b)


def _execution_order(trail) -> list[str]:
    """Module paths in order of execution, oldest step first (only the newest step can be cut short)."""
    return list(dict.fromkeys(path for rec in trail for path in rec.outputs))


def _trail_rows(trail, types) -> tuple[tuple[int, ...], tuple[ModuleTrail, ...]]:
    if not trail:
        return (), ()
    rows = tuple(
        ModuleTrail(path, types.get(path, "?"), tuple(rec.outputs.get(path) for rec in trail))
        for path in _execution_order(trail)
    )
    return tuple(rec.step for rec in trail), rows


def _first_large(rises: dict[str, float], order: list[str]) -> str | None:
    """The first module in ``order`` whose rise is at least the fourth root of the largest, if that is >= 100.

    A rise propagates downstream (the residual stream carries it), and a
    product of two grown values (``q @ k.T``, ``x * x``) squares it, so the
    module that made it is the first with a rise of a comparable order, not
    the one with the largest.
    """
    if not rises or max(rises.values()) < _GROWTH:
        return None
    quarter = math.log(max(rises.values())) / 4
    return next(p for p in order if p in rises and math.log(rises[p]) >= quarter)


def _find_growth(trail, types) -> Growth | None:
    """Where the values started to grow: over the steps kept, else within the last step."""
    if not trail:
        return None
    order = _execution_order(trail)
    first: dict[str, tuple[int, float]] = {}
    last: dict[str, tuple[int, float]] = {}
    for rec in trail:
        for path, value in rec.outputs.items():
            if math.isfinite(value) and value > 0:
                first.setdefault(path, (rec.step, value))
                last[path] = (rec.step, value)
    over_steps = {p: last[p][1] / first[p][1] for p in last if last[p][0] != first[p][0]}
    path = _first_large(over_steps, order)
    if path is not None:
        return Growth(path, types.get(path, "?"), last[path][0], last[path][1], first[path][1], first[path][0])
    # One step (the first NaN came in the first step, or values jumped at
    # once): each module against the largest value before it in that step.
    rec = trail[-1]
    before = rec.inputs if rec.inputs is not None and math.isfinite(rec.inputs) else 0.0
    jumps: dict[str, float] = {}
    bases: dict[str, float] = {}
    for p, value in rec.outputs.items():
        if not math.isfinite(value):
            break  # the non-finite value itself; what follows is its consequence
        if before > 0:
            jumps[p], bases[p] = value / before, before
        before = max(before, value)
    path = _first_large(jumps, list(rec.outputs))
    if path is None:
        return None
    return Growth(path, types.get(path, "?"), rec.step, rec.outputs[path], bases[path], None)


def _uncompiled(model: torch.nn.Module) -> tuple[torch.nn.Module, bool]:
    """The module that ``model`` runs, unwrapped from ``torch.compile``, and whether any of it is compiled."""
    root = model
    while isinstance(getattr(root, "_orig_mod", None), torch.nn.Module):  # torch.compile(module) wraps it
        root = root._orig_mod
    # module.compile() compiles in place.
    compiled = root is not model or any(getattr(m, "_compiled_call_impl", None) is not None for m in root.modules())
    return root, compiled


def watch(
    model: torch.nn.Module,
    *,
    mode: str = "raise",
    functions: bool = False,
    diagnose_logits: bool | Callable[[Any], torch.Tensor] | None = None,
    diagnose_every: int = 1,
) -> Watch:
    """Watch a model for the first NaN or inf, forward, backward and in optimizer steps.

    Use it as a context manager, ``with watch(model): ...``, or call
    ``w = watch(model); w.start(); ...; w.stop()``.  Only the code run while
    it is started is watched.  A report says where the non-finite value was
    made and, from the abs-max of each module's outputs over the last 8
    steps, in which module the values started to grow (``report.growth``),
    with that module's parameters and the abs-max of their gradients.

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
    with ``functions=True``, as each function's backward makes them.  After
    every optimizer's ``step()`` (a global post-hook, so no optimizer needs
    to be passed in) the model's parameters are checked, and an update that
    made one non-finite is reported in the phase ``"optimizer"``.  Only
    real floating, strided tensors are checked.

    Where values grew: a module's output abs-max that rose at least 100
    times, over the steps kept or above every value before it in one step;
    of the modules downstream that rose with it, the first in order of
    execution whose rise is at least the fourth root of the largest (see
    :class:`Growth`).

    Compiled models (``torch.compile(model)``, ``model.compile()``) run
    eagerly while watched: ``start()`` sets
    ``torch.compiler.set_stance("force_eager")`` and ``stop()`` restores the
    previous stance, and one line on the ``softmaxkit.watch`` logger says
    so.  Before torch 2.6, which has no stance, one line says that only the
    parameters' gradients and the optimizer steps of a compiled model are
    checked.  On a GPU every check synchronises with the device, so watch
    is a debugging tool, not one to leave on.  The function mode sees only
    the calling thread.

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
