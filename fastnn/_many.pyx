# _many.pyx -- the compiled side of fastnn.fit_many: one C network
# description (csrc/fastnn.h fnn_net) per distinct batch size over the
# networks' shared layer layout, one fnn_many_job per network over its own
# buffers, and the runs of csrc/many.c, without the GIL.
#
# Everything arrives validated by fastnn/many.py; the buffers are checked
# again here (dtype, size, contiguity), since a wrong one would be read or
# written out of bounds by the C code.
from cpython.exc cimport PyErr_CheckSignals
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

cdef extern from "stdlib.h" nogil:
    int posix_memalign(void **memptr, size_t alignment, size_t size)

import numpy as np
cimport numpy as cnp

from fastnn._blas cimport blas_handle
from fastnn._kernels cimport *

cnp.import_array()

cdef extern from "fastnn.h" nogil:
    enum:
        FNN_NOT_RUN

    ctypedef struct fnn_many_job:
        const fnn_net *net
        void *params
        void *grads
        fnn_optim opt
        fnn_fit_args a
        int32_t status

    int64_t fnn_many_scratch_f32(const fnn_many_job *jobs, int64_t n_jobs,
                                 int lanes)
    int64_t fnn_many_scratch_f64(const fnn_many_job *jobs, int64_t n_jobs,
                                 int lanes)
    int64_t fnn_many_width_f32()
    int64_t fnn_many_width_f64()
    void fnn_many_set_narrow(int on)
    int fnn_many_lanes_ok_f32(const fnn_many_job *jobs, int64_t count)
    int fnn_many_lanes_ok_f64(const fnn_many_job *jobs, int64_t count)
    int fnn_fit_many_f32(fnn_many_job *jobs, int64_t n_jobs, int lanes,
                         int n_threads, void *scratch, int64_t scratch_bytes,
                         fnn_poll_fn poll, void *poll_ctx, double poll_ms)
    int fnn_fit_many_f64(fnn_many_job *jobs, int64_t n_jobs, int lanes,
                         int n_threads, void *scratch, int64_t scratch_bytes,
                         fnn_poll_fn poll, void *poll_ctx, double poll_ms)

NOT_RUN = FNN_NOT_RUN
# networks per networks-in-lanes group on this CPU (many.c)
LANE_WIDTH = {np.dtype(np.float32): fnn_many_width_f32(),
              np.dtype(np.float64): fnn_many_width_f64()}


def _set_narrow(bint on):
    """Groups of one vector (4 doubles, 8 floats) even on an AVX-512 CPU
    (on), or the CPU's own width (off); for the tests, which run both.
    Returns the widths now in use."""
    fnn_many_set_narrow(on)
    LANE_WIDTH[np.dtype(np.float32)] = fnn_many_width_f32()
    LANE_WIDTH[np.dtype(np.float64)] = fnn_many_width_f64()
    return dict(LANE_WIDTH)


cdef class _Poll:
    """State shared with the poll callback (called by the C runner about
    every poll_ms from the thread that called run, with the GIL taken only
    inside the callback)."""
    cdef object progress
    cdef object exc

    def __cinit__(self, progress):
        self.progress = progress
        self.exc = None


cdef int _poll(void *ctx, int64_t done, int64_t unused) noexcept nogil:
    with gil:
        st = <_Poll>ctx
        try:
            PyErr_CheckSignals()
            if st.progress is not None and st.progress(done):
                return 1
        except BaseException as e:      # KeyboardInterrupt included
            st.exc = e
            return 1
        return 0


