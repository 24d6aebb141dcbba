"""fastnn.fit_many: K networks trained in one native call, bit-identical to
fitting each alone (parameters, gradient buffer, optimizer state, epoch
losses, histories), on both paths: networks in vector lanes (csrc/many.c's
groups, small-network-step networks) and one network per thread (fnn_fit
on worker threads).  Covered: every optimizer, loss, elementwise
activation, both dtypes, full batches and minibatches with a partial last
one, shuffling with each network's own seed, L2, learning-rate schedules,
per-network learning rates (zero included), bagging row subsets, group
sizes that leave spare lanes, optimizer state carried between calls; then
divergence of some networks, Ctrl-C, bad input, and sweep.

The assumption under "bit-identical": one machine, one process, one build
(the single fit and the groups pick their CPU clone the same way at load
time).  The reference fits run with set_train_threads(1) where a split
step could occur (see fastnn/many.py)."""
import contextlib
import threading
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import Adam, Dense, InverseScaling, Maxout, Network, SGD, StepDecay

ACTS = ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "identity"]
OPTS = ["sgd", "momentum", "nesterov", "adam"]
DTYPES = [np.float64, np.float32]


@pytest.fixture(autouse=True, params=["cpu-width", "one-vector"])
def group_width(request):
    """Every test twice: with the networks-in-lanes groups as wide as this
    CPU makes them (two vectors with AVX-512), and one vector wide (what
    CPUs without AVX-512 run)."""
    from fastnn import _many
    widths = _many._set_narrow(request.param == "one-vector")
    try:
        yield widths
    finally:
        _many._set_narrow(False)


@contextlib.contextmanager
def one_train_thread():
    old = fastnn.set_train_threads(1)
    try:
        yield
    finally:
        fastnn.set_train_threads(old)


def make_nets(K, n_in, hidden, n_out, act="tanh", loss="mse", dtype=np.float64,
              bias=True, out_act=None, seed0=0):
    if out_act is None:
        out_act = "sigmoid" if loss == "bce" else "identity"
    def one(s):
        layers = [Dense(h, act, bias=bias) for h in hidden]
        layers.append(Dense(n_out, out_act, bias=bias))
        return Network(layers, loss=loss, n_in=n_in, dtype=dtype, seed=s)
    return [one(seed0 + k) for k in range(K)], [one(seed0 + k) for k in range(K)]


def make_data(n, n_in, n_out, loss, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_in)).astype(dtype)
    if loss == "bce":
        Y = (rng.random((n, n_out)) > 0.5).astype(dtype)
    else:
        Y = rng.standard_normal((n, n_out)).astype(dtype)
    return X, Y


def fit_alone(refs, X, Y, lrs=None, opts=None, seeds=None, idx=None, wds=None,
              **kw):
    """Network.fit on each network alone, with its own lr/optimizer/seed/
    rows; returns the histories."""
    hists = []
    for k, net in enumerate(refs):
        Xk = X if idx is None else X[idx[k]]
        Yk = Y if idx is None else Y[idx[k]]
        a = dict(kw)
        if "sample_weight" in a and a["sample_weight"] is not None and idx is not None:
            a["sample_weight"] = a["sample_weight"][idx[k]]
        opt = opts[k] if opts is not None else a.pop("optimizer", "sgd")
        a.pop("optimizer", None)
        lr = None if lrs is None else lrs[k]
        if wds is not None:
            opt = _with_wd(opt, lr, wds[k])
            lr = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            hists.append(net.fit(Xk, Yk, lr=lr, optimizer=opt,
                                 seed=None if seeds is None else seeds[k],
                                 on_divergence="warn", **a))
    return hists


def _with_wd(name, lr, wd):
    """The optimizer object fit_many builds from a name, lr and weight_decay."""
    from fastnn.training import _make_optimizer
    opt = _make_optimizer(name, lr)
    opt.weight_decay = wd
    return opt


def assert_same(nets, refs, hists, ref_hists):
    for k, (a, b) in enumerate(zip(nets, refs)):
        np.testing.assert_array_equal(a.params, b.params, err_msg=f"params of net {k}")
        np.testing.assert_array_equal(a.grads, b.grads, err_msg=f"grads of net {k}")
        sa, sb = a._opt_state, b._opt_state
        if sb is None:
            assert sa is None, f"net {k}: optimizer state should be reset"
        else:
            assert sa["kind"] == sb["kind"] and sa["t"] == sb["t"], f"net {k}"
            for key in ("vel", "sq"):
                if sb[key] is not None:
                    np.testing.assert_array_equal(sa[key], sb[key],
                                                  err_msg=f"{key} of net {k}")
        np.testing.assert_array_equal(np.array(hists[k].loss),
                                      np.array(ref_hists[k].loss),
                                      err_msg=f"epoch losses of net {k}")
        np.testing.assert_array_equal(np.array(hists[k].lr),
                                      np.array(ref_hists[k].lr))
        assert hists[k].stop_reason == ref_hists[k].stop_reason, f"net {k}"
        assert a.history is hists[k]


# ---- the lanes path: one test per axis, every combination of the others ----

# narrow layers of every width from 1 (single-input layers: the lone
# product w x + b is where the compiler's FMA choice differs most easily),
# inputs past the 4 that the small-network step unrolls, two outputs
LANE_SHAPES = {"2-4-1": (2, [4], 1), "20-4-2": (20, [4], 2),
               "4-8-3-1": (4, [8, 3], 1), "3-3-1": (3, [3], 1),
               "6-2-1": (6, [2], 1), "1-1": (1, [], 1), "2-1-1": (2, [1], 1),
               "1-3-1-2": (1, [3, 1], 2), "5-1-4-1": (5, [1, 4], 1)}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("opt", OPTS)
