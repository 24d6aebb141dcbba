# _kernels.pyx -- one typed wrapper per C kernel of csrc/fastnn.h, same names
# without the fnn_ prefix and dtype suffix (fastnn/reference.py holds the NumPy
# twin of each).  Shapes are checked with the GIL; the kernel runs without it.
# Outputs are written in place, as in C; the tests call these.
import numbers

from libc.stdint cimport int32_t, int64_t, uint64_t

from fastnn._kernels cimport *

ctypedef fused floating:
    float
    double

from fastnn.reference import ACTIVATIONS as _ACTIVATION_NAMES, ELEMENTWISE

# activation name -> C code: fastnn.reference.ACTIVATIONS lists the names in
# the order of these codes (the tests run every name through the kernels and
# compare with the reference of the same name)
ACTIVATIONS = dict(zip(_ACTIVATION_NAMES, (
    FNN_IDENTITY, FNN_SIGMOID, FNN_TANH, FNN_RELU, FNN_LRELU, FNN_ELU,
    FNN_MAXOUT, FNN_SOFTMAX)))
if len(ACTIVATIONS) != len(_ACTIVATION_NAMES):
    raise ImportError("fastnn.reference.ACTIVATIONS does not match the C codes")
LOSSES = {"sse": FNN_SSE, "mse": FNN_MSE, "bce": FNN_BCE,
          "softmax_ce": FNN_SOFTMAX_CE, "mae": FNN_MAE, "huber": FNN_HUBER,
          "quantile": FNN_QUANTILE}
# The losses that take a parameter (fnn_loss_grad's param): its name.
LOSS_PARAMS = {"huber": "delta", "quantile": "quantile"}


def loss_param(str loss, param):
    """The C loss parameter for `loss` as a float: huber's delta (finite,
    > 0), quantile's quantile (in (0, 1)); 0.0 for the losses without one,
    which must get None.  ValueError names a bad or missing value."""
    if loss not in LOSS_PARAMS:
        if param is not None:
            raise ValueError(f"loss {loss!r} takes no parameter, got {param!r}")
        return 0.0
    name = LOSS_PARAMS[loss]
    if param is None:
        raise ValueError(f"loss {loss!r} needs its parameter {name}")
    if isinstance(param, bool) or not isinstance(param, numbers.Real):
        raise ValueError(f"{loss} {name} must be a real number, got {param!r}")
    cdef double p
    try:
        p = float(param)
    except OverflowError:               # an int beyond the float range
        p = float("inf")
    if loss == "huber" and not (0 < p < float("inf")):
        raise ValueError(f"huber delta must be finite and > 0, got {param!r}")
    if loss == "quantile" and not (0 < p < 1):
        raise ValueError(f"quantile must lie in (0, 1), got {param!r}")
    return p


cdef int64_t _ld(arr) except -1:
    """Row stride in elements of a 2-D memoryview, which must have unit
    column stride (rows contiguous); padded rows (ld > n) are fine."""
    return row_stride(arr.shape[0], arr.shape[1], arr.strides[0], arr.strides[1],
                      arr.itemsize)


def row_stride(Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t s0, Py_ssize_t s1,
               Py_ssize_t item):
    """The row stride in elements of a (rows, cols) array with byte strides
    (s0, s1), or ValueError if its rows are not contiguous and ordered."""
    if cols > 1 and s1 != item:
        raise ValueError(f"each row must be contiguous (column stride {item} bytes), "
                         f"got strides {(s0, s1)}")
    if rows <= 1 or cols == 0:
        return max(cols, 1)
    if s0 % item or s0 < max(cols, 1) * item:
        raise ValueError(f"row stride {s0} bytes does not fit rows of {cols} "
                         f"elements of {item} bytes")
    return s0 // item


cdef int _act_code(str act, tuple allowed) except -1:
    if act not in allowed:
        raise ValueError(f"unknown activation {act!r}; expected one of {allowed}")
    return ACTIVATIONS[act]


cdef _same_shape(name, x, int64_t m, int64_t n):
    if x.shape[0] != m or x.shape[1] != n:
        raise ValueError(f"{name} has shape {(x.shape[0], x.shape[1])}, "
                         f"expected {(m, n)}")


def bias_act_forward(floating[:, :] z, const floating[::1] b=None,
                     str act="identity", double alpha=0.0):
    """z := act(z + b) in place (b None: no bias)."""
    cdef int code = _act_code(act, ELEMENTWISE)
    cdef int64_t m = z.shape[0], n = z.shape[1], ldz = _ld(z)
    if b is not None and b.shape[0] != n:
        raise ValueError(f"b has {b.shape[0]} elements, expected {n}")
    if m == 0 or n == 0:
        return
    cdef const floating *bp = &b[0] if b is not None else NULL
    with nogil:
        if floating is float:
            fnn_bias_act_forward_f32(m, n, code, <float>alpha, bp, &z[0, 0], ldz)
        else:
            fnn_bias_act_forward_f64(m, n, code, alpha, bp, &z[0, 0], ldz)


