"""fastnn.save / fastnn.load: models on disk without pickle.

A fastnn model file (format "fastnn-model", version 2) is a ZIP archive with
every member stored uncompressed, so numpy.load(path) can read it too
(allow_pickle stays False):

    header.json     UTF-8 JSON object: what the model is (below)
    header.sha256   the SHA-256 of header.json, 64 hex digits
    <name>.npy      one NumPy .npy file per array the header lists: little-
                    endian float32/float64 (or, for class labels, int / bool
                    / unicode), C order, never object arrays

header.json holds:
    format, version       "fastnn-model", 2 (version 1 files, which lack
                          what version 2 added below, still load)
    kind                  "Network", "MLPClassifier" or "MLPRegressor"
    fastnn_version        the writer's fastnn.__version__ (information only)
    dtype                 "float32" or "float64": that of params
    n_in                  input width
    layers                one object per layer, input to output:
                          {"type": "dense", "units", "activation", "alpha",
                          "bias"[, "dropout" (version 2, only if > 0)]} or
                          {"type": "maxout", "units", "pieces", "bias"};
                          activation one of identity, sigmoid, tanh, relu,
                          leaky_relu, elu, softmax (output layer only)
    loss                  "mse", "sse", "bce", "softmax_ce", or (version 2)
                          "mae", "huber", "quantile"
    loss_param            (version 2) huber's delta or quantile's quantile;
                          present for those two losses only
    arrays                {name: {"shape", "dtype", "sha256"}} for each .npy
                          member (sha256 of the member's bytes)
    network               Network only: {"init", "seed", "backend", and
                          "fits" (optional, 0 if absent): the fits run}
    estimator             estimators only: {"params": the constructor
                          parameters (get_params; MLPRegressor's huber_delta
                          and quantile, MLPClassifier's class_weight since
                          version 2: null, "balanced", {"dict": [[label,
                          weight], ...]} or {"per_output": [[[label, weight],
                          ...], ...]}; both estimators' dropout since version
                          2: a number or a list), "fitted": n_iter_, t_,
                          loss_, n_layers_, n_outputs_, out_activation_,
                          n_features_in_, hidden_activations, stochastic, and
                          for sgd/adam best_loss_, best_validation_score_,
                          no_improvement_count, has_validation_scores, and for
                          classifiers y_type, classes_object, sparse_input};
                          arrays loss_curve, validation_scores, best_params
                          (early stopping's best, params layout), classes,
                          feature_names, and since version 2
                          validation_loss_curve (absent: None)
    optimizer             training state to continue from, or null: kind and
                          step count t (plus, for estimators, the schedule's
                          hyper-parameters and current learning rate); arrays
                          optimizer_vel / optimizer_sq in the params layout

params.npy is the network's flat parameter buffer: every layer's weight
matrix W (n_in x units*pieces, row-major) in layer order, then every bias.
Non-finite floats in the header (n_iter_no_change=inf, best_loss_) are
written as the strings "inf", "-inf", "nan".

Loading never executes code from the file: JSON and raw .npy data are parsed
and checked before anything is built.  Any file that is not exactly what
this module writes -- truncated, bytes flipped, a member added or removed,
header or arrays edited (wrong shapes, unknown activation, sizes that do not
add up or are absurdly large, NaN or inf parameters) -- raises FormatError,
before any memory is sized from declared numbers.  A deliberate edit must
rewrite header.sha256 and the arrays' sha256 entries, and then still passes
every consistency check below.

Writes are atomic: the file is written to a temporary file in the same
directory, flushed and fsynced, then renamed over the target (os.replace),
and the directory is fsynced; a crash or a full disk mid-save leaves the
previous file intact.
"""
import hashlib
import io
import json
import math
import numbers
import os
import secrets
import warnings
import zipfile

import numpy as np

from fastnn._train import OPT_KINDS as _OPT_KINDS
from fastnn.reference import DENSE_ACTIVATIONS

__all__ = ["save", "load", "FormatError", "FORMAT", "VERSION"]

FORMAT = "fastnn-model"
VERSION = 2

MAX_HEADER_BYTES = 1 << 20
MAX_LAYERS = 4096
MAX_UNITS = (1 << 31) - 1
MAX_PIECES = 1 << 16
MAX_PARAMS = 1 << 40
MAX_NPY_HEADER = 1 << 16

