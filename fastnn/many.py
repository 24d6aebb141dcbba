"""Many networks at once: fit_many trains K networks of the same layer shapes
(different initial weights, learning rates, L2, seeds, row subsets) in one
native call, on every core, without the GIL; sweep builds and trains one
network per hyper-parameter combination and ranks them on held-out data.

Results are bit-identical to fitting each network alone with Network.fit
(on the same machine, in the same process), as long as that fit's
minibatches are not split across two threads (see below):

- Networks on the small-network step (narrow dense layers, loss sse, mse or
  bce, no sample weights: ``net._core.lanes``) are trained with the
  networks in the vector lanes, in groups of fastnn._many.LANE_WIDTH (8
  float64 or 16 float32 with AVX-512, 4 or 8 elsewhere), each lane
  computing exactly what the network's own fit computes.
- The others run one network per thread, each the very fit loop
  Network.fit runs, with the BLAS called from that thread.
- method='batched' (asked for, never automatic) trains dense networks that
  share their minibatches as one stacked network: the first layer's
  weights of all of them side by side, so that its forward product and its
  weight gradient are one GEMM each; equal to Network.fit to rounding.

Network.fit splits a large enough minibatch of a larger network between
two threads when fastnn.train_threads() is 2 (set_train_threads), and
steps back from splitting when the other core is busy; a split step
rounds differently, so such a fit is reproducible only with
set_train_threads(1).  fit_many never splits: its results equal
Network.fit's under set_train_threads(1), and under the default whenever
the fit would not split (every small-network-step network, and GEMM-path
networks whose minibatches are small).

The row order of each network's epochs comes from NumPy's Generator
seeded with that network's seed, exactly as Network.fit draws it, so a
network trained here and the same network trained alone see the same rows.
"""
import _thread
import math
import os
import time
import warnings

import numpy as np

from fastnn._validation import (check_matrix, check_positive_int, check_real,
                                check_sample_weight, check_targets)
from fastnn.training import (Adam, History, SGD, _make_optimizer, _make_schedule,
                             _schedule_values, Constant)

__all__ = ["fit_many", "sweep", "SweepResult"]

# Elements (int64 row indices plus float64 learning rates and losses) per
# native call across all networks; longer runs go in several calls.
_CHUNK_ELEMS = 1 << 23


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _architecture(net):
    """What must agree between networks trained together."""
    return ([(l.kind, l.units, l.activation, float(l.alpha), l.bias, l.pieces)
             for l in net.layers], net.loss_name, net.loss_param, net.dtype)


_PLAIN_REALS = {float, int, np.float64, np.float32, np.int64, np.int32}


def _per_net(value, K, name, check, allow_none=False, fast_min=None):
    """A scalar or a sequence of K values, each passed through check: a
    list of K values.  fast_min: check is check_real(v, name, fast_min), so
    that a sequence of plain finite numbers >= fast_min can be taken as it
    is."""
    if value is None and allow_none:
        return [None] * K
    if isinstance(value, (str, bytes)) or np.ndim(value) == 0:
        v = check(value)
        return [v] * K
    vals = list(value)
    if len(vals) != K:
        raise ValueError(f"{name} has {len(vals)} entries for {K} networks")
    if fast_min is not None and set(map(type, vals)) <= _PLAIN_REALS:
        # plain numbers, checked at once; anything wrong is found again
        # below, one value at a time, to be named
        try:
            a = np.asarray(vals, dtype=np.float64)
        except OverflowError:           # an int beyond the float range
            a = None
        if a is not None and np.isfinite(a).all() and (a >= fast_min).all():
            return a.tolist()
    out = []
    for k, v in enumerate(vals):
        try:
            out.append(None if (v is None and allow_none) else check(v))
        except (TypeError, ValueError) as e:
            raise type(e)(f"{name}[{k}]: {e}") from None
    return out


def _check_nets(nets):
    from fastnn.nn import Network
    if isinstance(nets, Network):
        raise TypeError("fit_many takes a sequence of networks; for one network "
                        "call net.fit")
    try:
        nets = list(nets)
    except TypeError:
        raise TypeError(f"nets must be a sequence of Network objects, got "
                        f"{type(nets).__name__}") from None
    if not nets:
        raise ValueError("nets is empty: give at least one network")
    for k, net in enumerate(nets):
        if not isinstance(net, Network):
            raise TypeError(f"nets[{k}] is a {type(net).__name__}, not a Network")
        if net.backend != "native":
            raise ValueError(f"nets[{k}] uses the reference backend; fit_many "
                             "trains native networks only")
        for layer in net.layers:
            if layer.dropout:
                raise ValueError(f"nets[{k}] has dropout, which fit_many does "
                                 "not train with; fit it with net.fit")
    if len({id(n) for n in nets}) != len(nets):
        raise ValueError("the same network appears twice in nets")
    arch = _architecture(nets[0])
    for k, net in enumerate(nets):
        other = _architecture(net)
        if other != arch:
            what = ("loss" if other[1:3] != arch[1:3]
                    else "dtype" if other[3] != arch[3] else "layers")
            raise ValueError(f"nets[{k}] differs from nets[0] in its {what} "
                             f"({net!r} vs {nets[0]!r}); fit_many trains networks "
                             "of one architecture")
    n_ins = {net.n_in for net in nets if net.built}
    if len(n_ins) > 1:
        raise ValueError(f"the networks are built for different input widths "
                         f"{sorted(n_ins)}")
    return nets, (n_ins.pop() if n_ins else None)


