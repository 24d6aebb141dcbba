"""ONNX export of fastnn models: ``fastnn.to_onnx(model)``.

Exports a built :class:`fastnn.Network` or a fitted
:class:`fastnn.sklearn.MLPRegressor` / :class:`fastnn.sklearn.MLPClassifier`
as an ``onnx.ModelProto``, every activation included (identity, sigmoid,
tanh, relu, leaky_relu, elu with each layer's alpha, maxout with any number
of pieces, softmax; per-layer activation lists; bias-free layers).

The graphs use only the default ONNX domain at opset 13 by default: the
lowest opset at which every operator used here (MatMul, Add, Sigmoid, Tanh,
Relu, LeakyRelu, Elu, Softmax, Exp, Slice, Max, Sub, Concat, Greater, Cast,
ArgMax, Gather, Reshape) has its current definition, so any ONNX runtime of
2021 or later (onnxruntime >= 1.7) loads them; a later opset may be asked
for.  The batch dimension is dynamic ("N").

Graph signatures (input ``X``: float tensor (N, n_features) of the model's
dtype, or the dtype asked for):

- Network: output ``output`` (N, n_out), what ``net.predict(X)`` returns
  (output activation applied).
- MLPRegressor: output ``variable``, what ``predict`` returns: (N,) for one
  output, (N, n_outputs) otherwise; loss='poisson' applies its exp output.
- MLPClassifier: outputs ``label`` and ``probabilities`` (the names
  skl2onnx gives scikit-learn's MLPClassifier with zipmap=False).
  ``probabilities`` is ``predict_proba(X)``; ``label`` is ``predict(X)``,
  decoded in the graph: (N,) of the classes' type (int64 for integer
  classes, string, bool, or float) for binary and multiclass targets, and
  the (N, n_labels) int64 indicator matrix for multilabel targets.

:func:`register_skl2onnx` additionally registers the fastnn estimators with
skl2onnx, so that ``skl2onnx.to_onnx(est, X)`` and pipelines containing
them convert, with skl2onnx's conventions (see its docstring).

Building a graph needs the ``onnx`` package (``pip install fastnn[onnx]``),
which is imported only when an export is asked for.
"""
import sys

import numpy as np

__all__ = ["to_onnx", "register_skl2onnx", "DEFAULT_OPSET", "MIN_OPSET"]

DEFAULT_OPSET = 13
MIN_OPSET = 13

_INSTALL_HINT = "pip install fastnn[onnx]"


def _import_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as e:
        raise ImportError(f"ONNX export needs the onnx package, which is not "
                          f"installed ({e}); install it with: {_INSTALL_HINT}") from None
    return onnx, helper, numpy_helper


# ---- what a model is, as layers --------------------------------------------

class _Layer:
    """One layer as the graph needs it: W (fan_in, units * pieces; maxout
    column j*pieces + p is piece p of unit j), b or None, the activation
    name (fastnn's), its alpha and the number of maxout pieces."""

    def __init__(self, W, b, act, alpha, pieces):
        self.W, self.b, self.act, self.alpha, self.pieces = W, b, act, alpha, pieces


def _net_layers(net, dtype):
    layers = []
    for i, l in enumerate(net.layers):
        W = np.array(l.W, dtype=dtype)
        b = None if l.b is None else np.array(l.b, dtype=dtype)
        for name, a in (("W", W), ("b", b)):
            if a is not None and not np.isfinite(a).all():
                raise ValueError(f"layer {i}'s {name} is not finite (NaN or "
                                 "infinity): there is nothing sensible to export")
        layers.append(_Layer(W, b, l.activation, float(l.alpha), int(l.pieces)))
    return layers


def _fastnn_estimator_kind(model):
    """'regressor' / 'classifier' for fastnn's estimators, else None.  The
    estimators live in fastnn.sklearn, which imports scikit-learn: if that
    module was never imported, model cannot be one of them."""
    mod = sys.modules.get("fastnn.sklearn")
    if mod is None:
        return None
    if isinstance(model, mod.MLPClassifier):
        return "classifier"
    if isinstance(model, mod.MLPRegressor):
        return "regressor"
    return None


