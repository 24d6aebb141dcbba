"""Native training: net.fit against its baselines, side by side in one
run, float64, 2 threads.

- tiny: 2 -> 4 -> 1 sigmoid (no biases, sse), N=4 full batch, 10,000 steps
  per fit: fit per step vs the lecture's NumPy loop (target >= 100x).
- small: 20 -> 32 -> 1 relu (biases, mse), 1,000 samples, batch 32, 50
  epochs: fit vs a NumPy minibatch loop (>= 6x), and vs PyTorch CPU as users
  write it, nn.Sequential + torch.optim.SGD over torch.randperm minibatches
  (>= 30x); PyTorch with a DataLoader (the tutorial form) is timed as well,
  over 5 epochs, for context.
- lecture: the lecture notes' network via fit(epochs=2000, full batch) vs
  the lecture's NumPy loop (>= 1.5x), and fit's GFLOP/s vs the rate of the
  same five GEMMs per step (same shapes, transposes and fused-update beta)
  on the bare BLAS in this run (>= 80%).

The targets against a NumPy loop (tiny, small, lecture) and the GEMM-rate
target are judged on test_*_side_by_side: fit and its baseline in
alternating rounds, so that both meet the same phases of a shared machine
(see _side_by_side).  The test_<workload> cases time each side on its own,
for pytest-benchmark's table, and give the PyTorch ratios.

Each timed round starts from the same weights (reset outside the timing).
Before timing, fit is checked against the baseline it is compared with
(same start, same batch order where the baseline can follow it).
"""
import dataclasses
import time

import numpy as np
import pytest

from fastnn.lecture import LECTURE_LR, LECTURE_SHAPE, lecture_numpy_loop
from harness.machine import BareGemm
from harness.peers import torch_runner
from harness.workloads import WORKLOADS, initial_weights, make_data, numpy_runner
from bench_lecture import flops_per_step, lecture_net, problem

TINY_STEPS = 10_000
SMALL_EPOCHS = 50
LECTURE_EPOCHS = 2000


def _fit_bench(benchmark, net, X, Y, rounds, **fit_kw):
    fit = _fit_side(net, X, Y, **fit_kw)
    benchmark.pedantic(fit, setup=fit.reset, rounds=rounds, warmup_rounds=1)


def _side_by_side(benchmark, report, wname, label, target, fit, baseline,
                  per, rounds, settle=0.0, warm=False, flops=None,
                  baseline_key="numpy"):
    """A speed target judged on alternating rounds.  Each round times one
    call of fit, then one of the baseline, each from the same start (its
    reset); before its timed call a side gets, if `warm`, one untimed call
    (and the reset again), and, if `settle`, an idle pause of that many
    seconds.  After a warm-up round, `rounds` rounds; the figure judged
    against the target is the median of the rounds' own ratios (per step:
    `per` steps a call).

    Why alternate, and what `warm` and `settle` are for: bench/README.md
    ("Side-by-side rounds"); the targets are per step.  pytest-benchmark's
    own figure for these tests is the time of a whole round.  baseline_key
    names the baseline's row in the report."""
    times = {"fastnn-fit": [], baseline_key: []}
    sides = (("fastnn-fit", fit), (baseline_key, baseline))

    def one_round():
        for key, side in sides:
            side.reset()
            if warm:
                side()
                side.reset()
            if settle:
                time.sleep(settle)
            t0 = time.perf_counter()
            side()
            times[key].append(time.perf_counter() - t0)

    other = "the NumPy loop" if baseline_key == "numpy" else baseline_key
    benchmark.group = (f"{wname} side by side: one round = fit, then {other}, "
                       f"{per} steps each"
                       + (", each after an untimed call" if warm else "")
                       + (f", each after a {settle:g} s pause" if settle else ""))
    benchmark.pedantic(one_round, rounds=rounds, warmup_rounds=1)
    if getattr(benchmark, "stats", None) is None:
        return                          # --benchmark-disable: a check run
    for key, t in times.items():
        report.add_times(f"train/{wname}-pairs/{key}", t[-rounds:], per=per,
                         unit="step", flops=flops)
    report.speedup(f"{label}, alternating rounds, ratio of the medians "
                   "(context)", f"train/{wname}-pairs/fastnn-fit",
                   f"train/{wname}-pairs/{baseline_key}")
    ratios = (np.array(times[baseline_key][-rounds:])
              / np.array(times["fastnn-fit"][-rounds:]))
    report.paired_ratio(label, ratios, target)


class _Side:
    """A timed call with the reset that precedes it."""

    def __init__(self, call, reset):
        self.call, self.reset = call, reset

    def __call__(self):
        return self.call()


