"""The reference: every fastnn kernel written the obvious way in NumPy.

One function per C entry point of csrc/fastnn.h, same name without the
``fnn_`` prefix and dtype suffix, same argument meanings, in the same order,
plus the whole-network forward / loss+gradient / fit built from them.
Float64 throughout, no in-place tricks: functions return new arrays.  This
is the oracle the tests compare the native kernels against, and the
baseline the benchmarks measure next to the lecture notes' NumPy loop.
"""
import numpy as np

# The activations, by name: the one list fastnn's modules, its file format
# and its tests take them from (fastnn._kernels binds these names to the C
# codes of csrc/fastnn.h, in this order).  ELEMENTWISE act on each value
# alone; a Dense layer takes those or softmax (output layers only); maxout is
# a layer kind of its own (Maxout).
ELEMENTWISE = ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu")
DENSE_ACTIVATIONS = ELEMENTWISE + ("softmax",)
ACTIVATIONS = ELEMENTWISE + ("maxout", "softmax")


def _f64(a):
    return np.asarray(a, dtype=np.float64)


# ---- GEMM ------------------------------------------------------------------

def gemm(a, b, c=None, alpha=1.0, beta=0.0, trans_a=False, trans_b=False):
    """alpha op(a) op(b) + beta c  (beta == 0: c is ignored, even if NaN)."""
    a, b = _f64(a), _f64(b)
    a = a.T if trans_a else a
    b = b.T if trans_b else b
    out = alpha * (a @ b)
    if beta != 0:
        out = out + beta * _f64(c)
    return out


# ---- bias + activation -----------------------------------------------------

def activation(v, act, alpha=0.0):
    """f(v) for the elementwise activations."""
    v = _f64(v)
    if act == "identity":
        return v.copy()
    if act == "sigmoid":
        # 1 / (1 + e^-v), written so neither branch overflows
        e = np.exp(-np.abs(v))
        return np.where(v >= 0, 1 / (1 + e), e / (1 + e))
    if act == "tanh":
        return np.tanh(v)
    if act == "relu":
        return np.where(v < 0, 0.0, v)
    if act == "leaky_relu":
        return np.where(v < 0, alpha * v, v)
    if act == "elu":
        return np.where(v < 0, alpha * np.expm1(np.minimum(v, 0)), v)
    raise ValueError(f"unknown activation {act!r}")


def bias_act_forward(z, b=None, act="identity", alpha=0.0):
    """act(z + b), b broadcast over rows (None: no bias)."""
    z = _f64(z)
    return activation(z if b is None else z + _f64(b), act, alpha)


def act_derivative(y, act, alpha=0.0):
    """f'(z) expressed through the forward output y = f(z)."""
    y = _f64(y)
    if act == "identity":
        return np.ones_like(y)
    if act == "sigmoid":
        return y * (1 - y)
    if act == "tanh":
        return 1 - y ** 2
    if act == "relu":
        return (y > 0).astype(np.float64)
    if act == "leaky_relu":
        return np.where(y > 0, 1.0, alpha)
    if act == "elu":
        return np.where(y > 0, 1.0, y + alpha)
    raise ValueError(f"unknown activation {act!r}")


def bias_act_backward(y, dy, act="identity", alpha=0.0):
    """(dz, db): dz = dy * f'(y), db = column sums of dz."""
    dz = _f64(dy) * act_derivative(y, act, alpha)
    return dz, dz.sum(axis=0)


# ---- dropout masks (csrc/dropout.h, in NumPy's wrapping unsigned integers) --

_M64 = (1 << 64) - 1
_G64 = 0x9e3779b97f4a7c15


def _mix64(x):
    """splitmix64's finalizer of a Python int (mod 2^64)."""
    x &= _M64
    x ^= x >> 30
    x = (x * 0xbf58476d1ce4e5b9) & _M64
    x ^= x >> 27
    x = (x * 0x94d049bb133111eb) & _M64
    return x ^ (x >> 31)


