"""Conversion between fastnn's estimators and scikit-learn's own.

``fastnn.sklearn.MLPClassifier.from_sklearn(sk_est)`` / ``est.to_sklearn()``
(and the same on MLPRegressor) carry over, exactly:

- the constructor parameters (fastnn's ``dtype`` is None after
  from_sklearn: like scikit-learn, the result follows X's dtype);
- coefs_ and intercepts_, bit for bit, in their dtype;
- every fitted attribute scikit-learn 1.9.1 sets: n_features_in_,
  feature_names_in_, n_iter_, n_layers_, n_outputs_, out_activation_, t_,
  loss_, loss_curve_, best_loss_, validation_scores_,
  best_validation_score_, classes_;
- the state that continued training reads: the label binarizer, the
  no-improvement count, the best weights kept by early stopping, the
  random state object, and the optimizer (scikit-learn's ``_optimizer``:
  SGD's current learning rate and velocities, Adam's step count and
  moments), so that partial_fit / warm_start continue with the same
  numbers in both libraries.

The copies share nothing with the source estimator (a RandomState passed as
random_state is copied too, in its current state).  fastnn-only options
(activation 'leaky_relu', 'elu', 'maxout', per-layer activation lists that
are not one scikit-learn activation repeated, dtype other than None,
MLPRegressor's loss 'absolute_error', 'huber' or 'quantile',
MLPClassifier's class_weight other than None, dropout other than 0) have no
scikit-learn equivalent: to_sklearn raises ValueError naming them.  The
parameters of those losses (huber_delta, quantile) are dropped when the
loss is scikit-learn's: they have no effect then.  An
unfitted fastnn estimator converts its parameters only; from_sklearn needs a
fitted scikit-learn estimator (for an unfitted one, pass its get_params()
to the fastnn constructor).
"""
import copy

import numpy as np

SKLEARN_ACTIVATIONS = ("identity", "logistic", "tanh", "relu")
SKLEARN_REGRESSION_LOSSES = ("squared_error", "poisson")
# fastnn-only parameters that only fastnn-only losses read
_LOSS_PARAMS = ("huber_delta", "quantile")
# fastnn-only parameters whose default (None) is scikit-learn's behaviour
_OFF_BY_DEFAULT = ("class_weight",)
_OUT_ACTIVATIONS = ("identity", "logistic", "softmax", "exp")

# fitted attributes scikit-learn's MLPs set (public, then private state)
_FITTED = ("n_features_in_", "feature_names_in_", "n_iter_", "n_layers_",
           "n_outputs_", "out_activation_", "t_", "loss_", "loss_curve_",
           "best_loss_", "validation_scores_", "best_validation_score_")
_STATE = ("_no_improvement_count", "_best_coefs", "_best_intercepts",
          "_label_binarizer")


def _sklearn_class(cls):
    """scikit-learn's counterpart of fastnn estimator class cls."""
    from sklearn import neural_network
    from fastnn.sklearn import MLPClassifier, MLPRegressor
    for fastnn_cls in (MLPClassifier, MLPRegressor):
        if isinstance(cls, type) and issubclass(cls, fastnn_cls):
            return getattr(neural_network, fastnn_cls.__name__)
    raise TypeError(f"conversion is defined for fastnn.sklearn.MLPClassifier and "
                    f"MLPRegressor, not {cls!r}")


def _copy_value(v):
    """An independent copy of an attribute value (arrays, lists of arrays,
    RandomState, LabelBinarizer, scalars)."""
    if isinstance(v, np.ndarray):
        return v.copy()
    if isinstance(v, list):
        return [_copy_value(x) for x in v]
    if isinstance(v, (int, float, str, bool, type(None), np.generic)):
        return v
    return copy.deepcopy(v)


def _copy_params(params):
    out = {}
    for k, v in params.items():
        if isinstance(v, np.random.RandomState):
            out[k] = copy.deepcopy(v)
        elif isinstance(v, (list, np.ndarray)):
            out[k] = copy.copy(v)
        else:
            out[k] = v
    return out


