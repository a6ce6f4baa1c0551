"""Rank processes for the vocabulary-parallel tests: gloo on localhost.

``python ranks.py WORLD SCENARIO OUT_DIR`` starts WORLD processes; each runs
the scenario's calls on its slice and writes what it got to
``OUT_DIR/rank<r>.json``.  The inputs come from :func:`cases` and
:func:`linear_cases`, which the tests call too, to compute the single-device
results they compare with.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import time
import traceback

import torch

F32 = torch.float32
INF = float("inf")


def bounds(world: int, vocab: int) -> list[int]:
    """Slice boundaries: even for 2 ranks, an empty slice for 3, uneven for 4."""
    if world == 2:
        return [0, vocab // 2, vocab]
    if world == 3:
        return [0, 5, 5, vocab]
    return [0, 1, 4, 10, vocab]


def _logits(seed: int, n: int, v: int, scale: float = 4.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, v, generator=g, dtype=torch.float64) * scale


# The calls that run on 3 and 4 ranks (every call runs on 2).
_SOME = {"float32-mean-w0-eps0.0-z0.0", "float32-sum-w1-eps0.1-z0.0", "float32-none-w1-eps0.2-z0.01", "bfloat16-mean-w0-eps0.1-z0.0"}


def cases(world: int = 2) -> list[dict]:
    """The plain loss's calls: every option and both dtypes on 2 ranks (a
    few on more), the edge rows and confident rows on every world size."""
    out = []
    v, n = 23, 9
    weight = torch.linspace(0.5, 2.0, v, dtype=torch.float64)
    # Finite row maxima (on CPU, without smoothing, the native kernel's path).
    base = _logits(1, n, v)
    base[0, 2] = 60.0  # confident
    base[3, 0] = base[3, 20] = 40.0  # the maximum tied across ranks
    base[4, 5:9] = -INF  # -inf classes
    base[8, 6:] = -INF  # all of the last ranks' classes masked
    target = torch.tensor([0, 1, 3, 20, 6, -100, 22, 11, 2])
    # Rows without a finite maximum (the formulas' path).
    edges = base.clone()
    edges[1, :] = -INF  # a fully masked row
    edges[2, 3], edges[2, 17] = INF, INF  # +inf on two ranks
    for dtype in ("float32", "bfloat16"):
        for reduction in ("mean", "sum", "none"):
            for weighted in (False, True):
                for eps, z in ((0.0, 0.0), (0.1, 0.0), (0.2, 1e-2)):
                    name = f"{dtype}-{reduction}-w{int(weighted)}-eps{eps}-z{z}"
                    if (dtype == "bfloat16" and (weighted or z)) or (world != 2 and name not in _SOME):
                        continue
                    out.append(dict(name=name, logits=base, target=target, dtype=dtype,
                                    weight=weight if weighted else None, eps=eps, z=z, reduction=reduction))
    for eps in (0.0, 0.1):
        out.append(dict(name=f"edges-eps{eps}", logits=edges, target=target, dtype="float32", weight=weight, eps=eps, z=1e-3, reduction="none"))
    nan_row = edges.clone()
    nan_row[7, 12] = float("nan")
    out.append(dict(name="nan-row", logits=nan_row, target=target, dtype="float32", weight=None, eps=0.0, z=0.0, reduction="none"))
    out.append(dict(name="all-ignored", logits=base, target=torch.full((n,), -100), dtype="float32", weight=None, eps=0.1, z=0.0, reduction="mean"))
    # Confident rows: the argmax leads the other classes by 5 to 90.
    margins = torch.linspace(5.0, 90.0, 18, dtype=torch.float64)
    conf = _logits(2, 18, 64, scale=1.0)
    hot = torch.arange(18) * 7 % 64
    conf[torch.arange(18), hot] = conf.max(dim=1).values + margins
    conf_target = torch.where(torch.arange(18) % 3 == 0, (hot + 1) % 64, hot)
    for eps in (0.0, 0.1):
        out.append(dict(name=f"confident-eps{eps}", logits=conf, target=conf_target, dtype="float32", weight=None, eps=eps, z=0.0, reduction="none"))
    return out


def linear_cases() -> list[dict]:
    """The fused linear loss's calls."""
    g = torch.Generator().manual_seed(3)
    n, h, v = 41, 8, 23
    hidden = torch.randn(n, h, generator=g, dtype=torch.float64)
    weight = torch.randn(v, h, generator=g, dtype=torch.float64) * 2
    bias = torch.randn(v, generator=g, dtype=torch.float64)
    target = torch.randint(0, v, (n,), generator=g)
    target[::6] = -100
    class_w = torch.linspace(0.5, 2.0, v, dtype=torch.float64)
    out = []
    for reduction, eps, z, weighted, dtype, softcap, normalizer in (
        ("mean", 0.0, 0.0, False, "float32", None, None), ("sum", 0.1, 1e-3, True, "float32", None, None),
        ("none", 0.0, 0.0, True, "float32", None, None), ("mean", 0.2, 0.0, True, "float32", None, None),
        ("mean", 0.0, 1e-3, True, "bfloat16", None, None), ("sum", 0.1, 0.0, False, "float32", 3.0, 100.0),
    ):
        out.append(dict(name=f"linear-{reduction}-eps{eps}-{dtype}-cap{softcap}", hidden=hidden, weight=weight, bias=bias, target=target,
                        class_weight=class_w if weighted else None, eps=eps, z=z, reduction=reduction, dtype=dtype,
                        softcap=softcap, normalizer=normalizer))
    return out


