# _train.pyx -- the compiled side of fastnn.Network: holds the C network
# description (csrc/fastnn.h fnn_net) over the flat params/grads buffers and
# its workspace, and runs forward, loss, the fused train step and the whole
# fit loop (csrc/train.c) without the GIL.
#
# Inputs arrive validated and converted by fastnn/nn.py, except on the
# train_step fast path, which accepts only arrays that need no conversion
# and returns None for anything else (the Python side then validates).
#
# Each NetCore method that touches data picks the dtype once, by the type
# of its params pointer, and runs one body written over the fused type
# `floating` (the _*_impl functions after the class).
import os
import threading
import time

from cpython.exc cimport PyErr_CheckSignals
from libc.math cimport NAN, isfinite
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, malloc

cdef extern from "stdlib.h" nogil:
    int posix_memalign(void **memptr, size_t alignment, size_t size)

cdef extern from "string.h" nogil:
    void *memcpy(void *dst, const void *src, size_t n)

cdef extern from "pool.h" nogil:
    void fnn_pool_set_task_delay(int us)

cdef extern from "split.h":
    enum:
        FNN_SPLIT_STARVED_RUN
        FNN_SPLIT_GOOD_RUN
        FNN_SPLIT_FIRST_HOLD_MS
        FNN_SPLIT_MAX_HOLD_MS

import numpy as np
cimport numpy as cnp

from fastnn._blas cimport blas_handle
from fastnn._kernels cimport *
from fastnn._sparse cimport (fnn_csr, fnn_csr_batch, fnn_csr_rows,
                             fnn_csr_batch_f32, fnn_csr_batch_f64,
                             fnn_csr_grad_f32, fnn_csr_grad_f64,
                             fnn_csr_update_f32, fnn_csr_update_f64,
                             fnn_net_forward_csr_f32, fnn_net_forward_csr_f64,
                             fnn_net_loss_dz0_csr_f32, fnn_net_loss_dz0_csr_f64)

cnp.import_array()

ctypedef fused floating:
    float
    double

# Forward-GEMM orientation tuning (see NetCore._tune_forward).
# FASTNN_AUTOTUNE=0 turns it off: every forward GEMM then runs as X @ W.
AUTOTUNE = os.environ.get("FASTNN_AUTOTUNE", "1") not in ("0", "")
_TUNED = {}   # (dtype, m, k, n, chunk_mnk, blas source, threads) -> transposed?
TUNE_LOG = []        # (key, repetitions, {orientation: seconds per call})

# Workspace elements per block when predicting / evaluating large inputs:
# bounds the memory without hurting GEMM efficiency.
cdef int64_t BLOCK_ELEMS = 1 << 21

# Steps smaller than this (workspace plus parameters, in elements) keep the
# GIL: releasing and retaking it costs about as much as such a step.
cdef int64_t NOGIL_MIN_ELEMS = 4096

OPT_KINDS = {"sgd": FNN_OPT_SGD, "momentum": FNN_OPT_MOMENTUM,
             "nesterov": FNN_OPT_NESTEROV, "adam": FNN_OPT_ADAM}
STATUS = {"ok": FNN_OK, "nonfinite": FNN_ERR_NONFINITE, "stopped": FNN_STOPPED}


# ---- threads of a fit and the split step -----------------------------------

_TRAIN_THREADS = [None]


def set_train_threads(n):
    """Threads one native fit may use for its minibatches: 1 or 2, or
    None (the default) to follow the BLAS's thread count (2 if it runs 2
    or more threads).  With 2, big enough minibatches are split between
    the calling thread and a helper thread, each running the forward and
    backward pass of half the rows; the gradients are summed in a fixed
    order, so results stay reproducible run to run (they differ from the
    1-thread results by rounding only).  Returns the previous setting."""
    if n is not None and (isinstance(n, bool) or n not in (1, 2)):
        raise ValueError(f"set_train_threads: n must be 1, 2 or None, got {n!r}")
    old = _TRAIN_THREADS[0]
    _TRAIN_THREADS[0] = n
    return old


def train_threads():
    """The thread count a native fit uses now (see set_train_threads)."""
    n = _TRAIN_THREADS[0]
    if n is not None:
        return n
    from fastnn._blas import blas_info
    blas_n = blas_info()["num_threads"]
    if blas_n is None:
        blas_n = os.cpu_count() or 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return 2 if min(blas_n, cpus) >= 2 else 1


# Which minibatches a fit splits between its two threads (NetCore.split_rows)
# and how the halves call the BLAS.  docs/engine.md says why each default.
cdef struct SplitTuning:
    int64_t min_macs        # multiply-adds a step needs to be split
    int64_t min_rows        # rows each half needs
    int64_t max_half_mnk    # largest half-batch GEMM (m*n*k) still split
    int64_t chunk_mnk       # the halves' GEMMs go to the BLAS in pieces
                            # of at most this many multiply-adds (0: whole)
    bint backoff            # hold splitting while the helper is starved

cdef SplitTuning SPLIT_DEFAULTS = SplitTuning(
    min_macs=1 << 17, min_rows=16, max_half_mnk=1 << 23, chunk_mnk=1_000_000,
    backoff=True)
cdef SplitTuning _split = SPLIT_DEFAULTS

# The back-off's constants (csrc/split.h), for tests and tools.
SPLIT_STARVED_RUN = FNN_SPLIT_STARVED_RUN
SPLIT_GOOD_RUN = FNN_SPLIT_GOOD_RUN
SPLIT_FIRST_HOLD_MS = FNN_SPLIT_FIRST_HOLD_MS
SPLIT_MAX_HOLD_MS = FNN_SPLIT_MAX_HOLD_MS


def split_tuning(defaults=False):
    """The settings that decide which minibatches a fit splits between two
    threads (see set_split_tuning), as a dict; defaults=True: the built-in
    values instead of the current ones."""
    return dict(SPLIT_DEFAULTS if defaults else _split)


def set_split_tuning(**settings):
    """Change which minibatches a native fit splits between its two threads
    (see set_train_threads) and how; returns the previous settings, so that
    set_split_tuning(**old) restores them.  Keys (others are refused,
    nothing changed):

    min_macs: multiply-adds of a step's forward and backward GEMMs (3 x the
        weights x the rows) below which it is not split;
    min_rows: rows each half needs at least (>= 1);
    max_half_mnk: half-batch GEMMs larger than this (the widest layer's
        weights x half the rows) are left whole to the BLAS's own threads;
    chunk_mnk: the halves send their GEMMs to the BLAS in pieces of at most
        this many multiply-adds, which OpenBLAS runs on the calling thread
        (0: whole calls);
    backoff: while the helper thread's core is busy elsewhere, hold
        splitting for a while (csrc/split.h); False splits regardless.

    Integers are >= 0.  Affects fits that start afterwards.  For tuning on
    a given machine, and for tests (forcing small networks to split)."""
    global _split
    cdef SplitTuning new = _split
    for key, value in settings.items():
        if key == "backoff":
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"set_split_tuning: backoff must be a bool, "
                                f"got {value!r}")
            new.backoff = bool(value)
            continue
        if key not in ("min_macs", "min_rows", "max_half_mnk", "chunk_mnk"):
            raise ValueError(f"set_split_tuning: unknown setting {key!r}")
        if (isinstance(value, (bool, np.bool_))
                or not isinstance(value, (int, np.integer))):
            raise TypeError(f"set_split_tuning: {key} must be an int, got "
                            f"{value!r}")
        if value < (1 if key == "min_rows" else 0) or value >= 2 ** 63:
            raise ValueError(f"set_split_tuning: {key} out of range: {value}")
        if key == "min_macs":
            new.min_macs = value
        elif key == "min_rows":
            new.min_rows = value
        elif key == "max_half_mnk":
            new.max_half_mnk = value
        else:
            new.chunk_mnk = value
    old = split_tuning()
    _split = new
    return old


