"""softmaxkit.sample against a naive torch sampler and vLLM's sampler formulas, on torch CPU tensors.

One decoding step draws one token per row of a batch of logits.  Three
samplers run on the same logits, in one process, interleaved (the
harness's warm-up and rotating rounds); the table gives medians and
softmaxkit's speed-up over each:

- ``naive``: what a decoding loop writes by hand (Hugging Face's logits
  warpers): ``x / T``; ``torch.topk`` for top-k; a full ``torch.sort``,
  softmax and cumulative sum for top-p; softmax for min-p; then
  ``torch.softmax`` and ``torch.multinomial``.  Greedy is ``torch.argmax``.
- ``vLLM``: vLLM's PyTorch sampler (``vllm/v1/sample/ops/topk_topp_sampler.py``
  and ``vllm/v1/sample/sampler.py``) restated here from its published
  formulas, since vLLM is not installable on this machine: logits in
  float32, ``div_`` by the temperature, min-p on the softmax, then
  ``apply_top_k_top_p`` (``topk`` for top-k alone, a full ascending sort
  for top-p), softmax, and ``random_sample``, the exponential race
  ``argmax(probs / q)`` with ``q ~ Exp(1)`` from ``exponential_``.
  Greedy is ``argmax``.
- ``softmaxkit``: ``softmaxkit.sample(x, ..., rng=generator)``.

Settings (every row alike, as numbers): ``plain`` (temperature 1),
``T=0.7 top_k=50``, ``T=0.7 top_p=0.9``, ``all four`` (T 0.7, top-k 50,
top-p 0.9, min-p 0.05) and ``greedy`` (temperature 0); shapes 8 x 50257
(GPT-2's vocabulary) and 64 x 128256 (Llama 3's), float32 and bfloat16
logits drawn as ``3 * N(0, 1)``.  Every sampler gets its own
``torch.Generator``.

The three are not equally exact: softmaxkit keeps the ties at the top-k
boundary and decides the top-p boundary on exact sums of float64 weights;
the naive sampler and vLLM decide it on float32 cumulative sums and keep
exactly k classes in an arbitrary order of ties.  vLLM applies min-p
before top-k and top-p; the others after.

Usage::

    PYTHONPATH=src python benchmarks/bench_sampling.py [--rounds 7] [--out DIR]

prints the table and writes DIR/sampling.md and .csv (default
benchmarks/results).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from _harness import RESULTS, describe, interleaved, medians, timed, write_results

import softmaxkit as smk

SHAPES = [(8, 50257), (64, 128256)]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
SETTINGS: dict[str, dict] = {
    "plain": {},
    "T=0.7 top_k=50": {"temperature": 0.7, "top_k": 50},
    "T=0.7 top_p=0.9": {"temperature": 0.7, "top_p": 0.9},
    "all four": {"temperature": 0.7, "top_k": 50, "top_p": 0.9, "min_p": 0.05},
    "greedy": {"temperature": 0.0},
}

TITLE = "softmaxkit.sample vs a naive torch sampler and vLLM's formulas (CPU)"
COLUMNS = ["case", "naive", "vLLM", "softmaxkit", "× faster than naive", "× faster than vLLM"]
CSV_FIELDS = ["case", "shape", "dtype", "setting", "naive_s", "vllm_s", "softmaxkit_s", "speedup_naive", "speedup_vllm"]


# --- the naive sampler ----------------------------------------------------------------------


def naive(x: torch.Tensor, gen: torch.Generator, temperature: float = 1.0, top_k=None, top_p=None, min_p=None) -> torch.Tensor:
    """Hugging Face's warpers, then softmax and multinomial."""
    if temperature == 0:
        return x.argmax(-1)
    z = x.float() / temperature
    if top_k is not None:
        kth = torch.topk(z, top_k, dim=-1).values[..., -1:]
        z = z.masked_fill(z < kth, -float("inf"))
    if top_p is not None:
        ranked, order = torch.sort(z, dim=-1, descending=True)
        probs = ranked.softmax(-1)
        masked = ranked.masked_fill(probs.cumsum(-1) - probs > top_p, -float("inf"))
        z = masked.scatter(-1, order, masked)
    if min_p is not None:
        probs = z.softmax(-1)
        z = z.masked_fill(probs < min_p * probs.amax(-1, keepdim=True), -float("inf"))
    return torch.multinomial(z.softmax(-1), 1, generator=gen)[:, 0]


# --- vLLM's formulas --------------------------------------------------------------------------


