"""Reading a monitor run back: its records, a summary of each figure, and a PNG of the curves.

``softmaxkit.torch.monitor`` writes ``softmax-health.jsonl`` in its run
folder, one JSON object per recorded step; this module reads that file and
needs neither torch nor tensorboard (matplotlib only for the picture).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "METRICS",
    "RECORDS_FILE",
    "MetricSummary",
    "RecordsError",
    "RunSummary",
    "plot",
    "read_records",
    "records_path",
    "summarize",
]

RECORDS_FILE = "softmax-health.jsonl"

# The figures of a record, in the order the summary lists them.
METRICS = (
    "loss",
    "logit_min",
    "logit_max",
    "max_margin",
    "entropy_mean",
    "entropy_min",
    "max_prob_mean",
    "max_prob_max",
    "collapse_fraction",
    "zero_grad_fraction",
    "masked_rows",
    "nan_count",
    "posinf_count",
    "neginf_count",
    "grad_norm",
    "grad_nonfinite",
)


class RecordsError(ValueError):
    """The run's records cannot be read; the message says which file and line."""


def records_path(run: str | Path) -> Path:
    """The records file of ``run``: a run folder, or the ``.jsonl`` file itself."""
    path = Path(run)
    return path / RECORDS_FILE if path.is_dir() else path