_FLOAT_DTYPES = {"float32": "<f4", "float64": "<f8"}
_LOSSES = ("mse", "sse", "bce", "softmax_ce", "mae", "huber", "quantile")
_PARAM_LOSSES = ("huber", "quantile")        # the losses with a loss_param
# constructor parameters added in version 2: absent from version 1 files
_V2_PARAMS = ("huber_delta", "quantile", "class_weight", "dropout")
_KINDS = ("Network", "MLPClassifier", "MLPRegressor")
# an estimator's optimizer entry: these floats, and kind, t, solver,
# lr_schedule, nesterov
_EST_OPT_FLOATS = ("learning_rate_init", "learning_rate", "momentum", "power_t",
                   "beta_1", "beta_2", "epsilon")


class FormatError(ValueError):
    """The file is not a valid fastnn model file (truncated, corrupted,
    edited, or not a fastnn file at all)."""


# ---- small helpers ------------------------------------------------------------

def _fail(msg):
    raise FormatError(msg)


def _enc_float(x):
    x = float(x)
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _dec_float(v, what, allow_nonfinite=True, allow_none=False):
    if v is None and allow_none:
        return None
    if isinstance(v, str) and allow_nonfinite and v in ("inf", "-inf", "nan"):
        return float(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        _fail(f"{what} must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        _fail(f"{what} must be finite, got {v!r}")
    return v


def _int(v, what, lo=0, hi=MAX_PARAMS, allow_none=False):
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        _fail(f"{what} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def _obj(d, what, required, optional=()):
    if not isinstance(d, dict):
        _fail(f"{what} must be a JSON object, got {type(d).__name__}")
    keys = set(d)
    missing = set(required) - keys
    extra = keys - set(required) - set(optional)
    if missing:
        _fail(f"{what} lacks {sorted(missing)}")
    if extra:
        _fail(f"{what} has unknown entries {sorted(extra)}")
    return d


def _choice(v, what, options):
    if not isinstance(v, str) or v not in options:
        _fail(f"{what} must be one of {list(options)}, got {v!r}")
    return v


def _npy_bytes(arr):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


# ---- writing -----------------------------------------------------------------
# The models describe themselves (Network._to_state, the estimators'
# _to_state); this module encodes those descriptions as header entries and
# arrays.

def _architecture_parts(ns):
    """(header entries, arrays) of a network description: dtype, n_in,
    layers, loss and params."""
    header = {"dtype": ns["dtype"], "n_in": int(ns["n_in"]),
              "layers": [dict(l) for l in ns["layers"]], "loss": ns["loss"]}
    if ns.get("loss_param") is not None:
        header["loss_param"] = float(ns["loss_param"])
    return header, {"params": ns["params"]}


def _network_parts(net):
    """(header, arrays) describing a built Network."""
    ns = net._to_state()
    if ns["n_in"] is None:
        raise ValueError("the network is not built yet: nothing to save")
    header, arrays = _architecture_parts(ns)
    seed = ns["seed"] if isinstance(ns["seed"], numbers.Integral) else None
    header["network"] = {"init": ns["init"],
                         "seed": None if seed is None else int(seed),
                         "backend": ns["backend"], "fits": int(ns["fits"])}
    opt = ns["optimizer"]
    header["optimizer"] = None
    if opt is not None:
        header["optimizer"] = {"kind": opt["kind"], "t": int(opt["t"])}
        arrays["optimizer_vel"] = opt["vel"]
        if opt["sq"] is not None:
            arrays["optimizer_sq"] = opt["sq"]
    return header, arrays


def _json_label(c):
    """A class label as a JSON scalar (int, float, str or bool)."""
    if isinstance(c, (bool, np.bool_)):
        return bool(c)
    if isinstance(c, numbers.Integral):
        return int(c)
    if isinstance(c, numbers.Real):
        return _enc_float(c)
    if isinstance(c, str):
        return str(c)
    raise TypeError(f"cannot save the class label {c!r} of class_weight")


def _weight_pairs(d):
    return [[_json_label(c), _enc_float(w)] for c, w in d.items()]


def _encode_class_weight(v):
    """class_weight as JSON: null, "balanced", {"dict": [[label, weight],
    ...]} or {"per_output": [[[label, weight], ...], ...]} (labels keep
    their JSON type, so 1 and "1" stay apart)."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, dict):
        return {"dict": _weight_pairs(v)}
    if isinstance(v, (list, tuple)) and all(isinstance(d, dict) for d in v):
        return {"per_output": [_weight_pairs(d) for d in v]}
    raise TypeError(f"cannot save parameter class_weight={v!r}")


def _encode_param(k, v):
    """A constructor parameter as a JSON value."""
    if k == "class_weight":
        return _encode_class_weight(v)
    if k == "dropout" and isinstance(v, (list, tuple)):
        return [_enc_float(r) for r in v]
    if k == "hidden_layer_sizes":
        return [int(h) for h in (v if hasattr(v, "__iter__") else [v])]
    if k == "activation":
        return v if isinstance(v, str) else [str(a) for a in v]
    if k == "dtype":
        return None if v is None else np.dtype(v).name
    if k == "random_state":
        if isinstance(v, numbers.Integral):
            return int(v)
        if v is not None:
            warnings.warn("random_state is a RandomState instance, which a fastnn "
                          "model file does not store: saved as None", UserWarning,
                          stacklevel=6)
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        return _enc_float(v)
    if not (v is None or isinstance(v, str)):
        raise TypeError(f"cannot save parameter {k}={v!r}")
    return v


def _optional_float(v):
    return None if v is None else _enc_float(v)


def _stochastic_parts(st, fitted, arrays):
    """sgd / adam's record and early-stopping state into the header entries
    `fitted` and `arrays`."""
    fitted["best_loss_"] = _optional_float(st["best_loss_"])
    fitted["best_validation_score_"] = _optional_float(st["best_validation_score_"])
    fitted["no_improvement_count"] = int(st["no_improvement_count"])
    vs = st["validation_scores_"]
    fitted["has_validation_scores"] = vs is not None
    arrays["loss_curve"] = np.asarray(st["loss_curve_"], dtype=np.float64).reshape(-1)
    if vs is not None:
        arrays["validation_scores"] = np.asarray(vs, dtype=np.float64).reshape(-1)
    vl = st.get("validation_loss_curve_")
    if vl is not None:
        arrays["validation_loss_curve"] = np.asarray(vl, dtype=np.float64).reshape(-1)
    arrays["best_params"] = st["best_params"]


def _label_parts(labels, fitted, arrays):
    """A classifier's classes and label type into `fitted` and `arrays`
    (object labels, which must be strings, stored as text)."""
    classes = np.asarray(labels["classes_"])
    obj = classes.dtype == object
    if obj:
        if not all(isinstance(c, str) for c in classes):
            raise TypeError("cannot save class labels of mixed or "
                            f"non-string object types: {classes!r}")
        classes = classes.astype(str)
    if classes.dtype.kind not in "biufU":
        raise TypeError(f"cannot save class labels of dtype {classes.dtype}")
    arrays["classes"] = classes
    fitted["classes_object"] = bool(obj)
    fitted["y_type"] = labels["y_type"]
    fitted["sparse_input"] = bool(labels["sparse_input"])


def _estimator_optimizer_header(opt, arrays):
    if opt is None:
        return None
    h = {k: _enc_float(opt[k]) for k in _EST_OPT_FLOATS}
    h.update(kind=opt["kind"], t=int(opt["t"]), solver=opt["solver"],
             lr_schedule=opt["lr_schedule"], nesterov=bool(opt["nesterov"]))
    if opt["vel"] is not None:
        arrays["optimizer_vel"] = opt["vel"]
    if opt["sq"] is not None:
        arrays["optimizer_sq"] = opt["sq"]
    return h


def _estimator_parts(est):
    from sklearn.utils.validation import check_is_fitted
    check_is_fitted(est)
    state = est._to_state()
    f = state["fitted"]
    header, arrays = _architecture_parts(f["network"])
    fitted = {"n_iter_": int(f["n_iter_"]), "t_": int(f["t_"]),
              "loss_": _enc_float(f["loss_"]), "n_layers_": int(f["n_layers_"]),
              "n_outputs_": int(f["n_outputs_"]),
              "out_activation_": f["out_activation_"],
              "n_features_in_": int(f["n_features_in_"]),
              "hidden_activations": list(f["hidden_activations"]),
              "stochastic": f["stochastic"] is not None}
    if f["stochastic"] is not None:
        _stochastic_parts(f["stochastic"], fitted, arrays)
    if f["feature_names_in_"] is not None:
        arrays["feature_names"] = np.array([str(n) for n in f["feature_names_in_"]],
                                           dtype=str)
    if f["labels"] is not None:
        _label_parts(f["labels"], fitted, arrays)
    header["optimizer"] = _estimator_optimizer_header(f["optimizer"], arrays)
    header["estimator"] = {"params": {k: _encode_param(k, v)
                                      for k, v in state["params"].items()},
                           "fitted": fitted}
    return header, arrays


def _model_parts(model):
    from fastnn.nn import Network
    if isinstance(model, Network):
        header, arrays = _network_parts(model)
        kind = "Network"
    else:
        name = type(model).__name__
        if type(model).__module__ != "fastnn.sklearn" or name not in _KINDS:
            raise TypeError("fastnn.save takes a fastnn.Network or a "
                            "fastnn.sklearn.MLPClassifier / MLPRegressor, got "
                            f"{type(model).__module__}.{name}")
        header, arrays = _estimator_parts(model)
        kind = name
    from fastnn import __version__
    full = {"format": FORMAT, "version": VERSION, "kind": kind,
            "fastnn_version": __version__}
    full.update(header)
    return full, arrays


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:          # not possible on some platforms: best effort
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(model, path):
    """Write `model` (a built fastnn.Network or a fitted
    fastnn.sklearn.MLPClassifier / MLPRegressor) to `path` atomically, in the
    format described in this module's docstring.  Returns the path."""
    header, arrays = _model_parts(model)
    members = {}
    meta = {}
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        if arr.dtype.kind == "f":
            arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        arr = np.ascontiguousarray(arr)
        data = _npy_bytes(arr)
        members[name + ".npy"] = data
        meta[name] = {"shape": list(arr.shape), "dtype": arr.dtype.str,
                      "sha256": hashlib.sha256(data).hexdigest()}
    header["arrays"] = meta
    hbytes = json.dumps(header, indent=1, sort_keys=True, allow_nan=False).encode()
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}."
                                  f"{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
                zf.writestr("header.json", hbytes)
                zf.writestr("header.sha256", hashlib.sha256(hbytes).hexdigest())
                for name, data in members.items():
                    zf.writestr(name, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)
    return path


# ---- reading -----------------------------------------------------------------

def _read_member(zf, info, limit):
    if info.compress_type != zipfile.ZIP_STORED:
        _fail(f"member {info.filename!r} is compressed; fastnn stores members")
    if info.flag_bits & 0x1:
        _fail(f"member {info.filename!r} is encrypted")
    if info.file_size != info.compress_size or info.file_size > limit:
        _fail(f"member {info.filename!r} declares {info.file_size} bytes, more "
              f"than the {limit} it may hold here")
    data = zf.read(info)     # checks the CRC-32
    if len(data) != info.file_size:
        _fail(f"member {info.filename!r} is truncated")
    return data


def _parse_npy(data, spec, name):
    """The array in .npy bytes `data`, checked against its header entry
    before anything is allocated from the declared shape."""
    f = io.BytesIO(data)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(
            f, max_header_size=MAX_NPY_HEADER)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(
            f, max_header_size=MAX_NPY_HEADER)
    else:
        _fail(f"{name}.npy has an unsupported .npy version {version}")
    if dtype.hasobject or dtype.kind not in "biufU":
        _fail(f"{name}.npy holds dtype {dtype}, not numbers or text")
    if fortran:
        _fail(f"{name}.npy is in Fortran order")
    if list(shape) != spec["shape"] or dtype.str != spec["dtype"]:
        _fail(f"{name}.npy holds {dtype.str} {list(shape)}, the header says "
              f"{spec['dtype']} {spec['shape']}")
    count = 1
    for s in shape:
        count *= s
    body = data[f.tell():]
    if count * dtype.itemsize != len(body):
        _fail(f"{name}.npy holds {len(body)} data bytes for shape {list(shape)}")
    return np.frombuffer(body, dtype=dtype).reshape(shape).copy()


def _check_layers(header):
    """(n_in, layers, n_params, loss) from the header, each layer as the
    dict Network._to_state uses, checked before anything is sized from
    them: known types and activations, sizes in range, the parameter count
    bounded."""
    n_in = _int(header["n_in"], "n_in", 1, MAX_UNITS)
    layers = header["layers"]
    if not isinstance(layers, list) or not 1 <= len(layers) <= MAX_LAYERS:
        _fail(f"layers must be a list of 1..{MAX_LAYERS} layers")
    n_w = n_b = 0
    fan_in = n_in
    out = []
    for i, l in enumerate(layers):
        what = f"layers[{i}]"
        if not isinstance(l, dict):
            _fail(f"{what} must be a JSON object")
        kind = _choice(l.get("type"), f"{what}.type", ("dense", "maxout"))
        if kind == "dense":
            _obj(l, what, ("type", "units", "activation", "alpha", "bias"),
                 ("dropout",))
            _choice(l["activation"], f"{what}.activation", DENSE_ACTIVATIONS)
            _dec_float(l["alpha"], f"{what}.alpha", allow_nonfinite=False)
            if "dropout" in l:
                rate = _dec_float(l["dropout"], f"{what}.dropout",
                                  allow_nonfinite=False)
                if not 0 < rate < 1:
                    _fail(f"{what}.dropout must be in (0, 1), got {rate}")
            pieces = 1
        else:
            _obj(l, what, ("type", "units", "pieces", "bias"))
            pieces = _int(l["pieces"], f"{what}.pieces", 1, MAX_PIECES)
        units = _int(l["units"], f"{what}.units", 1, MAX_UNITS)
        if not isinstance(l["bias"], bool):
            _fail(f"{what}.bias must be true or false")
        cols = units * pieces
        n_w += fan_in * cols
        n_b += cols if l["bias"] else 0
        if n_w + n_b > MAX_PARAMS:
            _fail(f"the layers declare more than {MAX_PARAMS} parameters")
        out.append(dict(l))
        fan_in = units
    loss = _choice(header["loss"], "loss", _LOSSES)
    return n_in, out, n_w + n_b, loss


def load(path):
    """Read a model written by fastnn.save: a fastnn.Network or a fitted
    fastnn.sklearn.MLPClassifier / MLPRegressor.  Raises FormatError for
    anything that is not a valid fastnn model file."""
    path = os.fspath(path)
    size = os.path.getsize(path)     # missing file: FileNotFoundError
    with open(path, "rb") as f:
        try:
            header, arrays = _read(f, size)
        except FormatError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError,
                ValueError, KeyError, IndexError, TypeError, OverflowError,
                NotImplementedError, RuntimeError, UnicodeDecodeError) as e:
            raise FormatError(f"{path} is not a valid fastnn model file: "
                              f"{type(e).__name__}: {e}") from e
    try:
        return _construct(header, arrays)
    except FormatError:
        raise
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise FormatError(f"{path} describes an invalid model: "
                          f"{type(e).__name__}: {e}") from e


def _read(f, size):
    with zipfile.ZipFile(f, "r") as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            _fail("the archive lists a member twice")
        by_name = {i.filename: i for i in infos}
        if "header.json" not in by_name or "header.sha256" not in by_name:
            _fail("not a fastnn model file: header.json / header.sha256 missing")
        hbytes = _read_member(zf, by_name["header.json"], min(size, MAX_HEADER_BYTES))
        digest = _read_member(zf, by_name["header.sha256"], 64)
        if digest != hashlib.sha256(hbytes).hexdigest().encode():
            _fail("header.json does not match header.sha256 (edited or corrupted)")

        def no_constants(c):
            _fail(f"header.json holds the non-JSON constant {c}")
        header = json.loads(hbytes.decode("utf-8"), parse_constant=no_constants)
        _obj(header, "header", ("format", "version", "kind", "fastnn_version",
                                "dtype", "n_in", "layers", "loss", "arrays",
                                "optimizer"), ("network", "estimator", "loss_param"))
        if header["format"] != FORMAT:
            _fail(f"not a fastnn model file (format {header['format']!r})")
        version = header["version"]
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            _fail(f"invalid format version {version!r}")
        if version > VERSION:
            _fail(f"format version {version} was written by a newer fastnn; this "
                  f"one reads version {VERSION}")
        meta = header["arrays"]
        if not isinstance(meta, dict):
            _fail("arrays must be a JSON object")
        expected = {"header.json", "header.sha256"} | {n + ".npy" for n in meta}
        if set(names) != expected:
            _fail(f"the archive holds {sorted(names)}, the header lists "
                  f"{sorted(expected)}")
        arrays = {}
        for name, spec in meta.items():
            _obj(spec, f"arrays[{name!r}]", ("shape", "dtype", "sha256"))
            if (not isinstance(spec["shape"], list) or len(spec["shape"]) > 2
                    or not all(isinstance(s, int) and not isinstance(s, bool)
                               and 0 <= s <= MAX_PARAMS for s in spec["shape"])):
                _fail(f"arrays[{name!r}].shape is invalid: {spec['shape']!r}")
            if not isinstance(spec["dtype"], str) or not isinstance(spec["sha256"], str):
                _fail(f"arrays[{name!r}] is invalid")
            data = _read_member(zf, by_name[name + ".npy"], size)
            if hashlib.sha256(data).hexdigest() != spec["sha256"]:
                _fail(f"{name}.npy does not match its sha256 (edited or corrupted)")
            arrays[name] = _parse_npy(data, spec, name)
    return header, arrays


def _float_array(arrays, name, dtype, n, required=True, finite=True):
    if name not in arrays:
        if required:
            _fail(f"array {name!r} is missing")
        return None
    a = arrays[name]
    if a.dtype != np.dtype(_FLOAT_DTYPES[dtype]) or a.shape != (n,):
        _fail(f"{name} must be {dtype} of shape ({n},), got {a.dtype} {a.shape}")
    if finite and not np.isfinite(a).all():
        _fail(f"{name} holds NaN or infinite values")
    return a.astype(dtype)


def _check_no_extra(arrays, allowed):
    extra = set(arrays) - set(allowed)
    if extra:
        _fail(f"unexpected arrays {sorted(extra)}")


def _construct(header, arrays):
    """The model a checked archive describes: header and arrays decoded into
    the model's _to_state() description (every entry type- and range-
    checked here), which the model class rebuilds itself from (checking
    that it makes sense: FormatError through load)."""
    kind = _choice(header["kind"], "kind", _KINDS)
    dtype = _choice(header["dtype"], "dtype", tuple(_FLOAT_DTYPES))
    n_in, layers, n_params, loss = _check_layers(header)
    loss_param = header.get("loss_param")
    if (loss_param is not None) != (loss in _PARAM_LOSSES):
        _fail(f"loss_param goes with the losses {list(_PARAM_LOSSES)} and only "
              f"with them; loss {loss!r}, loss_param {loss_param!r}")
    if loss_param is not None:
        loss_param = _dec_float(loss_param, "loss_param", allow_nonfinite=False)
    arch = {"layers": layers, "loss": loss, "loss_param": loss_param,
            "dtype": dtype, "n_in": n_in,
            "params": _float_array(arrays, "params", dtype, n_params)}
    if kind == "Network":
        return _construct_network(header, arrays, arch, n_params)
    return _construct_estimator(kind, header, arrays, arch, n_params)


def _construct_network(header, arrays, arch, n_params):
    from fastnn.nn import Network
    if "estimator" in header or "network" not in header:
        _fail("a Network file has a 'network' entry and no 'estimator'")
    meta = _obj(header["network"], "network", ("init", "seed", "backend"),
                ("fits",))
    _int(meta["seed"], "network.seed", 0, (1 << 128), allow_none=True)
    fits = _int(meta.get("fits", 0), "network.fits", 0, 1 << 62)
    _check_no_extra(arrays, ("params", "optimizer_vel", "optimizer_sq"))
    dtype = arch["dtype"]
    opt = header["optimizer"]
    if opt is not None:
        _obj(opt, "optimizer", ("kind", "t"))
        opt = {"kind": _choice(opt["kind"], "optimizer.kind", tuple(_OPT_KINDS)),
               "t": _int(opt["t"], "optimizer.t", 0, 1 << 62),
               "vel": _float_array(arrays, "optimizer_vel", dtype, n_params),
               "sq": _float_array(arrays, "optimizer_sq", dtype, n_params,
                                  required=False)}
    elif "optimizer_vel" in arrays or "optimizer_sq" in arrays:
        _fail("optimizer arrays without optimizer state")
    # the file does not hold the training history
    return Network._from_state(dict(arch, init=meta["init"], seed=meta["seed"],
                                    backend=meta["backend"], optimizer=opt,
                                    history=None, fits=fits))


# ---- estimators --------------------------------------------------------------------

_FIT_KEYS = ("n_iter_", "t_", "loss_", "n_layers_", "n_outputs_",
             "out_activation_", "n_features_in_", "hidden_activations",
             "stochastic")
_STOCHASTIC_KEYS = ("best_loss_", "best_validation_score_", "no_improvement_count",
                    "has_validation_scores")
_LABEL_KEYS = ("classes_object", "y_type", "sparse_input")


def _bool(v, what):
    if not isinstance(v, bool):
        _fail(f"{what} must be true or false")
    return v


def _decode_params(cls, p):
    """The constructor parameters of `cls` from the header's JSON values."""
    keys = tuple(cls().get_params(deep=False))
    p = dict(_obj(p, "estimator.params", tuple(k for k in keys if k not in _V2_PARAMS),
                  tuple(k for k in keys if k in _V2_PARAMS)))
    if isinstance(p["hidden_layer_sizes"], list):
        p["hidden_layer_sizes"] = tuple(p["hidden_layer_sizes"])
    if p["dtype"] is not None:
        p["dtype"] = np.dtype(_choice(p["dtype"], "dtype", tuple(_FLOAT_DTYPES))).type
    for k in ("alpha", "learning_rate_init", "power_t", "tol", "momentum",
              "validation_fraction", "beta_1", "beta_2", "epsilon"):
        p[k] = _dec_float(p[k], f"estimator.params.{k}", allow_nonfinite=False)
    for k in ("huber_delta", "quantile"):
        if k in p:
            p[k] = _dec_float(p[k], f"estimator.params.{k}", allow_nonfinite=False)
    if "class_weight" in p:
        p["class_weight"] = _decode_class_weight(p["class_weight"])
    if "dropout" in p:
        d = p["dropout"]
        if isinstance(d, list) and len(d) <= MAX_LAYERS:
            p["dropout"] = [_dec_float(r, "estimator.params.dropout",
                                       allow_nonfinite=False) for r in d]
        else:
            p["dropout"] = _dec_float(d, "estimator.params.dropout",
                                      allow_nonfinite=False)
    if isinstance(p["n_iter_no_change"], str):
        p["n_iter_no_change"] = _dec_float(p["n_iter_no_change"], "n_iter_no_change")
    return p


def _decode_weight_pairs(pairs, what):
    if not isinstance(pairs, list) or len(pairs) > MAX_UNITS:
        _fail(f"{what} must be a list of [label, weight] pairs")
    out = {}
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2
                and isinstance(pair[0], (int, float, str, bool))):
            _fail(f"{what} must be a list of [label, weight] pairs")
        label = pair[0]
        if label in out:
            _fail(f"{what} names the label {label!r} twice")
        w = _dec_float(pair[1], f"{what} weight", allow_nonfinite=False)
        if w < 0:
            _fail(f"{what}: the weight of label {label!r} is negative ({w})")
        out[label] = w
    return out


