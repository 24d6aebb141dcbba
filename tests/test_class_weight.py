"""class_weight: MLPClassifier(class_weight=...) and Network.fit(class_weight=...)
are fits with sample weights multiplied by the class weights, with
scikit-learn's semantics (LogisticRegression's for one output,
compute_sample_weight's product rule for multilabel targets)."""
import copy
import pickle
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import Dense, Network
from fastnn._weights import class_sample_weight

sklearn = pytest.importorskip("sklearn", reason="the class_weight tests compare "
                              "with scikit-learn")
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.preprocessing import LabelBinarizer  # noqa: E402
from sklearn.utils.class_weight import (compute_class_weight,  # noqa: E402
                                        compute_sample_weight)
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastnn.sklearn import MLPClassifier  # noqa: E402



def _quiet():
    warnings.simplefilter("ignore", ConvergenceWarning)


def _data(kind, n=120, seed=0, labels=None):
    """(X, y) with imbalanced classes: binary, multiclass or multilabel."""
    rs = np.random.RandomState(seed)
    X = rs.randn(n, 4)
    if kind == "binary":
        y = (X[:, 0] + 0.5 * rs.randn(n) > 1.0).astype(int)
    elif kind == "multiclass":
        y = np.digitize(X[:, 0] + 0.3 * rs.randn(n), [-0.3, 1.2])
    else:
        y = np.stack([X[:, 0] > 0.8, X[:, 1] > -0.5, X[:, 2] + X[:, 3] > 1.5],
                     axis=1).astype(int)
    if labels is not None:
        y = np.asarray(labels)[y]
    return X, y


def _expanded(cw, y, sw=None):
    """The per-sample weights scikit-learn's own tools give: LogisticRegression's
    compute_class_weight (sample weights counted for 'balanced') for one
    output; compute_sample_weight's product over outputs for multilabel."""
    y = np.asarray(y)
    if y.ndim == 2:
        if cw == "balanced" and sw is not None:
            w = np.ones(len(y))
            for k in range(y.shape[1]):
                cls = np.unique(y[:, k])
                wk = compute_class_weight("balanced", classes=cls, y=y[:, k],
                                          sample_weight=sw)
                w *= wk[np.searchsorted(cls, y[:, k])]
        else:
            w = compute_sample_weight(cw, y)
    else:
        cls = np.unique(y)
        wk = compute_class_weight(cw, classes=cls, y=y, sample_weight=sw)
        w = wk[np.searchsorted(cls, y)]
    return w if sw is None else w * sw


# ---- the expansion itself ----------------------------------------------------------

def _binarize(y):
    lb = LabelBinarizer().fit(y)
    Y = lb.transform(y)
    kind = {"binary": "binary", "multiclass": "multiclass",
            "multilabel-indicator": "multilabel"}[lb.y_type_]
    return Y, kind, (None if kind == "multilabel" else lb.classes_)


CASES = [("binary", "balanced"), ("binary", {0: 1.0, 1: 7.5}), ("binary", {1: 3.0}),
         ("multiclass", "balanced"), ("multiclass", {0: 0.5, 2: 4.0}),
         ("multilabel", "balanced"),
         ("multilabel", [{0: 1.0, 1: 2.0}, {1: 0.5}, {0: 3.0, 1: 1.0}])]
CASE_IDS = [f"{k}-{i}" for i, (k, _) in enumerate(CASES)]


@pytest.mark.parametrize("weighted", [False, True], ids=["nosw", "sw"])
@pytest.mark.parametrize("kind,cw", CASES, ids=CASE_IDS)
def test_expansion_matches_scikit_learn(kind, cw, weighted):
    X, y = _data(kind)
    sw = np.random.RandomState(1).uniform(0.2, 3.0, len(y)) if weighted else None
    Y, k, classes = _binarize(y)
    got = class_sample_weight(cw, Y, k, classes, sw)
    np.testing.assert_allclose(got, _expanded(cw, y, sw), rtol=1e-14)


def test_expansion_with_string_labels():
    X, y = _data("multiclass", labels=["cat", "dog", "eel"])
    Y, k, classes = _binarize(y)
    got = class_sample_weight({"eel": 5.0, "cat": 0.5}, Y, k, classes)
    np.testing.assert_array_equal(got, np.select([y == "eel", y == "cat"], [5.0, 0.5], 1.0))


@pytest.mark.parametrize("kind,cw", [c for c in CASES if c[0] != "multilabel"],
                         ids=[i for i, c in zip(CASE_IDS, CASES) if c[0] != "multilabel"])