def _check_indices(sample_indices, K, n):
    if sample_indices is None:
        return None
    if isinstance(sample_indices, np.ndarray) and sample_indices.ndim == 2:
        rows = list(sample_indices)
    else:
        try:
            rows = list(sample_indices)
        except TypeError:
            raise TypeError("sample_indices must be a sequence of index arrays, "
                            "one per network") from None
    if len(rows) != K:
        raise ValueError(f"sample_indices has {len(rows)} entries for {K} networks")
    out = []
    for k, r in enumerate(rows):
        a = np.asarray(r)
        if a.ndim != 1:
            raise ValueError(f"sample_indices[{k}] must be 1-D, got shape {a.shape}")
        if a.size == 0:
            raise ValueError(f"sample_indices[{k}] is empty: network {k} would "
                             "have no rows")
        if a.dtype.kind not in "iu":
            raise TypeError(f"sample_indices[{k}] must hold integers, got dtype "
                            f"{a.dtype}")
        if a.min() < 0 or a.max() >= n:
            raise ValueError(f"sample_indices[{k}] holds row indices in "
                             f"[{a.min()}, {a.max()}], outside [0, {n}) (X has "
                             f"{n} rows)")
        out.append(np.ascontiguousarray(a, dtype=np.int64))
    return out


def _check_seed(s):
    if s is None:
        return None
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
        raise TypeError(f"a seed must be an int or None, got {s!r}")
    if s < 0:
        raise ValueError(f"a seed must be >= 0, got {s}")
    return int(s)


def _optimizers(optimizer, lr, weight_decay, K):
    """One SGD/Adam object per network."""
    if isinstance(optimizer, (str, SGD, Adam)):
        specs = [optimizer] * K
    else:
        try:
            specs = list(optimizer)
        except TypeError:
            raise TypeError(f"optimizer must be a name, an SGD/Adam object or a "
                            f"sequence of them, got {optimizer!r}") from None
        if len(specs) != K:
            raise ValueError(f"optimizer has {len(specs)} entries for {K} networks")
    lrs = _per_net(lr, K, "lr", lambda v: check_real(v, "lr", 0.0), allow_none=True,
                   fast_min=0.0)
    wds = _per_net(weight_decay, K, "weight_decay",
                   lambda v: check_real(v, "weight_decay", 0.0), allow_none=True,
                   fast_min=0.0)
    if isinstance(optimizer, str):
        # one optimizer made (and its name checked) once, copied per network
        # with that network's lr and weight decay, already checked above
        proto = _make_optimizer(optimizer, None)
        cls, attrs = type(proto), proto.__dict__
        opts = []
        for l, wd in zip(lrs, wds):
            opt = cls.__new__(cls)
            opt.__dict__.update(attrs)
            if l is not None:
                opt.lr = l
            if wd is not None:
                opt.weight_decay = wd
            opts.append(opt)
        return opts
    opts = []
    for k, (spec, l, wd) in enumerate(zip(specs, lrs, wds)):
        try:
            opt = _make_optimizer(spec, l)
        except (TypeError, ValueError) as e:
            raise type(e)(f"optimizer for nets[{k}]: {e}") from None
        if wd is not None:
            if not isinstance(spec, str):
                raise ValueError("give weight_decay either to fit_many or to the "
                                 "optimizer objects, not both")
            opt.weight_decay = wd
        opts.append(opt)
    return opts


