"""The peers ``python -m fastnn bench`` compares: fastnn's fit and its
train_step, the NumPy loop, fastnn.reference, PyTorch, scikit-learn's MLP
and JAX.  Each trains a workload from the same initial weights on the same
data, with the same batch size and learning rate; a peer whose package does
not import is skipped."""
import warnings

import numpy as np

from fastnn.lecture import lecture_numpy_loop
from harness.workloads import lecture_form, numpy_runner


class Peer:
    """One implementation the suite times: its name, a note for the report,
    the thread pool its heavy work runs on (peers are timed interleaved
    only within a pool), and a runner for a workload."""
    name = "?"
    note = ""
    pool = "numpy-blas"     # the thread pool its heavy work runs on

    def available(self):
        """(True, version) or (False, reason)."""
        return True, ""

    def runner(self, wl, X, Y, weights, seed, threads):
        """A callable run(epochs) training for that many epochs."""
        raise NotImplementedError


class FastnnFit(Peer):
    name = "fastnn"
    note = "net.fit (native loop, GIL released)"
    # Its own group: a split step runs on fastnn's helper thread, a pool of
    # its own.  Interleaved with numpy's BLAS it would meet that pool's
    # threads still spinning (OpenBLAS's idle threads spin 0.1-0.3 s after
    # each call here) and measure the two starving each other.
    pool = "fastnn-helper"

    def available(self):
        import fastnn
        return True, fastnn.__version__

    def runner(self, wl, X, Y, weights, seed, threads):
        net = wl.network(seed)
        net.set_weights(weights)

        def run(epochs):
            net.fit(X, Y, epochs=epochs, batch_size=wl.batch, lr=wl.lr,
                    optimizer="sgd", shuffle=True, seed=seed)
        return run


class FastnnStep(Peer):
    name = "fastnn-step"
    note = "net.train_step in a Python loop"

    def available(self):
        import fastnn
        return True, fastnn.__version__

    def runner(self, wl, X, Y, weights, seed, threads):
        net = wl.network(seed)
        net.set_weights(weights)
        n, B = wl.n, wl.batch_rows
        rng = np.random.default_rng(seed)
        lr = wl.lr

        def run(epochs):
            ts = net.train_step
            for _ in range(epochs):
                if B >= n:
                    ts(X, Y, lr)
                    continue
                idx = rng.permutation(n)
                for i in range(0, n, B):
                    rows = idx[i:i + B]
                    ts(X[rows], Y[rows], lr)
        return run


class NumpyLoop(Peer):
    name = "numpy"
    note = ("the lecture's NumPy loop (fastnn.lecture) where the workload has "
            "its form, else that loop generalized")

    def available(self):
        return True, np.__version__

    def runner(self, wl, X, Y, weights, seed, threads):
        if not lecture_form(wl):
            return numpy_runner(wl, X, Y, weights, seed)[0]
        w1, w2 = (np.array(W) for W, _ in weights)

        def run(epochs):
            with np.errstate(over="ignore"):
                lecture_numpy_loop(X, Y, w1, w2, epochs, wl.lr)
        return run


class Reference(Peer):
    name = "reference"
    note = "fastnn.reference (NumPy, float64)"

    def available(self):
        return True, np.__version__

    def runner(self, wl, X, Y, weights, seed, threads):
        net = wl.network(seed, backend="reference")
        net.set_weights(weights)

        def run(epochs):
            net.fit(X, Y, epochs=epochs, batch_size=wl.batch, lr=wl.lr,
                    optimizer="sgd", shuffle=True, seed=seed)
        return run


class Torch(Peer):
    name = "torch"
    note = "nn.Sequential + torch.optim.SGD"
    pool = "torch"

    def available(self):
        try:
            import torch
        except Exception as e:  # ImportError, or a broken install
            return False, f"not importable ({type(e).__name__}: {e})"
        return True, torch.__version__

    def runner(self, wl, X, Y, weights, seed, threads):
        return torch_runner(wl, X, Y, weights, seed, threads)[0]


