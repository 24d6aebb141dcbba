"""Run under mpiexec by tests/test_mpi.py: what every rank sees when the
input is bad or a rank fails.

usage: python failures.py OUTDIR MODE
  recoverable  bad input and errors every rank survives, one after another,
               each followed by a normal fit (the ranks stay in step)
  stall        rank 1 stops answering inside step 2 of epoch 0
  no_fit       rank 1 fails before it calls fit
  die          rank 1 exits the process in the middle of the fit
Each rank writes {case: outcome} as JSON to OUTDIR/rank<r>.json (as far as
it gets); the test asserts on them.
"""
import json
import os
import sys
import time

import numpy as np
from mpi4py import MPI

import fastnn
import fastnn.distributed as dist
from fastnn.distributed import Communicator, DistributedError

comm = MPI.COMM_WORLD
R, N = comm.rank, comm.size
OUT, MODE = sys.argv[1], sys.argv[2]
results = {}


def save():
    with open(os.path.join(OUT, f"rank{R}.json"), "w") as f:
        json.dump(results, f)


def net_(hidden=8, dtype=np.float64, n_in=None):
    return fastnn.Network([fastnn.Dense(hidden, "tanh"), fastnn.Dense(1)],
                          n_in=n_in, seed=R, dtype=dtype)


rng = np.random.default_rng(R)
X = rng.standard_normal((20, 4))
Y = rng.standard_normal((20, 1))


def outcome(fn):
    """{'type', 'message', ...} of what fn raised, or {'type': None}."""
    try:
        fn()
    except BaseException as exc:           # noqa: BLE001 - recorded for the test
        d = {"type": type(exc).__name__, "message": str(exc)}
        for a in ("rank", "epoch", "step"):
            if hasattr(exc, a):
                d[a] = getattr(exc, a)
        return d
    return {"type": None}


def in_step_after(case):
    """A normal fit right after a case: the ranks are still in step."""
    n = net_()
    n.fit(X, Y, epochs=1, batch_size=5, comm=comm)
    results[case]["then_ok"] = bool(np.isfinite(n.params).all())


def patch_local_grad(on_rank, epoch, step, action):
    """Make _Loop._local_grad run action() on one rank at (epoch, step)."""
    orig = dist._Loop._local_grad

    def local_grad(self, order, k, scale):
        if R == on_rank and self.chan.epoch == epoch and k == step:
            action()
        return orig(self, order, k, scale)
    dist._Loop._local_grad = local_grad
    return orig


if MODE == "recoverable":
    # unbuilt networks, a different number of features on rank 1
    n = net_()
    Xf = np.hstack([X, X[:, :1]]) if R == 1 else X
    results["features"] = outcome(lambda: n.fit(Xf, Y, epochs=1, comm=comm))
    results["features"]["unbuilt_after"] = not n.built
    in_step_after("features")

    # built networks; rank 1's y has the wrong number of rows
    n = net_(n_in=4)
    before = n.params.copy()
    Yr = Y[:-1] if R == 1 else Y
    results["rows"] = outcome(lambda: n.fit(X, Yr, epochs=1, comm=comm))
    results["rows"]["unchanged"] = bool(np.array_equal(before, n.params))
    in_step_after("rows")

    # NaN in rank 1's X
    Xn = X.copy()
    if R == 1:
        Xn[3, 2] = np.nan
    results["nan"] = outcome(lambda: net_().fit(Xn, Y, epochs=1, comm=comm))
    in_step_after("nan")

    # a bad argument on rank 1 only
    results["argument"] = outcome(lambda: net_().fit(X, Y, epochs=-1 if R else 1,
                                                     comm=comm))
    in_step_after("argument")

    # settings that differ: batch size, layer width, dtype
    results["batch"] = outcome(lambda: net_().fit(X, Y, epochs=1, batch_size=4 + R,
                                                  comm=comm))
    in_step_after("batch")
    results["layers"] = outcome(lambda: net_(hidden=8 + R).fit(X, Y, comm=comm))
    in_step_after("layers")
    results["dtype"] = outcome(lambda: net_(dtype=np.float32 if R else np.float64)
                               .fit(X, Y, comm=comm))
    in_step_after("dtype")

    # a callback raising on rank 1 after epoch 1
    def cb(e, logs):
        if R == 1 and e == 1:
            raise RuntimeError("callback failed on purpose")
    results["callback"] = outcome(lambda: net_().fit(X, Y, epochs=4, batch_size=5,
                                                     callbacks=[cb], comm=comm))
    in_step_after("callback")

    # an error inside rank 1's step 2 of epoch 1
    def boom():
        raise MemoryError("step failed on purpose")
    orig = patch_local_grad(1, 1, 2, boom)
    results["step"] = outcome(lambda: net_().fit(X, Y, epochs=3, batch_size=5,
                                                 comm=comm))
    dist._Loop._local_grad = orig
    in_step_after("step")

    # divergence: every rank raises, parameters back to the epoch's start
    n = net_(n_in=4)
    n.fit(X, Y, epochs=1, batch_size=5, comm=comm)
    start = n.params.copy()
    Yd = Y * 1e200 if R == 1 else Y     # rank 1's loss overflows at step 0
    results["diverged"] = outcome(lambda: n.fit(X, Yd, epochs=2, batch_size=5,
                                                comm=comm))
    results["diverged"]["restored"] = bool(np.array_equal(start, n.params))
    in_step_after("diverged")
    save()

elif MODE == "stall":
    patch_local_grad(1, 0, 2, lambda: time.sleep(3600))
    t0 = time.monotonic()
    results["stall"] = outcome(lambda: net_().fit(
        X, Y, epochs=3, batch_size=5, comm=Communicator(comm, timeout=2.0)))
    results["stall"]["seconds"] = time.monotonic() - t0
    save()
    if R == 0:
        comm.Abort(1)           # rank 1 sleeps on: end the job

elif MODE == "no_fit":
    if R == 1:
        save()
        raise SystemExit("rank 1 gives up before calling fit")
    t0 = time.monotonic()
    results["no_fit"] = outcome(lambda: net_().fit(
        X, Y, epochs=1, comm=Communicator(comm, timeout=2.0)))
    results["no_fit"]["seconds"] = time.monotonic() - t0
    save()

elif MODE == "die":
    def cb(e, logs):
        if R == 1 and e == 1:
            os._exit(3)
    results["die"] = outcome(lambda: net_().fit(
        X, Y, epochs=50, batch_size=5, callbacks=[cb],
        comm=Communicator(comm, timeout=60.0)))
    save()

else:
    raise SystemExit(f"unknown mode {MODE!r}")
