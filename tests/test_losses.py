"""The robust regression losses: mae, huber (delta) and quantile (the pinball
loss), from the fused kernel (csrc/loss_impl.h) up to Network and
MLPRegressor.

Kernel tolerances as in test_loss.py: the loss is computed in double for
both dtypes and must match the float64 reference to LOSS_RTOL relative to
the size of the summed terms; dz and db use conftest.RTOL.  Gradients are
also checked against central finite differences at points away from the
kinks (r = 0 for mae and quantile, |r| = delta where huber's second
derivative jumps).
"""
import pickle
import re
import warnings

import numpy as np
import pytest

from fastnn import Dense, Network
from fastnn import _kernels as K
from fastnn import reference as R
from conftest import (DTYPE_PARAMS, ROWS, SIZES, assert_close, assert_pad_untouched,
                      key, ld_of, nan_like, padded, shape_params)

LOSS_RTOL = 1e-12
SCALE = 0.37
# (loss, parameter): two deltas (one inside the residuals' range, one
# outside most of it) and three quantiles
CASES = [("mae", None), ("huber", 0.3), ("huber", 2.5), ("quantile", 0.1),
         ("quantile", 0.5), ("quantile", 0.9)]
CASE_PARAMS = [pytest.param(l, p, id=f"{l}-{p}" if p is not None else l)
               for l, p in CASES]
SW = [pytest.param(False, id="nosw"), pytest.param(True, id="sw")]
SHAPES = shape_params(ROWS, SIZES)


def make_inputs(rng, m, n, dtype, zscale=2.0):
    z = rng.normal(scale=zscale, size=(m, n))
    y = rng.normal(size=(m, n))
    return z.astype(dtype), y.astype(dtype)


def magnitude(z, y, scale, sw):
    """scale * sum_i |w_i| sum_j |r_ij| (1 + |r_ij|): the size of the terms."""
    r = np.abs(z.astype(np.float64) - y.astype(np.float64))
    w = np.ones(len(z)) if sw is None else np.abs(sw.astype(np.float64))
    return abs(scale) * float((w * (r * (1 + r)).sum(axis=1)).sum()) + 1e-300


def call(z, y, loss, param, scale=SCALE, sw=None):
    dz = nan_like(z)
    db = nan_like(z.shape[1], z.dtype)
    L = K.loss_grad(z, y, dz, db, sw, loss, scale, param)
    return L, dz, db


def check(L, dz, db, z, y, loss, param, scale, sw, dtype):
    rL, rdz, rdb = R.loss_grad(z, y, loss, scale, sw, param)
    assert isinstance(L, float)
    assert L == pytest.approx(rL, rel=LOSS_RTOL,
                              abs=LOSS_RTOL * magnitude(z, y, scale, sw))
    if dz is not None:
        assert_close(dz, rdz, dtype)
    if db is not None:
        assert_close(db, rdb, dtype, scale=float(np.abs(rdz).sum(axis=0).max()))


# ---- the kernel against its reference twin ----------------------------------

