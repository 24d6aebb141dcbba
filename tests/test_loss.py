"""Tier 2 for csrc/loss.c: loss_grad (sse, mse, bce, softmax_ce) against
fastnn.reference, both dtypes.

Tolerances: the contract computes in double internally for both dtypes, so
the loss value must match the float64 reference to LOSS_RTOL = 1e-12
relative to the magnitude of the summed terms, for float32 inputs too, and
a float32 dz must be its float64 value rounded once (<= 1 ulp).  dz and db
otherwise use conftest.RTOL with atol scaled by max |dz| / column sums of
|dz|.  softplus (bce), built on vmath's exp and log1p, is held to 3 ulp
over a dense sweep (measured maximum ~1.9).
"""
import numpy as np
import pytest

from fastnn import _kernels as K
from fastnn import reference as R
from conftest import (DTYPE_PARAMS, ROWS, SIZES, assert_close,
                      assert_pad_untouched, flush_hi, key, ld_of, nan_like, padded,
                      shape_params, ulp_error)

LOSS_RTOL = 1e-12
LOSSES = ("sse", "mse", "bce", "softmax_ce")
LOSS_PARAMS = [pytest.param(x, id=x) for x in LOSSES]
SW = [pytest.param(False, id="nosw"), pytest.param(True, id="sw")]
SHAPES = shape_params(ROWS, SIZES)
SCALE = 0.37


def make_inputs(rng, loss, m, n, dtype, zscale=3.0):
    z = rng.normal(scale=zscale, size=(m, n))
    if loss == "bce":
        y = rng.uniform(0, 1, (m, n))
        y[rng.uniform(size=(m, n)) < 0.3] = 1.0
    elif loss == "softmax_ce":
        y = rng.uniform(0, 1, (m, n))            # need not sum to 1
        y[0] = np.eye(n)[rng.integers(0, n)]     # one one-hot row
    else:
        y = rng.normal(size=(m, n))
    return z.astype(dtype), y.astype(dtype)


def loss_magnitude(z, y, loss, scale, sw):
    """scale * sum_i |w_i| * sum_j |terms|: the size of what is summed."""
    z, y = z.astype(np.float64), y.astype(np.float64)
    w = np.ones(len(z)) if sw is None else np.abs(sw.astype(np.float64))
    if loss in ("sse", "mse"):
        t = (z - y) ** 2
    elif loss == "bce":
        t = np.logaddexp(0, z) + np.abs(y * z)
    else:
        mx = z.max(axis=1, keepdims=True)
        lse = mx + np.log(np.exp(z - mx).sum(axis=1, keepdims=True))
        t = np.abs(lse * y) + np.abs(y * z)
    return abs(scale) * float((w * t.sum(axis=1)).sum()) + 1e-300


def call(z, y, loss, scale=SCALE, sw=None, with_db=True):
    m, n = z.shape
    dz = nan_like(z)
    db = nan_like(n, z.dtype) if with_db else None
    L = K.loss_grad(z, y, dz, db, sw, loss, scale)
    return L, dz, db


def check_against_reference(L, dz, db, z, y, loss, scale, sw, dtype):
    rL, rdz, rdb = R.loss_grad(z, y, loss, scale, sw)
    assert isinstance(L, float)
    assert L == pytest.approx(rL, rel=LOSS_RTOL,
                              abs=LOSS_RTOL * loss_magnitude(z, y, loss,
                                                             scale, sw))
    if dz is not None:
        assert_close(dz, rdz, dtype)
    if db is not None:
        assert_close(db, rdb, dtype,
                     scale=float(np.abs(rdz).sum(axis=0).max()))


