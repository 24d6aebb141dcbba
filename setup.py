"""Build fastnn's extensions: csrc/ (C99 kernels) + Cython wrappers.

FASTNN_DEBUG=1 builds the debug variant: -O0 -g and Cython bounds checks.
CFLAGS/LDFLAGS from the environment are honoured (sanitizer builds, see
.ci/run).  No -march=native: CPU-specific code goes through target_clones.
"""
import glob
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTNN_DEBUG", "") not in ("", "0")

CSRC = ["csrc/act.c", "csrc/loss.c", "csrc/optim.c", "csrc/gemm.c",
        "csrc/net.c", "csrc/train.c", "csrc/pool.c"]
# -fno-math-errno: sqrt and friends need not set errno (so they vectorize).
# -fno-trapping-math: FP operations may be computed speculatively, which lets
#   GCC turn the kernels' selects (z < 0 ? e*s : s) into blends and vectorize
#   them on AVX2 and SSE2 too (AVX-512 manages with masks either way).  Results
#   are unchanged: no reassociation, no finite-math assumptions (not -ffast-math).
# -fopenmp-simd: honour "omp simd" (vectorization hints) without OpenMP threads.
# -fno-wrapv: undoes the -fwrapv that CPython's own CFLAGS hand every extension
#   (CPython relies on wrapping signed overflow; neither our C nor Cython's
#   does, and the UBSan suite checks ours).  With wrapping defined, GCC keeps
#   the int64 index arithmetic exact instead of simplifying it: a 2 -> 4 -> 1
#   fit step took 6% more instructions and time (C harness, 1021 against 963).
CFLAGS = ["-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-DFNN_OMP_SIMD",
          "-fno-wrapv", "-Wno-unused-function"]
CFLAGS += ["-O0", "-g"] if DEBUG else ["-O3"]
MACROS = [("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")]


HEADERS = sorted(glob.glob("csrc/*.h"))     # kernel bodies live in headers


def ext(name, sources):
    return Extension(name, sources, include_dirs=["csrc", np.get_include()],
                     extra_compile_args=CFLAGS + ["-pthread"],
                     extra_link_args=["-pthread"], define_macros=MACROS,
                     depends=HEADERS)


extensions = [
    ext("fastnn._blas", ["fastnn/_blas.pyx", "csrc/gemm.c"]),
    ext("fastnn._kernels", ["fastnn/_kernels.pyx"] + CSRC),
    ext("fastnn._train", ["fastnn/_train.pyx"] + CSRC),
]

directives = {"language_level": 3, "boundscheck": DEBUG, "wraparound": False,
              "initializedcheck": DEBUG, "cdivision": True,
              "embedsignature": True}

setup(ext_modules=cythonize(extensions, compiler_directives=directives,
                            force=DEBUG))
