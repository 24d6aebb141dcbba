"""The benchmark harness shared by ``python -m fastnn bench`` (suite) and
the pytest-benchmark suites of bench/: the machine header and thread limits
(machine), the workloads and the generalized NumPy loop (workloads), and the
peers fastnn is compared with (peers).  It lives outside the fastnn package:
``import fastnn`` never imports it, nor the peers' libraries."""