def _mix32(x):
    """lowbias32 of a uint32 array."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7feb352d)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846ca68b)
    return x ^ (x >> np.uint32(16))


def drop_key(seed, epoch, layer):
    """The dropout key of (seed, epoch, layer)."""
    k = _mix64(seed + (epoch + 1) * _G64)
    return _mix64(k + (layer + 1) * _G64)


def dropout_keep(m, n, rate, key, row0=0):
    """(m, n) bool: which units of rows row0 .. row0 + m - 1 dropout keeps:
    those whose 32 bits, from the row's splitmix64 state and the unit's
    index, are not below rate * 2^32."""
    thr = np.uint32(int(rate * 4294967296.0))
    keep = np.empty((m, n), dtype=bool)
    j = np.arange(n, dtype=np.uint32) * np.uint32(0x9e3779b9)
    with np.errstate(over="ignore"):
        for i in range(m):
            r = _mix64(key + (row0 + i + 1) * _G64)
            lo, hi = np.uint32(r & 0xFFFFFFFF), np.uint32(r >> 32)
            keep[i] = _mix32(_mix32(lo ^ j) ^ hi) >= thr
    return keep


def bias_act_dropout_forward(z, b=None, act="identity", alpha=0.0, rate=0.0,
                             key=0, row0=0):
    """act(z + b) * mask: 1 / (1 - rate) where dropout_keep, else 0."""
    y = bias_act_forward(z, b, act, alpha)
    keep = dropout_keep(y.shape[0], y.shape[1], rate, key, row0)
    return y * np.where(keep, 1.0 / (1.0 - rate), 0.0)


def bias_act_dropout_backward(a, dy, act="identity", alpha=0.0, rate=0.0, key=0,
                              row0=0):
    """(dz, db) with dz = dy * mask * f'(a), a the activation's output before
    the mask."""
    dy = _f64(dy)
    keep = dropout_keep(dy.shape[0], dy.shape[1], rate, key, row0)
    dz = dy * np.where(keep, 1.0 / (1.0 - rate), 0.0) * act_derivative(a, act, alpha)
    return dz, dz.sum(axis=0)


def maxout_forward(z, b=None, pieces=2):
    """(y, argmax): y[i,j] = max_p (z + b)[i, j*pieces + p]."""
    z = _f64(z) if b is None else _f64(z) + _f64(b)
    m = z.shape[0]
    v = z.reshape(m, -1, pieces)
    arg = np.argmax(v, axis=2).astype(np.int32)
    y = np.take_along_axis(v, arg[..., None].astype(np.intp), axis=2)[..., 0]
    return y, arg


def maxout_backward(argmax, dy, pieces=2):
    """(dz, db): dy routed to the argmax piece of each unit."""
    dy = _f64(dy)
    m, n = dy.shape
    dz = np.zeros((m, n, pieces))
    np.put_along_axis(dz, np.asarray(argmax, np.intp)[..., None], dy[..., None], axis=2)
    dz = dz.reshape(m, n * pieces)
    return dz, dz.sum(axis=0)


def softmax_forward(z, b=None):
    """Row-wise softmax of z + b, max subtracted."""
    z = _f64(z) if b is None else _f64(z) + _f64(b)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ---- loss ------------------------------------------------------------------

def robust_loss(r, loss, param):
    """(l, dl/dz) elementwise at r = z - y for mae (|r|), huber (r^2 / 2
    within delta = param, else delta (|r| - delta / 2)) and quantile (the
    pinball loss max(-q r, (1 - q) r), q = param).  At the kinks (r = 0 for
    mae and quantile) the derivative is 0; NaN gives NaN."""
    r = _f64(r)
    if loss == "mae":
        return np.abs(r), np.sign(r)
    if loss == "huber":
        a = np.abs(r)
        return (np.where(a <= param, 0.5 * r ** 2, param * (a - 0.5 * param)),
                np.clip(r, -param, param))
    if loss == "quantile":
        return (np.where(r > 0, (1 - param) * r, -param * r),
                np.where(r > 0, 1 - param, np.where(r < 0, -param, 0 * r)))
    raise ValueError(f"unknown loss {loss!r}")


def loss_grad(z, y, loss="mse", scale=1.0, sw=None, param=None):
    """(L, dz, db) with L = scale * sum_i w_i l_i and dz = dL/dz.

    sse: l_i = sum_j (z - y)^2; mse: half of that; bce: sum_j softplus(z) -
    y z (z logits); softmax_ce: logsumexp(z) sum_j y - sum_j y z (z logits);
    mae, huber, quantile: sum_j of robust_loss(z - y, loss, param).
    """
    z, y = _f64(z), _f64(y)
    w = np.ones(z.shape[0]) if sw is None else _f64(sw)
    if loss in ("mae", "huber", "quantile"):
        if param is None and loss != "mae":
            raise ValueError(f"loss {loss!r} needs its parameter")
        l, d = robust_loss(z - y, loss, param)
        li = l.sum(axis=1)
    elif loss == "sse":
        li = ((z - y) ** 2).sum(axis=1)
        d = 2 * (z - y)
    elif loss == "mse":
        li = 0.5 * ((z - y) ** 2).sum(axis=1)
        d = z - y
    elif loss == "bce":
        li = (np.logaddexp(0, z) - y * z).sum(axis=1)
        d = activation(z, "sigmoid") - y
    elif loss == "softmax_ce":
        mx = z.max(axis=1, keepdims=True)
        lse = mx + np.log(np.exp(z - mx).sum(axis=1, keepdims=True))
        ys = y.sum(axis=1, keepdims=True)
        li = lse[:, 0] * ys[:, 0] - (y * z).sum(axis=1)
        d = np.exp(z - lse) * ys - y
    else:
        raise ValueError(f"unknown loss {loss!r}")
    dz = scale * w[:, None] * d
    return scale * float((w * li).sum()), dz, dz.sum(axis=0)


# ---- optimizers ------------------------------------------------------------

def sgd_step(w, g, lr, wd=0.0):
    """w - lr (g + wd w)."""
    w = _f64(w)
    return w - lr * (_f64(g) + wd * w)


def momentum_step(w, g, v, lr, momentum=0.9, wd=0.0, nesterov=False):
    """(w, v): v = mu v - lr g'; w + v, or w + mu v - lr g' (Nesterov)."""
    w = _f64(w)
    g = _f64(g) + wd * w
    v = momentum * _f64(v) - lr * g
    return (w + momentum * v - lr * g if nesterov else w + v), v


def adam_step(w, g, m, v, t, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, wd=0.0):
    """(w, m, v) after Adam step t, in scikit-learn's form."""
    w = _f64(w)
    g = _f64(g) + wd * w
    m = beta1 * _f64(m) + (1 - beta1) * g
    v = beta2 * _f64(v) + (1 - beta2) * g ** 2
    lr_t = lr * np.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
    return w - lr_t * m / (np.sqrt(v) + eps), m, v


