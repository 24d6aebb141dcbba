"""fastnn.sklearn against scikit-learn's MLP on sparse (TF-IDF-like) input,
side by side in one run: fit time and peak memory.

Workloads (X: scipy CSR float64, uniform random columns, density 0.001,
values in [0, 1); y: 3 classes): 2,000 x 100,000 and 20,000 x 100,000,
MLPClassifier(hidden_layer_sizes=(64,), max_iter=5, random_state=0), adam
(scikit-learn's default) and sgd; the fit stops after 5 epochs on both
sides (ConvergenceWarning silenced).

Each fit runs in a fresh Python process of its own (the sides alternate,
round after round), which reports its fit time and its peak resident
memory (resource.getrusage(RUSAGE_SELF).ru_maxrss) at the end, and its
resident memory before the fit (data made, libraries imported): the peak
counts everything the process held at once, the data included, as a user
sees it.  Targets: peak memory at most scikit-learn's, fit >= 4x faster.

Before timing, a small case checks that both give the same coefs_ (1e-8
relative) after 10 epochs on sparse input, sgd and adam.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest bench/bench_sparse.py --benchmark-only
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_sparse.py --rows 2000,20000 --rounds 3

The second form prints the same table without pytest.  FASTNN_BENCH_THREADS
(default 2) sets the BLAS threads of both sides; FASTNN_BENCH_SMOKE=1 (see
bench/conftest.py) shrinks the workloads 100x in rows and 20x in columns,
one round, to check that the commands run.
"""
import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
N_COLS, DENSITY, N_CLASSES, HIDDEN, EPOCHS = 100_000, 0.001, 3, (64,), 5
THREADS = int(os.environ.get("FASTNN_BENCH_THREADS", "2"))
SMOKE = os.environ.get("FASTNN_BENCH_SMOKE") == "1"
if SMOKE:
    N_COLS = N_COLS // 20


def _smoke(n_rows, rounds):
    return (max(50, n_rows // 100), 1) if SMOKE else (n_rows, rounds)


def make_data(n_rows, n_cols=N_COLS, density=DENSITY, seed=0):
    """A CSR float64 X of about density * n_cols entries a row (random
    columns, values in [0, 1)) and labels y in 0..N_CLASSES-1."""
    import scipy.sparse as sps
    rng = np.random.default_rng(seed)
    X = sps.random(n_rows, n_cols, density=density, format="csr",
                   random_state=rng, dtype=np.float64)
    y = rng.integers(0, N_CLASSES, n_rows)
    return X, y


def _estimator(side, solver, max_iter):
    if side == "sklearn":
        from sklearn.neural_network import MLPClassifier
    else:
        from fastnn.sklearn import MLPClassifier
    return MLPClassifier(hidden_layer_sizes=HIDDEN, solver=solver,
                         max_iter=max_iter, random_state=0)


def child(side, n_rows, solver):
    """One fit in this process; prints a JSON line with fit_s, rss_before_mb
    and peak_mb."""
    import resource

    from threadpoolctl import threadpool_limits
    threadpool_limits(THREADS)
    X, y = make_data(n_rows)
    clf = _estimator(side, solver, EPOCHS)
    before = _rss_now_mb()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        clf.fit(X, y)
        t = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"side": side, "fit_s": t, "rss_before_mb": before,
                      "peak_mb": peak, "n_iter": int(clf.n_iter_),
                      "loss": float(clf.loss_)}))


def _rss_now_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_child(side, n_rows, solver):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                          side, str(n_rows), solver], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(n_rows, solver, rounds):
    """Alternating rounds of the two sides, each in a fresh process: per
    side the list of child results."""
    res = {"sklearn": [], "fastnn": []}
    n_rows, rounds = _smoke(n_rows, rounds)
    for r in range(rounds):
        order = ("sklearn", "fastnn") if r % 2 == 0 else ("fastnn", "sklearn")
        for side in order:
            res[side].append(run_child(side, n_rows, solver))
    return res


