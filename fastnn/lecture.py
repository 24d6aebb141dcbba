"""The lecture notes' network and its NumPy training loop.

The lecture workload: a batch of N = 64 rows of D_in = 1000 inputs, a
hidden layer of H = 100 sigmoid units, D_out = 10 linear outputs, no
biases, the sum-of-squares loss and plain gradient descent at lr 1e-4.
lecture_numpy_loop is the lecture's 20-line NumPy loop, line for line; it
is the one copy that ``python -m fastnn``, the benchmarks (bench/) and the
tests compare fastnn with.  ``import fastnn`` does not import this module.
"""
import numpy as np

__all__ = ["LECTURE_SHAPE", "LECTURE_LR", "lecture_numpy_loop"]

LECTURE_SHAPE = (64, 1000, 100, 10)      # N, D_in, H, D_out
LECTURE_LR = 1e-4


def lecture_numpy_loop(x, y, w1, w2, steps, lr=LECTURE_LR, print_every=0, out=print):
    """`steps` steps of the lecture's NumPy training loop on x (N, D_in),
    y (N, D_out): w1 (D_in, H) and w2 (H, D_out) are updated in place.
    Returns the loss of the last step (before its update).

    The loop is the lecture's, line for line, with its per-step print made
    optional: with print_every > 0, out(t, loss) is called every
    print_every steps and at the last one (the lecture prints every step)."""
    loss = None
    for t in range(steps):
        h = 1 / (1 + np.exp(-x.dot(w1)))            # forward pass: sigmoid hidden layer
        y_pred = h.dot(w2)                          #               linear output
        loss = np.square(y_pred - y).sum()          # sum-of-squares loss
        if print_every and (t % print_every == 0 or t == steps - 1):
            out(t, loss)

        grad_y_pred = 2.0 * (y_pred - y)            # analytical gradients
        grad_w2 = h.T.dot(grad_y_pred)
        grad_h = grad_y_pred.dot(w2.T)
        grad_w1 = x.T.dot(grad_h * h * (1 - h))

        w1 -= lr * grad_w1                          # gradient descent
        w2 -= lr * grad_w2
    return loss
