"""Many networks at once: fastnn.fit_many against the ways to train K
networks that users reach for, side by side in one run.

- tiny: K = 1,000 networks 2 -> 4 -> 1 (sigmoid, no biases, sse; the XOR
  data, 4 rows, full batch; fastnn.bench's tiny workload), each with its
  own initial weights (seed k) and learning rate, TINY_EPOCHS epochs.
- small: K = 100 networks 20 -> 32 -> 1 (relu, biases, mse; 1,000 rows,
  minibatches of 32 with a partial last one, shuffled), SMALL_EPOCHS
  epochs, every network visiting the rows in the same order (one seed: what
  a vmap over networks sharing each minibatch computes).
- wide: K = 50 networks 200 -> 128 -> 1 (relu, biases, mse; 2,000 rows,
  minibatches of 128, shuffled with one seed), WIDE_EPOCHS epochs: where
  the first layer's GEMMs dominate and method='batched' shares them.

Sides: fastnn.fit_many (method 'auto', bit-identical to Network.fit;
'threads' too, for context, and 'batched', the networks side by side in
shared GEMMs, equal to Network.fit to rounding); a
Python loop over Network.fit (the baseline of the >= 3x target for tiny);
torch.func.vmap over torch.func.grad of functional_call on stacked
parameters (torch's model-ensembling recipe), one vmapped step per
minibatch; jax.vmap(jax.grad) inside one jax.jit-compiled loop over all
steps (skipped with a reason when jax is not installed).  Every side runs
float64 from the same weights with the same learning rates and batch order.

Before timing, each side is checked on a short run (CHECK_EPOCHS, or
the timed run's epochs if fewer) from
the same start: the loop over Network.fit must equal fit_many bit for bit;
fit_many's 'batched' method, torch and jax (and on the wide case, where
Network.fit splits each minibatch between two threads, the loop) must reach
the same loss per network as fastnn within rtol 1e-7 (atol 1e-12):
different summation orders and exp implementations only.  (Over the timed run's many epochs such rounding differences can
grow into different trajectories of the XOR training, so the final losses
of the long run are not comparable across libraries.)
Then the sides run in alternating rounds (each reset to the start
outside the timing); the summary gives each side's median and range over
the rounds and the median of the per-round ratios.

Threads: FASTNN_BENCH_THREADS (default 2) for fit_many's workers, the BLAS
and torch; jax runs on its default CPU thread pool.
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest bench/bench_many.py --benchmark-only
"""
import os
import time

import numpy as np
import pytest

import fastnn
from fastnn import Dense, Network
from harness.workloads import WORKLOADS, make_data

THREADS = int(os.environ.get("FASTNN_BENCH_THREADS", "2"))
TINY_K, TINY_EPOCHS = 1000, 1000
SMALL_K, SMALL_EPOCHS = 100, 5
WIDE_K, WIDE_EPOCHS = 50, 2
ROUNDS = 7
CHECK_EPOCHS = 20
# seconds of quiet before each side's timed run: the thread pools of the
# side before (OpenMP's, XLA's, OpenBLAS's) spin for a while after their
# work, on the cores the next side needs
QUIET = 0.3
RTOL, ATOL = 1e-7, 1e-12


# ---- the problems ----------------------------------------------------------------

