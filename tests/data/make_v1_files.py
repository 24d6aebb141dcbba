"""Writes the format-version-1 model files in this directory and what each
must load as (tests/test_io.py, test_v1_files_*).

The files were written by fastnn 0.1.0 at commit 5a201ae, before Network
and the estimators exported their own state (fastnn.io then read and wrote
their private attributes itself), so they pin down what that writer
produced.  The script reads those private attributes directly, not through
fastnn.io, to record the expected state.  It is kept to show how the files
were made; rerunning it with a later fastnn would overwrite the very files
that test the older writer.  With that commit's build on the path:

    PYTHONPATH=<that checkout> python tests/data/make_v1_files.py

For each model NAME it writes NAME.fnn (fastnn.save) and NAME.expected.npz:
the parameters, the training state, the predictions on a probe set, and the
parameters after training is continued as CONTINUE below describes.
"""
import os
import warnings

import numpy as np

import fastnn
from fastnn import Dense, Maxout, Network
from fastnn.sklearn import MLPClassifier, MLPRegressor

HERE = os.path.dirname(os.path.abspath(__file__))


def _quiet(fn, *a, **k):
    from sklearn.exceptions import ConvergenceWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fn(*a, **k)


def _flat(arrays):
    return np.concatenate([np.asarray(a).ravel() for a in arrays])


# ---- Networks -------------------------------------------------------------------

def network(dtype, optimizer):
    rs = np.random.RandomState(11)
    X = rs.randn(40, 5)
    Y = np.eye(3)[rs.randint(0, 3, 40)]
    net = Network([Maxout(3, pieces=2), Dense(4, "leaky_relu", alpha=0.2),
                   Dense(2, "elu", bias=False), Dense(3, "softmax")],
                  loss="softmax_ce", n_in=5, dtype=dtype, seed=3)
    net.fit(X, Y, epochs=3, batch_size=8, optimizer=optimizer, seed=0)
    Xc = rs.randn(16, 5)
    Yc = np.eye(3)[rs.randint(0, 3, 16)]
    probe = rs.randn(9, 5)
    st = net._opt_state
    exp = {"params": net.params.copy(), "opt_t": np.int64(st["t"]),
           "opt_vel": st["vel"].copy(), "probe": probe,
           "predict": net.forward(probe), "Xc": Xc, "Yc": Yc}
    if st["sq"] is not None:
        exp["opt_sq"] = st["sq"].copy()
    return net, exp


def network_continue(net, exp, optimizer):
    """CONTINUE for a Network: two more epochs with the same optimizer."""
    net.fit(exp["Xc"], exp["Yc"], epochs=2, batch_size=4, optimizer=optimizer,
            seed=5)
    return {"continued_params": net.params.copy()}


# ---- estimators -----------------------------------------------------------------

def _estimator_state(est):
    exp = {"coefs": _flat(est.coefs_), "intercepts": _flat(est.intercepts_),
           "n_iter_": np.int64(est.n_iter_), "t_": np.int64(est.t_),
           "loss_": np.float64(est.loss_),
           "loss_curve_": np.asarray(est.loss_curve_, np.float64),
           "no_improvement_count": np.int64(est._no_improvement_count),
           "best_coefs": _flat(est._best_coefs + est._best_intercepts),
           "opt_t": np.int64(est._optimizer.t),
           "opt_learning_rate": np.float64(est._optimizer.learning_rate)}
    for k in ("vel", "sq"):
        if getattr(est._optimizer, k) is not None:
            exp["opt_" + k] = getattr(est._optimizer, k).copy()
    if est.best_loss_ is not None:
        exp["best_loss_"] = np.float64(est.best_loss_)
    if est.validation_scores_ is not None:
        exp["validation_scores_"] = np.asarray(est.validation_scores_, np.float64)
        exp["best_validation_score_"] = np.float64(est.best_validation_score_)
    return exp