def _fit_side(net, X, Y, **fit_kw):
    """net.fit(X, Y, **fit_kw), reset to net's parameters as they are now
    (and no optimizer state)."""
    p0 = net.params.copy()

    def reset():
        np.copyto(net.params, p0)
        net._opt_state = None
    return _Side(lambda: net.fit(X, Y, **fit_kw), reset)


def _lecture_loop_side(x, y, w1, w2, steps, lr):
    """`steps` steps of the lecture's NumPy loop from w1, w2 (copied);
    .weights: the loop's two weight matrices, updated in place."""
    a, b = w1.copy(), w2.copy()

    def reset():                # returns None: pytest-benchmark's setup
        np.copyto(a, w1)        # would take a value for call arguments
        np.copyto(b, w2)
    side = _Side(lambda: lecture_numpy_loop(x, y, a, b, steps, lr), reset)
    side.weights = (a, b)
    return side


def _numpy_loop_side(wl, X, Y, weights, epochs):
    """`epochs` epochs of the generalized NumPy loop (harness.workloads) for
    wl, in fit's batch
    order for seed 0; .params: its [W, b, W, b, ...], updated in place."""
    run, params = numpy_runner(wl, X, Y, weights, 0)
    p0 = [p.copy() for p in params]

    def reset():
        for p, q in zip(params, p0):
            np.copyto(p, q)
        run.reset()
    side = _Side(lambda: run(epochs), reset)
    side.params = params
    return side


# ---- tiny ------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["fastnn-fit", "numpy"])
def test_tiny(benchmark, report, impl):
    wl = WORKLOADS["tiny"]
    X, Y = make_data(wl)
    w1, w2 = [W for W, _ in initial_weights(wl)]
    benchmark.group = f"tiny 2-4-1 float64, {TINY_STEPS} full-batch steps"
    if impl == "fastnn-fit":
        net = wl.network()
        net.set_weights([w1, w2])
        # check: 200 steps of fit == the NumPy loop from the same start
        a, b = w1.copy(), w2.copy()
        lecture_numpy_loop(X, Y, a, b, 200, wl.lr)
        net.fit(X, Y, epochs=200, lr=wl.lr)
        np.testing.assert_allclose(net.layers[0].W, a, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(net.layers[1].W, b, rtol=1e-9, atol=1e-12)
        net.set_weights([w1, w2])
        _fit_bench(benchmark, net, X, Y, 15, epochs=TINY_STEPS, lr=wl.lr)
    else:
        loop = _lecture_loop_side(X, Y, w1, w2, TINY_STEPS, wl.lr)
        benchmark.pedantic(loop, setup=loop.reset, rounds=5, warmup_rounds=1)
    report.add(f"train/tiny/{impl}", benchmark, per=TINY_STEPS, unit="step")
    if impl == "numpy":
        report.speedup("tiny, fit vs the NumPy loop, each timed on its own "
                       "(context)", "train/tiny/fastnn-fit", "train/tiny/numpy")


def test_tiny_side_by_side(benchmark, report):
    """The tiny target, fit >= 100x the NumPy loop per step, on alternating
    rounds of TINY_STEPS steps, each after an untimed call of the same side
    (see _side_by_side); neither side runs a threaded BLAS call, so there
    is no pause."""
    wl = WORKLOADS["tiny"]
    X, Y = make_data(wl)
    w1, w2 = [W for W, _ in initial_weights(wl)]
    net = wl.network()
    net.set_weights([w1, w2])
    fit = _fit_side(net, X, Y, epochs=TINY_STEPS, lr=wl.lr)
    loop = _lecture_loop_side(X, Y, w1, w2, TINY_STEPS, wl.lr)
    _side_by_side(benchmark, report, "tiny", "tiny, fit vs the NumPy loop (per "
                  "step)", 100, fit, loop, TINY_STEPS, rounds=15, warm=True)
    np.testing.assert_allclose(net.params, np.concatenate(
        [w.ravel() for w in loop.weights]), rtol=1e-9, atol=1e-12)


# ---- small -----------------------------------------------------------------------

def _small():
    wl = WORKLOADS["small"]
    X, Y = make_data(wl)
    return wl, X, Y, initial_weights(wl)


def _check_small_numpy(wl, X, Y, weights, seed=0):
    """The NumPy loop follows fit's batch order: equal after 2 epochs."""
    net = wl.network()
    net.set_weights(weights)
    net.fit(X, Y, epochs=2, batch_size=wl.batch, lr=wl.lr, seed=seed)
    run, params = numpy_runner(wl, X, Y, weights, seed)
    run(2)
    mine = [l.W for l in net.layers] + [l.b for l in net.layers]
    theirs = params[0::2] + params[1::2]
    for g, w in zip(mine, theirs):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-13)


