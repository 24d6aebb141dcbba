"""fastnn: dense neural networks trained fast on the CPU.

C kernels (fused bias+activation, fused loss+gradient, in-place optimizers
over one flat parameter buffer) and BLAS GEMMs under a small Python API;
every kernel has a NumPy twin in fastnn.reference that the tests compare
against.

    >>> import numpy as np, fastnn
    >>> net = fastnn.Network([fastnn.Dense(4, "tanh"), fastnn.Dense(1)], n_in=2, seed=0)
    >>> loss = net.train_step(np.zeros((8, 2)), np.zeros((8, 1)), lr=0.1)
"""
from fastnn._blas import blas_info, set_num_threads, use_blas
from fastnn._train import set_train_threads, train_threads
from fastnn.nn import Dense, Maxout, Network
from fastnn.training import (Adam, Callback, Constant, EarlyStopping, History,
                             InverseScaling, SGD, StepDecay)

__version__ = "0.1.0"

__all__ = ["Network", "Dense", "Maxout", "SGD", "Adam", "Constant",
           "InverseScaling", "StepDecay", "History", "Callback", "EarlyStopping",
           "blas_info", "use_blas", "set_num_threads", "set_train_threads",
           "train_threads", "save", "load", "FormatError", "to_onnx",
           "fit_many", "sweep", "__version__"]

# Loaded on first use, to keep `import fastnn` short: name -> module.
_LAZY = {"save": "fastnn.io", "load": "fastnn.io", "FormatError": "fastnn.io",
         "to_onnx": "fastnn.onnx", "fit_many": "fastnn.many",
         "sweep": "fastnn.many"}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fastnn' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