def sum_squares(x):
    """sum_i x_i^2."""
    x = _f64(x)
    return float(np.dot(x, x))


def all_finite(x):
    """True if every element is finite."""
    return bool(np.isfinite(x).all())


# ---- whole network ---------------------------------------------------------
# A network is described as in fastnn.Network._specs(): one tuple per layer
# (n_in, n_out, act, pieces, alpha, w_off, b_off) with act a name, and the
# flat params vector those offsets index.

def _layer_params(spec, params):
    n_in, n_out, act, pieces, alpha, w_off, b_off = spec
    cols = n_out * pieces
    W = _f64(params[w_off:w_off + n_in * cols]).reshape(n_in, cols)
    b = None if b_off < 0 else _f64(params[b_off:b_off + cols])
    return W, b


def _out_act(specs, loss, predict):
    act = specs[-1][2]
    if not predict and loss in ("bce", "softmax_ce"):
        return "identity"
    return act


def _drop_of(drop, l):
    """(rate, key) of layer l's dropout in a step with drop (a dict: rates
    (one per layer), seed, epoch, row0; None: no dropout); rate 0 for none."""
    if drop is None or not drop["rates"][l]:
        return 0.0, 0
    return drop["rates"][l], drop_key(drop["seed"], drop["epoch"], l)


def net_forward(specs, loss, params, x, predict=True, drop=None):
    """(output, cache): the network's output for rows x, and the per-layer
    (input, output, argmax, output before dropout) the backward pass needs.
    drop: a training step's dropout, {"rates": one per layer, "seed",
    "epoch", "row0": the position of x's first row in the epoch's order},
    or None."""
    a = _f64(x)
    cache = []
    for l, spec in enumerate(specs):
        n_in, n_out, act, pieces, alpha = spec[:5]
        W, b = _layer_params(spec, params)
        z = a @ W
        last = l == len(specs) - 1
        pre = None
        if act == "maxout":
            out, arg = maxout_forward(z, b, pieces)
        else:
            arg = None
            f = _out_act(specs, loss, predict) if last else act
            out = softmax_forward(z, b) if f == "softmax" else bias_act_forward(z, b, f, alpha)
            rate, key = _drop_of(drop, l)
            if rate:
                keep = dropout_keep(len(out), out.shape[1], rate, key, drop["row0"])
                pre, out = out, out * np.where(keep, 1.0 / (1.0 - rate), 0.0)
        cache.append((a, out, arg, pre))
        a = out
    return a, cache


