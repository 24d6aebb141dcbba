# _blas.pyx -- finds the BLAS to run fastnn's GEMMs on and wraps the row-major
# gemm of csrc/gemm.c.
#
# Preferred: the very BLAS numpy's own extension module calls, found at run
# time by looking its symbols up through numpy's loaded library (dlsym on
# that handle searches its dependencies).  Then numpy's matmul and fastnn's
# steps share one BLAS thread pool; two pools (numpy's and scipy's bundled
# OpenBLAS) spin against each other on a small machine.  Fallback:
# scipy.linalg.cython_blas (Fortran convention), looked up only when used:
# importing scipy.linalg costs more than the rest of `import fastnn`.
import ctypes
import os

from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer
from libc.stdint cimport int64_t

from fastnn._kernels cimport (
    fnn_blas, fnn_gemm_f32, fnn_gemm_f64,
    FNN_BLAS_NONE, FNN_BLAS_CBLAS64, FNN_BLAS_CBLAS32, FNN_BLAS_F77)

ctypedef fused floating:
    float
    double

# m*n*k at or below which the built-in loops beat a BLAS call (measured in
# bench/bench_gemm.py: an OpenBLAS call costs ~0.2 us before any arithmetic).
DEFAULT_SMALL_MNK = 4096

cdef fnn_blas _handle
_handle.api = FNN_BLAS_NONE
_handle.sgemm = NULL
_handle.dgemm = NULL
_handle.small_mnk = DEFAULT_SMALL_MNK
_handle.chunk_mnk = 0

_info = {}

# (sgemm, dgemm, api, set_num_threads, get_num_threads, get_config)
_CANDIDATES = (
    ("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", FNN_BLAS_CBLAS64,
     "scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_",
     "scipy_openblas_get_config64_"),
    ("cblas_sgemm64_", "cblas_dgemm64_", FNN_BLAS_CBLAS64,
     "openblas_set_num_threads64_", "openblas_get_num_threads64_",
     "openblas_get_config64_"),
    ("scipy_cblas_sgemm", "scipy_cblas_dgemm", FNN_BLAS_CBLAS32,
     "scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads",
     "scipy_openblas_get_config"),
    ("cblas_sgemm", "cblas_dgemm", FNN_BLAS_CBLAS32,
     "openblas_set_num_threads", "openblas_get_num_threads",
     "openblas_get_config"),
)


cdef const fnn_blas *blas_handle() noexcept nogil:
    return &_handle


cdef void *_capsule_pointer(object capi, str name) except NULL:
    cap = capi[name]
    return PyCapsule_GetPointer(cap, PyCapsule_GetName(cap))


def _scipy_f77_gemm():
    """The (sgemm, dgemm) addresses of scipy.linalg.cython_blas."""
    from scipy.linalg import cython_blas
    capi = cython_blas.__pyx_capi__
    return (<size_t>_capsule_pointer(capi, "sgemm"),
            <size_t>_capsule_pointer(capi, "dgemm"))


def _numpy_extension_path():
    try:
        import numpy._core._multiarray_umath as mu
    except ImportError:                      # numpy < 2
        import numpy.core._multiarray_umath as mu
    return mu.__file__


def _addr(lib, name):
    try:
        return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
    except AttributeError:
        return None


def _find_numpy_blas():
    """Return the BLAS numpy calls, as a dict, or None if not found."""
    try:
        path = _numpy_extension_path()
        lib = ctypes.CDLL(path)
    except (ImportError, OSError, AttributeError):
        return None
    for s, d, api, setn, getn, conf in _CANDIDATES:
        sa, da = _addr(lib, s), _addr(lib, d)
        if sa and da:
            info = {"source": "numpy", "api": int(api), "symbols": (s, d),
                    "sgemm": sa, "dgemm": da, "lib": lib,
                    "set_num_threads": None, "get_num_threads": None,
                    "config": None}
            f = getattr(lib, setn, None) if setn else None
            if f is not None:
                f.argtypes = [ctypes.c_int]
                f.restype = None
                info["set_num_threads"] = f
            f = getattr(lib, getn, None) if getn else None
            if f is not None:
                f.restype = ctypes.c_int
                info["get_num_threads"] = f
            f = getattr(lib, conf, None) if conf else None
            if f is not None:
                f.restype = ctypes.c_char_p
                info["config"] = f().decode(errors="replace")
            return info
    return None


def use_blas(which="auto"):
    """Select the BLAS fastnn's GEMMs run on.

    which: "auto" (numpy's own BLAS if found, else scipy's), "numpy",
    "scipy" (scipy.linalg.cython_blas), or "none" (built-in loops only; slow,
    for tests).  Returns blas_info().  Not thread-safe: call it before
    training, not during.
    """
    global _info
    if which not in ("auto", "numpy", "scipy", "none"):
        raise ValueError(f"use_blas: unknown BLAS {which!r}; expected 'auto', "
                         "'numpy', 'scipy' or 'none'")
    info = None
    if which in ("auto", "numpy"):
        info = _find_numpy_blas()
        if info is None and which == "numpy":
            raise RuntimeError("use_blas('numpy'): no gemm found in the BLAS "
                               "numpy is linked with")
    if info is not None:
        _handle.api = info["api"]
        _handle.sgemm = <void *><size_t>info["sgemm"]
        _handle.dgemm = <void *><size_t>info["dgemm"]
    elif which == "none":
        info = {"source": "none", "api": int(FNN_BLAS_NONE)}
        _handle.api = FNN_BLAS_NONE
        _handle.sgemm = NULL
        _handle.dgemm = NULL
    else:
        info = {"source": "scipy", "api": int(FNN_BLAS_F77),
                "symbols": ("scipy.linalg.cython_blas.sgemm",
                            "scipy.linalg.cython_blas.dgemm"),
                "config": None, "set_num_threads": None,
                "get_num_threads": None}
        sa, da = _scipy_f77_gemm()
        _handle.api = FNN_BLAS_F77
        _handle.sgemm = <void *><size_t>sa
        _handle.dgemm = <void *><size_t>da
    _info = info
    return blas_info()


