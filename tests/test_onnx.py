"""ONNX export (fastnn.to_onnx, fastnn.onnx.register_skl2onnx) checked by
running the graphs in onnxruntime on random inputs.

Tolerances, as in tests/conftest.py: the graph runs the same math with
another runtime's kernels, so outputs agree to rounding, judged relative
to the output's scale: |onnx - fastnn| <= rtol (|fastnn| + max |fastnn|),
rtol 1e-5 in float32 and 1e-12 in float64.  Inputs include large
magnitudes (x 50 and x 1000) where sigmoid and softmax saturate.  Decoded
labels must equal predict() exactly wherever the decision is not within
rounding of a tie (|p - 0.5| or the top-two gap above 1000 rtol).
"""
import subprocess
import sys
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="ONNX export needs the onnx package "
                           "(pip install fastnn[onnx])")
ort = pytest.importorskip("onnxruntime", reason="the exported graphs are checked "
                          "with onnxruntime (pip install fastnn[onnx])")

import fastnn  # noqa: E402
from fastnn import Dense, Maxout, Network  # noqa: E402
from fastnn.onnx import DEFAULT_OPSET  # noqa: E402

RTOL = {np.float32: 1e-5, np.float64: 1e-12}
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]
SCALES = (1.0, 50.0, 1000.0)
HIDDEN = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "maxout2",
          "maxout3"]
OUTPUTS = {"identity": "mse", "sigmoid": "bce", "softmax": "softmax_ce"}


def session(proto):
    return ort.InferenceSession(proto.SerializeToString(),
                                providers=["CPUExecutionProvider"])


def run(proto, X):
    return session(proto).run(None, {"X": X})


def assert_close(got, want, dtype, scale=0.0):
    """Equal to rounding on the output's scale: max |want|, or `scale` if
    larger (1 for probabilities, whose computation is on the scale of 1
    even when every output of a batch saturates near 0)."""
    rtol = RTOL[dtype]
    want = np.asarray(want, np.float64)
    assert np.asarray(got).shape == want.shape
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol,
                               atol=rtol * max(np.abs(want).max(), scale))


def inputs(n_in, dtype, rows=(1, 37), seed=0):
    """Random inputs: a single row and a batch, at each scale."""
    rng = np.random.default_rng(seed)
    for n in rows:
        for s in SCALES:
            yield (rng.standard_normal((n, n_in)) * s).astype(dtype)


def hidden_layer(act, units):
    if act.startswith("maxout"):
        return Maxout(units, pieces=int(act[-1]))
    alpha = {"leaky_relu": 0.2, "elu": 1.3}.get(act)
    return Dense(units, act, alpha=alpha)


def check_network(net, dtype, **kw):
    proto = fastnn.to_onnx(net, **kw)
    onnx.checker.check_model(proto, full_check=True)
    for X in inputs(net.n_in, dtype):
        (got,) = run(proto, X)
        assert got.dtype == dtype
        bounded = net.layers[-1].activation in ("sigmoid", "softmax", "tanh")
        assert_close(got, net.predict(X), dtype, scale=1.0 if bounded else 0.0)
    return proto