def _decode_class_weight(v):
    what = "estimator.params.class_weight"
    if v is None or v == "balanced":
        return v
    if isinstance(v, dict) and list(v) == ["dict"]:
        return _decode_weight_pairs(v["dict"], what)
    if isinstance(v, dict) and list(v) == ["per_output"] and \
            isinstance(v["per_output"], list) and len(v["per_output"]) <= MAX_UNITS:
        return [_decode_weight_pairs(d, what) for d in v["per_output"]]
    _fail(f"{what} must be null, \"balanced\", {{\"dict\": pairs}} or "
          f"{{\"per_output\": [pairs, ...]}}, got {v!r}")


def _decode_fitted(f, arch):
    """The fitted state's scalar entries, type- and range-checked."""
    acts = f["hidden_activations"]
    if not isinstance(acts, list) or not all(isinstance(a, str) for a in acts):
        _fail("hidden_activations must be a list of names")
    out_act = f["out_activation_"]
    if not isinstance(out_act, str):
        _fail(f"out_activation_ must be a name, got {out_act!r}")
    return {"n_iter_": _int(f["n_iter_"], "n_iter_", 0, 1 << 62),
            "t_": _int(f["t_"], "t_", 0, 1 << 62),
            "loss_": _dec_float(f["loss_"], "loss_"),
            "n_layers_": _int(f["n_layers_"], "n_layers_", 2, MAX_LAYERS + 1),
            "n_outputs_": _int(f["n_outputs_"], "n_outputs_", 1, MAX_UNITS),
            "out_activation_": out_act,
            "n_features_in_": _int(f["n_features_in_"], "n_features_in_", 1,
                                   MAX_UNITS),
            "hidden_activations": acts, "network": arch}