def blas_info():
    """Which BLAS fastnn uses: source ('numpy', 'scipy', 'none'), calling
    convention, symbol names, OpenBLAS configuration string if known, the
    BLAS thread count if it can be read, and the small-GEMM threshold."""
    api_names = {int(FNN_BLAS_NONE): "none", int(FNN_BLAS_CBLAS64): "cblas-ilp64",
                 int(FNN_BLAS_CBLAS32): "cblas-lp64", int(FNN_BLAS_F77): "f77-lp64"}
    out = {"source": _info.get("source"), "api": api_names[_info.get("api", 0)],
           "symbols": _info.get("symbols"), "config": _info.get("config"),
           "small_mnk": int(_handle.small_mnk)}
    getn = _info.get("get_num_threads")
    out["num_threads"] = int(getn()) if getn is not None else None
    return out


def set_num_threads(int n):
    """Set the thread count of numpy's BLAS when fastnn runs on it and it
    exposes the OpenBLAS call (else raise).  threadpoolctl does the same
    for every BLAS in the process."""
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    f = _info.get("set_num_threads")
    if f is None:
        raise RuntimeError("set_num_threads: the BLAS in use exposes no "
                           "thread control; use threadpoolctl")
    f(n)


def _swap_num_threads(int n):
    """Set numpy's BLAS to n threads where fastnn can (as set_num_threads);
    return the previous count, or None (nothing changed) where it cannot.
    For fastnn's own worker threads, which each call the BLAS: one BLAS
    thread each keeps them from queueing for the BLAS's pool."""
    getn, setn = _info.get("get_num_threads"), _info.get("set_num_threads")
    if getn is None or setn is None:
        return None
    old = int(getn())
    if old != n:
        setn(n)
    return old


def set_small_gemm_threshold(int64_t mnk):
    """Products with m*n*k <= mnk run on the built-in loops instead of the
    BLAS (0: always the BLAS).  Returns the previous value."""
    if mnk < 0:
        raise ValueError(f"small-gemm threshold must be >= 0, got {mnk}")
    old = _handle.small_mnk
    _handle.small_mnk = mnk
    return old


def _op_shape(arr, int trans):
    """Shape of op(arr): arr.T if trans."""
    r, c = arr.shape[0], arr.shape[1]
    return (c, r) if trans else (r, c)


def gemm(const floating[:, :] a, const floating[:, :] b, floating[:, :] c,
         double alpha=1.0, double beta=0.0, bint trans_a=False,
         bint trans_b=False):
    """c := alpha op(a) op(b) + beta c, row-major, in place on c.

    a, b, c: 2-D arrays of one dtype (float32/float64) whose rows are
    contiguous (row strides may be padded, e.g. big[:, :n]).  op(x) is x.T when trans_x.
    Runs on the BLAS chosen by use_blas() without the GIL; beta == 0 never
    reads c.
    """
    cdef int64_t m, n, k, k2
    m, k = _op_shape(a, trans_a)
    k2, n = _op_shape(b, trans_b)
    if k != k2 or c.shape[0] != m or c.shape[1] != n:
        raise ValueError(f"gemm: shapes do not match: op(a) {(m, k)}, "
                         f"op(b) {(k2, n)}, c {(c.shape[0], c.shape[1])}")
    from fastnn._kernels import row_stride
    cdef int64_t lda = row_stride(a.shape[0], a.shape[1], a.strides[0], a.strides[1], a.itemsize)
    cdef int64_t ldb = row_stride(b.shape[0], b.shape[1], b.strides[0], b.strides[1], b.itemsize)
    cdef int64_t ldc = row_stride(c.shape[0], c.shape[1], c.strides[0], c.strides[1], c.itemsize)
    if _handle.api in (FNN_BLAS_F77, FNN_BLAS_CBLAS32) and max(m, n, k, lda, ldb, ldc) >= 2 ** 31:
        raise ValueError("gemm: sizes of 2**31 or more need a 64-bit-integer BLAS")
    if m == 0 or n == 0:
        return
    with nogil:
        if floating is float:
            fnn_gemm_f32(&_handle, trans_a, trans_b, m, n, k, <float>alpha,
                         &a[0, 0] if a.shape[0] and a.shape[1] else NULL, lda,
                         &b[0, 0] if b.shape[0] and b.shape[1] else NULL, ldb,
                         <float>beta, &c[0, 0], ldc)
        else:
            fnn_gemm_f64(&_handle, trans_a, trans_b, m, n, k, alpha,
                         &a[0, 0] if a.shape[0] and a.shape[1] else NULL, lda,
                         &b[0, 0] if b.shape[0] and b.shape[1] else NULL, ldb,
                         beta, &c[0, 0], ldc)


use_blas(os.environ.get("FASTNN_BLAS", "auto"))
