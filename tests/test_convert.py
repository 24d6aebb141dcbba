"""Conversion between fastnn's estimators and scikit-learn's own:
MLPClassifier.from_sklearn / MLPRegressor.from_sklearn and to_sklearn.

Exact means: the same parameters; coefs_ and intercepts_ bit for bit in the
same dtype; every fitted attribute equal; predictions equal to the rounding
of the two implementations; and training continued in both (partial_fit,
warm_start) following the same numbers, because the optimizer state
(scikit-learn's _optimizer) travels too.  Continued-training parity is
judged as in tests/test_sklearn.py: per array, max |a - b| <= 1e-8 * max |b|.
"""
import copy
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the conversion targets scikit-learn")

from sklearn import neural_network as sk  # noqa: E402
from sklearn.datasets import (make_classification,  # noqa: E402
                              make_multilabel_classification, make_regression)
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from fastnn import sklearn as fk  # noqa: E402
from fastnn._convert import _FITTED  # noqa: E402


def _std(X):
    return StandardScaler().fit_transform(X)


def _data():
    Xr, yr = make_regression(120, 6, n_targets=2, noise=0.5, random_state=0)
    Xc, yc = make_classification(120, 6, n_informative=4, n_classes=3, random_state=0)
    Xb, yb = make_classification(120, 6, random_state=1)
    Xm, ym = make_multilabel_classification(120, 6, n_classes=3, random_state=0)
    names = np.array(["cat", "dog", "emu"])
    return {"regression": (_std(Xr), yr / 100, "MLPRegressor"),
            "regression-1out": (_std(Xr), yr[:, 0] / 100, "MLPRegressor"),
            "poisson": (_std(Xr), np.abs(yr[:, 0]) / 100, "MLPRegressor"),
            "multiclass": (_std(Xc), yc, "MLPClassifier"),
            "multiclass-str": (_std(Xc), names[yc], "MLPClassifier"),
            "binary": (_std(Xb), yb, "MLPClassifier"),
            "binary-bool": (_std(Xb), yb.astype(bool), "MLPClassifier"),
            "multilabel": (_std(Xm), ym, "MLPClassifier")}


DATA = _data()
SOLVERS = {"sgd": dict(solver="sgd", momentum=0.0, learning_rate_init=0.05),
           "momentum": dict(solver="sgd", nesterovs_momentum=False,
                            learning_rate_init=0.02),
           "nesterov": dict(solver="sgd", learning_rate_init=0.02),
           "invscaling": dict(solver="sgd", learning_rate="invscaling",
                              learning_rate_init=0.3),
           "adaptive": dict(solver="sgd", learning_rate="adaptive", tol=10.0,
                            n_iter_no_change=1, learning_rate_init=0.05),
           "adam": dict(solver="adam", learning_rate_init=0.01)}


def _params(task, **kw):
    p = dict(hidden_layer_sizes=(7, 5), random_state=0, max_iter=4, batch_size=32,
             activation="tanh")
    if task == "poisson":
        p["loss"] = "poisson"
    p.update(kw)
    return p


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


def _classes_kw(task, y):
    if DATA[task][2] == "MLPRegressor":
        return {}
    return {"classes": np.arange(y.shape[1]) if y.ndim == 2 else np.unique(y)}


def normrel(a, b):
    b = np.asarray(b, np.float64)
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def _weights(est):
    return list(est.coefs_) + list(est.intercepts_)


def assert_bit_identical(a, b):
    wa, wb = _weights(a), _weights(b)
    assert len(wa) == len(wb)
    for p, q in zip(wa, wb):
        assert p.dtype == q.dtype and p.shape == q.shape
        np.testing.assert_array_equal(p, q)
        assert not np.shares_memory(p, q)