def net_loss_grad(specs, loss, params, x, y, scale, sw=None, loss_param=None,
                  drop=None):
    """(L, grads): loss and its gradient w.r.t. the flat params
    (loss_param: the loss's parameter, see loss_grad; drop: dropout, see
    net_forward)."""
    out, cache = net_forward(specs, loss, params, x, predict=False, drop=drop)
    L, d, _ = loss_grad(out, y, loss, scale, sw, loss_param)
    grads = np.zeros(len(params))
    last = specs[-1]
    f = _out_act(specs, loss, False)
    if last[2] == "maxout":
        d, _ = maxout_backward(cache[-1][2], d, last[3])
    elif f != "softmax":
        d, _ = bias_act_backward(out, d, f, last[4])
    for l in range(len(specs) - 1, -1, -1):
        n_in, n_out, act, pieces, alpha, w_off, b_off = specs[l]
        a_in = cache[l][0]
        W, _ = _layer_params(specs[l], params)
        grads[w_off:w_off + W.size] = (a_in.T @ d).ravel()
        if b_off >= 0:
            grads[b_off:b_off + W.shape[1]] = d.sum(axis=0)
        if l > 0:
            da = d @ W.T
            p = specs[l - 1]
            rate, key = _drop_of(drop, l - 1)
            if p[2] == "maxout":
                d, _ = maxout_backward(cache[l - 1][2], da, p[3])
            elif rate:
                d, _ = bias_act_dropout_backward(cache[l - 1][3], da, p[2], p[4], rate,
                                                 key, drop["row0"])
            else:
                d, _ = bias_act_backward(cache[l - 1][1], da, p[2], p[4])
    return L, grads


def net_train_step(specs, loss, params, x, y, lr, scale=None, loss_param=None):
    """(L, params'): one plain SGD step (scale None: 1 for sse, else 1/m)."""
    if scale is None:
        scale = 1.0 if loss == "sse" else 1.0 / len(x)
    L, g = net_loss_grad(specs, loss, params, x, y, scale, loss_param=loss_param)
    return L, _f64(params) - lr * g


def fit(specs, loss, params, n_weights, x, y, lrs, batch, order=None,
        optimizer="sgd", momentum=0.9, beta1=0.9, beta2=0.999, eps=1e-8,
        l2=0.0, l2_per_row=False, sw=None, state=None, loss_l2=False,
        mean_by_rows=False, loss_scale=1.0, loss_param=None, dropout=None,
        drop_seed=None, epoch0=0):
    """Replay of csrc/train.c: epochs of minibatches in the given row order.

    lrs: learning rate per epoch; order: (n_epochs, n) row indices or None.
    Weights params[:n_weights] get the L2 term (l2, or l2 / batch weight if
    l2_per_row); each step's reported loss is loss_scale times its loss,
    plus 1/2 wd |W|^2 if loss_l2; the epoch loss is the mean of the step
    losses weighted by each batch's sample-weight sum (rows if
    mean_by_rows), a plain sum for sse; loss_param: the loss's parameter
    (huber's delta, quantile's quantile); dropout: one rate per layer, used
    with drop_seed (None: no dropout), the masks of epoch e keyed by epoch
    number epoch0 + e (csrc/train_impl.h's numbering).  Returns
    (params, epoch_losses, state) where state holds the optimizer buffers
    and Adam's step count (pass it back to continue).
    """
    x, y = _f64(x), _f64(y)
    params = _f64(params).copy()
    n = len(x)
    P = len(params)
    state = dict(state) if state else {}
    vel = state.get("vel", np.zeros(P))
    sq = state.get("sq", np.zeros(P))
    t = state.get("t", 0)
    losses = []
    for e, lr in enumerate(lrs):
        idx = np.arange(n) if order is None else np.asarray(order[e])
        total, wsum = 0.0, 0.0
        for i0 in range(0, n, batch):
            rows = idx[i0:i0 + batch]
            swb = None if sw is None else _f64(sw)[rows]
            wtot = len(rows) if swb is None else float(swb.sum())
            scale = 1.0 if loss == "sse" else 1.0 / wtot
            wd = l2 / wtot if l2_per_row else l2
            drop = None
            if drop_seed is not None and dropout is not None and any(dropout):
                drop = {"rates": dropout, "seed": drop_seed, "epoch": epoch0 + e,
                        "row0": i0}
            L, g = net_loss_grad(specs, loss, params, x[rows], y[rows], scale, swb,
                                 loss_param, drop)
            if not np.isfinite(L):
                raise FloatingPointError(f"non-finite loss at epoch {e}")
            L *= loss_scale
            if loss_l2 and wd != 0:
                L += 0.5 * wd * sum_squares(params[:n_weights])
            # weights (with L2) and biases (without) as two flat runs
            parts = [slice(0, n_weights), slice(n_weights, P)]
            if optimizer == "sgd":
                params = np.concatenate([sgd_step(params[s], g[s], lr, d)
                                         for s, d in zip(parts, (wd, 0.0))])
            elif optimizer in ("momentum", "nesterov"):
                res = [momentum_step(params[s], g[s], vel[s], lr, momentum, d,
                                     optimizer == "nesterov")
                       for s, d in zip(parts, (wd, 0.0))]
                params = np.concatenate([r[0] for r in res])
                vel = np.concatenate([r[1] for r in res])
            elif optimizer == "adam":
                t += 1
                res = [adam_step(params[s], g[s], vel[s], sq[s], t, lr, beta1,
                                 beta2, eps, d)
                       for s, d in zip(parts, (wd, 0.0))]
                params = np.concatenate([r[0] for r in res])
                vel = np.concatenate([r[1] for r in res])
                sq = np.concatenate([r[2] for r in res])
            else:
                raise ValueError(f"unknown optimizer {optimizer!r}")
            wgt = len(rows) if mean_by_rows else wtot
            total += L if loss == "sse" else L * wgt
            wsum += wgt
        losses.append(total if loss == "sse" else total / wsum)
    return params, np.array(losses), {"vel": vel, "sq": sq, "t": t}


