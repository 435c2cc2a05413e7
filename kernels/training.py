"""A whole epoch of minibatch training in one compiled call.

For each minibatch, in the order the caller gives: gather its rows, compute the loss and
gradient with the fused kernel of ``dense``, and take one optimiser step, all without
returning to Python.

Signature (callable from the user's own ``@njit`` code as well)::

    train_epoch(spec, theta, X, Y, l2, order, batch_size, optimizer, hyper, state,
                step, Xb, Yb, grad, work) -> (mean_loss, step, diverged_at)

``theta`` (D,) is updated in place; ``order`` (n,) int64 is this epoch's permutation of
the rows; ``optimizer`` is ``SGD`` or ``ADAM``; ``hyper`` is float64
``[lr, momentum, nesterov, beta1, beta2, eps]``; ``state`` (3, D) holds the optimiser's
moments (rows 0 and 1) and the parameters before the last step (row 2); ``step`` counts
the optimiser steps taken so far (Adam's bias correction); ``Xb`` (batch_size, n0) and
``Yb`` (batch_size, nL) or (batch_size,) are gather buffers; ``grad`` (D,); ``work`` as for
``dense.loss_and_grad`` with ``batch_size`` rows. ``mean_loss`` is the mean over the
epoch's rows of the loss each row's batch had (L2 penalty included).

When a batch's loss or gradient is not finite, the epoch stops: theta is set back to
the parameters of the last finite step and ``diverged_at`` is that batch's index (else
-1).
"""

import math

from fastbp.kernels._config import kernel
from fastbp.kernels.checks import all_finite
from fastbp.kernels.dense import network_loss_and_grad

SGD = 0
ADAM = 1


@kernel
def _gather(source, order, start, stop, target):
    for i in range(stop - start):
        target[i] = source[order[start + i]]


# The steps keep the parameters they start from in ``previous`` (state row 2), in the
# same pass as the update: a separate copy was a fifth of a digits batch's overhead.


@kernel
def _sgd_step(theta, grad, previous, velocity, lr, momentum, nesterov):
    lr_ = theta.dtype.type(lr)
    if momentum == 0.0:
        for j in range(theta.shape[0]):
            previous[j] = theta[j]
            theta[j] -= lr_ * grad[j]
        return
    mu = theta.dtype.type(momentum)
    for j in range(theta.shape[0]):
        previous[j] = theta[j]
        v = mu * velocity[j] + grad[j]
        velocity[j] = v
        theta[j] -= lr_ * (grad[j] + mu * v if nesterov else v)


@kernel
def _adam_step(theta, grad, previous, m, v, lr, beta1, beta2, eps, step):
    b1 = theta.dtype.type(beta1)
    b2 = theta.dtype.type(beta2)
    one = theta.dtype.type(1.0)
    # Bias corrections folded into the step size, computed in float64.
    size = theta.dtype.type(lr * math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step))
    eps_ = theta.dtype.type(eps * math.sqrt(1.0 - beta2**step))
    for j in range(theta.shape[0]):
        previous[j] = theta[j]
        g = grad[j]
        mj = b1 * m[j] + (one - b1) * g
        vj = b2 * v[j] + (one - b2) * g * g
        m[j] = mj
        v[j] = vj
        theta[j] -= size * mj / (math.sqrt(vj) + eps_)


@kernel
def train_epoch(
    spec, theta, X, Y, l2, order, batch_size, optimizer, hyper, state, step, Xb, Yb, grad, work
):
    n = X.shape[0]
    total = 0.0
    batch = 0
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        rows = stop - start
        _gather(X, order, start, stop, Xb)
        _gather(Y, order, start, stop, Yb)
        value = network_loss_and_grad(spec, theta, Xb[:rows], Yb[:rows], l2, grad, work)
        if not (math.isfinite(value) and all_finite(grad)):
            if step > 0:
                theta[:] = state[2]
            return total / max(start, 1), step, batch
        step += 1
        if optimizer == SGD:
            _sgd_step(theta, grad, state[2], state[0], hyper[0], hyper[1], hyper[2] != 0.0)
        else:
            _adam_step(
                theta,
                grad,
                state[2],
                state[0],
                state[1],
                hyper[0],
                hyper[3],
                hyper[4],
                hyper[5],
                step,
            )
        total += value * rows
        batch += 1
    return total / n, step, -1
