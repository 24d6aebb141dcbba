"""fit(): epochs and minibatches run natively (csrc/train.c) without the GIL;
this module holds what lives around the loop on the Python side: optimizers,
learning-rate schedules, History, callbacks and early stopping, the progress
bar, and the handling of Ctrl-C and divergence.

The row order of each epoch comes from NumPy's Generator here, one index
array per epoch, so fastnn.reference.fit can replay exactly the same run.
Epochs run in chunks: one native call per chunk, chunks of one epoch when
per-epoch Python work is needed (validation data, callbacks), longer chunks
otherwise (bounded by the memory of their index arrays).
"""
import math
import sys
import time
import warnings

import numpy as np

from fastnn._validation import (check_positive_int, check_real,
                                check_sample_weight, check_targets)

__all__ = ["SGD", "Adam", "Constant", "InverseScaling", "StepDecay",
           "History", "Callback", "EarlyStopping", "fit"]


# ---- optimizers ------------------------------------------------------------

class SGD:
    """Stochastic gradient descent, optionally with (Nesterov) momentum, in
    scikit-learn's form: v = momentum v - lr g; w += v (Nesterov: w +=
    momentum v - lr g).  weight_decay adds weight_decay * W to the gradient
    of every weight matrix (not biases).  Without momentum the update is
    fused into the weight-gradient GEMMs."""

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        self.lr = check_real(lr, "lr", 0.0)
        self.momentum = check_real(momentum, "momentum", 0.0, 1.0)
        self.nesterov = bool(nesterov)
        self.weight_decay = check_real(weight_decay, "weight_decay", 0.0)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")

    @property
    def kind(self):
        if self.momentum == 0:
            return "sgd"
        return "nesterov" if self.nesterov else "momentum"

    def __repr__(self):
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, "
                f"nesterov={self.nesterov}, weight_decay={self.weight_decay})")


class Adam:
    """Adam in scikit-learn's form: lr_t = lr sqrt(1 - b2^t) / (1 - b1^t);
    w -= lr_t m / (sqrt(v) + eps).  weight_decay: L2 on weight matrices."""

    kind = "adam"

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        self.lr = check_real(lr, "lr", 0.0)
        self.beta1 = check_real(beta1, "beta1", 0.0, 1.0)
        self.beta2 = check_real(beta2, "beta2", 0.0, 1.0)
        if self.beta1 >= 1 or self.beta2 >= 1:
            raise ValueError("beta1 and beta2 must be < 1")
        self.eps = check_real(eps, "eps", 0.0, open_min=True)
        self.weight_decay = check_real(weight_decay, "weight_decay", 0.0)

    def __repr__(self):
        return (f"Adam(lr={self.lr}, beta1={self.beta1}, beta2={self.beta2}, "
                f"eps={self.eps}, weight_decay={self.weight_decay})")


def _make_optimizer(optimizer, lr):
    if isinstance(optimizer, (SGD, Adam)):
        if lr is not None:
            raise ValueError("give lr either to fit or to the optimizer object, "
                             "not both")
        return optimizer
    if not isinstance(optimizer, str):
        raise TypeError(f"optimizer must be 'sgd', 'momentum', 'nesterov', 'adam' "
                        f"or an SGD/Adam object, got {optimizer!r}")
    name = optimizer.lower()
    if name == "sgd":
        return SGD(0.01 if lr is None else lr)
    if name == "momentum":
        return SGD(0.01 if lr is None else lr, momentum=0.9)
    if name == "nesterov":
        return SGD(0.01 if lr is None else lr, momentum=0.9, nesterov=True)
    if name == "adam":
        return Adam(0.001 if lr is None else lr)
    raise ValueError(f"unknown optimizer {optimizer!r}; expected 'sgd', "
                     "'momentum', 'nesterov' or 'adam'")


# ---- learning-rate schedules (per epoch) -----------------------------------

class Constant:
    """lr_e = lr."""

    def __call__(self, epoch, lr, samples_seen):
        return lr

    def values(self, epochs, lr, samples_seen):
        return np.full(len(epochs), float(lr))