def test_expansion_is_logistic_regressions(kind, cw):
    """LogisticRegression(class_weight=cw).fit(X, y, sw) is the fit with
    sample weights sw times our expansion: the same semantics, including
    'balanced' counting the sample weights."""
    X, y = _data(kind)
    sw = np.random.RandomState(2).uniform(0.2, 3.0, len(y))
    Y, k, classes = _binarize(y)
    w = class_sample_weight(cw, Y, k, classes, sw)
    a = LogisticRegression(class_weight=cw, tol=1e-10, max_iter=1000).fit(X, y, sw)
    b = LogisticRegression(tol=1e-10, max_iter=1000).fit(X, y, w)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-6, atol=1e-8)


# ---- MLPClassifier ------------------------------------------------------------------

def _assert_same_fit(a, b):
    assert a.n_iter_ == b.n_iter_
    assert a.loss_ == b.loss_
    for u, v in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_array_equal(u, v)
    for name in ("loss_curve_", "validation_scores_"):
        assert getattr(a, name, None) == getattr(b, name, None), name


@pytest.mark.parametrize("solver,early", [("adam", False), ("sgd", False),
                                          ("lbfgs", False), ("adam", True)])
@pytest.mark.parametrize("weighted", [False, True], ids=["nosw", "sw"])
@pytest.mark.parametrize("kind,cw", CASES, ids=CASE_IDS)
def test_estimator_equals_explicit_sample_weights(kind, cw, weighted, solver, early):
    """MLPClassifier(class_weight=cw).fit(X, y, sw) is, bit for bit, the fit
    with sample_weight = sw * the class weights (early stopping's
    validation score weighted the same way)."""
    X, y = _data(kind)
    sw = np.random.RandomState(1).uniform(0.2, 3.0, len(y)) if weighted else None
    kw = dict(hidden_layer_sizes=(6,), max_iter=12, random_state=0, solver=solver,
              early_stopping=early, batch_size=32)
    with warnings.catch_warnings():
        _quiet()
        a = MLPClassifier(class_weight=cw, **kw).fit(X, y, sample_weight=sw)
        b = MLPClassifier(**kw).fit(X, y, sample_weight=_expanded(cw, y, sw))
    _assert_same_fit(a, b)


@parametrize_with_checks([MLPClassifier(class_weight="balanced", max_iter=100),
                          MLPClassifier(class_weight="balanced", solver="lbfgs",
                                        max_iter=100)])
def test_estimator_checks(estimator, check):
    """scikit-learn's estimator checks (its class_weight checks among them)
    with class_weight set."""
    with warnings.catch_warnings():
        _quiet()
        check(estimator)


def test_balanced_weights_help_the_minority_class():
    """What class weights are for: on imbalanced data 'balanced' raises the
    minority class's recall."""
    rs = np.random.RandomState(0)
    X = rs.randn(2000, 2)
    y = (X[:, 0] + X[:, 1] + 0.8 * rs.randn(2000) > 2.2).astype(int)
    assert y.mean() < 0.1
    kw = dict(hidden_layer_sizes=(8,), max_iter=100, random_state=0)
    with warnings.catch_warnings():
        _quiet()
        plain = MLPClassifier(**kw).fit(X, y)
        bal = MLPClassifier(class_weight="balanced", **kw).fit(X, y)
    recall = [float(np.mean(m.predict(X)[y == 1] == 1)) for m in (plain, bal)]
    assert recall[1] > recall[0] + 0.2, recall


def test_partial_fit():
    """A dict works in partial_fit (the same step as explicit weights);
    with 'balanced' there is no partial_fit (as with lbfgs), saying why."""
    X, y = _data("multiclass")
    cw = {0: 2.0, 2: 0.25}
    a = MLPClassifier(hidden_layer_sizes=(5,), random_state=0, class_weight=cw)
    b = MLPClassifier(hidden_layer_sizes=(5,), random_state=0)
    for _ in range(3):
        a.partial_fit(X, y, classes=[0, 1, 2])
        b.partial_fit(X, y, classes=[0, 1, 2], sample_weight=_expanded(cw, y))
    _assert_same_fit(a, b)
    a.set_params(class_weight="balanced")
    assert not hasattr(a, "partial_fit")
    with pytest.raises(AttributeError, match="has no attribute 'partial_fit'") as e:
        a.partial_fit(X, y)
    assert "not available with class_weight='balanced'" in str(e.value.__cause__)


def test_partial_fit_dict_may_name_classes_absent_from_the_batch():
    X, y = _data("binary")
    est = MLPClassifier(hidden_layer_sizes=(3,), class_weight={0: 1.0, 1: 4.0, 2: 9.0})
    est.partial_fit(X, y, classes=[0, 1, 2])
    assert list(est.classes_) == [0, 1, 2]