def _encode(t: torch.Tensor | None):
    return None if t is None else t.detach().to(torch.float64).tolist()


def _call(fn):
    """``("ok", value)`` or ``("error", type name, message)``."""
    try:
        return ["ok", fn()]
    except Exception as exc:  # noqa: BLE001 - the tests read what each rank raised
        return ["error", type(exc).__name__, str(exc)]


def plain(rank: int, world: int) -> dict:
    from softmaxkit.torch.distributed import vocab_parallel_cross_entropy

    results = {}
    for case in cases(world):
        b = bounds(world, case["logits"].shape[1])
        full = case["logits"].to(getattr(torch, case["dtype"]))
        x = full[:, b[rank] : b[rank + 1]].clone().requires_grad_()
        before = x.detach().clone()
        w = None if case["weight"] is None else case["weight"].to(F32)[b[rank] : b[rank + 1]]
        loss = vocab_parallel_cross_entropy(x, case["target"], weight=w, label_smoothing=case["eps"], z_loss=case["z"], reduction=case["reduction"])
        (loss.sum() if case["reduction"] == "none" else loss).backward()
        results[case["name"]] = {
            "loss": _encode(loss), "grad": _encode(x.grad), "dtype": str(loss.dtype),
            "input_kept": bool(torch.equal(x.detach().nan_to_num(), before.nan_to_num())),
        }
        if case["name"] in _SOME:
            again = vocab_parallel_cross_entropy(x.detach(), case["target"], weight=w, label_smoothing=case["eps"], z_loss=case["z"], reduction=case["reduction"])
            results[case["name"]]["repeat_equal"] = bool(torch.equal(loss.detach(), again))
    # Slices in another order than the ranks', given by vocab_start.
    case = cases()[0]
    full = case["logits"].to(F32)
    v = full.shape[1]
    b = bounds(world, v)
    order = list(reversed(range(world)))
    sizes = [b[r + 1] - b[r] for r in order]
    starts = [sum(sizes[:i]) for i in range(world)]
    mine = order.index(rank)
    x = full[:, starts[mine] : starts[mine] + sizes[mine]].clone().requires_grad_()
    loss = vocab_parallel_cross_entropy(x, case["target"], vocab_start=starts[mine])
    loss.backward()
    results["vocab-start"] = {"loss": _encode(loss), "grad": _encode(x.grad), "start": starts[mine]}
    # Under torch.compile: one opaque call between compiled code.
    x = full[:, b[rank] : b[rank + 1]].clone().requires_grad_()
    step = torch.compile(lambda a, t: vocab_parallel_cross_entropy(a * 2.0, t, label_smoothing=0.1) + 1.0, backend="eager")
    loss = step(x, case["target"])
    loss.backward()
    results["compiled"] = {"loss": _encode(loss), "grad": _encode(x.grad)}
    return results


def linear(rank: int, world: int) -> dict:
    from softmaxkit.torch.distributed import vocab_parallel_linear_cross_entropy

    results = {}
    for case in linear_cases():
        b = bounds(world, case["weight"].shape[0])
        dtype = getattr(torch, case["dtype"])
        h = case["hidden"].to(dtype).clone().requires_grad_()
        w = case["weight"].to(dtype)[b[rank] : b[rank + 1]].clone().requires_grad_()
        bias = case["bias"].to(dtype)[b[rank] : b[rank + 1]].clone().requires_grad_()
        cw = None if case["class_weight"] is None else case["class_weight"].to(F32)[b[rank] : b[rank + 1]]
        loss = vocab_parallel_linear_cross_entropy(h, w, case["target"], linear_bias_shard=bias, weight=cw,
                                                   label_smoothing=case["eps"], z_loss=case["z"], reduction=case["reduction"],
                                                   softcap=case["softcap"], normalizer=case["normalizer"])
        (loss.sum() if case["reduction"] == "none" else loss).backward()
        results[case["name"]] = {"loss": _encode(loss), "d_hidden": _encode(h.grad), "d_weight": _encode(w.grad), "d_bias": _encode(bias.grad)}
    return results


