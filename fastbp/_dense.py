"""Public forward, loss and gradient of a dense network: checks, then a kernel.

Each function validates its arguments, settles the dtype, allocates the results and
hands them to a kernel in ``fastbp.kernels.dense`` (or to ``fastbp.reference`` on the
NumPy backend).
"""

from __future__ import annotations

import math

import numpy as np

from fastbp import _backend, _threads, _validate, _workspace, reference


def _population_kernel(kernels, name, mlp, theta, n):
    """``(kernel, work, call)``: the population kernel ``name`` for ``n`` rows and its
    scratch. The ``_parallel`` twin, with a network's worth of scratch per thread, for
    two networks or more whose products stay off BLAS's threads (``networks_on_threads``)
    while `_threads` sees the cores free; else the serial one. ``call.done()`` after the
    kernel (`_threads.ONE_THREAD` when the serial kernel is the only choice).
    """
    call = _threads.ONE_THREAD
    kernel, at_once = getattr(kernels, name), 1
    if theta.shape[0] > 1 and kernels.networks_on_threads(mlp._sizes, n):
        call = _threads.Call(name, theta.shape[0] * n * mlp._n_params)
        if call.threads:
            kernel = getattr(kernels, name + "_parallel")
            at_once = kernels.networks_at_once(theta.shape[0])
    return kernel, _workspace.scratch(theta.dtype, at_once * n * mlp._work_per_row), call


def _loss_args(mlp, theta, X, Y, l2):
    """Checked ``(theta, X, Y, l2)`` in their common float dtype (shapes only).

    The full checks: `loss` and `loss_and_grad` come here when their inlined fast check
    (``l2`` a float, `_validate.kernel_ready`) turns the arguments down; `train` always.
    """
    if type(l2) is not float or not 0.0 <= l2 < math.inf:
        l2 = _validate.scalar("l2", l2)
    _validate.mlp(mlp)
    theta = _validate.theta(mlp, theta)
    X = _validate.inputs(mlp, X)
    _validate.nonempty("X", X)
    Y, is_labels = _validate.targets(mlp, Y, X.shape[0])
    dtype = _validate.float_dtype(theta, X) if is_labels else _validate.float_dtype(theta, X, Y)
    theta = _validate.as_float(theta, dtype)
    X = _validate.as_float(X, dtype)
    Y = _validate.as_labels(Y) if is_labels else _validate.as_float(Y, dtype)
    return theta, X, Y, l2


def _check_values(mlp, theta, X, Y, check_finite, checks=None):
    """The O(n) checks: finiteness (if asked) and the label range. Raises ValueError.

    The kernels make the same checks themselves; the NumPy backend calls this first,
    and the numba backend calls it to name the input a kernel rejected. ``checks`` as
    for `_validate.finite`.
    """
    if Y is not None and Y.dtype.kind in "iu":
        _validate.labels_in_range(mlp, Y, checks)
    if check_finite:
        _validate.finite("theta", theta, checks)
        _validate.finite("X", X, checks)
        if Y is not None:
            _validate.finite("Y", Y, checks)


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
    kernels = _backend.kernels(backend, "dense")
    theta, X = _validate.network_args(mlp, theta, X, check_finite=False)
    shape = theta.shape[:-1] + (X.shape[0], mlp.n_outputs)
    result = _validate.out("out", out, shape, theta.dtype, apart=dict(theta=theta, X=X))
    if kernels is None:
        _check_values(mlp, theta, X, None, check_finite)
        result[...] = reference.forward(mlp, theta, X)
        return result
    if theta.ndim == 1:
        work = _workspace.scratch(theta.dtype, X.shape[0] * mlp._work_per_row)
        ok = kernels.forward(mlp._spec, theta, X, result, check_finite, work)
    else:
        kernel, work, call = _population_kernel(
            kernels, "forward_population", mlp, theta, X.shape[0]
        )
        ok = kernel(mlp._spec, theta, X, result, check_finite, work)
        call.done()
    if not ok:
        _check_values(mlp, theta, X, None, check_finite)
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
    kernels = _backend.kernels(backend, "dense")
    # The fast check inlined (a function call costs 0.1 us here).
    l2_ready = type(l2) is float and 0.0 <= l2 < math.inf
    if not (l2_ready and _validate.kernel_ready(mlp, theta, X, Y)):
        theta, X, Y, l2 = _loss_args(mlp, theta, X, Y, l2)
    if kernels is None:
        _check_values(mlp, theta, X, Y, check_finite)
        return reference.loss(mlp, theta, X, Y, l2)
    if theta.ndim == 1:
        work = _workspace.scratch(theta.dtype, X.shape[0] * mlp._work_per_row)
        value = kernels.loss(mlp._spec, theta, X, Y, l2, check_finite, work)
        if value != value:  # NaN: rejected input, or NaN data passed unchecked
            _check_values(mlp, theta, X, Y, check_finite)
        return theta.dtype.type(value)
    values = np.empty(theta.shape[0], dtype=theta.dtype)
    kernel, work, call = _population_kernel(kernels, "loss_population", mlp, theta, X.shape[0])
    ok = kernel(mlp._spec, theta, X, Y, l2, values, check_finite, work)
    call.done()
    if not ok:
        _check_values(mlp, theta, X, Y, check_finite)
    return values


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
    kernels = _backend.kernels(backend, "dense")
    # The fast check inlined (a function call costs 0.1 us here).
    l2_ready = type(l2) is float and 0.0 <= l2 < math.inf
    if not (l2_ready and _validate.kernel_ready(mlp, theta, X, Y)):
        theta, X, Y, l2 = _loss_args(mlp, theta, X, Y, l2)
    if out is None:  # np.empty inlined for the small ones (the pool's call costs 0.2 us)
        if theta.nbytes < _workspace.POOL_MIN_BYTES:
            grad = np.empty(theta.shape, theta.dtype)
        else:
            grad = _workspace.result_empty(theta.shape, theta.dtype)
    else:
        grad = _validate.out(
            "out", out, theta.shape, theta.dtype, apart=dict(theta=theta, X=X, Y=Y)
        )
    if kernels is None:
        _check_values(mlp, theta, X, Y, check_finite)
        value, grad[...] = reference.loss_and_grad(mlp, theta, X, Y, l2)
        return value, grad
    if theta.ndim == 1:
        work = _workspace.scratch(theta.dtype, X.shape[0] * mlp._work_per_row)
        value = kernels.loss_and_grad(mlp._spec, theta, X, Y, l2, grad, check_finite, work)
        if value != value:  # NaN: rejected input, or NaN data passed unchecked
            _check_values(mlp, theta, X, Y, check_finite)
        return theta.dtype.type(value), grad
    values = np.empty(theta.shape[0], dtype=theta.dtype)
    kernel, work, call = _population_kernel(
        kernels, "loss_and_grad_population", mlp, theta, X.shape[0]
    )
    ok = kernel(mlp._spec, theta, X, Y, l2, values, grad, check_finite, work)
    call.done()
    if not ok:
        _check_values(mlp, theta, X, Y, check_finite)
    return values, grad