def fit_many(nets, X, y, epochs=1, batch_size=None, lr=None, optimizer="sgd",
             weight_decay=None, shuffle=True, seeds=None, sample_weight=None,
             sample_indices=None, lr_schedule="constant", on_divergence="warn",
             reset_optimizer=False, threads=None, method="auto", client=None,
             chunk_size=None):
    """Train every network of `nets` on (X, y) at once; return one History
    per network (also left in each net.history).

    Each network ends exactly as ``nets[k].fit(X_k, y_k, epochs=epochs,
    batch_size=batch_size, lr=lr[k], optimizer=optimizer[k],
    shuffle=shuffle, seed=seeds[k], sample_weight=sw_k,
    lr_schedule=lr_schedule)`` would leave it (parameters, optimizer state
    and epoch losses, bit for bit; see the module docstring for the one
    exception, split steps), with X_k = X[sample_indices[k]] (all of X
    without sample_indices), and likewise y_k and sw_k.

    nets: Network objects of one architecture (layers, loss, dtype); unbuilt
    ones are built for X's width.  lr, weight_decay: a number for every
    network or one per network (lr default: the optimizer's default;
    weight_decay: L2 on the weight matrices, as SGD/Adam's weight_decay).
    optimizer: 'sgd', 'momentum', 'nesterov', 'adam', an SGD/Adam object, or
    one of these per network.  seeds: None (fresh entropy for each network),
    an int (the same row order for every network), or one int/None per
    network.  sample_weight: (n_samples,) weights shared by all networks.
    sample_indices: one integer array of row indices per network (bagging:
    rows may repeat).  lr_schedule: as in Network.fit, applied to each
    network's own lr.  Optimizer state carries over from a previous fit of
    the same kind unless reset_optimizer.

    on_divergence: what to do when a network's loss becomes non-finite.  That
    network stops there and its parameters go back to the last saved state
    whose loss was finite (as in Network.fit); the others train on.  'warn'
    (default) warns once naming the networks, 'raise' raises
    FloatingPointError after every other network has finished, 'ignore' says
    nothing; History.stop_reason is 'diverged' for them either way.

    threads: worker threads (default: every CPU this process may run on).
    method: 'auto', 'lanes' (networks in vector lanes: small-network-step
    networks without sample weights whose row counts agree; an error
    otherwise), 'threads' (one network per thread) or 'batched' (dense
    networks that share every minibatch, i.e. one seed or no shuffling, no
    sample_weight or sample_indices, one optimizer: trained as one stacked
    network whose first-layer products are one GEMM for all of them; equal
    to Network.fit to rounding, not bit for bit, so never chosen by
    'auto').  While worker threads call the BLAS, numpy's OpenBLAS is held
    to one thread (restored afterwards), so that they do not queue for its
    pool.

    client: a dask.distributed Client: the networks go to its workers in
    chunks of chunk_size (default: about two chunks per worker), each chunk
    one fit_many call there (threads: the worker's thread count unless
    given); X and y are sent to every worker once.  The results are the
    same bits as without a client when the workers run the same build on
    the same kind of CPU.  lr_schedule must then be a built-in schedule or
    a picklable callable.

    Ctrl-C stops every network at a step boundary within a few milliseconds;
    each is left consistent, its history holding the epochs it finished
    (stop_reason 'interrupted'), and KeyboardInterrupt propagates.  With a
    client, Ctrl-C cancels the chunks still running: the networks of the
    chunks that finished hold their results, the others are as before.
    Everything is checked before anything runs: a bad argument raises and
    leaves every network unchanged.
    """
    nets, n_in = _check_nets(nets)
    K = len(nets)
    net0 = nets[0]
    dtype = np.dtype(net0.dtype)
    X = check_matrix(X, dtype, "X", n_in)
    n = X.shape[0]
    y = check_targets(y, n, net0.n_out, net0.loss_name, dtype)
    sw = check_sample_weight(sample_weight, n, dtype)
    epochs = check_positive_int(epochs, "epochs", 0)
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
    idx = _check_indices(sample_indices, K, n)
    if sw is not None and idx is not None:
        for k, rows in enumerate(idx):
            if not sw[rows].sum() > 0:
                raise ValueError(f"sample_weight sums to 0 over sample_indices[{k}]: "
                                 f"no sample of network {k} would count")
    seed_list = _per_net(seeds, K, "seeds", _check_seed, allow_none=True)
    opts = _optimizers(optimizer, lr, weight_decay, K)
    schedule = _make_schedule(lr_schedule)
    if on_divergence not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_divergence must be 'warn', 'raise' or 'ignore', got "
                         f"{on_divergence!r}")
    n_threads = _cpu_count() if threads is None else check_positive_int(threads,
                                                                         "threads")
    if method not in ("auto", "lanes", "threads", "batched"):
        raise ValueError(f"method must be 'auto', 'lanes', 'threads' or 'batched', "
                         f"got {method!r}")
    if method == "batched" and client is not None:
        raise ValueError("method='batched' runs in this process; give no client")
    if chunk_size is not None:
        chunk_size = check_positive_int(chunk_size, "chunk_size")
        if client is None:
            raise ValueError("chunk_size applies to a dask client; give client too")
    if client is not None and not hasattr(client, "submit"):
        raise TypeError(f"client must be a dask.distributed Client, got "
                        f"{type(client).__name__}")
    for net in nets:
        if not net.built:
            net.build(X.shape[1])
    held = []
    try:
        for k, net in enumerate(nets):
            try:
                net._core.hold()
            except RuntimeError as e:
                raise RuntimeError(f"nets[{k}]: {e}") from None
            held.append(net._core)
        if client is not None:
            return _fit_many_dask(
                client, chunk_size, nets, X, y, sw, idx, seed_list, opts,
                dict(epochs=epochs, batch_size=batch_size, shuffle=shuffle,
                     lr_schedule=lr_schedule, on_divergence=on_divergence,
                     reset_optimizer=reset_optimizer, threads=threads,
                     method=method))
        if method == "batched":
            return _fit_many_batched(nets, X, y, sw, idx, epochs, batch_size, opts,
                                     schedule, seed_list, shuffle, on_divergence,
                                     reset_optimizer, n_threads)
        return _fit_many(nets, X, y, sw, idx, epochs, batch_size, opts, schedule,
                         seed_list, shuffle, on_divergence, reset_optimizer,
                         n_threads, method)
    finally:
        for core in held:
            core.release()


class _Net:
    """One network's run: its rows, order, optimizer, state, history."""

    __slots__ = ("net", "k", "rows", "n", "batch", "use_order", "rng", "opt",
                 "state", "hist", "snap_epoch", "seen", "running")


def _fresh_opt_states(nets, kinds, reset, dtype):
    """Optimizer state as Network.fit keeps it: net._opt_state carries over
    from a fit with the same kind unless reset; else fresh zeros (a
    velocity buffer for every kind, Adam's second moments), made in one
    block."""
    fresh = [(net, kind) for net, kind in zip(nets, kinds)
             if reset or net._opt_state is None or net._opt_state["kind"] != kind]
    if not fresh:
        return
    P = nets[0].n_params
    vel_block = np.zeros((len(fresh), P), dtype=dtype)
    sq_block = (np.zeros((len(fresh), P), dtype=dtype)
                if any(kind == "adam" for _, kind in fresh) else None)
    for i, (net, kind) in enumerate(fresh):
        net._opt_state = {"kind": kind, "vel": vel_block[i],
                          "sq": sq_block[i] if kind == "adam" else None, "t": 0}


def _orientation(net, batch):
    """The forward-GEMM orientation Network.fit would use for minibatches of
    `batch` rows (tuned once per shape and cached by the process, see
    fastnn._train._tune_forward), tuned on net as its loss_grad on `batch`
    rows would tune it (the timing runs on the network's own weights)."""
    from fastnn import _train
    if not _train.AUTOTUNE:
        return tuple(net._core.forward_orientation())
    # the tuning alone: a loss_grad call would also wake the BLAS's thread
    # pool, whose threads then spin for a while on the cores the workers need
    return tuple(net._core.tune_forward(batch))


