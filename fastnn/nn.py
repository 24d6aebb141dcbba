"""The drop-in network: layers, the flat parameter layout, and the methods
that check their inputs once and hand raw buffers to the compiled core.

All parameters live in one 1-D array ``net.params``: every layer's weight
matrix first (layer order), then every bias.  Each layer's ``W`` (fan_in x
fan_out, so ``Z = X @ W + b`` as in the lecture notes) and ``b`` are views into it;
``net.grads`` has the same layout.  Keeping the weights in one prefix lets
L2 decay run as one loop over that prefix.
"""
import contextlib
import copy
import math
import threading

import numpy as np

from fastnn import reference as ref
from fastnn._kernels import ACTIVATIONS, LOSSES
from fastnn._validation import (CSRInput, check_matrix, check_positive_int,
                                check_real, check_sample_weight, check_sparse,
                                check_targets, is_sparse)

_ACT_ALIASES = {"linear": "identity", "none": "identity", "logistic": "sigmoid",
                "lrelu": "leaky_relu", "leakyrelu": "leaky_relu"}
_LOSS_ALIASES = {"squared_error": "mse", "sum_squared_error": "sse",
                 "binary_crossentropy": "bce", "log_loss": "bce",
                 "crossentropy": "softmax_ce", "categorical_crossentropy": "softmax_ce",
                 "absolute_error": "mae", "l1": "mae", "pinball": "quantile"}
# Defaults of the loss parameters: huber's delta, quantile's quantile.
DEFAULT_HUBER_DELTA = 1.0
DEFAULT_QUANTILE = 0.5
_DEFAULT_ALPHA = {"leaky_relu": 0.1, "elu": 1.0}
INITS = ("normal", "glorot", "he")


def _act_name(act):
    if not isinstance(act, str):
        raise TypeError(f"activation must be a string, got {act!r}")
    a = _ACT_ALIASES.get(act.lower(), act.lower())
    if a not in ref.DENSE_ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of "
                         f"{ref.DENSE_ACTIVATIONS}")
    return a


def _loss_name(loss):
    if not isinstance(loss, str):
        raise TypeError(f"loss must be a string, got {loss!r}")
    name = _LOSS_ALIASES.get(loss.lower(), loss.lower())
    if name not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {tuple(LOSSES)}")
    return name


def _loss_param(name, huber_delta, quantile):
    """The parameter of loss `name` from Network's huber_delta / quantile
    (None: the default), checked; None for the losses without one.  Giving
    the other loss's parameter is an error."""
    if huber_delta is not None and name != "huber":
        raise ValueError(f"huber_delta applies to loss='huber' only; the loss is "
                         f"{name!r}")
    if quantile is not None and name != "quantile":
        raise ValueError(f"quantile applies to loss='quantile' only; the loss is "
                         f"{name!r}")
    if name == "huber":
        if huber_delta is None:
            return DEFAULT_HUBER_DELTA
        return check_real(huber_delta, "huber_delta", 0.0, open_min=True)
    if name == "quantile":
        if quantile is None:
            return DEFAULT_QUANTILE
        q = check_real(quantile, "quantile", 0.0, open_min=True)
        if q >= 1:
            raise ValueError(f"quantile must be < 1, got {q}")
        return q
    return None


def _loss_param_kwargs(loss, param):
    """Network's keyword argument for the parameter of `loss` (a name or
    alias): {"huber_delta": param}, {"quantile": param} or {} if param is
    None."""
    if param is None:
        return {}
    name = _loss_name(loss)
    return {"huber_delta" if name == "huber" else "quantile": param}


