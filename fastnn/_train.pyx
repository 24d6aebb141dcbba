# _train.pyx -- the compiled side of fastnn.Network: holds the C network
# description (csrc/fastnn.h fnn_net) over the flat params/grads buffers and
# its workspace, and runs forward, loss, the fused train step and the whole
# fit loop (csrc/train.c) without the GIL.
#
# Inputs arrive validated and converted by fastnn/nn.py, except on the
# train_step fast path, which accepts only arrays that need no conversion
# and returns None for anything else (the Python side then validates).
import os
import threading
import time

from cpython.exc cimport PyErr_CheckSignals
from libc.math cimport isfinite
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, malloc

cdef extern from "stdlib.h" nogil:
    int posix_memalign(void **memptr, size_t alignment, size_t size)

import numpy as np
cimport numpy as cnp

from fastnn._blas cimport blas_handle
from fastnn._kernels cimport *

cnp.import_array()

# Forward-GEMM orientation tuning (see _tune_forward).  FASTNN_AUTOTUNE=0
# turns it off: every forward GEMM then runs as X @ W.
AUTOTUNE = os.environ.get("FASTNN_AUTOTUNE", "1") not in ("0", "")
_TUNED = {}   # (dtype, m, k, n, chunk_mnk, blas source, threads) -> transposed?
TUNE_LOG = []        # (key, repetitions, {orientation: seconds per call})


# Data-parallel minibatches (csrc/pool.c, fnn_fit_args.par_rows): a fit
# step is split between the calling thread and fastnn's one helper thread
# when it is big enough to pay for the hand-off (min_macs multiply-adds per
# step, min_rows rows per half) and its half-batch GEMMs are at most
# max_half_mnk multiply-adds.  Each half's GEMMs go to the BLAS in pieces
# of at most chunk_mnk (fnn_blas.chunk_mnk): OpenBLAS runs products up to
# 10**6 multiply-adds on the calling thread, with its small-matrix kernels
# (faster per flop than its packed ones at these sizes), and two threads
# calling it with larger ones would contend for its pool.  Above
# max_half_mnk the BLAS's own threading of whole GEMMs wins.  Tests lower
# the limits to force splitting.
SPLIT = {"min_macs": 1 << 17, "min_rows": 16, "max_half_mnk": 1 << 23,
         "chunk_mnk": 1_000_000, "backoff": True}

_TRAIN_THREADS = [None]


def _test_stall_helper(int us):
    """Tests only: make the helper sleep `us` microseconds before each
    task, as if its core were busy (0 turns it off)."""
    fnn_pool_test_stall(us)


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


cdef extern from "string.h" nogil:
    void *memcpy(void *dst, const void *src, size_t n)

# Workspace elements per block when predicting / evaluating large inputs:
# bounds the memory without hurting GEMM efficiency.
cdef int64_t BLOCK_ELEMS = 1 << 21


ctypedef fused floating:
    float
    double


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


cdef int _targets_valid(bint f32, int loss, int64_t m, int64_t nout,
                        const void *yp) noexcept nogil:
    """Y finite and valid targets for the loss (X is checked inside the
    step, through its first product)."""
    if f32:
        return (fnn_all_finite_f32(m, nout, <const float *>yp, nout)
                and _targets_ok(loss, m * nout, <const float *>yp))
    return (fnn_all_finite_f64(m, nout, <const double *>yp, nout)
            and _targets_ok(loss, m * nout, <const double *>yp))


cdef double _c_step(const fnn_net *net, bint f32, int64_t m, const void *x,
                    int64_t ldx, const void *y, int64_t ldy, const void *sw,
                    double scale, double lr, double wd, void *pp, void *gp,
                    void *wsp, int32_t *iwsp, int check_x) noexcept nogil:
    if f32:
        return fnn_net_loss_grad_f32(net, m, <const float *>x, ldx,
            <const float *>y, ldy, <const float *>sw, scale, <float>lr, <float>wd,
            <float *>pp, <float *>gp, NULL, <float *>wsp, iwsp, check_x)
    return fnn_net_loss_grad_f64(net, m, <const double *>x, ldx,
        <const double *>y, ldy, <const double *>sw, scale, lr, wd,
        <double *>pp, <double *>gp, NULL, <double *>wsp, iwsp, check_x)


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