def _fitted_net(est):
    from sklearn.utils.validation import check_is_fitted
    check_is_fitted(est, ["coefs_", "intercepts_", "out_activation_"])
    return est._get_net()


def _check_dtype(dtype, default):
    if dtype is None:
        return np.dtype(default)
    try:
        d = np.dtype(dtype)
    except TypeError:
        d = None
    if d not in (np.float32, np.float64):
        raise ValueError(f"dtype must be None, float32 or float64, got {dtype!r}")
    return d


def _check_opset(opset):
    from onnx import defs
    latest = defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise TypeError(f"opset must be an int, got {opset!r}")
    if not MIN_OPSET <= int(opset) <= latest:
        raise ValueError(f"opset must be between {MIN_OPSET} and {latest} (the "
                         f"latest this onnx package knows), got {opset}")
    return int(opset)


# ---- graph emission, independent of who collects the nodes ----------------

class _ProtoSink:
    """Collects nodes and initializers for onnx.helper.make_graph."""

    def __init__(self, helper, numpy_helper):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.inits, self._names = [], [], set()

    def name(self, hint):
        n, k = hint, 1
        while n in self._names:
            n, k = f"{hint}_{k}", k + 1
        self._names.add(n)
        return n

    def const(self, hint, array):
        from onnx import TensorProto
        name = self.name(hint)
        array = np.asarray(array)
        if array.dtype.kind in "OUS":
            t = self.helper.make_tensor(name, TensorProto.STRING, list(array.shape),
                                        [str(s).encode("utf-8") for s in array.ravel()])
        else:
            t = self.numpy_helper.from_array(np.ascontiguousarray(array), name)
        self.inits.append(t)
        return name

    def node(self, op, inputs, hint, out=None, **attrs):
        out = out if out is not None else self.name(hint)
        self.nodes.append(self.helper.make_node(op, list(inputs), [out],
                                                name=self.name(f"{hint}_op"), **attrs))
        return out


class _SklSink:
    """The same interface over a skl2onnx scope and container."""

    def __init__(self, scope, container):
        self.scope, self.container = scope, container

    def name(self, hint):
        return self.scope.get_unique_variable_name(hint)

    def const(self, hint, array):
        from onnx import TensorProto, numpy_helper
        name = self.name(hint)
        array = np.asarray(array)
        if array.dtype.kind in "OUS":
            self.container.add_initializer(
                name, TensorProto.STRING, list(array.shape),
                [str(s).encode("utf-8") for s in array.ravel()])
        else:
            self.container.add_initializer(
                name, None, None, numpy_helper.from_array(np.ascontiguousarray(array)))
        return name

    def node(self, op, inputs, hint, out=None, **attrs):
        out = out if out is not None else self.name(hint)
        self.container.add_node(op, list(inputs), [out],
                                name=self.scope.get_unique_operator_name(op), **attrs)
        return out


def _emit_layers(sink, x, layers, dtype):
    """Nodes computing the network's output (activation applied) from x."""
    h = x
    for i, l in enumerate(layers):
        z = sink.node("MatMul", [h, sink.const(f"W{i}", l.W)], f"matmul{i}")
        if l.b is not None:
            z = sink.node("Add", [z, sink.const(f"b{i}", l.b)], f"add{i}")
        h = _emit_activation(sink, z, l, i, dtype)
    return h