class Dense:
    """A fully connected layer: ``act(X @ W + b)``.

    units: output width.  activation: identity, sigmoid, tanh, relu,
    leaky_relu (slope ``alpha``, default 0.1 as in the lecture notes), elu (scale
    ``alpha``, default 1.0) or, on the output layer only, softmax.
    bias: whether the layer has a bias vector.  dropout: the rate of
    inverted dropout on the layer's output during fit (each unit zeroed
    with that probability, the others scaled by 1 / (1 - rate)); in [0, 1),
    0 (the default) for none; hidden layers only; inactive in predict,
    forward, loss and loss_and_grad.  See docs/dropout.md.
    After the network is built, ``W`` (n_in, units) and ``b`` (units,) or
    None are views into the network's flat ``params``.
    """

    kind = "dense"

    def __init__(self, units, activation="identity", bias=True, alpha=None,
                 dropout=0.0):
        self.units = check_positive_int(units, "units")
        self.activation = _act_name(activation)
        self.bias = bool(bias)
        if alpha is None:
            alpha = _DEFAULT_ALPHA.get(self.activation, 0.0)
        self.alpha = check_real(alpha, "alpha")
        self.dropout = check_real(dropout, "dropout", 0.0)
        if self.dropout >= 1:
            raise ValueError(f"dropout must be < 1 (the rate of units dropped), "
                             f"got {self.dropout}")
        self.pieces = 1
        self.W = self.b = None

    def __repr__(self):
        extra = f", alpha={self.alpha}" if self.activation in _DEFAULT_ALPHA else ""
        if self.dropout:
            extra += f", dropout={self.dropout}"
        return (f"Dense({self.units}, activation={self.activation!r}"
                f"{extra}, bias={self.bias})")

    def _to_state(self):
        d = {"type": "dense", "units": int(self.units),
             "activation": self.activation, "alpha": float(self.alpha),
             "bias": bool(self.bias)}
        if self.dropout:
            d["dropout"] = float(self.dropout)
        return d


class Maxout:
    """A maxout layer: unit j outputs max over p of ``X @ W[:, j*pieces+p] +
    b[j*pieces+p]``, the max of ``pieces`` linear functions (k = 2 in the
    seed).  ``W`` is (n_in, units*pieces), column j*pieces+p holding piece p
    of unit j."""

    kind = "maxout"
    activation = "maxout"
    alpha = 0.0
    dropout = 0.0                # maxout layers have no dropout

    def __init__(self, units, pieces=2, bias=True):
        self.units = check_positive_int(units, "units")
        self.pieces = check_positive_int(pieces, "pieces", 2)
        self.bias = bool(bias)
        self.W = self.b = None

    def __repr__(self):
        return f"Maxout({self.units}, pieces={self.pieces}, bias={self.bias})"

    def _to_state(self):
        return {"type": "maxout", "units": int(self.units),
                "pieces": int(self.pieces), "bias": bool(self.bias)}


def _layer_from_state(d):
    """The Dense or Maxout a layer's _to_state() describes."""
    if not isinstance(d, dict) or d.get("type") not in ("dense", "maxout"):
        raise ValueError(f"a layer is described by a dict with type 'dense' or "
                         f"'maxout', got {d!r}")
    if d["type"] == "maxout":
        return Maxout(d["units"], d["pieces"], bias=d["bias"])
    return Dense(d["units"], d["activation"], bias=d["bias"], alpha=d["alpha"],
                 dropout=d.get("dropout", 0.0))


