"""``python -m fastnn bench``: fastnn next to its peers, in steps per second.

Runs the same training (same layers, data, initial weights, batch size and
learning rate) with fastnn's native fit and with each peer that imports --
fastnn's train_step in a Python loop, the seed-style NumPy loop,
fastnn.reference, PyTorch (nn.Sequential + torch.optim.SGD), scikit-learn's
MLP and JAX -- over the workloads tiny, small, seed, medium and large, and
prints steps/second with the ratio fastnn / peer under a header naming the
machine and the BLAS.  The helpers (machine header, workloads, the NumPy
loop, the bare BLAS gemm) are shared with the pytest-benchmark suites in
bench/.

Thread counts are set for every pool (threadpoolctl: numpy's and scipy's
OpenBLAS, OpenMP; torch.set_num_threads).  OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE, if set, are read by OpenBLAS when it loads: unset them in
the command (``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m fastnn
bench``) to benchmark the kernel OpenBLAS picks by itself.
"""
import argparse
import ctypes
import json
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

__all__ = ["main", "WORKLOADS", "PEERS", "machine_info", "header_lines",
           "make_data", "initial_weights", "numpy_runner", "torch_runner",
           "BareGemm", "calibrate", "run_suite"]

BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
DEFAULT_THREADS = 2


# ---- machine and BLAS -------------------------------------------------------

def cpu_model():
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _pool_label(path):
    p = (path or "").replace("\\", "/")
    for owner, dirs in (("numpy", ("numpy.libs", "numpy")),
                        ("scipy", ("scipy.libs", "scipy")),
                        ("torch", ("torch.libs", "torch")),
                        ("sklearn", ("scikit_learn.libs", "sklearn")),
                        ("jax", ("jaxlib.libs", "jaxlib"))):
        if any(f"/{d}/" in p for d in dirs):
            return owner
    return os.path.basename(p)


def blas_pools():
    """threadpoolctl's view of the thread pools loaded in this process, each
    labelled by the package that ships it (numpy, scipy, torch, ...)."""
    try:
        import threadpoolctl
    except ImportError:
        return None
    import scipy.linalg  # noqa: F401  -- loads scipy's OpenBLAS
    pools = []
    for p in threadpoolctl.threadpool_info():
        pools.append({"owner": _pool_label(p.get("filepath")),
                      "user_api": p.get("user_api"),
                      "internal_api": p.get("internal_api"),
                      "version": p.get("version"),
                      "architecture": p.get("architecture"),
                      "num_threads": p.get("num_threads"),
                      "file": os.path.basename(p.get("filepath") or "")})
    return pools


def machine_info(threads=None):
    """A dict naming the machine, the versions and every BLAS in use."""
    import scipy
    import fastnn
    info = {"cpu": cpu_model(), "cores": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "fastnn": fastnn.__version__,
            "threads": threads, "pools": blas_pools(),
            "fastnn_blas": dict(fastnn.blas_info()),
            "env": {k: os.environ.get(k) for k in BLAS_ENV}}
    return info


def header_lines(threads=None, info=None):
    """Human-readable lines for the top of a benchmark report."""
    info = info or machine_info(threads)
    lines = [f"CPU: {info['cpu']} ({info['cores']} logical cores); "
             f"benchmark threads: {info['threads']}",
             f"python {info['python']}, numpy {info['numpy']}, "
             f"scipy {info['scipy']}, fastnn {info['fastnn']}"]
    if info["pools"] is None:
        lines.append("thread pools: threadpoolctl not installed (pip install "
                      "threadpoolctl) -- BLAS kernels unknown")
    else:
        for p in info["pools"]:
            lines.append(f"pool {p['owner']:>6}: {p['user_api']}/"
                         f"{p['internal_api']} {p['version']} kernel="
                         f"{p['architecture']} threads={p['num_threads']} "
                         f"({p['file']})")
    fb = info["fastnn_blas"]
    lines.append(f"fastnn BLAS: source={fb.get('source')} api={fb.get('api')} "
                 f"threads={fb.get('num_threads')} small_mnk={fb.get('small_mnk')} "
                 f"symbols={fb.get('symbols')}")
    if fb.get("config"):
        lines.append(f"fastnn BLAS config: {fb['config']}")
    set_env = {k: v for k, v in info["env"].items() if v is not None}
    if set_env:
        lines.append("WARNING: " + " ".join(f"{k}={v}" for k, v in set_env.items())
                     + " is set: OpenBLAS is forced onto that kernel; for "
                     "numbers against NumPy run with `env -u OPENBLAS_CORETYPE "
                     "-u OPENBLAS_L2_SIZE ...`")
    else:
        lines.append("OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE: unset (OpenBLAS "
                     "picks its kernel itself)")
    return lines


