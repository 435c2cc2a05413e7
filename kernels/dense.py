"""Fused forward pass, loss and backward pass of a dense network.

One call computes the loss and the whole gradient with no Python between the layers:
each layer is a matrix product (``linalg``) followed by one fused pass that adds the bias
and applies the activation; the loss and the output delta come from the last
pre-activation in one pass; the backward pass writes straight into the caller's gradient.

Inside, activations are stored feature-major, ``(width, n)``: samples run along the
innermost, contiguous axis, so every element-wise loop and every small matrix product
vectorises over the batch however narrow the layer (a 3-wide softmax included). Large
products go to BLAS, which does not mind the layout.

Signatures (callable from the user's own ``@njit`` code as well)::

    forward(spec, theta, X, out, check_finite, work) -> ok
    loss(spec, theta, X, Y, l2, check_finite, work) -> loss
    loss_and_grad(spec, theta, X, Y, l2, grad, check_finite, work) -> loss

take one network, ``theta`` of shape ``(D,)`` and ``grad`` of its shape, and ``out`` of
shape ``(n, nL)``. Their population forms take ``theta`` and ``grad`` of shape ``(P, D)``,
``out`` of shape ``(P, n, nL)`` and write the losses into ``values`` of shape ``(P,)``::

    forward_population(spec, theta, X, out, check_finite, work) -> ok
    loss_population(spec, theta, X, Y, l2, values, check_finite, work) -> ok
    loss_and_grad_population(spec, theta, X, Y, l2, values, grad, check_finite, work) -> ok

each with a ``*_parallel`` twin, compiled from the same source, that spreads the networks
over threads. ``spec`` is ``MLP.spec`` (int64 ``[hidden, output, loss, n0, ..., nL]``);
``X`` is ``(n, n0)``; ``Y`` is ``(n, nL)`` floats or ``(n,)`` int64 labels; ``work`` is a
1-D scratch array of the dtype with at least ``k * n * workspace_per_row(spec)`` entries,
where ``k`` networks run at once (``networks_at_once(P)`` for the parallel twins, else 1).
All arrays C-contiguous, of one float dtype.

An input is rejected, before any output is written, when a label is outside
``0..nL-1`` (always checked: labels index memory) or, with ``check_finite``, when theta,
X or Y holds NaN or inf: ``ok`` is then False and ``loss`` NaN.
"""

import math

import numba
from numba import prange, types
from numba.extending import overload

from fastbp.kernels._config import kernel, serial_and_parallel
from fastbp.kernels.activations import (
    exp_nonpositive,
    like,
    log,
    log1p,
    multiply_by_derivative,
    sigmoid,
    sigmoid_from,
    tanh,
)
from fastbp.kernels.checks import all_finite, all_in_range, c_contiguous
from fastbp.kernels.codes import CROSS_ENTROPY, RELU, SIGMOID, SOFTMAX, TANH
from fastbp.kernels.linalg import (
    BLAS_THREADED_WORK,
    matmul,
    matmul_nt,
    matmul_tn,
    matrix,
    sum_rows,
    uses_blas,
    widest_product,
)
from fastbp.kernels.spec import check_network, n_params_before

# --------------------------------------------------------------------------- layout


@kernel
def _widest(spec):
    widest = 0
    for at in range(4, spec.shape[0]):
        widest = max(widest, spec[at])
    return widest


@kernel
def workspace_per_row(spec):
    """Scratch entries one network needs per row of X (``MLP._work_per_row`` mirrors it).

    In order: the transposed inputs, every layer's activations, two delta buffers as wide
    as the widest layer, and three per-sample temporaries; the loss's temporaries (three
    rows and the transposed targets) take the second delta buffer as well.
    """
    total = 0
    for at in range(3, spec.shape[0]):
        total += spec[at]
    return total + 2 * _widest(spec) + 3


@kernel
def _layer_params(spec, theta, layer):
    """Views ``(W, b)`` of layer ``layer`` (0-based) inside a flat theta."""
    start = n_params_before(spec, layer + 1)
    n_in = spec[3 + layer]
    n_out = spec[4 + layer]
    w_end = start + n_in * n_out
    return matrix(theta, start, n_in, n_out), theta[w_end : w_end + n_out]