def torch_runner(wl, X, Y, weights, seed=0, threads=None):
    """The workload as PyTorch users write it: nn.Sequential of Linear and
    activation modules, torch.optim.SGD, zero_grad/backward/step per
    minibatch over torch.randperm.  The loss is what users reach for
    (nn.MSELoss, nn.CrossEntropyLoss, a sum of squares for sse), with the
    learning rate rescaled so the updates equal fastnn's.  Returns (run,
    model)."""
    import torch
    from torch import nn
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    tdt = torch.float64 if np.dtype(wl.dtype) == np.float64 else torch.float32
    mods, fan_in = [], wl.n_in
    act_mod = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}
    for units, act, bias in wl.layers:
        mods.append(nn.Linear(fan_in, units, bias=bias))
        if act in act_mod:
            mods.append(act_mod[act]())
        fan_in = units
    model = nn.Sequential(*mods).to(tdt)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for lin, (W, b) in zip(linears, weights):
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
            if b is not None:
                lin.bias.copy_(torch.from_numpy(b))
    lr = wl.lr
    Xt = torch.from_numpy(X)
    if wl.loss == "softmax_ce":
        Yt = torch.from_numpy(Y.argmax(axis=1))
        loss_fn = nn.CrossEntropyLoss()
    elif wl.loss == "mse":
        Yt = torch.from_numpy(Y)
        loss_fn = nn.MSELoss()            # mean over all elements:
        lr = wl.lr * wl.n_out / 2         # = fastnn's mse * 2 / n_out
    else:
        Yt = torch.from_numpy(Y)

        def loss_fn(out, y):
            return ((out - y) ** 2).sum()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    n, B = wl.n, wl.batch_rows

    def step(xb, yb):
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    def run(epochs):
        loss = None
        for _ in range(epochs):
            if B >= n:
                loss = step(Xt, Yt)
                continue
            perm = torch.randperm(n)
            for i in range(0, n, B):
                idx = perm[i:i + B]
                loss = step(Xt[idx], Yt[idx])
        return None if loss is None else float(loss.detach())
    return run, model


class Sklearn(Peer):
    name = "sklearn"
    note = "MLPRegressor/MLPClassifier, solver='sgd' (always has biases)"

    def available(self):
        try:
            import sklearn
        except Exception as e:
            return False, f"not importable ({type(e).__name__}: {e})"
        return True, sklearn.__version__

    def runner(self, wl, X, Y, weights, seed, threads):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier, MLPRegressor
        hidden = set(wl.hidden)
        if len(hidden) > 1:
            raise ValueError("scikit-learn's MLP has one hidden activation")
        act = {"sigmoid": "logistic"}.get(wl.hidden[0], wl.hidden[0])
        kw = dict(hidden_layer_sizes=tuple(u for u, _, _ in wl.layers[:-1]),
                  activation=act, solver="sgd", alpha=0.0,
                  batch_size=wl.batch_rows, learning_rate="constant",
                  learning_rate_init=wl.lr, momentum=0.0,
                  nesterovs_momentum=False, shuffle=True, random_state=seed,
                  tol=0.0, n_iter_no_change=1 << 30, early_stopping=False,
                  warm_start=True, max_iter=1)
        if wl.loss == "softmax_ce":
            est, y = MLPClassifier(**kw), Y.argmax(axis=1)
        else:
            est, y = MLPRegressor(**kw), (Y.ravel() if wl.n_out == 1 else Y)

        def run(epochs):
            est.set_params(max_iter=epochs)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                est.fit(X, y)
        return run


class Jax(Peer):
    name = "jax"
    note = "jax.jit(value_and_grad) step in a Python loop"
    pool = "jax"

    def available(self):
        try:
            import jax
        except Exception as e:
            return False, f"not importable ({type(e).__name__}: {e})"
        return True, jax.__version__

    def runner(self, wl, X, Y, weights, seed, threads):
        import jax
        import jax.numpy as jnp
        if np.dtype(wl.dtype) == np.float64:
            jax.config.update("jax_enable_x64", True)
        acts = [a for _, a, _ in wl.layers]
        params = [(jnp.asarray(W), None if b is None else jnp.asarray(b))
                  for W, b in weights]
        lr, loss_name = wl.lr, wl.loss

        def forward(ps, x):
            for (W, b), act in zip(ps, acts):
                z = x @ W
                if b is not None:
                    z = z + b
                if act == "sigmoid":
                    x = jax.nn.sigmoid(z)
                elif act == "tanh":
                    x = jnp.tanh(z)
                elif act == "relu":
                    x = jax.nn.relu(z)
                else:       # identity, or softmax's logits
                    x = z
            return x

        def loss_fn(ps, x, y):
            out = forward(ps, x)
            if loss_name == "sse":
                return jnp.sum((out - y) ** 2)
            if loss_name == "mse":
                return 0.5 * jnp.sum((out - y) ** 2) / x.shape[0]
            return -jnp.sum(y * jax.nn.log_softmax(out)) / x.shape[0]

        @jax.jit
        def step(ps, x, y):
            L, g = jax.value_and_grad(loss_fn)(ps, x, y)
            return jax.tree_util.tree_map(lambda p, d: p - lr * d, ps, g), L

        state = [params]
        n, B = wl.n, wl.batch_rows
        rng = np.random.default_rng(seed)
        Xj, Yj = jnp.asarray(X), jnp.asarray(Y)

        def run(epochs):
            ps, L = state[0], None
            for _ in range(epochs):
                if B >= n:
                    ps, L = step(ps, Xj, Yj)
                    continue
                idx = rng.permutation(n)
                for i in range(0, n, B):
                    rows = idx[i:i + B]
                    ps, L = step(ps, Xj[rows], Yj[rows])
            if L is not None:
                L.block_until_ready()
            state[0] = ps
        return run


PEERS = {p.name: p for p in (FastnnFit(), FastnnStep(), NumpyLoop(), Reference(),
                             Torch(), Sklearn(), Jax())}
