"""Dropout: the fused mask kernels (csrc/act_impl.h, masks from
csrc/dropout.h) against their reference twins, the mask's statistics and
reproducibility."""
import numpy as np
import pytest

from fastnn import _kernels as K
from fastnn import reference as R
from conftest import (ALPHA, DTYPE_PARAMS, ELEMENTWISE, ROWS, SIZES, assert_close,
                      assert_pad_untouched, nan_like, padded, shape_params)

ACT_PARAMS = [pytest.param(a, id=a) for a in ELEMENTWISE]
RATES = [pytest.param(r, id=f"rate{r}") for r in (0.1, 0.5, 0.9)]
SHAPES = shape_params(ROWS, SIZES)


def _alpha(act):
    return ALPHA.get(act, 0.0)


# ---- the mask -----------------------------------------------------------------------

def test_key_matches_reference():
    for seed in (0, 1, 2 ** 63 + 5, 2 ** 64 - 1):
        for epoch in (0, 1, 1000):
            for layer in (0, 3):
                assert K.drop_key(seed, epoch, layer) == R.drop_key(seed, epoch, layer)
    keys = {K.drop_key(s, e, l) for s in range(4) for e in range(4) for l in range(4)}
    assert len(keys) == 64                       # no collisions among neighbours


@pytest.mark.parametrize("rate", [0.05, 0.3, 0.5, 0.8])
def test_mask_statistics(rate):
    """The kept fraction is 1 - rate within 4 standard errors, per unit and
    per row as well as overall; neighbouring rows and units are not
    correlated."""
    key = K.drop_key(1234, 0, 0)
    keep = R.dropout_keep(2000, 300, rate, key)
    n = keep.size
    se = np.sqrt(rate * (1 - rate) / n)
    assert abs(keep.mean() - (1 - rate)) < 4 * se
    per_unit = keep.mean(axis=0)
    assert np.abs(per_unit - (1 - rate)).max() < 5 * np.sqrt(rate * (1 - rate) / 2000)
    k = keep.astype(float) - keep.mean()
    for a, b in ((k[1:], k[:-1]), (k[:, 1:], k[:, :-1])):
        corr = (a * b).mean() / k.var()
        assert abs(corr) < 4 / np.sqrt(a.size)


def test_mask_depends_on_key_row_and_unit_only():
    """Rows are addressed by position: a block starting at row0 is the same
    rows of the full mask; other keys give other masks."""
    key = K.drop_key(9, 2, 1)
    full = R.dropout_keep(50, 20, 0.4, key)
    np.testing.assert_array_equal(R.dropout_keep(13, 20, 0.4, key, row0=21), full[21:34])
    np.testing.assert_array_equal(R.dropout_keep(50, 7, 0.4, key), full[:, :7])
    other = R.dropout_keep(50, 20, 0.4, K.drop_key(9, 3, 1))
    assert (other != full).mean() > 0.3


# ---- the kernels against the reference ------------------------------------------------

