"""Validation curves in the estimators: fit(X, y, X_val=, y_val=,
sample_weight_val=) and early stopping's own split fill validation_scores_
(scikit-learn's score) and validation_loss_curve_ (the validation loss)
after every epoch; early stopping uses the given data instead of a split."""
import copy
import pickle
import warnings

import numpy as np
import pytest

import fastnn

sklearn = pytest.importorskip("sklearn", reason="the estimator tests need scikit-learn")
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.metrics import accuracy_score, log_loss, r2_score  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkMLPClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkMLPRegressor  # noqa: E402

from fastnn import reference as R  # noqa: E402
from fastnn.sklearn import MLPClassifier, MLPRegressor, _binary_log_loss  # noqa: E402



def _quiet():
    warnings.simplefilter("ignore", ConvergenceWarning)


def _clf_data(kind="binary", n=200, seed=0):
    rs = np.random.RandomState(seed)
    X = rs.randn(n, 4)
    if kind == "binary":
        y = (X[:, 0] + 0.7 * rs.randn(n) > 0).astype(int)
    elif kind == "multiclass":
        y = np.digitize(X[:, 0] + 0.5 * rs.randn(n), [-0.5, 0.5])
    else:
        y = np.stack([X[:, 0] > 0, X[:, 1] + 0.5 * rs.randn(n) > 0.3], 1).astype(int)
    return X, y


def _reg_data(n=200, n_out=1, seed=0, positive=False):
    rs = np.random.RandomState(seed)
    X = rs.randn(n, 4)
    Y = X @ rs.randn(4, n_out) + 0.3 * rs.randn(n, n_out)
    if positive:
        Y = np.exp(0.3 * Y)
    return X, (Y[:, 0] if n_out == 1 else Y)


def _expected_loss(est, X, y, sw):
    """The validation loss by its definition, from predictions alone: the
    weighted mean over samples of scikit-learn's loss (log loss of the
    probabilities; squared error / the robust losses averaged over outputs;
    poisson's half deviance summed over outputs); no L2 term."""
    if isinstance(est, MLPClassifier):
        p = est.predict_proba(X)
        if est._label_binarizer.y_type_.startswith("multilabel"):
            return _binary_log_loss(y, p, sw)
        return log_loss(y, p, sample_weight=sw, labels=est.classes_)
    p = est.predict(X).reshape(len(X), -1)
    Y = np.asarray(y, dtype=np.float64).reshape(len(X), -1)
    w = np.ones(len(X)) if sw is None else np.asarray(sw, np.float64)
    if est.loss == "poisson":
        dev = Y * np.log(np.where(Y > 0, Y / p, 1.0)) - Y + p
        return float((w[:, None] * dev).sum(axis=0).sum() / w.sum())
    if est.loss == "squared_error":
        el = 0.5 * (p - Y) ** 2
    else:
        name = {"absolute_error": "mae", "huber": "huber", "quantile": "quantile"}[est.loss]
        param = {"huber": est.huber_delta, "quantile": est.quantile}.get(est.loss)
        el, _ = R.robust_loss(p - Y, name, param)
    return float((w[:, None] * el).sum() / w.sum() / Y.shape[1])


def _expected_score(est, X, y, sw):
    if isinstance(est, MLPClassifier):
        return accuracy_score(y, est.predict(X), sample_weight=sw)
    return r2_score(y, est.predict(X), sample_weight=sw)


ESTIMATORS = [
    pytest.param(lambda: MLPClassifier(hidden_layer_sizes=(6,)), "binary", id="clf-binary"),
    pytest.param(lambda: MLPClassifier(hidden_layer_sizes=(6,), solver="sgd"),
                 "multiclass", id="clf-multiclass-sgd"),
    pytest.param(lambda: MLPClassifier(hidden_layer_sizes=(6,)), "multilabel",
                 id="clf-multilabel"),
    pytest.param(lambda: MLPRegressor(hidden_layer_sizes=(6,)), 1, id="reg"),
    pytest.param(lambda: MLPRegressor(hidden_layer_sizes=(6,)), 2, id="reg-2out"),
    pytest.param(lambda: MLPRegressor(hidden_layer_sizes=(6,), loss="huber",
                                      huber_delta=0.5), 1, id="reg-huber"),
    pytest.param(lambda: MLPRegressor(hidden_layer_sizes=(6,), loss="quantile",
                                      quantile=0.8), 2, id="reg-quantile"),
    pytest.param(lambda: MLPRegressor(hidden_layer_sizes=(6,), loss="poisson"),
                 "poisson", id="reg-poisson"),
]