# ---- Network ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out", list(OUTPUTS))
@pytest.mark.parametrize("act", HIDDEN)
def test_network_activation_output(act, out, dtype):
    net = Network([hidden_layer(act, 9), hidden_layer(act, 5), Dense(4, out)],
                  loss=OUTPUTS[out], n_in=6, dtype=dtype, seed=1)
    rng = np.random.default_rng(2)
    for l in net.layers:             # biases away from 0, so they are tested
        if l.b is not None:
            l.b[...] = rng.standard_normal(l.b.shape)
    check_network(net, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", HIDDEN[1:] + ["softmax"])
def test_network_output_layer_activation(act, dtype):
    """Every activation on the output layer too (maxout included)."""
    last = Dense(3, "softmax") if act == "softmax" else hidden_layer(act, 3)
    loss = "softmax_ce" if act == "softmax" else ("bce" if act == "sigmoid" else "mse")
    net = Network([Dense(8, "tanh"), last], loss=loss, n_in=5, dtype=dtype, seed=3)
    check_network(net, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_network_mixed_layers_and_no_bias(dtype):
    net = Network([Dense(11, "elu", alpha=0.7, bias=False), Maxout(6, pieces=3),
                   Maxout(5, pieces=2, bias=False), Dense(7, "leaky_relu", alpha=0.05),
                   Dense(4, "relu", bias=False), Dense(3, "softmax", bias=False)],
                  loss="softmax_ce", n_in=9, dtype=dtype, seed=4)
    proto = check_network(net, dtype)
    n_add = sum(n.op_type == "Add" for n in proto.graph.node)
    assert n_add == 2          # one per layer with a bias


@pytest.mark.parametrize("dtype", DTYPES)
def test_network_lecture_notes_shape(dtype):
    """The lecture notes' 2-layer network: sigmoid hidden layer, linear
    output, no biases, standard-normal weights, 1000 inputs."""
    net = Network([Dense(100, "sigmoid", bias=False), Dense(10, bias=False)],
                  loss="sse", n_in=1000, init="normal", dtype=dtype, seed=0)
    if dtype == np.float64:
        check_network(net, dtype)
        return
    # float32: inputs of unit scale (the notes' data are pixel intensities).
    # At x 50 and x 1000 a 1000-term float32 dot product of random signs is
    # too ill-conditioned for 1e-5 between any two summation orders: there
    # fastnn's own float32 predict is ~1e-5 and ~5e-5 away from the float64
    # result on the same numbers, onnxruntime's alike; float64 above covers
    # those scales.
    proto = fastnn.to_onnx(net)
    rng = np.random.default_rng(0)
    for X in (rng.random((1, 1000)), rng.random((37, 1000)),
              rng.standard_normal((37, 1000))):
        X = X.astype(dtype)
        assert_close(run(proto, X)[0], net.predict(X), dtype)


def test_network_reference_backend():
    net = Network([Dense(5, "tanh"), Dense(2, "sigmoid")], loss="bce", n_in=3,
                  seed=0, backend="reference")
    check_network(net, np.float64)


def test_network_after_training():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 4))
    y = (X[:, :1] > 0).astype(float)
    net = Network([Dense(6, "relu"), Dense(1, "sigmoid")], loss="bce", seed=0)
    net.fit(X, y, epochs=3, batch_size=16, lr=0.1)
    check_network(net, np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_graph_signature(dtype):
    net = Network([Dense(4, "relu"), Dense(2)], n_in=3, dtype=dtype)
    proto = fastnn.to_onnx(net)
    assert [o.version for o in proto.opset_import] == [DEFAULT_OPSET] == [13]
    assert [o.domain for o in proto.opset_import] == [""]
    assert proto.ir_version == 7
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("X", "output")
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    assert inp.type.tensor_type.elem_type == out.type.tensor_type.elem_type == elem
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and dims[1].dim_value == 3


def test_dtype_override():
    net = Network([Dense(6, "elu"), Maxout(3, 2), Dense(2, "softmax")],
                  loss="softmax_ce", n_in=4, seed=0)
    proto = fastnn.to_onnx(net, dtype=np.float32)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    for X in inputs(4, np.float32):
        (got,) = run(proto, X)
        assert got.dtype == np.float32
        assert_close(got, net.predict(X.astype(np.float64)), np.float32)


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_opsets(opset):
    net = Network([Dense(6, "leaky_relu"), Maxout(3, 3), Dense(4, "elu"),
                   Dense(2, "softmax")], loss="softmax_ce", n_in=4, seed=0)
    proto = check_network(net, np.float64, opset=opset)
    assert proto.opset_import[0].version == opset


def test_save_to_bytes_and_file(tmp_path):
    net = Network([Dense(5, "tanh"), Maxout(3, 2), Dense(2)], n_in=4, seed=0)
    X = np.random.default_rng(0).standard_normal((7, 4))
    data = fastnn.to_onnx(net).SerializeToString()
    assert isinstance(data, bytes)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    assert_close(sess.run(None, {"X": X})[0], net.predict(X), np.float64)
    path = tmp_path / "net.onnx"
    onnx.save(onnx.load_from_string(data), str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert_close(sess.run(["output"], {"X": X})[0], net.predict(X), np.float64)


# ---- estimators ---------------------------------------------------------------

try:
    from sklearn.exceptions import ConvergenceWarning, NotFittedError
    from fastnn.sklearn import MLPClassifier, MLPRegressor
except ImportError:                                   # pragma: no cover
    MLPClassifier = MLPRegressor = None
needs_sklearn = pytest.mark.skipif(MLPClassifier is None, reason="fastnn.sklearn's "
                                   "estimators need scikit-learn")


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


def _cls_data(task, labels, n=90, n_in=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_in))
    score = X @ rng.standard_normal((n_in, 3))
    if task == "multilabel":
        return X, (score > 0).astype(int)
    k = 2 if task == "binary" else 3
    idx = score[:, :k].argmax(1)
    values = {"int": np.array([-4, 7, 2**40])[:k],
              "str": np.array(["cat", "dog", "emu"])[:k],
              "bool": np.array([False, True]),
              "float": np.array([0.0, 2.0, 5.0])[:k]}[labels]
    return X, values[idx]


def _clear(proba, task, dtype):
    """Rows whose decision is not within rounding of a tie."""
    tol = 1e3 * RTOL[dtype]
    if task == "multiclass":
        s = np.sort(proba, axis=1)
        return s[:, -1] - s[:, -2] > tol
    p = proba[:, 1:] if task == "binary" else proba
    return np.all(np.abs(p - 0.5) > tol, axis=1)


def check_classifier(est, task, dtype):
    proto = fastnn.to_onnx(est)
    names = [o.name for o in proto.graph.output]
    assert names == ["label", "probabilities"]
    for X in inputs(est.n_features_in_, dtype, seed=5):
        label, proba = run(proto, X)
        want_p = est.predict_proba(X)
        assert proba.dtype == dtype
        assert_close(proba, want_p, dtype, scale=1.0)
        want = est.predict(X)
        assert label.shape == want.shape
        if want.dtype.kind in "iu":
            assert label.dtype == np.int64
        elif want.dtype.kind in "US":
            assert label.dtype == object
        else:
            assert label.dtype == want.dtype
        clear = _clear(want_p, task, dtype)
        assert clear.mean() > 0.8
        np.testing.assert_array_equal(label[clear], want[clear])


CLASSIFIER_CASES = [("binary", "int"), ("binary", "str"), ("binary", "bool"),
                    ("binary", "float"), ("multiclass", "int"), ("multiclass", "str"),
                    ("multiclass", "float"), ("multilabel", "int")]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["relu", "logistic", "elu", "maxout",
                                 ["leaky_relu", "tanh"]], ids=str)
