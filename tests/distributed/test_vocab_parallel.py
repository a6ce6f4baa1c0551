"""The vocabulary-parallel losses on real torch.distributed processes (gloo on localhost).

Each world size (2 ranks with even slices, 3 with an empty slice, 4 with
uneven ones) runs once, in one subprocess (``ranks.py``), every call of
every scenario; the tests read what each rank got and compare it with the
single-device loss on the whole logits (within 1 ULP: both round once from
float64) and, on confident rows, with mpmath (the contract: 2 ULP).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():
    pytest.skip("this PyTorch build has no torch.distributed", allow_module_level=True)

import softmaxkit.torch as smt
from tests.reference import exact, ulps

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("vocab_parallel_ranks", HERE / "ranks.py")
ranks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ranks)

WORLDS = (2, 3, 4)
SCENARIOS = "plain,linear,dtensor,faults"


def _run(world: int, scenarios: str, tmp: Path) -> list[dict]:
    out = tmp / f"w{world}-{scenarios.replace(',', '-')}"
    out.mkdir()
    done = subprocess.run([sys.executable, str(HERE / "ranks.py"), str(world), scenarios, str(out)], capture_output=True, text=True, timeout=150)
    results = []
    for r in range(world):
        path = out / f"rank{r}.json"
        if path.exists():
            results.append(json.loads(path.read_text()))
        else:
            results.append(None)
    if scenarios != "dead":
        assert all(results), f"a rank wrote nothing:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        for r, got in enumerate(results):
            for name, value in got.items():
                assert "crash" not in value, f"rank {r}, {name}:\n{value['crash']}"
    return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vocab_parallel")
    return {world: _run(world, SCENARIOS + (",subgroup" if world == 4 else ""), tmp) for world in WORLDS}


def _np_dtype(name: str):
    return ulps.BFLOAT16 if name == "bfloat16" else np.dtype(name)


def _single(case: dict):
    """The single-device loss and gradient of a case, on the whole logits."""
    x = case["logits"].to(getattr(torch, case["dtype"])).clone().requires_grad_()
    w = None if case["weight"] is None else case["weight"].to(torch.float32)
    loss = smt.cross_entropy(x, case["target"], weight=w, label_smoothing=case["eps"], z_loss=case["z"], reduction=case["reduction"])
    (loss.sum() if case["reduction"] == "none" else loss).backward()
    return loss.detach().to(torch.float64).numpy(), x.grad.to(torch.float64).numpy()


def _slice(a: np.ndarray, world: int, rank: int) -> np.ndarray:
    b = ranks.bounds(world, a.shape[1])
    return a[:, b[rank] : b[rank + 1]]


@pytest.mark.parametrize("world", WORLDS)
def test_every_option_agrees_with_one_device(runs, world):
    for case in ranks.cases(world):
        if case["name"].startswith("confident"):
            continue
        loss, grad = _single(case)
        dtype = _np_dtype(case["dtype"])
        for rank, got in enumerate(runs[world]):
            mine = got["plain"][case["name"]]
            assert mine["dtype"] == f"torch.{case['dtype']}"
            assert ulps.ulp_distance(np.asarray(mine["loss"], dtype=np.float64), loss, dtype) <= 1, (case["name"], rank)
            part = _slice(grad, world, rank)
            assert ulps.ulp_distance(np.asarray(mine["grad"], dtype=np.float64).reshape(part.shape), part, dtype) <= 1, (case["name"], rank)
            assert mine["input_kept"] and mine.get("repeat_equal", True), case["name"]


@pytest.mark.parametrize("world", WORLDS)
def test_every_rank_gets_the_same_loss(runs, world):
    for case in ranks.cases(world):
        losses = [json.dumps(got["plain"][case["name"]]["loss"]) for got in runs[world]]
        assert len(set(losses)) == 1, case["name"]


@pytest.mark.parametrize("world", WORLDS)
def test_confident_rows_are_exact(runs, world):
    """Margins 5 to 90 in float32 (peers: up to 1.6e7 ULP): loss and gradient against mpmath."""
    for case in ranks.cases(world):
        if not case["name"].startswith("confident"):
            continue
        x = case["logits"].to(torch.float32).to(torch.float64).numpy()
        loss_exact, grad_exact = [], []
        for row, t in zip(x, case["target"].tolist()):
            coef, w_t = exact.hard_coef(len(row), t, case["eps"])
            lo, gr = exact.cross_entropy(exact.to_mp(row), coef)
            loss_exact.append(lo)
            grad_exact.append(gr)
        grad_exact = np.asarray(grad_exact, dtype=object)
        for rank, got in enumerate(runs[world]):
            mine = got["plain"][case["name"]]
            assert ulps.ulp_error(np.asarray(mine["loss"]), loss_exact, np.float32) <= ulps.tolerance(np.float32), rank
            b = ranks.bounds(world, x.shape[1])
            if b[rank + 1] > b[rank]:
                part = grad_exact[:, b[rank] : b[rank + 1]]
                assert ulps.ulp_error(np.asarray(mine["grad"]), part, np.float32) <= ulps.tolerance(np.float32), rank


@pytest.mark.parametrize("world", WORLDS)
def test_slices_in_any_order_by_vocab_start(runs, world):
    case = ranks.cases()[0]
    loss, grad = _single(case)
    for got in runs[world]:
        mine = got["plain"]["vocab-start"]
        assert ulps.ulp_distance(np.asarray(mine["loss"]), loss, np.float32) <= 1
        width = np.asarray(mine["grad"], dtype=np.float64).shape[1]
        part = grad[:, mine["start"] : mine["start"] + width]
        assert ulps.ulp_distance(np.asarray(mine["grad"], dtype=np.float64).reshape(part.shape), part, np.float32) <= 1


@pytest.mark.parametrize("world", WORLDS)
def test_under_torch_compile(runs, world):
    case = ranks.cases()[0]
    x = case["logits"].to(torch.float32).clone().requires_grad_()
    loss = smt.cross_entropy(x * 2.0, case["target"], label_smoothing=0.1) + 1.0
    loss.backward()
    for rank, got in enumerate(runs[world]):
        mine = got["plain"]["compiled"]
        assert ulps.ulp_distance(np.asarray(mine["loss"]), loss.detach().double().numpy(), np.float32) <= 1
        assert ulps.ulp_distance(np.asarray(mine["grad"], dtype=np.float64), _slice(x.grad.double().numpy(), world, rank), np.float32) <= 1


@pytest.mark.parametrize("world", WORLDS)
def test_fused_linear_loss_agrees_with_one_device(runs, world):
    """The loss within 1 ULP.  The gradients sum float32 entries of the logits' gradient (each
    within 1 ULP of one device's) over many tokens, where they cancel, and the weight's and the
    hidden states' are float32 products whose rounding depends on their shapes (a slice of one
    row takes another BLAS path; the ranks' parts are summed in another order): each within
    1e-6 of its largest entry."""
    for case in ranks.linear_cases():
        dtype = getattr(torch, case["dtype"])
        h = case["hidden"].to(dtype).clone().requires_grad_()
        w = case["weight"].to(dtype).clone().requires_grad_()
        b = case["bias"].to(dtype).clone().requires_grad_()
        cw = None if case["class_weight"] is None else case["class_weight"].to(torch.float32)
        loss = smt.linear_cross_entropy(h, w, case["target"], linear_bias=b, weight=cw, label_smoothing=case["eps"], z_loss=case["z"],
                                        reduction=case["reduction"], softcap=case["softcap"], normalizer=case["normalizer"])
        (loss.sum() if case["reduction"] == "none" else loss).backward()
        bounds = ranks.bounds(world, w.shape[0])
        for rank, got in enumerate(runs[world]):
            mine = got["linear"][case["name"]]
            assert ulps.ulp_distance(np.asarray(mine["loss"]), loss.detach().double().numpy(), _np_dtype(case["dtype"])) <= 1, case["name"]
            # bfloat16 gradients: one rounding of results that differ by float32 ones.
            tol = 1e-6 if case["dtype"] == "float32" else 2.0**-8
            dh = np.asarray(mine["d_hidden"])
            assert np.max(np.abs(dh - h.grad.double().numpy())) <= tol * np.max(np.abs(h.grad.double().numpy())), case["name"]
            lo, hi = bounds[rank], bounds[rank + 1]
            part_w, part_b = w.grad[lo:hi].double().numpy(), b.grad[lo:hi].double().numpy()
            assert np.max(np.abs(np.asarray(mine["d_weight"]).reshape(part_w.shape) - part_w), initial=0) <= tol * np.max(np.abs(w.grad.double().numpy())), case["name"]
            assert np.max(np.abs(np.asarray(mine["d_bias"]).reshape(part_b.shape) - part_b), initial=0) <= tol * np.max(np.abs(b.grad.double().numpy())), case["name"]


@pytest.mark.parametrize("world", WORLDS)
def test_dtensor_sharded_classes(runs, world):
    case = ranks.cases()[0]
    x = case["logits"].to(torch.float32).clone().requires_grad_()
    loss = smt.cross_entropy(x, case["target"], weight=torch.linspace(0.5, 2.0, x.shape[1]), label_smoothing=0.1)
    loss.backward()
    for got in runs[world]:
        mine = got["dtensor"]
        assert mine["placements"] == "(Replicate(),)"
        assert ulps.ulp_distance(np.asarray(mine["loss"]), loss.detach().double().numpy(), np.float32) <= 1
        assert ulps.ulp_distance(np.asarray(mine["grad"]), x.grad.double().numpy(), np.float32) <= 1
        assert ulps.ulp_distance(np.asarray(mine["module"]), smt.cross_entropy(x.detach(), case["target"], reduction="none").double().numpy(), np.float32) <= 1
        assert mine["rows"][:2] == ["error", "ValueError"] and "do not shard the classes" in mine["rows"][2]
        if world == 4:
            assert mine["mesh2d"][:2] == ["error", "ValueError"] and "2-D device mesh" in mine["mesh2d"][2]


@pytest.mark.parametrize("world", WORLDS)
def test_a_bad_argument_on_any_rank_stops_every_rank(runs, world):
    faults = [got["faults"] for got in runs[world]]
    for rank, f in enumerate(faults):
        assert f["target-range"][:2] == ["error", "ValueError"] and "target[4] = 23 is not a class index" in f["target-range"][2]
        # The rank with the short target raises its own error; the others name it.
        if rank == 1:
            assert f["shape-on-one-rank"][1] == "ValueError" and "target must have shape (9,)" in f["shape-on-one-rank"][2]
        else:
            assert f["shape-on-one-rank"][1] == "RankError" and "rank 1" in f["shape-on-one-rank"][2]
        assert f["targets-differ"][1] == "RankError" and "different targets" in f["targets-differ"][2]
        assert f["options-differ"][1] == "RankError" and "different options" in f["options-differ"][2]
        assert f["gathered"][1] == "ValueError" and "gathered logits" in f["gathered"][2]
        assert f["overlap"][1] == "ValueError" and "overlap" in f["overlap"][2]
        # The group is still usable afterwards.
        assert f["after"][0] == "ok"


def test_a_group_of_some_ranks(runs):
    """group= a subgroup: ranks 1 and 2 of 4 split the classes; ranks 0 and 3 take no part."""
    case = ranks.cases()[0]
    x = case["logits"].to(torch.float32).clone().requires_grad_()
    loss = smt.cross_entropy(x, case["target"], reduction="sum")
    loss.backward()
    for rank in (1, 2):
        mine = runs[4][rank]["subgroup"]
        assert ulps.ulp_distance(np.asarray(mine["loss"]), loss.detach().double().numpy(), np.float32) <= 1
        grad = np.asarray(mine["grad"], dtype=np.float64)
        part = x.grad.double().numpy()[:, mine["start"] : mine["start"] + grad.shape[1]]
        assert ulps.ulp_distance(grad, part, np.float32) <= 1
    assert runs[4][0]["subgroup"] == {} and runs[4][3]["subgroup"] == {}


def test_a_dead_rank_ends_the_others_with_an_error(tmp_path):
    """The last rank exits before the call: the others raise (gloo's closed
    connection, or the group's 5 s timeout), they do not hang."""
    results = _run(2, "dead", tmp_path)
    got = results[0]["dead"]
    assert got["got"][0] == "error", got
    assert got["seconds"] < 15, got
