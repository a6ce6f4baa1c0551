"""Vocabulary-parallel cross-entropy, forward + backward: softmaxkit vs Megatron-core vs DTensor ``loss_parallel`` (gloo, CPU).

One run compares, at one total shape ``N x V`` (float32 logits, class-index
targets, ``reduction="mean"``):

- on one process holding the whole logits: ``torch.nn.functional.cross_entropy``
  and ``softmaxkit.torch.cross_entropy``;
- on ``W`` ranks (gloo on localhost, one process per rank), each holding the
  contiguous slice ``[r V / W, (r + 1) V / W)`` of every row:
  ``softmaxkit.torch.distributed.vocab_parallel_cross_entropy`` (given
  ``vocab_start``), Megatron-core's ``tensor_parallel.vocab_parallel_cross_entropy``
  (after ``parallel_state.initialize_model_parallel(tensor_model_parallel_size=W)``;
  it returns the per-token loss, whose ``.mean()`` is taken) and PyTorch's
  ``loss_parallel`` (the logits a ``DTensor`` leaf ``Shard(1)`` on a 1-D CPU
  mesh, ``F.cross_entropy`` and the backward inside the context manager).

For each rank count, every rank makes its slice of the logits (column
blocks of ``N(0, 4)`` values, each block from a generator seeded by its
index, so every split holds the same logits) and:

1. time: the variants of the rank count run in the same processes,
   interleaved (house style): each is warmed up on a ``64 x 1024`` shape and
   called once, untimed, on the whole shape; then ``--repeats`` rounds, the
   order rotating every round, each call after a barrier.  A call's time is
   the slowest rank's; the table gives the median over the rounds.
2. traffic: during each variant's call of the last round every collective
   is recorded by wrapping ``torch.distributed``'s collectives
   (``all_reduce``, ``all_gather``, ``all_gather_into_tensor``,
   ``all_gather_single``, ``reduce_scatter``, ``reduce_scatter_tensor``,
   ``broadcast``, ``all_gather_object``, ...) and the functional collectives
   that DTensor issues (``torch.ops._c10d_functional.all_reduce`` and the
   others), with the bytes of the tensor each rank contributes, ``B``.
   Bytes sent per rank follow the ring algorithm: all-reduce
   ``2 (W - 1) / W * B``, all-gather ``(W - 1) * B`` (``B`` the local part),
   reduce-scatter ``(W - 1) / W * B``, broadcast ``B``.  The gloo flight
   recorder (``TORCH_FR_BUFFER_SIZE``), which sees every collective at the
   process group whatever API issued it, records the same window as a
   cross-check.
3. memory: each variant alone in fresh processes, after its warm-up: the
   peak resident set is reset (``_harness.reset_peak_rss``, the resettable
   form of ``ru_maxrss``) and one forward + backward runs on the whole
   shape; its peak growth, the gradient included, is the rank's memory, and
   its loss is compared with a float64 reference.
4. accuracy, in the same fresh processes: a separate float32 batch of
   confident rows (18 rows of width ``--acc-width``: the target logit the
   row's argmax with margin 5, 10, ..., 90 over the others, drawn from
   [-1, 0); the targets spread over the slices), ``reduction="none"``: the
   worst ULP error of the per-row loss and of the gradient's target entry
   against mpmath at 60 digits, written in the log1p form
   (``tests/reference``).

Megatron-core's loss overwrites its float32 input (with the softmax, then
the gradient), so it works on a copy of the logits, restored before each
call outside the timing.  Ranks get ``max(1, cores // W)`` torch and
softmaxkit threads each.

Usage::

    PYTHONPATH=src python benchmarks/bench_distributed.py [--quick] [--n 4096] [--v 131072]
        [--ranks 1,2,4] [--variants torch,softmaxkit,megatron,dtensor] [--repeats 7] [--acc-width 1024] [--out DIR]

prints the table and writes DIR/distributed.md and .csv (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import functools
import inspect
import math
import os
import pickle
import platform
import queue
import socket
import statistics
import subprocess
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp
from _harness import (
    REPOSITORY,
    add_out_argument,
    option_names,
    describe,
    machine,
    peak_rss,
    reset_peak_rss,
    write_results,
)

import softmaxkit

DEFAULT = (4096, 131072)
QUICK = (256, 8192)
# Warm-up calls use a shape smaller than any measured, so they leave no freed buffers of the measured sizes.
WARM = (64, 1024)
ACC_WIDTH = 1024
QUICK_ACC_WIDTH = 256
MARGINS = tuple(range(5, 91, 5))
# Columns per generator block of the logits: every split of the vocabulary reads the same values.
BLOCK = 4096
SCALE = 2.0
SEED = 0
# The gloo flight recorder's ring buffer: the collectives it keeps.
FR_ENTRIES = 4096
# Seconds a collective may wait for the other ranks (the slowest full-shape call takes well under a minute).
COLLECTIVE_TIMEOUT = 900
# Seconds to wait for the other ranks' reports once one rank has failed.
GRACE = 30

VARIANTS = ["torch", "softmaxkit", "megatron", "dtensor"]
SINGLE = ["torch", "softmaxkit"]
PARALLEL = ["softmaxkit", "megatron", "dtensor"]
LABELS = {
    (True, "torch"): "F.cross_entropy",
    (True, "softmaxkit"): "softmaxkit.torch.cross_entropy",
    (False, "softmaxkit"): "softmaxkit vocab_parallel_cross_entropy",
    (False, "megatron"): "Megatron-core vocab_parallel_cross_entropy",
    (False, "dtensor"): "DTensor loss_parallel + F.cross_entropy",
}
# Where a row's ratios come from: softmaxkit's row of the same rank count.
OURS = "softmaxkit"

NAME = "distributed"
TITLE = "Vocabulary-parallel cross-entropy forward + backward: softmaxkit vs Megatron-core vs DTensor loss_parallel (gloo, CPU)"
COLUMNS = [
    "ranks",
    "variant",
    "time (s)",
    "softmaxkit / this",
    "sent per rank (KiB)",
    "softmaxkit / this",
    "collectives per call",
    "peak growth per rank (MiB)",
    "softmaxkit / this",
    "loss rel. error",
    "loss ULP",
    "grad[t] ULP",
]
CSV_FIELDS = [
    "ranks",
    "variant",
    "label",
    "n",
    "v",
    "threads_per_rank",
    "repeats",
    "time_s",
    "time_min_s",
    "time_max_s",
    "times",
    "time_ratio",
    "sent_bytes_per_rank",
    "sent_ratio",
    "collectives",
    "flight_recorder",
    "growth_mib",
    "growth_mib_ranks",
    "growth_ratio",
    "loss",
    "loss_rel_error",
    "loss_ulp",
    "grad_t_ulp",
    "input_modified",
    "error",
    "softmaxkit",
    "torch",
    "megatron_core",
]


# --- the inputs -----------------------------------------------------------------------------------


def column_block(n: int, v: int, b: int) -> torch.Tensor:
    """Columns ``[b BLOCK, (b + 1) BLOCK)`` of the ``n x v`` logits, the same in every process."""
    gen = torch.Generator().manual_seed(SEED * 1_000_003 + b)
    return torch.randn(n, min(BLOCK, v - b * BLOCK), generator=gen).mul_(SCALE)


def logits_slice(n: int, v: int, start: int, width: int) -> torch.Tensor:
    """Columns ``[start, start + width)`` of the logits, built a block at a time."""
    out = torch.empty(n, width)
    for b in range(start // BLOCK, -(-(start + width) // BLOCK)):
        lo = b * BLOCK
        block = column_block(n, v, b)
        first, last = max(lo, start), min(lo + block.shape[1], start + width)
        out[:, first - start : last - start] = block[:, first - lo : last - lo]
    return out


def targets(n: int, v: int) -> torch.Tensor:
    """The ``n`` global class indices, the same in every process."""
    return torch.randint(0, v, (n,), generator=torch.Generator().manual_seed(SEED + 7919))


def reference_loss(n: int, v: int) -> float:
    """The mean loss of the whole logits in float64, one column block at a time (running max and sum)."""
    t = targets(n, v)
    top = torch.full((n,), -math.inf, dtype=torch.float64)
    total = torch.zeros(n, dtype=torch.float64)
    picked = torch.zeros(n, dtype=torch.float64)
    for b in range(-(-v // BLOCK)):
        block = column_block(n, v, b).double()
        lo = b * BLOCK
        new_top = torch.maximum(top, block.max(dim=1).values)
        total = total * torch.exp(top - new_top) + torch.exp(block - new_top[:, None]).sum(dim=1)
        top = new_top
        here = (t >= lo) & (t < lo + block.shape[1])
        rows = here.nonzero().squeeze(1)
        picked[rows] = block[rows, t[rows] - lo]
    return float((top + torch.log(total) - picked).mean())


def confident_rows(width: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 rows whose target is the argmax by each margin of ``MARGINS`` over values in [-1, 0); targets spread over the row."""
    rng = np.random.default_rng(SEED)
    x = rng.uniform(-1.0, 0.0, (len(MARGINS), width))
    t = (np.arange(len(MARGINS)) * 211 + 5) % width
    x[np.arange(len(MARGINS)), t] = MARGINS
    return x.astype(np.float32), t.astype(np.int64)


