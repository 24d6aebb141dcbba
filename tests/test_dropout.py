"""Dropout: the fused mask kernels (csrc/act_impl.h, masks from
csrc/dropout.h) against their reference twins, the mask's statistics and
reproducibility."""
import numpy as np
import pytest

from fastnn import _kernels as K
from fastnn import reference as R
from conftest import (ALPHA, DTYPE_PARAMS, ELEMENTWISE, ROWS, SIZES, assert_close,
                      assert_pad_untouched, nan_like, padded, shape_params)

ACT_PARAMS = [pytest.param(a, id=a) for a in ELEMENTWISE]
RATES = [pytest.param(r, id=f"rate{r}") for r in (0.1, 0.5, 0.9)]
SHAPES = shape_params(ROWS, SIZES)


def _alpha(act):
    return ALPHA.get(act, 0.0)


# ---- the mask -----------------------------------------------------------------------

def test_key_matches_reference():
    for seed in (0, 1, 2 ** 63 + 5, 2 ** 64 - 1):
        for epoch in (0, 1, 1000):
            for layer in (0, 3):
                assert K.drop_key(seed, epoch, layer) == R.drop_key(seed, epoch, layer)
    keys = {K.drop_key(s, e, l) for s in range(4) for e in range(4) for l in range(4)}
    assert len(keys) == 64                       # no collisions among neighbours


@pytest.mark.parametrize("rate", [0.05, 0.3, 0.5, 0.8])
def test_mask_statistics(rate):
    """The kept fraction is 1 - rate within 4 standard errors, per unit and
    per row as well as overall; neighbouring rows and units are not
    correlated."""
    key = K.drop_key(1234, 0, 0)
    keep = R.dropout_keep(2000, 300, rate, key)
    n = keep.size
    se = np.sqrt(rate * (1 - rate) / n)
    assert abs(keep.mean() - (1 - rate)) < 4 * se
    per_unit = keep.mean(axis=0)
    assert np.abs(per_unit - (1 - rate)).max() < 5 * np.sqrt(rate * (1 - rate) / 2000)
    k = keep.astype(float) - keep.mean()
    for a, b in ((k[1:], k[:-1]), (k[:, 1:], k[:, :-1])):
        corr = (a * b).mean() / k.var()
        assert abs(corr) < 4 / np.sqrt(a.size)


def test_mask_depends_on_key_row_and_unit_only():
    """Rows are addressed by position: a block starting at row0 is the same
    rows of the full mask; other keys give other masks."""
    key = K.drop_key(9, 2, 1)
    full = R.dropout_keep(50, 20, 0.4, key)
    np.testing.assert_array_equal(R.dropout_keep(13, 20, 0.4, key, row0=21), full[21:34])
    np.testing.assert_array_equal(R.dropout_keep(50, 7, 0.4, key), full[:, :7])
    other = R.dropout_keep(50, 20, 0.4, K.drop_key(9, 3, 1))
    assert (other != full).mean() > 0.3


# ---- the kernels against the reference ------------------------------------------------

