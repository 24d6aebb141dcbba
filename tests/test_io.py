"""fastnn.save / fastnn.load: round trips of Network and both estimators, the
atomic write, and refusal (FormatError, never a crash or a silently wrong
model) of truncated, corrupted and hand-edited files."""
import hashlib
import io
import json
import os
import pickle
import warnings
import zipfile

import numpy as np
import pytest

import fastnn
from fastnn import Dense, FormatError, Maxout, Network
from fastnn import io as fio


# ---- helpers ----------------------------------------------------------------

def members(path):
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def write_members(path, mem, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in mem.items():
            zf.writestr(name, data)


def npy(arr):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def rewrite(src, dst, header_fn=None, arrays=None, raw=None, fix_hashes=True):
    """A hand edit done carefully: header and/or arrays changed, every hash
    recomputed, so only the semantic checks can catch it."""
    mem = members(src)
    header = json.loads(mem["header.json"])
    for name, arr in (arrays or {}).items():
        mem[name + ".npy"] = npy(arr)
        header["arrays"].setdefault(name, {})
        header["arrays"][name].update(shape=list(np.shape(arr)),
                                      dtype=np.asarray(arr).dtype.str)
    for name, data in (raw or {}).items():
        mem[name] = data
    if fix_hashes:
        for name in header["arrays"]:
            if name + ".npy" in mem:
                header["arrays"][name]["sha256"] = hashlib.sha256(
                    mem[name + ".npy"]).hexdigest()
    if header_fn is not None:
        header = header_fn(header) or header
    hb = json.dumps(header).encode()
    mem["header.json"] = hb
    if fix_hashes:
        mem["header.sha256"] = hashlib.sha256(hb).hexdigest().encode()
    write_members(dst, mem)
    return dst


def small_net(dtype=np.float64, trained=True):
    net = Network([Maxout(3, pieces=2), Dense(4, "leaky_relu", alpha=0.2),
                   Dense(2, "elu", bias=False), Dense(3, "softmax")],
                  loss="softmax_ce", n_in=5, dtype=dtype, seed=3)
    if trained:
        rs = np.random.RandomState(0)
        X = rs.randn(40, 5)
        Y = np.eye(3)[rs.randint(0, 3, 40)]
        net.fit(X, Y, epochs=2, batch_size=8, optimizer="adam", seed=0)
    return net


def same_network(a, b):
    assert type(a) is type(b)
    assert repr(a) == repr(b)
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a.params, b.params)
    X = np.random.RandomState(1).randn(7, a.n_in)
    np.testing.assert_array_equal(a.forward(X), b.forward(X))


@pytest.fixture
def net_file(tmp_path):
    net = small_net()
    path = tmp_path / "net.npz"
    fastnn.save(net, path)
    return net, path


# ---- round trips ----------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("trained", [True, False], ids=["trained", "fresh"])
def test_network_round_trip(tmp_path, dtype, trained):
    net = small_net(dtype, trained)
    path = tmp_path / "m.fnn"
    assert fastnn.save(net, path) == str(path)
    other = fastnn.load(path)
    same_network(net, other)
    if trained:
        assert other._opt_state["kind"] == "adam"
        assert other._opt_state["t"] == net._opt_state["t"]
        # training continues identically (optimizer state included)
        rs = np.random.RandomState(2)
        X, Y = rs.randn(16, 5), np.eye(3)[rs.randint(0, 3, 16)]
        for n in (net, other):
            n.fit(X, Y, epochs=1, batch_size=4, optimizer="adam", seed=5)
        np.testing.assert_array_equal(net.params, other.params)
    else:
        assert getattr(other, "_opt_state", None) is None


def test_network_other_layouts(tmp_path):
    for net in [Network([Dense(3, "sigmoid", bias=False), Dense(1, bias=False)],
                        loss="sse", n_in=4, init="normal", seed=7),
                Network([Dense(2, "sigmoid")], loss="bce", n_in=3, seed=None),
                Network([Dense(4, "tanh"), Dense(2)], n_in=3, backend="reference")]:
        fastnn.save(net, tmp_path / "a.npz")
        other = fastnn.load(tmp_path / "a.npz")
        same_network(net, other)
        assert (other.init, other.seed, other.backend) == (net.init, net.seed, net.backend)