class Problem:
    """K networks (weights per network), data, learning rates, batch order."""

    def __init__(self, name, K, epochs):
        self.name, self.K, self.epochs = name, K, epochs
        self.check_epochs = min(CHECK_EPOCHS, epochs)
        rng = np.random.default_rng(7)
        if name == "tiny":
            wl = WORKLOADS["tiny"]
            self.X, self.Y = make_data(wl)
            self.layers = [(4, "sigmoid", False), (1, "identity", False)]
            self.loss, self.init, self.batch = "sse", "normal", None
            self.lrs = rng.uniform(0.05, 0.5, K)
        elif name == "small":
            self.X = rng.standard_normal((1000, 20))
            self.Y = rng.standard_normal((1000, 1))
            self.layers = [(32, "relu", True), (1, "identity", True)]
            self.loss, self.init, self.batch = "mse", "glorot", 32
            self.lrs = rng.uniform(0.005, 0.05, K)
        else:
            self.X = rng.standard_normal((2000, 200))
            self.Y = rng.standard_normal((2000, 1))
            self.layers = [(128, "relu", True), (1, "identity", True)]
            self.loss, self.init, self.batch = "mse", "glorot", 128
            self.lrs = rng.uniform(0.001, 0.01, K)
        self.n_in = self.X.shape[1]
        self.seed = 11                    # one batch order for every network
        self.nets = [self.network(k) for k in range(K)]
        self.p0 = [net.params.copy() for net in self.nets]

    def network(self, k):
        return Network([Dense(u, a, bias=b) for u, a, b in self.layers],
                       loss=self.loss, n_in=self.n_in, init=self.init, seed=k)

    def reset(self):
        for net, p in zip(self.nets, self.p0):
            np.copyto(net.params, p)
            net._opt_state = None

    def orders(self, epochs):
        """Each epoch's row order, as fit draws it for self.seed (None:
        full batches, no shuffling)."""
        n = len(self.X)
        if self.batch is None or self.batch >= n:
            return None
        rng = np.random.default_rng(self.seed)
        return [rng.permutation(n) for _ in range(epochs)]

    def weights(self):
        """Per layer (W stacked (K, n_in, n_out), b stacked (K, n_out) or
        None), from the start."""
        out = []
        for i, (units, _, bias) in enumerate(self.layers):
            Ws, bs = [], []
            for k in range(self.K):
                ref = self.network(k)
                ref.params[...] = self.p0[k]
                Ws.append(ref.layers[i].W.copy())
                bs.append(ref.layers[i].b.copy() if bias else None)
            out.append((np.stack(Ws), np.stack(bs) if bias else None))
        return out

    def losses(self, params_per_layer):
        """Final training loss of every network (NumPy, float64), from
        stacked per-layer (W, b)."""
        h = np.broadcast_to(self.X, (self.K,) + self.X.shape)
        for (W, b), (_, act, _) in zip(params_per_layer, self.layers):
            h = h @ W + (b[:, None, :] if b is not None else 0)
            if act == "sigmoid":
                h = 1 / (1 + np.exp(-h))
            elif act == "relu":
                h = np.maximum(h, 0)
        d = ((h - self.Y) ** 2).sum(axis=2)
        return d.sum(axis=1) if self.loss == "sse" else 0.5 * d.mean(axis=1)

    def fastnn_losses(self):
        out = []
        for i, (_, _, bias) in enumerate(self.layers):
            out.append((np.stack([net.layers[i].W for net in self.nets]),
                        np.stack([net.layers[i].b for net in self.nets])
                        if bias else None))
        return self.losses(out)


_PROBLEMS = {}


def problem(name):
    if name not in _PROBLEMS:
        K, E = {"tiny": (TINY_K, TINY_EPOCHS), "small": (SMALL_K, SMALL_EPOCHS),
                "wide": (WIDE_K, WIDE_EPOCHS)}[name]
        _PROBLEMS[name] = Problem(name, K, E)
    return _PROBLEMS[name]


# ---- the sides ----------------------------------------------------------------------

class Side:
    """call(epochs) runs the training; reset() puts the start back;
    losses() the final loss per network."""

    def __init__(self, call, reset, losses):
        self.call, self.reset, self.losses = call, reset, losses


def fit_many_side(p, method="auto"):
    def call(epochs):
        fastnn.fit_many(p.nets, p.X, p.Y, epochs=epochs, batch_size=p.batch,
                        lr=list(p.lrs), seeds=p.seed, threads=THREADS,
                        method=method)
    return Side(call, p.reset, p.fastnn_losses)


def loop_side(p):
    def call(epochs):
        for net, lr in zip(p.nets, p.lrs):
            net.fit(p.X, p.Y, epochs=epochs, batch_size=p.batch, lr=float(lr),
                    seed=p.seed)
    return Side(call, p.reset, p.fastnn_losses)


