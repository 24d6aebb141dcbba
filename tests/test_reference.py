"""Tier 1: the NumPy reference's gradients against central finite
differences of its own forward passes, in float64.

Every backward / gradient function of fastnn.reference is differentiated
numerically through the matching forward function: bias_act_backward,
maxout_backward, loss_grad, net_loss_grad.  Inputs keep clear of the kinks
(relu / leaky_relu / elu at 0, maxout ties) so the derivative exists on the
whole stencil.  Tolerance: h = 1e-6 gives truncation ~h^2 f''' and rounding
~eps |L| / h ~ 1e-9, so rtol 1e-6 with atol 1e-8 (scaled by |L|) leaves two
orders of margin while any wrong formula is off by O(1).
"""
import numpy as np
import pytest

from fastnn import reference as R
from conftest import ALPHA, ELEMENTWISE

H = 1e-6
FD_RTOL = 1e-6
FD_ATOL = 1e-8


def num_grad(f, x, h=H):
    """Central differences of the scalar function f at array x."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    for i in range(x.size):
        xp = x.copy()
        xm = x.copy()
        xp.flat[i] += h
        xm.flat[i] -= h
        g.flat[i] = (f(xp) - f(xm)) / (2 * h)
    return g


def assert_fd(analytic, numeric, magnitude=1.0):
    np.testing.assert_allclose(analytic, numeric, rtol=FD_RTOL,
                               atol=FD_ATOL * max(1.0, magnitude))


def away_from_zero(rng, shape, lo=0.05, hi=2.0):
    """Values with lo <= |v| <= hi, random signs."""
    return rng.uniform(lo, hi, shape) * rng.choice([-1.0, 1.0], shape)


# ---- bias + activation -----------------------------------------------------

@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("act", ELEMENTWISE)
def test_bias_act_backward_fd(act, bias, rng):
    m, n = 4, 5
    alpha = ALPHA.get(act, 0.0)
    b = rng.normal(size=n) if bias else None
    v = away_from_zero(rng, (m, n))            # the pre-activation z + b
    z = v - b if bias else v
    dy = rng.normal(size=(m, n))
    y = R.bias_act_forward(z, b, act, alpha)
    dz, db = R.bias_act_backward(y, dy, act, alpha)

    def L_of_z(zz):
        return float((dy * R.bias_act_forward(zz, b, act, alpha)).sum())

    assert_fd(dz, num_grad(L_of_z, z))
    if bias:
        def L_of_b(bb):
            return float((dy * R.bias_act_forward(z, bb, act, alpha)).sum())
        assert_fd(db, num_grad(L_of_b, b))
    np.testing.assert_allclose(db, dz.sum(axis=0), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "elu"])
def test_act_derivative_from_output_wide_range(act):
    """f'(z) = g(f(z)) over a dense grid, one element at a time (elementwise
    central difference, no summation noise)."""
    alpha = ALPHA.get(act, 1.0)
    z = np.linspace(-8, 8, 1601)
    z = z[np.abs(z) > 1e-3]
    y = R.activation(z, act, alpha)
    num = (R.activation(z + H, act, alpha) - R.activation(z - H, act, alpha)) / (2 * H)
    np.testing.assert_allclose(R.act_derivative(y, act, alpha), num,
                               rtol=1e-6, atol=1e-9)


# ---- maxout ------------------------------------------------------------------

def distinct_pieces(rng, m, n, pieces, b):
    """z with the pieces of every unit (after adding b) 0.1 apart or more."""
    base = rng.permutation(m * n * pieces).reshape(m, n * pieces) * 0.1
    base += rng.uniform(0, 0.01, base.shape)
    return base - b if b is not None else base


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("pieces", [2, 3, 4], ids=lambda p: f"k{p}")
def test_maxout_backward_fd(pieces, bias, rng):
    m, n = 3, 4
    b = rng.normal(size=n * pieces) if bias else None
    z = distinct_pieces(rng, m, n, pieces, b)
    dy = rng.normal(size=(m, n))
    y, arg = R.maxout_forward(z, b, pieces)
    dz, db = R.maxout_backward(arg, dy, pieces)

    def L_of_z(zz):
        return float((dy * R.maxout_forward(zz, b, pieces)[0]).sum())

    assert_fd(dz, num_grad(L_of_z, z))
    if bias:
        def L_of_b(bb):
            return float((dy * R.maxout_forward(z, bb, pieces)[0]).sum())
        assert_fd(db, num_grad(L_of_b, b))
    # exactly one nonzero per unit, holding dy
    nz = (dz.reshape(m, n, pieces) != 0).sum(axis=2)
    assert (nz == 1).all()


# ---- losses ------------------------------------------------------------------

def loss_inputs(rng, loss, m, n, y_kind):
    z = rng.normal(scale=2.0, size=(m, n))
    if loss == "bce":
        y = rng.uniform(0, 1, (m, n)) if y_kind == "soft" else \
            rng.integers(0, 2, (m, n)).astype(float)
    elif loss == "softmax_ce":
        if y_kind == "soft":                 # rows need not sum to 1
            y = rng.uniform(0, 1, (m, n))
        else:
            y = np.eye(n)[rng.integers(0, n, m)]
    else:
        y = rng.normal(size=(m, n))
    return z, y


LOSS_CASES = [pytest.param(loss, yk, id=f"{loss}-{yk}")
              for loss in ("sse", "mse", "bce", "softmax_ce")
              for yk in (("soft", "hard") if loss in ("bce", "softmax_ce")
                         else ("real",))]


@pytest.mark.parametrize("scale", [1.0, 0.37], ids=["scale1", "scale0.37"])
@pytest.mark.parametrize("weighted", [False, True], ids=["nosw", "sw"])
@pytest.mark.parametrize("loss,y_kind", LOSS_CASES)
def test_loss_grad_fd(loss, y_kind, weighted, scale, rng):
    m, n = 5, 4
    z, y = loss_inputs(rng, loss, m, n, y_kind)
    sw = rng.uniform(0.2, 2.0, m) if weighted else None
    L, dz, db = R.loss_grad(z, y, loss, scale, sw)

    def L_of_z(zz):
        return R.loss_grad(zz, y, loss, scale, sw)[0]

    assert_fd(dz, num_grad(L_of_z, z), abs(L))

    # db is the gradient w.r.t. a bias added to every row
    def L_of_b(bb):
        return R.loss_grad(z + bb, y, loss, scale, sw)[0]

    assert_fd(db, num_grad(L_of_b, np.zeros(n)), abs(L))
    np.testing.assert_allclose(db, dz.sum(axis=0), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("loss,y_kind", LOSS_CASES)
def test_loss_value_definition(loss, y_kind, rng):
    """The loss value itself, against the formulas written out directly."""
    m, n = 6, 3
    z, y = loss_inputs(rng, loss, m, n, y_kind)
    sw = rng.uniform(0.2, 2.0, m)
    L, _, _ = R.loss_grad(z, y, loss, 0.5, sw)
    if loss == "sse":
        li = ((z - y) ** 2).sum(1)
    elif loss == "mse":
        li = 0.5 * ((z - y) ** 2).sum(1)
    elif loss == "bce":
        p = 1 / (1 + np.exp(-z))
        li = -(y * np.log(p) + (1 - y) * np.log(1 - p)).sum(1)
    else:
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        li = -(y * np.log(p)).sum(1)
    np.testing.assert_allclose(L, 0.5 * (sw * li).sum(), rtol=1e-12)


# ---- whole networks ----------------------------------------------------------

def build_net(rng, n_in, layers, bias):
    """specs as fastnn.Network._specs() makes them (weights first, then
    biases) and random params.  layers: (n_out, act, pieces, alpha)."""
    specs, off, sizes = [], 0, []
    prev = n_in
    for n_out, act, pieces, alpha in layers:
        sizes.append(prev * n_out * pieces)
        prev = n_out
    n_weights = sum(sizes)
    w_off, b_off = 0, n_weights
    prev = n_in
    for (n_out, act, pieces, alpha), size in zip(layers, sizes):
        cols = n_out * pieces
        specs.append((prev, n_out, act, pieces, alpha, w_off,
                      b_off if bias else -1))
        w_off += size
        if bias:
            b_off += cols
        prev = n_out
    n_params = b_off if bias else n_weights
    params = rng.normal(scale=0.7, size=n_params)
    return specs, params


def kink_margin(specs, params, x):
    """Smallest distance of any pre-activation from a kink: |z| for relu,
    leaky_relu and elu units, the top-two gap for maxout units."""
    a = np.asarray(x, dtype=np.float64)
    margin = np.inf
    for spec in specs:
        n_in, n_out, act, pieces, alpha, w_off, b_off = spec
        W, b = R._layer_params(spec, params)
        z = a @ W + (0 if b is None else b)
        if act in ("relu", "leaky_relu", "elu"):
            margin = min(margin, np.abs(z).min())
        if act == "maxout":
            s = np.sort(z.reshape(len(z), n_out, pieces), axis=2)
            margin = min(margin, (s[..., -1] - s[..., -2]).min())
            a = s[..., -1]
        elif act == "softmax":
            a = R.softmax_forward(z)
        else:
            a = R.activation(z, act, alpha)
    return margin


NETS = {
    "tanh-identity": ([(5, "tanh", 1, 0.0), (3, "identity", 1, 0.0)], "mse"),
    "relu-sigmoid": ([(4, "relu", 1, 0.0), (2, "sigmoid", 1, 0.0)], "bce"),
    "maxout3-softmax": ([(4, "maxout", 3, 0.0), (3, "softmax", 1, 0.0)],
                        "softmax_ce"),
    "elu-lrelu-identity": ([(5, "elu", 1, 1.0), (4, "leaky_relu", 1, 0.1),
                            (2, "identity", 1, 0.0)], "sse"),
    "maxout2-maxout2": ([(3, "maxout", 2, 0.0), (2, "maxout", 2, 0.0)], "mse"),
    "sigmoid-maxout4-tanh": ([(4, "sigmoid", 1, 0.0), (3, "maxout", 4, 0.0),
                              (2, "tanh", 1, 0.0)], "mse"),
    "identity-softmax": ([(4, "softmax", 1, 0.0)], "softmax_ce"),
    "maxout2-sigmoid": ([(3, "maxout", 2, 0.0), (3, "sigmoid", 1, 0.0)], "bce"),
}


def net_targets(rng, loss, m, n_out):
    if loss == "bce":
        return rng.integers(0, 2, (m, n_out)).astype(float)
    if loss == "softmax_ce":
        return np.eye(n_out)[rng.integers(0, n_out, m)]
    return rng.normal(size=(m, n_out))


@pytest.mark.parametrize("weighted", [False, True], ids=["nosw", "sw"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("name", sorted(NETS))
def test_net_loss_grad_fd(name, bias, weighted, rng):
    layers, loss = NETS[name]
    m, n_in = 6, 3
    x = rng.normal(size=(m, n_in))
    y = net_targets(rng, loss, m, layers[-1][0])
    sw = rng.uniform(0.3, 2.0, m) if weighted else None
    scale = 1.0 if loss == "sse" else 1.0 / m
    for _ in range(200):                     # params clear of every kink
        specs, params = build_net(rng, n_in, layers, bias)
        if kink_margin(specs, params, x) > 1e-3:
            break
    else:
        pytest.fail("could not draw parameters away from the kinks")

    L, grads = R.net_loss_grad(specs, loss, params, x, y, scale, sw)
    assert grads.shape == params.shape

    def L_of(p):
        out, _ = R.net_forward(specs, loss, p, x, predict=False)
        return R.loss_grad(out, y, loss, scale, sw)[0]

    assert L == pytest.approx(L_of(params), rel=1e-14)
    assert_fd(grads, num_grad(L_of, params), abs(L))


@pytest.mark.parametrize("name", ["relu-sigmoid", "maxout3-softmax"])
def test_net_forward_predict_applies_output_activation(name, rng):
    """predict=True gives probabilities; predict=False the logits the fused
    loss consumes."""
    layers, loss = NETS[name]
    specs, params = build_net(rng, 3, layers, True)
    x = rng.normal(size=(5, 3))
    logits, _ = R.net_forward(specs, loss, params, x, predict=False)
    prob, _ = R.net_forward(specs, loss, params, x, predict=True)
    if loss == "bce":
        np.testing.assert_allclose(prob, 1 / (1 + np.exp(-logits)), rtol=1e-14)
    else:
        e = np.exp(logits - logits.max(1, keepdims=True))
        np.testing.assert_allclose(prob, e / e.sum(1, keepdims=True), rtol=1e-14)
