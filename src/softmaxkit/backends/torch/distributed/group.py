"""The ranks of a vocabulary-parallel loss: one collective check of every rank's arguments, and the slices' layout.

A rank that raises before a collective leaves the others waiting in it until
the process group's timeout.  So the arguments are checked on every rank
first, and the verdicts, with each rank's slice size and a description of
its call, are exchanged in one small all-gather (:func:`agree`).  Then
either every rank raises (its own error, or one naming the rank that
failed) or every rank goes on with the same layout.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Slices:
    """This rank's place in the vocabulary split: classes ``[start, start + width)`` of ``vocab``."""

    group: Any
    rank: int
    world: int
    start: int
    width: int
    vocab: int
    widest: int


class RankError(ValueError):
    """Another rank of the group refused its arguments; raised on the ranks that did not."""


def process_group(group: Any, name: str) -> Any:
    """The group to use (the default one for None), or a clear error where ``torch.distributed`` is not set up."""
    if not dist.is_available():
        raise RuntimeError(f"{name} needs torch.distributed, which this PyTorch build lacks")
    if not dist.is_initialized():
        raise RuntimeError(f"{name} needs torch.distributed initialised: call torch.distributed.init_process_group first (or run under torchrun)")
    group = dist.group.WORLD if group is None else group
    if dist.get_rank(group) < 0:
        raise ValueError(f"group: this process (global rank {dist.get_rank()}) is not a member of the group it was given")
    return group


def _bits(value: float) -> int:
    return struct.unpack("<q", struct.pack("<d", float(value)))[0]


def fingerprint(x: torch.Tensor) -> tuple[int, int]:
    """``(valid, bits)`` describing the first row of a slice of logits, to
    recognise logits that were gathered (every rank holding the same row).

    Valid where the row has at least two entries, all finite, not all equal:
    a constant row (a head initialised to zeros) says nothing.
    """
    if x.shape[0] == 0 or x.shape[-1] < 2:
        return 0, 0
    row = x[0].detach().to(torch.float64)
    if not bool(torch.isfinite(row).all()) or bool((row == row[0]).all()):
        return 0, 0
    position = torch.arange(1, row.shape[0] + 1, dtype=torch.float64, device=row.device)
    return 1, _bits(float((row * position).sum()))


def _target_checksum(t: torch.Tensor) -> tuple[int, int]:
    """Two integers that differ, almost surely, where two ranks' targets differ."""
    t = t.detach().reshape(-1).to(torch.int64)
    position = torch.arange(t.shape[0], dtype=torch.int64, device=t.device) % 65521 + 1
    return int(t.sum()), int((t * position).sum())


def describe(t: torch.Tensor, dtypes: int, options: int, weighted: int) -> dict:
    """A call's description for :func:`agree`: its targets ``t`` (their count and checksums)
    and integers for its dtypes, options and optional tensors."""
    a, b = _target_checksum(t)
    return {"rows": t.shape[0], "dtype": dtypes, "options": options, "weighted": weighted, "targets_a": a, "targets_b": b}


# The floating dtypes, numbered for the exchange.
DTYPES = {torch.float16: 1, torch.bfloat16: 2, torch.float32: 3, torch.float64: 4}

# What the ranks must agree on: the call's description, by name.
_AGREED = ("rows", "dtype", "options", "targets_a", "targets_b", "weighted")


def agree(group: Any, name: str, error: Exception | None, width: int, start: int | None, call: dict, print_bits: tuple[int, int]) -> Slices:
    """Every rank's verdict and slice, exchanged once; the layout, or an error on every rank.

    ``error`` is this rank's own (raised again here after the exchange);
    ``call`` maps each name of ``_AGREED`` to an integer describing this
    rank's call (its number of rows, dtype, options, targets), which must be
    the same on every rank; ``start`` is the caller's ``vocab_start`` or None.
    """
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    row = [int(error is not None), width, -1 if start is None else start, *print_bits] + [call.get(k, 0) for k in _AGREED]
    # NCCL takes tensors on the current GPU only; gloo takes host ones.
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else torch.device("cpu")
    mine = torch.tensor(row, dtype=torch.int64, device=device)
    table = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(table, mine, group=group)
    table = [t.tolist() for t in table]
    failed = [r for r in range(world) if table[r][0]]
    if failed:
        messages = [None] * world
        dist.all_gather_object(messages, None if error is None else f"{type(error).__name__}: {error}", group=group)
        if error is not None:
            raise error
        raise RankError(f"{name}: rank {failed[0]} of the group refused its arguments ({messages[failed[0]]}); every rank stops")
    problem = _disagreement(table, world)
    if problem is not None:
        raise RankError(f"{name}: {problem}")
    widths = [r[1] for r in table]
    starts = _starts(table, widths, name)
    vocab = sum(widths)
    if world > 1 and width == vocab and vocab > 0:
        raise ValueError(
            f"input holds all {vocab} classes on rank {rank} of a group of {world}: these look like gathered logits; "
            "give each rank its own slice of the classes"
        )
    prints = [(r[3], r[4]) for r in table]
    if world > 1 and all(p[0] for p in prints) and len(set(prints)) == 1 and len(set(widths)) == 1:
        raise ValueError(
            f"input is the same on all {world} ranks (first rows equal, {width} classes each): these look like gathered logits; "
            "give each rank its own slice of the classes"
        )
    return Slices(group, rank, world, starts[rank], width, vocab, max(widths))


def _disagreement(table: list, world: int) -> str | None:
    for i, key in enumerate(_AGREED):
        values = [r[5 + i] for r in table]
        if len(set(values)) > 1:
            what = {"rows": "numbers of rows", "dtype": "dtypes of input", "options": "options", "weighted": "class weights (given on some ranks only)"}
            thing = what.get(key, "targets")
            return f"the ranks were given different {thing} (rank 0 and rank {next(r for r in range(world) if values[r] != values[0])}); every rank must pass the same"
    return None


def _starts(table: list, widths: list, name: str) -> list:
    given = [r[2] for r in table]
    if all(g == -1 for g in given):
        starts, at = [], 0
        for w in widths:
            starts.append(at)
            at += w
        return starts
    if any(g == -1 for g in given):
        raise ValueError(f"{name}: vocab_start was given on some ranks only ({given}, -1 meaning not given); give it on every rank or on none")
    order = sorted(range(len(given)), key=lambda r: (given[r], widths[r]))
    at = 0
    for r in order:
        if given[r] != at:
            kind = "overlap (gathered logits?)" if given[r] < at else "leave a gap"
            slices = ", ".join(f"rank {q}: [{given[q]}, {given[q] + widths[q]})" for q in order)
            raise ValueError(f"vocab_start: the ranks' slices of the classes {kind}; they must tile [0, V) exactly; got {slices}")
        at += widths[r]
    return given


_REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}


def option_bits(*values: Any) -> int:
    """One integer for a call's options: floats, integers and a reduction's name (for :func:`agree`)."""
    h = 0
    for v in values:
        code = _bits(v) if isinstance(v, float) else _REDUCTIONS[v] if isinstance(v, str) else int(v)
        h = (h * 1000003 + code) & ((1 << 62) - 1)
    return h


def checked(check: Callable[[], Any]) -> tuple[Any, Exception | None]:
    """``(check(), None)``, or ``(None, error)``: whatever a rank's checks raise, it shares before raising."""
    try:
        return check(), None
    except Exception as error:  # noqa: BLE001 - every failure must reach the other ranks
        return None, error