@pytest.mark.parametrize("m,n", SHAPES)
@pytest.mark.parametrize("act", ACT_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_forward_backward_match_reference(dtype, act, m, n, rng):
    """Forward and backward (outputs pre-filled with NaN) equal the
    reference's, which draws the same mask, for every activation; bias and
    no bias; row0 shifts the rows."""
    rate, key, row0 = 0.35, K.drop_key(77, 5, 2), 13
    z = rng.normal(scale=2.0, size=(m, n)).astype(dtype)
    b = rng.normal(size=n).astype(dtype)
    for bias in (b, None):
        y = z.copy()
        K.bias_act_dropout_forward(y, bias, act, _alpha(act), rate, key, row0)
        ry = R.bias_act_dropout_forward(z, bias, act, _alpha(act), rate, key, row0)
        assert_close(y, ry, dtype)
        a = R.bias_act_forward(z, bias, act, _alpha(act))
        dy = rng.normal(size=(m, n)).astype(dtype)
        dz, db = nan_like(dy), nan_like(n, dtype)
        K.bias_act_dropout_backward(y, dy, dz, db, act, _alpha(act), rate, key, row0)
        rdz, rdb = R.bias_act_dropout_backward(a, dy, act, _alpha(act), rate, key, row0)
        assert_close(dz, rdz, dtype, scale=float(np.abs(rdz).max()) + 1e-300)
        assert_close(db, rdb, dtype, scale=float(np.abs(rdz).sum(axis=0).max()) + 1e-300)
        keep = R.dropout_keep(m, n, rate, key, row0)
        assert (y[~keep] == 0).all() and (dz[~keep] == 0).all()


@pytest.mark.parametrize("act", ACT_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_in_place_and_strided(dtype, act, rng):
    """dz may be dy; padded row strides are honoured and the padding kept."""
    m, n, rate, key = 9, 17, 0.5, K.drop_key(3, 0, 0)
    z = rng.normal(size=(m, n)).astype(dtype)
    zv, zbig = padded(z, pad=3, fill=7.0)
    K.bias_act_dropout_forward(zv, None, act, _alpha(act), rate, key, 0)
    ry = R.bias_act_dropout_forward(z, None, act, _alpha(act), rate, key, 0)
    assert_close(zv, ry, dtype)
    assert_pad_untouched(zbig, n, 7.0)
    dy = rng.normal(size=(m, n)).astype(dtype)
    want = nan_like(dy)
    K.bias_act_dropout_backward(zv, dy, want, None, act, _alpha(act), rate, key, 0)
    work = dy.copy()
    K.bias_act_dropout_backward(zv, work, work, None, act, _alpha(act), rate, key, 0)
    np.testing.assert_array_equal(work, want)


@pytest.mark.parametrize("act", ACT_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_rate_zero_is_the_plain_kernel(dtype, act, rng):
    """rate 0 keeps every unit and scales by 1: bit-identical to the kernel
    without dropout, forward and backward."""
    z = rng.normal(size=(11, 19)).astype(dtype)
    b = rng.normal(size=19).astype(dtype)
    a, c = z.copy(), z.copy()
    K.bias_act_forward(a, b, act, _alpha(act))
    K.bias_act_dropout_forward(c, b, act, _alpha(act), 0.0, 12345, 0)
    np.testing.assert_array_equal(a, c)
    dy = rng.normal(size=(11, 19)).astype(dtype)
    d1, d2 = nan_like(dy), nan_like(dy)
    db1, db2 = nan_like(19, dtype), nan_like(19, dtype)
    K.bias_act_backward(a, dy, d1, db1, act, _alpha(act))
    K.bias_act_dropout_backward(c, dy, d2, db2, act, _alpha(act), 0.0, 12345, 0)
    np.testing.assert_array_equal(d1, d2)
    np.testing.assert_array_equal(db1, db2)


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_expected_scaling(dtype, rate):
    """Inverted dropout: kept units are scaled by 1 / (1 - rate), so the
    mean over many rows of the output is the activation's (within 4
    standard errors)."""
    m, n = 4000, 8
    z = np.tile(np.linspace(0.2, 2.0, n), (m, 1)).astype(dtype)
    y = z.copy()
    K.bias_act_dropout_forward(y, None, "identity", 0.0, rate, K.drop_key(5, 0, 0), 0)
    s = np.float64(dtype(1.0 / (1.0 - rate)))
    kept = y != 0
    np.testing.assert_allclose(y[kept], (z.astype(np.float64) * s)[kept],
                               rtol=2 * np.finfo(dtype).eps)
    se = z[0] * s * np.sqrt(rate * (1 - rate) / m)
    assert np.all(np.abs(y.mean(axis=0) - z[0]) < 4 * se)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_nan_and_inf_are_not_hidden(dtype):
    """A NaN or inf reaching the activation stays visible (NaN) even in a
    dropped unit: divergence is never masked by dropout."""
    key = K.drop_key(1, 0, 0)
    keep = R.dropout_keep(4, 64, 0.5, key)
    z = np.zeros((4, 64), dtype)
    i, j = np.argwhere(~keep)[0]
    z[i, j] = np.nan
    z[0, 0] = np.inf
    K.bias_act_dropout_forward(z, None, "relu", 0.0, 0.5, key, 0)
    assert np.isnan(z[i, j])
    assert not np.isfinite(z[0, 0])


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, np.nan])
def test_wrapper_refuses_bad_rates(rate):
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match="dropout rate must lie in"):
        K.bias_act_dropout_forward(z, None, "relu", 0.0, rate, 1, 0)
    with pytest.raises(ValueError, match="dropout rate must lie in"):
        K.bias_act_dropout_backward(z, z, z.copy(), None, "relu", 0.0, rate, 1, 0)
