"""scikit-learn drop-ins: MLPRegressor and MLPClassifier trained by fastnn.

Change one import and get scikit-learn's model, faster::

    from fastnn.sklearn import MLPClassifier   # was sklearn.neural_network

Same constructor parameters, names and defaults as scikit-learn 1.9.1, the
same fitted attributes and methods, and the same numbers: with the same
random_state, the initial weights (scikit-learn's _init_coef, same
RandomState draws in the same order), the validation split of
early_stopping, the row order of every epoch (sklearn.utils.shuffle with the
same RandomState), the learning-rate schedules and the optimizer formulas are
scikit-learn's, so after N epochs coefs_ and intercepts_ agree with
scikit-learn's to rounding (tests/test_sklearn.py checks 1e-8 after 10
epochs).  loss_ and loss_curve_ are scikit-learn's numbers too: squared error
is 1/2 mean over all elements plus the L2 term 0.5 alpha ||W||^2 / n_batch,
while the gradient followed is that of 1/2 (1/N) sum over samples and
outputs, exactly as scikit-learn does it.

fastnn's own additions: activation may also be 'leaky_relu' (slope 0.1),
'elu' (scale 1.0) or 'maxout' (2 pieces: coefs_[i] then has 2 * units
columns, column 2j + p holding piece p of unit j), or a list with one
activation per hidden layer; dtype=None (follow X: float32 stays float32,
anything else becomes float64), np.float32 or np.float64; MLPRegressor's
robust losses loss='absolute_error', 'huber' (with huber_delta) and
'quantile' (with quantile), see MLPRegressor and docs/losses.md;
MLPClassifier's class_weight (docs/class-weight.md); dropout on the
hidden layers (docs/dropout.md); validation data in
fit (X_val, y_val, sample_weight_val) with validation_loss_curve_ and
validation_scores_ recorded every epoch (docs/validation.md).  Every
addition's default is scikit-learn's behaviour.

How it runs: the per-epoch logic (shuffling, stopping, schedules, early
stopping) is this file's Python, the minibatches run in fastnn's native loop
(NetCore.fit, csrc/train.c) without the GIL, one native call per epoch: the
core adds scikit-learn's L2 term 0.5 alpha ||W||^2 / sw_sum (weights before
each step) to every batch loss and weighs the epoch mean by rows, as
scikit-learn reports it.  The learning rate is constant within an epoch in
every scikit-learn schedule (invscaling and adaptive change it between
epochs), and Adam's bias correction is applied per step by the core;
squared error is reported as a mean over outputs (the core's loss times
1 / n_outputs, loss_scale), the L2 term undivided.  loss='poisson' still runs
one native call per minibatch (_EpochRunner says why).  lbfgs is scipy.optimize's L-BFGS-B with loss and gradient from one native
call.

Differences from scikit-learn, all outside what its tests look at:
- Sparse X is accepted and densified (the native core is dense).
- sgd / adam report the log loss computed from the logits in its stable
  form (inside the native epoch); scikit-learn clips probabilities to
  [eps, 1 - eps] (eps = 2.2e-16), so the two differ where a predicted
  probability is within eps of 0 or 1: by at most about eps per row and
  output when the true class is predicted that confidently, by more only
  when a true class's probability is below eps.  The gradients are the same
  (p - y).  (lbfgs sees scikit-learn's clipped loss: its line search
  compares loss values.)
- loss='poisson' (MLPRegressor) runs the exp output outside the core: a
  forward pass gives z, and the squared-error step on targets z - (e^z - y)
  yields the gradient e^z - y (to rounding), so it costs two forward passes
  per minibatch.
- A step whose loss is not finite is not applied: fit raises scikit-learn's
  "non-finite parameter weights" ValueError at once, and the estimator keeps
  the last finite parameters (scikit-learn carries on with NaN weights and
  raises the same error at the end).
"""
import numbers
import warnings

import numpy as np
import scipy.optimize
from scipy.special import xlogy

from sklearn.base import (BaseEstimator, ClassifierMixin, RegressorMixin,
                          _fit_context, is_classifier)
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d, gen_batches, shuffle
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import (_check_partial_fit_first_call,
                                      type_of_target, unique_labels)
from sklearn.utils.validation import (_check_sample_weight, check_array,
                                      check_is_fitted, validate_data)

from fastnn._validation import CSRInput, check_sparse, is_sparse

try:  # private helpers of scikit-learn; plain fallbacks keep us importable
    from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
except ImportError:  # pragma: no cover
    def _get_additional_lbfgs_options_dict(key, value):
        return {}
try:
    from sklearn.utils.optimize import _check_optimize_result
except ImportError:  # pragma: no cover
    def _check_optimize_result(solver, result, max_iter=None):
        n_iter = min(result.nit, max_iter) if max_iter is not None else result.nit
        if result.status != 0:
            warnings.warn(f"{solver} failed to converge after {n_iter} "
                          f"iteration(s) (status={result.status}):\n"
                          f"{result.message}\n", ConvergenceWarning, stacklevel=2)
        return n_iter

__all__ = ["MLPRegressor", "MLPClassifier"]

_STOCHASTIC_SOLVERS = ["sgd", "adam"]

# Hidden activations: scikit-learn's names, then fastnn's.  Values: the
# fastnn layer activation.
HIDDEN_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid",
                      "tanh": "tanh", "relu": "relu",
                      "leaky_relu": "leaky_relu", "elu": "elu",
                      "maxout": "maxout"}
MAXOUT_PIECES = 2

# Output activation -> (fastnn output activation, fastnn loss).  'exp'
# (poisson) runs an identity output and is handled in this file.
_OUTPUTS = {"identity": ("identity", "mse"), "logistic": ("sigmoid", "bce"),
            "softmax": ("softmax", "softmax_ce"), "exp": ("identity", "mse")}

_NONFINITE_MSG = ("Solver produced non-finite parameter weights. The input data "
                  "may contain large values and need to be preprocessed.")


def _hidden_layer(units, activation, dropout=0.0):
    """The fastnn layer of a hidden layer with scikit-learn's activation
    name (or fastnn's additions) and dropout rate."""
    from fastnn.nn import Dense, Maxout
    f = HIDDEN_ACTIVATIONS[activation]
    if f == "maxout":
        return Maxout(units, MAXOUT_PIECES)
    return Dense(units, f, dropout=dropout)


def _poisson_loss(y_true, y_pred, sample_weight=None):
    """scikit-learn's half Poisson deviance (neural_network/_base.py)."""
    return np.average(xlogy(y_true, y_true / y_pred) - y_true + y_pred,
                      weights=sample_weight, axis=0).sum()


def _log_loss(y_true, y_prob, sample_weight=None):
    """scikit-learn's log loss of a softmax output, probabilities clipped at
    machine epsilon (neural_network/_base.py)."""
    eps = np.finfo(y_prob.dtype).eps
    y_prob = np.clip(y_prob, eps, 1 - eps)
    return -np.average(xlogy(y_true, y_prob), weights=sample_weight, axis=0).sum()


def _binary_log_loss(y_true, y_prob, sample_weight=None):
    """scikit-learn's log loss of logistic outputs, clipped likewise."""
    eps = np.finfo(y_prob.dtype).eps
    y_prob = np.clip(y_prob, eps, 1 - eps)
    return -np.average(xlogy(y_true, y_prob) + xlogy(1 - y_true, 1 - y_prob),
                       weights=sample_weight, axis=0).sum()


def _sklearn_shuffle(idx, random_state):
    """scikit-learn's shuffle(idx, random_state=random_state), to the bit."""
    return shuffle(idx, random_state=random_state)


def _permute(idx, random_state):
    """What sklearn.utils.shuffle(idx, random_state=random_state) computes
    for a 1-D index array and a RandomState (resample without replacement:
    a permutation of arange(n) by random_state.shuffle, then idx taken in
    that order), without its input validation, which costs ~0.13 ms per
    call -- once per epoch, as much as a whole small epoch's Python work.
    The same draws from random_state, so the same array and the same state
    afterwards."""
    perm = np.arange(idx.shape[0])
    random_state.shuffle(perm)
    return idx[perm]


_EPOCH_SHUFFLE = None


