"""scikit-learn model selection over fastnn's drop-in estimators on a Dask
cluster: GridSearchCV, RandomizedSearchCV and cross_validate under
joblib.parallel_backend("dask") with a LocalCluster of two worker processes
started here, against the same search on joblib's default backend.

The scores agree to rounding, not to the bit: Dask's workers run their BLAS
with one thread, so fastnn's fit there runs each minibatch on one thread
while this process may split big ones over two (set_train_threads: the
results differ by rounding only).  Needs dask[distributed]; skipped
otherwise.
"""
import warnings

import numpy as np
import pytest

pytest.importorskip("dask", reason="the Dask tests need dask[distributed] "
                                   "(pip install 'dask[distributed]', or fastnn[dask])")
distributed = pytest.importorskip("distributed", reason="the Dask tests need "
                                  "dask[distributed] (pip install 'dask[distributed]')")
joblib = pytest.importorskip("joblib", reason="the Dask tests need joblib")

from scipy.stats import loguniform  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import (GridSearchCV, RandomizedSearchCV,  # noqa: E402
                                     cross_validate)

from fastnn.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                       processes=True, dashboard_address=None,
                                       silence_logs=40)
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def _classification():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((90, 5))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 0.8)
    return X, y


def _regression():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((90, 4))
    y = np.sin(X[:, 0]) + 0.3 * X[:, 1] + 0.05 * rng.standard_normal(90)
    return X, y


def _both(client, make, fit):
    """fit(make()) on the default backend and on Dask; also the number of
    tasks the Dask workers ran."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        local = fit(make())
        with distributed.get_task_stream(client) as ts:
            with joblib.parallel_backend("dask"):
                remote = fit(make())
    return local, remote, len(ts.data)


def _same_scores(a, b, keys):
    for k in keys:
        np.testing.assert_allclose(np.asarray(a[k], dtype=float),
                                   np.asarray(b[k], dtype=float),
                                   rtol=1e-9, atol=1e-12, err_msg=k)


def test_grid_search_classifier(client):
    X, y = _classification()
    grid = {"alpha": [1e-4, 1e-1], "learning_rate_init": [1e-3, 1e-2]}

    def make():
        return GridSearchCV(MLPClassifier((6,), max_iter=25, random_state=0), grid,
                            cv=3)

    local, remote, tasks = _both(client, make, lambda s: s.fit(X, y))
    assert tasks >= 2                        # the fits ran on the workers
    _same_scores(local.cv_results_, remote.cv_results_,
                 [f"split{i}_test_score" for i in range(3)] + ["mean_test_score"])
    assert local.best_params_ == remote.best_params_
    np.testing.assert_allclose(local.predict_proba(X), remote.predict_proba(X),
                               rtol=1e-9, atol=1e-12)


def test_randomized_search_regressor(client):
    X, y = _regression()
    dists = {"alpha": loguniform(1e-5, 1e-1), "hidden_layer_sizes": [(4,), (8,)]}

    def make():
        return RandomizedSearchCV(MLPRegressor(max_iter=30, random_state=1), dists,
                                  n_iter=4, cv=3, random_state=0)

    local, remote, tasks = _both(client, make, lambda s: s.fit(X, y))
    assert tasks >= 2
    assert [str(p) for p in local.cv_results_["params"]] == \
        [str(p) for p in remote.cv_results_["params"]]
    _same_scores(local.cv_results_, remote.cv_results_,
                 [f"split{i}_test_score" for i in range(3)] + ["mean_test_score"])
    np.testing.assert_allclose(local.predict(X), remote.predict(X), rtol=1e-9,
                               atol=1e-12)


@pytest.mark.parametrize("est", [
    pytest.param(lambda: MLPRegressor(hidden_layer_sizes=(5,), max_iter=20, random_state=2), id="regressor"),
    pytest.param(lambda: MLPClassifier((5,), max_iter=20, random_state=2,
                                       solver="sgd", learning_rate_init=0.1),
                 id="classifier")])
def test_cross_validate(client, est):
    X, y = _regression() if "Regressor" in type(est()).__name__ else _classification()
    scoring = (["r2", "neg_mean_squared_error"] if "Regressor" in type(est()).__name__
               else ["accuracy", "neg_log_loss"])

    local, remote, tasks = _both(
        client, est, lambda e: cross_validate(e, X, y, cv=3, scoring=scoring,
                                              return_estimator=True))
    assert tasks >= 2
    _same_scores(local, remote, [f"test_{s}" for s in scoring])
    for a, b in zip(local["estimator"], remote["estimator"]):
        assert a.n_iter_ == b.n_iter_
        np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-9)