def set_helper_delay(int us):
    """Make the helper thread sleep `us` microseconds before each task it
    runs (0, the default: never), process-wide.  A diagnostic: it stands in
    for a helper whose core is busy elsewhere, the condition the split
    step's back-off reacts to (csrc/split.h), so that the back-off can be
    exercised and watched on an idle machine.  Returns nothing."""
    if us < 0:
        raise ValueError(f"set_helper_delay: us must be >= 0, got {us}")
    fnn_pool_set_task_delay(us)


# ---- fit configuration and result ------------------------------------------

cdef object _int_setting(object value, str name, int64_t minimum):
    """value as an int of at least minimum, or a clear error."""
    if type(value) is int and minimum <= value < 2 ** 63:
        return value
    if (isinstance(value, (bool, np.bool_))
            or not isinstance(value, (int, np.integer))):
        raise TypeError(f"FitConfig: {name} must be an int, got {value!r}")
    if not minimum <= value < 2 ** 63:
        raise ValueError(f"FitConfig: {name} must be >= {minimum}, got {value}")
    return int(value)


cdef class FitConfig:
    """How NetCore.fit trains a network: the optimizer with its state, the
    minibatch size, snapshots for divergence recovery, and what the epoch
    losses report.  Made once per training run (fastnn.training.fit, the
    stochastic solvers of fastnn.sklearn) and used by each of its native
    calls; the data, each epoch's learning rate and the rows' order are
    given per call (NetCore.fit).  Scalars are checked here, the buffers
    against the network at each call.

    optimizer: 'sgd', 'momentum', 'nesterov' or 'adam'.  batch: rows per
    minibatch (>= 1; at most a call's rows are used).  momentum, beta1,
    beta2, eps: the optimizer's hyper-parameters.  l2: L2 coefficient on
    the weights (not the biases), divided by each minibatch's rows if
    l2_per_row (scikit-learn's alpha).  vel, sq: the optimizer's state,
    n_params arrays of the network's dtype updated in place (vel for
    momentum, nesterov and adam; sq for adam); t: Adam's step count so
    far, advanced in place by each call.  snapshot: an n_params array that
    receives the parameters at the start of every snapshot_every-th epoch
    (global numbers, see NetCore.fit's epoch0) once that epoch's first loss
    is known finite.  loss_l2: add 1/2 wd |W|^2 (W before the step) to each
    step's reported loss; mean_by_rows: weight the epoch's mean by rows
    even with sample weights; loss_scale: multiplies each step's reported
    data loss (not the gradient, not the L2 term).  poll_ms: how often the
    progress callback runs and Ctrl-C is noticed, in milliseconds.
    dropout_seed: an integer in [0, 2^64) to apply the layers' dropout, the
    masks drawn from (dropout_seed, global epoch, layer, the sample's
    position in the epoch's order) (csrc/dropout.h); None: no dropout.
    """
    cdef readonly str optimizer
    cdef readonly int kind
    cdef readonly int64_t batch
    cdef readonly double momentum, beta1, beta2, eps, l2
    cdef readonly bint l2_per_row
    cdef readonly object vel, sq, snapshot
    cdef public int64_t t
    cdef readonly int64_t snapshot_every
    cdef readonly bint loss_l2, mean_by_rows
    cdef readonly double loss_scale, poll_ms
    cdef readonly object dropout_seed

    def __init__(self, str optimizer, batch, *, double momentum=0.9,
                 double beta1=0.9, double beta2=0.999, double eps=1e-8,
                 double l2=0.0, bint l2_per_row=False, vel=None, sq=None, t=0,
                 snapshot=None, snapshot_every=1, bint loss_l2=False,
                 bint mean_by_rows=False, double loss_scale=1.0,
                 double poll_ms=50.0, dropout_seed=None):
        if optimizer not in OPT_KINDS:
            raise ValueError(f"unknown optimizer {optimizer!r}; expected one "
                             f"of {sorted(OPT_KINDS)}")
        batch = _int_setting(batch, "batch", 1)
        t = _int_setting(t, "t", 0)
        snapshot_every = _int_setting(snapshot_every, "snapshot_every", 1)
        # NaN fails every comparison: refused with the rest
        if not 0 <= momentum <= 1:
            raise ValueError(f"FitConfig: momentum must be in [0, 1], got {momentum}")
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"FitConfig: beta1 and beta2 must be in [0, 1), "
                             f"got {beta1}, {beta2}")
        if not (eps > 0 and isfinite(eps)):
            raise ValueError(f"FitConfig: eps must be finite and > 0, got {eps}")
        if not (l2 >= 0 and isfinite(l2)):
            raise ValueError(f"FitConfig: l2 must be finite and >= 0, got {l2}")
        if not isfinite(loss_scale):
            raise ValueError(f"FitConfig: loss_scale must be finite, got {loss_scale}")
        if not (poll_ms > 0 and isfinite(poll_ms)):
            raise ValueError(f"FitConfig: poll_ms must be finite and > 0, got {poll_ms}")
        if dropout_seed is not None:
            if (isinstance(dropout_seed, (bool, np.bool_))
                    or not isinstance(dropout_seed, (int, np.integer))):
                raise TypeError(f"FitConfig: dropout_seed must be an int or None, "
                                f"got {dropout_seed!r}")
            if not 0 <= dropout_seed < 1 << 64:
                raise ValueError(f"FitConfig: dropout_seed must be in [0, 2**64), "
                                 f"got {dropout_seed}")
            dropout_seed = int(dropout_seed)
        self.optimizer = optimizer
        self.kind = OPT_KINDS[optimizer]
        if self.kind != FNN_OPT_SGD and vel is None:
            raise ValueError(f"FitConfig: optimizer {optimizer!r} needs vel")
        if self.kind == FNN_OPT_ADAM and sq is None:
            raise ValueError("FitConfig: optimizer 'adam' needs sq")
        for name, buf in (("vel", vel), ("sq", sq), ("snapshot", snapshot)):
            if buf is not None and not isinstance(buf, np.ndarray):
                raise TypeError(f"FitConfig: {name} must be a numpy array, "
                                f"got {type(buf).__name__}")
        self.batch = batch
        self.momentum, self.beta1, self.beta2 = momentum, beta1, beta2
        self.eps, self.l2, self.l2_per_row = eps, l2, l2_per_row
        self.vel, self.sq, self.t = vel, sq, t
        self.snapshot, self.snapshot_every = snapshot, snapshot_every
        self.loss_l2, self.mean_by_rows = loss_l2, mean_by_rows
        self.loss_scale, self.poll_ms = loss_scale, poll_ms
        self.dropout_seed = dropout_seed

    cdef _check_against(self, NetCore core):
        """The buffers fit the network: a wrong one would be read out of
        bounds by the C loop."""
        P = (core.params.shape[0],)
        if self.kind != FNN_OPT_SGD:
            _check(self.vel, "vel", core.params.dtype, P)
        if self.kind == FNN_OPT_ADAM:
            _check(self.sq, "sq", core.params.dtype, P)
        if self.snapshot is not None:
            _check(self.snapshot, "snapshot", core.params.dtype, P)
        if self.t < 0:
            raise ValueError(f"t must be >= 0, got {self.t}")

    cdef void _fill_optim(self, fnn_optim *opt):
        opt.kind = self.kind
        opt.l2_per_row = self.l2_per_row
        opt.momentum = self.momentum
        opt.beta1 = self.beta1
        opt.beta2 = self.beta2
        opt.eps = self.eps
        opt.l2 = self.l2
        opt.t = self.t
        opt.vel = _data_or_null(self.vel)
        opt.sq = _data_or_null(self.sq)

    def __repr__(self):
        return (f"FitConfig({self.optimizer!r}, batch={self.batch}, "
                f"t={self.t}, l2={self.l2})")


