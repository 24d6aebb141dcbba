"""Tier 2 for csrc/gemm.c through fastnn._blas.gemm: C := alpha op(A) op(B)
+ beta C against fastnn.reference.gemm, both dtypes, all four transpose
combinations, on every backend (numpy's BLAS, scipy's Fortran BLAS, none =
built-in loops), below and above the small-gemm threshold, with 1 and 2
BLAS threads.

Tolerance: the classical forward error bound of a dot product of length k,
|C - C_ref| <= gamma * (|alpha| |op(A)| |op(B)| + |beta| |C0|) elementwise
with gamma = 2 (k + 2) eps (a factor 4 over the k u bound, for FMA-free
and blocked summation orders alike).  It depends on nothing but the data,
so a failure is a wrong product, not noise.
"""
import ctypes

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from fastnn import _blas as B
from fastnn import reference as R
from conftest import DTYPE_PARAMS, EPS, assert_pad_untouched, key, padded

TRANS = [pytest.param(ta, tb, id=f"{'T' if ta else 'N'}{'T' if tb else 'N'}")
         for ta in (False, True) for tb in (False, True)]
BACKENDS = [pytest.param(b, id=b) for b in ("numpy", "scipy", "none")]
# (m, n, k): sizes 1, around SIMD widths, below and above m*n*k = 4096
SHAPES = [pytest.param(*s, id=f"m{s[0]}-n{s[1]}-k{s[2]}") for s in (
    (1, 1, 1), (1, 7, 3), (3, 1, 9), (7, 8, 9), (8, 16, 17), (15, 17, 16),
    (31, 33, 3), (17, 49, 33), (33, 31, 49), (64, 65, 70), (1, 129, 40))]


@pytest.fixture
def backend(request):
    """use_blas(param) for the test, 'auto' and the default threshold after."""
    old = B.set_small_gemm_threshold(B.DEFAULT_SMALL_MNK)
    try:
        info = B.use_blas(request.param)
        assert info["source"] == request.param
        yield request.param
    finally:
        B.use_blas("auto")
        B.set_small_gemm_threshold(old)


@pytest.fixture
def threshold():
    """Set the small-gemm threshold inside a test; restored afterwards."""
    old = B.set_small_gemm_threshold(B.DEFAULT_SMALL_MNK)
    try:
        yield B.set_small_gemm_threshold
    finally:
        B.set_small_gemm_threshold(old)


def operands(rng, dtype, m, n, k, ta, tb):
    a = rng.normal(size=(k, m) if ta else (m, k)).astype(dtype)
    b = rng.normal(size=(n, k) if tb else (k, n)).astype(dtype)
    return a, b


def assert_gemm_close(got, a, b, c0, alpha, beta, ta, tb, dtype):
    a64 = np.abs(a.astype(np.float64))
    b64 = np.abs(b.astype(np.float64))
    k = a.shape[0] if ta else a.shape[1]
    mag = abs(alpha) * ((a64.T if ta else a64) @ (b64.T if tb else b64))
    if beta != 0:
        mag = mag + abs(beta) * np.abs(c0.astype(np.float64))
    ref = R.gemm(a, b, c0, alpha, beta, ta, tb)
    gamma = 2 * (k + 2) * EPS[key(dtype)]
    err = np.abs(got.astype(np.float64) - ref)
    bad = ~(err <= gamma * mag + np.finfo(np.float64).tiny)
    assert not bad.any(), (
        f"{bad.sum()} of {bad.size} entries off; worst error "
        f"{np.nanmax(err / np.maximum(mag, 1e-300)):.3g} x magnitude, "
        f"bound {gamma:.3g}; got {got[bad][:3]}, want {ref[bad][:3]}")


def run(a, b, c, alpha, beta, ta, tb):
    B.gemm(a, b, c, alpha, beta, ta, tb)
    return c


@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_gemm(dtype, backend, ta, tb, m, n, k, rng):
    """beta = 0 on C full of NaN: every element written, none read."""
    a, b = operands(rng, dtype, m, n, k, ta, tb)
    c = np.full((m, n), np.nan, dtype)
    run(a, b, c, 1.3, 0.0, ta, tb)
    assert np.isfinite(c).all()
    assert_gemm_close(c, a, b, None, 1.3, 0.0, ta, tb, dtype)


AB = [pytest.param(al, be, id=f"alpha{al:g}-beta{be:g}")
      for al, be in ((1.0, 0.0), (1.0, 1.0), (-0.5, 2.0), (2.0, -1.0),
                     (0.0, 0.5), (0.0, 0.0), (0.25, 1.0))]
PATHS = [pytest.param("none", 4096, id="builtin"),
         pytest.param("numpy", 0, id="numpy-blas"),
         pytest.param("scipy", 0, id="scipy-blas"),
         pytest.param("numpy", 10 ** 9, id="numpy-builtin")]