@pytest.mark.parametrize("m,n", SHAPES)
@pytest.mark.parametrize("weighted", SW)
@pytest.mark.parametrize("loss", LOSS_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_loss_grad(dtype, loss, weighted, m, n, rng):
    z, y = make_inputs(rng, loss, m, n, dtype)
    sw = rng.uniform(0.1, 3.0, m).astype(dtype) if weighted else None
    L, dz, db = call(z, y, loss, SCALE, sw)
    check_against_reference(L, dz, db, z, y, loss, SCALE, sw, dtype)
    # db is the column sum of the dz the kernel wrote
    assert_close(db, dz.astype(np.float64).sum(axis=0), dtype,
                 scale=float(np.abs(dz).astype(np.float64).sum(axis=0).max()))


@pytest.mark.parametrize("loss", LOSS_PARAMS)
def test_loss_grad_float32_is_double_inside(loss, rng):
    """float32 in, double arithmetic inside: the loss equals the float64
    computation on the same inputs (1e-12), dz is it rounded once."""
    m, n = 17, 33
    z, y = make_inputs(rng, loss, m, n, np.float32)
    sw = rng.uniform(0.1, 3.0, m).astype(np.float32)
    L32, dz32, _ = call(z, y, loss, SCALE, sw)
    L64, dz64, _ = call(z.astype(np.float64), y.astype(np.float64), loss,
                        SCALE, sw.astype(np.float64))
    mag = loss_magnitude(z, y, loss, SCALE, sw)
    assert abs(L32 - L64) <= LOSS_RTOL * mag
    # one rounding of the double result (plus its own few-ulp error)
    err = np.abs(dz32.astype(np.float64) - dz64)
    ulp32 = np.spacing(np.abs(dz64).astype(np.float32)).astype(np.float64)
    assert (err <= ulp32 + 1e-14 * np.abs(dz64).max()).all(), \
        f"float32 dz off by {np.max(err / ulp32):.2f} ulp"


@pytest.mark.parametrize("loss", LOSS_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_loss_only_when_dz_is_none(dtype, loss, rng):
    z, y = make_inputs(rng, loss, 9, 7, dtype)
    sw = rng.uniform(0.1, 3.0, 9).astype(dtype)
    L_only = K.loss_grad(z, y, None, None, sw, loss, SCALE)
    L, _, _ = call(z, y, loss, SCALE, sw)
    assert L_only == L
    check_against_reference(L_only, None, None, z, y, loss, SCALE, sw, dtype)


@pytest.mark.parametrize("loss", LOSS_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_loss_grad_without_db(dtype, loss, rng):
    z, y = make_inputs(rng, loss, 8, 17, dtype)
    dz = nan_like(z)
    L = K.loss_grad(z, y, dz, None, None, loss, SCALE)
    check_against_reference(L, dz, None, z, y, loss, SCALE, None, dtype)


@pytest.mark.parametrize("m,n", shape_params((1, 8), (1, 7, 16, 33)))
@pytest.mark.parametrize("loss", LOSS_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_loss_grad_in_place(dtype, loss, m, n, rng):
    """dz may be z's array (same stride)."""
    z, y = make_inputs(rng, loss, m, n, dtype)
    sw = rng.uniform(0.1, 3.0, m).astype(dtype)
    work = z.copy()
    db = nan_like(n, dtype)
    L = K.loss_grad(work, y, work, db, sw, loss, SCALE)
    check_against_reference(L, work, db, z, y, loss, SCALE, sw, dtype)


@pytest.mark.parametrize("loss", LOSS_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_sample_weights(dtype, loss, rng):
    """sw of ones is no sw; integer weights equal repeated rows; a zero
    weight zeroes its row of dz."""
    m, n = 6, 5
    z, y = make_inputs(rng, loss, m, n, dtype)
    L0, dz0, db0 = call(z, y, loss, 1.0, None)
    L1, dz1, db1 = call(z, y, loss, 1.0, np.ones(m, dtype))
    assert L1 == pytest.approx(L0, rel=1e-14)
    np.testing.assert_array_equal(dz1, dz0)

    reps = np.array([0, 1, 2, 3, 1, 2])
    Lw, dzw, dbw = call(z, y, loss, 1.0, reps.astype(dtype))
    Lr, dzr, dbr = call(np.repeat(z, reps, axis=0), np.repeat(y, reps, axis=0),
                        loss, 1.0, None)
    assert Lw == pytest.approx(Lr, rel=1e-12)
    assert_close(dbw, dbr, dtype, scale=float(np.abs(dzr).sum(0).max()))
    np.testing.assert_array_equal(dzw[0], np.zeros(n, dtype))
    assert_close(dzw[3], 3 * dz0[3], dtype)


@pytest.mark.parametrize("loss", LOSS_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_scale_is_linear(dtype, loss, rng):
    z, y = make_inputs(rng, loss, 7, 9, dtype)
    L1, dz1, db1 = call(z, y, loss, 1.0)
    L2, dz2, db2 = call(z, y, loss, 0.25)          # a power of 2: exact
    assert L2 == pytest.approx(0.25 * L1, rel=1e-15)
    np.testing.assert_array_equal(dz2, (0.25 * dz1.astype(np.float64))
                                  .astype(dtype))


# ---- saturation, NaN, accuracy ---------------------------------------------------

def huge(dtype):
    return (1e4, 1e30, 1e300) if key(dtype) is np.float64 else (1e4, 1e30, 3e38)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_bce_saturates(dtype):
    """Large |z|: softplus(z) = max(z, 0) exactly (y = 0), the loss with
    y = 1 within 3 ulp of softplus(z) - z, dz = sigmoid(z) - y exactly
    0 / +-1; finite, never NaN (no inf - inf, no overflow of e^|z|)."""
    zs = [40.0, 100.0, 745.5, 1000.0] + list(huge(dtype))
    zs = np.array(zs + [-v for v in zs if v > 745], dtype)
    for zv in zs:
        zf = float(zv)
        for yv in (0.0, 1.0):
            L, dz, db = call(np.array([[zv]], dtype), np.array([[yv]], dtype),
                             "bce", 1.0)
            assert np.isfinite(L) and np.isfinite(dz).all()
            if yv == 0:
                assert L == max(zf, 0.0), f"softplus({zf}) = {L}"
            else:
                zl = np.longdouble(zf)        # max(z,0) - z is exact
                ref = (max(zl, 0) - zl) + np.log1p(np.exp(-abs(zl)))
                assert ulp_error(L, ref, np.float64) <= 3, \
                    f"bce(z={zf}, y=1) = {L}, want {ref}"
            p = 1.0 if zf > 0 else 0.0
            assert dz[0, 0] == p - yv, f"dz(z={zf}, y={yv}) = {dz[0, 0]}"
            assert db[0] == dz[0, 0]


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_bce_negative_logits_underflow(dtype):
    """softplus(z) ~ e^z for very negative z: correctly rounded down to the
    smallest normal double, exactly 0 below it (the loss is double for both
    dtypes; vmath.h flushes subnormal results)."""
    zs = np.array([-40.0, -100.0, -700.0, -720.0, -740.0], dtype)
    for zv in zs:
        L, dz, _ = call(np.array([[zv]], dtype), np.zeros((1, 1), dtype),
                        "bce", 1.0)
        ref = flush_hi(np.log1p(np.exp(np.longdouble(zv))), np.float64)
        assert ulp_error(L, ref, np.float64) <= 3, f"z={zv}: {L} vs {ref}"


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_softmax_ce_saturates(dtype):
    """Logit gaps past exp's underflow (e^-v = 0 in double): lse = max
    exactly, the loss and p - y exact, no NaN."""
    for v in (1000.0,) + huge(dtype):
        z = np.array([[v, 0.0, -v], [0.0, v, 0.0]], dtype)
        y = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype)
        L, dz, db = call(z, y, "softmax_ce", 1.0)
        vf = float(np.asarray(v, dtype))
        assert L == vf, f"v={v}: loss {L}, want {vf}"
        np.testing.assert_array_equal(
            dz, np.array([[0, 0, 0], [0, 1, -1]], dtype))


@pytest.mark.parametrize("loss", LOSS_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_nan_propagates(dtype, loss, rng):
    z, y = make_inputs(rng, loss, 5, 9, dtype)
    z[1, 0] = np.nan
    z[3, 8] = np.nan
    L, dz, db = call(z, y, loss, 1.0)
    with np.errstate(invalid="ignore"):
        _, rdz, rdb = R.loss_grad(z, y, loss, 1.0)
    assert np.isnan(L)
    np.testing.assert_array_equal(np.isnan(dz), np.isnan(rdz))
    np.testing.assert_array_equal(np.isnan(db), np.isnan(rdb))
    assert np.isnan(dz[1, 0]) and np.isnan(dz[3, 8])
    assert np.isfinite(dz[[0, 2, 4]]).all()


def softplus_hi(x):
    x = np.asarray(x, dtype=np.longdouble)
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


@pytest.mark.parametrize("lo,hi", [(-745.0, -1.0), (-1.0, 1.0), (-40.0, 40.0),
                                   (1.0, 40.0), (-1e-6, 1e-6)],
                         ids=lambda v: f"{v:g}")
def test_softplus_accuracy_ulps(lo, hi):
    """bce loss with y = 0 is softplus(z): exp and log1p of vmath.h, <= 3
    ulp of double."""
    x = np.linspace(lo, hi, 10001)
    zero = np.zeros((1, 1))
    got = np.array([K.loss_grad(np.array([[v]]), zero, None, None, None,
                                "bce", 1.0) for v in x])
    err = ulp_error(got, flush_hi(softplus_hi(x), np.float64), np.float64)
    assert err.max() <= 3, f"{err.max():.2f} ulp at z={x[np.argmax(err)]!r}"


# ---- arguments the wrapper must refuse -------------------------------------------

def _f(*shape, dtype=np.float64):
    return np.zeros(shape, dtype)


BAD_CALLS = {
    "y-shape": lambda: K.loss_grad(_f(3, 4), _f(3, 5)),
    "dz-shape": lambda: K.loss_grad(_f(3, 4), _f(3, 4), _f(4, 4)),
    "db-without-dz": lambda: K.loss_grad(_f(3, 4), _f(3, 4), None, _f(4)),
    "db-length": lambda: K.loss_grad(_f(3, 4), _f(3, 4), _f(3, 4), _f(3)),
    "sw-length": lambda: K.loss_grad(_f(3, 4), _f(3, 4), None, None, _f(4)),
    "unknown-loss": lambda: K.loss_grad(_f(3, 4), _f(3, 4), loss="hinge"),
}


@pytest.mark.parametrize("call_", sorted(BAD_CALLS))
def test_bad_arguments_raise_value_error(call_):
    with pytest.raises(ValueError):
        BAD_CALLS[call_]()


# ---- padded row strides ----------------------------------------------------------

SENT = 7.0


@pytest.mark.parametrize("loss", ["bce", "softmax_ce"])
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_loss_grad_padded(dtype, loss, rng):
    """Through the wrapper: z, y, dz with ld > n."""
    m, n = 17, 33
    z, y = make_inputs(rng, loss, m, n, dtype)
    zv, _ = padded(z, pad=3)
    yv, _ = padded(y, pad=5)
    dzv, dzbig = padded(np.full((m, n), np.nan, dtype), pad=4, fill=SENT)
    db = nan_like(n, dtype)
    L = K.loss_grad(zv, yv, dzv, db, None, loss, SCALE)
    check_against_reference(L, dzv, db, z, y, loss, SCALE, None, dtype)
    assert_pad_untouched(dzbig, n, SENT)


@pytest.mark.parametrize("m,n", [pytest.param(17, 33, id="m17-n33"),
                                 pytest.param(3, 8, id="m3-n8")])
@pytest.mark.parametrize("loss", LOSS_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_c_loss_grad_strided(capi, dtype, loss, m, n, rng):
    """The C entry point with ld > n for z, y and dz, and in place."""
    z, y = make_inputs(rng, loss, m, n, dtype)
    sw = rng.uniform(0.1, 3.0, m).astype(dtype)
    code = K.LOSSES[loss]
    zv, _ = padded(z, pad=3)
    yv, _ = padded(y, pad=5)
    dzv, dzbig = padded(np.full((m, n), np.nan, dtype), pad=4, fill=SENT)
    db = nan_like(n, dtype)
    L = capi("loss_grad", dtype, m, n, code, 0.0, SCALE, zv, ld_of(zv), yv,
             ld_of(yv), sw, dzv, ld_of(dzv), db)
    check_against_reference(L, dzv, db, z, y, loss, SCALE, sw, dtype)
    assert_pad_untouched(dzbig, n, SENT)
    # in place, shared padded stride
    w, wbig = padded(z, fill=SENT)
    L = capi("loss_grad", dtype, m, n, code, 0.0, SCALE, w, ld_of(w), yv,
             ld_of(yv), sw, w, ld_of(w), None)
    check_against_reference(L, w, None, z, y, loss, SCALE, sw, dtype)
    assert_pad_untouched(wbig, n, SENT)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_const_inputs_accept_read_only_arrays(dtype, rng):
    z, y = make_inputs(rng, "softmax_ce", 5, 7, dtype)
    sw = rng.uniform(0.5, 2, 5).astype(dtype)
    for a in (z, y, sw):
        a.setflags(write=False)
    L, dz, db = call(z, y, "softmax_ce", SCALE, sw)
    check_against_reference(L, dz, db, z, y, "softmax_ce", SCALE, sw, dtype)
