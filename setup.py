"""Build of the optional native kernels; the metadata lives in pyproject.toml.

The extension needs only a C compiler and the Python headers.  It is optional:
where it cannot be compiled the install still succeeds and softmaxkit uses its
generic NumPy path.  No -march flags: every instruction set is compiled into
the one binary and chosen at import (see softmaxkit/kernels/csrc/isa_*.c).
"""

import os
import shlex

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CSRC = "src/softmaxkit/kernels/csrc/"
SOURCES = [
    CSRC + name
    for name in (
        "pymodule.c",
        "outcache.c",
        "entry.c",
        "pool.c",
        "rows.c",
        "ce.c",
        "half.c",
        "isa_baseline.c",
        "isa_avx2.c",
        "isa_avx512.c",
        "attention.c",
        "attention_baseline.c",
        "attention_avx2.c",
        "attention_avx512.c",
    )
]
HEADERS = [
    CSRC + name
    for name in (
        "api.h",
        "outcache.h",
        "job.h",
        "pool.h",
        "half.h",
        "convert.h",
        "range_kernels.h",
        "compensated.h",
        "simd.h",
        "family.h",
        "isa.h",
        "attention.h",
        "attention_body.h",
    )
]

# Fused multiply-adds are written out where the numerics want them; letting
# the compiler contract a*b + c elsewhere would change results between
# instruction sets and break the error-free transformations.
UNIX_FLAGS = ["-O3", "-std=gnu11", "-ffp-contract=off", "-fno-math-errno", "-pthread"]
# Flags compiled and linked after those (so that an -O level here wins):
# .ci/sanitize builds a sanitizer copy of the extension with them.
EXTRA_FLAGS = shlex.split(os.environ.get("SOFTMAXKIT_NATIVE_FLAGS", ""))


class BuildExt(build_ext):
    def build_extensions(self):
        if self.compiler.compiler_type == "unix":
            for ext in self.extensions:
                ext.extra_compile_args = UNIX_FLAGS + list(ext.extra_compile_args) + EXTRA_FLAGS
                ext.extra_link_args = ["-pthread", "-lm"] + list(ext.extra_link_args) + EXTRA_FLAGS
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "softmaxkit.kernels._kernels",
            sources=SOURCES,
            depends=HEADERS,
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