@pytest.mark.parametrize("batch", [None, 5, 4, 1])
@pytest.mark.parametrize("loss", ["sse", "mse", "bce"])
def test_lanes_bit_identical_optimizers_losses_batches(loss, batch, opt, dtype):
    K = 7                                # a spare lane in both dtypes
    nets, refs = make_nets(K, 2, [4], 1, "tanh", loss, dtype)
    X, Y = make_data(13, 2, 1, loss, dtype)
    lrs = [0.02 * (k + 1) for k in range(K)]
    seeds = list(range(K))
    hs = fastnn.fit_many(nets, X, Y, epochs=5, batch_size=batch, lr=lrs,
                         optimizer=opt, seeds=seeds, method="lanes")
    ref = fit_alone(refs, X, Y, lrs=lrs, seeds=seeds, epochs=5, batch_size=batch,
                    optimizer=opt)
    assert_same(nets, refs, hs, ref)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", list(LANE_SHAPES))
def test_lanes_bit_identical_shapes_activations(shape, act, dtype):
    n_in, hidden, n_out = LANE_SHAPES[shape]
    K = 5
    bias = act not in ("relu", "elu")           # both, spread over the grid
    out_act = "tanh" if act == "sigmoid" else None   # an output activation's backward
    nets, refs = make_nets(K, n_in, hidden, n_out, act, "mse", dtype, bias, out_act)
    assert nets[0]._core.lanes
    X, Y = make_data(11, n_in, n_out, "mse", dtype, seed=3)
    for opt in ("sgd", "adam"):
        hs = fastnn.fit_many(nets, X, Y, epochs=3, batch_size=6, lr=0.05,
                             optimizer=opt, seeds=7, method="lanes")
        ref = fit_alone(refs, X, Y, lrs=[0.05] * K, seeds=[7] * K, epochs=3,
                        batch_size=6, optimizer=opt)
        assert_same(nets, refs, hs, ref)


def _random_config(rng, dtype):
    shape = list(LANE_SHAPES)[rng.integers(len(LANE_SHAPES))]
    n_in, hidden, n_out = LANE_SHAPES[shape]
    loss = ["sse", "mse", "bce"][rng.integers(3)]
    act = ACTS[rng.integers(len(ACTS))]
    out_act = None if loss == "bce" or rng.random() < 0.6 else ACTS[rng.integers(5)]
    n = int(rng.integers(1, 30))
    batch = None if rng.random() < 0.3 else int(rng.integers(1, n + 3))
    K = int(rng.integers(1, 40))        # up to several groups of either width
    opt = OPTS[rng.integers(4)]
    return dict(shape=(n_in, hidden, n_out), loss=loss, act=act, out_act=out_act,
                n=n, batch=batch, K=K, opt=opt, bias=bool(rng.random() < 0.7),
                shuffle=bool(rng.random() < 0.7), epochs=int(rng.integers(1, 5)),
                wd=bool(rng.random() < 0.4), sched=int(rng.integers(3)),
                zero_lr=bool(rng.random() < 0.2), bag=bool(rng.random() < 0.3))


@pytest.mark.filterwarnings("ignore:.*networks diverged:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", range(40))
def test_lanes_bit_identical_random_configurations(case, dtype):
    """Random mixes of every axis at once: shape, loss, activations, rows,
    batch, K, optimizer, bias, shuffle, L2, schedule, zero learning rates,
    bagging."""
    rng = np.random.default_rng(1000 + case)
    c = _random_config(rng, dtype)
    n_in, hidden, n_out = c["shape"]
    nets, refs = make_nets(c["K"], n_in, hidden, n_out, c["act"], c["loss"], dtype,
                           c["bias"], c["out_act"], seed0=case)
    X, Y = make_data(c["n"] + 5, n_in, n_out, c["loss"], dtype, seed=case)
    K = c["K"]
    lrs = list(rng.uniform(0.001, 0.2, K))
    if c["zero_lr"]:
        lrs[0] = 0.0
    wds = list(rng.uniform(0, 0.1, K)) if c["wd"] else None
    sched = [None, InverseScaling(0.5), StepDecay(2, 0.5)][c["sched"]]
    idx = ([rng.integers(0, len(X), c["n"]) for _ in range(K)] if c["bag"]
           else None)
    Xf, Yf = (X, Y) if idx is not None else (X[:c["n"]], Y[:c["n"]])
    seeds = [int(s) for s in rng.integers(0, 1000, K)]
    kw = dict(epochs=c["epochs"], batch_size=c["batch"], shuffle=c["shuffle"],
              lr_schedule=sched or "constant")
    hs = fastnn.fit_many(nets, Xf, Yf, lr=lrs, optimizer=c["opt"], seeds=seeds,
                         weight_decay=wds, sample_indices=idx, method="lanes", **kw)
    ref = fit_alone(refs, Xf, Yf, lrs=lrs, seeds=seeds, idx=idx, wds=wds,
                    optimizer=c["opt"], **kw)
    assert_same(nets, refs, hs, ref)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_lanes_one_block_and_tiny_workload(dtype):
    """XOR, 4 rows, full batch (the single fit's preloaded one-block loop),
    no biases, sigmoid, sse: the benchmark's tiny networks."""
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=dtype)
    Y = np.array([[0], [1], [1], [0]], dtype=dtype)
    for rows in (4, 3, 1):
        nets, refs = make_nets(9, 2, [4], 1, "sigmoid", "sse", dtype, bias=False)
        hs = fastnn.fit_many(nets, X[:rows], Y[:rows], epochs=50, lr=0.1,
                             method="lanes")
        ref = fit_alone(refs, X[:rows], Y[:rows], lrs=[0.1] * 9, epochs=50)
        assert_same(nets, refs, hs, ref)


def test_lanes_state_carries_over_and_reset():
    """Optimizer state from an earlier fit (or fit_many) continues, as in
    Network.fit; reset_optimizer starts over; a different kind starts over."""
    nets, refs = make_nets(6, 2, [4], 1)
    X, Y = make_data(20, 2, 1, "mse", np.float64)
    for step in [dict(optimizer="adam"), dict(optimizer="adam"),
                 dict(optimizer="adam", reset_optimizer=True),
                 dict(optimizer="momentum"), dict(optimizer="momentum")]:
        hs = fastnn.fit_many(nets, X, Y, epochs=2, batch_size=7, lr=0.01, seeds=3,
                             **step)
        ref = []
        for net in refs:
            ref.append(net.fit(X, Y, epochs=2, batch_size=7, lr=0.01, seed=3, **step))
        assert_same(nets, refs, hs, ref)