class InverseScaling:
    """lr_e = lr / (1 + t)^power_t, with t the epoch number, or the number of
    samples seen before the epoch if per_sample (scikit-learn's
    'invscaling')."""

    def __init__(self, power_t=0.5, per_sample=False):
        self.power_t = check_real(power_t, "power_t", 0.0)
        self.per_sample = bool(per_sample)

    def __call__(self, epoch, lr, samples_seen):
        t = samples_seen if self.per_sample else epoch
        return lr / (1.0 + t) ** self.power_t

    def values(self, epochs, lr, samples_seen):
        t = samples_seen if self.per_sample else epochs
        return lr / (1.0 + t.astype(np.float64)) ** self.power_t


class StepDecay:
    """lr_e = lr * gamma^(epoch // step_size)."""

    def __init__(self, step_size=10, gamma=0.1):
        self.step_size = check_positive_int(step_size, "step_size")
        self.gamma = check_real(gamma, "gamma", 0.0, open_min=True)

    def __call__(self, epoch, lr, samples_seen):
        return lr * self.gamma ** (epoch // self.step_size)

    def values(self, epochs, lr, samples_seen):
        return lr * self.gamma ** (epochs // self.step_size).astype(np.float64)


def _schedule_values(schedule, e0, count, lr, samples_seen, n):
    """Learning rates of epochs e0 .. e0+count-1 as a float64 array (one
    vectorized call for the built-in schedules, one call per epoch for a
    user's function)."""
    if type(schedule) is Constant:          # the common case, without arrays
        if not (math.isfinite(lr) and lr >= 0):
            raise ValueError(f"lr_schedule gave invalid learning rates: {lr}")
        lrs = np.empty(count)
        lrs.fill(lr)                        # np.full costs twice as much here
        return lrs
    epochs = np.arange(e0, e0 + count, dtype=np.int64)
    seen = samples_seen + n * np.arange(count, dtype=np.int64)
    if hasattr(schedule, "values"):
        lrs = np.asarray(schedule.values(epochs, lr, seen), dtype=np.float64)
    else:
        lrs = np.array([schedule(int(e), lr, int(t)) for e, t in zip(epochs, seen)],
                       dtype=np.float64)
    if lrs.shape != (count,) or not np.isfinite(lrs).all() or (lrs < 0).any():
        raise ValueError(f"lr_schedule gave invalid learning rates: {lrs[:10]}")
    return lrs


def _make_schedule(s):
    if s is None or s == "constant":
        return Constant()
    if s == "invscaling":
        return InverseScaling()
    if s == "step":
        return StepDecay()
    if callable(s):
        return s
    raise ValueError(f"unknown lr_schedule {s!r}; expected 'constant', "
                     "'invscaling', 'step' or a callable(epoch, lr, samples_seen)")


# ---- history and callbacks -------------------------------------------------

class History:
    """What fit recorded, one entry per finished epoch.

    loss: training loss (mean over the epoch's minibatch losses, weighted by
    rows; a sum for 'sse'), val_loss / val_metric with validation data (the
    metric is accuracy for bce/softmax_ce, R^2 otherwise), seconds (per
    epoch; epochs run in one native chunk share the chunk's time evenly),
    samples_per_sec.  stop_reason: None, 'callback', 'early_stopping',
    'interrupted' or 'diverged'.
    """

    def __init__(self):
        # Epochs arrive from the native loop a chunk at a time; a chunk is
        # kept as it came (epoch_loss and learning-rate arrays, the chunk's
        # seconds per epoch) and the per-epoch lists are made when first
        # read, so that a fit of 10,000 tiny epochs pays neither for 50,000
        # Python appends nor for building arrays nobody reads.
        self._chunks = []
        self._lists = {}
        self.val_loss = []
        self.val_metric = []
        self.stop_reason = None
        self.best_epoch = None

    def _record(self, e0, loss, seconds, samples_per_sec, lr):
        """Append a chunk of len(loss) epochs, numbered from e0: loss and lr
        hold one value per epoch, seconds and samples_per_sec one value for
        every epoch of the chunk.  The arrays are kept, not copied."""
        self._chunks.append((e0, loss, seconds, samples_per_sec, lr))
        self._lists = {}

    def _series(self, key):
        if key not in self._lists:
            out = []
            for e0, loss, sec, sps, lr in self._chunks:
                k = len(loss)
                if key == "epochs":
                    out.extend(range(e0, e0 + k))
                elif key in ("seconds", "samples_per_sec"):
                    out.extend([float(sec if key == "seconds" else sps)] * k)
                else:
                    out.extend(np.asarray(loss if key == "loss" else lr,
                                          dtype=np.float64).tolist())
            self._lists[key] = out
        return self._lists[key]

    epochs = property(lambda self: self._series("epochs"), doc="epoch numbers")
    loss = property(lambda self: self._series("loss"), doc="training loss per epoch")
    seconds = property(lambda self: self._series("seconds"), doc="seconds per epoch")
    samples_per_sec = property(lambda self: self._series("samples_per_sec"),
                               doc="training samples per second, per epoch")
    lr = property(lambda self: self._series("lr"), doc="learning rate per epoch")

    def last_loss(self):
        """The last epoch's training loss, or None (without building lists)."""
        last = self._chunks[-1][1] if self._chunks else ()
        return float(last[-1]) if len(last) else None

    @property
    def history(self):
        """Keras-style dict of lists."""
        d = {"loss": self.loss, "seconds": self.seconds,
             "samples_per_sec": self.samples_per_sec, "lr": self.lr}
        if self.val_loss:
            d["val_loss"] = self.val_loss
            d["val_metric"] = self.val_metric
        return d

    def __len__(self):
        return sum(len(c[1]) for c in self._chunks)

    def __repr__(self):
        last = f", last loss {self.loss[-1]:.6g}" if self.loss else ""
        return f"History({len(self)} epochs{last}, stop_reason={self.stop_reason!r})"


class Callback:
    """Base class: fit calls on_train_begin(net) once, then
    on_epoch_end(epoch, logs) after each epoch; returning True stops
    training.  A plain function f(epoch, logs) works too."""

    def on_train_begin(self, net):
        pass

    def on_epoch_end(self, epoch, logs):
        return False

    def on_train_end(self, net):
        pass


class EarlyStopping(Callback):
    """Stop when `monitor` ('val_loss' when validation data is given, else
    'loss') has not improved by more than min_delta for `patience` epochs;
    with restore_best_weights the parameters of the best epoch are put back
    at the end."""

    def __init__(self, monitor=None, patience=5, min_delta=0.0,
                 restore_best_weights=True):
        self.monitor = monitor
        self.patience = check_positive_int(patience, "patience")
        self.min_delta = check_real(min_delta, "min_delta", 0.0)
        self.restore_best_weights = bool(restore_best_weights)

    def on_train_begin(self, net):
        self.net = net
        self.best = math.inf
        self.best_epoch = None
        self.wait = 0
        self.best_params = None
        self.stopped = False

    def on_epoch_end(self, epoch, logs):
        key = self.monitor or ("val_loss" if "val_loss" in logs else "loss")
        if key not in logs:
            raise ValueError(f"EarlyStopping monitors {key!r}, which fit does not "
                             f"report (it reports {sorted(logs)})")
        value = logs[key]
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_params = self.net.params.copy()
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped = True
            return True
        return False

    def on_train_end(self, net):
        if self.restore_best_weights and self.best_params is not None:
            net.params[...] = self.best_params


# ---- progress ----------------------------------------------------------------

class _Progress:
    """fit's progress display (verbose=1), counted in training samples so
    that long epochs move too: samples done of the total, epoch, the
    running loss of the current epoch, samples/s, time left, and the last
    validation loss and metric.  tqdm's bar if tqdm is installed, else one
    line on `stream` (stderr) rewritten in place.  Redrawn at most `rate`
    times a second (and at the end of each epoch fit sees in Python).

    Nothing is drawn before the fit has run `bar_after` seconds (default:
    one redraw interval): a fit that ends sooner gets one line at the end,
    in the plain format, and no tqdm bar (making and closing a bar costs
    about 0.15 ms, as much as a 10,000-step fit of a tiny network)."""

    def __init__(self, epochs, n_samples, rate=4.0, stream=None, bar_after=None):
        self.epochs, self.n = epochs, n_samples
        self.total = epochs * n_samples
        self.min_dt = 1.0 / rate
        self.bar_after = self.min_dt if bar_after is None else bar_after
        self.stream = sys.stderr if stream is None else stream
        self.t0 = self.last = time.perf_counter()
        self.done = self.shown = 0
        self.drawn = False
        self.width = 0
        self.epoch, self.loss = 0, None
        self.val = None
        self.bar = None

    def step(self, epoch, steps, batch, loss):
        """Called from inside the native loop: `steps` minibatches of
        `batch` rows finished in epoch `epoch` (0-based, of the whole fit),
        whose loss so far is `loss` (NaN: none yet)."""
        self.epoch = epoch
        self.done = epoch * self.n + min(steps * batch, self.n)
        self.loss = loss if loss == loss else None
        self._draw()

    def epoch_end(self, epochs_done, loss, val=None):
        """epochs_done epochs finished; the last one's loss, and its
        validation (loss, metric) if fit computed one."""
        self.epoch = epochs_done
        self.done = epochs_done * self.n
        self.loss = loss
        if val is not None:
            self.val = val
        self._draw(force=True)

    def _fields(self):
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        rate = self.done / elapsed
        parts = [f"epoch {min(self.epoch + 1, self.epochs)}/{self.epochs}"]
        parts.append("loss -" if self.loss is None else f"loss {self.loss:.5g}")
        if self.val is not None:
            parts.append(f"val_loss {self.val[0]:.5g}")
            parts.append(f"val_metric {self.val[1]:.4g}")
        return parts, rate, elapsed

    def _make_bar(self):
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None
        return tqdm(total=self.total, unit="sample", unit_scale=True,
                    leave=True, file=self.stream, dynamic_ncols=True)

    def _draw(self, force=False, final=False):
        now = time.perf_counter()
        if not final and (now - self.t0 < self.bar_after
                          or (not force and now - self.last < self.min_dt)):
            return
        self.last = now
        if not self.drawn and not final:
            self.bar = self._make_bar()
        self.drawn = True
        parts, rate, elapsed = self._fields()
        if self.bar is not None:
            self.bar.update(self.done - self.shown)
            self.bar.set_postfix_str("  ".join(parts), refresh=True)
        else:
            left = (self.total - self.done) / rate if rate > 0 else math.inf
            eta = _clock(left) if math.isfinite(left) else "-"
            line = (f"{self.done:,}/{self.total:,} samples  " + "  ".join(parts)
                    + f"  {rate:,.0f} samples/s  elapsed {_clock(elapsed)}"
                    f"  left {eta}")
            # pad over what a longer previous line left on the screen
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
            self.stream.flush()
        self.shown = self.done

    def close(self):
        if not self.drawn or self.shown != self.done:
            self._draw(final=True)
        if self.bar is not None:
            self.bar.close()
        else:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds):
    """h:mm:ss (or m:ss) for a number of seconds."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# ---- fit ---------------------------------------------------------------------

# Index entries per native chunk when no per-epoch Python work is needed.
_CHUNK_INDEX_ELEMS = 1 << 22


def fit(net, X, y, epochs=1, batch_size=None, lr=None, optimizer="sgd",
        shuffle=True, seed=None, validation_data=None, callbacks=None,
        verbose=0, sample_weight=None, lr_schedule="constant",
        on_divergence="raise", early_stopping=None, reset_optimizer=False,
        comm=None, class_weight=None):
    """Train `net` on (X, y) for `epochs` epochs; return a History.  The
    arguments are Network.fit's, documented there."""
    if comm is not None:
        if class_weight is not None:
            raise ValueError("class_weight is not available with comm (a "
                             "distributed fit): 'balanced' needs the classes' "
                             "counts over every rank; give the weights as "
                             "sample_weight")
        if any(net.dropout_rates):
            raise ValueError("dropout is not available with comm (a distributed "
                             "fit): its steps run without the layers' dropout")
        from fastnn.distributed import fit as fit_distributed
        return fit_distributed(
            net, X, y, comm, epochs=epochs, batch_size=batch_size, lr=lr,
            optimizer=optimizer, shuffle=shuffle, seed=seed,
            validation_data=validation_data, callbacks=callbacks, verbose=verbose,
            sample_weight=sample_weight, lr_schedule=lr_schedule,
            on_divergence=on_divergence, early_stopping=early_stopping,
            reset_optimizer=reset_optimizer)
    X = net._X(X)               # a scipy.sparse X stays sparse (CSRInput)
    y = check_targets(y, X.shape[0], net.n_out, net.loss_name, net.dtype)
    sw = check_sample_weight(sample_weight, X.shape[0], net.dtype)
    if class_weight is not None:
        sw = _class_weights(net, y, sw, class_weight)
    n = X.shape[0]
    epochs = check_positive_int(epochs, "epochs", 0)
    batch = n if batch_size is None else check_positive_int(batch_size, "batch_size")
    batch = min(batch, n)
    opt = _make_optimizer(optimizer, lr)
    schedule = _make_schedule(lr_schedule)
    if on_divergence not in ("raise", "warn"):
        raise ValueError("on_divergence must be 'raise' or 'warn'")
    val = None
    if validation_data is not None:
        if len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val)")
        Xv = net._X(validation_data[0], "X_val")
        yv = check_targets(validation_data[1], Xv.shape[0], net.n_out,
                           net.loss_name, net.dtype, "y_val")
        val = (Xv, yv)
    cbs = list(callbacks or [])
    if early_stopping is True:
        early_stopping = EarlyStopping()
    if early_stopping:
        cbs.append(early_stopping)
    use_order = shuffle and batch < n
    dropout = any(net.dropout_rates)
    # without a seed of its own, a fit shuffles with the network's (seeding
    # from OS entropy costs ~15 us: not when unused; a given seed is still
    # checked)
    if seed is not None:
        rng = np.random.default_rng(seed)
    else:
        rng = net._fit_rng() if use_order or dropout else None
    # dropout's masks: keyed by one draw from the fit's generator, before
    # the epochs' orders (only with dropout, so fits without it draw as
    # they always did)
    drop_seed = int(rng.integers(0, 1 << 64, dtype=np.uint64)) if dropout else None

    if net._core is None:
        with net._reference_lock():
            return _fit_reference(net, X, y, sw, epochs, batch, opt, schedule, rng,
                                  use_order, val, cbs, on_divergence, drop_seed)
    core = net._core
    core.hold()
    try:
        return _fit_native(net, core, X, y, sw, epochs, batch, opt, schedule, rng,
                           use_order, val, cbs, on_divergence, early_stopping, verbose,
                           reset_optimizer, drop_seed)
    finally:
        core.release()