@pytest.mark.parametrize("kind,cw,msg", [
    ("binary", {5: 2.0}, "names labels that are not classes"),
    ("binary", {0: -1.0}, r"class_weight\[0\] must be a finite real number >= 0"),
    ("binary", {0: np.nan}, r"class_weight\[0\] must be a finite real number >= 0"),
    ("binary", {0: np.inf}, r"class_weight\[0\] must be a finite real number >= 0"),
    ("binary", {0: True}, r"class_weight\[0\] must be a finite real number >= 0"),
    ("binary", {0: "2"}, r"class_weight\[0\] must be a finite real number >= 0"),
    ("binary", {0: 0.0, 1: 0.0}, "gives every sample weight 0"),
    ("binary", [{0: 1.0}], "must be None, 'balanced' or a dict"),
    ("multiclass", {"a": 1.0}, "names labels that are not classes"),
    ("multilabel", {0: 1.0, 1: 2.0}, "for multilabel targets"),
    ("multilabel", [{0: 1.0}], "need one dict per output, got 1"),
    ("multilabel", [{0: 1.0}, {1: 2.0}, {2: 1.0}], "names labels that are not"),
    ("multilabel", [{0: 1.0}, {1: 2.0}, 3.0], r"class_weight\[2\] must be a dict"),
])
def test_bad_class_weight_refused_estimator_unchanged(kind, cw, msg):
    """A bad class_weight is refused before anything trains; a fitted
    estimator keeps its classes, weights and feature names."""
    X, y = _data(kind)
    with pytest.raises(ValueError, match=msg):
        MLPClassifier(class_weight=cw).fit(X, y)
    with warnings.catch_warnings():
        _quiet()
        est = MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, random_state=0).fit(
            X[:, :3], np.zeros(len(y), int) + (np.arange(len(y)) % 2))
    state = {k: copy.copy(v) for k, v in est.__dict__.items()}
    coefs = [c.copy() for c in est.coefs_]
    est.set_params(class_weight=cw)
    with pytest.raises(ValueError, match=msg):
        est.fit(X, y)
    assert est.n_features_in_ == 3
    np.testing.assert_array_equal(est.classes_, state["classes_"])
    for u, v in zip(coefs, est.coefs_):
        np.testing.assert_array_equal(u, v)
    assert est.predict(X[:, :3]).shape == (len(y),)


def test_bad_class_weight_type_refused():
    X, y = _data("binary")
    with pytest.raises(ValueError, match="'class_weight' parameter of MLPClassifier"):
        MLPClassifier(class_weight="auto").fit(X, y)
    with pytest.raises(ValueError, match="'class_weight' parameter of MLPClassifier"):
        MLPClassifier(class_weight=3.0).fit(X, y)


def test_default_is_scikit_learns():
    assert MLPClassifier().class_weight is None


def test_to_sklearn_refuses_class_weight():
    with pytest.raises(ValueError, match="class_weight='balanced' is a fastnn-only"):
        MLPClassifier(class_weight="balanced").to_sklearn()
    from sklearn.neural_network import MLPClassifier as SkMLPClassifier
    assert isinstance(MLPClassifier().to_sklearn(), SkMLPClassifier)


@pytest.mark.parametrize("cw,labels,kind", [
    ("balanced", None, "binary"),
    ({"no": 1.0, "yes": 3.5}, ["no", "yes"], "binary"),
    ({0: 0.5, 2: 2.0}, None, "multiclass"),
    ({2.0: 2.0}, [1.0, 2.0, 3.0], "multiclass"),
    ([{0: 1.0, 1: 2.0}, {1: 0.5}, {0: 3.0}], None, "multilabel"),
])
def test_save_load_and_pickle(tmp_path, cw, labels, kind):
    """class_weight survives fastnn.save / load and pickling (label types
    kept), and training continues the same."""
    X, y = _data(kind, labels=labels)

    def more(m):                      # partial_fit refuses 'balanced'
        return m.fit(X, y) if cw == "balanced" else m.partial_fit(X, y)
    with warnings.catch_warnings():
        _quiet()
        est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, random_state=0,
                            warm_start=True, class_weight=cw).fit(X, y)
        fastnn.save(est, tmp_path / "c.fnn")
        for other in (fastnn.load(tmp_path / "c.fnn"), pickle.loads(pickle.dumps(est))):
            assert other.class_weight == cw
            if isinstance(cw, dict):
                assert [type(k) for k in other.class_weight] == [type(k) for k in cw]
            mine = copy.deepcopy(est)
            more(other)
            more(mine)
            np.testing.assert_array_equal(other.predict_proba(X), mine.predict_proba(X))


