"""Pickling and deep copies of Network and the scikit-learn estimators, and
joblib.Parallel over Networks.

A copy must be exact: parameters bit for bit, the optimizer state (momentum
velocity, Adam's moments and step count), the training history, and the
layers' W / b views pointing into the copy's own parameter buffer; training
continued on the copy gives bit for bit what it gives on the original.  The
networks here are small enough that no step is split between two threads
(whose timing-driven back-off is not part of the state)."""
import copy
import pickle
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import Adam, Dense, Maxout, Network, SGD

DTYPES = [pytest.param(np.float64, id="float64"), pytest.param(np.float32, id="float32")]
OPTIMIZERS = {"sgd": lambda: SGD(0.05), "momentum": lambda: SGD(0.05, momentum=0.9),
              "nesterov": lambda: SGD(0.05, momentum=0.9, nesterov=True),
              "adam": lambda: Adam(0.01)}


def pickle_copy(obj):
    return pickle.loads(pickle.dumps(obj))


COPIES = {"pickle": pickle_copy, "deepcopy": copy.deepcopy,
          "pickle-protocol-2": lambda o: pickle.loads(pickle.dumps(o, protocol=2))}


def data(n=40, n_in=5, n_out=3, seed=0):
    rs = np.random.RandomState(seed)
    return rs.randn(n, n_in), np.eye(n_out)[rs.randint(0, n_out, n)]


def trained_net(dtype=np.float64, optimizer="adam", seed=3):
    net = Network([Maxout(3, pieces=2), Dense(4, "leaky_relu", alpha=0.2),
                   Dense(2, "elu", bias=False), Dense(3, "softmax")],
                  loss="softmax_ce", n_in=5, dtype=dtype, seed=seed)
    X, Y = data()
    net.fit(X, Y, epochs=3, batch_size=8, optimizer=OPTIMIZERS[optimizer](), seed=0)
    return net


def assert_same_network(a, b):
    assert type(b) is Network and repr(b) == repr(a)
    assert b.dtype == a.dtype and b.params.dtype == a.params.dtype
    assert (b.init, b.seed, b.backend, b.n_in) == (a.init, a.seed, a.backend, a.n_in)
    np.testing.assert_array_equal(b.params, a.params)
    assert not np.shares_memory(b.params, a.params)
    for la, lb in zip(a.layers, b.layers):
        assert lb is not la
        np.testing.assert_array_equal(lb.W, la.W)
        assert np.shares_memory(lb.W, b.params) and np.shares_memory(lb.dW, b.grads)
        if la.b is not None:
            np.testing.assert_array_equal(lb.b, la.b)
            assert np.shares_memory(lb.b, b.params)
        else:
            assert lb.b is None


def assert_same_opt_state(a, b):
    sa, sb = a._opt_state, b._opt_state
    if sa is None:
        assert sb is None
        return
    assert sb["kind"] == sa["kind"] and sb["t"] == sa["t"]
    for k in ("vel", "sq"):
        if sa[k] is None:
            assert sb[k] is None
        else:
            np.testing.assert_array_equal(sb[k], sa[k])
            assert not np.shares_memory(sb[k], sa[k])


# ---- Network ---------------------------------------------------------------------

@pytest.mark.parametrize("how", list(COPIES))
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_network_copy_is_exact(how, optimizer, dtype):
    net = trained_net(dtype, optimizer)
    other = COPIES[how](net)
    assert_same_network(net, other)
    assert_same_opt_state(net, other)
    if optimizer == "adam":
        assert other._opt_state["t"] > 0
    assert other.history.loss == net.history.loss
    assert other.history.lr == net.history.lr
    assert other.history.stop_reason == net.history.stop_reason
    X, Y = data(16, seed=4)
    np.testing.assert_array_equal(other.forward(X), net.forward(X))
    # training continues bit for bit as it would have on the original
    for n in (net, other):
        n.fit(X, Y, epochs=2, batch_size=4, optimizer=OPTIMIZERS[optimizer](), seed=5)
    np.testing.assert_array_equal(other.params, net.params)
    assert_same_opt_state(net, other)
    for n in (net, other):
        n.train_step(X, Y, 0.01)
    np.testing.assert_array_equal(other.params, net.params)


@pytest.mark.parametrize("how", list(COPIES))
def test_network_copy_is_independent(how):
    net = trained_net()
    other = COPIES[how](net)
    before = other.params.copy()
    vel = other._opt_state["vel"].copy()
    net.params[:] = 0
    net._opt_state["vel"][:] = 1
    net.layers[0].W[...] = 7
    np.testing.assert_array_equal(other.params, before)
    np.testing.assert_array_equal(other._opt_state["vel"], vel)
    other.layers[1].b[...] = 5          # the copy's views write its own buffer
    bo = other._layout[1][3]
    assert np.all(other.params[bo:bo + 4] == 5) and np.sum(other.params == 5) == 4
    assert not np.any(net.params == 5)