@pytest.mark.parametrize("m,n", SHAPES)
@pytest.mark.parametrize("act", ACT_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_forward_backward_match_reference(dtype, act, m, n, rng):
    """Forward and backward (outputs pre-filled with NaN) equal the
    reference's, which draws the same mask, for every activation; bias and
    no bias; row0 shifts the rows."""
    rate, key, row0 = 0.35, K.drop_key(77, 5, 2), 13
    z = rng.normal(scale=2.0, size=(m, n)).astype(dtype)
    b = rng.normal(size=n).astype(dtype)
    for bias in (b, None):
        y = z.copy()
        K.bias_act_dropout_forward(y, bias, act, _alpha(act), rate, key, row0)
        ry = R.bias_act_dropout_forward(z, bias, act, _alpha(act), rate, key, row0)
        assert_close(y, ry, dtype)
        a = R.bias_act_forward(z, bias, act, _alpha(act))
        dy = rng.normal(size=(m, n)).astype(dtype)
        dz, db = nan_like(dy), nan_like(n, dtype)
        K.bias_act_dropout_backward(y, dy, dz, db, act, _alpha(act), rate, key, row0)
        rdz, rdb = R.bias_act_dropout_backward(a, dy, act, _alpha(act), rate, key, row0)
        assert_close(dz, rdz, dtype, scale=float(np.abs(rdz).max()) + 1e-300)
        assert_close(db, rdb, dtype, scale=float(np.abs(rdz).sum(axis=0).max()) + 1e-300)
        keep = R.dropout_keep(m, n, rate, key, row0)
        assert (y[~keep] == 0).all() and (dz[~keep] == 0).all()


@pytest.mark.parametrize("act", ACT_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_in_place_and_strided(dtype, act, rng):
    """dz may be dy; padded row strides are honoured and the padding kept."""
    m, n, rate, key = 9, 17, 0.5, K.drop_key(3, 0, 0)
    z = rng.normal(size=(m, n)).astype(dtype)
    zv, zbig = padded(z, pad=3, fill=7.0)
    K.bias_act_dropout_forward(zv, None, act, _alpha(act), rate, key, 0)
    ry = R.bias_act_dropout_forward(z, None, act, _alpha(act), rate, key, 0)
    assert_close(zv, ry, dtype)
    assert_pad_untouched(zbig, n, 7.0)
    dy = rng.normal(size=(m, n)).astype(dtype)
    want = nan_like(dy)
    K.bias_act_dropout_backward(zv, dy, want, None, act, _alpha(act), rate, key, 0)
    work = dy.copy()
    K.bias_act_dropout_backward(zv, work, work, None, act, _alpha(act), rate, key, 0)
    np.testing.assert_array_equal(work, want)


@pytest.mark.parametrize("act", ACT_PARAMS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_rate_zero_is_the_plain_kernel(dtype, act, rng):
    """rate 0 keeps every unit and scales by 1: bit-identical to the kernel
    without dropout, forward and backward."""
    z = rng.normal(size=(11, 19)).astype(dtype)
    b = rng.normal(size=19).astype(dtype)
    a, c = z.copy(), z.copy()
    K.bias_act_forward(a, b, act, _alpha(act))
    K.bias_act_dropout_forward(c, b, act, _alpha(act), 0.0, 12345, 0)
    np.testing.assert_array_equal(a, c)
    dy = rng.normal(size=(11, 19)).astype(dtype)
    d1, d2 = nan_like(dy), nan_like(dy)
    db1, db2 = nan_like(19, dtype), nan_like(19, dtype)
    K.bias_act_backward(a, dy, d1, db1, act, _alpha(act))
    K.bias_act_dropout_backward(c, dy, d2, db2, act, _alpha(act), 0.0, 12345, 0)
    np.testing.assert_array_equal(d1, d2)
    np.testing.assert_array_equal(db1, db2)


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_expected_scaling(dtype, rate):
    """Inverted dropout: kept units are scaled by 1 / (1 - rate), so the
    mean over many rows of the output is the activation's (within 4
    standard errors)."""
    m, n = 4000, 8
    z = np.tile(np.linspace(0.2, 2.0, n), (m, 1)).astype(dtype)
    y = z.copy()
    K.bias_act_dropout_forward(y, None, "identity", 0.0, rate, K.drop_key(5, 0, 0), 0)
    s = np.float64(dtype(1.0 / (1.0 - rate)))
    kept = y != 0
    np.testing.assert_allclose(y[kept], (z.astype(np.float64) * s)[kept],
                               rtol=2 * np.finfo(dtype).eps)
    se = z[0] * s * np.sqrt(rate * (1 - rate) / m)
    assert np.all(np.abs(y.mean(axis=0) - z[0]) < 4 * se)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_nan_and_inf_are_not_hidden(dtype):
    """A NaN or inf reaching the activation stays visible (NaN) even in a
    dropped unit: divergence is never masked by dropout."""
    key = K.drop_key(1, 0, 0)
    keep = R.dropout_keep(4, 64, 0.5, key)
    z = np.zeros((4, 64), dtype)
    i, j = np.argwhere(~keep)[0]
    z[i, j] = np.nan
    z[0, 0] = np.inf
    K.bias_act_dropout_forward(z, None, "relu", 0.0, 0.5, key, 0)
    assert np.isnan(z[i, j])
    assert not np.isfinite(z[0, 0])


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, np.nan])
def test_wrapper_refuses_bad_rates(rate):
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match="dropout rate must lie in"):
        K.bias_act_dropout_forward(z, None, "relu", 0.0, rate, 1, 0)
    with pytest.raises(ValueError, match="dropout rate must lie in"):
        K.bias_act_dropout_backward(z, z, z.copy(), None, "relu", 0.0, rate, 1, 0)


# ---- Network: dropout in fit ----------------------------------------------------------

