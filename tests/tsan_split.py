"""Exercise the data-parallel fit (csrc/pool.c and the split step of
csrc/split_impl.h) for ThreadSanitizer: every optimizer, gathered and
in-order rows, sample weights, maxout, dropout, a divergence, and four fits at once
from four Python threads (one holds the helper, the others run alone).
Then fit_many's worker threads (csrc/many.c): networks in lanes, one
network per thread, the stacked networks of method='batched' (one per
Python thread), with divergences, and two fit_many calls at once.

Not a pytest module: .ci/run builds the extensions with -fsanitize=thread
and runs this script under libtsan; a race report makes it exit 66.  (A
race injected by deleting the fnn_pool_wait before the gradient sum is
reported here.)"""
import os
import sys
import threading

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from test_train import data  # noqa: E402

from fastnn import SGD, Adam, Dense, Maxout, Network, _train  # noqa: E402

_train.set_split_tuning(min_macs=0, min_rows=1, max_half_mnk=1 << 62, backoff=False)
_train.set_train_threads(2)
X, Y = data("softmax_ce", n=101)
sw = np.random.RandomState(0).rand(101) + 0.5
for opt in [Adam(0.01, weight_decay=0.01), SGD(0.1), SGD(0.0),
            SGD(0.1, momentum=0.9, nesterov=True)]:
    for shuffle in (True, False):
        net = Network([Dense(7, "tanh"), Maxout(3), Dense(3, "softmax")], n_in=5,
                      loss="softmax_ce", seed=4)
        net.fit(X, Y, epochs=4, batch_size=16, seed=2, optimizer=opt,
                shuffle=shuffle, sample_weight=sw)
# dropout: each half of a split step draws its own rows' masks
net = Network([Dense(7, "tanh", dropout=0.3), Dense(6, "relu", dropout=0.5),
               Dense(3, "softmax")], n_in=5, loss="softmax_ce", seed=4)
net.fit(X, Y, epochs=4, batch_size=16, seed=2, optimizer="adam")
rs = np.random.RandomState(1)
net = Network([Dense(16, "relu"), Dense(1)], n_in=4, seed=0)
try:
    net.fit(rs.randn(64, 4) * 10, rs.randn(64, 1) * 10, epochs=1000, batch_size=8,
            optimizer=SGD(5.0))
    raise SystemExit("expected a divergence")
except FloatingPointError:
    pass
nets = [Network([Dense(24, "tanh"), Dense(3, "softmax")], n_in=5, loss="softmax_ce",
                seed=s) for s in range(4)]
threads = [threading.Thread(target=n.fit, args=(X, Y),
                            kwargs=dict(epochs=20, batch_size=10, seed=1))
           for n in nets]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert all(np.isfinite(n.params).all() for n in nets)

import fastnn  # noqa: E402

Xm, Ym = rs.randn(50, 3), rs.randn(50, 1)
lrs = [0.05] * 36 + [500.0]                       # the last one diverges
lanes = [Network([Dense(4, "tanh"), Dense(1)], n_in=3, seed=s) for s in range(37)]
fastnn.fit_many(lanes, Xm, Ym, epochs=5, batch_size=8, lr=lrs, seeds=range(37),
                threads=2, method="lanes", on_divergence="ignore")
wide = [Network([Dense(20, "relu"), Dense(1)], n_in=3, seed=s) for s in range(5)]
for method in ("threads", "batched"):
    fastnn.fit_many(wide, Xm, Ym, epochs=5, batch_size=8, lr=[0.01] * 4 + [500.0],
                    seeds=0, threads=2, method=method, on_divergence="ignore")
calls = [threading.Thread(target=fastnn.fit_many, args=(group, Xm, Ym),
                          kwargs=dict(epochs=5, batch_size=8, lr=0.01, seeds=0,
                                      threads=2, method=method))
         for group, method in ((lanes, "auto"), (wide, "batched"))]
for t in calls:
    t.start()
for t in calls:
    t.join()
assert all(np.isfinite(n.params).all() for n in lanes + wide)
print("tsan_split: ok")