def exact_confident(x: np.ndarray, t: np.ndarray) -> tuple[list, list]:
    """mpmath losses and gradients' target entries of :func:`confident_rows` (60 digits, log1p form)."""
    ref = _reference()
    losses, grads = [], []
    for row, ti in zip(x, t):
        loss, grad = ref.cross_entropy(ref.to_mp(row), ref.hard_coef(len(row), int(ti))[0])
        losses.append(loss)
        grads.append(grad[int(ti)])
    return losses, grads


def _reference():
    if str(REPOSITORY) not in sys.path:
        sys.path.insert(0, str(REPOSITORY))
    from tests import reference

    return reference


# --- counting the collectives -----------------------------------------------------------------------

# torch.distributed name: (kind, the argument holding what each rank contributes, the reduce-op argument).
# all_gather_object is passed through: the all_gather calls it makes inside are recorded.
C10D_CALLS = {
    "all_reduce": ("all-reduce", "tensor", "op"),
    "all_reduce_coalesced": ("all-reduce", "tensors", "op"),
    "all_gather": ("all-gather", "tensor", None),
    "all_gather_into_tensor": ("all-gather", "input_tensor", None),
    "all_gather_single": ("all-gather", "input_tensor", None),
    "_all_gather_base": ("all-gather", "input_tensor", None),
    "reduce_scatter": ("reduce-scatter", "input_list", "op"),
    "reduce_scatter_tensor": ("reduce-scatter", "input", "op"),
    "reduce_scatter_single": ("reduce-scatter", "input", "op"),
    "_reduce_scatter_base": ("reduce-scatter", "input", "op"),
    "broadcast": ("broadcast", "tensor", None),
    "all_gather_object": (None, None, None),
}
# torch.ops._c10d_functional name: (kind, position of the input, position of the reduce op or None).
FUNCTIONAL_CALLS = {
    "all_reduce": ("all-reduce", 0, 1),
    "all_reduce_": ("all-reduce", 0, 1),
    "all_reduce_coalesced": ("all-reduce", 0, 1),
    "all_reduce_coalesced_": ("all-reduce", 0, 1),
    "all_gather_into_tensor": ("all-gather", 0, None),
    "all_gather_into_tensor_out": ("all-gather", 0, None),
    "all_gather_into_tensor_coalesced": ("all-gather", 0, None),
    "reduce_scatter_tensor": ("reduce-scatter", 0, 1),
    "reduce_scatter_tensor_coalesced": ("reduce-scatter", 0, 1),
    "broadcast": ("broadcast", 0, None),
    "broadcast_": ("broadcast", 0, None),
}
FR_KINDS = {"allreduce": "all-reduce", "all_reduce": "all-reduce", "allgather": "all-gather", "all_gather": "all-gather",
            "reduce_scatter": "reduce-scatter", "broadcast": "broadcast"}