def bias_act_backward(const floating[:, :] y, const floating[:, :] dy,
                      floating[:, :] dz, floating[::1] db=None,
                      str act="identity", double alpha=0.0):
    """dz := dy * act'(y) (from the forward output y); db := column sums of
    dz if given.  dz may be dy."""
    cdef int code = _act_code(act, ELEMENTWISE)
    cdef int64_t m = y.shape[0], n = y.shape[1]
    _same_shape("dy", dy, m, n)
    _same_shape("dz", dz, m, n)
    if db is not None and db.shape[0] != n:
        raise ValueError(f"db has {db.shape[0]} elements, expected {n}")
    if n == 0:
        return
    cdef floating *dbp = &db[0] if db is not None else NULL
    if m == 0:
        if db is not None:
            db[:] = 0
        return
    cdef int64_t ldy = _ld(y), lddy = _ld(dy), lddz = _ld(dz)
    with nogil:
        if floating is float:
            fnn_bias_act_backward_f32(m, n, code, <float>alpha, &y[0, 0], ldy,
                                      &dy[0, 0], lddy, &dz[0, 0], lddz, dbp)
        else:
            fnn_bias_act_backward_f64(m, n, code, alpha, &y[0, 0], ldy,
                                      &dy[0, 0], lddy, &dz[0, 0], lddz, dbp)


cdef extern from "dropout.h" nogil:
    uint64_t fnn_drop_key(uint64_t seed, int64_t epoch, int64_t layer)


def drop_key(uint64_t seed, int64_t epoch, int64_t layer):
    """The dropout key of (seed, epoch, layer) (csrc/dropout.h)."""
    return fnn_drop_key(seed, epoch, layer)


cdef double _drop_rate(double rate) except -1:
    if not (0 <= rate < 1):
        raise ValueError(f"dropout rate must lie in [0, 1), got {rate}")
    return rate


def bias_act_dropout_forward(floating[:, :] z, const floating[::1] b=None,
                             str act="identity", double alpha=0.0,
                             double rate=0.0, uint64_t key=0, int64_t row0=0):
    """z := act(z + b) * mask in place: inverted dropout of rate `rate`,
    the mask of row i drawn from (key, row0 + i) (csrc/dropout.h)."""
    cdef int code = _act_code(act, ELEMENTWISE)
    _drop_rate(rate)
    cdef int64_t m = z.shape[0], n = z.shape[1], ldz = _ld(z)
    if b is not None and b.shape[0] != n:
        raise ValueError(f"b has {b.shape[0]} elements, expected {n}")
    if m == 0 or n == 0:
        return
    cdef const floating *bp = &b[0] if b is not None else NULL
    with nogil:
        if floating is float:
            fnn_bias_act_dropout_forward_f32(m, n, code, <float>alpha, bp, &z[0, 0],
                                             ldz, rate, key, row0)
        else:
            fnn_bias_act_dropout_forward_f64(m, n, code, alpha, bp, &z[0, 0],
                                             ldz, rate, key, row0)


def bias_act_dropout_backward(const floating[:, :] y, const floating[:, :] dy,
                              floating[:, :] dz, floating[::1] db=None,
                              str act="identity", double alpha=0.0,
                              double rate=0.0, uint64_t key=0, int64_t row0=0):
    """dz := dy * mask * act'(.) with the mask bias_act_dropout_forward drew
    for (key, row0) and y its output; db := column sums of dz if given.
    dz may be dy."""
    cdef int code = _act_code(act, ELEMENTWISE)
    _drop_rate(rate)
    cdef int64_t m = y.shape[0], n = y.shape[1]
    _same_shape("dy", dy, m, n)
    _same_shape("dz", dz, m, n)
    if db is not None and db.shape[0] != n:
        raise ValueError(f"db has {db.shape[0]} elements, expected {n}")
    if n == 0:
        return
    cdef floating *dbp = &db[0] if db is not None else NULL
    if m == 0:
        if db is not None:
            db[:] = 0
        return
    cdef int64_t ldy = _ld(y), lddy = _ld(dy), lddz = _ld(dz)
    with nogil:
        if floating is float:
            fnn_bias_act_dropout_backward_f32(m, n, code, <float>alpha, &y[0, 0], ldy,
                                              &dy[0, 0], lddy, &dz[0, 0], lddz, dbp,
                                              rate, key, row0)
        else:
            fnn_bias_act_dropout_backward_f64(m, n, code, alpha, &y[0, 0], ldy,
                                              &dy[0, 0], lddy, &dz[0, 0], lddz, dbp,
                                              rate, key, row0)