# ---- the thread path -------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("opt", OPTS)
@pytest.mark.parametrize("case", ["small-lanes-net", "gemm", "maxout-softmax",
                                  "sample-weight", "bagging-unequal"])
def test_threads_bit_identical(case, opt, dtype):
    K = 5
    rng = np.random.default_rng(7)
    sw = idx = None
    loss = "mse"
    if case == "small-lanes-net":
        nets, refs = make_nets(K, 2, [4], 1, "tanh", "mse", dtype)
        n_in, n_out = 2, 1
    elif case == "maxout-softmax":
        def one(s):
            return Network([Maxout(6, 2), Dense(3, "softmax")], loss="softmax_ce",
                           n_in=5, dtype=dtype, seed=s)
        nets, refs = [one(k) for k in range(K)], [one(k) for k in range(K)]
        n_in, n_out, loss = 5, 3, "softmax_ce"
    else:
        nets, refs = make_nets(K, 20, [32], 2, "relu", "mse", dtype)
        n_in, n_out = 20, 2
    X, Y = make_data(70, n_in, n_out, "mse", dtype)
    if loss == "softmax_ce":
        Y = np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, len(X))]
    if case == "sample-weight":
        sw = rng.uniform(0.1, 2, len(X))
    if case == "bagging-unequal":
        idx = [rng.integers(0, len(X), 30 + 5 * k) for k in range(K)]
    lrs = [0.01 * (k + 1) for k in range(K)]
    kw = dict(epochs=3, batch_size=16, sample_weight=sw)
    hs = fastnn.fit_many(nets, X, Y, lr=lrs, optimizer=opt, seeds=range(K),
                         sample_indices=idx, weight_decay=0.01, method="threads",
                         **kw)
    with one_train_thread():
        ref = fit_alone(refs, X, Y, lrs=lrs, seeds=list(range(K)), idx=idx,
                        wds=[0.01] * K, optimizer=opt, **kw)
    assert_same(nets, refs, hs, ref)


def test_threads_gemms_big_enough_for_the_blas_threads():
    """GEMMs of a few million multiply-adds: OpenBLAS runs them on its own
    threads, called from two workers at once; the results still equal each
    network's fit alone (same BLAS settings)."""
    K = 3
    nets, refs = make_nets(K, 200, [100], 10, "tanh", "mse")
    X, Y = make_data(256, 200, 10, "mse", np.float64)
    hs = fastnn.fit_many(nets, X, Y, epochs=2, batch_size=256, lr=0.01,
                         optimizer="momentum", threads=2)
    with one_train_thread():
        ref = fit_alone(refs, X, Y, lrs=[0.01] * K, epochs=2, batch_size=256,
                        optimizer="momentum")
    assert_same(nets, refs, hs, ref)


def test_default_train_threads_small_batches_match_plain_fit():
    """With Network.fit's defaults (train threads following the BLAS), a
    GEMM-path network whose minibatches are too small to split gives the
    same bits as fit_many."""
    nets, refs = make_nets(4, 20, [32], 1, "relu", "mse")
    X, Y = make_data(200, 20, 1, "mse", np.float64)
    assert all(r._core.split_rows(32) == 0 for r in refs)
    hs = fastnn.fit_many(nets, X, Y, epochs=3, batch_size=32, lr=0.01, seeds=1)
    ref = fit_alone(refs, X, Y, lrs=[0.01] * 4, seeds=[1] * 4, epochs=3,
                    batch_size=32)
    assert_same(nets, refs, hs, ref)


@pytest.mark.parametrize("method", ["lanes", "threads"])
def test_methods_agree_and_auto(method):
    nets, refs = make_nets(9, 3, [3], 1, "elu", "bce")
    X, Y = make_data(25, 3, 1, "bce", np.float64)
    hs = fastnn.fit_many(nets, X, Y, epochs=4, batch_size=6, lr=0.1,
                         optimizer="nesterov", seeds=range(9), method=method)
    ref = fastnn.fit_many(refs, X, Y, epochs=4, batch_size=6, lr=0.1,
                          optimizer="nesterov", seeds=range(9), method="auto")
    assert_same(nets, refs, hs, ref)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_counts_agree(threads):
    nets, refs = make_nets(10, 2, [4], 1)
    X, Y = make_data(30, 2, 1, "mse", np.float64)
    hs = fastnn.fit_many(nets, X, Y, epochs=3, batch_size=8, lr=0.05, seeds=2,
                         threads=threads)
    ref = fit_alone(refs, X, Y, lrs=[0.05] * 10, seeds=[2] * 10, epochs=3,
                    batch_size=8)
    assert_same(nets, refs, hs, ref)


def test_long_runs_in_several_native_calls(monkeypatch):
    """Epochs in chunks (bounded index memory) give the same bits."""
    import fastnn.many as many
    monkeypatch.setattr(many, "_CHUNK_ELEMS", 200)
    nets, refs = make_nets(5, 2, [4], 1, "tanh", "mse")
    X, Y = make_data(12, 2, 1, "mse", np.float64)
    hs = fastnn.fit_many(nets, X, Y, epochs=23, batch_size=5, lr=0.05,
                         optimizer="adam", seeds=range(5))
    ref = fit_alone(refs, X, Y, lrs=[0.05] * 5, seeds=list(range(5)), epochs=23,
                    batch_size=5, optimizer="adam")
    assert_same(nets, refs, hs, ref)
    assert len(hs[0]._chunks) > 1


def test_optimizer_objects_and_per_network_kinds():
    nets, refs = make_nets(4, 2, [4], 1)
    X, Y = make_data(16, 2, 1, "mse", np.float64)
    opts = [SGD(0.1), SGD(0.05, momentum=0.5), SGD(0.05, momentum=0.8, nesterov=True,
                                                   weight_decay=0.01),
            Adam(0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.001)]
    hs = fastnn.fit_many(nets, X, Y, epochs=3, batch_size=5, optimizer=opts,
                         seeds=[1, 2, 3, 4])
    ref = fit_alone(refs, X, Y, opts=opts, seeds=[1, 2, 3, 4], epochs=3,
                    batch_size=5)
    assert_same(nets, refs, hs, ref)


