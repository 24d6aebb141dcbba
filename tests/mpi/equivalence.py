"""Run under mpiexec by tests/test_mpi.py: distributed fits against their
single-process equivalents.

Every rank generates the same full data set, keeps its own rows, trains with
comm=MPI.COMM_WORLD, and computes the single-process equivalent on the full
data itself (fastnn's public fit where the global order is a plain one,
fastnn.reference.fit with fastnn.distributed.global_order otherwise).  Each
rank writes {case: numbers} as JSON to OUTDIR/rank<r>.json; the test
asserts on them.

usage: python equivalence.py OUTDIR
"""
import hashlib
import json
import os
import sys

import numpy as np
from mpi4py import MPI

import fastnn
from fastnn import reference as ref
from fastnn.distributed import Checkpoint, Communicator, global_order

comm = MPI.COMM_WORLD
R, N = comm.rank, comm.size
OUT = sys.argv[1]
results = {}


def rel(a, b):
    """max |a - b| relative to max |b|."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def digest(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def data(n_per, n_in=6, n_out=2, seed=0, classes=None, counts=None):
    """Full data (rank-stacked) and this rank's slice."""
    counts = counts or [n_per] * N
    rng = np.random.default_rng(seed)
    n = sum(counts)
    X = rng.standard_normal((n, n_in))
    if classes:
        Y = rng.integers(0, classes, n)
    else:
        Y = rng.standard_normal((n, n_out))
    lo = sum(counts[:R])
    return X, Y, slice(lo, lo + counts[R])


def net_(n_out=2, hidden=8, dtype=np.float64, loss="mse", out="identity",
         backend="native"):
    return fastnn.Network([fastnn.Dense(hidden, "tanh"), fastnn.Dense(n_out, out)],
                          loss=loss, n_in=6, seed=1, dtype=dtype, backend=backend)


def record(name, dist, single, hist=None, single_loss=None, **extra):
    d = {"params_rel": rel(dist.params, single), "digest": digest(dist.params)}
    if hist is not None:
        d["loss_rel"] = rel(hist.loss, single_loss)
    d.update(extra)
    results[name] = d


# 1-2. plain global order (no shuffling): the public single-process fit
for name, kw in [
        ("sgd_public", dict(optimizer="sgd", lr=0.05)),
        ("momentum_l2_invscaling_public",
         dict(optimizer=fastnn.SGD(0.05, momentum=0.9, weight_decay=1e-3),
              lr_schedule="invscaling")),
        ("fullbatch_public", dict(optimizer="adam", lr=0.01, batch=None))]:
    X, Y, mine = data(23)
    b = kw.pop("batch", 5)
    dist = net_()
    h = dist.fit(X[mine], Y[mine], epochs=4, batch_size=b, shuffle=False, comm=comm,
                 **kw)
    order, _ = global_order([23] * N, b, 1, 0, shuffle=False)
    single = net_()
    hs = single.fit(X[order[0]], Y[order[0]], epochs=4, shuffle=False,
                    batch_size=None if b is None else N * b, **kw)
    record(name, dist, single.params, h, hs.loss)

# 3-4, 6. shuffled: fastnn.reference.fit over global_order's rows
for name, opt, loss, sw in [("adam_shuffled", "adam", "mse", False),
                            ("nesterov_sample_weight", "nesterov", "mse", True),
                            ("sse_sgd_shuffled", "sgd", "sse", False)]:
    X, Y, mine = data(29, seed=2)
    w = np.random.default_rng(5).uniform(0.2, 2.0, len(X)) if sw else None
    dist = net_(loss=loss)
    lr = 0.002 if loss == "sse" else 0.03
    h = dist.fit(X[mine], Y[mine], epochs=3, batch_size=4, optimizer=opt, lr=lr,
                 seed=11, sample_weight=None if w is None else w[mine], comm=comm)
    order, _ = global_order([29] * N, 4, 3, 11)
    s = net_(loss=loss)
    p, losses, _ = ref.fit(s.specs(), loss, s.params, s.n_weights, X, Y, [lr] * 3,
                           N * 4, order, opt, sw=w)
    record(name, dist, p, h, losses)

# rank 0's network is built with its own weights, the others' are not built:
# everyone starts from rank 0's
X, Y, mine = data(18, seed=14)
order, _ = global_order([18] * N, 3, 1, 0, shuffle=False)
start = np.random.default_rng(99).standard_normal(net_().n_params) * 0.3
if R == 0:
    dist = net_()
    dist.params[...] = start
else:
    dist = fastnn.Network([fastnn.Dense(8, "tanh"), fastnn.Dense(2)], seed=R + 7)
h = dist.fit(X[mine], Y[mine], epochs=2, batch_size=3, lr=0.05, shuffle=False,
             comm=comm)
single = net_()
single.params[...] = start
hs = single.fit(X[order[0]], Y[order[0]], epochs=2, batch_size=3 * N, lr=0.05,
                shuffle=False)
record("rank0_start", dist, single.params, h, hs.loss)

# 5. Adam state carried over two fits, plain order
X, Y, mine = data(20, seed=3)
dist, single = net_(), net_()
order, _ = global_order([20] * N, 3, 1, 0, shuffle=False)
for _ in range(2):
    h = dist.fit(X[mine], Y[mine], epochs=2, batch_size=3, optimizer="adam", lr=0.02,
                 shuffle=False, comm=comm)
    hs = single.fit(X[order[0]], Y[order[0]], epochs=2, batch_size=3 * N,
                    optimizer="adam", lr=0.02, shuffle=False)
