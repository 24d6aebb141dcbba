"""The machine and its BLAS: the header every benchmark report starts
with, thread limits for every pool, and a bare BLAS GEMM baseline.

Thread counts are set for every pool threadpoolctl sees (numpy's and
scipy's OpenBLAS, OpenMP) and for PyTorch.  OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE, if set, are read by OpenBLAS when it loads; the header
warns when they are.
"""
import ctypes
import os
import platform
import sys

import numpy as np

BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
DEFAULT_THREADS = 2


def cpu_model():
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _pool_label(path):
    p = (path or "").replace("\\", "/")
    for owner, dirs in (("numpy", ("numpy.libs", "numpy")),
                        ("scipy", ("scipy.libs", "scipy")),
                        ("torch", ("torch.libs", "torch")),
                        ("sklearn", ("scikit_learn.libs", "sklearn")),
                        ("jax", ("jaxlib.libs", "jaxlib"))):
        if any(f"/{d}/" in p for d in dirs):
            return owner
    return os.path.basename(p)


def blas_pools():
    """threadpoolctl's view of the thread pools loaded in this process, each
    labelled by the package that ships it (numpy, scipy, torch, ...)."""
    try:
        import threadpoolctl
    except ImportError:
        return None
    import scipy.linalg  # noqa: F401  -- loads scipy's OpenBLAS
    pools = []
    for p in threadpoolctl.threadpool_info():
        pools.append({"owner": _pool_label(p.get("filepath")),
                      "user_api": p.get("user_api"),
                      "internal_api": p.get("internal_api"),
                      "version": p.get("version"),
                      "architecture": p.get("architecture"),
                      "num_threads": p.get("num_threads"),
                      "file": os.path.basename(p.get("filepath") or "")})
    return pools


def machine_info(threads=None):
    """A dict naming the machine, the versions and every BLAS in use."""
    import scipy
    import fastnn
    info = {"cpu": cpu_model(), "cores": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "fastnn": fastnn.__version__,
            "threads": threads, "pools": blas_pools(),
            "fastnn_blas": dict(fastnn.blas_info()),
            "env": {k: os.environ.get(k) for k in BLAS_ENV}}
    return info


def header_lines(threads=None, info=None):
    """Human-readable lines for the top of a benchmark report."""
    info = info or machine_info(threads)
    lines = [f"CPU: {info['cpu']} ({info['cores']} logical cores); "
             f"benchmark threads: {info['threads']}",
             f"python {info['python']}, numpy {info['numpy']}, "
             f"scipy {info['scipy']}, fastnn {info['fastnn']}"]
    if info["pools"] is None:
        lines.append("thread pools: threadpoolctl not installed (pip install "
                      "threadpoolctl) -- BLAS kernels unknown")
    else:
        for p in info["pools"]:
            lines.append(f"pool {p['owner']:>6}: {p['user_api']}/"
                         f"{p['internal_api']} {p['version']} kernel="
                         f"{p['architecture']} threads={p['num_threads']} "
                         f"({p['file']})")
    fb = info["fastnn_blas"]
    lines.append(f"fastnn BLAS: source={fb.get('source')} api={fb.get('api')} "
                 f"threads={fb.get('num_threads')} small_mnk={fb.get('small_mnk')} "
                 f"symbols={fb.get('symbols')}")
    if fb.get("config"):
        lines.append(f"fastnn BLAS config: {fb['config']}")
    set_env = {k: v for k, v in info["env"].items() if v is not None}
    if set_env:
        lines.append("WARNING: " + " ".join(f"{k}={v}" for k, v in set_env.items())
                     + " is set: OpenBLAS is forced onto that kernel; for "
                     "numbers against NumPy run with `env -u OPENBLAS_CORETYPE "
                     "-u OPENBLAS_L2_SIZE ...`")
    else:
        lines.append("OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE: unset (OpenBLAS "
                     "picks its kernel itself)")
    return lines


def limit_threads(n):
    """Set n threads on every pool threadpoolctl sees (and torch, if
    loaded).  Returns the threadpoolctl controller (keep it alive) or None."""
    ctl = None
    try:
        import threadpoolctl
        import scipy.linalg  # noqa: F401
        ctl = threadpoolctl.threadpool_limits(n)
    except ImportError:
        try:
            import fastnn
            fastnn.set_num_threads(n)
        except Exception:
            pass
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(n)
    return ctl


# ---- a bare BLAS gemm: numpy's own OpenBLAS called through ctypes -----------

_CBLAS_ROW_MAJOR, _CBLAS_NOTRANS, _CBLAS_TRANS = 101, 111, 112


class BareGemm:
    """Row-major cblas_?gemm of the BLAS numpy itself loaded, called through
    ctypes with no checks: the baseline "what the BLAS does for this shape".
    Raises RuntimeError if numpy's BLAS exports no cblas gemm."""

    _CANDIDATES = (("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", True),
                   ("cblas_sgemm64_", "cblas_dgemm64_", True),
                   ("scipy_cblas_sgemm", "scipy_cblas_dgemm", False),
                   ("cblas_sgemm", "cblas_dgemm", False))

    def __init__(self):
        try:
            import numpy._core._multiarray_umath as mu
        except ImportError:  # numpy < 2
            import numpy.core._multiarray_umath as mu
        lib = ctypes.CDLL(mu.__file__)
        for s, d, ilp64 in self._CANDIDATES:
            try:
                fs, fd = getattr(lib, s), getattr(lib, d)
            except AttributeError:
                continue
            I = ctypes.c_int64 if ilp64 else ctypes.c_int
            P = ctypes.c_void_p
            for f, R in ((fs, ctypes.c_float), (fd, ctypes.c_double)):
                f.restype = None
                f.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, I, I, I,
                              R, P, I, P, I, R, P, I]
            self.funcs = {np.dtype(np.float32): fs, np.dtype(np.float64): fd}
            self.symbols = (s, d)
            return
        raise RuntimeError("numpy's BLAS exports no cblas gemm symbol")

    def bind(self, a, b, c, alpha=1.0, beta=0.0, trans_a=False, trans_b=False):
        """A no-argument callable computing c := alpha op(a) op(b) + beta c
        (C-contiguous arrays of one dtype; shapes checked once, here)."""
        m, k = a.shape[::-1] if trans_a else a.shape
        k2, n = b.shape[::-1] if trans_b else b.shape
        if k != k2 or c.shape != (m, n):
            raise ValueError(f"shapes do not match: {a.shape} {b.shape} {c.shape}")
        for x in (a, b, c):
            if x.dtype != c.dtype or not x.flags.c_contiguous:
                raise ValueError("a, b, c must be C-contiguous of one dtype")
        f = self.funcs[c.dtype]
        ta = _CBLAS_TRANS if trans_a else _CBLAS_NOTRANS
        tb = _CBLAS_TRANS if trans_b else _CBLAS_NOTRANS
        args = (_CBLAS_ROW_MAJOR, ta, tb, m, n, k, alpha, a.ctypes.data,
                a.shape[1], b.ctypes.data, b.shape[1], beta, c.ctypes.data,
                c.shape[1])
        keep = (a, b, c)

        def call(f=f, args=args, keep=keep):
            f(*args)
        return call