def apply_top_k_only(logits: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    no_top_k_mask = k == logits.shape[1]
    k = k.masked_fill(no_top_k_mask, 1)
    max_top_k = int(k.max())
    k_index = k.sub_(1).unsqueeze(1)
    top_k_mask = logits.topk(max_top_k, dim=1).values.gather(1, k_index.long())
    top_k_mask.masked_fill_(no_top_k_mask.unsqueeze(1), -float("inf"))
    logits.masked_fill_(logits < top_k_mask, -float("inf"))
    return logits


def apply_top_k_top_p(logits: torch.Tensor, k: torch.Tensor | None, p: torch.Tensor | None) -> torch.Tensor:
    if p is None:
        if k is None:
            return logits
        return apply_top_k_only(logits, k)
    logits_sort, logits_idx = logits.sort(dim=-1, descending=False)
    if k is not None:
        top_k_mask = logits_sort.size(1) - k.to(torch.long)
        top_k_mask = logits_sort.gather(1, top_k_mask.unsqueeze(dim=1))
        top_k_mask = logits_sort < top_k_mask
        logits_sort.masked_fill_(top_k_mask, -float("inf"))
    probs_sort = logits_sort.softmax(dim=-1)
    probs_sum = torch.cumsum(probs_sort, dim=-1, out=probs_sort)
    top_p_mask = probs_sum <= 1 - p.unsqueeze(dim=1)
    top_p_mask[:, -1] = False
    logits_sort.masked_fill_(top_p_mask, -float("inf"))
    return logits_sort.scatter(dim=-1, index=logits_idx, src=logits_sort)


def vllm(x: torch.Tensor, gen: torch.Generator, temperature: float = 1.0, top_k=None, top_p=None, min_p=None) -> torch.Tensor:
    """vLLM's sampler: temperature, min-p, top-k/top-p, then the exponential race."""
    logits = x.to(torch.float32)
    if temperature == 0:
        return logits.argmax(dim=-1)
    rows = logits.shape[0]
    logits = logits.div_(temperature) if logits is not x else logits / temperature
    if min_p is not None:
        probs = logits.softmax(dim=-1)
        top = probs.amax(dim=-1, keepdim=True)
        logits.masked_fill_(probs < min_p * top, -float("inf"))
    k = None if top_k is None else torch.full((rows,), top_k, dtype=torch.int32)
    p = None if top_p is None else torch.full((rows,), top_p, dtype=torch.float32)
    logits = apply_top_k_top_p(logits, k, p)
    probs = logits.softmax(dim=-1, dtype=torch.float32)
    q = torch.empty_like(probs).exponential_(generator=gen)
    return probs.div_(q).argmax(dim=-1).view(-1)


def softmaxkit(x: torch.Tensor, gen: torch.Generator, **settings) -> torch.Tensor:
    return smk.sample(x, rng=gen, **settings)


# --- measuring --------------------------------------------------------------------------------

SAMPLERS: dict[str, Callable] = {"naive": naive, "vllm": vllm, "softmaxkit": softmaxkit}


def measure(shape: tuple[int, int], dtype: str, setting: str, rounds: int) -> dict:
    """Median seconds per step of the three samplers, one call per measurement."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g) * 3).to(DTYPES[dtype])
    settings = SETTINGS[setting]
    calls = {}
    for name, sampler in SAMPLERS.items():
        gen = torch.Generator().manual_seed(1)
        calls[name] = functools.partial(timed, functools.partial(sampler, x, gen, **settings), 1 if shape[0] > 8 else 5)
    seconds = medians(interleaved(calls, rounds))
    return {
        "case": f"{setting} {shape[0]}x{shape[1]} {dtype}",
        "shape": f"{shape[0]}x{shape[1]}",
        "dtype": dtype,
        "setting": setting,
        "naive_s": seconds["naive"],
        "vllm_s": seconds["vllm"],
        "softmaxkit_s": seconds["softmaxkit"],
        "speedup_naive": seconds["naive"] / seconds["softmaxkit"],
        "speedup_vllm": seconds["vllm"] / seconds["softmaxkit"],
    }


def run(rounds: int) -> list[dict]:
    return [measure(shape, dtype, setting, rounds) for shape in SHAPES for dtype in DTYPES for setting in SETTINGS]


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds < 0.1 else f"{seconds * 1e3:.1f} ms"


def _cells(row: dict) -> list[str]:
    return [
        row["case"],
        _ms(row["naive_s"]),
        _ms(row["vllm_s"]),
        _ms(row["softmaxkit_s"]),
        f"{row['speedup_naive']:.2f}×",
        f"{row['speedup_vllm']:.2f}×",
    ]


def _notes(rounds: int) -> list[str]:
    return [
        (
            f"torch {torch.__version__}, {torch.get_num_threads()} threads. Median of {rounds} interleaved rounds after a "
            "warm-up (the order rotates every round); each round times one step on 64-row logits and averages five on 8-row ones."
        ),
        (
            "`naive`: x / T, torch.topk, full sort + cumsum for top-p, softmax for min-p, torch.multinomial (greedy: "
            "torch.argmax). `vLLM`: vLLM's apply_top_k_top_p and random_sample (probs / Exp(1) noise, argmax), restated "
            "from their published formulas (vLLM is not installable here). `softmaxkit`: softmaxkit.sample with a "
            "torch.Generator."
        ),
        "Logits 3 * N(0, 1); all four = T 0.7, top-k 50, top-p 0.9, min-p 0.05; greedy = temperature 0.",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per case (median reported)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for sampling.md and sampling.csv")
    args = parser.parse_args(argv)
    print(describe(), file=sys.stderr)
    rows = run(args.rounds)
    write_results(
        "sampling",
        title=TITLE,
        machine=describe(),
        notes=_notes(args.rounds),
        columns=COLUMNS,
        align="lrrrrr",
        rows=map(_cells, rows),
        csv_fields=CSV_FIELDS,
        csv_rows=rows,
        out=args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