cdef _check(object a, str name, object dtype, tuple shape):
    """a is a writeable-or-not C-contiguous ndarray of dtype and shape
    (None: any size)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if a.ndim != len(shape) or any(want is not None and got != want
                                   for got, want in zip(a.shape, shape)):
        raise ValueError(f"{name} has shape {a.shape}, expected {shape}")


cdef void *_data(object a):
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline bint _vec_ok(object a, int typenum, int64_t n, bint writeable):
    """a is a C-contiguous 1-D ndarray of typenum and length n (the common
    case, checked without Python calls; _check then names what is wrong)."""
    if not cnp.PyArray_Check(a):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    return (cnp.PyArray_TYPE(arr) == typenum and cnp.PyArray_NDIM(arr) == 1
            and cnp.PyArray_DIM(arr, 0) == n and cnp.PyArray_IS_C_CONTIGUOUS(arr)
            and (not writeable or cnp.PyArray_ISWRITEABLE(arr)))


cdef class ManyPlan:
    """The native side of one fit_many call.

    specs: one tuple per layer (n_in, n_out, act_code, pieces, alpha, w_off,
    b_off), shared by every network; loss: loss code (loss_param: its
    parameter, fnn_net.loss_param); n_weights: weights
    prefix of params.  orientations: one tuple of per-layer forward-GEMM
    orientations (fnn_layer.fwd_t) per network variant; variant[k]: which
    one network k uses (networks fitted with different batch sizes may
    have different orientations).  lanes_step: per variant, whether its
    networks may run the small-network step (fnn_net_init decides if they
    can; False forces the GEMM path, as NetCore.lanes = False does).
    X (n, n_in), Y (n, n_out), sw (n) or None: the data every job reads.
    params/grads/vel/sq/snapshot: per network, 1-D arrays of n_params (vel
    None for plain SGD, sq None unless Adam).  Per network too: n (rows per
    epoch), batch, kind, momentum, beta1, beta2, eps, l2, t (Adam steps so
    far), snapshot_every.
    """
    cdef fnn_layer *layers
    cdef fnn_net *nets
    cdef fnn_many_job *jobs
    cdef readonly int64_t K, n_params, n_variants
    cdef readonly bint f32
    cdef readonly object dtype
    cdef object keep

    def __cinit__(self):
        self.layers = NULL
        self.nets = NULL
        self.jobs = NULL

    def __init__(self, list specs, int loss, int64_t n_weights, int64_t n_params,
                 list orientations, object variant, list lanes_step,
                 cnp.ndarray X, cnp.ndarray Y, object sw, list params,
                 list grads, list vel, list sq, list snapshot, object n,
                 object batch, object kind, object momentum, object beta1,
                 object beta2, object eps, object l2, object t,
                 object snapshot_every, double loss_param=0.0):
        cdef int64_t L = len(specs), V = len(orientations), K = len(params)
        cdef int64_t v, l, k
        if L < 1 or V < 1 or K < 1:
            raise ValueError("ManyPlan needs layers, variants and networks")
        if len(lanes_step) != V:
            raise ValueError("lanes_step needs one entry per variant")
        self.dtype = X.dtype
        if self.dtype not in (np.float32, np.float64):
            raise TypeError("X must be float32 or float64")
        self.f32 = self.dtype == np.float32
        self.K = K
        self.n_params = n_params
        self.n_variants = V
        n_in, n_out = specs[0][0], specs[L - 1][1]
        _check(X, "X", self.dtype, (None, n_in))
        _check(Y, "Y", self.dtype, (X.shape[0], n_out))
        if sw is not None:
            _check(sw, "sw", self.dtype, (X.shape[0],))
        arrays = {}
        for name, vals in (("variant", variant), ("n", n), ("batch", batch),
                           ("kind", kind), ("t", t),
                           ("snapshot_every", snapshot_every)):
            a = np.ascontiguousarray(vals, dtype=np.int64)
            if a.shape != (K,):
                raise ValueError(f"{name} must have one entry per network")
            arrays[name] = a
        for name, vals in (("momentum", momentum), ("beta1", beta1),
                           ("beta2", beta2), ("eps", eps), ("l2", l2)):
            a = np.ascontiguousarray(vals, dtype=np.float64)
            if a.shape != (K,):
                raise ValueError(f"{name} must have one entry per network")
            arrays[name] = a
        if arrays["variant"].min() < 0 or arrays["variant"].max() >= V:
            raise ValueError("variant out of range")
        if (arrays["n"].min() < 1 or arrays["n"].max() > X.shape[0]
                or arrays["batch"].min() < 1):
            raise ValueError("n and batch must be >= 1 and n <= len(X)")
        for lst, name in ((grads, "grads"), (vel, "vel"), (sq, "sq"),
                          (snapshot, "snapshot")):
            if len(lst) != K:
                raise ValueError(f"{name} must have one entry per network")
        P = (n_params,)
        cdef int tn = cnp.NPY_FLOAT32 if self.f32 else cnp.NPY_FLOAT64
        cdef const int64_t[::1] kinds = arrays["kind"]
        cdef int64_t kk
        for k in range(K):
            kk = kinds[k]
            if kk not in (FNN_OPT_SGD, FNN_OPT_MOMENTUM, FNN_OPT_NESTEROV,
                          FNN_OPT_ADAM):
                raise ValueError(f"unknown optimizer kind {kk}")
            if (_vec_ok(params[k], tn, n_params, True)
                    and _vec_ok(grads[k], tn, n_params, True)
                    and (kk == FNN_OPT_SGD or _vec_ok(vel[k], tn, n_params, True))
                    and (kk != FNN_OPT_ADAM or _vec_ok(sq[k], tn, n_params, True))
                    and (snapshot[k] is None
                         or _vec_ok(snapshot[k], tn, n_params, True))):
                continue
            _check(params[k], "params", self.dtype, P)
            _check(grads[k], "grads", self.dtype, P)
            if kk != FNN_OPT_SGD:
                _check(vel[k], "vel", self.dtype, P)
            if kk == FNN_OPT_ADAM:
                _check(sq[k], "sq", self.dtype, P)
            if snapshot[k] is not None:
                _check(snapshot[k], "snapshot", self.dtype, P)
            raise ValueError("params, grads and optimizer state must be "
                             "writeable")
        self.layers = <fnn_layer *>malloc(L * V * sizeof(fnn_layer))
        self.nets = <fnn_net *>malloc(V * sizeof(fnn_net))
        self.jobs = <fnn_many_job *>malloc(K * sizeof(fnn_many_job))
        if self.layers == NULL or self.nets == NULL or self.jobs == NULL:
            raise MemoryError()
        memset(self.jobs, 0, K * sizeof(fnn_many_job))
        for v in range(V):
            fwd = orientations[v]
            if len(fwd) != L:
                raise ValueError("one orientation per layer")
            for l, s in enumerate(specs):
                self.layers[v * L + l].n_in = s[0]
                self.layers[v * L + l].n_out = s[1]
                self.layers[v * L + l].act = s[2]
                self.layers[v * L + l].pieces = s[3]
                self.layers[v * L + l].alpha = s[4]
                self.layers[v * L + l].w_off = s[5]
                self.layers[v * L + l].b_off = s[6]
                self.layers[v * L + l].dropout = 0.0
                self.layers[v * L + l].fwd_t = 1 if fwd[l] else 0
            self.nets[v].blas = blas_handle()
            self.nets[v].n_layers = <int32_t>L
            self.nets[v].loss = loss
            self.nets[v].loss_param = loss_param
            self.nets[v].n_params = n_params
            self.nets[v].n_weights = n_weights
            self.nets[v].lanes_ws = NULL
            if fnn_net_init(&self.nets[v], &self.layers[v * L]) != 0:
                raise ValueError("layer layout does not chain or lies outside params, "
                                 "or the loss parameter is invalid")
            if not lanes_step[v]:
                self.nets[v].lanes = 0
        cdef fnn_many_job *j
        cdef const int64_t[::1] var_ = arrays["variant"], n_ = arrays["n"]
        cdef const int64_t[::1] b_ = arrays["batch"], kind_ = arrays["kind"]
        cdef const int64_t[::1] t_ = arrays["t"], every_ = arrays["snapshot_every"]
        cdef const double[::1] mom_ = arrays["momentum"], b1_ = arrays["beta1"]
        cdef const double[::1] b2_ = arrays["beta2"], eps_ = arrays["eps"]
        cdef const double[::1] l2_ = arrays["l2"]
        cdef void *swp = _data(sw) if sw is not None else NULL
        for k in range(K):
            j = &self.jobs[k]
            # every field of the fit's arguments defined (sparse input,
            # dropout and whatever else fnn_fit_args holds: off)
            memset(&j.a, 0, sizeof(fnn_fit_args))
            j.net = &self.nets[var_[k]]
            j.params = _data(params[k])
            j.grads = _data(grads[k])
            j.opt.kind = <int32_t>kind_[k]
            j.opt.l2_per_row = 0
            j.opt.momentum = mom_[k]
            j.opt.beta1 = b1_[k]
            j.opt.beta2 = b2_[k]
            j.opt.eps = eps_[k]
            j.opt.l2 = l2_[k]
            j.opt.t = t_[k]
            j.opt.vel = _data(vel[k]) if vel[k] is not None else NULL
            j.opt.sq = _data(sq[k]) if sq[k] is not None else NULL
            j.a.n = n_[k]
            j.a.batch = b_[k]
            j.a.x = _data(X)
            j.a.ldx = n_in
            j.a.y = _data(Y)
            j.a.ldy = n_out
            j.a.sw = swp
            j.a.snapshot = _data(snapshot[k]) if snapshot[k] is not None else NULL
            j.a.snapshot_every = every_[k]
            j.a.loss_l2 = 0
            j.a.mean_by_rows = 0
            j.a.loss_scale = 1.0
            j.status = FNN_NOT_RUN
        self.keep = (X, Y, sw, params, grads, vel, sq, snapshot)

    def __dealloc__(self):
        free(self.layers)
        free(self.nets)
        free(self.jobs)

    def lanes_step(self, int64_t variant=0):
        """Whether networks of this variant run the small-network step."""
        if not 0 <= variant < self.n_variants:
            raise IndexError("no such variant")
        return bool(self.nets[variant].lanes)

    def t(self):
        """Adam's step counts, per network (as the runs left them)."""
        return np.array([self.jobs[k].opt.t for k in range(self.K)], dtype=np.int64)

    def run(self, object which, object lrs, object epoch_loss, list orders,
            int64_t epoch0, bint lanes, int n_threads, object progress=None,
            double poll_ms=50.0):
        """Fit networks which[i] (int64 indices, each once) for
        epoch_loss.shape[1] epochs numbered from epoch0: lrs[i] their
        learning rates (float64 (m, epochs), or (m, 1): one rate for every
        epoch), epoch_loss[i] their epoch losses (out, float64 (m, epochs)), orders[i] None (rows in order) or int64
        (epochs, n) row indices into X.  lanes: networks in vector lanes, in
        groups of LANE_WIDTH consecutive entries of which (each group must
        share n and batch, and orders all given or all None); else one
        network per thread.  progress(done) -> stop? is called about every
        poll_ms with the GIL.  Returns a dict of int64 arrays (status,
        epochs_done, steps_done, bad_epoch, bad_step, snapshot_epoch, t),
        indexed like which, and "exc": the exception the poll caught."""
        cdef const int64_t[::1] w = np.ascontiguousarray(which, dtype=np.int64)
        cdef int64_t m = w.shape[0], i, k
        _check(epoch_loss, "epoch_loss", np.float64, (m, None))
        cdef int64_t E = epoch_loss.shape[1]
        _check(lrs, "lrs", np.float64, (m, None))
        cdef int64_t lr_cols = lrs.shape[1]
        if lr_cols != E and lr_cols != 1:
            raise ValueError(f"lrs has {lr_cols} columns for {E} epochs")
        if len(orders) != m:
            raise ValueError("orders must have one entry per network")
        if m == 0:
            raise ValueError("run needs at least one network")
        if n_threads < 1:
            raise ValueError("n_threads must be >= 1")
        cdef unsigned char[::1] seen = np.zeros(self.K, dtype=np.uint8)
        for i in range(m):
            k = w[i]
            if not 0 <= k < self.K or seen[k]:
                raise ValueError("which must hold distinct network indices")
            seen[k] = 1
            o = orders[i]
            if o is not None:
                _check(o, "order", np.int64, (E, self.jobs[k].a.n))
                if o.size and (o.min() < 0 or o.max() >= self.keep[0].shape[0]):
                    raise ValueError("order holds row indices outside X")
        cdef fnn_many_job *run = <fnn_many_job *>malloc(m * sizeof(fnn_many_job))
        if run == NULL:
            raise MemoryError()
        cdef char *lr_p = <char *>_data(lrs)
        cdef char *el_p = <char *>_data(epoch_loss)
        cdef void *scratch = NULL
        cdef int64_t sbytes = 0
        cdef int status = 0, rc
        cdef int64_t[:, ::1] rv
        poll = _Poll(progress)
        try:
            for i in range(m):
                run[i] = self.jobs[w[i]]
                run[i].a.n_epochs = E
                run[i].a.lr = <const double *>(lr_p + i * lr_cols * sizeof(double))
                run[i].a.lr_const = lr_cols == 1
                run[i].a.epoch_loss = <double *>(el_p + i * E * sizeof(double))
                run[i].a.order = (<const int64_t *>_data(orders[i])
                                  if orders[i] is not None else NULL)
                run[i].a.epoch0 = epoch0
                run[i].a.out.snapshot_epoch = -1
                run[i].a.out.epochs_done = 0
                run[i].a.out.steps_done = 0
                run[i].a.out.bad_epoch = -1
                run[i].a.out.bad_step = -1
            if lanes:
                width = LANE_WIDTH[self.dtype]
                for i in range(0, m, width):
                    c = min(width, m - i)
                    ok = (fnn_many_lanes_ok_f32(run + i, c) if self.f32
                          else fnn_many_lanes_ok_f64(run + i, c))
                    if not ok:
                        raise ValueError("networks in lanes: a group does not "
                                         "share its shape, data and settings")
            sbytes = (fnn_many_scratch_f32(run, m, lanes) if self.f32
                      else fnn_many_scratch_f64(run, m, lanes))
            if posix_memalign(&scratch, 64, sbytes * n_threads) != 0:
                scratch = NULL
                raise MemoryError()
            with nogil:
                if self.f32:
                    rc = fnn_fit_many_f32(run, m, lanes, n_threads, scratch,
                                          sbytes, _poll, <void *>poll, poll_ms)
                else:
                    rc = fnn_fit_many_f64(run, m, lanes, n_threads, scratch,
                                          sbytes, _poll, <void *>poll, poll_ms)
            if rc < 0:
                raise RuntimeError("fnn_fit_many refused the jobs")
            res = np.empty((7, m), dtype=np.int64)
            rv = res
            for i in range(m):
                k = w[i]
                self.jobs[k].opt.t = run[i].opt.t
                rv[0, i] = run[i].status
                rv[1, i] = run[i].a.out.epochs_done
                rv[2, i] = run[i].a.out.steps_done
                rv[3, i] = run[i].a.out.bad_epoch
                rv[4, i] = run[i].a.out.bad_step
                rv[5, i] = run[i].a.out.snapshot_epoch
                rv[6, i] = run[i].opt.t
            out = dict(zip(("status", "epochs_done", "steps_done", "bad_epoch",
                            "bad_step", "snapshot_epoch", "t"), res))
            out["stopped"] = rc == FNN_STOPPED
            out["exc"] = poll.exc
            return out
        finally:
            free(run)
            free(scratch)