def _data_for(what, seed=0, n=200):
    if isinstance(what, str) and what != "poisson":
        return _clf_data(what, n=n, seed=seed)
    if what == "poisson":
        return _reg_data(n=n, seed=seed, positive=True)
    return _reg_data(n=n, n_out=what, seed=seed)


@pytest.mark.parametrize("weighted", [False, True], ids=["nosw", "sw"])
@pytest.mark.parametrize("make,what", ESTIMATORS)
def test_curves_are_the_loss_and_score_after_each_epoch(make, what, weighted):
    """validation_loss_curve_[k] and validation_scores_[k] are the loss and
    score on (X_val, y_val) of the weights after epoch k+1: each equals the
    last entry of a fit stopped after k+1 epochs, computed from its
    predictions by the definition."""
    X, y = _data_for(what)
    Xv, yv = _data_for(what, seed=1, n=60)
    swv = np.random.RandomState(3).uniform(0.2, 2.0, 60) if weighted else None
    full = None
    with warnings.catch_warnings():
        _quiet()
        for k in (1, 2, 3, 5):
            est = make().set_params(max_iter=k, random_state=0)
            est.fit(X, y, X_val=Xv, y_val=yv, sample_weight_val=swv)
            assert len(est.validation_loss_curve_) == len(est.validation_scores_) == k
            assert est.validation_loss_curve_[-1] == pytest.approx(
                _expected_loss(est, Xv, yv, swv), rel=1e-10, abs=1e-12)
            assert est.validation_scores_[-1] == pytest.approx(
                _expected_score(est, Xv, yv, swv), rel=1e-12, abs=1e-12)
            assert est.best_validation_score_ is None      # no early stopping
            if full is not None:
                assert est.validation_loss_curve_ == full.validation_loss_curve_[:k]
            else:
                full = make().set_params(max_iter=5, random_state=0).fit(
                    X, y, X_val=Xv, y_val=yv, sample_weight_val=swv)


@pytest.mark.parametrize("make,what", ESTIMATORS[:4])
def test_validation_data_does_not_change_training(make, what):
    """Without early stopping the validation data is only looked at: the
    same weights and loss_curve_ as a fit without it."""
    X, y = _data_for(what)
    Xv, yv = _data_for(what, seed=1, n=60)
    with warnings.catch_warnings():
        _quiet()
        a = make().set_params(max_iter=8, random_state=0).fit(X, y, X_val=Xv, y_val=yv)
        b = make().set_params(max_iter=8, random_state=0).fit(X, y)
    assert a.loss_curve_ == b.loss_curve_
    for u, v in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_array_equal(u, v)
    assert b.validation_scores_ is None and b.validation_loss_curve_ is None


@pytest.mark.parametrize("make,what", [ESTIMATORS[0], ESTIMATORS[3]])
def test_early_stopping_on_given_validation_data(make, what):
    """early_stopping=True with X_val: no split (all of X trains, so the
    epochs are those of a fit without early stopping), the stopping rule
    and the restored weights are scikit-learn's, on the given data."""
    X, y = _data_for(what)
    Xv, yv = _data_for(what, seed=1, n=60)
    kw = dict(random_state=0, learning_rate_init=0.02, n_iter_no_change=3, max_iter=300)
    with warnings.catch_warnings():
        _quiet()
        a = make().set_params(early_stopping=True, **kw).fit(X, y, X_val=Xv, y_val=yv)
        b = make().set_params(early_stopping=False, **kw).set_params(
            max_iter=a.n_iter_).fit(X, y, X_val=Xv, y_val=yv)
    assert a.n_iter_ < 300                       # it did stop early
    assert a.loss_curve_ == b.loss_curve_
    assert a.validation_scores_ == b.validation_scores_
    assert a.validation_loss_curve_ == b.validation_loss_curve_
    best = int(np.argmax(a.validation_scores_))
    assert a.best_validation_score_ == a.validation_scores_[best]
    # stopped n_iter_no_change + 1 epochs without an improvement of tol
    assert a.n_iter_ - 1 - best >= a.n_iter_no_change
    # the weights are the best epoch's: its score again
    assert _expected_score(a, Xv, yv, None) == pytest.approx(a.best_validation_score_,
                                                            abs=1e-12)