FR_ITEMSIZE = {"Float": 4, "Double": 8, "Long": 8, "Int": 4, "Half": 2, "BFloat16": 2, "Bool": 1, "Byte": 1, "Char": 1, "Short": 2}


def sent_per_rank(kind: str, nbytes: int, world: int) -> float:
    """Bytes one rank sends for a collective with ring algorithms (``nbytes``: what each rank contributes)."""
    if kind == "all-reduce":
        return 2 * (world - 1) / world * nbytes
    if kind == "all-gather":
        return (world - 1) * nbytes
    if kind == "reduce-scatter":
        return (world - 1) / world * nbytes
    return float(nbytes)


class CollectiveLog:
    """The collectives issued while ``active``; calls made inside a recorded collective are not counted again."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.active = False
        self.depth = 0

    def record(self, api: str, kind: str, data: object, op: object, world: int) -> None:
        tensors = list(data) if isinstance(data, (list, tuple)) else [data]
        nbytes = sum(t.numel() * t.element_size() for t in tensors)
        self.calls.append(
            {
                "api": api,
                "kind": kind,
                "op": str(getattr(op, "name", op) or "").lower(),
                "dtype": str(tensors[0].dtype).removeprefix("torch.") if tensors else "",
                "shape": list(tensors[0].shape) if tensors else [],
                "bytes": nbytes,
                "world": world,
                "sent": sent_per_rank(kind, nbytes, world),
            }
        )


LOG = CollectiveLog()


def _counting_c10d(name: str, fn):
    kind, data, op = C10D_CALLS[name]
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if kind is None:
            return fn(*args, **kwargs)
        if LOG.active and not LOG.depth:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            world = torch.distributed.get_world_size(bound.arguments.get("group"))
            LOG.record(f"torch.distributed.{name}", kind, bound.arguments[data], bound.arguments.get(op), world)
        LOG.depth += 1
        try:
            return fn(*args, **kwargs)
        finally:
            LOG.depth -= 1

    return wrapper


class _CountingOp:
    """A ``torch.ops._c10d_functional`` packet that records its calls; attributes (``.default``) are the packet's."""

    def __init__(self, name: str, packet) -> None:
        self.name, self.packet = name, packet

    def __call__(self, *args, **kwargs):
        if LOG.active and not LOG.depth:
            kind, data, op = FUNCTIONAL_CALLS[self.name]
            LOG.record(f"_c10d_functional.{self.name}", kind, args[data], args[op] if op is not None else None, _group_size(args[-1]))
        LOG.depth += 1
        try:
            return self.packet(*args, **kwargs)
        finally:
            LOG.depth -= 1

    def __getattr__(self, name: str):
        return getattr(self.packet, name)


def _group_size(group_name: object) -> int:
    from torch.distributed import distributed_c10d

    try:
        return distributed_c10d._resolve_process_group(group_name).size()
    except (RuntimeError, TypeError, ValueError):
        return torch.distributed.get_world_size()