record("adam_two_fits", dist, single.params, h, hs.loss,
       t=dist._opt_state["t"], t_single=single._opt_state["t"])

# 7. classification, validation rows on rank 0 only, early stopping
X, Y, mine = data(25, seed=4, classes=3)
Xv, Yv, _ = data(31, seed=6, classes=3)
mk = lambda: net_(n_out=3, loss="softmax_ce", out="softmax")   # noqa: E731
order, _ = global_order([25] * N, 6, 1, 0, shuffle=False)
dist, single = mk(), mk()
es, es_s = fastnn.EarlyStopping(patience=2), fastnn.EarlyStopping(patience=2)
h = dist.fit(X[mine], Y[mine], epochs=12, batch_size=6, lr=0.5, shuffle=False,
             validation_data=(Xv, Yv) if R == 0 else None, early_stopping=es,
             comm=comm)
hs = single.fit(X[order[0]], Y[order[0]], epochs=12, batch_size=6 * N, lr=0.5,
                shuffle=False, validation_data=(Xv, Yv), early_stopping=es_s)
record("softmax_val_rank0", dist, single.params, h, hs.loss,
       val_loss_rel=rel(h.val_loss, hs.val_loss),
       val_metric_rel=rel(h.val_metric, hs.val_metric),
       epochs=len(h.loss), epochs_single=len(hs.loss),
       stop=h.stop_reason, stop_single=hs.stop_reason)

# 8. regression, validation rows spread over the ranks: global R^2
X, Y, mine = data(21, seed=7)
Xv, Yv, vmine = data(13, seed=8)
Yv = Yv * 3 + 5                     # a mean far from 0 for the R^2 sums
dist, single = net_(), net_()
order, _ = global_order([21] * N, 7, 1, 0, shuffle=False)
h = dist.fit(X[mine], Y[mine], epochs=3, batch_size=7, lr=0.1, shuffle=False,
             validation_data=(Xv[vmine], Yv[vmine]), comm=comm)
hs = single.fit(X[order[0]], Y[order[0]], epochs=3, batch_size=7 * N, lr=0.1,
                shuffle=False, validation_data=(Xv, Yv))
record("regression_val_spread", dist, single.params, h, hs.loss,
       val_loss_rel=rel(h.val_loss, hs.val_loss),
       val_metric_rel=rel(h.val_metric, hs.val_metric))

# 9. uneven row counts: global steps of varying size, replayed with the
# reference network's gradient and plain SGD
counts = [17 + 4 * r for r in range(N)]
X, Y, mine = data(0, seed=9, counts=counts)
dist = net_()
h = dist.fit(X[mine], Y[mine], epochs=3, batch_size=5, lr=0.05, seed=4, comm=comm)
order, sizes = global_order(counts, 5, 3, 4)
s = net_()
p = s.params.astype(np.float64)
losses = []
for e in range(3):
    pos, tot = 0, 0.0
    for k in sizes:
        rows = order[e, pos:pos + k]
        pos += k
        L, g = ref.net_loss_grad(s.specs(), "mse", p, X[rows], Y[rows], 1.0 / k)
        p = p - 0.05 * g
        tot += L * k
    losses.append(tot / pos)
record("uneven_rows", dist, p, h, losses, steps=len(sizes))

# 10. float32 (tolerance of float32) and the reference backend
X, Y, mine = data(24, seed=10)
order, _ = global_order([24] * N, 4, 2, 3)
for name, dt, backend in [("float32", np.float32, "native"),
                          ("reference_backend", np.float64, "reference")]:
    dist = net_(dtype=dt, backend=backend)
    h = dist.fit(X[mine], Y[mine], epochs=2, batch_size=4, optimizer="momentum",
                 lr=0.05, seed=3, comm=comm)
    s = net_()
    p, losses, _ = ref.fit(s.specs(), "mse", s.params, s.n_weights, X, Y, [0.05] * 2,
                           4 * N, order, "momentum")
    record(name, dist, p, h, losses)

# 11. reproducible, and both reductions give the same bits
# (float32 with an odd parameter count too: 6*9 + 9 + 9*2 + 2 = 83)
X, Y, mine = data(30, seed=12)
digests = {}
for dt in (np.float64, np.float32):
    for red in ("allgather", "reduce_scatter", "allgather"):
        dist = net_(hidden=9, dtype=dt)
        dist.fit(X[mine], Y[mine], epochs=2, batch_size=4, optimizer="adam", lr=0.01,
                 seed=8, comm=Communicator(comm, reduction=red))
        digests.setdefault(f"{red}_{np.dtype(dt).name}", []).append(digest(dist.params))
results["reductions"] = digests

# 12. rank 0 writes the checkpoints; they hold the parameters
path = os.path.join(OUT, "ckpt-{epoch}.fnn")
X, Y, mine = data(16, seed=13)
dist = net_()
cp = Checkpoint(path, every=2)
dist.fit(X[mine], Y[mine], epochs=4, batch_size=4, lr=0.05, seed=1, callbacks=[cp],
         comm=comm)
comm.Barrier()
last = os.path.join(OUT, "ckpt-3.fnn")
loaded = fastnn.load(last) if os.path.exists(last) else None
results["checkpoint"] = {
    "saved": cp.saved, "files": sorted(f for f in os.listdir(OUT) if f.endswith(".fnn")),
    "params_equal": bool(loaded is not None and np.array_equal(loaded.params,
                                                               dist.params))}

with open(os.path.join(OUT, f"rank{R}.json"), "w") as f:
    json.dump(results, f)
