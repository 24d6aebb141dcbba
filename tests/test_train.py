"""fit(): the native epoch/minibatch loop against a Python loop over
train_step and against fastnn.reference.fit replaying the same batch order;
what users expect around it (history, callbacks, early stopping, progress,
Ctrl-C, divergence, threads, allocation)."""
import os
import pathlib
import re
import sys
import threading
import time
import tracemalloc
import warnings

import numpy as np
import pytest

from fastnn import (Adam, Callback, Dense, EarlyStopping, InverseScaling, Maxout,
                    Network, SGD, StepDecay)
from fastnn import reference as ref


def rel(a, b):
    b = np.asarray(b, np.float64)
    return np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-300)


def data(loss, n=37, n_in=5, seed=0):
    rs = np.random.RandomState(seed)
    X = rs.randn(n, n_in)
    if loss == "bce":
        Y = (rs.rand(n, 2) > 0.5).astype(float)
    elif loss == "softmax_ce":
        Y = np.eye(3)[rs.randint(0, 3, n)]
    else:
        Y = rs.randn(n, 2)
    return X, Y


def layers(loss, hidden, bias):
    out = {"mse": Dense(2, bias=bias), "sse": Dense(2, bias=bias),
           "bce": Dense(2, "sigmoid", bias=bias), "softmax_ce": Dense(3, "softmax", bias=bias)}[loss]
    first = Maxout(4, bias=bias) if hidden == "maxout" else Dense(6, hidden, bias=bias)
    return [first, Dense(4, "tanh", bias=bias), out]


def orders(seed, epochs, n):
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n) for _ in range(epochs)])


OPTS = {"sgd": lambda: SGD(0.05), "momentum": lambda: SGD(0.05, momentum=0.9),
        "nesterov": lambda: SGD(0.05, momentum=0.8, nesterov=True),
        "adam": lambda: Adam(0.01),
        "sgd-l2": lambda: SGD(0.05, weight_decay=0.01),
        "adam-l2": lambda: Adam(0.01, weight_decay=0.02)}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("loss", ["mse", "sse", "bce", "softmax_ce"])
@pytest.mark.parametrize("hidden", ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "maxout"])
@pytest.mark.parametrize("opt", list(OPTS))
def test_fit_equals_reference_replay(opt, hidden, loss, bias, dtype):
    X, Y = data(loss)
    n, epochs, batch = len(X), 4, 8                # 37 rows: a partial last batch
    net = Network(layers(loss, hidden, bias), loss=loss, n_in=5, dtype=dtype, seed=1)
    p0 = net.params.astype(np.float64)
    o = OPTS[opt]()
    if loss == "sse":
        o.lr /= 20
    hist = net.fit(X, Y, epochs=epochs, batch_size=batch, optimizer=o, seed=5)
    kind = o.kind
    p, losses, _ = ref.fit(net.specs(), loss, p0, net.n_weights, X, Y, [o.lr] * epochs, batch,
                           orders(5, epochs, n), kind, getattr(o, "momentum", 0.9),
                           getattr(o, "beta1", 0.9), getattr(o, "beta2", 0.999),
                           getattr(o, "eps", 1e-8), o.weight_decay)
    tol = 1e-10 if dtype == np.float64 else 3e-4
    np.testing.assert_allclose(hist.loss, losses, rtol=tol)
    assert rel(net.params, p) < tol


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("loss", ["mse", "bce", "softmax_ce"])
def test_fit_equals_python_loop_over_train_step(loss, dtype):
    X, Y = data(loss, n=50)
    a = Network(layers(loss, "tanh", True), loss=loss, n_in=5, dtype=dtype, seed=2)
    b = Network(layers(loss, "tanh", True), loss=loss, n_in=5, dtype=dtype, seed=2)
    ha = a.fit(X, Y, epochs=3, batch_size=16, lr=0.1, seed=9)
    Xd, Yd = X.astype(dtype), Y.astype(dtype)
    for e, order in enumerate(orders(9, 3, 50)):
        losses, sizes = [], []
        for i0 in range(0, 50, 16):
            rows = order[i0:i0 + 16]
            losses.append(b.train_step(Xd[rows], Yd[rows], 0.1))
            sizes.append(len(rows))
        assert ha.loss[e] == pytest.approx(np.dot(losses, sizes) / 50,
                                           rel=1e-12 if dtype == np.float64 else 1e-5)
    if dtype == np.float64:
        np.testing.assert_array_equal(a.params, b.params)   # the same calls, bit for bit
    else:
        np.testing.assert_allclose(a.params, b.params, rtol=1e-6, atol=1e-7)


