"""GEMM: fastnn's row-major gemm vs numpy.matmul vs a bare BLAS call, for the
shapes fastnn's networks run (forward X.W, weight gradient X^T.D, input
gradient D.W^T of the tiny, small, lecture, medium and large workloads), float32
and float64; GFLOP/s = 2mnk/t.  Each case first checks fastnn's result
against fastnn.reference.gemm.

Plus the thread-pool demonstration: numpy's matmul (256x256,
float64) alternating with fastnn gemms or fastnn train steps costs about the
sum of each alone when fastnn runs on numpy's own BLAS
(fastnn.use_blas('numpy')), and much more on scipy's separately bundled
OpenBLAS (fastnn.use_blas('scipy')), whose thread pool spins against
numpy's on a small machine.
"""
import numpy as np
import pytest

import fastnn
from fastnn import reference as ref
from fastnn._blas import gemm
from harness.machine import BareGemm

# (label, m, n, k, trans_a, trans_b): op(a) (m, k), op(b) (k, n)
SHAPES = [
    ("tiny-fwd", 4, 4, 2, False, False),          # built-in loops (small_mnk)
    ("small-fwd", 32, 32, 20, False, False),
    ("small-dW", 20, 32, 32, True, False),
    ("lecture-fwd", 64, 100, 1000, False, False),
    ("lecture-dW", 1000, 100, 64, True, False),
    ("lecture-dH", 64, 100, 10, False, True),
    ("medium-fwd", 256, 256, 784, False, False),
    ("medium-dW", 784, 256, 256, True, False),
    ("large-fwd", 1024, 1024, 1024, False, False),
    ("large-dH", 1024, 1024, 1024, False, True),
]
IMPLS = ["fastnn", "numpy", "blas"]
RTOL = {np.float32: 2e-5, np.float64: 1e-12}

_bare = None


def bare_blas():
    global _bare
    if _bare is None:
        _bare = BareGemm()
    return _bare


def operands(m, n, k, ta, tb, dtype, rng):
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    return a, b


def check_gemm(a, b, ta, tb, dtype):
    """fastnn.gemm against the reference: plain, and alpha/beta with a NaN
    pre-filled output for beta = 0."""
    m = a.shape[1] if ta else a.shape[0]
    n = b.shape[0] if tb else b.shape[1]
    k = a.shape[0] if ta else a.shape[1]
    tol = RTOL[dtype] * max(1.0, np.sqrt(k))
    c = np.full((m, n), np.nan, dtype=dtype)
    gemm(a, b, c, trans_a=ta, trans_b=tb)
    want = ref.gemm(a, b, trans_a=ta, trans_b=tb)
    scale = np.abs(want).max() + 1
    np.testing.assert_allclose(c, want, rtol=0, atol=tol * scale)
    c0 = np.ones((m, n), dtype=dtype)
    c = c0.copy()
    gemm(a, b, c, alpha=-0.5, beta=2.0, trans_a=ta, trans_b=tb)
    want = ref.gemm(a, b, c0, alpha=-0.5, beta=2.0, trans_a=ta, trans_b=tb)
    np.testing.assert_allclose(c, want, rtol=0, atol=tol * scale)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}-m{s[1]}-n{s[2]}-k{s[3]}")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_gemm(benchmark, report, rng, dtype, shape, impl):
    label, m, n, k, ta, tb = shape
    a, b = operands(m, n, k, ta, tb, dtype, rng)
    c = np.empty((m, n), dtype=dtype)
    if impl == "fastnn":
        check_gemm(a, b, ta, tb, dtype)
        fn = lambda: gemm(a, b, c, trans_a=ta, trans_b=tb)  # noqa: E731
    elif impl == "numpy":
        A, B = (a.T if ta else a), (b.T if tb else b)
        fn = lambda: np.matmul(A, B, out=c)  # noqa: E731
    else:
        fn = bare_blas().bind(a, b, c, trans_a=ta, trans_b=tb)
    fn()
    if impl != "fastnn":   # the baselines compute the same product
        np.testing.assert_allclose(c, ref.gemm(a, b, trans_a=ta, trans_b=tb),
                                   rtol=0, atol=RTOL[dtype] * np.sqrt(k) *
                                   (np.abs(c).max() + 1))
    dname = np.dtype(dtype).name
    benchmark.group = f"gemm {dname} {label} m{m} n{n} k{k}"
    benchmark(fn)
    key = f"gemm/{dname}/{label}/{impl}"
    report.add(key, benchmark, flops=2.0 * m * n * k)
    if impl == "blas":
        base = f"gemm/{dname}/{label}"
        report.speedup(f"gemm {dname} {label}: fastnn vs bare BLAS",
                       f"{base}/fastnn", f"{base}/blas")
        report.speedup(f"gemm {dname} {label}: fastnn vs numpy.matmul",
                       f"{base}/fastnn", f"{base}/numpy")