def _fit_many(nets, X, y, sw, idx, epochs, batch_size, opts, schedule, seeds,
              shuffle, on_divergence, reset_optimizer, n_threads, method,
              orientations=None):
    from fastnn._kernels import ACTIVATIONS, LOSSES
    from fastnn._many import LANE_WIDTH, NOT_RUN, ManyPlan
    from fastnn._train import OPT_KINDS, STATUS
    K = len(nets)
    net0 = nets[0]
    dtype = np.dtype(net0.dtype)
    P = net0.n_params
    runs = []
    for k, (net, opt) in enumerate(zip(nets, opts)):
        r = _Net()
        r.net, r.k, r.opt = net, k, opt
        r.rows = None if idx is None else idx[k]
        r.n = X.shape[0] if r.rows is None else len(r.rows)
        r.batch = r.n if batch_size is None else min(batch_size, r.n)
        r.use_order = bool(shuffle) and r.batch < r.n
        # seeds were checked already: a Generator only where rows are drawn
        r.rng = np.random.default_rng(seeds[k]) if r.use_order else None
        r.snap_epoch = None
        r.seen = 0
        r.running = True
        runs.append(r)
    _fresh_opt_states(nets, [r.opt.kind for r in runs], reset_optimizer, dtype)
    for r in runs:
        r.state = r.net._opt_state
        r.hist = History()
        r.net.history = r.hist
    snapshots = np.stack([net.params for net in nets])
    # one network description per (batch size, step kind)
    variants, variant_of = {}, []
    lanes_flags = []
    specs = [(fi, u, ACTIVATIONS[a], p, al, wo, bo)
             for (fi, u, a, p, al, wo, bo) in net0.specs()]
    for r in runs:
        lanes_on = bool(r.net._core.lanes)
        key = (r.batch, lanes_on)
        if key not in variants:
            if lanes_on:
                fwd = tuple([False] * len(specs))
            elif orientations is not None and r.batch in orientations:
                fwd = tuple(orientations[r.batch])
            else:
                fwd = _orientation(r.net, r.batch)
            variants[key] = (len(variants), fwd)
            lanes_flags.append(lanes_on)
        variant_of.append(variants[key][0])
    orientations = [fwd for _, fwd in sorted(variants.values())]
    steps = [-(-r.n // r.batch) for r in runs]
    plan = ManyPlan(
        specs, LOSSES[net0.loss_name], net0.n_weights, P, orientations,
        variant_of, lanes_flags, X, y, sw, [net.params for net in nets],
        [net.grads for net in nets],
        [r.state["vel"] if r.opt.kind != "sgd" else None for r in runs],
        [r.state["sq"] if r.opt.kind == "adam" else None for r in runs],
        list(snapshots), [r.n for r in runs], [r.batch for r in runs],
        [OPT_KINDS[r.opt.kind] for r in runs],
        [getattr(r.opt, "momentum", 0.0) for r in runs],
        [getattr(r.opt, "beta1", 0.9) for r in runs],
        [getattr(r.opt, "beta2", 0.999) for r in runs],
        [getattr(r.opt, "eps", 1e-8) for r in runs],
        [r.opt.weight_decay for r in runs], [r.state["t"] for r in runs],
        [max(1, -(-16 // s)) for s in steps],
        loss_param=0.0 if net0.loss_param is None else net0.loss_param)
    lanes_ok = (all(lanes_flags) and sw is None
                and len({(r.n, r.batch) for r in runs}) == 1
                and len({r.use_order or r.rows is not None for r in runs}) == 1)
    if method == "lanes" and not lanes_ok:
        raise ValueError("method='lanes' needs networks on the small-network step "
                         "(narrow dense layers, a loss other than softmax_ce), no "
                         "sample_weight, and the same number of rows for every "
                         "network")
    width = LANE_WIDTH[dtype]
    if method == "auto" and lanes_ok:
        # per core a group of `width` networks costs about what `width`
        # single fits cost, or less (measured: 0-30% less); with fewer
        # groups than threads, one network per thread keeps more cores busy
        groups = -(-K // width)
        lanes_ok = (-(-groups // n_threads)) * width * 0.9 <= -(-K // n_threads)
    lanes = lanes_ok and method != "threads"
    ordered = sum(r.n for r in runs if r.use_order or r.rows is not None)
    per_epoch = ordered + 2 * K
    chunk = max(1, min(_CHUNK_ELEMS // per_epoch, 1 << 16 if ordered else 1 << 20))
    diverged, interrupted = [], False
    e0 = 0
    try:
        while e0 < epochs:
            live = [r for r in runs if r.running]
            if not live:
                break
            ce = min(chunk, epochs - e0)
            m = len(live)
            if type(schedule) is Constant:
                # one rate per network, for every epoch (the histories get
                # read-only views of it repeated)
                lrs = np.array([r.opt.lr for r in live], dtype=np.float64)[:, None]
            else:
                lrs = np.empty((m, ce))
                for i, r in enumerate(live):
                    lrs[i] = _schedule_values(schedule, e0, ce, r.opt.lr, r.seen, r.n)
            orders = []
            for r in live:
                if r.use_order:
                    o = r.rng.permuted(np.tile(np.arange(r.n, dtype=np.int64),
                                               (ce, 1)), axis=1)
                    if r.rows is not None:
                        o = r.rows[o]
                elif r.rows is not None:
                    o = np.tile(r.rows, (ce, 1))
                else:
                    o = None
                orders.append(o)
            # written by the run for the epochs it finishes; only those are read
            epoch_loss = np.empty((m, ce))
            t0 = time.perf_counter()
            with _one_blas_thread(not lanes and n_threads > 1):
                out = plan.run(np.array([r.k for r in live], dtype=np.int64), lrs,
                               epoch_loss, orders, e0, lanes, n_threads)
            dt = time.perf_counter() - t0
            nonfinite, stopped = STATUS["nonfinite"], STATUS["stopped"]
            # per epoch, for the histories (a view when the rate is constant)
            lr_rows = np.broadcast_to(lrs, (m, ce))
            for i, r, done, status, t, snap in zip(
                    range(m), live, out["epochs_done"].tolist(),
                    out["status"].tolist(), out["t"].tolist(),
                    out["snapshot_epoch"].tolist()):
                r.state["t"] = t
                if snap >= 0:
                    r.snap_epoch = e0 + snap
                if done:
                    r.hist._record(e0, epoch_loss[i, :done], dt / done,
                                   r.n * done / dt if dt > 0 else math.inf,
                                   lr_rows[i, :done])
                    r.seen += done * r.n
                if status == nonfinite:
                    r.running = False
                    r.hist.stop_reason = "diverged"
                    r.net.params[...] = snapshots[r.k]
                    r.net._opt_state = None
                    diverged.append((r.k, e0 + int(out["bad_epoch"][i]),
                                     int(out["bad_step"][i]), r.snap_epoch))
                elif status == stopped or status == NOT_RUN:
                    r.running = False
                    r.hist.stop_reason = "interrupted"
            if out["exc"] is not None:
                interrupted = True
                raise out["exc"]
            e0 += ce
    except KeyboardInterrupt:
        for r in runs:
            if r.running or r.hist.stop_reason == "interrupted":
                r.running = False
                r.hist.stop_reason = "interrupted"
        raise
    _report_divergence(diverged, K, on_divergence)
    return [r.hist for r in runs]


# fit_many calls inside _one_blas_thread blocks (from any Python thread),
# and the BLAS thread count from before the first of them
_BLAS_HOLD = {"lock": _thread.allocate_lock(), "count": 0, "old": None}


class _one_blas_thread:
    """with _one_blas_thread(on): numpy's BLAS (which fastnn calls) on one
    thread inside the block, where on and where fastnn can set it.  Several
    workers that each call a BLAS with a pool of its own would otherwise
    queue for that pool: measured 2.5x slower for 50 networks 200-128-1
    on two workers.  The BLAS threads split a product by rows and columns,
    never along the sum, so results are the same bits.  Blocks may overlap
    (fit_many from several Python threads): the count set before the first
    comes back when the last ends."""

    def __init__(self, on):
        self.on = on

    def __enter__(self):
        if self.on:
            from fastnn._blas import _swap_num_threads
            with _BLAS_HOLD["lock"]:
                if _BLAS_HOLD["count"] == 0:
                    _BLAS_HOLD["old"] = _swap_num_threads(1)
                _BLAS_HOLD["count"] += 1
        return self

    def __exit__(self, *exc):
        if self.on:
            from fastnn._blas import _swap_num_threads
            with _BLAS_HOLD["lock"]:
                _BLAS_HOLD["count"] -= 1
                old = _BLAS_HOLD["old"]
                if _BLAS_HOLD["count"] == 0 and old is not None and old != 1:
                    _swap_num_threads(old)
        return False


def _report_divergence(diverged, K, on_divergence):
    """Warn or raise for the networks that diverged: (k, epoch, step,
    snapshot epoch or None) each."""
    if not diverged or on_divergence == "ignore":
        return
    parts = []
    for k, e, s, snap in diverged[:5]:
        where = (f"the start of epoch {snap}" if snap is not None
                 else "their values before fit_many")
        parts.append(f"nets[{k}] at epoch {e}, step {s} (parameters restored "
                     f"to {where})")
    more = f" and {len(diverged) - 5} more" if len(diverged) > 5 else ""
    msg = (f"{len(diverged)} of {K} networks diverged (non-finite loss): "
           + "; ".join(parts) + more)
    if on_divergence == "raise":
        raise FloatingPointError(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=4)


# ---- networks side by side in shared GEMMs ('batched') -----------------------

class _Stack:
    """Where K networks of one layout live in the stacked buffer of
    fastnn._many.fit_stacked: the first layer's weights (n_in, K n_1), the
    others (K, n_in, n_out) each, then the biases (K, n_out) each;
    nid[i]: the network of element i."""

    def __init__(self, specs, K):
        self.specs, self.K = specs, K
        self.widths = [specs[0][0]] + [s[1] for s in specs]
        self.woff, self.boff, off = [], [], 0
        for ni, no, *_ in specs:
            self.woff.append(off)
            off += K * ni * no
        self.n_weights = off
        for ni, no, _, _, _, _, bo in specs:
            self.boff.append(off if bo >= 0 else -1)
            off += K * no if bo >= 0 else 0
        self.size = off
        nid = np.empty(off, dtype=np.int32)
        ks = np.arange(K, dtype=np.int32)
        for l, (ni, no, _, _, _, _, bo) in enumerate(specs):
            self._w(nid, l)[...] = (ks[None, :, None] if l == 0
                                    else ks[:, None, None])
            if bo >= 0:
                self._b(nid, l)[...] = ks[:, None]
        self.nid = nid

    def _w(self, buf, l):
        """Layer l's weights in a stacked buffer, as (K, n_in, n_out) (the
        first layer's as (n_in, K, n_out))."""
        ni, no = self.specs[l][:2]
        v = buf[self.woff[l]:self.woff[l] + self.K * ni * no]
        return v.reshape(ni, self.K, no) if l == 0 else v.reshape(self.K, ni, no)

    def _b(self, buf, l):
        no = self.specs[l][1]
        return buf[self.boff[l]:self.boff[l] + self.K * no].reshape(self.K, no)

    def stack(self, flats, dtype):
        """The stacked buffer of K per-network buffers (each n_params)."""
        F = np.stack(flats)
        out = np.empty(self.size, dtype=dtype)
        for l, (ni, no, _, _, _, wo, bo) in enumerate(self.specs):
            W = F[:, wo:wo + ni * no].reshape(self.K, ni, no)
            self._w(out, l)[...] = W.transpose(1, 0, 2) if l == 0 else W
            if bo >= 0:
                self._b(out, l)[...] = F[:, bo:bo + no]
        return out

    def unstack(self, buf, flats):
        """Each network's elements of the stacked buf into flats[k]."""
        F = np.empty((self.K, len(flats[0])), dtype=buf.dtype)
        for l, (ni, no, _, _, _, wo, bo) in enumerate(self.specs):
            W = self._w(buf, l)
            F[:, wo:wo + ni * no] = (W.transpose(1, 0, 2) if l == 0
                                     else W).reshape(self.K, ni * no)
            if bo >= 0:
                F[:, bo:bo + no] = self._b(buf, l)
        for f, row in zip(flats, F):
            f[...] = row


def _batched_refusal(nets, sw, idx, opts, seeds, shuffle, batch, n):
    """Why method='batched' cannot train these networks, or None."""
    net0 = nets[0]
    if any(l.kind != "dense" for l in net0.layers):
        return "it trains dense layers only (no Maxout)"
    if net0.layers[-1].activation == "softmax" and net0.loss_name != "softmax_ce":
        return "a softmax output needs loss 'softmax_ce'"
    if sw is not None:
        return "it takes no sample_weight"
    if idx is not None:
        return "every network must train on the same rows (no sample_indices)"
    if shuffle and batch < n and (len(set(seeds)) != 1 or seeds[0] is None):
        return ("every network must see the rows in one order: give one int "
                "seed (seeds=0), or shuffle=False")
    o0 = opts[0]
    same = ("kind", "momentum", "beta1", "beta2", "eps")
    key0 = tuple(getattr(o0, a, None) for a in same)
    if any(tuple(getattr(o, a, None) for a in same) != key0 for o in opts):
        return ("the networks must share one optimizer and its settings other "
                "than lr and weight_decay")
    return None


def _fit_many_batched(nets, X, y, sw, idx, epochs, batch_size, opts, schedule,
                      seeds, shuffle, on_divergence, reset_optimizer, n_threads):
    import threading
    from concurrent.futures import ThreadPoolExecutor, wait as futures_wait
    from fastnn._kernels import ACTIVATIONS, LOSSES
    from fastnn._many import fit_stacked
    from fastnn._train import OPT_KINDS
    K, net0 = len(nets), nets[0]
    n = X.shape[0]
    batch = n if batch_size is None else min(batch_size, n)
    why = _batched_refusal(nets, sw, idx, opts, seeds, shuffle, batch, n)
    if why:
        raise ValueError(f"method='batched' cannot train these networks: {why}")
    dtype = np.dtype(net0.dtype)
    specs = net0.specs()
    acts = [ACTIVATIONS[s[2]] for s in specs]
    if net0.loss_name in ("bce", "softmax_ce"):
        acts[-1] = ACTIVATIONS["identity"]      # fused into the loss
    o0 = opts[0]
    kind = o0.kind
    _fresh_opt_states(nets, [kind] * K, reset_optimizer, dtype)
    # one stacked problem per thread, each on its share of the networks,
    # with numpy's BLAS on one thread meanwhile (_one_blas_thread)
    T = max(1, min(n_threads, K))
    groups = []
    for ks in np.array_split(np.arange(K), T):
        g = [nets[k] for k in ks]
        lay = _Stack(specs, len(g))
        st = [net._opt_state for net in g]
        groups.append({
            "ks": ks.tolist(), "nets": g, "lay": lay,
            "params": lay.stack([net.params for net in g], dtype),
            "grads": lay.stack([net.grads for net in g], dtype),
            "vel": lay.stack([s_["vel"] for s_ in st], dtype) if kind != "sgd" else None,
            "sq": lay.stack([s_["sq"] for s_ in st], dtype) if kind == "adam" else None,
            "t": np.array([s_["t"] for s_ in st], dtype=np.int64),
            "l2": np.array([opts[k].weight_decay for k in ks], dtype=np.float64)})
        groups[-1]["snap"] = groups[-1]["params"].copy()
    hists = [History() for _ in nets]
    for net, h in zip(nets, hists):
        net.history = h
    use_order = bool(shuffle) and batch < n
    rng = np.random.default_rng(seeds[0]) if use_order else None
    steps = -(-n // batch)
    every = max(1, -(-16 // steps))
    chunk = max(1, _CHUNK_ELEMS // n) if use_order else max(1, epochs)
    running = np.ones(K, dtype=bool)
    seen = np.zeros(K, dtype=np.int64)
    snap_epoch = [None] * K
    diverged, exc = [], None
    stop = threading.Event()
    e0 = 0
    try:
        while e0 < epochs and running.any():
            ce = min(chunk, epochs - e0)
            if type(schedule) is Constant:
                lrs = np.array([o.lr for o in opts], dtype=np.float64)[:, None]
            else:
                lrs = np.stack([_schedule_values(schedule, e0, ce, o.lr, int(s), n)
                                for o, s in zip(opts, seen)])
            order = (rng.permuted(np.tile(np.arange(n, dtype=np.int64), (ce, 1)),
                                  axis=1) if use_order else None)
            epoch_loss = np.empty((K, ce))

            def run(g):
                ks = g["ks"]
                el = np.empty((len(ks), ce))
                out = fit_stacked(
                    g["lay"].widths, acts, [s_[4] for s_ in specs], g["lay"].woff,
                    g["lay"].boff, g["lay"].nid, LOSSES[net0.loss_name],
                    0.0 if net0.loss_param is None else net0.loss_param,
                    g["lay"].n_weights, X, y, order,
                    np.ascontiguousarray(lrs[ks[0]:ks[-1] + 1]), OPT_KINDS[kind],
                    getattr(o0, "momentum", 0.0), getattr(o0, "beta1", 0.9),
                    getattr(o0, "beta2", 0.999), getattr(o0, "eps", 1e-8), g["l2"],
                    g["t"], g["params"], g["grads"], g["vel"], g["sq"], g["snap"],
                    every, (every - e0 % every) % every, batch, el,
                    progress=(lambda done: stop.is_set()) if T > 1 else None)
                epoch_loss[ks[0]:ks[-1] + 1] = el
                return out

            t0 = time.perf_counter()
            if T == 1:
                outs = [run(groups[0])]
            else:
                with _one_blas_thread(True), ThreadPoolExecutor(T) as pool:
                    futs = [pool.submit(run, g) for g in groups]
                    try:
                        while not all(f.done() for f in futs):
                            futures_wait(futs, timeout=0.05)
                    except KeyboardInterrupt as e:
                        stop.set()
                        futures_wait(futs)
                        exc = e
                    outs = [f.result() for f in futs]
            dt = time.perf_counter() - t0
            lr_rows = np.broadcast_to(lrs, (K, ce))
            stopped = exc is not None
            for g, out in zip(groups, outs):
                stopped = stopped or out["stopped"]
                exc = exc if exc is not None else out["exc"]
                for k, done, bad_e, bad_s, se in zip(
                        g["ks"], out["epochs_done"].tolist(),
                        out["bad_epoch"].tolist(), out["bad_step"].tolist(),
                        out["snap_epoch"].tolist()):
                    if not running[k]:
                        continue
                    if se >= 0:
                        snap_epoch[k] = e0 + se
                    if done:
                        hists[k]._record(e0, epoch_loss[k, :done], dt / done,
                                         n * done / dt if dt > 0 else math.inf,
                                         lr_rows[k, :done])
                        seen[k] += done * n
                    if bad_e >= 0:
                        running[k] = False
                        hists[k].stop_reason = "diverged"
                        diverged.append((k, e0 + bad_e, bad_s, snap_epoch[k]))
            if stopped or exc is not None:
                for k in np.flatnonzero(running):
                    hists[k].stop_reason = "interrupted"
                running[:] = False
                break
            e0 += ce
    finally:
        # every network's state back in its own buffers, also on Ctrl-C
        for g in groups:
            lay, gn = g["lay"], g["nets"]
            lay.unstack(g["params"], [net.params for net in gn])
            lay.unstack(g["grads"], [net.grads for net in gn])
            if g["vel"] is not None:
                lay.unstack(g["vel"], [net._opt_state["vel"] for net in gn])
            if g["sq"] is not None:
                lay.unstack(g["sq"], [net._opt_state["sq"] for net in gn])
            for net, tk in zip(gn, g["t"].tolist()):
                net._opt_state["t"] = tk
        for k, *_ in diverged:
            nets[k]._opt_state = None
    if exc is not None:
        raise exc
    diverged.sort()
    _report_divergence(diverged, K, on_divergence)
    return hists


# ---- over a dask cluster -----------------------------------------------------

def _net_state(net):
    """What a worker needs to rebuild net exactly: its layers, loss, dtype,
    width, parameters, gradient buffer and optimizer state."""
    layers = [(l.kind, l.units, l.activation, float(l.alpha), l.bias, l.pieces)
              for l in net.layers]
    st = net._opt_state
    opt = None if st is None else {"kind": st["kind"], "vel": st["vel"].copy(),
                                   "sq": None if st["sq"] is None else st["sq"].copy(),
                                   "t": st["t"]}
    return {"layers": layers, "loss": net.loss_name, "loss_param": net.loss_param,
            "dtype": net.dtype.str,
            "n_in": net.n_in, "params": net.params.copy(),
            "grads": net.grads.copy(), "opt": opt}


def _net_from_state(state):
    from fastnn.nn import Dense, Maxout, Network
    layers = []
    for kind, units, act, alpha, bias, pieces in state["layers"]:
        if kind == "maxout":
            layers.append(Maxout(units, pieces, bias=bias))
        else:
            layers.append(Dense(units, act, bias=bias, alpha=alpha))
    from fastnn.nn import _loss_param_kwargs
    net = Network(layers, loss=state["loss"], n_in=state["n_in"],
                  dtype=np.dtype(state["dtype"]),
                  **_loss_param_kwargs(state["loss"], state.get("loss_param")))
    net.params[...] = state["params"]
    net.grads[...] = state["grads"]
    net._opt_state = state["opt"]
    return net


def _history_state(h):
    return {"chunks": [(e0, np.asarray(loss), sec, sps, np.asarray(lr))
                       for e0, loss, sec, sps, lr in h._chunks],
            "stop_reason": h.stop_reason}


def _remote_chunk(states, X, y, sw, idx, seeds, opts, orientations, kw):
    """One chunk on a worker: fit_many over the rebuilt networks; returns
    their states and histories (divergence is reported by the client)."""
    import warnings as _w
    nets = [_net_from_state(s) for s in states]
    kw = dict(kw)
    if kw["threads"] is None:
        try:
            from distributed import get_worker
            kw["threads"] = get_worker().state.nthreads
        except Exception:
            kw["threads"] = _cpu_count()
    with _w.catch_warnings():
        _w.simplefilter("ignore", RuntimeWarning)
        held = []
        try:
            for net in nets:
                net._core.hold()
                held.append(net._core)
            hists = _fit_many(nets, X, y, sw, idx, kw["epochs"], kw["batch_size"],
                              opts, _make_schedule(kw["lr_schedule"]), seeds,
                              kw["shuffle"], "ignore", kw["reset_optimizer"],
                              kw["threads"], kw["method"], orientations)
        finally:
            for core in held:
                core.release()
    return [(_net_state(n), _history_state(h)) for n, h in zip(nets, hists)]


def _fit_many_dask(client, chunk_size, nets, X, y, sw, idx, seeds, opts, kw):
    """fit_many's networks in chunks on the workers of a dask client."""
    K = len(nets)
    try:
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    except Exception:
        n_workers = 1
    size = chunk_size or max(1, -(-K // (2 * n_workers)))
    # the forward-GEMM orientations this process would use (workers would
    # otherwise tune their own by timing)
    orientations = {}
    for k, net in enumerate(nets):
        n_k = X.shape[0] if idx is None else len(idx[k])
        b = n_k if kw["batch_size"] is None else min(kw["batch_size"], n_k)
        if not net._core.lanes and b not in orientations:
            orientations[b] = _orientation(net, b)
    # unique keys (hash=False): data scattered by an earlier call, with the
    # same content and so the same hashed key, may be in the middle of being
    # released
    arrays = [X, y] if sw is None else [X, y, sw]
    data = client.scatter(arrays, broadcast=True, hash=False)
    if sw is None:
        data.append(None)
    futures = {}
    try:
        for k0 in range(0, K, size):
            part = range(k0, min(K, k0 + size))
            fut = client.submit(
                _remote_chunk, [_net_state(nets[k]) for k in part], data[0],
                data[1], data[2], None if idx is None else [idx[k] for k in part],
                [seeds[k] for k in part], [opts[k] for k in part], orientations,
                kw, pure=False)
            futures[fut] = list(part)
        from distributed import as_completed
        hists = [None] * K
        for fut in as_completed(list(futures)):
            for k, (state, hstate) in zip(futures[fut], fut.result()):
                net = nets[k]
                net.params[...] = state["params"]
                net.grads[...] = state["grads"]
                net._opt_state = state["opt"]
                h = History()
                for chunk in hstate["chunks"]:
                    h._record(*chunk)
                h.stop_reason = hstate["stop_reason"]
                net.history = hists[k] = h
    except BaseException:
        client.cancel(list(futures))
        raise
    diverged = [k for k, h in enumerate(hists) if h.stop_reason == "diverged"]
    if diverged and kw["on_divergence"] != "ignore":
        shown = ", ".join(f"nets[{k}]" for k in diverged[:10])
        more = f" and {len(diverged) - 10} more" if len(diverged) > 10 else ""
        msg = (f"{len(diverged)} of {K} networks diverged (non-finite loss): "
               f"{shown}{more}; their parameters were restored to their last "
               "finite state")
        if kw["on_divergence"] == "raise":
            raise FloatingPointError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
    return hists


# ---- sweep -----------------------------------------------------------------

class SweepResult:
    """What sweep found: one row per configuration, best first.

    rows: list of dicts, each the configuration's parameters plus 'loss'
    (the final training loss), 'val_loss' and 'val_metric' (on the
    validation data, if given; the metric is accuracy for bce/softmax_ce,
    R^2 otherwise), 'diverged' and 'index' (position in the order the
    configurations were generated).  nets and histories: in the same order
    as rows.  best: rows[0]; best_net: nets[0].
    """

    def __init__(self, rows, nets, histories):
        self.rows = rows
        self.nets = nets
        self.histories = histories

    @property
    def best(self):
        return self.rows[0]

    @property
    def best_net(self):
        return self.nets[0]

    def __len__(self):
        return len(self.rows)

    def __repr__(self):
        return f"SweepResult({len(self.rows)} configurations, best {self.best!r})"


def sweep(build, grid, X, y, validation_data=None, epochs=1, **fit_kwargs):
    """Train one network per combination of `grid` with fit_many and rank
    them.

    build(**params) -> Network: makes a network for one combination (it
    receives only the grid's keys that are not fit arguments, and 'seed'
    if the grid has one).  grid: dict name -> list of values; the
    combinations are its product, in order.  Keys 'lr' and
    'weight_decay' are passed to fit_many per network; 'seed' goes to
    build and also seeds that network's row order; other keys go to build
    only.  validation_data: (X_val, y_val) to rank by validation loss;
    without it the final training loss ranks.  Other keyword arguments go
    to fit_many (batch_size, optimizer, shuffle, ...).  Networks that
    diverged rank last.  Returns a SweepResult.
    """
    if not isinstance(grid, dict) or not grid:
        raise ValueError("grid must be a non-empty dict of name -> list of values")
    for key in ("lr", "weight_decay", "seeds", "sample_indices"):
        if key in fit_kwargs:
            raise ValueError(f"give {key!r} through the grid, not as a fit argument")
    names = list(grid)
    values = []
    for name in names:
        v = grid[name]
        if isinstance(v, (str, bytes)) or np.ndim(v) == 0:
            raise ValueError(f"grid[{name!r}] must be a list of values")
        v = list(v)
        if not v:
            raise ValueError(f"grid[{name!r}] is empty")
        values.append(v)
    import itertools
    from fastnn.nn import Network
    combos = [dict(zip(names, c)) for c in itertools.product(*values)]
    nets = []
    for c in combos:
        kw = {k: v for k, v in c.items() if k not in ("lr", "weight_decay")}
        net = build(**kw)
        if not isinstance(net, Network):
            raise TypeError(f"build returned {type(net).__name__}, not a Network")
        nets.append(net)
    val = None
    if validation_data is not None:
        if len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val)")
        net = nets[0]
        width = net.n_in if net.built else np.shape(X)[-1]
        Xv = check_matrix(validation_data[0], net.dtype, "X_val", width)
        yv = check_targets(validation_data[1], Xv.shape[0], net.n_out,
                           net.loss_name, net.dtype, "y_val")
        val = (Xv, yv)
    fit_kw = dict(fit_kwargs)
    if "lr" in grid:
        fit_kw["lr"] = [c["lr"] for c in combos]
    if "weight_decay" in grid:
        fit_kw["weight_decay"] = [c["weight_decay"] for c in combos]
    if "seed" in grid:
        fit_kw["seeds"] = [c["seed"] for c in combos]
    fit_kw.setdefault("on_divergence", "ignore")
    hists = fit_many(nets, X, y, epochs=epochs, **fit_kw)
    from fastnn.training import _evaluate
    rows = []
    for i, (c, net, h) in enumerate(zip(combos, nets, hists)):
        row = dict(c)
        row["loss"] = h.last_loss()
        row["diverged"] = h.stop_reason == "diverged"
        if val is not None:
            row["val_loss"], row["val_metric"] = _evaluate(net, *val)
        row["index"] = i
        rows.append(row)
    key = "val_loss" if val is not None else "loss"

    def rank(i):
        r = rows[i]
        v = r[key]
        bad = r["diverged"] or v is None or not math.isfinite(v)
        return (bad, v if not bad else 0.0, i)

    order = sorted(range(len(rows)), key=rank)
    return SweepResult([rows[i] for i in order], [nets[i] for i in order],
                       [hists[i] for i in order])
