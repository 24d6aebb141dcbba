"""``python -m fastnn bench``: fastnn next to its peers, in training steps
per second.

Every peer (harness.peers) trains each workload (harness.workloads) from
the same initial weights on the same data, with the same batch size and
learning rate.  The report starts with the machine, the versions and every
BLAS in use with its kernel and threads (harness.machine), then gives
steps/second per workload and peer (median over timed calls, and the best
call) and fastnn's speed-up over each peer.  --plot draws the same numbers
as a bar chart (docs/bench.png by default).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from harness.machine import DEFAULT_THREADS, header_lines, limit_threads, machine_info
from harness.peers import PEERS
from harness.workloads import WORKLOADS, initial_weights, make_data

# the repository: bench/harness/suite.py -> ../..
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_PLOT = os.path.join("docs", "bench.png")       # under the repository
PLOT_NEEDS = ("--plot needs matplotlib, an optional dependency: pip install "
              "matplotlib (or pip install 'fastnn[plot]')")


def calibrate(run, steps_per_epoch, target, max_epochs=1 << 20):
    """Warm run(epochs) up, then find the epochs per call for which a call
    takes about `target` seconds.  Returns (epochs, seconds per step of the
    last calibration call)."""
    clock = time.perf_counter
    run(1)                                     # warm-up (JIT, caches, pages)
    epochs = 1
    while True:
        t0 = clock()
        run(epochs)
        dt = clock() - t0
        if dt >= target or epochs >= max_epochs:
            return epochs, dt / (epochs * steps_per_epoch)
        epochs = min(max_epochs, max(2 * epochs,
                                     int(epochs * target / max(dt, 1e-6) * 1.2)))


SETTLE_SECONDS = 0.4     # idle time before a group: spinning pools go to sleep
                         # (OpenBLAS's after 0.1-0.3 s on this machine)


def _time_group(items, wl, budget, min_repeats):
    """Round-robin timed calls over items [result, run, epochs] until each
    has had `budget` seconds and min_repeats calls (or 3x budget)."""
    clock = time.perf_counter
    state = [[r, run, epochs, [], 0.0] for r, run, epochs in items]
    while state:
        for item in list(state):
            r, run, epochs, times, spent = item
            try:
                t0 = clock()
                run(epochs)
                dt = clock() - t0
            except Exception as e:
                r["error"] = f"{type(e).__name__}: {e}"
                state.remove(item)
                continue
            times.append(dt / (epochs * wl.steps_per_epoch))
            item[4] = spent = spent + dt
            if ((len(times) >= min_repeats and spent >= budget)
                    or (spent > 3 * budget and len(times) >= 2)):
                state.remove(item)
                r.update({"median": float(np.median(times)),
                          "min": float(np.min(times)), "repeats": len(times),
                          "epochs_per_call": epochs,
                          "steps_per_sec": 1.0 / float(np.median(times)),
                          "steps_per_sec_best": 1.0 / float(np.min(times))})


def run_suite(workloads, peers, budget, min_repeats, threads, seed=0, out=print):
    """Time every (workload, peer) pair; returns a list of result dicts.

    Peers are grouped by the thread pool their work runs on (fastnn's fit,
    with its helper thread; numpy's OpenBLAS: fastnn's train_step, the NumPy
    loop, the reference, scikit-learn; torch's; JAX's).  Within a group the
    timed calls are interleaved round-robin, so a burst of load from
    elsewhere on a shared machine hits every peer alike instead of skewing
    one ratio.  Groups run one after the other, after a short idle pause:
    alternating calls between two pools would measure their spinning
    threads starving each other, which no user of one library pays.  Each peer gets about `budget` seconds (at least
    min_repeats calls, at most about 3x budget)."""
    results = []
    for wname in workloads:
        wl = WORKLOADS[wname]
        X, Y = make_data(wl, seed)
        weights = initial_weights(wl, seed)
        out(f"[{wname}] {wl.describe()}")
        groups = {}
        for pname in peers:
            peer = PEERS[pname]
            ok, ver = peer.available()
            r = {"workload": wname, "peer": pname, "version": ver}
            results.append(r)
            if not ok:
                r["skipped"] = ver
                continue
            groups.setdefault(peer.pool, []).append((peer, r))
        for pool, members in groups.items():
            time.sleep(SETTLE_SECONDS)
            items = []
            for peer, r in members:
                try:
                    run = peer.runner(wl, X, Y, weights, seed, threads)
                    epochs, _ = calibrate(run, wl.steps_per_epoch, budget / 5)
                    items.append((r, run, epochs))
                except Exception as e:  # report, keep going
                    r["error"] = f"{type(e).__name__}: {e}"
            _time_group(items, wl, budget, min_repeats)
            for peer, r in members:
                if "error" in r:
                    out(f"  {r['peer']:<12} error: {r['error']}")
                elif "steps_per_sec" in r:
                    out(f"  {r['peer']:<12} {r['steps_per_sec']:>12.4g} steps/s "
                        f"(best {r['steps_per_sec_best']:.4g}; {r['repeats']} "
                        f"calls of {r['epochs_per_call']} epochs)")
    return results


def format_table(results, workloads, peers):
    """The results as a text table: steps/s (median) per workload and peer,
    and fastnn's speed-up over each peer (median ratio, best ratio)."""
    by = {(r["workload"], r["peer"]): r for r in results}
    lines = []
    w0 = max(12, max(len(p) for p in peers) + 1)
    lines.append(f"{'workload':<9}{'peer':<{w0}}{'steps/s':>12}{'best':>12}"
                 f"{'fastnn x (median)':>19}{'(best)':>9}")
    for wname in workloads:
        ref = by.get((wname, "fastnn"), {})
        for pname in peers:
            r = by.get((wname, pname))
            if r is None:
                continue
            lead = f"{wname:<9}{pname:<{w0}}"
            if "skipped" in r:
                lines.append(lead + f"  skipped: {r['skipped']}")
                continue
            if "error" in r:
                lines.append(lead + f"  error: {r['error']}")
                continue
            ratio = ratio_b = ""
            if "steps_per_sec" in ref:
                ratio = f"{ref['steps_per_sec'] / r['steps_per_sec']:.2f}x"
                ratio_b = f"{ref['steps_per_sec_best'] / r['steps_per_sec_best']:.2f}x"
            lines.append(lead + f"{r['steps_per_sec']:>12.4g}"
                         f"{r['steps_per_sec_best']:>12.4g}{ratio:>19}{ratio_b:>9}")
    return lines


