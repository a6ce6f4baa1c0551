"""Every Triton kernel of softmaxkit compiles for a real GPU target (sm_90),
and its PTX uses only the accurate forms of exp, log and division.

The other Triton tests run the kernels in Triton's interpreter, which accepts
Python that the compiler rejects (a plain module-level float read inside a
kernel is one: the compiler wants ``tl.constexpr`` globals).  Here a fresh
process without ``TRITON_INTERPRET`` compiles each kernel, for each dtype
and compile-time variant the launchers use, down to a cubin with the
``ptxas`` that the triton wheel ships: no GPU is needed.  A fresh cache
directory keeps an earlier compilation (made, say, with
``TRITON_ALLOW_NON_CONSTEXPR_GLOBALS=1``) from standing in for this one.

The kernels compute exp and log from basic operations and divide with
``div_rn``; the PTX must hold no ``ex2.approx``, ``lg2.approx`` or
``div.full`` (nor ``div.approx`` or ``rcp.approx``), whose errors grow with
the argument or reach 2 ULP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

_SKIP = 77

_SCRIPT = r"""
import json, os, re, sys, warnings
warnings.filterwarnings("ignore")
import triton
try:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    tool = triton.knobs.nvidia.ptxas
    if tool is None or not os.path.exists(tool.path):
        raise FileNotFoundError("ptxas")
except Exception as exc:
    print(json.dumps({"skip": f"no sm_90 compiler: {exc!r}"}))
    sys.exit(SKIP)
from softmaxkit.kernels.triton import cross_entropy as ce
from softmaxkit.kernels.triton import softmax as sm

TARGET = GPUTarget("cuda", 90, 32)
INACCURATE = re.compile(r"\b(ex2\.approx|lg2\.approx|div\.full|div\.approx|rcp\.approx)")


def softmax_variant(dt, block, one_pass, mode, halve, tempered):
    sig = {"x_ptr": "*" + dt, "out_ptr": "*" + dt, "g_ptr": "*" + dt, "t_hi": "fp32", "t_lo": "fp32",
           "rescale_at": "fp32", "n": "i32", "inner": "i32"}
    const = {"BLOCK": block, "ONE_PASS": one_pass, "MODE": mode, "B_LOG2": block.bit_length() - 1,
             "HALVE": halve, "TEMPERED": tempered}
    return sm._softmax_kernel, sig, const


def vjp_variant(dt, block, one_pass, log, tempered):
    sig = {"y_ptr": "*" + dt, "g_ptr": "*" + dt, "out_ptr": "*" + dt, "t": "fp32", "n": "i32", "inner": "i32"}
    const = {"BLOCK": block, "ONE_PASS": one_pass, "LOG": log, "B_LOG2": block.bit_length() - 1,
             "TEMPERED": tempered}
    return sm._softmax_vjp_kernel, sig, const


def ce_variant(dt, block, one_pass, probs=False, w=False, smooth=False, z=False, grad=False, grad_t=False,
               scale=False, cap=False):
    sig = {"X": "*" + dt, "T": ("*" + dt) if probs else "*i64", "W": "*fp32", "LOSS": "*fp32", "G": "*" + dt,
           "DQ": "*" + dt, "SCALE": "*fp32", "DIV": "*fp32", "ignore_index": "i32", "eps": "fp32", "z": "fp32",
           "cap_hi": "fp32", "cap_lo": "fp32", "rescale_at": "fp32", "n": "i32", "inner": "i32"}
    const = {"PROBS": probs, "HAS_W": w, "SMOOTH": smooth, "HAS_Z": z, "GRAD": grad, "GRAD_T": grad_t,
             "HAS_SCALE": scale, "SOFTCAP": cap, "BLOCK": block, "ONE_PASS": one_pass,
             "B_LOG2": block.bit_length() - 1}
    return ce._ce_kernel, sig, const


# each kernel in each dtype, one-pass and online, and each mode and option
VARIANTS = [
    softmax_variant("fp32", 256, True, 1, False, False),
    softmax_variant("bf16", 4096, False, 0, True, True),
    softmax_variant("fp16", 1024, True, 2, False, False),
    softmax_variant("fp32", 4096, False, 3, False, True),
    vjp_variant("fp32", 4096, False, True, True),
    vjp_variant("bf16", 256, True, False, False),
    vjp_variant("fp16", 4096, False, False, True),
    ce_variant("fp32", 1024, True),
    ce_variant("bf16", 4096, False, w=True, smooth=True, z=True, grad=True),
    ce_variant("fp16", 4096, False, probs=True, w=True, smooth=True, z=True, grad=True, grad_t=True, scale=True),
    ce_variant("fp32", 64, True, probs=True, grad=True, grad_t=True),
    ce_variant("fp16", 256, True, grad=True, scale=True),
    ce_variant("fp32", 4096, False, grad=True, cap=True),
    ce_variant("bf16", 256, True, w=True, smooth=True, grad=True, scale=True, cap=True),
]

results = []
for kernel, sig, const in VARIANTS:
    name = f"{kernel.fn.__name__} {sig.get('X', sig.get('x_ptr', sig.get('y_ptr')))} {const}"
    try:
        compiled = triton.compile(ASTSource(kernel, signature=sig, constexprs=const), target=TARGET)
    except Exception as exc:
        cause = exc.__cause__
        while cause is not None and cause.__cause__ is not None:
            cause = cause.__cause__
        results.append({"variant": name, "error": f"{exc!s}"[-600:] + f" {cause!r}"[-600:]})
        continue
    ptx = compiled.asm["ptx"]
    results.append({"variant": name, "inaccurate": sorted(set(INACCURATE.findall(ptx))),
                    "cubin": len(compiled.asm.get("cubin", b""))})
print(json.dumps({"results": results}))
""".replace("SKIP", str(_SKIP))


def test_every_kernel_compiles_for_sm90_with_accurate_exp_log_and_division(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRITON_")}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=os.path.dirname(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        ),
    )
    report = (
        json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
    )
    if done.returncode == _SKIP:
        pytest.skip(report.get("skip", "no sm_90 compiler"))
    assert done.returncode == 0, done.stderr[-3000:]
    results = report["results"]
    failed = [r for r in results if "error" in r]
    assert not failed, "\n".join(f"{r['variant']}: {r['error']}" for r in failed)
    inaccurate = [r for r in results if r["inaccurate"]]
    assert not inaccurate, "\n".join(
        f"{r['variant']}: {r['inaccurate']}" for r in inaccurate
    )
    assert all(r["cubin"] > 0 for r in results)
    assert len(results) == 14