cdef void _forward_gemm(const fnn_blas *blas, bint f32, int trans, int64_t m,
                        int64_t n, int64_t k, const void *x, const void *W,
                        void *z) noexcept nogil:
    """Z = X W for the orientation tuner, as net_impl.h computes it: plainly
    (Z (m, n)) or transposed (Z^T = W^T X^T, (n, m))."""
    if f32:
        if trans:
            fnn_gemm_f32(blas, 1, 1, n, m, k, 1, <const float *>W, n,
                         <const float *>x, k, 0, <float *>z, m)
        else:
            fnn_gemm_f32(blas, 0, 0, m, n, k, 1, <const float *>x, k,
                         <const float *>W, n, 0, <float *>z, n)
    elif trans:
        fnn_gemm_f64(blas, 1, 1, n, m, k, 1, <const double *>W, n,
                     <const double *>x, k, 0, <double *>z, m)
    else:
        fnn_gemm_f64(blas, 0, 0, m, n, k, 1, <const double *>x, k,
                     <const double *>W, n, 0, <double *>z, n)


cdef class _Poll:
    """State shared with the poll callback that the C loop calls (holding
    the GIL only inside the callback)."""
    cdef object progress
    cdef object exc

    def __cinit__(self, progress):
        self.progress = progress
        self.exc = None


cdef int _poll(void *ctx, int64_t epoch, int64_t step) noexcept nogil:
    with gil:
        st = <_Poll>ctx
        try:
            PyErr_CheckSignals()
            if st.progress is not None and st.progress(epoch, step):
                return 1
        except BaseException as e:      # KeyboardInterrupt included
            st.exc = e
            return 1
        return 0