def _class_weights(net, Y, sw, class_weight):
    """Network.fit's sample weights with class_weight multiplied in."""
    from fastnn._weights import class_sample_weight
    loss = net.loss_name
    if loss not in ("bce", "softmax_ce"):
        raise ValueError(f"class_weight needs a classification loss ('bce' or "
                         f"'softmax_ce'); the loss is {loss!r}")
    hard = bool(np.all((Y == 0) | (Y == 1)))
    if loss == "softmax_ce" and hard:
        hard = bool(np.all(Y.sum(axis=1) == 1))
    if not hard:
        raise ValueError("class_weight needs hard targets: 0/1 for 'bce', one-hot "
                         "rows (or integer labels) for 'softmax_ce'")
    if loss == "softmax_ce":
        kind = "multiclass"
    else:
        kind = "binary" if Y.shape[1] == 1 else "multilabel"
    w = class_sample_weight(class_weight, Y, kind, sample_weight=sw)
    return np.ascontiguousarray(w, dtype=net.dtype)


def _optimizer_state(net, opt, reset):
    """The optimizer state the fit continues from (net._opt_state: velocity,
    Adam's second moments and step count), new if reset, if there is none
    or if it belongs to another kind of optimizer."""
    state = net._opt_state
    if reset or state is None or state["kind"] != opt.kind:
        state = {"kind": opt.kind, "vel": np.zeros_like(net.params),
                 "sq": np.zeros_like(net.params) if opt.kind == "adam" else None,
                 "t": 0}
    net._opt_state = state
    return state


