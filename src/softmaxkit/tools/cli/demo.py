"""``softmaxkit demo``: the naive recipe fails, softmaxkit does not.

The references are computed at run time with Python's ``decimal`` module at
50 significant digits, so the demo needs nothing beyond NumPy.  When PyTorch
is installed it also shows where ``torch.nn.functional`` gives NaN (or a
zero gradient) and ``softmaxkit.torch`` gives the defined answer.  It ends
with the diagnostic tools to try next.
"""

from __future__ import annotations

import argparse
import decimal
import math

import numpy as np

DIGITS = 50

BATCH = [[2.0, 1.0, 0.1], [1000.0, 1.0, -1000.0], [3.0, 2.0, 1.0]]
TARGETS = [0, 2, 1]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="show naive softmax failing and softmaxkit's exact answers",
        description="Take a tutorial batch through the textbook recipe and through softmaxkit, "
        "beside a 50-digit reference computed at run time; with PyTorch installed, show where "
        "torch.nn.functional gives NaN and softmaxkit.torch does not; then list the diagnostic tools.",
    )
    parser.set_defaults(func=run)


# --- the reference, in decimal arithmetic -------------------------------------------


def _ctx(extra: int = 0) -> decimal.Context:
    return decimal.Context(prec=DIGITS + extra, Emin=-10**6, Emax=10**6)


def _log1p(s: decimal.Decimal) -> decimal.Decimal:
    # ln(1 + s) loses the digits of a tiny s unless the precision grows with it.
    extra = 0 if s == 0 else max(0, -s.adjusted())
    ctx = _ctx(extra + 10)
    return ctx.ln(ctx.add(1, s))


class Reference:
    """One row's softmax quantities in the log1p form, to ``DIGITS`` digits."""

    def __init__(self, row, temperature: float = 1.0):
        ctx = _ctx(20)
        xs = [decimal.Decimal(float(v)) / decimal.Decimal(temperature) for v in row]
        self.k = max(range(len(xs)), key=xs.__getitem__)
        self.a = xs[self.k]
        self.e = [ctx.exp(x - self.a) for x in xs]
        self.s = ctx.add(sum(self.e[:self.k], decimal.Decimal(0)), sum(self.e[self.k + 1 :], decimal.Decimal(0)))
        self.L = _log1p(self.s)
        self.xs = xs

    def probs(self):
        return [e / (1 + self.s) for e in self.e]

    def loss(self, t: int):
        return (self.a - self.xs[t]) + self.L

    def grad(self, t: int):
        """p - onehot(t), with the target entry from the other classes' mass."""
        g = self.probs()
        others = 1 + self.s - self.e[t] if t != self.k else self.s
        g[t] = -others / (1 + self.s)
        return g


def _fmt(value, width: int = 12) -> str:
    v = float(value)
    if math.isnan(v) or math.isinf(v):
        text = str(v)
    elif v == 0 or 1e-4 <= abs(v) < 1e6:
        text = f"{v:.6g}"
    else:
        text = f"{v:.4e}"
    return text.rjust(width)


def _row(values, width: int = 12) -> str:
    return "".join(_fmt(v, width) for v in values)


def _heading(n: int, text: str) -> None:
    print()
    print(f"{n}. {text}")
    print("-" * (len(text) + 3))