def _equal(u, v):
    if isinstance(u, np.ndarray) or isinstance(v, np.ndarray):
        return (np.asarray(u).dtype == np.asarray(v).dtype
                and np.array_equal(np.asarray(u), np.asarray(v)))
    if isinstance(u, list):
        return (isinstance(v, list) and len(u) == len(v)
                and all(_equal(x, y) for x, y in zip(u, v)))
    if isinstance(u, float) and isinstance(v, float) and np.isnan(u):
        return np.isnan(v)
    return type(u) is type(v) and u == v


def assert_same_state(a, b):
    """Every fitted attribute and the training state carried over."""
    assert_bit_identical(a, b)
    for name in _FITTED + ("classes_", "_no_improvement_count"):
        assert hasattr(a, name) == hasattr(b, name), name
        if hasattr(a, name):
            assert _equal(getattr(a, name), getattr(b, name)), name
    for name in ("_best_coefs", "_best_intercepts"):
        assert _equal(getattr(a, name), getattr(b, name)), name
    if hasattr(a, "_label_binarizer"):
        la, lb = a._label_binarizer, b._label_binarizer
        assert la is not lb
        assert la.y_type_ == lb.y_type_ and np.array_equal(la.classes_, lb.classes_)


def assert_same_params(a, b):
    pa, pb = a.get_params(), b.get_params()
    for k in ("dtype", "huber_delta", "quantile", "class_weight", "dropout"):
        pb.pop(k, None)
        pa.pop(k, None)
    assert pa.keys() == pb.keys()
    for k in pa:
        if isinstance(pa[k], np.random.RandomState):
            assert pa[k] is not pb[k]
            sa, sb = pa[k].get_state(), pb[k].get_state()
            assert np.array_equal(sa[1], sb[1]) and sa[2:] == sb[2:]
        else:
            assert pa[k] == pb[k], k


def assert_same_predictions(a, b, X, rtol=1e-12):
    """b (either library) predicts what a predicts, to rounding."""
    if hasattr(a, "predict_proba"):
        pa, pb = a.predict_proba(X), b.predict_proba(X)
        np.testing.assert_allclose(pb, pa, rtol=rtol, atol=rtol)
        # labels: equal wherever the decision is not within rounding of a tie
        s = np.sort(pa, axis=1)
        clear = (s[:, -1] - s[:, -2] > 1e3 * rtol) if a.out_activation_ == "softmax" \
            else np.all(np.abs(pa - 0.5) > 1e3 * rtol, axis=1)
        assert clear.mean() > 0.9
        la, lb = a.predict(X), b.predict(X)
        assert la.dtype == lb.dtype
        np.testing.assert_array_equal(lb[clear], la[clear])
    else:
        pa, pb = a.predict(X), b.predict(X)
        assert pa.shape == pb.shape
        np.testing.assert_allclose(pb, pa, rtol=rtol, atol=rtol * np.abs(pa).max())