def test_last_partial_batch_is_trained():
    X, Y = data("mse", n=10)
    net = Network([Dense(2)], n_in=5, seed=0)
    p0 = net.params.copy()
    net.fit(X, Y, epochs=1, batch_size=4, lr=0.1, shuffle=False)
    p, _, _ = ref.fit(net.specs(), "mse", p0, net.n_weights, X, Y, [0.1], 4)
    assert rel(net.params, p) < 1e-12
    # and differs from dropping the last 2 rows
    q, _, _ = ref.fit(net.specs(), "mse", p0, net.n_weights, X[:8], Y[:8], [0.1], 4)
    assert rel(p, q) > 1e-6


def test_sample_weight_matches_reference():
    X, Y = data("mse", n=30)
    w = np.random.RandomState(3).rand(30) + 0.1
    net = Network(layers("mse", "relu", True), n_in=5, seed=0)
    p0 = net.params.copy()
    h = net.fit(X, Y, epochs=3, batch_size=7, optimizer="adam", lr=0.01, seed=1, sample_weight=w)
    p, losses, _ = ref.fit(net.specs(), "mse", p0, net.n_weights, X, Y, [0.01] * 3, 7,
                           orders(1, 3, 30), "adam", sw=w)
    np.testing.assert_allclose(h.loss, losses, rtol=1e-10)
    assert rel(net.params, p) < 1e-10


@pytest.mark.parametrize("mean_by_rows", [False, True])
def test_reported_l2_term_and_row_weighted_epoch_mean(mean_by_rows):
    """The options scikit-learn's reporting needs: 1/2 (alpha/rows) |W|^2 in
    each step's loss, and the epoch mean weighted by rows."""
    from fastnn._train import FitConfig
    X, Y = data("mse", n=30)
    w = np.random.RandomState(4).rand(30) + 0.5
    net = Network(layers("mse", "tanh", True), n_in=5, seed=0)
    p0 = net.params.copy()
    order = orders(2, 3, 30)
    cfg = FitConfig("sgd", 7, l2=0.3, l2_per_row=True, loss_l2=True,
                    mean_by_rows=mean_by_rows)
    r = net._core.fit(X, Y, cfg, np.full(3, 0.05), sw=w, order=order)
    p, losses, _ = ref.fit(net.specs(), "mse", p0, net.n_weights, X, Y, [0.05] * 3, 7,
                           order, "sgd", l2=0.3, l2_per_row=True, sw=w, loss_l2=True,
                           mean_by_rows=mean_by_rows)
    np.testing.assert_allclose(r.epoch_loss, losses, rtol=1e-12)
    assert rel(net.params, p) < 1e-12
    _, plain, _ = ref.fit(net.specs(), "mse", p0, net.n_weights, X, Y, [0.05] * 3, 7,
                          order, "sgd", l2=0.3, l2_per_row=True, sw=w)
    assert (losses > plain).all()          # the L2 term is there


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_loss_scale_scales_the_reported_data_loss_only(optimizer):
    """loss_scale multiplies each step's loss, not the L2 term, in what is
    reported, and leaves the steps alone (scikit-learn's squared error: a
    mean over outputs, the L2 term undivided)."""
    from fastnn._train import FitConfig
    X, Y = data("mse", n=30)
    w = np.random.RandomState(5).rand(30) + 0.5
    order = orders(3, 3, 30)
    runs = []
    for scale in (1.0, 0.5):
        net = Network(layers("mse", "tanh", True), n_in=5, seed=0)
        p0 = net.params.copy()
        P = len(p0)
        cfg = FitConfig(optimizer, 7, vel=np.zeros(P), sq=np.zeros(P), l2=0.3,
                        l2_per_row=True, loss_l2=True, mean_by_rows=True,
                        loss_scale=scale)
        r = net._core.fit(X, Y, cfg, np.full(3, 0.05), sw=w, order=order)
        p, losses, _ = ref.fit(net.specs(), "mse", p0, net.n_weights, X, Y, [0.05] * 3,
                               7, order, optimizer, l2=0.3, l2_per_row=True, sw=w,
                               loss_l2=True, mean_by_rows=True, loss_scale=scale)
        np.testing.assert_allclose(r.epoch_loss, losses, rtol=1e-12)
        assert rel(net.params, p) < 1e-12
        runs.append((net.params.copy(), r.epoch_loss.copy()))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])   # same steps
    assert (runs[1][1] > 0.5 * runs[0][1]).all()           # L2 term not halved
    assert (runs[1][1] < runs[0][1]).all()