def run(args: argparse.Namespace) -> int:
    from softmaxkit.frontend.losses import cross_entropy
    from softmaxkit.frontend.softmax import entropy, log_softmax, softmax
    from softmaxkit.tools import naive
    from softmaxkit.tools.cli import version

    x = np.array(BATCH)
    t = np.array(TARGETS)
    refs = [Reference(row) for row in BATCH]
    print(f"softmaxkit {version()}: exact, NaN-free softmax and cross-entropy")
    print(f"batch  logits {BATCH}")
    print(f"       targets {TARGETS}")

    _heading(1, "The textbook recipe: exp(x) / sum(exp(x))")
    p_naive = naive.softmax(x)
    print("probabilities")
    for i, row in enumerate(p_naive):
        print(f"  row {i} {_row(row)}")
    print(f"mean loss  -log(p[target]).mean()      {_fmt(naive.cross_entropy(x, t)).strip()}")
    print(f"gradient   (p - onehot) / N, row 1  {_row(naive.cross_entropy_grad(x, t)[1])}")
    print("exp(1000) overflows to inf, inf / inf is nan, and the nan spreads to the loss and gradient.")

    _heading(2, f"softmaxkit, beside a {DIGITS}-digit reference")
    p = softmax(x)
    loss, grad = cross_entropy(x, t, return_grad=True)
    print("probabilities".ljust(44) + "reference")
    for i, row in enumerate(p):
        print(f"  row {i} {_row(row, 11)}   {_row(refs[i].probs(), 11)}")
    ref_loss = sum(r.loss(ti) for r, ti in zip(refs, TARGETS)) / len(refs)
    print(f"mean loss  {float(loss):.10f}".ljust(44) + f"{float(ref_loss):.10f}")
    print("gradient of the mean loss".ljust(44) + "reference")
    for i, row in enumerate(grad):
        ref_row = [g / len(refs) for g in refs[i].grad(TARGETS[i])]
        print(f"  row {i} {_row(row, 11)}   {_row(ref_row, 11)}")
    print("Row 1's middle entry is e^-999 / 3, below the smallest float64: 0 is its correct rounding.")

    _heading(3, "A confident float32 row: logits [20, 0], target 0")
    row32 = np.array([[20.0, 0.0]], dtype=np.float32)
    ref32 = Reference(row32[0])
    p32 = naive.softmax(row32)
    naive_grad = p32[0, 0] - np.float32(1.0)
    _, g32 = cross_entropy(row32, np.array([0]), return_grad=True)
    print(f"naive       p_t - 1 in float32      {float(naive_grad):.8g}   (the gradient vanishes: softmax collapse)")
    print(f"softmaxkit  target gradient         {float(g32[0, 0]):.8g}")
    exact = float(ref32.grad(0)[0])
    nearest = "the nearest float32 to it" if np.float32(exact) == g32[0, 0] else "not its nearest float32"
    print(f"reference                           {exact:.10g}   (softmaxkit's value is {nearest})")
    ls32 = log_softmax(row32)[0, 0]
    print(f"log p_t: naive log(softmax) {float(np.log(p32[0, 0])):.8g}, softmaxkit {float(ls32):.8g}, reference {float(-ref32.L):.10g}")

    _heading(4, "Temperature: softmax(logits / T) of row 0")
    print("  T    " + "".join(h.rjust(12) for h in ("p0", "p1", "p2", "entropy")))
    for T in (0.1, 0.5, 1.0, 2.0, 10.0):
        pt = softmax(x[0], temperature=T)
        h = entropy(x[0] / T)
        print(f"  {T:<5g}{_row(pt)}{_fmt(h)}")
    print("Low T sharpens toward argmax, high T flattens toward uniform (entropy -> log 3 = 1.0986).")

    _torch_section(5)
    _next_steps(6)
    return 0


def _torch_section(n: int) -> None:
    """torch.nn.functional beside softmaxkit.torch where they differ, when torch is installed."""
    text = "PyTorch: torch.nn.functional (F) beside softmaxkit.torch (smk)"
    try:
        import torch
        import torch.nn.functional as F

        from softmaxkit.backends.torch import functional as smk
    except ImportError:
        _heading(n, text)
        print("skipped: PyTorch is not installed (pip install 'softmaxkit[torch]')")
        return
    _heading(n, text)
    inf = math.inf
    masked = torch.full((1, 3), -inf)
    batch = torch.tensor([[2.0, 1.0, 0.1], [3.0, 2.0, 1.0]])
    ignored = torch.tensor([-100, -100])
    with_inf = torch.tensor([[inf, 0.0, 1.0]])

    def confident_grad(loss_fn):
        row = torch.tensor([[20.0, 0.0]], requires_grad=True)
        loss_fn(row, torch.tensor([0])).backward()
        return row.grad[0]

    def show(t) -> str:
        values = t.reshape(-1).tolist()
        return f"[{', '.join(f'{v:.5g}' for v in values)}]" if len(values) > 1 else f"{values[0]:.5g}"

    cases = [
        ("fully masked row (all -inf), softmax", F.softmax(masked, -1), smk.softmax(masked, -1)),
        ("every target ignored, cross_entropy", F.cross_entropy(batch, ignored), smk.cross_entropy(batch, ignored)),
        ("+inf logit [inf, 0, 1], softmax", F.softmax(with_inf, -1), smk.softmax(with_inf, -1)),
        (
            "confident row [20, 0], target 0: gradient",
            confident_grad(F.cross_entropy),
            confident_grad(smk.cross_entropy),
        ),
    ]
    print(f"{'case':<44}{'F':<18}smk")
    for label, theirs, ours in cases:
        print(f"{label:<44}{show(theirs):<18}{show(ours)}")
    print("F's target gradient p_t - 1 rounds to 0 in float32 while the other class keeps 2.06e-09:")
    print("the row stops learning.  smk's is the exact -2.06e-09, and the gradient sums to 0.")


def _next_steps(n: int) -> None:
    _heading(n, "Where next")
    steps = [
        ("softmaxkit check FILE", "saved logits: hazards, what to do, --fail-on for CI"),
        ("softmaxkit.torch.watch(model)", "stops at the first NaN or inf; names the module where values grew"),
        ("softmaxkit.torch.monitor(...)", "softmax health over training; softmaxkit report RUN_DIR"),
        ("softmaxkit lint PATH", "softmax, log and cross-entropy hazards in source code"),
    ]
    for command, what in steps:
        print(f"  {command:<31} {what}")
    print("Documentation: docs/diagnostics.md, docs/monitor.md and docs/lint.md.")
