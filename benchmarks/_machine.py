"""The machine a benchmark ran on, for the line beside its table."""

import os
import platform

_ISA = ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma", "f16c")


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