@pytest.mark.parametrize("cls,data", [(MLPClassifier, "clf"), (MLPRegressor, "reg")])
def test_early_stopping_split_matches_scikit_learn(cls, data):
    """early_stopping=True's own split: validation_scores_ are
    scikit-learn's to rounding, and validation_loss_curve_ has one entry per
    epoch."""
    X, y = _clf_data("multiclass") if data == "clf" else _reg_data()
    sk_cls = SkMLPClassifier if cls is MLPClassifier else SkMLPRegressor
    kw = dict(hidden_layer_sizes=(6,), early_stopping=True, max_iter=15, random_state=0)
    with warnings.catch_warnings():
        _quiet()
        a = cls(**kw).fit(X, y)
        b = sk_cls(**kw).fit(X, y)
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_allclose(a.validation_scores_, b.validation_scores_, rtol=1e-10)
    assert len(a.validation_loss_curve_) == a.n_iter_
    assert np.all(np.isfinite(a.validation_loss_curve_))


def test_class_weight_does_not_weigh_given_validation_data():
    """class_weight weighs the training samples (and early stopping's own
    split, cut from them); validation data given to fit is weighted by
    sample_weight_val alone."""
    X, y = _clf_data("binary")
    Xv, yv = _clf_data("binary", seed=1, n=60)
    swv = np.random.RandomState(2).uniform(0.5, 2.0, 60)
    with warnings.catch_warnings():
        _quiet()
        est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0,
                            class_weight={1: 5.0}).fit(X, y, X_val=Xv, y_val=yv,
                                                       sample_weight_val=swv)
    assert est.validation_scores_[-1] == pytest.approx(
        accuracy_score(yv, est.predict(Xv), sample_weight=swv), abs=1e-15)
    assert est.validation_loss_curve_[-1] == pytest.approx(
        log_loss(yv, est.predict_proba(Xv), sample_weight=swv), rel=1e-10)


def test_warm_start_appends():
    X, y = _reg_data()
    Xv, yv = _reg_data(n=50, seed=1)
    with warnings.catch_warnings():
        _quiet()
        est = MLPRegressor(hidden_layer_sizes=(4,), max_iter=3, warm_start=True,
                           random_state=0).fit(X, y)
        assert est.validation_loss_curve_ is None
        est.fit(X, y, X_val=Xv, y_val=yv)
        est.fit(X, y, X_val=Xv, y_val=yv)
    assert len(est.loss_curve_) == 9
    assert len(est.validation_loss_curve_) == len(est.validation_scores_) == 6