def classifier(dtype):
    """Early stopping, stopped by max_iter mid-run, with validation rounds
    that did not improve counted (no_improvement_count > 0)."""
    rs = np.random.RandomState(21)
    X = rs.randn(120, 4).astype(dtype)
    labels = np.array(["ant", "bee", "cat"])
    y = labels[(X[:, 0] + 0.8 * rs.randn(120) > 0).astype(int)
               + (X[:, 1] > 0.5).astype(int)]
    solver = {np.float64: dict(solver="sgd", momentum=0.9, learning_rate_init=0.05),
              np.float32: dict(solver="adam", learning_rate_init=0.02)}[dtype]
    est = MLPClassifier((6, 5), activation=["tanh", "maxout"], max_iter=12,
                        random_state=0, early_stopping=True, validation_fraction=0.25,
                        n_iter_no_change=4, warm_start=True, tol=1e-3,
                        dtype=dtype, **solver)
    _quiet(est.fit, X, y)
    probe = rs.randn(9, 4).astype(dtype)
    exp = _estimator_state(est)
    exp.update(probe=probe, predict=est.predict(probe),
               predict_proba=est.predict_proba(probe), classes=est.classes_,
               X=X, y=y)
    return est, exp


def classifier_continue(est, exp):
    """CONTINUE for the classifier: warm_start fit on the same data, 12 more
    epochs at most; early stopping carries its count and best score over."""
    _quiet(est.fit, exp["X"], exp["y"])
    return {"continued_coefs": _flat(est.coefs_ + est.intercepts_),
            "continued_n_iter_": np.int64(est.n_iter_),
            "continued_validation_scores_": np.asarray(est.validation_scores_)}


def regressor(dtype):
    rs = np.random.RandomState(31)
    X = rs.randn(80, 3).astype(dtype)
    Y = np.c_[X[:, 0] - X[:, 1] ** 2, np.sin(X[:, 2])] + 0.1 * rs.randn(80, 2)
    kw = {np.float64: dict(solver="adam", learning_rate_init=0.01),
          np.float32: dict(solver="sgd", learning_rate="invscaling",
                           learning_rate_init=0.05, momentum=0.5,
                           nesterovs_momentum=False)}[dtype]
    est = MLPRegressor(hidden_layer_sizes=(7,), activation="elu", max_iter=5,
                       random_state=1, batch_size=16, dtype=dtype, **kw)
    _quiet(est.fit, X, Y)
    probe = rs.randn(9, 3).astype(dtype)
    exp = _estimator_state(est)
    exp.update(probe=probe, predict=est.predict(probe), X=X, y=Y)
    return est, exp


def regressor_continue(est, exp):
    """CONTINUE for the regressor: two partial_fit calls (one epoch each,
    the optimizer state carried on)."""
    est.partial_fit(exp["X"], exp["y"])
    est.partial_fit(exp["X"], exp["y"])
    return {"continued_coefs": _flat(est.coefs_ + est.intercepts_)}


def main():
    made = []
    for dt in (np.float64, np.float32):
        name = np.dtype(dt).name
        opt = "adam" if dt == np.float64 else "nesterov"
        net, exp = network(dt, opt)
        fastnn.save(net, os.path.join(HERE, f"v1_network_{name}.fnn"))
        exp.update(network_continue(net, exp, opt))
        made.append((f"v1_network_{name}", exp))

        est, exp = classifier(dt)
        fastnn.save(est, os.path.join(HERE, f"v1_classifier_{name}.fnn"))
        exp.update(classifier_continue(est, exp))
        made.append((f"v1_classifier_{name}", exp))

        est, exp = regressor(dt)
        fastnn.save(est, os.path.join(HERE, f"v1_regressor_{name}.fnn"))
        exp.update(regressor_continue(est, exp))
        made.append((f"v1_regressor_{name}", exp))
    for name, exp in made:
        np.savez(os.path.join(HERE, f"{name}.expected.npz"), **exp)
        print(name, {k: np.shape(v) for k, v in exp.items()})


if __name__ == "__main__":
    main()