# ---- networks side by side in shared GEMMs ('batched') ---------------------------
#
# K networks of one dense architecture trained on the same minibatches (one
# row order) as one stacked network: the first layer's weights of all K
# side by side, (n_in, K n_1), so that its forward product and its weight
# gradient are one GEMM each over the minibatch for all K networks; the
# layers above are block-diagonal, one small GEMM per network, reading and
# writing its columns of the stacked activations in place (leading
# dimension K n_l).  Activations run once over the stacked matrices, the
# loss once per network on its columns.  Parameters, gradients and the
# optimizer state live in one stacked buffer (weights first, then biases)
# whose element i belongs to network nid[i].
#
# The arithmetic per network is Network.fit's except for the grouping of
# the sums inside the GEMMs (one product of K n_1 columns instead of K of
# n_1) and the optimizer update, computed here after the gradient rather
# than fused into the GEMM: results agree with Network.fit to rounding, not
# bit for bit.

from libc.math cimport sqrt, pow
from cython cimport floating

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *ts)
    enum:
        CLOCK_MONOTONIC


cdef inline double _now_ms() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6


cdef inline void _gemm(const fnn_blas *blas, int ta, int tb, int64_t m,
                       int64_t n, int64_t k, const floating *a, int64_t lda,
                       const floating *b, int64_t ldb, floating *c,
                       int64_t ldc) noexcept nogil:
    if floating is double:
        fnn_gemm_f64(blas, ta, tb, m, n, k, 1.0, a, lda, b, ldb, 0.0, c, ldc)
    else:
        fnn_gemm_f32(blas, ta, tb, m, n, k, 1.0, a, lda, b, ldb, 0.0, c, ldc)


