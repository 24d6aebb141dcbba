"""Bias + activation kernels: fnn_bias_act_forward / _backward for every
elementwise activation, maxout and softmax, float32 and float64, at hidden
layer shapes of the lecture (64 x 100) and large (1024 x 1024) workloads and
output shapes for softmax; vs fastnn.reference and vs the NumPy expression
a user writes (np.exp & co.), plus bare np.exp of the same size.  Saturated
inputs (|z| ~ 100: exp overflows float32 beyond 88) are timed next to normal
inputs to show there is no slow path.  Throughput: elements/s and GB/s
(bytes each kernel must move: forward reads z and writes it, backward
reads y and dy and writes dz).  Every case first checks fastnn against the
reference.
"""
import numpy as np
import pytest

from fastnn import _kernels as K
from fastnn import reference as ref

ACTS = list(ref.ELEMENTWISE)
ALPHA = {"leaky_relu": 0.1, "elu": 1.0}
SHAPES = [(64, 100), (1024, 1024)]
SATURATING = ["sigmoid", "tanh", "elu"]
DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-6, atol=2e-7), np.float64: dict(rtol=1e-13, atol=1e-15)}


def _rounds(m, n):
    return 400 if m * n <= 10_000 else 30


def _inputs(m, n, dtype, kind, rng):
    if kind == "saturated":   # |z| in [90, 110], both signs
        z = rng.uniform(90, 110, (m, n)) * rng.choice([-1.0, 1.0], (m, n))
        b = rng.uniform(-1, 1, n)
    else:
        z = rng.standard_normal((m, n)) * 3
        b = rng.standard_normal(n)
    return z.astype(dtype), b.astype(dtype)


def numpy_forward(z, b, act, alpha):
    """What a user writes, allocating as it goes."""
    v = z + b
    if act == "sigmoid":
        return 1 / (1 + np.exp(-v))
    if act == "tanh":
        return np.tanh(v)
    if act == "relu":
        return np.maximum(v, 0)
    if act == "leaky_relu":
        return np.where(v > 0, v, alpha * v)
    if act == "elu":
        return np.where(v > 0, v, alpha * (np.exp(v) - 1))
    return v


def numpy_backward(y, dy, act, alpha):
    if act == "sigmoid":
        dz = dy * y * (1 - y)
    elif act == "tanh":
        dz = dy * (1 - y * y)
    elif act == "relu":
        dz = dy * (y > 0)
    elif act == "leaky_relu":
        dz = np.where(y > 0, dy, alpha * dy)
    elif act == "elu":
        dz = np.where(y > 0, dy, dy * (y + alpha))
    else:
        dz = dy.copy()
    return dz, dz.sum(axis=0)


def _key(*parts):
    return "act/" + "/".join(str(p) for p in parts)


# (act, shape, input kind): every activation at every shape with normal
# inputs; the exp-based ones also saturated, at the large shape.
FWD_CASES = ([(a, s, "normal") for a in ACTS for s in SHAPES]
             + [(a, SHAPES[-1], "saturated") for a in SATURATING])