def dtensor(rank: int, world: int) -> dict:
    import softmaxkit.torch as smt
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    case = cases()[0]
    mesh = init_device_mesh("cpu", (world,))
    full = case["logits"].to(F32)
    d = distribute_tensor(full, mesh, [Shard(1)]).requires_grad_()
    weight = torch.linspace(0.5, 2.0, full.shape[1])
    loss = smt.cross_entropy(d, case["target"], weight=weight, label_smoothing=0.1)
    loss.backward()
    out = {"loss": _encode(loss.to_local()), "placements": str(loss.placements), "grad": _encode(d.grad.full_tensor())}
    module = smt.CrossEntropyLoss(reduction="none")(distribute_tensor(full, mesh, [Shard(1)]), case["target"])
    out["module"] = _encode(module.to_local())
    out["rows"] = _call(lambda: smt.cross_entropy(distribute_tensor(full, mesh, [Shard(0)]), case["target"]))
    if world == 4:
        mesh2 = init_device_mesh("cpu", (2, 2))
        out["mesh2d"] = _call(lambda: smt.cross_entropy(distribute_tensor(full, mesh2, [Shard(1), Shard(1)]), case["target"]))
    return out


def faults(rank: int, world: int) -> dict:
    from softmaxkit.torch.distributed import vocab_parallel_cross_entropy as vpce

    case = cases()[0]
    full = case["logits"].to(F32)
    v = full.shape[1]
    b = bounds(world, v)
    x = full[:, b[rank] : b[rank + 1]]
    t = case["target"]
    bad_t = t.clone()
    bad_t[4] = v  # one past the last class, on every rank
    short_t = t[:-1] if rank == 1 else t
    other_t = t.clone()
    if rank == 1:
        other_t[0] = 5
    return {
        "target-range": _call(lambda: vpce(x, bad_t)),
        "shape-on-one-rank": _call(lambda: vpce(x, short_t)),
        "targets-differ": _call(lambda: vpce(x, other_t)),
        "options-differ": _call(lambda: vpce(x, t, label_smoothing=0.1 * (rank == 0))),
        "gathered": _call(lambda: vpce(full, t)),
        "overlap": _call(lambda: vpce(x, t, vocab_start=0)),
        "after": _call(lambda: float(vpce(x, t))),
    }


def dead(rank: int, world: int) -> dict:
    from softmaxkit.torch.distributed import vocab_parallel_cross_entropy

    if rank == world - 1:
        os._exit(3)
    case = cases()[0]
    x = case["logits"].to(F32)[:, : bounds(world, case["logits"].shape[1])[1]]
    start = time.monotonic()
    got = _call(lambda: float(vocab_parallel_cross_entropy(x, case["target"])))
    return {"got": got, "seconds": time.monotonic() - start}


def subgroup(rank: int, world: int) -> dict:
    """Ranks 1 and 2 of 4 split the classes in a group of their own; the others stay out."""
    import torch.distributed as dist
    from softmaxkit.torch.distributed import vocab_parallel_cross_entropy

    group = dist.new_group([1, 2])
    if rank not in (1, 2):
        return {}
    case = cases()[0]
    full = case["logits"].to(F32)
    half = full.shape[1] // 2
    part = full[:, :half] if rank == 1 else full[:, half:]
    x = part.clone().requires_grad_()
    loss = vocab_parallel_cross_entropy(x, case["target"], group=group, reduction="sum")
    loss.backward()
    return {"loss": _encode(loss), "grad": _encode(x.grad), "start": 0 if rank == 1 else half}


SCENARIOS = {"subgroup": subgroup, "plain": plain, "linear": linear, "dtensor": dtensor, "faults": faults, "dead": dead}


def _rank(rank: int, world: int, port: int, scenarios: list, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=5 if "dead" in scenarios else 60))
    results = {}
    for name in scenarios:
        try:
            results[name] = SCENARIOS[name](rank, world)
        except Exception:  # noqa: BLE001 - reported to the test
            results[name] = {"crash": traceback.format_exc()}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)
    if "dead" not in scenarios:
        dist.destroy_process_group()


def main() -> None:
    import torch.multiprocessing as mp

    world, scenarios, out_dir = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_rank, args=(r, world, port, scenarios, out_dir)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(90)
        if p.is_alive():
            p.kill()


if __name__ == "__main__":
    main()
