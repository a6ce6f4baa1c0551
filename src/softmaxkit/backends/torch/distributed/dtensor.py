"""``softmaxkit.torch.cross_entropy`` on a DTensor whose classes are sharded: the vocabulary-parallel loss.

Supported: a 1-D device mesh, the logits ``Shard(1)`` (or ``Shard(-1)`` on
``(N, C)`` logits; the class dimension of ``torch.nn.functional.cross_entropy``),
class-index targets replicated (a plain tensor or a ``Replicate()`` DTensor),
class weights as a plain tensor of all ``C`` classes or a DTensor sharded like the
logits.  The loss is a replicated DTensor.  Anything else raises a
``ValueError`` that says what was given.
"""

from __future__ import annotations

from typing import Any

import torch

from softmaxkit.backends.torch.distributed.cross_entropy import vocab_parallel_cross_entropy


def is_dtensor(x: Any) -> bool:
    """Whether ``x`` is a DTensor (without importing ``torch.distributed.tensor`` for plain tensors)."""
    return type(x).__name__ == "DTensor" and type(x).__module__.startswith("torch.distributed")


def _replicated(value: Any, name: str) -> Any:
    from torch.distributed.tensor import Replicate

    if not is_dtensor(value):
        return value
    if not all(isinstance(p, Replicate) for p in value.placements):
        raise ValueError(f"{name}: a DTensor {name} must be replicated (Replicate()); got placements {tuple(value.placements)}")
    return value.to_local()


# Collectives and host-side checks: one opaque call under torch.compile.
@torch.compiler.disable
def cross_entropy(input: Any, target: Any, weight: Any, ignore_index: int, reduction: str, label_smoothing: float, z_loss: float) -> Any:
    """The vocabulary-parallel loss of a class-sharded DTensor, as a replicated DTensor."""
    from torch.distributed.tensor import DTensor, Replicate, Shard

    mesh = input.device_mesh
    placements = tuple(input.placements)
    cdim = 0 if input.ndim == 1 else 1
    supported = "a 1-D device mesh with the classes sharded: Shard(1), or Shard(-1) for (N, C) logits"
    if mesh.ndim != 1:
        raise ValueError(f"input: a DTensor on a {mesh.ndim}-D device mesh is not supported; the vocabulary-parallel loss takes {supported}")
    shard = placements[0]
    if not (isinstance(shard, Shard) and shard.dim % input.ndim == cdim):
        raise ValueError(f"input: DTensor placements {placements} do not shard the classes (dimension {cdim}); supported: {supported}")
    t = _replicated(target, "target")
    if isinstance(t, torch.Tensor) and t.is_floating_point():
        raise ValueError("target: probability targets are not supported with class-sharded DTensor logits; give class indices")
    group = mesh.get_group()
    classes, world, rank = input.shape[cdim], mesh.size(), mesh.get_local_rank()
    # Shard(dim) splits like torch.chunk: slices of ceil(C / world) classes.
    step = -(-classes // world)
    start = min(rank * step, classes)
    local = input.to_local()
    w = weight
    if is_dtensor(w):
        if tuple(w.placements) != (Shard(0),):
            raise ValueError(f"weight: a DTensor of class weights must be sharded like the classes (Shard(0)); got placements {tuple(w.placements)}")
        w = w.to_local()
    elif w is not None and isinstance(w, torch.Tensor) and w.ndim == 1 and w.shape[0] == classes:
        w = w[start : start + local.shape[cdim]]
    if cdim != local.ndim - 1:
        local = local.movedim(cdim, -1)
    loss = vocab_parallel_cross_entropy(
        local, t, group=group, vocab_start=start, weight=w, ignore_index=ignore_index,
        label_smoothing=label_smoothing, z_loss=z_loss, reduction=reduction,
    )
    return DTensor.from_local(loss, mesh, [Replicate()], run_check=False)