def _emit_activation(sink, z, l, i, dtype):
    act = l.act
    if act == "identity":
        return z
    simple = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}
    if act in simple:
        return sink.node(simple[act], [z], f"{act}{i}")
    if act in ("leaky_relu", "elu") and dtype == np.float32:
        op = "LeakyRelu" if act == "leaky_relu" else "Elu"
        return sink.node(op, [z], f"{act}{i}", alpha=l.alpha)
    if act in ("leaky_relu", "elu"):
        # onnxruntime implements LeakyRelu and Elu for float only: in double
        # the same formulas from elementwise ops, z < 0 ? neg : z
        zero = sink.const(f"{act}{i}_zero", np.array(0, dtype))
        alpha = sink.const(f"{act}{i}_alpha", np.array(l.alpha, dtype))
        if act == "leaky_relu":
            neg = sink.node("Mul", [z, alpha], f"{act}{i}_neg")
        else:   # alpha (e^min(z, 0) - 1)
            one = sink.const(f"{act}{i}_one", np.array(1, dtype))
            e = sink.node("Exp", [sink.node("Min", [z, zero], f"{act}{i}_min")],
                          f"{act}{i}_exp")
            neg = sink.node("Mul", [sink.node("Sub", [e, one], f"{act}{i}_expm1"),
                                    alpha], f"{act}{i}_neg")
        below = sink.node("Less", [z, zero], f"{act}{i}_below")
        return sink.node("Where", [below, neg, z], f"{act}{i}")
    if act == "softmax":
        return sink.node("Softmax", [z], f"softmax{i}", axis=1)
    if act == "maxout":
        if l.pieces == 1:
            return z
        # piece p of every unit: columns p, p + pieces, ... (one strided Slice)
        cols = l.W.shape[1]
        axes = sink.const(f"maxout{i}_axes", np.array([1], np.int64))
        steps = sink.const(f"maxout{i}_steps", np.array([l.pieces], np.int64))
        ends = sink.const(f"maxout{i}_ends", np.array([cols], np.int64))
        parts = []
        for p in range(l.pieces):
            start = sink.const(f"maxout{i}_start{p}", np.array([p], np.int64))
            parts.append(sink.node("Slice", [z, start, ends, axes, steps],
                                   f"maxout{i}_piece{p}"))
        return sink.node("Max", parts, f"maxout{i}")
    raise ValueError(f"layer {i}: activation {act!r} has no ONNX export")


def _emit_regressor(sink, x, est, layers, dtype, out, flatten):
    h = _emit_layers(sink, x, layers, dtype)
    if est.out_activation_ == "exp":
        h = sink.node("Exp", [h], "exp")
    elif est.out_activation_ != "identity":
        raise ValueError(f"unsupported out_activation_ {est.out_activation_!r}")
    shape = [-1] if flatten else [-1, layers[-1].W.shape[1]]
    return sink.node("Reshape", [h, sink.const("out_shape", np.array(shape, np.int64))],
                     "reshape", out=out)


def _label_values(classes, mode):
    """The classes as the graph stores them.  mode 'exact': the dtype
    predict returns (integers as int64, bool, str, float); mode 'skl2onnx':
    skl2onnx's label types (int64 for integer, bool and integral float
    classes, string otherwise).  Returns (values, kind) with kind one of
    'int', 'bool', 'str', 'float'."""
    classes = np.asarray(classes)
    k = classes.dtype.kind
    if k == "O":
        if all(isinstance(c, str) for c in classes):
            classes, k = classes.astype(str), "U"
        elif all(isinstance(c, (int, np.integer)) and not isinstance(c, bool)
                 for c in classes):
            classes, k = classes.astype(np.int64), "i"
        else:
            raise ValueError(f"classes_ of mixed or non-scalar object types "
                             f"cannot be exported: {classes!r}")
    if k in "iu":
        if k == "u" and classes.size and int(classes.max()) > np.iinfo(np.int64).max:
            raise ValueError("unsigned classes above 2**63 - 1 do not fit int64 labels")
        return classes.astype(np.int64), "int"
    if k == "b":
        if mode == "skl2onnx":
            return classes.astype(np.int64), "int"
        return classes, "bool"
    if k in "US":
        return classes.astype(str), "str"
    if k == "f":
        if mode == "skl2onnx":
            if not np.all(classes == np.round(classes)):
                raise ValueError(
                    "skl2onnx's labels are int64 or strings: float class labels "
                    f"with a fractional part ({classes!r}) do not fit; export with "
                    "fastnn.to_onnx, which keeps float labels")
            return classes.astype(np.int64), "int"
        return classes, "float"
    raise ValueError(f"classes_ of dtype {classes.dtype} cannot be exported "
                     "(supported: integers, bool, strings, floats)")