# --------------------------------------------------------------------------- checks


@kernel
def _inputs_ok(theta, X, check_finite):
    return not check_finite or (all_finite(theta) and all_finite(X))


def _targets_ok(Y, spec, check_finite):
    return True


@overload(_targets_ok, jit_options={"cache": True})
def _targets_ok_overload(Y, spec, check_finite):
    if isinstance(Y.dtype, types.Integer):

        def labels_in_range(Y, spec, check_finite):  # always: labels index memory
            return all_in_range(Y, 0, spec[spec.shape[0] - 1])

        return labels_in_range
    return lambda Y, spec, check_finite: not check_finite or all_finite(Y)


@kernel
def _check_network_call(spec, theta, X, work, networks_at_once):
    """The shape checks for calls from ``@njit`` code (the API has made them already)."""
    check_network(spec, theta, X)
    if work.shape[0] < networks_at_once * X.shape[0] * workspace_per_row(spec):
        raise ValueError("work is shorter than n * workspace_per_row(spec)")


def _check_targets(Y, spec, n):
    pass


@overload(_check_targets, jit_options={"cache": True})
def _check_targets_overload(Y, spec, n):
    if Y.ndim == 1:

        def labels(Y, spec, n):
            if Y.shape[0] != n:
                raise ValueError("Y must have one label per row of X")

        return labels

    def targets(Y, spec, n):
        if Y.shape[0] != n or Y.shape[1] != spec[spec.shape[0] - 1]:
            raise ValueError("Y must have shape (n, nL): rows of X, outputs of spec")

    return targets


# --------------------------------------------------------------------------- layers


@kernel
def add_bias_and_activate(code, Z, b):
    """``Z <- act(Z + b)`` in one pass over a feature-major ``Z`` (width, n), for every
    activation: a 64-128-10 network's hidden layer (256 rows, float64) took 25.6 us for
    tanh, 7.1 for relu, as a pass adding the bias and a pass activating; now 22.6, 2.3."""
    width, n = Z.shape
    zero = Z.dtype.type(0.0)
    for j in range(width):
        z = Z[j]
        bj = b[j]
        if code == SIGMOID:
            for i in range(n):
                z[i] = sigmoid(z[i] + bj)
        elif code == TANH:
            for i in range(n):
                z[i] = tanh(z[i] + bj)
        elif code == RELU:
            for i in range(n):
                z[i] = max(z[i] + bj, zero)
        else:  # IDENTITY
            for i in range(n):
                z[i] += bj


@kernel
def _first_layer(W, X, Xt, Z):
    """``Z <- W.T @ X.T``; for a small product, X is transposed into ``Xt`` first."""
    n, n0 = X.shape
    if uses_blas(n, n0, W.shape[1]):
        matmul_tn(W, X.T, Z)
    else:
        for i in range(n):
            for p in range(n0):
                Xt[p, i] = X[i, p]
        matmul_tn(W, Xt, Z)


@kernel
def _first_layer_grad(X, Xt, delta, gW):
    """``gW <- X.T @ delta.T``, reading the ``Xt`` that `_first_layer` left if small."""
    n, n0 = X.shape
    if uses_blas(n, n0, gW.shape[1]):
        matmul_nt(X.T, delta, gW)
    else:
        matmul_nt(Xt, delta, gW)


@kernel
def _forward_hidden(spec, theta, X, work):
    """Transposed inputs and hidden activations into ``work``; returns where they end."""
    n, n0 = X.shape
    n_layers = spec.shape[0] - 4
    Xt = matrix(work, 0, n0, n)
    offset = n0 * n
    for layer in range(n_layers):
        W, b = _layer_params(spec, theta, layer)
        n_in, width = W.shape
        Z = matrix(work, offset, width, n)
        if layer == 0:
            _first_layer(W, X, Xt, Z)
        else:
            matmul_tn(W, matrix(work, offset - n_in * n, n_in, n), Z)
        if layer == n_layers - 1:
            for j in range(width):
                bj = b[j]
                for i in range(n):
                    Z[j, i] += bj
            return offset
        add_bias_and_activate(spec[0], Z, b)
        offset += width * n
    return offset