# ---- the thread-pool demonstration ------------------------------------------

PAIR_N = 256          # numpy side: 256x256 float64 matmul


def _train_net():
    net = fastnn.Network([fastnn.Dense(256, "relu"), fastnn.Dense(10)],
                         loss="mse", n_in=256, seed=0)
    r = np.random.default_rng(5)
    X = r.standard_normal((256, 256))
    Y = r.standard_normal((256, 10))
    return net, X, Y


MODES = ["numpy-alone", "fastnn-alone-numpyblas", "fastnn-alone-scipyblas",
         "pair-numpyblas", "pair-scipyblas"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("partner", ["gemm", "train_step"])
def test_threadpool_pair(benchmark, report, threads, partner, mode):
    r = np.random.default_rng(7)
    a, b = r.standard_normal((PAIR_N, PAIR_N)), r.standard_normal((PAIR_N, PAIR_N))
    c = np.empty((PAIR_N, PAIR_N))
    fa, fb = r.standard_normal((PAIR_N, PAIR_N)), r.standard_normal((PAIR_N, PAIR_N))
    fc = np.empty((PAIR_N, PAIR_N))
    net, X, Y = _train_net()
    lr = 1e-4

    if partner == "gemm":
        def fast():
            gemm(fa, fb, fc)
    else:
        def fast():
            net.train_step(X, Y, lr)

    def np_only():
        np.matmul(a, b, out=c)

    def pair():
        np.matmul(a, b, out=c)
        fast()

    which = "scipy" if mode.endswith("scipyblas") else "numpy"
    fn = {"numpy-alone": np_only}.get(mode, pair if mode.startswith("pair") else fast)
    info = fastnn.use_blas(which)
    try:
        assert info["source"] == which
        # same numbers on either BLAS
        gemm(fa, fb, fc)
        np.testing.assert_allclose(fc, fa @ fb, rtol=1e-12, atol=1e-10)
        for _ in range(3):
            fn()
        benchmark.group = f"thread pools: numpy matmul {PAIR_N}^3 f64 + fastnn {partner}"
        benchmark.extra_info["fastnn_blas"] = which
        benchmark(fn)
    finally:
        fastnn.use_blas("auto")
    report.add(f"pools/{partner}/{mode}", benchmark, unit="pair" if "pair" in mode
               else "call")

    if partner == "train_step" and mode == MODES[-1]:
        report.derive(_pool_summary)


def _pool_summary(rows):
    out = ["", "thread pools: per-pair time of numpy matmul 256^3 f64 + "
           "one fastnn op, vs the sum of each alone (median):"]
    for partner in ("gemm", "train_step"):
        g = lambda m: rows[f"pools/{partner}/{m}"]["median"]  # noqa: E731
        alone = g("numpy-alone") + g("fastnn-alone-numpyblas")
        alone_s = g("numpy-alone") + g("fastnn-alone-scipyblas")
        out.append(f"  {partner:<10}: numpy alone {g('numpy-alone') * 1e3:.3f} ms, "
                   f"fastnn alone {g('fastnn-alone-numpyblas') * 1e3:.3f} ms "
                   f"(on scipy's BLAS {g('fastnn-alone-scipyblas') * 1e3:.3f} ms)")
        out.append(f"  {'':<10}  alternating, fastnn on numpy's BLAS: "
                   f"{g('pair-numpyblas') * 1e3:.3f} ms/pair = "
                   f"{g('pair-numpyblas') / alone:.2f}x the sum (target ~1x)")
        out.append(f"  {'':<10}  alternating, fastnn on scipy's BLAS: "
                   f"{g('pair-scipyblas') * 1e3:.3f} ms/pair = "
                   f"{g('pair-scipyblas') / alone_s:.2f}x the sum")
    return out
