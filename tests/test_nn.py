"""The drop-in Network: the lecture notes' layers and losses, parity with the
lecture's NumPy loop, native vs reference backends step by step (tier 3),
and input checking at the boundary."""
import numpy as np
import pytest

import fastnn
from fastnn import SGD, Dense, Maxout, Network
from fastnn import reference as ref
from fastnn.lecture import lecture_numpy_loop

ACTS = ["sigmoid", "tanh", "relu", "leaky_relu", "elu"]


def rel(a, b):
    return np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-300)


# ---- the lecture notes' network ------------------------------------------------

def test_lecture_parity_2000_steps():
    rs = np.random.RandomState(0)
    N, D_in, H, D_out = 64, 1000, 100, 10
    x, y = rs.randn(N, D_in), rs.randn(N, D_out)
    w1, w2 = rs.randn(D_in, H), rs.randn(H, D_out)
    v1, v2 = w1.copy(), w2.copy()
    np_loss = lecture_numpy_loop(x, y, v1, v2, 2000)
    # the lecture's network in fastnn: these lines are the whole program
    net = Network([Dense(H, "sigmoid", bias=False), Dense(D_out, bias=False)], loss="sse")
    net.set_weights([w1, w2])
    for t in range(2000):
        loss = net.train_step(x, y, 1e-4)
    assert rel(net.layers[0].W, v1) < 1e-10
    assert rel(net.layers[1].W, v2) < 1e-10
    # the loss returned is the one before the last update, as in the lecture
    assert abs(loss - np_loss) <= 1e-9 * np_loss


def test_lecture_parity_via_fit():
    rs = np.random.RandomState(1)
    x, y = rs.randn(16, 30), rs.randn(16, 3)
    w1, w2 = rs.randn(30, 8), rs.randn(8, 3)
    v1, v2 = w1.copy(), w2.copy()
    lecture_numpy_loop(x, y, v1, v2, 300)
    net = Network([Dense(8, "sigmoid", bias=False), Dense(3, bias=False)], loss="sse")
    net.set_weights([w1, w2])
    net.fit(x, y, epochs=300, lr=1e-4)
    assert rel(net.layers[0].W, v1) < 1e-10
    assert rel(net.layers[1].W, v2) < 1e-10


# ---- the lecture notes' layers and losses -----------------------------------

@pytest.mark.parametrize("act", ACTS + ["identity"])
def test_single_neuron(act):
    """Y = f(w1 X1 + w2 X2 + b)."""
    net = Network([Dense(1, act)], n_in=2)
    net.set_weights([(np.array([[0.5], [-1.5]]), np.array([0.25]))])
    X = np.array([[1.0, 2.0], [-3.0, 0.5], [0.0, 0.0], [40.0, -30.0]])
    z = 0.5 * X[:, 0] - 1.5 * X[:, 1] + 0.25
    expect = ref.activation(z, act, net.layers[0].alpha)
    np.testing.assert_allclose(net.forward(X)[:, 0], expect, rtol=1e-14, atol=1e-300)


def test_leaky_relu_is_the_lectures_max_01x_x():
    net = Network([Dense(1, "leaky_relu")], n_in=1)
    net.set_weights([(np.ones((1, 1)), np.zeros(1))])
    x = np.linspace(-5, 5, 11)[:, None]
    np.testing.assert_array_equal(net.forward(x)[:, 0], np.maximum(0.1 * x[:, 0], x[:, 0]))


def test_elu_default_alpha_is_one():
    net = Network([Dense(1, "elu")], n_in=1)
    net.set_weights([(np.ones((1, 1)), np.zeros(1))])
    x = np.array([[-2.0], [-1e-9], [0.0], [3.0]])
    np.testing.assert_allclose(net.forward(x)[:, 0], np.where(x[:, 0] >= 0, x[:, 0], np.expm1(x[:, 0])),
                               rtol=1e-14)


def test_maxout_is_max_of_two_linear_pieces():
    """Maxout: max(w1.x + b1, w2.x + b2)."""
    rs = np.random.RandomState(2)
    net = Network([Maxout(3, pieces=2)], n_in=4, seed=0)
    X = rs.randn(10, 4)
    W, b = net.layers[0].W, net.layers[0].b
    b[...] = rs.randn(6)
    pieces = (X @ W + b).reshape(10, 3, 2)
    np.testing.assert_allclose(net.forward(X), pieces.max(axis=2), rtol=1e-13, atol=1e-15)