def _classifier_task(est):
    y_type = est._label_binarizer.y_type_
    if y_type == "multilabel-indicator":
        return "multilabel"
    if est.out_activation_ == "softmax":
        return "multiclass"
    return "binary"


def _emit_classifier(sink, x, est, layers, dtype, label_out, proba_out,
                     mode="exact", nocl=False):
    p = _emit_layers(sink, x, layers, dtype)
    task = _classifier_task(est)
    if task != "multiclass":
        half = sink.const("half", np.array(0.5, dtype))
    if task == "multilabel":
        # predict: the indicator matrix (p > 0.5), as int64
        sink.node("Identity", [p], "proba", out=proba_out)
        above = sink.node("Greater", [p, half], "above")
        sink.node("Cast", [above], "label", out=label_out, to=_onnx_type(np.int64))
        return
    if task == "binary":
        one = sink.const("one", np.array(1, dtype))
        neg = sink.node("Sub", [one, p], "negative_proba")
        sink.node("Concat", [neg, p], "proba", out=proba_out, axis=1)
        above = sink.node("Greater", [p, half], "above")
        idx2 = sink.node("Cast", [above], "index2d", to=_onnx_type(np.int64))
        idx = sink.node("Reshape", [idx2, sink.const("flat", np.array([-1], np.int64))],
                        "index")
    else:
        sink.node("Identity", [p], "proba", out=proba_out)
        idx = sink.node("ArgMax", [p], "index", axis=1, keepdims=0)
    if nocl:
        sink.node("Identity", [idx], "label", out=label_out)
        return
    values, _ = _label_values(est.classes_, mode)
    if len(values) == 1:   # one class seen: LabelBinarizer always decodes to it
        values = np.concatenate([values, values])
    sink.node("Gather", [sink.const("classes", values), idx], "label",
              out=label_out, axis=0)


def _onnx_type(np_dtype):
    from onnx import helper
    return helper.np_dtype_to_tensor_dtype(np.dtype(np_dtype))


# ---- fastnn.to_onnx ---------------------------------------------------------