def torch_side(p):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    from torch import nn
    from torch.func import functional_call, grad, stack_module_state, vmap
    torch.set_num_threads(THREADS)
    act_mod = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU}
    start = p.weights()

    def model():
        mods, fan_in = [], p.n_in
        for units, act, bias in p.layers:
            mods.append(nn.Linear(fan_in, units, bias=bias))
            if act in act_mod:
                mods.append(act_mod[act]())
            fan_in = units
        return nn.Sequential(*mods).double()

    models = [model() for _ in range(p.K)]
    base = model().to("meta")
    params, _ = stack_module_state(models)
    linear_names = [k for k in params if k.endswith(".weight")]
    X, Y = torch.from_numpy(p.X), torch.from_numpy(p.Y)
    lrs = torch.from_numpy(p.lrs)
    orders = p.orders(max(p.epochs, p.check_epochs))
    sse = p.loss == "sse"

    def loss_fn(ps, x, y):
        out = functional_call(base, ps, (x,))
        d = ((out - y) ** 2).sum(dim=1)
        return d.sum() if sse else 0.5 * d.mean()

    step_grad = vmap(grad(loss_fn), in_dims=(0, None, None))

    def reset():
        with torch.no_grad():
            for name, (W, b) in zip(linear_names, start):
                params[name].copy_(torch.from_numpy(W).transpose(1, 2))
                if b is not None:
                    params[name[:-len("weight")] + "bias"].copy_(torch.from_numpy(b))

    def step(xb, yb):
        g = step_grad(params, xb, yb)
        with torch.no_grad():
            for name, gp in g.items():
                params[name].sub_(lrs.view((-1,) + (1,) * (gp.dim() - 1)) * gp)

    def call(epochs):
        n, B = len(p.X), p.batch or len(p.X)
        for e in range(epochs):
            if orders is None:
                step(X, Y)
                continue
            perm = torch.from_numpy(orders[e])
            for i in range(0, n, B):
                idx = perm[i:i + B]
                step(X[idx], Y[idx])

    def losses():
        out = []
        for name, (_, _, bias) in zip(linear_names, p.layers):
            W = params[name].detach().transpose(1, 2).numpy()
            b = (params[name[:-len("weight")] + "bias"].detach().numpy()
                 if bias else None)
            out.append((W, b))
        return p.losses(out)

    return Side(call, reset, losses)


def jax_side(p):
    jax = pytest.importorskip("jax", reason="jax is not installed (pip install "
                              "jax) -- the jax.vmap side is skipped")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    start = p.weights()
    acts = [a for _, a, _ in p.layers]
    sse = p.loss == "sse"
    X, Y = jnp.asarray(p.X), jnp.asarray(p.Y)
    lrs = jnp.asarray(p.lrs)
    orders = p.orders(max(p.epochs, p.check_epochs))
    n, B = len(p.X), p.batch or len(p.X)
    full, rest = divmod(n, B)

    def forward(ps, x):
        h = x
        for (W, b), act in zip(ps, acts):
            h = h @ W + (b if b is not None else 0)
            if act == "sigmoid":
                h = jax.nn.sigmoid(h)
            elif act == "relu":
                h = jnp.maximum(h, 0)
        return h

    def loss_fn(ps, x, y):
        d = ((forward(ps, x) - y) ** 2).sum(axis=1)
        return d.sum() if sse else 0.5 * d.mean()

    step_grad = jax.vmap(jax.grad(loss_fn), in_axes=(0, None, None))

    def update(ps, xb, yb):
        g = step_grad(ps, xb, yb)
        return jax.tree_util.tree_map(
            lambda w, gw: w - lrs.reshape((-1,) + (1,) * (gw.ndim - 1)) * gw, ps, g)

    if orders is None:
        def train(ps, epochs):
            return jax.lax.fori_loop(0, epochs, lambda i, q: update(q, X, Y), ps)
    else:
        order_arr = jnp.asarray(np.stack(orders))

        def train(ps, epochs):
            def epoch(e, q):
                perm = order_arr[e]

                def body(s, q):
                    idx = jax.lax.dynamic_slice(perm, (s * B,), (B,))
                    return update(q, X[idx], Y[idx])
                q = jax.lax.fori_loop(0, full, body, q)
                if rest:
                    idx = perm[full * B:]
                    q = update(q, X[idx], Y[idx])
                return q
            return jax.lax.fori_loop(0, epochs, epoch, ps)

    train = jax.jit(train, static_argnums=1)
    state = {}

    def reset():
        state["ps"] = [(jnp.asarray(W), None if b is None else jnp.asarray(b))
                       for W, b in start]

    def call(epochs):
        state["ps"] = jax.block_until_ready(train(state["ps"], epochs))

    def losses():
        return p.losses([(np.asarray(W), None if b is None else np.asarray(b))
                         for W, b in state["ps"]])

    for epochs in (p.check_epochs, p.epochs):   # compile, outside the timing
        reset()
        call(epochs)
    return Side(call, reset, losses)


