"""The benchmark workloads, their data and initial weights, and the
lecture's NumPy loop generalized to all of them (the "numpy" peer and the
NumPy baseline of bench_train.py)."""
from dataclasses import dataclass, field

import numpy as np


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
                     "the lecture's loop at N=4, 2 -> 4 -> 1 (XOR)"),
    "small": Workload("small", 20, [(32, "relu", True), (1, "identity", True)],
                      "mse", np.float64, 1000, 32, 0.01),
    "lecture": Workload("lecture", 1000, [(100, "sigmoid", False),
                                          (10, "identity", False)],
                        "sse", np.float64, 64, None, 1e-4, "normal",
                        "the lecture notes' network (fastnn.lecture)"),
    "medium": Workload("medium", 784, [(256, "relu", True), (10, "softmax", True)],
                       "softmax_ce", np.float32, 2048, 256, 0.01),
    "large": Workload("large", 1024, [(1024, "relu", True), (1024, "relu", True),
                                      (10, "softmax", True)],
                      "softmax_ce", np.float32, 2048, 1024, 0.01),
}


def lecture_form(wl):
    """Whether wl has the lecture network's form (a sigmoid hidden layer and
    a linear output, no biases, sum of squares, full batch), so that the
    lecture's own NumPy loop trains it."""
    return (len(wl.layers) == 2 and wl.loss == "sse" and wl.batch is None
            and [(a, b) for _, a, b in wl.layers]
            == [("sigmoid", False), ("identity", False)])


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


# ---- the lecture's NumPy loop, generalized -------------------------------------

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
    """The lecture's NumPy loop (fastnn.lecture) grown to any workload:
    forward, loss and analytical gradients with temporaries allocated as the
    lecture's loop does,
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
