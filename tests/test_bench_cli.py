"""``python -m fastnn bench`` as a command: it finds the harness in the
repository's bench/ directory, runs, and writes its JSON and plot; the core
(``import fastnn``) imports none of it.  Nothing here is timed: the suite
runs with a tiny budget and only its output is checked."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, **kw):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, **kw)


def test_core_imports_no_benchmark_code():
    r = run("-c", "import sys, fastnn; print(sorted(m for m in sys.modules if "
                  "m.split('.')[0] in ('harness', 'torch', 'jax', 'matplotlib', "
                  "'sklearn') or m in ('fastnn.lecture', 'fastnn.__main__')))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_plot_path_default(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "bench"))
    from harness.suite import parse_args
    assert parse_args([]).plot is None
    assert parse_args(["--plot"]).plot == os.path.join(ROOT, "docs", "bench.png")
    assert parse_args(["--plot", "out.png", "--quick"]).plot == "out.png"
    with pytest.raises(SystemExit):
        parse_args(["--workloads", "seed"])         # the lecture workload's old name


def test_bench_runs_and_writes_json_and_plot(tmp_path):
    args = ["-m", "fastnn", "bench", "--workloads", "tiny,lecture",
            "--peers", "fastnn,numpy", "--budget", "0.01", "--quick",
            "--json", str(tmp_path / "r.json")]
    try:
        import matplotlib  # noqa: F401
        args += ["--plot", str(tmp_path / "p.png")]
    except ImportError:
        pass
    r = run(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pool" in r.stdout and "lecture" in r.stdout
    with open(tmp_path / "r.json") as f:
        out = json.load(f)
    got = {(x["workload"], x["peer"]) for x in out["results"] if x["steps_per_sec"] > 0}
    assert got == {("tiny", "fastnn"), ("tiny", "numpy"), ("lecture", "fastnn"),
                   ("lecture", "numpy")}
    if "--plot" in args:
        assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
