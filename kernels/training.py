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

Both raise ``ValueError`` before any step when the arrays disagree with ``spec`` or with
each other, when a label is outside ``0..nL-1`` or when ``order`` holds an index outside
``0..n-1`` (both index memory).

When a batch's loss or gradient is not finite, the epoch stops: theta is set back to
the parameters of the last finite step and ``diverged_at`` is that batch's index (else
-1).

``train_epoch_split`` takes the same steps for a network with one hidden layer, its
hidden units split between ``shares`` threads (same arguments, then ``shares``; ``Xb``,
``grad`` and ``work`` unused)::

    train_epoch_split(spec, theta, X, Y, l2, order, batch_size, optimizer, hyper, state,
                      step, Xb, Yb, grad, work, shares) -> (mean_loss, step, diverged_at)

Each thread keeps its units' parameters (columns of ``W_1``, transposed; entries of
``b_1``; rows of ``W_2``; share 0 also ``b_2``) and their optimiser state in arrays of
its own for the whole epoch: the threads then exchange only the output layer's partial
pre-activations (``nL x batch`` numbers per step) and its delta, where splitting the
batch's rows instead would move the whole gradient and parameter vector between the
cores at every step. The products are the same as ``train_epoch``'s, cut along the
hidden units; the output layer's pre-activation adds the shares' parts in share order,
so results agree with ``train_epoch``'s to rounding and are the same from run to run
for a given ``shares``. One parallel region a step runs a batch's backward pass, its
optimiser step and the next batch's forward pass; so when a batch's gradient is not
finite, its step has been taken. theta and state row 2 come back as ``train_epoch``'s
would; the moments (state rows 0 and 1) include that step.