@pytest.mark.parametrize("bad", [{"dict": [[0, -1.0]]}, {"dict": [[0, "x"]]},
                                 {"dict": [[0, 1.0], [0, 2.0]]}, {"dict": 3},
                                 {"pairs": []}, "auto", 4])
def test_model_file_class_weight_checked(tmp_path, bad):
    import hashlib
    import json
    import zipfile
    X, y = _data("binary")
    with warnings.catch_warnings():
        _quiet()
        est = MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, random_state=0,
                            class_weight={1: 2.0}).fit(X, y)
    fastnn.save(est, tmp_path / "c.fnn")
    with zipfile.ZipFile(tmp_path / "c.fnn") as z:
        mem = {n: z.read(n) for n in z.namelist()}
    h = json.loads(mem["header.json"])
    assert h["estimator"]["params"]["class_weight"] == {"dict": [[1, 2.0]]}
    h["estimator"]["params"]["class_weight"] = bad
    mem["header.json"] = json.dumps(h).encode()
    mem["header.sha256"] = hashlib.sha256(mem["header.json"]).hexdigest().encode()
    with zipfile.ZipFile(tmp_path / "bad.fnn", "w") as z:
        for n, b in mem.items():
            z.writestr(n, b)
    with pytest.raises(fastnn.FormatError):
        fastnn.load(tmp_path / "bad.fnn")


# ---- Network.fit -----------------------------------------------------------------------

def _net(loss, n_out):
    out = {"softmax_ce": "softmax", "bce": "sigmoid"}.get(loss, "identity")
    return Network([Dense(5, "tanh"), Dense(n_out, out)], loss=loss, n_in=4, seed=1)


@pytest.mark.parametrize("loss,kind,cw", [
    ("softmax_ce", "multiclass", "balanced"), ("softmax_ce", "multiclass", {2: 3.0}),
    ("bce", "binary", "balanced"), ("bce", "binary", {0: 0.2, 1: 2.0}),
    ("bce", "multilabel", "balanced"),
    ("bce", "multilabel", [{1: 2.0}, {0: 0.5}, {0: 1.0, 1: 1.5}])])
@pytest.mark.parametrize("weighted", [False, True], ids=["nosw", "sw"])
def test_network_fit_equals_explicit_sample_weights(loss, kind, cw, weighted):
    X, y = _data(kind)
    if kind == "multiclass":
        Y = np.eye(3)[y]
    else:
        Y = y.reshape(len(y), -1).astype(float)
    sw = np.random.RandomState(1).uniform(0.2, 3.0, len(y)) if weighted else None
    a, b = _net(loss, Y.shape[1]), _net(loss, Y.shape[1])
    ha = a.fit(X, y if kind == "multiclass" else Y, epochs=4, batch_size=16,
               optimizer="adam", lr=0.01, seed=0, class_weight=cw, sample_weight=sw)
    hb = b.fit(X, Y, epochs=4, batch_size=16, optimizer="adam", lr=0.01, seed=0,
               sample_weight=_expanded(cw, y, sw))
    np.testing.assert_array_equal(a.params, b.params)
    assert ha.loss == hb.loss


@pytest.mark.parametrize("kw,msg", [
    (dict(loss="mse", Y=np.zeros((10, 1))), "needs a classification loss"),
    (dict(loss="softmax_ce", Y=np.full((10, 3), 1 / 3)), "needs hard targets"),
    (dict(loss="bce", Y=np.full((10, 1), 0.5)), "needs hard targets"),
    (dict(loss="softmax_ce", Y=np.eye(3)[np.arange(10) % 3], cw={3: 1.0}),
     "names labels that are not classes"),
    (dict(loss="bce", Y=np.eye(2)[np.arange(10) % 2], cw={0: 1.0}),
     "for multilabel targets"),
])
def test_network_fit_bad_class_weight(kw, msg):
    net = _net(kw["loss"], kw["Y"].shape[1])
    p = net.params.copy()
    with pytest.raises(ValueError, match=msg):
        net.fit(np.zeros((10, 4)), kw["Y"], class_weight=kw.get("cw", "balanced"))
    np.testing.assert_array_equal(net.params, p)


def test_network_reference_backend_takes_class_weight():
    X, y = _data("multiclass")
    a = Network([Dense(3, "softmax")], loss="softmax_ce", n_in=4, seed=0)
    b = Network([Dense(3, "softmax")], loss="softmax_ce", n_in=4, seed=0,
                backend="reference")
    for net in (a, b):
        net.fit(X, y, epochs=3, batch_size=20, seed=0, class_weight="balanced")
    np.testing.assert_allclose(a.params, b.params, rtol=1e-12, atol=1e-14)
