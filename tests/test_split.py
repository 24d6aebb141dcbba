"""Data-parallel minibatches (csrc/pool.c, csrc/split.h, csrc/split_impl.h):
a step split between the calling thread and fastnn's helper thread computes
the same numbers as the single-threaded step (to rounding: the two halves'
gradients are summed), reproducibly, on every path of the loop (gathered
or in-order rows, sample weights, partial batches, every optimizer, fused
SGD, snapshots, divergence, Ctrl-C-style stops, concurrent fits, fork).

The default thresholds split only steps of about 10^5 multiply-adds and
more; the `split` fixture lowers them so the small networks here split,
once with whole GEMM calls and once ("chunked") with every GEMM of the
halves sent to the BLAS in pieces of at most 200 multiply-adds
(fnn_blas.chunk_mnk, what keeps OpenBLAS from threading the halves' GEMMs
of bigger networks), through fastnn._train.set_split_tuning."""
import multiprocessing
import os
import threading
import time

import numpy as np
import pytest

from fastnn import Adam, Dense, EarlyStopping, Maxout, Network, SGD
from fastnn import _blas, _train
from fastnn import reference as ref

from test_train import OPTS, data, layers, orders, rel


@pytest.fixture(params=["whole", "chunked"])
def split(request):
    """Split every minibatch of two or more rows, even if slow (no
    back-off)."""
    settings = dict(min_macs=0, min_rows=1, max_half_mnk=1 << 62, backoff=False)
    old_small = None
    if request.param == "chunked":
        # products above 512 multiply-adds to the BLAS, in small pieces
        settings["chunk_mnk"] = 200
        old_small = _blas.set_small_gemm_threshold(0)
    old_tuning = _train.set_split_tuning(**settings)
    old = _train.set_train_threads(2)
    yield request.param
    _train.set_train_threads(old)
    _train.set_split_tuning(**old_tuning)
    if old_small is not None:
        _blas.set_small_gemm_threshold(old_small)


@pytest.fixture
def serial():
    old = _train.set_train_threads(1)
    yield
    _train.set_train_threads(old)


def test_split_rows_heuristic(serial):
    tiny = Network([Dense(4, "sigmoid"), Dense(1)], n_in=2, seed=0)
    digits = Network([Dense(100, "relu"), Dense(10, "softmax")], n_in=64,
                     loss="softmax_ce", seed=0)
    seed = Network([Dense(100, "relu"), Dense(10)], n_in=1000, seed=0)
    medium = Network([Dense(256, "relu"), Dense(10)], n_in=784, seed=0)
    assert digits._core.split_rows(200) == 0          # 1 thread: never
    _train.set_train_threads(2)
    assert digits._core.split_rows(200) >= 2
    assert digits._core.split_rows(8) == 0             # too few rows
    assert tiny._core.split_rows(200) == 0             # too little work
    assert seed._core.split_rows(64) >= 2              # its GEMMs in pieces
    assert medium._core.split_rows(256) == 0           # the BLAS threads it
    assert _train.train_threads() == 2