def limit_threads(n):
    """Set n threads on every pool threadpoolctl sees (and torch, if
    loaded).  Returns the threadpoolctl controller (keep it alive) or None."""
    ctl = None
    try:
        import threadpoolctl
        import scipy.linalg  # noqa: F401
        ctl = threadpoolctl.threadpool_limits(n)
    except ImportError:
        try:
            import fastnn
            fastnn.set_num_threads(n)
        except Exception:
            pass
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(n)
    return ctl


# ---- a bare BLAS gemm: numpy's own OpenBLAS called through ctypes -----------

_CBLAS_ROW_MAJOR, _CBLAS_NOTRANS, _CBLAS_TRANS = 101, 111, 112


class BareGemm:
    """Row-major cblas_?gemm of the BLAS numpy itself loaded, called through
    ctypes with no checks: the baseline "what the BLAS does for this shape".
    Raises RuntimeError if numpy's BLAS exports no cblas gemm."""

    _CANDIDATES = (("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", True),
                   ("cblas_sgemm64_", "cblas_dgemm64_", True),
                   ("scipy_cblas_sgemm", "scipy_cblas_dgemm", False),
                   ("cblas_sgemm", "cblas_dgemm", False))

    def __init__(self):
        try:
            import numpy._core._multiarray_umath as mu
        except ImportError:  # numpy < 2
            import numpy.core._multiarray_umath as mu
        lib = ctypes.CDLL(mu.__file__)
        for s, d, ilp64 in self._CANDIDATES:
            try:
                fs, fd = getattr(lib, s), getattr(lib, d)
            except AttributeError:
                continue
            I = ctypes.c_int64 if ilp64 else ctypes.c_int
            P = ctypes.c_void_p
            for f, R in ((fs, ctypes.c_float), (fd, ctypes.c_double)):
                f.restype = None
                f.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, I, I, I,
                              R, P, I, P, I, R, P, I]
            self.funcs = {np.dtype(np.float32): fs, np.dtype(np.float64): fd}
            self.symbols = (s, d)
            return
        raise RuntimeError("numpy's BLAS exports no cblas gemm symbol")

    def bind(self, a, b, c, alpha=1.0, beta=0.0, trans_a=False, trans_b=False):
        """A no-argument callable computing c := alpha op(a) op(b) + beta c
        (C-contiguous arrays of one dtype; shapes checked once, here)."""
        m, k = a.shape[::-1] if trans_a else a.shape
        k2, n = b.shape[::-1] if trans_b else b.shape
        if k != k2 or c.shape != (m, n):
            raise ValueError(f"shapes do not match: {a.shape} {b.shape} {c.shape}")
        for x in (a, b, c):
            if x.dtype != c.dtype or not x.flags.c_contiguous:
                raise ValueError("a, b, c must be C-contiguous of one dtype")
        f = self.funcs[c.dtype]
        ta = _CBLAS_TRANS if trans_a else _CBLAS_NOTRANS
        tb = _CBLAS_TRANS if trans_b else _CBLAS_NOTRANS
        args = (_CBLAS_ROW_MAJOR, ta, tb, m, n, k, alpha, a.ctypes.data,
                a.shape[1], b.ctypes.data, b.shape[1], beta, c.ctypes.data,
                c.shape[1])
        keep = (a, b, c)

        def call(f=f, args=args, keep=keep):
            f(*args)
        return call


# ---- workloads ---------------------------------------------------------------

