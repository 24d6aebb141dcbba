"""Every code block published in README.md, docs/*.md and bench/README.md
runs as pasted.

- ```python blocks of one file run in order, in one namespace, in a fresh
  interpreter whose working directory is a temporary directory.
- ```sh / ```bash blocks run with bash from the repository root, with
  FASTNN_BENCH_SMOKE=1 in the environment: a benchmark command runs each of
  its cases once at a small size (bench/conftest.py), so the test checks
  that it works without paying for its timing.  Files the blocks write into
  the repository are put back (docs/bench.png) or removed afterwards.
- A block right after the line `<!-- ci: setup -->` is a set-up command
  (it installs fastnn); .ci/run runs those verbatim in fresh virtual
  environments, so this test only checks that they are there.
- A file may say what it needs with a line `<!-- requires: mod1, mod2 -->`
  (importable modules, or `mpiexec` for a program on PATH); without them its
  blocks are skipped, naming what is missing.  The same line right before
  a block is that block's alone: without what it names, that block is left
  out (the optional extras; .ci/run installs them, so there every block
  runs) and the others still run.
Other fences (text, console, ...) are output, not code.
"""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ([ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
        + [ROOT / "bench" / "README.md"])
FENCE = re.compile(r"^```([A-Za-z0-9_+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
SETUP_MARK = "<!-- ci: setup -->"
REQUIRES = re.compile(r"<!--\s*requires:\s*(.*?)\s*-->")
# The guard keeps processes that multiprocessing spawns (Dask's workers)
# from running the blocks again when they import this script.
RUNNER = textwrap.dedent("""
    import sys, traceback
    if __name__ == "__main__":
        blocks = {blocks!r}
        ns = {{"__name__": "__main__"}}
        for i, (line, src) in enumerate(blocks):
            try:
                exec(compile(src, "{name}:" + str(line), "exec"), ns)
            except BaseException:
                traceback.print_exc()
                sys.exit(f"block {{i + 1}} (line {{line}}) of {name} failed")
""")


def _fences(text):
    """(match, the last non-blank line before it, its line number) of each
    fence of text."""
    lines = text.splitlines()
    for m in FENCE.finditer(text):
        k = text.count("\n", 0, m.start()) - 1      # the line above, 0-based
        while k >= 0 and not lines[k].strip():
            k -= 1
        yield m, (lines[k].strip() if k >= 0 else ""), k


def blocks(path):
    """(language, line number, source, is a set-up command, requirements
    of the block alone) of each fence."""
    text = path.read_text()
    out = []
    for m, before, _ in _fences(text):
        line = text.count("\n", 0, m.start()) + 1
        req = REQUIRES.fullmatch(before)
        out.append((m.group(1).lower(), line, m.group(2), before == SETUP_MARK,
                    _split(req.group(1)) if req else []))
    return out


def _split(reqs):
    return [r.strip() for r in reqs.split(",") if r.strip()]


def _missing(reqs):
    missing = []
    for req in reqs:
        if req == "mpiexec":
            if shutil.which("mpiexec") is None:
                missing.append(req)
        elif importlib.util.find_spec(req) is None:
            missing.append(req)
    return missing


def missing_requirements(path):
    """What the file as a whole needs (requires lines not right before a
    block) and is missing."""
    text = path.read_text()
    per_block = {k for _, _, k in _fences(text)}
    reqs = []
    for k, line in enumerate(text.splitlines()):
        m = REQUIRES.fullmatch(line.strip())
        if m and k not in per_block:
            reqs += _split(m.group(1))
    return _missing(reqs)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("MPLBACKEND", "Agg")
    # Open MPI refuses to run as root without these (CI runs as root).
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return env


def _code(path, langs):
    """(line, source) of the blocks in langs that can run here."""
    return [(line, src) for lang, line, src, setup, reqs in blocks(path)
            if lang in langs and not setup and not _missing(reqs)]


def _has(path, langs):
    return any(lang in langs and not setup for lang, _, _, setup, _ in blocks(path))


PY = ("python",)
SH = ("sh", "bash", "shell")
_ids = dict(ids=lambda p: str(p.relative_to(ROOT)))


@pytest.mark.parametrize("path", [p for p in DOCS if _has(p, PY)], **_ids)
def test_python_blocks_run(path, tmp_path):
    code = _code(path, PY)
    missing = missing_requirements(path)
    if missing:
        pytest.skip(f"{path.name} needs {', '.join(missing)}")
    if not code:
        pytest.skip(f"each of {path.name}'s blocks needs an optional extra that is missing")
    runner = tmp_path / "run_blocks.py"
    runner.write_text(RUNNER.format(blocks=code, name=path.name))
    r = subprocess.run([sys.executable, str(runner)], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]


def _repo_files():
    return {p for p in ROOT.rglob("*") if ".git" not in p.parts}


@pytest.mark.parametrize("path", [p for p in DOCS if _has(p, SH)], **_ids)
def test_shell_blocks_run(path):
    code = _code(path, SH)
    missing = missing_requirements(path)
    if missing:
        pytest.skip(f"{path.name} needs {', '.join(missing)}")
    if not code:
        pytest.skip(f"each of {path.name}'s blocks needs an optional extra that is missing")
    env = dict(_env(), FASTNN_BENCH_SMOKE="1")
    kept = {p: p.read_bytes() for p in [ROOT / "docs" / "bench.png"] if p.exists()}
    before = _repo_files()
    try:
        for line, src in code:
            r = subprocess.run(["bash", "-euo", "pipefail", "-c", src], cwd=ROOT,
                               env=env, capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, (f"{path.name}:{line} failed\n{src}\n"
                                       + r.stdout[-3000:] + r.stderr[-5000:])
    finally:
        for p, data in kept.items():
            p.write_bytes(data)
        for p in _repo_files() - before:
            if p.is_file() and p.suffix in (".png", ".json"):
                p.unlink()


def test_readme_has_the_two_setup_commands():
    setup = [src.strip() for lang, line, src, is_setup, _ in blocks(ROOT / "README.md")
             if is_setup]
    assert len(setup) == 2, f"README.md must mark exactly two set-up commands, found {setup}"
    assert any("python -m fastnn" in s and "pytest" not in s for s in setup)
    assert any("pytest" in s for s in setup)


def test_no_links_outside_the_repository():
    """Relative links in README/docs point at files that exist here."""
    link = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
    bad = []
    for path in DOCS:
        for target in link.findall(path.read_text()):
            if re.match(r"[a-z]+:", target):
                continue                    # http:, https:, mailto:
            if not (path.parent / target).resolve().exists():
                bad.append(f"{path.relative_to(ROOT)} -> {target}")
    assert not bad, bad
