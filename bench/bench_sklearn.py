"""fastnn.sklearn against scikit-learn's MLP, side by side in one
run, on scikit-learn's defaults (hidden (100,), relu, adam, batch 200,
alpha 1e-4, max_iter 200, tol 1e-4, float64):

- digits: MLPClassifier on the 8x8 digits (1,347 train / 450 test rows,
  pixels / 16);
- regression: MLPRegressor on make_regression, 20,000 x 50 for training
  (5,000 more rows held out), X and y standardized.

Timed: fit from scratch (random_state=0), through convergence by
scikit-learn's tol / n_iter_no_change rule.  Because fastnn.sklearn
reproduces scikit-learn's run (same initial weights, batch order and
updates), both stop at the same epoch and the ratio compares equal work.
Before timing, each case checks that claim: after 10 epochs both give the
same coefs_ (1e-8 relative), and the full fits end with the same n_iter_.
Target: fit >= 4x faster, with the same accuracy / R^2.

Both sides get the machine's two cores: scikit-learn through numpy's
OpenBLAS (2 threads; it threads none of these GEMMs, all below ~2^20
multiply-adds), fastnn through its split step (half of each minibatch on
its helper thread, see README "Training").  fastnn.set_train_threads(1)
before the run gives fastnn's one-thread numbers (2.6x / 3.8x).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest bench/bench_sklearn.py --benchmark-only
"""
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn import neural_network as sk  # noqa: E402
from sklearn.datasets import load_digits, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from fastnn import sklearn as fk  # noqa: E402

ROUNDS = {"digits": 5, "regression": 3}
_cache = {}


def dataset(name):
    if name not in _cache:
        if name == "digits":
            X, y = load_digits(return_X_y=True)
            Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=450,
                                                  random_state=0)
        else:
            X, y = make_regression(25_000, 50, n_informative=30, noise=5.0,
                                   random_state=0)
            Xtr, Xte, ytr, yte = train_test_split(X, y, train_size=20_000,
                                                  random_state=0)
            sx = StandardScaler().fit(Xtr)
            m, s = ytr.mean(), ytr.std()
            Xtr, Xte = sx.transform(Xtr), sx.transform(Xte)
            ytr, yte = (ytr - m) / s, (yte - m) / s
        _cache[name] = (Xtr, Xte, ytr, yte)
    return _cache[name]


def estimator(mod, name, **kw):
    cls = "MLPClassifier" if name == "digits" else "MLPRegressor"
    return getattr(mod, cls)(random_state=0, **kw)


def fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


def check_same_run(name):
    """fastnn.sklearn follows scikit-learn's run: 10 epochs agree to 1e-8."""
    Xtr, _, ytr, _ = dataset(name)
    a = fit(estimator(sk, name, max_iter=10), Xtr, ytr)
    b = fit(estimator(fk, name, max_iter=10), Xtr, ytr)
    for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        assert np.abs(p - q).max() <= 1e-8 * np.abs(p).max()
    np.testing.assert_allclose(b.loss_curve_, a.loss_curve_, rtol=1e-10)


@pytest.mark.parametrize("impl", ["fastnn", "sklearn"])
@pytest.mark.parametrize("name", ["digits", "regression"])
def test_fit_defaults(benchmark, report, name, impl):
    Xtr, Xte, ytr, yte = dataset(name)
    n, d = Xtr.shape
    benchmark.group = (f"sklearn defaults, {name} {n}x{d}: hidden (100,), relu, "
                       "adam, batch 200, fit to convergence")
    if impl == "fastnn":
        check_same_run(name)
    mod = fk if impl == "fastnn" else sk
    box = {}

    def run():
        box["est"] = fit(estimator(mod, name), Xtr, ytr)
    benchmark.pedantic(run, rounds=ROUNDS[name], warmup_rounds=0)
    est = box["est"]
    score = est.score(Xte, yte)
    metric = "accuracy" if name == "digits" else "R^2"
    benchmark.extra_info.update({"n_iter": est.n_iter_, metric: score})
    steps = est.n_iter_ * -(-n // 200)
    report.add(f"sklearn/{name}/{impl}", benchmark, per=1, unit="fit",
               extra=f"{est.n_iter_} epochs ({steps} steps), test {metric} "
                     f"{score:.4f}")
    _cache[(name, impl)] = est
    if impl == "sklearn":
        ours = _cache.get((name, "fastnn"))
        if ours is not None:
            assert ours.n_iter_ == est.n_iter_, "both runs stop at the same epoch"
            report.note(f"{name}: test {metric} fastnn "
                        f"{ours.score(Xte, yte):.4f} vs scikit-learn {score:.4f}, "
                        f"both after {est.n_iter_} epochs")
        report.speedup(f"{name}, fastnn.sklearn vs scikit-learn fit "
                       "(defaults)", f"sklearn/{name}/fastnn",
                       f"sklearn/{name}/sklearn", 4)