cdef inline void _act_fwd(int64_t m, int64_t n, int act, double alpha,
                          const floating *b, floating *z, int64_t ldz) noexcept nogil:
    if floating is double:
        fnn_bias_act_forward_f64(m, n, act, alpha, b, z, ldz)
    else:
        fnn_bias_act_forward_f32(m, n, act, <float>alpha, b, z, ldz)


cdef inline void _act_bwd(int64_t m, int64_t n, int act, double alpha,
                          const floating *y, int64_t ldy, floating *d,
                          int64_t ldd, floating *db) noexcept nogil:
    """d := d * act'(y) in place (ld ldd), db := column sums of d."""
    if floating is double:
        fnn_bias_act_backward_f64(m, n, act, alpha, y, ldy, d, ldd, d, ldd, db)
    else:
        fnn_bias_act_backward_f32(m, n, act, <float>alpha, y, ldy, d, ldd, d,
                                  ldd, db)


cdef inline double _loss(int64_t m, int64_t n, int loss, double param,
                         double scale, const floating *z, int64_t ldz,
                         const floating *y, int64_t ldy, floating *dz,
                         int64_t lddz) noexcept nogil:
    if floating is double:
        return fnn_loss_grad_f64(m, n, loss, param, scale, z, ldz, y, ldy,
                                 NULL, dz, lddz, NULL)
    else:
        return fnn_loss_grad_f32(m, n, loss, param, scale, z, ldz, y, ldy,
                                 NULL, dz, lddz, NULL)