def separable(n=400, seed=3):
    rs = np.random.RandomState(seed)
    X = rs.randn(n, 2)
    w, b = np.array([2.0, -1.0]), 0.3
    s = X @ w + b
    keep = np.abs(s) > 0.2          # a margin: truly separable
    return X[keep], (s[keep] > 0).astype(np.float64)


def test_logistic_regression_separable():
    """One sigmoid neuron with log loss reaches >= 99% accuracy."""
    X, y = separable()
    net = Network([Dense(1, "sigmoid")], loss="bce", n_in=2, seed=0)
    for _ in range(300):
        net.train_step(X, y, 1.0)
    acc = np.mean((net.predict(X)[:, 0] > 0.5) == (y > 0.5))
    assert acc >= 0.99


def test_logistic_regression_fit():
    X, y = separable(seed=4)
    net = Network([Dense(1, "sigmoid")], loss="bce", seed=0)
    net.fit(X, y, epochs=40, batch_size=16, lr=0.5, seed=0)
    assert np.mean((net.predict(X)[:, 0] > 0.5) == (y > 0.5)) >= 0.99


@pytest.mark.parametrize("act", ACTS)
def test_one_layer_network_of_4_neurons(act):
    """Every input feeds each of the 4 neurons: output = f(X W + b), W (n_in, 4)."""
    rs = np.random.RandomState(5)
    net = Network([Dense(4, act)], n_in=3, seed=1)
    assert net.layers[0].W.shape == (3, 4) and net.layers[0].b.shape == (4,)
    X = rs.randn(20, 3)
    expect = ref.activation(X @ net.layers[0].W + net.layers[0].b, act, net.layers[0].alpha)
    np.testing.assert_allclose(net.forward(X), expect, rtol=1e-13, atol=1e-15)
    # and it learns: fit f(X A) for a random A
    A = rs.randn(3, 4) * 0.5
    Y = ref.activation(X @ A, act, net.layers[0].alpha)
    before = net.loss(X, Y)
    for _ in range(200):
        net.train_step(X, Y, 0.2)
    assert net.loss(X, Y) < 0.3 * before


@pytest.mark.parametrize("hidden", ACTS + ["maxout"])
def test_two_layer_network_learns(hidden):
    rs = np.random.RandomState(6)
    X = rs.uniform(-2, 2, (256, 2))
    Y = np.sin(X[:, :1]) * np.cos(X[:, 1:])
    first = Maxout(16) if hidden == "maxout" else Dense(16, hidden)
    net = Network([first, Dense(1)], loss="mse", seed=0)
    h = net.fit(X, Y, epochs=60, batch_size=32, optimizer="adam", lr=0.01, seed=0)
    assert h.loss[-1] < 0.25 * h.loss[0]


# ---- native vs reference, step by step (tier 3) ----------------------------

def _stack(kind, loss, bias):
    out = {"mse": Dense(3, bias=bias), "sse": Dense(3, "tanh", bias=bias),
           "bce": Dense(2, "sigmoid", bias=bias), "softmax_ce": Dense(4, "softmax", bias=bias)}[loss]
    hidden = Maxout(5, pieces=3, bias=bias) if kind == "maxout" else Dense(7, kind, bias=bias)
    return [hidden, Dense(6, "tanh", bias=bias), out]


def _targets(rs, loss, m):
    if loss == "bce":
        return (rs.rand(m, 2) > 0.5).astype(float)
    if loss == "softmax_ce":
        return np.eye(4)[rs.randint(0, 4, m)]
    return rs.randn(m, 3)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("loss", ["mse", "sse", "bce", "softmax_ce"])