def plot(results, workloads, peers, path, title):
    """Grouped bars of steps/s (log scale) per workload, one bar per peer."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(PLOT_NEEDS)
    by = {(r["workload"], r["peer"]): r for r in results}
    shown = [p for p in peers if any("steps_per_sec" in by.get((w, p), {})
                                     for w in workloads)]
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(workloads) + 2), 4.8))
    width = 0.8 / max(1, len(shown))
    for i, p in enumerate(shown):
        xs, ys = [], []
        for j, w in enumerate(workloads):
            r = by.get((w, p), {})
            if "steps_per_sec" in r:
                xs.append(j + (i - (len(shown) - 1) / 2) * width)
                ys.append(r["steps_per_sec"])
        ax.bar(xs, ys, width, label=p)
    ax.set_yscale("log")
    ax.set_xticks(range(len(workloads)))
    ax.set_xticklabels(workloads)
    ax.set_ylabel("training steps / second (median; higher is better)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, ncol=min(4, len(shown)))
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _csv(value, allowed, what):
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {bad or value!r}; choose from {', '.join(allowed)}")
    return items


def parse_args(argv, root=ROOT):
    """The command line of ``python -m fastnn bench``, checked; args.plot
    is None or the path to write (--plot alone: docs/bench.png under root)."""
    ap = argparse.ArgumentParser(
        prog="python -m fastnn bench",
        description="Training steps per second of fastnn and its peers on "
                    "the same workloads, with fastnn's speed-up over each.")
    ap.add_argument("--workloads", default=",".join(WORKLOADS),
                    type=lambda v: _csv(v, list(WORKLOADS), "workload"),
                    help="comma-separated, from: " + ", ".join(
                        f"{k} ({w.describe()})" for k, w in WORKLOADS.items()))
    ap.add_argument("--peers", default=",".join(PEERS),
                    type=lambda v: _csv(v, list(PEERS), "peer"),
                    help="comma-separated, from: " + ", ".join(
                        f"{k} ({p.note})" for k, p in PEERS.items())
                    + "; peers that do not import are skipped")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds of timing per workload and peer (default "
                         "1.5, --quick 0.3); slow peers take at least "
                         "2-3 calls")
    ap.add_argument("--quick", action="store_true",
                    help="short budget and fewer repeats (a quick look)")
    ap.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                    help=f"threads for every BLAS/OpenMP pool and torch "
                         f"(default {DEFAULT_THREADS})")
    ap.add_argument("--seed", type=int, default=0,
                    help="random seed of the data and initial weights")
    ap.add_argument("--plot", nargs="?", const=os.path.join(root, DEFAULT_PLOT),
                    metavar="PATH",
                    help=f"draw the results as a bar chart into PATH (PNG; "
                         f"--plot alone: {DEFAULT_PLOT} in the repository); "
                         f"needs matplotlib")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    if args.budget is None:
        args.budget = 0.3 if args.quick else 1.5
    if args.budget <= 0:
        ap.error("--budget must be > 0")
    args.min_repeats = 2 if args.quick else 3
    if os.environ.get("FASTNN_BENCH_SMOKE") == "1":   # bench/conftest.py
        args.budget, args.min_repeats = 1e-3, 1
    return args


def _print_header(args, info):
    print("\n".join(header_lines(args.threads, info)))
    avail = {p: PEERS[p].available() for p in args.peers}
    vers = [f"{p} {avail[p][1]}" for p in args.peers
            if p in ("torch", "sklearn", "jax") and avail[p][0]]
    if vers:
        jax_note = ("jax" in avail and avail["jax"][0])
        print("peers: " + ", ".join(vers) + " (JAX/XLA keeps its own thread "
              "pool, one thread per core)" * jax_note)
    print(f"budget {args.budget:g} s per workload and peer; steps/s = training "
          f"steps (minibatch updates) per second, median over calls")


def plot_title(info, threads):
    """The chart's title: the CPU, the thread count and the BLAS."""
    fb = info["fastnn_blas"]
    np_pool = next((p for p in info["pools"] or [] if p["owner"] == "numpy"), {})
    return (f"{info['cpu']}, {threads} threads; BLAS: "
            f"{np_pool.get('internal_api', fb.get('source'))} "
            f"{np_pool.get('version', '')} {np_pool.get('architecture', '')} "
            f"(fastnn on {fb.get('source')}'s)")