def test_native_core_refuses_bad_buffers():
    """NetCore (what fit drives) checks everything it is handed: a wrong
    buffer would otherwise be read out of bounds by the C loop."""
    from fastnn._train import FitConfig
    core = Network([Dense(4, "tanh"), Dense(2)], n_in=3)._core
    X, Y, lrs = np.zeros((5, 3)), np.zeros((5, 2)), np.full(2, 0.1)
    P = len(core.params)
    sgd = FitConfig("sgd", 2)
    bad = [lambda: core.fit(X, Y, FitConfig("momentum", 2, vel=np.zeros(P - 1)), lrs),
           lambda: core.fit(X, Y, FitConfig("momentum", 2, vel=np.zeros(P, np.float32)),
                            lrs),
           lambda: core.fit(X, Y, FitConfig("adam", 2, vel=np.zeros(P), sq=np.zeros(P - 2)),
                            lrs),
           lambda: core.fit(X, Y, FitConfig("sgd", 2, snapshot=np.zeros(P + 1)), lrs),
           lambda: core.fit(X, Y, sgd, lrs, order=np.full((2, 5), 7, np.int64)),
           lambda: core.fit(X, Y, sgd, lrs, order=np.zeros((3, 5), np.int64)),
           lambda: core.fit(X.astype(np.float32), Y, sgd, lrs),
           lambda: core.fit(X, Y, sgd, lrs, sw=np.ones(4)),
           lambda: core.fit(X, Y, sgd, lrs.astype(np.float32)),
           lambda: core.fit(X, Y, sgd, lrs, epoch_loss=np.zeros(3)),
           lambda: core.fit(X, Y, None, lrs),
           lambda: core.forward(np.zeros((3, 5)).T),
           lambda: core.forward(np.zeros((5, 4))),
           lambda: core.loss(X, Y[:3], None, 1.0),
           lambda: core.loss_grad(X, Y.astype(np.float32), None, 1.0)]
    for f in bad:
        with pytest.raises((TypeError, ValueError)):
            f()


def test_fit_config_refuses_bad_settings():
    """FitConfig checks its scalars when made, before any fit runs."""
    from fastnn._train import FitConfig
    P = np.zeros(10)
    bad = [dict(optimizer="rmsprop"), dict(batch=0), dict(batch=2.5), dict(t=-1),
           dict(momentum=1.5), dict(momentum=float("nan")), dict(beta1=float("inf")),
           dict(l2=-1.0), dict(l2=float("inf")), dict(loss_scale="1"),
           dict(optimizer="adam", vel=P, sq=P, eps=0.0), dict(beta1=1.0),
           dict(beta2=-0.1), dict(snapshot_every=0), dict(poll_ms=0.0),
           dict(optimizer="momentum"), dict(optimizer="adam", vel=P),
           dict(optimizer="momentum", vel=[0.0] * 10), dict(snapshot=[0.0] * 10)]
    for kw in bad:
        kw = {"optimizer": "sgd", "batch": 4, **kw}
        with pytest.raises((TypeError, ValueError)):
            FitConfig(kw.pop("optimizer"), kw.pop("batch"), **kw)