@pytest.mark.parametrize("impl", ["fastnn", "reference", "numpy"])
@pytest.mark.parametrize("case", FWD_CASES,
                         ids=lambda c: f"{c[0]}-m{c[1][0]}-n{c[1][1]}-{c[2]}")
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_bias_act_forward(benchmark, report, rng, dtype, case, impl):
    act, shape, kind = case
    m, n = shape
    alpha = ALPHA.get(act, 0.0)
    z0, b = _inputs(m, n, dtype, kind, rng)
    want = ref.bias_act_forward(z0, b, act, alpha)
    z = z0.copy()
    if impl == "fastnn":
        K.bias_act_forward(z, b, act, alpha)
        assert np.isfinite(z).all()
        np.testing.assert_allclose(z, want, **TOL[dtype])

        def setup():
            np.copyto(z, z0)

        def fn():
            K.bias_act_forward(z, b, act, alpha)
    elif impl == "reference":
        setup = None

        def fn():
            ref.bias_act_forward(z0, b, act, alpha)
    else:
        setup = None

        def fn():
            with np.errstate(over="ignore"):
                numpy_forward(z0, b, act, alpha)
        with np.errstate(over="ignore"):
            np.testing.assert_allclose(numpy_forward(z0, b, act, alpha), want,
                                       rtol=1e-5 if dtype == np.float32 else 1e-12,
                                       atol=1e-6 if dtype == np.float32 else 1e-14)
    dname = np.dtype(dtype).name
    benchmark.group = f"act forward {dname} {act} m{m} n{n} {kind}"
    benchmark.pedantic(fn, setup=setup, rounds=_rounds(m, n), warmup_rounds=2)
    size = np.dtype(dtype).itemsize
    key = _key("fwd", dname, act, f"{m}x{n}", kind, impl)
    report.add(key, benchmark, elements=m * n, nbytes=2 * m * n * size)
    if impl == "numpy":
        base = _key("fwd", dname, act, f"{m}x{n}", kind)
        report.speedup(f"act fwd {dname} {act} {m}x{n} {kind}: fastnn vs reference",
                       base + "/fastnn", base + "/reference")
        report.speedup(f"act fwd {dname} {act} {m}x{n} {kind}: fastnn vs numpy",
                       base + "/fastnn", base + "/numpy")
        if kind == "saturated":
            normal = _key("fwd", dname, act, f"{m}x{n}", "normal", "fastnn")
            report.speedup(f"act fwd {dname} {act} {m}x{n}: fastnn normal vs "
                           f"saturated inputs (~1x = no slow path)",
                           normal, base + "/fastnn")
        if act == "sigmoid" and kind == "normal":
            report.speedup(f"act fwd {dname} sigmoid {m}x{n}: fastnn vs bare np.exp",
                           base + "/fastnn", _key("exp", dname, f"{m}x{n}"))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"m{s[0]}-n{s[1]}")
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_np_exp(benchmark, report, rng, dtype, shape):
    """numpy's exp alone, into a preallocated output: the rate the NumPy
    loop's sigmoid cannot beat."""
    m, n = shape
    z = (rng.standard_normal(shape) * 3).astype(dtype)
    out = np.empty_like(z)
    dname = np.dtype(dtype).name
    benchmark.group = f"np.exp {dname} m{m} n{n}"
    benchmark.pedantic(np.exp, args=(z, out), rounds=_rounds(m, n), warmup_rounds=2)
    report.add(_key("exp", dname, f"{m}x{n}"), benchmark, elements=m * n,
               nbytes=2 * m * n * np.dtype(dtype).itemsize)


