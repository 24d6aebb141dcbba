"""Tier 2 for csrc/act.c: bias_act_forward / bias_act_backward /
maxout_forward / maxout_backward / softmax_forward against fastnn.reference,
plus the accuracy of the vectorized exp / expm1 / tanh of csrc/vmath.h
measured through these kernels.

Tolerances: conftest.RTOL (float64 1e-12, float32 1e-5) against the float64
reference on the same rounded inputs.  Accuracy sweeps assert ulp bounds
against long double (64-bit mantissa) values of the true function:
expm1 (elu) <= 2 ulp, sigmoid / tanh / softmax <= 4 ulp (measured maxima
are ~1.1 and ~2.6 ulp: a composition of a <= 1 ulp exp with one division
and one multiplication).  Saturated results that round to an exact limit
(0, +-1, -alpha) must be exactly that limit.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from fastnn import _kernels as K
from fastnn import reference as R
from conftest import (ALPHA, DTYPE_PARAMS, ELEMENTWISE, ROWS,
                      assert_close, assert_pad_untouched, f32round, flush_hi, key,
                      ld_of, nan_like, padded, shape_params, sigmoid_hi,
                      ulp_error)

ACT_PARAMS = [pytest.param(a, id=a) for a in ELEMENTWISE]
SHAPES = shape_params()
BIAS = [pytest.param(True, id="bias"), pytest.param(False, id="nobias")]
PIECES = [pytest.param(k, id=f"k{k}") for k in (2, 3, 4)]


def alpha_of(act, dtype):
    return f32round(ALPHA.get(act, 0.0), dtype)


def hi_activation(x, act, alpha):
    """The activation in long double (the 'true' value for ulp checks)."""
    x = np.asarray(x, dtype=np.longdouble)
    a = np.longdouble(alpha)
    if act == "identity":
        return x
    if act == "sigmoid":
        return sigmoid_hi(x)
    if act == "tanh":
        return np.tanh(x)
    if act == "relu":
        return np.where(x < 0, np.longdouble(0), x)
    if act == "leaky_relu":
        return np.where(x < 0, a * x, x)
    if act == "elu":
        return np.where(x < 0, a * np.expm1(np.minimum(x, 0)), x)
    raise ValueError(act)


def run_forward(z, b, act, alpha):
    out = z.copy()
    K.bias_act_forward(out, b, act, alpha)
    return out


# ---- bias_act_forward --------------------------------------------------------

@pytest.mark.parametrize("m,n", SHAPES)
@pytest.mark.parametrize("bias", BIAS)
@pytest.mark.parametrize("act", ACT_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_bias_act_forward(dtype, act, bias, m, n, rng):
    alpha = alpha_of(act, dtype)
    z = rng.normal(scale=3.0, size=(m, n)).astype(dtype)
    b = rng.normal(size=n).astype(dtype) if bias else None
    got = run_forward(z, b, act, alpha)
    assert got.dtype == dtype
    assert_close(got, R.bias_act_forward(z, b, act, alpha), dtype)


@pytest.mark.parametrize("act", ["identity", "relu", "leaky_relu"])
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_bias_act_forward_piecewise_linear_is_exact(dtype, act, rng):
    """Without bias these are one rounding (or none): equal bit for bit."""
    alpha = alpha_of(act, dtype)
    z = rng.normal(scale=5.0, size=(7, 33)).astype(dtype)
    ref = R.bias_act_forward(z, None, act, alpha).astype(dtype)
    np.testing.assert_array_equal(run_forward(z, None, act, alpha), ref)


@pytest.mark.parametrize("act", ACT_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_bias_act_forward_nan_propagates(dtype, act, rng):
    alpha = alpha_of(act, dtype)
    m, n = 5, 17
    z = rng.normal(size=(m, n)).astype(dtype)
    nan_at = [(0, 0), (2, 8), (4, 16), (1, 15)]
    for i, j in nan_at:
        z[i, j] = np.nan
    for b in (None, rng.normal(size=n).astype(dtype)):
        got = run_forward(z, b, act, alpha)
        mask = np.zeros((m, n), bool)
        for i, j in nan_at:
            mask[i, j] = True
        assert np.isnan(got[mask]).all()
        assert np.isfinite(got[~mask]).all()
    # a NaN bias poisons its whole column
    b = np.zeros(n, dtype)
    b[3] = np.nan
    got = run_forward(rng.normal(size=(m, n)).astype(dtype), b, act, alpha)
    assert np.isnan(got[:, 3]).all()
    assert np.isfinite(np.delete(got, 3, axis=1)).all()


def extremes(dtype):
    big = (100.0, 1e4, 1e30, 1e300) if key(dtype) is np.float64 \
        else (100.0, 1e4, 1e30, 3e38)
    vals = [0.0, 40.0, 50.0, 745.5, 1000.0, np.inf] + list(big)
    vals = sorted(set(vals + [-v for v in vals]))
    return np.array(vals, dtype=dtype)


@pytest.mark.parametrize("act", ACT_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_bias_act_forward_saturates_to_exact_limits(dtype, act):
    """Huge |z| (and +-inf): finite, never NaN, and exactly the correctly
    rounded value where that is a limit (sigmoid 0 / 1, tanh +-1, elu -alpha,
    relu 0); otherwise within the accuracy bound."""
    alpha = alpha_of(act, dtype)
    x = extremes(dtype)
    got = run_forward(x[None, :], None, act, alpha)[0]
    ref_hi = flush_hi(hi_activation(x, act, alpha), dtype)
    ref = ref_hi.astype(dtype)
    # no NaN from inf - inf or 0 * inf; infinities only where the limit is
    assert not np.isnan(got).any(), f"NaN from {x[np.isnan(got)]}"
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
    exact = np.isin(ref, [0.0, 1.0, -1.0, -dtype(alpha)]) | np.isinf(ref)
    bad = exact & (got != ref)
    assert not bad.any(), (f"{act}({x[bad]}) = {got[bad]}, the correctly "
                           f"rounded limit is {ref[bad]}")
    fin = np.isfinite(ref)
    assert ulp_error(got[fin], ref_hi[fin], dtype).max() <= 4


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_sigmoid_exact_zero_below_underflow(dtype):
    """sigmoid(z) for z below log(smallest denormal / 2) rounds to 0: the
    kernel must return exactly 0 (vmath.h promises the clamp gives the
    correctly rounded limit)."""
    lo = np.log(np.finfo(dtype).smallest_subnormal.astype(np.longdouble) / 2)
    x = np.array([float(lo) - d for d in (0.01, 0.1, 1.0, 10.0)]
                 + [-1e4, -1e30, -np.inf], dtype=dtype)
    assert (sigmoid_hi(x).astype(dtype) == 0).all()
    got = run_forward(x[None, :], None, "sigmoid", 0.0)[0]
    np.testing.assert_array_equal(got, np.zeros_like(x),
                                  err_msg=f"sigmoid({x}) should be 0")


@pytest.mark.parametrize("dtype,z", [pytest.param(np.float64, -720.0,
                                                  id="float64-z-720"),
                                     pytest.param(np.float32, -100.0,
                                                  id="float32-z-100")])
def test_sigmoid_subnormal_result_flushes_to_zero(dtype, z):
    """A true result in the subnormal range comes back as exactly 0
    (vmath.h flushes instead of taking the subnormal slow path)."""
    x = np.array([[z]], dtype=dtype)
    got = run_forward(x, None, "sigmoid", 0.0)[0, 0]
    ref = sigmoid_hi(x)[0, 0].astype(dtype)
    assert 0 < ref < np.finfo(dtype).tiny            # really subnormal
    assert got == 0


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_sigmoid_across_the_underflow_boundary(dtype):
    """From well inside the subnormal range to past the smallest normal:
    0 below it, within 2 ulp above it."""
    hi = np.log(np.finfo(dtype).tiny.astype(np.longdouble))
    lo = np.log(np.finfo(dtype).smallest_subnormal.astype(np.longdouble))
    x = np.linspace(float(lo) - 1, float(hi) + 1, 20001).astype(dtype)
    got = run_forward(x[None, :], None, "sigmoid", 0.0)[0]
    err = ulp_error(got, flush_hi(sigmoid_hi(x), dtype), dtype)
    assert err.max() <= 2, f"worst at z={x[np.argmax(err)]}: {err.max()} ulp"


# accuracy of the vectorized math, through the activations ---------------------

SWEEPS = [
    # (act, lo, hi, ulp bound): sigmoid uses exp(-|z|), tanh expm1(-2|z|),
    # elu alpha * expm1(z) with alpha = 1 (exact product)
    pytest.param("sigmoid", -60.0, 60.0, 4, id="sigmoid-wide"),
    pytest.param("sigmoid", -1.0, 1.0, 4, id="sigmoid-core"),
    pytest.param("tanh", -25.0, 25.0, 4, id="tanh-wide"),
    pytest.param("tanh", -1e-3, 1e-3, 4, id="tanh-small"),
    pytest.param("tanh", -1e-30, 1e-30, 4, id="tanh-tiny"),
    pytest.param("elu", -60.0, 0.0, 2, id="expm1-wide"),
    pytest.param("elu", -1e-4, 0.0, 2, id="expm1-small"),
    pytest.param("elu", -0.75, -0.2, 2, id="expm1-reduction-edges"),
]


@pytest.mark.parametrize("act,lo,hi,bound", SWEEPS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_vmath_accuracy_ulps(dtype, act, lo, hi, bound):
    x = np.linspace(lo, hi, 100003).astype(dtype)
    got = run_forward(x[None, :], None, act, 1.0)[0]
    err = ulp_error(got, hi_activation(x, act, 1.0), dtype)
    worst = int(np.argmax(err))
    assert err.max() <= bound, \
        f"{act}: {err.max():.2f} ulp at z={x[worst]!r} (bound {bound})"


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_vmath_accuracy_random_bits(dtype, rng):
    """Random magnitudes over many binades (log-uniform), both signs."""
    x = (np.exp(rng.uniform(np.log(1e-12), np.log(80.0), 200000))
         * rng.choice([-1.0, 1.0], 200000)).astype(dtype)
    for act, bound in (("sigmoid", 4), ("tanh", 4), ("elu", 2)):
        got = run_forward(x[None, :], None, act, 1.0)[0]
        err = ulp_error(got, hi_activation(x, act, 1.0), dtype)
        assert err.max() <= bound, \
            f"{act}: {err.max():.2f} ulp at z={x[np.argmax(err)]!r}"



def float_arrays(dtype, max_side=12):
    width = 32 if key(dtype) is np.float32 else 64
    return hnp.arrays(dtype, hnp.array_shapes(min_dims=2, max_dims=2,
                                              max_side=max_side),
                      elements=st.floats(width=width, allow_nan=True,
                                         allow_infinity=True,
                                         allow_subnormal=True))


@pytest.mark.parametrize("act", ACT_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_bias_act_forward_any_floats(dtype, act, data):
    """Any floats (NaN, inf, denormals, extremes): NaN exactly where the
    reference has NaN, values within tolerance elsewhere."""
    alpha = alpha_of(act, dtype)
    z = data.draw(float_arrays(dtype))
    got = run_forward(z, None, act, alpha)
    ref = R.bias_act_forward(z, None, act, alpha)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    assert_close(got, ref, dtype, scale=1.0)


# ---- bias_act_backward -------------------------------------------------------

def backward_inputs(rng, dtype, act, alpha, m, n):
    """A genuine forward output y (the contract's input) and dy."""
    z = rng.normal(scale=3.0, size=(m, n)).astype(dtype)
    y = R.bias_act_forward(z, None, act, alpha).astype(dtype)
    dy = rng.normal(size=(m, n)).astype(dtype)
    return y, dy


@pytest.mark.parametrize("m,n", SHAPES)
@pytest.mark.parametrize("act", ACT_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_bias_act_backward(dtype, act, m, n, rng):
    alpha = alpha_of(act, dtype)
    y, dy = backward_inputs(rng, dtype, act, alpha, m, n)
    dz, db = nan_like((m, n), dtype), nan_like(n, dtype)
    K.bias_act_backward(y, dy, dz, db, act, alpha)
    rdz, rdb = R.bias_act_backward(y, dy, act, alpha)
    assert_close(dz, rdz, dtype, scale=np.abs(dy).max())
    assert_close(db, rdb, dtype, scale=np.abs(rdz).sum(axis=0).max())


@pytest.mark.parametrize("m,n", shape_params((1, 7), (1, 8, 17, 33)))
@pytest.mark.parametrize("act", ACT_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_bias_act_backward_in_place(dtype, act, m, n, rng):
    """dz may be dy (the contract allows it)."""
    alpha = alpha_of(act, dtype)
    y, dy = backward_inputs(rng, dtype, act, alpha, m, n)
    rdz, rdb = R.bias_act_backward(y, dy, act, alpha)
    d = dy.copy()
    db = nan_like(n, dtype)
    K.bias_act_backward(y, d, d, db, act, alpha)
    assert_close(d, rdz, dtype, scale=np.abs(dy).max())
    assert_close(db, rdb, dtype, scale=np.abs(rdz).sum(axis=0).max())


@pytest.mark.parametrize("act", ACT_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_bias_act_backward_without_db(dtype, act, rng):
    alpha = alpha_of(act, dtype)
    y, dy = backward_inputs(rng, dtype, act, alpha, 9, 17)
    dz = nan_like((9, 17), dtype)
    K.bias_act_backward(y, dy, dz, None, act, alpha)
    assert_close(dz, R.bias_act_backward(y, dy, act, alpha)[0], dtype,
                 scale=np.abs(dy).max())


@pytest.mark.parametrize("act", ACT_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_bias_act_backward_nan_dy_propagates(dtype, act, rng):
    alpha = alpha_of(act, dtype)
    y, dy = backward_inputs(rng, dtype, act, alpha, 6, 9)
    dy[0, 0] = dy[3, 4] = dy[5, 8] = np.nan
    dz, db = nan_like((6, 9), dtype), nan_like(9, dtype)
    K.bias_act_backward(y, dy, dz, db, act, alpha)
    np.testing.assert_array_equal(np.isnan(dz), np.isnan(dy))
    np.testing.assert_array_equal(np.isnan(db), np.isnan(dy).any(axis=0))


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_bias_act_backward_zero_rows_zeroes_db(dtype):
    db = nan_like(5, dtype)
    e = np.zeros((0, 5), dtype)
    K.bias_act_backward(e, e, e.copy(), db, "tanh")
    np.testing.assert_array_equal(db, np.zeros(5, dtype))


# ---- maxout ------------------------------------------------------------------

MAXOUT_SHAPES = shape_params(ROWS, (1, 3, 7, 8, 9, 16, 17, 33))


def maxout_ref(z, b, pieces, dtype):
    """Reference on z + b rounded to the dtype, as the kernel adds them."""
    v = z if b is None else (z + b).astype(dtype)
    y, arg = R.maxout_forward(v, None, pieces)
    return y.astype(dtype), arg


def run_maxout(z, b, pieces, dtype):
    m, n = z.shape[0], z.shape[1] // pieces
    y = nan_like((m, n), dtype)
    arg = np.full((m, n), -7, np.int32)
    K.maxout_forward(z, y, arg, b, pieces)
    return y, arg


@pytest.mark.parametrize("m,n", MAXOUT_SHAPES)
@pytest.mark.parametrize("bias", BIAS)
@pytest.mark.parametrize("pieces", PIECES)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_maxout_forward(dtype, pieces, bias, m, n, rng):
    z = rng.normal(size=(m, n * pieces)).astype(dtype)
    b = rng.normal(size=n * pieces).astype(dtype) if bias else None
    z0 = z.copy()
    y, arg = run_maxout(z, b, pieces, dtype)
    ry, rarg = maxout_ref(z, b, pieces, dtype)
    np.testing.assert_array_equal(arg, rarg)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(z, z0)          # z is not modified


@pytest.mark.parametrize("bias", BIAS)
@pytest.mark.parametrize("pieces", PIECES)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_maxout_forward_ties_pick_first(dtype, pieces, bias, rng):
    """Small integers: ties everywhere; argmax must be the first maximum."""
    m, n = 17, 9
    z = rng.integers(-2, 3, (m, n * pieces)).astype(dtype)
    b = rng.integers(-1, 2, n * pieces).astype(dtype) if bias else None
    y, arg = run_maxout(z, b, pieces, dtype)
    ry, rarg = maxout_ref(z, b, pieces, dtype)
    assert (rarg < pieces - 1).any()              # ties were present
    np.testing.assert_array_equal(arg, rarg)
    np.testing.assert_array_equal(y, ry)


SPECIAL = [-np.inf, -1.5, -0.0, 0.0, 1.5, np.inf, np.nan]


@pytest.mark.parametrize("pieces", PIECES)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_maxout_forward_argmax_is_numpy_argmax(dtype, pieces, data):
    """Specials (NaN, +-inf, +-0) in every position: argmax equals
    numpy.argmax (first maximum; the first NaN wins), y the value there."""
    m = data.draw(st.integers(1, 4))
    n = data.draw(st.integers(1, 5))
    z = data.draw(hnp.arrays(dtype, (m, n * pieces),
                             elements=st.sampled_from(SPECIAL)))
    y, arg = run_maxout(z, None, pieces, dtype)
    v = z.reshape(m, n, pieces)
    np.testing.assert_array_equal(arg, np.argmax(v, axis=2))
    np.testing.assert_array_equal(
        y, np.take_along_axis(v, np.argmax(v, axis=2)[..., None], 2)[..., 0])


@pytest.mark.parametrize("pieces", PIECES)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_maxout_forward_first_nan_wins(dtype, pieces):
    rows = []
    for p in range(pieces):                       # NaN at each position
        r = np.arange(pieces, dtype=float)
        r[p] = np.nan
        rows.append(r)
    two = np.full(pieces, np.nan)                 # all NaN
    rows.append(two)
    z = np.array(rows, dtype=dtype).reshape(len(rows), pieces)
    y, arg = run_maxout(z, None, pieces, dtype)
    np.testing.assert_array_equal(arg[:, 0], list(range(pieces)) + [0])
    assert np.isnan(y).all()


@pytest.mark.parametrize("m,n", MAXOUT_SHAPES)
@pytest.mark.parametrize("pieces", PIECES)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_maxout_backward(dtype, pieces, m, n, rng):
    arg = rng.integers(0, pieces, (m, n)).astype(np.int32)
    dy = rng.normal(size=(m, n)).astype(dtype)
    dz, db = nan_like((m, n * pieces), dtype), nan_like(n * pieces, dtype)
    K.maxout_backward(arg, dy, dz, db, pieces)
    rdz, rdb = R.maxout_backward(arg, dy, pieces)
    np.testing.assert_array_equal(dz, rdz.astype(dtype))   # pure routing
    assert_close(db, rdb, dtype, scale=np.abs(rdz).sum(axis=0).max())


@pytest.mark.parametrize("pieces", PIECES)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_maxout_round_trip_without_db(dtype, pieces, rng):
    m, n = 8, 17
    z = rng.normal(size=(m, n * pieces)).astype(dtype)
    y, arg = run_maxout(z, None, pieces, dtype)
    dz = nan_like(z)
    K.maxout_backward(arg, y, dz, None, pieces)
    # routing y back puts each max where it came from and zeros elsewhere
    np.testing.assert_array_equal(dz, np.where(
        np.arange(pieces)[None, None, :] == arg[..., None],
        z.reshape(m, n, pieces), 0).reshape(m, n * pieces))


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_maxout_backward_zero_rows_zeroes_db(dtype):
    db = nan_like(6, dtype)
    K.maxout_backward(np.zeros((0, 3), np.int32), np.zeros((0, 3), dtype),
                      np.zeros((0, 6), dtype), db, 2)
    np.testing.assert_array_equal(db, np.zeros(6, dtype))


# ---- softmax -----------------------------------------------------------------

@pytest.mark.parametrize("m,n", SHAPES)
@pytest.mark.parametrize("bias", BIAS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_softmax_forward(dtype, bias, m, n, rng):
    z = rng.normal(scale=4.0, size=(m, n)).astype(dtype)
    b = rng.normal(size=n).astype(dtype) if bias else None
    got = z.copy()
    K.softmax_forward(got, b)
    assert_close(got, R.softmax_forward(z, b), dtype, scale=1.0)
    assert (got >= 0).all()
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(got.astype(np.float64).sum(axis=1), 1.0,
                               rtol=0, atol=4 * (n + 1) * eps)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_softmax_forward_saturating_rows(dtype):
    """Huge logits: no overflow, exact 0 / 1 / 0.5 where those are the
    correctly rounded probabilities."""
    big = 1e300 if key(dtype) is np.float64 else 3e38
    z = np.array([[0.0, -1e4, -1e30, -big],
                  [big, big, -big, -big],
                  [1e4, 0.0, -1e4, 1e4 - 1e3],
                  [-big, -big, -big, -big],
                  [30.0, -30.0, 0.0, -np.inf]], dtype=dtype)
    got = z.copy()
    K.softmax_forward(got)
    zl = z.astype(np.longdouble)
    e = np.exp(zl - zl.max(axis=1, keepdims=True))
    ref_hi = e / e.sum(axis=1, keepdims=True)
    ref = ref_hi.astype(dtype)
    np.testing.assert_array_equal(ref[:4], [[1, 0, 0, 0], [0.5, 0.5, 0, 0],
                                            [1, 0, 0, 0], [0.25] * 4])
    exact = np.isin(ref, [0.0, 0.25, 0.5, 1.0])
    bad = exact & (got != ref)
    assert not bad.any(), (f"softmax of {z[bad.any(axis=1)]} gave "
                           f"{got[bad.any(axis=1)]}, the correctly rounded "
                           f"probabilities are {ref[bad.any(axis=1)]}")
    assert ulp_error(got, ref_hi, dtype).max() <= 4


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_softmax_forward_nan_poisons_its_row(dtype, rng):
    z = rng.normal(size=(4, 9)).astype(dtype)
    z[1, 0] = np.nan
    z[3, 8] = np.nan
    got = z.copy()
    K.softmax_forward(got)
    assert np.isnan(got[[1, 3]]).all()
    assert np.isfinite(got[[0, 2]]).all()


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_softmax_accuracy_ulps(dtype):
    """Rows (0, x): p = (sigmoid(-x), sigmoid(x)), down into the subnormal
    range (where 0 is expected); <= 4 ulp (exp of z - max, a sum, a
    reciprocal, a product)."""
    lo = float(np.log(np.finfo(dtype).smallest_subnormal.astype(np.longdouble)))
    x = np.linspace(lo + 0.5, 0.0, 100001).astype(dtype)
    z = np.stack([np.zeros_like(x), x], axis=1)
    K.softmax_forward(z)
    for col, ref in ((0, sigmoid_hi(-x)), (1, sigmoid_hi(x))):
        err = ulp_error(z[:, col], flush_hi(ref, dtype), dtype)
        assert err.max() <= 4, \
            f"p{col}: {err.max():.2f} ulp at x={x[np.argmax(err)]!r}"


# ---- shapes and arguments the wrappers must refuse ---------------------------

def _f(dtype, *shape):
    return np.zeros(shape, dtype)


BAD_CALLS = {
    "forward-b-length": lambda d: K.bias_act_forward(_f(d, 3, 4), _f(d, 5)),
    "forward-unknown-act": lambda d: K.bias_act_forward(_f(d, 3, 4), None,
                                                        "softmax"),
    "forward-maxout-not-elementwise": lambda d: K.bias_act_forward(
        _f(d, 3, 4), None, "maxout"),
    "backward-dy-shape": lambda d: K.bias_act_backward(
        _f(d, 3, 4), _f(d, 4, 3), _f(d, 3, 4)),
    "backward-dz-shape": lambda d: K.bias_act_backward(
        _f(d, 3, 4), _f(d, 3, 4), _f(d, 3, 5)),
    "backward-db-length": lambda d: K.bias_act_backward(
        _f(d, 3, 4), _f(d, 3, 4), _f(d, 3, 4), _f(d, 3)),
    "maxout-z-columns": lambda d: K.maxout_forward(
        _f(d, 3, 7), _f(d, 3, 3), np.zeros((3, 3), np.int32), None, 2),
    "maxout-y-rows": lambda d: K.maxout_forward(
        _f(d, 3, 6), _f(d, 2, 3), np.zeros((3, 3), np.int32), None, 2),
    "maxout-argmax-shape": lambda d: K.maxout_forward(
        _f(d, 3, 6), _f(d, 3, 3), np.zeros((3, 2), np.int32), None, 2),
    "maxout-b-length": lambda d: K.maxout_forward(
        _f(d, 3, 6), _f(d, 3, 3), np.zeros((3, 3), np.int32), _f(d, 3), 2),
    "maxout-pieces-0": lambda d: K.maxout_forward(
        _f(d, 3, 6), _f(d, 3, 3), np.zeros((3, 3), np.int32), None, 0),
    "maxout-backward-dz-shape": lambda d: K.maxout_backward(
        np.zeros((3, 3), np.int32), _f(d, 3, 3), _f(d, 3, 7), None, 2),
    "maxout-backward-argmax-range": lambda d: K.maxout_backward(
        np.full((3, 3), 2, np.int32), _f(d, 3, 3), _f(d, 3, 6), None, 2),
    "maxout-backward-argmax-negative": lambda d: K.maxout_backward(
        np.full((3, 3), -1, np.int32), _f(d, 3, 3), _f(d, 3, 6), None, 2),
    "softmax-b-length": lambda d: K.softmax_forward(_f(d, 3, 4), _f(d, 3)),
}


@pytest.mark.parametrize("call", sorted(BAD_CALLS))
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_bad_arguments_raise_value_error(dtype, call):
    with pytest.raises(ValueError):
        BAD_CALLS[call](dtype)


# ---- padded row strides --------------------------------------------------------
# Through the wrappers (whose docstrings and _ld() promise ld > n), then
# through the C entry points directly.  Inputs are padded with NaN (reading
# the padding poisons the result); in-place arrays and outputs with a
# sentinel that must survive.

SENT = 7.0
PAD_SHAPES = [pytest.param(17, 33, id="m17-n33"), pytest.param(3, 8, id="m3-n8")]


@pytest.mark.parametrize("m,n", PAD_SHAPES[:1])
@pytest.mark.parametrize("bias", BIAS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_bias_act_forward_padded(dtype, bias, m, n, rng):
    z = rng.normal(size=(m, n)).astype(dtype)
    b = rng.normal(size=n).astype(dtype) if bias else None
    zv, zbig = padded(z, fill=SENT)
    K.bias_act_forward(zv, b, "tanh")
    assert_close(zv, R.bias_act_forward(z, b, "tanh"), dtype)
    assert_pad_untouched(zbig, n, SENT)


@pytest.mark.parametrize("m,n", PAD_SHAPES[:1])
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_bias_act_backward_padded(dtype, m, n, rng):
    y, dy = backward_inputs(rng, dtype, "sigmoid", 0.0, m, n)
    yv, _ = padded(y, pad=3)
    dyv, _ = padded(dy, pad=6)
    dzv, dzbig = padded(np.full((m, n), np.nan, dtype), pad=4, fill=SENT)
    db = nan_like(n, dtype)
    K.bias_act_backward(yv, dyv, dzv, db, "sigmoid")
    rdz, rdb = R.bias_act_backward(y, dy, "sigmoid")
    assert_close(dzv, rdz, dtype, scale=1.0)
    assert_close(db, rdb, dtype, scale=m)
    assert_pad_untouched(dzbig, n, SENT)


@pytest.mark.parametrize("m,n", PAD_SHAPES[:1])
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_maxout_forward_padded(dtype, m, n, rng):
    z = rng.normal(size=(m, 3 * n)).astype(dtype)
    zv, _ = padded(z)
    yv, ybig = padded(np.full((m, n), np.nan, dtype), fill=SENT)
    arg = np.full((m, n), -7, np.int32)
    K.maxout_forward(zv, yv, arg, None, 3)
    ry, rarg = maxout_ref(z, None, 3, dtype)
    np.testing.assert_array_equal(arg, rarg)
    np.testing.assert_array_equal(yv, ry)
    assert_pad_untouched(ybig, n, SENT)


@pytest.mark.parametrize("m,n", PAD_SHAPES[:1])
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_maxout_backward_padded(dtype, m, n, rng):
    arg = rng.integers(0, 2, (m, n)).astype(np.int32)
    dy = rng.normal(size=(m, n)).astype(dtype)
    dyv, _ = padded(dy)
    dzv, dzbig = padded(np.full((m, 2 * n), np.nan, dtype), fill=SENT)
    K.maxout_backward(arg, dyv, dzv, None, 2)
    np.testing.assert_array_equal(dzv, R.maxout_backward(arg, dy, 2)[0])
    assert_pad_untouched(dzbig, 2 * n, SENT)


@pytest.mark.parametrize("m,n", PAD_SHAPES[:1])
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_softmax_forward_padded(dtype, m, n, rng):
    z = rng.normal(size=(m, n)).astype(dtype)
    zv, zbig = padded(z, fill=SENT)
    K.softmax_forward(zv)
    assert_close(zv, R.softmax_forward(z), dtype, scale=1.0)
    assert_pad_untouched(zbig, n, SENT)


# C entry points with ld > n (the kernels' own stride handling) ----------------

@pytest.mark.parametrize("m,n", PAD_SHAPES)
@pytest.mark.parametrize("bias", BIAS)
@pytest.mark.parametrize("act", ACT_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_c_bias_act_strided(capi, dtype, act, bias, m, n, rng):
    alpha = alpha_of(act, dtype)
    code = K.ACTIVATIONS[act]
    z = rng.normal(size=(m, n)).astype(dtype)
    b = rng.normal(size=n).astype(dtype) if bias else None
    zv, zbig = padded(z, fill=SENT)
    capi("bias_act_forward", dtype, m, n, code, alpha, b, zv, ld_of(zv))
    assert_close(zv, R.bias_act_forward(z, b, act, alpha), dtype)
    assert_pad_untouched(zbig, n, SENT)

    y, dy = backward_inputs(rng, dtype, act, alpha, m, n)
    yv, _ = padded(y, pad=3)
    dyv, _ = padded(dy, pad=6)
    dzv, dzbig = padded(np.full((m, n), np.nan, dtype), pad=4, fill=SENT)
    db = nan_like(n, dtype)
    capi("bias_act_backward", dtype, m, n, code, alpha, yv, ld_of(yv), dyv,
         ld_of(dyv), dzv, ld_of(dzv), db)
    rdz, rdb = R.bias_act_backward(y, dy, act, alpha)
    assert_close(dzv, rdz, dtype, scale=np.abs(dy).max())
    assert_close(db, rdb, dtype, scale=np.abs(rdz).sum(axis=0).max())
    assert_pad_untouched(dzbig, n, SENT)
    # in place with a shared padded stride
    d, dbig = padded(dy, fill=SENT)
    capi("bias_act_backward", dtype, m, n, code, alpha, yv, ld_of(yv), d,
         ld_of(d), d, ld_of(d), None)
    assert_close(d, rdz, dtype, scale=np.abs(dy).max())
    assert_pad_untouched(dbig, n, SENT)


@pytest.mark.parametrize("m,n", PAD_SHAPES)
@pytest.mark.parametrize("pieces", PIECES)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_c_maxout_strided(capi, dtype, pieces, m, n, rng):
    z = rng.normal(size=(m, n * pieces)).astype(dtype)
    b = rng.normal(size=n * pieces).astype(dtype)
    zv, _ = padded(z)
    yv, ybig = padded(np.full((m, n), np.nan, dtype), fill=SENT)
    arg = np.full((m, n), -7, np.int32)
    capi("maxout_forward", dtype, m, n, pieces, b, zv, ld_of(zv), yv,
         ld_of(yv), arg)
    ry, rarg = maxout_ref(z, b, pieces, dtype)
    np.testing.assert_array_equal(arg, rarg)
    np.testing.assert_array_equal(yv, ry)
    assert_pad_untouched(ybig, n, SENT)

    dy = rng.normal(size=(m, n)).astype(dtype)
    dyv, _ = padded(dy)
    dzv, dzbig = padded(np.full((m, n * pieces), np.nan, dtype), fill=SENT)
    db = nan_like(n * pieces, dtype)
    capi("maxout_backward", dtype, m, n, pieces, arg, dyv, ld_of(dyv), dzv,
         ld_of(dzv), db)
    rdz, rdb = R.maxout_backward(arg, dy, pieces)
    np.testing.assert_array_equal(dzv, rdz)
    assert_close(db, rdb, dtype, scale=np.abs(rdz).sum(axis=0).max())
    assert_pad_untouched(dzbig, n * pieces, SENT)


@pytest.mark.parametrize("m,n", PAD_SHAPES)
@pytest.mark.parametrize("bias", BIAS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_c_softmax_strided(capi, dtype, bias, m, n, rng):
    z = rng.normal(size=(m, n)).astype(dtype)
    b = rng.normal(size=n).astype(dtype) if bias else None
    zv, zbig = padded(z, fill=SENT)
    capi("softmax_forward", dtype, m, n, b, zv, ld_of(zv))
    assert_close(zv, R.softmax_forward(z, b), dtype, scale=1.0)
    assert_pad_untouched(zbig, n, SENT)


def _ro(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_const_inputs_accept_read_only_arrays(dtype, rng):
    """Inputs declared const in the wrappers take read-only arrays."""
    z = rng.normal(size=(3, 8)).astype(dtype)
    b = _ro(rng.normal(size=8).astype(dtype))
    out = z.copy()
    K.bias_act_forward(out, b, "tanh")
    assert_close(out, R.bias_act_forward(z, b, "tanh"), dtype)
    y, dy = _ro(out), _ro(rng.normal(size=(3, 8)).astype(dtype))
    dz = nan_like(y)
    K.bias_act_backward(y, dy, dz, None, "tanh")
    assert_close(dz, R.bias_act_backward(y, dy, "tanh")[0], dtype)
    ym, arg = nan_like((3, 4), dtype), np.zeros((3, 4), np.int32)
    K.maxout_forward(_ro(z), ym, arg, b, 2)
    np.testing.assert_array_equal(arg, maxout_ref(z, b, 2, dtype)[1])
    dz = nan_like(z)
    K.maxout_backward(_ro(arg), _ro(ym), dz, None, 2)
    assert np.isfinite(dz).all()
    s = z.copy()
    K.softmax_forward(s, b)
    assert_close(s, R.softmax_forward(z, b), dtype, scale=1.0)