def maxout_forward(const floating[:, :] z, floating[:, :] y,
                   int32_t[:, ::1] argmax, const floating[::1] b=None,
                   int64_t pieces=2):
    """y[i,j] := max_p z[i, j*pieces+p] + b[j*pieces+p]; argmax := that p."""
    cdef int64_t m = z.shape[0], n = y.shape[1]
    if pieces < 1 or z.shape[1] != n * pieces:
        raise ValueError(f"z has {z.shape[1]} columns, expected units*pieces = "
                         f"{n}*{pieces}")
    _same_shape("y", y, m, n)
    _same_shape("argmax", argmax, m, n)
    if b is not None and b.shape[0] != n * pieces:
        raise ValueError(f"b has {b.shape[0]} elements, expected {n * pieces}")
    if m == 0 or n == 0:
        return
    if argmax.strides[0] != n * sizeof(int32_t):
        raise ValueError("argmax must be C-contiguous")
    cdef const floating *bp = &b[0] if b is not None else NULL
    cdef int64_t ldz = _ld(z), ldy = _ld(y)
    with nogil:
        if floating is float:
            fnn_maxout_forward_f32(m, n, pieces, bp, &z[0, 0], ldz, &y[0, 0],
                                   ldy, &argmax[0, 0])
        else:
            fnn_maxout_forward_f64(m, n, pieces, bp, &z[0, 0], ldz, &y[0, 0],
                                   ldy, &argmax[0, 0])


def maxout_backward(const int32_t[:, ::1] argmax, const floating[:, :] dy,
                    floating[:, :] dz, floating[::1] db=None, int64_t pieces=2):
    """dz[i, j*pieces+p] := dy[i,j] if p == argmax[i,j] else 0; db := column
    sums of dz if given."""
    cdef int64_t m = dy.shape[0], n = dy.shape[1], i, j
    if pieces < 1 or dz.shape[1] != n * pieces or dz.shape[0] != m:
        raise ValueError(f"dz has shape {(dz.shape[0], dz.shape[1])}, expected "
                         f"{(m, n * pieces)}")
    _same_shape("argmax", argmax, m, n)
    if db is not None and db.shape[0] != n * pieces:
        raise ValueError(f"db has {db.shape[0]} elements, expected {n * pieces}")
    if n == 0:
        return
    if m == 0:
        if db is not None:
            db[:] = 0
        return
    if argmax.strides[0] != n * sizeof(int32_t):
        raise ValueError("argmax must be C-contiguous")
    for i in range(m):
        for j in range(n):
            if argmax[i, j] < 0 or argmax[i, j] >= pieces:
                raise ValueError(f"argmax[{i}, {j}] = {argmax[i, j]} is not "
                                 f"in [0, {pieces})")
    cdef floating *dbp = &db[0] if db is not None else NULL
    cdef int64_t lddy = _ld(dy), lddz = _ld(dz)
    with nogil:
        if floating is float:
            fnn_maxout_backward_f32(m, n, pieces, &argmax[0, 0], &dy[0, 0],
                                    lddy, &dz[0, 0], lddz, dbp)
        else:
            fnn_maxout_backward_f64(m, n, pieces, &argmax[0, 0], &dy[0, 0],
                                    lddy, &dz[0, 0], lddz, dbp)


def softmax_forward(floating[:, :] z, const floating[::1] b=None):
    """z := softmax(z + b) row-wise, in place."""
    cdef int64_t m = z.shape[0], n = z.shape[1]
    if b is not None and b.shape[0] != n:
        raise ValueError(f"b has {b.shape[0]} elements, expected {n}")
    if m == 0 or n == 0:
        return
    cdef const floating *bp = &b[0] if b is not None else NULL
    cdef int64_t ldz = _ld(z)
    with nogil:
        if floating is float:
            fnn_softmax_forward_f32(m, n, bp, &z[0, 0], ldz)
        else:
            fnn_softmax_forward_f64(m, n, bp, &z[0, 0], ldz)


