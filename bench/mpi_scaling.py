"""Data-parallel fit over MPI ranks vs one process: throughput and the
gradient exchange's share of a step.

The problem: a 200,000 x 50 -> 100 (tanh) -> 1 regression in float64 (5,201
parameters), plain SGD, shuffled, the same global minibatch (512 rows by
default) for every variant:

  fit, 1 thread    net.fit in one process, set_train_threads(1)
  fit, 2 threads   net.fit in one process, minibatches split over 2 threads
                   (what one process does on this machine by default)
  mpi, 1 rank      the distributed loop on one rank (batch 512)
  mpi, N ranks     N ranks of 100,000 rows each (batch 512 / N per rank)

Every process runs OpenBLAS with one thread (OPENBLAS_NUM_THREADS=1) and,
in the MPI runs, set_train_threads(1): each rank owns one core.  Rounds
alternate between the variants; medians over rounds with the range.  The
exchange's share is history.comm_seconds / fit time, taken inside the loop
(it includes waiting for the slower rank).  A micro-benchmark times the
exchange alone next to MPI_Allreduce on the same buffer.

Each process runs one untimed warm-up fit first.  Before timing, each MPI
launch checks that its distributed fit equals the
single-process fit with the same global minibatches to 1e-12.

    python bench/mpi_scaling.py                    # driver: launches mpiexec
    python bench/mpi_scaling.py --rounds 5 --ranks 2 --epochs 2
    mpiexec -n 2 python bench/mpi_scaling.py --worker    # one launch, JSON out
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _data(rows, features, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, features))
    w = rng.standard_normal((features, 1)) / np.sqrt(features)
    y = np.tanh(X @ w) + 0.1 * rng.standard_normal((rows, 1))
    return X, y


def _net(features, hidden):
    import fastnn
    return fastnn.Network([fastnn.Dense(hidden, "tanh"), fastnn.Dense(1)],
                          n_in=features, seed=0)


def _check(comm, features, hidden):
    """Distributed fit == one process over the same global minibatches."""
    import numpy as np
    from fastnn.distributed import global_order
    N, r = comm.Get_size(), comm.Get_rank()
    X, y = _data(64 * N, features, seed=1)
    mine = slice(64 * r, 64 * (r + 1))
    a = _net(features, hidden)
    a.fit(X[mine], y[mine], epochs=2, batch_size=16, lr=0.01, shuffle=False,
          comm=comm)
    order, _ = global_order([64] * N, 16, 1, 0, shuffle=False)
    b = _net(features, hidden)
    b.fit(X[order[0]], y[order[0]], epochs=2, batch_size=16 * N, lr=0.01,
          shuffle=False)
    err = float(np.max(np.abs(a.params - b.params)) / np.max(np.abs(b.params)))
    if not err <= 1e-12:
        raise SystemExit(f"check failed: distributed vs one process differ by {err:.3g}")
    return err


def _exchange_bench(comm, P, reps):
    """Seconds per exchange of a P-element float64 buffer: fastnn's
    rank-ordered exchange and MPI_Allreduce (the implementation's order)."""
    import numpy as np
    from mpi4py import MPI
    from fastnn.distributed import Communicator, _Channel
    chan = _Channel(Communicator(comm))
    chan.open()
    g = np.ones(P)
    out = {}
    for name in ("fastnn", "MPI_Allreduce", "fastnn"):
        comm.Barrier()
        t0 = time.perf_counter()
        for _ in range(reps):
            if name == "fastnn":
                chan.allreduce(g, [0.0, 0.0], "benchmark")
            else:
                comm.Allreduce(MPI.IN_PLACE, g)
        out[name] = (time.perf_counter() - t0) / reps   # the second fastnn run kept
    chan.close()
    return out


def worker(args):
    """One mpiexec launch: the check, then the timed distributed fits."""
    import numpy as np
    from mpi4py import MPI
    import fastnn
    fastnn.set_train_threads(1)
    comm = MPI.COMM_WORLD
    N, r = comm.Get_size(), comm.Get_rank()
    err = _check(comm, args.features, args.hidden)
    X, y = _data(args.rows, args.features)
    per = args.rows // N
    X, y = X[r * per:(r + 1) * per].copy(), y[r * per:(r + 1) * per].copy()
    b = args.batch // N
    # untimed warm-up: first touches of the data, BLAS and MPI buffers
    _net(args.features, args.hidden).fit(X[:20 * b], y[:20 * b], epochs=1,
                                         batch_size=b, lr=0.01, seed=0, comm=comm)
    runs = []
    for rep in range(args.repeats):
        net = _net(args.features, args.hidden)
        comm.Barrier()
        t0 = time.perf_counter()
        h = net.fit(X, y, epochs=args.epochs, batch_size=b, lr=0.01, seed=rep,
                    comm=comm)
        t = time.perf_counter() - t0
        times = comm.gather((t, h.comm_seconds), root=0)
        if r == 0:
            wall = max(x[0] for x in times)
            runs.append({"seconds": wall, "comm_share": max(x[1] / x[0] for x in times),
                         "loss": h.loss[-1]})
    P = _net(args.features, args.hidden).n_params
    ex = big = None
    if N > 1:
        ex = _exchange_bench(comm, P, args.exchange_reps)
        big = _exchange_bench(comm, 1 << 20, max(5, args.exchange_reps // 100))
    if r == 0:
        print(json.dumps({"ranks": N, "check_err": err, "runs": runs, "exchange": ex,
                          "exchange_1M": big, "n_params": P}), flush=True)


def baseline(args, threads):
    """The plain fit in this process (no MPI), `threads` train threads."""
    import fastnn
    fastnn.set_train_threads(threads)
    X, y = _data(args.rows, args.features)
    _net(args.features, args.hidden).fit(X[:20 * args.batch], y[:20 * args.batch],
                                         epochs=1, batch_size=args.batch, lr=0.01)
    runs = []
    for rep in range(args.repeats):
        net = _net(args.features, args.hidden)
        t0 = time.perf_counter()
        h = net.fit(X, y, epochs=args.epochs, batch_size=args.batch, lr=0.01, seed=rep)
        runs.append({"seconds": time.perf_counter() - t0, "loss": h.loss[-1]})
    return runs


def _launch(args, n):
    mpiexec = Path(sys.executable).parent / "mpiexec"
    cmd = [str(mpiexec) if mpiexec.exists() else "mpiexec", "-n", str(n),
           "--oversubscribe"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    cmd += [sys.executable, __file__, "--worker"] + _forward(args)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT),
                                                        os.environ.get("PYTHONPATH")])))
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise SystemExit(f"mpiexec -n {n} failed:\n{p.stdout}\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _forward(args):
    return [f"--rows={args.rows}", f"--features={args.features}",
            f"--hidden={args.hidden}", f"--batch={args.batch}",
            f"--epochs={args.epochs}", f"--repeats={args.repeats}",
            f"--exchange-reps={args.exchange_reps}"]


def _baseline_proc(args, threads):
    """A baseline in a fresh process with one BLAS thread, like the ranks."""
    code = ("import sys, json; sys.path.insert(0, %r); sys.argv = %r; "
            "import importlib.util as u; s = u.spec_from_file_location('m', %r); "
            "m = u.module_from_spec(s); s.loader.exec_module(m); "
            "print(json.dumps(m.baseline(m.parse(), %d)))"
            % (str(ROOT), [__file__] + _forward(args), __file__, threads))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                       text=True, timeout=1800)
    if p.returncode != 0:
        raise SystemExit(f"baseline failed:\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _med(xs):
    return statistics.median(xs), min(xs), max(xs)


def driver(args):
    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
    from harness.machine import header_lines
    for line in header_lines(1):
        print("#", line)
    print("# (the header is the driver's; every timed process runs OpenBLAS with "
          "OPENBLAS_NUM_THREADS=1)")
    ranks = [1] + [n for n in args.ranks if n != 1]
    samples = args.rows * args.epochs
    steps = args.epochs * -(-(args.rows // max(ranks) * max(ranks)) // args.batch)
    res = {}
    for rnd in range(args.rounds):
        for name, fn in ([("fit, 1 thread", lambda: _baseline_proc(args, 1)),
                          ("fit, 2 threads", lambda: _baseline_proc(args, 2))]
                         + [(f"mpi, {n} rank{'s' if n > 1 else ''}",
                             (lambda n=n: _launch(args, n))) for n in ranks]):
            out = fn()
            runs = out["runs"] if isinstance(out, dict) else out
            d = res.setdefault(name, {"seconds": [], "comm_share": [], "extra": None})
            d["seconds"] += [x["seconds"] for x in runs]
            d["comm_share"] += [x.get("comm_share", 0.0) for x in runs]
            if isinstance(out, dict):
                d["extra"] = out
        print(f"# round {rnd + 1}/{args.rounds} done", flush=True)
    print(f"\n{args.rows} x {args.features} -> {args.hidden} -> 1, float64, SGD, "
          f"global minibatch {args.batch}, {args.epochs} epochs per fit, "
          f"{args.rounds} rounds x {args.repeats} fits; median [min, max]")
    base = statistics.median(res["mpi, 1 rank"]["seconds"])
    print(f"{'variant':<16} {'samples/s':>22} {'steps/s':>10} {'vs mpi 1 rank':>14} "
          f"{'exchange share':>22}")
    for name, d in res.items():
        m, lo, hi = _med(d["seconds"])
        sps = samples / m
        share = ""
        if name.startswith("mpi") and not name.endswith(" 1 rank"):
            sm, slo, shi = _med(d["comm_share"])
            share = f"{sm:6.1%} [{slo:.1%}, {shi:.1%}]"
        print(f"{name:<16} {sps:>10.4g} [{samples / hi:.3g}, {samples / lo:.3g}] "
              f"{steps / m:>10.4g} {base / m:>13.2f}x {share:>22}")
    for name, d in res.items():
        ex = (d["extra"] or {}).get("exchange")
        if ex:
            print(f"exchange of {d['extra']['n_params']} float64 ({name}): fastnn "
                  f"{ex['fastnn'] * 1e6:.1f} us, MPI_Allreduce "
                  f"{ex['MPI_Allreduce'] * 1e6:.1f} us per call")
            big = d["extra"]["exchange_1M"]
            print(f"exchange of 2^20 float64 (8 MiB) ({name}): fastnn "
                  f"{big['fastnn'] * 1e3:.2f} ms ({8 * 2**20 / big['fastnn'] / 1e9:.2f} "
                  f"GB/s of buffer), MPI_Allreduce {big['MPI_Allreduce'] * 1e3:.2f} ms")
    print(f"checked before timing: distributed == one process to "
          f"{max(d['extra']['check_err'] for d in res.values() if d['extra']):.1e}")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", action="store_true", help="run as one mpiexec launch")
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--features", type=int, default=50)
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--batch", type=int, default=512, help="global minibatch rows")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="fits per launch")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ranks", type=int, nargs="+", default=[2])
    p.add_argument("--exchange-reps", type=int, default=2000)
    return p.parse_args(argv)


if __name__ == "__main__":
    a = parse()
    if a.worker:
        worker(a)
    else:
        driver(a)