def read_records(run: str | Path) -> list[dict[str, Any]]:
    """The records of a run folder (or of a ``.jsonl`` file), in file order.

    Raises
    ------
    RecordsError
        When the file is missing or unreadable, a line is not a JSON object
        with an integer ``step``, or there is no record.

    Examples
    --------
    >>> import json, pathlib, tempfile
    >>> run = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (run / RECORDS_FILE).write_text(json.dumps({"step": 0, "loss": 2.5}) + "\\n")
    >>> read_records(run)
    [{'step': 0, 'loss': 2.5}]
    """
    path = records_path(run)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        where = f"no {RECORDS_FILE} in {run}" if Path(run).is_dir() else f"{run} does not exist"
        raise RecordsError(f"{where} (softmaxkit.torch.monitor writes it)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordsError(f"{path}: cannot be read: {exc}") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RecordsError(f"{path}, line {number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict) or isinstance(record.get("step"), bool) or not isinstance(record.get("step"), int):
            raise RecordsError(f"{path}, line {number}: not a record (a JSON object with an integer 'step')")
        records.append(record)
    if not records:
        raise RecordsError(f"{path}: no records")
    return records


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


@dataclass(frozen=True)
class MetricSummary:
    """One figure over a run: first and last recorded values, and the extremes (finite values only)."""

    name: str
    first: float | None
    last: float | None
    min: float | None
    max: float | None
    min_step: int | None
    max_step: int | None


@dataclass(frozen=True)
class RunSummary:
    """What :func:`summarize` found in a run's records.

    Attributes
    ----------
    records : int
        Number of records; ``first_step`` and ``last_step`` their range.
    metrics : tuple of MetricSummary
        One per figure present in the records, in :data:`METRICS` order.
    first_nan_logits, first_nonfinite_grad, first_nonfinite_loss : int or None
        The first recorded step whose logits hold a NaN, whose gradient at
        the logits holds a NaN or inf, whose loss is NaN or inf.
    threshold : float
        The level of the two crossings below.
    collapse_above, zero_grad_above : int or None
        The first recorded step whose collapse fraction, and whose
        zero-gradient fraction, exceeds ``threshold``.
    """

    records: int
    first_step: int
    last_step: int
    metrics: tuple[MetricSummary, ...]
    first_nan_logits: int | None
    first_nonfinite_grad: int | None
    first_nonfinite_loss: int | None
    threshold: float
    collapse_above: int | None
    zero_grad_above: int | None

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready Python values (the metrics keyed by name)."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "metrics"}
        out["metrics"] = {
            m.name: {key: getattr(m, key) for key in ("first", "last", "min", "max", "min_step", "max_step")}
            for m in self.metrics
        }
        return out

    def __str__(self) -> str:
        lines = [f"{self.records} records, steps {self.first_step} to {self.last_step}", ""]
        width = max([len(m.name) for m in self.metrics] + [6])
        lines.append(f"{'metric':<{width}}  {'first':>11}  {'last':>11}  {'min':>11}  {'max':>11}")
        for m in self.metrics:
            lines.append(f"{m.name:<{width}}  " + "  ".join(f"{_text(v):>11}" for v in (m.first, m.last, m.min, m.max)))
        lines.append("")
        events = [
            ("first NaN in the logits", self.first_nan_logits),
            ("first non-finite gradient at the logits", self.first_nonfinite_grad),
            ("first non-finite loss", self.first_nonfinite_loss),
            (f"collapse fraction first above {self.threshold:g}", self.collapse_above),
            (f"zero-gradient fraction first above {self.threshold:g}", self.zero_grad_above),
        ]
        label_width = max(len(label) for label, _ in events)
        for label, step in events:
            lines.append(f"{label:<{label_width}}  {'never' if step is None else f'step {step}'}")
        return "\n".join(lines)


def _text(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _first_step(records, test) -> int | None:
    return next((r["step"] for r in records if test(r)), None)


def summarize(records: list[dict[str, Any]], threshold: float = 0.5) -> RunSummary:
    """Per figure: first, last, min and max; the first non-finite steps; the first crossings of ``threshold``.

    ``first`` and ``last`` are the first and last recorded values (NaN
    included, shown as nan); ``min`` and ``max`` are over finite values.

    Examples
    --------
    >>> s = summarize([{"step": 0, "collapse_fraction": 0.1}, {"step": 10, "collapse_fraction": 0.75}])
    >>> s.collapse_above, s.metrics[0].max
    (10, 0.75)
    """
    metrics = []
    for name in METRICS:
        series = [(r["step"], _number(r.get(name))) for r in records if _number(r.get(name)) is not None]
        if not series:
            continue
        finite = [(v, step) for step, v in series if math.isfinite(v)]
        low = min(finite) if finite else (None, None)
        high = max(finite, key=lambda pair: (pair[0], -pair[1])) if finite else (None, None)
        metrics.append(MetricSummary(name, series[0][1], series[-1][1], low[0], high[0], low[1], high[1]))

    def exceeds(name):
        return lambda r: (_number(r.get(name)) or 0.0) > threshold

    def nonfinite(name):
        return lambda r: _number(r.get(name)) is not None and not math.isfinite(_number(r.get(name)))

    return RunSummary(
        records=len(records),
        first_step=records[0]["step"],
        last_step=records[-1]["step"],
        metrics=tuple(metrics),
        first_nan_logits=_first_step(records, lambda r: (_number(r.get("nan_count")) or 0) > 0),
        first_nonfinite_grad=_first_step(
            records, lambda r: (_number(r.get("grad_nonfinite")) or 0) > 0 or nonfinite("grad_norm")(r)
        ),
        first_nonfinite_loss=_first_step(records, nonfinite("loss")),
        threshold=threshold,
        collapse_above=_first_step(records, exceeds("collapse_fraction")),
        zero_grad_above=_first_step(records, exceeds("zero_grad_fraction")),
    )


# (title, [(figure, label)], logarithmic y) of each panel of the picture.
_PANELS = (
    ("loss", [("loss", "loss")], True),
    ("logits", [("logit_max", "max"), ("logit_min", "min"), ("max_margin", "largest margin")], False),
    ("entropy (nats)", [("entropy_mean", "mean"), ("entropy_min", "min")], False),
    ("max probability", [("max_prob_mean", "mean"), ("max_prob_max", "max")], False),
    ("fraction of rows", [("collapse_fraction", "collapsed"), ("zero_grad_fraction", "zero target gradient")], False),
    ("gradient norm at the logits", [("grad_norm", "L2 norm")], True),
)


def plot(records: list[dict[str, Any]], path: str | Path, summary: RunSummary | None = None, title: str = "") -> Path:
    """Write a PNG of the run's curves to ``path``; returns it.

    Six panels against the step: loss, logit range and margin, entropy,
    maximum probability, the collapse and zero-gradient fractions, and the
    gradient norm.  Vertical lines mark the first NaN in the logits (red)
    and the step the collapse fraction first exceeds the summary's
    threshold (grey, dashed).

    Raises
    ------
    ImportError
        When matplotlib is missing, naming the extra to install.
    """
    try:
        # A Figure of its own, without pyplot: no window, no global backend change.
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("the PNG needs matplotlib: pip install 'softmaxkit[monitor]'") from None
    summary = summary or summarize(records)
    fig = Figure(figsize=(12, 6.2))
    axes = fig.subplots(2, 3, sharex=True)
    for ax, (panel_title, figures, log_y) in zip(axes.flat, _PANELS):
        drawn = False
        for name, label in figures:
            points = [(r["step"], _number(r.get(name))) for r in records if _number(r.get(name)) is not None]
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, label=label, linewidth=1.4)
                drawn = True
        # Logarithmic where the values are positive and finite (a loss of
        # exactly 0, or a NaN, keeps the linear scale).
        if drawn and log_y and all(0 < v < math.inf for v in values):
            ax.set_yscale("log")
        if not drawn:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="grey")
        if summary.first_nan_logits is not None:
            ax.axvline(summary.first_nan_logits, color="tab:red", linewidth=1)
        if summary.collapse_above is not None:
            ax.axvline(summary.collapse_above, color="grey", linestyle="--", linewidth=1)
        ax.set_title(panel_title, fontsize=10)
        ax.grid(alpha=0.3)
        if len(figures) > 1 and drawn:
            ax.legend(fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    notes = []
    if summary.collapse_above is not None:
        notes.append(f"dashed: collapse fraction > {summary.threshold:g} from step {summary.collapse_above}")
    if summary.first_nan_logits is not None:
        notes.append(f"red: first NaN in the logits at step {summary.first_nan_logits}")
    fig.suptitle(" — ".join(filter(None, [title or "softmax health", *notes])), fontsize=11)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=80)
    return out