``evaluate(spec, theta, X, Y, l2, rows, out, work) -> loss`` is the validation after an
epoch: the loss and the outputs ``out`` (n, nL), ``rows`` rows at a time.
"""

import math

import numba
import numpy as np
from numba import prange

from fastbp.kernels._config import kernel
from fastbp.kernels.activations import multiply_by_derivative
from fastbp.kernels.checks import all_finite, all_in_range, c_contiguous
from fastbp.kernels.dense import (
    _check_targets,
    _targets_ok,
    add_bias_and_activate,
    network_loss_and_grad,
    network_loss_and_outputs,
    output_loss_and_delta,
    workspace_per_row,
)
from fastbp.kernels.linalg import BLAS_THREADED_WORK as SPLIT_MAX_PRODUCT
from fastbp.kernels.linalg import matmul, matmul_nt, matmul_tn, matrix, sum_rows, widest_product
from fastbp.kernels.spec import check_network

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
def _step(optimizer, hyper, params, grad, m, v, previous, step):
    """Optimiser step number ``step`` on ``params``: moments ``m`` (SGD's velocity) and
    ``v``; the parameters before the step go to ``previous``."""
    if optimizer == SGD:
        _sgd_step(params, grad, previous, m, hyper[0], hyper[1], hyper[2] != 0.0)
    else:
        _adam_step(params, grad, previous, m, v, hyper[0], hyper[3], hyper[4], hyper[5], step)


@kernel
def _check_data(spec, theta, X, Y):
    """theta, X and Y against ``spec`` and one another, labels in range (they index
    memory): for calls from ``@njit`` code, `fastbp.train` having checked its own."""
    check_network(spec, theta, X)
    _check_targets(Y, spec, X.shape[0])
    if not _targets_ok(Y, spec, False):  # labels only: float targets pass
        raise ValueError("Y's labels must be in 0..nL-1")


@kernel
def _check_epoch(spec, theta, X, Y, order, batch_size, hyper, state, Xb, Yb, grad, work):
    """`_check_data`, and the epoch's order and buffers against it."""
    c_contiguous(spec, theta, X, Y, order, hyper, state, Xb, Yb, grad, work)
    _check_data(spec, theta, X, Y)
    n = X.shape[0]
    if grad.shape != theta.shape:
        raise ValueError("grad must have theta's shape")
    if order.shape[0] != n or not all_in_range(order, 0, n):
        raise ValueError("order must hold n row indices in 0..n-1")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    rows = min(batch_size, n)
    if Xb.shape[0] < rows or Xb.shape[1] != X.shape[1] or Yb.shape[0] < rows:
        raise ValueError("Xb and Yb must have min(batch_size, n) rows, and X's columns")
    if state.shape[0] != 3 or state.shape[1] != theta.shape[0] or hyper.shape[0] != 6:
        raise ValueError("state must have shape (3, D) and hyper 6 entries")
    if work.shape[0] < rows * workspace_per_row(spec):
        raise ValueError("work is shorter than min(batch_size, n) * workspace_per_row(spec)")


@kernel
def train_epoch(
    spec, theta, X, Y, l2, order, batch_size, optimizer, hyper, state, step, Xb, Yb, grad, work
):
    _check_epoch(spec, theta, X, Y, order, batch_size, hyper, state, Xb, Yb, grad, work)
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
        _step(optimizer, hyper, theta, grad, state[0], state[1], state[2], step)
        total += value * rows
        batch += 1
    return total / n, step, -1


# --------------------------------------------------------------------------- split hidden layer

# Below this many parameters a step is too short to pay for waking a second thread: on
# the 2-core machine, 4-16-3 networks trained 1.7-2.4x slower split, 64-128-10 ones
# 1.3-1.5x faster (batches of 8 and 32 rows).
SPLIT_MIN_PARAMS = 4096
# Each share's products must stay single-threaded in BLAS: OpenBLAS starts its own
# threads for products of more than SPLIT_MAX_PRODUCT (2^18) multiply-adds, and those
# threads and the shares' then fight over the cores (a 64-128-10 epoch in batches of 128
# took 50x as long split as not).
SPLIT_MIN_UNITS = 32  # hidden units per share at least


def split_shares(sizes, batch_size, threads=None):
    """How many threads `train_epoch_split` should split a network's hidden units
    between, or 1 for `train_epoch` (plain Python; ``sizes`` ``[n0, ..., nL]``;
    ``threads`` defaults to Numba's current thread count)."""
    if threads is None:
        threads = numba.get_num_threads()
    if len(sizes) != 3 or threads < 2:
        return 1
    n0, n1, nL = sizes
    shares = min(threads, n1 // SPLIT_MIN_UNITS)
    n_params = n0 * n1 + n1 + n1 * nL + nL
    if shares < 2 or n_params < SPLIT_MIN_PARAMS:
        return 1
    widest = -(-n1 // shares)
    if max(n0, nL) * widest * batch_size > SPLIT_MAX_PRODUCT:
        return 1
    return shares


def quiet_rows(sizes):
    """Rows per call for which every layer's product stays under `SPLIT_MAX_PRODUCT`
    multiply-adds, so that OpenBLAS runs it on the calling thread (plain Python;
    ``sizes`` ``[n0, ..., nL]``).

    Between split epochs, `fastbp.train` evaluates validation data this many rows at a
    time: one pass over the demo's 450 digits ran on OpenBLAS's threads, which then spin
    for 0.1 s and took the cores from the next epoch (4.6 ms, some 40-70 ms, against
    1.1-1.2 ms in chunks).
    """
    return max(1, (SPLIT_MAX_PRODUCT - 1) // widest_product(sizes))


@kernel
def evaluate(spec, theta, X, Y, l2, rows, out, work):
    """Mean loss over X's rows (the L2 penalty counted once) and the outputs into ``out``
    (n, nL), ``rows`` rows at a time, one forward pass each.

    `fastbp.train`'s validation after each epoch (``rows`` from `quiet_rows` between
    split epochs). ``work`` as for ``dense.loss`` with ``rows`` rows.
    """
    c_contiguous(spec, theta, X, Y, out, work)
    _check_data(spec, theta, X, Y)
    n = X.shape[0]
    if n == 0 or out.shape != (n, spec[spec.shape[0] - 1]) or rows < 1:
        raise ValueError("X must have rows, out shape (n, nL), and rows be at least 1")
    if work.shape[0] < min(rows, n) * workspace_per_row(spec):
        raise ValueError("work is shorter than min(rows, n) * workspace_per_row(spec)")
    total = 0.0
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        part = network_loss_and_outputs(
            spec, theta, X[start:stop], Y[start:stop], l2, out[start:stop], work
        )
        # Weights (stop - start) / n add up to 1: the penalty in each part counts once.
        total += part * (stop - start)
    return total / n


@kernel
def _share_bounds(n1, shares, t):
    """The hidden units ``first .. stop`` of share ``t``."""
    return t * n1 // shares, (t + 1) * n1 // shares


@kernel
def _share_size(n0, n1, nL, shares, t):
    """Parameters share ``t`` keeps: its columns of W_1, entries of b_1, rows of W_2,
    and (share 0) b_2."""
    first, stop = _share_bounds(n1, shares, t)
    h = stop - first
    return n0 * h + h + h * nL + (nL if t == 0 else 0)


@kernel
def _exchange_share(theta, local, n0, n1, nL, first, stop, with_b2, to_local):
    """Copy share parameters between the flat ``theta`` (layout of ``MLP.unpack``) and a
    share's ``local`` vector ``[W_1 columns transposed (h, n0), b_1 part, W_2 rows
    (h, nL), b_2]``."""
    h = stop - first
    for j in range(h):  # W_1[:, first + j] is row j of the share's W_1^T
        for p in range(n0):
            if to_local:
                local[j * n0 + p] = theta[p * n1 + first + j]
            else:
                theta[p * n1 + first + j] = local[j * n0 + p]
    at = n0 * h
    b1 = n0 * n1
    w2 = b1 + n1
    b2 = w2 + n1 * nL
    pieces = (
        (b1 + first, h),  # b_1[first:stop]
        (w2 + first * nL, h * nL),  # W_2[first:stop, :]
        (b2, nL if with_b2 else 0),  # b_2
    )
    for start, length in pieces:
        for j in range(length):
            if to_local:
                local[at + j] = theta[start + j]
            else:
                theta[start + j] = local[at + j]
        at += length


@kernel
def _backward_share(spec, params, l2, Xb, H, delta, grad, D1, with_b2):
    """Share gradient, in the share's layout, from the output delta (nL, rows): its W_2
    rows, b_1 entries and W_1 columns (and b_2 for share 0). ``D1`` (h, rows) scratch.

    Both large products are plain ``A @ B`` (``W_1^T`` kept as such, the batch kept both
    ways): OpenBLAS ran ``X^T @ D1^T`` in 6.9-8.3 us and ``D1 @ X`` in 5.4 us."""
    n0, h, nL = spec[3], H.shape[0], spec[5]
    W1t = matrix(params, 0, h, n0)
    W2 = matrix(params, n0 * h + h, h, nL)
    gW1t = matrix(grad, 0, h, n0)
    gb1 = grad[n0 * h : n0 * h + h]
    gW2 = matrix(grad, n0 * h + h, h, nL)
    matmul_nt(H, delta, gW2)
    if with_b2:
        sum_rows(delta, grad[n0 * h + h + h * nL : n0 * h + h + h * nL + nL])
    matmul(W2, delta, D1)
    multiply_by_derivative(spec[0], H, D1)
    sum_rows(D1, gb1)
    matmul(D1, Xb, gW1t)
    if l2 != 0.0:
        l2_ = grad.dtype.type(l2)
        for j in range(h):
            for p in range(n0):
                gW1t[j, p] += l2_ * W1t[j, p]
            for k in range(nL):
                gW2[j, k] += l2_ * W2[j, k]


@kernel
def _penalty_share(params, n0, h, nL):
    """``Σ W²`` over a share's weights (its W_1 columns and W_2 rows)."""
    total = 0.0
    for j in range(n0 * h):
        total += params[j] * params[j]
    for j in range(n0 * h + h, n0 * h + h + h * nL):
        total += params[j] * params[j]
    return total


@kernel
def _before(step):
    """The state row holding the parameters from before step number ``step``."""
    return 2 + step % 2


@kernel
def _forward_share(spec, params, l2, X, order, start, rows, t, shares, Xbs, Xts, Hs,
                   partials, penalties):  # fmt: skip
    """Share ``t``'s forward pass of rows ``start .. start+rows`` of ``order``, into its
    rows of the scratch: ``Xbs`` (rows, n0) <- the batch's rows and ``Xts`` their
    transpose; ``Hs`` (h, rows) <- its hidden activations; ``partials`` (nL, rows) <-
    ``W_2[share]^T H``; and ``penalties[t]`` <- its L2 penalty."""
    n0, n1, nL = spec[3], spec[4], spec[5]
    first, stop = _share_bounds(n1, shares, t)
    h = stop - first
    if l2 != 0.0:
        penalties[t] = _penalty_share(params, n0, h, nL)
    Xb = matrix(Xbs[t], 0, rows, n0)
    Xt = matrix(Xts[t], 0, n0, rows)
    H = matrix(Hs[t], 0, h, rows)
    # The rows, then their transpose from the copy (two threads gathering the same
    # rows of X, one pass writing both took 1.7 and 2.6-3.1 us, two passes 1.0 and 1.6).
    for i in range(rows):
        source = order[start + i]
        for p in range(n0):
            Xb[i, p] = X[source, p]
    for p in range(n0):
        for i in range(rows):
            Xt[p, i] = Xb[i, p]
    matmul(matrix(params, 0, h, n0), Xt, H)
    add_bias_and_activate(spec[0], H, params[n0 * h : n0 * h + h])
    matmul_tn(matrix(params, n0 * h + h, h, nL), H, matrix(partials[t], 0, nL, rows))


@kernel(parallel=True)
def train_epoch_split(
    spec, theta, X, Y, l2, order, batch_size, optimizer, hyper, state, step, Xb, Yb, grad,
    work, shares,
):  # fmt: skip
    _check_epoch(spec, theta, X, Y, order, batch_size, hyper, state, Xb, Yb, grad, work)
    if spec.shape[0] != 6 or shares < 1:
        raise ValueError("train_epoch_split takes one hidden layer and shares >= 1")
    n, n0 = X.shape
    n1, nL = spec[4], spec[5]
    dtype = theta.dtype
    width = n1 // shares + 1  # the widest share
    size = _share_size(n0, width, nL, 1, 0)  # room for any share's parameters
    # Whole cache lines a share, so that every share's rows start as aligned as the
    # first's: with 4885 entries, share 1's optimiser step took 2.2 us against 1.9.
    size += (-size) % 8
    # Per share, one row each: parameters, gradient, optimiser state, and flat scratch
    # for the batch (both ways round), the hidden activations, their delta and the output
    # part. The state has two rows for the parameters before a step, used in turn
    # (`_before`): a gradient found not finite after the step that used it still finds
    # the parameters from before the step before.
    params = np.empty((shares, size), dtype=dtype)
    grads = np.empty((shares, size), dtype=dtype)
    states = np.empty((shares, 4, size), dtype=dtype)
    Xbs = np.empty((shares, batch_size * n0), dtype=dtype)
    Xts = np.empty((shares, n0 * batch_size), dtype=dtype)
    Hs = np.empty((shares, width * batch_size), dtype=dtype)
    D1s = np.empty((shares, width * batch_size), dtype=dtype)
    partials = np.empty((shares, nL * batch_size), dtype=dtype)
    penalties = np.zeros(shares)
    finite = np.ones(shares, dtype=np.bool_)
    Zs = np.empty(nL * batch_size, dtype=dtype)
    deltas = np.empty(nL * batch_size, dtype=dtype)
    temps = np.empty((3 + nL) * batch_size, dtype=dtype)
    sizes = np.empty(shares, dtype=np.int64)
    # One parallel region a step: the backward pass of a batch, the step, and the
    # forward pass of the next batch. The output layer runs between regions, on this
    # thread. (Digits in batches of 32, timed inside the kernel: a split step took
    # 20.3 us, 19.2 of them in the region, where each share worked about 17.7; an empty
    # region costs 1.1 us on the 2-core machine.) The first region takes each share's
    # parameters out of theta, each thread its own.
    rows = min(batch_size, n)
    for t in prange(shares):
        first, stop = _share_bounds(n1, shares, t)
        sizes[t] = _share_size(n0, n1, nL, shares, t)
        _exchange_share(theta, params[t], n0, n1, nL, first, stop, t == 0, True)
        for row in range(3):
            target = _before(step) if row == 2 else row
            _exchange_share(state[row], states[t, target], n0, n1, nL, first, stop, t == 0, True)
        mine = params[t][: sizes[t]]
        _forward_share(spec, mine, l2, X, order, 0, rows, t, shares, Xbs, Xts, Hs,
                       partials, penalties)  # fmt: skip
    total = 0.0
    batch = 0
    start = 0
    diverged = -1
    while True:
        # The output layer: b_2 (kept by share 0, at the end of its parameters) plus the
        # shares' parts, in share order.
        Z = matrix(Zs, 0, nL, rows)
        delta = matrix(deltas, 0, nL, rows)
        b2 = params[0][sizes[0] - nL : sizes[0]]
        for k in range(nL):
            for i in range(rows):
                Z[k, i] = b2[k]
        for t in range(shares):
            part = matrix(partials[t], 0, nL, rows)
            for k in range(nL):
                for i in range(rows):
                    Z[k, i] += part[k, i]
        _gather(Y, order, start, start + rows, Yb)
        scale = dtype.type(1.0) / dtype.type(rows)
        value = (
            output_loss_and_delta(
                spec[1], spec[2], Z, Yb[:rows], delta, matrix(temps, 0, 3 + nL, rows), scale
            )
            / rows
        )
        if l2 != 0.0:
            value += 0.5 * l2 * penalties.sum()
        if not math.isfinite(value):
            diverged = batch
            break
        following = start + rows
        next_rows = min(batch_size, n - following) if following < n else 0
        for t in prange(shares):
            first, stop = _share_bounds(n1, shares, t)
            h = stop - first
            m = sizes[t]
            mine = params[t][:m]
            g = grads[t][:m]
            _backward_share(spec, mine, l2, matrix(Xbs[t], 0, rows, n0),
                            matrix(Hs[t], 0, h, rows), delta, g,
                            matrix(D1s[t], 0, h, rows), t == 0)  # fmt: skip
            finite[t] = all_finite(g)
            moments = states[t]
            _step(optimizer, hyper, mine, g, moments[0][:m], moments[1][:m],
                  moments[_before(step + 1)][:m], step + 1)  # fmt: skip
            if next_rows > 0:
                _forward_share(spec, mine, l2, X, order, following, next_rows, t, shares,
                               Xbs, Xts, Hs, partials, penalties)  # fmt: skip
        if not finite.all():
            diverged = batch  # the step just taken is undone below
            break
        step += 1
        total += value * rows
        batch += 1
        start = following
        rows = next_rows
        if rows == 0:
            break
    for t in prange(shares):  # shares write apart: their own columns, rows and entries
        first, stop = _share_bounds(n1, shares, t)
        if diverged >= 0 and step > 0:
            params[t][:] = states[t, _before(step)]
        _exchange_share(theta, params[t], n0, n1, nL, first, stop, t == 0, False)
        for row in range(3):
            source = _before(step) if row == 2 else row
            _exchange_share(state[row], states[t, source], n0, n1, nL, first, stop, t == 0, False)
    if diverged >= 0:
        return total / max(start, 1), step, diverged
    return total / n, step, -1