def _check_small_torch(wl, X, Y, weights):
    """PyTorch computes the same update: one full-batch step from the same
    weights equals fastnn's train_step."""
    import torch
    full = dataclasses.replace(wl, batch=None)
    run, model = torch_runner(full, X, Y, weights, 0)
    run(1)
    net = wl.network()
    net.set_weights(weights)
    net.train_step(X, Y, wl.lr)
    lin = [m for m in model if isinstance(m, torch.nn.Linear)]
    for layer, m in zip(net.layers, lin):
        np.testing.assert_allclose(m.weight.detach().numpy().T, layer.W, rtol=1e-10,
                                   atol=1e-13)
        np.testing.assert_allclose(m.bias.detach().numpy(), layer.b, rtol=1e-10,
                                   atol=1e-13)


def _torch_dataloader_runner(wl, X, Y, weights, threads):
    """The tutorial form: TensorDataset + DataLoader(shuffle=True)."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    run0, model = torch_runner(wl, X, Y, weights, 0, threads)
    opt = torch.optim.SGD(model.parameters(), lr=wl.lr * wl.n_out / 2)
    loss_fn = torch.nn.MSELoss()
    loader = DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(Y)),
                        batch_size=wl.batch, shuffle=True)

    def run(epochs):
        for _ in range(epochs):
            for xb, yb in loader:
                opt.zero_grad()
                loss = loss_fn(model(xb), yb)
                loss.backward()
                opt.step()
    return run, model


@pytest.mark.parametrize("impl", ["fastnn-fit", "numpy", "torch", "torch-dataloader"])
def test_small(benchmark, report, threads, impl):
    wl, X, Y, weights = _small()
    steps = SMALL_EPOCHS * wl.steps_per_epoch
    benchmark.group = (f"small 20-32-1 float64, {wl.n} samples, batch {wl.batch}, "
                       f"{SMALL_EPOCHS} epochs ({steps} steps)")
    if impl == "fastnn-fit":
        _check_small_numpy(wl, X, Y, weights)
        net = wl.network()
        net.set_weights(weights)
        _fit_bench(benchmark, net, X, Y, 15, epochs=SMALL_EPOCHS,
                   batch_size=wl.batch, lr=wl.lr, seed=0)
    elif impl == "numpy":
        loop = _numpy_loop_side(wl, X, Y, weights, SMALL_EPOCHS)
        benchmark.pedantic(loop, setup=loop.reset, rounds=5, warmup_rounds=1)
    else:
        torch = pytest.importorskip("torch")
        torch.set_num_threads(threads)
        if impl == "torch":
            _check_small_torch(wl, X, Y, weights)
            run, model = torch_runner(wl, X, Y, weights, 0, threads)
        else:
            run, model = _torch_dataloader_runner(wl, X, Y, weights, threads)
        state0 = {k: v.clone() for k, v in model.state_dict().items()}
        # the DataLoader form is slow: time fewer epochs, report per step
        epochs = SMALL_EPOCHS if impl == "torch" else 5
        steps = epochs * wl.steps_per_epoch

        def setup():
            model.load_state_dict(state0)
        benchmark.extra_info["torch"] = torch.__version__
        benchmark.extra_info["torch_threads"] = torch.get_num_threads()
        benchmark.pedantic(lambda: run(epochs), setup=setup,
                           rounds=5 if impl == "torch" else 3, warmup_rounds=1)
    report.add(f"train/small/{impl}", benchmark, per=steps, unit="step")
    if impl == "torch-dataloader":
        report.speedup("small, fit vs the NumPy minibatch loop, each timed on "
                       "its own (context)", "train/small/fastnn-fit",
                       "train/small/numpy")
        report.speedup("small, fit vs PyTorch (nn.Sequential + optim.SGD, "
                       "randperm batches)", "train/small/fastnn-fit",
                       "train/small/torch", 30)
        report.speedup("small, fit vs PyTorch with a DataLoader (context)",
                       "train/small/fastnn-fit", "train/small/torch-dataloader")


def test_small_side_by_side(benchmark, report):
    """The small target against NumPy, fit >= 6x the NumPy minibatch loop,
    on alternating rounds of SMALL_EPOCHS epochs in the same batch order
    (see _side_by_side), each after an untimed call of the same side;
    neither side runs a threaded BLAS call (the products are at most 32 x
    20 x 32), so there is no pause."""
    wl, X, Y, weights = _small()
    _check_small_numpy(wl, X, Y, weights)
    net = wl.network()
    net.set_weights(weights)
    fit = _fit_side(net, X, Y, epochs=SMALL_EPOCHS, batch_size=wl.batch,
                    lr=wl.lr, seed=0)
    loop = _numpy_loop_side(wl, X, Y, weights, SMALL_EPOCHS)
    _side_by_side(benchmark, report, "small", "small, fit vs the NumPy "
                  "minibatch loop", 6, fit, loop,
                  SMALL_EPOCHS * wl.steps_per_epoch, rounds=15, warm=True)
    mine = [l.W for l in net.layers] + [l.b for l in net.layers]
    for g, w in zip(mine, loop.params[0::2] + loop.params[1::2]):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12)


class _Quiet(_Side):
    """A side whose stderr goes to a StringIO (the progress display's)."""

    def __call__(self):
        import contextlib
        import io
        with contextlib.redirect_stderr(io.StringIO()):
            return self.call()


@pytest.mark.parametrize("wname", ["tiny", "small"])
def test_progress_overhead_side_by_side(benchmark, report, wname):
    """What the progress display costs: fit(verbose=1) (tqdm's bar when
    tqdm is installed, else fastnn's own line; drawn into a StringIO) against
    fit(verbose=0) on the same fit, alternating rounds.  Reported as
    t(verbose=0) / t(verbose=1): 1.0 means no cost, 0.9 a 10% slower fit."""
    if wname == "tiny":
        wl = WORKLOADS["tiny"]
        X, Y = make_data(wl)
        weights = [W for W, _ in initial_weights(wl)]
        kw = dict(epochs=TINY_STEPS, lr=wl.lr)
        per = TINY_STEPS
    else:
        wl, X, Y, weights = _small()
        kw = dict(epochs=SMALL_EPOCHS, batch_size=wl.batch, lr=wl.lr, seed=0)
        per = SMALL_EPOCHS * wl.steps_per_epoch
    sides = []
    for verbose in (1, 0):
        net = wl.network()
        net.set_weights(weights)
        side = _fit_side(net, X, Y, verbose=verbose, **kw)
        sides.append(_Quiet(side.call, side.reset))
    _side_by_side(benchmark, report, f"{wname}-progress",
                  f"{wname}, fit(verbose=1) against fit(verbose=0) (1.0: no "
                  "cost)", None, sides[0], sides[1], per, rounds=15, warm=True,
                  baseline_key="verbose0")


# ---- lecture ---------------------------------------------------------------------

def _lecture_gemms():
    """The five GEMMs of one lecture training step, as fastnn issues them, on
    the bare BLAS: X.W1, H.W2, D2.W2^T, W2 += -lr H^T.D2, W1 += -lr X^T.D1."""
    N, D_in, H, D_out = LECTURE_SHAPE
    r = np.random.default_rng(3)
    x = r.standard_normal((N, D_in))
    w1 = r.standard_normal((D_in, H))
    w2 = r.standard_normal((H, D_out))
    h = np.empty((N, H))
    out = np.empty((N, D_out))
    d2 = r.standard_normal((N, D_out))
    dh = np.empty((N, H))
    d1 = r.standard_normal((N, H))
    g = BareGemm()
    calls = [g.bind(x, w1, h), g.bind(h, w2, out), g.bind(d2, w2, dh, trans_b=True),
             g.bind(h, d2, w2, alpha=-1e-12, beta=1.0, trans_a=True),
             g.bind(x, d1, w1, alpha=-1e-12, beta=1.0, trans_a=True)]
    keep = (x, w1, w2, h, out, d2, dh, d1)

    def step(calls=calls, keep=keep):
        for c in calls:
            c()
    return step


@pytest.mark.parametrize("impl", ["fastnn-fit", "numpy", "blas-gemms"])
def test_lecture_fit(benchmark, report, impl):
    flops = flops_per_step(LECTURE_SHAPE)
    x, y, w1, w2 = problem(LECTURE_SHAPE)
    if impl == "fastnn-fit":
        benchmark.group = f"lecture workload float64, {LECTURE_EPOCHS} full-batch steps"
        net = lecture_net(LECTURE_SHAPE, w1, w2, np.float64)
        a, b = w1.copy(), w2.copy()             # check: 20 steps == the lecture loop
        lecture_numpy_loop(x, y, a, b, 20, LECTURE_LR)
        net.fit(x, y, epochs=20, lr=LECTURE_LR)
        np.testing.assert_allclose(net.layers[0].W, a, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(net.layers[1].W, b, rtol=1e-10, atol=1e-12)
        net.set_weights([w1, w2])
        _fit_bench(benchmark, net, x, y, 3, epochs=LECTURE_EPOCHS, lr=LECTURE_LR)
        per = LECTURE_EPOCHS
    elif impl == "numpy":
        benchmark.group = f"lecture workload float64, {LECTURE_EPOCHS} full-batch steps"
        loop = _lecture_loop_side(x, y, w1, w2, LECTURE_EPOCHS, LECTURE_LR)
        benchmark.pedantic(loop, setup=loop.reset, rounds=3, warmup_rounds=1)
        per = LECTURE_EPOCHS
    else:
        benchmark.group = "lecture: the five GEMMs of one step on the bare BLAS"
        benchmark(_lecture_gemms())
        per = 1
    report.add(f"train/lecture/{impl}", benchmark, per=per, unit="step", flops=flops)
    if impl == "blas-gemms":
        report.speedup("lecture, fit vs the lecture's NumPy loop, each timed on "
                       "its own (context)", "train/lecture/fastnn-fit",
                       "train/lecture/numpy")
        report.speedup("lecture, fit GFLOP/s as a fraction of the bare-BLAS "
                       "rate for the same GEMMs, each timed on its own (context)",
                       "train/lecture/fastnn-fit", "train/lecture/blas-gemms")


LECTURE_PAIRS = 15
LECTURE_PAIR_STEPS = 500      # fit 0.15 s, the NumPy loop 0.27 s
# OpenBLAS's idle threads spin for 2^28 clock ticks after its last threaded
# call, 0.1 s at this machine's 2.6 GHz: 2.5x that
LECTURE_SETTLE = 0.25


def test_lecture_side_by_side(benchmark, report):
    """The lecture target, fit >= 1.5x the lecture's NumPy loop, on
    LECTURE_PAIRS alternating rounds of LECTURE_PAIR_STEPS steps (see
    _side_by_side; short
    rounds, so that both sides of a round mostly meet the same phase of
    the VM), each call after a pause of LECTURE_SETTLE seconds.  The pause
    lets OpenBLAS's pool, left spinning by the NumPy loop's threaded GEMMs,
    fall asleep before the fit, as it would be in a program that only
    trains; beside it fit would hold its first ~0.1-0.2 s of steps
    unsplit (fnn_fit_args.split_hold)."""
    x, y, w1, w2 = problem(LECTURE_SHAPE)
    net = lecture_net(LECTURE_SHAPE, w1, w2, np.float64)
    fit = _fit_side(net, x, y, epochs=LECTURE_PAIR_STEPS, lr=LECTURE_LR)
    loop = _lecture_loop_side(x, y, w1, w2, LECTURE_PAIR_STEPS, LECTURE_LR)
    _side_by_side(benchmark, report, "lecture", "lecture, fit vs the lecture's "
                  "NumPy loop", 1.5, fit, loop, LECTURE_PAIR_STEPS, rounds=LECTURE_PAIRS,
                  settle=LECTURE_SETTLE, flops=flops_per_step(LECTURE_SHAPE))
    np.testing.assert_allclose(net.params, np.concatenate(
        [w.ravel() for w in loop.weights]), rtol=1e-9, atol=1e-12)


def test_lecture_gemm_rate_side_by_side(benchmark, report):
    """The lecture fit's GFLOP/s as a fraction of the bare BLAS's for the same
    five GEMMs a step (target >= 0.8), on LECTURE_PAIRS alternating rounds
    of LECTURE_PAIR_STEPS steps, each after a LECTURE_SETTLE pause (the bare
    GEMMs run on OpenBLAS's threads), as in test_lecture_side_by_side: both
    sides do the same flops, so the ratio of rates is the ratio of times."""
    x, y, w1, w2 = problem(LECTURE_SHAPE)
    net = lecture_net(LECTURE_SHAPE, w1, w2, np.float64)
    step = _lecture_gemms()

    def gemms():
        for _ in range(LECTURE_PAIR_STEPS):
            step()
    fit = _fit_side(net, x, y, epochs=LECTURE_PAIR_STEPS, lr=LECTURE_LR)
    _side_by_side(benchmark, report, "lecture-gemm-rate", "lecture, fit GFLOP/s as a "
                  "fraction of the bare-BLAS rate for the same GEMMs", 0.8, fit,
                  _Side(gemms, lambda: None), LECTURE_PAIR_STEPS, rounds=LECTURE_PAIRS,
                  settle=LECTURE_SETTLE, flops=flops_per_step(LECTURE_SHAPE),
                  baseline_key="blas-gemms")