@pytest.mark.parametrize("kind", ACTS + ["maxout", "identity"])
@pytest.mark.parametrize("m", [13, 5], ids=["m13", "m5"])
def test_backends_agree_step_by_step(m, kind, loss, bias, dtype):
    rs = np.random.RandomState(7)
    n_in = 9
    X, Y = rs.randn(m, n_in), _targets(rs, loss, m)
    nets = [Network(_stack(kind, loss, bias), loss=loss, n_in=n_in, dtype=dtype, seed=3,
                    backend=b) for b in ("native", "reference")]
    np.testing.assert_array_equal(nets[0].params, nets[1].params)
    lr = 0.002 if loss == "sse" else 0.05
    tol = 1e-10 if dtype == np.float64 else 2e-4
    for step in range(10):
        ln, lr_ = (net.train_step(X, Y, lr) for net in nets)
        assert abs(ln - lr_) <= tol * max(1.0, abs(lr_)), f"step {step}"
    assert rel(nets[0].params, nets[1].params.astype(np.float64)) < tol
    # loss_and_grad agrees too (and leaves params alone)
    p0 = nets[0].params.copy()
    la, lb = (net.loss_and_grad(X, Y) for net in nets)
    assert abs(la - lb) <= tol * max(1.0, abs(lb))
    np.testing.assert_allclose(nets[0].grads, nets[1].grads,
                               rtol=tol * 10, atol=tol * 10 * np.abs(nets[1].grads).max())
    np.testing.assert_array_equal(nets[0].params, p0)


@pytest.mark.parametrize("m", [1, 3, 8, 9])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_weighted_loss_and_grad_small_batches(m, dtype):
    """Sample weights and the gradient on small batches (the tiny-GEMM and
    row-register paths of csrc/gemm_impl.h)."""
    rs = np.random.RandomState(15)
    X, Y, w = rs.randn(m, 4), rs.randn(m, 3), rs.rand(m) + 0.1
    nets = [Network([Dense(6, "elu"), Dense(5, "leaky_relu"), Dense(3, "tanh")], n_in=4,
                    dtype=dtype, seed=2, backend=b) for b in ("native", "reference")]
    la, lb = (n.loss_and_grad(X, Y, sample_weight=w) for n in nets)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert la == pytest.approx(lb, rel=tol)
    np.testing.assert_allclose(nets[0].grads, nets[1].grads, rtol=tol * 10,
                               atol=tol * 10 * np.abs(nets[1].grads).max())


def test_loss_and_grad_then_step_equals_train_step():
    rs = np.random.RandomState(8)
    X, Y = rs.randn(20, 4), rs.randn(20, 2)
    a = Network([Dense(5, "tanh"), Dense(2)], n_in=4, seed=1)
    b = Network([Dense(5, "tanh"), Dense(2)], n_in=4, seed=1)
    for _ in range(5):
        la = a.loss_and_grad(X, Y)
        a.step(0.1)
        lb = b.train_step(X, Y, 0.1)
        assert la == pytest.approx(lb, rel=1e-13)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-12, atol=1e-14)


def test_loss_values_match_definitions():
    rs = np.random.RandomState(9)
    X, Y = rs.randn(11, 3), rs.randn(11, 2)
    for loss, f in [("sse", lambda p: ((p - Y) ** 2).sum()),
                    ("mse", lambda p: 0.5 * ((p - Y) ** 2).sum() / len(Y))]:
        net = Network([Dense(2)], loss=loss, n_in=3, seed=0)
        assert net.loss(X, Y) == pytest.approx(f(net.predict(X)), rel=1e-13)
    w = rs.rand(11)
    net = Network([Dense(2)], loss="mse", n_in=3, seed=0)
    d = 0.5 * ((net.predict(X) - Y) ** 2).sum(axis=1)
    assert net.loss(X, Y, sample_weight=w) == pytest.approx((w * d).sum() / w.sum(), rel=1e-13)


def test_softmax_ce_accepts_integer_labels():
    rs = np.random.RandomState(10)
    X, labels = rs.randn(30, 4), rs.randint(0, 3, 30)
    net = Network([Dense(3, "softmax")], loss="softmax_ce", n_in=4, seed=0)
    assert net.loss(X, labels) == pytest.approx(net.loss(X, np.eye(3)[labels]), rel=1e-15)
    p = net.predict(X)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-14)


def test_large_predict_is_blocked_and_matches():
    rs = np.random.RandomState(11)
    net = Network([Dense(64, "relu"), Dense(2)], n_in=8, seed=0)
    X = rs.randn(70000, 8)          # larger than one workspace block
    full = net.predict(X)
    np.testing.assert_allclose(full[-100:], net.predict(X[-100:]), rtol=1e-13, atol=1e-13)
    out, _ = ref.net_forward(net.specs(), net.loss_name, net.params, X[:500])
    np.testing.assert_allclose(full[:500], out, rtol=1e-12, atol=1e-12)


