"""python -m fastnn: train the lecture notes' 2-layer network with fastnn
and with the notes' own NumPy loop side by side, from the same start, and
compare them.

    python -m fastnn                      # 64 x 1000 -> 100 -> 10, 2000 steps
    python -m fastnn --dtype float32      # fastnn in float32 against the float64 loop
    python -m fastnn --sizes 64 1000 100 10 --steps 500 --print-every 100
    python -m fastnn bench [...]          # the benchmark suite of bench/ (see --help there)
"""
import argparse
import os
import sys
import time

import numpy as np

from fastnn.lecture import lecture_numpy_loop


def _parse(argv):
    p = argparse.ArgumentParser(
        prog="python -m fastnn",
        description="Train the lecture notes' 2-layer network (sigmoid hidden "
                    "layer, linear output, no biases, sum-of-squares loss, plain "
                    "gradient descent) with fastnn and with the notes' NumPy loop "
                    "from the same start; print the losses, the final weight "
                    "difference and the speed of both.",
        epilog="python -m fastnn bench [--help] runs the benchmark suite instead: "
               "fastnn against NumPy, PyTorch, scikit-learn and JAX on five "
               "workloads (from a source checkout; --plot draws docs/bench.png).")
    p.add_argument("--sizes", type=int, nargs=4, metavar=("N", "D_IN", "H", "D_OUT"),
                   default=(64, 1000, 100, 10), help="batch, input, hidden, output sizes")
    p.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate (default 1e-4)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="fastnn's dtype; the NumPy loop always runs in float64")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed for the data and initial weights x, y, w1, w2")
    p.add_argument("--print-every", type=int, default=200, help="loss print period")
    p.add_argument("--mode", choices=("train_step", "fit"), default="train_step",
                   help="fastnn as a Python loop over train_step, or one fit call")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS threads for both (default: the BLAS default)")
    return p.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "bench":
        return _bench(argv[1:])
    a = _parse(argv)
    for name, v in zip(("N", "D_IN", "H", "D_OUT"), a.sizes):
        if v < 1:
            raise SystemExit(f"python -m fastnn: {name} must be >= 1, got {v}")
    if a.steps < 1:
        raise SystemExit(f"python -m fastnn: --steps must be >= 1, got {a.steps}")

    import fastnn
    if a.threads is not None:
        fastnn.set_num_threads(a.threads)
    N, D_in, H, D_out = a.sizes
    rng = np.random.RandomState(a.seed)
    x, y = rng.randn(N, D_in), rng.randn(N, D_out)
    w1, w2 = rng.randn(D_in, H), rng.randn(H, D_out)
    dtype = np.dtype(a.dtype)

    info = fastnn.blas_info()
    print(f"fastnn {fastnn.__version__}: the lecture network {D_in} -> {H} (sigmoid) "
          f"-> {D_out}, batch {N}, {a.steps} steps, lr {a.lr}, fastnn {dtype.name} "
          f"vs NumPy float64")
    print("Both train from the same start: a good result has equal losses in the "
          "two columns, final weights equal to ~1e-12 (float64), and fastnn "
          "the faster.")
    print(f"BLAS: {info['source']} ({info['api']}), {info['config'] or ''} "
          f"threads={info['num_threads']}")

    # fastnn, in <= 5 lines: the network, the same start, the loop.
    net = fastnn.Network([fastnn.Dense(H, "sigmoid", bias=False),
                          fastnn.Dense(D_out, bias=False)], loss="sse", dtype=dtype)
    net.set_weights([w1, w2])
    xd, yd = x.astype(dtype), y.astype(dtype)
    f_losses = {}
    net.train_step(xd, yd, 0.0)      # size the workspace once (lr 0: no update)
    t0 = time.perf_counter()
    if a.mode == "fit":
        hist = net.fit(xd, yd, epochs=a.steps, lr=a.lr, batch_size=None)
        t_fast = time.perf_counter() - t0
        for t, L in enumerate(hist.loss):
            if t % a.print_every == 0 or t == a.steps - 1:
                f_losses[t] = L
    else:
        for t in range(a.steps):
            L = net.train_step(xd, yd, a.lr)
            if t % a.print_every == 0 or t == a.steps - 1:
                f_losses[t] = L
        t_fast = time.perf_counter() - t0

    n_losses = {}
    v1, v2 = w1.copy(), w2.copy()
    t0 = time.perf_counter()
    lecture_numpy_loop(x, y, v1, v2, a.steps, a.lr, a.print_every,
                       lambda t, L: n_losses.__setitem__(t, L))
    t_np = time.perf_counter() - t0

    print(f"{'step':>6}  {'loss (NumPy loop)':>20}  {'loss (fastnn)':>20}")
    for t in sorted(n_losses):
        print(f"{t:>6}  {n_losses[t]:>20.10g}  {f_losses.get(t, float('nan')):>20.10g}")
    W1, W2 = net.layers[0].W, net.layers[1].W
    d1 = np.abs(W1 - v1).max() / np.abs(v1).max()
    d2 = np.abs(W2 - v2).max() / np.abs(v2).max()
    print(f"final weights, max |fastnn - NumPy| / max |NumPy|: w1 {d1:.3g}, w2 {d2:.3g}")
    sps_f, sps_n = a.steps / t_fast, a.steps / t_np
    print(f"steps/second: fastnn {sps_f:,.0f} ({1e3 * t_fast / a.steps:.3f} ms/step), "
          f"NumPy {sps_n:,.0f} ({1e3 * t_np / a.steps:.3f} ms/step); "
          f"fastnn is {sps_f / sps_n:.2f}x the NumPy loop")
    print("(one run on a possibly shared machine; bench/bench_lecture.py gives medians)")
    return 0


def _bench(argv):
    """``python -m fastnn bench``: the comparison suite of the repository's
    bench/ directory (bench/harness), which stays outside the package: it
    runs from a source checkout."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bench_dir = os.path.join(root, "bench")
    if not os.path.isfile(os.path.join(bench_dir, "harness", "suite.py")):
        raise SystemExit(
            "python -m fastnn bench: the benchmark suite lives in the bench/ "
            "directory of the fastnn repository, which this installation does "
            f"not have (looked in {bench_dir}); run it from a source checkout "
            "(pip install -e '.[bench]' there)")
    if bench_dir not in sys.path:
        sys.path.insert(0, bench_dir)
    from harness.suite import main as bench_main
    return bench_main(argv, root=root)


if __name__ == "__main__":
    sys.exit(main())
