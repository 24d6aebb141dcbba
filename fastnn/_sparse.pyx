# _sparse.pyx -- typed wrappers of the sparse first-layer kernels of
# csrc/fastnn.h (csrc/sparse.c), same names without the fnn_ prefix and
# dtype suffix (fastnn/reference.py holds the NumPy twin of each).  A CSR
# matrix is passed as any object with indptr, indices, data and shape (a
# scipy.sparse CSR matrix or array, or fastnn._validation.CSRInput); its
# arrays must already have the kernels' types (no conversions here:
# fastnn._validation.check_sparse converts).  Every wrapper checks what it
# is handed before the kernel runs, so no input from Python can make a
# kernel read or write out of bounds.  Outputs are written in place.
import numpy as np

cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t

from fastnn._kernels cimport (fnn_optim, FNN_OPT_SGD, FNN_OPT_MOMENTUM,
                              FNN_OPT_NESTEROV, FNN_OPT_ADAM)
from fastnn._sparse cimport *

cnp.import_array()

ctypedef fused floating:
    float
    double

OPTIMIZERS = {"sgd": FNN_OPT_SGD, "momentum": FNN_OPT_MOMENTUM,
              "nesterov": FNN_OPT_NESTEROV, "adam": FNN_OPT_ADAM}

# fnn_csr_check's status codes by name
CSR_OK = FNN_CSR_OK
CSR_INDPTR_START = FNN_CSR_INDPTR_START
CSR_INDPTR_ORDER = FNN_CSR_INDPTR_ORDER
CSR_INDPTR_END = FNN_CSR_INDPTR_END
CSR_INDEX_RANGE = FNN_CSR_INDEX_RANGE
CSR_NONFINITE = FNN_CSR_NONFINITE


def _vector(a, name, dtypes):
    if not isinstance(a, np.ndarray) or a.ndim != 1:
        raise TypeError(f"{name} must be a 1-D numpy array, got {type(a).__name__}")
    if a.dtype not in dtypes:
        raise TypeError(f"{name} has dtype {a.dtype}, expected one of "
                        f"{[np.dtype(d).name for d in dtypes]}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be contiguous")
    return a


def csr_parts(X, dtype=None, name="X"):
    """(indptr, indices, data, n_rows, n_cols) of the CSR matrix X, checked
    to be what the kernels read: 1-D contiguous arrays, indptr and indices
    both int32 or both int64, data float32 or float64 (dtype, if given),
    len(indptr) == n_rows + 1 and len(indices) == len(data).  Their values
    are not checked here (see csr_check)."""
    try:
        n_rows, n_cols = X.shape
        indptr, indices, data = X.indptr, X.indices, X.data
    except (AttributeError, TypeError, ValueError):
        raise TypeError(f"{name} must be a 2-D CSR matrix (indptr, indices, data, "
                        f"shape), got {type(X).__name__}") from None
    _vector(indptr, f"{name}.indptr", (np.int32, np.int64))
    _vector(indices, f"{name}.indices", (indptr.dtype,))
    _vector(data, f"{name}.data",
            (np.float32, np.float64) if dtype is None else (np.dtype(dtype),))
    if n_rows < 0 or n_cols < 0 or indptr.shape[0] != n_rows + 1:
        raise ValueError(f"{name}.indptr has {indptr.shape[0]} elements, expected "
                         f"n_rows + 1 = {n_rows + 1}")
    if indices.shape[0] != data.shape[0]:
        raise ValueError(f"{name}.indices has {indices.shape[0]} elements but "
                         f"{name}.data has {data.shape[0]}")
    return indptr, indices, data, int(n_rows), int(n_cols)


cdef void _fill(fnn_csr *c, tuple parts):
    cdef cnp.ndarray ip = parts[0], ix = parts[1], d = parts[2]
    c.n_rows = parts[3]
    c.n_cols = parts[4]
    c.idx64 = ip.dtype == np.int64
    c.indptr = cnp.PyArray_DATA(ip)
    c.indices = cnp.PyArray_DATA(ix)
    c.data = cnp.PyArray_DATA(d)


def csr_check(X):
    """(code, where): fnn_csr_check of X (csr_parts' structure required):
    CSR_OK (where -1), or the first problem among indptr[0] != 0, a
    decreasing indptr, indptr[-1] beyond the entries, an index outside
    [0, n_cols), a NaN or inf value, and its position."""
    parts = csr_parts(X)
    cdef fnn_csr c
    _fill(&c, parts)
    cdef int64_t nnz = parts[1].shape[0], where = -1
    cdef int code
    cdef bint f32 = parts[2].dtype.itemsize == 4
    with nogil:
        if f32:
            code = fnn_csr_check_f32(&c, nnz, &where)
        else:
            code = fnn_csr_check_f64(&c, nnz, &where)
    return code, where