BAD = {
    "X_val-alone": (dict(X_val="Xv"), "X_val is given, but y_val is not"),
    "y_val-alone": (dict(y_val="yv"), "y_val is given, but X_val is not"),
    "weights-alone": (dict(sample_weight_val="w"), "sample_weight_val is given"),
    "lbfgs": (dict(X_val="Xv", y_val="yv", solver="lbfgs"), "need a stochastic solver"),
    "features": (dict(X_val="Xv3", y_val="yv"), "features"),
    "nan": (dict(X_val="Xvnan", y_val="yv"), "NaN"),
    "y-length": (dict(X_val="Xv", y_val="yv_short"), "y_val has"),
    "unseen-label": (dict(X_val="Xv", y_val="yv_unseen"), "not among the classes"),
    "weights-length": (dict(X_val="Xv", y_val="yv", sample_weight_val="w_short"),
                       "sample_weight"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_validation_data_refused_estimator_unchanged(case):
    X, y = _clf_data("binary")
    Xv, yv = _clf_data("binary", seed=1, n=40)
    Xvnan = Xv.copy()
    Xvnan[3, 1] = np.nan
    values = {"Xv": Xv, "yv": yv, "w": np.ones(40), "Xv3": Xv[:, :3], "Xvnan": Xvnan,
              "yv_short": yv[:-1], "yv_unseen": np.where(yv == 1, 7, 0),
              "w_short": np.ones(39)}
    kw, msg = BAD[case]
    kw = dict(kw)
    solver = kw.pop("solver", "adam")
    fit_kw = {k: values[v] for k, v in kw.items()}
    with warnings.catch_warnings():
        _quiet()
        est = MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, random_state=0,
                            solver=solver).fit(X, y)
    before = copy.deepcopy(est.__dict__)
    with pytest.raises(ValueError, match=msg):
        est.fit(X, y, **fit_kw)
    assert est.__dict__.keys() == before.keys()
    for u, v in zip(before["coefs_"], est.coefs_):
        np.testing.assert_array_equal(u, v)
    if solver != "lbfgs":
        assert est.loss_curve_ == before["loss_curve_"]


@pytest.mark.parametrize("weighted", [False, True])
def test_validation_data_tuple_is_x_val_y_val(weighted):
    """fit(validation_data=(X_val, y_val[, w])), Network.fit's form, gives
    the fit of X_val= / y_val= / sample_weight_val=, to the bit."""
    X, y = _clf_data("multiclass")
    Xv, yv = _clf_data("multiclass", seed=1, n=50)
    w = np.linspace(0.5, 2, 50) if weighted else None
    with warnings.catch_warnings():
        _quiet()
        a = MLPClassifier(hidden_layer_sizes=(5,), max_iter=4, random_state=0,
                          early_stopping=True, n_iter_no_change=2)
        a.fit(X, y, X_val=Xv, y_val=yv, sample_weight_val=w)
        b = MLPClassifier(hidden_layer_sizes=(5,), max_iter=4, random_state=0,
                          early_stopping=True, n_iter_no_change=2)
        b.fit(X, y, validation_data=(Xv, yv, w) if weighted else (Xv, yv))
    assert a.validation_loss_curve_ == b.validation_loss_curve_
    assert a.validation_scores_ == b.validation_scores_
    for u, v in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("bad, msg", [
    (dict(validation_data="Xy"), "validation_data must be a tuple"),
    (dict(validation_data=("X",)), "validation_data must be a tuple .* of length 1"),
    (dict(validation_data=("X", "y", None, None)), "of length 4"),
    (dict(validation_data=("X", "y"), X_val="X"), "validation data given twice"),
    (dict(validation_data=("X", "y"), sample_weight_val="w"), "given twice"),
])
def test_validation_data_tuple_refused_estimator_unchanged(bad, msg):
    X, y = _clf_data("binary")
    Xv, yv = _clf_data("binary", seed=1, n=40)
    sub = {"X": Xv, "y": yv, "w": np.ones(40), "Xy": Xv}
    kw = {k: (tuple(sub.get(x, x) for x in v) if isinstance(v, tuple) else sub[v])
          for k, v in bad.items()}
    with warnings.catch_warnings():
        _quiet()
        est = MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, random_state=0).fit(X, y)
    before = [c.copy() for c in est.coefs_]
    with pytest.raises(ValueError, match=msg):
        est.fit(X, y, **kw)
    for u, v in zip(before, est.coefs_):
        np.testing.assert_array_equal(u, v)


def test_saved_and_pickled(tmp_path):
    X, y = _clf_data("multiclass")
    Xv, yv = _clf_data("multiclass", seed=1, n=50)
    with warnings.catch_warnings():
        _quiet()
        est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=4, random_state=0).fit(
            X, y, X_val=Xv, y_val=yv)
    fastnn.save(est, tmp_path / "v.fnn")
    for other in (fastnn.load(tmp_path / "v.fnn"), pickle.loads(pickle.dumps(est))):
        assert other.validation_loss_curve_ == est.validation_loss_curve_
        assert other.validation_scores_ == est.validation_scores_
    with warnings.catch_warnings():
        _quiet()
        plain = MLPClassifier(hidden_layer_sizes=(5,), max_iter=2, random_state=0).fit(X, y)
    fastnn.save(plain, tmp_path / "p.fnn")
    assert fastnn.load(tmp_path / "p.fnn").validation_loss_curve_ is None


def test_from_sklearn_then_warm_start_records():
    X, y = _reg_data()
    Xv, yv = _reg_data(n=50, seed=1)
    with warnings.catch_warnings():
        _quiet()
        sk = SkMLPRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=0,
                            early_stopping=True).fit(X, y)
        est = MLPRegressor.from_sklearn(sk).set_params(warm_start=True)
        est.fit(X, y, X_val=Xv, y_val=yv)
    assert len(est.validation_loss_curve_) == est.n_iter_
    assert len(est.validation_scores_) == len(sk.validation_scores_) + est.n_iter_