def _copy_random_state(src, dst):
    """dst._random_state as src's: the same object as dst.random_state if
    src's was its random_state, the shared global RandomState if that, a
    copy otherwise."""
    if not hasattr(src, "_random_state"):
        return
    rs = src._random_state
    if rs is src.random_state and isinstance(rs, np.random.RandomState):
        dst._random_state = dst.random_state
    elif rs is np.random.mtrand._rand:
        dst._random_state = rs
    else:
        dst._random_state = copy.deepcopy(rs)


def _copy_fitted(src, dst):
    """The fitted attributes and training state (not coefs_, intercepts_,
    the optimizer) from src to dst, as independent copies."""
    for name in _FITTED + _STATE:
        if hasattr(src, name):
            setattr(dst, name, _copy_value(getattr(src, name)))
    if hasattr(src, "classes_"):
        lb_src = getattr(src, "_label_binarizer", None)
        if lb_src is not None and src.classes_ is getattr(lb_src, "classes_", None):
            dst.classes_ = dst._label_binarizer.classes_   # keep them one array
        else:
            dst.classes_ = _copy_value(src.classes_)
    _copy_random_state(src, dst)


def _check_weights(est, who):
    """coefs_ / intercepts_ of a fitted estimator: lists of chained 2-D / 1-D
    float arrays of one dtype; returns that dtype."""
    coefs, inters = getattr(est, "coefs_"), getattr(est, "intercepts_", None)
    if (not isinstance(coefs, (list, tuple)) or not isinstance(inters, (list, tuple))
            or len(coefs) != len(inters) or not coefs):
        raise ValueError(f"{who}: coefs_ and intercepts_ must be non-empty lists "
                         "of equal length")
    dtypes = {np.asarray(a).dtype for a in list(coefs) + list(inters)}
    if len(dtypes) != 1 or dtypes.pop() not in (np.float32, np.float64):
        raise ValueError(f"{who}: coefs_ and intercepts_ must all be float32 or "
                         f"all float64, got {sorted(str(d) for d in dtypes)}")
    fan_in = np.shape(coefs[0])[0] if np.ndim(coefs[0]) == 2 else None
    for i, (W, b) in enumerate(zip(coefs, inters)):
        W, b = np.asarray(W), np.asarray(b)
        if W.ndim != 2 or W.shape[0] != fan_in or b.shape != (W.shape[1],):
            raise ValueError(f"{who}: coefs_[{i}] {W.shape} and intercepts_[{i}] "
                             f"{b.shape} do not chain into a network")
        fan_in = W.shape[1]
    if getattr(est, "n_layers_", len(coefs) + 1) != len(coefs) + 1:
        raise ValueError(f"{who}: n_layers_ is {est.n_layers_} but there are "
                         f"{len(coefs)} weight matrices")
    out = getattr(est, "out_activation_", None)
    if out not in _OUT_ACTIVATIONS:
        raise ValueError(f"{who}: out_activation_ must be one of {_OUT_ACTIVATIONS}, "
                         f"got {out!r}")
    return np.asarray(coefs[0]).dtype


def _pack(arrays, dtype):
    return np.concatenate([np.asarray(a, dtype=dtype).ravel() for a in arrays])


def _unpack(flat, like):
    out, off = [], 0
    for a in like:
        out.append(np.array(flat[off:off + a.size], dtype=a.dtype).reshape(a.shape))
        off += a.size
    return out


# ---- scikit-learn -> fastnn ------------------------------------------------