def csr_problem(code, where, X, name="X", converted_to=None):
    """The error message for fnn_csr_check's (code, where) on X."""
    indptr, indices, data, n_rows, n_cols = csr_parts(X)
    if code == FNN_CSR_INDPTR_START:
        return f"{name}.indptr must start at 0, got {indptr[0]}"
    if code == FNN_CSR_INDPTR_ORDER:
        return (f"{name}.indptr decreases at row {where} ({indptr[where]} then "
                f"{indptr[where + 1]}): it must be non-decreasing")
    if code == FNN_CSR_INDPTR_END:
        return (f"{name}.indptr ends at {indptr[n_rows]}, beyond the "
                f"{indices.shape[0]} stored entries")
    row = int(np.searchsorted(indptr, where, side="right")) - 1
    if code == FNN_CSR_INDEX_RANGE:
        return (f"{name}.indices[{where}] = {indices[where]} (row {row}) is out of "
                f"range for {n_cols} columns")
    if code == FNN_CSR_NONFINITE:
        v = data[where]
        kind = "NaN" if np.isnan(v) else "infinity"
        what = f" (after conversion to {converted_to})" if converted_to else ""
        return (f"{name} contains {kind} at index ({row}, {indices[where]}) "
                f"(stored entry {where}){what}; fastnn needs finite inputs")
    return f"{name} is not a valid CSR matrix (check code {code} at {where})"


def checked_parts(X, dtype=None, name="X"):
    """csr_parts of X after csr_check: ValueError naming the first problem."""
    parts = csr_parts(X, dtype, name)
    code, where = csr_check(X)
    if code != FNN_CSR_OK:
        raise ValueError(csr_problem(code, where, X, name))
    return parts


cdef _batch_rows(rows, row0, m, int64_t n_rows):
    """(rows array or None, row0, m) for the kernels, checked in range."""
    if rows is not None:
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        if rows.ndim != 1:
            raise ValueError(f"rows must be 1-D, got shape {rows.shape}")
        if rows.shape[0] and (rows.min() < 0 or rows.max() >= n_rows):
            raise ValueError(f"rows must lie in [0, {n_rows}), got values in "
                             f"[{rows.min()}, {rows.max()}]")
        return rows, 0, rows.shape[0]
    if m is None:
        m = n_rows - row0
    if row0 < 0 or m < 0 or row0 + m > n_rows:
        raise ValueError(f"rows [{row0}, {row0 + m}) are not within the "
                         f"{n_rows} rows of X")
    return None, row0, m


cdef int64_t _ld(arr, name) except -1:
    if arr.shape[1] > 1 and arr.strides[1] != arr.itemsize:
        raise ValueError(f"each row of {name} must be contiguous")
    if arr.shape[0] <= 1 or arr.shape[1] == 0:
        return max(arr.shape[1], 1)
    if arr.strides[0] % arr.itemsize or arr.strides[0] < arr.shape[1] * arr.itemsize:
        raise ValueError(f"{name} has rows that overlap or are out of order")
    return arr.strides[0] // arr.itemsize


def csr_matmul(X, const floating[:, :] w, floating[:, :] z, rows=None,
               int64_t row0=0, m=None):
    """z := X_b w for the batch rows X_b of X (rows[r], or row0 + r for r <
    m): overwritten, never read.  w: (n_cols, n); z: (m, n)."""
    parts = checked_parts(X, np.float32 if floating is float else np.float64)
    rows, row0, m = _batch_rows(rows, row0, m, parts[3])
    cdef int64_t mm = m, n = w.shape[1]
    if w.shape[0] != parts[4]:
        raise ValueError(f"w has {w.shape[0]} rows, expected n_cols = {parts[4]}")
    if z.shape[0] != mm or z.shape[1] != n:
        raise ValueError(f"z has shape {(z.shape[0], z.shape[1])}, expected "
                         f"{(mm, n)}")
    if mm == 0 or n == 0:
        return
    cdef int64_t ldw = _ld(w, "w") if w.shape[0] > 0 else n
    cdef int64_t ldz = _ld(z, "z")
    cdef fnn_csr c
    _fill(&c, parts)
    cdef const int64_t *rp = NULL
    cdef cnp.ndarray ra
    if rows is not None:
        ra = rows
        rp = <const int64_t *>cnp.PyArray_DATA(ra)
    cdef const floating *wp = &w[0, 0] if w.shape[0] > 0 else NULL
    cdef int64_t r0 = row0
    with nogil:
        if floating is float:
            fnn_csr_matmul_f32(&c, mm, r0, rp, n, wp, ldw, &z[0, 0], ldz)
        else:
            fnn_csr_matmul_f64(&c, mm, r0, rp, n, wp, ldw, &z[0, 0], ldz)