def test_momentum_and_betas_differ_per_lane():
    nets, refs = make_nets(5, 2, [4], 1)
    X, Y = make_data(16, 2, 1, "mse", np.float32)
    X = X.astype(np.float64)
    Y = Y.astype(np.float64)
    opts = [Adam(0.01, beta1=0.5 + 0.1 * k, beta2=0.9 + 0.02 * k, eps=10.0 ** -k)
            for k in range(5)]
    hs = fastnn.fit_many(nets, X, Y, epochs=3, batch_size=5, optimizer=opts,
                         seeds=0, method="lanes")
    ref = fit_alone(refs, X, Y, opts=opts, seeds=[0] * 5, epochs=3, batch_size=5)
    assert_same(nets, refs, hs, ref)


def test_unbuilt_networks_are_built_from_X():
    nets = [Network([Dense(4, "tanh"), Dense(1)], seed=k) for k in range(3)]
    refs = [Network([Dense(4, "tanh"), Dense(1)], seed=k) for k in range(3)]
    X, Y = make_data(10, 2, 1, "mse", np.float64)
    hs = fastnn.fit_many(nets, X, Y, epochs=2, lr=0.1)
    ref = fit_alone(refs, X, Y, lrs=[0.1] * 3, epochs=2)
    assert_same(nets, refs, hs, ref)


# ---- divergence, interruption ----------------------------------------------

@pytest.mark.parametrize("method", ["lanes", "threads"])
def test_divergence_stops_only_that_network(method):
    """Networks with huge learning rates diverge; they stop where their own
    fit stops, are restored to the same snapshot, and the others train on
    unaffected."""
    K = 6
    nets, refs = make_nets(K, 2, [4], 1, "relu", "sse")
    X, Y = make_data(40, 2, 1, "sse", np.float64)
    lrs = [0.001, 5.0, 0.002, 50.0, 0.003, 0.004]
    with pytest.warns(RuntimeWarning, match="2 of 6 networks diverged"):
        hs = fastnn.fit_many(nets, X, Y, epochs=30, batch_size=8, lr=lrs,
                             seeds=range(K), method=method)
    ref = fit_alone(refs, X, Y, lrs=lrs, seeds=list(range(K)), epochs=30,
                    batch_size=8)
    assert [h.stop_reason for h in hs] == [None, "diverged", None, "diverged",
                                           None, None]
    assert_same(nets, refs, hs, ref)
    for k in (1, 3):
        assert np.isfinite(nets[k].params).all()


def test_divergence_raise_after_the_others_finish():
    nets, refs = make_nets(3, 2, [4], 1, "relu", "sse")
    X, Y = make_data(40, 2, 1, "sse", np.float64)
    with pytest.raises(FloatingPointError, match=r"nets\[1\] at epoch"):
        fastnn.fit_many(nets, X, Y, epochs=20, batch_size=8, lr=[0.001, 50.0, 0.002],
                        seeds=[0, 1, 2], on_divergence="raise")
    fit_alone(refs, X, Y, lrs=[0.001, 50.0, 0.002], seeds=[0, 1, 2], epochs=20,
              batch_size=8)
    for k in (0, 2):
        np.testing.assert_array_equal(nets[k].params, refs[k].params)
    assert nets[1].history.stop_reason == "diverged"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastnn.fit_many(nets[:2], X, Y, epochs=5, batch_size=8, lr=[0.001, 50.0],
                        on_divergence="ignore")


@pytest.mark.parametrize("shuffle", [False, True], ids=["native", "any-time"])
@pytest.mark.parametrize("method", ["lanes", "threads"])
def test_ctrl_c_stops_promptly_and_leaves_every_network_consistent(ctrl_c, method,
                                                                   shuffle):
    """Without shuffling the native run starts at once and Ctrl-C lands in
    it; with shuffling it may land while the row orders are drawn (before
    any network moved): either way every network is consistent."""
    K = 16
    nets, _ = make_nets(K, 2, [4], 1)
    X, Y = make_data(64, 2, 1, "mse", np.float64)
    before = [n.params.copy() for n in nets]
    delay = ctrl_c(lambda: fastnn.fit_many(nets, X, Y, epochs=10 ** 7, batch_size=8,
                                           lr=0.01, method=method, threads=2,
                                           shuffle=shuffle),
                   after=0.3)
    assert delay < 0.5
    moved = 0
    for net, p0 in zip(nets, before):
        h = net.history
        assert h.stop_reason == "interrupted"
        assert np.isfinite(net.params).all()
        assert all(np.isfinite(h.loss))
        moved += not np.array_equal(net.params, p0)
        # consistent: training on from here works, and the network is free
        net.fit(X, Y, epochs=1, lr=0.01)
    assert moved >= 1 or shuffle


# ---- bad input: clear errors before anything runs ---------------------------

def _snapshot(nets):
    return [(n.params.copy(), n._opt_state, n.history) for n in nets]


