"""Tier 2 for csrc/optim.c: sgd_step, momentum_step (plain and Nesterov),
adam_step and all_finite against fastnn.reference, both dtypes.

Hyper-parameters are passed to the reference as the kernel sees them
(rounded to the dtype), so the comparison measures the kernel's arithmetic
only: conftest.RTOL (float64 1e-12, float32 1e-5) with atol scaled by the
size of the parameters.  Adam is followed over several consecutive steps
and at large t (bias corrections -> 1).
"""
import numpy as np
import pytest

from fastnn import _kernels as K
from fastnn import reference as R
from conftest import (DTYPE_PARAMS, SIZES, assert_close, f32round, key,
                      ld_of, padded, shape_params)

N_PARAMS = [pytest.param(n, id=f"n{n}") for n in SIZES + (64, 65, 1001)]
WD = [pytest.param(0.0, id="wd0"), pytest.param(0.01, id="wd0.01")]


def vec(rng, n, dtype, scale=1.0):
    return rng.normal(scale=scale, size=n).astype(dtype)


def h(x, dtype):
    return f32round(x, dtype)


# ---- sgd -----------------------------------------------------------------------

@pytest.mark.parametrize("n", N_PARAMS)
@pytest.mark.parametrize("wd", WD)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_sgd_step(dtype, wd, n, rng):
    w, g = vec(rng, n, dtype), vec(rng, n, dtype)
    g0 = g.copy()
    lr = 0.1
    want = R.sgd_step(w, g, h(lr, dtype), h(wd, dtype))
    K.sgd_step(w, g, lr, wd)
    assert_close(w, want, dtype)
    np.testing.assert_array_equal(g, g0)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_sgd_step_lr_zero_is_identity_and_nan_propagates(dtype, rng):
    w, g = vec(rng, 33, dtype), vec(rng, 33, dtype)
    w0 = w.copy()
    K.sgd_step(w, g, 0.0, 0.0)
    np.testing.assert_array_equal(w, w0)
    g[[0, 16, 32]] = np.nan
    K.sgd_step(w, g, 0.1, 0.01)
    np.testing.assert_array_equal(np.isnan(w), np.isnan(g))


# ---- momentum / nesterov -------------------------------------------------------

@pytest.mark.parametrize("n", N_PARAMS)
@pytest.mark.parametrize("wd", WD)
@pytest.mark.parametrize("nesterov", [pytest.param(False, id="momentum"),
                                      pytest.param(True, id="nesterov")])
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_momentum_step(dtype, nesterov, wd, n, rng):
    lr, mu = 0.05, 0.9
    w, v = vec(rng, n, dtype), vec(rng, n, dtype, 0.1)
    rw, rv = w.astype(np.float64), v.astype(np.float64)
    for step in range(3):                        # velocity carries over
        g = vec(rng, n, dtype)
        rw, rv = R.momentum_step(w, g, v, h(lr, dtype), h(mu, dtype),
                                 h(wd, dtype), nesterov)
        K.momentum_step(w, g, v, lr, mu, wd, nesterov)
        assert_close(v, rv, dtype, scale=np.abs(rv).max() + lr)
        assert_close(w, rw, dtype, scale=np.abs(rw).max())


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_momentum_zero_mu_is_sgd(dtype, rng):
    w, g = vec(rng, 17, dtype), vec(rng, 17, dtype)
    w0 = w.astype(np.float64)
    w2 = w.copy()
    v = np.full(17, 123.0, dtype)                 # ignored when mu = 0
    K.momentum_step(w, g, v, 0.1, 0.0, 0.01, False)
    K.sgd_step(w2, g, 0.1, 0.01)
    assert_close(w, w2, dtype)
    lr, wd = h(0.1, dtype), h(0.01, dtype)
    assert_close(v, -lr * (g.astype(np.float64) + wd * w0), dtype)


# ---- adam ------------------------------------------------------------------------