def test_refused_fit_call_changes_nothing():
    """A NetCore.fit call refused for a bad buffer leaves the parameters,
    the optimizer state and the config's step count as they were."""
    from fastnn._train import FitConfig
    X, Y = data("mse", n=30)
    net = Network(layers("mse", "tanh", True), n_in=5, seed=0)
    P = len(net.params)
    vel, sq = np.full(P, 0.5), np.full(P, 0.25)
    cfg = FitConfig("adam", 7, vel=vel, sq=sq, t=3, snapshot=np.zeros(P + 1))
    p0 = net.params.copy()
    with pytest.raises(ValueError, match="snapshot"):
        net._core.fit(X, Y, cfg, np.full(2, 0.01))
    np.testing.assert_array_equal(net.params, p0)
    assert (vel == 0.5).all() and (sq == 0.25).all() and cfg.t == 3


def test_fit_result_and_config_carry_adam_steps():
    """A FitResult reports how far the call went; cfg.t advances in place,
    so a second call with the same config continues the first, as one call
    over all the epochs does."""
    from fastnn._train import FitConfig
    X, Y = data("mse", n=30)
    nets = [Network(layers("mse", "tanh", True), n_in=5, seed=0) for _ in range(2)]
    P = len(nets[0].params)
    cfgs = [FitConfig("adam", 7, vel=np.zeros(P), sq=np.zeros(P)) for _ in range(2)]
    r = nets[0]._core.fit(X, Y, cfgs[0], np.full(2, 0.01))
    assert r.ok and not r.diverged and not r.stopped and r.exc is None
    assert (r.epochs_done, r.steps_done, r.t, cfgs[0].t) == (2, 10, 10, 10)
    assert r.bad_epoch == r.bad_step == r.snapshot_epoch == -1
    assert r.epoch_loss.shape == (2,) and np.isfinite(r.epoch_loss).all()
    r2 = nets[0]._core.fit(X, Y, cfgs[0], np.full(1, 0.01))
    assert r2.t == cfgs[0].t == 15 and r2.epochs_done == 1
    whole = nets[1]._core.fit(X, Y, cfgs[1], np.full(3, 0.01))
    assert whole.t == 15
    np.testing.assert_array_equal(nets[0].params, nets[1].params)
    np.testing.assert_array_equal(np.r_[r.epoch_loss, r2.epoch_loss], whole.epoch_loss)


def test_same_seed_bit_identical_and_other_seed_differs():
    X, Y = data("mse", n=64)
    runs = []
    for seed in (4, 4, 5):
        net = Network(layers("mse", "relu", True), n_in=5, seed=0)
        net.fit(X, Y, epochs=5, batch_size=8, optimizer="adam", seed=seed)
        runs.append(net.params.copy())
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_schedules_and_history_lr():
    X, Y = data("mse", n=20)
    for sched, expect in [(InverseScaling(0.5), [0.1 / np.sqrt(1 + e) for e in range(6)]),
                          (StepDecay(2, 0.5), [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]),
                          ("constant", [0.1] * 6),
                          (InverseScaling(0.5, per_sample=True),
                           [0.1 / np.sqrt(1 + 20 * e) for e in range(6)])]:
        net = Network([Dense(3, "tanh"), Dense(2)], n_in=5, seed=0)
        p0 = net.params.copy()
        h = net.fit(X, Y, epochs=6, batch_size=5, lr=0.1, lr_schedule=sched, seed=2)
        np.testing.assert_allclose(h.lr, expect, rtol=1e-15)
        p, _, _ = ref.fit(net.specs(), "mse", p0, net.n_weights, X, Y, expect, 5,
                          orders(2, 6, 20))
        assert rel(net.params, p) < 1e-10


