"""Sparse input end to end: the first-layer kernels (csrc/sparse.c through
fastnn._sparse) against fastnn.reference and finite differences; the
sparse input checks of fastnn._validation; Network (forward, loss,
loss_and_grad, train_step, fit) on sparse X against the same X densified;
bad sparse input leaving the network unchanged; the scikit-learn drop-ins
on sparse X against scikit-learn itself (1e-8) and never densifying.

Matrices are built with every irregularity a scipy CSR matrix may carry:
columns unsorted within a row, explicit zeros, a column repeated within a
row (scipy allows it: the values add up, as in toarray(), and the kernels
sum them the same way), empty rows; int32 and int64 indices; float32 and
float64 data.  Minibatches are a slice (row0, m), shuffled rows with
repeats, only empty rows, or no rows.  Outputs start as NaN.  Tolerances
are conftest's (RTOL times the scale of the result).
"""
import warnings

import numpy as np
import pytest
import scipy.sparse as sps

from fastnn import _kernels as K
from fastnn import _sparse as S
from fastnn import reference as R
from fastnn._validation import (CSRInput, SparseFormatWarning, check_matrix,
                                check_sparse, is_sparse)
from conftest import DTYPE_PARAMS, RTOL, assert_close, f32round, key, padded

IDX_PARAMS = [pytest.param(np.int32, id="i32"), pytest.param(np.int64, id="i64")]
# (n_rows, n_cols, n): odd sizes around the vector widths, n past the
# kernels' 128-element column chunk
SHAPES = [pytest.param(*s, id="x".join(map(str, s)))
          for s in [(1, 1, 1), (4, 3, 2), (9, 17, 7), (23, 40, 33), (31, 64, 65),
                    (12, 50, 130)]]
KINDS = ("sgd", "momentum", "nesterov", "adam")


def make_csr(rng, n_rows, n_cols, dtype, idx, density=0.3, unsorted=True,
             zeros=True, dups=True, empty_every=3, scale=1.0):
    """A CSRInput with unsorted columns, explicit zeros, repeated columns and
    empty rows (every empty_every-th row), as asked."""
    indptr, indices, data = [0], [], []
    for i in range(n_rows):
        k = 0 if (empty_every and i % empty_every == 1) else \
            max(1, rng.binomial(n_cols, density))
        cols = rng.choice(n_cols, size=min(k, n_cols), replace=False)
        if not unsorted:
            cols.sort()
        vals = rng.normal(scale=scale, size=len(cols))
        if zeros and len(cols) > 1:
            vals[rng.random(len(cols)) < 0.2] = 0.0
        if dups and len(cols):
            cols = np.append(cols, cols[0])
            vals = np.append(vals, rng.normal(scale=scale))
        indices.extend(cols)
        data.extend(vals)
        indptr.append(len(indices))
    return CSRInput(np.array(indptr, dtype=idx), np.array(indices, dtype=idx),
                    np.array(data, dtype=dtype), (n_rows, n_cols))