# --------------------------------------------------------------------------- losses


@kernel
def _softmax_columns(Z, P, m, s):
    """``P[:, i] <- softmax(Z[:, i])`` for each sample ``i`` (``P`` may be ``Z``).

    Leaves each column's log-sum-exp, ``log Σ_k exp(Z[k, i])``, in ``s`` (``m`` is
    scratch). One division and one log per sample; every loop runs along the samples.
    """
    K, n = Z.shape
    for i in range(n):
        m[i] = Z[0, i]
        s[i] = 0.0
    for k in range(1, K):
        for i in range(n):
            m[i] = max(m[i], Z[k, i])
    for k in range(K):
        for i in range(n):
            e = exp_nonpositive(Z[k, i] - m[i])
            P[k, i] = e
            s[i] += e
    one = like(s[0], 1.0)
    for i in range(n):
        s[i] = one / s[i]
    for k in range(K):
        for i in range(n):
            P[k, i] *= s[i]
    for i in range(n):
        s[i] = m[i] - log(s[i])


def output_loss_and_delta(output, loss, Z, Y, delta, temps, scale):
    return 0.0


@overload(output_loss_and_delta, jit_options={"cache": True})
def _output_loss_and_delta_overload(output, loss, Z, Y, delta, temps, scale):
    """``Σ_i ℓ_i`` from the output pre-activation ``Z`` (nL, n); ``delta <- scale ∂ℓ/∂Z``.

    ``temps`` is (3 + nL, n) scratch. Integer ``Y`` holds labels (softmax outputs only).
    """
    if isinstance(Y.dtype, types.Integer):
        return lambda output, loss, Z, Y, delta, temps, scale: _labels_loss_and_delta(
            output, loss, Z, Y, delta, temps, scale
        )
    return lambda output, loss, Z, Y, delta, temps, scale: _targets_loss_and_delta(
        output, loss, Z, Y, delta, temps, scale
    )


@kernel
def _labels_loss_and_delta(output, loss, Z, Y, delta, temps, scale):
    K, n = Z.shape
    m, s, dot = temps[0], temps[1], temps[2]
    _softmax_columns(Z, delta, m, s)
    total = 0.0
    if loss == CROSS_ENTROPY:
        for i in range(n):
            total += s[i] - Z[Y[i], i]
        for k in range(K):
            for i in range(n):
                delta[k, i] *= scale
        for i in range(n):
            delta[Y[i], i] -= scale
        return total
    # softmax + mse against one-hot rows: r = P - onehot, delta = P (r - Σ_k r_k P_k)
    for i in range(n):
        s[i] = delta[Y[i], i]  # P at the label
        dot[i] = -s[i]
        total += 1.0 - 2.0 * s[i]
    for k in range(K):
        for i in range(n):
            p = delta[k, i]
            dot[i] += p * p
            total += p * p
    for k in range(K):
        for i in range(n):
            delta[k, i] = scale * delta[k, i] * (delta[k, i] - dot[i])
    for i in range(n):
        delta[Y[i], i] -= scale * s[i]
    return 0.5 * total