@pytest.mark.parametrize("alpha,beta", AB)
@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("which,small", PATHS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_gemm_alpha_beta(dtype, which, small, ta, tb, alpha, beta, rng):
    """alpha / beta on both the BLAS (threshold 0) and the built-in path
    (threshold huge).  beta = 0 must ignore a NaN C; beta != 0 scales C."""
    m, n, k = 7, 9, 17
    a, b = operands(rng, dtype, m, n, k, ta, tb)
    c0 = rng.normal(size=(m, n)).astype(dtype)
    c = np.full((m, n), np.nan, dtype) if beta == 0 else c0.copy()
    old = B.set_small_gemm_threshold(small)
    try:
        B.use_blas(which)
        run(a, b, c, alpha, beta, ta, tb)
    finally:
        B.use_blas("auto")
        B.set_small_gemm_threshold(old)
    assert np.isfinite(c).all()
    assert_gemm_close(c, a, b, c0, alpha, beta, ta, tb, dtype)
    if alpha == 0 and beta == 0:
        np.testing.assert_array_equal(c, np.zeros((m, n), dtype))


@pytest.mark.parametrize("mnk", [pytest.param(s, id=f"m{s[0]}-n{s[1]}-k{s[2]}")
                                 for s in ((3, 5, 7), (40, 33, 50))])
@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_gemm_beta1_accumulates(dtype, backend, mnk, rng):
    """beta = 1 adds to C: two calls give C0 + 2 alpha A B."""
    m, n, k = mnk
    a, b = operands(rng, dtype, m, n, k, False, False)
    c0 = rng.normal(size=(m, n)).astype(dtype)
    c = c0.copy()
    run(a, b, c, 0.5, 1.0, False, False)
    run(a, b, c, 0.5, 1.0, False, False)
    assert_gemm_close(c, a, b, c0, 1.0, 1.0, False, False, dtype)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_gemm_threshold_both_sides(dtype, backend, threshold, rng):
    """The same product just below, at and just above the threshold."""
    m, n, k = 9, 17, 31
    a, b = operands(rng, dtype, m, n, k, True, False)
    for small in (m * n * k - 1, m * n * k, m * n * k + 1, 0):
        threshold(small)
        c = np.full((m, n), np.nan, dtype)
        run(a, b, c, 1.0, 0.0, True, False)
        assert_gemm_close(c, a, b, None, 1.0, 0.0, True, False, dtype)


@pytest.mark.parametrize("threads", [1, 2], ids=lambda t: f"threads{t}")
@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("backend", BACKENDS[:2], indirect=True)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_gemm_blas_threads(dtype, backend, ta, tb, threads, rng):
    """Big enough for OpenBLAS to split the work; 1 and 2 threads agree with
    the reference (results may differ by summation order only)."""
    m, n, k = 96, 80, 130
    a, b = operands(rng, dtype, m, n, k, ta, tb)
    c0 = rng.normal(size=(m, n)).astype(dtype)
    c = c0.copy()
    with threadpool_limits(limits=threads, user_api="blas"):
        run(a, b, c, 0.7, -0.5, ta, tb)
    assert_gemm_close(c, a, b, c0, 0.7, -0.5, ta, tb, dtype)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_gemm_k_zero(dtype, backend):
    """k = 0: C := beta C (zeros for beta = 0, even over NaN)."""
    a = np.zeros((4, 0), dtype)
    b = np.zeros((0, 3), dtype)
    c = np.full((4, 3), np.nan, dtype)
    B.gemm(a, b, c, 1.0, 0.0)
    np.testing.assert_array_equal(c, np.zeros((4, 3), dtype))
    c = np.full((4, 3), 2.0, dtype)
    B.gemm(a, b, c, 1.0, 0.5)
    np.testing.assert_array_equal(c, np.ones((4, 3), dtype))


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_gemm_nan_in_a_reaches_its_row(dtype, backend, rng):
    """A NaN in A poisons exactly its row of C (alpha != 0)."""
    for m, n, k in ((5, 7, 3), (40, 33, 50)):
        a, b = operands(rng, dtype, m, n, k, False, False)
        a[2, 1] = np.nan
        c = np.full((m, n), np.nan, dtype)
        B.gemm(a, b, c, 1.0, 0.0)
        assert np.isnan(c[2]).all()
        assert np.isfinite(np.delete(c, 2, axis=0)).all()


def test_use_blas_rejects_unknown_and_restores():
    with pytest.raises(ValueError):
        B.use_blas("mkl")
    with pytest.raises(ValueError):
        B.set_small_gemm_threshold(-1)
    assert B.blas_info()["small_mnk"] == B.DEFAULT_SMALL_MNK


# ---- wrong shapes ----------------------------------------------------------------

def _m(*shape, dtype=np.float64):
    return np.zeros(shape, dtype)


BAD_SHAPES = {
    "k-mismatch": lambda: B.gemm(_m(3, 4), _m(5, 2), _m(3, 2)),
    "c-rows": lambda: B.gemm(_m(3, 4), _m(4, 2), _m(2, 2)),
    "c-cols": lambda: B.gemm(_m(3, 4), _m(4, 2), _m(3, 3)),
    "trans-a-mismatch": lambda: B.gemm(_m(3, 4), _m(4, 2), _m(3, 2),
                                       trans_a=True),
    "trans-b-mismatch": lambda: B.gemm(_m(3, 4), _m(4, 2), _m(3, 2),
                                       trans_b=True),
    "c-transposed": lambda: B.gemm(_m(3, 4), _m(4, 2), _m(2, 3)),
}


@pytest.mark.parametrize("call", sorted(BAD_SHAPES))
def test_gemm_wrong_shapes_raise_value_error(call):
    with pytest.raises(ValueError):
        BAD_SHAPES[call]()


# ---- padded row strides ------------------------------------------------------------

@pytest.mark.parametrize("ta,tb", TRANS[::3])
@pytest.mark.parametrize("which,small", PATHS[:2])
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_gemm_padded(dtype, which, small, ta, tb, rng):
    """Through the wrapper, whose docstring allows padded row strides: A, B
    padded with NaN (reading the padding poisons C), C's padding must
    survive."""
    m, n, k = 17, 33, 9
    a, b = operands(rng, dtype, m, n, k, ta, tb)
    av, _ = padded(a, pad=3)
    bv, _ = padded(b, pad=5)
    cv, cbig = padded(np.full((m, n), np.nan, dtype), pad=4, fill=7.0)
    old = B.set_small_gemm_threshold(small)
    try:
        B.use_blas(which)
        B.gemm(av, bv, cv, 1.0, 0.0, ta, tb)
    finally:
        B.use_blas("auto")
        B.set_small_gemm_threshold(old)
    assert_gemm_close(np.array(cv), a, b, None, 1.0, 0.0, ta, tb, dtype)
    assert_pad_untouched(cbig, n, 7.0)


# The C entry point fnn_gemm_* with explicit ld > columns, on each calling
# convention: built-in loops, numpy's ILP64 CBLAS, scipy's Fortran BLAS.

class FnnBlas(ctypes.Structure):
    _fields_ = [("api", ctypes.c_int32), ("sgemm", ctypes.c_void_p),
                ("dgemm", ctypes.c_void_p), ("small_mnk", ctypes.c_int64),
                ("chunk_mnk", ctypes.c_int64)]


def _capsule_pointer(capsule):
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype = ctypes.c_char_p
    get_name.argtypes = [ctypes.py_object]
    get_ptr = ctypes.pythonapi.PyCapsule_GetPointer
    get_ptr.restype = ctypes.c_void_p
    get_ptr.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return get_ptr(capsule, get_name(capsule))


def c_blas_handle(which):
    """(api, sgemm, dgemm) for the fnn_blas struct (enum as in fastnn.h)."""
    if which == "none":
        return 0, None, None
    if which == "numpy":
        info = B._find_numpy_blas()          # what use_blas("numpy") installs
        return info["api"], info["sgemm"], info["dgemm"]
    import scipy.linalg.cython_blas as cb
    return (3, _capsule_pointer(cb.__pyx_capi__["sgemm"]),
            _capsule_pointer(cb.__pyx_capi__["dgemm"]))


@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("which", ["none", "numpy", "scipy"])
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_c_gemm_strided(dtype, which, ta, tb, rng):
    lib = ctypes.CDLL(B.__file__)
    real = ctypes.c_float if key(dtype) is np.float32 else ctypes.c_double
    fn = lib.fnn_gemm_f32 if key(dtype) is np.float32 else lib.fnn_gemm_f64
    i64, P = ctypes.c_int64, ctypes.c_void_p
    fn.restype = None
    fn.argtypes = [ctypes.POINTER(FnnBlas), ctypes.c_int, ctypes.c_int, i64,
                   i64, i64, real, P, i64, P, i64, real, P, i64]
    api, s, d = c_blas_handle(which)
    handle = FnnBlas(api, s, d, 0)          # threshold 0: always the BLAS
    for m, n, k in ((17, 33, 9), (40, 33, 50)):
        a, b = operands(rng, dtype, m, n, k, ta, tb)
        av, _ = padded(a, pad=3)
        bv, _ = padded(b, pad=5)
        c0 = rng.normal(size=(m, n)).astype(dtype)
        for beta in (0.0, 0.5):
            start = np.full((m, n), np.nan, dtype) if beta == 0 else c0
            cv, cbig = padded(start, pad=4, fill=7.0)
            fn(ctypes.byref(handle), int(ta), int(tb), m, n, k, 1.1,
               av.ctypes.data, av.strides[0] // av.itemsize,
               bv.ctypes.data, bv.strides[0] // bv.itemsize, beta,
               cv.ctypes.data, cv.strides[0] // cv.itemsize)
            assert_gemm_close(np.array(cv), a, b, c0, 1.1, beta, ta, tb, dtype)
            assert_pad_untouched(cbig, n, 7.0)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_gemm_read_only_operands(dtype, rng):
    a, b = operands(rng, dtype, 20, 30, 40, False, True)
    a.setflags(write=False)
    b.setflags(write=False)
    c = np.full((20, 30), np.nan, dtype)
    B.gemm(a, b, c, 1.0, 0.0, False, True)
    assert_gemm_close(c, a, b, None, 1.0, 0.0, False, True, dtype)


# fnn_blas.chunk_mnk: the product reaches the BLAS in pieces of at most
# chunk_mnk multiply-adds (what the split fit step's halves do).  The
# handle's BLAS is scipy's Fortran gemm behind a ctypes callback that
# records every call's sizes before passing it on.

def _recording_f77(dtype, calls):
    import scipy.linalg.cython_blas as cb
    real = ctypes.c_float if key(dtype) is np.float32 else ctypes.c_double
    name = "sgemm" if key(dtype) is np.float32 else "dgemm"
    i32p, rp, P = ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(real), ctypes.c_void_p
    # the trans flags are single chars, not NUL-terminated strings: pass
    # them as pointers (c_char_p would strlen them; ASan caught that)
    proto = ctypes.CFUNCTYPE(None, P, P, i32p, i32p,
                             i32p, rp, P, i32p, P, i32p, rp, P, i32p)
    real_fn = proto(_capsule_pointer(cb.__pyx_capi__[name]))

    def record(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        # column-major (M, N, K) = row-major (n, m, k)
        calls.append((n[0], m[0], k[0], beta[0]))
        real_fn(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    return proto(record)


@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("m,n,k", [(9, 5, 61), (61, 5, 9), (5, 61, 9), (9, 9, 9)],
                         ids=["k-largest", "m-largest", "n-largest", "cube"])
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_c_gemm_chunked(dtype, m, n, k, ta, tb, rng):
    lib = ctypes.CDLL(B.__file__)
    real = ctypes.c_float if key(dtype) is np.float32 else ctypes.c_double
    fn = lib.fnn_gemm_f32 if key(dtype) is np.float32 else lib.fnn_gemm_f64
    i64, P = ctypes.c_int64, ctypes.c_void_p
    fn.restype = None
    fn.argtypes = [ctypes.POINTER(FnnBlas), ctypes.c_int, ctypes.c_int, i64,
                   i64, i64, real, P, i64, P, i64, real, P, i64]
    calls = []
    cb = _recording_f77(dtype, calls)
    chunk = 100
    ptr = ctypes.cast(cb, ctypes.c_void_p).value
    handle = FnnBlas(3, ptr, ptr, 0, chunk)
    a, b = operands(rng, dtype, m, n, k, ta, tb)
    av, _ = padded(a, pad=3)
    bv, _ = padded(b, pad=5)
    c0 = rng.normal(size=(m, n)).astype(dtype)
    for beta in (0.0, 0.5):
        calls.clear()
        start = np.full((m, n), np.nan, dtype) if beta == 0 else c0
        cv, cbig = padded(start, pad=4, fill=7.0)
        fn(ctypes.byref(handle), int(ta), int(tb), m, n, k, 1.1,
           av.ctypes.data, av.strides[0] // av.itemsize,
           bv.ctypes.data, bv.strides[0] // bv.itemsize, beta,
           cv.ctypes.data, cv.strides[0] // cv.itemsize)
        assert_gemm_close(np.array(cv), a, b, c0, 1.1, beta, ta, tb, dtype)
        assert_pad_untouched(cbig, n, 7.0)
        # cut along the largest size into the fewest pieces of at most
        # `chunk` multiply-adds, of sizes differing by at most 1
        big = max(m, n, k)
        axis = (2 if k == big else 0 if m == big else 1)
        other = m * n * k // big
        pieces = -(-big // (chunk // other))
        assert len(calls) == pieces
        assert all(pm * pn * pk <= chunk for pm, pn, pk, _ in calls)
        sizes = [c[axis] for c in calls]
        assert max(sizes) - min(sizes) <= 1
        assert sum(sizes) == big
        for c in calls:
            assert [c[i] for i in range(3) if i != axis] == \
                [s for i, s in enumerate((m, n, k)) if i != axis]
        # along k the pieces accumulate: beta on the first only
        betas = [c[3] for c in calls]
        assert betas == ([beta] + [1.0] * (pieces - 1) if axis == 2
                         else [beta] * pieces)