import copy  # noqa: E402
import pickle  # noqa: E402
import re  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import fastnn  # noqa: E402
from fastnn import Dense, Maxout, Network, SGD, _train  # noqa: E402



def _net(dtype=np.float64, backend="native", rates=(0.3, 0.5), acts=("tanh", "relu"),
         n_in=4, n_out=2, bias=True):
    layers = [Dense(6 + 2 * i, a, dropout=r, bias=bias)
              for i, (a, r) in enumerate(zip(acts, rates))]
    return Network(layers + [Dense(n_out)], n_in=n_in, dtype=dtype, seed=1,
                   backend=backend)


def _data(m=53, n_in=4, n_out=2, dtype=np.float64, seed=0):
    rs = np.random.RandomState(seed)
    return rs.randn(m, n_in).astype(dtype), rs.randn(m, n_out).astype(dtype)


FIT_CASES = [
    pytest.param(dict(batch_size=16, optimizer="adam", lr=0.01), id="adam-b16"),
    pytest.param(dict(batch_size=7, optimizer="sgd", lr=0.05, shuffle=False), id="sgd-b7"),
    pytest.param(dict(batch_size=None, optimizer="momentum", lr=0.02), id="full-momentum"),
    pytest.param(dict(batch_size=10, optimizer=SGD(lr=0.05, weight_decay=0.01)),
                 id="sgd-decay"),
]


@pytest.mark.parametrize("kw", FIT_CASES)
@pytest.mark.parametrize("acts", [("tanh", "relu"), ("sigmoid", "elu"),
                                  ("leaky_relu", "identity")], ids=lambda a: "-".join(a))
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_fit_matches_reference(dtype, acts, kw):
    """Native fit with dropout = the NumPy reference's replay (same masks
    from the same seed): epoch losses and parameters."""
    X, Y = _data(dtype=dtype)
    a = _net(dtype, acts=acts)
    b = _net(dtype, "reference", acts=acts)
    ha = a.fit(X, Y, epochs=4, seed=3, **copy.deepcopy(kw))
    hb = b.fit(X, Y, epochs=4, seed=3, **copy.deepcopy(kw))
    tol = 1e-11 if dtype == np.float64 else 2e-4
    np.testing.assert_allclose(ha.loss, hb.loss, rtol=tol)
    np.testing.assert_allclose(a.params, b.params, rtol=tol, atol=tol)


def test_dropout_changes_training_and_rate_zero_does_not():
    """A rate > 0 trains differently; rate 0 (every layer) is bit-identical
    to a network without dropout, the seed's draws included."""
    X, Y = _data()
    kw = dict(epochs=5, batch_size=8, seed=2, optimizer="adam", lr=0.01)
    zero, none, some = _net(rates=(0.0, 0.0)), _net(rates=(0.0, 0.0)), _net()
    plain = Network([Dense(6, "tanh"), Dense(8, "relu"), Dense(2)], n_in=4, seed=1)
    for net in (zero, plain, some):
        net.fit(X, Y, **kw)
    np.testing.assert_array_equal(zero.params, plain.params)
    assert not np.allclose(some.params, plain.params)
    del none


def test_reproducible_from_the_seed():
    X, Y = _data()
    runs = []
    for seed in (7, 7, 8):
        net = _net()
        net.fit(X, Y, epochs=3, batch_size=8, seed=seed)
        runs.append(net.params.copy())
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_chunked_epochs_are_the_same_fit():
    """Epochs run in one native call or one call each (a callback forces
    that): the masks are keyed by the global epoch, so the fits agree."""
    X, Y = _data()
    a, b = _net(), _net()
    a.fit(X, Y, epochs=6, batch_size=8, seed=4)
    b.fit(X, Y, epochs=6, batch_size=8, seed=4, callbacks=[lambda e, logs: False])
    np.testing.assert_array_equal(a.params, b.params)


@pytest.fixture
def split_all():
    """Split every minibatch of two or more rows across two threads."""
    old_tuning = _train.set_split_tuning(min_macs=0, min_rows=1,
                                         max_half_mnk=1 << 62, backoff=False)
    old = _train.set_train_threads(2)
    yield
    _train.set_train_threads(old)
    _train.set_split_tuning(**old_tuning)