@pytest.mark.parametrize("task, labels", CLASSIFIER_CASES)
@needs_sklearn
def test_classifier(task, labels, act, dtype):
    X, y = _cls_data(task, labels)
    est = _fit(MLPClassifier((8, 6), activation=act, max_iter=40, random_state=0,
                             learning_rate_init=0.05, dtype=dtype), X, y)
    check_classifier(est, task, dtype)


@needs_sklearn
def test_classifier_one_class_seen():
    """partial_fit with classes given but one class in y: LabelBinarizer
    decodes every row to the one class it was fitted on."""
    X, _ = _cls_data("binary", "int")
    est = MLPClassifier((4,), random_state=0).partial_fit(X, np.full(len(X), 3),
                                                          classes=[3])
    label, proba = run(fastnn.to_onnx(est), X)
    np.testing.assert_array_equal(label, est.predict(X))
    assert_close(proba, est.predict_proba(X), np.float64, scale=1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["identity", "tanh", "maxout", ["elu", "relu"]], ids=str)
@pytest.mark.parametrize("case", ["1out", "2out", "poisson"])
@needs_sklearn
def test_regressor(case, act, dtype):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((80, 4))
    y = X @ rng.standard_normal((4, 2))
    kw = {}
    if case == "1out":
        y = y[:, 0]
    elif case == "poisson":
        y, kw = np.exp(0.3 * y[:, 0]), {"loss": "poisson"}
    est = _fit(MLPRegressor(hidden_layer_sizes=(7, 5), activation=act, max_iter=30,
                            random_state=0, dtype=dtype, **kw), X, y)
    proto = fastnn.to_onnx(est)
    assert [o.name for o in proto.graph.output] == ["variable"]
    for X in inputs(4, dtype, seed=6):
        if case == "poisson":
            X = X / 100       # exp() of the large-input outputs overflows
        (got,) = run(proto, X)
        assert got.dtype == dtype
        assert_close(got, est.predict(X), dtype)


@needs_sklearn
def test_estimator_from_sklearn_and_replaced_coefs():
    """An estimator built by from_sklearn, and one whose coefs_ were replaced
    by the user, export what they predict."""
    sk = pytest.importorskip("sklearn.neural_network")
    X, y = _cls_data("multiclass", "str")
    a = _fit(sk.MLPClassifier((6,), max_iter=30, random_state=0), X, y)
    est = MLPClassifier.from_sklearn(a)
    check_classifier(est, "multiclass", np.float64)
    est.coefs_ = [c * 2 for c in est.coefs_]
    check_classifier(est, "multiclass", np.float64)


# ---- skl2onnx -----------------------------------------------------------------