def fit_many(specs, loss, params, n_weights, x, y, lrs, batch, orders=None,
             optimizers="sgd", l2=0.0, sample_indices=None, sw=None,
             momentum=0.9, beta1=0.9, beta2=0.999, eps=1e-8):
    """Twin of fastnn.fit_many (csrc/many.c): every network's own fit, one
    after the other.  params: K flat buffers; lrs: (K, n_epochs) learning
    rates; orders: None or K (n_epochs, n_k) row orders into that network's
    rows; optimizers, l2: one for all or one per network; sample_indices:
    None or K index arrays into x (the network's rows, repeats allowed).
    Returns [(params, epoch_losses, state)] per network."""
    K = len(params)
    opts = [optimizers] * K if isinstance(optimizers, str) else list(optimizers)
    l2s = list(l2) if np.ndim(l2) else [l2] * K
    out = []
    for k in range(K):
        rows = (np.arange(len(x)) if sample_indices is None
                else np.asarray(sample_indices[k]))
        out.append(fit(specs, loss, params[k], n_weights, _f64(x)[rows],
                       _f64(y)[rows], lrs[k], batch,
                       None if orders is None else orders[k], opts[k], momentum,
                       beta1, beta2, eps, l2s[k], False,
                       None if sw is None else _f64(sw)[rows]))
    return out


# ---- sparse first layer ------------------------------------------------------
# A CSR matrix X is anything with indptr, indices, data and shape (scipy's
# CSR, fastnn._validation.CSRInput).  A minibatch is rows[r], or row0 + r for
# r < m.  Repeated entries of a row add up, as in scipy's toarray().

CSR_OK, CSR_INDPTR_START, CSR_INDPTR_ORDER, CSR_INDPTR_END = 0, 1, 2, 3
CSR_INDEX_RANGE, CSR_NONFINITE = 4, 5


def _batch_rows(n_rows, rows=None, row0=0, m=None):
    if rows is not None:
        return np.asarray(rows, dtype=np.int64)
    return np.arange(row0, n_rows if m is None else row0 + m, dtype=np.int64)


def csr_check(X):
    """(code, where): the first problem of X (indptr[0] != 0; indptr
    decreasing at row i; indptr[-1] beyond the entries; an index outside
    [0, n_cols) at entry k; a NaN/inf value at entry k), or (CSR_OK, -1)."""
    indptr = np.asarray(X.indptr, dtype=np.int64)
    indices = np.asarray(X.indices, dtype=np.int64)
    data = np.asarray(X.data)
    n_rows, n_cols = X.shape
    if indptr[0] != 0:
        return CSR_INDPTR_START, 0
    dec = np.flatnonzero(np.diff(indptr) < 0)
    if len(dec):
        return CSR_INDPTR_ORDER, int(dec[0])
    end = int(indptr[n_rows])
    if end > min(len(indices), len(data)):
        return CSR_INDPTR_END, n_rows
    bad = np.flatnonzero((indices[:end] < 0) | (indices[:end] >= n_cols))
    if len(bad):
        return CSR_INDEX_RANGE, int(bad[0])
    bad = np.flatnonzero(~np.isfinite(data[:end]))
    if len(bad):
        return CSR_NONFINITE, int(bad[0])
    return CSR_OK, -1