@pytest.mark.parametrize("batch", [9, 16, None])
def test_split_step_draws_the_same_masks(split_all, batch):
    """The two-thread split step gives each half its rows' own masks: the
    fit equals the one-thread fit to rounding (the halves' gradients are
    summed in another order); a wrong mask would differ at O(1)."""
    X, Y = _data(m=64)
    a = _net()
    a.fit(X, Y, epochs=3, batch_size=batch, seed=5, optimizer="adam", lr=0.01)
    old = _train.set_train_threads(1)
    try:
        b = _net()
        b.fit(X, Y, epochs=3, batch_size=batch, seed=5, optimizer="adam", lr=0.01)
    finally:
        _train.set_train_threads(old)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-10, atol=1e-12)


def test_small_network_steps_and_dropout():
    """A network narrow enough for the small-network (lanes) step trains
    with dropout on the GEMM path (the reference's numbers), and keeps the
    lanes step for everything without dropout."""
    X, Y = _data(m=13, n_in=2, n_out=1)
    a = Network([Dense(4, "sigmoid", dropout=0.25), Dense(1)], n_in=2, seed=0)
    b = Network([Dense(4, "sigmoid", dropout=0.25), Dense(1)], n_in=2, seed=0,
                backend="reference")
    assert a._core.lanes
    for net in (a, b):
        net.fit(X, Y, epochs=20, batch_size=5, seed=1, lr=0.1)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-11, atol=1e-13)
    assert a.loss_and_grad(X, Y) == pytest.approx(b.loss_and_grad(X, Y), rel=1e-12)


def test_inactive_outside_fit():
    """predict, forward, loss and loss_and_grad see no dropout: the same
    numbers as the network without it."""
    X, Y = _data()
    a = _net()
    a.fit(X, Y, epochs=2, batch_size=8, seed=0)
    b = Network([Dense(6, "tanh"), Dense(8, "relu"), Dense(2)], n_in=4, seed=1)
    b.params[...] = a.params
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    assert a.loss(X, Y) == b.loss(X, Y)
    assert a.loss_and_grad(X, Y) == b.loss_and_grad(X, Y)
    np.testing.assert_array_equal(a.grads, b.grads)
    assert a.train_step(X, Y, 0.01) == b.train_step(X, Y, 0.01)


def test_history_loss_is_the_dropped_out_loss():
    """One full-batch SGD epoch reports the loss of the network with the
    step's masks, the reference's, not the deterministic loss."""
    X, Y = _data()
    net = _net()
    p0 = net.params.copy()
    h = net.fit(X, Y, epochs=1, seed=9, lr=0.0)
    np.testing.assert_array_equal(net.params, p0)
    drop_seed = int(np.random.default_rng(9).integers(0, 1 << 64, dtype=np.uint64))
    drop = {"rates": net.dropout_rates, "seed": drop_seed, "epoch": 0, "row0": 0}
    want, _ = R.net_loss_grad(net.specs(), "mse", p0, X, Y, 1 / len(X), drop=drop)
    assert h.loss[0] == pytest.approx(want, rel=1e-12)
    assert h.loss[0] != pytest.approx(net.loss(X, Y), rel=1e-6)


def test_save_load_pickle(tmp_path):
    X, Y = _data()
    net = _net(rates=(0.25, 0.0))
    net.fit(X, Y, epochs=2, batch_size=8, seed=0, optimizer="adam")
    fastnn.save(net, tmp_path / "d.fnn")
    for other in (fastnn.load(tmp_path / "d.fnn"), pickle.loads(pickle.dumps(net)),
                  copy.deepcopy(net)):
        assert other.dropout_rates == [0.25, 0.0, 0.0]
        assert repr(other) == repr(net)
        mine = copy.deepcopy(net)
        other.fit(X, Y, epochs=2, batch_size=8, seed=1, optimizer="adam")
        mine.fit(X, Y, epochs=2, batch_size=8, seed=1, optimizer="adam")
        np.testing.assert_array_equal(other.params, mine.params)


@pytest.mark.parametrize("rate,msg", [(1.0, "dropout must be < 1"),
                                      (-0.1, "dropout must be >= 0"),
                                      (np.nan, "dropout must be a finite real"),
                                      ("0.5", "dropout must be a finite real"),
                                      (True, "dropout must be a finite real")])
def test_bad_rates(rate, msg):
    with pytest.raises(ValueError, match=msg):
        Dense(4, "relu", dropout=rate)


def test_dropout_on_the_output_layer_is_refused():
    with pytest.raises(ValueError, match="dropout applies to hidden layers"):
        Network([Dense(4, "relu"), Dense(1, dropout=0.5)], n_in=2)


