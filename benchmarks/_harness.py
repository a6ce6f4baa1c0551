"""What every benchmark shares: the machine, the clock, the rounds and the writer.

Timing method: the peers of one case run in one process, each once as a
warm-up and then round after round, the order rotating every round so that
no peer always runs right after the same other one; the tables report
medians.  Memory method: each measurement runs in a fresh interpreter
(:func:`run_fresh`), which reads its own resident set with the helpers
below.  Every script writes its table with :func:`write_results`.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parent
RESULTS = HERE / "results"

_ISA = ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma", "f16c")


# --- the machine --------------------------------------------------------------------------


def machine() -> dict:
    """CPU model, the cores this process may run on, and the vector instruction sets."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    isa = [name for name in _ISA if name in flags]
    return {"cpu": model, "cores": cores, "isa": " ".join(isa) or platform.machine()}


def describe() -> str:
    """``machine()`` in words."""
    info = machine()
    return f"{info['cpu']}, {info['cores']} cores, {platform.system()} ({info['isa']})"


# --- the code under test ------------------------------------------------------------------


def kernels_into() -> Any:
    """The native kernels' write-into-``out`` functions (``softmax_into``, ``cross_entropy_into``, ...)."""
    try:
        return importlib.import_module("softmaxkit.kernels.into")
    except ModuleNotFoundError as exc:
        if exc.name != "softmaxkit.kernels.into":
            raise
        return importlib.import_module("softmaxkit.kernels")


# --- timing -------------------------------------------------------------------------------


def timed(fn: Callable[[], object], number: int = 1) -> float:
    """Seconds per call of ``fn``, averaged over ``number`` calls in a row."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def interleaved(
    measurements: Mapping[str, Callable[[], float]],
    rounds: int,
    before_round: Callable[[], object] | None = None,
) -> dict[str, list[float]]:
    """Every measurement once as a warm-up, then ``rounds`` rounds in rotating order.

    Parameters
    ----------
    measurements : mapping of name to callable
        Each callable makes one measurement and returns its seconds
        (usually ``lambda: timed(fn, number)``).
    rounds : int
        Timed rounds; round ``r`` starts with the ``r``-th name (modulo their
        count), so no name always follows the same other one.
    before_round : callable, optional
        Called at the start of every timed round (a yardstick timed in the
        same rounds, such as :class:`CopyBandwidth`).

    Returns
    -------
    dict of name to list of float
        The seconds of each timed round, per name; :func:`medians` reduces them.
    """
    names = list(measurements)
    for name in names:
        measurements[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        if before_round is not None:
            before_round()
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(measurements[name]())
    return times


def medians(times: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """The median of each name's times."""
    return {name: statistics.median(ts) for name, ts in times.items()}


class CopyBandwidth:
    """The machine's copy bandwidth on an array, as a yardstick timed in the same rounds.

    Each call times ``np.copyto`` into an existing array and ``x.copy()``
    into a new one, ``number`` calls each; bytes count read plus write.
    """

    def __init__(self, x: np.ndarray, number: int = 1) -> None:
        self.x, self.number = x, number
        self.dst = np.empty_like(x)
        self.into_existing: list[float] = []
        self.into_new: list[float] = []

    def __call__(self) -> None:
        self.into_existing.append(timed(lambda: np.copyto(self.dst, self.x), self.number))
        self.into_new.append(timed(self.x.copy, self.number))

    def gbs(self) -> tuple[float, float]:
        """GB/s into an existing array and into a new one, from the median times."""
        moved = 2 * self.x.nbytes
        return moved / statistics.median(self.into_existing) / 1e9, moved / statistics.median(self.into_new) / 1e9


# --- memory, in a fresh interpreter -------------------------------------------------------


class FreshRunFailed(RuntimeError):
    """A fresh interpreter exited with an error; the message is its last line of stderr."""