def test_optimizer_state_carries_over_between_fits():
    X, Y = data("mse", n=16)
    a = Network([Dense(3, "tanh"), Dense(2)], n_in=5, seed=0)
    b = Network([Dense(3, "tanh"), Dense(2)], n_in=5, seed=0)
    a.fit(X, Y, epochs=10, optimizer="adam", lr=0.01)        # full batch: no order
    b.fit(X, Y, epochs=4, optimizer="adam", lr=0.01)
    b.fit(X, Y, epochs=6, optimizer="adam", lr=0.01)
    np.testing.assert_array_equal(a.params, b.params)
    c = Network([Dense(3, "tanh"), Dense(2)], n_in=5, seed=0)
    c.fit(X, Y, epochs=4, optimizer="adam", lr=0.01)
    c.fit(X, Y, epochs=6, optimizer="adam", lr=0.01, reset_optimizer=True)
    assert not np.array_equal(a.params, c.params)


def test_long_runs_are_chunked_consistently():
    """Epoch chunks (one native call each) do not change the result."""
    import fastnn.training as tr
    X, Y = data("mse", n=40)
    results = []
    old = tr._CHUNK_INDEX_ELEMS
    try:
        for chunk_elems in (old, 40 * 3, 40):
            tr._CHUNK_INDEX_ELEMS = chunk_elems
            net = Network([Dense(3, "tanh"), Dense(2)], n_in=5, seed=0)
            h = net.fit(X, Y, epochs=10, batch_size=6, optimizer="momentum", lr=0.05, seed=3)
            results.append((net.params.copy(), list(h.loss)))
    finally:
        tr._CHUNK_INDEX_ELEMS = old
    for p, l in results[1:]:
        np.testing.assert_array_equal(p, results[0][0])
        assert l == results[0][1]


# ---- history, callbacks, early stopping, progress ---------------------------

def test_history_with_validation():
    X, Y = data("softmax_ce", n=60)
    net = Network(layers("softmax_ce", "relu", True), loss="softmax_ce", n_in=5, seed=0)
    h = net.fit(X, Y, epochs=5, batch_size=10, optimizer="adam", lr=0.01,
                validation_data=(X[:20], Y[:20].argmax(1)))
    assert len(h) == 5 and len(h.val_loss) == 5 and len(h.val_metric) == 5
    assert h.val_loss[-1] == pytest.approx(net.loss(X[:20], Y[:20]), rel=1e-12)
    acc = np.mean(net.predict(X[:20]).argmax(1) == Y[:20].argmax(1))
    assert h.val_metric[-1] == pytest.approx(acc)
    assert all(s > 0 for s in h.seconds) and all(r > 0 for r in h.samples_per_sec)
    assert net.history is h and set(h.history) >= {"loss", "val_loss", "val_metric"}


def test_r2_metric_for_regression():
    X, Y = data("mse", n=50)
    net = Network([Dense(8, "tanh"), Dense(2)], n_in=5, seed=0)
    h = net.fit(X, Y, epochs=2, validation_data=(X, Y))
    p = net.predict(X)
    r2 = 1 - ((Y - p) ** 2).sum() / ((Y - Y.mean(0)) ** 2).sum()
    assert h.val_metric[-1] == pytest.approx(r2, rel=1e-10)


def test_callbacks_receive_logs_and_can_stop():
    X, Y = data("mse", n=20)
    seen = []

    def cb(epoch, logs):
        seen.append((epoch, dict(logs)))
        return epoch == 3

    class Obj(Callback):
        def __init__(self):
            self.calls = []

        def on_train_begin(self, net):
            self.net = net

        def on_epoch_end(self, epoch, logs):
            self.calls.append(epoch)

    obj = Obj()
    net = Network([Dense(2)], n_in=5, seed=0)
    h = net.fit(X, Y, epochs=50, batch_size=5, callbacks=[cb, obj])
    assert [e for e, _ in seen] == [0, 1, 2, 3] and obj.calls == [0, 1, 2, 3]
    assert all("loss" in logs for _, logs in seen)
    assert h.stop_reason == "callback" and len(h) == 4 and obj.net is net