# ---- construction ----------------------------------------------------------

def test_init_schemes_and_seed():
    a = Network([Dense(50, "relu"), Dense(1)], n_in=40, init="he", seed=3)
    b = Network([Dense(50, "relu"), Dense(1)], n_in=40, init="he", seed=3)
    np.testing.assert_array_equal(a.params, b.params)
    assert abs(a.layers[0].W.std() - np.sqrt(2 / 40)) < 0.02
    g = Network([Dense(50), Dense(1)], n_in=40, init="glorot", seed=3)
    s = np.sqrt(6 / 90)
    assert np.abs(g.layers[0].W).max() <= s and np.abs(g.layers[0].W).max() > 0.9 * s
    n = Network([Dense(50), Dense(1)], n_in=40, init="normal", seed=3)
    assert abs(n.layers[0].W.std() - 1) < 0.05
    assert all(l.b is not None and not l.b.any() for l in n.layers)


def test_params_layout_views():
    net = Network([Dense(3, "tanh"), Maxout(2, pieces=3), Dense(1, bias=False)], n_in=4)
    W0, W1, W2 = (l.W for l in net.layers)
    assert W0.shape == (4, 3) and W1.shape == (3, 6) and W2.shape == (2, 1)
    assert net.layers[2].b is None
    assert net.n_params == 12 + 18 + 2 + 3 + 6
    for l in net.layers:
        assert np.shares_memory(l.W, net.params)
    net.params[:] = 0
    assert not W1.any()
    # weights first: L2 covers params[:n_weights]
    assert net.n_weights == 12 + 18 + 2


def test_lazy_build_from_first_data():
    net = Network([Dense(4, "tanh"), Dense(1)], seed=0)
    assert not net.built
    with pytest.raises(RuntimeError, match="not built"):
        net.get_weights()
    net.train_step(np.ones((5, 7)), np.ones(5), 0.1)
    assert net.n_in == 7 and net.layers[0].W.shape == (7, 4)
    with pytest.raises(ValueError, match="has 3 features, but the network expects 7"):
        net.predict(np.ones((2, 3)))


# ---- input checking ----------------------------------------------------------

def _net():
    return Network([Dense(4, "tanh"), Dense(2)], n_in=3, seed=0)


GOOD_X = np.arange(15, dtype=float).reshape(5, 3) / 10
GOOD_Y = np.ones((5, 2))