def _skl2onnx():
    skl2onnx = pytest.importorskip("skl2onnx", reason="skl2onnx's own path needs "
                                   "skl2onnx (pip install fastnn[onnx])")
    fastnn.onnx.register_skl2onnx()
    return skl2onnx


def _run_any(proto, X):
    sess = session(proto)
    return sess.run(None, {sess.get_inputs()[0].name: X})


def _signature(proto):
    return [(o.name, o.type.WhichOneof("value"),
             o.type.tensor_type.elem_type if o.type.HasField("tensor_type") else None)
            for o in proto.graph.output]


SKL2ONNX_CASES = [("binary", "int"), ("binary", "bool"), ("multiclass", "str"),
                  ("multiclass", "int"), ("multiclass", "int32"), ("multilabel", "int")]


@pytest.mark.parametrize("zipmap", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("task, labels", SKL2ONNX_CASES)
@needs_sklearn
def test_skl2onnx_classifier_matches_sklearns_graph(task, labels, dtype, zipmap):
    """skl2onnx.to_onnx on a fastnn classifier gives the graph skl2onnx
    gives the same model as scikit-learn's MLPClassifier: the same output
    names and types, and the same values where skl2onnx's own graph is
    right (its converter stores integer classes as int32, so 2**40 comes
    out wrong from it, and in double its Binarizer (multilabel) has no
    onnxruntime kernel).  ZipMap takes float probabilities only, so with
    double input and zipmap both graphs are rejected by onnxruntime alike."""
    skl2onnx = _skl2onnx()
    small = labels == "int32"
    X, y = _cls_data(task, "int" if small else labels)
    if small:
        y = np.where(y == 2**40, 11, y)
    est = _fit(MLPClassifier((6,), activation="tanh", max_iter=30, random_state=0),
               X, y)
    sk_est = est.to_sklearn()
    opts = None if zipmap else {"zipmap": False}
    Xt = X.astype(dtype)
    ours = skl2onnx.to_onnx(est, Xt[:1], options=opts)
    theirs = skl2onnx.to_onnx(sk_est, Xt[:1], options=opts)
    assert _signature(ours) == _signature(theirs)
    if zipmap and dtype == np.float64:
        for proto in (ours, theirs):
            with pytest.raises(Exception, match="ZipMap"):
                session(proto)
        return
    l1, p1 = _run_any(ours, Xt)
    if zipmap:
        keys = [sorted(d) for d in p1]
        assert all(k == keys[0] for k in keys)
        p1 = np.array([[d[k] for k in keys[0]] for d in p1])
    want = est.predict(X)
    np.testing.assert_array_equal(l1, want.astype(np.int64) if want.dtype == bool else want)
    assert_close(p1, est.predict_proba(X), dtype, scale=1.0)
    int32_overflow = (est.classes_.dtype.kind == "i"
                      and np.abs(est.classes_).max() >= 2**31)
    if int32_overflow or (task == "multilabel" and dtype == np.float64):
        return      # skl2onnx's own graph is wrong or does not run here
    l2, p2 = _run_any(theirs, Xt)
    np.testing.assert_array_equal(l1, l2)
    if zipmap:
        assert [sorted(d) for d in p2] == keys
        p2 = np.array([[d[k] for k in keys[0]] for d in p2])
    assert_close(p1, p2, dtype, scale=1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@needs_sklearn
def test_skl2onnx_regressor_matches_sklearns_graph(dtype):
    skl2onnx = _skl2onnx()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 4))
    est = _fit(MLPRegressor(hidden_layer_sizes=(5,), max_iter=30, random_state=0),
               X, X[:, 0] - X[:, 1])
    Xt = X.astype(dtype)
    ours = skl2onnx.to_onnx(est, Xt[:1])
    theirs = skl2onnx.to_onnx(est.to_sklearn(), Xt[:1])
    assert _signature(ours) == _signature(theirs)
    (v1,), (v2,) = _run_any(ours, Xt), _run_any(theirs, Xt)
    assert v1.shape == v2.shape == (50, 1)
    assert_close(v1, v2, dtype)
    assert_close(v1[:, 0], est.predict(X), dtype)