def from_sklearn(cls, sk_est):
    """A fitted fastnn estimator of class cls equal to the fitted
    scikit-learn estimator sk_est (see the module docstring)."""
    from sklearn.exceptions import NotFittedError
    sk_cls = _sklearn_class(cls)
    if not isinstance(sk_est, sk_cls):
        raise TypeError(f"{cls.__name__}.from_sklearn expects a fitted "
                        f"sklearn.neural_network.{sk_cls.__name__}, got "
                        f"{type(sk_est).__module__}.{type(sk_est).__name__}")
    if not hasattr(sk_est, "coefs_"):
        raise NotFittedError(
            f"this {sk_cls.__name__} is not fitted, so there are no weights to "
            f"convert; for its parameters alone use "
            f"fastnn.sklearn.{cls.__name__}(**sk_est.get_params())")
    params = sk_est.get_params(deep=False)
    known = set(cls().get_params(deep=False))
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"{sk_cls.__name__} has parameters fastnn does not know: "
                         f"{unknown}")
    act = params.get("activation")
    if act not in SKLEARN_ACTIVATIONS:
        raise ValueError(f"the scikit-learn estimator's activation {act!r} is not "
                         f"one of scikit-learn's {SKLEARN_ACTIVATIONS}")
    _check_weights(sk_est, f"the {sk_cls.__name__}")
    if hasattr(sk_est, "classes_") and not hasattr(sk_est, "_label_binarizer"):
        raise ValueError(f"the {sk_cls.__name__} has classes_ but no "
                         "_label_binarizer: it was not fitted by scikit-learn")

    est = cls(**_copy_params(params))
    _copy_fitted(sk_est, est)
    est.coefs_ = [np.array(W) for W in sk_est.coefs_]
    est.intercepts_ = [np.array(b) for b in sk_est.intercepts_]
    net = est._get_net()         # builds the network, coefs_ become its views
    opt = getattr(sk_est, "_optimizer", None)
    if opt is not None:
        est._optimizer = _optimizer_from_sklearn(opt, est, net)
    return est


def _optimizer_from_sklearn(opt, est, net):
    from sklearn.neural_network._stochastic_optimizers import (AdamOptimizer,
                                                               SGDOptimizer)
    from fastnn.sklearn import _Optimizer
    like = list(est.coefs_) + list(est.intercepts_)

    def packed(arrays, name):
        shapes = [np.shape(a) for a in arrays]
        if shapes != [a.shape for a in like]:
            raise ValueError(f"the scikit-learn optimizer's {name} have shapes "
                             f"{shapes}, the weights {[a.shape for a in like]}")
        return _pack(arrays, net.dtype)

    if isinstance(opt, AdamOptimizer):
        out = _Optimizer("adam", net.n_params, net.dtype, opt.learning_rate_init,
                         beta_1=opt.beta_1, beta_2=opt.beta_2, epsilon=opt.epsilon)
        out.t = int(opt.t)
        out.vel[...] = packed(opt.ms, "ms")
        out.sq[...] = packed(opt.vs, "vs")
    elif isinstance(opt, SGDOptimizer):
        out = _Optimizer("sgd", net.n_params, net.dtype, opt.learning_rate_init,
                         opt.lr_schedule, opt.momentum, opt.nesterov, opt.power_t)
        out.learning_rate = opt.learning_rate
        if out.vel is not None:       # momentum 0: the velocity is never read
            out.vel[...] = packed(opt.velocities, "velocities")
    else:
        raise ValueError(f"unknown scikit-learn optimizer {type(opt).__name__}")
    return out


# ---- fastnn -> scikit-learn ------------------------------------------------

def _sklearn_activation(est):
    """est's activation as scikit-learn's single string, or ValueError."""
    act = est.activation
    if isinstance(act, str):
        acts = [act]
    elif isinstance(act, (list, tuple)):
        acts = list(act)
    else:
        raise ValueError(f"activation {act!r} is neither a string nor a list")
    fitted = getattr(est, "_hidden_acts", None)
    if fitted is not None and hasattr(est, "coefs_"):
        acts = acts + list(fitted)
    bad = [a for a in acts if a not in SKLEARN_ACTIVATIONS]
    if bad:
        raise ValueError(f"activation={act!r}: {bad[0]!r} is a fastnn-only "
                         f"activation; scikit-learn has {SKLEARN_ACTIVATIONS}")
    if len(set(acts)) > 1:
        raise ValueError(f"activation={act!r}: per-layer activation lists are "
                         "fastnn-only; scikit-learn uses one activation for every "
                         "hidden layer")
    return acts[0] if acts else "relu"


