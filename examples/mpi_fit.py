"""Data-parallel training of one network over MPI ranks.

    mpiexec -n 2 python examples/mpi_fit.py

Every rank holds its own rows (here drawn with a per-rank seed; in practice
each rank loads its shard), builds the same network and calls fit with
comm=MPI.COMM_WORLD.  A step sums the ranks' gradients (in rank order) and
applies the same update everywhere, so all ranks end with the same
parameters.  Loss and validation metric are global; rank 0 writes the
checkpoint.
"""
import os
import tempfile

import numpy as np
from mpi4py import MPI

import fastnn
from fastnn.distributed import Checkpoint, Communicator

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()

rng = np.random.default_rng(rank)                 # this rank's shard
X = rng.standard_normal((4000, 20))
y = np.sin(X[:, :1]) + 0.5 * X[:, 1:2] + 0.05 * rng.standard_normal((4000, 1))
X_val, y_val = X[-500:], y[-500:]
X, y = X[:-500], y[:-500]

net = fastnn.Network([fastnn.Dense(64, "relu"), fastnn.Dense(1)], seed=0)
path = os.path.join(tempfile.gettempdir(), "mpi_fit_example.fnn")
hist = net.fit(X, y, epochs=5, batch_size=64, optimizer="adam", lr=3e-3, seed=0,
               validation_data=(X_val, y_val), callbacks=[Checkpoint(path)],
               comm=Communicator(comm, timeout=60))

# every rank holds the same parameters
same = comm.allreduce(int(np.array_equal(comm.bcast(net.params, root=0), net.params)))
if rank == 0:
    print(f"{size} ranks x {len(X)} rows, global batch {size * 64}: "
          f"loss {hist.loss[0]:.4f} -> {hist.loss[-1]:.4f}, "
          f"validation R^2 {hist.val_metric[-1]:.3f}, "
          f"{hist.samples_per_sec[-1]:.3g} samples/s, "
          f"exchanges {hist.comm_seconds:.3f} s")
    print(f"parameters identical on {same} of {size} ranks; checkpoint {path}")
    assert same == size and hist.val_metric[-1] > 0.8