def csr_rows_dense(X, rows=None, row0=0, m=None):
    """The batch rows of X as a dense float64 (m, n_cols) array."""
    indptr = np.asarray(X.indptr, dtype=np.int64)
    r = _batch_rows(X.shape[0], rows, row0, m)
    out = np.zeros((len(r), X.shape[1]))
    for b, i in enumerate(r):
        k = slice(indptr[i], indptr[i + 1])
        np.add.at(out[b], np.asarray(X.indices[k], dtype=np.int64), _f64(X.data[k]))
    return out


def csr_batch_nnz(X, rows=None, row0=0, m=None):
    """Number of stored entries in the batch rows of X."""
    indptr = np.asarray(X.indptr, dtype=np.int64)
    r = _batch_rows(X.shape[0], rows, row0, m)
    return int((indptr[r + 1] - indptr[r]).sum())


def csr_matmul(X, w, rows=None, row0=0, m=None):
    """X_b @ w for the batch rows X_b of X."""
    return csr_rows_dense(X, rows, row0, m) @ _f64(w)


def csr_batch(X, rows=None, row0=0, m=None):
    """(colptr, pos, val): the batch's entries sorted by column, stably
    (batch rows ascending within a column); colptr[j] where column j's
    entries start (n_cols + 1 elements)."""
    indptr = np.asarray(X.indptr, dtype=np.int64)
    r = _batch_rows(X.shape[0], rows, row0, m)
    ks = [np.arange(indptr[i], indptr[i + 1]) for i in r]
    k = np.concatenate(ks) if ks else np.zeros(0, np.int64)
    pos = np.repeat(np.arange(len(r)), [len(x) for x in ks]).astype(np.int32)
    col = np.asarray(X.indices, dtype=np.int64)[k]
    order = np.argsort(col, kind="stable")
    colptr = np.zeros(X.shape[1] + 1, dtype=np.int64)
    colptr[1:] = np.cumsum(np.bincount(col, minlength=X.shape[1]))
    return colptr, pos[order], np.asarray(X.data)[k][order]


def csr_grad(colptr, pos, val, dz):
    """X_b^T dz (n_cols, n) from the batch regrouped by column."""
    colptr = np.asarray(colptr, dtype=np.int64)
    dz = _f64(dz)
    n_cols = len(colptr) - 1
    col = np.repeat(np.arange(n_cols), np.diff(colptr))
    g = np.zeros((n_cols, dz.shape[1]))
    nnz = colptr[-1]
    np.add.at(g, col, _f64(val[:nnz])[:, None] * dz[np.asarray(pos[:nnz], np.intp)])
    return g


def csr_update(colptr, pos, val, dz, w, vel=None, sq=None, kind="sgd", lr=0.1,
               wd=0.0, momentum=0.9, beta1=0.9, beta2=0.999, eps=1e-8, t=1,
               j0=0, j1=None):
    """(w, vel, sq, sumsq) after one step of kind on rows [j0, j1) of w with
    gradient csr_grad(...) (+ wd w); other rows, and state not used by kind,
    returned unchanged; sumsq = sum(w[j0:j1]**2) before the step."""
    w = _f64(w).copy()
    vel = None if vel is None else _f64(vel).copy()
    sq = None if sq is None else _f64(sq).copy()
    j1 = w.shape[0] if j1 is None else j1
    s = slice(j0, j1)
    g = csr_grad(colptr, pos, val, dz)[s]
    sumsq = sum_squares(w[s].ravel())
    if kind == "sgd":
        w[s] = sgd_step(w[s], g, lr, wd)
    elif kind in ("momentum", "nesterov"):
        w[s], vel[s] = momentum_step(w[s], g, vel[s], lr, momentum, wd,
                                     kind == "nesterov")
    elif kind == "adam":
        w[s], vel[s], sq[s] = adam_step(w[s], g, vel[s], sq[s], t, lr, beta1,
                                        beta2, eps, wd)
    else:
        raise ValueError(f"unknown optimizer {kind!r}")
    return w, vel, sq, sumsq