def test_netcore_refuses_bad_dropout_itself():
    """fnn_net_init checks the rates too (a caller bypassing Network)."""
    from fastnn._train import NetCore
    relu, ident, maxout = (K.ACTIVATIONS[a] for a in ("relu", "identity", "maxout"))
    p, g = np.zeros(30), np.zeros(30)
    ok = [(2, 3, relu, 1, 0.0, 0, 9, 0.5), (3, 1, ident, 1, 0.0, 6, 12, 0.0)]
    NetCore(ok, K.LOSSES["mse"], p, g, 9)
    bad = {"rate 1": [(2, 3, relu, 1, 0.0, 0, 9, 1.0), ok[1]],
           "negative": [(2, 3, relu, 1, 0.0, 0, 9, -0.5), ok[1]],
           "output": [ok[0], (3, 1, ident, 1, 0.0, 6, 12, 0.5)],
           "maxout": [(2, 3, maxout, 2, 0.0, 0, 12, 0.5), (3, 1, ident, 1, 0.0, 12, 18, 0.0)]}
    for name, specs in bad.items():
        with pytest.raises(ValueError, match="dropout"):
            NetCore(specs, K.LOSSES["mse"], p, g, 9)


def test_onnx_export_ignores_dropout():
    """The exported graph is the inference network: predict's numbers."""
    pytest.importorskip("onnx", reason="ONNX export needs onnx")
    ort = pytest.importorskip("onnxruntime", reason="running the graph needs onnxruntime")
    X, Y = _data()
    net = _net()
    net.fit(X, Y, epochs=2, batch_size=8, seed=0)
    sess = ort.InferenceSession(fastnn.to_onnx(net).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: X})[0]
    np.testing.assert_allclose(got, net.predict(X), rtol=1e-12, atol=1e-12)


# ---- the estimators --------------------------------------------------------------------

sklearn = pytest.importorskip("sklearn", reason="the estimator tests need scikit-learn")
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastnn import sklearn as fsk  # noqa: E402
from fastnn.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


def _quiet():
    warnings.simplefilter("ignore", ConvergenceWarning)


_SW_EQUIV = ("dropout draws one mask per sample position: a row repeated twice "
             "gets two masks, a row of weight 2 one, so the two fits differ (in "
             "any dropout implementation)")


def _expected_failed(est):
    return {"check_sample_weight_equivalence_on_dense_data": _SW_EQUIV,
            "check_sample_weight_equivalence_on_sparse_data": _SW_EQUIV}


@parametrize_with_checks([MLPClassifier(dropout=0.2, max_iter=100),
                          MLPRegressor(dropout=[0.3], max_iter=100)],
                         expected_failed_checks=_expected_failed, xfail_strict=True)
def test_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        _quiet()
        check(estimator)


def test_estimator_step_is_the_reference_step(monkeypatch):
    """One full-batch plain-SGD epoch of MLPRegressor(dropout=...) is the
    reference's step with the masks of the seed drawn for the fit: params
    - lr (grad + alpha W / n)."""
    seen = {}
    orig = fsk._EpochRunner.__init__

    def spy(self, est, net, X, Y, sw, batch_size, drop_seed=None):
        seen["seed"], seen["params"] = drop_seed, net.params.copy()
        orig(self, est, net, X, Y, sw, batch_size, drop_seed)
    monkeypatch.setattr(fsk._EpochRunner, "__init__", spy)
    X, Y = _data(m=40, n_out=1)
    est = MLPRegressor(hidden_layer_sizes=(7, 5), dropout=[0.4, 0.2], solver="sgd",
                       momentum=0.0, batch_size=40, shuffle=False, alpha=0.01,
                       learning_rate_init=0.1, max_iter=1, random_state=0)
    with warnings.catch_warnings():
        _quiet()
        est.fit(X, Y[:, 0])
    net = est._net
    p0 = seen["params"]
    drop = {"rates": net.dropout_rates, "seed": seen["seed"], "epoch": 0, "row0": 0}
    L, g = R.net_loss_grad(net.specs(), "mse", p0, X, Y, 1 / 40, drop=drop)
    g[:net.n_weights] += 0.01 / 40 * p0[:net.n_weights]
    np.testing.assert_allclose(net.params, p0 - 0.1 * g, rtol=1e-12, atol=1e-14)
    l2 = 0.5 * 0.01 * float(p0[:net.n_weights] @ p0[:net.n_weights]) / 40
    assert est.loss_ == pytest.approx(L + l2, rel=1e-12)