BAD_CALLS = [
    ("features", lambda n: n.train_step(np.ones((5, 4)), GOOD_Y, 0.1), ValueError,
     "4 features, but the network expects 3"),
    ("y shape", lambda n: n.train_step(GOOD_X, np.ones((5, 3)), 0.1), ValueError, "expected"),
    ("y rows", lambda n: n.train_step(GOOD_X, np.ones((4, 2)), 0.1), ValueError, "4 rows"),
    ("y 1-D for 2 outputs", lambda n: n.train_step(GOOD_X, np.ones(5), 0.1), ValueError,
     "2 outputs"),
    ("X 1-D", lambda n: n.train_step(np.ones(3), GOOD_Y, 0.1), ValueError, "2-D"),
    ("X 3-D", lambda n: n.predict(np.ones((2, 3, 1))), ValueError, "2-D"),
    ("strings", lambda n: n.train_step(np.array([["a", "b", "c"]] * 5), GOOD_Y, 0.1),
     TypeError, "numeric"),
    ("objects", lambda n: n.train_step(np.array([[object()] * 3] * 5), GOOD_Y, 0.1),
     TypeError, "numeric"),
    ("complex", lambda n: n.train_step(GOOD_X + 1j, GOOD_Y, 0.1), TypeError, "complex"),
    ("NaN in X", lambda n: n.train_step(np.where(GOOD_X > 1, np.nan, GOOD_X), GOOD_Y, 0.1),
     ValueError, "NaN"),
    ("inf in X", lambda n: n.train_step(np.where(GOOD_X > 1, np.inf, GOOD_X), GOOD_Y, 0.1),
     ValueError, "infinity"),
    ("NaN in y", lambda n: n.train_step(GOOD_X, np.where(GOOD_Y > 0, np.nan, 0), 0.1),
     ValueError, "NaN"),
    ("inf in y fit", lambda n: n.fit(GOOD_X, np.full((5, 2), -np.inf), epochs=2), ValueError,
     "infinity"),
    ("empty X", lambda n: n.train_step(np.ones((0, 3)), np.ones((0, 2)), 0.1), ValueError,
     "empty"),
    ("empty fit", lambda n: n.fit(np.ones((0, 3)), np.ones((0, 2))), ValueError, "empty"),
    ("ragged", lambda n: n.predict([[1, 2, 3], [4, 5]]), ValueError, "array"),
    ("NaN lr", lambda n: n.train_step(GOOD_X, GOOD_Y, float("nan")), ValueError, "lr"),
    ("lr string", lambda n: n.train_step(GOOD_X, GOOD_Y, "0.1"), ValueError, "lr"),
    ("loss_and_grad NaN", lambda n: n.loss_and_grad(GOOD_X * np.nan, GOOD_Y), ValueError,
     "NaN"),
    ("float64 overflow into float32", lambda n: Network([Dense(2)], n_in=3, dtype=np.float32)
     .train_step(GOOD_X * 1e300, GOOD_Y, 0.1), ValueError, "float32"),
    ("set_weights shape", lambda n: n.set_weights([np.ones((3, 4)), np.ones((5, 2))]),
     ValueError, "shape"),
    ("set_weights NaN", lambda n: n.set_weights([np.ones((3, 4)), np.full((4, 2), np.nan)]),
     ValueError, "NaN"),
    ("epochs", lambda n: n.fit(GOOD_X, GOOD_Y, epochs=-1), ValueError, "epochs"),
    ("batch", lambda n: n.fit(GOOD_X, GOOD_Y, batch_size=0), ValueError, "batch_size"),
    ("optimizer", lambda n: n.fit(GOOD_X, GOOD_Y, optimizer="rmsprop"), ValueError, "optimizer"),
    ("fit lr inf", lambda n: n.fit(GOOD_X, GOOD_Y, lr=float("inf")), ValueError, "lr"),
    ("fit lr NaN numpy", lambda n: n.fit(GOOD_X, GOOD_Y, lr=np.float64("nan")), ValueError, "lr"),
    ("fit lr beyond float", lambda n: n.fit(GOOD_X, GOOD_Y, lr=10 ** 400), ValueError, "lr"),
    ("fit lr bool", lambda n: n.fit(GOOD_X, GOOD_Y, lr=True), ValueError, "lr"),
    ("fit lr string", lambda n: n.fit(GOOD_X, GOOD_Y, lr="0.1"), ValueError, "lr"),
    ("fit momentum > 1", lambda n: n.fit(GOOD_X, GOOD_Y, optimizer=SGD(0.1, momentum=1.5)),
     ValueError, "momentum"),
    ("fit epochs float", lambda n: n.fit(GOOD_X, GOOD_Y, epochs=2.0), ValueError, "epochs"),
    ("fit epochs bool", lambda n: n.fit(GOOD_X, GOOD_Y, epochs=True), ValueError, "epochs"),
]


def test_fit_takes_numpy_scalars_and_ints_as_hyperparameters():
    """The checks' fast paths (plain float and int) and their general ones
    (numpy scalars, ints for reals) give the same fit."""
    a, b = _net(), _net()
    ha = a.fit(GOOD_X, GOOD_Y, epochs=3, lr=0.1, batch_size=2, seed=0)
    hb = b.fit(GOOD_X, GOOD_Y, epochs=np.int64(3), lr=np.float64(0.1),
               batch_size=np.int32(2), seed=0)
    assert len(ha) == len(hb) == 3
    np.testing.assert_array_equal(a.params, b.params)
    c = _net()
    c.fit(GOOD_X, GOOD_Y, epochs=1, lr=1, optimizer="sgd")      # an int lr
    assert np.isfinite(c.params).all()