def _decode_stochastic(f, arrays, dtype, n_params):
    vs = None
    if _bool(f["has_validation_scores"], "has_validation_scores"):
        if "validation_scores" not in arrays:
            _fail("validation_scores are missing")
        vs = _float_array(arrays, "validation_scores", "float64",
                          len(arrays["validation_scores"]), finite=False).tolist()
    curve = _float_array(arrays, "loss_curve", "float64",
                         len(arrays.get("loss_curve", ())), finite=False)
    vl = _float_array(arrays, "validation_loss_curve", "float64",
                      len(arrays.get("validation_loss_curve", ())), required=False,
                      finite=False)
    return {"loss_curve_": curve.tolist(),
            "validation_loss_curve_": None if vl is None else vl.tolist(),
            "best_loss_": _dec_float(f["best_loss_"], "best_loss_", allow_none=True),
            "best_validation_score_": _dec_float(
                f["best_validation_score_"], "best_validation_score_",
                allow_none=True),
            "validation_scores_": vs,
            "no_improvement_count": _int(f["no_improvement_count"],
                                         "no_improvement_count", 0, 1 << 62),
            "best_params": _float_array(arrays, "best_params", dtype, n_params)}


def _decode_labels(f, arrays):
    if "classes" not in arrays:
        _fail("a classifier file needs its classes")
    classes = arrays["classes"]
    if _bool(f["classes_object"], "classes_object"):
        if classes.dtype.kind != "U":
            _fail("object class labels are stored as strings")
        classes = np.array(classes.tolist(), dtype=object)
    return {"classes_": classes, "y_type": _choice(
                f["y_type"], "y_type", ("binary", "multiclass",
                                        "multilabel-indicator")),
            "sparse_input": _bool(f["sparse_input"], "sparse_input")}