@kernel
def _targets_loss_and_delta(output, loss, Z, Y, delta, temps, scale):
    K, n = Z.shape
    m, s, extra = temps[0], temps[1], temps[2]
    # Y transposed, so that every loop below runs along contiguous rows: reading Y's
    # columns with a stride stopped them vectorising (7x slower for a sigmoid output).
    T = temps[3 : 3 + K]
    for k in range(K):
        for i in range(n):
            T[k, i] = Y[i, k]
    zero = like(scale, 0.0)
    one = like(scale, 1.0)
    total = 0.0
    if output == SOFTMAX:
        _softmax_columns(Z, delta, m, s)
        if loss == CROSS_ENTROPY:
            # ℓ_i = Σ_k Y_ik (s_i - Z_ki), s_i the log-sum-exp;  ∂ℓ_i/∂Z_ki = P_ki Σ_k Y_ik - Y_ik
            for i in range(n):
                extra[i] = zero
            for k in range(K):
                for i in range(n):
                    y = T[k, i]
                    # 0, not 0 * inf, for a class of weight 0 whose Z rounded far below
                    total += zero if y == zero else y * (s[i] - Z[k, i])
                    extra[i] += y
            for k in range(K):
                for i in range(n):
                    delta[k, i] = scale * (delta[k, i] * extra[i] - T[k, i])
            return total
        # mse: r = P - Y;  delta = P (r - Σ_k r_k P_k)
        for i in range(n):
            extra[i] = zero
        for k in range(K):
            for i in range(n):
                r = delta[k, i] - T[k, i]
                total += r * r
                extra[i] += r * delta[k, i]
        for k in range(K):
            for i in range(n):
                p = delta[k, i]
                delta[k, i] = scale * p * ((p - T[k, i]) - extra[i])
        return 0.5 * total
    if loss == CROSS_ENTROPY:  # sigmoid output: ℓ = softplus(z) - y z;  ∂ℓ/∂z = σ(z) - y
        for k in range(K):
            for i in range(n):
                z = Z[k, i]
                y = T[k, i]
                e = exp_nonpositive(-abs(z))  # one exp for both softplus and σ
                total += max(z, zero) + log1p(e) - y * z
                delta[k, i] = scale * (sigmoid_from(z, e) - y)
        return total
    if output == SIGMOID:
        for k in range(K):
            for i in range(n):
                a = sigmoid(Z[k, i])
                r = a - T[k, i]
                total += r * r
                delta[k, i] = scale * r * a * (one - a)
        return 0.5 * total
    for k in range(K):
        for i in range(n):
            r = Z[k, i] - T[k, i]
            total += r * r
            delta[k, i] = scale * r
    return 0.5 * total


# --------------------------------------------------------------------------- one network


@kernel
def _hidden_end(spec, n):
    """Where the transposed inputs and hidden activations end in ``work``."""
    end = 0
    for at in range(3, spec.shape[0] - 1):
        end += n * spec[at]
    return end


@kernel
def _network_loss(spec, theta, X, Y, l2, work):
    """Loss of one network (theta of shape (D,)).

    Leaves in ``work``, after the transposed inputs and hidden activations: the output
    pre-activation ``Z_L``; ``∂L/∂Z_L`` (the output delta, already divided by n); then
    the loss's temporaries (three per-sample rows and the transposed targets), over the
    spare buffer that the backward pass reuses.
    """
    n = X.shape[0]
    n_out = spec[spec.shape[0] - 1]
    widest = _widest(spec)
    offset = _forward_hidden(spec, theta, X, work)
    Z = matrix(work, offset, n_out, n)
    delta_at = offset + n_out * n
    delta = matrix(work, delta_at, n_out, n)
    # The loss's temporaries take the spare delta buffer too, unused until the backward
    # pass: 3 + n_out rows fit in widest + 3.
    temps = matrix(work, delta_at + widest * n, 3 + n_out, n)
    scale = like(work[0], 1.0) / like(work[0], n)  # stays float32 for float32
    total = output_loss_and_delta(spec[1], spec[2], Z, Y, delta, temps, scale) / n
    if l2 != 0.0:
        penalty = 0.0
        for layer in range(spec.shape[0] - 4):
            W, _ = _layer_params(spec, theta, layer)
            for p in range(W.shape[0]):
                for j in range(W.shape[1]):
                    penalty += W[p, j] * W[p, j]
        total += 0.5 * l2 * penalty
    return total