def count_collectives() -> None:
    """Wrap ``torch.distributed``'s collectives and the functional ones, before any library under test is imported."""
    # Imported first: it registers the functional ops' autograd through the packets that are wrapped below.
    import torch.distributed._functional_collectives
    from torch.distributed import distributed_c10d

    for name in C10D_CALLS:
        fn = getattr(distributed_c10d, name, None)
        if fn is None:
            continue
        wrapper = _counting_c10d(name, fn)
        setattr(distributed_c10d, name, wrapper)
        if getattr(torch.distributed, name, None) is fn:
            setattr(torch.distributed, name, wrapper)
    namespace = torch.ops._c10d_functional
    for name in FUNCTIONAL_CALLS:
        if hasattr(namespace, name):
            setattr(namespace, name, _CountingOp(name, getattr(namespace, name)))


def flight_recorder_last() -> int:
    """The flight recorder's newest record id (-1 when empty)."""
    entries = pickle.loads(torch._C._distributed_c10d._dump_fr_trace()).get("entries", [])
    return max((e["record_id"] for e in entries), default=-1)


def flight_recorder_since(last: int) -> list[dict]:
    """The collectives the flight recorder saw after record ``last``, with their kind and bytes."""
    entries = pickle.loads(torch._C._distributed_c10d._dump_fr_trace()).get("entries", [])
    calls = []
    for e in sorted(entries, key=lambda e: e["record_id"]):
        if e["record_id"] <= last:
            continue
        name = e["profiling_name"].split(":", 1)[-1]
        kind = FR_KINDS.get(name, name)
        nbytes = sum(math.prod(size) * FR_ITEMSIZE.get(dtype, 0) for size, dtype in zip(e["input_sizes"], e["input_dtypes"]))
        calls.append({"kind": kind, "dtypes": e["input_dtypes"], "sizes": e["input_sizes"], "bytes": nbytes})
    return calls


# --- the variants, inside a rank ----------------------------------------------------------------------