@pytest.mark.parametrize("bad, kw, match", [
    ("nets", dict(nets=[]), "nets is empty"),
    ("nets", dict(nets="abc"), "not a Network"),
    ("one net", dict(nets=None), "sequence of networks"),
    ("shape", dict(other=Network([Dense(5, "tanh"), Dense(1)], n_in=2)),
     "differs from nets\\[0\\] in its layers"),
    ("act", dict(other=Network([Dense(4, "relu"), Dense(1)], n_in=2)), "layers"),
    ("loss", dict(other=Network([Dense(4, "tanh"), Dense(1)], loss="sse", n_in=2)),
     "its loss"),
    ("dtype", dict(other=Network([Dense(4, "tanh"), Dense(1)], n_in=2,
                                 dtype=np.float32)), "its dtype"),
    ("n_in", dict(other=Network([Dense(4, "tanh"), Dense(1)], n_in=3)),
     "different input widths"),
    ("X", dict(X=np.zeros((10, 3))), "X has 3 features"),
    ("X nan", dict(X=np.full((10, 2), np.nan)), "NaN"),
    ("y", dict(y=np.zeros((9, 1))), "y has 9 rows"),
    ("lr len", dict(lr=[0.1, 0.2]), "lr has 2 entries for 3 networks"),
    ("lr neg", dict(lr=[0.1, -1, 0.1]), "lr\\[1\\]"),
    ("wd", dict(weight_decay=[0, 0, float("nan")]), "weight_decay\\[2\\]"),
    ("idx range", dict(sample_indices=[[0, 1], [0, 10], [1]]),
     "sample_indices\\[1\\] holds row indices in \\[0, 10\\], outside \\[0, 10\\)"),
    ("idx neg", dict(sample_indices=[[0], [-1], [1]]), "outside"),
    ("idx empty", dict(sample_indices=[[0], [], [1]]), "sample_indices\\[1\\] is empty"),
    ("idx float", dict(sample_indices=[[0.5], [1], [1]]), "integers"),
    ("idx count", dict(sample_indices=[[0], [1]]), "2 entries for 3 networks"),
    ("seeds", dict(seeds=[1, 2]), "seeds has 2 entries"),
    ("seed type", dict(seeds=[1, "a", 2]), "seeds\\[1\\]"),
    ("optimizer", dict(optimizer="rmsprop"), "unknown optimizer"),
    ("optimizer list", dict(optimizer=["sgd", "adam"]), "2 entries for 3"),
    ("lr twice", dict(optimizer=SGD(0.1), lr=0.1), "either to fit"),
    ("wd twice", dict(optimizer=SGD(0.1), weight_decay=0.1, lr=None),
     "weight_decay either"),
    ("epochs", dict(epochs=-1), "epochs"),
    ("batch", dict(batch_size=0), "batch_size"),
    ("divergence", dict(on_divergence="explode"), "on_divergence"),
    ("threads", dict(threads=0), "threads"),
    ("method", dict(method="gpu"), "method"),
    ("sw", dict(sample_weight=np.zeros(10)), "sums to 0"),
    ("sw bag", dict(sample_weight=np.r_[np.zeros(5), np.ones(5)],
                    sample_indices=[[0, 6], [1, 2], [7]]),
     "sample_indices\\[1\\]"),
])
def test_bad_input_raises_before_anything_runs(bad, kw, match):
    kw = dict(kw)                        # the parameter is shared between runs
    nets, _ = make_nets(3, 2, [4], 1)
    X, Y = make_data(10, 2, 1, "mse", np.float64)
    state = _snapshot(nets)
    args = dict(X=X, y=Y, epochs=2, lr=0.1)
    if "nets" in kw:
        target = kw.pop("nets")
        if target is None:
            target = nets[0]
    else:
        target = nets
        if "other" in kw:
            target = nets[:2] + [kw.pop("other")]
    args.update(kw)
    with pytest.raises((ValueError, TypeError), match=match):
        fastnn.fit_many(target, args.pop("X"), args.pop("y"), **args)
    for net, (p, st, h) in zip(nets, state):
        np.testing.assert_array_equal(net.params, p)
        assert net._opt_state is st and net.history is h


def test_lanes_refused_when_it_cannot_apply():
    nets, _ = make_nets(3, 20, [32], 1, "relu")
    X, Y = make_data(10, 20, 1, "mse", np.float64)
    with pytest.raises(ValueError, match="method='lanes' needs"):
        fastnn.fit_many(nets, X, Y, method="lanes")
    nets, _ = make_nets(3, 2, [4], 1)
    X, Y = make_data(10, 2, 1, "mse", np.float64)
    with pytest.raises(ValueError, match="method='lanes' needs"):
        fastnn.fit_many(nets, X, Y, method="lanes", sample_weight=np.ones(10))
    with pytest.raises(ValueError, match="method='lanes' needs"):
        fastnn.fit_many(nets, X, Y, method="lanes",
                        sample_indices=[[0, 1], [2, 3, 4], [5]])


def test_duplicate_and_busy_networks_refused():
    nets, _ = make_nets(2, 2, [4], 1)
    X, Y = make_data(10, 2, 1, "mse", np.float64)
    with pytest.raises(ValueError, match="appears twice"):
        fastnn.fit_many([nets[0], nets[1], nets[0]], X, Y)
    import threading
    nets[1]._core.hold()
    box = []
    t = threading.Thread(target=lambda: box.append(
        pytest.raises(RuntimeError, fastnn.fit_many, nets, X, Y)))
    t.start()
    t.join()
    nets[1]._core.release()
    assert box and "nets[1]" in str(box[0].value)
    # nothing left held: both can train again
    fastnn.fit_many(nets, X, Y, epochs=1)


def test_reference_backend_refused():
    net = Network([Dense(4, "tanh"), Dense(1)], n_in=2, backend="reference")
    X, Y = make_data(10, 2, 1, "mse", np.float64)
    with pytest.raises(ValueError, match="reference backend"):
        fastnn.fit_many([net], X, Y)


# ---- sweep ------------------------------------------------------------------

def test_sweep_ranks_configurations_and_trains_each_as_fit_would():
    X, Y = make_data(60, 3, 1, "mse", np.float64, seed=5)
    Xv, Yv = make_data(30, 3, 1, "mse", np.float64, seed=6)

    def build(seed, hidden):
        return Network([Dense(hidden, "tanh"), Dense(1)], n_in=3, seed=seed)

    grid = {"lr": [0.001, 0.05, 1e6], "hidden": [2, 4], "seed": [0, 1]}
    with pytest.raises(ValueError, match="differs from nets\\[0\\] in its layers"):
        fastnn.sweep(build, grid, X, Y, validation_data=(Xv, Yv), epochs=5)
    grid = {"lr": [0.001, 0.05, 1e6], "weight_decay": [0.0, 0.01], "seed": [0, 1]}
    res = fastnn.sweep(lambda seed: build(seed, 4), grid, X, Y,
                       validation_data=(Xv, Yv), epochs=5, batch_size=16)
    assert len(res) == 12
    vals = [r["val_loss"] for r in res.rows if not r["diverged"]]
    assert vals == sorted(vals)
    assert all(r["diverged"] for r in res.rows[len(vals):])
    assert all(r["lr"] == 1e6 for r in res.rows if r["diverged"])
    best = res.best
    ref = build(best["seed"], 4)
    ref.fit(X, Y, epochs=5, batch_size=16, seed=best["seed"],
            optimizer=_with_wd("sgd", best["lr"], best["weight_decay"]))
    np.testing.assert_array_equal(ref.params, res.best_net.params)
    assert best["val_loss"] == ref.loss(Xv, Yv)
    with pytest.raises(ValueError, match="through the grid"):
        fastnn.sweep(lambda seed: build(seed, 4), {"seed": [0]}, X, Y, lr=0.1)
    with pytest.raises(ValueError, match="list of values"):
        fastnn.sweep(lambda seed: build(seed, 4), {"seed": 0}, X, Y)