def test_estimator_reproducible_and_default_unchanged():
    X, Y = _data(m=80, n_out=1)
    y = (Y[:, 0] > 0).astype(int)
    kw = dict(hidden_layer_sizes=(8,), max_iter=5, random_state=0)
    with warnings.catch_warnings():
        _quiet()
        a = MLPClassifier(dropout=0.3, **kw).fit(X, y)
        b = MLPClassifier(dropout=0.3, **kw).fit(X, y)
        c = MLPClassifier(dropout=0.0, **kw).fit(X, y)
        d = MLPClassifier(**kw).fit(X, y)
        from sklearn.neural_network import MLPClassifier as SkMLPClassifier
        e = SkMLPClassifier(**kw).fit(X, y)
    for u, v in zip(a.coefs_, b.coefs_):
        np.testing.assert_array_equal(u, v)
    for u, v in zip(c.coefs_, d.coefs_):
        np.testing.assert_array_equal(u, v)
    for u, v in zip(d.coefs_, e.coefs_):
        np.testing.assert_allclose(u, v, rtol=1e-8, atol=1e-10)
    assert not np.allclose(a.coefs_[0], d.coefs_[0])
    np.testing.assert_array_equal(a.predict_proba(X), a.predict_proba(X))


@pytest.mark.parametrize("kw,msg", [
    (dict(dropout=1.0), "'dropout' parameter of MLPClassifier"),
    (dict(dropout=-0.2), "'dropout' parameter of MLPClassifier"),
    (dict(dropout=[0.1, 0.2]), "one rate per hidden layer: got 2 for 1"),
    (dict(dropout=[1.2]), r"dropout rates must be real numbers in \[0, 1\)"),
    (dict(dropout=["a"]), r"dropout rates must be real numbers in \[0, 1\)"),
    (dict(dropout=0.2, solver="lbfgs"), "dropout needs solver 'sgd' or 'adam'"),
    (dict(dropout=0.2, activation="maxout"), "not available for maxout layers"),
])
def test_estimator_bad_dropout(kw, msg):
    X, Y = _data(m=30, n_out=1)
    y = (Y[:, 0] > 0).astype(int)
    with warnings.catch_warnings():
        _quiet()
        est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(X, y)
    coefs = [c.copy() for c in est.coefs_]
    est.set_params(**kw)
    with pytest.raises(ValueError, match=msg):
        est.fit(X, y)
    for u, v in zip(coefs, est.coefs_):
        np.testing.assert_array_equal(u, v)


def test_estimator_poisson_refuses_dropout():
    X, Y = _data(m=30, n_out=1)
    with pytest.raises(ValueError, match="not available with loss='poisson'"):
        MLPRegressor(loss="poisson", dropout=0.2).fit(X, np.exp(Y[:, 0]))


def test_estimator_warm_start_follows_set_params():
    X, Y = _data(m=40, n_out=1)
    with warnings.catch_warnings():
        _quiet()
        est = MLPRegressor(hidden_layer_sizes=(5, 4), max_iter=2, warm_start=True,
                           random_state=0).fit(X, Y[:, 0])
        est.set_params(dropout=[0.0, 0.5])
        est.fit(X, Y[:, 0])
    assert est._net.dropout_rates == [0.0, 0.5, 0.0]
    assert est.coefs_[0] is est._net.layers[0].W


def test_estimator_save_load_pickle_to_sklearn(tmp_path):
    X, Y = _data(m=40, n_out=1)
    with warnings.catch_warnings():
        _quiet()
        est = MLPRegressor(hidden_layer_sizes=(5, 4), dropout=[0.1, 0.3], max_iter=3,
                           random_state=0).fit(X, Y[:, 0])
    fastnn.save(est, tmp_path / "e.fnn")
    for other in (fastnn.load(tmp_path / "e.fnn"), pickle.loads(pickle.dumps(est))):
        assert other.dropout == [0.1, 0.3]
        assert other._get_net().dropout_rates == [0.1, 0.3, 0.0]
        np.testing.assert_array_equal(other.predict(X), est.predict(X))
    with pytest.raises(ValueError, match="dropout=\\[0.1, 0.3\\] is a fastnn-only"):
        est.to_sklearn()
    sk = est.set_params(dropout=0.0).to_sklearn()
    np.testing.assert_allclose(sk.predict(X), est.predict(X), rtol=1e-12)