cdef class NetCore:
    """A compiled network over caller-owned flat buffers.

    specs: one tuple per layer (n_in, n_out, act_code, pieces, alpha, w_off,
    b_off); params, grads: 1-D C-contiguous float32/float64 arrays of equal
    size; n_weights: params[:n_weights] are the weights (L2 applies there).
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
                  cnp.ndarray grads, int64_t n_weights):
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
            self.layers[i].fwd_t = 0
        self.net.blas = blas_handle()
        self.net.n_layers = n
        self.net.loss = loss
        self.net.n_params = params.shape[0]
        self.net.n_weights = n_weights
        if fnn_net_init(&self.net, self.layers) != 0:
            raise ValueError("layer layout does not chain or lies outside params")
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

    def split_rows(self, int64_t batch):
        """The fewest rows a minibatch of a fit with this batch size needs
        to be split between two threads (see SPLIT and set_train_threads),
        or 0 if none is split."""
        cdef int64_t l, per_row = 0, widest = 0, w
        if batch < 2 * SPLIT["min_rows"] or train_threads() < 2:
            return 0
        for l in range(self.net.n_layers):
            w = self.layers[l].n_in * self.layers[l].n_out * self.layers[l].pieces
            per_row += w
            widest = max(widest, w)
        if 3 * per_row * batch < SPLIT["min_macs"]:
            return 0
        if widest * ((batch + 1) // 2) > SPLIT["max_half_mnk"]:
            return 0
        return max(2, 2 * SPLIT["min_rows"])

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
        on how it splits the shape among its threads (for the seed's 64 x
        1000 x 100 float64 forward on 2 OpenBLAS threads, the transposed form
        is ~25% faster; for other shapes the plain one is up to 2x faster).
        After a warm-up call of each, both are timed 7 times alternately and
        the minima compared; the transposed form needs an 8% win.  chunk > 0
        times them as the split step's halves run them, in pieces of at most
        chunk multiply-adds (fnn_blas.chunk_mnk).  Results are cached per
        shape, chunk and thread count for the process."""
        from fastnn._blas import blas_info
        info = blas_info()
        if info["source"] == "none":
            return
        cdef int64_t l, k, n, r, reps
        cdef fnn_layer *L
        cdef void *W
        cdef void *xp
        cdef void *zp
        cdef void *pp = cnp.PyArray_DATA(self.params)
        cdef cnp.ndarray xin, zout
        cdef int trans
        cdef fnn_blas pieces
        cdef const fnn_blas *blas = self.net.blas
        if chunk > 0:
            pieces = self.net.blas[0]
            pieces.chunk_mnk = chunk
            blas = &pieces
        cdef bint f32 = self.is_f32
        cdef int64_t itemsize = self.params.itemsize
        for l in range(self.net.n_layers):
            L = &self.layers[l]
            if L.act == FNN_MAXOUT:
                continue
            k = L.n_in
            n = L.n_out
            key = (self.params.dtype.str, m, k, n, chunk, info["source"],
                   info["num_threads"])
            if key in _TUNED:
                L.fwd_t = _TUNED[key]
                continue
            if m * n * k <= blas.small_mnk:
                L.fwd_t = 0
                continue
            xin = np.zeros((m, k), dtype=self.params.dtype)
            zout = np.empty(m * n, dtype=self.params.dtype)
            xp = cnp.PyArray_DATA(xin)
            zp = cnp.PyArray_DATA(zout)
            W = <char *>pp + L.w_off * itemsize
            times = {0: [], 1: []}
            reps = 1
            # rounds 0 and 1 warm each orientation up (and size reps); then
            # 7 alternating timings of each; minima compared
            for r in range(16):
                trans = r % 2
                t0 = time.perf_counter()
                with nogil:
                    for _ in range(reps):
                        _forward_gemm(blas, f32, trans, m, n, k, xp, W, zp)
                dt = (time.perf_counter() - t0) / reps
                if r == 0 and dt > 0.02:    # big GEMMs: any orientation runs well
                    break
                if r == 1:                  # both warm: about 2 ms per timing
                    reps = max(2, min(256, int(2e-3 / max(dt, 1e-7))))
                if r >= 2:
                    times[trans].append(dt)
            if len(times[1]) == 7:
                L.fwd_t = 1 if min(times[1]) < 0.92 * min(times[0]) else 0
            else:
                L.fwd_t = 0
            _TUNED[key] = L.fwd_t
            TUNE_LOG.append((key, reps, times))

    cdef int64_t _block_rows(self, int64_t m):
        cdef int64_t b = BLOCK_ELEMS // max(1, self.net.ws_cols)
        return max(1, min(m, max(b, 64)))

    cdef _check_data(self, X, Y, sw):
        _check(X, "X", self.params.dtype, (None, self.n_in))
        _check(Y, "Y", self.params.dtype, (X.shape[0], self.n_out))
        if sw is not None:
            _check(sw, "sw", self.params.dtype, (X.shape[0],))

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
        cdef int64_t m = X.shape[0], i0, mb, blk = self._block_rows(X.shape[0])
        out = np.empty((m, self.n_out), dtype=self.params.dtype)
        if m == 0:
            return out
        ws = np.empty(max(1, blk * self.net.ws_cols), dtype=self.params.dtype)
        iws = np.empty(max(1, blk * self.net.iws_cols), dtype=np.int32)
        cdef char *xp = cnp.PyArray_BYTES(X)
        cdef char *op = cnp.PyArray_BYTES(out)
        cdef char *wsp = cnp.PyArray_BYTES(ws)
        cdef char *pp = cnp.PyArray_BYTES(self.params)
        cdef int32_t *iwsp = <int32_t *>cnp.PyArray_DATA(iws)
        cdef int64_t item = X.itemsize, nin = self.n_in, nout = self.n_out
        cdef void *res
        i0 = 0
        with nogil:
            while i0 < m:
                mb = min(blk, m - i0)
                if self.is_f32:
                    res = fnn_net_forward_f32(&self.net, mb,
                        <float *>(xp + i0 * nin * item), nin, <float *>pp,
                        predict, <float *>wsp, iwsp)
                else:
                    res = fnn_net_forward_f64(&self.net, mb,
                        <double *>(xp + i0 * nin * item), nin, <double *>pp,
                        predict, <double *>wsp, iwsp)
                memcpy(op + i0 * nout * item, res, mb * nout * item)
                i0 += mb
        return out

    def loss(self, cnp.ndarray X, cnp.ndarray Y, object sw, double scale):
        """scale * sum_i sw_i loss_i over all rows (no gradient)."""
        self._check_data(X, Y, sw)
        cdef int64_t m = X.shape[0], i0, mb, blk = self._block_rows(X.shape[0])
        if m == 0:
            return 0.0
        ws = np.empty(max(1, blk * self.net.ws_cols), dtype=self.params.dtype)
        iws = np.empty(max(1, blk * self.net.iws_cols), dtype=np.int32)
        cdef char *xp = cnp.PyArray_BYTES(X)
        cdef char *yp = cnp.PyArray_BYTES(Y)
        cdef char *swp = NULL
        cdef cnp.ndarray swa
        if sw is not None:
            swa = sw
            swp = cnp.PyArray_BYTES(swa)
        cdef char *wsp = cnp.PyArray_BYTES(ws)
        cdef char *pp = cnp.PyArray_BYTES(self.params)
        cdef int32_t *iwsp = <int32_t *>cnp.PyArray_DATA(iws)
        cdef int64_t item = X.itemsize, nin = self.n_in, nout = self.n_out
        cdef int loss = self.net.loss
        cdef double total = 0.0
        cdef void *res
        i0 = 0
        with nogil:
            while i0 < m:
                mb = min(blk, m - i0)
                if self.is_f32:
                    res = fnn_net_forward_f32(&self.net, mb,
                        <float *>(xp + i0 * nin * item), nin, <float *>pp, 0,
                        <float *>wsp, iwsp)
                    total += fnn_loss_grad_f32(mb, nout, loss, scale,
                        <float *>res, nout, <float *>(yp + i0 * nout * item),
                        nout, <float *>(swp + i0 * item) if swp != NULL else NULL,
                        NULL, nout, NULL)
                else:
                    res = fnn_net_forward_f64(&self.net, mb,
                        <double *>(xp + i0 * nin * item), nin, <double *>pp, 0,
                        <double *>wsp, iwsp)
                    total += fnn_loss_grad_f64(mb, nout, loss, scale,
                        <double *>res, nout, <double *>(yp + i0 * nout * item),
                        nout, <double *>(swp + i0 * item) if swp != NULL else NULL,
                        NULL, nout, NULL)
                i0 += mb
        return total

    # ---- gradient and training (write params/grads: one caller at a time)

    def loss_grad(self, cnp.ndarray X, cnp.ndarray Y, object sw, double scale,
                  double lr=0.0, double wd=0.0):
        """Forward + loss + backward over all rows of X at once.  lr == 0:
        fill grads; lr != 0: fused SGD step.  Returns the loss; if it is not
        finite nothing was changed."""
        self._check_data(X, Y, sw)
        cdef int64_t m = X.shape[0]
        cdef cnp.ndarray swa
        cdef void *swp = NULL
        if sw is not None:
            swa = sw
            swp = cnp.PyArray_DATA(swa)
        self._acquire()
        try:
            ws, iws = self._workspace(m)
            return self._step(m, cnp.PyArray_DATA(X), cnp.PyArray_DATA(Y), swp,
                              scale, lr, wd, ws, iws)
        finally:
            self.busy = False

    cdef double _step(self, int64_t m, void *x, void *y, void *sw, double scale,
                      double lr, double wd, cnp.ndarray ws, cnp.ndarray iws,
                      int check_x=0):
        cdef void *pp = cnp.PyArray_DATA(self.params)
        cdef void *gp = cnp.PyArray_DATA(self.grads)
        cdef void *wsp = cnp.PyArray_DATA(ws)
        cdef int32_t *iwsp = <int32_t *>cnp.PyArray_DATA(iws)
        cdef int64_t nin = self.n_in, nout = self.n_out
        cdef double loss
        # Releasing and retaking the GIL costs ~0.1 us: not worth it for a
        # step that takes about that long.
        if m * self.net.ws_cols + self.net.n_params > 4096:
            with nogil:
                loss = _c_step(&self.net, self.is_f32, m, x, nin, y, nout, sw, scale,
                               lr, wd, pp, gp, wsp, iwsp, check_x)
        else:
            loss = _c_step(&self.net, self.is_f32, m, x, nin, y, nout, sw, scale,
                           lr, wd, pp, gp, wsp, iwsp, check_x)
        return loss

    def train_step(self, X, Y, object lr_obj):
        """Fast path of Network.train_step: one fused SGD step if X and Y are
        arrays of the network's dtype, C-contiguous, of the right shapes, and
        finite, lr is finite and the loss comes out finite; else None with
        nothing changed (Network.train_step then checks the inputs the slow
        way and says what is wrong)."""
        cdef cnp.ndarray xa, ya
        cdef int64_t m
        cdef double lr
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
        cdef void *xp = cnp.PyArray_DATA(xa)
        cdef void *yp = cnp.PyArray_DATA(ya)
        cdef int64_t nin = self.n_in, nout = self.n_out
        cdef int ok
        cdef double loss
        cdef double scale = 1.0 if self.net.loss == FNN_SSE else 1.0 / m
        self._acquire()
        try:
            ok = _targets_valid(self.is_f32, self.net.loss, m, nout, yp)
            if not ok:
                return None
            ws, iws = self._workspace(m)
            loss = self._step(m, xp, yp, NULL, scale, lr, 0.0, ws, iws, 1)
            # NaN/inf in X, or a non-finite loss: nothing was changed; the
            # slow path names the problem
            return loss if loss - loss == 0 else None
        finally:
            self.busy = False

    def fit(self, cnp.ndarray X, cnp.ndarray Y, object sw, object order,
            cnp.ndarray lrs, int64_t batch, int kind, double momentum=0.9,
            double beta1=0.9, double beta2=0.999, double eps=1e-8,
            double l2=0.0, bint l2_per_row=False, object vel=None,
            object sq=None, int64_t t=0, object snapshot=None,
            int64_t snapshot_every=1, int64_t epoch0=0, object progress=None,
            double poll_ms=50.0, object epoch_loss=None, bint loss_l2=False,
            bint mean_by_rows=False, double loss_scale=1.0):
        """Run len(lrs) epochs natively (csrc/train.c) without the GIL.

        X (n, n_in), Y (n, n_out), sw (n) or None: validated arrays of the
        dtype.  order: int64 (n_epochs, n) row order, or None.  lrs: float64
        learning rate per epoch.  kind: FNN_OPT_*.  vel/sq: optimizer state
        buffers (n_params).  progress(epoch, step) -> stop? is called with
        the GIL about every poll_ms; it may read epoch_loss (float64
        (n_epochs,), filled as epochs finish; allocated if None).  loss_l2:
        add 1/2 wd |W|^2 to each step's loss; mean_by_rows: weight the epoch
        mean by rows even with sample weights (scikit-learn's reporting);
        loss_scale: multiplies each step's loss before the L2 term in
        epoch_loss (not the gradient).  Returns a dict (status, epochs_done,
        steps_done, bad_epoch, bad_step, snapshot_epoch, epoch_loss, t, exc).
        """
        cdef fnn_fit_args a
        cdef fnn_optim opt
        cdef int64_t n = X.shape[0], n_epochs = lrs.shape[0]
        cdef int status
        cdef cnp.ndarray tmp
        cdef void *wsp
        cdef int32_t *iwsp
        self._check_data(X, Y, sw)
        _check(lrs, "lrs", np.float64, (None,))
        if n == 0:
            raise ValueError("fit needs at least one row")
        if kind not in (FNN_OPT_SGD, FNN_OPT_MOMENTUM, FNN_OPT_NESTEROV, FNN_OPT_ADAM):
            raise ValueError(f"unknown optimizer kind {kind}")
        P = (self.params.shape[0],)
        if kind != FNN_OPT_SGD:
            _check(vel, "vel", self.params.dtype, P)
        if kind == FNN_OPT_ADAM:
            _check(sq, "sq", self.params.dtype, P)
            if t < 0:
                raise ValueError("t must be >= 0")
        if snapshot is not None:
            _check(snapshot, "snapshot", self.params.dtype, P)
        if order is not None:
            _check(order, "order", np.int64, (n_epochs, n))
            if order.size and (order.min() < 0 or order.max() >= n):
                raise ValueError(f"order holds row indices outside [0, {n})")
        batch = max(1, min(batch, n))
        if epoch_loss is None:
            epoch_loss = np.full(n_epochs, np.nan)
        elif (epoch_loss.dtype != np.float64 or epoch_loss.shape != (n_epochs,)
              or not epoch_loss.flags.c_contiguous):
            raise ValueError("epoch_loss must be a contiguous float64 (n_epochs,) array")
        a.n = n
        a.n_epochs = n_epochs
        a.batch = batch
        a.x = cnp.PyArray_DATA(X)
        a.ldx = self.n_in
        a.y = cnp.PyArray_DATA(Y)
        a.ldy = self.n_out
        a.sw = NULL
        if sw is not None:
            tmp = sw
            a.sw = cnp.PyArray_DATA(tmp)
        a.order = NULL
        xb = yb = swb = None
        if order is not None:
            tmp = order
            a.order = <const int64_t *>cnp.PyArray_DATA(tmp)
            xb = np.empty((batch, self.n_in), dtype=self.params.dtype)
            yb = np.empty((batch, self.n_out), dtype=self.params.dtype)
            swb = np.empty(batch, dtype=self.params.dtype)
            a.xb = cnp.PyArray_DATA(<cnp.ndarray>xb)
            a.yb = cnp.PyArray_DATA(<cnp.ndarray>yb)
            a.swb = cnp.PyArray_DATA(<cnp.ndarray>swb)
        else:
            a.xb = a.yb = a.swb = NULL
        a.lr = <const double *>cnp.PyArray_DATA(lrs)
        a.epoch_loss = <double *>cnp.PyArray_DATA(<cnp.ndarray>epoch_loss)
        a.snapshot = NULL
        if snapshot is not None:
            tmp = snapshot
            a.snapshot = cnp.PyArray_DATA(tmp)
        a.snapshot_every = max(1, snapshot_every)
        a.epoch0 = epoch0
        a.loss_l2 = loss_l2
        a.mean_by_rows = mean_by_rows
        a.loss_scale = loss_scale
        a.snapshot_epoch = -1
        poll = _Poll(progress)
        a.poll = _poll
        a.poll_ctx = <void *>poll
        a.poll_ms = poll_ms
        opt.kind = kind
        opt.l2_per_row = l2_per_row
        opt.momentum = momentum
        opt.beta1 = beta1
        opt.beta2 = beta2
        opt.eps = eps
        opt.l2 = l2
        opt.t = t
        opt.vel = NULL
        opt.sq = NULL
        if vel is not None:
            tmp = vel
            opt.vel = cnp.PyArray_DATA(tmp)
        if sq is not None:
            tmp = sq
            opt.sq = cnp.PyArray_DATA(tmp)
        cdef void *pp = cnp.PyArray_DATA(self.params)
        cdef void *gp = cnp.PyArray_DATA(self.grads)
        cdef int64_t half = (batch + 1) // 2
        a.par_rows = self.split_rows(batch)
        a.chunk_mnk = SPLIT["chunk_mnk"]
        a.ws2 = a.grads2 = NULL
        a.iws2 = NULL
        a.split_hold = self.split_hold if SPLIT["backoff"] else 0
        a.split_backoff = self.split_backoff if SPLIT["backoff"] else -1
        self._acquire()
        try:
            if a.par_rows:
                ws, iws = self._workspace(batch, half, a.chunk_mnk)
            else:
                ws, iws = self._workspace(batch)
            wsp = cnp.PyArray_DATA(<cnp.ndarray>ws)
            iwsp = <int32_t *>cnp.PyArray_DATA(<cnp.ndarray>iws)
            if a.par_rows:
                ws2, iws2, g2 = self._split_buffers(half)
                a.ws2 = cnp.PyArray_DATA(<cnp.ndarray>ws2)
                a.iws2 = <int32_t *>cnp.PyArray_DATA(<cnp.ndarray>iws2)
                a.grads2 = cnp.PyArray_DATA(<cnp.ndarray>g2)
            with nogil:
                if self.is_f32:
                    status = fnn_fit_f32(&self.net, &opt, &a, <float *>pp,
                                         <float *>gp, <float *>wsp, iwsp)
                else:
                    status = fnn_fit_f64(&self.net, &opt, &a, <double *>pp,
                                         <double *>gp, <double *>wsp, iwsp)
        finally:
            self.busy = False
        if SPLIT["backoff"]:
            self.split_hold = a.split_hold
            self.split_backoff = a.split_backoff
        return {"status": status, "epochs_done": a.epochs_done,
                "steps_done": a.steps_done, "bad_epoch": a.bad_epoch,
                "bad_step": a.bad_step, "snapshot_epoch": a.snapshot_epoch,
                "epoch_loss": epoch_loss, "t": opt.t, "exc": poll.exc}


OPT_KINDS = {"sgd": FNN_OPT_SGD, "momentum": FNN_OPT_MOMENTUM,
             "nesterov": FNN_OPT_NESTEROV, "adam": FNN_OPT_ADAM}
STATUS = {"ok": FNN_OK, "nonfinite": FNN_ERR_NONFINITE, "stopped": FNN_STOPPED}