@pytest.mark.parametrize("how", list(COPIES))
def test_network_copy_variants(how):
    # not built yet: builds on first data like the original would
    fresh = Network([Dense(4, "tanh"), Dense(2)], seed=1)
    other = COPIES[how](fresh)
    assert not other.built and other.params is None
    X, Y = np.random.RandomState(0).randn(6, 3), np.zeros((6, 2))
    np.testing.assert_array_equal(other.forward(X), fresh.forward(X))
    # built, never trained: no optimizer state, no history
    net = Network([Dense(3, "sigmoid", bias=False), Dense(1, bias=False)], loss="sse",
                  n_in=4, init="normal", seed=7)
    other = COPIES[how](net)
    assert_same_network(net, other)
    assert other._opt_state is None and other.history is None
    # the NumPy backend
    ref = Network([Dense(4, "tanh"), Dense(2)], n_in=3, backend="reference", seed=2)
    ref.fit(X, Y, epochs=2, batch_size=3, seed=0)
    other = COPIES[how](ref)
    assert_same_network(ref, other)
    assert other._core is None and other.history.loss == ref.history.loss
    for n in (ref, other):
        n.fit(X, Y, epochs=1, batch_size=3, seed=1)
    np.testing.assert_array_equal(other.params, ref.params)


@pytest.mark.parametrize("how", list(COPIES))
def test_network_copy_keeps_seed_object_and_own_attributes(how):
    gen = np.random.default_rng(5)
    net = Network([Dense(3, "relu"), Dense(1)], seed=gen)
    net.note = {"run": 3}
    other = COPIES[how](net)
    assert other.note == {"run": 3} and other.note is not net.note
    assert isinstance(other.seed, np.random.Generator) and other.seed is not gen
    # the generator's state came along: both build the same initial weights
    net.build(2)
    other.build(2)
    np.testing.assert_array_equal(other.params, net.params)


def test_deepcopy_memo_shares_the_network_once():
    net = trained_net()
    a, b = copy.deepcopy([net, net])
    assert a is b and a is not net
    assert_same_network(net, a)


def test_copy_after_divergence_and_interrupted_history():
    net = Network([Dense(4, "relu"), Dense(1)], n_in=2, seed=0)
    X, y = np.random.RandomState(0).randn(8, 2), np.full((8, 1), 1e300)
    with pytest.warns(RuntimeWarning, match="diverged"):
        net.fit(X, y, epochs=3, lr=1e10, on_divergence="warn")
    other = pickle_copy(net)
    assert other.history.stop_reason == "diverged" == net.history.stop_reason
    assert other._opt_state is None           # dropped by fit after divergence
    np.testing.assert_array_equal(other.params, net.params)


# ---- estimators --------------------------------------------------------------------

def _quiet_fit(est, *a, **k):
    from sklearn.exceptions import ConvergenceWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(*a, **k)


def _estimators():
    pytest.importorskip("sklearn")
    from fastnn.sklearn import MLPClassifier, MLPRegressor
    rs = np.random.RandomState(0)
    X = rs.randn(60, 4)
    yc = np.array(["ant", "bee", "cat"])[rs.randint(0, 3, 60)]
    return X, {
        "clf-adam": (MLPClassifier((6,), max_iter=4, random_state=0), yc),
        "clf-sgd-f32": (MLPClassifier((5, 4), activation=["tanh", "maxout"],
                                      solver="sgd", max_iter=4, random_state=1,
                                      dtype=np.float32), yc),
        "clf-multilabel": (MLPClassifier((5,), max_iter=3, random_state=0),
                           (rs.rand(60, 3) > 0.5).astype(int)),
        "reg-adam": (MLPRegressor(hidden_layer_sizes=(6,), max_iter=4,
                                  random_state=0), rs.randn(60, 2)),
        "reg-sgd-f32": (MLPRegressor(hidden_layer_sizes=(6,), solver="sgd",
                                     learning_rate="invscaling", max_iter=4,
                                     random_state=0, dtype=np.float32),
                        rs.randn(60)),
        "reg-lbfgs": (MLPRegressor(hidden_layer_sizes=(5,), solver="lbfgs",
                                   max_iter=5, random_state=0), rs.randn(60)),
    }


def assert_same_estimator(a, b, X):
    assert type(b) is type(a) and b.get_params() == a.get_params()
    for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_array_equal(q, p)
        assert q.dtype == p.dtype and not np.shares_memory(p, q)
    for attr in ("n_iter_", "t_", "loss_", "n_layers_", "n_outputs_",
                 "out_activation_", "n_features_in_", "loss_curve_", "best_loss_",
                 "validation_scores_", "best_validation_score_"):
        assert getattr(b, attr, "absent") == getattr(a, attr, "absent"), attr
    np.testing.assert_array_equal(b.predict(X), a.predict(X))
    if hasattr(a, "classes_"):
        np.testing.assert_array_equal(b.classes_, a.classes_)
        assert b.classes_.dtype == a.classes_.dtype
        np.testing.assert_array_equal(b.predict_proba(X), a.predict_proba(X))


