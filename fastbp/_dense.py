"""Public forward, loss and gradient of a dense network: checks, then a kernel.

Each function validates its arguments, settles the dtype, allocates the results and
hands them to a kernel in ``fastbp.kernels.dense`` (or to ``fastbp.reference`` on the
NumPy backend).
"""

from __future__ import annotations

import numpy as np

from fastbp import _backend, _validate, reference


def _loss_args(mlp, theta, X, Y, l2, check_finite):
    """Checked ``(theta, X, Y, is_labels, l2)`` in their common float dtype."""
    _validate.mlp(mlp)
    theta = _validate.theta(mlp, theta)
    X = _validate.inputs(mlp, X)
    _validate.nonempty("X", X)
    Y, is_labels = _validate.targets(mlp, Y, X.shape[0])
    l2 = _validate.scalar("l2", l2)
    dtype = _validate.float_dtype(theta, X) if is_labels else _validate.float_dtype(theta, X, Y)
    theta = _validate.as_float(theta, dtype)
    X = _validate.as_float(X, dtype)
    if is_labels:
        _validate.labels_in_range(mlp, Y)
        Y = np.ascontiguousarray(Y, dtype=np.int64)
    else:
        Y = _validate.as_float(Y, dtype)
    if check_finite:
        _validate.finite("theta", theta)
        _validate.finite("X", X)
        if not is_labels:
            _validate.finite("Y", Y)
    return theta, X, Y, is_labels, l2


def forward(mlp, theta, X, *, backend=None, check_finite=True, out=None):
    """Network outputs ``A_L`` for every row of X.

    Wraps the kernel ``fastbp.kernels.dense.forward``.

    Parameters
    ----------
    mlp : MLP
    theta : ndarray of shape (D,) or (P, D)
        Flat parameters; a 2-D theta is a population of P networks.
    X : ndarray of shape (n, n0)
    backend : {"numba", "numpy"} or None
    check_finite : bool
        Raise ValueError on NaN or inf in theta or X.
    out : ndarray of shape (n, nL) or (P, n, nL), optional
        Where to write the result.

    Returns
    -------
    A : ndarray of shape (n, nL), or (P, n, nL) for a population theta
    """
    theta, X = _validate.network_args(mlp, theta, X, check_finite)
    shape = theta.shape[:-1] + (X.shape[0], mlp.n_outputs)
    result = _validate.out("out", out, shape, theta.dtype)
    kernels = _backend.kernels(backend, "dense")
    if kernels is None:
        result[...] = reference.forward(mlp, theta, X)
    else:
        kernels.forward(mlp._spec, theta, X, result)
    return result


def loss(mlp, theta, X, Y, l2=0.0, *, backend=None, check_finite=True):
    """Mean loss over the rows plus the L2 penalty ``(l2/2) Σ ‖W_l‖²``.

    Wraps the kernel ``fastbp.kernels.dense.loss``.

    Parameters
    ----------
    mlp : MLP
    theta : ndarray of shape (D,) or (P, D)
    X : ndarray of shape (n, n0)
    Y : ndarray of shape (n, nL), or integer labels of shape (n,) for a softmax output
    l2 : float
    backend : {"numba", "numpy"} or None
    check_finite : bool

    Returns
    -------
    loss : float32 or float64 scalar, or ndarray of shape (P,) for a population theta
    """
    theta, X, Y, is_labels, l2 = _loss_args(mlp, theta, X, Y, l2, check_finite)
    kernels = _backend.kernels(backend, "dense")
    if kernels is None:
        return reference.loss(mlp, theta, X, Y, l2)
    values = np.empty(theta.shape[:-1] or (1,), dtype=theta.dtype)
    kernels.loss(mlp._spec, theta, X, Y, l2, values)
    return values if theta.ndim == 2 else values[0]


def loss_and_grad(mlp, theta, X, Y, l2=0.0, *, backend=None, check_finite=True, out=None):
    """Loss and its gradient with respect to theta, in one fused pass.

    Wraps the kernel ``fastbp.kernels.dense.loss_and_grad``.

    Parameters
    ----------
    mlp : MLP
    theta : ndarray of shape (D,) or (P, D)
    X : ndarray of shape (n, n0)
    Y : ndarray of shape (n, nL), or integer labels of shape (n,) for a softmax output
    l2 : float
    backend : {"numba", "numpy"} or None
    check_finite : bool
    out : ndarray of the shape of theta, optional
        Where to write the gradient.

    Returns
    -------
    loss : float32 or float64 scalar, or ndarray of shape (P,)
    grad : ndarray of the shape of theta, in the flat layout of `MLP.unpack`
    """
    theta, X, Y, is_labels, l2 = _loss_args(mlp, theta, X, Y, l2, check_finite)
    grad = _validate.out("out", out, theta.shape, theta.dtype)
    kernels = _backend.kernels(backend, "dense")
    if kernels is None:
        value, grad[...] = reference.loss_and_grad(mlp, theta, X, Y, l2)
        return value, grad
    values = np.empty(theta.shape[:-1] or (1,), dtype=theta.dtype)
    kernels.loss_and_grad(mlp._spec, theta, X, Y, l2, values, grad)
    return (values if theta.ndim == 2 else values[0]), grad