def summary(n_rows, solver, res):
    sk, fn = res["sklearn"], res["fastnn"]
    ratios = np.array([a["fit_s"] / b["fit_s"] for a, b in zip(sk, fn)])
    sk_peak = max(r["peak_mb"] for r in sk)
    fn_peak = max(r["peak_mb"] for r in fn)
    lines = [
        f"{n_rows} x {N_COLS} CSR, density {DENSITY}, {solver}: fit "
        f"scikit-learn {np.median([r['fit_s'] for r in sk]):.2f} s, fastnn "
        f"{np.median([r['fit_s'] for r in fn]):.3f} s (medians of {len(sk)}); "
        f"speed-up {np.median(ratios):.2f}x median, {ratios.min():.2f}-"
        f"{ratios.max():.2f}x over rounds (target >= 4x: "
        f"{'met' if np.median(ratios) >= 4 else 'NOT met'})",
        f"    peak RSS scikit-learn {sk_peak:.0f} MB (before fit "
        f"{np.median([r['rss_before_mb'] for r in sk]):.0f}), fastnn "
        f"{fn_peak:.0f} MB (before fit "
        f"{np.median([r['rss_before_mb'] for r in fn]):.0f}) (target <= "
        f"scikit-learn's: {'met' if fn_peak <= sk_peak else 'NOT met'}); "
        f"final loss {sk[0]['loss']:.6f} / {fn[0]['loss']:.6f}"]
    return ratios, lines


def parity(solver, epochs=10):
    """max relative difference of coefs_ / intercepts_ after `epochs` epochs
    on a small sparse problem (shuffled minibatches, L2 on)."""
    from sklearn.neural_network import MLPClassifier as SK

    from fastnn.sklearn import MLPClassifier as FK
    X, y = make_data(600, 3000, 0.01, seed=1)
    kw = dict(hidden_layer_sizes=(16,), solver=solver, max_iter=epochs,
              random_state=0, learning_rate_init=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = SK(**kw).fit(X, y), FK(**kw).fit(X, y)
    worst = 0.0
    for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        worst = max(worst, float(np.max(np.abs(p - q)) / np.max(np.abs(p))))
    return worst


# ---- pytest-benchmark entry ---------------------------------------------------

import pytest  # noqa: E402


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_sparse_parity(solver):
    """Correctness before speed: same coefs_ as scikit-learn to 1e-8."""
    pytest.importorskip("sklearn")
    assert parity(solver) <= 1e-8


@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("n_rows", [2000, 20000])
def test_sparse_fit(benchmark, report, n_rows, solver):
    """Fit time and peak RSS, each side in fresh processes, alternating."""
    pytest.importorskip("sklearn")
    if benchmark.disabled:
        pytest.skip("timing disabled (--benchmark-disable)")
    assert parity(solver) <= 1e-8       # correctness before speed
    rounds = 3 if n_rows <= 2000 else 2
    res = compare(n_rows, solver, rounds)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)  # marks the case timed
    key = f"sparse {n_rows}x{N_COLS} {solver}"
    report.add_times(f"{key} sklearn", [r["fit_s"] for r in res["sklearn"]], unit="fit")
    report.add_times(f"{key} fastnn", [r["fit_s"] for r in res["fastnn"]], unit="fit")
    ratios, lines = summary(n_rows, solver, res)
    report.paired_ratio(f"{key} fit (each side in its own process)", ratios, 4)
    for line in lines:
        report.note(line)


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="2000,20000")
    ap.add_argument("--solvers", default="adam,sgd")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-parity", action="store_true")
    ap.add_argument("--child", nargs=3, metavar=("SIDE", "ROWS", "SOLVER"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if ROOT not in sys.path:        # the script form: import this checkout's fastnn
        sys.path.insert(0, ROOT)
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return
    from threadpoolctl import threadpool_info
    blas = [f"{i['internal_api']} {i.get('version')} {i.get('architecture')} "
            f"{i['num_threads']} threads" for i in threadpool_info()
            if i["user_api"] == "blas"]
    print(f"BLAS: {'; '.join(blas)} (children limited to {THREADS} threads); "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')} "
          f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE')}")
    if not args.no_parity:
        for solver in args.solvers.split(","):
            print(f"parity after 10 epochs, {solver}: max relative difference "
                  f"of coefs_ {parity(solver):.2e}")
    for n_rows in map(int, args.rows.split(",")):
        for solver in args.solvers.split(","):
            res = compare(n_rows, solver, args.rounds)
            for line in summary(n_rows, solver, res)[1]:
                print(line, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