def to_onnx(model, *, dtype=None, opset=DEFAULT_OPSET):
    """Export a fastnn model as an ONNX graph (an ``onnx.ModelProto``).

    Parameters
    ----------
    model : fastnn.Network (built), or a fitted fastnn.sklearn.MLPRegressor /
        MLPClassifier.
    dtype : None, np.float32 or np.float64.  The graph's float type (input,
        weights, computation, outputs); None keeps the model's own.
    opset : int, default 13 (see the module docstring for why).

    Returns
    -------
    onnx.ModelProto with input ``X`` (N, n_features) and outputs
    ``output`` (Network), ``variable`` (MLPRegressor: shaped like
    ``predict``) or ``label`` and ``probabilities`` (MLPClassifier: like
    ``predict`` and ``predict_proba``).  Save it with
    ``model.SerializeToString()`` or ``onnx.save``.

    Raises ImportError (naming ``pip install fastnn[onnx]``) without the
    onnx package; TypeError for a model of another type; ValueError for an
    unbuilt network, an unfitted estimator (sklearn's NotFittedError),
    non-finite parameters, an unsupported class-label type, or a bad dtype
    or opset.

    Example::

        import onnxruntime as ort
        proto = fastnn.to_onnx(net)
        sess = ort.InferenceSession(proto.SerializeToString())
        y = sess.run(None, {"X": X})[0]
    """
    from fastnn.nn import Network
    kind = _fastnn_estimator_kind(model)
    if not isinstance(model, Network) and kind is None:
        raise TypeError(
            f"to_onnx exports a fastnn.Network or a fastnn.sklearn MLPRegressor / "
            f"MLPClassifier, got {type(model).__module__}.{type(model).__name__} "
            "(scikit-learn's own estimators convert with skl2onnx.to_onnx)")
    onnx, helper, numpy_helper = _import_onnx()
    opset = _check_opset(opset)
    if kind is None:
        if not model.built:
            raise ValueError("the network is not built yet (no n_in): build it "
                             "(net.build(n_in)) or train it before exporting")
        net = model
    else:
        net = _fitted_net(model)
    dtype = _check_dtype(dtype, net.dtype)
    layers = _net_layers(net, dtype)

    sink = _ProtoSink(helper, numpy_helper)
    x = sink.name("X")
    elem = _onnx_type(dtype)
    inputs = [helper.make_tensor_value_info(x, elem, ["N", net.n_in])]
    n_out = net.n_out
    if kind is None:
        out = sink.name("output")
        h = _emit_layers(sink, x, layers, dtype)
        sink.node("Identity", [h], "output_id", out=out)
        outputs = [helper.make_tensor_value_info(out, elem, ["N", n_out])]
        graph_name = "fastnn_Network"
    elif kind == "regressor":
        out = sink.name("variable")
        flatten = n_out == 1
        _emit_regressor(sink, x, model, layers, dtype, out, flatten)
        shape = ["N"] if flatten else ["N", n_out]
        outputs = [helper.make_tensor_value_info(out, elem, shape)]
        graph_name = "fastnn_MLPRegressor"
    else:
        label, proba = sink.name("label"), sink.name("probabilities")
        task = _classifier_task(model)
        _emit_classifier(sink, x, model, layers, dtype, label, proba)
        n_classes = len(model.classes_)
        if task == "multilabel":
            label_info = helper.make_tensor_value_info(label, _onnx_type(np.int64),
                                                       ["N", n_classes])
        else:
            values, k = _label_values(model.classes_, "exact")
            lt = onnx.TensorProto.STRING if k == "str" else _onnx_type(values.dtype)
            label_info = helper.make_tensor_value_info(label, lt, ["N"])
        n_proba = n_classes if task != "binary" else 2
        outputs = [label_info,
                   helper.make_tensor_value_info(proba, elem, ["N", n_proba])]
        graph_name = "fastnn_MLPClassifier"

    graph = helper.make_graph(sink.nodes, graph_name, inputs, outputs, sink.inits)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="fastnn",
                              producer_version=_version())
    proto.ir_version = helper.find_min_ir_version_for(opsets)
    onnx.checker.check_model(proto)
    return proto


def _version():
    from fastnn import __version__
    return __version__


# ---- skl2onnx ---------------------------------------------------------------

def _skl_dtype(operator):
    from skl2onnx.common.data_types import DoubleTensorType
    return np.float64 if isinstance(operator.inputs[0].type, DoubleTensorType) \
        else np.float32


def _skl_input(sink, operator, dtype):
    """The operator's input as the graph's float type (a Cast if needed, as
    skl2onnx's own MLP converters do)."""
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
    x = operator.inputs[0].full_name
    want = DoubleTensorType if dtype == np.float64 else FloatTensorType
    if not isinstance(operator.inputs[0].type, want):
        x = sink.node("Cast", [x], "cast_input", to=_onnx_type(dtype))
    return x


def _skl_shape_regressor(operator):
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
    from skl2onnx.common.utils import check_input_and_output_numbers
    check_input_and_output_numbers(operator, input_count_range=1, output_count_range=1)
    est = operator.raw_operator
    N = operator.inputs[0].get_first_dimension()
    cls = DoubleTensorType if _skl_dtype(operator) == np.float64 else FloatTensorType
    operator.outputs[0].type = cls([N, int(est.n_outputs_)])