cdef struct _StackRun:
    # the stacked network
    const fnn_blas *blas
    int64_t K, L, n, batch, n_epochs, n_params, n_weights
    const int64_t *width            # L + 1: input width, then each layer's
    const int32_t *act              # L (the last: as the loss sees it)
    const double *alpha             # L
    const int64_t *woff             # L
    const int64_t *boff             # L, -1: no bias
    const int64_t *seg              # n_seg x 3: start, length, network: the
    int64_t n_seg                   # buffer's runs of one network's elements
    int32_t loss
    double loss_param
    # data and schedule
    const void *x
    const void *y
    const int64_t *order            # (n_epochs, n) or NULL
    const double *lr                # (K, lr_cols)
    int64_t lr_cols
    # optimizer, one kind for all
    int32_t kind
    double momentum, beta1, beta2, eps
    const double *l2                # K
    int64_t *t                      # K, Adam's steps (in/out)
    void *params
    void *grads
    void *vel
    void *sq
    void *snap
    int64_t snap_every, to_snap
    # work: xb (batch, n_in), yb (batch, n_out), the layers' stacked
    # outputs, two delta buffers, per-network scratch
    void *xb
    void *yb
    void **acts
    void *d0
    void *d1
    double *lr_k
    double *lrt_k
    double *esum
    double *wsum
    unsigned char *active
    # out, per network
    double *epoch_loss              # (K, n_epochs)
    int64_t *epochs_done
    int64_t *bad_epoch
    int64_t *bad_step
    int64_t *snap_epoch
    int64_t steps_done
    # Ctrl-C and progress
    double poll_ms
    void *poll_ctx


cdef void _stack_restore(_StackRun *r, int64_t k, floating *P,
                         const floating *S) noexcept nogil:
    """Network k's elements of P := its elements of S."""
    cdef int64_t j, i0
    for j in range(r.n_seg):
        if r.seg[3 * j + 2] == k:
            i0 = r.seg[3 * j]
            memcpy(P + i0, S + i0, r.seg[3 * j + 1] * sizeof(floating))


cdef void _stack_update(_StackRun *r, int64_t k, int64_t i0, int64_t m,
                        double wd, floating *P, const floating *G, floating *V,
                        floating *S) noexcept nogil:
    """The optimizer's step over m elements of network k (weight decay
    wd: 0 for biases), in the forms of csrc/optim_impl.h."""
    cdef int64_t i
    cdef floating lr = <floating>r.lr_k[k], dec = <floating>(wd)
    cdef floating keep = <floating>(1.0 - r.lr_k[k] * wd)
    cdef floating mu = <floating>r.momentum, b1 = <floating>r.beta1
    cdef floating b2 = <floating>r.beta2, eps = <floating>r.eps
    cdef floating c1 = 1 - b1, c2 = 1 - b2, lrt = <floating>r.lrt_k[k]
    cdef floating gi, vi, mi
    if r.kind == FNN_OPT_SGD:
        for i in range(m):
            P[i] = -lr * G[i] + keep * P[i]
    elif r.kind == FNN_OPT_ADAM:
        for i in range(m):
            gi = G[i] + dec * P[i]
            mi = b1 * V[i] + c1 * gi
            vi = b2 * S[i] + c2 * (gi * gi)
            V[i] = mi
            S[i] = vi
            P[i] = P[i] - lrt * mi / (sqrt(vi) + eps)
    elif r.kind == FNN_OPT_NESTEROV:
        for i in range(m):
            gi = G[i] + dec * P[i]
            vi = mu * V[i] - lr * gi
            V[i] = vi
            P[i] = P[i] + (mu * vi - lr * gi)
    else:
        for i in range(m):
            gi = G[i] + dec * P[i]
            vi = mu * V[i] - lr * gi
            V[i] = vi
            P[i] = P[i] + vi