def test_early_stopping_restores_best_weights():
    rs = np.random.RandomState(0)
    X, Y = rs.randn(40, 5), rs.randn(40, 1)
    Xv, Yv = rs.randn(40, 5), rs.randn(40, 1)        # noise: validation loss rises
    net = Network([Dense(32, "relu"), Dense(1)], n_in=5, seed=0)
    best = {}

    def remember(epoch, logs):
        best[epoch] = net.params.copy()

    es = EarlyStopping(patience=3)
    h = net.fit(X, Y, epochs=500, batch_size=8, optimizer="adam", lr=0.05,
                validation_data=(Xv, Yv), callbacks=[remember], early_stopping=es)
    assert h.stop_reason == "early_stopping" and len(h) < 500
    b = int(np.argmin(h.val_loss))
    assert h.best_epoch == b and len(h) == b + 1 + 3
    np.testing.assert_array_equal(net.params, best[b])


def test_progress_plain_text_fallback_is_rate_limited(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    X, Y = data("mse", n=8)
    net = Network([Dense(4, "tanh"), Dense(2)], n_in=5, seed=0)
    t0 = time.perf_counter()
    net.fit(X, Y, epochs=200000, verbose=1)
    dt = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert "epoch 200000/200000" in err and "samples/s" in err
    assert err.count("\r") <= 4 * dt + 3            # at most ~4 updates a second


def test_progress_moves_within_an_epoch_and_never_shows_nan(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    import fastnn.training as T
    seen = []
    step = T._Progress.step

    def record(self, epoch, steps, batch, loss):
        seen.append((epoch, self.n, steps * batch, loss))
        step(self, epoch, steps, batch, loss)

    monkeypatch.setattr(T._Progress, "step", record)
    rs = np.random.RandomState(0)
    X = rs.standard_normal((60000, 100))
    Y = X[:, :1] ** 2
    Xv, Yv = X[:500], Y[:500]
    net = Network([Dense(128, "relu"), Dense(1)], seed=0)
    net.fit(X, Y, epochs=2, batch_size=32, verbose=1, validation_data=(Xv, Yv))
    err = capsys.readouterr().err
    # the native loop reported progress inside the first epoch, with the
    # running loss of the steps done (one poll comes every ~50 ms)
    inside = [s for s in seen if s[0] == 0 and 0 < s[2] < s[1]]
    assert inside and all(np.isfinite(s[3]) for s in inside)
    lines = err.split("\r")
    assert "nan" not in err.lower()
    assert lines[-1].startswith("120,000/120,000 samples  epoch 2/2")
    assert f"loss {net.history.loss[-1]:.5g}" in lines[-1]
    assert f"val_loss {net.history.val_loss[-1]:.5g}" in lines[-1]
    assert "val_metric" in lines[-1] and "left 0:00" in lines[-1]


def test_progress_with_tqdm_counts_samples(monkeypatch):
    tqdm = pytest.importorskip("tqdm", reason="tqdm is an optional extra")
    import io
    import fastnn.training as T
    buf = io.StringIO()
    init = T._Progress.__init__
    monkeypatch.setattr(T._Progress, "__init__",
                        lambda self, *a, **k: init(self, *a, **dict(k, stream=buf,
                                                                    bar_after=0.0)))
    X, Y = data("mse", n=500)
    net = Network([Dense(8, "tanh"), Dense(2)], n_in=5, seed=0)
    net.fit(X, Y, epochs=3, batch_size=50, verbose=1, validation_data=(X, Y))
    out = buf.getvalue()
    assert "1.50k/1.50k" in out and "sample/s" in out      # total = epochs * rows
    assert "val_loss" in out and "nan" not in out.lower()


def test_progress_of_a_short_fit_is_one_line_without_a_bar(monkeypatch):
    """A fit over before the first redraw gets one plain line at the end
    (the final state), and no tqdm bar even with tqdm installed: making a
    bar would cost as much as the fit."""
    import io
    import fastnn.training as T
    buf = io.StringIO()
    init = T._Progress.__init__
    made = []
    monkeypatch.setattr(T._Progress, "__init__",
                        lambda self, *a, **k: init(self, *a, **dict(k, stream=buf,
                                                                    bar_after=60.0)))
    monkeypatch.setattr(T._Progress, "_make_bar", lambda self: made.append(1))
    X, Y = data("mse", n=40)
    net = Network([Dense(8, "tanh"), Dense(2)], n_in=5, seed=0)
    net.fit(X, Y, epochs=3, batch_size=10, verbose=1, validation_data=(X, Y))
    out = buf.getvalue()
    assert not made
    assert out.count("\r") == 1 and out.endswith("\n")
    assert out.startswith("\r120/120 samples  epoch 3/3")
    assert f"loss {net.history.loss[-1]:.5g}" in out
    assert f"val_loss {net.history.val_loss[-1]:.5g}" in out


def test_network_seed_makes_shuffled_fits_repeatable():
    X, Y = data("mse", n=64)

    def run(fits):
        net = Network(layers("mse", "tanh", True), n_in=5, seed=3)
        for _ in range(fits):
            net.fit(X, Y, epochs=2, batch_size=8, optimizer="adam", lr=0.01)
        return net

    a, b = run(2), run(2)
    np.testing.assert_array_equal(a.params, b.params)
    # each fit of a network shuffles anew: two fits are not one fit twice
    c = run(1)
    c.fit(X, Y, epochs=2, batch_size=8, optimizer="adam", lr=0.01, seed=None)
    np.testing.assert_array_equal(a.params, c.params)
    d = Network(layers("mse", "tanh", True), n_in=5, seed=3)
    first = d.fit(X, Y, epochs=2, batch_size=8, optimizer="adam", lr=0.01).loss
    again = Network(layers("mse", "tanh", True), n_in=5, seed=3)
    again.fit(X, Y, epochs=2, batch_size=8, optimizer="adam", lr=0.01)
    h2 = again.fit(X, Y, epochs=2, batch_size=8, optimizer="adam", lr=0.01,
                   reset_optimizer=True)
    assert h2.loss != first                                  # not the same orders
    # the count of fits travels with the network
    import pickle
    e = pickle.loads(pickle.dumps(run(1)))
    e.fit(X, Y, epochs=2, batch_size=8, optimizer="adam", lr=0.01)
    np.testing.assert_array_equal(a.params, e.params)
    # a seed given to fit wins, and a network without a seed still shuffles
    f, g = run(0), run(0)
    f.fit(X, Y, epochs=2, batch_size=8, seed=11)
    g.fit(X, Y, epochs=2, batch_size=8, seed=11)
    np.testing.assert_array_equal(f.params, g.params)


def test_network_fit_has_a_real_signature_and_docstring():
    import inspect
    params = inspect.signature(Network.fit).parameters
    assert list(params)[:5] == ["self", "X", "y", "epochs", "batch_size"]
    assert "kwargs" not in params
    assert "batch_size" in Network.fit.__doc__ and "verbose" in Network.fit.__doc__


# ---- robustness: Ctrl-C, divergence, threads, allocation --------------------

@pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals")
def test_ctrl_c_stops_at_a_step_boundary_quickly(ctrl_c):
    X, Y = data("mse", n=200)
    net = Network([Dense(64, "tanh"), Dense(2)], n_in=5, seed=0)
    net.fit(X, Y, epochs=2, optimizer="adam", lr=1e-4)    # workspace made, GEMMs tuned
    # full batch: the native loop starts at once (no order arrays to draw)
    assert ctrl_c(lambda: net.fit(X, Y, epochs=10 ** 8, optimizer="adam", lr=1e-4)) < 0.5
    h = net.history
    assert h.stop_reason == "interrupted" and len(h) > 0 and np.isfinite(h.loss).all()
    assert np.isfinite(net.params).all()
    assert np.isfinite(net.loss(X, Y))
    h2 = net.fit(X, Y, epochs=2, batch_size=16)                # usable again
    assert len(h2) == 2


def test_ctrl_c_right_after_a_native_chunk_keeps_its_epochs(monkeypatch):
    """A KeyboardInterrupt that Python raises just after a chunk's native
    run returned, before fit recorded it (the first clock read after the
    run, here), still leaves the chunk's epochs in the history: the
    parameters moved through them."""
    import fastnn.training as training
    X, Y = data("mse", n=50)
    net = Network([Dense(8, "tanh"), Dense(2)], n_in=5, seed=0)
    ref = Network([Dense(8, "tanh"), Dense(2)], n_in=5, seed=0)
    h_ref = ref.fit(X, Y, epochs=7, batch_size=10, lr=0.01, seed=3)
    calls = []
    real = time.perf_counter

    def clock():
        calls.append(1)
        if len(calls) == 2:            # t0, then the read after core.fit
            raise KeyboardInterrupt
        return real()

    monkeypatch.setattr(training.time, "perf_counter", clock)
    with pytest.raises(KeyboardInterrupt):
        net.fit(X, Y, epochs=7, batch_size=10, lr=0.01, seed=3)
    monkeypatch.setattr(training.time, "perf_counter", real)
    h = net.history
    assert h.stop_reason == "interrupted"
    assert h.epochs == list(range(7)) and h.loss == h_ref.loss
    np.testing.assert_array_equal(net.params, ref.params)


@pytest.mark.parametrize("mode", ["raise", "warn"])
def test_divergence_names_epoch_and_restores_finite_params(mode):
    rs = np.random.RandomState(1)
    X, Y = rs.randn(64, 4) * 10, rs.randn(64, 1) * 10
    net = Network([Dense(16, "relu"), Dense(1)], n_in=4, seed=0, dtype=np.float32)
    kw = dict(epochs=1000, batch_size=8, optimizer=SGD(5.0), on_divergence=mode)
    if mode == "raise":
        with pytest.raises(FloatingPointError,
                           match=r"non-finite at epoch \d+, step \d+; parameters restored"):
            net.fit(X, Y, **kw)
    else:
        with pytest.warns(RuntimeWarning, match="diverged"):
            h = net.fit(X, Y, **kw)
        assert h.stop_reason == "diverged"
    assert np.isfinite(net.params).all()
    assert np.isfinite(net.loss(X, Y))
    assert net.history.stop_reason == "diverged"


def test_fit_from_two_threads_is_refused():
    X, Y = data("mse", n=64)
    net = Network([Dense(16, "tanh"), Dense(2)], n_in=5, seed=0)
    started, release = threading.Event(), threading.Event()
    errors = []

    def cb(epoch, logs):
        started.set()
        return release.is_set()

    def run():
        try:
            net.fit(X, Y, epochs=10 ** 6, batch_size=8, callbacks=[cb])
        except Exception as e:     # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    try:
        assert started.wait(10)
        with pytest.raises(RuntimeError, match="already training"):
            net.fit(X, Y, epochs=1)
        with pytest.raises(RuntimeError, match="already training"):
            net.train_step(X, Y, 0.1)
        net.predict(X)                 # reading is allowed
    finally:
        release.set()
        t.join(10)
    assert not errors and net.history.stop_reason == "callback"


def test_no_python_allocation_per_step():
    """A fit of 4,000 steps allocates no more than a fit of 4 steps on the
    same data: workspace and buffers are sized once per fit."""
    rs = np.random.RandomState(0)
    X, Y = rs.randn(2000, 10), rs.randn(2000, 1)
    net = Network([Dense(16, "tanh"), Dense(1)], n_in=10, seed=0)
    net.fit(X, Y, epochs=1, batch_size=1)          # warm up imports and caches
    peaks = []
    for batch in (1000, 1):                        # 4 steps vs 4,000 steps
        tracemalloc.start()
        net.fit(X, Y, epochs=2, batch_size=batch, shuffle=False)
        cur, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        peaks.append(peak)
    # the batch-1000 fit has the larger workspace; per-step allocations would
    # make the 4,000-step fit grow instead
    assert peaks[1] <= peaks[0] + 16 * 1024


def test_native_kernels_never_allocate():
    """csrc/ calls no allocator: all memory is caller-owned."""
    root = pathlib.Path(__file__).resolve().parents[1] / "csrc"
    for f in list(root.glob("*.c")) + list(root.glob("*.h")):
        code = re.sub(r"/\*.*?\*/", "", f.read_text(), flags=re.S)
        assert not re.search(r"\b(malloc|calloc|realloc|free|aligned_alloc)\s*\(", code), f