@kernel
def network_loss_and_grad(spec, theta, X, Y, l2, grad, work):
    """Loss of one network (theta of shape (D,)) and its gradient into ``grad``.

    ``work`` needs ``n * workspace_per_row(spec)`` entries.
    """
    total = _network_loss(spec, theta, X, Y, l2, work)
    n, n0 = X.shape
    n_layers = spec.shape[0] - 4
    n_out = spec[spec.shape[0] - 1]
    end = _hidden_end(spec, n)
    delta_at = end + n_out * n
    spare_at = delta_at + _widest(spec) * n
    delta = matrix(work, delta_at, n_out, n)
    Xt = matrix(work, 0, n0, n)
    l2_ = like(work[0], l2)
    for layer in range(n_layers - 1, -1, -1):
        W, _ = _layer_params(spec, theta, layer)
        gW, gb = _layer_params(spec, grad, layer)
        n_in, width = W.shape
        if layer == 0:
            _first_layer_grad(X, Xt, delta, gW)
        else:
            matmul_nt(matrix(work, end - n_in * n, n_in, n), delta, gW)
        if l2 != 0.0:
            for p in range(n_in):
                for j in range(width):
                    gW[p, j] += l2_ * W[p, j]
        sum_rows(delta, gb)
        if layer > 0:
            A_in = matrix(work, end - n_in * n, n_in, n)
            previous = matrix(work, spare_at, n_in, n)
            matmul(W, delta, previous)
            multiply_by_derivative(spec[0], A_in, previous)
            spare_at, delta_at = delta_at, spare_at
            delta = previous
            end -= n_in * n
    return total


@kernel
def _write_outputs(spec, work, offset, out):
    """``out`` (n, nL) <- the output activation of ``Z_L``, which starts at ``offset`` in
    ``work`` (after the hidden activations) and is overwritten; its per-sample
    temporaries go after the two delta buffers."""
    n, n_out = out.shape
    Z = matrix(work, offset, n_out, n)
    temps = matrix(work, offset + (n_out + 2 * _widest(spec)) * n, 3, n)
    if spec[1] == SOFTMAX:
        _softmax_columns(Z, Z, temps[0], temps[1])
    elif spec[1] == SIGMOID:
        for k in range(n_out):
            for i in range(n):
                Z[k, i] = sigmoid(Z[k, i])
    for i in range(n):
        for k in range(n_out):
            out[i, k] = Z[k, i]


@kernel
def network_forward(spec, theta, X, out, work):
    """Outputs of one network into ``out`` (n, nL)."""
    _write_outputs(spec, work, _forward_hidden(spec, theta, X, work), out)


@kernel
def network_loss_and_outputs(spec, theta, X, Y, l2, out, work):
    """Loss of one network, as `_network_loss`, and its outputs into ``out`` (n, nL),
    from one forward pass: the loss leaves ``Z_L`` as it found it."""
    total = _network_loss(spec, theta, X, Y, l2, work)
    _write_outputs(spec, work, _hidden_end(spec, X.shape[0]), out)
    return total


# --------------------------------------------------------------------------- drivers


def networks_at_once(P):
    """How many networks of a population the ``*_parallel`` kernels run at once."""
    return min(P, numba.get_num_threads())


def networks_on_threads(sizes, n):
    """Whether a population's networks should run on threads, for ``sizes``
    ``[n0, ..., nL]`` and ``n`` rows (plain Python): only when every layer's product stays
    on BLAS's calling thread. Otherwise one network at a time (the serial kernels), each
    product on BLAS's threads: 8 networks 64-128-10 on 256 rows took 8-10 ms spread over
    threads, whose products woke BLAS's threads too, against 1.9-2.3 ms so.
    """
    return n * widest_product(sizes) <= BLAS_THREADED_WORK


@kernel
def forward(spec, theta, X, out, check_finite, work):
    """Outputs of the network ``theta`` (D,) into ``out`` (n, nL); False if rejected."""
    c_contiguous(spec, theta, X, out, work)
    _check_network_call(spec, theta, X, work, 1)
    if out.shape[0] != X.shape[0] or out.shape[1] != spec[spec.shape[0] - 1]:
        raise ValueError("out must have shape (n, nL)")
    if not _inputs_ok(theta, X, check_finite):
        return False
    if X.shape[0] > 0:
        network_forward(spec, theta, X, out, work)
    return True