# ---- against the NumPy twin ---------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", ["lanes", "threads-gemm", "bagging"])
def test_matches_reference_twin(case, dtype):
    """fastnn.reference.fit_many (each network's reference fit, float64)
    from the same start, rows and orders: equal to rounding."""
    from fastnn import reference as ref
    K, n, epochs, batch = 5, 13, 4, 5            # a partial last minibatch
    n_in, hidden = (3, [4]) if case != "threads-gemm" else (9, [16])
    nets, _ = make_nets(K, n_in, hidden, 1, "tanh", "mse", dtype)
    X, Y = make_data(n, n_in, 1, "mse", dtype, seed=2)
    rng = np.random.default_rng(4)
    idx = [rng.integers(0, n, 11) for _ in range(K)] if case == "bagging" else None
    p0 = [net.params.astype(np.float64) for net in nets]
    lrs = [0.05 + 0.01 * k for k in range(K)]
    opts = ["sgd", "momentum", "nesterov", "adam", "adam"]
    l2 = [0.0, 0.01, 0.0, 0.02, 0.001]
    hs = fastnn.fit_many(nets, X, Y, epochs=epochs, batch_size=batch, lr=lrs,
                         optimizer=opts, weight_decay=l2, seeds=range(K),
                         sample_indices=idx)
    orders = []
    for k in range(K):
        n_k = n if idx is None else len(idx[k])
        r = np.random.default_rng(k)
        orders.append(np.stack([r.permutation(n_k) for _ in range(epochs)]))
    res = ref.fit_many(nets[0].specs(), "mse", p0, nets[0].n_weights, X, Y,
                       [[lr] * epochs for lr in lrs], batch, orders, opts, l2, idx)
    tol = 1e-10 if dtype == np.float64 else 3e-4
    for k, (p, losses, _) in enumerate(res):
        np.testing.assert_allclose(hs[k].loss, losses, rtol=tol, err_msg=f"net {k}")
        np.testing.assert_allclose(nets[k].params, p, rtol=tol,
                                   atol=tol * np.abs(p).max(), err_msg=f"net {k}")


# ---- method='batched': networks side by side in shared GEMMs -----------------
#
# Equal to Network.fit to rounding (the GEMMs group their sums differently),
# not bit for bit: compared with a tolerance against each network's own fit
# and against the NumPy twin.

def assert_close(nets, refs, hists, ref_hists, dtype, tol=None):
    """tol: relative to the largest parameter (at least 1); Adam in float32
    needs more where a gradient is near 0 (its step m / sqrt(v) then has a
    size of 1 and a sign set by rounding)."""
    tol = tol or (1e-9 if dtype == np.float64 else 1e-4)
    for k, (a, b) in enumerate(zip(nets, refs)):
        scale = max(1.0, np.abs(b.params).max())
        np.testing.assert_allclose(a.params, b.params, rtol=0, atol=tol * scale,
                                   err_msg=f"params of net {k}")
        sa, sb = a._opt_state, b._opt_state
        assert (sa is None) == (sb is None), f"net {k}: optimizer state"
        if sb is not None:
            assert sa["kind"] == sb["kind"] and sa["t"] == sb["t"], f"net {k}"
            for key in ("vel", "sq"):
                if sb[key] is not None:
                    np.testing.assert_allclose(
                        sa[key], sb[key], rtol=0,
                        atol=tol * max(1.0, np.abs(sb[key]).max()),
                        err_msg=f"{key} of net {k}")
        np.testing.assert_allclose(hists[k].loss, ref_hists[k].loss, rtol=tol,
                                   atol=tol, err_msg=f"epoch losses of net {k}")
        np.testing.assert_array_equal(hists[k].lr, ref_hists[k].lr)
        assert hists[k].stop_reason == ref_hists[k].stop_reason, f"net {k}"
        assert a.history is hists[k]


def softmax_data(n, n_in, n_out, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_in)).astype(dtype)
    Y = np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, n)]
    return X, Y


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("opt", OPTS)
@pytest.mark.parametrize("loss", ["sse", "mse", "bce", "softmax_ce", "huber"])
def test_batched_matches_fit_losses_optimizers(loss, opt, dtype):
    K = 5                                  # not a multiple of the threads
    n_out = 3 if loss == "softmax_ce" else 2
    out_act = "softmax" if loss == "softmax_ce" else None
    nets, refs = make_nets(K, 9, [12], n_out, "tanh", loss, dtype, True, out_act)
    if loss == "softmax_ce":
        X, Y = softmax_data(37, 9, n_out, dtype)
    else:
        X, Y = make_data(37, 9, n_out, loss, dtype)
    lrs = [0.002 * (k + 1) for k in range(K)]
    wds = [0.0, 1e-3, 0.0, 1e-2, 1e-4]
    hs = fastnn.fit_many(nets, X, Y, epochs=4, batch_size=8, lr=lrs, seeds=3,
                         optimizer=opt, weight_decay=wds, method="batched")
    ref = fit_alone(refs, X, Y, lrs=lrs, seeds=[3] * K, wds=wds, epochs=4,
                    batch_size=8, optimizer=opt)
    assert_close(nets, refs, hs, ref, dtype,
                 3e-3 if opt == "adam" and dtype == np.float32 else None)


BATCHED_SHAPES = {"20-32-1": (20, [32], 1), "7-5-3-2": (7, [5, 3], 2),
                  "3-1": (3, [], 1), "1-1-1": (1, [1], 1), "16-40-8-1": (16, [40, 8], 1)}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", list(BATCHED_SHAPES))