class Network:
    """A dense network trained by compiled kernels over one parameter buffer.

    Parameters
    ----------
    layers : list of Dense / Maxout
    loss : 'mse' (1/2 mean over samples of the summed squared error, the
        objective scikit-learn's MLP uses), 'sse' (plain sum of squares, the
        lecture notes'), 'bce' (log loss; output layer must be sigmoid),
        'softmax_ce' (cross-entropy; output layer must be softmax), or the
        robust regression losses, each a mean over samples of a sum over
        outputs of a function of r = output - target: 'mae' (|r|), 'huber'
        (r^2 / 2 for |r| <= huber_delta, else huber_delta (|r| -
        huber_delta / 2)) and 'quantile' (the pinball loss max(-q r,
        (1 - q) r) of quantile q; its minimizer is the q-quantile of the
        target).  At the kinks (r = 0 for mae and quantile) the gradient is
        0.  See docs/losses.md.
    n_in : input width, or None to take it from the first data.
    dtype : np.float64 (default) or np.float32.
    init : 'glorot' (default), 'he' or 'normal' (standard normal, the
        lecture notes' randn).  Biases start at 0.
    seed : int or None: the initial weights and, for each fit not given a
        seed of its own, the order in which it visits the rows.  With a seed,
        the same script gives bit-identical results run after run: the k-th
        fit of the network shuffles with a seed derived from (seed, k).
        None: fresh entropy each time.
    backend : 'native' (default) or 'reference' (every computation through
        fastnn.reference, in NumPy; for checking and teaching).
    huber_delta : float > 0, for loss='huber' only (None: 1.0).
    quantile : float in (0, 1), for loss='quantile' only (None: 0.5, the
        median).

    Example: the lecture notes' 2-layer network::

        net = Network([Dense(100, "sigmoid", bias=False), Dense(10, bias=False)],
                      loss="sse", n_in=1000, init="normal")
    """

    def __init__(self, layers, loss="mse", n_in=None, dtype=np.float64,
                 init="glorot", seed=None, backend="native", huber_delta=None,
                 quantile=None):
        if isinstance(layers, (Dense, Maxout)):
            layers = [layers]
        layers = list(layers)
        if not layers:
            raise ValueError("a network needs at least one layer")
        for l in layers:
            if not isinstance(l, (Dense, Maxout)):
                raise TypeError(f"layers must be Dense or Maxout, got {l!r}")
        if len({id(l) for l in layers}) != len(layers):
            raise ValueError("the same layer object appears twice")
        for l in layers[:-1]:
            if l.activation == "softmax":
                raise ValueError("softmax is an output activation: only the last "
                                 "layer may use it")
        if layers[-1].dropout:
            raise ValueError(f"dropout applies to hidden layers; the output layer "
                             f"{layers[-1]!r} has dropout={layers[-1].dropout}")
        self.loss_name = _loss_name(loss)
        self.loss_param = _loss_param(self.loss_name, huber_delta, quantile)
        out = layers[-1].activation
        if self.loss_name == "bce" and out != "sigmoid":
            raise ValueError(f"loss 'bce' needs a sigmoid output layer, got {out!r} "
                             "(write Dense(n, activation='sigmoid'))")
        if self.loss_name == "softmax_ce" and out != "softmax":
            raise ValueError(f"loss 'softmax_ce' needs a softmax output layer, got "
                             f"{out!r} (write Dense(n, activation='softmax'))")
        if out == "softmax" and self.loss_name != "softmax_ce":
            raise ValueError("a softmax output layer needs loss 'softmax_ce'")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; expected one of {INITS}")
        if backend not in ("native", "reference"):
            raise ValueError(f"backend must be 'native' or 'reference', got {backend!r}")
        self.layers = layers
        self.init = init
        self.seed = seed
        self.backend = backend
        self.n_in = None
        self.params = self.grads = None
        self._core = None
        self._ref_lock = threading.Lock()
        self.history = None
        self._opt_state = None
        self._fits = 0
        if n_in is not None:
            self.build(check_positive_int(n_in, "n_in"))

    # ---- construction -----------------------------------------------------

    @property
    def dropout_rates(self):
        """The layers' dropout rates (0 for none), input to output."""
        return [float(l.dropout) for l in self.layers]

    @property
    def huber_delta(self):
        """The delta of loss 'huber' (None for other losses)."""
        return self.loss_param if self.loss_name == "huber" else None

    @property
    def quantile(self):
        """The quantile of loss 'quantile' (None for other losses)."""
        return self.loss_param if self.loss_name == "quantile" else None

    @property
    def n_out(self):
        return self.layers[-1].units

    @property
    def built(self):
        return self.params is not None

    def build(self, n_in):
        """Allocate params/grads for input width n_in and initialize them.
        Called automatically with the first data when n_in was not given."""
        if self.built:
            if n_in != self.n_in:
                raise ValueError(f"network already built for {self.n_in} inputs")
            return self
        self._allocate(check_positive_int(n_in, "n_in"))
        self._initialize()
        return self

    def _allocate(self, n_in):
        """The layout for n_in inputs: params and grads (zeros), the layers'
        views into them and the compiled core; the weights not initialized."""
        fan_in, w_off, shapes = n_in, 0, []
        for l in self.layers:
            cols = l.units * l.pieces
            shapes.append((fan_in, cols, w_off))
            w_off += fan_in * cols
            fan_in = l.units
        n_weights, off, b_offs = w_off, w_off, []
        for l in self.layers:
            cols = l.units * l.pieces
            b_offs.append(off if l.bias else -1)
            off += cols if l.bias else 0
        self.n_in, self.n_weights, self.n_params = n_in, n_weights, off
        self.params = np.zeros(off, dtype=self.dtype)
        self.grads = np.zeros(off, dtype=self.dtype)
        self._layout = []
        for l, (fi, cols, wo), bo in zip(self.layers, shapes, b_offs):
            l.W = self.params[wo:wo + fi * cols].reshape(fi, cols)
            l.b = self.params[bo:bo + cols] if bo >= 0 else None
            l.dW = self.grads[wo:wo + fi * cols].reshape(fi, cols)
            l.db = self.grads[bo:bo + cols] if bo >= 0 else None
            self._layout.append((fi, l.units, wo, bo))
        if self.backend == "native":
            from fastnn._train import NetCore
            specs = [(fi, l.units, ACTIVATIONS[l.activation], l.pieces, l.alpha, wo, bo,
                      l.dropout)
                     for l, (fi, _, wo, bo) in zip(self.layers, self._layout)]
            self._core = NetCore(specs, LOSSES[self.loss_name], self.params,
                                 self.grads, n_weights,
                                 0.0 if self.loss_param is None else self.loss_param)

    def _fit_rng(self):
        """The random generator of a fit given no seed of its own: derived
        from the network's seed and how many fits it has run (so each fit
        shuffles differently and identical scripts identically); fresh
        entropy without a seed; the network's own Generator if its seed is
        one."""
        k = self._fits
        self._fits += 1
        s = self.seed
        if s is None:
            return np.random.default_rng()
        if isinstance(s, np.random.Generator):
            return s
        if isinstance(s, np.random.BitGenerator):
            return np.random.Generator(s)
        if isinstance(s, np.random.SeedSequence):
            entropy, key = s.entropy, tuple(s.spawn_key)
        else:
            entropy, key = s, ()
        # spawn key (..., 1, k): a stream apart from the initial weights'
        return np.random.default_rng(
            np.random.SeedSequence(entropy, spawn_key=key + (1, k)))

    def _initialize(self):
        rng = np.random.default_rng(self.seed)
        for l, (fi, units, _, _) in zip(self.layers, self._layout):
            shape = l.W.shape
            if self.init == "normal":
                w = rng.standard_normal(shape)
            elif self.init == "glorot":
                s = np.sqrt(6.0 / (fi + units))
                w = rng.uniform(-s, s, shape)
            else:  # he
                w = rng.standard_normal(shape) * np.sqrt(2.0 / fi)
            l.W[...] = w
            if l.b is not None:
                l.b[...] = 0

    def specs(self):
        """The network as fastnn.reference describes it: one tuple per layer
        (n_in, n_out, activation, pieces, alpha, w_off, b_off)."""
        self._require_built()
        return [(fi, units, l.activation, l.pieces, l.alpha, wo, bo)
                for l, (fi, units, wo, bo) in zip(self.layers, self._layout)]

    def _require_built(self):
        if not self.built:
            raise RuntimeError("the network is not built yet: give n_in, call "
                               "build(n_in), or pass data first")

    def _ensure_built(self, X):
        if not self.built:
            shape = np.shape(X)
            if len(shape) != 2 or shape[1] < 1:
                check_matrix(X, self.dtype)   # raises the precise error
            self.build(shape[1])

    # ---- state: what fastnn.save writes and pickling / deepcopy carry -------

    # the attributes _set_state makes; any others are the user's own, and
    # pickling carries them as they are
    _STATE_ATTRS = frozenset((
        "layers", "loss_name", "loss_param", "dtype", "init", "seed", "backend",
        "n_in",
        "params", "grads", "n_weights", "n_params", "_layout", "_core",
        "_ref_lock", "history", "_opt_state", "_fits"))

    def _to_state(self):
        """The network as plain data, the one description that fastnn.save
        (through fastnn.io) and pickling / deepcopy both use:

            layers     one dict per layer: {"type": "dense", "units",
                       "activation", "alpha", "bias"} or {"type": "maxout",
                       "units", "pieces", "bias"}
            loss, dtype (name), init, seed, backend   as given to Network
            fits       how many fits the network has run (each fit given no
                       seed shuffles with a seed drawn from seed and this)
            loss_param the loss's parameter (huber_delta, quantile) or None
            n_in, params    None if not built; params the flat buffer
            optimizer  None, or the training state fit continues from:
                       {"kind", "t", "vel", "sq"} (vel / sq in the params
                       layout, sq None but for adam)
            history    the last fit's History, or None

        grads is not part of it: it is scratch that the next loss_and_grad
        fills.  Arrays are the network's own, not copies."""
        opt = self._opt_state
        if opt is not None:
            opt = {"kind": opt["kind"], "t": int(opt["t"]), "vel": opt["vel"],
                   "sq": opt.get("sq")}
        return {"layers": [l._to_state() for l in self.layers],
                "loss": self.loss_name, "loss_param": self.loss_param,
                "dtype": self.dtype.name,
                "init": self.init, "seed": self.seed, "backend": self.backend,
                "fits": self._fits,
                "n_in": self.n_in, "params": self.params, "optimizer": opt,
                "history": self.history}

    @classmethod
    def _from_state(cls, state):
        """A new Network from a _to_state() description; ValueError or
        TypeError if the description is inconsistent.  Arrays are copied."""
        net = cls.__new__(cls)
        net._set_state(state)
        return net

    def _set_state(self, state):
        layers = [_layer_from_state(d) for d in state["layers"]]
        Network.__init__(self, layers, loss=state["loss"], dtype=state["dtype"],
                         init=state["init"], seed=state["seed"],
                         backend=state["backend"],
                         **_loss_param_kwargs(state["loss"], state.get("loss_param")))
        n_in, params, opt = state["n_in"], state["params"], state["optimizer"]
        if n_in is None:
            if params is not None or opt is not None:
                raise ValueError("a network that is not built has no parameters "
                                 "or optimizer state")
        else:
            self._allocate(check_positive_int(n_in, "n_in"))
            self.params[...] = self._state_array(params, "params")
            if opt is not None:
                self._opt_state = self._opt_from_state(opt)
        self.history = state.get("history")
        self._fits = check_positive_int(state.get("fits", 0), "fits", 0)

    def _state_array(self, a, name):
        """`a` checked to be a 1-D array of the params' dtype and size."""
        if not isinstance(a, np.ndarray) or a.dtype != self.dtype \
                or a.shape != self.params.shape:
            what = (f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray)
                    else type(a).__name__)
            raise ValueError(f"{name} must be {self.dtype} of shape "
                             f"{self.params.shape}, got {what}")
        return a

    def _opt_from_state(self, opt):
        from fastnn._train import OPT_KINDS
        kind = opt["kind"]
        if kind not in OPT_KINDS:
            raise ValueError(f"unknown optimizer kind {kind!r}; expected one of "
                             f"{tuple(OPT_KINDS)}")
        t = opt["t"]
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0:
            raise ValueError(f"the optimizer's step count t must be an integer "
                             f">= 0, got {t!r}")
        sq = opt.get("sq")
        if (sq is not None) != (kind == "adam"):
            raise ValueError("the optimizer's second moments (sq) belong to adam, "
                             f"and adam only: kind {kind!r}, sq "
                             f"{'given' if sq is not None else 'missing'}")
        vel = self._state_array(opt["vel"], "the optimizer's vel").copy()
        if sq is not None:
            sq = self._state_array(sq, "the optimizer's sq").copy()
        return {"kind": kind, "vel": vel, "sq": sq, "t": int(t)}

    def __getstate__(self):
        extra = {k: v for k, v in self.__dict__.items() if k not in self._STATE_ATTRS}
        return {"fastnn_network": self._to_state(), "extra": extra}

    def __setstate__(self, state):
        self._set_state(state["fastnn_network"])
        self.__dict__.update(state["extra"])

    def __deepcopy__(self, memo):
        # the arrays are copied once, by _set_state; the rest (history,
        # a Generator given as seed, the user's attributes) deep-copied
        state = self._to_state()
        arrays = {"params": state.pop("params"), "optimizer": state.pop("optimizer")}
        state = copy.deepcopy(state, memo)
        state.update(arrays)
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new._set_state(state)
        extra = {k: v for k, v in self.__dict__.items() if k not in self._STATE_ATTRS}
        new.__dict__.update(copy.deepcopy(extra, memo))
        return new

    # ---- parameters -------------------------------------------------------

    def get_weights(self):
        """List of (W, b) copies per layer (b None for bias-free layers)."""
        self._require_built()
        return [(l.W.copy(), None if l.b is None else l.b.copy()) for l in self.layers]

    def set_weights(self, weights, biases=None):
        """Set the weights from arrays: weights is a list of W matrices (one per
        layer, shape (fan_in, fan_out)), or of (W, b) pairs; biases an
        optional list of b vectors.  Everything is checked before anything is
        written."""
        weights = list(weights)
        if len(weights) != len(self.layers):
            raise ValueError(f"got {len(weights)} weight arrays for "
                             f"{len(self.layers)} layers")
        pairs = []
        for i, w in enumerate(weights):
            if isinstance(w, tuple):
                pairs.append(w)
            else:
                pairs.append((w, None if biases is None else biases[i]))
        if not self.built:
            first = np.shape(pairs[0][0])
            if len(first) != 2:
                raise ValueError(f"weights[0] must be 2-D, got shape {first}")
            self.build(first[0])
        staged = []
        for i, (l, (W, b)) in enumerate(zip(self.layers, pairs)):
            W = np.asarray(W)
            if W.shape != l.W.shape:
                raise ValueError(f"weights[{i}] has shape {W.shape}, layer {i} "
                                 f"needs {l.W.shape}")
            W = check_matrix(W, self.dtype, f"weights[{i}]")
            if b is not None:
                if l.b is None:
                    raise ValueError(f"layer {i} has no bias, but a bias was given")
                b = np.asarray(b)
                if b.shape != l.b.shape:
                    raise ValueError(f"bias[{i}] has shape {b.shape}, layer {i} "
                                     f"needs {l.b.shape}")
                b = check_matrix(b.reshape(1, -1), self.dtype, f"bias[{i}]")[0]
            staged.append((W, b))
        for l, (W, b) in zip(self.layers, staged):
            l.W[...] = W
            if b is not None:
                l.b[...] = b
        return self

    # ---- input checks -----------------------------------------------------

    def _X(self, X, name="X"):
        """X checked and converted once: a C-contiguous array of the dtype,
        or for a scipy.sparse X a CSRInput (see _validation.check_sparse;
        checked in full before the network is built from its width)."""
        if is_sparse(X) or isinstance(X, CSRInput):
            X = check_sparse(X, self.dtype, name,
                             self.n_in if self.built else None)
            if not self.built:
                self.build(X.shape[1])
            return X
        self._ensure_built(X)
        return check_matrix(X, self.dtype, name, self.n_in)

    def _Xy(self, X, y, sample_weight=None):
        X = self._X(X)
        y = check_targets(y, X.shape[0], self.n_out, self.loss_name, self.dtype)
        sw = check_sample_weight(sample_weight, X.shape[0], self.dtype)
        return X, y, sw

    @staticmethod
    def _dense_for_reference(X):
        """The reference backend's view of X: dense float64 (it is the
        oracle, written the obvious way; a sparse X is densified)."""
        return ref.csr_rows_dense(X) if isinstance(X, CSRInput) else X

    def _scale(self, m, sw):
        if self.loss_name == "sse":
            return 1.0
        return 1.0 / (float(sw.sum()) if sw is not None else m)

    # ---- computation ------------------------------------------------------

    def forward(self, X):
        """The network's output for X (n_samples, n_in), a dense array or a
        scipy.sparse matrix / array (kept sparse: see docs/sparse.md): a
        new (n_samples, n_out) array, output activation applied (sigmoid /
        softmax probabilities for bce / softmax_ce)."""
        X = self._X(X)
        if self._core is not None:
            if isinstance(X, CSRInput):
                return self._core.forward_csr(X, True)
            return self._core.forward(X, True)
        out, _ = ref.net_forward(self.specs(), self.loss_name, self.params,
                                 self._dense_for_reference(X), True)
        return out.astype(self.dtype)

    predict = forward

    def loss(self, X, y, sample_weight=None):
        """The loss over (X, y): a sum over samples for 'sse', a (weighted)
        mean over samples for the others."""
        X, y, sw = self._Xy(X, y, sample_weight)
        scale = self._scale(X.shape[0], sw)
        if self._core is not None:
            if isinstance(X, CSRInput):
                return self._core.loss_csr(X, y, sw, scale)
            return self._core.loss(X, y, sw, scale)
        out, _ = ref.net_forward(self.specs(), self.loss_name, self.params,
                                 self._dense_for_reference(X), False)
        return ref.loss_grad(out, y, self.loss_name, scale, sw, self.loss_param)[0]

    def loss_and_grad(self, X, y, sample_weight=None):
        """Return the loss over (X, y) and fill ``net.grads`` with its
        gradient w.r.t. ``net.params`` (same layout).  If the loss is not
        finite, FloatingPointError is raised and grads are not changed."""
        X, y, sw = self._Xy(X, y, sample_weight)
        scale = self._scale(X.shape[0], sw)
        if self._core is not None:
            if isinstance(X, CSRInput):
                L = self._core.loss_grad_csr(X, y, sw, scale, 0.0)
            else:
                L = self._core.loss_grad(X, y, sw, scale, 0.0, 0.0)
            self._check_loss(L)
            return L
        with self._reference_lock():
            L, g = ref.net_loss_grad(self.specs(), self.loss_name, self.params,
                                     self._dense_for_reference(X), y, scale, sw,
                                     self.loss_param)
            self._check_loss(L)
            self.grads[...] = g
        return L

    def step(self, lr):
        """One SGD step with the gradient in ``net.grads``:
        params -= lr * grads."""
        self._require_built()
        lr = check_real(lr, "lr")
        if self._core is not None:
            from fastnn._kernels import sgd_step
            sgd_step(self.params, self.grads, lr)
        else:
            self.params[...] = ref.sgd_step(self.params, self.grads, lr)

    def train_step(self, X, y, lr):
        """Forward, backward and a plain SGD update in one compiled call;
        returns the loss before the update.  The update is fused into the
        weight-gradient GEMMs (W += -lr X^T delta), so ``net.grads`` holds
        only the bias gradients afterwards (for a sparse X: every gradient
        but the first layer's weights', whose update is fused instead).  If the loss is not finite,
        FloatingPointError is raised and the parameters are unchanged."""
        core = self._core
        if core is not None:
            L = core.train_step(X, y, lr)      # fast path: ready arrays only
            if L is not None:
                if L - L != 0:                  # NaN or inf
                    self._check_loss(L)
                return L
        lr = check_real(lr, "lr")
        X, y, _ = self._Xy(X, y)
        scale = self._scale(X.shape[0], None)
        if core is not None:
            if isinstance(X, CSRInput):
                L = core.loss_grad_csr(X, y, None, scale, lr)
            else:
                L = core.loss_grad(X, y, None, scale, lr, 0.0)
            self._check_loss(L)
            return L
        with self._reference_lock():
            L, p = ref.net_train_step(self.specs(), self.loss_name, self.params,
                                      self._dense_for_reference(X), y, lr, scale,
                                      self.loss_param)
            self._check_loss(L)
            self.params[...] = p
        return L

    @contextlib.contextmanager
    def _reference_lock(self):
        """Hold the reference backend's lock, refusing a second thread."""
        if not self._ref_lock.acquire(blocking=False):
            raise RuntimeError("this network is already training in another thread")
        try:
            yield
        finally:
            self._ref_lock.release()

    @staticmethod
    def _check_loss(L):
        if not math.isfinite(L):
            raise FloatingPointError(f"the loss is {L}: step not applied, "
                                     "parameters unchanged")

    def fit(self, X, y, epochs=1, batch_size=None, lr=None, optimizer="sgd",
            shuffle=True, seed=None, validation_data=None, callbacks=None,
            verbose=0, sample_weight=None, lr_schedule="constant",
            on_divergence="raise", early_stopping=None, reset_optimizer=False,
            comm=None, class_weight=None):
        """Train on (X, y) for `epochs` epochs in compiled code, without the
        GIL; return a History (also kept in ``net.history``).

        X : (n_samples, n_in) array.  y : (n_samples, n_out) targets, or
            (n_samples,) for one output; for 'bce' in [0, 1], for
            'softmax_ce' one-hot (or any non-negative weights).
        epochs : passes over the data.
        batch_size : rows per minibatch; None trains on all rows at once (one
            step per epoch).  The last, partial minibatch is trained too.
        lr : learning rate (default 0.01 for the SGD family, 0.001 for Adam).
        optimizer : 'sgd', 'momentum' (0.9), 'nesterov', 'adam', or a
            fastnn.SGD / fastnn.Adam object (then give lr there), which also
            sets weight_decay (L2 on the weight matrices).
        shuffle, seed : each epoch visits the rows in a new random order
            (rng.permutation, rng = numpy.random.default_rng(seed)); full-batch
            epochs are not shuffled.  Without a seed here, the network's seed
            decides it (see Network), so a seeded script repeats exactly.
        validation_data : (X_val, y_val): loss and metric (accuracy for
            'bce'/'softmax_ce', R^2 otherwise) after every epoch, in the
            History and the progress display.
        callbacks : fastnn.Callback objects or functions f(epoch, logs) that
            return True to stop.
        verbose : 1 shows progress within and across epochs (samples done,
            the epoch's running loss, samples/s, time left, validation);
            tqdm's bar if tqdm is installed.
        sample_weight : (n_samples,) non-negative weights of the rows.
        lr_schedule : 'constant', 'invscaling', 'step', a fastnn schedule
            object, or f(epoch, lr, samples_seen) -> lr, per epoch.
        on_divergence : 'raise' (FloatingPointError) or 'warn'
            (RuntimeWarning) when a loss is not finite; either way training
            stops and the parameters go back to the last state whose loss
            was finite.
        early_stopping : a fastnn.EarlyStopping, or True for the default one.
        reset_optimizer : start the optimizer's state (momentum, Adam's
            moments) afresh; by default it carries over between fits with
            the same kind of optimizer.
        comm : an mpi4py communicator (or fastnn.distributed.Communicator)
            for data-parallel training over MPI ranks: every rank calls fit
            with its own rows, batch_size rows per rank and step; see
            fastnn.distributed.fit and docs/distributed.md.
        class_weight : for loss 'bce' or 'softmax_ce' with hard targets (0/1,
            one-hot or integer labels): None, 'balanced', a dict {class:
            weight} (softmax_ce: class index -> weight; one bce output: {0:
            w0, 1: w1}) or, for several bce outputs, a list of one such dict
            per output; multiplied into sample_weight with scikit-learn's
            semantics (docs/class-weight.md).  The training loss is then the
            weighted mean; the validation loss stays unweighted.  Not with
            comm.

        Ctrl-C stops at a step boundary: the parameters are consistent, the
        history so far is in ``net.history``, and KeyboardInterrupt
        propagates.  Bad input raises before anything changes.
        """
        from fastnn.training import fit
        return fit(self, X, y, epochs=epochs, batch_size=batch_size, lr=lr,
                   optimizer=optimizer, shuffle=shuffle, seed=seed,
                   validation_data=validation_data, callbacks=callbacks,
                   verbose=verbose, sample_weight=sample_weight,
                   lr_schedule=lr_schedule, on_divergence=on_divergence,
                   early_stopping=early_stopping, reset_optimizer=reset_optimizer,
                   comm=comm, class_weight=class_weight)

    def __repr__(self):
        inner = ", ".join(repr(l) for l in self.layers)
        param = ""
        if self.loss_name == "huber":
            param = f", huber_delta={self.loss_param!r}"
        elif self.loss_name == "quantile":
            param = f", quantile={self.loss_param!r}"
        return (f"Network([{inner}], loss={self.loss_name!r}{param}, "
                f"n_in={self.n_in}, dtype={self.dtype.name})")
