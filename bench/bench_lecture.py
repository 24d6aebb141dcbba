"""The lecture workload: fastnn's net.train_step in a Python loop vs the
lecture's own NumPy loop (fastnn.lecture), per step, side by side in one run.

- lecture: N=64, D_in=1000, H=100, D_out=10, sigmoid hidden, linear output,
  no biases, sse loss, plain SGD lr 1e-4, full batch.  fastnn float64 and
  float32 vs the NumPy loop in float64 (targets >= 1.5x and >= 2.5x); the
  NumPy loop in float32 is timed too, for context.
- tiny: N=4, 2 -> 4 -> 1, sigmoid hidden, float64 (the same loop at those
  sizes, lr 0.1): fastnn train_step vs the NumPy loop (target >= 10x).

Each timed round starts from the same weights (reset outside the timing)
and runs STEPS steps; times are reported per step.  The NumPy loop is the
lecture's code line for line, its per-step print off (printing 2000 lines
would time the terminal).  Measured inside a long-lived benchmark process,
the NumPy loop is at its fastest: in a fresh process glibc returns its
800 KB temporaries to the OS every step, so these ratios are the
conservative ones.  Before timing, fastnn is checked against the NumPy loop
from the same start.
"""
import numpy as np
import pytest

from fastnn import Dense, Network
from fastnn.lecture import LECTURE_LR, LECTURE_SHAPE, lecture_numpy_loop

TINY_SHAPE = (4, 2, 4, 1)
TINY_LR = 0.1
STEPS = {"lecture": 20, "tiny": 1000}     # steps per timed round
ROUNDS = {"lecture": 30, "tiny": 20}


def problem(shape, seed=0):
    """x, y, w1, w2 drawn as the lecture draws them (standard normal); XOR
    for the tiny shape."""
    N, D_in, H, D_out = shape
    r = np.random.default_rng(seed)
    x, y = r.standard_normal((N, D_in)), r.standard_normal((N, D_out))
    w1, w2 = r.standard_normal((D_in, H)), r.standard_normal((H, D_out))
    if shape == TINY_SHAPE:                       # XOR, the classic tiny set
        x = np.array([[0., 0.], [0., 1.], [1., 0.], [1., 1.]])
        y = np.array([[0.], [1.], [1.], [0.]])
    return x, y, w1, w2


def lecture_net(shape, w1, w2, dtype):
    """The lecture's network in fastnn, with the given weights."""
    N, D_in, H, D_out = shape
    net = Network([Dense(H, "sigmoid", bias=False), Dense(D_out, bias=False)],
                  loss="sse", n_in=D_in, dtype=dtype)
    return net.set_weights([w1, w2])


def flops_per_step(shape):
    """GEMM flops of one step: X.W1, H.W2, H^T.D, D.W2^T, X^T.D1."""
    N, D_in, H, D_out = shape
    return 2.0 * (N * D_in * H * 2 + N * H * D_out * 3)


def check_against_lecture(shape, lr, dtype, steps=10):
    x, y, w1, w2 = problem(shape)
    a, b = w1.copy(), w2.copy()
    want_loss = lecture_numpy_loop(x, y, a, b, steps, lr)
    net = lecture_net(shape, w1, w2, dtype)
    X, Y = x.astype(dtype), y.astype(dtype)
    for _ in range(steps):
        L = net.train_step(X, Y, lr)
    (W1, _), (W2, _) = net.get_weights()
    if dtype == np.float64:
        np.testing.assert_allclose(W1, a, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(W2, b, rtol=1e-10, atol=1e-12)
    else:   # float32 arithmetic: compare in norm
        for got, want in ((W1, a), (W2, b)):
            err = np.linalg.norm(got - want) / np.linalg.norm(want)
            assert err < 1e-4, f"float32 weights differ from the float64 loop by {err:.2e}"
    # L is the loss before the last update; the loop's is the same one
    assert np.isfinite(L)
    np.testing.assert_allclose(L, want_loss, rtol=1e-10 if dtype == np.float64 else 1e-3)


def _time_numpy(benchmark, shape, lr, steps, rounds, dtype=np.float64):
    x, y, w1, w2 = problem(shape)
    x, y = x.astype(dtype), y.astype(dtype)
    w1, w2 = w1.astype(dtype), w2.astype(dtype)
    a, b = w1.copy(), w2.copy()

    def setup():
        np.copyto(a, w1)
        np.copyto(b, w2)

    def run():
        with np.errstate(over="ignore"):   # float32: exp(-z) overflows to inf
            lecture_numpy_loop(x, y, a, b, steps, lr)

    benchmark.pedantic(run, setup=setup, rounds=rounds, warmup_rounds=2)


def _time_fastnn(benchmark, shape, lr, steps, rounds, dtype):
    x, y, w1, w2 = problem(shape)
    net = lecture_net(shape, w1, w2, dtype)
    X, Y = x.astype(dtype), y.astype(dtype)
    p0 = net.params.copy()

    def setup():
        np.copyto(net.params, p0)

    def run():
        ts = net.train_step
        for _ in range(steps):
            ts(X, Y, lr)

    benchmark.pedantic(run, setup=setup, rounds=rounds, warmup_rounds=2)


CASES = [("lecture", "fastnn", np.float64), ("lecture", "fastnn", np.float32),
         ("lecture", "numpy", np.float64), ("lecture", "numpy", np.float32),
         ("tiny", "fastnn", np.float64), ("tiny", "numpy", np.float64)]


@pytest.mark.parametrize("case", CASES,
                         ids=lambda c: f"{c[0]}-{c[1]}-{np.dtype(c[2]).name}")
def test_lecture_step(benchmark, report, case):
    name, impl, dtype = case
    shape, lr = ((LECTURE_SHAPE, LECTURE_LR) if name == "lecture"
                 else (TINY_SHAPE, TINY_LR))
    dname = np.dtype(dtype).name
    if impl == "fastnn":
        check_against_lecture(shape, lr, dtype)
        _time_fastnn(benchmark, shape, lr, STEPS[name], ROUNDS[name], dtype)
    else:
        _time_numpy(benchmark, shape, lr, STEPS[name], ROUNDS[name], dtype)
    benchmark.group = f"{name} workload, {STEPS[name]} steps per round"
    report.add(f"step/{name}/{impl}/{dname}", benchmark, per=STEPS[name],
               unit="step", flops=flops_per_step(shape))
    if case == CASES[-1]:
        report.speedup("lecture float64, fastnn train_step vs the lecture's NumPy "
                       "loop (float64)", "step/lecture/fastnn/float64",
                       "step/lecture/numpy/float64", 1.5)
        report.speedup("lecture float32, fastnn train_step vs the lecture's NumPy "
                       "loop (float64)", "step/lecture/fastnn/float32",
                       "step/lecture/numpy/float64", 2.5)
        report.speedup("lecture float32, fastnn train_step vs the NumPy loop in "
                       "float32 (context)", "step/lecture/fastnn/float32",
                       "step/lecture/numpy/float32")
        report.speedup("tiny 2-4-1 float64, fastnn train_step vs the NumPy loop",
                       "step/tiny/fastnn/float64", "step/tiny/numpy/float64", 10)