@pytest.mark.parametrize("n", N_PARAMS)
@pytest.mark.parametrize("wd", WD)
@pytest.mark.parametrize("t", [pytest.param(t, id=f"t{t}")
                               for t in (1, 2, 10, 1000, 10 ** 6)])
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_adam_step(dtype, t, wd, n, rng):
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    w = vec(rng, n, dtype)
    g = vec(rng, n, dtype)
    m = vec(rng, n, dtype, 0.1) if t > 1 else np.zeros(n, dtype)
    v = (np.abs(vec(rng, n, dtype, 0.1)) if t > 1
         else np.zeros(n, dtype))
    rw, rm, rv = R.adam_step(w, g, m, v, t, h(lr, dtype), h(b1, dtype),
                             h(b2, dtype), h(eps, dtype), h(wd, dtype))
    K.adam_step(w, g, m, v, t, lr, b1, b2, eps, wd)
    assert_close(m, rm, dtype)
    assert_close(v, rv, dtype)
    assert_close(w, rw, dtype)


@pytest.mark.parametrize("wd", WD)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_adam_trajectory(dtype, wd, rng):
    """Steps t = 1..8 in a row from zero state, new gradients each step."""
    n = 33
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    w = vec(rng, n, dtype)
    m, v = np.zeros(n, dtype), np.zeros(n, dtype)
    rw, rm, rv = w.astype(np.float64), m.astype(np.float64), v.astype(np.float64)
    for t in range(1, 9):
        g = vec(rng, n, dtype)
        rw, rm, rv = R.adam_step(rw, g, rm, rv, t, h(lr, dtype), h(b1, dtype),
                                 h(b2, dtype), h(eps, dtype), h(wd, dtype))
        K.adam_step(w, g, m, v, t, lr, b1, b2, eps, wd)
    tol = 1e-4 if key(dtype) is np.float32 else 1e-11
    assert_close(w, rw, dtype, rtol=tol)
    assert_close(m, rm, dtype, rtol=tol)
    assert_close(v, rv, dtype, rtol=tol)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_adam_first_step_moves_by_lr(dtype, rng):
    """From zero state, step 1 moves each weight by lr * sign(g) (for
    |g| >> eps): the bias corrections cancel exactly."""
    n = 49
    w = vec(rng, n, dtype)
    g = (rng.uniform(1, 2, n) * rng.choice([-1, 1], n)).astype(dtype)
    w0 = w.astype(np.float64)
    K.adam_step(w, g, np.zeros(n, dtype), np.zeros(n, dtype), 1, lr=0.01)
    np.testing.assert_allclose(w0 - w.astype(np.float64), 0.01 * np.sign(g),
                               rtol=1e-4 if key(dtype) is np.float32 else 1e-6)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_adam_nan_gradient_propagates(dtype, rng):
    n = 17
    w, g = vec(rng, n, dtype), vec(rng, n, dtype)
    g[[0, 8, 16]] = np.nan
    m, v = np.zeros(n, dtype), np.zeros(n, dtype)
    K.adam_step(w, g, m, v, 3)
    for a in (w, m, v):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(g))


# ---- bad arguments ---------------------------------------------------------------

def _v(n, dtype=np.float64):
    return np.zeros(n, dtype)


BAD_CALLS = {
    "sgd-g-length": lambda: K.sgd_step(_v(5), _v(4), 0.1),
    "momentum-v-length": lambda: K.momentum_step(_v(5), _v(5), _v(6), 0.1),
    "momentum-g-length": lambda: K.momentum_step(_v(5), _v(3), _v(5), 0.1),
    "adam-m-length": lambda: K.adam_step(_v(5), _v(5), _v(4), _v(5), 1),
    "adam-v-length": lambda: K.adam_step(_v(5), _v(5), _v(5), _v(4), 1),
    "adam-t-zero": lambda: K.adam_step(_v(5), _v(5), _v(5), _v(5), 0),
}


