"""Shared helpers for the kernel tests: dtypes and tolerances, a seeded rng,
NaN-filled outputs, padded-stride views, ulp errors, and a ctypes door to
the C entry points (to drive row strides the wrappers cannot express).

Tolerances (see RTOL): a native kernel is compared with fastnn.reference
evaluated in float64 on the *same* (already rounded) inputs, so the only
differences are the kernel's own rounding errors.
  float64: rtol 1e-12  -- a few hundred ulp of 2.2e-16, room for sums of a
           few dozen terms in a different order, far below any formula bug.
  float32: rtol 1e-5   -- ~80 ulp of 1.2e-7, the same reasoning one level up.
atol is always rtol times a magnitude taken from the inputs (max |ref| unless
the test passes a better one), never a fixed number: tiny results are then
judged on the scale of the computation that produced them.  Accuracy of
the vectorized math (vmath.h) is measured separately in ulps.
"""
import ctypes
import os
import signal
import threading
import time
import zlib

import numpy as np
import pytest

from fastnn.reference import ELEMENTWISE  # noqa: F401  (re-exported to the tests)

try:
    from hypothesis import HealthCheck, settings
    settings.register_profile(
        "fastnn", max_examples=60, deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("fastnn")
except ImportError:                                   # pragma: no cover
    pass

DTYPES = (np.float32, np.float64)
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
EPS = {np.float32: float(np.finfo(np.float32).eps),
       np.float64: float(np.finfo(np.float64).eps)}
# sizes around the SIMD widths (4/8/16 lanes) and their unrolls
SIZES = (1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 49)
ROWS = (1, 3, 8, 17)
ALPHA = {"leaky_relu": 0.1, "elu": 1.3}   # slope / scale used in the tests


def dtype_param(dt):
    return pytest.param(dt, id=np.dtype(dt).name)


DTYPE_PARAMS = [dtype_param(dt) for dt in DTYPES]


def shape_params(rows=ROWS, cols=SIZES):
    return [pytest.param(m, n, id=f"m{m}-n{n}") for m in rows for n in cols]


def key(dtype):
    """The dict key of a dtype (np.float32 / np.float64)."""
    return np.dtype(dtype).type


def f32round(x, dtype):
    """A scalar hyper-parameter as the kernel of that dtype sees it."""
    return float(np.asarray(x, dtype=dtype))


@pytest.fixture
def rng(request):
    """A generator seeded by the test's id: reproducible, different per case."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def nan_like(shape_or_array, dtype=None):
    """A C-contiguous output of that shape/dtype, every element NaN."""
    if isinstance(shape_or_array, np.ndarray):
        shape = shape_or_array.shape
        dtype = shape_or_array.dtype if dtype is None else dtype
    else:
        shape = shape_or_array
    return np.full(shape, np.nan, dtype=dtype)


def padded(a, pad=5, fill=np.nan):
    """(view, big): a copy of the 2-D array a as big[:, :n] of a wider C array
    big (m, n + pad), so the row stride ld = n + pad > n.  The pad columns hold
    `fill` (NaN: a kernel that reads them, e.g. by using n as the stride,
    gets NaN into its results)."""
    a = np.asarray(a)
    m, n = a.shape
    big = np.full((m, n + pad), fill, dtype=a.dtype)
    big[:, :n] = a
    view = big[:, :n]
    assert view.strides[0] == (n + pad) * a.itemsize
    return view, big


def padded_empty(shape, dtype, pad=5, fill=np.nan):
    """(view, big): an output of `shape` inside a wider array full of fill."""
    return padded(np.full(shape, fill, dtype=dtype), pad, fill)


def assert_pad_untouched(big, n, fill=np.nan):
    """The columns past n of a padded array still hold fill (bit for bit)."""
    pad = big[:, n:]
    if np.isnan(fill):
        assert np.isnan(pad).all(), "kernel wrote into the row padding"
    else:
        assert (pad == fill).all(), "kernel wrote into the row padding"


def assert_close(got, ref, dtype, scale=None, rtol=None, err_msg=""):
    """got ~ ref with the dtype's rtol and atol = rtol * scale (scale: max
    |ref| over finite entries by default, at least tiny).  NaN must match
    NaN and infinities must match exactly (assert_allclose's rules)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    rtol = RTOL[key(dtype)] if rtol is None else rtol
    if scale is None:
        fin = np.abs(ref[np.isfinite(ref)])
        scale = float(fin.max()) if fin.size else 1.0
    np.testing.assert_allclose(got, ref, rtol=rtol,
                               atol=rtol * max(scale, 1e-300),
                               equal_nan=True, err_msg=err_msg)


def ulp_error(got, ref_hi, dtype):
    """|got - ref| in units of the last place of ref rounded to dtype, with
    ref_hi a longdouble (x86: 64-bit mantissa) value of the true result.
    Denormal results are measured in the denormal spacing."""
    dt = np.dtype(dtype).type
    ref_hi = np.asarray(ref_hi, dtype=np.longdouble)
    ref = ref_hi.astype(dt)
    spacing = np.spacing(np.abs(ref)).astype(np.longdouble)
    return np.abs(np.asarray(got, dtype=np.longdouble) - ref_hi) / spacing


def flush_hi(ref_hi, dtype):
    """The true values as fastnn's kernels return them: results that would
    be subnormal in dtype flush to exactly 0 (csrc/vmath.h: no subnormal
    slow path)."""
    ref_hi = np.asarray(ref_hi, dtype=np.longdouble)
    tiny = np.longdouble(np.finfo(dtype).tiny)
    return np.where(np.abs(ref_hi) < tiny, np.longdouble(0), ref_hi)


def sigmoid_hi(x):
    """sigmoid in long double."""
    x = np.asarray(x, dtype=np.longdouble)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


# ---- the C entry points, for strides the Cython wrappers do not pass -------

class CApi:
    """ctypes bindings of a few fnn_* kernels exported by fastnn._kernels,
    called with explicit row strides (ld > n)."""

    def __init__(self):
        import fastnn._kernels as K
        self.lib = ctypes.CDLL(K.__file__)
        i64, i32, dbl = ctypes.c_int64, ctypes.c_int, ctypes.c_double
        P = ctypes.c_void_p
        for suf, real in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
            self._bind(f"fnn_bias_act_forward_{suf}", None,
                       [i64, i64, i32, real, P, P, i64])
            self._bind(f"fnn_bias_act_backward_{suf}", None,
                       [i64, i64, i32, real, P, i64, P, i64, P, i64, P])
            self._bind(f"fnn_maxout_forward_{suf}", None,
                       [i64, i64, i64, P, P, i64, P, i64, P])
            self._bind(f"fnn_maxout_backward_{suf}", None,
                       [i64, i64, i64, P, P, i64, P, i64, P])
            self._bind(f"fnn_softmax_forward_{suf}", None, [i64, i64, P, P, i64])
            self._bind(f"fnn_loss_grad_{suf}", dbl,
                       [i64, i64, i32, dbl, dbl, P, i64, P, i64, P, P, i64, P])
            self._bind(f"fnn_all_finite_{suf}", i32, [i64, i64, P, i64])

    def _bind(self, name, restype, argtypes):
        f = getattr(self.lib, name)
        f.restype = restype
        f.argtypes = argtypes

    def __call__(self, name, dtype, *args):
        suf = "f32" if np.dtype(dtype) == np.float32 else "f64"
        conv = [a.ctypes.data if isinstance(a, np.ndarray) else a for a in args]
        return getattr(self.lib, f"fnn_{name}_{suf}")(*conv)


def ld_of(a):
    """Row stride of a 2-D array in elements."""
    return a.strides[0] // a.itemsize


@pytest.fixture(scope="session")
def capi():
    return CApi()


@pytest.fixture
def sigint_handler():
    """Python's own SIGINT handler (KeyboardInterrupt) for the test: a
    process started in the background by a non-interactive shell
    (`nohup cmd &`) inherits SIGINT ignored, Python then installs no handler,
    and both os.kill(SIGINT) and _thread.interrupt_main() do nothing."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


@pytest.fixture
def ctrl_c(sigint_handler):
    """ctrl_c(call, after=0.3, when=None): run call() while a timer sends
    SIGINT to this process after `after` seconds (counted from the moment
    when() first returns true, if given: polled every millisecond, for at
    most 60 s, so that a slow start on a loaded machine does not turn into
    an interrupt before the work began); call must raise KeyboardInterrupt.
    Returns the seconds from the signal to the exception."""
    def run(call, after=0.3, when=None):
        sent = []
        stop = threading.Event()

        def interrupt():
            if when is not None:
                deadline = time.perf_counter() + 60
                while not when() and time.perf_counter() < deadline:
                    if stop.wait(0.001):
                        return
            if stop.wait(after):
                return
            sent.append(time.perf_counter())
            os.kill(os.getpid(), signal.SIGINT)

        timer = threading.Thread(target=interrupt, daemon=True)
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                call()
            return time.perf_counter() - sent[0]
        finally:
            stop.set()
            timer.join()
    return run