@pytest.mark.parametrize("name,call,exc,msg", BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
def test_bad_input_raises_and_leaves_params_unchanged(name, call, exc, msg):
    net = _net()
    before = net.params.copy()
    with pytest.raises(exc, match=msg):
        call(net)
    np.testing.assert_array_equal(net.params, before)


@pytest.mark.parametrize("bad", [
    lambda: Dense(3, "swish"), lambda: Dense(0), lambda: Dense(2.5), lambda: Maxout(3, pieces=1),
    lambda: Network([Dense(2)], loss="hinge"), lambda: Network([Dense(2)], loss="bce"),
    lambda: Network([Dense(2, "softmax")], loss="mse"),
    lambda: Network([Dense(2, "softmax"), Dense(2, "softmax")], loss="softmax_ce"),
    lambda: Network([Dense(2)], dtype=np.int32), lambda: Network([Dense(2)], init="xavier"),
    lambda: Network([]), lambda: Network(["dense"]),
], ids=["activation", "units0", "units-float", "pieces1", "loss", "bce-identity",
        "softmax-mse", "softmax-hidden", "dtype", "init", "empty", "not-a-layer"])
def test_bad_construction_raises(bad):
    with pytest.raises((ValueError, TypeError)):
        bad()


def test_bce_targets_outside_01_rejected_on_fast_path_too():
    net = Network([Dense(1, "sigmoid")], loss="bce", n_in=2, seed=0)
    p = net.params.copy()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        net.train_step(np.ones((3, 2)), np.array([[0.0], [2.0], [1.0]]), 0.1)
    np.testing.assert_array_equal(net.params, p)


def test_nonfinite_loss_raises_and_leaves_params():
    net = Network([Dense(2, "relu"), Dense(1)], n_in=2, seed=0, dtype=np.float32)
    net.params[:] = 1e30           # the output overflows float32
    p = net.params.copy()
    with pytest.raises(FloatingPointError, match="unchanged"):
        net.train_step(np.ones((4, 2)) * 1e10, np.ones(4), 0.1)
    np.testing.assert_array_equal(net.params, p)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_any_layout_and_numeric_dtype_is_accepted(dtype):
    rs = np.random.RandomState(12)
    X = rs.randn(9, 6)
    Y = rs.randn(9, 2)
    outs = []
    variants = [X, np.asfortranarray(X), X.astype(np.float32), X.astype(np.float64),
                X.tolist()]
    for v in variants:
        net = Network([Dense(3, "tanh"), Dense(2)], n_in=6, seed=0, dtype=dtype)
        outs.append((net.train_step(v, Y, 0.1), net.params.copy()))
    tol = 1e-6 if dtype == np.float32 else 1e-7   # float32 copies of X differ slightly
    for L, p in outs[1:]:
        assert L == pytest.approx(outs[0][0], rel=tol)
        np.testing.assert_allclose(p, outs[0][1], rtol=tol, atol=tol)
    # strided views and integers work too
    big = rs.randn(9, 12)
    net = Network([Dense(2)], n_in=6, seed=0)
    np.testing.assert_allclose(net.predict(big[:, ::2]), net.predict(big[:, ::2].copy()))
    ints = np.arange(18).reshape(9, 2)
    net = Network([Dense(1)], n_in=2, seed=0)
    np.testing.assert_allclose(net.predict(ints), net.predict(ints.astype(float)))
    assert net.predict(np.ones((2, 2), dtype=bool)).shape == (2, 1)


def test_inputs_are_not_modified_and_refcounts_stable():
    import sys
    rs = np.random.RandomState(13)
    X, Y = rs.randn(8, 3), rs.randn(8, 2)
    X0, Y0 = X.copy(), Y.copy()
    net = _net()
    rc = (sys.getrefcount(X), sys.getrefcount(Y))
    for _ in range(50):
        net.train_step(X, Y, 0.01)
        net.predict(X)
        net.loss(X, Y)
        with pytest.raises(ValueError):
            net.train_step(X, Y[:3], 0.01)
    assert (sys.getrefcount(X), sys.getrefcount(Y)) == rc
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(Y, Y0)


def test_blas_backends_give_same_training():
    rs = np.random.RandomState(14)
    X, Y = rs.randn(100, 60), rs.randn(100, 3)
    res = []
    try:
        for which in ("numpy", "scipy", "none"):
            fastnn.use_blas(which)
            net = Network([Dense(40, "tanh"), Dense(3)], n_in=60, seed=0)
            for _ in range(5):
                net.train_step(X, Y, 0.05)
            res.append(net.params.copy())
    finally:
        fastnn.use_blas("auto")
    for p in res[1:]:
        np.testing.assert_allclose(p, res[0], rtol=1e-11, atol=1e-12)
