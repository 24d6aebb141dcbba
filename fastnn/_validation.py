"""Input checks at the API boundary: every array is checked once, converted
once (C-contiguous, the network's dtype), and rejected with an error that
names the problem before anything runs."""
import math
import numbers
import sys
import warnings

import numpy as np


def _as_numeric_array(a, name):
    if isinstance(a, np.ndarray):
        arr = a
    else:
        try:
            arr = np.asarray(a)
        except Exception as e:  # ragged lists and the like
            raise ValueError(f"{name} could not be read as an array: {e}") from None
    kind = arr.dtype.kind
    if kind == "c":
        raise TypeError(f"{name} is complex ({arr.dtype}); fastnn trains on real "
                        "numbers")
    if kind == "O":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be numeric; it holds non-numeric "
                            "objects (dtype object)") from None
        if np.iscomplexobj(arr):
            raise TypeError(f"{name} is complex; fastnn trains on real numbers")
    elif kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr


def _first_bad(arr):
    bad = np.argwhere(~np.isfinite(arr))
    return tuple(int(i) for i in bad[0]) if len(bad) else None


def check_finite(arr, name, converted_to=None):
    """Raise ValueError naming the first NaN/inf element of arr (and the
    dtype it was converted to, if given: overflow)."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        pos = _first_bad(arr)
        val = arr[pos]
        kind = "NaN" if np.isnan(val) else "infinity"
        what = f" (after conversion to {converted_to})" if converted_to is not None else ""
        raise ValueError(f"{name} contains {kind} at index {pos}{what}; "
                         "fastnn needs finite inputs")


def check_matrix(X, dtype, name="X", n_features=None):
    """X as a C-contiguous 2-D array of dtype with finite values, or raise."""
    dtype = np.dtype(dtype)
    if is_sparse(X):
        raise TypeError(f"{name} is a scipy.sparse {X.format} matrix, but this "
                        "entry point takes dense arrays; densify it with "
                        f"{name}.toarray() if it fits in memory")
    if (isinstance(X, np.ndarray) and X.dtype == dtype and X.ndim == 2
            and X.flags.c_contiguous):
        arr = X
    else:
        arr = _as_numeric_array(X, name)
        if arr.ndim != 2:
            hint = (" (reshape(-1, 1) for one feature, reshape(1, -1) for one "
                    "sample)" if arr.ndim == 1 else "")
            raise ValueError(f"{name} must be 2-D (n_samples, n_features), got "
                             f"{arr.ndim}-D with shape {arr.shape}{hint}")
        if arr.dtype.kind == "f":
            check_finite(arr, name)
        with np.errstate(over="ignore"):      # overflow is reported below
            arr = np.ascontiguousarray(arr, dtype=dtype)
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has 0 samples (shape {arr.shape})")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has 0 features (shape {arr.shape})")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features, but the network "
                         f"expects {n_features}")
    check_finite(arr, name, dtype)
    return arr


def check_targets(y, n_samples, n_out, loss, dtype, name="y"):
    """Targets as a C-contiguous (n_samples, n_out) array of dtype.

    A 1-D y is accepted for one output; for softmax_ce a 1-D integer y holds
    class labels 0..n_out-1 and is one-hot encoded.  bce targets must lie in
    [0, 1] and softmax_ce targets must be >= 0."""
    dtype = np.dtype(dtype)
    if (isinstance(y, np.ndarray) and y.dtype == dtype and y.ndim == 2
            and y.shape == (n_samples, n_out) and y.flags.c_contiguous
            and loss not in ("bce", "softmax_ce")):
        check_finite(y, name)               # already as the kernels take it
        return y
    arr = _as_numeric_array(y, name)
    if arr.dtype.kind == "f":
        check_finite(arr, name)
    if arr.ndim == 0:
        raise ValueError(f"{name} must have one row per sample, got a scalar")
    if arr.shape[0] != n_samples:
        raise ValueError(f"{name} has {arr.shape[0]} rows, but X has {n_samples} "
                         "samples")
    if loss == "softmax_ce" and arr.ndim == 1 and arr.dtype.kind in "biu":
        labels = arr.astype(np.int64)
        if labels.min() < 0 or labels.max() >= n_out:
            raise ValueError(f"{name} holds class labels in [{labels.min()}, "
                             f"{labels.max()}], but the output layer has "
                             f"{n_out} classes (labels 0..{n_out - 1})")
        out = np.zeros((n_samples, n_out), dtype=dtype)
        out[np.arange(n_samples), labels] = 1
        return out
    if arr.ndim == 1:
        if n_out != 1:
            raise ValueError(f"{name} has shape {arr.shape}, but the network has "
                             f"{n_out} outputs: expected ({n_samples}, {n_out})")
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape[1] != n_out:
        raise ValueError(f"{name} has shape {arr.shape}, expected "
                         f"({n_samples}, {n_out})")
    with np.errstate(over="ignore"):
        arr = np.ascontiguousarray(arr, dtype=dtype)
    check_finite(arr, name, dtype)
    if loss == "bce" and (arr.min() < 0 or arr.max() > 1):
        raise ValueError(f"bce targets must lie in [0, 1]; {name} has values in "
                         f"[{arr.min()}, {arr.max()}]")
    if loss == "softmax_ce" and arr.min() < 0:
        raise ValueError(f"softmax_ce targets must be >= 0 (class probabilities "
                         f"or one-hot rows); {name} has {arr.min()}")
    return arr


def check_sample_weight(sw, n_samples, dtype):
    """None, or a C-contiguous (n_samples,) array of finite weights >= 0 with a
    positive sum."""
    if sw is None:
        return None
    arr = _as_numeric_array(sw, "sample_weight")
    if arr.ndim == 0:
        arr = np.full(n_samples, float(arr))
    if arr.ndim != 1 or arr.shape[0] != n_samples:
        raise ValueError(f"sample_weight has shape {arr.shape}, expected "
                         f"({n_samples},)")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    check_finite(arr, "sample_weight")
    if arr.min() < 0:
        raise ValueError("sample_weight must be >= 0")
    if not arr.sum() > 0:
        raise ValueError("sample_weight sums to 0: no sample would count")
    return arr


def check_positive_int(v, name, minimum=1):
    if (type(v) is not int and (isinstance(v, bool)
                                or not isinstance(v, numbers.Integral))
            or v < minimum):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def check_real(v, name, minimum=None, maximum=None, open_min=False):
    if type(v) is not float:            # the common case without ABC checks
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ValueError(f"{name} must be a finite real number, got {v!r}")
        try:
            v = float(v)
        except OverflowError:           # an int beyond the float range
            raise ValueError(f"{name} must be a finite real number, got {v!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite real number, got {v!r}")
    if minimum is not None and (v < minimum or (open_min and v == minimum)):
        op = ">" if open_min else ">="
        raise ValueError(f"{name} must be {op} {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {v}")
    return v


# ---- sparse input ------------------------------------------------------------

class SparseFormatWarning(UserWarning):
    """A sparse input in a format other than CSR or CSC was converted to CSR
    (a copy of the whole matrix): pass CSR to avoid it."""


def is_sparse(X):
    """True if X is a scipy.sparse matrix or array.  scipy.sparse is not
    imported for this: if it is not loaded, X cannot be one."""
    sps = sys.modules.get("scipy.sparse")
    return sps is not None and sps.issparse(X)


class CSRInput:
    """A sparse input checked for the kernels (see check_sparse): a CSR
    matrix of shape (n_rows, n_cols) as its three arrays, indptr and indices
    both int32 or both int64, data of the network's dtype, all contiguous.
    Rows may hold their columns in any order, repeat a column (the values
    add up, as in scipy's toarray()) or hold explicit zeros.  The arrays may
    be the caller's own: they are never written."""

    __slots__ = ("indptr", "indices", "data", "shape")
    format = "csr"

    def __init__(self, indptr, indices, data, shape):
        self.indptr, self.indices, self.data = indptr, indices, data
        self.shape = (int(shape[0]), int(shape[1]))

    @property
    def nnz(self):
        """Number of stored entries (explicit zeros and repeats included)."""
        return int(self.indptr[-1])

    @property
    def dtype(self):
        return self.data.dtype

    def take_rows(self, idx):
        """A new CSRInput of rows idx (any order, repeats allowed) of this
        one: their entries copied, in order, as scipy's X[idx] would."""
        idx = np.asarray(idx, dtype=np.int64).ravel()
        starts = self.indptr[idx].astype(np.int64)
        lengths = self.indptr[idx + 1].astype(np.int64) - starts
        indptr = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        ent = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return CSRInput(indptr.astype(self.indptr.dtype), self.indices[ent],
                        self.data[ent], (len(idx), self.shape[1]))

    def tocsr(self):
        """The same matrix as a scipy.sparse.csr_matrix (arrays shared)."""
        import scipy.sparse as sps
        return sps.csr_matrix((self.data, self.indices, self.indptr),
                              shape=self.shape, copy=False)

    def __repr__(self):
        return (f"CSRInput(shape={self.shape}, nnz={self.nnz}, "
                f"dtype={self.data.dtype}, index dtype={self.indices.dtype})")


def check_sparse(X, dtype, name="X", n_features=None):
    """A scipy.sparse X as a CSRInput of dtype, fully checked, or raise.

    Formats: CSR is used as it is (no copy when its data already has dtype);
    CSC is converted to CSR once; any other format (COO, LIL, DOK, BSR, DIA)
    is converted to CSR with a SparseFormatWarning.  Data of another real or
    integer dtype is converted (a copy of data only); complex or non-numeric
    data is refused.  indptr and indices are kept when both are int32 or both
    int64, else both become int64.

    Errors (ValueError unless said), each naming the problem: not 2-D; no
    rows; no columns; n_features given and different; indptr not of
    n_rows + 1 elements, not starting at 0, decreasing, or pointing beyond
    the stored entries; an index outside [0, n_cols) (negative included); a
    NaN or inf value, also one that appears only on conversion to dtype
    (float32 overflow).  Every check reads the whole matrix before anything
    else runs, and nothing here writes to X: a caller that validates all of
    its inputs this way before it touches its parameters leaves them
    unchanged on bad input.
    """
    dtype = np.dtype(dtype)
    if len(X.shape) != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got a "
                         f"{len(X.shape)}-D sparse array of shape {X.shape}")
    fmt = X.format
    kind = np.dtype(X.dtype).kind
    if kind == "c":
        raise TypeError(f"{name} is complex ({X.dtype}); fastnn trains on real "
                        "numbers")
    if kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got a sparse matrix of dtype "
                        f"{X.dtype}")
    if fmt == "csc":
        X = X.tocsr()
    elif fmt != "csr":
        warnings.warn(f"{name} is a scipy.sparse {fmt} matrix: converted to CSR "
                      "(a copy); pass CSR or CSC to avoid it",
                      SparseFormatWarning, stacklevel=3)
        X = X.tocsr()
    n_rows, n_cols = X.shape
    if n_rows == 0:
        raise ValueError(f"{name} is empty: it has 0 samples (shape {X.shape})")
    if n_cols == 0:
        raise ValueError(f"{name} has 0 features (shape {X.shape})")
    if n_features is not None and n_cols != n_features:
        raise ValueError(f"{name} has {n_cols} features, but the network "
                         f"expects {n_features}")
    indptr, indices = np.asarray(X.indptr), np.asarray(X.indices)
    if indptr.ndim != 1 or indptr.shape[0] != n_rows + 1:
        raise ValueError(f"{name}.indptr has shape {indptr.shape}, expected "
                         f"({n_rows + 1},) for {n_rows} rows")
    if indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
        raise TypeError(f"{name}'s index arrays must be integers, got "
                        f"{indptr.dtype} and {indices.dtype}")
    idx = indptr.dtype
    if not (idx == indices.dtype and idx in (np.int32, np.int64)):
        idx = np.dtype(np.int64)
    if indices.dtype.kind == "u" and indices.size and indices.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name}.indices has an index beyond int64")
    indptr = np.ascontiguousarray(indptr, dtype=idx)
    indices = np.ascontiguousarray(indices, dtype=idx)
    data0 = np.asarray(X.data)
    if indices.ndim != 1 or data0.ndim != 1 or indices.shape != data0.shape:
        raise ValueError(f"{name}.indices and {name}.data must be 1-D of one "
                         f"length, got {indices.shape} and {data0.shape}")
    converted = data0.dtype != dtype
    with np.errstate(over="ignore"):        # overflow is reported below
        data = np.ascontiguousarray(data0, dtype=dtype)
    csr = CSRInput(indptr, indices, data, (n_rows, n_cols))
    from fastnn import _sparse
    code, where = _sparse.csr_check(csr)
    if code != _sparse.CSR_OK:
        conv = None
        if code == _sparse.CSR_NONFINITE and converted and np.isfinite(data0[where]):
            conv = dtype
        raise ValueError(_sparse.csr_problem(code, where, csr, name, conv))
    return csr