def _epoch_shuffle():
    """_permute if it reproduces this scikit-learn's shuffle (array and
    random state after it; checked once per process), else scikit-learn's
    shuffle itself."""
    global _EPOCH_SHUFFLE
    if _EPOCH_SHUFFLE is None:
        ok = True
        for n in (1, 2, 7, 200):
            idx = np.arange(n, dtype=int)[::-1].copy()
            ra, rb = np.random.RandomState(n), np.random.RandomState(n)
            a = shuffle(idx, random_state=ra)
            b = _permute(idx, rb)
            sa, sb = ra.get_state(), rb.get_state()
            ok = ok and (a.dtype == b.dtype and np.array_equal(a, b)
                         and np.array_equal(sa[1], sb[1])
                         and sa[2:] == sb[2:])
        _EPOCH_SHUFFLE = _permute if ok else _sklearn_shuffle
    return _EPOCH_SHUFFLE


class _Optimizer:
    """scikit-learn's SGDOptimizer / AdamOptimizer as state over fastnn's
    flat parameter buffer: the current learning rate and its schedule
    (iteration_ends, trigger_stopping: the same code as scikit-learn's), the
    velocity / Adam moments (same layout as params) and Adam's step count.
    The updates themselves run in the native loop."""

    def __init__(self, solver, n_params, dtype, learning_rate_init,
                 lr_schedule="constant", momentum=0.9, nesterov=True,
                 power_t=0.5, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
        self.solver = solver
        self.learning_rate_init = learning_rate_init
        self.learning_rate = float(learning_rate_init)
        self.lr_schedule = lr_schedule
        self.momentum = momentum
        self.nesterov = nesterov
        self.power_t = power_t
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        if solver == "adam":
            self.kind = "adam"
        elif momentum == 0:
            # v = 0 v - lr g is plain SGD: let the core fuse it into the GEMMs
            self.kind = "sgd"
        else:
            self.kind = "nesterov" if nesterov else "momentum"
        self.vel = None if self.kind == "sgd" else np.zeros(n_params, dtype)
        self.sq = np.zeros(n_params, dtype) if self.kind == "adam" else None
        self.t = 0

    _FLOATS = ("learning_rate_init", "learning_rate", "momentum", "power_t",
               "beta_1", "beta_2", "epsilon")

    def _to_state(self):
        """The optimizer as plain data (arrays its own, not copies): solver,
        lr_schedule, nesterov, the float hyper-parameters and the current
        learning_rate (_FLOATS), kind, step count t, and vel / sq in the
        params layout (None where the kind has none)."""
        state = {k: getattr(self, k) for k in self._FLOATS}
        state.update(solver=self.solver, lr_schedule=self.lr_schedule,
                     nesterov=bool(self.nesterov), kind=self.kind, t=int(self.t),
                     vel=self.vel, sq=self.sq)
        return state

    @classmethod
    def _from_state(cls, state, n_params, dtype):
        """The optimizer a _to_state() describes, for n_params parameters of
        dtype (arrays copied); ValueError if the description is inconsistent."""
        opt = cls(state["solver"], 0, dtype, state["learning_rate_init"],
                  state["lr_schedule"], state["momentum"], state["nesterov"],
                  state["power_t"], state["beta_1"], state["beta_2"],
                  state["epsilon"])
        if state["kind"] != opt.kind:
            raise ValueError(f"optimizer.kind {state['kind']!r} does not match its "
                             f"parameters (which make {opt.kind!r})")
        opt.learning_rate = state["learning_rate"]
        t = state["t"]
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0:
            raise ValueError(f"optimizer.t must be an integer >= 0, got {t!r}")
        opt.t = int(t)
        for k, needed in (("vel", opt.kind != "sgd"), ("sq", opt.kind == "adam")):
            a = state[k]
            if (a is not None) != needed:
                raise ValueError(f"optimizer arrays do not match optimizer.kind "
                                 f"{opt.kind!r}: {k} {'missing' if needed else 'given'}")
            if a is not None:
                if not isinstance(a, np.ndarray) or a.shape != (n_params,) \
                        or a.dtype != dtype:
                    raise ValueError(f"optimizer {k} must be {np.dtype(dtype)} of "
                                     f"shape ({n_params},)")
                setattr(opt, k, a.copy())
        return opt

    @property
    def epoch_lr(self):
        """The learning rate handed to the native loop for the next epoch
        (Adam applies its own bias correction per step)."""
        if self.solver == "adam":
            return float(self.learning_rate_init)
        return self.learning_rate

    def iteration_ends(self, time_step):
        if self.solver == "sgd" and self.lr_schedule == "invscaling":
            self.learning_rate = (float(self.learning_rate_init)
                                  / (time_step + 1) ** self.power_t)

    def trigger_stopping(self, msg, verbose):
        if self.solver == "adam" or self.lr_schedule != "adaptive":
            if verbose:
                print(msg + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self.learning_rate /= 5.0
        if verbose:
            print(msg + " Setting learning rate to %f" % self.learning_rate)
        return False


class _BaseMLP(BaseEstimator):
    """What MLPRegressor and MLPClassifier share: scikit-learn's
    BaseMultilayerPerceptron with fastnn's core underneath.

    coefs_[i] and intercepts_[i] are views into one flat float buffer (all
    weights first, then all biases: scikit-learn's _pack layout), which the
    compiled network trains in place.  If they are replaced by other arrays
    (user code, or a pickle from before _to_state existed), the network is
    rebuilt from them on next use.  _to_state / _from_state describe the
    whole estimator, for fastnn.save / fastnn.load and for pickling.
    """

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like",
                               Interval(numbers.Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(HIDDEN_ACTIVATIONS)), list, tuple],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}),
                       Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(numbers.Real, 0, None, closed="neither")],
        "power_t": [Interval(numbers.Real, 0, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(numbers.Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="left")],
        "beta_1": [Interval(numbers.Real, 0, 1, closed="left")],
        "beta_2": [Interval(numbers.Real, 0, 1, closed="left")],
        "epsilon": [Interval(numbers.Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left"),
                             Options(numbers.Real, {np.inf})],
        "max_fun": [Interval(numbers.Integral, 1, None, closed="left")],
        "dtype": [None, type, str, np.dtype],
        "dropout": [Interval(numbers.Real, 0, 1, closed="left"), list, tuple],
    }

    def __init__(self, hidden_layer_sizes, activation, solver, alpha, batch_size,
                 learning_rate, learning_rate_init, power_t, max_iter, loss,
                 shuffle, random_state, tol, verbose, warm_start, momentum,
                 nesterovs_momentum, early_stopping, validation_fraction, beta_1,
                 beta_2, epsilon, n_iter_no_change, max_fun, dtype):
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dtype = dtype

    # ---- state: what fastnn.save writes and pickling / deepcopy carry -----

    _FITTED = ("n_iter_", "t_", "loss_", "n_layers_", "n_outputs_",
               "out_activation_", "n_features_in_")
    _STOCHASTIC = ("loss_curve_", "best_loss_", "validation_scores_",
                   "best_validation_score_", "validation_loss_curve_")
    # the attributes _set_state makes (and _random_state, which every fit
    # draws afresh); any others are the user's own, and pickling carries
    # them as they are
    _STATE_ATTRS = frozenset(_FITTED + _STOCHASTIC + (
        "coefs_", "intercepts_", "feature_names_in_", "classes_",
        "_label_binarizer", "_net", "_views", "_hidden_acts", "_best_coefs",
        "_best_intercepts", "_no_improvement_count", "_optimizer",
        "_random_state"))

    def _to_state(self):
        """The estimator as plain data, the one description that fastnn.save
        (through fastnn.io) and pickling / deepcopy both use:

            params   get_params(deep=False)
            fitted   None if not fitted, else a dict:
              network        {"layers", "loss", "loss_param", "dtype", "n_in",
                             "params"}
                             as in Network._to_state (params: coefs_ then
                             intercepts_, flat)
              hidden_activations   one name per hidden layer
              n_iter_, t_, loss_, n_layers_, n_outputs_, out_activation_,
              n_features_in_, feature_names_in_ (None if absent)
              stochastic     None (lbfgs), or loss_curve_, best_loss_,
                             validation_scores_, best_validation_score_,
                             no_improvement_count and best_params (early
                             stopping's best, in the params layout)
              labels         None (regressor), or classes_, y_type and
                             sparse_input (the label binarizer's)
              optimizer      None, or the sgd / adam state training
                             continues from (_Optimizer._to_state)

        Arrays are the estimator's own where it keeps them flat."""
        params = self.get_params(deep=False)
        if not hasattr(self, "coefs_"):
            return {"params": params, "fitted": None}
        net = self._get_net()
        ns = net._to_state()
        fitted = {k: getattr(self, k) for k in self._FITTED}
        fitted.update(
            network={k: ns[k] for k in ("layers", "loss", "loss_param", "dtype",
                                        "n_in", "params")},
            hidden_activations=list(self._hidden_acts),
            feature_names_in_=getattr(self, "feature_names_in_", None),
            stochastic=None, labels=None, optimizer=None)
        if hasattr(self, "loss_curve_"):
            # validation_loss_curve_ may be absent (from_sklearn, old pickles)
            st = {k: getattr(self, k, None) for k in self._STOCHASTIC}
            st["no_improvement_count"] = self._no_improvement_count
            st["best_params"] = np.concatenate(
                [np.asarray(a, dtype=net.dtype).ravel()
                 for a in self._best_coefs + self._best_intercepts])
            fitted["stochastic"] = st
        if is_classifier(self):
            lb = self._label_binarizer
            fitted["labels"] = {"classes_": self.classes_, "y_type": lb.y_type_,
                                "sparse_input": bool(lb.sparse_input_)}
        opt = getattr(self, "_optimizer", None)
        if isinstance(opt, _Optimizer):
            fitted["optimizer"] = opt._to_state()
        return {"params": params, "fitted": fitted}

    @classmethod
    def _from_state(cls, state, check_params=False):
        """A new estimator from a _to_state() description (arrays copied).
        check_params: also validate the constructor parameters and their
        agreement with the fitted state, as fit would (fastnn.load does;
        unpickling does not, so that an estimator pickles whatever its
        parameters).  ValueError or TypeError if the description is
        inconsistent."""
        est = cls.__new__(cls)
        est._set_state(state, check_params)
        return est

    def _set_state(self, state, check_params=False):
        self.__init__(**state["params"])
        if check_params:
            self._validate_params()        # InvalidParameterError: a ValueError
        f = state["fitted"]
        if f is None:
            return
        net_state = f["network"]
        layers, acts, out_act = self._check_state_layers(f)
        n_out = layers[-1]["units"]
        if check_params and not is_classifier(self) and \
                (out_act == "exp") != (self.loss == "poisson"):
            raise ValueError("out_activation_ does not match the loss parameter")
        for k, want in (("n_outputs_", n_out), ("n_layers_", len(layers) + 1),
                        ("n_features_in_", net_state["n_in"])):
            if f[k] != want:
                raise ValueError(f"{k} is {f[k]!r}, the network says {want}")
        for k in self._FITTED:
            setattr(self, k, f[k])
        if f["feature_names_in_"] is not None:
            names = np.asarray(f["feature_names_in_"])
            if names.shape != (self.n_features_in_,):
                raise ValueError("feature_names_in_ must name every feature")
            self.feature_names_in_ = np.array(names.tolist(), dtype=object)
        if is_classifier(self) != (f["labels"] is not None):
            raise ValueError("classifier entries do not match the estimator kind")
        if f["labels"] is not None:
            self._set_labels_state(f["labels"], n_out, out_act)
        net = self._build_net(net_state["n_in"], [l["units"] for l in layers[:-1]],
                              acts, out_act, n_out, net_state["dtype"])
        net.params[...] = net._state_array(net_state["params"], "params")
        if f["stochastic"] is not None:
            self._set_stochastic_state(f["stochastic"], net)
        if f["optimizer"] is not None:
            self._optimizer = _Optimizer._from_state(f["optimizer"], net.n_params,
                                                     net.dtype)

    def _check_state_layers(self, f):
        """(layers, hidden activations, out_activation_) of a fitted state,
        checked to be the network this estimator builds for them."""
        from fastnn.nn import Dense
        net_state = f["network"]
        layers, acts = net_state["layers"], f["hidden_activations"]
        if not isinstance(acts, list) or len(acts) != len(layers) - 1:
            raise ValueError("hidden_activations must list one activation per "
                             "hidden layer")
        for i, a in enumerate(acts):
            if a not in HIDDEN_ACTIVATIONS:
                raise ValueError(f"hidden_activations[{i}] must be one of "
                                 f"{sorted(HIDDEN_ACTIVATIONS)}, got {a!r}")
        rates = self._dropout_rates(len(acts), acts)
        for i, (a, layer) in enumerate(zip(acts, layers)):
            if layer != _hidden_layer(layer.get("units"), a, rates[i])._to_state():
                raise ValueError(f"layers[{i}] does not match hidden activation {a!r} "
                                 f"with dropout {rates[i]}")
        out_act = f["out_activation_"]
        if out_act not in _OUTPUTS:
            raise ValueError(f"out_activation_ must be one of {sorted(_OUTPUTS)}, "
                             f"got {out_act!r}")
        f_out = _OUTPUTS[out_act][0]
        if layers[-1] != Dense(layers[-1].get("units"), f_out)._to_state():
            raise ValueError(f"the output layer does not match out_activation_ "
                             f"{out_act!r}")
        loss, kw = self._net_loss(out_act)
        want = (loss, next(iter(kw.values()), None))
        have = (net_state["loss"], net_state.get("loss_param"))
        if have != want:
            raise ValueError(f"the network's loss {have[0]!r} (parameter {have[1]!r}) "
                             f"is not the {want[0]!r} (parameter {want[1]!r}) that "
                             f"out_activation_ {out_act!r} and the loss parameters "
                             "make")
        if is_classifier(self) == (out_act in ("identity", "exp")):
            raise ValueError(f"out_activation_ {out_act!r} does not fit a "
                             f"{type(self).__name__}")
        return layers, acts, out_act

    def _set_labels_state(self, labels, n_out, out_act):
        """classes_ and the label binarizer, checked against the outputs."""
        classes = np.asarray(labels["classes_"])
        if classes.ndim != 1 or classes.size < 1:
            raise ValueError("classes must be a non-empty 1-D array")
        if len(np.unique(classes)) != classes.size or not (
                classes.size < 2 or np.all(classes[:-1] < classes[1:])):
            raise ValueError("classes must be sorted and distinct")
        y_type, k = labels["y_type"], classes.size
        want = {"binary": (1, "logistic"), "multiclass": (k, "softmax"),
                "multilabel-indicator": (k, "logistic")}.get(y_type)
        if want is None:
            raise ValueError(f"y_type must be binary, multiclass or "
                             f"multilabel-indicator, got {y_type!r}")
        if y_type == "binary" and k > 2 or y_type == "multiclass" and k < 3:
            raise ValueError(f"{k} classes do not make a {y_type} problem")
        if (n_out, out_act) != want:
            raise ValueError(f"{y_type} with {k} classes needs {want[0]} {want[1]} "
                             f"outputs, the network has {n_out} {out_act}")
        lb = LabelBinarizer()
        lb.classes_, lb.y_type_ = classes.copy(), y_type
        lb.sparse_input_ = bool(labels["sparse_input"])
        self._label_binarizer = lb
        self.classes_ = lb.classes_

    def _set_stochastic_state(self, st, net):
        """sgd / adam's record and early stopping's state; net is built."""
        self.loss_curve_ = list(st["loss_curve_"])
        vs = st["validation_scores_"]
        self.validation_scores_ = None if vs is None else list(vs)
        vl = st.get("validation_loss_curve_")
        self.validation_loss_curve_ = None if vl is None else list(vl)
        self.best_loss_ = st["best_loss_"]
        self.best_validation_score_ = st["best_validation_score_"]
        n = st["no_improvement_count"]
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"no_improvement_count must be an integer >= 0, "
                             f"got {n!r}")
        self._no_improvement_count = int(n)
        best = net._state_array(st["best_params"], "best_params")
        parts, off = [], 0                  # the params layout: coefs, intercepts
        for a in self.coefs_ + self.intercepts_:
            parts.append(best[off:off + a.size].reshape(a.shape).copy())
            off += a.size
        nl = len(self.coefs_)
        self._best_coefs, self._best_intercepts = parts[:nl], parts[nl:]

    def __getstate__(self):
        params = self.get_params(deep=False)
        extra = {k: v for k, v in self.__dict__.items()
                 if k not in self._STATE_ATTRS and k not in params}
        return {"fastnn_estimator": self._to_state(), "extra": extra}

    def __setstate__(self, state):
        if "fastnn_estimator" not in state:
            # pickled before _to_state existed (the __dict__, without the
            # network): the network is rebuilt from coefs_ on first use
            self.__dict__.update(state)
            return
        self._set_state(state["fastnn_estimator"])
        self.__dict__.update(state["extra"])

    # ---- the network ------------------------------------------------------

    def _hidden_activations(self, n_hidden):
        act = self.activation
        if isinstance(act, str):
            acts = [act] * n_hidden
        else:
            acts = list(act)
            if len(acts) != n_hidden:
                raise ValueError(
                    f"activation lists one activation per hidden layer: got "
                    f"{len(acts)} for {n_hidden} hidden layers")
        for a in acts:
            if not isinstance(a, str) or a not in HIDDEN_ACTIVATIONS:
                raise ValueError(f"unknown activation {a!r}; expected one of "
                                 f"{sorted(HIDDEN_ACTIVATIONS)}")
        return acts

    def _dropout_rates(self, n_hidden, acts=None):
        """One dropout rate per hidden layer from the dropout parameter (a
        rate for all, or a list), checked: each in [0, 1); none on maxout
        layers; only with solver 'sgd' / 'adam' and not with loss
        'poisson'."""
        d = self.dropout
        rates = [d] * n_hidden if isinstance(d, numbers.Real) else list(d)
        if len(rates) != n_hidden:
            raise ValueError(f"dropout lists one rate per hidden layer: got "
                             f"{len(rates)} for {n_hidden} hidden layers")
        for i, r in enumerate(rates):
            if (isinstance(r, (bool, np.bool_)) or not isinstance(r, numbers.Real)
                    or not 0 <= r < 1):
                raise ValueError(f"dropout rates must be real numbers in [0, 1), "
                                 f"got {r!r} for hidden layer {i}")
        rates = [float(r) for r in rates]
        if any(rates):
            if self.solver not in _STOCHASTIC_SOLVERS:
                raise ValueError(f"dropout needs solver 'sgd' or 'adam' (its masks "
                                 f"make the loss random, which L-BFGS cannot "
                                 f"follow); solver is {self.solver!r}")
            if getattr(self, "loss", None) == "poisson":
                raise ValueError("dropout is not available with loss='poisson'")
            for i, (a, r) in enumerate(zip(acts or [], rates)):
                if r and HIDDEN_ACTIVATIONS[a] == "maxout":
                    raise ValueError(f"dropout is not available for maxout layers "
                                     f"(hidden layer {i})")
        return rates

    def _resolve_dtype(self, x_dtype):
        if self.dtype is None:
            return np.dtype(np.float32 if x_dtype == np.float32 else np.float64)
        try:
            d = np.dtype(self.dtype)
        except TypeError:
            d = None
        if d not in (np.float32, np.float64):
            raise ValueError(f"dtype must be None, float32 or float64, got "
                             f"{self.dtype!r}")
        return d

    def _net_loss(self, out_act):
        """(fastnn loss, Network keyword arguments of its parameter) of the
        network trained for output activation out_act."""
        return _OUTPUTS[out_act][1], {}

    def _build_net(self, n_in, units, acts, out_act, n_out, dtype):
        """A fastnn Network for these layers; returns it with coefs_ /
        intercepts_ pointed at its parameter views (values not set)."""
        from fastnn.nn import Dense, Network
        rates = self._dropout_rates(len(units), acts)
        layers = [_hidden_layer(u, a, r) for u, a, r in zip(units, acts, rates)]
        f_out = _OUTPUTS[out_act][0]
        loss, loss_kw = self._net_loss(out_act)
        layers.append(Dense(n_out, f_out))
        net = Network(layers, loss=loss, n_in=n_in, dtype=dtype, seed=0, **loss_kw)
        self._set_net(net, acts)
        return net

    def _set_net(self, net, acts):
        self._net = net
        self._hidden_acts = list(acts)
        self.coefs_ = [l.W for l in net.layers]
        self.intercepts_ = [l.b for l in net.layers]
        self._views = (list(self.coefs_), list(self.intercepts_))

    def _get_net(self):
        """The compiled network holding coefs_ / intercepts_; rebuilt (and
        the arrays copied in) if they are no longer its views, or if its
        loss is not the one the parameters now ask for (set_params between
        warm-started fits)."""
        net = getattr(self, "_net", None)
        views = getattr(self, "_views", None)
        if net is not None and hasattr(self, "out_activation_"):
            loss, kw = self._net_loss(self.out_activation_)
            if (net.loss_name, net.loss_param) != (loss, next(iter(kw.values()), None)):
                net = None
            elif (net.dropout_rates[:-1]
                  != self._dropout_rates(len(net.layers) - 1, self._hidden_acts)):
                net = None
        if (net is not None and views is not None
                and len(self.coefs_) == len(views[0])
                and len(self.intercepts_) == len(views[1])
                and all(a is b for a, b in zip(self.coefs_, views[0]))
                and all(a is b for a, b in zip(self.intercepts_, views[1]))):
            return net
        coefs = [np.asarray(c) for c in self.coefs_]
        inters = [np.asarray(b) for b in self.intercepts_]
        if len(coefs) != len(inters) or not coefs:
            raise ValueError("coefs_ and intercepts_ must be non-empty lists of "
                             "equal length")
        acts = getattr(self, "_hidden_acts", None)
        if acts is None or len(acts) != len(coefs) - 1:
            acts = self._hidden_activations(len(coefs) - 1)
        units = []
        for i, a in enumerate(acts):
            pieces = MAXOUT_PIECES if HIDDEN_ACTIVATIONS[a] == "maxout" else 1
            units.append(coefs[i].shape[1] // pieces)
        dtype = coefs[0].dtype if coefs[0].dtype in (np.float32, np.float64) \
            else np.dtype(np.float64)
        net = self._build_net(coefs[0].shape[0], units, acts, self.out_activation_,
                              coefs[-1].shape[1], dtype)
        for i, (W, b) in enumerate(zip(coefs, inters)):
            if W.shape != self.coefs_[i].shape or b.shape != self.intercepts_[i].shape:
                raise ValueError(f"coefs_[{i}] / intercepts_[{i}] have shapes "
                                 f"{W.shape} / {b.shape}; the layers need "
                                 f"{self.coefs_[i].shape} / "
                                 f"{self.intercepts_[i].shape}")
            self.coefs_[i][...] = W
            self.intercepts_[i][...] = b
        opt = getattr(self, "_optimizer", None)
        if isinstance(opt, _Optimizer):
            for k in ("vel", "sq"):
                buf = getattr(opt, k)
                if buf is not None:
                    setattr(opt, k, np.ascontiguousarray(buf, dtype=net.dtype))
        return net

    def _as_input(self, X, dtype):
        """X for the core: a C-contiguous array of dtype, or, for a
        scipy.sparse X (CSR or CSC after validate_data), a CSRInput kept
        sparse (its data converted to dtype; see docs/sparse.md)."""
        if isinstance(X, CSRInput):
            return X
        if is_sparse(X):
            return check_sparse(X, dtype)
        return np.ascontiguousarray(X, dtype=dtype)

    # ---- initialization (scikit-learn's _initialize / _init_coef) ----------

    def _initialize(self, y, layer_units, dtype, acts):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)
        if not is_classifier(self):
            self.out_activation_ = "exp" if self.loss == "poisson" else "identity"
        elif self._label_binarizer.y_type_ == "multiclass":
            self.out_activation_ = "softmax"
        else:
            self.out_activation_ = "logistic"
        self._build_net(layer_units[0], layer_units[1:-1], acts,
                        self.out_activation_, layer_units[-1], dtype)
        for i in range(self.n_layers_ - 1):
            W, b = self._init_coef(layer_units[i], self.coefs_[i].shape[1], dtype,
                                   self._init_activation(i, acts))
            self.coefs_[i][...] = W
            self.intercepts_[i][...] = b
        self._best_coefs = [c.copy() for c in self.coefs_]
        self._best_intercepts = [i.copy() for i in self.intercepts_]
        if self.solver in _STOCHASTIC_SOLVERS:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.validation_loss_curve_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.validation_loss_curve_ = None
                self.best_validation_score_ = None

    def _init_activation(self, i, acts):
        """The activation whose Glorot factor layer i's weights use:
        scikit-learn's (the hidden activation, for every layer), or with a
        per-layer list, that of layer i (the last hidden one for the
        output layer)."""
        if isinstance(self.activation, str):
            return self.activation
        return acts[min(i, len(acts) - 1)] if acts else "relu"

    def _init_coef(self, fan_in, fan_out, dtype, activation):
        factor = 2.0 if activation == "logistic" else 6.0
        init_bound = np.sqrt(factor / (fan_in + fan_out))
        coef_init = self._random_state.uniform(-init_bound, init_bound,
                                               (fan_in, fan_out))
        intercept_init = self._random_state.uniform(-init_bound, init_bound, fan_out)
        return coef_init.astype(dtype, copy=False), intercept_init.astype(dtype, copy=False)

    # ---- fit --------------------------------------------------------------

    def _fit(self, X, y, sample_weight=None, incremental=False, X_val=None,
             y_val=None, sample_weight_val=None):
        hidden_layer_sizes = self.hidden_layer_sizes
        if not hasattr(hidden_layer_sizes, "__iter__"):
            hidden_layer_sizes = [hidden_layer_sizes]
        hidden_layer_sizes = list(hidden_layer_sizes)
        if np.any(np.array(hidden_layer_sizes) <= 0):
            raise ValueError("hidden_layer_sizes must be > 0, got %s."
                             % hidden_layer_sizes)
        hidden_layer_sizes = [int(h) for h in hidden_layer_sizes]
        acts = self._hidden_activations(len(hidden_layer_sizes))
        rates = self._dropout_rates(len(hidden_layer_sizes), acts)
        first_pass = not hasattr(self, "coefs_") or (
            not self.warm_start and not incremental)

        before = dict(self.__dict__)
        X, y = self._validate_input(X, y, incremental, reset=first_pass)
        n_samples, n_features = X.shape
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        try:
            if sample_weight is not None:
                sample_weight = _check_sample_weight(sample_weight, X)
            sample_weight = self._weights(y, sample_weight, incremental)
            val = self._check_validation_data(X_val, y_val, sample_weight_val,
                                              y.shape[1])
        except ValueError:
            # bad weights or validation data: the estimator as it was (the
            # input checks above may have set the classes and feature names
            # for this data)
            self.__dict__.clear()
            self.__dict__.update(before)
            raise
        self.n_outputs_ = y.shape[1]
        layer_units = [n_features] + hidden_layer_sizes + [self.n_outputs_]

        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(y, layer_units, self._resolve_dtype(X.dtype), acts)
        net = self._get_net()
        self._check_layout(layer_units)
        dtype = net.dtype
        X = self._as_input(X, dtype)
        Y = np.ascontiguousarray(y, dtype=dtype)
        sw = None if sample_weight is None else np.ascontiguousarray(sample_weight,
                                                                     dtype=dtype)

        if self.solver in _STOCHASTIC_SOLVERS:
            # dropout's masks: keyed by one draw from random_state per fit
            # call (only with dropout, so fits without it draw as
            # scikit-learn's do)
            drop_seed = (int(self._random_state.randint(0, 1 << 62, dtype=np.int64))
                         if any(rates) else None)
            self._fit_stochastic(net, X, Y, sw, incremental, y, sample_weight, val,
                                 drop_seed)
        elif self.solver == "lbfgs":
            self._fit_lbfgs(net, X, Y, sw)

        if not np.isfinite(net.params).all():
            raise ValueError(_NONFINITE_MSG)
        return self

    def _weights(self, Y, sample_weight, incremental):
        """The sample weights fit uses (float64 (n,) or None): the
        classifier multiplies in its class weights."""
        return sample_weight

    def _check_validation_data(self, X_val, y_val, sample_weight_val, n_out):
        """fit's X_val / y_val / sample_weight_val checked (after X and y):
        None, or (X_val, y_val as the estimator's targets, the original
        y_val for scoring, sample_weight_val or None)."""
        if X_val is None and y_val is None:
            if sample_weight_val is not None:
                raise ValueError("sample_weight_val is given, but X_val and y_val "
                                 "are not")
            return None
        if X_val is None or y_val is None:
            raise ValueError(f"{'X_val' if X_val is not None else 'y_val'} is "
                             f"given, but {'y_val' if X_val is not None else 'X_val'} "
                             "is not: give both")
        if self.solver not in _STOCHASTIC_SOLVERS:
            raise ValueError(f"X_val / y_val need a stochastic solver ('sgd' or "
                             f"'adam'), which records the validation loss and "
                             f"score each epoch; solver is {self.solver!r}")
        X_val = validate_data(self, X_val, accept_sparse=["csr", "csc"],
                              dtype=(np.float64, np.float32), reset=False)
        y_orig, Y_val = self._validation_targets(y_val, X_val.shape[0], n_out)
        if sample_weight_val is not None:
            sample_weight_val = _check_sample_weight(sample_weight_val, X_val)
        return X_val, Y_val, y_orig, sample_weight_val

    def _check_layout(self, layer_units):
        """Continuing (warm_start, partial_fit) needs the same layer sizes."""
        have = [self.coefs_[0].shape[0]] + [
            b.shape[0] // (MAXOUT_PIECES if a == "maxout" else 1)
            for b, a in zip(self.intercepts_[:-1], self._hidden_acts)] + [
            self.coefs_[-1].shape[1]]
        if have != list(layer_units):
            raise ValueError(f"the fitted network has layer sizes {have}, but "
                             f"this call needs {list(layer_units)}; refit from "
                             "scratch (warm_start=False)")

    def _n_out_scale(self):
        # scikit-learn's squared loss is a mean over outputs, the core's a sum
        return 1.0 / self.n_outputs_ if self.out_activation_ == "identity" else 1.0

    def _fit_lbfgs(self, net, X, Y, sw):
        core = net._core
        params = net.params
        nw = net.n_weights
        sw_sum = X.shape[0] if sw is None else float(sw.sum())
        out_scale = self._n_out_scale()
        poisson = self.out_activation_ == "exp"
        alpha = float(self.alpha)
        Wviews = self.coefs_

        # L-BFGS-B's line search compares loss values, so the loss it sees is
        # scikit-learn's to the last detail: for classifiers, computed from
        # probabilities clipped at eps (an extra forward pass; the gradient
        # is the same either way).
        clipped = {"softmax": _log_loss, "logistic": _binary_log_loss}.get(
            self.out_activation_)
        if isinstance(X, CSRInput):         # sparse X stays sparse
            forward, loss_grad = core.forward_csr, core.loss_grad_csr
        else:
            forward, loss_grad = core.forward, core.loss_grad

        def fun(x):
            params[...] = x
            if clipped is not None:
                L = clipped(Y, forward(X, True), sw)
                data = loss_grad(X, Y, sw, 1.0 / sw_sum)
                if not np.isfinite(data):
                    L = data
            elif poisson:
                z = forward(X, False)
                p = np.exp(z)
                L = _poisson_loss(Y, p, sw)
                target = np.ascontiguousarray(z - (p - Y), dtype=params.dtype)
                data = loss_grad(X, target, sw, 1.0 / sw_sum)
                if not np.isfinite(data):
                    L = data
            else:
                L = loss_grad(X, Y, sw, 1.0 / sw_sum) * out_scale
            if not np.isfinite(L):
                return L, np.full(params.shape, np.nan)
            values = 0.0
            for W in Wviews:
                s = W.ravel()
                values += np.dot(s, s)
            L += (0.5 * alpha) * values / sw_sum
            g = net.grads.astype(np.float64)
            g[:nw] += (alpha / sw_sum) * params[:nw]
            return float(L), g

        iprint = 1 if (self.verbose is True or self.verbose >= 1) else -1
        opt_res = scipy.optimize.minimize(
            fun, params.astype(np.float64), method="L-BFGS-B", jac=True,
            options={"maxfun": self.max_fun, "maxiter": self.max_iter,
                     "gtol": self.tol,
                     **_get_additional_lbfgs_options_dict("iprint", iprint)})
        self.n_iter_ = _check_optimize_result("lbfgs", opt_res, self.max_iter)
        self.loss_ = opt_res.fun
        params[...] = opt_res.x

    def _fit_stochastic(self, net, X, Y, sw, incremental, y, sw_orig, val=None,
                        drop_seed=None):
        if not incremental or not hasattr(self, "_optimizer"):
            self._optimizer = _Optimizer(
                self.solver, net.n_params, net.dtype, self.learning_rate_init,
                self.learning_rate, self.momentum, self.nesterovs_momentum,
                self.power_t, self.beta_1, self.beta_2, self.epsilon)
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = self.early_stopping
        if val is not None:
            # the validation data given to fit replaces early stopping's split
            X_train, Y_train, sw_train = X, Y, sw
            X_val, Y_val, y_val, sw_val = val
            X_val = self._as_input(X_val, net.dtype)
            Y_val = np.ascontiguousarray(Y_val, dtype=net.dtype)
            if self.validation_scores_ is None:
                self.validation_scores_ = []
            if getattr(self, "validation_loss_curve_", None) is None:
                self.validation_loss_curve_ = []
        elif early_stopping:
            # split row indices with the same call scikit-learn makes on
            # (X, y[, sample_weight]): the draws depend on n and stratify only
            should_stratify = is_classifier(self) and self.n_outputs_ == 1
            stratify = y if should_stratify else None
            train, val = train_test_split(
                np.arange(X.shape[0]), random_state=self._random_state,
                test_size=self.validation_fraction, stratify=stratify)
            if val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            if isinstance(X, CSRInput):
                X_train, X_val = X.take_rows(train), X.take_rows(val)
            else:
                X_train, X_val = X[train], X[val]
            Y_train, y_val = Y[train], y[val]
            Y_val = Y[val]
            sw_train = sw_val = None
            if sw is not None:
                sw_train, sw_val = sw[train], sw_orig[val]
            if is_classifier(self):
                y_val = self._label_binarizer.inverse_transform(y_val)
            if getattr(self, "validation_loss_curve_", None) is None:
                self.validation_loss_curve_ = []    # a warm start from before it
        else:
            X_train, Y_train, sw_train = X, Y, sw
            X_val = Y_val = y_val = sw_val = None

        n_samples = X_train.shape[0]
        sample_idx = np.arange(n_samples, dtype=int)
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn("Got `batch_size` less than 1 or larger than "
                              "sample size. It is going to be clipped")
            batch_size = int(np.clip(self.batch_size, 1, n_samples))

        runner = _EpochRunner(self, net, X_train, Y_train, sw_train, batch_size,
                              drop_seed)
        permute = _epoch_shuffle()
        try:
            self.n_iter_ = 0
            for it in range(self.max_iter):
                if self.shuffle:
                    sample_idx = permute(sample_idx, self._random_state)
                self.loss_ = runner.epoch(sample_idx if self.shuffle else None,
                                          self._optimizer.epoch_lr, it)
                self.n_iter_ += 1
                self.t_ += n_samples
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
                if X_val is not None:
                    self._validate_epoch(net, X_val, Y_val, y_val, sw_val)
                self._update_no_improvement_count(early_stopping)
                self._optimizer.iteration_ends(self.t_)
                if self._no_improvement_count > self.n_iter_no_change:
                    if early_stopping:
                        msg = ("Validation score did not improve more than "
                               "tol=%f for %d consecutive epochs."
                               % (self.tol, self.n_iter_no_change))
                    else:
                        msg = ("Training loss did not improve more than tol=%f"
                               " for %d consecutive epochs."
                               % (self.tol, self.n_iter_no_change))
                    if self._optimizer.trigger_stopping(msg, self.verbose):
                        break
                    self._no_improvement_count = 0
                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn(
                        "Stochastic Optimizer: Maximum iterations (%d) reached "
                        "and the optimization hasn't converged yet." % self.max_iter,
                        ConvergenceWarning)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")

        if early_stopping:
            for dst, src in zip(self.coefs_, self._best_coefs):
                dst[...] = src
            for dst, src in zip(self.intercepts_, self._best_intercepts):
                dst[...] = src

    def _validate_epoch(self, net, X_val, Y_val, y_val, sw_val):
        """After an epoch: the validation score (scikit-learn's: accuracy /
        R^2) and loss (_validation_loss) appended to validation_scores_ and
        validation_loss_curve_."""
        self.validation_scores_.append(self._score(X_val, y_val, sample_weight=sw_val))
        self.validation_loss_curve_.append(self._validation_loss(net, X_val, Y_val,
                                                                 sw_val))
        if self.verbose:
            print("Validation score: %f, validation loss: %.8f"
                  % (self.validation_scores_[-1], self.validation_loss_curve_[-1]))

    def _validation_loss(self, net, X, Y, sw):
        """The loss of the current network on (X, Y) as loss_curve_ reports
        the training data's, without the L2 term: the mean over samples
        (weighted by sw) of the loss, over outputs as scikit-learn does it
        (summed for log loss and poisson, averaged for the regression
        losses)."""
        sparse = isinstance(X, CSRInput)
        if self.out_activation_ == "exp":
            z = (net._core.forward_csr(X, False) if sparse
                 else net._core.forward(X, False))
            return float(_poisson_loss(Y, np.exp(z), sw))
        swc = None if sw is None else np.ascontiguousarray(sw, dtype=net.dtype)
        total = X.shape[0] if sw is None else float(np.sum(sw))
        loss = net._core.loss_csr if sparse else net._core.loss
        return float(loss(X, Y, swc, 1.0 / total)) * self._n_out_scale()

    def _update_no_improvement_count(self, early_stopping):
        if early_stopping:
            last_valid_score = self.validation_scores_[-1]
            if last_valid_score < (self.best_validation_score_ + self.tol):
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if last_valid_score > self.best_validation_score_:
                self.best_validation_score_ = last_valid_score
                self._best_coefs = [c.copy() for c in self.coefs_]
                self._best_intercepts = [i.copy() for i in self.intercepts_]
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None, *, X_val=None, y_val=None,
            sample_weight_val=None, validation_data=None):
        """Fit the model to data matrix X and target(s) y.

        Parameters
        ----------
        X : ndarray or sparse matrix of shape (n_samples, n_features)
            The input data (sparse input stays sparse: docs/sparse.md).
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            The target values (class labels in classification, real numbers
            in regression).
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.
        X_val, y_val : validation data, default=None
            fastnn's addition (scikit-learn's names for it, as in
            HistGradientBoostingClassifier.fit), for solver 'sgd' / 'adam':
            after every epoch the validation score (accuracy / R^2) and loss
            are appended to validation_scores_ and validation_loss_curve_.
            With early_stopping=True, early stopping uses this data instead
            of splitting off validation_fraction of X (all of X trains).
            See docs/validation.md.
        sample_weight_val : array-like of shape (n_val,), default=None
            Weights of the validation samples (class_weight does not apply
            to them).
        validation_data : tuple, default=None
            The same given as Network.fit takes it: (X_val, y_val) or
            (X_val, y_val, sample_weight_val); not together with X_val /
            y_val / sample_weight_val.

        Returns
        -------
        self : object
            Returns a trained MLP model.
        """
        if validation_data is not None:
            if X_val is not None or y_val is not None or sample_weight_val is not None:
                raise ValueError("validation data given twice: pass either "
                                 "validation_data=(X_val, y_val[, sample_weight_val]) "
                                 "or X_val=, y_val=, sample_weight_val=, not both")
            if (not isinstance(validation_data, (tuple, list))
                    or len(validation_data) not in (2, 3)):
                raise ValueError("validation_data must be a tuple (X_val, y_val) or "
                                 "(X_val, y_val, sample_weight_val), got "
                                 f"{type(validation_data).__name__}"
                                 + (f" of length {len(validation_data)}"
                                    if isinstance(validation_data, (tuple, list)) else ""))
            X_val, y_val, sample_weight_val = (tuple(validation_data) + (None,))[:3]
        return self._fit(X, y, sample_weight=sample_weight, incremental=False,
                         X_val=X_val, y_val=y_val, sample_weight_val=sample_weight_val)

    def _check_solver(self):
        if self.solver not in _STOCHASTIC_SOLVERS:
            raise AttributeError("partial_fit is only available for stochastic "
                                 "optimizers. %s is not stochastic." % self.solver)
        return True

    # ---- prediction -------------------------------------------------------

    def _forward_pass_fast(self, X, check_input=True):
        if check_input:
            X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        net = self._get_net()
        X = self._as_input(X, net.dtype)
        out = (net._core.forward_csr(X, True) if isinstance(X, CSRInput)
               else net._core.forward(X, True))
        if self.out_activation_ == "exp":
            np.exp(out, out=out)
        return out

    def _score_with_function(self, X, y, sample_weight, score_function):
        y_pred = self._predict(X, check_input=False)
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return score_function(y, y_pred, sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def to_sklearn(self):
        """This estimator as scikit-learn's own MLPClassifier / MLPRegressor:
        same parameters, bit-identical weights, fitted attributes and
        optimizer state (fastnn-only options raise ValueError); see
        fastnn._convert."""
        from fastnn._convert import to_sklearn
        return to_sklearn(self)

    @classmethod
    def from_sklearn(cls, sk_est):
        """A fitted fastnn estimator equal to the fitted scikit-learn
        estimator sk_est (parameters, weights bit for bit, fitted attributes,
        optimizer state); see fastnn._convert."""
        from fastnn._convert import from_sklearn
        return from_sklearn(cls, sk_est)


class _EpochRunner:
    """Runs one epoch of minibatches and returns scikit-learn's epoch loss:
    the mean over batches, weighted by rows, of (data loss + 0.5 alpha
    ||W||^2 / batch weight), ||W|| taken before each step, batch weight the
    batch's rows or sample-weight sum (scikit-learn's sw_sum).

    One native call (NetCore.fit, csrc/train.c) runs the whole epoch: it
    gathers the rows of `order`, takes the steps, and with loss_l2 /
    mean_by_rows reports exactly that mean, L2 term included; loss_scale
    turns the core's squared error (1/2 sum over outputs, the gradient
    scikit-learn follows) into the mean over outputs scikit-learn reports,
    leaving the L2 term undivided.

    One case still takes one native call per minibatch, because the native
    loop cannot produce scikit-learn's numbers for it: loss='poisson'.
    scikit-learn's output is exp(z), its loss the half Poisson deviance and
    its gradient e^z - y; the core has neither an exp output nor that loss,
    so each batch needs a forward pass here (z and the deviance) before the
    squared-error step on targets z - (e^z - y) that follows the same
    gradient.
    """

    def __init__(self, est, net, X, Y, sw, batch_size, drop_seed=None):
        from fastnn._train import FitConfig
        self.est, self.net, self.core = est, net, net._core
        self.X, self.Y, self.sw = X, Y, sw
        self.batch = batch_size
        self.alpha = float(est.alpha)
        self.out_scale = est._n_out_scale()
        self.poisson = est.out_activation_ == "exp"
        self.loss_buf = np.zeros(1)
        self.lr_buf = np.zeros(1)
        self.per_batch = self.poisson
        # Whole epochs report scikit-learn's epoch loss (loss_l2,
        # mean_by_rows, loss_scale; see the class docstring); per batch the
        # reported loss is computed here and the core's is not used.
        report = not self.per_batch
        opt = est._optimizer
        self.cfg = FitConfig(
            opt.kind, batch_size, momentum=opt.momentum, beta1=opt.beta_1,
            beta2=opt.beta_2, eps=opt.epsilon, l2=self.alpha, l2_per_row=True,
            vel=opt.vel, sq=opt.sq, t=opt.t, loss_l2=report, mean_by_rows=True,
            loss_scale=self.out_scale if report else 1.0, dropout_seed=drop_seed)
        if self.per_batch:
            n_in, n_out = X.shape[1], Y.shape[1]
            # a sparse X's batches are taken as CSR rows, not into xb
            self.xb = np.empty((batch_size if isinstance(X, np.ndarray) else 0,
                                n_in), net.dtype)
            self.yb = np.empty((batch_size, n_out), net.dtype)
            self.swb = None if sw is None else np.empty(batch_size, net.dtype)

    def _call(self, X, Y, sw, order, epoch=0):
        """NetCore.fit over the rows of X (in `order`, if given) in batches
        of at most self.batch rows, as epoch `epoch` of the fit (dropout's
        masks); returns the epoch loss the core reports (scikit-learn's,
        unless per batch)."""
        r = self.core.fit(X, Y, self.cfg, self.lr_buf, sw=sw, order=order,
                          epoch0=epoch, epoch_loss=self.loss_buf)
        self.est._optimizer.t = r.t
        if r.exc is not None:
            raise r.exc
        if r.diverged:
            raise ValueError(_NONFINITE_MSG + " (the loss became non-finite; the "
                             "last finite parameters are kept)")
        return float(self.loss_buf[0])

    def epoch(self, idx, lr, number=0):
        """Epoch `number` of the fit over the rows in order idx (None: in
        order) at learning rate lr; returns scikit-learn's epoch loss."""
        self.lr_buf[0] = lr
        if not self.per_batch:
            order = None if idx is None else np.ascontiguousarray(idx, np.int64)[None]
            return self._call(self.X, self.Y, self.sw, order, number)
        return self._epoch_per_batch(idx)

    def _epoch_per_batch(self, idx):
        """loss='poisson' (see the class docstring): one native step per
        minibatch, the reported batch loss and L2 term computed here."""
        X, Y, sw = self.X, self.Y, self.sw
        n = X.shape[0]
        accumulated = 0.0
        coefs = self.est.coefs_
        for sl in gen_batches(n, self.batch):
            mb = sl.stop - sl.start
            if isinstance(X, CSRInput):
                xb = X.take_rows(idx[sl] if idx is not None
                                 else np.arange(sl.start, sl.stop))
            if idx is not None:
                rows = idx[sl]
                if not isinstance(X, CSRInput):
                    xb = np.take(X, rows, axis=0, out=self.xb[:mb], mode="clip")
                yb = np.take(Y, rows, axis=0, out=self.yb[:mb], mode="clip")
                swb = (None if sw is None
                       else np.take(sw, rows, out=self.swb[:mb], mode="clip"))
            else:
                if not isinstance(X, CSRInput):
                    xb = X[sl]
                yb = Y[sl]
                swb = None if sw is None else sw[sl]
            sw_sum = mb if swb is None else float(swb.sum())
            values = 0.0
            if self.alpha != 0:
                for W in coefs:
                    s = W.ravel()
                    values += np.dot(s, s)
            z = (self.core.forward_csr(xb, False) if isinstance(xb, CSRInput)
                 else self.core.forward(xb, False))
            p = np.exp(z)
            data = _poisson_loss(yb, p, swb)
            target = np.ascontiguousarray(z - (p - yb), dtype=self.net.dtype)
            self._call(xb, target, swb, None)
            accumulated += (data + (0.5 * self.alpha) * values / sw_sum) * mb
        return accumulated / n


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer Perceptron classifier, trained by fastnn.

    A drop-in for sklearn.neural_network.MLPClassifier (scikit-learn 1.9.1):
    the same parameters, defaults, attributes, methods and results.  See the
    module docstring for fastnn's additions (activation 'leaky_relu', 'elu',
    'maxout' or a per-layer list; dtype) and the few differences.

    Parameters
    ----------
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
    activation : {'identity', 'logistic', 'tanh', 'relu', 'leaky_relu', 'elu',
        'maxout'} or list of those (one per hidden layer), default='relu'
    solver : {'lbfgs', 'sgd', 'adam'}, default='adam'
    alpha : float, default=0.0001
    batch_size : int, default='auto'
    learning_rate : {'constant', 'invscaling', 'adaptive'}, default='constant'
    learning_rate_init : float, default=0.001
    power_t : float, default=0.5
    max_iter : int, default=200
    shuffle : bool, default=True
    random_state : int, RandomState instance, default=None
    tol : float, default=1e-4
    verbose : bool, default=False
    warm_start : bool, default=False
    momentum : float, default=0.9
    nesterovs_momentum : bool, default=True
    early_stopping : bool, default=False
    validation_fraction : float, default=0.1
    beta_1 : float, default=0.9
    beta_2 : float, default=0.999
    epsilon : float, default=1e-8
    n_iter_no_change : int, default=10
    max_fun : int, default=15000
    dtype : None, np.float32 or np.float64, default=None
        Floating type of the parameters and the computation; None follows X
        (float32 input stays float32, anything else is float64).
    class_weight : None, 'balanced', dict {class: weight}, or for
        multilabel targets a list of one dict {0: w, 1: w} per label,
        default=None
        Weights of the classes, multiplied into sample_weight (the fit is
        that with the product as its sample weights), as in scikit-learn's
        LogisticRegression: 'balanced' weighs class c by sum(sw) /
        (n_classes * sum of sw over class c); classes a dict leaves out
        weigh 1.  For multilabel targets each label's 0/1 classes are
        weighted on their own and a sample's weight is the product over
        the labels.  early_stopping's validation score is weighted the
        same way.  partial_fit refuses 'balanced'.  See
        docs/class-weight.md.
    dropout : float or list of floats (one per hidden layer), default=0.0
        Rate of inverted dropout on the hidden layers' outputs while
        training (solver 'sgd' / 'adam'); in [0, 1), 0 for none; not on
        maxout layers.  Inactive in predict, predict_proba and score; the
        masks follow random_state.  See docs/dropout.md.

    Attributes
    ----------
    classes_, loss_, best_loss_, loss_curve_, validation_scores_,
    best_validation_score_, t_, coefs_, intercepts_, n_features_in_,
    feature_names_in_, n_iter_, n_layers_, n_outputs_, out_activation_:
    as in scikit-learn.
    """

    _parameter_constraints: dict = {
        **_BaseMLP._parameter_constraints,
        "class_weight": [dict, list, StrOptions({"balanced"}), None],
    }

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto",
                 learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4,
                 verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False,
                 validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 n_iter_no_change=10, max_fun=15000, dtype=None, class_weight=None,
                 dropout=0.0):
        self.class_weight = class_weight
        self.dropout = dropout
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes, activation=activation,
            solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init,
            power_t=power_t, max_iter=max_iter, loss="log_loss", shuffle=shuffle,
            random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
            dtype=dtype)

    def _weights(self, Y, sample_weight, incremental):
        """sample_weight times the class weight of each sample's class (Y:
        the binarized targets, classes_ in their columns); see
        fastnn._weights and docs/class-weight.md."""
        if self.class_weight is None:
            return sample_weight
        from fastnn._weights import class_sample_weight
        y_type = self._label_binarizer.y_type_
        if y_type.startswith("multilabel"):
            kind, classes = "multilabel", None
        elif len(self.classes_) == 2 and Y.shape[1] == 1:
            kind, classes = "binary", self.classes_
        else:
            kind, classes = "multiclass", self.classes_
        return class_sample_weight(self.class_weight, Y, kind, classes, sample_weight)

    def _validation_targets(self, y_val, n, n_out):
        """(y_val as given, for scoring; its binarized targets): labels must
        be among classes_, one per validation sample."""
        y_val = check_array(y_val, ensure_2d=False, dtype=None, input_name="y_val")
        if y_val.ndim == 2 and y_val.shape[1] == 1:
            y_val = column_or_1d(y_val, warn=True)
        if y_val.shape[0] != n:
            raise ValueError(f"y_val has {y_val.shape[0]} samples, X_val has {n}")
        unseen = np.setdiff1d(unique_labels(y_val), self.classes_)
        if len(unseen):
            raise ValueError(f"y_val has labels that are not among the classes "
                             f"seen in y: {unseen.tolist()} (classes_: "
                             f"{self.classes_.tolist()})")
        Y = self._label_binarizer.transform(y_val)
        Y = Y.reshape(n, -1)
        if Y.shape[1] != n_out:
            raise ValueError(f"y_val has {Y.shape[1]} outputs, y has {n_out}")
        return y_val, Y

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"],
                             multi_output=True, dtype=(np.float64, np.float32),
                             reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if (not hasattr(self, "classes_")) or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same "
                        "classes as in the previous call to fit. Previously "
                        f"got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    "`y` has classes not in `self.classes_`. "
                    f"`self.classes_` has {self.classes_}. 'y' has {classes}.")
        y = self._label_binarizer.transform(y).astype(bool)
        return X, y

    def predict(self, X):
        """Predict using the multi-layer perceptron classifier.

        Returns y : ndarray, shape (n_samples,) or (n_samples, n_classes).
        """
        check_is_fitted(self)
        return self._predict(X)

    def _predict(self, X, check_input=True):
        y_pred = self._forward_pass_fast(X, check_input=check_input)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)

    def _score(self, X, y, sample_weight=None):
        return self._score_with_function(X, y, sample_weight=sample_weight,
                                         score_function=accuracy_score)

    def _check_partial_fit(self):
        """partial_fit exists for the stochastic solvers, and not with
        class_weight='balanced' (AttributeError saying why)."""
        self._check_solver()
        if isinstance(self.class_weight, str) and self.class_weight == "balanced":
            raise AttributeError(
                "partial_fit is not available with class_weight='balanced': one "
                "batch does not tell the classes' frequencies. Compute the weights "
                "once, e.g. compute_class_weight('balanced', classes=classes, y=y) "
                "on a large enough sample of the targets, and pass them as a dict.")
        return True

    @available_if(lambda est: est._check_partial_fit())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Update the model with a single iteration over the given data.

        classes (array of shape (n_classes,)) is required on the first call.
        Not available with class_weight='balanced': one batch does not tell
        the classes' frequencies (give the weights as a dict, e.g. from
        sklearn.utils.class_weight.compute_class_weight on enough targets).
        """
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict_log_proba(self, X):
        """Log of predict_proba(X)."""
        y_prob = self.predict_proba(X)
        return np.log(y_prob, out=y_prob)

    def predict_proba(self, X):
        """Probability estimates, shape (n_samples, n_classes), classes in the
        order of classes_."""
        check_is_fitted(self)
        y_pred = self._forward_pass_fast(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        if y_pred.ndim == 1:
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


# MLPRegressor's loss -> (fastnn loss, the estimator parameter holding its
# parameter, that parameter's Network keyword).  'poisson' is handled apart.
_REGRESSION_LOSSES = {"squared_error": ("mse", None, None),
                      "absolute_error": ("mae", None, None),
                      "huber": ("huber", "huber_delta", "huber_delta"),
                      "quantile": ("quantile", "quantile", "quantile")}


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer Perceptron regressor, trained by fastnn.

    A drop-in for sklearn.neural_network.MLPRegressor (scikit-learn 1.9.1):
    the same parameters (loss='squared_error' or 'poisson' first), defaults,
    attributes, methods and results.  See MLPClassifier and the module
    docstring for the rest.

    fastnn's robust losses (docs/losses.md), each of r = prediction - target:

    loss : {'squared_error', 'poisson', 'absolute_error', 'huber',
        'quantile'}, default='squared_error'
        'absolute_error': |r|; 'huber': r^2 / 2 for |r| <= huber_delta, else
        huber_delta (|r| - huber_delta / 2); 'quantile': the pinball loss
        max(-q r, (1 - q) r) with q = quantile (predicts the q-quantile of
        the target).  At the kinks (r = 0) the gradient is 0.
    huber_delta : float > 0, default=1.0
        Where 'huber' turns from quadratic to linear (ignored by the other
        losses).
    quantile : float in (0, 1), default=0.5
        The quantile 'quantile' predicts (ignored by the other losses).
    dropout : float or list of floats (one per hidden layer), default=0.0
        Dropout on the hidden layers while training, as in MLPClassifier
        (not with loss='poisson'); docs/dropout.md.

    loss_ and loss_curve_ report them as scikit-learn reports squared
    error: the mean over samples and outputs, plus 0.5 alpha ||W||^2 /
    n_samples; the gradient followed is that of the sum over outputs
    (the same for one output).
    """

    _parameter_constraints: dict = {
        **_BaseMLP._parameter_constraints,
        "loss": [StrOptions({"squared_error", "poisson", "absolute_error", "huber",
                             "quantile"})],
        "huber_delta": [Interval(numbers.Real, 0, np.inf, closed="neither")],
        "quantile": [Interval(numbers.Real, 0, 1, closed="neither")],
    }

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,),
                 activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False,
                 validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 n_iter_no_change=10, max_fun=15000, dtype=None, huber_delta=1.0,
                 quantile=0.5, dropout=0.0):
        self.huber_delta = huber_delta
        self.quantile = quantile
        self.dropout = dropout
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes, activation=activation,
            solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init,
            power_t=power_t, max_iter=max_iter, loss=loss, shuffle=shuffle,
            random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
            dtype=dtype)

    def _net_loss(self, out_act):
        if out_act != "identity" or self.loss not in _REGRESSION_LOSSES:
            return super()._net_loss(out_act)
        loss, param, kw = _REGRESSION_LOSSES[self.loss]
        return loss, ({} if param is None else {kw: float(getattr(self, param))})

    def predict(self, X):
        """Predict using the multi-layer perceptron model: shape (n_samples,)
        or (n_samples, n_outputs)."""
        check_is_fitted(self)
        return self._predict(X)

    def _predict(self, X, check_input=True):
        y_pred = self._forward_pass_fast(X, check_input=check_input)
        if y_pred.shape[1] == 1:
            return y_pred.ravel()
        return y_pred

    def _score(self, X, y, sample_weight=None):
        return self._score_with_function(X, y, sample_weight=sample_weight,
                                         score_function=r2_score)

    def _validation_targets(self, y_val, n, n_out):
        """(y_val as given, for scoring; as an (n, n_outputs) array)."""
        y_val = check_array(y_val, ensure_2d=False, dtype="numeric",
                            input_name="y_val")
        if y_val.ndim == 2 and y_val.shape[1] == 1:
            y_val = column_or_1d(y_val, warn=True)
        if y_val.ndim > 2 or y_val.shape[0] != n:
            raise ValueError(f"y_val has shape {y_val.shape}, X_val has {n} samples")
        Y = y_val.reshape(n, -1)
        if Y.shape[1] != n_out:
            raise ValueError(f"y_val has {Y.shape[1]} outputs, y has {n_out}")
        return y_val, Y

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"],
                             multi_output=True, y_numeric=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    # scikit-learn 1.9.1 guards this with `lambda est: est._check_solver`
    # (the bound method, always truthy), so partial_fit is available for
    # every solver of the regressor; kept as is for a drop-in.
    @available_if(lambda est: est._check_solver)
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """Update the model with a single iteration over the given data."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)
