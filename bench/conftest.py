"""Shared set-up of the benchmark suites in bench/.

- Sets the thread count of every BLAS/OpenMP pool before anything runs
  (threadpoolctl; FASTNN_BENCH_THREADS, default 2) and prints a header naming
  the CPU, the BLAS of numpy, scipy and fastnn (kernel, version, threads)
  and whether OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set.
- The `report` fixture collects one line per timed case (median and min
  per call or per step, and a throughput) and the speed ratios between cases
  measured in this run; they are printed at the end of the session, after
  pytest-benchmark's own table.  Speed targets are shown next to
  the ratios, never asserted: speed is judged on a quiet machine, while the
  correctness checks that precede each timing do fail the run.

- FASTNN_BENCH_SMOKE=1 runs every case once, without warm-up (pedantic
  rounds forced to 1, pytest-benchmark's minimum rounds 1 and no time
  budget): the tests of the documentation use it to check that a published
  benchmark command runs, without paying for its timing.  Its numbers mean
  nothing.

Run from the repository root, with the two OpenBLAS variables unset in that
command only (see bench/README.md):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest bench/ --benchmark-only
"""
import os

import numpy as np
import pytest

THREADS = int(os.environ.get("FASTNN_BENCH_THREADS", "2"))
SMOKE = os.environ.get("FASTNN_BENCH_SMOKE") == "1"


def pytest_configure(config):
    from harness.machine import limit_threads
    config._fastnn_thread_limits = limit_threads(THREADS)
    if SMOKE:
        config.option.benchmark_min_rounds = 1
        config.option.benchmark_max_time = 0.0
        config.option.benchmark_warmup = False


if SMOKE:
    @pytest.fixture
    def benchmark(benchmark):          # noqa: F811 (the plugin's, pedantic cut to one round)
        inner = benchmark.pedantic

        def pedantic(target, args=(), kwargs=None, setup=None, **_):
            return inner(target, args=args, kwargs=kwargs, setup=setup,
                         rounds=1, warmup_rounds=0, iterations=1)
        benchmark.pedantic = pedantic
        return benchmark


def pytest_report_header(config):
    from harness.machine import header_lines
    return ["fastnn benchmarks -- " + line for line in header_lines(THREADS)]


@pytest.fixture(scope="session")
def threads():
    return THREADS


