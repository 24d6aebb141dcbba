"""Optimizers over one flat parameter buffer (fnn_sgd_step, _momentum_step
plain and Nesterov, _adam_step), float32 and float64, at the parameter
counts of the lecture (101,000), medium (203,530) and large (2,109,450)
networks; vs fastnn.reference and vs the in-place NumPy a careful user
writes (scikit-learn's optimizer style).  Throughput: elements/s and GB/s
(sgd moves 3 arrays, momentum 5, Adam 7).  Each case first checks one step,
with L2 decay, against the reference.
"""
import numpy as np
import pytest

from fastnn import _kernels as K
from fastnn import reference as ref

SIZES = {"lecture": 101_000, "medium": 203_530, "large": 2_109_450}
DTYPES = [np.float32, np.float64]
OPTS = ["sgd", "momentum", "nesterov", "adam"]
ARRAYS_MOVED = {"sgd": 3, "momentum": 5, "nesterov": 5, "adam": 7}
LR, MU, B1, B2, EPS, T = 0.01, 0.9, 0.9, 0.999, 1e-8, 10
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-13, atol=1e-15)}


def _state(n, dtype, rng):
    w = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    m = (rng.standard_normal(n) * 0.1).astype(dtype)
    v = (rng.random(n) * 0.1).astype(dtype)
    return w, g, m, v


def fastnn_step(opt, w, g, m, v, wd=0.0):
    if opt == "sgd":
        K.sgd_step(w, g, LR, wd)
    elif opt in ("momentum", "nesterov"):
        K.momentum_step(w, g, m, LR, MU, wd, opt == "nesterov")
    else:
        K.adam_step(w, g, m, v, T, LR, B1, B2, EPS, wd)


def reference_step(opt, w, g, m, v, wd=0.0):
    if opt == "sgd":
        return ref.sgd_step(w, g, LR, wd), m, v
    if opt in ("momentum", "nesterov"):
        w2, m2 = ref.momentum_step(w, g, m, LR, MU, wd, opt == "nesterov")
        return w2, m2, v
    return ref.adam_step(w, g, m, v, T, LR, B1, B2, EPS, wd)


def numpy_step(opt, w, g, m, v):
    """In place, as scikit-learn's optimizers (temporaries per expression)."""
    if opt == "sgd":
        w -= LR * g
    elif opt == "momentum":
        m *= MU
        m -= LR * g
        w += m
    elif opt == "nesterov":
        m *= MU
        m -= LR * g
        w += MU * m - LR * g
    else:
        m *= B1
        m += (1 - B1) * g
        v *= B2
        v += (1 - B2) * (g * g)
        lr_t = LR * np.sqrt(1 - B2 ** T) / (1 - B1 ** T)
        w -= lr_t * m / (np.sqrt(v) + EPS)


@pytest.mark.parametrize("impl", ["fastnn", "reference", "numpy"])
@pytest.mark.parametrize("size", list(SIZES), ids=lambda s: f"{s}-n{SIZES[s]}")
@pytest.mark.parametrize("opt", OPTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_optimizer(benchmark, report, rng, dtype, opt, size, impl):
    n = SIZES[size]
    w, g, m, v = _state(n, dtype, rng)
    # one step with L2 decay against the reference
    want = reference_step(opt, w, g, m, v, wd=1e-3)
    got = [w.copy(), g, m.copy(), v.copy()]
    if impl == "fastnn":
        fastnn_step(opt, *got, wd=1e-3)
        np.testing.assert_allclose(got[0], want[0], **TOL[dtype])
        if opt != "sgd":
            np.testing.assert_allclose(got[2], want[1], **TOL[dtype])
        if opt == "adam":
            np.testing.assert_allclose(got[3], want[2], **TOL[dtype])
    elif impl == "numpy":
        want0 = reference_step(opt, w, g, m, v)
        numpy_step(opt, *got)
        np.testing.assert_allclose(got[0], want0[0], rtol=1e-5 if dtype == np.float32
                                   else 1e-12, atol=1e-6 if dtype == np.float32 else 1e-15)
    if impl == "fastnn":
        def fn():
            fastnn_step(opt, w, g, m, v)
    elif impl == "reference":
        def fn():
            reference_step(opt, w, g, m, v)
    else:
        def fn():
            numpy_step(opt, w, g, m, v)
    dname = np.dtype(dtype).name
    benchmark.group = f"optimizer {dname} {opt} n{n}"
    benchmark.pedantic(fn, rounds=200 if n < 1_000_000 else 40, warmup_rounds=2)
    key = f"optim/{dname}/{opt}/{size}/{impl}"
    report.add(key, benchmark, elements=n,
               nbytes=ARRAYS_MOVED[opt] * n * np.dtype(dtype).itemsize)
    if impl == "numpy":
        base = f"optim/{dname}/{opt}/{size}"
        report.speedup(f"optim {dname} {opt} n={n}: fastnn vs reference",
                       base + "/fastnn", base + "/reference")
        report.speedup(f"optim {dname} {opt} n={n}: fastnn vs numpy (in place)",
                       base + "/fastnn", base + "/numpy")