@pytest.mark.parametrize("call", sorted(BAD_CALLS))
def test_bad_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        BAD_CALLS[call]()


# ---- all_finite ------------------------------------------------------------------

SPECIALS = [pytest.param(np.nan, id="nan"), pytest.param(np.inf, id="+inf"),
            pytest.param(-np.inf, id="-inf")]
POSITIONS = [pytest.param(p, id=p) for p in ("first", "middle", "last")]
AF_SHAPES = shape_params((1, 3, 17), (1, 7, 8, 9, 16, 17, 33, 49))


def finite_extremes(m, n, dtype, rng):
    """Finite values including the largest, the smallest denormal and -0."""
    x = rng.normal(size=(m, n)).astype(dtype)
    fi = np.finfo(dtype)
    flat = x.reshape(-1)
    for i, v in enumerate((fi.max, -fi.max, fi.smallest_subnormal, -0.0)):
        flat[(i * 5) % flat.size] = v
    return x


def place(x, pos):
    m, n = x.shape
    return {"first": (0, 0), "middle": (m // 2, n // 2),
            "last": (m - 1, n - 1)}[pos]


@pytest.mark.parametrize("m,n", AF_SHAPES)
@pytest.mark.parametrize("pos", POSITIONS)
@pytest.mark.parametrize("special", SPECIALS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_all_finite(dtype, special, pos, m, n, rng):
    x = finite_extremes(m, n, dtype, rng)
    assert K.all_finite(x) is True
    x[place(x, pos)] = special
    assert K.all_finite(x) is False


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_all_finite_every_position(dtype, rng):
    """A single NaN anywhere in a 5 x 37 array (crossing every SIMD lane and
    row boundary) is found."""
    x = rng.normal(size=(5, 37)).astype(dtype)
    for i in range(5):
        for j in range(37):
            y = x.copy()
            y[i, j] = np.inf if (i + j) % 2 else np.nan
            assert K.all_finite(y) is False, (i, j)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_all_finite_empty(dtype):
    assert K.all_finite(np.zeros((0, 3), dtype)) is True
    assert K.all_finite(np.zeros((3, 0), dtype)) is True


PAD_SPECIAL = [pytest.param(None, id="finite")] + SPECIALS


@pytest.mark.parametrize("special", PAD_SPECIAL[:2])
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_all_finite_padded(dtype, special, rng):
    """Through the wrapper: NaN padding (ld > n) is not part of the array."""
    x = finite_extremes(17, 33, dtype, rng)
    if special is not None:
        x[16, 32] = special
    xv, _ = padded(x, fill=np.nan)
    assert K.all_finite(xv) is (special is None)


@pytest.mark.parametrize("m,n", shape_params((1, 3, 17), (1, 8, 33)))
@pytest.mark.parametrize("special", PAD_SPECIAL)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_c_all_finite_strided(capi, dtype, special, m, n, rng):
    """The C entry point with ld > n, padding full of NaN."""
    x = finite_extremes(m, n, dtype, rng)
    if special is not None:
        x[place(x, "last")] = special
    xv, _ = padded(x, fill=np.nan)
    assert capi("all_finite", dtype, m, n, xv, ld_of(xv)) == \
        (1 if special is None else 0)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_const_inputs_accept_read_only_arrays(dtype, rng):
    g = vec(rng, 9, dtype)
    g.setflags(write=False)
    w = vec(rng, 9, dtype)
    want = R.sgd_step(w, g, h(0.1, dtype))
    K.sgd_step(w, g, 0.1)
    assert_close(w, want, dtype)
    m, v = np.zeros(9, dtype), np.zeros(9, dtype)
    K.adam_step(w, g, m, v, 1)
    K.momentum_step(w, g, v, 0.1)
    x = np.ones((3, 3), dtype)
    x.setflags(write=False)
    assert K.all_finite(x) is True