cdef class FitResult:
    """What one NetCore.fit call did.

    status: FNN_OK, FNN_ERR_NONFINITE or FNN_STOPPED (see STATUS; also the
    properties ok, diverged, stopped).  epochs_done, steps_done: epochs
    and steps finished.  bad_epoch, bad_step: the step (epoch of this call,
    step in it) whose loss was not finite, else -1.  snapshot_epoch: the
    epoch of this call whose starting parameters the last snapshot holds,
    -1 if none was taken.  epoch_loss: float64 (epochs of the call,) losses,
    NaN for the unfinished ones.  t: Adam's step count after the call.
    exc: the exception the progress callback or a signal raised (the fit
    then stopped), else None."""
    cdef readonly int status
    cdef readonly int64_t epochs_done, steps_done, bad_epoch, bad_step
    cdef readonly int64_t snapshot_epoch, t
    cdef readonly object epoch_loss, exc

    @property
    def ok(self):
        return self.status == FNN_OK

    @property
    def diverged(self):
        """The fit stopped at a step whose loss was not finite."""
        return self.status == FNN_ERR_NONFINITE

    @property
    def stopped(self):
        """The progress callback (or a signal) stopped the fit."""
        return self.status == FNN_STOPPED

    def __repr__(self):
        name = {FNN_OK: "ok", FNN_ERR_NONFINITE: "nonfinite",
                FNN_STOPPED: "stopped"}.get(self.status, self.status)
        return (f"FitResult({name}, epochs_done={self.epochs_done}, "
                f"steps_done={self.steps_done})")


cdef FitResult _fit_result(int status, const fnn_fit_out *out, int64_t t,
                           object epoch_loss, object exc):
    cdef FitResult r = FitResult.__new__(FitResult)
    r.status = status
    r.epochs_done = out.epochs_done
    r.steps_done = out.steps_done
    r.bad_epoch = out.bad_epoch
    r.bad_step = out.bad_step
    r.snapshot_epoch = out.snapshot_epoch
    r.t = t
    r.epoch_loss = epoch_loss
    r.exc = exc
    return r


# ---- helpers -----------------------------------------------------------------

cdef void *_data_or_null(object a):
    """The data pointer of an ndarray, NULL for None."""
    if a is None:
        return NULL
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef _check(object a, str name, object dtype, tuple shape):
    """a is a C-contiguous ndarray of dtype and shape (None: any size).
    NetCore trusts nothing it is handed: a wrong buffer would be read out of
    bounds by the C code."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if a.ndim != len(shape) or any(want is not None and got != want
                                   for got, want in zip(a.shape, shape)):
        raise ValueError(f"{name} has shape {a.shape}, expected {shape}")


cdef int _targets_ok(int loss, int64_t n, const floating *y) noexcept nogil:
    """bce targets lie in [0, 1], softmax_ce targets are >= 0."""
    cdef int64_t i
    if loss == FNN_BCE:
        for i in range(n):
            if not (y[i] >= 0 and y[i] <= 1):
                return 0
    elif loss == FNN_SOFTMAX_CE:
        for i in range(n):
            if not (y[i] >= 0):
                return 0
    return 1


cdef int _targets_valid(int loss, int64_t m, int64_t nout,
                        const floating *y) noexcept nogil:
    """Y finite and valid targets for the loss (X is checked inside the
    step, through its first product)."""
    if floating is float:
        if not fnn_all_finite_f32(m, nout, y, nout):
            return 0
    else:
        if not fnn_all_finite_f64(m, nout, y, nout):
            return 0
    return _targets_ok(loss, m * nout, y)


cdef double _net_loss_grad(const fnn_net *net, int64_t m, const floating *x,
                           int64_t ldx, const floating *y, int64_t ldy,
                           const floating *sw, double scale, double lr,
                           double wd, floating *params, floating *grads,
                           floating *ws, int32_t *iws,
                           int check_x) noexcept nogil:
    if floating is float:
        return fnn_net_loss_grad_f32(net, m, x, ldx, y, ldy, sw, scale,
                                     <float>lr, <float>wd, params, grads,
                                     NULL, ws, iws, check_x, NULL)
    else:
        return fnn_net_loss_grad_f64(net, m, x, ldx, y, ldy, sw, scale, lr,
                                     wd, params, grads, NULL, ws, iws,
                                     check_x, NULL)


cdef floating *_net_forward(const fnn_net *net, int64_t m, const floating *x,
                            int64_t ldx, floating *params, int predict,
                            floating *ws, int32_t *iws) noexcept nogil:
    if floating is float:
        return fnn_net_forward_f32(net, m, x, ldx, params, predict, ws, iws)
    else:
        return fnn_net_forward_f64(net, m, x, ldx, params, predict, ws, iws)


cdef double _loss_of(int64_t m, int64_t n, int loss, double param, double scale,
                     const floating *z, const floating *y,
                     const floating *sw) noexcept nogil:
    if floating is float:
        return fnn_loss_grad_f32(m, n, loss, param, scale, z, n, y, n, sw, NULL,
                                 n, NULL)
    else:
        return fnn_loss_grad_f64(m, n, loss, param, scale, z, n, y, n, sw, NULL,
                                 n, NULL)


cdef void _forward_gemm(const fnn_blas *blas, int trans, int64_t m, int64_t n,
                        int64_t k, const floating *x, const floating *W,
                        floating *z) noexcept nogil:
    """Z = X W for the orientation tuner, as net_impl.h computes it: plainly
    (Z (m, n)) or transposed (Z^T = W^T X^T, (n, m))."""
    if floating is float:
        if trans:
            fnn_gemm_f32(blas, 1, 1, n, m, k, 1, W, n, x, k, 0, z, m)
        else:
            fnn_gemm_f32(blas, 0, 0, m, n, k, 1, x, k, W, n, 0, z, n)
    else:
        if trans:
            fnn_gemm_f64(blas, 1, 1, n, m, k, 1, W, n, x, k, 0, z, m)
        else:
            fnn_gemm_f64(blas, 0, 0, m, n, k, 1, x, k, W, n, 0, z, n)


cdef class _Poll:
    """State shared with the poll callback that the C loop calls (holding
    the GIL only inside the callback): the progress callback, the exception
    it or a signal raised, and the fit's progress record (a->out)."""
    cdef object progress
    cdef object exc
    cdef const fnn_fit_out *out

    def __cinit__(self, progress):
        self.progress = progress
        self.exc = None
        self.out = NULL


cdef int _poll(void *ctx, int64_t epoch, int64_t step) noexcept nogil:
    with gil:
        st = <_Poll>ctx
        try:
            PyErr_CheckSignals()
            if st.progress is not None and st.progress(
                    epoch, step, st.out.epoch_loss if st.out != NULL else NAN):
                return 1
        except BaseException as e:      # KeyboardInterrupt included
            st.exc = e
            return 1
        return 0


# ---- the network -------------------------------------------------------------