SIDES = {"fit_many": fit_many_side,
         "fit_many-threads": lambda p: fit_many_side(p, "threads"),
         "fit_many-batched": lambda p: fit_many_side(p, "batched"),
         "loop-over-fit": loop_side, "torch-vmap": torch_side,
         "jax-vmap": jax_side}


# ---- checks and timing --------------------------------------------------------------

def checked_sides(p):
    """Every side, each checked against fit_many from the same start over
    CHECK_EPOCHS epochs; a side whose package is missing is left out (and
    named)."""
    ref = fit_many_side(p)
    ref.reset()
    ref.call(p.check_epochs)
    ref_params = [net.params.copy() for net in p.nets]
    ref_losses = ref.losses()
    assert np.isfinite(ref_losses).all()
    sides, skipped = {}, []
    for name, make in SIDES.items():
        try:
            side = make(p)
        except pytest.skip.Exception as e:
            skipped.append(f"{name}: {e}")
            continue
        side.reset()
        side.call(p.check_epochs)
        # bit for bit, except that Network.fit splits the wide case's
        # minibatches between two threads (fit_many never does), which
        # rounds differently
        if name in ("fit_many", "fit_many-threads") or (
                name == "loop-over-fit" and p.name != "wide"):
            for net, q in zip(p.nets, ref_params):
                np.testing.assert_array_equal(net.params, q, err_msg=name)
        else:
            np.testing.assert_allclose(side.losses(), ref_losses, rtol=RTOL,
                                       atol=ATOL, err_msg=f"{name}: losses")
        sides[name] = side
    return sides, skipped


def run_rounds(benchmark, sides, rounds, epochs):
    times = {name: [] for name in sides}

    def one_round():
        for name, side in sides.items():
            side.reset()
            time.sleep(QUIET)
            t0 = time.perf_counter()
            side.call(epochs)
            times[name].append(time.perf_counter() - t0)

    benchmark.pedantic(one_round, rounds=rounds, warmup_rounds=1)
    return {k: np.array(v[-rounds:]) for k, v in times.items()}


def report_times(report, wname, times, per, targets):
    if not times or len(next(iter(times.values()))) == 0:
        return
    for name, t in times.items():
        report.add_times(f"many/{wname}/{name}", t, per=per, unit="net-epoch",
                         extra=f"range {t.min():.3g}-{t.max():.3g} s per run")
    for base, target in targets.items():
        if base in times:
            report.paired_ratio(f"fit_many vs {base}, {wname}",
                                times[base] / times["fit_many"], target)
    if "fit_many-batched" in times:
        for base in ("loop-over-fit", "torch-vmap", "jax-vmap", "fit_many"):
            if base in times:
                report.paired_ratio(f"fit_many(method='batched') vs {base}, {wname}",
                                    times[base] / times["fit_many-batched"], None)


@pytest.mark.parametrize("wname", ["tiny", "small", "wide"])
def test_many_side_by_side(benchmark, report, wname):
    p = problem(wname)
    sides, skipped = checked_sides(p)
    benchmark.group = (f"{wname}: K={p.K} networks, {p.epochs} epochs; one round "
                       f"= each side once: {', '.join(sides)}")
    times = run_rounds(benchmark, sides, ROUNDS, p.epochs)
    if getattr(benchmark, "stats", None) is None:
        return                          # --benchmark-disable: the checks only
    targets = {"loop-over-fit": 3.0 if wname == "tiny" else None,
               "torch-vmap": 1.0, "jax-vmap": 1.0, "fit_many-threads": None}
    report_times(report, wname, times, p.K * p.epochs, targets)
    for s in skipped:
        report.note(f"  {wname}: side skipped: {s}")