def test_numpy_can_read_it_without_pickle(net_file):
    net, path = net_file
    with np.load(path, allow_pickle=False) as d:
        np.testing.assert_array_equal(d["params"], net.params)
        header = json.loads(d["header.json"])
    assert header["format"] == "fastnn-model" and header["version"] == fio.VERSION
    assert header["kind"] == "Network"


def _fit_quiet(est, X, y, **kw):
    from sklearn.exceptions import ConvergenceWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y, **kw)


def _est_cases():
    pytest.importorskip("sklearn")
    from fastnn.sklearn import MLPClassifier, MLPRegressor
    rs = np.random.RandomState(0)
    X = rs.randn(60, 4)
    yc = rs.randint(0, 3, 60)
    return X, [
        ("multiclass-int", MLPClassifier((5,), max_iter=3, random_state=0), yc),
        ("multiclass-str", MLPClassifier((5, 3), activation="tanh", max_iter=3,
                                         random_state=0), np.array(list("abc"))[yc]),
        ("multiclass-object", MLPClassifier((5,), max_iter=3, random_state=0,
                                            solver="sgd"),
         np.array(list("xyz"), dtype=object)[yc]),
        ("binary-bool", MLPClassifier((5,), max_iter=3, random_state=0), yc == 1),
        ("multilabel", MLPClassifier((5,), max_iter=3, random_state=0,
                                     activation=["maxout"]),
         (rs.rand(60, 3) > 0.5).astype(int)),
        ("early-stopping", MLPClassifier((5,), max_iter=4, random_state=0,
                                         early_stopping=True), yc),
        ("lbfgs", MLPClassifier((5,), solver="lbfgs", max_iter=5, random_state=0), yc),
        ("regression", MLPRegressor(hidden_layer_sizes=(6,), max_iter=3,
                                    random_state=0, n_iter_no_change=np.inf),
         rs.randn(60)),
        # random_state given: with None, scikit-learn shuffles from numpy's
        # global RNG, so the two partial_fits below would see different orders
        ("regression-2out-f32", MLPRegressor(hidden_layer_sizes=(6,), max_iter=3,
                                             dtype=np.float32, solver="sgd",
                                             learning_rate="invscaling",
                                             random_state=0),
         rs.randn(60, 2)),
        ("poisson", MLPRegressor(loss="poisson", hidden_layer_sizes=(4,),
                                 max_iter=3, activation="elu", random_state=0),
         rs.poisson(2.0, 60)),
    ]


def test_estimator_round_trips(tmp_path):
    X, cases = _est_cases()
    for name, est, y in cases:
        _fit_quiet(est, X, y)
        path = tmp_path / f"{name}.npz"
        fastnn.save(est, path)
        other = fastnn.load(path)
        assert type(other) is type(est), name
        assert other.get_params() == est.get_params(), name
        for p, q in zip(est.coefs_ + est.intercepts_, other.coefs_ + other.intercepts_):
            np.testing.assert_array_equal(p, q)
            assert p.dtype == q.dtype
        np.testing.assert_array_equal(other.predict(X), est.predict(X), err_msg=name)
        for attr in ("n_iter_", "t_", "loss_", "n_layers_", "n_outputs_",
                     "out_activation_", "n_features_in_", "loss_curve_",
                     "best_loss_", "validation_scores_", "best_validation_score_"):
            assert getattr(other, attr, "absent") == getattr(est, attr, "absent"), \
                (name, attr)
        if hasattr(est, "classes_"):
            np.testing.assert_array_equal(other.classes_, est.classes_)
            assert other.classes_.dtype == est.classes_.dtype, name
            np.testing.assert_array_equal(other.predict_proba(X), est.predict_proba(X))
        # training goes on exactly as it would have
        if est.solver != "lbfgs" and not est.early_stopping:
            kw = {}
            if hasattr(est, "classes_"):
                kw["classes"] = est.classes_
            est.partial_fit(X, y, **kw)
            other.partial_fit(X, y, **kw)
            for p, q in zip(est.coefs_, other.coefs_):
                np.testing.assert_array_equal(p, q)