cdef class NetCore:
    """A compiled network over caller-owned flat buffers.

    specs: one tuple per layer (n_in, n_out, act_code, pieces, alpha, w_off,
    b_off[, dropout]) (dropout: the rate of the layer's output in fits
    with a FitConfig.dropout_seed; default 0); params, grads: 1-D
    C-contiguous float32/float64 arrays of equal
    size; n_weights: params[:n_weights] are the weights (L2 applies there);
    loss_param: the loss's parameter (fnn_net.loss_param: huber's delta,
    quantile's quantile).
    """
    cdef fnn_net net
    cdef fnn_layer *layers
    cdef readonly object params
    cdef readonly object grads
    cdef readonly bint is_f32
    cdef readonly int64_t n_in, n_out
    cdef int typenum
    cdef object _ws
    cdef object _iws
    cdef int64_t _ws_m
    cdef int64_t _tuned_m
    cdef int64_t _tuned_chunk
    cdef readonly bint busy
    cdef object _holder
    cdef object _split_bufs
    cdef readonly double split_hold, split_backoff

    def __cinit__(self, list specs, int loss, cnp.ndarray params,
                  cnp.ndarray grads, int64_t n_weights, double loss_param=0.0):
        self.layers = NULL
        self.net.lanes_ws = NULL
        if params.ndim != 1 or grads.ndim != 1 or params.shape[0] != grads.shape[0]:
            raise ValueError("params and grads must be 1-D of equal size")
        if params.dtype != grads.dtype or params.dtype not in (np.float32, np.float64):
            raise ValueError("params and grads must share a float32/float64 dtype")
        if not (params.flags.c_contiguous and grads.flags.c_contiguous
                and params.flags.writeable and grads.flags.writeable):
            raise ValueError("params and grads must be writeable and contiguous")
        n = len(specs)
        if n < 1:
            raise ValueError("a network needs at least one layer")
        self.layers = <fnn_layer *>malloc(n * sizeof(fnn_layer))
        if self.layers == NULL:
            raise MemoryError()
        for i, s in enumerate(specs):
            self.layers[i].n_in = s[0]
            self.layers[i].n_out = s[1]
            self.layers[i].act = s[2]
            self.layers[i].pieces = s[3]
            self.layers[i].alpha = s[4]
            self.layers[i].w_off = s[5]
            self.layers[i].b_off = s[6]
            self.layers[i].dropout = s[7] if len(s) > 7 else 0.0
            self.layers[i].fwd_t = 0
        self.net.blas = blas_handle()
        self.net.n_layers = n
        self.net.loss = loss
        self.net.loss_param = loss_param
        self.net.n_params = params.shape[0]
        self.net.n_weights = n_weights
        if fnn_net_init(&self.net, self.layers) != 0:
            raise ValueError("layer layout does not chain or lies outside params, "
                             "the loss or its parameter is invalid, or a dropout "
                             "rate is outside [0, 1) or on a maxout or output layer")
        if self.net.lanes:
            # the small-network step's scratch (on the heap: a thread's stack
            # may be smaller than FNN_LANES_BYTES)
            if posix_memalign(&self.net.lanes_ws, 64, FNN_LANES_BYTES) != 0:
                self.net.lanes_ws = NULL
                raise MemoryError()
        self.params = params
        self.grads = grads
        self.is_f32 = params.dtype == np.float32
        self.typenum = cnp.NPY_FLOAT32 if self.is_f32 else cnp.NPY_FLOAT64
        self.n_in = self.layers[0].n_in
        self.n_out = self.layers[n - 1].n_out
        self._ws_m = -1
        self._tuned_m = -1
        self._tuned_chunk = 0
        self.busy = False
        self._holder = None
        self._split_bufs = None

    def __dealloc__(self):
        free(self.layers)
        free(self.net.lanes_ws)

    @property
    def dtype(self):
        return self.params.dtype

    cdef void *_pp(self):
        return cnp.PyArray_DATA(<cnp.ndarray>self.params)

    def workspace_shape(self, int64_t m):
        """(elements of the dtype, int32 elements) of the workspace for m rows."""
        return (m * self.net.ws_cols, m * self.net.iws_cols)

    cdef _workspace(self, int64_t m, int64_t tune_m=-1, int64_t chunk=0):
        """The cached training workspace for batches of m rows (made, and
        the forward GEMMs tuned for tune_m rows (default m) sent to the BLAS
        in pieces of at most chunk multiply-adds (0: whole), when these
        change)."""
        if tune_m < 0:
            tune_m = m
        if m != self._ws_m:
            self._ws = np.empty(max(1, m * self.net.ws_cols), dtype=self.params.dtype)
            self._iws = np.empty(max(1, m * self.net.iws_cols), dtype=np.int32)
            self._ws_m = m
            self._tuned_m = -1
        if AUTOTUNE and (tune_m != self._tuned_m or chunk != self._tuned_chunk):
            self._tune_forward(tune_m, chunk)
            self._tuned_m = tune_m
            self._tuned_chunk = chunk
        return self._ws, self._iws

    def tune_forward(self, int64_t m):
        """Tune the forward GEMMs' orientation for minibatches of m rows as
        loss_grad on m rows would (once per shape for the process, see
        _tune_forward), without computing anything else; returns
        forward_orientation()."""
        if m < 1:
            raise ValueError(f"m must be >= 1, got {m}")
        self._workspace(m)
        return self.forward_orientation()

    cdef _workspace_untuned(self, int64_t m):
        """The cached workspace for m rows, without tuning the forward GEMMs
        (a CSR input's layer 0 has none; the others are narrow)."""
        if m != self._ws_m:
            self._ws = np.empty(max(1, m * self.net.ws_cols), dtype=self.params.dtype)
            self._iws = np.empty(max(1, m * self.net.iws_cols), dtype=np.int32)
            self._ws_m = m
            self._tuned_m = -1
        return self._ws, self._iws

    def split_rows(self, int64_t batch):
        """The fewest rows a minibatch of a fit with this batch size needs
        to be split between two threads (see set_split_tuning and
        set_train_threads), or 0 if none is split."""
        cdef int64_t l, per_row = 0, widest = 0, w
        if batch < 2 * _split.min_rows or train_threads() < 2:
            return 0
        for l in range(self.net.n_layers):
            w = self.layers[l].n_in * self.layers[l].n_out * self.layers[l].pieces
            per_row += w
            widest = max(widest, w)
        if 3 * per_row * batch < _split.min_macs:
            return 0
        if widest * ((batch + 1) // 2) > _split.max_half_mnk:
            return 0
        return max(2, 2 * _split.min_rows)

    cdef _split_buffers(self, int64_t h):
        """Workspace, int32 workspace and gradients of the helper thread's
        half (h rows), cached."""
        if self._split_bufs is None or self._split_bufs[0] != h:
            self._split_bufs = (
                h, np.empty(max(1, h * self.net.ws_cols), dtype=self.params.dtype),
                np.empty(max(1, h * self.net.iws_cols), dtype=np.int32),
                np.empty(self.params.shape[0], dtype=self.params.dtype))
        return self._split_bufs[1:]

    @property
    def lanes(self):
        """True when steps run the small-network kernel (the minibatch's
        rows across vector lanes, csrc/lanes_impl.h) rather than a GEMM per
        layer; fnn_net_init chooses it for narrow dense networks.  Setting
        False forces the GEMM path (tests compare the two); True is
        refused for a network the kernel does not cover."""
        return bool(self.net.lanes)

    @lanes.setter
    def lanes(self, bint on):
        # the scratch exists exactly when fnn_net_init chose the step
        if on and self.net.lanes_ws == NULL:
            raise ValueError("the small-network (lanes) step does not "
                             "cover this network")
        self.net.lanes = 1 if on else 0

    def forward_orientation(self):
        """Per layer, whether its forward GEMM runs transposed."""
        return [bool(self.layers[i].fwd_t) for i in range(self.net.n_layers)]

    cdef _tune_forward(self, int64_t m, int64_t chunk=0):
        """Pick, per dense layer, the faster of two ways to compute Z = X W
        for m rows: as is, or as Z^T = W^T X^T followed by a transpose.  The
        numbers are the same products; which one the BLAS runs faster depends
        on how it splits the shape among its threads, either way by up to
        2x.  chunk > 0 times them as the split step's halves run them, in
        pieces of at most chunk multiply-adds (fnn_blas.chunk_mnk).  Results
        are cached per shape, chunk and thread count for the process."""
        from fastnn._blas import blas_info
        info = blas_info()
        if info["source"] == "none":
            return
        cdef int64_t l
        cdef fnn_layer *L
        cdef fnn_blas pieces
        cdef const fnn_blas *blas = self.net.blas
        if chunk > 0:
            pieces = self.net.blas[0]
            pieces.chunk_mnk = chunk
            blas = &pieces
        for l in range(self.net.n_layers):
            L = &self.layers[l]
            if L.act == FNN_MAXOUT:
                continue
            key = (self.params.dtype.str, m, L.n_in, L.n_out, chunk,
                   info["source"], info["num_threads"])
            if key in _TUNED:
                L.fwd_t = _TUNED[key]
                continue
            if m * L.n_out * L.n_in <= blas.small_mnk:
                L.fwd_t = 0
                continue
            if self.is_f32:
                reps, times = _time_orientations(
                    blas, m, L.n_out, L.n_in, <float *>self._pp() + L.w_off)
            else:
                reps, times = _time_orientations(
                    blas, m, L.n_out, L.n_in, <double *>self._pp() + L.w_off)
            # the transposed form needs an 8% win
            L.fwd_t = (len(times[1]) == 7
                       and min(times[1]) < 0.92 * min(times[0]))
            _TUNED[key] = L.fwd_t
            TUNE_LOG.append((key, reps, times))

    cdef int64_t _block_rows(self, int64_t m):
        cdef int64_t b = BLOCK_ELEMS // max(1, self.net.ws_cols)
        return max(1, min(m, max(b, 64)))

    cdef _check_data(self, X, Y, sw):
        _check(X, "X", self.params.dtype, (None, self.n_in))
        self._check_targets(X.shape[0], Y, sw)

    cdef _check_targets(self, int64_t m, Y, sw):
        _check(Y, "Y", self.params.dtype, (m, self.n_out))
        if sw is not None:
            _check(sw, "sw", self.params.dtype, (m,))

    cdef _acquire(self):
        if self.busy or (self._holder is not None
                         and self._holder != threading.get_ident()):
            raise RuntimeError(
                "this network is already training in another thread (fit, "
                "train_step or loss_and_grad running); one call at a time")
        self.busy = True

    def hold(self):
        """Reserve the network for the calling thread (a whole fit: between
        its native chunks no other thread may train it)."""
        if self.busy or self._holder is not None:
            raise RuntimeError(
                "this network is already training in another thread (fit, "
                "train_step or loss_and_grad running); one call at a time")
        self._holder = threading.get_ident()

    def release(self):
        self._holder = None

    # ---- forward / loss (read params only; private workspace: thread-safe)

    def forward(self, cnp.ndarray X, bint predict=True):
        """Network output for X (m, n_in), a new (m, n_out) array."""
        _check(X, "X", self.params.dtype, (None, self.n_in))
        out = np.empty((X.shape[0], self.n_out), dtype=self.params.dtype)
        if X.shape[0] == 0:
            return out
        if self.is_f32:
            _forward_impl(self, <float *>self._pp(), X, out, predict)
        else:
            _forward_impl(self, <double *>self._pp(), X, out, predict)
        return out

    def loss(self, cnp.ndarray X, cnp.ndarray Y, object sw, double scale):
        """scale * sum_i sw_i loss_i over all rows (no gradient)."""
        self._check_data(X, Y, sw)
        if X.shape[0] == 0:
            return 0.0
        if self.is_f32:
            return _loss_impl(self, <float *>self._pp(), X, Y, sw, scale)
        return _loss_impl(self, <double *>self._pp(), X, Y, sw, scale)

    def forward_csr(self, X, bint predict=True):
        """forward for a CSR X (fastnn._validation.CSRInput, data of the
        dtype, n_in columns): a new (m, n_out) array."""
        cdef _CsrIn xin = _CsrIn(X, self)
        out = np.empty((xin.c.n_rows, self.n_out), dtype=self.params.dtype)
        if xin.c.n_rows == 0:
            return out
        if self.is_f32:
            _forward_csr_impl(self, <float *>self._pp(), xin, out, predict)
        else:
            _forward_csr_impl(self, <double *>self._pp(), xin, out, predict)
        return out

    def loss_csr(self, X, cnp.ndarray Y, object sw, double scale):
        """loss for a CSR X (see forward_csr)."""
        cdef _CsrIn xin = _CsrIn(X, self)
        self._check_targets(xin.c.n_rows, Y, sw)
        if xin.c.n_rows == 0:
            return 0.0
        if self.is_f32:
            return _loss_csr_impl(self, <float *>self._pp(), xin, Y, sw, scale)
        return _loss_csr_impl(self, <double *>self._pp(), xin, Y, sw, scale)

    # ---- gradient and training (write params/grads: one caller at a time)

    def loss_grad_csr(self, X, cnp.ndarray Y, object sw, double scale,
                      double lr=0.0):
        """loss_grad for a CSR X (see forward_csr), all rows at once.  lr ==
        0: fill grads (layer 0's weight gradient X^T dZ from X regrouped by
        column); lr != 0: one plain SGD step without decay, layer 0's W
        updated by fnn_csr_update (grads then hold every gradient but layer
        0's weights').  Returns the loss; if it is not finite nothing was
        changed."""
        cdef _CsrIn xin = _CsrIn(X, self)
        cdef int64_t m = xin.c.n_rows
        self._check_targets(m, Y, sw)
        if m == 0:
            raise ValueError("X has no rows")
        self._acquire()
        try:
            ws, iws = self._workspace_untuned(m)
            xin.batch_buffers(m)
            if self.is_f32:
                return _step_csr_impl(self, <float *>self._pp(), xin, Y, sw,
                                      scale, lr, ws, iws)
            return _step_csr_impl(self, <double *>self._pp(), xin, Y, sw,
                                  scale, lr, ws, iws)
        finally:
            self.busy = False


    def loss_grad(self, cnp.ndarray X, cnp.ndarray Y, object sw, double scale,
                  double lr=0.0, double wd=0.0):
        """Forward + loss + backward over all rows of X at once.  lr == 0:
        fill grads; lr != 0: fused SGD step.  Returns the loss; if it is not
        finite nothing was changed."""
        self._check_data(X, Y, sw)
        cdef int64_t m = X.shape[0]
        cdef void *xp = cnp.PyArray_DATA(X)
        cdef void *yp = cnp.PyArray_DATA(Y)
        cdef void *swp = _data_or_null(sw)
        self._acquire()
        try:
            ws, iws = self._workspace(m)
            if self.is_f32:
                return _step_impl(self, <float *>self._pp(), m, <float *>xp,
                                  <float *>yp, <float *>swp, scale, lr, wd,
                                  ws, iws, 0)
            return _step_impl(self, <double *>self._pp(), m, <double *>xp,
                              <double *>yp, <double *>swp, scale, lr, wd, ws,
                              iws, 0)
        finally:
            self.busy = False

    def train_step(self, X, Y, object lr_obj):
        """Fast path of Network.train_step: one fused SGD step if X and Y are
        arrays of the network's dtype, C-contiguous, of the right shapes, and
        finite, lr is finite and the loss comes out finite; else None with
        nothing changed (Network.train_step then checks the inputs the slow
        way and says what is wrong)."""
        cdef cnp.ndarray xa, ya
        cdef int64_t m
        cdef double lr, loss
        if not (cnp.PyArray_CheckExact(X) and cnp.PyArray_CheckExact(Y)
                and type(lr_obj) is float):
            return None
        lr = lr_obj
        xa = <cnp.ndarray>X
        ya = <cnp.ndarray>Y
        if (cnp.PyArray_TYPE(xa) != self.typenum or cnp.PyArray_TYPE(ya) != self.typenum
                or not cnp.PyArray_IS_C_CONTIGUOUS(xa)
                or not cnp.PyArray_IS_C_CONTIGUOUS(ya)
                or cnp.PyArray_NDIM(xa) != 2 or xa.shape[1] != self.n_in
                or not isfinite(lr)):
            return None
        m = xa.shape[0]
        if m == 0:
            return None
        if cnp.PyArray_NDIM(ya) == 2:
            if ya.shape[0] != m or ya.shape[1] != self.n_out:
                return None
        elif not (cnp.PyArray_NDIM(ya) == 1 and self.n_out == 1 and ya.shape[0] == m):
            return None
        self._acquire()
        try:
            if self.is_f32:
                loss = _train_step_impl(self, <float *>self._pp(), m,
                                        <float *>cnp.PyArray_DATA(xa),
                                        <float *>cnp.PyArray_DATA(ya), lr)
            else:
                loss = _train_step_impl(self, <double *>self._pp(), m,
                                        <double *>cnp.PyArray_DATA(xa),
                                        <double *>cnp.PyArray_DATA(ya), lr)
            # invalid targets, NaN/inf in X, or a non-finite loss: nothing
            # was changed; the slow path names the problem
            return loss if loss - loss == 0 else None
        finally:
            self.busy = False

    def fit(self, object X, cnp.ndarray Y, FitConfig cfg not None,
            cnp.ndarray lrs, *, object sw=None, object order=None,
            int64_t epoch0=0, object epoch_loss=None, object progress=None):
        """Run len(lrs) epochs natively (csrc/train.c) without the GIL, as
        cfg says (see FitConfig); returns a FitResult.

        X (n, n_in), Y (n, n_out), sw (n) or None: validated arrays of the
        dtype; X may instead be a CSR matrix (fastnn._validation.CSRInput,
        data of the dtype), read in place (see fnn_fit_args.xs).  lrs: float64 learning rate per epoch.  order: int64
        (n_epochs, n) row order of each epoch, or None (rows in order).
        epoch0: the global number of this call's first epoch (for cfg's
        snapshot schedule).  epoch_loss: float64 (n_epochs,) to receive the
        epochs' losses as they finish (allocated if None; also the result's
        epoch_loss).  progress(epoch, step, loss) -> stop? is called with
        the GIL about every cfg.poll_ms, after step `step` (0-based) of
        epoch `epoch` (0-based, of this call), loss being that epoch's loss
        over its steps so far; it may read epoch_loss.  cfg.t is advanced
        in place (and reported in the result)."""
        cdef _CsrIn xin = None
        if not isinstance(X, np.ndarray):
            xin = _CsrIn(X, self)
        self._check_fit(cfg, X, Y, sw, order, lrs, xin)
        cdef int64_t n = X.shape[0], n_epochs = lrs.shape[0]
        cdef int64_t batch = max(1, min(cfg.batch, n))
        if epoch_loss is None:
            epoch_loss = np.full(n_epochs, np.nan)
        elif (not isinstance(epoch_loss, np.ndarray)
              or epoch_loss.dtype != np.float64
              or epoch_loss.shape != (n_epochs,)
              or not epoch_loss.flags.c_contiguous):
            raise ValueError("epoch_loss must be a contiguous float64 (n_epochs,) array")
        cdef fnn_fit_args a
        cdef fnn_optim opt
        cdef int status
        cfg._fill_optim(&opt)
        gather = self._fill_rows(&a, X, Y, sw, order, batch, xin)
        a.n_epochs = n_epochs
        a.epoch0 = epoch0
        a.dropout = cfg.dropout_seed is not None
        a.drop_seed = cfg.dropout_seed if cfg.dropout_seed is not None else 0
        a.lr = <const double *>cnp.PyArray_DATA(lrs)
        a.lr_const = 0
        a.epoch_loss = <double *>cnp.PyArray_DATA(<cnp.ndarray>epoch_loss)
        a.loss_l2 = cfg.loss_l2
        a.mean_by_rows = cfg.mean_by_rows
        a.loss_scale = cfg.loss_scale
        a.snapshot = _data_or_null(cfg.snapshot)
        a.snapshot_every = cfg.snapshot_every
        a.out.epochs_done = a.out.steps_done = 0
        a.out.bad_epoch = a.out.bad_step = a.out.snapshot_epoch = -1
        a.out.epoch_steps = 0
        a.out.epoch_loss = NAN
        poll = _Poll(progress)
        poll.out = &a.out
        a.poll = _poll
        a.poll_ctx = <void *>poll
        a.poll_ms = cfg.poll_ms
        self._acquire()
        try:
            ws, iws, split_bufs = self._fill_split(&a, batch)
            if self.is_f32:
                status = _fit_impl(self, <float *>self._pp(), &opt, &a, ws, iws)
            else:
                status = _fit_impl(self, <double *>self._pp(), &opt, &a, ws, iws)
        finally:
            self.busy = False
        if _split.backoff:
            self.split_hold = a.split.hold
            self.split_backoff = a.split.backoff
        cfg.t = opt.t
        return _fit_result(status, &a.out, opt.t, epoch_loss, poll.exc)

    cdef _check_fit(self, FitConfig cfg, X, Y, sw, order, lrs, _CsrIn xin):
        if xin is None:
            self._check_data(X, Y, sw)
        else:
            self._check_targets(X.shape[0], Y, sw)
        _check(lrs, "lrs", np.float64, (None,))
        cdef int64_t n = X.shape[0]
        if n == 0:
            raise ValueError("fit needs at least one row")
        cfg._check_against(self)
        if order is not None:
            _check(order, "order", np.int64, (lrs.shape[0], n))
            if order.size and (order.min() < 0 or order.max() >= n):
                raise ValueError(f"order holds row indices outside [0, {n})")

    cdef _fill_rows(self, fnn_fit_args *a, X, Y, sw, order, int64_t batch,
                    _CsrIn xin):
        """The rows of a fit into a (n, batch, x or xs, y, sw, order and,
        with an order, the gather buffers; for a CSR X the regrouping
        buffers of a minibatch); returns the buffers (kept alive by the
        caller until the fit returns)."""
        a.n = X.shape[0]
        a.batch = batch
        a.xs = NULL
        a.xsb = NULL
        if xin is None:
            a.x = cnp.PyArray_DATA(<cnp.ndarray>X)
        else:
            a.x = NULL
            a.xs = &xin.c
            a.xsb = xin.batch_buffers(batch)
        a.ldx = self.n_in
        a.y = cnp.PyArray_DATA(<cnp.ndarray>Y)
        a.ldy = self.n_out
        a.sw = _data_or_null(sw)
        a.order = <const int64_t *>_data_or_null(order)
        if order is None:
            a.xb = a.yb = a.swb = NULL
            return None
        xb = np.empty((batch if xin is None else 0, self.n_in),
                      dtype=self.params.dtype)
        yb = np.empty((batch, self.n_out), dtype=self.params.dtype)
        swb = np.empty(batch, dtype=self.params.dtype)
        a.xb = cnp.PyArray_DATA(<cnp.ndarray>xb) if xin is None else NULL
        a.yb = cnp.PyArray_DATA(<cnp.ndarray>yb)
        a.swb = cnp.PyArray_DATA(<cnp.ndarray>swb)
        return xb, yb, swb

    cdef _fill_split(self, fnn_fit_args *a, int64_t batch):
        """The split step's settings, buffers and back-off state into a, and
        the workspace; returns (ws, iws, the helper's buffers or None), to
        be kept alive until the fit returns."""
        cdef int64_t half = (batch + 1) // 2
        a.split.min_rows = self.split_rows(batch) if a.xs == NULL else 0
        a.split.chunk_mnk = _split.chunk_mnk
        a.split.ws2 = a.split.grads2 = NULL
        a.split.iws2 = NULL
        a.split.hold = self.split_hold if _split.backoff else 0
        a.split.backoff = self.split_backoff if _split.backoff else -1
        if a.xs != NULL:            # no GEMM at layer 0 to tune
            ws, iws = self._workspace_untuned(batch)
            return ws, iws, None
        if not a.split.min_rows:
            ws, iws = self._workspace(batch)
            return ws, iws, None
        ws, iws = self._workspace(batch, half, a.split.chunk_mnk)
        bufs = self._split_buffers(half)
        a.split.ws2 = cnp.PyArray_DATA(<cnp.ndarray>bufs[0])
        a.split.iws2 = <int32_t *>cnp.PyArray_DATA(<cnp.ndarray>bufs[1])
        a.split.grads2 = cnp.PyArray_DATA(<cnp.ndarray>bufs[2])
        return ws, iws, bufs


cdef class _CsrIn:
    """A CSR input of a NetCore call: its arrays checked in full
    (fastnn._sparse.checked_parts: no kernel can read out of bounds; data
    of the network's dtype, n_in columns) and kept alive, their fnn_csr,
    and on demand the buffers of a minibatch regrouped by column."""
    cdef fnn_csr c
    cdef fnn_csr_batch b
    cdef object parts, bufs

    def __cinit__(self, X, NetCore core):
        from fastnn._sparse import checked_parts
        self.parts = checked_parts(X, core.params.dtype)
        indptr, indices, data, n_rows, n_cols = self.parts
        if n_cols != core.n_in:
            raise ValueError(f"X has {n_cols} features, but the network expects "
                             f"{core.n_in}")
        self.c.n_rows = n_rows
        self.c.n_cols = n_cols
        self.c.idx64 = indptr.dtype == np.int64
        self.c.indptr = cnp.PyArray_DATA(<cnp.ndarray>indptr)
        self.c.indices = cnp.PyArray_DATA(<cnp.ndarray>indices)
        self.c.data = cnp.PyArray_DATA(<cnp.ndarray>data)
        self.bufs = None

    cdef fnn_csr_batch *batch_buffers(self, int64_t batch):
        """b with room for any minibatch of `batch` rows: as many entries as
        the `batch` longest rows hold."""
        lengths = np.diff(self.parts[0])
        batch = min(batch, lengths.shape[0])
        cap = int(np.partition(lengths, lengths.shape[0] - batch)[-batch:].sum()) \
            if batch > 0 else 0
        colptr = np.empty(self.c.n_cols + 1, dtype=np.int64)
        pos = np.empty(max(cap, 1), dtype=np.int32)
        val = np.empty(max(cap, 1), dtype=self.parts[2].dtype)
        self.bufs = (colptr, pos, val)
        self.b.cap = cap
        self.b.m = self.b.nnz = 0
        self.b.n_cols = self.c.n_cols
        self.b.colptr = <int64_t *>cnp.PyArray_DATA(<cnp.ndarray>colptr)
        self.b.pos = <int32_t *>cnp.PyArray_DATA(<cnp.ndarray>pos)
        self.b.val = cnp.PyArray_DATA(<cnp.ndarray>val)
        return &self.b


# ---- NetCore's bodies, one per method, over both dtypes ----------------------
# `params` (the network's own parameters, typed) picks the dtype.

cdef _forward_impl(NetCore core, floating *params, object X, object out,
                   bint predict):
    """NetCore.forward: X (m >= 1 rows) in blocks of _block_rows."""
    cdef int64_t m = X.shape[0], i0 = 0, mb, blk = core._block_rows(m)
    cdef int64_t nin = core.n_in, nout = core.n_out
    ws = np.empty(max(1, blk * core.net.ws_cols), dtype=core.params.dtype)
    iws = np.empty(max(1, blk * core.net.iws_cols), dtype=np.int32)
    cdef const floating *x = <const floating *>cnp.PyArray_DATA(<cnp.ndarray>X)
    cdef floating *o = <floating *>cnp.PyArray_DATA(<cnp.ndarray>out)
    cdef floating *wsp = <floating *>cnp.PyArray_DATA(<cnp.ndarray>ws)
    cdef int32_t *iwsp = <int32_t *>cnp.PyArray_DATA(<cnp.ndarray>iws)
    cdef floating *res
    with nogil:
        while i0 < m:
            mb = min(blk, m - i0)
            res = _net_forward(&core.net, mb, x + i0 * nin, nin, params,
                               predict, wsp, iwsp)
            memcpy(o + i0 * nout, res, mb * nout * sizeof(floating))
            i0 += mb


cdef double _loss_impl(NetCore core, floating *params, object X, object Y,
                       object sw, double scale) except? -1:
    """NetCore.loss: X (m >= 1 rows) in blocks of _block_rows."""
    cdef int64_t m = X.shape[0], i0 = 0, mb, blk = core._block_rows(m)
    cdef int64_t nin = core.n_in, nout = core.n_out
    cdef int loss = core.net.loss
    ws = np.empty(max(1, blk * core.net.ws_cols), dtype=core.params.dtype)
    iws = np.empty(max(1, blk * core.net.iws_cols), dtype=np.int32)
    cdef const floating *x = <const floating *>cnp.PyArray_DATA(<cnp.ndarray>X)
    cdef const floating *y = <const floating *>cnp.PyArray_DATA(<cnp.ndarray>Y)
    cdef const floating *swp = <const floating *>_data_or_null(sw)
    cdef floating *wsp = <floating *>cnp.PyArray_DATA(<cnp.ndarray>ws)
    cdef int32_t *iwsp = <int32_t *>cnp.PyArray_DATA(<cnp.ndarray>iws)
    cdef floating *res
    cdef double total = 0.0
    with nogil:
        while i0 < m:
            mb = min(blk, m - i0)
            res = _net_forward(&core.net, mb, x + i0 * nin, nin, params, 0,
                               wsp, iwsp)
            total += _loss_of(mb, nout, loss, core.net.loss_param, scale, res,
                              y + i0 * nout, swp + i0 if swp != NULL else NULL)
            i0 += mb
    return total


cdef double _step_impl(NetCore core, floating *params, int64_t m,
                       const floating *x, const floating *y,
                       const floating *sw, double scale, double lr, double wd,
                       object ws, object iws, int check_x):
    """One loss_grad step over m rows (NetCore.loss_grad, train_step)."""
    cdef floating *grads = <floating *>cnp.PyArray_DATA(<cnp.ndarray>core.grads)
    cdef floating *wsp = <floating *>cnp.PyArray_DATA(<cnp.ndarray>ws)
    cdef int32_t *iwsp = <int32_t *>cnp.PyArray_DATA(<cnp.ndarray>iws)
    cdef int64_t nin = core.n_in, nout = core.n_out
    cdef double loss
    if m * core.net.ws_cols + core.net.n_params > NOGIL_MIN_ELEMS:
        with nogil:
            loss = _net_loss_grad(&core.net, m, x, nin, y, nout, sw, scale,
                                  lr, wd, params, grads, wsp, iwsp, check_x)
    else:
        loss = _net_loss_grad(&core.net, m, x, nin, y, nout, sw, scale, lr,
                              wd, params, grads, wsp, iwsp, check_x)
    return loss


cdef double _train_step_impl(NetCore core, floating *params, int64_t m,
                             const floating *x, const floating *y, double lr):
    """NetCore.train_step once its arguments are known good: NaN (nothing
    changed) if the targets are not valid for the loss."""
    if not _targets_valid(core.net.loss, m, core.n_out, y):
        return float("nan")
    cdef double scale = 1.0 if core.net.loss == FNN_SSE else 1.0 / m
    ws, iws = core._workspace(m)
    return _step_impl(core, params, m, x, y, <const floating *>NULL, scale,
                      lr, 0.0, ws, iws, 1)


cdef _forward_csr_impl(NetCore core, floating *params, _CsrIn xin,
                       object out, bint predict):
    """NetCore.forward_csr: the rows in blocks of _block_rows."""
    cdef int64_t m = xin.c.n_rows, i0 = 0, mb, blk = core._block_rows(m)
    cdef int64_t nout = core.n_out
    ws = np.empty(max(1, blk * core.net.ws_cols), dtype=core.params.dtype)
    iws = np.empty(max(1, blk * core.net.iws_cols), dtype=np.int32)
    cdef floating *o = <floating *>cnp.PyArray_DATA(<cnp.ndarray>out)
    cdef floating *wsp = <floating *>cnp.PyArray_DATA(<cnp.ndarray>ws)
    cdef int32_t *iwsp = <int32_t *>cnp.PyArray_DATA(<cnp.ndarray>iws)
    cdef floating *res
    cdef fnn_csr_rows xs
    xs.x = &xin.c
    xs.rows = NULL
    with nogil:
        while i0 < m:
            mb = min(blk, m - i0)
            xs.row0 = i0
            if floating is float:
                res = fnn_net_forward_csr_f32(&core.net, mb, &xs, params,
                                              predict, wsp, iwsp)
            else:
                res = fnn_net_forward_csr_f64(&core.net, mb, &xs, params,
                                              predict, wsp, iwsp)
            memcpy(o + i0 * nout, res, mb * nout * sizeof(floating))
            i0 += mb


cdef double _loss_csr_impl(NetCore core, floating *params, _CsrIn xin,
                           object Y, object sw, double scale) except? -1:
    """NetCore.loss_csr: the rows in blocks of _block_rows."""
    cdef int64_t m = xin.c.n_rows, i0 = 0, mb, blk = core._block_rows(m)
    cdef int64_t nout = core.n_out
    cdef int loss = core.net.loss
    ws = np.empty(max(1, blk * core.net.ws_cols), dtype=core.params.dtype)
    iws = np.empty(max(1, blk * core.net.iws_cols), dtype=np.int32)
    cdef const floating *y = <const floating *>cnp.PyArray_DATA(<cnp.ndarray>Y)
    cdef const floating *swp = <const floating *>_data_or_null(sw)
    cdef floating *wsp = <floating *>cnp.PyArray_DATA(<cnp.ndarray>ws)
    cdef int32_t *iwsp = <int32_t *>cnp.PyArray_DATA(<cnp.ndarray>iws)
    cdef floating *res
    cdef double total = 0.0
    cdef fnn_csr_rows xs
    xs.x = &xin.c
    xs.rows = NULL
    with nogil:
        while i0 < m:
            mb = min(blk, m - i0)
            xs.row0 = i0
            if floating is float:
                res = fnn_net_forward_csr_f32(&core.net, mb, &xs, params, 0,
                                              wsp, iwsp)
            else:
                res = fnn_net_forward_csr_f64(&core.net, mb, &xs, params, 0,
                                              wsp, iwsp)
            total += _loss_of(mb, nout, loss, core.net.loss_param, scale, res,
                              y + i0 * nout, swp + i0 if swp != NULL else NULL)
            i0 += mb
    return total


cdef double _step_csr_impl(NetCore core, floating *params, _CsrIn xin,
                           object Y, object sw, double scale, double lr,
                           object ws, object iws):
    """NetCore.loss_grad_csr over all rows of X (xin.b sized for them)."""
    cdef floating *grads = <floating *>cnp.PyArray_DATA(<cnp.ndarray>core.grads)
    cdef floating *wsp = <floating *>cnp.PyArray_DATA(<cnp.ndarray>ws)
    cdef int32_t *iwsp = <int32_t *>cnp.PyArray_DATA(<cnp.ndarray>iws)
    cdef const floating *y = <const floating *>cnp.PyArray_DATA(<cnp.ndarray>Y)
    cdef const floating *swp = <const floating *>_data_or_null(sw)
    cdef int64_t m = xin.c.n_rows, nout = core.n_out
    cdef const fnn_layer *L0 = &core.layers[0]
    cdef int64_t cols = L0.n_out * L0.pieces, w0 = L0.w_off
    cdef int64_t w1 = w0 + L0.n_in * cols, P = core.net.n_params
    cdef fnn_csr_rows xs
    cdef fnn_optim opt
    cdef floating *dz0 = NULL
    cdef double loss
    xs.x = &xin.c
    xs.row0 = 0
    xs.rows = NULL
    opt.kind = FNN_OPT_SGD
    with nogil:
        if floating is float:
            loss = fnn_net_loss_dz0_csr_f32(&core.net, m, &xs, y, nout, swp,
                                            scale, params, grads, wsp, iwsp,
                                            &dz0, NULL)
        else:
            loss = fnn_net_loss_dz0_csr_f64(&core.net, m, &xs, y, nout, swp,
                                            scale, params, grads, wsp, iwsp,
                                            &dz0, NULL)
        if loss - loss == 0:
            if floating is float:
                fnn_csr_batch_f32(&xin.c, m, 0, NULL, &xin.b)
            else:
                fnn_csr_batch_f64(&xin.c, m, 0, NULL, &xin.b)
            if lr == 0:
                if floating is float:
                    fnn_csr_grad_f32(&xin.b, 0, L0.n_in, cols, dz0, cols,
                                     grads + w0, cols)
                else:
                    fnn_csr_grad_f64(&xin.b, 0, L0.n_in, cols, dz0, cols,
                                     grads + w0, cols)
            else:
                if floating is float:
                    fnn_csr_update_f32(&xin.b, 0, L0.n_in, cols, dz0, cols,
                                       &opt, <float>lr, 0, params + w0, NULL,
                                       NULL, NULL)
                    fnn_sgd_step_f32(w0, <float>lr, 0, grads, params)
                    fnn_sgd_step_f32(P - w1, <float>lr, 0, grads + w1,
                                     params + w1)
                else:
                    fnn_csr_update_f64(&xin.b, 0, L0.n_in, cols, dz0, cols,
                                       &opt, lr, 0, params + w0, NULL, NULL,
                                       NULL)
                    fnn_sgd_step_f64(w0, lr, 0, grads, params)
                    fnn_sgd_step_f64(P - w1, lr, 0, grads + w1, params + w1)
    return loss


cdef int _fit_impl(NetCore core, floating *params, fnn_optim *opt,
                   fnn_fit_args *a, object ws, object iws) except -1:
    """fnn_fit of the dtype, without the GIL."""
    cdef floating *grads = <floating *>cnp.PyArray_DATA(<cnp.ndarray>core.grads)
    cdef floating *wsp = <floating *>cnp.PyArray_DATA(<cnp.ndarray>ws)
    cdef int32_t *iwsp = <int32_t *>cnp.PyArray_DATA(<cnp.ndarray>iws)
    cdef int status
    with nogil:
        if floating is float:
            status = fnn_fit_f32(&core.net, opt, a, params, grads, wsp, iwsp)
        else:
            status = fnn_fit_f64(&core.net, opt, a, params, grads, wsp, iwsp)
    return status


cdef _time_orientations(const fnn_blas *blas, int64_t m, int64_t n, int64_t k,
                        const floating *W):
    """(repetitions, {0: [...], 1: [...]}): seconds per call of the plain
    (0) and the transposed (1) forward GEMM of m rows through W (k, n).
    Rounds 0 and 1 warm each orientation up and size the repetitions
    (about 2 ms per timing); then 7 alternating timings of each.  A GEMM of
    over 20 ms runs well in any orientation: no timings then."""
    if floating is float:
        dtype = np.float32
    else:
        dtype = np.float64
    xin = np.zeros(m * k, dtype=dtype)
    zout = np.empty(m * n, dtype=dtype)
    cdef const floating *x = <const floating *>cnp.PyArray_DATA(<cnp.ndarray>xin)
    cdef floating *z = <floating *>cnp.PyArray_DATA(<cnp.ndarray>zout)
    cdef int64_t r, reps = 1, i
    cdef int trans
    times = {0: [], 1: []}
    for r in range(16):
        trans = r % 2
        t0 = time.perf_counter()
        with nogil:
            for i in range(reps):
                _forward_gemm(blas, trans, m, n, k, x, W, z)
        dt = (time.perf_counter() - t0) / reps
        if r == 0 and dt > 0.02:
            break
        if r == 1:
            reps = max(2, min(256, int(2e-3 / max(dt, 1e-7))))
        if r >= 2:
            times[trans].append(dt)
    return reps, times