def test_batched_matches_fit_shapes_activations(shape, act, dtype):
    n_in, hidden, n_out = BATCHED_SHAPES[shape]
    K = 4
    bias = act not in ("relu", "elu")
    out_act = "tanh" if act == "sigmoid" else None
    nets, refs = make_nets(K, n_in, hidden, n_out, act, "mse", dtype, bias, out_act)
    X, Y = make_data(29, n_in, n_out, "mse", dtype, seed=3)
    for opt in ("sgd", "adam"):
        hs = fastnn.fit_many(nets, X, Y, epochs=3, batch_size=6, lr=0.03,
                             optimizer=opt, seeds=7, method="batched")
        ref = fit_alone(refs, X, Y, lrs=[0.03] * K, seeds=[7] * K, epochs=3,
                        batch_size=6, optimizer=opt)
        assert_close(nets, refs, hs, ref, dtype,
                     3e-3 if opt == "adam" and dtype == np.float32 else None)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("rows", ["full batch", "in order", "shuffled, one seed",
                                  "batch of 1"])
def test_batched_rows_schedules_threads(rows, threads):
    K = 7
    nets, refs = make_nets(K, 6, [10], 1, "relu", "mse")
    X, Y = make_data(23, 6, 1, "mse", np.float64, seed=1)
    batch = {"full batch": None, "batch of 1": 1}.get(rows, 5)
    shuffle = rows != "in order"
    sched = InverseScaling(0.5) if threads == 2 else StepDecay(2, 0.5)
    lrs = [0.01 + 0.003 * k for k in range(K)]
    hs = fastnn.fit_many(nets, X, Y, epochs=5, batch_size=batch, lr=lrs,
                         optimizer="momentum", seeds=4, shuffle=shuffle,
                         lr_schedule=sched, threads=threads, method="batched")
    ref = fit_alone(refs, X, Y, lrs=lrs, seeds=[4] * K, epochs=5, batch_size=batch,
                    optimizer="momentum", shuffle=shuffle, lr_schedule=sched)
    assert_close(nets, refs, hs, ref, np.float64)


def test_batched_state_carries_over_and_long_runs(monkeypatch):
    """Adam's state and step count carry from one call to the next, as with
    fit; a run longer than one chunk of row orders gives the same as one."""
    import fastnn.many as many
    K = 3
    nets, refs = make_nets(K, 5, [8], 1, "tanh", "mse")
    X, Y = make_data(30, 5, 1, "mse", np.float64)
    monkeypatch.setattr(many, "_CHUNK_ELEMS", 30 * 2)    # two epochs per chunk
    for _ in range(2):
        hs = fastnn.fit_many(nets, X, Y, epochs=5, batch_size=7, lr=0.01,
                             optimizer="adam", seeds=1, method="batched")
        ref = fit_alone(refs, X, Y, lrs=[0.01] * K, seeds=[1] * K, epochs=5,
                        batch_size=7, optimizer="adam")
    assert nets[0]._opt_state["t"] == 2 * 5 * 5
    assert_close(nets, refs, hs, ref, np.float64)


def test_batched_divergence_stops_only_that_network():
    K = 5
    nets, refs = make_nets(K, 4, [8], 1, "relu", "sse")
    X, Y = make_data(40, 4, 1, "sse", np.float64)
    lrs = [0.001, 5.0, 0.002, 50.0, 0.003]
    with pytest.warns(RuntimeWarning, match="2 of 5 networks diverged"):
        hs = fastnn.fit_many(nets, X, Y, epochs=30, batch_size=8, lr=lrs, seeds=0,
                             method="batched")
    ref = fit_alone(refs, X, Y, lrs=lrs, seeds=[0] * K, epochs=30, batch_size=8)
    assert [h.stop_reason for h in hs] == [None, "diverged", None, "diverged", None]
    for k in (1, 3):
        assert np.isfinite(nets[k].params).all()
        assert nets[k]._opt_state is None
        # stopped in the same epoch as its own fit, back at the same snapshot
        assert len(hs[k].loss) == len(ref[k].loss)
    assert_close(nets, refs, hs, ref, np.float64)


@pytest.mark.parametrize("threads", [1, 2])
def test_batched_ctrl_c_leaves_every_network_consistent(ctrl_c, threads):
    K = 8
    nets, _ = make_nets(K, 10, [16], 1)
    X, Y = make_data(64, 10, 1, "mse", np.float64)
    before = [n.params.copy() for n in nets]
    # the networks' own buffers change only at the end: with two workers the
    # signal goes once they run (the timer's thread is the third new one);
    # on this thread it may land before the run, leaving the networks as
    # they were
    n0 = threading.active_count()
    delay = ctrl_c(lambda: fastnn.fit_many(nets, X, Y, epochs=10 ** 7, batch_size=8,
                                           lr=0.001, seeds=0, threads=threads,
                                           method="batched"),
                   after=0.3, when=(lambda: threading.active_count() >= n0 + 3)
                   if threads == 2 else None)
    assert delay < 0.5
    for net, p0 in zip(nets, before):
        h = net.history
        assert np.isfinite(net.params).all()
        assert all(np.isfinite(h.loss))
        if threads == 2 or h.loss:
            assert h.stop_reason == "interrupted"
            assert len(h.loss) >= 1 and not np.array_equal(net.params, p0)
        net.fit(X, Y, epochs=1, lr=0.01)     # free, and trains on