def _decode_estimator_optimizer(h, arrays, dtype, n_params):
    if h is None:
        if "optimizer_vel" in arrays or "optimizer_sq" in arrays:
            _fail("optimizer arrays without optimizer state")
        return None
    _obj(h, "optimizer", ("kind", "t", "solver", "lr_schedule", "nesterov")
         + _EST_OPT_FLOATS)
    opt = {k: _dec_float(h[k], f"optimizer.{k}", allow_nonfinite=False)
           for k in _EST_OPT_FLOATS}
    opt.update(
        kind=_choice(h["kind"], "optimizer.kind", tuple(_OPT_KINDS)),
        t=_int(h["t"], "optimizer.t", 0, 1 << 62),
        solver=_choice(h["solver"], "optimizer.solver", ("sgd", "adam")),
        lr_schedule=_choice(h["lr_schedule"], "optimizer.lr_schedule",
                            ("constant", "invscaling", "adaptive")),
        nesterov=_bool(h["nesterov"], "optimizer.nesterov"),
        vel=_float_array(arrays, "optimizer_vel", dtype, n_params, required=False),
        sq=_float_array(arrays, "optimizer_sq", dtype, n_params, required=False))
    return opt


def _construct_estimator(kind, header, arrays, arch, n_params):
    from fastnn import sklearn as fsk
    if "network" in header or "estimator" not in header:
        _fail("an estimator file has an 'estimator' entry and no 'network'")
    est_h = _obj(header["estimator"], "estimator", ("params", "fitted"))
    cls = getattr(fsk, kind)
    params = _decode_params(cls, est_h["params"])
    f = _obj(est_h["fitted"], "estimator.fitted", _FIT_KEYS,
             _STOCHASTIC_KEYS + _LABEL_KEYS)
    is_clf = kind == "MLPClassifier"
    if any(k in f for k in _LABEL_KEYS) and not (
            is_clf and all(k in f for k in _LABEL_KEYS)) or \
            (is_clf and not all(k in f for k in _LABEL_KEYS)):
        _fail("classifier entries do not match the estimator kind")
    stochastic = _bool(f["stochastic"], "estimator.fitted.stochastic")
    if any(k in f for k in _STOCHASTIC_KEYS) and not stochastic or \
            stochastic and not all(k in f for k in _STOCHASTIC_KEYS):
        _fail("stochastic-solver entries do not match 'stochastic'")

    allowed = {"params", "feature_names", "optimizer_vel", "optimizer_sq"}
    if is_clf:
        allowed.add("classes")
    if stochastic:
        allowed |= {"loss_curve", "best_params", "validation_loss_curve"}
        if f["has_validation_scores"]:
            allowed.add("validation_scores")
    _check_no_extra(arrays, allowed)

    dtype = arch["dtype"]
    fitted = _decode_fitted(f, arch)
    names = arrays.get("feature_names")
    if names is not None and (names.dtype.kind != "U" or names.ndim != 1):
        _fail("feature_names must be strings")
    fitted["feature_names_in_"] = names
    fitted["stochastic"] = (_decode_stochastic(f, arrays, dtype, n_params)
                            if stochastic else None)
    fitted["labels"] = _decode_labels(f, arrays) if is_clf else None
    fitted["optimizer"] = _decode_estimator_optimizer(header["optimizer"], arrays,
                                                      dtype, n_params)
    return cls._from_state({"params": params, "fitted": fitted}, check_params=True)