def _native_config(opt, batch, state, snapshot, snap_every, drop_seed=None):
    """The FitConfig of every native call of one fit: optimizer opt (SGD or
    Adam) continuing from state, snapshots into snapshot, dropout's masks
    keyed by drop_seed (None: no dropout)."""
    from fastnn._train import FitConfig
    return FitConfig(opt.kind, batch, momentum=getattr(opt, "momentum", 0.0),
                     beta1=getattr(opt, "beta1", 0.9),
                     beta2=getattr(opt, "beta2", 0.999),
                     eps=getattr(opt, "eps", 1e-8), l2=opt.weight_decay,
                     vel=state["vel"], sq=state["sq"], t=state["t"],
                     snapshot=snapshot, snapshot_every=snap_every,
                     dropout_seed=drop_seed)


def _fit_native(net, core, X, y, sw, epochs, batch, opt, schedule, rng, use_order,
                val, cbs, on_divergence, early_stopping, verbose, reset_optimizer,
                drop_seed=None):
    n = X.shape[0]
    state = _optimizer_state(net, opt, reset_optimizer)
    hist = History()
    net.history = hist
    for cb in cbs:
        if hasattr(cb, "on_train_begin"):
            cb.on_train_begin(net)
    per_epoch = bool(cbs) or val is not None
    chunk = 1 if per_epoch else max(1, min(_CHUNK_INDEX_ELEMS // n, 1 << 16)
                                     if use_order else 1 << 20)
    steps_per_epoch = -(-n // batch)
    # Snapshots for divergence recovery: copying params costs about as much
    # as a few elementwise passes; keep it under ~1/16 of the work.
    snap_every = max(1, -(-16 // steps_per_epoch))
    snapshot = net.params.copy()
    snap_epoch = None
    cfg = _native_config(opt, batch, state, snapshot, snap_every, drop_seed)
    progress = _Progress(epochs, n) if verbose else None
    samples_seen = 0
    e0 = 0
    pending = None          # the chunk whose native run may not be recorded yet
    try:
        while e0 < epochs:
            ce = min(chunk, epochs - e0)
            lrs = _schedule_values(schedule, e0, ce, opt.lr, samples_seen, n)
            # rng.permuted row by row == rng.permutation(n) epoch after epoch
            order = (rng.permuted(np.tile(np.arange(n, dtype=np.int64), (ce, 1)), axis=1)
                     if use_order else None)
            epoch_loss = np.empty(ce)
            epoch_loss.fill(np.nan)

            def poll(e, s, loss, _e0=e0):
                if progress is not None:
                    progress.step(_e0 + e, s + 1, batch, loss)
                return False

            t0 = time.perf_counter()
            pending = (e0, epoch_loss, lrs, t0)
            r = core.fit(X, y, cfg, lrs, sw=sw, order=order, epoch0=e0,
                         epoch_loss=epoch_loss, progress=poll)
            dt = time.perf_counter() - t0
            state["t"] = r.t
            done = r.epochs_done
            if r.snapshot_epoch >= 0:
                snap_epoch = e0 + r.snapshot_epoch
            if done:
                hist._record(e0, epoch_loss[:done], dt / done,
                             n * done / dt if dt > 0 else math.inf, lrs[:done])
            pending = None
            samples_seen += done * n
            if r.exc is not None:
                hist.stop_reason = ("interrupted" if isinstance(r.exc, KeyboardInterrupt)
                                    else "error")
                raise r.exc
            if r.diverged:
                _diverged(net, hist, snapshot, snap_epoch, e0 + r.bad_epoch,
                          r.bad_step, on_divergence)
                break
            e0 += done
            if per_epoch and done and _epoch_end(net, hist, e0 - 1, val, cbs):
                hist.stop_reason = ("early_stopping" if early_stopping and
                                    early_stopping.stopped else "callback")
                break
            if progress is not None:
                progress.epoch_end(e0, hist.last_loss(),
                                   (hist.val_loss[-1], hist.val_metric[-1])
                                   if val is not None and hist.val_loss else None)
    except KeyboardInterrupt:
        # between native chunks too: same outcome as inside the loop; and a
        # Ctrl-C that lands in Python just after a chunk's native run, before
        # its epochs were recorded, does not drop them (the parameters have
        # moved): the run wrote each epoch it finished into epoch_loss, NaN
        # past them
        if pending is not None and not (hist._chunks
                                        and hist._chunks[-1][0] == pending[0]):
            pe0, ploss, plrs, pt0 = pending
            ok = np.isfinite(ploss)
            done = len(ok) if ok.all() else int(ok.argmin())
            if done:
                dt = time.perf_counter() - pt0
                hist._record(pe0, ploss[:done], dt / done,
                             n * done / dt if dt > 0 else math.inf, plrs[:done])
        hist.stop_reason = "interrupted"
        raise
    finally:
        if progress is not None:
            progress.close()
        for cb in cbs:
            if hasattr(cb, "on_train_end"):
                cb.on_train_end(net)
        if early_stopping:
            hist.best_epoch = early_stopping.best_epoch
    return hist


def _diverged(net, hist, snapshot, snap_epoch, bad_epoch, bad_step, on_divergence):
    """A native fit stopped at a step whose loss was not finite: the
    parameters back to the snapshot (of epoch snap_epoch, None: from before
    the fit), the optimizer state dropped (it saw the bad run), then
    FloatingPointError or a RuntimeWarning naming the step."""
    hist.stop_reason = "diverged"
    net.params[...] = snapshot
    where = (f"the start of epoch {snap_epoch}" if snap_epoch is not None
             else "their values before fit")
    msg = (f"training diverged: the loss became non-finite at epoch "
           f"{bad_epoch}, step {bad_step}; parameters restored to {where}")
    net._opt_state = None
    if on_divergence == "raise":
        raise FloatingPointError(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=3)


def _epoch_end(net, hist, epoch, val, cbs):
    """Per-epoch Python work after epoch `epoch`: validation loss and metric
    into hist, then the callbacks with the logs.  True if one asks to stop
    (all callbacks still see the epoch)."""
    logs = {"loss": hist.last_loss()}
    if val is not None:
        vl, vm = _evaluate(net, *val)
        logs["val_loss"], logs["val_metric"] = vl, vm
        hist.val_loss.append(vl)
        hist.val_metric.append(vm)
    stop = False
    for cb in cbs:
        f = cb.on_epoch_end if hasattr(cb, "on_epoch_end") else cb
        stop = bool(f(epoch, dict(logs))) or stop
    return stop


def _evaluate(net, Xv, yv):
    """(loss, metric) on validation data: accuracy for classification
    losses, R^2 for regression."""
    if net._core is None:
        loss = net.loss(Xv, yv)
    elif isinstance(Xv, np.ndarray):
        loss = net._core.loss(Xv, yv, None, net._scale(len(Xv), None))
    else:                                   # CSRInput
        loss = net._core.loss_csr(Xv, yv, None, net._scale(Xv.shape[0], None))
    p = net.forward(Xv)
    if net.loss_name == "softmax_ce":
        metric = float(np.mean(p.argmax(1) == yv.argmax(1)))
    elif net.loss_name == "bce":
        metric = float(np.mean((p > 0.5) == (yv > 0.5)))
    else:
        ss_res = float(((yv - p) ** 2).sum())
        ss_tot = float(((yv - yv.mean(0)) ** 2).sum())
        metric = 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0
    return float(loss), metric


def _fit_reference(net, X, y, sw, epochs, batch, opt, schedule, rng, use_order,
                   val, cbs, on_divergence, drop_seed=None):
    """The same loop in NumPy (backend='reference'), epoch by epoch."""
    from fastnn import reference as ref
    hist = History()
    net.history = hist
    state = None
    for cb in cbs:
        if hasattr(cb, "on_train_begin"):
            cb.on_train_begin(net)
    X = net._dense_for_reference(X)
    n = len(X)
    try:
        for e in range(epochs):
            lr = schedule(e, opt.lr, e * n)
            order = rng.permutation(n)[None] if use_order else None
            t0 = time.perf_counter()
            try:
                p, losses, state = ref.fit(
                    net.specs(), net.loss_name, net.params, net.n_weights, X, y,
                    [lr], batch, order, opt.kind, getattr(opt, "momentum", 0.9),
                    getattr(opt, "beta1", 0.9), getattr(opt, "beta2", 0.999),
                    getattr(opt, "eps", 1e-8), opt.weight_decay, False, sw, state,
                    loss_param=net.loss_param, dropout=net.dropout_rates,
                    drop_seed=drop_seed, epoch0=e)
            except FloatingPointError as exc:
                hist.stop_reason = "diverged"
                if on_divergence == "raise":
                    raise
                warnings.warn(str(exc), RuntimeWarning, stacklevel=3)
                break
            dt = time.perf_counter() - t0
            net.params[...] = p
            hist._record(e, losses[:1], dt, n / dt if dt > 0 else math.inf, [lr])
            if _epoch_end(net, hist, e, val, cbs):
                hist.stop_reason = "callback"
                break
    finally:
        for cb in cbs:
            if hasattr(cb, "on_train_end"):
                cb.on_train_end(net)
    return hist