cdef int _stack_fit(_StackRun *r, floating *P) noexcept nogil:
    """The fit; returns FNN_OK, or FNN_STOPPED when the poll asked to stop
    (every network then at a step boundary)."""
    cdef int64_t K = r.K, L = r.L, n = r.n, n_in = r.width[0]
    cdef int64_t n_out = r.width[L], np_ = r.n_params, nw = r.n_weights
    cdef int64_t B = r.batch, steps = (n + B - 1) // B
    cdef floating *G = <floating *>r.grads
    cdef floating *V = <floating *>r.vel
    cdef floating *S2 = <floating *>r.sq
    cdef floating *snap = <floating *>r.snap
    cdef const floating *X = <const floating *>r.x
    cdef const floating *Y = <const floating *>r.y
    cdef floating *xb = <floating *>r.xb
    cdef floating *yb = <floating *>r.yb
    cdef floating *D
    cdef floating *E
    cdef floating *tmp
    cdef floating *A
    cdef const floating *Ain
    cdef int64_t e, s, i, j, k, l, i0, mb, row, ni, no, lda_in, live = 0
    cdef const int64_t *ord_e
    cdef double scale, loss_k, b1 = r.beta1, b2 = r.beta2
    cdef int sse = r.loss == FNN_SSE, stop = 0
    cdef double last_poll = _now_ms()
    for k in range(K):
        live += r.active[k]
    for e in range(r.n_epochs):
        for k in range(K):
            r.lr_k[k] = r.lr[k * r.lr_cols + (0 if r.lr_cols == 1 else e)]
            r.esum[k] = 0.0
            r.wsum[k] = 0.0
        ord_e = r.order + e * n if r.order != NULL else NULL
        for s in range(steps):
            i0 = s * B
            mb = B if n - i0 > B else n - i0
            scale = 1.0 if sse else 1.0 / <double>mb
            if s == 0 and r.to_snap == 0 and snap != NULL:
                memcpy(snap, P, np_ * sizeof(floating))
                for k in range(K):
                    if r.active[k]:
                        r.snap_epoch[k] = e
            # the minibatch's rows
            for i in range(mb):
                row = ord_e[i0 + i] if ord_e != NULL else i0 + i
                memcpy(xb + i * n_in, X + row * n_in, n_in * sizeof(floating))
                memcpy(yb + i * n_out, Y + row * n_out, n_out * sizeof(floating))
            # forward: layer 0 one GEMM for all networks, the others one per
            # network on its columns
            Ain = xb
            lda_in = n_in
            for l in range(L):
                ni = r.width[l]
                no = r.width[l + 1]
                A = <floating *>r.acts[l]
                if l == 0:
                    _gemm(r.blas, FNN_NOTRANS, FNN_NOTRANS, mb, K * no, ni, xb, n_in,
                          P + r.woff[0], K * no, A, K * no)
                else:
                    for k in range(K):
                        _gemm(r.blas, FNN_NOTRANS, FNN_NOTRANS, mb, no, ni,
                              Ain + k * ni, lda_in, P + r.woff[l] + k * ni * no,
                              no, A + k * no, K * no)
                _act_fwd(mb, K * no, r.act[l], r.alpha[l],
                         P + r.boff[l] if r.boff[l] >= 0 else <floating *>NULL,
                         A, K * no)
                Ain = A
                lda_in = K * no
            # the loss of each network on its columns, its output delta
            A = <floating *>r.acts[L - 1]
            D = <floating *>r.d0
            E = <floating *>r.d1
            for k in range(K):
                if r.active[k]:
                    loss_k = _loss(mb, n_out, r.loss, r.loss_param, scale,
                                   A + k * n_out, K * n_out, yb, n_out,
                                   D + k * n_out, K * n_out)
                    if loss_k - loss_k == 0:
                        r.esum[k] += loss_k if sse else loss_k * <double>mb
                        r.wsum[k] += <double>mb
                        continue
                    # this network stops before the step, back to its last
                    # snapshot, as its fit would
                    r.active[k] = 0
                    live -= 1
                    r.bad_epoch[k] = e
                    r.bad_step[k] = s
                    r.epochs_done[k] = e
                    if snap != NULL:
                        _stack_restore(r, k, P, snap)
                # out of play: no gradient
                for i in range(mb):
                    for j in range(n_out):
                        D[i * K * n_out + k * n_out + j] = 0
            if live == 0:
                return FNN_OK
            # backward
            if r.act[L - 1] != FNN_IDENTITY:
                _act_bwd(mb, K * n_out, r.act[L - 1], r.alpha[L - 1], A,
                         K * n_out, D, K * n_out, <floating *>NULL)
            for l in range(L - 1, -1, -1):
                ni = r.width[l]
                no = r.width[l + 1]
                if r.boff[l] >= 0:
                    _act_bwd(mb, K * no, FNN_IDENTITY, 0.0, D, K * no, D,
                             K * no, G + r.boff[l])
                if l == 0:
                    _gemm(r.blas, FNN_TRANS, FNN_NOTRANS, n_in, K * no, mb, xb, n_in,
                          D, K * no, G + r.woff[0], K * no)
                    break
                Ain = <floating *>r.acts[l - 1]
                for k in range(K):
                    _gemm(r.blas, FNN_TRANS, FNN_NOTRANS, ni, no, mb, Ain + k * ni,
                          K * ni, D + k * no, K * no,
                          G + r.woff[l] + k * ni * no, no)
                    _gemm(r.blas, FNN_NOTRANS, FNN_TRANS, mb, ni, no, D + k * no,
                          K * no, P + r.woff[l] + k * ni * no, no,
                          E + k * ni, K * ni)
                _act_bwd(mb, K * ni, r.act[l - 1], r.alpha[l - 1], Ain, K * ni,
                         E, K * ni, <floating *>NULL)
                tmp = D
                D = E
                E = tmp
            # the update, element by element with its network's settings
            if r.kind == FNN_OPT_ADAM:
                for k in range(K):
                    if r.active[k]:
                        r.t[k] += 1
                        r.lrt_k[k] = (r.lr_k[k] * sqrt(1.0 - pow(b2, <double>r.t[k]))
                                      / (1.0 - pow(b1, <double>r.t[k])))
            for j in range(r.n_seg):
                k = r.seg[3 * j + 2]
                if r.active[k]:
                    i0 = r.seg[3 * j]
                    _stack_update(r, k, i0, r.seg[3 * j + 1],
                                  r.l2[k] if i0 < nw else 0.0, P + i0, G + i0,
                                  V + i0 if V != NULL else V,
                                  S2 + i0 if S2 != NULL else S2)
            r.steps_done += 1
            if _now_ms() - last_poll >= r.poll_ms:
                last_poll = _now_ms()
                stop = _poll(r.poll_ctx, r.steps_done, 0)
                if stop:
                    return FNN_STOPPED
        for k in range(K):
            if r.active[k]:
                r.epoch_loss[k * r.n_epochs + e] = (
                    r.esum[k] if sse else
                    (r.esum[k] / r.wsum[k] if r.wsum[k] > 0 else 0.0))
                r.epochs_done[k] = e + 1
        r.to_snap = r.snap_every - 1 if r.to_snap == 0 else r.to_snap - 1
    return FNN_OK