def main(argv=None, root=ROOT):
    """Entry point of ``python -m fastnn bench``; returns an exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv, root)
    if args.plot:   # fail before the run, not after it
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(PLOT_NEEDS, file=sys.stderr)
            return 2
    for p in args.peers:      # import peers first, so the header names their pools
        ok, why = PEERS[p].available()
        if not ok:
            print(f"peer {p}: skipped, {why}")
    ctl = limit_threads(args.threads)   # noqa: F841 -- keep the limits alive
    info = machine_info(args.threads)
    _print_header(args, info)
    t0 = time.perf_counter()
    results = run_suite(args.workloads, args.peers, args.budget, args.min_repeats,
                        args.threads, args.seed)
    print()
    print("\n".join(format_table(results, args.workloads, args.peers)))
    print(f"'fastnn x' = fastnn steps/s / peer steps/s (ratio of medians, and of "
          f"best calls); total {time.perf_counter() - t0:.0f} s")
    for p in args.peers:
        print(f"  {p}: {PEERS[p].note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "budget": args.budget, "results": results},
                      f, indent=1, default=str)
        print(f"wrote {args.json}")
    if args.plot:
        os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
        plot(results, args.workloads, args.peers, args.plot,
             plot_title(info, args.threads))
        print(f"wrote {args.plot}")
    return 0