class Variant:
    """One loss: the leaf it differentiates (sharing the logits' storage), one forward + backward, the local gradient."""

    def leaf(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach().requires_grad_()

    def restore(self, leaf: torch.Tensor) -> None:
        """Ready ``leaf`` for a call: no gradient (and the logits as made, for a loss that overwrites them)."""
        leaf.grad = None

    def local_grad(self, leaf: torch.Tensor) -> torch.Tensor:
        return leaf.grad

    def step(self, leaf: torch.Tensor, y: torch.Tensor, reduction: str) -> torch.Tensor:
        loss = self.loss(leaf, y, reduction)
        (loss if reduction == "mean" else loss.sum()).backward()
        return loss.detach()


class TorchSingle(Variant):
    def loss(self, x, y, reduction):
        return torch.nn.functional.cross_entropy(x, y, reduction=reduction)


class SoftmaxkitSingle(Variant):
    def __init__(self) -> None:
        import softmaxkit.torch as smt

        self.fn = smt.cross_entropy

    def loss(self, x, y, reduction):
        return self.fn(x, y, reduction=reduction)


class SoftmaxkitParallel(Variant):
    def __init__(self) -> None:
        from softmaxkit.torch.distributed import vocab_parallel_cross_entropy

        self.fn = vocab_parallel_cross_entropy
        self.rank = torch.distributed.get_rank()

    def loss(self, x, y, reduction):
        return self.fn(x, y, vocab_start=self.rank * x.shape[1], reduction=reduction)


class Megatron(Variant):
    """Megatron-core's loss, which overwrites its float32 input with the softmax and then the gradient:
    it works on a copy of the logits, restored from them before each call (outside the timing)."""

    def __init__(self, world: int) -> None:
        from megatron.core import parallel_state
        from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

        parallel_state.initialize_model_parallel(tensor_model_parallel_size=world)
        self.fn = vocab_parallel_cross_entropy
        self.made: dict[int, torch.Tensor] = {}

    def leaf(self, x):
        copy = x.detach().clone().requires_grad_()
        self.made[id(copy)] = x
        return copy

    def restore(self, leaf):
        leaf.grad = None
        with torch.no_grad():
            leaf.copy_(self.made[id(leaf)])

    def loss(self, x, y, reduction):
        per_token = self.fn(x, y)
        return per_token.mean() if reduction == "mean" else per_token


class DTensorLossParallel(Variant):
    """``F.cross_entropy`` on a ``Shard(1)`` DTensor leaf inside ``loss_parallel()``, the backward too."""

    def __init__(self, world: int) -> None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import DTensor, Shard
        from torch.distributed.tensor.parallel import loss_parallel

        self.mesh = init_device_mesh("cpu", (world,))
        self.world, self.DTensor, self.Shard, self.context = world, DTensor, Shard, loss_parallel

    def leaf(self, x):
        n, width = x.shape
        shape = (n, width * self.world)
        dx = self.DTensor.from_local(x.detach(), self.mesh, [self.Shard(1)], run_check=False, shape=shape, stride=(shape[1], 1))
        return dx.requires_grad_()

    def local_grad(self, leaf):
        return leaf.grad.to_local()

    def step(self, leaf, y, reduction):
        with self.context():
            loss = torch.nn.functional.cross_entropy(leaf, y, reduction=reduction)
            (loss if reduction == "mean" else loss.sum()).backward()
        return loss.detach().to_local()


def make_variant(name: str, world: int) -> Variant:
    if world == 1:
        return {"torch": TorchSingle, "softmaxkit": SoftmaxkitSingle}[name]()
    if name == "softmaxkit":
        return SoftmaxkitParallel()
    return {"megatron": Megatron, "dtensor": DTensorLossParallel}[name](world)


# --- one rank ---------------------------------------------------------------------------------------


def _checksum(leaf: torch.Tensor) -> float:
    """The sum of this rank's logits, in float64: a change shows a loss that writes into its input."""
    local = leaf.to_local() if hasattr(leaf, "to_local") else leaf
    return float(local.detach().double().sum())


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def rank_main(rank: int, spec: dict, results) -> None:
    """Run ``spec['mode']`` (``"memory"`` or ``"time"``) on this rank and put a report (or the error) on ``results``."""
    report: dict = {"rank": rank}
    world = spec["world"]
    try:
        warnings.simplefilter("ignore")
        torch.set_num_threads(spec["threads"])
        softmaxkit.set_num_threads(spec["threads"])
        count_collectives()
        if world > 1:
            torch.distributed.init_process_group(
                "gloo",
                init_method=f"tcp://127.0.0.1:{spec['port']}",
                rank=rank,
                world_size=world,
                timeout=timedelta(seconds=COLLECTIVE_TIMEOUT),
            )
        measure = memory_rank if spec["mode"] == "memory" else time_rank
        report.update(measure(rank, world, spec))
    except Exception as exc:  # noqa: BLE001 - the row keeps the variant with the reason it did not run
        report["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    results.put(report)
    if world > 1 and torch.distributed.is_initialized() and "error" not in report:
        torch.distributed.destroy_process_group()


def warm_up(variant: Variant, rank: int, world: int) -> None:
    """One call on the small shape ``WARM``: libraries loaded, kernels and thread pools set up."""
    n, v = WARM
    leaf = variant.leaf(logits_slice(n, v, rank * (v // world), v // world))
    variant.restore(leaf)
    variant.step(leaf, targets(n, v), "mean")


def memory_rank(rank: int, world: int, spec: dict) -> dict:
    """In fresh processes, one variant: the peak growth and loss of one call on the whole shape, then the confident rows."""
    variant = make_variant(spec["variants"][0], world)
    n, v = spec["shape"]
    width = v // world
    warm_up(variant, rank, world)
    leaf = variant.leaf(logits_slice(n, v, rank * width, width))
    variant.restore(leaf)
    y = targets(n, v)
    before = _checksum(leaf)
    _barrier(world)
    base = reset_peak_rss()
    loss = variant.step(leaf, y, "mean")
    growth = peak_rss() - base
    report = {"growth": growth, "loss": float(loss), "input_modified": _checksum(leaf) != before}
    del leaf

    x, t = spec["accuracy"]
    aw = x.shape[1] // world
    acc = variant.leaf(torch.from_numpy(x[:, rank * aw : (rank + 1) * aw].copy()))
    variant.restore(acc)
    losses = variant.step(acc, torch.from_numpy(t), "none")
    grad = variant.local_grad(acc)
    report["acc_loss"] = losses.tolist()
    report["acc_grad"] = [(i, float(grad[i, ti - rank * aw])) for i, ti in enumerate(t.tolist()) if rank * aw <= ti < (rank + 1) * aw]
    return report


def time_rank(rank: int, world: int, spec: dict) -> dict:
    """Every variant of this rank count in the same processes, interleaved: times, and the collectives of the last round."""
    n, v = spec["shape"]
    width = v // world
    variants = {name: make_variant(name, world) for name in spec["variants"]}
    for variant in variants.values():
        warm_up(variant, rank, world)
    x = logits_slice(n, v, rank * width, width)
    y = targets(n, v)
    leaves = {name: variant.leaf(x) for name, variant in variants.items()}
    # A first call on the whole shape, untimed.
    for name, variant in variants.items():
        variant.restore(leaves[name])
        variant.step(leaves[name], y, "mean")
        leaves[name].grad = None
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    calls: dict[str, list[dict]] = {}
    recorded: dict[str, list[dict]] = {}
    for r in range(spec["repeats"]):
        last = r == spec["repeats"] - 1
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            variant, leaf = variants[name], leaves[name]
            variant.restore(leaf)
            _barrier(world)
            if last:
                LOG.calls.clear()
                fr_last = flight_recorder_last() if world > 1 else -1
                LOG.active = True
            start = time.perf_counter()
            variant.step(leaf, y, "mean")
            times[name].append(time.perf_counter() - start)
            LOG.active = False
            leaf.grad = None
            if last:
                calls[name] = list(LOG.calls)
                recorded[name] = flight_recorder_since(fr_last) if world > 1 else []
    return {"times": times, "calls": calls, "flight_recorder": recorded}


# --- launching the ranks ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(spec: dict) -> list[dict]:
    """Run ``rank_main`` on ``spec['world']`` fresh processes and return their reports (or one report with the error)."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    world = spec["world"]
    spec = {**spec, "port": free_port()}
    procs = [ctx.Process(target=rank_main, args=(rank, spec, results)) for rank in range(world)]
    for p in procs:
        p.start()
    reports: list[dict] = []
    failed_at = None
    while len(reports) < world:
        try:
            reports.append(results.get(timeout=5))
        except queue.Empty:
            pass
        if any("error" in r for r in reports) and failed_at is None:
            failed_at = time.monotonic()
        dead = [p for p in procs if p.exitcode not in (None, 0)]
        if dead and len(reports) < world and results.empty():
            reports.append({"rank": None, "error": f"a rank exited with code {dead[0].exitcode}"})
            break
        if failed_at is not None and time.monotonic() - failed_at > GRACE:
            break
    for p in procs:
        p.join(timeout=GRACE)
        if p.is_alive():
            p.terminate()
            p.join()
    return sorted(reports, key=lambda r: (r["rank"] is None, r["rank"] or 0))


# --- one row per variant ----------------------------------------------------------------------------


def _size(nbytes: float) -> str:
    if nbytes < 1024:
        return f"{nbytes:.0f} B"
    if nbytes < 2**20:
        return f"{nbytes / 1024:.3g} KiB"
    return f"{nbytes / 2**20:.3g} MiB"


def collectives_text(calls: list[dict]) -> str:
    """``all-reduce max float32 [4096, 1] 16384 B`` for each call, joined by ``; ``."""
    return "; ".join(f"{c['kind']} {c['op'] + ' ' if c['op'] else ''}{c['dtype']} {c['shape']} {c['bytes']} B" for c in calls)


def collectives_short(calls: list[dict]) -> str:
    """Each call as ``kind op dtype[shape] (size)``, one a line, for the table."""
    if not calls:
        return "none"
    return "<br>".join(
        f"{c['kind']} {c['op'] + ' ' if c['op'] else ''}{c['dtype']}[{'×'.join(map(str, c['shape']))}] ({_size(c['bytes'])})" for c in calls
    )


def flight_text(calls: list[dict], recorded: list[dict], world: int) -> str:
    """What the flight recorder saw, and whether its bytes sent per rank agree with the wrappers'."""
    sent = sum(sent_per_rank(c["kind"], c["bytes"], world) for c in recorded)
    ours = sum(c["sent"] for c in calls)
    kinds = ", ".join(f"{c['kind']} {'/'.join(c['dtypes'])} {c['sizes']}" for c in recorded)
    return f"{'agrees' if math.isclose(sent, ours) and len(recorded) == len(calls) else 'DIFFERS'}: {len(recorded)} calls ({kinds})"


def _error(reports: list[dict], world: int) -> str | None:
    errors = [r["error"] for r in reports if "error" in r]
    if errors:
        return errors[0]
    return None if len(reports) == world else "no report from every rank"


def make_row(variant: str, world: int, spec: dict, memory: list[dict], timing: list[dict], exact: tuple, ref_loss: float) -> dict:
    """The row of one variant: times from the interleaved run, memory and accuracy from its own fresh processes."""
    n, v = spec["shape"]
    row = {
        "ranks": world,
        "variant": variant,
        "label": LABELS[(world == 1, variant)],
        "n": n,
        "v": v,
        "threads_per_rank": spec["threads"],
        "repeats": spec["repeats"],
    }
    problems = []
    time_error = _error(timing, world)
    if time_error is None:
        per_repeat = [max(ts) for ts in zip(*(r["times"][variant] for r in timing))]
        calls = timing[0]["calls"][variant]
        row.update(
            time_s=statistics.median(per_repeat),
            time_min_s=min(per_repeat),
            time_max_s=max(per_repeat),
            times=" ".join(f"{s:.3f}" for s in per_repeat),
            calls=calls,
            sent_bytes_per_rank=sum(c["sent"] for c in calls),
            collectives=collectives_text(calls),
            flight_recorder=flight_text(calls, timing[0]["flight_recorder"][variant], world) if world > 1 else "",
        )
        if any(r["calls"][variant] != calls for r in timing):
            problems.append("the ranks' collectives differ")
    else:
        problems.append(f"timing: {time_error}")
    memory_error = _error(memory, world)
    if memory_error is None:
        t = spec["accuracy"][1]
        grads = dict(pair for r in memory for pair in r["acc_grad"])
        ref = _reference()
        growth = [r["growth"] / 2**20 for r in memory]
        f32 = np.dtype(np.float32)
        row.update(
            growth_mib=max(growth),
            growth_mib_ranks=" ".join(f"{g:.0f}" for g in growth),
            loss=memory[0]["loss"],
            loss_rel_error=abs(memory[0]["loss"] - ref_loss) / ref_loss,
            loss_ulp=ref.ulp_error(np.asarray(memory[0]["acc_loss"], dtype=np.float32), exact[0], f32),
            grad_t_ulp=ref.ulp_error(np.asarray([grads[i] for i in range(len(t))], dtype=np.float32), exact[1], f32),
            input_modified=any(r["input_modified"] for r in memory),
        )
        if any(r["acc_loss"] != memory[0]["acc_loss"] for r in memory):
            problems.append("the per-row losses differ between ranks")
    else:
        problems.append(f"memory and accuracy: {memory_error}")
    if problems:
        row["error"] = "; ".join(problems)
    return row


def add_ratios(rows: list[dict]) -> None:
    """softmaxkit's time, bytes and peak over each row's, within a rank count."""
    for row in rows:
        ours = next((r for r in rows if r["ranks"] == row["ranks"] and r["variant"] == OURS), None)
        if ours is None:
            continue
        if row.get("time_s") and ours.get("time_s"):
            row["time_ratio"] = ours["time_s"] / row["time_s"]
        if row["ranks"] > 1 and row.get("sent_bytes_per_rank") and ours.get("sent_bytes_per_rank"):
            row["sent_ratio"] = ours["sent_bytes_per_rank"] / row["sent_bytes_per_rank"]
        # A growth below 1 MiB is the noise of the page counts, not a footprint to divide by.
        if row.get("growth_mib", 0) >= 1 and ours.get("growth_mib") is not None:
            row["growth_ratio"] = ours["growth_mib"] / row["growth_mib"]


# --- results ------------------------------------------------------------------------------------------


def _num(value: object, fmt: str) -> str:
    return "—" if value is None or value == "" else format(value, fmt)


def _ulp(value: float | None) -> str:
    if value is None or value == "":
        return "—"
    if math.isinf(value):
        return "inf"
    return f"{value:.2g}" if value >= 1000 else f"{value:.2f}"


def _time(r: dict) -> str:
    if r.get("time_s") is None:
        return "did not run"
    return f"{r['time_s']:.3g} ({r['time_min_s']:.3g}–{r['time_max_s']:.3g})"


def _cells(r: dict) -> list[str]:
    parallel = r["ranks"] > 1
    return [
        str(r["ranks"]),
        r["label"],
        _time(r),
        _num(r.get("time_ratio"), ".2f"),
        _num(r["sent_bytes_per_rank"] / 1024, ".1f") if parallel and "sent_bytes_per_rank" in r else "—",
        _num(r.get("sent_ratio"), ".2f"),
        collectives_short(r["calls"]) if parallel and "calls" in r else "—",
        _num(r.get("growth_mib"), ".0f"),
        _num(r.get("growth_ratio"), ".2f"),
        _num(r.get("loss_rel_error"), ".1e"),
        _ulp(r.get("loss_ulp")),
        _ulp(r.get("grad_t_ulp")),
    ]


def source_version() -> str:
    """The commit of the softmaxkit measured, ``+dirty`` with uncommitted changes under src."""
    git = ["git", "-C", str(REPOSITORY)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True, check=False).stdout.strip()
    return (commit or "unknown") + ("+dirty" if dirty else "")


def megatron_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("megatron-core")
    except metadata.PackageNotFoundError:
        return "not installed"


def write(rows: list[dict], spec: dict, out: Path) -> None:
    n, v = spec["shape"]
    info = machine()
    threads = ", ".join(f"{w} rank{'s' * (w > 1)}: {max(1, info['cores'] // w)}" for w in sorted({r["ranks"] for r in rows}))
    footer = ["Collectives per forward + backward call, as recorded by the wrappers on each rank (the same on every rank):", ""]
    for r in rows:
        if r["ranks"] > 1 and "collectives" in r:
            footer.append(f"- {r['ranks']} ranks, {r['label']}: {r['collectives'] or 'none'}; gloo flight recorder {r['flight_recorder']}.")
    modified = [f"{r['label']} ({r['ranks']} rank{'s' * (r['ranks'] > 1)})" for r in rows if r.get("input_modified")]
    if modified:
        footer += ["", "Overwrite their float32 input logits (restored before each call, outside the timing): " + ", ".join(modified) + "."]
    failed = [r for r in rows if r.get("error")]
    if failed:
        footer += ["", *(f"Not measured: {r['label']} on {r['ranks']} rank(s): {r['error']}." for r in failed)]
    notes = [
        (
            f"Logits N x V = {n} x {v}, float32, N(0, 4); uniform class-index targets; reduction='mean'; forward + "
            "backward in the logits. On W ranks (gloo over localhost, one process per rank, all on this machine's "
            "cores) each rank holds the contiguous slice of V / W classes of every row and the replicated targets. "
            "`softmaxkit vocab_parallel_cross_entropy`: softmaxkit.torch.distributed.vocab_parallel_cross_entropy(x, y, "
            "vocab_start=r·V/W); `Megatron-core`: megatron.core.tensor_parallel.vocab_parallel_cross_entropy(x, y).mean() "
            "after parallel_state.initialize_model_parallel(tensor_model_parallel_size=W); `DTensor loss_parallel`: "
            "F.cross_entropy(x, y) on a DTensor leaf Shard(1) of a 1-D CPU mesh, forward and backward inside "
            "torch.distributed.tensor.parallel.loss_parallel()."
        ),
        (
            "Time: seconds per forward + backward, median (min–max) of the rounds. The variants of one rank count run "
            "in the same processes, interleaved: a warm-up call of each on a 64 x 1024 shape and one untimed call on the "
            f"whole shape, then {spec['repeats']} rounds, the order rotating every round; each call starts after a "
            "barrier and counts the slowest rank. Torch and softmaxkit threads per rank: "
            f"{threads}; with more ranks than cores the ranks share them. `softmaxkit / this`: softmaxkit's over the "
            "row's, within a rank count (below 1: softmaxkit is better)."
        ),
        (
            "Sent per rank: bytes one rank sends during one call (each variant's call of the last round), from the tensors passed to the collectives "
            "(torch.distributed's all_reduce, all_gather, all_gather_into_tensor, all_gather_single, reduce_scatter, "
            "reduce_scatter_tensor, broadcast, all_gather_object, ... and torch.ops._c10d_functional's, which "
            "DTensor uses, wrapped on each rank), converted with the ring algorithms: all-reduce 2(W-1)/W·B, "
            "all-gather (W-1)·B_local, reduce-scatter (W-1)/W·B, broadcast B. The gloo flight recorder "
            "(TORCH_FR_BUFFER_SIZE), which sees every collective at the process group, checks the count."
        ),
        (
            "Peak growth per rank: in fresh processes of each variant alone, after its warm-up, the resident-set peak "
            "(VmHWM, the resettable ru_maxrss) growth of one call on the whole shape over its value just before; the "
            "worst rank; the gradient included."
        ),
        (
            f"Accuracy: `loss rel. error` of that call's mean loss against float64 on the same logits. `loss ULP` "
            f"and `grad[t] ULP`: worst float32 ULP error on {len(MARGINS)} confident rows of width "
            f"{spec['accuracy'][0].shape[1]} (the target the argmax by a margin of 5, 10, ..., 90 over values in "
            "[-1, 0), targets on every slice), reduction='none': the per-row loss and the gradient's target entry, "
            "against mpmath at 60 digits in the log1p form."
        ),
        "The CSV's `softmaxkit` column names the code measured (each launch's); its `times` the per-round slowest-rank seconds.",
    ]
    write_results(
        NAME,
        title=TITLE,
        machine=(
            f"{describe()}; Python {platform.python_version()}, torch {torch.__version__} (gloo), "
            f"megatron-core {megatron_version()}; the cores are shared with other work, so timings are noisy"
        ),
        notes=notes,
        columns=COLUMNS,
        align="llrrrrlrrrrr",
        rows=map(_cells, rows),
        csv_fields=CSV_FIELDS,
        csv_rows=rows,
        footer=footer,
        out=out,
    )


# --- the run ----------------------------------------------------------------------------------------


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise SystemExit(f"{option} must be comma-separated positive integers; got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"N, V = {QUICK}, acc width {QUICK_ACC_WIDTH}, 3 repeats: checks that the script runs")
    parser.add_argument("--n", type=int, help=f"rows (default {DEFAULT[0]})")
    parser.add_argument("--v", type=int, help=f"classes, divisible by every rank count (default {DEFAULT[1]})")
    parser.add_argument("--ranks", default="1,2,4", help="comma-separated rank counts; 1: the single-process variants")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--repeats", type=int, help="timed rounds (default 7; 3 with --quick)")
    parser.add_argument("--acc-width", type=int, help=f"width of the confident rows (default {ACC_WIDTH}; {QUICK_ACC_WIDTH} with --quick)")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    n = args.n or (QUICK if args.quick else DEFAULT)[0]
    v = args.v or (QUICK if args.quick else DEFAULT)[1]
    repeats = args.repeats if args.repeats is not None else 3 if args.quick else 7
    acc_width = args.acc_width or (QUICK_ACC_WIDTH if args.quick else ACC_WIDTH)
    ranks = _ints(args.ranks, "--ranks")
    variants = option_names(args.variants, VARIANTS, "--variants")
    for w in ranks:
        for what, size in (("--v", v), ("--acc-width", acc_width), ("the warm-up width", WARM[1])):
            if size % w:
                parser.error(f"{what} ({size}) must be divisible by every rank count; {w} does not divide it")
    if n < 1 or repeats < 1:
        parser.error(f"--n and --repeats must be >= 1; got {n} and {repeats}")

    os.environ.setdefault("TORCH_FR_BUFFER_SIZE", str(FR_ENTRIES))
    print(describe(), file=sys.stderr)
    x_acc, t_acc = confident_rows(acc_width)
    exact = exact_confident(x_acc, t_acc)
    ref_loss = reference_loss(n, v)
    cores = machine()["cores"]
    base = {"shape": (n, v), "repeats": repeats, "accuracy": (x_acc, t_acc)}
    rows = []
    for world in ranks:
        names = [name for name in (SINGLE if world == 1 else PARALLEL) if name in variants]
        if not names:
            continue
        spec = {**base, "world": world, "threads": max(1, cores // world)}
        started, version = time.perf_counter(), source_version()
        timing = launch({**spec, "mode": "time", "variants": names})
        print(f"{world} rank(s), interleaved times: {_error(timing, world) or 'done'} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        for name in names:
            started, versions = time.perf_counter(), {version, source_version()}
            memory = launch({**spec, "mode": "memory", "variants": [name]})
            row = make_row(name, world, spec, memory, timing, exact, ref_loss)
            row.update(softmaxkit=" ".join(sorted(versions)), torch=torch.__version__, megatron_core=megatron_version())
            rows.append(row)
            status = row.get("error") or f"{row['time_s']:.3f} s, {row['growth_mib']:.0f} MiB"
            print(f"{world} rank(s) {name}: {status} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    add_ratios(rows)
    write(rows, base, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