@pytest.mark.parametrize("impl", ["fastnn", "reference", "numpy"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"m{s[0]}-n{s[1]}")
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_bias_act_backward(benchmark, report, rng, dtype, act, shape, impl):
    m, n = shape
    alpha = ALPHA.get(act, 0.0)
    z0, _ = _inputs(m, n, dtype, "normal", rng)
    y = ref.bias_act_forward(z0, None, act, alpha).astype(dtype)
    dy = rng.standard_normal((m, n)).astype(dtype)
    want_dz, want_db = ref.bias_act_backward(y, dy, act, alpha)
    dz = np.full((m, n), np.nan, dtype=dtype)
    db = np.full(n, np.nan, dtype=dtype)
    if impl == "fastnn":
        K.bias_act_backward(y, dy, dz, db, act, alpha)
        np.testing.assert_allclose(dz, want_dz, **TOL[dtype])
        np.testing.assert_allclose(db, want_db, rtol=TOL[dtype]["rtol"] * m,
                                   atol=TOL[dtype]["atol"] * m * 10)

        def fn():
            K.bias_act_backward(y, dy, dz, db, act, alpha)
    elif impl == "reference":
        def fn():
            ref.bias_act_backward(y, dy, act, alpha)
    else:
        def fn():
            numpy_backward(y, dy, act, alpha)
        np.testing.assert_allclose(numpy_backward(y, dy, act, alpha)[0], want_dz,
                                   **TOL[dtype])
    dname = np.dtype(dtype).name
    benchmark.group = f"act backward {dname} {act} m{m} n{n}"
    benchmark.pedantic(fn, rounds=_rounds(m, n), warmup_rounds=2)
    size = np.dtype(dtype).itemsize
    key = _key("bwd", dname, act, f"{m}x{n}", impl)
    report.add(key, benchmark, elements=m * n, nbytes=3 * m * n * size)
    if impl == "numpy":
        base = _key("bwd", dname, act, f"{m}x{n}")
        report.speedup(f"act bwd {dname} {act} {m}x{n}: fastnn vs reference",
                       base + "/fastnn", base + "/reference")
        report.speedup(f"act bwd {dname} {act} {m}x{n}: fastnn vs numpy",
                       base + "/fastnn", base + "/numpy")


@pytest.mark.parametrize("impl", ["fastnn", "reference"])
@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"m{s[0]}-n{s[1]}")
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_maxout(benchmark, report, rng, dtype, shape, direction, impl):
    m, n = shape
    k = 2
    z = (rng.standard_normal((m, n * k))).astype(dtype)
    b = rng.standard_normal(n * k).astype(dtype)
    want_y, want_arg = ref.maxout_forward(z, b, k)
    y = np.full((m, n), np.nan, dtype=dtype)
    arg = np.full((m, n), -1, dtype=np.int32)
    dy = rng.standard_normal((m, n)).astype(dtype)
    dz = np.full((m, n * k), np.nan, dtype=dtype)
    db = np.full(n * k, np.nan, dtype=dtype)
    if impl == "fastnn":
        K.maxout_forward(z, y, arg, b, k)
        np.testing.assert_allclose(y, want_y, **TOL[dtype])
        np.testing.assert_array_equal(arg, want_arg)
        K.maxout_backward(arg, dy, dz, db, k)
        wdz, wdb = ref.maxout_backward(arg, dy, k)
        np.testing.assert_allclose(dz, wdz, **TOL[dtype])
        np.testing.assert_allclose(db, wdb, rtol=TOL[dtype]["rtol"] * m,
                                   atol=TOL[dtype]["atol"] * m * 10)
        fn = ((lambda: K.maxout_forward(z, y, arg, b, k)) if direction == "forward"
              else (lambda: K.maxout_backward(arg, dy, dz, db, k)))
    else:
        fn = ((lambda: ref.maxout_forward(z, b, k)) if direction == "forward"
              else (lambda: ref.maxout_backward(want_arg, dy, k)))
    dname = np.dtype(dtype).name
    benchmark.group = f"maxout {direction} {dname} m{m} n{n} pieces{k}"
    benchmark.pedantic(fn, rounds=_rounds(m, n), warmup_rounds=2)
    size = np.dtype(dtype).itemsize
    moved = (m * n * k + m * n) * size + m * n * 4      # z|dz, y|dy, argmax
    key = _key("maxout", direction, dname, f"{m}x{n}", impl)
    report.add(key, benchmark, elements=m * n * k, nbytes=moved)
    if impl == "reference":
        base = _key("maxout", direction, dname, f"{m}x{n}")
        report.speedup(f"maxout {direction} {dname} {m}x{n}: fastnn vs reference",
                       base + "/fastnn", base + "/reference")


@pytest.mark.parametrize("impl", ["fastnn", "reference", "numpy"])
@pytest.mark.parametrize("shape", [(256, 10), (1024, 10)], ids=lambda s: f"m{s[0]}-n{s[1]}")
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_softmax_forward(benchmark, report, rng, dtype, shape, impl):
    m, n = shape
    z0 = (rng.standard_normal(shape) * 5).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    want = ref.softmax_forward(z0, b)
    z = z0.copy()
    setup = None
    if impl == "fastnn":
        K.softmax_forward(z, b)
        np.testing.assert_allclose(z, want, **TOL[dtype])

        def setup():
            np.copyto(z, z0)

        def fn():
            K.softmax_forward(z, b)
    elif impl == "reference":
        def fn():
            ref.softmax_forward(z0, b)
    else:
        def fn():
            v = z0 + b
            e = np.exp(v - v.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
    dname = np.dtype(dtype).name
    benchmark.group = f"softmax forward {dname} m{m} n{n}"
    benchmark.pedantic(fn, setup=setup, rounds=400, warmup_rounds=2)
    key = _key("softmax", dname, f"{m}x{n}", impl)
    report.add(key, benchmark, elements=m * n,
               nbytes=2 * m * n * np.dtype(dtype).itemsize)
    if impl == "numpy":
        base = _key("softmax", dname, f"{m}x{n}")
        report.speedup(f"softmax {dname} {m}x{n}: fastnn vs reference",
                       base + "/fastnn", base + "/reference")
        report.speedup(f"softmax {dname} {m}x{n}: fastnn vs numpy",
                       base + "/fastnn", base + "/numpy")