class Report:
    """Timed cases and the ratios between them, for the closing summary."""

    def __init__(self):
        self.rows = {}          # key -> dict
        self.ratios = []        # (label, fast key, slow key, target)
        self.paired = []        # (label, per-round ratios, target)
        self.notes = []
        self.derived = []       # callables rows -> list of lines

    def add(self, key, benchmark, per=1, unit="call", flops=None,
            elements=None, nbytes=None, extra=""):
        """Record the benchmark just run under `key`.  per: work units (e.g.
        training steps) per timed call; flops / elements / nbytes: work per
        unit, for GFLOP/s, elements/s, GB/s.  Returns the row (None if timing
        was disabled)."""
        st = getattr(benchmark, "stats", None)
        if st is None:
            return None
        s = st.stats
        row = {"median": s.median / per, "min": s.min / per, "rounds": s.rounds,
               "unit": unit, "flops": flops, "elements": elements,
               "nbytes": nbytes, "extra": extra}
        info = {"per": per, "unit": unit, "median_per_unit_s": row["median"],
                "min_per_unit_s": row["min"]}
        if flops:
            info["gflops_median"] = flops / row["median"] / 1e9
        if elements:
            info["gelems_median"] = elements / row["median"] / 1e9
        if nbytes:
            info["gbytes_median"] = nbytes / row["median"] / 1e9
        benchmark.extra_info.update(info)
        self.rows[key] = row
        return row

    def add_times(self, key, times, per=1, unit="call", flops=None, extra=""):
        """Record a case timed by the test itself (seconds per call, one
        per round), e.g. one of two workloads timed in alternation."""
        t = np.asarray(times, dtype=float) / per
        row = {"median": float(np.median(t)), "min": float(t.min()),
               "rounds": len(t), "unit": unit, "flops": flops,
               "elements": None, "nbytes": None, "extra": extra}
        self.rows[key] = row
        return row

    def speedup(self, label, fast, slow, target=None):
        """Report t(slow) / t(fast) at the end (keys of add())."""
        self.ratios.append((label, fast, slow, target))

    def paired_ratio(self, label, ratios, target=None):
        """Report the median of per-round ratios t(slow) / t(fast) of two
        cases timed in alternating rounds (one ratio per round)."""
        self.paired.append((label, np.asarray(ratios, dtype=float), target))

    def note(self, text):
        self.notes.append(text)

    def derive(self, fn):
        """fn(rows) -> lines, evaluated for the summary (for figures that
        combine more than two cases)."""
        self.derived.append(fn)

    def get(self, key):
        return self.rows.get(key)

    @staticmethod
    def _t(sec):
        for unit, f in (("s", 1), ("ms", 1e3), ("us", 1e6), ("ns", 1e9)):
            if sec * f >= 1:
                return f"{sec * f:8.3f} {unit:<2}"
        return f"{sec * 1e9:8.3f} ns"

    def lines(self):
        out = []
        if not self.rows:       # timing disabled: nothing to report
            return out
        if self.rows:
            w = max(len(k) for k in self.rows) + 1
            out.append(f"{'case':<{w}} {'median':>11} {'min':>11} per     "
                       "throughput (median / best)")
            for key in sorted(self.rows):
                r = self.rows[key]
                tp = []
                if r["flops"]:
                    tp.append(f"{r['flops'] / r['median'] / 1e9:7.2f} / "
                              f"{r['flops'] / r['min'] / 1e9:7.2f} GFLOP/s")
                if r["elements"]:
                    tp.append(f"{r['elements'] / r['median'] / 1e9:6.3f} / "
                              f"{r['elements'] / r['min'] / 1e9:6.3f} Gelem/s")
                if r["nbytes"]:
                    tp.append(f"{r['nbytes'] / r['median'] / 1e9:6.2f} / "
                              f"{r['nbytes'] / r['min'] / 1e9:6.2f} GB/s")
                if r["extra"]:
                    tp.append(r["extra"])
                out.append(f"{key:<{w}} {self._t(r['median'])} "
                           f"{self._t(r['min'])} {r['unit']:<7} " + "; ".join(tp))
        if self.ratios:
            out.append("")
            out.append("speed ratios, measured side by side in this run "
                       "(t_baseline / t_fastnn; median, and min over rounds):")
            for label, fast, slow, target in self.ratios:
                a, b = self.rows.get(fast), self.rows.get(slow)
                if a is None or b is None:
                    missing = fast if a is None else slow
                    out.append(f"  {label}: not measured ({missing} missing)")
                    continue
                med, best = b["median"] / a["median"], b["min"] / a["min"]
                goal = ""
                if target is not None:
                    goal = (f"  target >= {target:g}x: "
                            f"{'met' if med >= target else 'NOT met'} (median)")
                out.append(f"  {label}: {med:.2f}x median, {best:.2f}x min{goal}")
        if self.paired:
            out.append("")
            out.append("paired ratios, fit and its baseline in alternating rounds "
                       "(median of the per-round ratios t_baseline / t_fastnn):")
            for label, r, target in self.paired:
                goal = ""
                if target is not None:
                    med = float(np.median(r))
                    goal = (f"  target >= {target:g}x: "
                            f"{'met' if med >= target else 'NOT met'}; "
                            f"{int((r >= target).sum())} of {len(r)} rounds")
                out.append(f"  {label}: {np.median(r):.3g}x median, "
                           f"{r.min():.3g}-{r.max():.3g}x over {len(r)} rounds{goal}")
        for fn in self.derived:
            try:
                out.extend(fn(self.rows) or [])
            except Exception as e:  # a missing case: say so, do not crash
                out.append(f"  ({fn.__name__}: not computed: {e!r})")
        out.extend(self.notes)
        return out


_REPORT = Report()


@pytest.fixture(scope="session")
def report():
    return _REPORT


def pytest_terminal_summary(terminalreporter):
    lines = _REPORT.lines()
    if not lines:
        return
    terminalreporter.section("fastnn benchmark summary")
    from harness.machine import header_lines
    for line in header_lines(THREADS):
        terminalreporter.write_line(line)
    for line in lines:
        terminalreporter.write_line(line)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