def csr_batch_nnz(X, rows=None, int64_t row0=0, m=None):
    """Number of stored entries in the batch rows of X."""
    parts = csr_parts(X)
    code, where = csr_check(X)
    if code in (FNN_CSR_INDPTR_START, FNN_CSR_INDPTR_ORDER, FNN_CSR_INDPTR_END):
        raise ValueError(csr_problem(code, where, X))
    rows, row0, m = _batch_rows(rows, row0, m, parts[3])
    cdef fnn_csr c
    _fill(&c, parts)
    cdef const int64_t *rp = NULL
    cdef cnp.ndarray ra
    if rows is not None:
        ra = rows
        rp = <const int64_t *>cnp.PyArray_DATA(ra)
    return fnn_csr_batch_nnz(&c, m, row0, rp)


def csr_batch(X, rows=None, int64_t row0=0, m=None):
    """(colptr, pos, val): the batch rows of X regrouped by column
    (fnn_csr_batch): column j's entries at [colptr[j], colptr[j+1]), pos
    their batch rows (int32, ascending within a column), val their values."""
    parts = checked_parts(X)
    rows, row0, m = _batch_rows(rows, row0, m, parts[3])
    if m > 2**31 - 1:
        raise ValueError(f"a batch holds at most 2**31 - 1 rows, got {m}")
    data = parts[2]
    cdef int64_t nnz = csr_batch_nnz(X, rows, row0, m)
    cdef cnp.ndarray colptr = np.empty(parts[4] + 1, np.int64)
    cdef cnp.ndarray pos = np.empty(max(nnz, 1), np.int32)
    cdef cnp.ndarray val = np.empty(max(nnz, 1), data.dtype)
    cdef fnn_csr c
    cdef fnn_csr_batch b
    _fill(&c, parts)
    b.cap = nnz
    b.colptr = <int64_t *>cnp.PyArray_DATA(colptr)
    b.pos = <int32_t *>cnp.PyArray_DATA(pos)
    b.val = cnp.PyArray_DATA(val)
    cdef const int64_t *rp = NULL
    cdef cnp.ndarray ra
    if rows is not None:
        ra = rows
        rp = <const int64_t *>cnp.PyArray_DATA(ra)
    cdef int64_t got, mm = m, r0 = row0
    cdef bint f32 = data.dtype.itemsize == 4
    with nogil:
        if f32:
            got = fnn_csr_batch_f32(&c, mm, r0, rp, &b)
        else:
            got = fnn_csr_batch_f64(&c, mm, r0, rp, &b)
    if got != nnz:                              # pragma: no cover
        raise RuntimeError(f"fnn_csr_batch returned {got}, expected {nnz}")
    return colptr, pos[:nnz], val[:nnz]


cdef _check_batch(colptr, pos, val, int64_t m, dtype):
    """The regrouped batch (colptr, pos, val) checked for the kernels: int64
    colptr from 0, non-decreasing, ending within pos/val; int32 pos in
    [0, m)."""
    _vector(colptr, "colptr", (np.int64,))
    _vector(pos, "pos", (np.int32,))
    _vector(val, "val", (np.dtype(dtype),))
    if colptr.shape[0] < 1 or colptr[0] != 0:
        raise ValueError("colptr must start at 0")
    if colptr.shape[0] > 1 and (np.diff(colptr) < 0).any():
        raise ValueError("colptr must be non-decreasing")
    nnz = int(colptr[colptr.shape[0] - 1])
    if nnz > pos.shape[0] or nnz > val.shape[0]:
        raise ValueError(f"colptr ends at {nnz}, beyond pos ({pos.shape[0]}) or "
                         f"val ({val.shape[0]})")
    if nnz and (pos[:nnz].min() < 0 or pos[:nnz].max() >= m):
        raise ValueError(f"pos must lie in [0, {m}) (the rows of dz)")


cdef _batch_struct(fnn_csr_batch *b, colptr, pos, val, int64_t m):
    cdef cnp.ndarray cp = colptr, ps = pos, vl = val
    b.m = m
    b.n_cols = colptr.shape[0] - 1
    b.nnz = colptr[colptr.shape[0] - 1]
    b.cap = pos.shape[0]
    b.colptr = <int64_t *>cnp.PyArray_DATA(cp)
    b.pos = <int32_t *>cnp.PyArray_DATA(ps)
    b.val = cnp.PyArray_DATA(vl)


cdef _row_range(j0, j1, int64_t n_cols):
    if j1 is None:
        j1 = n_cols
    if not 0 <= j0 <= j1 <= n_cols:
        raise ValueError(f"rows [{j0}, {j1}) are not within the {n_cols} rows of W")
    return j0, j1