@dataclass
class Workload:
    """A training job: layers (units, activation, bias) after n_in inputs,
    loss, dtype, n samples in batches of `batch` (None: full batch), plain
    SGD with learning rate lr."""
    name: str
    n_in: int
    layers: list
    loss: str
    dtype: type
    n: int
    batch: int = None
    lr: float = 0.01
    init: str = "glorot"
    note: str = ""
    hidden: list = field(init=False)

    def __post_init__(self):
        self.hidden = [a for _, a, _ in self.layers[:-1]]

    @property
    def batch_rows(self):
        return self.n if self.batch is None else min(self.batch, self.n)

    @property
    def steps_per_epoch(self):
        return -(-self.n // self.batch_rows)

    @property
    def n_out(self):
        return self.layers[-1][0]

    def describe(self):
        sizes = " -> ".join([str(self.n_in)] + [str(u) for u, _, _ in self.layers])
        acts = "/".join(a for _, a, _ in self.layers)
        bias = "biases" if all(b for _, _, b in self.layers) else "no biases"
        return (f"{sizes} ({acts}, {bias}), {self.loss}, "
                f"{np.dtype(self.dtype).name}, n={self.n}, "
                f"batch={self.batch_rows}, SGD lr={self.lr}")

    def network(self, seed=0, backend="native"):
        from fastnn import Dense, Network
        return Network([Dense(u, a, bias=b) for u, a, b in self.layers],
                       loss=self.loss, n_in=self.n_in, dtype=self.dtype,
                       init=self.init, seed=seed, backend=backend)


WORKLOADS = {
    "tiny": Workload("tiny", 2, [(4, "sigmoid", False), (1, "identity", False)],
                     "sse", np.float64, 4, None, 0.1, "normal",
                     "the seed loop at N=4, 2 -> 4 -> 1"),
    "small": Workload("small", 20, [(32, "relu", True), (1, "identity", True)],
                      "mse", np.float64, 1000, 32, 0.01),
    "seed": Workload("seed", 1000, [(100, "sigmoid", False), (10, "identity", False)],
                     "sse", np.float64, 64, None, 1e-4, "normal",
                     "shared/SEED.md"),
    "medium": Workload("medium", 784, [(256, "relu", True), (10, "softmax", True)],
                       "softmax_ce", np.float32, 2048, 256, 0.01),
    "large": Workload("large", 1024, [(1024, "relu", True), (1024, "relu", True),
                                      (10, "softmax", True)],
                      "softmax_ce", np.float32, 2048, 1024, 0.01),
}


def make_data(wl, seed=0):
    """(X, Y) for a workload: standard normal X; Y standard normal for
    regression, XOR for tiny, one-hot random classes for softmax_ce."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((wl.n, wl.n_in))
    if wl.name == "tiny":
        X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
        Y = np.array([[0], [1], [1], [0]], dtype=np.float64)
    elif wl.loss == "softmax_ce":
        Y = np.eye(wl.n_out)[rng.integers(0, wl.n_out, wl.n)]
    else:
        Y = rng.standard_normal((wl.n, wl.n_out))
    return (np.ascontiguousarray(X, dtype=wl.dtype),
            np.ascontiguousarray(Y, dtype=wl.dtype))


def initial_weights(wl, seed=0):
    """[(W, b or None)] per layer, from fastnn's initializer."""
    return wl.network(seed).get_weights()


# ---- the seed-style NumPy loop, generalized -----------------------------------

def _np_act(z, act):
    if act == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if act == "tanh":
        return np.tanh(z)
    if act == "relu":
        return np.maximum(z, 0)
    if act == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return z


def _np_dact(h, act):
    if act == "sigmoid":
        return h * (1 - h)
    if act == "tanh":
        return 1 - h * h
    if act == "relu":
        return h > 0
    return 1


def numpy_runner(wl, X, Y, weights, seed=0):
    """The seed's NumPy loop grown to any workload: forward, loss and
    analytical gradients with temporaries allocated as the seed does,
    biases when the layers have them, minibatches in the order fastnn's fit
    uses (numpy.random.default_rng(seed).permutation per epoch, when the
    batch is smaller than the data).  Returns (run(epochs) -> last loss,
    params) where params is the list [W, b, W, b, ...] updated in place."""
    Ws = [np.array(W, dtype=wl.dtype) for W, _ in weights]
    bs = [None if b is None else np.array(b, dtype=wl.dtype) for _, b in weights]
    acts = [a for _, a, _ in wl.layers]
    lr, loss = wl.lr, wl.loss
    n, B = wl.n, wl.batch_rows
    shuffle = B < n
    dt = np.dtype(wl.dtype).type
    rng = [np.random.default_rng(seed)]

    def step(x, y):
        hs = [x]
        for W, b, act in zip(Ws, bs, acts):
            z = hs[-1].dot(W)
            if b is not None:
                z += b
            hs.append(_np_act(z, act))
        y_pred = hs[-1]
        m = len(x)
        if loss == "sse":
            L = np.square(y_pred - y).sum()
            g = 2.0 * (y_pred - y)
        elif loss == "mse":
            L = 0.5 * np.square(y_pred - y).sum() / m
            g = (y_pred - y) / dt(m)
        else:  # softmax_ce with the softmax output: gradient p - y
            L = -(y * np.log(np.maximum(y_pred, 1e-30))).sum() / m
            g = (y_pred - y) / dt(m)
        for l in range(len(Ws) - 1, -1, -1):
            grad_W = hs[l].T.dot(g)
            grad_b = g.sum(axis=0) if bs[l] is not None else None
            if l > 0:
                g = g.dot(Ws[l].T) * _np_dact(hs[l], acts[l - 1])
            Ws[l] -= lr * grad_W
            if grad_b is not None:
                bs[l] -= lr * grad_b
        return L

    def run(epochs):
        L = None
        with np.errstate(over="ignore"):
            for _ in range(epochs):
                if not shuffle:
                    L = step(X, Y)
                    continue
                idx = rng[0].permutation(n)
                for i in range(0, n, B):
                    rows = idx[i:i + B]
                    L = step(X[rows], Y[rows])
        return L

    def reset(seed=seed):
        rng[0] = np.random.default_rng(seed)
    run.reset = reset
    params = [p for pair in zip(Ws, bs) for p in pair if p is not None]
    return run, params


# ---- peers -------------------------------------------------------------------

class Peer:
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
    note = "seed-style NumPy loop"

    def available(self):
        return True, np.__version__

    def runner(self, wl, X, Y, weights, seed, threads):
        return numpy_runner(wl, X, Y, weights, seed)[0]


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


# ---- timing --------------------------------------------------------------------

# ---- the suite -------------------------------------------------------------------

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
    threads starving each other (issue 2), which no user of one library
    pays.  Each peer gets about `budget` seconds (at least
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
        raise SystemExit("--plot needs matplotlib, an optional dependency: "
                         "pip install matplotlib (or pip install 'fastnn[bench]')")
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


def main(argv=None):
    """Entry point of ``python -m fastnn bench``; returns an exit status."""
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
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", metavar="FILE.png",
                    help="draw the table as a bar chart (needs matplotlib)")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    budget = args.budget if args.budget is not None else (0.3 if args.quick else 1.5)
    if budget <= 0:
        ap.error("--budget must be > 0")
    min_repeats = 2 if args.quick else 3
    if args.plot:   # fail before the run, not after it
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("--plot needs matplotlib, an optional dependency: pip install "
                  "matplotlib", file=sys.stderr)
            return 2
    peers = args.peers
    for p in peers:      # import peers first, so the header names their pools
        ok, why = PEERS[p].available()
        if not ok:
            print(f"peer {p}: skipped, {why}")
    ctl = limit_threads(args.threads)   # noqa: F841 -- keep the limits alive
    info = machine_info(args.threads)
    head = header_lines(args.threads, info)
    print("\n".join(head))
    vers = [f"{p} {PEERS[p].available()[1]}" for p in peers
            if p in ("torch", "sklearn", "jax") and PEERS[p].available()[0]]
    if vers:
        print("peers: " + ", ".join(vers) + " (JAX/XLA keeps its own thread pool, "
              "one thread per core)" * ("jax" in peers and PEERS["jax"].available()[0]))
    print(f"budget {budget:g} s per workload and peer; steps/s = training "
          f"steps (minibatch updates) per second, median over calls")
    t0 = time.perf_counter()
    results = run_suite(args.workloads, peers, budget, min_repeats, args.threads,
                        args.seed)
    print()
    print("\n".join(format_table(results, args.workloads, peers)))
    print(f"'fastnn x' = fastnn steps/s / peer steps/s (ratio of medians, and of "
          f"best calls); total {time.perf_counter() - t0:.0f} s")
    for p in peers:
        print(f"  {p}: {PEERS[p].note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": {k: v for k, v in info.items()},
                       "budget": budget, "results": results}, f, indent=1,
                      default=str)
        print(f"wrote {args.json}")
    if args.plot:
        fb = info["fastnn_blas"]
        np_pool = next((p for p in info["pools"] or [] if p["owner"] == "numpy"), {})
        title = (f"{info['cpu']}, {args.threads} threads; BLAS: "
                 f"{np_pool.get('internal_api', fb.get('source'))} "
                 f"{np_pool.get('version', '')} {np_pool.get('architecture', '')} "
                 f"(fastnn on {fb.get('source')}'s)")
        plot(results, args.workloads, peers, args.plot, title)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