def fit_stacked(object widths, object acts, object alphas, object woff,
                object boff, object nid, int loss, double loss_param,
                int64_t n_weights, cnp.ndarray X, cnp.ndarray Y, object order,
                cnp.ndarray lrs, int kind, double momentum, double beta1,
                double beta2, double eps, object l2, object t,
                cnp.ndarray params, cnp.ndarray grads, object vel, object sq,
                object snap, int64_t snap_every, int64_t to_snap, int64_t batch,
                cnp.ndarray epoch_loss, object progress=None,
                double poll_ms=50.0):
    """One run of K stacked networks (see above) over epoch_loss.shape[1]
    epochs: widths (L + 1), acts/alphas/woff/boff (L; acts[-1] the output
    activation as the loss sees it), nid (n_params, int32) the network of
    each stacked element, the first n_weights of them weights.  X (n,
    n_in), Y (n, n_out); order None or int64 (epochs, n); lrs float64 (K,
    epochs) or (K, 1); l2 (K) float64; t (K) int64, Adam's steps, advanced
    in place.  params/grads/vel/sq/snap: stacked (n_params) buffers of X's
    dtype (vel None for plain SGD, sq None unless Adam, snap None for no
    snapshots).  Returns a dict: epochs_done, bad_epoch, bad_step,
    snap_epoch (int64 per network), steps_done, stopped, exc.
    progress(steps done) -> stop? is called about every poll_ms with the
    GIL."""
    cdef int64_t L = len(acts), i
    dt = X.dtype
    if dt not in (np.float32, np.float64):
        raise TypeError("X must be float32 or float64")
    w_ = np.ascontiguousarray(widths, dtype=np.int64)
    a_ = np.ascontiguousarray(acts, dtype=np.int32)
    al_ = np.ascontiguousarray(alphas, dtype=np.float64)
    wo_ = np.ascontiguousarray(woff, dtype=np.int64)
    bo_ = np.ascontiguousarray(boff, dtype=np.int64)
    nid_ = np.ascontiguousarray(nid, dtype=np.int32)
    l2_ = np.ascontiguousarray(l2, dtype=np.float64)
    if L < 1 or w_.shape != (L + 1,) or al_.shape != (L,) or wo_.shape != (L,) \
            or bo_.shape != (L,) or (w_ < 1).any():
        raise ValueError("widths, acts, alphas, woff, boff do not describe L layers")
    cdef int64_t K = l2_.shape[0]
    if K < 1 or not isinstance(t, np.ndarray) or t.dtype != np.int64 \
            or t.shape != (K,) or not t.flags.c_contiguous:
        raise ValueError("l2 and t (int64, in place) need one entry per network")
    cdef int64_t P = params.shape[0] if params.ndim == 1 else -1
    for a, name in ((params, "params"), (grads, "grads"), (vel, "vel"),
                    (sq, "sq"), (snap, "snap")):
        if a is not None:
            _check(a, name, dt, (P,))
            if not a.flags.writeable:
                raise ValueError(f"{name} must be writeable")
    if (kind != FNN_OPT_SGD and vel is None) or (kind == FNN_OPT_ADAM and sq is None):
        raise ValueError("the optimizer's state buffers are missing")
    if kind not in (FNN_OPT_SGD, FNN_OPT_MOMENTUM, FNN_OPT_NESTEROV, FNN_OPT_ADAM):
        raise ValueError(f"unknown optimizer kind {kind}")
    if nid_.shape != (P,) or (nid_.size and (nid_.min() < 0 or nid_.max() >= K)):
        raise ValueError("nid must give a network in [0, K) for every element")
    if not 0 <= n_weights <= P:
        raise ValueError("n_weights outside the buffer")
    # every layer's blocks inside the buffer
    for i in range(L):
        if wo_[i] < 0 or wo_[i] + K * w_[i] * w_[i + 1] > P or \
                (bo_[i] >= 0 and bo_[i] + K * w_[i + 1] > P):
            raise ValueError(f"layer {i}'s blocks lie outside the buffer")
    n_in, n_out = int(w_[0]), int(w_[L])
    _check(X, "X", dt, (None, n_in))
    cdef int64_t n = X.shape[0]
    _check(Y, "Y", dt, (n, n_out))
    _check(epoch_loss, "epoch_loss", np.float64, (K, None))
    cdef int64_t E = epoch_loss.shape[1]
    _check(lrs, "lrs", np.float64, (K, None))
    if lrs.shape[1] not in (1, E):
        raise ValueError("lrs needs one column or one per epoch")
    if n < 1 or batch < 1 or E < 0:
        raise ValueError("n and batch must be >= 1")
    if batch > n:
        batch = n
    if order is not None:
        _check(order, "order", np.int64, (E, n))
        if order.size and (order.min() < 0 or order.max() >= n):
            raise ValueError("order holds row indices outside X")
    # runs of consecutive elements of one network
    change = np.flatnonzero(np.diff(nid_)) + 1
    starts = np.concatenate(([0], change)).astype(np.int64) if P else np.zeros(0, np.int64)
    ends = np.concatenate((change, [P])).astype(np.int64) if P else np.zeros(0, np.int64)
    # a run never straddles the weights/biases boundary
    cut = np.searchsorted(starts, n_weights)
    if 0 < n_weights < P and (cut == len(starts) or starts[cut] != n_weights):
        starts = np.insert(starts, cut, n_weights)
        ends = np.insert(ends, cut - 1, n_weights)
    seg = np.ascontiguousarray(np.stack([starts, ends - starts,
                                         nid_[starts].astype(np.int64)], axis=1))
    width_max = int(w_[1:].max())
    xb = np.empty((batch, n_in), dtype=dt)
    yb = np.empty((batch, n_out), dtype=dt)
    outs = [np.empty((batch, K * int(w_[i + 1])), dtype=dt) for i in range(L)]
    d0 = np.empty((batch, K * width_max), dtype=dt)
    d1 = np.empty((batch, K * width_max), dtype=dt)
    per = np.zeros((4, K), dtype=np.float64)
    active = np.ones(K, dtype=np.uint8)
    res = np.full((4, K), -1, dtype=np.int64)
    res[0] = 0
    cdef double[:, ::1] per_v = per
    cdef unsigned char[::1] active_v = active
    cdef int64_t[:, ::1] res_v = res
    cdef int64_t[::1] t_v = t
    cdef void **acts_p = <void **>malloc(L * sizeof(void *))
    if acts_p == NULL:
        raise MemoryError()
    cdef _StackRun r
    memset(&r, 0, sizeof(r))
    poll = _Poll(progress)
    cdef int rc
    cdef bint f64
    try:
        for i in range(L):
            acts_p[i] = _data(outs[i])
        r.blas = blas_handle()
        r.K = K
        r.L = L
        r.n = n
        r.batch = batch
        r.n_epochs = E
        r.n_params = P
        r.n_weights = n_weights
        r.width = <const int64_t *>_data(w_)
        r.act = <const int32_t *>_data(a_)
        r.alpha = <const double *>_data(al_)
        r.woff = <const int64_t *>_data(wo_)
        r.boff = <const int64_t *>_data(bo_)
        r.seg = <const int64_t *>_data(seg)
        r.n_seg = seg.shape[0]
        r.loss = loss
        r.loss_param = loss_param
        r.x = _data(X)
        r.y = _data(Y)
        r.order = <const int64_t *>_data(order) if order is not None else NULL
        r.lr = <const double *>_data(lrs)
        r.lr_cols = lrs.shape[1]
        r.kind = kind
        r.momentum = momentum
        r.beta1 = beta1
        r.beta2 = beta2
        r.eps = eps
        r.l2 = <const double *>_data(l2_)
        r.t = &t_v[0]
        r.params = _data(params)
        r.grads = _data(grads)
        r.vel = _data(vel) if vel is not None else NULL
        r.sq = _data(sq) if sq is not None else NULL
        r.snap = _data(snap) if snap is not None else NULL
        r.snap_every = snap_every if snap_every >= 1 else 1
        r.to_snap = to_snap % r.snap_every if to_snap >= 0 else 0
        r.xb = _data(xb)
        r.yb = _data(yb)
        r.acts = acts_p
        r.d0 = _data(d0)
        r.d1 = _data(d1)
        r.lr_k = &per_v[0, 0]
        r.lrt_k = &per_v[1, 0]
        r.esum = &per_v[2, 0]
        r.wsum = &per_v[3, 0]
        r.active = &active_v[0]
        r.epoch_loss = <double *>_data(epoch_loss)
        r.epochs_done = &res_v[0, 0]
        r.bad_epoch = &res_v[1, 0]
        r.bad_step = &res_v[2, 0]
        r.snap_epoch = &res_v[3, 0]
        r.poll_ms = poll_ms if poll_ms > 0 else 50.0
        r.poll_ctx = <void *>poll
        f64 = dt == np.float64
        with nogil:
            if E == 0:
                rc = FNN_OK
            elif f64:
                rc = _stack_fit(&r, <double *>r.params)
            else:
                rc = _stack_fit(&r, <float *>r.params)
    finally:
        free(acts_p)
    return {"epochs_done": res[0], "bad_epoch": res[1], "bad_step": res[2],
            "snap_epoch": res[3], "steps_done": r.steps_done,
            "stopped": rc == FNN_STOPPED, "exc": poll.exc}