def csr_grad(colptr, pos, val, const floating[:, :] dz, floating[:, :] g,
             int64_t j0=0, j1=None):
    """g[j0:j1] := (X_b^T dz)[j0:j1] from the regrouped batch (colptr, pos,
    val) of csr_batch; other rows of g untouched.  dz: (m, n); g: (n_cols,
    n)."""
    cdef int64_t m = dz.shape[0], n = dz.shape[1], n_cols = g.shape[0]
    _check_batch(colptr, pos, val, m, np.float32 if floating is float else np.float64)
    if colptr.shape[0] != n_cols + 1:
        raise ValueError(f"g has {n_cols} rows, but colptr describes "
                         f"{colptr.shape[0] - 1} columns")
    if g.shape[1] != n:
        raise ValueError(f"g has {g.shape[1]} columns, dz has {n}")
    j0, j1 = _row_range(j0, j1, n_cols)
    if j1 == j0 or n == 0:
        return
    cdef int64_t lddz = _ld(dz, "dz") if m > 0 else n, ldg = _ld(g, "g")
    cdef const floating *dzp = &dz[0, 0] if m > 0 else NULL
    cdef fnn_csr_batch b
    _batch_struct(&b, colptr, pos, val, m)
    cdef int64_t a = j0, e = j1
    with nogil:
        if floating is float:
            fnn_csr_grad_f32(&b, a, e, n, dzp, lddz, &g[0, 0], ldg)
        else:
            fnn_csr_grad_f64(&b, a, e, n, dzp, lddz, &g[0, 0], ldg)


def csr_update(colptr, pos, val, const floating[:, :] dz, floating[:, ::1] w,
               floating[:, ::1] vel=None, floating[:, ::1] sq=None,
               str kind="sgd", double lr=0.1, double wd=0.0,
               double momentum=0.9, double beta1=0.9, double beta2=0.999,
               double eps=1e-8, int64_t t=1, int64_t j0=0, j1=None,
               bint sumsq=False):
    """One optimizer step (kind: sgd, momentum, nesterov, adam) of rows
    [j0, j1) of w with the gradient X_b^T dz of the regrouped batch plus wd
    w, fused (fnn_csr_update); vel (momentum, nesterov, adam) and sq (adam)
    are the state, updated in place.  Returns sum(w[j0:j1]**2) before the
    step if sumsq, else None."""
    if kind not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {kind!r}; expected one of "
                         f"{tuple(OPTIMIZERS)}")
    cdef int64_t m = dz.shape[0], n = dz.shape[1], n_cols = w.shape[0]
    _check_batch(colptr, pos, val, m, np.float32 if floating is float else np.float64)
    if colptr.shape[0] != n_cols + 1:
        raise ValueError(f"w has {n_cols} rows, but colptr describes "
                         f"{colptr.shape[0] - 1} columns")
    if w.shape[1] != n:
        raise ValueError(f"w has {w.shape[1]} columns, dz has {n}")
    need_v1, need_v2 = kind != "sgd", kind == "adam"
    for name, arr, need in (("vel", vel, need_v1), ("sq", sq, need_v2)):
        if need and (arr is None or arr.shape[0] != n_cols or arr.shape[1] != n):
            raise ValueError(f"{kind} needs {name} of shape {(n_cols, n)}")
    if kind == "adam" and t < 1:
        raise ValueError(f"adam's step number t must be >= 1, got {t}")
    j0, j1 = _row_range(j0, j1, n_cols)
    if j1 == j0 or n == 0:
        return 0.0 if sumsq else None
    cdef int64_t lddz = _ld(dz, "dz") if m > 0 else n
    cdef const floating *dzp = &dz[0, 0] if m > 0 else NULL
    cdef floating *vp = &vel[0, 0] if need_v1 else NULL
    cdef floating *sp = &sq[0, 0] if need_v2 else NULL
    cdef fnn_csr_batch b
    _batch_struct(&b, colptr, pos, val, m)
    cdef fnn_optim opt
    opt.kind = OPTIMIZERS[kind]
    opt.momentum = momentum
    opt.beta1 = beta1
    opt.beta2 = beta2
    opt.eps = eps
    opt.t = t
    cdef int64_t a = j0, e = j1
    cdef double ss = 0.0
    cdef double *ssp = &ss if sumsq else NULL
    with nogil:
        if floating is float:
            fnn_csr_update_f32(&b, a, e, n, dzp, lddz, &opt, <float>lr,
                               <float>wd, &w[0, 0], vp, sp, ssp)
        else:
            fnn_csr_update_f64(&b, a, e, n, dzp, lddz, &opt, lr, wd, &w[0, 0],
                               vp, sp, ssp)
    return ss if sumsq else None