@pytest.mark.parametrize("how", list(COPIES))
def test_estimator_copy_is_exact(how):
    X, cases = _estimators()
    for name, (est, y) in cases.items():
        _quiet_fit(est, X, y)
        other = COPIES[how](est)
        assert_same_estimator(est, other, X)
        if est.solver == "lbfgs":
            continue
        opt_a, opt_b = est._optimizer, other._optimizer
        assert (opt_b.t, opt_b.learning_rate) == (opt_a.t, opt_a.learning_rate)
        # partial_fit continues bit for bit (optimizer state included)
        kw = {"classes": est.classes_} if hasattr(est, "classes_") else {}
        for _ in range(2):
            est.partial_fit(X, y, **kw)
            other.partial_fit(X, y, **kw)
        assert_same_estimator(est, other, X)


@pytest.mark.parametrize("how", list(COPIES))
def test_estimator_copy_early_stopping_continues(how):
    pytest.importorskip("sklearn")
    from fastnn.sklearn import MLPClassifier
    rs = np.random.RandomState(3)
    X = rs.randn(100, 4)
    y = (X[:, 0] + 0.8 * rs.randn(100) > 0).astype(int)
    est = MLPClassifier((5,), early_stopping=True, warm_start=True, max_iter=6,
                        n_iter_no_change=3, solver="sgd", learning_rate_init=0.05,
                        random_state=0)
    _quiet_fit(est, X, y)
    other = COPIES[how](est)
    assert other._no_improvement_count == est._no_improvement_count
    for e in (est, other):
        _quiet_fit(e, X, y)                 # warm start: early stopping's count
    assert_same_estimator(est, other, X)   # and best score carry on


@pytest.mark.parametrize("how", list(COPIES))
def test_estimator_copy_unfitted_and_own_attributes(how):
    pytest.importorskip("sklearn")
    from fastnn.sklearn import MLPRegressor
    est = MLPRegressor(hidden_layer_sizes=(3, 2), alpha=-1.0)   # invalid: kept as is
    est.tag = ["mine"]
    other = COPIES[how](est)
    assert other.get_params() == est.get_params() and not hasattr(other, "coefs_")
    assert other.tag == ["mine"]
    X = np.random.RandomState(0).randn(20, 3)
    est = _quiet_fit(MLPRegressor(hidden_layer_sizes=(3,), max_iter=2,
                                  random_state=0), X, X[:, 0])
    est.fitted_on = "X, first column"
    other = COPIES[how](est)
    assert_same_estimator(est, other, X)
    assert other.fitted_on == est.fitted_on


def test_estimator_pickled_by_the_previous_version_loads():
    """fastnn 0.1.0 pickled an estimator's __dict__ without its network (and
    rebuilt that from coefs_ on first use): such a pickle still loads."""
    pytest.importorskip("sklearn")
    from fastnn.sklearn import MLPClassifier
    rs = np.random.RandomState(0)
    X, y = rs.randn(40, 3), rs.randint(0, 3, 40)
    est = _quiet_fit(MLPClassifier((4,), max_iter=3, random_state=0), X, y)
    old = {k: v for k, v in est.__dict__.items() if k not in ("_net", "_views")}
    old["coefs_"] = [np.array(a) for a in old["coefs_"]]
    old["intercepts_"] = [np.array(a) for a in old["intercepts_"]]
    other = MLPClassifier.__new__(MLPClassifier)
    other.__setstate__(pickle_copy(old))
    assert_same_estimator(est, other, X)
    for e in (est, other):
        e.partial_fit(X, y)
    assert_same_estimator(est, other, X)


def test_pickle_and_save_describe_the_same_state(tmp_path):
    """Pickling and fastnn.save share one state export: what the file holds
    comes back identically both ways."""
    X, cases = _estimators()
    for name, (est, y) in cases.items():
        _quiet_fit(est, X, y)
        fastnn.save(est, tmp_path / "m.fnn")
        a, b = fastnn.load(tmp_path / "m.fnn"), pickle_copy(est)
        assert_same_estimator(a, b, X)
    net = trained_net()
    fastnn.save(net, tmp_path / "n.fnn")
    a, b = fastnn.load(tmp_path / "n.fnn"), pickle_copy(net)
    assert_same_network(a, b)
    assert_same_opt_state(a, b)


# ---- joblib -----------------------------------------------------------------------

def _train(net, X, Y, seed):
    net.fit(X, Y, epochs=5, batch_size=8, optimizer="momentum", seed=seed)
    return net


def test_joblib_parallel_over_networks():
    joblib = pytest.importorskip("joblib", reason="joblib (scikit-learn's "
                                 "dependency) is not installed")
    X, Y = data()
    nets = [Network([Dense(6, "tanh"), Dense(3, "softmax")], loss="softmax_ce",
                    n_in=5, seed=s) for s in range(4)]
    out = joblib.Parallel(n_jobs=2, backend="loky")(
        joblib.delayed(_train)(net, X, Y, s) for s, net in enumerate(nets))
    for s, (net, got) in enumerate(zip(nets, out)):
        assert got is not net and got.history is not None and len(got.history) == 5
        assert got._opt_state["kind"] == "momentum"
        want = _train(copy.deepcopy(net), X, Y, s)      # the same, in this process
        np.testing.assert_array_equal(got.params, want.params)
        assert got.history.loss == want.history.loss
        assert not np.array_equal(got.params, net.params)   # trained over there
