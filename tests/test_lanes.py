"""The small-network step (csrc/lanes_impl.h): minibatch rows across vector
lanes for narrow dense networks.  Its NumPy twin is the reference's whole
loss + gradient (fastnn/reference.py); it is also checked against the GEMM
path of the same network (NetCore.lanes = False), across both dtypes, batch
sizes around the 4/8-lane blocks, every elementwise activation, the losses
it covers, saturating inputs, NaN-filled outputs, and non-finite input."""
import os

import numpy as np
import pytest

from fastnn import Dense, Maxout, Network

ACTS = ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "identity"]
MS = [1, 3, 4, 5, 7, 8, 9, 17]
SHAPES = {"2-4-1": (2, [4], 1), "20-4-2": (20, [4], 2), "4-8-3-1": (4, [8, 3], 1)}


def _net(shape, act, loss, bias, dtype, backend="native"):
    n_in, hidden, n_out = SHAPES[shape]
    out_act = "sigmoid" if loss == "bce" else "identity"
    layers = [Dense(h, act, bias=bias) for h in hidden] + [Dense(n_out, out_act, bias=bias)]
    return Network(layers, loss=loss, n_in=n_in, dtype=dtype, seed=5, backend=backend)


def _data(shape, loss, m, dtype, scale=1.0):
    n_in, _, n_out = SHAPES[shape]
    rs = np.random.RandomState(m)
    X = (scale * rs.randn(m, n_in)).astype(dtype)
    Y = ((rs.rand(m, n_out) > 0.5) if loss == "bce" else rs.randn(m, n_out)).astype(dtype)
    return X, Y


def _grads(net, X, Y, lanes):
    """loss_and_grad with grads pre-filled with NaN (every element must be
    overwritten), on the lanes or the GEMM path."""
    net._core.lanes = lanes
    net.grads[...] = np.nan
    loss = net.loss_and_grad(X, Y)
    return loss, net.grads.copy()