def batches(rng, n_rows):
    """(rows, row0, m) of the minibatches a test runs: all rows in order, a
    slice, shuffled rows with a repeat, empty rows only (rows 1, 4, ... of
    make_csr), and no rows."""
    out = [(None, 0, None), (None, n_rows // 2, n_rows - n_rows // 2)]
    shuffled = rng.permutation(n_rows)[: max(1, n_rows // 2)]
    out.append((np.append(shuffled, shuffled[0]), 0, None))
    empty = np.arange(1, n_rows, 3)
    if len(empty):
        out.append((empty, 0, None))
    out.append((np.zeros(0, np.int64), 0, None))
    return out


def n_batch(X, rows, row0, m):
    return len(rows) if rows is not None else (X.shape[0] - row0 if m is None else m)


# ---- the CSR check -------------------------------------------------------------

@pytest.mark.parametrize("idx", IDX_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_csr_check_valid_and_each_problem(dtype, idx, rng):
    X = make_csr(rng, 9, 12, dtype, idx)
    assert S.csr_check(X) == R.csr_check(X) == (S.CSR_OK, -1)

    def bad(**kw):
        arrs = {"indptr": X.indptr.copy(), "indices": X.indices.copy(),
                "data": X.data.copy()}
        for name, (i, v) in kw.items():
            arrs[name][i] = v
        return CSRInput(arrs["indptr"], arrs["indices"], arrs["data"], X.shape)

    nnz = X.nnz
    cases = [(bad(indptr=(0, 1)), S.CSR_INDPTR_START, 0),
             (bad(indptr=(3, X.indptr[4] + 1)), S.CSR_INDPTR_ORDER, 3),
             (bad(indptr=(9, nnz + 1)), S.CSR_INDPTR_END, 9),
             (bad(indices=(5, 12)), S.CSR_INDEX_RANGE, 5),
             (bad(indices=(7, -1)), S.CSR_INDEX_RANGE, 7),
             (bad(data=(nnz - 1, np.nan)), S.CSR_NONFINITE, nnz - 1),
             (bad(data=(2, -np.inf)), S.CSR_NONFINITE, 2)]
    for Y, code, where in cases:
        assert S.csr_check(Y) == R.csr_check(Y) == (code, where)
    # the first problem in order: the whole indptr before any entry
    Y = bad(indices=(0, 99), indptr=(9, nnz + 5))
    assert S.csr_check(Y) == (S.CSR_INDPTR_END, 9)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_csr_check_finds_problems_past_the_first_block(dtype, rng):
    """Entries are checked in blocks of 4096: a bad entry deep in a large
    matrix, and one in the last partial block, are found at their index."""
    X = make_csr(rng, 600, 500, dtype, np.int32, density=0.05)
    assert X.nnz > 9000
    for k in (4096, 4097, 8191, X.nnz - 1):
        ind = X.indices.copy()
        ind[k] = 500
        assert S.csr_check(CSRInput(X.indptr, ind, X.data, X.shape)) == \
            (S.CSR_INDEX_RANGE, k)
        dat = X.data.copy()
        dat[k] = np.nan
        assert S.csr_check(CSRInput(X.indptr, X.indices, dat, X.shape)) == \
            (S.CSR_NONFINITE, k)


def test_csr_check_ignores_entries_past_indptr_end(rng):
    """Stored entries beyond indptr[-1] (scipy allows spare room) are not
    part of the matrix: not checked, not read."""
    X = make_csr(rng, 5, 6, np.float64, np.int64)
    ind = np.append(X.indices, [-7, 99])
    dat = np.append(X.data, [np.nan, np.inf])
    Y = CSRInput(X.indptr, ind, dat, X.shape)
    assert S.csr_check(Y) == R.csr_check(Y) == (S.CSR_OK, -1)


# ---- forward product -------------------------------------------------------------

@pytest.mark.parametrize("n_rows, n_cols, n", SHAPES)
@pytest.mark.parametrize("idx", IDX_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_csr_matmul_matches_reference(dtype, idx, n_rows, n_cols, n, rng):
    X = make_csr(rng, n_rows, n_cols, dtype, idx)
    w = rng.normal(size=(n_cols, n)).astype(dtype)
    for rows, row0, m in batches(rng, n_rows):
        mb = n_batch(X, rows, row0, m)
        z = np.full((mb, n), np.nan, dtype)
        S.csr_matmul(X, w, z, rows=rows, row0=row0, m=m)
        ref = R.csr_matmul(X, w, rows, row0, m)
        assert_close(z, ref, dtype, err_msg=f"rows={rows} row0={row0} m={m}")
        # the same through scipy's own product (repeats summed by scipy)
        Xs = sps.csr_matrix((X.data.astype(np.float64), X.indices, X.indptr),
                            shape=X.shape)
        sel = np.arange(row0, row0 + mb) if rows is None else rows
        assert_close(z, (Xs[sel] @ w.astype(np.float64)), dtype)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_csr_matmul_strided_operands_and_empty_rows(dtype, rng):
    X = make_csr(rng, 10, 21, dtype, np.int64, empty_every=2)
    w = rng.normal(size=(21, 9)).astype(dtype)
    wv, _ = padded(w, pad=3)
    zv, zbig = padded(np.full((10, 9), np.nan, dtype), pad=4)
    S.csr_matmul(X, wv, zv)
    assert_close(zv, R.csr_matmul(X, w), dtype)
    assert np.isnan(zbig[:, 9:]).all(), "kernel wrote into the row padding"
    # rows 1, 3, 5, ... are empty: exactly zero, however NaN z was
    assert (zv[1::2] == 0).all()


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_csr_matmul_saturating_values(dtype, rng):
    """Values near the top of the dtype's range: products stay within it
    (or overflow to inf exactly where the reference does, in the dtype)."""
    big = 1e150 if dtype == np.float64 else 1e18
    X = make_csr(rng, 8, 15, dtype, np.int32, scale=big)
    w = rng.normal(size=(15, 5)).astype(dtype)
    z = np.full((8, 5), np.nan, dtype)
    S.csr_matmul(X, w, z)
    assert np.isfinite(z).all()
    assert_close(z, R.csr_matmul(X, w), dtype)
    huge = np.finfo(dtype).max / 4
    Y = CSRInput(X.indptr, X.indices, np.full_like(X.data, huge), X.shape)
    w1 = np.full((15, 5), 8, dtype)
    S.csr_matmul(Y, w1, z)
    nonempty = np.diff(X.indptr) > 0
    assert np.isinf(z[nonempty]).all() and (z[~nonempty] == 0).all()


def test_csr_matmul_repeated_columns_add_up(rng):
    """A row that stores column j twice multiplies W[j] by the sum of both
    values: the same as after scipy's sum_duplicates()."""
    X = make_csr(rng, 12, 10, np.float64, np.int32, dups=True)
    Xs = sps.csr_matrix((X.data, X.indices, X.indptr), shape=X.shape)
    assert not Xs.has_canonical_format
    C = Xs.copy()
    C.sum_duplicates()
    assert C.nnz < Xs.nnz
    w = rng.normal(size=(10, 4))
    z1, z2 = np.empty((12, 4)), np.empty((12, 4))
    S.csr_matmul(X, w, z1)
    S.csr_matmul(C, w, z2)
    assert_close(z1, z2, np.float64)
    assert_close(z1, Xs.toarray() @ w, np.float64)


# ---- the batch regrouped by column -------------------------------------------------

@pytest.mark.parametrize("n_rows, n_cols, n", SHAPES)
@pytest.mark.parametrize("idx", IDX_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_csr_batch_matches_reference_exactly(dtype, idx, n_rows, n_cols, n, rng):
    X = make_csr(rng, n_rows, n_cols, dtype, idx)
    for rows, row0, m in batches(rng, n_rows):
        colptr, pos, val = S.csr_batch(X, rows, row0, m)
        rc, rp, rv = R.csr_batch(X, rows, row0, m)
        np.testing.assert_array_equal(colptr, rc)
        np.testing.assert_array_equal(pos, rp)
        np.testing.assert_array_equal(val, rv)
        assert val.dtype == dtype and pos.dtype == np.int32
        assert S.csr_batch_nnz(X, rows, row0, m) == R.csr_batch_nnz(X, rows, row0, m) \
            == colptr[-1]


# ---- weight gradient ---------------------------------------------------------------

@pytest.mark.parametrize("n_rows, n_cols, n", SHAPES)
@pytest.mark.parametrize("idx", IDX_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_csr_grad_matches_reference(dtype, idx, n_rows, n_cols, n, rng):
    X = make_csr(rng, n_rows, n_cols, dtype, idx)
    for rows, row0, m in batches(rng, n_rows):
        mb = n_batch(X, rows, row0, m)
        colptr, pos, val = S.csr_batch(X, rows, row0, m)
        dz = rng.normal(size=(mb, n)).astype(dtype)
        g = np.full((n_cols, n), np.nan, dtype)
        S.csr_grad(colptr, pos, val, dz, g)
        ref = R.csr_grad(colptr, pos, val, dz)
        assert_close(g, ref, dtype)
        # independently: the dense batch's X_b^T dz
        dense = R.csr_rows_dense(X, rows, row0, m)
        assert_close(g, dense.T @ dz.astype(np.float64), dtype)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_csr_grad_row_range_and_strides(dtype, rng):
    X = make_csr(rng, 14, 30, dtype, np.int32)
    rows = rng.permutation(14)[:9]
    colptr, pos, val = S.csr_batch(X, rows)
    dz = rng.normal(size=(9, 11)).astype(dtype)
    dzv, _ = padded(dz, pad=2)
    gv, gbig = padded(np.full((30, 11), np.nan, dtype), pad=3)
    S.csr_grad(colptr, pos, val, dzv, gv, j0=7, j1=19)
    ref = R.csr_grad(colptr, pos, val, dz)
    assert_close(gv[7:19], ref[7:19], dtype)
    assert np.isnan(gv[:7]).all() and np.isnan(gv[19:]).all()
    assert np.isnan(gbig[:, 11:]).all()


def _logcosh_loss(X, rows, w):
    """L(W) = sum log cosh(X_b W), in float64 through the kernel; dL/dZ =
    tanh(X_b W)."""
    z = np.empty((len(rows), w.shape[1]))
    S.csr_matmul(X, w, z, rows=rows)
    return float(np.sum(np.logaddexp(z, -z) - np.log(2))), np.tanh(z)


@pytest.mark.parametrize("idx", IDX_PARAMS)
def test_csr_grad_against_finite_differences(idx, rng):
    """The gradient of L(W) = sum log cosh(X_b W) is X_b^T tanh(X_b W): the
    kernel's, checked by central differences at entries of W in rows the
    batch touches (repeated columns included) and rows it does not."""
    X = make_csr(rng, 11, 16, np.float64, idx, density=0.25)
    rows = np.array([0, 2, 3, 3, 7, 10])
    w = rng.normal(scale=0.5, size=(16, 5))
    _, dz = _logcosh_loss(X, rows, w)
    colptr, pos, val = S.csr_batch(X, rows)
    g = np.full((16, 5), np.nan)
    S.csr_grad(colptr, pos, val, dz, g)
    touched = np.flatnonzero(np.diff(colptr) > 0)
    untouched = np.flatnonzero(np.diff(colptr) == 0)
    assert len(touched) and len(untouched)
    h = 1e-6
    for j in list(touched) + list(untouched[:3]):
        for c in range(5):
            wp, wm = w.copy(), w.copy()
            wp[j, c] += h
            wm[j, c] -= h
            fd = (_logcosh_loss(X, rows, wp)[0] - _logcosh_loss(X, rows, wm)[0]) / (2 * h)
            assert abs(g[j, c] - fd) <= 1e-6 * max(1.0, abs(fd)), (j, c, g[j, c], fd)
    assert (g[untouched] == 0).all()


# ---- fused gradient + optimizer step ---------------------------------------------------

def _state(rng, shape, dtype, kind):
    vel = rng.normal(scale=0.1, size=shape).astype(dtype) if kind != "sgd" else None
    sq = (rng.random(shape) * 0.01).astype(dtype) if kind == "adam" else None
    return vel, sq


@pytest.mark.parametrize("wd", [pytest.param(0.0, id="wd0"), pytest.param(0.01, id="wd.01")])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n_rows, n_cols, n", SHAPES)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_csr_update_matches_reference(dtype, n_rows, n_cols, n, kind, wd, rng):
    idx = np.int64 if n % 2 else np.int32
    X = make_csr(rng, n_rows, n_cols, dtype, idx)
    w = rng.normal(size=(n_cols, n)).astype(dtype)
    vel, sq = _state(rng, w.shape, dtype, kind)
    h = lambda v: f32round(v, dtype)     # noqa: E731  hyper-parameters as the kernel sees them
    for t, (rows, row0, m) in enumerate(batches(rng, n_rows), start=1):
        mb = n_batch(X, rows, row0, m)
        colptr, pos, val = S.csr_batch(X, rows, row0, m)
        dz = rng.normal(size=(mb, n)).astype(dtype)
        ref = R.csr_update(colptr, pos, val, dz, w, vel, sq, kind, h(0.05), h(wd),
                           h(0.9), h(0.9), h(0.999), h(1e-8), t)
        ss = S.csr_update(colptr, pos, val, dz, w, vel, sq, kind, 0.05, wd,
                          0.9, 0.9, 0.999, 1e-8, t, sumsq=True)
        assert_close(w, ref[0], dtype)
        if vel is not None:
            assert_close(vel, ref[1], dtype)
        if sq is not None:
            assert_close(sq, ref[2], dtype)
        assert ss == pytest.approx(ref[3], rel=RTOL[key(dtype)])
        w, vel, sq = (a if a is None else a.astype(dtype) for a in (w, vel, sq))


@pytest.mark.parametrize("wd", [0.0, 0.02])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_csr_update_equals_grad_then_flat_step(dtype, kind, wd, rng):
    """The fused step against fnn_csr_grad followed by the flat optimizer
    kernel of csrc/optim.c over the same W: the same formulas."""
    X = make_csr(rng, 20, 45, dtype, np.int32, density=0.1)
    rows = rng.permutation(20)[:12]
    colptr, pos, val = S.csr_batch(X, rows)
    dz = rng.normal(size=(12, 19)).astype(dtype)
    w = rng.normal(size=(45, 19)).astype(dtype)
    vel, sq = _state(rng, w.shape, dtype, kind)
    g = np.empty_like(w)
    S.csr_grad(colptr, pos, val, dz, g)
    w2, v2, s2 = w.copy(), None if vel is None else vel.copy(), None if sq is None else sq.copy()
    if kind == "sgd":
        K.sgd_step(w2.ravel(), g.ravel(), 0.1, wd)
    elif kind == "adam":
        K.adam_step(w2.ravel(), g.ravel(), v2.ravel(), s2.ravel(), 3, 0.01, wd=wd)
    else:
        K.momentum_step(w2.ravel(), g.ravel(), v2.ravel(), 0.1, 0.9, wd,
                        kind == "nesterov")
    S.csr_update(colptr, pos, val, dz, w, vel, sq, kind, 0.1 if kind != "adam" else 0.01,
                 wd, t=3)
    rtol = 4 * np.finfo(dtype).eps
    assert_close(w, w2, dtype, rtol=rtol)
    if vel is not None:
        assert_close(vel, v2, dtype, rtol=rtol)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_csr_update_untouched_rows_bit_for_bit(dtype, kind, rng):
    """A row without entries in the batch (the cheap path: the gradient is
    not summed, dz not read) gets bit for bit what a row whose entries are
    all explicit zeros gets (the summed path, gradient 0): the same formula.
    Rows 0..4 of W, vel and sq are five copies of one row; rows 0, 2 have
    zero-valued entries in the batch, rows 1, 3, 4 none."""
    n_cols, n = 5, 37
    indptr = np.array([0, 2, 3], np.int32)
    X = CSRInput(indptr, np.array([0, 2, 0], np.int32),
                 np.zeros(3, dtype), (2, n_cols))
    colptr, pos, val = S.csr_batch(X)
    assert list(np.diff(colptr)) == [2, 0, 1, 0, 0]
    w = np.tile(rng.normal(size=n).astype(dtype), (n_cols, 1))
    vel, sq = _state(rng, (1, n), dtype, kind)
    vel = None if vel is None else np.tile(vel, (n_cols, 1))
    sq = None if sq is None else np.tile(sq, (n_cols, 1))
    dz = rng.normal(size=(2, n)).astype(dtype)
    for wd in (0.0, 0.01):
        for t in (1, 2):
            S.csr_update(colptr, pos, val, dz, w, vel, sq, kind, 0.05, wd, t=t)
            for a in (w, vel, sq):
                if a is not None:
                    same = np.tile(a[0], (n_cols, 1))
                    np.testing.assert_array_equal(a.view(np.uint8), same.view(np.uint8))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_csr_update_by_row_ranges_equals_whole(dtype, kind, rng):
    """Two threads may share a step by ranges of W's rows: ranges [0, c) and
    [c, n_cols) give bit for bit the whole step, and their sums of squares
    add up to the whole one's."""
    X = make_csr(rng, 16, 40, dtype, np.int64, density=0.1)
    rows = rng.permutation(16)[:10]
    colptr, pos, val = S.csr_batch(X, rows)
    dz = rng.normal(size=(10, 6)).astype(dtype)
    w = rng.normal(size=(40, 6)).astype(dtype)
    vel, sq = _state(rng, w.shape, dtype, kind)
    whole = [None if a is None else a.copy() for a in (w, vel, sq)]
    ss = S.csr_update(colptr, pos, val, dz, *whole, kind, 0.05, 0.01, t=2, sumsq=True)
    for cut in (0, 1, 17, 39, 40):
        parts = [None if a is None else a.copy() for a in (w, vel, sq)]
        s1 = S.csr_update(colptr, pos, val, dz, *parts, kind, 0.05, 0.01, t=2,
                          j0=0, j1=cut, sumsq=True)
        s2 = S.csr_update(colptr, pos, val, dz, *parts, kind, 0.05, 0.01, t=2,
                          j0=cut, sumsq=True)
        for a, b in zip(parts, whole):
            if a is not None:
                np.testing.assert_array_equal(a, b)
        assert s1 + s2 == pytest.approx(ss, rel=1e-12)


def test_csr_update_sgd_without_decay_leaves_untouched_rows(rng):
    """Plain SGD without decay changes only the rows the batch touches."""
    X = make_csr(rng, 6, 50, np.float64, np.int32, density=0.05)
    colptr, pos, val = S.csr_batch(X, np.array([0, 2, 5]))
    dz = rng.normal(size=(3, 4))
    w = rng.normal(size=(50, 4))
    w0 = w.copy()
    S.csr_update(colptr, pos, val, dz, w, kind="sgd", lr=0.1, wd=0.0)
    untouched = np.diff(colptr) == 0
    np.testing.assert_array_equal(w[untouched], w0[untouched])
    assert (w[~untouched] != w0[~untouched]).any()


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_empty_batch(dtype, rng):
    """No rows: nothing to multiply, a zero gradient everywhere, the
    zero-gradient step on every row."""
    X = make_csr(rng, 5, 8, dtype, np.int32)
    rows = np.zeros(0, np.int64)
    z = np.empty((0, 3), dtype)
    S.csr_matmul(X, np.ones((8, 3), dtype), z, rows=rows)
    colptr, pos, val = S.csr_batch(X, rows)
    assert colptr[-1] == 0 and (colptr == 0).all()
    g = np.full((8, 3), np.nan, dtype)
    S.csr_grad(colptr, pos, val, np.empty((0, 3), dtype), g)
    assert (g == 0).all()
    w = rng.normal(size=(8, 3)).astype(dtype)
    ref = R.sgd_step(w, np.zeros_like(w), f32round(0.1, dtype), f32round(0.5, dtype))
    S.csr_update(colptr, pos, val, np.empty((0, 3), dtype), w, kind="sgd", lr=0.1,
                 wd=0.5)
    assert_close(w, ref, dtype)


# ---- the wrappers refuse what would read out of bounds ---------------------------------

def test_wrappers_refuse_bad_arguments(rng):
    X = make_csr(rng, 6, 9, np.float64, np.int32)
    w = np.ones((9, 2))
    with pytest.raises(ValueError, match="rows must lie in"):
        S.csr_matmul(X, w, np.empty((1, 2)), rows=[6])
    with pytest.raises(ValueError, match="rows must lie in"):
        S.csr_batch(X, rows=[-1])
    with pytest.raises(ValueError, match="not within"):
        S.csr_matmul(X, w, np.empty((3, 2)), row0=4, m=3)
    with pytest.raises(ValueError, match="w has 8 rows"):
        S.csr_matmul(X, np.ones((8, 2)), np.empty((6, 2)))
    with pytest.raises(ValueError, match="z has shape"):
        S.csr_matmul(X, w, np.empty((5, 2)))
    with pytest.raises(TypeError, match="data has dtype float64"):
        S.csr_matmul(X, w.astype(np.float32), np.empty((6, 2), np.float32))
    bad = CSRInput(X.indptr, np.where(X.indices == X.indices[0], 9, X.indices).astype(np.int32),
                   X.data, X.shape)
    with pytest.raises(ValueError, match="out of range for 9 columns"):
        S.csr_matmul(bad, w, np.empty((6, 2)))
    with pytest.raises(ValueError, match="out of range"):
        S.csr_batch(bad)
    with pytest.raises(TypeError, match="indices has dtype int64"):
        S.csr_check(CSRInput(X.indptr, X.indices.astype(np.int64), X.data, X.shape))
    with pytest.raises(ValueError, match="indptr has 7 elements, expected"):
        S.csr_check(CSRInput(X.indptr, X.indices, X.data, (7, 9)))
    colptr, pos, val = S.csr_batch(X)
    dz = np.ones((6, 2))
    g = np.empty((9, 2))
    with pytest.raises(ValueError, match="pos must lie in"):
        S.csr_grad(colptr, pos, val, dz[:3], g)
    with pytest.raises(ValueError, match="colptr must be non-decreasing"):
        bumpy = colptr.copy()
        bumpy[1] = bumpy[-1]
        S.csr_grad(bumpy, pos, val, dz, g)
    with pytest.raises(ValueError, match="beyond pos"):
        S.csr_grad(colptr, pos[:-1].copy(), val, dz, g)
    with pytest.raises(ValueError, match="rows \\[3, 10\\)"):
        S.csr_grad(colptr, pos, val, dz, g, j0=3, j1=10)
    with pytest.raises(ValueError, match="adam needs sq"):
        S.csr_update(colptr, pos, val, dz, g, np.zeros_like(g), None, "adam")
    with pytest.raises(ValueError, match="t must be >= 1"):
        S.csr_update(colptr, pos, val, dz, g, np.zeros_like(g), np.zeros_like(g),
                     "adam", t=0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        S.csr_update(colptr, pos, val, dz, g, kind="rmsprop")


# ---- check_sparse: formats, conversions, errors --------------------------------------

def _scipy(X, cls=sps.csr_matrix):
    return cls((X.data, X.indices, X.indptr), shape=X.shape)


@pytest.mark.parametrize("cls", [sps.csr_matrix, sps.csr_array])
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_check_sparse_csr_kept_without_copy(dtype, cls, rng):
    X = _scipy(make_csr(rng, 7, 11, dtype, np.int32), cls)
    before = (X.indptr.copy(), X.indices.copy(), X.data.copy())
    got = check_sparse(X, dtype)
    assert isinstance(got, CSRInput) and got.shape == X.shape
    assert np.shares_memory(got.data, X.data) and np.shares_memory(got.indices, X.indices)
    # not sorted, not summed, not otherwise touched in place
    for a, b in zip((X.indptr, X.indices, X.data), before):
        np.testing.assert_array_equal(a, b)
    assert not X.has_canonical_format
    np.testing.assert_array_equal(got.tocsr().toarray(), X.toarray())


def test_check_sparse_conversions(rng):
    base = _scipy(make_csr(rng, 9, 13, np.float64, np.int32, dups=False))
    dense = base.toarray()
    # csc: converted once, silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = check_sparse(base.tocsc(), np.float64)
    np.testing.assert_array_equal(got.tocsr().toarray(), dense)
    # other formats: converted with a SparseFormatWarning
    for fmt in ("coo", "lil", "dok", "bsr", "dia"):
        with pytest.warns(SparseFormatWarning, match=f"scipy.sparse {fmt} matrix"):
            got = check_sparse(base.asformat(fmt), np.float64)
        np.testing.assert_array_equal(got.tocsr().toarray(), dense)
    # data dtype converted (data only), index dtypes kept or unified
    got = check_sparse(base, np.float32)
    assert got.dtype == np.float32 and got.indices.dtype == np.int32
    ints = sps.csr_matrix((np.arange(1, base.nnz + 1), base.indices, base.indptr),
                          shape=base.shape)
    assert check_sparse(ints, np.float64).dtype == np.float64
    mixed = sps.csr_matrix(base)       # int64 indptr, int32 indices
    mixed.indptr = base.indptr.astype(np.int64)
    got = check_sparse(mixed, np.float64)
    assert got.indptr.dtype == got.indices.dtype == np.int64
    i64 = sps.csr_matrix(base)
    i64.indptr, i64.indices = base.indptr.astype(np.int64), base.indices.astype(np.int64)
    got = check_sparse(i64, np.float64)
    assert got.indices.dtype == np.int64 and np.shares_memory(got.indices, i64.indices)


def _with(X, **arrays):
    Y = sps.csr_matrix(X, copy=True)
    for k, v in arrays.items():
        setattr(Y, k, v)
    return Y


def test_check_sparse_errors_name_the_problem(rng):
    X = _scipy(make_csr(rng, 6, 10, np.float64, np.int32, dups=False, empty_every=0))
    with pytest.raises(TypeError, match="complex"):
        check_sparse(X.astype(np.complex128), np.float64)
    with pytest.raises(ValueError, match="0 samples"):
        check_sparse(sps.csr_matrix((0, 10)), np.float64)
    with pytest.raises(ValueError, match="0 features"):
        check_sparse(sps.csr_matrix((4, 0)), np.float64)
    with pytest.raises(ValueError, match="has 10 features, but the network expects 11"):
        check_sparse(X, np.float64, n_features=11)
    d = X.data.copy()
    d[3] = np.nan
    row = int(np.searchsorted(X.indptr, 3, side="right")) - 1
    with pytest.raises(ValueError, match=rf"X contains NaN at index \({row}, {X.indices[3]}\)"):
        check_sparse(_with(X, data=d), np.float64)
    d[3] = -np.inf
    with pytest.raises(ValueError, match="X contains infinity"):
        check_sparse(_with(X, data=d), np.float64)
    d[3] = 1e300
    with pytest.raises(ValueError, match="infinity.*after conversion to float32"):
        check_sparse(_with(X, data=d), np.float32)
    ind = X.indices.copy()
    ind[5] = 10
    with pytest.raises(ValueError, match=r"indices\[5\] = 10 .* out of range for 10 columns"):
        check_sparse(_with(X, indices=ind), np.float64)
    ind[5] = -2
    with pytest.raises(ValueError, match=r"indices\[5\] = -2"):
        check_sparse(_with(X, indices=ind), np.float64)
    ip = X.indptr.copy()
    ip[2], ip[3] = ip[3], ip[2]
    with pytest.raises(ValueError, match="indptr decreases at row 2"):
        check_sparse(_with(X, indptr=ip), np.float64)
    ip = X.indptr.copy()
    ip[-1] += 3
    with pytest.raises(ValueError, match="beyond the .* stored entries"):
        check_sparse(_with(X, indptr=ip), np.float64)
    ip = X.indptr.copy() + 1
    with pytest.raises(ValueError, match="must start at 0"):
        check_sparse(_with(X, indptr=ip), np.float64)
    with pytest.raises(ValueError, match="indptr has shape"):
        check_sparse(_with(X, indptr=X.indptr[:-1].copy()), np.float64)


def test_check_sparse_accepts_irregular_csr(rng):
    """Unsorted columns, explicit zeros, repeated columns and empty rows are
    valid CSR: accepted as they are, read as scipy reads them."""
    X = make_csr(rng, 10, 12, np.float64, np.int64)
    Xs = sps.csr_matrix((X.data, X.indices, X.indptr), shape=X.shape)
    got = check_sparse(Xs, np.float64)
    np.testing.assert_array_equal(got.tocsr().toarray(), Xs.toarray())
    assert (got.data == 0).any() and (np.diff(got.indptr) == 0).any()


def test_is_sparse_and_dense_entry_points_refuse_clearly():
    X = sps.random(4, 5, density=0.5, format="csr", random_state=0)
    assert is_sparse(X) and is_sparse(X.tocoo()) and not is_sparse(X.toarray())
    with pytest.raises(TypeError, match="scipy.sparse csr matrix.*toarray"):
        check_matrix(X, np.float64)


# ---- Network with a sparse X ---------------------------------------------------------

from fastnn import Adam, Dense, Maxout, Network, SGD  # noqa: E402

NETS = {
    "mse": (lambda: [Dense(7, "tanh"), Dense(2)], "mse", 2),
    "softmax_ce": (lambda: [Dense(9, "relu"), Dense(3, "softmax")], "softmax_ce", 3),
    "bce": (lambda: [Dense(5, "elu"), Dense(1, "sigmoid")], "bce", 1),
    "maxout_sse": (lambda: [Maxout(4, pieces=3), Dense(6, "sigmoid"), Dense(1)],
                   "sse", 1),
}


def _targets(rng, loss, n, n_out):
    if loss == "softmax_ce":
        return rng.integers(0, n_out, n)
    if loss == "bce":
        return (rng.random((n, 1)) < 0.5).astype(float)
    return rng.normal(size=(n, n_out))


def _pair(kind, n_in, dtype):
    make, loss, n_out = NETS[kind]
    return [Network(make(), loss=loss, n_in=n_in, dtype=dtype, seed=3) for _ in range(2)]


def _tol(dtype):
    return {"rtol": 1e-12 if dtype == np.float64 else 2e-5,
            "atol": 1e-13 if dtype == np.float64 else 2e-6}


@pytest.mark.parametrize("kind", list(NETS))
@pytest.mark.parametrize("idx", IDX_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_network_sparse_matches_dense(dtype, idx, kind, rng):
    """forward, loss, loss_and_grad and train_step on a CSR X (irregular:
    unsorted, zeros, repeats, empty rows) give what they give on X densified."""
    X = make_csr(rng, 23, 41, np.float64, idx)
    Xs = _scipy(X)
    D = Xs.toarray()
    sw = rng.random(23) + 0.5
    y = _targets(rng, NETS[kind][1], 23, NETS[kind][2])
    a, b = _pair(kind, 41, dtype)
    np.testing.assert_allclose(a.forward(Xs), b.forward(D), **_tol(dtype))
    np.testing.assert_allclose(a.loss(Xs, y), b.loss(D, y), **_tol(dtype))
    np.testing.assert_allclose(a.loss(Xs, y, sw), b.loss(D, y, sw), **_tol(dtype))
    la, lb = a.loss_and_grad(Xs, y, sw), b.loss_and_grad(D, y, sw)
    np.testing.assert_allclose(la, lb, **_tol(dtype))
    np.testing.assert_allclose(a.grads, b.grads, **_tol(dtype))
    la, lb = a.train_step(Xs, y, 0.05), b.train_step(D, y, 0.05)
    np.testing.assert_allclose(la, lb, **_tol(dtype))
    np.testing.assert_allclose(a.params, b.params, **_tol(dtype))


def test_network_sparse_formats_and_width_from_data(rng):
    """CSC, csr_array and COO (with a SparseFormatWarning) read the same;
    an unbuilt network takes its width from the sparse X."""
    Xs = _scipy(make_csr(rng, 12, 30, np.float64, np.int32, dups=False))
    net = Network([Dense(4, "tanh"), Dense(1)], seed=0)
    out = net.forward(Xs)
    assert net.n_in == 30
    np.testing.assert_allclose(net.forward(Xs.tocsc()), out, rtol=1e-14)
    np.testing.assert_allclose(net.forward(sps.csr_array(Xs)), out, rtol=1e-14)
    with pytest.warns(SparseFormatWarning):
        np.testing.assert_allclose(net.forward(Xs.tocoo()), out, rtol=1e-14)
    np.testing.assert_allclose(out, net.forward(Xs.toarray()), rtol=1e-13)


def test_network_sparse_gradient_finite_differences(rng):
    """loss_and_grad on a sparse X against central differences of loss,
    at entries of W0 in touched and untouched rows, and at other layers."""
    Xs = _scipy(make_csr(rng, 9, 14, np.float64, np.int64, density=0.2))
    y = rng.normal(size=(9, 2))
    net = Network([Dense(5, "tanh"), Dense(2)], n_in=14, seed=2)
    net.loss_and_grad(Xs, y)
    g = net.grads.copy()
    touched = np.unique(Xs.indices)
    untouched = np.setdiff1d(np.arange(14), touched)
    W0 = net.layers[0].W
    picks = [(int(j), c) for j in list(touched[:4]) + list(untouched[:2]) for c in (0, 4)]
    h = 1e-6
    for j, c in picks:
        k = j * 5 + c                   # W0 is the first block of params
        old = net.params[k]
        net.params[k] = old + h
        lp = net.loss(Xs, y)
        net.params[k] = old - h
        lm = net.loss(Xs, y)
        net.params[k] = old
        assert abs(g[k] - (lp - lm) / (2 * h)) <= 1e-7 * max(1, abs(g[k])), (j, c)
    assert W0.shape == (14, 5)
    assert (g[untouched[0] * 5:(untouched[0] + 1) * 5] == 0).all()


@pytest.mark.parametrize("opt", ["sgd", "momentum", "nesterov", "adam"])
@pytest.mark.parametrize("idx", IDX_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_network_fit_sparse_matches_dense(dtype, idx, opt, rng):
    """Network.fit on a CSR X: the same parameters and loss history as on
    X densified (shuffled minibatches with a partial last one, L2 decay,
    sample weights, sparse validation data; then rows in order, and full
    batches)."""
    X = make_csr(rng, 67, 50, np.float64, idx, density=0.1)
    Xs = _scipy(X)
    D = Xs.toarray()
    y = rng.integers(0, 3, 67)
    sw = rng.random(67) + 0.5

    def optimizer():
        if opt == "adam":
            return Adam(lr=0.01, weight_decay=0.01)
        return SGD(lr=0.05, momentum=0.0 if opt == "sgd" else 0.9,
                   nesterov=opt == "nesterov", weight_decay=0.01)

    nets = [Network([Dense(8, "relu"), Dense(3, "softmax")], loss="softmax_ce",
                    n_in=50, dtype=dtype, seed=1) for _ in range(2)]
    ha = nets[0].fit(Xs, y, epochs=4, batch_size=16, optimizer=optimizer(), seed=7,
                     sample_weight=sw, validation_data=(Xs[:20], y[:20]))
    hb = nets[1].fit(D, y, epochs=4, batch_size=16, optimizer=optimizer(), seed=7,
                     sample_weight=sw, validation_data=(D[:20], y[:20]))
    tol = _tol(dtype)
    np.testing.assert_allclose(nets[0].params, nets[1].params, **tol)
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(ha.history[key], hb.history[key], **tol)
    for kw in (dict(batch_size=10, shuffle=False), dict(batch_size=None)):
        ha = nets[0].fit(Xs, y, epochs=2, optimizer=optimizer(), **kw)
        hb = nets[1].fit(D, y, epochs=2, optimizer=optimizer(), **kw)
        np.testing.assert_allclose(nets[0].params, nets[1].params, **tol)
        np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], **tol)


def test_network_reference_backend_sparse(rng):
    Xs = _scipy(make_csr(rng, 10, 12, np.float64, np.int32))
    y = rng.normal(size=(10, 1))
    a = Network([Dense(3, "tanh"), Dense(1)], n_in=12, seed=0, backend="reference")
    b = Network([Dense(3, "tanh"), Dense(1)], n_in=12, seed=0)
    np.testing.assert_allclose(a.forward(Xs), b.forward(Xs), rtol=1e-13)
    np.testing.assert_allclose(a.loss_and_grad(Xs, y), b.loss_and_grad(Xs, y), rtol=1e-13)
    np.testing.assert_allclose(a.grads, b.grads, rtol=1e-12, atol=1e-15)
    a.fit(Xs, y, epochs=2, batch_size=4, seed=0)
    b.fit(Xs, y, epochs=2, batch_size=4, seed=0)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-12, atol=1e-14)


def _bad_inputs(Xs):
    """(name, matrix, error pattern) for each kind of bad sparse input."""
    nan = sps.csr_matrix(Xs, copy=True)
    nan.data[2] = np.nan
    inf = sps.csr_matrix(Xs, copy=True)
    inf.data[-1] = np.inf
    idx = sps.csr_matrix(Xs, copy=True)
    idx.indices = idx.indices.copy()
    idx.indices[1] = Xs.shape[1] + 3
    neg = sps.csr_matrix(Xs, copy=True)
    neg.indices = neg.indices.copy()
    neg.indices[0] = -1
    ptr = sps.csr_matrix(Xs, copy=True)
    ptr.indptr = ptr.indptr.copy()
    ptr.indptr[3], ptr.indptr[4] = ptr.indptr[4] + 1, ptr.indptr[3]
    wide = sps.random(Xs.shape[0], Xs.shape[1] + 1, density=0.2, format="csr",
                      random_state=0)
    return [("nan", nan, "contains NaN"), ("inf", inf, "contains infinity"),
            ("index", idx, "out of range"), ("negative", neg, "out of range"),
            ("indptr", ptr, "indptr decreases"), ("shape", wide, "features, but")]


def test_network_bad_sparse_input_changes_nothing(rng):
    Xs = _scipy(make_csr(rng, 12, 20, np.float64, np.int32, dups=False, empty_every=0))
    y = rng.normal(size=(12, 1))
    net = Network([Dense(4, "tanh"), Dense(1)], n_in=20, seed=0)
    net.loss_and_grad(Xs, y)
    p0, g0 = net.params.copy(), net.grads.copy()
    for name, bad, pattern in _bad_inputs(Xs):
        for call in (lambda: net.forward(bad), lambda: net.loss(bad, y),
                     lambda: net.loss_and_grad(bad, y),
                     lambda: net.train_step(bad, y, 0.1),
                     lambda: net.fit(bad, y, epochs=2, batch_size=4, optimizer="adam"),
                     lambda: net.fit(Xs, y, epochs=1, validation_data=(bad, y))):
            with pytest.raises(ValueError, match=pattern):
                call()
            np.testing.assert_array_equal(net.params, p0, err_msg=name)
            np.testing.assert_array_equal(net.grads, g0, err_msg=name)
    with pytest.raises(ValueError, match="0 samples"):
        net.forward(sps.csr_matrix((0, 20)))
    with pytest.raises(TypeError, match="complex"):
        net.forward(Xs.astype(np.complex128))


def test_network_sparse_diverging_fit_restores(rng):
    """A sparse fit whose loss becomes non-finite stops with the last
    finite parameters, as the dense fit does."""
    Xs = _scipy(make_csr(rng, 40, 30, np.float64, np.int32, density=0.3))
    y = rng.normal(size=(40, 1)) * 1e150
    net = Network([Dense(6, "relu"), Dense(1)], n_in=30, seed=0)
    with pytest.raises(FloatingPointError):
        net.fit(Xs, y, epochs=20, batch_size=8, lr=10.0)
    assert np.isfinite(net.params).all()


# ---- the scikit-learn drop-ins on sparse input ---------------------------------------

@pytest.fixture
def sk():
    """(scikit-learn's neural_network, fastnn.sklearn), or the test skips."""
    pytest.importorskip("sklearn", reason="scikit-learn is not installed")
    from sklearn import neural_network

    from fastnn import sklearn as fk
    return neural_network, fk


def _rel_diff(a, b):
    return max(float(np.max(np.abs(p - q)) / max(np.max(np.abs(p)), 1e-300))
               for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_))


def _tfidf_like(seed=1, n=300, n_cols=2000, density=0.01):
    rng = np.random.default_rng(seed)
    X = sps.random(n, n_cols, density=density, format="csr", random_state=rng)
    return X, rng.integers(0, 3, n), rng.normal(size=n)


@pytest.mark.parametrize("solver, early_stopping",
                         [("sgd", False), ("adam", False), ("lbfgs", False),
                          ("sgd", True), ("adam", True)])
def test_estimators_sparse_match_sklearn(sk, solver, early_stopping):
    """coefs_ within 1e-8 of scikit-learn's after 10 epochs (or lbfgs
    iterations) on a sparse X, classifier and regressor; predictions too."""
    sk_nn, fk = sk
    X, y, yr = _tfidf_like()
    kw = dict(hidden_layer_sizes=(16,), solver=solver, max_iter=10, random_state=0,
              learning_rate_init=0.01, early_stopping=early_stopping)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for SK, FK, target in ((sk_nn.MLPClassifier, fk.MLPClassifier, y),
                               (sk_nn.MLPRegressor, fk.MLPRegressor, yr)):
            a, b = SK(**kw).fit(X, target), FK(**kw).fit(X, target)
            assert _rel_diff(a, b) <= 1e-8
            assert a.n_iter_ == b.n_iter_
            np.testing.assert_allclose(b.predict(X.tocsc()), a.predict(X), rtol=1e-8,
                                       atol=1e-10)
            assert b.score(X, target) == pytest.approx(a.score(X, target), rel=1e-8)
    np.testing.assert_allclose(b.loss_curve_ if solver != "lbfgs" else [b.loss_],
                               a.loss_curve_ if solver != "lbfgs" else [a.loss_],
                               rtol=1e-8)


def test_classifier_sparse_partial_fit_and_proba(sk):
    sk_nn, fk = sk
    X, y, _ = _tfidf_like(seed=2)
    a = sk_nn.MLPClassifier(hidden_layer_sizes=(8,), random_state=0)
    b = fk.MLPClassifier(hidden_layer_sizes=(8,), random_state=0)
    for _ in range(3):
        a.partial_fit(X, y, classes=[0, 1, 2])
        b.partial_fit(X, y, classes=[0, 1, 2])
    assert _rel_diff(a, b) <= 1e-8
    np.testing.assert_allclose(b.predict_proba(X), a.predict_proba(X), rtol=1e-8,
                               atol=1e-12)


def test_regressor_sparse_poisson_matches_sklearn(sk):
    sk_nn, fk = sk
    X, _, yr = _tfidf_like(seed=3)
    kw = dict(hidden_layer_sizes=(8,), loss="poisson", max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = sk_nn.MLPRegressor(**kw).fit(X, np.abs(yr))
        b = fk.MLPRegressor(**kw).fit(X, np.abs(yr))
    assert _rel_diff(a, b) <= 1e-8


def test_estimator_sparse_does_not_densify(sk, monkeypatch):
    """The drop-in never asks scipy for a dense copy of X."""
    fk = sk[1]
    X, y, _ = _tfidf_like(seed=4)

    def refuse(self, *a, **k):
        raise AssertionError("X was densified")
    for cls in (sps.csr_matrix, sps.csc_matrix):
        monkeypatch.setattr(cls, "toarray", refuse)
        monkeypatch.setattr(cls, "todense", refuse)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = fk.MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0,
                               early_stopping=True).fit(X, y)
    est.predict_proba(X)
    est.score(X.tocsc(), y)


def test_estimator_bad_sparse_input_changes_nothing(sk):
    fk = sk[1]
    X, y, _ = _tfidf_like(seed=5, n=60, n_cols=200, density=0.05)
    est = fk.MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    before = [c.copy() for c in est.coefs_ + est.intercepts_]
    bad = X.copy()
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.partial_fit(bad, y)
    with pytest.raises(ValueError):
        est.predict(sps.random(5, 201, density=0.1, format="csr", random_state=0))
    for b, c in zip(before, est.coefs_ + est.intercepts_):
        np.testing.assert_array_equal(b, c)
