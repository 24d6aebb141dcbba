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