def _continue(a, b, X, y, task, steps=3, how="partial_fit"):
    kw = _classes_kw(task, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i in range(steps):
            if how == "partial_fit":
                a.partial_fit(X, y, **kw)
                b.partial_fit(X, y, **kw)
            else:
                a.fit(X, y)
                b.fit(X, y)


def assert_same_training(a, b, tol=1e-8, loss_tol=1e-10):
    for i, (p, q) in enumerate(zip(_weights(a), _weights(b))):
        assert normrel(q, p) <= tol, (i, normrel(q, p))
    assert a.n_iter_ == b.n_iter_ and a.t_ == b.t_
    np.testing.assert_allclose(b.loss_curve_, a.loss_curve_, rtol=loss_tol)


# ---- scikit-learn -> fastnn --------------------------------------------------

@pytest.mark.parametrize("task", list(DATA))
def test_from_sklearn_exact(task):
    X, y, cls = DATA[task]
    a = _fit(getattr(sk, cls)(**_params(task, solver="adam")), X, y)
    b = getattr(fk, cls).from_sklearn(a)
    assert type(b) is getattr(fk, cls)
    assert b.dtype is None
    assert_same_params(a, b)
    assert_same_state(a, b)
    assert_same_predictions(a, b, X)
    # the fastnn estimator runs on its own network, its coefs_ are its views
    net = b._get_net()
    assert all(np.shares_memory(W, net.params) for W in b.coefs_)


@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("task", ["regression", "multiclass-str", "binary-bool",
                                  "multilabel", "poisson"])
def test_from_sklearn_continues_identically(task, solver):
    """partial_fit on both after the conversion follows the same steps: the
    optimizer state came along (velocities / Adam moments and step count,
    the current learning rate of invscaling and adaptive)."""
    X, y, cls = DATA[task]
    a = _fit(getattr(sk, cls)(**_params(task, **SOLVERS[solver])), X, y)
    b = getattr(fk, cls).from_sklearn(a)
    _continue(a, b, X, y, task)
    assert_same_training(a, b)


@pytest.mark.parametrize("solver", ["momentum", "adam"])
def test_optimizer_state_matters(solver):
    """The control for the test above: the same conversion without the
    optimizer state does not continue like scikit-learn, so the state is
    what makes the numbers agree."""
    task = "multiclass"
    X, y, cls = DATA[task]
    a = _fit(sk.MLPClassifier(**_params(task, **SOLVERS[solver])), X, y)
    b = fk.MLPClassifier.from_sklearn(a)
    del b._optimizer
    _continue(a, b, X, y, task, steps=1)
    assert max(normrel(q, p) for p, q in zip(_weights(a), _weights(b))) > 1e-6


@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_from_sklearn_warm_start(task):
    X, y, cls = DATA[task]
    a = _fit(getattr(sk, cls)(**_params(task, solver="sgd", warm_start=True,
                                        learning_rate="invscaling",
                                        learning_rate_init=0.2)), X, y)
    b = getattr(fk, cls).from_sklearn(a)
    _continue(a, b, X, y, task, steps=2, how="fit")
    assert_same_training(a, b)


def test_from_sklearn_early_stopping():
    """best_validation_score_, validation_scores_ and the best weights carry
    over; a warm-started fit then splits, scores and stops alike.

    One continued fit, which finds a new best score: after an early-stopping
    fit scikit-learn's coefs_ *are* its _best_coefs (the same arrays), so a
    later fit that finds no better score ends on its last weights, while
    fastnn restores the best ones it kept; that difference is in training,
    not in the conversion."""
    task = "multiclass"
    X, y, cls = DATA[task]
    a = _fit(sk.MLPClassifier(**_params(task, early_stopping=True, warm_start=True,
                                        max_iter=6)), X, y)
    b = fk.MLPClassifier.from_sklearn(a)
    assert_same_state(a, b)
    assert b.best_validation_score_ == a.best_validation_score_
    best = a.best_validation_score_
    _continue(a, b, X, y, task, steps=1, how="fit")
    assert a.best_validation_score_ > best
    assert_same_training(a, b)
    np.testing.assert_allclose(b.validation_scores_, a.validation_scores_, rtol=1e-12)


def test_from_sklearn_lbfgs():
    task = "multiclass"
    X, y, cls = DATA[task]
    a = _fit(sk.MLPClassifier(**_params(task, solver="lbfgs", max_iter=15)), X, y)
    b = fk.MLPClassifier.from_sklearn(a)
    assert not hasattr(b, "_optimizer") and not hasattr(b, "loss_curve_")
    assert_same_state(a, b)
    assert_same_predictions(a, b, X)
    # warm-started L-BFGS from the same point (see test_parity_lbfgs on its
    # tolerance: quasi-Newton steps amplify rounding)
    a.set_params(warm_start=True, max_iter=10)
    b.set_params(warm_start=True, max_iter=10)
    _fit(a, X, y)
    _fit(b, X, y)
    for p, q in zip(_weights(a), _weights(b)):
        assert normrel(q, p) <= 1e-6


def test_from_sklearn_float32():
    """scikit-learn keeps float32 input in float32; so does the converted
    estimator (dtype None, float32 network), and it trains on alike."""
    task = "multiclass"
    X, y, cls = DATA[task]
    X32 = X.astype(np.float32)
    a = _fit(sk.MLPClassifier(**_params(task)), X32, y)
    assert a.coefs_[0].dtype == np.float32
    b = fk.MLPClassifier.from_sklearn(a)
    assert b._get_net().dtype == np.float32
    assert_same_state(a, b)
    assert_same_predictions(a, b, X32, rtol=1e-5)
    _continue(a, b, X32, y, task, steps=2)
    assert_same_training(a, b, tol=1e-5, loss_tol=1e-5)


def test_from_sklearn_random_state_instance_and_feature_names():
    pd = pytest.importorskip("pandas")
    task = "binary"
    X, y, cls = DATA[task]
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    a = _fit(sk.MLPClassifier(**_params(task, random_state=np.random.RandomState(3),
                                        warm_start=True)), df, y)
    b = fk.MLPClassifier.from_sklearn(a)
    np.testing.assert_array_equal(b.feature_names_in_, a.feature_names_in_)
    assert b.random_state is not a.random_state
    assert b._random_state is b.random_state
    # both RandomStates are in the same state: the shuffles of further fits agree
    _continue(a, b, df, y, task, steps=2, how="fit")
    assert_same_training(a, b)


def test_from_sklearn_copies_share_nothing():
    task = "multiclass"
    X, y, cls = DATA[task]
    a = _fit(sk.MLPClassifier(**_params(task)), X, y)
    before = [w.copy() for w in _weights(a)]
    curve = list(a.loss_curve_)
    b = fk.MLPClassifier.from_sklearn(a)
    b.partial_fit(X, y)
    for w, w0 in zip(_weights(a), before):
        np.testing.assert_array_equal(w, w0)
    assert a.loss_curve_ == curve


# ---- fastnn -> scikit-learn --------------------------------------------------

@pytest.mark.parametrize("task", list(DATA))
def test_to_sklearn_exact(task):
    X, y, cls = DATA[task]
    b = _fit(getattr(fk, cls)(**_params(task)), X, y)
    a = b.to_sklearn()
    assert type(a) is getattr(sk, cls)
    assert_same_params(b, a)
    assert_same_state(b, a)
    assert_same_predictions(b, a, X)


@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("task", ["regression-1out", "multiclass", "multilabel"])
def test_to_sklearn_continues_identically(task, solver):
    X, y, cls = DATA[task]
    b = _fit(getattr(fk, cls)(**_params(task, **SOLVERS[solver])), X, y)
    a = b.to_sklearn()
    _continue(a, b, X, y, task)
    assert_same_training(a, b)


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass-str"])
def test_round_trip_is_exact(task):
    X, y, cls = DATA[task]
    b = _fit(getattr(fk, cls)(**_params(task)), X, y)
    c = getattr(fk, cls).from_sklearn(b.to_sklearn())
    assert_same_params(b, c)
    assert_same_state(b, c)
    np.testing.assert_array_equal(c.predict(X), b.predict(X))
    for k in ("vel", "sq"):
        np.testing.assert_array_equal(getattr(c._optimizer, k), getattr(b._optimizer, k))
    assert c._optimizer.t == b._optimizer.t
    kw = _classes_kw(task, y)
    b.partial_fit(X, y, **kw)
    c.partial_fit(X, y, **kw)
    for p, q in zip(_weights(b), _weights(c)):
        np.testing.assert_array_equal(p, q)


def test_to_sklearn_unfitted_converts_parameters():
    b = fk.MLPRegressor(hidden_layer_sizes=(3, 2), activation="logistic", alpha=0.1,
                        solver="sgd", random_state=np.random.RandomState(0))
    a = b.to_sklearn()
    assert type(a) is sk.MLPRegressor
    assert not hasattr(a, "coefs_")
    assert_same_params(b, a)


def test_to_sklearn_repeated_activation_list():
    """A per-layer list naming one scikit-learn activation for every layer
    is that activation."""
    task = "multiclass"
    X, y, cls = DATA[task]
    b = _fit(fk.MLPClassifier(**_params(task, activation=["relu", "relu"])), X, y)
    a = b.to_sklearn()
    assert a.activation == "relu"
    assert_same_predictions(b, a, X)


@pytest.mark.parametrize("option, match", [
    (dict(activation="leaky_relu"), "'leaky_relu' is a fastnn-only activation"),
    (dict(activation="elu"), "'elu' is a fastnn-only activation"),
    (dict(activation="maxout"), "'maxout' is a fastnn-only activation"),
    (dict(activation=["tanh", "relu"]), "per-layer activation lists"),
    (dict(dtype=np.float32), "dtype=.*fastnn-only option"),
    (dict(dtype=np.float64), "dtype=.*fastnn-only option"),
])
@pytest.mark.parametrize("fitted", [False, True])
def test_to_sklearn_fastnn_only_options(option, match, fitted):
    task = "multiclass"
    X, y, cls = DATA[task]
    b = fk.MLPClassifier(**_params(task, **option))
    if fitted:
        _fit(b, X, y)
    with pytest.raises(ValueError, match=match):
        b.to_sklearn()


def test_to_sklearn_activation_changed_after_fit():
    """set_params after fitting a fastnn-only network cannot hide it."""
    task = "multiclass"
    X, y, cls = DATA[task]
    b = _fit(fk.MLPClassifier(**_params(task, activation="elu")), X, y)
    b.set_params(activation="relu")
    with pytest.raises(ValueError, match="'elu' is a fastnn-only activation"):
        b.to_sklearn()


# ---- bad arguments ----------------------------------------------------------

def test_from_sklearn_wrong_type():
    X, y, _ = DATA["binary"]
    fitted_fastnn = _fit(fk.MLPClassifier(**_params("binary")), X, y)
    regressor = _fit(sk.MLPRegressor(**_params("regression-1out")), X, y.astype(float))
    with pytest.raises(TypeError,
                       match="expects a fitted sklearn.neural_network.MLPClassifier"):
        fk.MLPClassifier.from_sklearn(fitted_fastnn)
    with pytest.raises(TypeError, match="got sklearn.neural_network.*MLPRegressor"):
        fk.MLPClassifier.from_sklearn(regressor)
    with pytest.raises(TypeError,
                       match="expects a fitted sklearn.neural_network.MLPRegressor"):
        fk.MLPRegressor.from_sklearn("model.pkl")


def test_from_sklearn_unfitted():
    with pytest.raises(NotFittedError, match="not fitted.*get_params"):
        fk.MLPClassifier.from_sklearn(sk.MLPClassifier())
    assert issubclass(NotFittedError, ValueError)


def test_from_sklearn_inconsistent_state():
    X, y, cls = DATA["multiclass"]
    a = _fit(sk.MLPClassifier(**_params("multiclass")), X, y)
    bad = copy.deepcopy(a)
    bad.intercepts_[0] = bad.intercepts_[0].astype(np.float32)
    with pytest.raises(ValueError, match="must all be float32 or all float64"):
        fk.MLPClassifier.from_sklearn(bad)
    bad = copy.deepcopy(a)
    bad.coefs_[1] = bad.coefs_[1][:-1]
    with pytest.raises(ValueError, match="do not chain"):
        fk.MLPClassifier.from_sklearn(bad)
    bad = copy.deepcopy(a)
    bad._optimizer.ms = bad._optimizer.ms[:-1]
    with pytest.raises(ValueError, match="optimizer's ms have shapes"):
        fk.MLPClassifier.from_sklearn(bad)
    bad = copy.deepcopy(a)
    bad.set_params(activation="softplus")
    with pytest.raises(ValueError, match="activation 'softplus'"):
        fk.MLPClassifier.from_sklearn(bad)