@pytest.mark.parametrize("kw, match", [
    (dict(sample_weight=np.ones(20)), "no sample_weight"),
    (dict(sample_indices=[[0, 1]] * 3), "same rows"),
    (dict(seeds=[0, 1, 2]), "one order"),
    (dict(seeds=None), "one order"),
    (dict(optimizer=["sgd", "adam", "sgd"]), "one optimizer"),
    (dict(optimizer=[SGD(0.1, momentum=0.9), SGD(0.1, momentum=0.5),
                     SGD(0.1, momentum=0.9)], lr=None), "one optimizer"),
    (dict(client=object()), "client"),
])
def test_batched_refusals_leave_the_networks_unchanged(kw, match):
    nets, _ = make_nets(3, 2, [4], 1)
    X, Y = make_data(20, 2, 1, "mse", np.float64)
    state = _snapshot(nets)
    args = dict(epochs=2, lr=0.1, batch_size=5, seeds=0, method="batched")
    args.update(kw)
    with pytest.raises((ValueError, TypeError), match=match):
        fastnn.fit_many(nets, X, Y, **args)
    for net, (p, st, h) in zip(nets, state):
        np.testing.assert_array_equal(net.params, p)
        assert net._opt_state is st and net.history is h
    # shuffle=False or full batches need no common seed
    fastnn.fit_many(nets, X, Y, epochs=1, lr=0.1, batch_size=5, shuffle=False,
                    method="batched")
    mo = make_nets(3, 2, [4], 1)[0]
    mo[1] = Network([Maxout(4, 2), Dense(1)], n_in=2)
    with pytest.raises(ValueError, match="differs"):
        fastnn.fit_many(mo, X, Y, method="batched", seeds=0)
    mo = [Network([Maxout(4, 2), Dense(1)], n_in=2, seed=k) for k in range(2)]
    with pytest.raises(ValueError, match="dense layers only"):
        fastnn.fit_many(mo, X, Y, method="batched", seeds=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_batched_matches_reference_twin(dtype):
    """fastnn.reference.fit_many from the same start and the one row order:
    equal to rounding."""
    from fastnn import reference as ref
    K, n, epochs, batch = 5, 13, 4, 5
    nets, _ = make_nets(K, 9, [16, 3], 1, "tanh", "mse", dtype)
    X, Y = make_data(n, 9, 1, "mse", dtype, seed=2)
    p0 = [net.params.astype(np.float64) for net in nets]
    lrs = [0.05 + 0.01 * k for k in range(K)]
    l2 = [0.0, 0.01, 0.0, 0.02, 0.001]
    hs = fastnn.fit_many(nets, X, Y, epochs=epochs, batch_size=batch, lr=lrs,
                         optimizer="adam", weight_decay=l2, seeds=6, method="batched")
    r = np.random.default_rng(6)
    order = np.stack([r.permutation(n) for _ in range(epochs)])
    res = ref.fit_many(nets[0].specs(), "mse", p0, nets[0].n_weights, X, Y,
                       [[lr] * epochs for lr in lrs], batch, [order] * K,
                       ["adam"] * K, l2, None)
    tol = 1e-10 if dtype == np.float64 else 3e-4
    for k, (p, losses, _) in enumerate(res):
        np.testing.assert_allclose(hs[k].loss, losses, rtol=tol, err_msg=f"net {k}")
        np.testing.assert_allclose(nets[k].params, p, rtol=tol,
                                   atol=tol * np.abs(p).max(), err_msg=f"net {k}")


def test_fit_stacked_checks_its_buffers_and_fills_its_outputs():
    """The native entry refuses buffers that would be read or written out of
    bounds, and overwrites outputs it is given pre-filled with NaN."""
    from fastnn._many import fit_stacked
    from fastnn.many import _Stack
    K = 2
    nets, _ = make_nets(K, 3, [4], 1)
    X, Y = make_data(10, 3, 1, "mse", np.float64)
    lay = _Stack(nets[0].specs(), K)
    params = lay.stack([n.params for n in nets], np.float64)
    grads = np.full_like(params, np.nan)
    el = np.full((K, 2), np.nan)
    t = np.zeros(K, dtype=np.int64)
    args = [lay.widths, [2, 0], [0.0, 0.0], lay.woff, lay.boff, lay.nid, 1, 0.0,
            lay.n_weights, X, Y, None, np.full((K, 1), 0.1), 0, 0.0, 0.9, 0.999,
            1e-8, np.zeros(K), t, params, grads, None, None, None, 1, 0, 5, el]
    out = fit_stacked(*args)
    assert np.isfinite(el).all() and np.isfinite(grads).all()
    assert out["epochs_done"].tolist() == [2, 2] and not out["stopped"]
    for i, bad, match in [(20, params[:-1], "has shape"),
                          (21, grads.astype(np.float32), "dtype"),
                          (5, np.zeros(len(lay.nid), np.int32) + 5, "nid"),
                          (3, [0, 10 ** 6], "outside the buffer"),
                          (12, np.zeros((K, 3)), "one column"),
                          (11, np.full((2, 10), 99, np.int64), "outside X"),
                          (19, np.zeros(1, np.int64), "one entry per network")]:
        a = list(args)
        a[i] = bad
        with pytest.raises((ValueError, TypeError), match=match):
            fit_stacked(*a)


@pytest.mark.parametrize("method", ["threads", "batched"])
def test_blas_threads_restored_after_the_workers(ctrl_c, method):
    """The workers run with numpy's BLAS on one thread; its own count is back
    afterwards, also after Ctrl-C."""
    getn = fastnn.blas_info()["num_threads"]
    if getn is None:
        pytest.skip("this BLAS exposes no thread count")
    nets, _ = make_nets(4, 30, [40], 1)
    X, Y = make_data(64, 30, 1, "mse", np.float64)
    fastnn.fit_many(nets, X, Y, epochs=2, batch_size=16, lr=0.01, seeds=0,
                    threads=2, method=method)
    assert fastnn.blas_info()["num_threads"] == getn
    ctrl_c(lambda: fastnn.fit_many(nets, X, Y, epochs=10 ** 7, batch_size=16,
                                   lr=0.001, seeds=0, threads=2, method=method),
           after=0.2)
    assert fastnn.blas_info()["num_threads"] == getn


def test_blas_threads_restored_after_overlapping_calls():
    """fit_many from two Python threads at once: the BLAS's own thread count
    comes back when the last call ends, whichever ends first."""
    getn = fastnn.blas_info()["num_threads"]
    if getn is None:
        pytest.skip("this BLAS exposes no thread count")
    X, Y = make_data(64, 30, 1, "mse", np.float64)
    sets = [make_nets(3, 30, [40], 1, seed0=10 * i)[0] for i in range(2)]
    errors = []

    def run(nets, epochs):
        try:
            fastnn.fit_many(nets, X, Y, epochs=epochs, batch_size=16, lr=0.01,
                            seeds=0, threads=2, method="threads")
        except Exception as e:          # reported below
            errors.append(e)

    ts = [threading.Thread(target=run, args=(sets[0], 30)),
          threading.Thread(target=run, args=(sets[1], 3))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert fastnn.blas_info()["num_threads"] == getn