def run_fresh(code: str, *args: object, env: Mapping[str, str] | None = None, warnings: bool = True) -> dict:
    """Run ``code`` in a fresh interpreter and return the JSON object it printed last.

    The interpreter finds this module (``from _harness import ...``) and,
    unless ``env`` sets ``PYTHONPATH`` itself, this checkout's ``src``.

    Parameters
    ----------
    code : str
        Python source, run with ``python -c``; ``args`` become its ``sys.argv[1:]``.
    env : mapping, optional
        Variables added to this process's environment.
    warnings : bool
        False runs the interpreter with ``-W ignore``.

    Raises
    ------
    FreshRunFailed
        If the interpreter exits with a nonzero status.
    """
    merged = dict(os.environ)
    merged["PYTHONPATH"] = os.pathsep.join([str(REPOSITORY / "src"), merged.get("PYTHONPATH", "")])
    merged.update(env or {})
    merged["PYTHONPATH"] = os.pathsep.join([str(HERE), merged["PYTHONPATH"]])
    flags = [] if warnings else ["-W", "ignore"]
    done = subprocess.run(
        [sys.executable, *flags, "-c", code, *map(str, args)], capture_output=True, text=True, env=merged, check=False
    )
    if done.returncode != 0:
        raise FreshRunFailed((done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1])
    return json.loads(done.stdout.strip().splitlines()[-1])


def max_rss() -> int:
    """This process's peak resident set so far, in bytes (``ru_maxrss``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) * 1024


def reset_peak_rss() -> int:
    """Reset this process's peak resident set and return the resident set now, in bytes (Linux).

    Unlike ``ru_maxrss``, the reset peak does not hold the parent's peak,
    which Linux carries across exec.
    """
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status("VmRSS")


def peak_rss() -> int:
    """This process's peak resident set since :func:`reset_peak_rss`, in bytes (``VmHWM``)."""
    return _status("VmHWM")


# --- results ------------------------------------------------------------------------------


def option_names(text: str, allowed: Sequence[str], option: str) -> list[str]:
    """A comma-separated option's names, each one of ``allowed``; exits with a usage message otherwise."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in names if t not in allowed]
    if bad or not names:
        raise SystemExit(f"{option} must be a comma-separated subset of {list(allowed)}; got {text!r}")
    return names


def add_out_argument(parser: argparse.ArgumentParser) -> None:
    """``--out DIR``: where the tables go (default ``benchmarks/results``)."""
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the .md and .csv tables")


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[object]], align: str | None = None) -> list[str]:
    """A markdown table; ``align`` holds one ``l`` or ``r`` per column (default: all left)."""
    align = align or "l" * len(columns)
    if len(align) != len(columns) or set(align) - {"l", "r"}:
        raise ValueError(f"align must be one 'l' or 'r' per column ({len(columns)}); got {align!r}")
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    lines = ["| " + " | ".join(columns) + " |", rule]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def write_results(
    name: str,
    *,
    title: str,
    machine: str,
    notes: Sequence[str],
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    csv_fields: Sequence[str],
    csv_rows: Iterable[Mapping[str, object]],
    align: str | None = None,
    footer: Sequence[str] = (),
    out: Path = RESULTS,
) -> str:
    """Write ``out/name.md`` and ``out/name.csv``, print the markdown and return it.

    The markdown is the title, ``Machine: <machine>.``, the notes, the table
    and the footer; the CSV holds ``csv_fields`` of every row of ``csv_rows``
    (other keys are left out, missing ones left empty).
    """
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(csv_fields), extrasaction="ignore", restval="")
        writer.writeheader()
        writer.writerows(csv_rows)
    lines = [f"# {title}", "", f"Machine: {machine}.", *notes, "", *markdown_table(columns, rows, align)]
    if footer:
        lines += ["", *footer]
    text = "\n".join(lines) + "\n"
    (out / f"{name}.md").write_text(text)
    print(text)
    return text