@pytest.mark.parametrize("case", ["2out", "poisson", "maxout", "elu-list"])
@needs_sklearn
def test_skl2onnx_beyond_sklearns_converter(case):
    """What skl2onnx's own MLP converters do not cover: several outputs (its
    converter flattens them to (N * n_outputs, 1)), loss='poisson' (exp
    output) and fastnn's activations."""
    skl2onnx = _skl2onnx()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 4))
    y = X @ rng.standard_normal((4, 2))
    kw = dict(hidden_layer_sizes=(6, 4), max_iter=30, random_state=0)
    if case == "2out":
        est = MLPRegressor(**kw)
    elif case == "poisson":
        est, y = MLPRegressor(loss="poisson", **kw), np.exp(0.3 * y[:, 0])
    elif case == "maxout":
        est = MLPRegressor(activation="maxout", **kw)
    else:
        est = MLPRegressor(activation=["elu", "leaky_relu"], **kw)
    _fit(est, X, y)
    (v,) = _run_any(skl2onnx.to_onnx(est, X[:1]), X)
    assert_close(v, est.predict(X).reshape(len(X), -1), np.float64)


@needs_sklearn
def test_skl2onnx_pipeline_and_options():
    skl2onnx = _skl2onnx()
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X, y = _cls_data("multiclass", "str")
    X = X * 10 + 3
    pipe = _fit(make_pipeline(StandardScaler(),
                              MLPClassifier((6,), activation="maxout", max_iter=30,
                                            random_state=0)), X, y)
    est = pipe[-1]
    proto = skl2onnx.to_onnx(pipe, X[:1], options={id(est): {"zipmap": False}})
    label, proba = _run_any(proto, X)
    np.testing.assert_array_equal(label, pipe.predict(X))
    assert_close(proba, pipe.predict_proba(X), np.float64, scale=1.0)
    # nocl: labels as class indices
    proto = skl2onnx.to_onnx(est, X[:1], options={"zipmap": False, "nocl": True})
    label, _ = _run_any(proto, X)
    np.testing.assert_array_equal(est.classes_[label], est.predict(X))
    # zipmap="columns": one output per class
    proto = skl2onnx.to_onnx(est, X[:1], options={"zipmap": "columns"})
    assert [o.name for o in proto.graph.output] == ["output_label", "scat", "sdog", "semu"]


@needs_sklearn
def test_register_skl2onnx_twice():
    _skl2onnx()
    fastnn.onnx.register_skl2onnx()


# ---- errors -------------------------------------------------------------------

def test_import_fastnn_does_not_import_onnx():
    code = ("import sys, fastnn; fastnn.to_onnx; "
            "print(any(m.split('.')[0] in ('onnx', 'onnxruntime', 'skl2onnx') "
            "for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_missing_onnx_names_the_extra(monkeypatch):
    net = Network([Dense(2)], n_in=2)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install fastnn\[onnx\]"):
        fastnn.to_onnx(net)


@needs_sklearn
def test_unbuilt_and_unfitted():
    with pytest.raises(ValueError, match="not built"):
        fastnn.to_onnx(Network([Dense(3, "relu"), Dense(1)]))
    for est in (MLPClassifier(), MLPRegressor()):
        with pytest.raises(NotFittedError):
            fastnn.to_onnx(est)


@needs_sklearn
def test_wrong_model_type():
    sk = pytest.importorskip("sklearn.neural_network")
    for bad in (None, "net.onnx", sk.MLPClassifier(), Dense(3)):
        with pytest.raises(TypeError, match="exports a fastnn.Network"):
            fastnn.to_onnx(bad)


@pytest.mark.parametrize("kw, exc, match", [
    (dict(dtype=np.float16), ValueError, "dtype must be None, float32 or float64"),
    (dict(dtype="int64"), ValueError, "dtype must be"),
    (dict(dtype=object()), ValueError, "dtype must be"),
    (dict(opset=12), ValueError, "opset must be between 13"),
    (dict(opset=10_000), ValueError, "opset must be between 13"),
    (dict(opset="13"), TypeError, "opset must be an int"),
    (dict(opset=13.0), TypeError, "opset must be an int"),
    (dict(opset=True), TypeError, "opset must be an int"),
])
def test_bad_arguments(kw, exc, match):
    net = Network([Dense(2)], n_in=2)
    with pytest.raises(exc, match=match):
        fastnn.to_onnx(net, **kw)


def test_nonfinite_parameters():
    net = Network([Dense(3, "tanh"), Dense(1)], n_in=2)
    net.layers[1].b[0] = np.nan
    with pytest.raises(ValueError, match="layer 1's b is not finite"):
        fastnn.to_onnx(net)


@needs_sklearn
def test_unsupported_label_type():
    X, y = _cls_data("binary", "int")
    est = _fit(MLPClassifier((3,), max_iter=5, random_state=0), X, y)
    est.classes_ = np.array([np.datetime64("2020-01-01"), np.datetime64("2021-01-01")])
    with pytest.raises(ValueError, match="cannot be exported"):
        fastnn.to_onnx(est)