def loss_grad(const floating[:, :] z, const floating[:, :] y,
              floating[:, :] dz=None, floating[::1] db=None,
              const floating[::1] sw=None, str loss="mse", double scale=1.0,
              param=None):
    """Return scale * sum_i sw_i loss_i(z_i, y_i); fill dz with its gradient
    and db with the column sums of dz when given.  dz may be z's array.
    param: huber's delta or quantile's quantile (see loss_param); None for
    the other losses."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {tuple(LOSSES)}")
    cdef int code = LOSSES[loss]
    cdef double p = loss_param(loss, param)
    cdef int64_t m = z.shape[0], n = z.shape[1]
    _same_shape("y", y, m, n)
    if dz is not None:
        _same_shape("dz", dz, m, n)
    if db is not None and (dz is None or db.shape[0] != n):
        raise ValueError(f"db needs dz and {n} elements")
    if sw is not None and sw.shape[0] != m:
        raise ValueError(f"sw has {sw.shape[0]} elements, expected {m}")
    if n == 0:
        return 0.0
    if m == 0:
        if db is not None:
            db[:] = 0
        return 0.0
    cdef floating *dzp = &dz[0, 0] if dz is not None else NULL
    cdef floating *dbp = &db[0] if db is not None else NULL
    cdef const floating *swp = &sw[0] if sw is not None else NULL
    cdef int64_t ldz = _ld(z), ldy = _ld(y), lddz = _ld(dz) if dz is not None else n
    cdef double out
    with nogil:
        if floating is float:
            out = fnn_loss_grad_f32(m, n, code, p, scale, &z[0, 0], ldz,
                                    &y[0, 0], ldy, swp, dzp, lddz, dbp)
        else:
            out = fnn_loss_grad_f64(m, n, code, p, scale, &z[0, 0], ldz,
                                    &y[0, 0], ldy, swp, dzp, lddz, dbp)
    return out


cdef _same_len(name, x, int64_t n):
    if x.shape[0] != n:
        raise ValueError(f"{name} has {x.shape[0]} elements, expected {n}")


def sgd_step(floating[::1] w, const floating[::1] g, double lr, double wd=0.0):
    """w := w - lr (g + wd w), in place."""
    cdef int64_t n = w.shape[0]
    _same_len("g", g, n)
    if n == 0:
        return
    with nogil:
        if floating is float:
            fnn_sgd_step_f32(n, <float>lr, <float>wd, &g[0], &w[0])
        else:
            fnn_sgd_step_f64(n, lr, wd, &g[0], &w[0])


def momentum_step(floating[::1] w, const floating[::1] g, floating[::1] v,
                  double lr, double momentum=0.9, double wd=0.0,
                  bint nesterov=False):
    """v := mu v - lr g'; w += v (or mu v - lr g' with Nesterov); g' = g + wd w."""
    cdef int64_t n = w.shape[0]
    _same_len("g", g, n)
    _same_len("v", v, n)
    if n == 0:
        return
    with nogil:
        if floating is float:
            fnn_momentum_step_f32(n, <float>lr, <float>momentum, <float>wd,
                                  nesterov, &g[0], &w[0], &v[0])
        else:
            fnn_momentum_step_f64(n, lr, momentum, wd, nesterov, &g[0], &w[0],
                                  &v[0])


def adam_step(floating[::1] w, const floating[::1] g, floating[::1] m,
              floating[::1] v, int64_t t, double lr=0.001, double beta1=0.9,
              double beta2=0.999, double eps=1e-8, double wd=0.0):
    """Adam step t (>= 1) in scikit-learn's form, in place on w, m, v."""
    cdef int64_t n = w.shape[0]
    if t < 1:
        raise ValueError(f"adam_step: t must be >= 1, got {t}")
    _same_len("g", g, n)
    _same_len("m", m, n)
    _same_len("v", v, n)
    if n == 0:
        return
    with nogil:
        if floating is float:
            fnn_adam_step_f32(n, <float>lr, <float>beta1, <float>beta2,
                              <float>eps, t, <float>wd, &g[0], &w[0], &m[0],
                              &v[0])
        else:
            fnn_adam_step_f64(n, lr, beta1, beta2, eps, t, wd, &g[0], &w[0],
                              &m[0], &v[0])


def sum_squares(const floating[::1] x):
    """sum_i x_i^2 (accumulated in double)."""
    cdef int64_t n = x.shape[0]
    cdef double r
    if n == 0:
        return 0.0
    with nogil:
        if floating is float:
            r = fnn_sum_squares_f32(n, &x[0])
        else:
            r = fnn_sum_squares_f64(n, &x[0])
    return r


def all_finite(const floating[:, :] x):
    """True if every element of the 2-D array x is finite."""
    cdef int64_t m = x.shape[0], n = x.shape[1]
    if m == 0 or n == 0:
        return True
    cdef int64_t ldx = _ld(x)
    cdef int r
    with nogil:
        if floating is float:
            r = fnn_all_finite_f32(m, n, &x[0, 0], ldx)
        else:
            r = fnn_all_finite_f64(m, n, &x[0, 0], ldx)
    return bool(r)