@pytest.mark.parametrize("m,n", SHAPES)
@pytest.mark.parametrize("weighted", SW)
@pytest.mark.parametrize("loss,param", CASE_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_loss_grad_matches_reference(dtype, loss, param, weighted, m, n, rng):
    """Both paths of the kernel (flat without weights, per row with them),
    outputs pre-filled with NaN."""
    z, y = make_inputs(rng, m, n, dtype)
    sw = rng.uniform(0.1, 3.0, m).astype(dtype) if weighted else None
    L, dz, db = call(z, y, loss, param, SCALE, sw)
    check(L, dz, db, z, y, loss, param, SCALE, sw, dtype)
    assert_close(db, dz.astype(np.float64).sum(axis=0), dtype,
                 scale=float(np.abs(dz).astype(np.float64).sum(axis=0).max()))


@pytest.mark.parametrize("loss,param", CASE_PARAMS)
def test_float32_is_double_inside(loss, param, rng):
    """float32 in: the loss equals the float64 computation on the same
    inputs, dz is the double value rounded once."""
    z, y = make_inputs(rng, 17, 33, np.float32)
    sw = rng.uniform(0.1, 3.0, 17).astype(np.float32)
    L32, dz32, _ = call(z, y, loss, param, SCALE, sw)
    L64, dz64, _ = call(z.astype(np.float64), y.astype(np.float64), loss, param,
                        SCALE, sw.astype(np.float64))
    assert abs(L32 - L64) <= LOSS_RTOL * magnitude(z, y, SCALE, sw)
    np.testing.assert_array_equal(dz32, dz64.astype(np.float32))


@pytest.mark.parametrize("loss,param", CASE_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_loss_only_and_in_place(dtype, loss, param, rng):
    """dz None computes the same loss (to the order of the vectorized
    sum); dz may be z's own array."""
    z, y = make_inputs(rng, 9, 7, dtype)
    for sw in (None, rng.uniform(0.1, 3.0, 9).astype(dtype)):
        L_only = K.loss_grad(z, y, None, None, sw, loss, SCALE, param)
        L, dz, db = call(z, y, loss, param, SCALE, sw)
        assert L_only == pytest.approx(L, rel=1e-14)
        work = z.copy()
        db2 = nan_like(7, dtype)
        L2 = K.loss_grad(work, y, work, db2, sw, loss, SCALE, param)
        assert L2 == L
        np.testing.assert_array_equal(work, dz)
        np.testing.assert_array_equal(db2, db)


@pytest.mark.parametrize("m,n", [pytest.param(17, 33, id="m17-n33"),
                                 pytest.param(3, 8, id="m3-n8")])
@pytest.mark.parametrize("loss,param", CASE_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_c_entry_point_strided(capi, dtype, loss, param, m, n, rng):
    """fnn_loss_grad itself with ld > n for z, y and dz, with and without
    weights: the row path, the padding never written."""
    z, y = make_inputs(rng, m, n, dtype)
    code = K.LOSSES[loss]
    p = 0.0 if param is None else param
    zv, _ = padded(z, pad=3)
    yv, _ = padded(y, pad=5)
    for sw in (None, rng.uniform(0.1, 3.0, m).astype(dtype)):
        dzv, dzbig = padded(np.full((m, n), np.nan, dtype), pad=4, fill=7.0)
        db = nan_like(n, dtype)
        L = capi("loss_grad", dtype, m, n, code, p, SCALE, zv, ld_of(zv), yv,
                 ld_of(yv), sw, dzv, ld_of(dzv), db)
        check(L, dzv, db, z, y, loss, param, SCALE, sw, dtype)
        assert_pad_untouched(dzbig, n, 7.0)


@pytest.mark.parametrize("loss,param", CASE_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_sample_weights_are_repeated_rows(dtype, loss, param, rng):
    m, n = 6, 5
    z, y = make_inputs(rng, m, n, dtype)
    reps = np.array([0, 1, 2, 3, 1, 2])
    Lw, dzw, dbw = call(z, y, loss, param, 1.0, reps.astype(dtype))
    Lr, dzr, dbr = call(np.repeat(z, reps, axis=0), np.repeat(y, reps, axis=0),
                        loss, param, 1.0)
    assert Lw == pytest.approx(Lr, rel=1e-12)
    assert_close(dbw, dbr, dtype, scale=float(np.abs(dzr).sum(0).max()))
    np.testing.assert_array_equal(dzw[0], np.zeros(n, dtype))


# ---- definitions: kinks, saturation, NaN -------------------------------------

def _one(r, loss, param, dtype=np.float64):
    """(loss, dz) of one element with residual z - y = r (y = 0), dz as
    the double it was rounded from when that rounding is exact (the
    expected values below are compared after rounding to dtype)."""
    L, dz, db = call(np.array([[r]], dtype), np.zeros((1, 1), dtype), loss, param, 1.0)
    assert db[0] == dz[0, 0]
    return L, float(dz[0, 0])


def _g(x, dtype):
    """A derivative as the kernel stores it: rounded once to dtype."""
    return float(np.asarray(x, dtype))


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_values_and_kinks(dtype):
    """The documented definitions at chosen points, exactly: the derivative
    at the kinks is 0 (the subgradient of least magnitude), huber is
    continuous in value and slope at |r| = delta."""
    assert _one(0.0, "mae", None, dtype) == (0.0, 0.0)
    assert _one(-0.0, "mae", None, dtype) == (0.0, 0.0)
    assert _one(1.5, "mae", None, dtype) == (1.5, 1.0)
    assert _one(-1.5, "mae", None, dtype) == (1.5, -1.0)
    for q in (0.1, 0.5, 0.75):
        assert _one(0.0, "quantile", q, dtype) == (0.0, 0.0)
        assert _one(2.0, "quantile", q, dtype) == (2.0 * (1 - q), _g(1 - q, dtype))
        assert _one(-2.0, "quantile", q, dtype) == (2.0 * q, _g(-q, dtype))
    d = 0.5
    assert _one(0.0, "huber", d, dtype) == (0.0, 0.0)
    assert _one(0.25, "huber", d, dtype) == (0.5 * 0.25 ** 2, 0.25)
    assert _one(-0.25, "huber", d, dtype) == (0.5 * 0.25 ** 2, -0.25)
    assert _one(d, "huber", d, dtype) == (0.5 * d * d, d)
    assert _one(-d, "huber", d, dtype) == (0.5 * d * d, -d)
    assert _one(3.0, "huber", d, dtype) == (d * (3.0 - 0.5 * d), d)
    assert _one(-3.0, "huber", d, dtype) == (d * (3.0 - 0.5 * d), -d)
    # quantile 0.5 is half the absolute error, value and derivative
    for r in (-2.0, -0.5, 0.0, 0.5, 2.0):
        L1, g1 = _one(r, "mae", None, dtype)
        Lq, gq = _one(r, "quantile", 0.5, dtype)
        assert (Lq, gq) == (0.5 * L1, 0.5 * g1)


def huge(dtype):
    return (1e4, 1e30, 1e300) if key(dtype) is np.float64 else (1e4, 1e30, 3e38)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_saturating_residuals(dtype):
    """Huge residuals: the loss is the exact linear branch (huber's r^2 /
    2 is never used there, even where it would overflow), the derivative
    exactly +-1, +-delta, 1 - q or -q."""
    for v in huge(dtype):
        vf = float(np.asarray(v, dtype))
        for s in (1.0, -1.0):
            r = s * vf
            assert _one(r, "mae", None, dtype) == (vf, s)
            L, g = _one(r, "huber", 1.5, dtype)
            assert g == s * 1.5 and L == 1.5 * (vf - 0.75)
            L, g = _one(r, "quantile", 0.2, dtype)
            assert g == _g(1 - 0.2 if s > 0 else -0.2, dtype)
            assert L == (0.8 if s > 0 else 0.2) * vf
    # z and y both huge with opposite signs: |r| beyond the float range of
    # the dtype is still finite in the kernel's double arithmetic for float32
    big = float(np.finfo(dtype).max)
    z = np.array([[big]], dtype)
    y = np.array([[-big]], dtype)
    L, dz, _ = call(z, y, "mae", None, 1.0)
    if key(dtype) is np.float32:
        assert L == 2 * big and dz[0, 0] == 1
    else:
        assert L == np.inf and dz[0, 0] == 1    # 2 * DBL_MAX overflows: reported


@pytest.mark.parametrize("loss,param", CASE_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_nan_propagates(dtype, loss, param, rng):
    """NaN in z or y: the loss is NaN, dz is NaN exactly there (and db in
    those columns), as in the reference."""
    z, y = make_inputs(rng, 5, 9, dtype)
    z[1, 0] = np.nan
    y[3, 8] = np.nan
    for sw in (None, np.ones(5, dtype)):
        L, dz, db = call(z, y, loss, param, 1.0, sw)
        with np.errstate(invalid="ignore"):
            _, rdz, rdb = R.loss_grad(z, y, loss, 1.0, sw, param)
        assert np.isnan(L)
        np.testing.assert_array_equal(np.isnan(dz), np.isnan(rdz))
        np.testing.assert_array_equal(np.isnan(db), np.isnan(rdb))
        assert np.isnan(dz[1, 0]) and np.isnan(dz[3, 8])
        assert np.isnan(dz).sum() == 2


@pytest.mark.parametrize("loss,param", CASE_PARAMS)
def test_gradient_against_finite_differences(loss, param, rng):
    """Central differences of the kernel's loss, float64, at residuals at
    least 1e-3 away from every kink."""
    m, n = 7, 5
    z, y = make_inputs(rng, m, n, np.float64)
    r = z - y
    kinks = [0.0] + ([param, -param] if loss == "huber" else [])
    for k in kinks:
        close = np.abs(r - k) < 1e-3
        z[close] += 0.01
    sw = rng.uniform(0.5, 2.0, m)
    L, dz, _ = call(z, y, loss, param, SCALE, sw)
    h = 1e-6
    num = np.zeros_like(z)
    for i in range(m):
        for j in range(n):
            zp, zm = z.copy(), z.copy()
            zp[i, j] += h
            zm[i, j] -= h
            num[i, j] = (K.loss_grad(zp, y, None, None, sw, loss, SCALE, param)
                         - K.loss_grad(zm, y, None, None, sw, loss, SCALE, param)) / (2 * h)
    np.testing.assert_allclose(dz, num, rtol=1e-6, atol=1e-8)


# ---- arguments the wrapper refuses -------------------------------------------

def _f(*shape):
    return np.zeros(shape)


@pytest.mark.parametrize("loss,param,msg", [
    ("huber", None, "needs its parameter delta"),
    ("huber", 0.0, "delta must be finite and > 0"),
    ("huber", -1.0, "delta must be finite and > 0"),
    ("huber", np.inf, "delta must be finite and > 0"),
    ("huber", np.nan, "delta must be finite and > 0"),
    ("huber", 10 ** 400, "delta must be finite and > 0"),
    ("huber", True, "must be a real number"),
    ("huber", "1", "must be a real number"),
    ("quantile", None, "needs its parameter quantile"),
    ("quantile", 0.0, r"quantile must lie in \(0, 1\)"),
    ("quantile", 1.0, r"quantile must lie in \(0, 1\)"),
    ("quantile", 1.5, r"quantile must lie in \(0, 1\)"),
    ("quantile", np.nan, r"quantile must lie in \(0, 1\)"),
    ("mae", 1.0, "takes no parameter"),
    ("mse", 0.5, "takes no parameter"),
])
def test_wrapper_refuses_bad_parameters(loss, param, msg):
    with pytest.raises(ValueError, match=msg):
        K.loss_grad(_f(3, 4), _f(3, 4), loss=loss, param=param)


# ---- Network ---------------------------------------------------------------------

def _net(loss, param=None, dtype=np.float64, backend="native", shape=(3, 6, 2),
         act="tanh"):
    kw = {}
    if loss == "huber" and param is not None:
        kw["huber_delta"] = param
    if loss == "quantile" and param is not None:
        kw["quantile"] = param
    n_in, h, n_out = shape
    return Network([Dense(h, act), Dense(n_out)], loss=loss, n_in=n_in, dtype=dtype,
                   seed=4, backend=backend, **kw)


def _data(m, n_in, n_out, dtype, seed=0):
    rs = np.random.RandomState(seed)
    X = rs.randn(m, n_in).astype(dtype)
    Y = (2 * rs.randn(m, n_out)).astype(dtype)
    return X, Y


@pytest.mark.parametrize("loss,param", CASE_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_network_matches_reference_backend(dtype, loss, param):
    """loss, loss_and_grad (with and without sample weights), train_step
    and a minibatch fit with Adam: native = the NumPy reference."""
    a = _net(loss, param, dtype)
    b = _net(loss, param, dtype, backend="reference")
    X, Y = _data(29, 3, 2, dtype)
    sw = np.random.RandomState(1).uniform(0.2, 2.0, 29)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for w in (None, sw):
        assert a.loss(X, Y, w) == pytest.approx(b.loss(X, Y, w), rel=tol)
        la, lb = a.loss_and_grad(X, Y, w), b.loss_and_grad(X, Y, w)
        assert la == pytest.approx(lb, rel=tol)
        np.testing.assert_allclose(a.grads, b.grads, rtol=10 * tol,
                                   atol=10 * tol * np.abs(b.grads).max())
    assert a.train_step(X, Y, 0.05) == pytest.approx(b.train_step(X, Y, 0.05), rel=tol)
    np.testing.assert_allclose(a.params, b.params, rtol=10 * tol, atol=10 * tol)
    ha = a.fit(X, Y, epochs=5, batch_size=8, optimizer="adam", lr=0.01, seed=2)
    hb = b.fit(X, Y, epochs=5, batch_size=8, optimizer="adam", lr=0.01, seed=2)
    np.testing.assert_allclose(ha.loss, hb.loss, rtol=100 * tol)
    np.testing.assert_allclose(a.params, b.params, rtol=100 * tol, atol=100 * tol)


@pytest.mark.parametrize("loss,param", CASE_PARAMS)
def test_network_gradient_against_finite_differences(loss, param):
    """The whole network's gradient (float64) against central differences
    of Network.loss, the data chosen with every residual away from the
    kinks."""
    net = _net(loss, param, shape=(3, 5, 2))
    X, Y = _data(11, 3, 2, np.float64, seed=3)
    out = net.forward(X)
    kinks = [0.0] + ([param, -param] if loss == "huber" else [])
    for k in kinks:                     # move targets off the kinks
        close = np.abs(out - Y - k) < 0.05
        Y[close] += 0.2
    net.loss_and_grad(X, Y)
    g = net.grads.copy()
    h = 1e-6
    num = np.zeros_like(g)
    p0 = net.params.copy()
    for k in range(len(p0)):
        net.params[k] = p0[k] + h
        lp = net.loss(X, Y)
        net.params[k] = p0[k] - h
        lm = net.loss(X, Y)
        net.params[k] = p0[k]
        num[k] = (lp - lm) / (2 * h)
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loss,param", CASE_PARAMS)
@pytest.mark.parametrize("m", [1, 3, 4, 5, 8, 9, 17])
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_lanes_step_matches_gemm_path(dtype, m, loss, param):
    """Narrow networks take the small-network step (lanes) with these
    losses too: the same loss and gradient as the GEMM path, grads
    pre-filled with NaN, partial lane blocks included."""
    net = _net(loss, param, dtype, shape=(2, 4, 1), act="sigmoid")
    assert net._core.lanes
    X, Y = _data(m, 2, 1, dtype, seed=m)
    res = []
    for lanes in (True, False):
        net._core.lanes = lanes
        net.grads[...] = np.nan
        res.append((net.loss_and_grad(X, Y), net.grads.copy()))
    (ll, gl), (lg, gg) = res
    tol = 1e-12 if dtype == np.float64 else 2e-5
    assert np.isfinite(gl).all()
    assert ll == pytest.approx(lg, rel=tol, abs=tol)
    np.testing.assert_allclose(gl, gg, rtol=tol, atol=tol * max(np.abs(gg).max(), 1e-30))


@pytest.mark.parametrize("loss,param", [("mae", None), ("huber", 0.5), ("quantile", 0.8)])
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_lanes_fit_matches_gemm_fit(dtype, loss, param):
    """fit's loop with the lanes step inlined, shuffled minibatches: epoch
    losses and parameters equal the GEMM path's."""
    a, b = (_net(loss, param, dtype, shape=(2, 4, 1)) for _ in range(2))
    b._core.lanes = False
    assert a._core.lanes
    X, Y = _data(13, 2, 1, dtype)
    kw = dict(epochs=30, batch_size=5, lr=0.05, seed=3)
    ha, hb = a.fit(X, Y, **kw), b.fit(X, Y, **kw)
    tol = 1e-10 if dtype == np.float64 else 1e-4
    assert ha.loss[-1] < ha.loss[0]
    np.testing.assert_allclose(ha.loss, hb.loss, rtol=tol)
    np.testing.assert_allclose(a.params, b.params, rtol=tol, atol=tol)


@pytest.mark.parametrize("q", [0.1, 0.5, 0.9])
def test_quantile_network_learns_the_quantile(q):
    """A bias-only model (one output, zero inputs) fitted with the pinball
    loss ends at the q-quantile of the targets, mae at the median: what
    the losses are for, and a check that the gradient's sign convention is
    right."""
    rs = np.random.RandomState(0)
    y = rs.exponential(size=(400, 1))
    X = np.zeros((400, 1))
    net = Network([Dense(1)], loss="quantile", quantile=q, n_in=1, seed=0)
    net.fit(X, y, epochs=3000, lr=0.05)
    lo, hi = np.quantile(y, [q - 0.01, q + 0.01])
    assert lo <= net.layers[0].b[0] <= hi
    med = Network([Dense(1)], loss="mae", n_in=1, seed=0)
    med.fit(X, y, epochs=3000, lr=0.05)
    lo, hi = np.quantile(y, [0.49, 0.51])
    assert lo <= med.layers[0].b[0] <= hi


def test_network_validation_loss_uses_the_parameter():
    """fit's validation loss is the network's loss with its parameter."""
    net = _net("huber", 0.2)
    X, Y = _data(30, 3, 2, np.float64)
    Xv, Yv = _data(10, 3, 2, np.float64, seed=5)
    h = net.fit(X, Y, epochs=2, validation_data=(Xv, Yv))
    assert h.val_loss[-1] == pytest.approx(net.loss(Xv, Yv), rel=1e-14)
    r = R.loss_grad(R.net_forward(net.specs(), "huber", net.params, Xv)[0], Yv,
                    "huber", 1 / 10, None, 0.2)[0]
    assert h.val_loss[-1] == pytest.approx(r, rel=1e-12)


def test_network_names_defaults_and_repr():
    assert Network([Dense(1)], loss="absolute_error").loss_name == "mae"
    assert Network([Dense(1)], loss="L1").loss_name == "mae"
    assert Network([Dense(1)], loss="pinball").loss_name == "quantile"
    n = Network([Dense(1)], loss="huber")
    assert (n.huber_delta, n.quantile, n.loss_param) == (1.0, None, 1.0)
    assert "huber_delta=1.0" in repr(n)
    n = Network([Dense(1)], loss="quantile")
    assert (n.huber_delta, n.quantile) == (None, 0.5)
    assert "quantile=0.5" in repr(n)
    n = Network([Dense(1)], loss="quantile", quantile=np.float32(0.25))
    assert n.quantile == 0.25 and type(n.quantile) is float
    n = Network([Dense(1)])
    assert (n.loss_name, n.loss_param, n.huber_delta, n.quantile) == ("mse", None, None, None)


@pytest.mark.parametrize("kw,msg", [
    (dict(loss="hinge"), "unknown loss 'hinge'"),
    (dict(loss="huber", huber_delta=0), "huber_delta must be > 0"),
    (dict(loss="huber", huber_delta=-2.0), "huber_delta must be > 0"),
    (dict(loss="huber", huber_delta=np.inf), "huber_delta must be a finite real"),
    (dict(loss="huber", huber_delta=np.nan), "huber_delta must be a finite real"),
    (dict(loss="huber", huber_delta="1"), "huber_delta must be a finite real"),
    (dict(loss="huber", huber_delta=True), "huber_delta must be a finite real"),
    (dict(loss="quantile", quantile=0), "quantile must be > 0"),
    (dict(loss="quantile", quantile=1), "quantile must be < 1"),
    (dict(loss="quantile", quantile=-0.5), "quantile must be > 0"),
    (dict(loss="quantile", quantile=np.nan), "quantile must be a finite real"),
    (dict(loss="mae", huber_delta=1.0), "huber_delta applies to loss='huber' only"),
    (dict(loss="mse", quantile=0.5), "quantile applies to loss='quantile' only"),
    (dict(loss="huber", quantile=0.5), "quantile applies to loss='quantile' only"),
])
def test_network_bad_loss_arguments(kw, msg):
    with pytest.raises(ValueError, match=msg):
        Network([Dense(4, "relu"), Dense(1)], n_in=2, **kw)


def test_network_robust_loss_needs_no_softmax():
    with pytest.raises(ValueError, match="softmax output layer needs loss 'softmax_ce'"):
        Network([Dense(3, "softmax")], loss="mae", n_in=2)


def test_netcore_refuses_bad_parameter_itself():
    """fnn_net_init checks the parameter too (a caller bypassing Network)."""
    from fastnn._train import NetCore
    p, g = np.zeros(3), np.zeros(3)
    spec = [(2, 1, K.ACTIVATIONS["identity"], 1, 0.0, 0, 2)]
    for loss, param in (("huber", 0.0), ("huber", np.inf), ("huber", np.nan),
                        ("quantile", 0.0), ("quantile", 1.0)):
        with pytest.raises(ValueError, match="loss or its parameter"):
            NetCore(spec, K.LOSSES[loss], p, g, 2, param)
    with pytest.raises(ValueError, match="loss or its parameter"):
        NetCore(spec, 99, p, g, 2)
    NetCore(spec, K.LOSSES["quantile"], p, g, 2, 0.3)    # a good one builds


# ---- model files and pickling ----------------------------------------------------

def _edited_copy(src, dst, fn):
    """src with its header edited by fn and every hash recomputed: only the
    semantic checks can catch the edit."""
    import hashlib
    import json
    import zipfile
    with zipfile.ZipFile(src) as z:
        mem = {n: z.read(n) for n in z.namelist()}
    h = json.loads(mem["header.json"])
    fn(h)
    mem["header.json"] = json.dumps(h).encode()
    mem["header.sha256"] = hashlib.sha256(mem["header.json"]).hexdigest().encode()
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
        for n, b in mem.items():
            z.writestr(n, b)
    return dst


@pytest.mark.parametrize("loss,param", CASE_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_network_save_load_pickle_copy(dtype, loss, param, tmp_path):
    """The loss and its parameter survive fastnn.save / load, pickling and
    deepcopy: the same loss values and the same continued training."""
    import copy
    import fastnn
    net = _net(loss, param, dtype)
    X, Y = _data(20, 3, 2, dtype)
    net.fit(X, Y, epochs=2, batch_size=7, optimizer="adam", seed=0)
    fastnn.save(net, tmp_path / "n.fnn")
    for other in (fastnn.load(tmp_path / "n.fnn"), pickle.loads(pickle.dumps(net)),
                  copy.deepcopy(net)):
        assert (other.loss_name, other.loss_param) == (net.loss_name, net.loss_param)
        assert other._core is not None
        assert other.loss(X, Y) == net.loss(X, Y)
        a, b = copy.deepcopy(net), other
        a.fit(X, Y, epochs=2, batch_size=7, optimizer="adam", seed=1)
        b.fit(X, Y, epochs=2, batch_size=7, optimizer="adam", seed=1)
        np.testing.assert_array_equal(a.params, b.params)


@pytest.mark.parametrize("edit,match", [
    (lambda h: h.pop("loss_param"), "loss_param goes with"),
    (lambda h: h.update(loss="mae"), "loss_param goes with"),
    (lambda h: h.update(loss_param=0.0), "huber_delta must be > 0"),
    (lambda h: h.update(loss_param="inf"), "loss_param must be a number"),
    (lambda h: h.update(loss_param="x"), "loss_param must be a number"),
    (lambda h: h.update(loss="quantile", loss_param=1.0), "quantile must be < 1"),
])
def test_model_file_loss_param_checked(tmp_path, edit, match):
    import fastnn
    net = _net("huber", 0.7)
    fastnn.save(net, tmp_path / "n.fnn")
    assert fastnn.load(tmp_path / "n.fnn").huber_delta == 0.7
    bad = _edited_copy(tmp_path / "n.fnn", tmp_path / "bad.fnn", edit)
    with pytest.raises(fastnn.FormatError, match=match):
        fastnn.load(bad)


def test_model_file_without_parameter_has_no_entry(tmp_path):
    """Losses without a parameter write no loss_param, and one added is
    refused."""
    import json
    import zipfile
    import fastnn
    fastnn.save(_net("mae"), tmp_path / "n.fnn")
    with zipfile.ZipFile(tmp_path / "n.fnn") as z:
        assert "loss_param" not in json.loads(z.read("header.json"))
    bad = _edited_copy(tmp_path / "n.fnn", tmp_path / "bad.fnn",
                       lambda h: h.update(loss_param=1.0))
    with pytest.raises(fastnn.FormatError, match="loss_param goes with"):
        fastnn.load(bad)


# ---- MLPRegressor ----------------------------------------------------------------

sklearn = pytest.importorskip("sklearn", reason="the estimator tests need scikit-learn")
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastnn.sklearn import MLPRegressor  # noqa: E402

EST_CASES = [("absolute_error", {}), ("huber", {"huber_delta": 0.7}),
             ("quantile", {"quantile": 0.3})]
EST_PARAMS = [pytest.param(l, kw, id=l) for l, kw in EST_CASES]
NET_LOSS = {"absolute_error": "mae", "huber": "huber", "quantile": "quantile"}


def _reg_data(n=60, n_out=1, seed=0):
    rs = np.random.RandomState(seed)
    X = rs.randn(n, 4)
    Y = X @ rs.randn(4, n_out) + 0.3 * rs.standard_t(2, size=(n, n_out))
    return X, (Y[:, 0] if n_out == 1 else Y)


def _quiet():
    warnings.simplefilter("ignore", ConvergenceWarning)


@parametrize_with_checks([MLPRegressor(loss=l, max_iter=100, **kw) for l, kw in EST_CASES]
                         + [MLPRegressor(loss="huber", solver="lbfgs", max_iter=100)])
def test_estimator_checks(estimator, check):
    """scikit-learn's own estimator checks pass with the robust losses."""
    with warnings.catch_warnings():
        _quiet()
        check(estimator)


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_huber_with_huge_delta_is_squared_error(solver):
    """huber with a delta beyond every residual is r^2 / 2, the squared
    error: the same gradients, so the same weights bit for bit, as
    loss='squared_error'; the same reported losses to the order of the
    vectorized sums (squared error's loop fuses multiply-adds that
    huber's select keeps apart)."""
    X, y = _reg_data(n_out=2)
    kw = dict(hidden_layer_sizes=(7,), max_iter=15, random_state=0, solver=solver)
    with warnings.catch_warnings():
        _quiet()
        a = MLPRegressor(loss="huber", huber_delta=1e300, **kw).fit(X, y)
        b = MLPRegressor(**kw).fit(X, y)
    assert a.loss_ == pytest.approx(b.loss_, rel=1e-14)
    assert a.n_iter_ == b.n_iter_
    for u, v in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        if solver == "lbfgs":
            # its line search compares loss values: allow their last bits
            np.testing.assert_allclose(u, v, rtol=1e-9, atol=1e-12)
        else:
            np.testing.assert_array_equal(u, v)
    if solver != "lbfgs":
        np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-14)


def _reported_loss(est, X, Y, loss, kw):
    """scikit-learn's definition: the mean over samples and outputs of the
    loss at the current weights, plus 0.5 alpha ||W||^2 / n_samples."""
    r = est.predict(X).reshape(Y.shape) - Y
    param = next(iter(kw.values()), None)
    l, _ = R.robust_loss(r, NET_LOSS[loss], param)
    l2 = sum(float((W.astype(np.float64) ** 2).sum()) for W in est.coefs_)
    return float(l.mean()) + 0.5 * est.alpha * l2 / len(X)


@pytest.mark.parametrize("n_out", [1, 3])
@pytest.mark.parametrize("loss,kw", EST_PARAMS)
def test_reported_loss_and_step(loss, kw, n_out):
    """One full-batch sgd step (partial_fit): loss_ is the mean loss over
    samples and outputs at the weights before the step plus the L2 term;
    the step follows the gradient of the sum over outputs, as scikit-learn
    does for squared error: params - lr (grad + alpha W / n)."""
    X, y = _reg_data(n_out=n_out)
    Y = y.reshape(len(X), -1)
    est = MLPRegressor(loss=loss, hidden_layer_sizes=(6,), solver="sgd", momentum=0.0,
                       batch_size=len(X), learning_rate_init=0.05, alpha=0.01,
                       random_state=0, shuffle=False, **kw)
    est.partial_fit(X, y)
    want = _reported_loss(est, X, Y, loss, kw)
    net = est._net
    before = net.params.copy()
    specs = net.specs()
    _, g = R.net_loss_grad(specs, NET_LOSS[loss], before, X, Y, 1 / len(X),
                           loss_param=net.loss_param)
    g[:net.n_weights] += est.alpha / len(X) * before[:net.n_weights]
    est.partial_fit(X, y)
    assert est.loss_ == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(net.params, before - 0.05 * g, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("loss,kw", EST_PARAMS)
def test_lbfgs_reports_the_loss_at_its_weights(loss, kw):
    X, y = _reg_data()
    with warnings.catch_warnings():
        _quiet()
        est = MLPRegressor(loss=loss, solver="lbfgs", hidden_layer_sizes=(5,), max_iter=30,
                           random_state=0, **kw).fit(X, y)
    want = _reported_loss(est, X, y.reshape(-1, 1), loss, kw)
    assert est.loss_ == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss,kw", EST_PARAMS)
def test_robust_fit_improves_and_predicts(loss, kw, dtype):
    X, y = _reg_data(n=200)
    with warnings.catch_warnings():
        _quiet()
        est = MLPRegressor(loss=loss, hidden_layer_sizes=(16,), max_iter=300,
                           learning_rate_init=0.01, random_state=0, dtype=dtype,
                           **kw).fit(X.astype(dtype), y)
    assert est._net.loss_name == NET_LOSS[loss]
    assert est.coefs_[0].dtype == dtype
    assert est.loss_curve_[-1] < 0.5 * est.loss_curve_[0]
    assert est.score(X, y) > 0.8


def test_quantile_estimator_covers_its_quantile():
    """A 0.9-quantile regressor has about 90% of training targets below
    its predictions (0.1: about 10%)."""
    rs = np.random.RandomState(0)
    X = rs.uniform(-2, 2, (1000, 1))
    y = X[:, 0] + rs.normal(size=1000) * (0.5 + 0.25 * X[:, 0] ** 2)
    for q in (0.1, 0.9):
        with warnings.catch_warnings():
            _quiet()
            est = MLPRegressor(loss="quantile", quantile=q, hidden_layer_sizes=(16,),
                               learning_rate_init=0.01, max_iter=200,
                               random_state=0).fit(X, y)
        cover = float(np.mean(y <= est.predict(X)))
        assert abs(cover - q) < 0.04, cover


@pytest.mark.parametrize("kw,msg", [
    (dict(loss="mae"), "'loss' parameter of MLPRegressor must be a str among"),
    (dict(loss="huber", huber_delta=0), "'huber_delta' parameter of MLPRegressor"),
    (dict(loss="huber", huber_delta=np.inf), "'huber_delta' parameter of MLPRegressor"),
    (dict(loss="huber", huber_delta=np.nan), "'huber_delta' parameter of MLPRegressor"),
    (dict(loss="huber", huber_delta="1"), "'huber_delta' parameter of MLPRegressor"),
    (dict(loss="quantile", quantile=0.0), "'quantile' parameter of MLPRegressor"),
    (dict(loss="quantile", quantile=1), "'quantile' parameter of MLPRegressor"),
    (dict(quantile=1.5), "'quantile' parameter of MLPRegressor"),
    (dict(huber_delta=-1.0), "'huber_delta' parameter of MLPRegressor"),
])
def test_estimator_bad_parameters(kw, msg):
    """Checked at fit before anything runs; an already fitted estimator
    keeps its weights."""
    X, y = _reg_data()
    with pytest.raises(ValueError, match=re.escape(msg)):
        MLPRegressor(**kw).fit(X, y)
    with warnings.catch_warnings():
        _quiet()
        est = MLPRegressor(hidden_layer_sizes=(3,), max_iter=2, random_state=0).fit(X, y)
    before = [c.copy() for c in est.coefs_]
    est.set_params(**kw)
    with pytest.raises(ValueError, match=re.escape(msg)):
        est.fit(X, y)
    for a, b in zip(before, est.coefs_):
        np.testing.assert_array_equal(a, b)


def test_defaults_unchanged():
    est = MLPRegressor()
    assert (est.loss, est.huber_delta, est.quantile) == ("squared_error", 1.0, 0.5)
    X, y = _reg_data()
    with warnings.catch_warnings():
        _quiet()
        est.set_params(max_iter=2, hidden_layer_sizes=(3,)).fit(X, y)
    assert est._net.loss_name == "mse" and est._net.loss_param is None


def test_warm_start_follows_set_params():
    """Changing loss or its parameter between warm-started fits trains the
    next fit with the new loss, from the weights reached."""
    X, y = _reg_data()
    with warnings.catch_warnings():
        _quiet()
        est = MLPRegressor(hidden_layer_sizes=(5,), max_iter=3, warm_start=True,
                           random_state=0, solver="sgd").fit(X, y)
        w = [c.copy() for c in est.coefs_]
        est.set_params(loss="huber", huber_delta=0.4, max_iter=1)
        est.fit(X, y)
        assert est._net.loss_name == "huber" and est._net.loss_param == 0.4
        assert not np.array_equal(w[0], est.coefs_[0])
        est.set_params(huber_delta=0.9)
        est.fit(X, y)
        assert est._net.loss_param == 0.9
        assert est.coefs_[0] is est._net.layers[0].W


def test_pickle_and_clone_keep_the_loss():
    X, y = _reg_data()
    with warnings.catch_warnings():
        _quiet()
        est = MLPRegressor(loss="quantile", quantile=0.8, hidden_layer_sizes=(5,),
                           max_iter=5, random_state=0).fit(X, y)
        est2 = pickle.loads(pickle.dumps(est))
        np.testing.assert_array_equal(est.predict(X), est2.predict(X))
        est.partial_fit(X, y)
        est2.partial_fit(X, y)
    assert est2._net.loss_name == "quantile" and est2._net.loss_param == 0.8
    assert est.loss_ == est2.loss_
    np.testing.assert_array_equal(est.predict(X), est2.predict(X))
    c = clone(est)
    assert (c.loss, c.quantile) == ("quantile", 0.8)


@pytest.mark.parametrize("loss,kw", EST_PARAMS)
def test_estimator_save_load(loss, kw, tmp_path):
    """fastnn.save / load keep the loss and its parameter; a file whose
    network loss disagrees with its parameters is refused."""
    import fastnn
    X, y = _reg_data()
    with warnings.catch_warnings():
        _quiet()
        est = MLPRegressor(loss=loss, hidden_layer_sizes=(5,), max_iter=3,
                           random_state=0, **kw).fit(X, y)
        fastnn.save(est, tmp_path / "e.fnn")
        other = fastnn.load(tmp_path / "e.fnn")
        assert other.get_params() == est.get_params()
        assert (other._net.loss_name, other._net.loss_param) == \
            (est._net.loss_name, est._net.loss_param)
        np.testing.assert_array_equal(other.predict(X), est.predict(X))
        est.partial_fit(X, y)
        other.partial_fit(X, y)
    assert other.loss_ == est.loss_
    np.testing.assert_array_equal(other.predict(X), est.predict(X))

    def wrong_loss(h):
        h["estimator"]["params"]["loss"] = "squared_error"
    bad = _edited_copy(tmp_path / "e.fnn", tmp_path / "bad.fnn", wrong_loss)
    with pytest.raises(fastnn.FormatError, match="the network's loss"):
        fastnn.load(bad)
    if loss != "absolute_error":
        name = next(iter(kw))

        def wrong_param(h):
            h["estimator"]["params"][name] = 0.25
        bad = _edited_copy(tmp_path / "e.fnn", tmp_path / "bad.fnn", wrong_param)
        with pytest.raises(fastnn.FormatError, match="the network's loss"):
            fastnn.load(bad)


def test_estimator_pickled_after_set_params_restores():
    """A fitted estimator whose loss was changed by set_params (not refit)
    pickles its network with the loss its parameters now ask for, and
    unpickles."""
    X, y = _reg_data()
    with warnings.catch_warnings():
        _quiet()
        est = MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(X, y)
    est.set_params(loss="huber", huber_delta=0.3)
    other = pickle.loads(pickle.dumps(est))
    assert (other._net.loss_name, other._net.loss_param) == ("huber", 0.3)
    np.testing.assert_array_equal(other.predict(X), est.predict(X))


def test_grid_search_over_the_parameter():
    X, y = _reg_data(n=80)
    with warnings.catch_warnings():
        _quiet()
        gs = GridSearchCV(MLPRegressor(loss="huber", hidden_layer_sizes=(4,), max_iter=20,
                                       random_state=0),
                          {"huber_delta": [0.1, 1.0]}, cv=2).fit(X, y)
    assert gs.best_params_["huber_delta"] in (0.1, 1.0)
    assert gs.best_estimator_._net.loss_param == gs.best_params_["huber_delta"]


@pytest.mark.parametrize("loss,kw", EST_PARAMS)
def test_to_sklearn_refuses_robust_losses(loss, kw):
    est = MLPRegressor(loss=loss, **kw)
    with pytest.raises(ValueError, match=f"loss='{loss}' is a fastnn-only loss"):
        est.to_sklearn()


def test_to_sklearn_drops_unused_loss_parameters():
    from sklearn.neural_network import MLPRegressor as SkMLPRegressor
    sk_est = MLPRegressor(huber_delta=3.0, quantile=0.1, max_iter=7).to_sklearn()
    assert isinstance(sk_est, SkMLPRegressor) and sk_est.max_iter == 7
    with warnings.catch_warnings():
        _quiet()
        sk_fitted = SkMLPRegressor(hidden_layer_sizes=(2,), max_iter=2).fit(*_reg_data())
    back = MLPRegressor.from_sklearn(sk_fitted)
    assert (back.huber_delta, back.quantile) == (1.0, 0.5)


@pytest.mark.parametrize("loss,kw", EST_PARAMS)
def test_onnx_export_is_the_prediction(loss, kw):
    """The loss changes nothing in the exported graph."""
    pytest.importorskip("onnx", reason="ONNX export needs onnx")
    ort = pytest.importorskip("onnxruntime", reason="running the graph needs onnxruntime")
    import fastnn
    X, y = _reg_data()
    with warnings.catch_warnings():
        _quiet()
        est = MLPRegressor(loss=loss, hidden_layer_sizes=(5,), max_iter=5,
                           random_state=0, **kw).fit(X, y)
    net = Network([Dense(4, "relu"), Dense(2)], loss=NET_LOSS[loss], n_in=4, seed=0,
                  **{("huber_delta" if k == "huber_delta" else "quantile"): v
                     for k, v in kw.items()})
    for model, want in ((est, est.predict(X)), (net, net.predict(X))):
        proto = fastnn.to_onnx(model, dtype=np.float64)
        sess = ort.InferenceSession(proto.SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: X})[0]
        np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-12, atol=1e-12)
