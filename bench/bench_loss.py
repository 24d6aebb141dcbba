"""Fused loss + output gradient (fnn_loss_grad: value, dz and the bias
gradient db in one pass) for sse, mse, bce and softmax_ce, float32 and
float64, at the output shapes of the workloads (small batch 32 x 1, lecture
64 x 10, medium 256 x 10, large 1024 x 10); vs fastnn.reference.loss_grad
and vs the NumPy a user writes (stable forms: logaddexp, max-subtracted
log-sum-exp).  Throughput: elements/s and GB/s (reads z and y, writes dz).
Each case first checks the value and gradients against the reference.
"""
import numpy as np
import pytest

from fastnn import _kernels as K
from fastnn import reference as ref

LOSSES = ["sse", "mse", "bce", "softmax_ce"]
SHAPES = [(32, 1), (64, 10), (256, 10), (1024, 10)]
DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-6, atol=1e-7), np.float64: dict(rtol=1e-12, atol=1e-15)}


def _data(m, n, loss, dtype, rng):
    z = rng.standard_normal((m, n)) * 4
    if loss == "bce":
        y = (rng.random((m, n)) < 0.5).astype(float)
    elif loss == "softmax_ce":
        y = np.eye(n)[rng.integers(0, n, m)]
    else:
        y = rng.standard_normal((m, n))
    return z.astype(dtype), y.astype(dtype)


def _scale(loss, m):
    return 1.0 if loss == "sse" else 1.0 / m


def numpy_loss_grad(z, y, loss):
    """(L, dz, db) as a NumPy user writes them."""
    m = len(z)
    if loss == "sse":
        d = z - y
        L, g = np.square(d).sum(), 2.0 * d
    elif loss == "mse":
        d = z - y
        L, g = 0.5 * np.square(d).sum() / m, d / m
    elif loss == "bce":
        p = 1 / (1 + np.exp(-z))
        L = (np.logaddexp(0, z) - y * z).sum() / m
        g = (p - y) / m
    else:
        mx = z.max(axis=1, keepdims=True)
        e = np.exp(z - mx)
        s = e.sum(axis=1, keepdims=True)
        L = -(y * (z - mx - np.log(s))).sum() / m
        g = (e / s - y) / m
    return L, g, g.sum(axis=0)


@pytest.mark.parametrize("impl", ["fastnn", "reference", "numpy"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"m{s[0]}-n{s[1]}")
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_loss_grad(benchmark, report, rng, dtype, loss, shape, impl):
    m, n = shape
    if loss == "softmax_ce" and n == 1:
        shape = (m, n) = (m, 2)          # softmax over one class is trivial
    z, y = _data(m, n, loss, dtype, rng)
    scale = _scale(loss, m)
    wL, wdz, wdb = ref.loss_grad(z, y, loss, scale)
    dz = np.full((m, n), np.nan, dtype=dtype)
    db = np.full(n, np.nan, dtype=dtype)
    if impl == "fastnn":
        L = K.loss_grad(z, y, dz, db, None, loss, scale)
        np.testing.assert_allclose(L, wL, rtol=1e-12 if dtype == np.float64 else 1e-6)
        np.testing.assert_allclose(dz, wdz, **TOL[dtype])
        np.testing.assert_allclose(db, wdb, rtol=TOL[dtype]["rtol"] * 10,
                                   atol=TOL[dtype]["atol"] * m)

        def fn():
            return K.loss_grad(z, y, dz, db, None, loss, scale)
    elif impl == "reference":
        def fn():
            return ref.loss_grad(z, y, loss, scale)
    else:
        L, g, _ = numpy_loss_grad(z, y, loss)
        np.testing.assert_allclose(L, wL, rtol=1e-10 if dtype == np.float64 else 1e-4)
        np.testing.assert_allclose(g, wdz, rtol=1e-10 if dtype == np.float64 else 1e-4,
                                   atol=1e-14 if dtype == np.float64 else 1e-6)

        def fn():
            return numpy_loss_grad(z, y, loss)
    dname = np.dtype(dtype).name
    benchmark.group = f"loss_grad {dname} {loss} m{m} n{n}"
    benchmark(fn)
    key = f"loss/{dname}/{loss}/{m}x{n}/{impl}"
    report.add(key, benchmark, elements=m * n,
               nbytes=3 * m * n * np.dtype(dtype).itemsize)
    if impl == "numpy":
        base = f"loss/{dname}/{loss}/{m}x{n}"
        report.speedup(f"loss {dname} {loss} {m}x{n}: fastnn vs reference",
                       base + "/fastnn", base + "/reference")
        report.speedup(f"loss {dname} {loss} {m}x{n}: fastnn vs numpy",
                       base + "/fastnn", base + "/numpy")