def test_estimator_feature_names(tmp_path):
    pd = pytest.importorskip("pandas")
    from fastnn.sklearn import MLPRegressor
    X = pd.DataFrame(np.random.RandomState(0).randn(30, 3), columns=["a", "b", "c"])
    est = _fit_quiet(MLPRegressor(hidden_layer_sizes=(4,), max_iter=2), X,
                     np.arange(30.0))
    fastnn.save(est, tmp_path / "e.npz")
    other = fastnn.load(tmp_path / "e.npz")
    np.testing.assert_array_equal(other.feature_names_in_, est.feature_names_in_)
    assert other.feature_names_in_.dtype == object
    np.testing.assert_array_equal(other.predict(X), est.predict(X))


def test_save_refuses_what_it_cannot_store(tmp_path):
    with pytest.raises(TypeError, match="fastnn.Network"):
        fastnn.save({"not": "a model"}, tmp_path / "x")
    with pytest.raises(ValueError, match="not built"):
        fastnn.save(Network([Dense(2)]), tmp_path / "x")
    pytest.importorskip("sklearn")
    from sklearn.exceptions import NotFittedError
    from sklearn.neural_network import MLPClassifier as SkMLP
    from fastnn.sklearn import MLPClassifier
    with pytest.raises(NotFittedError):
        fastnn.save(MLPClassifier(), tmp_path / "x")
    with pytest.raises(TypeError):
        fastnn.save(SkMLP(), tmp_path / "x")
    X = np.random.RandomState(0).randn(20, 2)
    est = _fit_quiet(MLPClassifier((3,), max_iter=2), X, np.arange(20) % 2)
    est.classes_ = np.array([1, "a"], dtype=object)    # not something we store
    with pytest.raises(TypeError, match="class labels"):
        fastnn.save(est, tmp_path / "x")
    assert not os.path.exists(tmp_path / "x")
    est = _fit_quiet(MLPClassifier((3,), max_iter=2,
                                   random_state=np.random.RandomState(0)), X,
                     np.arange(20) % 2)
    with pytest.warns(UserWarning, match="RandomState"):
        fastnn.save(est, tmp_path / "y")
    assert fastnn.load(tmp_path / "y").random_state is None


# ---- atomic writes ------------------------------------------------------------------