@kernel
def loss(spec, theta, X, Y, l2, check_finite, work):
    """Loss of the network ``theta`` (D,); NaN if an input was rejected."""
    c_contiguous(spec, theta, X, Y, work)
    _check_network_call(spec, theta, X, work, 1)
    _check_targets(Y, spec, X.shape[0])
    if not _inputs_ok(theta, X, check_finite) or not _targets_ok(Y, spec, check_finite):
        return math.nan
    return _network_loss(spec, theta, X, Y, l2, work)


@kernel
def loss_and_grad(spec, theta, X, Y, l2, grad, check_finite, work):
    """Loss of the network ``theta`` (D,), gradient into ``grad``; NaN if rejected."""
    c_contiguous(spec, theta, X, Y, grad, work)
    _check_network_call(spec, theta, X, work, 1)
    _check_targets(Y, spec, X.shape[0])
    if grad.shape != theta.shape:
        raise ValueError("grad must have the shape of theta")
    if not _inputs_ok(theta, X, check_finite) or not _targets_ok(Y, spec, check_finite):
        return math.nan
    return network_loss_and_grad(spec, theta, X, Y, l2, grad, work)


@kernel
def _population_schedule(spec, theta, X, work):
    """``(P, size, chunks)``: networks, scratch per network, and how many networks run at
    once (as many as the caller sized ``work`` for; 0 when there are no rows)."""
    P = theta.shape[0]
    size = X.shape[0] * workspace_per_row(spec)
    chunks = min(P, work.shape[0] // size) if size > 0 else 0
    return P, size, chunks


def _forward_population(spec, theta, X, out, check_finite, work):
    c_contiguous(spec, theta, X, out, work)
    _check_network_call(spec, theta, X, work, 1)
    if out.shape[0] != theta.shape[0] or out.shape[1] != X.shape[0]:
        raise ValueError("out must have shape (P, n, nL)")
    if out.shape[2] != spec[spec.shape[0] - 1]:
        raise ValueError("out must have shape (P, n, nL)")
    if not _inputs_ok(theta, X, check_finite):
        return False
    P, size, chunks = _population_schedule(spec, theta, X, work)
    for c in prange(chunks):
        scratch = work[c * size : (c + 1) * size]
        for p in range(c * P // chunks, (c + 1) * P // chunks):
            network_forward(spec, theta[p], X, out[p], scratch)
    return True


def _loss_population(spec, theta, X, Y, l2, values, check_finite, work):
    c_contiguous(spec, theta, X, Y, values, work)
    _check_network_call(spec, theta, X, work, 1)
    _check_targets(Y, spec, X.shape[0])
    if values.shape[0] != theta.shape[0]:
        raise ValueError("values must have one entry per network")
    if not _inputs_ok(theta, X, check_finite) or not _targets_ok(Y, spec, check_finite):
        return False
    P, size, chunks = _population_schedule(spec, theta, X, work)
    for c in prange(chunks):
        scratch = work[c * size : (c + 1) * size]
        for p in range(c * P // chunks, (c + 1) * P // chunks):
            values[p] = _network_loss(spec, theta[p], X, Y, l2, scratch)
    return True


def _loss_and_grad_population(spec, theta, X, Y, l2, values, grad, check_finite, work):
    c_contiguous(spec, theta, X, Y, values, grad, work)
    _check_network_call(spec, theta, X, work, 1)
    _check_targets(Y, spec, X.shape[0])
    if values.shape[0] != theta.shape[0] or grad.shape != theta.shape:
        raise ValueError("values must have one entry per network, grad theta's shape")
    if not _inputs_ok(theta, X, check_finite) or not _targets_ok(Y, spec, check_finite):
        return False
    P, size, chunks = _population_schedule(spec, theta, X, work)
    for c in prange(chunks):
        scratch = work[c * size : (c + 1) * size]
        for p in range(c * P // chunks, (c + 1) * P // chunks):
            values[p] = network_loss_and_grad(spec, theta[p], X, Y, l2, grad[p], scratch)
    return True


forward_population, forward_population_parallel = serial_and_parallel(_forward_population)
loss_population, loss_population_parallel = serial_and_parallel(_loss_population)
loss_and_grad_population, loss_and_grad_population_parallel = serial_and_parallel(
    _loss_and_grad_population
)