def to_sklearn(est):
    """The scikit-learn estimator equal to fastnn estimator est (see the
    module docstring)."""
    sk_cls = _sklearn_class(type(est))
    act = _sklearn_activation(est)
    if est.dtype is not None:
        raise ValueError(
            f"dtype={est.dtype!r} is a fastnn-only option: scikit-learn has no "
            "dtype parameter and follows X (float32 input stays float32, anything "
            "else is float64); set dtype=None first (est.set_params(dtype=None)) "
            "to convert")
    params = est.get_params(deep=False)
    params.pop("dtype")
    if (sk_cls.__name__ == "MLPRegressor"
            and params["loss"] not in SKLEARN_REGRESSION_LOSSES):
        raise ValueError(
            f"loss={params['loss']!r} is a fastnn-only loss: scikit-learn's "
            f"MLPRegressor has {SKLEARN_REGRESSION_LOSSES}")
    for k in _LOSS_PARAMS:
        params.pop(k, None)
    for k in _OFF_BY_DEFAULT:
        if params.pop(k, None) is not None:
            raise ValueError(f"{k}={getattr(est, k)!r} is a fastnn-only option: "
                             f"scikit-learn's {sk_cls.__name__} has no {k}; set it "
                             f"to None first (est.set_params({k}=None)) to convert")
    d = params.pop("dropout", 0.0)
    if any(np.atleast_1d(np.asarray(d, dtype=object)) != 0):
        raise ValueError(f"dropout={d!r} is a fastnn-only option: scikit-learn's "
                         f"{sk_cls.__name__} has no dropout; set it to 0 first "
                         "(est.set_params(dropout=0.0)) to convert")
    params["activation"] = act
    known = set(sk_cls().get_params(deep=False))
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"parameters {unknown} have no scikit-learn equivalent")
    sk_est = sk_cls(**_copy_params(params))
    if not hasattr(est, "coefs_"):
        return sk_est
    _check_weights(est, f"the fastnn {type(est).__name__}")
    _copy_fitted(est, sk_est)
    sk_est.coefs_ = [np.array(W) for W in est.coefs_]
    sk_est.intercepts_ = [np.array(b) for b in est.intercepts_]
    opt = getattr(est, "_optimizer", None)
    if opt is not None:
        sk_est._optimizer = _optimizer_to_sklearn(opt, sk_est)
    return sk_est


def _optimizer_to_sklearn(opt, sk_est):
    from sklearn.neural_network._stochastic_optimizers import (AdamOptimizer,
                                                               SGDOptimizer)
    like = list(sk_est.coefs_) + list(sk_est.intercepts_)
    if opt.solver == "adam":
        out = AdamOptimizer(like, opt.learning_rate_init, opt.beta_1, opt.beta_2,
                            opt.epsilon)
        out.t = int(opt.t)
        out.ms = _unpack(opt.vel, like)
        out.vs = _unpack(opt.sq, like)
        if out.t > 0:   # the value scikit-learn's last update left there
            out.learning_rate = (out.learning_rate_init
                                 * np.sqrt(1 - out.beta_2 ** out.t)
                                 / (1 - out.beta_1 ** out.t))
    else:
        out = SGDOptimizer(like, opt.learning_rate_init, opt.lr_schedule,
                           opt.momentum, opt.nesterov, opt.power_t)
        out.learning_rate = opt.learning_rate
        if opt.vel is not None:     # else momentum is 0: never read
            out.velocities = _unpack(opt.vel, like)
    return out