def _skl_convert_regressor(scope, operator, container):
    est = operator.raw_operator
    dtype = _skl_dtype(operator)
    sink = _SklSink(scope, container)
    layers = _net_layers(_fitted_net(est), dtype)
    x = _skl_input(sink, operator, dtype)
    # skl2onnx's convention: (N, n_outputs), also for one output
    _emit_regressor(sink, x, est, layers, dtype, operator.outputs[0].full_name,
                    flatten=False)


def _skl_shape_classifier(operator):
    from skl2onnx.common.data_types import (DoubleTensorType, FloatTensorType,
                                            Int64TensorType, StringTensorType)
    from skl2onnx.common.utils import check_input_and_output_numbers
    check_input_and_output_numbers(operator, input_count_range=1, output_count_range=2)
    est = operator.raw_operator
    N = operator.inputs[0].get_first_dimension()
    nocl = operator.scope_inst.get_options(est, dict(nocl=False))["nocl"]
    task = _classifier_task(est)
    n_classes = len(est.classes_)
    if task == "multilabel":
        if nocl:
            raise RuntimeError("option nocl=True is not available for multilabel "
                               "targets (the labels are already indices)")
        label = Int64TensorType([N, n_classes])
    elif nocl:
        label = Int64TensorType([N])
    else:
        _, k = _label_values(est.classes_, "skl2onnx")
        label = StringTensorType([N]) if k == "str" else Int64TensorType([N])
    cls = DoubleTensorType if _skl_dtype(operator) == np.float64 else FloatTensorType
    operator.outputs[0].type = label
    operator.outputs[1].type = cls([N, n_classes if task != "binary" else 2])


def _skl_convert_classifier(scope, operator, container):
    est = operator.raw_operator
    dtype = _skl_dtype(operator)
    nocl = scope.get_options(est, dict(nocl=False))["nocl"]
    sink = _SklSink(scope, container)
    layers = _net_layers(_fitted_net(est), dtype)
    x = _skl_input(sink, operator, dtype)
    _emit_classifier(sink, x, est, layers, dtype, operator.outputs[0].full_name,
                     operator.outputs[1].full_name, mode="skl2onnx", nocl=nocl)


_REGISTERED = False


def register_skl2onnx():
    """Register fastnn's MLPRegressor and MLPClassifier with skl2onnx, so
    that ``skl2onnx.to_onnx(est, X)`` (and pipelines holding them) convert.
    Safe to call more than once.

    The converters are fastnn's own graph (every fastnn activation, maxout,
    per-layer lists, loss='poisson') under skl2onnx's conventions: the
    graph's float type follows the input type skl2onnx is given (double
    stays double, anything else is cast to float, as skl2onnx's MLP
    converters do); the regressor's output ``variable`` is (N, n_outputs),
    also (N, 1) for one output; the classifier's outputs are ``label``
    (int64 for integer, bool and integral float classes, string for
    strings; the int64 indicator matrix for multilabel) and
    ``probabilities``, followed by skl2onnx's ZipMap unless
    ``options={'zipmap': False}``.  Options: zipmap (True, False,
    'columns'), output_class_labels, nocl (labels as class indices).

    Raises ImportError if skl2onnx or onnx is missing.
    """
    global _REGISTERED
    _import_onnx()
    try:
        from skl2onnx import update_registered_converter
    except ImportError as e:
        raise ImportError(f"registering with skl2onnx needs the skl2onnx package "
                          f"({e}); install it with: {_INSTALL_HINT}") from None
    if _REGISTERED:
        return
    from fastnn.sklearn import MLPClassifier, MLPRegressor
    update_registered_converter(
        MLPRegressor, "FastnnMLPRegressor", _skl_shape_regressor,
        _skl_convert_regressor)
    update_registered_converter(
        MLPClassifier, "FastnnMLPClassifier", _skl_shape_classifier,
        _skl_convert_classifier,
        options={"zipmap": [True, False, "columns"],
                 "output_class_labels": [False, True],
                 "nocl": [True, False]})
    _REGISTERED = True