def _tol(dtype):
    return 1e-12 if dtype == np.float64 else 2e-5


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("m", MS)
@pytest.mark.parametrize("loss", ["sse", "mse", "bce"])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_lanes_grad_matches_gemm_path_and_reference(shape, act, loss, m, dtype):
    bias = m % 2 == 1                     # both, spread over the grid
    net = _net(shape, act, loss, bias, dtype)
    ref = _net(shape, act, loss, bias, dtype, backend="reference")
    assert net._core.lanes
    X, Y = _data(shape, loss, m, dtype)
    ll, gl = _grads(net, X, Y, True)
    lg, gg = _grads(net, X, Y, False)
    lr_ = ref.loss_and_grad(X.astype(np.float64), Y.astype(np.float64))
    tol = _tol(dtype)
    assert np.isfinite(gl).all()
    scale = max(np.abs(gg).max(), 1e-30)
    np.testing.assert_allclose(gl, gg, rtol=tol, atol=tol * scale)
    np.testing.assert_allclose(gl, ref.grads, rtol=10 * tol, atol=10 * tol * scale)
    assert ll == pytest.approx(lg, rel=tol, abs=tol)
    assert ll == pytest.approx(lr_, rel=10 * tol, abs=10 * tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("act", ["sigmoid", "tanh", "elu"])
def test_lanes_saturating_inputs(act, dtype):
    """Inputs far out in the activations' flat tails: exact limits, finite
    gradients, the same numbers as the GEMM path."""
    net = _net("20-4-2", act, "mse", True, dtype)
    X, Y = _data("20-4-2", "mse", 9, dtype, scale=1e4)
    ll, gl = _grads(net, X, Y, True)
    lg, gg = _grads(net, X, Y, False)
    assert np.isfinite(ll) and np.isfinite(gl).all()
    tol = _tol(dtype)
    np.testing.assert_allclose(gl, gg, rtol=tol, atol=tol * max(np.abs(gg).max(), 1e-30))
    assert ll == pytest.approx(lg, rel=tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("m", [4, 6, 13])
def test_lanes_train_steps_and_fit_match_gemm_path(m, dtype):
    """Fused SGD with weight decay over many steps, and a shuffled
    minibatch fit: lanes and GEMM paths stay together."""
    X, Y = _data("4-8-3-1", "sse", m, dtype)
    a, b = (_net("4-8-3-1", "tanh", "sse", True, dtype) for _ in range(2))
    b._core.lanes = False
    for _ in range(50):
        la = a.train_step(X, Y, 0.01)
        lb = b.train_step(X, Y, 0.01)
    tol = 1e-10 if dtype == np.float64 else 1e-4
    assert la == pytest.approx(lb, rel=tol)
    np.testing.assert_allclose(a.params, b.params, rtol=tol, atol=tol)
    for opt in ("sgd", "adam"):
        ha = a.fit(X, Y, epochs=20, batch_size=3, lr=0.01, optimizer=opt, seed=1)
        hb = b.fit(X, Y, epochs=20, batch_size=3, lr=0.01, optimizer=opt, seed=1)
        np.testing.assert_allclose(ha.loss, hb.loss, rtol=tol)
        np.testing.assert_allclose(a.params, b.params, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("loss", ["sse", "mse", "bce"])
@pytest.mark.parametrize("batch,shuffle", [(None, False), (5, True), (5, False), (1, True)])
@pytest.mark.parametrize("opt", ["sgd", "nesterov", "decay"])
def test_lanes_fit_loop_matches_gemm_path(opt, batch, shuffle, loss, dtype):
    """fit's own instance of the loop with the lanes step inlined
    (fit_loop_lanes in csrc/train_impl.h): shuffled rows read in place, full
    batch, a partial last minibatch (13 rows), fused SGD, Nesterov through
    the gradient, L2 decay: epoch losses and parameters equal the GEMM
    path's fit."""
    from fastnn import SGD
    X, Y = _data("2-4-1", loss, 13, dtype)
    a, b = (_net("2-4-1", "sigmoid", loss, True, dtype) for _ in range(2))
    b._core.lanes = False
    assert a._core.lanes
    optimizer = {"sgd": "sgd", "nesterov": SGD(lr=0.02, momentum=0.5, nesterov=True),
                 "decay": SGD(lr=0.05, weight_decay=0.01)}[opt]
    kw = dict(epochs=30, batch_size=batch, optimizer=optimizer, shuffle=shuffle,
              seed=3, lr=0.05 if opt == "sgd" else None)
    ha, hb = a.fit(X, Y, **kw), b.fit(X, Y, **kw)
    tol = 1e-10 if dtype == np.float64 else 1e-4
    assert np.all(np.isfinite(ha.loss)) and ha.loss[-1] < ha.loss[0]
    np.testing.assert_allclose(ha.loss, hb.loss, rtol=tol)
    np.testing.assert_allclose(a.params, b.params, rtol=tol, atol=tol)


LANE_N = {np.float64: 4, np.float32: 8}      # rows in one 32-byte vector


def _core_fit(net, X, Y, epochs, batch, kind, epoch0=0, **kw):
    """NetCore.fit (the native loop) from the network's current parameters:
    (FitResult, epoch losses, parameters after, snapshot)."""
    from fastnn._train import FitConfig
    lrs = np.linspace(0.05, 0.02, epochs)            # a schedule: lr per epoch
    snap = np.full_like(net.params, np.nan)
    vel = np.zeros_like(net.params)
    cfg = FitConfig(kind, batch, vel=vel, sq=vel.copy(), snapshot=snap, **kw)
    r = net._core.fit(X, Y, cfg, lrs, epoch0=epoch0)
    return r, r.epoch_loss.copy(), net.params.copy(), snap


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("loss", ["sse", "mse", "bce"])
@pytest.mark.parametrize("kind", ["sgd", "nesterov", "adam"])
@pytest.mark.parametrize("rows", [1, 3, 4, 5, 8])
def test_lanes_fit_one_block_matches_gemm_path(rows, kind, loss, dtype):
    """fit_lean's one-block form (csrc/train_impl.h): full-batch epochs over
    at most LANE_N rows in order, the x and y blocks transposed once per
    fit (rows 5 and 8 are one block in float32 only, two in float64), with
    every knob of the native loop that changes the step or what it reports:
    learning rate per epoch, L2 decay per row, the L2 term and a loss scale
    in the reported loss, snapshots every 3 epochs from global epoch 7.
    Epoch losses, parameters, snapshot and counters equal the GEMM path's."""
    X, Y = _data("2-4-1", loss, rows, dtype)
    a, b = (_net("2-4-1", "sigmoid", loss, True, dtype) for _ in range(2))
    b._core.lanes = False
    assert a._core.lanes
    kw = dict(l2=0.3, l2_per_row=True, loss_l2=True, loss_scale=0.5,
              snapshot_every=3, epoch0=7, momentum=0.5)
    ra, la, pa, sa = _core_fit(a, X, Y, 25, rows, kind, **kw)
    rb, lb, pb, sb = _core_fit(b, X, Y, 25, rows, kind, **kw)
    tol = 1e-10 if dtype == np.float64 else 1e-4
    assert ra.ok and rb.ok
    for k in ("epochs_done", "steps_done", "snapshot_epoch", "t"):
        assert getattr(ra, k) == getattr(rb, k), k
    assert ra.snapshot_epoch == 23              # global epoch 30, a multiple of 3
    assert np.isfinite(la).all() and la[-1] < la[0]
    np.testing.assert_allclose(la, lb, rtol=tol)
    np.testing.assert_allclose(pa, pb, rtol=tol, atol=tol)
    np.testing.assert_allclose(sa, sb, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("batch", [None, 2], ids=["one-block", "minibatch"])
def test_lanes_fit_divergence_matches_gemm_path(batch, dtype):
    """A fit that diverges on the lanes loop stops at the same epoch and
    step as on the GEMM path, with the same parameters restored and the
    same history."""
    X, Y = _data("2-4-1", "sse", 3, dtype, scale=30.0)
    nets = [_net("2-4-1", "identity", "sse", True, dtype) for _ in range(2)]
    nets[1]._core.lanes = False
    out = []
    for net in nets:
        with pytest.raises(FloatingPointError, match="non-finite at epoch") as exc:
            net.fit(X, Y, epochs=500, batch_size=batch, lr=0.5, shuffle=False)
        assert net.history.stop_reason == "diverged"
        assert np.isfinite(net.params).all()
        out.append((str(exc.value), net.params.copy(), net.history.loss))
    assert nets[0]._core.lanes
    assert out[0][0] == out[1][0]
    tol = 1e-10 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(out[0][1], out[1][1], rtol=tol)
    np.testing.assert_allclose(out[0][2], out[1][2], rtol=tol)


@pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals")
@pytest.mark.parametrize("batch", [None, 3], ids=["one-block", "minibatch"])
def test_lanes_fit_ctrl_c_stops_at_a_step_boundary(ctrl_c, batch):
    """Ctrl-C reaches the lanes loop through its poll: the fit stops within
    0.5 s with finite parameters and the epochs so far in the history, and
    can be run again.  The signal goes 0.1 s after the parameters first
    move, so that the fit is under way however loaded the machine is."""
    X, Y = _data("2-4-1", "sse", 4, np.float64)
    net = _net("2-4-1", "sigmoid", "sse", False, np.float64)
    assert net._core.lanes
    p0 = net.params.copy()
    assert ctrl_c(lambda: net.fit(X, Y, epochs=10 ** 9, batch_size=batch, lr=0.01,
                                  shuffle=False),
                  after=0.1, when=lambda: not np.array_equal(net.params, p0)) < 0.5
    h = net.history
    assert h.stop_reason == "interrupted" and len(h) >= 1
    assert np.isfinite(h.loss).all() and np.isfinite(net.params).all()
    assert h.epochs == list(range(len(h)))
    assert len(net.fit(X, Y, epochs=3, batch_size=batch, lr=0.01)) == 3


def test_lanes_nonfinite_input_and_loss_touch_nothing():
    net = _net("2-4-1", "sigmoid", "sse", True, np.float64)
    X, Y = _data("2-4-1", "sse", 5, np.float64)
    p0 = net.params.copy()
    for bad in (np.inf, np.nan):
        Xb = X.copy()
        Xb[4, 1] = bad                    # in the last, partial block
        with pytest.raises(ValueError, match="X"):
            net.train_step(Xb, Y, 0.1)
        np.testing.assert_array_equal(net.params, p0)
    # a loss that overflows: params and grads untouched
    net.params[...] = 1e200
    net.grads[...] = 7.0
    with pytest.raises(FloatingPointError):
        net.loss_and_grad(X, Y)
    assert (net.grads == 7.0).all() and (net.params == 1e200).all()


def test_lanes_covers_only_narrow_dense_networks():
    assert _net("2-4-1", "relu", "mse", True, np.float64)._core.lanes
    wide = Network([Dense(32, "relu"), Dense(1)], n_in=20)
    soft = Network([Dense(4, "relu"), Dense(3, "softmax")], loss="softmax_ce", n_in=2)
    mx = Network([Maxout(3, pieces=2), Dense(1)], n_in=2)
    for net in (wide, soft, mx):
        net._ensure_built(np.zeros((1, net.n_in)))
        assert not net._core.lanes
        with pytest.raises(ValueError, match="does not cover"):
            net._core.lanes = True


def test_lanes_sample_weights_take_the_gemm_path_and_agree():
    X, Y = _data("20-4-2", "mse", 11, np.float64)
    w = np.random.RandomState(0).rand(11) + 0.1
    net = _net("20-4-2", "elu", "mse", True, np.float64)
    ref = _net("20-4-2", "elu", "mse", True, np.float64, backend="reference")
    la = net.loss_and_grad(X, Y, sample_weight=w)
    lb = ref.loss_and_grad(X, Y, sample_weight=w)
    assert la == pytest.approx(lb, rel=1e-12)
    np.testing.assert_allclose(net.grads, ref.grads, rtol=1e-11, atol=1e-13)


def test_lanes_fit_on_a_thread_with_a_small_stack():
    """The step's scratch lives on the heap: a fit on a thread whose stack
    is smaller than that scratch (64 KiB) runs.  In a subprocess, so that a
    crash fails this test instead of ending the run."""
    import subprocess
    import sys
    code = """if 1:
        import threading, numpy as np
        from fastnn import Network, Dense
        threading.stack_size(65536)
        out = []
        def run():
            net = Network([Dense(4, "sigmoid"), Dense(1)], n_in=2, loss="sse", seed=0)
            X = np.array([[0, 0], [0, 1], [1, 0], [1, 1.]])
            Y = np.array([[0], [1], [1], [0.]])
            out.append((net._core.lanes, net.fit(X, Y, epochs=200, lr=0.5).loss[-1]))
        t = threading.Thread(target=run)
        t.start()
        t.join()
        print(out)
    """
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    lanes, loss = eval(r.stdout.strip())[0]
    assert lanes and np.isfinite(loss)
