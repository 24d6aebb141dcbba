"""fit_many over a dask.distributed cluster: a LocalCluster of 2 worker
processes started by the tests; the networks go out in chunks, come back
bit-identical to fit_many in this process (same build, same CPU), with
their histories, optimizer state and divergence reports."""
import warnings

import numpy as np
import pytest

distributed = pytest.importorskip(
    "distributed", reason="dask.distributed is not installed (pip install "
    "'fastnn[dask]'): fit_many's dask path is not tested")

import fastnn
from fastnn import Dense, Network


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                       processes=True, dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def nets_pair(K, n_in, hidden, act="tanh", loss="mse", dtype=np.float64):
    def one(k):
        return Network([Dense(hidden, act), Dense(1)], loss=loss, n_in=n_in,
                       dtype=dtype, seed=k)
    return [one(k) for k in range(K)], [one(k) for k in range(K)]


def assert_same(a, b, ha, hb):
    for k, (x, y) in enumerate(zip(a, b)):
        np.testing.assert_array_equal(x.params, y.params, err_msg=f"net {k}")
        np.testing.assert_array_equal(x.grads, y.grads, err_msg=f"net {k}")
        np.testing.assert_array_equal(np.array(ha[k].loss), np.array(hb[k].loss))
        assert ha[k].stop_reason == hb[k].stop_reason
        sa, sb = x._opt_state, y._opt_state
        assert (sa is None) == (sb is None)
        if sb is not None:
            assert sa["t"] == sb["t"]
            np.testing.assert_array_equal(sa["vel"], sb["vel"])
            if sb["sq"] is not None:
                np.testing.assert_array_equal(sa["sq"], sb["sq"])


@pytest.mark.parametrize("case", ["lanes", "gemm", "bagging-f32", "sample-weight"])
def test_dask_chunks_match_local_fit_many(client, case):
    rng = np.random.default_rng(3)
    K = 7
    dtype = np.float32 if case.endswith("f32") else np.float64
    n_in, hidden = (20, 32) if case == "gemm" else (2, 4)
    remote, local = nets_pair(K, n_in, hidden, dtype=dtype)
    X = rng.standard_normal((60, n_in)).astype(dtype)
    Y = rng.standard_normal((60, 1)).astype(dtype)
    idx = ([rng.integers(0, 60, 40) for _ in range(K)] if case.startswith("bagging")
           else None)
    sw = rng.uniform(0.5, 2, 60) if case == "sample-weight" else None
    kw = dict(epochs=4, batch_size=9, lr=[0.01 * (k + 1) for k in range(K)],
              optimizer="adam", seeds=range(K), sample_indices=idx,
              sample_weight=sw)
    hr = fastnn.fit_many(remote, X, Y, client=client, chunk_size=3, **kw)
    hl = fastnn.fit_many(local, X, Y, **kw)
    assert_same(remote, local, hr, hl)
    assert all(r.history is h for r, h in zip(remote, hr))
    # a second call carries the optimizer state over, as locally
    hr = fastnn.fit_many(remote, X, Y, client=client, **kw)
    hl = fastnn.fit_many(local, X, Y, **kw)
    assert_same(remote, local, hr, hl)


def test_dask_divergence_reported_per_network(client):
    remote, local = nets_pair(5, 2, 4, "relu", "sse")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 2))
    Y = rng.standard_normal((40, 1))
    lrs = [0.001, 50.0, 0.002, 0.003, 5.0]
    with pytest.warns(RuntimeWarning, match=r"2 of 5 networks diverged.*nets\[1\]"):
        hr = fastnn.fit_many(remote, X, Y, epochs=20, batch_size=8, lr=lrs, seeds=1,
                             client=client, chunk_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        hl = fastnn.fit_many(local, X, Y, epochs=20, batch_size=8, lr=lrs, seeds=1)
    assert_same(remote, local, hr, hl)
    assert [h.stop_reason for h in hr] == [None, "diverged", None, None, "diverged"]


def test_dask_bad_arguments(client):
    nets, _ = nets_pair(2, 2, 4)
    X = np.zeros((10, 2))
    Y = np.zeros((10, 1))
    with pytest.raises(ValueError, match="chunk_size"):
        fastnn.fit_many(nets, X, Y, client=client, chunk_size=0)
    with pytest.raises(ValueError, match="give client too"):
        fastnn.fit_many(nets, X, Y, chunk_size=2)
    with pytest.raises(TypeError, match="dask.distributed Client"):
        fastnn.fit_many(nets, X, Y, client=object())
