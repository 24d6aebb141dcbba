"""`import fastnn` loads numpy and fastnn's own modules only: SciPy (whose
linalg import alone took longer than fastnn's), scikit-learn, the peers and
the optional extras are imported where they are used."""
import subprocess
import sys

HEAVY = ("scipy", "sklearn", "torch", "jax", "matplotlib", "tqdm", "onnx",
         "onnxruntime", "dask", "distributed", "mpi4py", "pandas")


def _loaded_after(code):
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sorted("
         "m for m in sys.modules if m.split('.')[0] in %r)))" % (HEAVY,)],
        capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_import_fastnn_loads_no_heavy_package():
    assert _loaded_after("import fastnn") == []


def test_building_and_fitting_a_network_loads_no_heavy_package():
    code = ("import numpy as np, fastnn\n"
            "net = fastnn.Network([fastnn.Dense(4, 'tanh'), fastnn.Dense(1)], n_in=2, seed=0)\n"
            "X = np.zeros((8, 2)); net.fit(X, np.zeros((8, 1)), epochs=2, batch_size=4)\n"
            "net.predict(X)")
    assert _loaded_after(code) == []