def test_set_train_threads_validates():
    for bad in (0, 3, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="must be 1, 2 or None"):
            _train.set_train_threads(bad)
    old = _train.set_train_threads(None)
    assert _train.set_train_threads(old) is None
    assert _train.train_threads() in (1, 2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("loss", ["mse", "sse", "bce", "softmax_ce"])
@pytest.mark.parametrize("hidden", ["relu", "elu", "maxout"])
@pytest.mark.parametrize("opt", list(OPTS))
def test_split_fit_equals_reference_replay(split, opt, hidden, loss, dtype):
    X, Y = data(loss)
    n, epochs, batch = len(X), 4, 8                 # 37 rows: halves 4|4 .. 3|2
    net = Network(layers(loss, hidden, True), loss=loss, n_in=5, dtype=dtype, seed=1)
    assert net._core.split_rows(batch) >= 2
    p0 = net.params.astype(np.float64)
    o = OPTS[opt]()
    if loss == "sse":
        o.lr /= 20
    hist = net.fit(X, Y, epochs=epochs, batch_size=batch, optimizer=o, seed=5)
    p, losses, _ = ref.fit(net.specs(), loss, p0, net.n_weights, X, Y, [o.lr] * epochs,
                           batch, orders(5, epochs, n), o.kind,
                           getattr(o, "momentum", 0.9), getattr(o, "beta1", 0.9),
                           getattr(o, "beta2", 0.999), getattr(o, "eps", 1e-8),
                           o.weight_decay)
    tol = 1e-10 if dtype == np.float64 else 3e-4
    np.testing.assert_allclose(hist.loss, losses, rtol=tol)
    assert rel(net.params, p) < tol


def _fit(threads, **kw):
    old = _train.set_train_threads(threads)
    try:
        X, Y = data("softmax_ce", n=101)
        sw = np.random.RandomState(3).rand(101) + 0.1
        net = Network([Dense(7, "tanh"), Maxout(3), Dense(3, "softmax")],
                      n_in=5, loss="softmax_ce", seed=4)
        h = net.fit(X, Y, epochs=3, batch_size=kw.pop("batch", 16), seed=2,
                    sample_weight=sw, optimizer=kw.pop("optimizer", Adam(0.01)), **kw)
        return net.params.copy(), np.asarray(h.loss)
    finally:
        _train.set_train_threads(old)


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("batch", [2, 3, 16, 101, 1000])
def test_split_equals_serial_and_is_reproducible(split, shuffle, batch):
    a, la = _fit(2, batch=batch, shuffle=shuffle)
    b, lb = _fit(2, batch=batch, shuffle=shuffle)
    c, lc = _fit(1, batch=batch, shuffle=shuffle)
    np.testing.assert_array_equal(a, b)             # run to run: bit for bit
    np.testing.assert_array_equal(la, lb)
    assert rel(a, c) < 1e-12                        # vs one thread: rounding
    np.testing.assert_allclose(la, lc, rtol=1e-12)


@pytest.mark.parametrize("opt", [SGD(0.1), SGD(0.1, weight_decay=0.01), SGD(0.0),
                                 SGD(0.1, momentum=0.9, nesterov=True),
                                 Adam(0.01, weight_decay=0.01)],
                         ids=["sgd", "sgd-l2", "sgd-lr0", "nesterov", "adam-l2"])
def test_split_every_optimizer_equals_serial(split, opt):
    a, la = _fit(2, optimizer=opt)
    c, lc = _fit(1, optimizer=opt)
    assert rel(a, c) < 1e-12
    np.testing.assert_allclose(la, lc, rtol=1e-12)


def test_split_early_stopping_snapshot_restores_best(split):
    rs = np.random.RandomState(0)
    X, Y = rs.randn(200, 6), rs.randn(200, 1)
    Xv, Yv = rs.randn(50, 6), rs.randn(50, 1)
    out = []
    for threads in (2, 1):
        _train.set_train_threads(threads)
        net = Network([Dense(32, "relu"), Dense(1)], n_in=6, seed=0)
        h = net.fit(X, Y, epochs=60, batch_size=20, optimizer=SGD(0.2), seed=1,
                    validation_data=(Xv, Yv),
                    callbacks=[EarlyStopping(patience=3, restore_best_weights=True)])
        out.append((net.params.copy(), len(h.loss), net.loss(Xv, Yv)))
    _train.set_train_threads(2)
    assert out[0][1] == out[1][1]
    assert rel(out[0][0], out[1][0]) < 1e-12


def test_split_divergence_restores_finite_params(split):
    rs = np.random.RandomState(1)
    X, Y = rs.randn(64, 4) * 10, rs.randn(64, 1) * 10
    net = Network([Dense(16, "relu"), Dense(1)], n_in=4, seed=0, dtype=np.float32)
    with pytest.raises(FloatingPointError, match=r"non-finite at epoch \d+, step \d+"):
        net.fit(X, Y, epochs=1000, batch_size=8, optimizer=SGD(5.0))
    assert np.isfinite(net.params).all()
    assert np.isfinite(net.loss(X, Y))
    # and the helper is free again: the next fit splits and finishes
    net2 = Network([Dense(16, "relu"), Dense(1)], n_in=4, seed=0)
    net2.fit(X / 10, Y / 10, epochs=2, batch_size=8, lr=0.01)
    assert np.isfinite(net2.params).all()


def test_split_nan_input_is_refused_untouched(split):
    X, Y = data("mse", n=40)
    X[33, 2] = np.nan                               # in a helper's half
    net = Network([Dense(6, "tanh"), Dense(2)], n_in=5, seed=0)
    p = net.params.copy()
    with pytest.raises(ValueError, match="NaN"):
        net.fit(X, Y, epochs=1, batch_size=40, shuffle=False)
    np.testing.assert_array_equal(net.params, p)


def test_split_stop_from_callback_and_refit(split):
    X, Y = data("mse", n=64)
    net = Network([Dense(16, "tanh"), Dense(2)], n_in=5, seed=0)
    h = net.fit(X, Y, epochs=100, batch_size=8, callbacks=[lambda e, logs: e == 2])
    assert h.stop_reason == "callback" and len(h.loss) == 3
    h = net.fit(X, Y, epochs=2, batch_size=8)
    assert len(h.loss) == 2 and np.isfinite(net.params).all()


def test_concurrent_fits_share_one_helper(split):
    """Four networks fitting at once from four threads: at most one holds the
    helper at a time, the others run single-threaded; each gives the numbers
    it gives alone."""
    X, Y = data("mse", n=300)
    nets = [Network([Dense(24, "tanh"), Dense(2)], n_in=5, seed=s) for s in range(4)]
    alone = []
    for s in range(4):
        net = Network([Dense(24, "tanh"), Dense(2)], n_in=5, seed=s)
        net.fit(X, Y, epochs=20, batch_size=10, seed=s, optimizer=Adam(0.01))
        alone.append(net.params.copy())
    errors = []

    def run(s):
        try:
            nets[s].fit(X, Y, epochs=20, batch_size=10, seed=s, optimizer=Adam(0.01))
        except Exception as e:      # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=run, args=(s,)) for s in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors
    for s in range(4):
        assert rel(nets[s].params, alone[s]) < 1e-12


@pytest.fixture
def stalled_helper():
    # 20 ms: a step counts as starved when the helper's half takes over
    # twice the caller's; a much shorter delay can be mistaken for the
    # caller's own half being preempted on a loaded machine
    _train.set_helper_delay(20000)
    yield
    _train.set_helper_delay(0)


def test_split_tuning_api():
    """set_split_tuning changes the named settings only, returns the old
    ones (restoring them), and refuses unknown keys and bad values without
    changing anything."""
    defaults = _train.split_tuning(defaults=True)
    assert defaults == dict(min_macs=1 << 17, min_rows=16, max_half_mnk=1 << 23,
                            chunk_mnk=1_000_000, backoff=True)
    before = _train.split_tuning()
    old = _train.set_split_tuning(min_rows=3, backoff=False)
    try:
        assert old == before
        assert _train.split_tuning() == {**before, "min_rows": 3, "backoff": False}
        for bad in (dict(min_rows=0), dict(min_macs=-1), dict(chunk_mnk=1.5),
                    dict(max_half_mnk=True), dict(backoff=1), dict(threads=2),
                    dict(min_rows=2, min_macs=-5)):
            with pytest.raises((TypeError, ValueError)):
                _train.set_split_tuning(**bad)
            assert _train.split_tuning() == {**before, "min_rows": 3, "backoff": False}
    finally:
        _train.set_split_tuning(**old)
    assert _train.split_tuning() == before
    with pytest.raises(ValueError):
        _train.set_helper_delay(-1)


def test_starved_helper_backs_off_to_one_thread(split, stalled_helper):
    """A helper 20 ms late at every task (its core busy elsewhere): after
    SPLIT_STARVED_RUN (4) such steps the fit runs unsplit for
    SPLIT_FIRST_HOLD_MS (64 ms), in this fit and the next, then tries again
    and backs off for twice that; the numbers are the same either way.
    Held steps that split would be starved too and double the back-off
    early."""
    _train.set_split_tuning(backoff=True)
    assert _train.SPLIT_STARVED_RUN == 4
    hold_ms = _train.SPLIT_FIRST_HOLD_MS
    X, Y = data("mse", n=64)
    net = Network([Dense(16, "tanh"), Dense(2)], n_in=5, seed=0)
    now = lambda: time.monotonic() * 1e3           # CLOCK_MONOTONIC, in ms
    t0 = now()
    net.fit(X, Y, epochs=2, batch_size=16, seed=0)        # 8 steps: 4 starved, 4 held
    core = net._core
    assert core.split_backoff == hold_ms
    assert t0 + 4 * 20 + hold_ms <= core.split_hold <= now() + hold_ms
    # the hold carries over to the next fit (if it has not run out on a
    # loaded machine already): its 4 steps run unsplit, none starved
    hold = core.split_hold
    again = hold - now() > 30
    if again:
        net.fit(X, Y, epochs=1, batch_size=16, seed=2)
        assert core.split_backoff == hold_ms and core.split_hold == hold
    time.sleep((core.split_hold - now()) / 1e3 + 0.01)    # let the hold pass
    t1 = now()
    net.fit(X, Y, epochs=16, batch_size=16, seed=1)       # 64 steps: 4 starved, 60 held
    assert core.split_backoff == 2 * hold_ms
    assert t1 + 4 * 20 + 2 * hold_ms <= core.split_hold <= now() + 2 * hold_ms
    _train.set_helper_delay(0)
    ref_net = Network([Dense(16, "tanh"), Dense(2)], n_in=5, seed=0)
    _train.set_train_threads(1)
    ref_net.fit(X, Y, epochs=2, batch_size=16, seed=0)
    if again:
        ref_net.fit(X, Y, epochs=1, batch_size=16, seed=2)
    ref_net.fit(X, Y, epochs=16, batch_size=16, seed=1)
    _train.set_train_threads(2)
    assert rel(net.params, ref_net.params) < 1e-12


def _child_fit(q):
    X, Y = data("mse", n=64)
    net = Network([Dense(16, "tanh"), Dense(2)], n_in=5, seed=0)
    net.fit(X, Y, epochs=3, batch_size=16, seed=0)
    q.put(net.params.copy())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_split_fit_in_a_forked_child(split):
    """The child of a fork starts without the helper thread and makes a new
    one (a stale one would never answer: the child would hang)."""
    X, Y = data("mse", n=64)
    net = Network([Dense(16, "tanh"), Dense(2)], n_in=5, seed=0)
    net.fit(X, Y, epochs=3, batch_size=16, seed=0)    # the parent's helper runs
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_fit, args=(q,))
    p.start()
    got = q.get(timeout=60)
    p.join(60)
    assert p.exitcode == 0
    np.testing.assert_array_equal(got, net.params)


def test_sklearn_dropin_splits_and_still_matches_sklearn(split):
    sk = pytest.importorskip("sklearn.neural_network")
    from fastnn.sklearn import MLPClassifier
    rs = np.random.RandomState(0)
    X = rs.randn(300, 8)
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5)
    kw = dict(hidden_layer_sizes=(20,), max_iter=10, random_state=0, batch_size=32)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = sk.MLPClassifier(**kw).fit(X, y)
        b = MLPClassifier(**kw).fit(X, y)
    assert b._get_net()._core.split_rows(32) >= 2
    for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        assert np.abs(p - q).max() <= 1e-8 * np.abs(p).max()
    np.testing.assert_allclose(b.loss_curve_, a.loss_curve_, rtol=1e-10)
