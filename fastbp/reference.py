"""NumPy ground truth for every public fastbp function.

Each function here is named like the public function it checks and takes the same
positional arguments (``reference.loss_and_grad`` <-> ``fastbp.loss_and_grad``), but none
of the keywords that choose how a call runs (``backend``, ``check_finite``, ``out``);
``gradcheck`` needs no twin, being NumPy already. The code is plain
vectorised NumPy, written to be read: a loop over layers, a loop over the networks of a
population, and nothing cleverer. It is the fallback backend (``backend="numpy"``) and
the baseline of every speed claim.

These functions trust their arguments: the public API validates shapes, dtypes and
finiteness first (``fastbp.loss_and_grad(..., backend="numpy")`` is this code behind
those checks).

Notation: ``Z_l = A_{l-1} @ W_l + b_l``, ``A_l = act(Z_l)``,
``A_0 = X`` of shape ``(n, n0)``; the loss is

.. math:: L = \\frac{1}{n} \\sum_i \\ell_i + \\frac{\\lambda}{2} \\sum_l \\|W_l\\|^2 .
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ACTIVATIONS",
    "DERIVATIVES",
    "forward",
    "forward_and_jacobian",
    "input_jacobian",
    "loss",
    "loss_and_grad",
    "sobolev_loss",
    "softmax",
    "softmax_jacobian",
    "softmax_vjp",
    "train",
    "train_epoch",
]


# --------------------------------------------------------------------------- activations


def sigmoid(Z):
    """Logistic function ``1 / (1 + exp(-z))``, computed without overflow."""
    e = np.exp(-np.abs(Z))
    return np.where(Z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(Z.dtype, copy=False)


def relu(Z):
    return np.maximum(Z, 0)


def identity(Z):
    return Z


def softmax(Z):
    """Softmax along the last axis, stable for any finite logits.

    .. math:: s_k = \\exp(z_k - m) / \\sum_j \\exp(z_j - m), \\quad m = \\max_j z_j

    Parameters
    ----------
    Z : ndarray of shape (B, K) or (K,)

    Returns
    -------
    S : ndarray of the shape of Z
    """
    E = np.exp(Z - Z.max(axis=-1, keepdims=True))
    return E / E.sum(axis=-1, keepdims=True)


ACTIVATIONS = {
    "identity": identity,
    "sigmoid": sigmoid,
    "tanh": np.tanh,
    "relu": relu,
    "softmax": softmax,
}

# Element-wise derivatives dA/dZ, written in terms of the activation's output A.
# (softmax is not element-wise: its backward pass is `softmax_vjp`.)
DERIVATIVES = {
    "identity": lambda A: np.ones_like(A),
    "sigmoid": lambda A: A * (1 - A),
    "tanh": lambda A: 1 - A * A,
    "relu": lambda A: (A > 0).astype(A.dtype),
}


# The softmax's derivatives, s_i (δ_ij - s_j), hold 1 - s_i. Where an s_q is near 1 (a
# saturated row: logits [1, 2, 28] give 1 - s_q = 1.9e-12), 1 - s_q computed from s_q
# keeps only the digits that rounding s_q left, a relative error of 1e-4 or so in that
# row's derivatives. So at an entry above a half (a row has one at most), 1 - s_q is
# the sum of the row's other entries, and the q-th row of ``J @ M`` is
# ``s_q Σ_i s_i (M_q - M_i)``, whose terms are all as small as the result.


def softmax_jacobian(Z):
    """Jacobians of the softmax of each row, ``J[b, i, j] = s_i (δ_ij - s_j)``.

    Parameters
    ----------
    Z : ndarray of shape (B, K) or (K,)

    Returns
    -------
    J : ndarray of shape (B, K, K) or (K, K)
    """
    S = softmax(Z)
    K = S.shape[-1]
    J = S[..., :, None] * (np.eye(K, dtype=S.dtype) - S[..., None, :])
    # J[q, q] = s_q (1 - s_q) at the s_q above a half, its 1 - s_q the others' sum.
    # (A row sum as a product: NumPy's sum along a short last axis took 3 ms of 100 000
    # rows of 10, the product 1.1, and the reference's time is the speed baseline.)
    above = S > 0.5
    rest = np.where(above, 0, S) @ np.ones(K, dtype=S.dtype)
    diagonal = J.reshape(J.shape[:-2] + (K * K,))[..., :: K + 1]  # a view into J
    np.copyto(diagonal, S * rest[..., None], where=above)
    return J


def _softmax_times(S, M):
    """``J @ M`` for each row's softmax Jacobian ``J`` (at the probabilities ``S``
    (..., K)) and ``M`` (..., K, c): ``s_k (M_k - Σ_i s_i M_i)``, and at the s_q above a
    half, ``s_q Σ_i s_i (M_q - M_i)`` (see above)."""
    above = (S > 0.5)[..., None]
    M_q = np.where(above, M, 0).sum(axis=-2, keepdims=True)  # 0 where no s is above
    inner = np.einsum("...k,...kc->...c", S, M)[..., None, :]
    JM_q = np.einsum("...k,...kc->...c", S, M_q - M)[..., None, :]
    return S[..., :, None] * np.where(above, JM_q, M - inner)


def softmax_vjp(Z, G):
    """Vector-Jacobian products ``G[b] @ J[b]`` of the softmax, without forming ``J``.

    .. math:: (g^T J)_j = s_j \\left(g_j - \\sum_i g_i s_i\\right)

    Parameters
    ----------
    Z : ndarray of shape (B, K) or (K,)
        Logits.
    G : ndarray of the shape of Z
        Upstream gradients (with respect to the softmax output).

    Returns
    -------
    V : ndarray of the shape of Z
    """
    # J is symmetric: G @ J = J @ G.
    return _softmax_times(softmax(Z), G[..., None])[..., 0]


# --------------------------------------------------------------------------- helpers


def _over_population(single, theta, *args):
    """Apply ``single(theta_p, *args)`` to each row of a 2-D theta and stack the results."""
    if theta.ndim == 1:
        return single(theta, *args)
    results = [single(t, *args) for t in theta]
    if isinstance(results[0], tuple):
        return tuple(np.stack(parts) for parts in zip(*results))
    return np.stack(results)


def _hidden_and_output(mlp):
    return [mlp.hidden] * (mlp.n_layers - 1) + [mlp.output]


def _forward_pass(mlp, theta, X):
    """Activations ``[A_0, ..., A_L]`` and the last pre-activation ``Z_L``."""
    activations = [X]
    Z = X
    for (W, b), name in zip(mlp.unpack(theta), _hidden_and_output(mlp)):
        Z = activations[-1] @ W + b
        activations.append(ACTIVATIONS[name](Z))
    return activations, Z


def _one_hot_if_labels(mlp, Y, dtype):
    if Y.ndim == 1:
        onehot = np.zeros((Y.shape[0], mlp.n_outputs), dtype=dtype)
        onehot[np.arange(Y.shape[0]), Y] = 1
        return onehot
    return Y


def _cross_entropy_far_apart(Z, Y):
    """Rows' ``-Σ_k Y_k log P_k`` where some ``z - max(z)`` rounds to -inf (finite logits
    over 1.8e308 apart): a class of weight 0 adds 0 there, not 0 * inf. Kept apart from
    the common case, which NumPy may warn about there: an errstate and a select on every
    call cost the reference's 4-16-3 gradient 13 % of its time, the baseline of the
    speed-ups."""
    with np.errstate(over="ignore", invalid="ignore"):
        S, log_sum = _shifted_logits(Z)
        return np.where(Y == 0, 0, Y * (log_sum - S)).sum(axis=1)


def _shifted_logits(Z):
    """``(Z - max(Z), log Σ exp(Z - max(Z)))`` per row: ``log P = S - log_sum``."""
    S = Z - Z.max(axis=1, keepdims=True)
    return S, np.log(np.exp(S).sum(axis=1, keepdims=True))


def _row_losses_and_output_delta(mlp, Z, A, Y):
    """Per-row losses ``ℓ_i`` and ``∂ℓ_i/∂Z_L`` (not yet divided by n)."""
    if mlp.loss == "cross_entropy" and mlp.output == "softmax":
        # -Σ_k Y_k log P_k with log P = Z - logsumexp(Z), so no log of a rounded zero.
        S, log_sum = _shifted_logits(Z)
        row_loss = (Y * (log_sum - S)).sum(axis=1)
        delta = A * Y.sum(axis=1, keepdims=True) - Y
    elif mlp.loss == "cross_entropy":
        # Binary cross-entropy from the logits: softplus(z) - y z.
        softplus = np.maximum(Z, 0) + np.log1p(np.exp(-np.abs(Z)))
        row_loss = (softplus - Y * Z).sum(axis=1)
        delta = A - Y
    else:
        residual = A - Y
        row_loss = 0.5 * (residual * residual).sum(axis=1)
        if mlp.output == "softmax":
            delta = softmax_vjp(Z, residual)
        else:
            delta = residual * DERIVATIVES[mlp.output](A)
    return row_loss, delta


def _weight_penalty(mlp, theta, l2):
    """``(l2/2) Σ ‖W_l‖²``; exactly 0 without ``l2``, where ``W * W`` of large but finite
    weights would overflow and make ``0 * inf`` a NaN."""
    if l2 == 0:
        return 0.0
    return 0.5 * l2 * sum((W * W).sum() for W, _ in mlp.unpack(theta))


# --------------------------------------------------------------------------- networks


def forward(mlp, theta, X):
    """Network outputs ``A_L``.

    Parameters
    ----------
    mlp : MLP
    theta : ndarray of shape (D,) or (P, D)
    X : ndarray of shape (n, n0)

    Returns
    -------
    A : ndarray of shape (n, nL), or (P, n, nL) for a population theta
    """
    return _over_population(lambda t: _forward_pass(mlp, t, X)[0][-1], theta)


def loss(mlp, theta, X, Y, l2=0.0):
    """Mean loss over the rows plus the L2 penalty on the weights.

    Parameters
    ----------
    mlp : MLP
    theta : ndarray of shape (D,) or (P, D)
    X : ndarray of shape (n, n0)
    Y : ndarray of shape (n, nL), or integer labels of shape (n,) for a softmax output
    l2 : float

    Returns
    -------
    loss : scalar, or ndarray of shape (P,) for a population theta
    """
    return loss_and_grad(mlp, theta, X, Y, l2, _need_grad=False)


def loss_and_grad(mlp, theta, X, Y, l2=0.0, _need_grad=True):
    """Loss and its gradient with respect to theta, by backpropagation.

    Parameters
    ----------
    mlp : MLP
    theta : ndarray of shape (D,) or (P, D)
    X : ndarray of shape (n, n0)
    Y : ndarray of shape (n, nL), or integer labels of shape (n,) for a softmax output
    l2 : float

    Returns
    -------
    loss : scalar, or ndarray of shape (P,)
    grad : ndarray of the shape of theta (the flat layout of `MLP.unpack`)
    """

    def single(t):
        activations, Z = _forward_pass(mlp, t, X)
        targets = _one_hot_if_labels(mlp, Y, activations[-1].dtype)
        row_loss, delta = _row_losses_and_output_delta(mlp, Z, activations[-1], targets)
        penalty = _weight_penalty(mlp, t, l2)
        value = row_loss.mean() + penalty
        if value != value and mlp.loss == "cross_entropy" and mlp.output == "softmax":
            value = _cross_entropy_far_apart(Z, targets).mean() + penalty
        if not _need_grad:
            return value
        grad = np.zeros_like(t)
        delta = delta / X.shape[0]
        params = mlp.unpack(t)
        grads = mlp.unpack(grad)
        for layer in range(mlp.n_layers - 1, -1, -1):
            W = params[layer][0]
            grads[layer][0][...] = activations[layer].T @ delta + l2 * W
            grads[layer][1][...] = delta.sum(axis=0)
            if layer > 0:
                delta = (delta @ W.T) * DERIVATIVES[mlp.hidden](activations[layer])
        return value, grad

    result = _over_population(single, theta)
    dtype = theta.dtype
    if _need_grad:
        value, grad = result
        return _as_dtype(value, dtype), grad
    return _as_dtype(result, dtype)


def _as_dtype(value, dtype):
    return np.asarray(value, dtype=dtype)[()]


# --------------------------------------------------------------------------- Jacobians


def forward_and_jacobian(mlp, theta, X):
    """Outputs and input Jacobians, ``J[i, k, j] = ∂A_L[i, k] / ∂X[i, j]``.

    Forward mode: the Jacobian of each layer's activations with respect to the inputs
    is carried through the layers, ``J_l = act'(Z_l) ⊙ (W_l^T J_{l-1})``.

    Parameters
    ----------
    mlp : MLP
    theta : ndarray of shape (D,) or (P, D)
    X : ndarray of shape (n, n0)

    Returns
    -------
    A : ndarray of shape (n, nL), or (P, n, nL)
    J : ndarray of shape (n, nL, n0), or (P, n, nL, n0)
    """

    def single(t):
        A = X
        n0 = mlp.n_inputs
        J = np.broadcast_to(np.eye(n0, dtype=X.dtype), (X.shape[0], n0, n0))
        for (W, b), name in zip(mlp.unpack(t), _hidden_and_output(mlp)):
            A = ACTIVATIONS[name](A @ W + b)
            M = np.matmul(W.T, J)
            if name == "softmax":
                J = _softmax_times(A, M)
            else:
                J = DERIVATIVES[name](A)[:, :, None] * M
        return A, np.ascontiguousarray(J)

    return _over_population(single, theta)


def input_jacobian(mlp, theta, X):
    """Input Jacobians ``J[i, k, j] = ∂A_L[i, k] / ∂X[i, j]``.

    Parameters
    ----------
    mlp : MLP
    theta : ndarray of shape (D,) or (P, D)
    X : ndarray of shape (n, n0)

    Returns
    -------
    J : ndarray of shape (n, nL, n0), or (P, n, nL, n0) for a population theta
    """
    return forward_and_jacobian(mlp, theta, X)[1]


def sobolev_loss(mlp, theta, X, T, which):
    """Mean squared misfit to values and partial derivatives (a Sobolev objective).

    Row ``i`` predicts ``A_L(X_i)`` where ``which[i] == -1`` and ``∂A_L/∂x_j (X_i)``
    where ``which[i] == j >= 0``; the loss is the mean over rows of
    ``½ ‖prediction_i - T_i‖²``.

    Parameters
    ----------
    mlp : MLP
    theta : ndarray of shape (D,) or (P, D)
    X : ndarray of shape (n, n0)
    T : ndarray of shape (n, nL)
    which : integer ndarray of shape (n,), entries in ``[-1, n0)``

    Returns
    -------
    loss : scalar, or ndarray of shape (P,) for a population theta
    """

    def single(t):
        A, J = forward_and_jacobian(mlp, t, X)
        prediction = A.copy()
        rows = np.flatnonzero(which >= 0)
        prediction[rows] = J[rows, :, which[rows]]
        residual = prediction - T
        return 0.5 * (residual * residual).sum(axis=1).mean()

    return _as_dtype(_over_population(single, theta), theta.dtype)


# --------------------------------------------------------------------------- training


def train_epoch(mlp, theta, X, Y, l2, order, batch_size, optimizer, state, step):
    """One epoch of minibatch training, updating ``theta`` in place.

    The NumPy twin of ``fastbp.kernels.training.train_epoch`` (same batches, same
    steps): returns ``(mean_loss, step, diverged_at)``, with ``state`` (3, D) holding the
    optimiser's moments and the parameters before the last step.
    """
    from fastbp.training import SGD  # the optimisers' module imports this one

    n = X.shape[0]
    total = 0.0
    for batch, start in enumerate(range(0, n, batch_size)):
        rows = order[start : start + batch_size]
        # A diverging loss overflows on its way to inf or NaN: what the test below
        # reports, as the kernel does, instead of NumPy's warnings.
        with np.errstate(over="ignore", invalid="ignore"):
            value, grad = loss_and_grad(mlp, theta, X[rows], Y[rows], l2)
        if not (np.isfinite(value) and np.isfinite(grad).all()):
            if step > 0:
                theta[...] = state[2]
            return total / max(start, 1), step, batch
        state[2] = theta
        step += 1
        if isinstance(optimizer, SGD):
            if optimizer.momentum == 0:
                theta -= optimizer.lr * grad
            else:
                state[0] = optimizer.momentum * state[0] + grad
                direction = grad + optimizer.momentum * state[0] if optimizer.nesterov else state[0]
                theta -= optimizer.lr * direction
        else:  # Adam
            b1, b2 = optimizer.beta1, optimizer.beta2
            state[0] = b1 * state[0] + (1 - b1) * grad
            state[1] = b2 * state[1] + (1 - b2) * grad * grad
            m_hat = state[0] / (1 - b1**step)
            v_hat = state[1] / (1 - b2**step)
            theta -= optimizer.lr * m_hat / (np.sqrt(v_hat) + optimizer.eps)
        total += float(value) * len(rows)
    return total / n, step, -1


def train(mlp, theta, X, Y, **options):
    """`fastbp.train` on the NumPy backend: every epoch through `train_epoch` above."""
    from fastbp.training import train as train_with_backend

    return train_with_backend(mlp, theta, X, Y, **{**options, "backend": "numpy"})