def test_failed_save_leaves_previous_file(tmp_path, monkeypatch):
    net = small_net()
    path = tmp_path / "model.npz"
    fastnn.save(net, path)
    before = path.read_bytes()
    other = small_net(trained=False)

    def disk_full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(fio.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        fastnn.save(other, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]      # no temp file left

    def crash(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(fio.zipfile.ZipFile, "writestr", crash)
    with pytest.raises(KeyboardInterrupt):
        fastnn.save(other, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]
    same_network(fastnn.load(path), net)


def test_save_replaces_and_honours_umask(tmp_path):
    path = tmp_path / "m.npz"
    fastnn.save(small_net(trained=False), path)
    net = small_net()
    fastnn.save(net, path)
    same_network(fastnn.load(path), net)
    old = os.umask(0o022)
    os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~old


# ---- refusal ---------------------------------------------------------------------

def test_missing_file_is_not_a_format_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        fastnn.load(tmp_path / "nope.npz")


@pytest.mark.parametrize("content", [b"", b"PK", b"hello world" * 10,
                                     npy(np.arange(3.0))])
def test_not_a_model_file(tmp_path, content):
    p = tmp_path / "x"
    p.write_bytes(content)
    with pytest.raises(FormatError):
        fastnn.load(p)


def test_plain_npz_is_refused(tmp_path):
    np.savez(tmp_path / "x.npz", params=np.arange(3.0))
    with pytest.raises(FormatError, match="header"):
        fastnn.load(tmp_path / "x.npz")


def test_truncated_at_every_offset(net_file, tmp_path):
    net, path = net_file
    data = path.read_bytes()
    p = tmp_path / "t.npz"
    offsets = sorted(set(range(0, len(data), max(1, len(data) // 300)))
                     | set(range(max(0, len(data) - 64), len(data))))
    for cut in offsets:
        p.write_bytes(data[:cut])
        with pytest.raises(FormatError):
            fastnn.load(p)


def _loads_same_or_refuses(p, net):
    try:
        other = fastnn.load(p)
    except FormatError:
        return "refused"
    same_network(other, net)          # only bytes with no meaning may change
    return "same"


@pytest.mark.parametrize("flip", [0xFF, 0x01, 0x80], ids=["xff", "x01", "x80"])
def test_flipped_bytes(net_file, tmp_path, flip):
    """Every byte of the file flipped in turn: refused, or (bytes no reader
    looks at, such as ZIP timestamps) the very same model."""
    net, path = net_file
    data = bytearray(path.read_bytes())
    p = tmp_path / "f.npz"
    seen = {"refused": 0, "same": 0}
    step = 1 if flip == 0xFF else 7
    for i in range(0, len(data), step):
        d = bytearray(data)
        d[i] ^= flip
        p.write_bytes(bytes(d))
        seen[_loads_same_or_refuses(p, net)] += 1
    assert seen["refused"] > seen["same"]


def test_random_garbage_regions(net_file, tmp_path):
    net, path = net_file
    data = path.read_bytes()
    rs = np.random.RandomState(0)
    p = tmp_path / "g.npz"
    for _ in range(200):
        d = bytearray(data)
        i = rs.randint(0, len(d))
        n = rs.randint(1, 40)
        d[i:i + n] = rs.bytes(min(n, len(d) - i))
        p.write_bytes(bytes(d))
        _loads_same_or_refuses(p, net)


def test_unhashed_edits_are_refused(net_file, tmp_path):
    net, path = net_file
    p = tmp_path / "e.npz"
    # header edited, header.sha256 not updated
    rewrite(path, p, lambda h: h.update(n_in=6), fix_hashes=False)
    with pytest.raises(FormatError, match="header.sha256"):
        fastnn.load(p)
    # params rewritten, its sha256 not updated
    mem = members(path)
    mem["params.npy"] = npy(net.params * 2)
    write_members(p, mem)
    with pytest.raises(FormatError, match="sha256"):
        fastnn.load(p)


def _edit(h, **kw):
    h.update(kw)
    return h


def _layer(i, **kw):
    def f(h):
        h["layers"][i].update(kw)
        return h
    return f


EDITS = {
    "format": (lambda h: _edit(h, format="something-else"), "format"),
    "newer-version": (lambda h: _edit(h, version=fio.VERSION + 1), "newer"),
    "version-text": (lambda h: _edit(h, version="1"), "version"),
    "kind": (lambda h: _edit(h, kind="Pipeline"), "kind"),
    "dtype": (lambda h: _edit(h, dtype="float16"), "dtype"),
    "dtype-mismatch": (lambda h: _edit(h, dtype="float32"), "params"),
    "n_in": (lambda h: _edit(h, n_in=6), "params"),
    "n_in-zero": (lambda h: _edit(h, n_in=0), "n_in"),
    "n_in-huge": (lambda h: _edit(h, n_in=1 << 40), "n_in"),
    "units": (_layer(0, units=4), "params"),
    "units-negative": (_layer(1, units=-4), "units"),
    "units-float": (_layer(1, units=4.0), "units"),
    "units-huge": (_layer(1, units=(1 << 31) - 1), "parameters|params"),
    "units-huger": (_layer(1, units=1 << 62), "units"),
    "pieces-huge": (_layer(0, pieces=1 << 20), "pieces"),
    "unknown-activation": (_layer(1, activation="swish"), "activation"),
    "softmax-hidden": (_layer(1, activation="softmax"), "softmax"),
    "alpha-nan": (_layer(1, alpha="nan"), "alpha"),
    "bias-flag": (_layer(2, bias=True), "params"),
    "bias-text": (_layer(2, bias="yes"), "bias"),
    "layer-type": (_layer(0, type="conv"), "type"),
    "layer-extra": (_layer(1, frozen=True), "unknown"),
    "dropout-range": (_layer(1, dropout=1.5), "dropout"),
    "dropout-output": (_layer(3, dropout=0.5), "dropout"),
    "no-layers": (lambda h: _edit(h, layers=[]), "layers"),
    "many-layers": (lambda h: _edit(h, layers=h["layers"] * 1100), "layers"),
    "header-huge": (lambda h: _edit(h, layers=h["layers"] * 5000), "header.json"),
    "loss": (lambda h: _edit(h, loss="hinge"), "loss"),
    "loss-mismatch": (lambda h: _edit(h, loss="bce"), "bce|sigmoid"),
    "extra-key": (lambda h: _edit(h, comment="hi"), "unknown"),
    "missing-key": (lambda h: h.pop("layers") and h, "lacks"),
    "shape": (lambda h: h["arrays"]["params"].update(shape=[3]) or h, "params"),
    "shape-huge": (lambda h: h["arrays"]["params"].update(shape=[1 << 50]) or h,
                   "shape"),
    "array-unlisted": (lambda h: h["arrays"].pop("optimizer_sq") and h, "holds"),
    "array-listed-missing": (lambda h: h["arrays"].update(
        extra={"shape": [1], "dtype": "<f8", "sha256": "0" * 64}) or h, "lists"),
    "optimizer-kind": (lambda h: h["optimizer"].update(kind="sgd") or h,
                       "second moments"),
    "optimizer-t": (lambda h: h["optimizer"].update(t=-1) or h, "optimizer.t"),
    "seed": (lambda h: h["network"].update(seed="abc") or h, "seed"),
    "backend": (lambda h: h["network"].update(backend="gpu") or h, "backend"),
}


@pytest.mark.parametrize("name", list(EDITS))
def test_hand_edited_header(net_file, tmp_path, name):
    net, path = net_file
    fn, match = EDITS[name]
    p = rewrite(path, tmp_path / "h.npz", fn)
    with pytest.raises(FormatError, match=match):
        fastnn.load(p)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_params_are_refused(net_file, tmp_path, bad):
    net, path = net_file
    params = net.params.copy()
    params[5] = bad
    p = rewrite(path, tmp_path / "n.npz", arrays={"params": params})
    with pytest.raises(FormatError, match="NaN or infinite"):
        fastnn.load(p)
    vel = net._opt_state["vel"].copy()
    vel[0] = bad
    p = rewrite(path, tmp_path / "n.npz", arrays={"optimizer_vel": vel})
    with pytest.raises(FormatError, match="NaN or infinite"):
        fastnn.load(p)


def test_bad_arrays(net_file, tmp_path):
    net, path = net_file
    cases = {
        "2-D params": net.params.reshape(1, -1),
        "short params": net.params[:-1],
        "int params": net.params.astype(np.int64),
        "big-endian": net.params.astype(">f8"),
        "float32 in a float64 file": net.params.astype(np.float32),
    }
    for what, arr in cases.items():
        p = rewrite(path, tmp_path / "a.npz", arrays={"params": arr})
        with pytest.raises(FormatError):
            fastnn.load(p)
    # Fortran order, object dtype (a pickle inside), lying .npy headers
    f = np.asfortranarray(np.ones((2, 3)))
    for raw in [npy(f), b"not an npy file", npy(net.params)[:-8],
                npy(net.params).replace(b"'shape': (", b"'shape': (99999999999, ")]:
        p = rewrite(path, tmp_path / "a.npz", raw={"params.npy": raw})
        with pytest.raises(FormatError):
            fastnn.load(p)


class _Boom:
    """Unpickling this would create a file: loading must never do it."""
    marker = None

    def __reduce__(self):
        return (open, (str(_Boom.marker), "w"))


def test_pickled_payload_is_never_executed(net_file, tmp_path):
    net, path = net_file
    _Boom.marker = tmp_path / "pwned"
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array([_Boom()], dtype=object),
                              allow_pickle=True)
    for name in ("params.npy", "optimizer_vel.npy"):
        p = rewrite(path, tmp_path / "p.npz", raw={name: buf.getvalue()},
                    header_fn=lambda h: h)
        with pytest.raises(FormatError):
            fastnn.load(p)
    # header.json as a pickle
    mem = members(path)
    mem["header.json"] = pickle.dumps(_Boom())
    mem["header.sha256"] = hashlib.sha256(mem["header.json"]).hexdigest().encode()
    write_members(tmp_path / "q.npz", mem)
    with pytest.raises(FormatError):
        fastnn.load(tmp_path / "q.npz")
    assert not _Boom.marker.exists()


def test_archive_level_tampering(net_file, tmp_path):
    net, path = net_file
    mem = members(path)
    # compressed members, an extra member, a duplicated member
    write_members(tmp_path / "c.npz", mem, compression=zipfile.ZIP_DEFLATED)
    extra = dict(mem, **{"notes.txt": b"hello"})
    write_members(tmp_path / "x.npz", extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # zipfile: duplicate name
        with zipfile.ZipFile(tmp_path / "d.npz", "w") as zf:
            for name, data in mem.items():
                zf.writestr(name, data)
            zf.writestr("params.npy", npy(net.params * 0))
    for name in ("c.npz", "x.npz", "d.npz"):
        with pytest.raises(FormatError):
            fastnn.load(tmp_path / name)
    # JSON with NaN constants or not an object
    for hb in [b'{"format": NaN}', b"[1, 2]", b"\xff\xfe", b"{"]:
        m = dict(mem)
        m["header.json"] = hb
        m["header.sha256"] = hashlib.sha256(hb).hexdigest().encode()
        write_members(tmp_path / "j.npz", m)
        with pytest.raises(FormatError):
            fastnn.load(tmp_path / "j.npz")


# ---- estimator files -----------------------------------------------------------

@pytest.fixture
def clf_file(tmp_path):
    pytest.importorskip("sklearn")
    from fastnn.sklearn import MLPClassifier
    rs = np.random.RandomState(0)
    X = rs.randn(50, 4)
    est = _fit_quiet(MLPClassifier((5,), max_iter=3, random_state=0), X,
                     np.array(list("abc"))[rs.randint(0, 3, 50)])
    path = tmp_path / "clf.npz"
    fastnn.save(est, path)
    return est, path


def _fit_edit(**kw):
    def f(h):
        h["estimator"]["fitted"].update(kw)
        return h
    return f


def _param_edit(**kw):
    def f(h):
        h["estimator"]["params"].update(kw)
        return h
    return f


EST_EDITS = {
    "kind": (lambda h: _edit(h, kind="MLPRegressor"), "classifier|params|loss"),
    "out_activation": (_fit_edit(out_activation_="logistic"), "output|classes"),
    "out_activation-unknown": (_fit_edit(out_activation_="swish"),
                               "out_activation_"),
    "hidden-activation": (_fit_edit(hidden_activations=["tanh"]), "hidden"),
    "hidden-activation-count": (_fit_edit(hidden_activations=[]), "hidden"),
    "n_outputs": (_fit_edit(n_outputs_=2), "n_outputs_"),
    "n_layers": (_fit_edit(n_layers_=4), "n_layers_"),
    "n_features": (_fit_edit(n_features_in_=5), "n_features_in_"),
    "y_type": (_fit_edit(y_type="binary"), "binary"),
    "y_type-unknown": (_fit_edit(y_type="continuous"), "y_type"),
    "loss_": (_fit_edit(loss_=[1]), "loss_"),
    "n_iter": (_fit_edit(n_iter_=-1), "n_iter_"),
    "param-invalid": (_param_edit(solver="newton"), "solver"),
    "param-unknown": (_param_edit(label_smoothing=0.1), "unknown"),
    "param-dtype": (_param_edit(dtype="int8"), "dtype"),
    "optimizer-missing-arrays": (lambda h: h.update(optimizer=None) or h,
                                 "optimizer"),
    "optimizer-kind": (lambda h: h["optimizer"].update(kind="momentum") or h,
                       "optimizer"),
}


@pytest.mark.parametrize("name", list(EST_EDITS))
def test_hand_edited_estimator(clf_file, tmp_path, name):
    est, path = clf_file
    fn, match = EST_EDITS[name]
    p = rewrite(path, tmp_path / "h.npz", fn)
    with pytest.raises(FormatError, match=match):
        fastnn.load(p)


def test_estimator_bad_classes(clf_file, tmp_path):
    est, path = clf_file
    for classes in [np.array(["c", "b", "a"]), np.array(["a", "a", "b"]),
                    np.array(["a", "b"]), np.array(["a", "b", "c", "d"]),
                    np.array([["a", "b", "c"]])]:
        p = rewrite(path, tmp_path / "c.npz", arrays={"classes": classes})
        with pytest.raises(FormatError):
            fastnn.load(p)


def test_estimator_truncation_and_flips(clf_file, tmp_path):
    est, path = clf_file
    data = path.read_bytes()
    p = tmp_path / "t.npz"
    for cut in range(0, len(data), max(1, len(data) // 150)):
        p.write_bytes(data[:cut])
        with pytest.raises(FormatError):
            fastnn.load(p)
    X = np.random.RandomState(3).randn(9, 4)
    for i in range(0, len(data), 5):
        d = bytearray(data)
        d[i] ^= 0xFF
        p.write_bytes(bytes(d))
        try:
            other = fastnn.load(p)
        except FormatError:
            continue
        np.testing.assert_array_equal(other.predict_proba(X), est.predict_proba(X))
        np.testing.assert_array_equal(other.predict(X), est.predict(X))


# ---- files written by earlier versions --------------------------------------------
# tests/data/v1_*.fnn were written by fastnn 0.1.0 before the models exported
# their own state (tests/data/make_v1_files.py); NAME.expected.npz holds what
# each must load as.  Parameters and training state must come back exactly.
# Predictions and continued training are compared to rounding only: the
# kernels' SIMD path (and so the last bits) depends on the CPU.

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
V1_DTYPES = ["float64", "float32"]


def _v1(name):
    model = fastnn.load(os.path.join(DATA, name + ".fnn"))
    with np.load(os.path.join(DATA, name + ".expected.npz"), allow_pickle=False) as d:
        exp = dict(d)
    return model, exp


def _close(got, want, dtype, what):
    rtol = 1e-10 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol, err_msg=what)


def _flat(arrays):
    return np.concatenate([np.asarray(a).ravel() for a in arrays])


@pytest.mark.parametrize("dtype", V1_DTYPES)
def test_v1_files_network(dtype):
    net, exp = _v1(f"v1_network_{dtype}")
    assert isinstance(net, Network) and net.dtype == np.dtype(dtype)
    assert repr(net) == (f"Network([Maxout(3, pieces=2, bias=True), Dense(4, "
                         f"activation='leaky_relu', alpha=0.2, bias=True), Dense(2, "
                         f"activation='elu', alpha=1.0, bias=False), Dense(3, "
                         f"activation='softmax', bias=True)], loss='softmax_ce', "
                         f"n_in=5, dtype={dtype})")
    assert (net.init, net.seed, net.backend) == ("glorot", 3, "native")
    np.testing.assert_array_equal(net.params, exp["params"])
    assert net.params.dtype == np.dtype(dtype)
    st = net._opt_state
    kind = "adam" if dtype == "float64" else "nesterov"
    assert st["kind"] == kind and st["t"] == exp["opt_t"]
    np.testing.assert_array_equal(st["vel"], exp["opt_vel"])
    if kind == "adam":                      # only adam counts its steps
        assert st["t"] > 0
        np.testing.assert_array_equal(st["sq"], exp["opt_sq"])
    else:
        assert st["sq"] is None
    for l in net.layers:                    # views into the loaded buffer
        assert np.shares_memory(l.W, net.params)
    _close(net.forward(exp["probe"]), exp["predict"], dtype, "predictions")
    net.fit(exp["Xc"], exp["Yc"], epochs=2, batch_size=4, optimizer=kind, seed=5)
    _close(net.params, exp["continued_params"], dtype, "continued training")


def _check_v1_estimator(est, exp, dtype):
    assert est.coefs_[0].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(_flat(est.coefs_), exp["coefs"])
    np.testing.assert_array_equal(_flat(est.intercepts_), exp["intercepts"])
    assert est.n_iter_ == exp["n_iter_"] and est.t_ == exp["t_"]
    assert est.loss_ == exp["loss_"]
    assert est.loss_curve_ == exp["loss_curve_"].tolist()
    assert est._no_improvement_count == exp["no_improvement_count"]
    np.testing.assert_array_equal(_flat(est._best_coefs + est._best_intercepts),
                                  exp["best_coefs"])
    opt = est._optimizer
    assert opt.t == exp["opt_t"] and opt.learning_rate == exp["opt_learning_rate"]
    for k in ("vel", "sq"):
        if "opt_" + k in exp:
            np.testing.assert_array_equal(getattr(opt, k), exp["opt_" + k])
            assert getattr(opt, k).dtype == np.dtype(dtype)
        else:
            assert getattr(opt, k) is None
    if "validation_scores_" in exp:
        assert est.validation_scores_ == exp["validation_scores_"].tolist()
        assert est.best_validation_score_ == exp["best_validation_score_"]
        assert est.best_loss_ is None
    else:
        assert est.validation_scores_ is None and est.best_validation_score_ is None
        assert est.best_loss_ == exp["best_loss_"]


@pytest.mark.parametrize("dtype", V1_DTYPES)
def test_v1_files_classifier(dtype):
    pytest.importorskip("sklearn")
    from fastnn.sklearn import MLPClassifier
    est, exp = _v1(f"v1_classifier_{dtype}")
    assert type(est) is MLPClassifier
    assert est.early_stopping and est.warm_start and est.n_iter_no_change == 4
    assert est.solver == ("sgd" if dtype == "float64" else "adam")
    assert est.activation == ["tanh", "maxout"] and est.hidden_layer_sizes == (6, 5)
    _check_v1_estimator(est, exp, dtype)
    assert est._no_improvement_count > 0          # mid-run early-stopping state
    np.testing.assert_array_equal(est.classes_, exp["classes"])
    np.testing.assert_array_equal(est.predict(exp["probe"]), exp["predict"])
    _close(est.predict_proba(exp["probe"]), exp["predict_proba"], dtype,
           "predict_proba")
    _fit_quiet(est, exp["X"], exp["y"])           # warm start: the count carries on
    assert est.n_iter_ == exp["continued_n_iter_"]
    assert est.validation_scores_ == exp["continued_validation_scores_"].tolist()
    _close(_flat(est.coefs_ + est.intercepts_), exp["continued_coefs"], dtype,
           "continued training")


@pytest.mark.parametrize("dtype", V1_DTYPES)
def test_v1_files_regressor(dtype):
    pytest.importorskip("sklearn")
    from fastnn.sklearn import MLPRegressor
    est, exp = _v1(f"v1_regressor_{dtype}")
    assert type(est) is MLPRegressor
    assert est.solver == ("adam" if dtype == "float64" else "sgd")
    _check_v1_estimator(est, exp, dtype)
    _close(est.predict(exp["probe"]), exp["predict"], dtype, "predictions")
    est.partial_fit(exp["X"], exp["y"])
    est.partial_fit(exp["X"], exp["y"])
    _close(_flat(est.coefs_ + est.intercepts_), exp["continued_coefs"], dtype,
           "continued training")
