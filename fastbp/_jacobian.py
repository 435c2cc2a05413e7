"""Public input Jacobians of a network and the Sobolev (values + derivatives) loss.

Each function validates its arguments, settles the dtype, allocates the results and
hands them to a kernel in ``fastbp.kernels.jacobian`` (or to ``fastbp.reference``).
The kernels see every theta as a population ``(P, D)``; a 1-D theta is a population
of one, reshaped without a copy.
"""

from __future__ import annotations

import numpy as np

from fastbp import _backend, _threads, _validate, reference

_NO_VALUES = {}


def _jacobians(kernels, mlp, theta, X, A, J):
    """Run the Jacobian kernel, serially or on every thread, in the cheaper mode.

    The kernels see every theta as a population: a 1-D theta gets a leading axis of
    length 1, and so do its results (views). ``A`` None: the outputs are not wanted.
    """
    thetas = theta
    if theta.ndim == 1:
        thetas, J = theta[None], J[None]
        A = None if A is None else A[None]
    if A is None:
        A = _NO_VALUES.get(J.dtype)
        if A is None:
            A = _NO_VALUES[J.dtype] = np.empty((0, 0, 0), dtype=J.dtype)
    n0, nL = mlp._sizes[0], mlp._sizes[-1]
    mode, n_slabs = kernels.jacobian_slabs(n0, nL)
    _, n_items, parallel = kernels.schedule(
        n0, nL, mlp._n_params, thetas.shape[0], X.shape[0], n_slabs
    )
    call = _threads.Call("jacobian", J.size * mlp._n_params) if parallel else _threads.ONE_THREAD
    if call.threads:
        kernels.jacobian_items_parallel(mlp._spec, thetas, X, A, J, mode, n_items)
    else:
        kernels.jacobian_items(mlp._spec, thetas, X, A, J, mode, 0, n_items)
    call.done()


def forward_and_jacobian(mlp, theta, X, *, backend=None, check_finite=True, out=None):
    """Outputs and input Jacobians, ``J[i, k, j] = ∂A_L[i, k] / ∂X[i, j]``.

    Runs the kernels ``fastbp.kernels.jacobian.jacobian_items`` (or ``_parallel``).

    Parameters
    ----------
    mlp : MLP
    theta : ndarray of shape (D,) or (P, D)
    X : ndarray of shape (n, n0)
    backend : {"numba", "numpy"} or None
    check_finite : bool
    out : tuple (A, J) of ndarrays, optional
        Where to write the results, of the shapes below.

    Returns
    -------
    A : ndarray of shape (n, nL), or (P, n, nL) for a population theta
    J : ndarray of shape (n, nL, n0), or (P, n, nL, n0)
    """
    kernels = _backend.kernels(backend, "jacobian")
    checks = _backend.kernels(backend, "checks")
    theta, X = _validate.network_args(mlp, theta, X, check_finite, checks)
    lead = theta.shape[:-1] + (X.shape[0], mlp._sizes[-1])
    if out is None:
        out_A = out_J = None
    elif isinstance(out, (tuple, list)) and len(out) == 2:
        out_A, out_J = out
    else:
        got = type(out).__name__
        if isinstance(out, (tuple, list)):
            got += f" of length {len(out)}"
        elif isinstance(out, np.ndarray):
            got += f" of shape {out.shape}"
        raise TypeError(f"out must be a pair (A, J) of arrays; got {got}")
    inputs = dict(theta=theta, X=X)
    A = _validate.out("out[0]", out_A, lead, theta.dtype, apart=inputs)
    J = _validate.out(
        "out[1]", out_J, lead + (mlp._sizes[0],), theta.dtype, label="J",
        apart={**inputs, "out[0]": A},
    )  # fmt: skip
    if kernels is None:
        A[...], J[...] = reference.forward_and_jacobian(mlp, theta, X)
    else:
        _jacobians(kernels, mlp, theta, X, A, J)
    return A, J


def input_jacobian(mlp, theta, X, *, backend=None, check_finite=True, out=None):
    """Input Jacobians ``J[i, k, j] = ∂A_L[i, k] / ∂X[i, j]``.

    Runs the kernels ``fastbp.kernels.jacobian.jacobian_items`` (or ``_parallel``).

    Parameters
    ----------
    mlp : MLP
    theta : ndarray of shape (D,) or (P, D)
    X : ndarray of shape (n, n0)
    backend : {"numba", "numpy"} or None
    check_finite : bool
    out : ndarray of shape (n, nL, n0) or (P, n, nL, n0), optional

    Returns
    -------
    J : ndarray of shape (n, nL, n0), or (P, n, nL, n0) for a population theta
    """
    kernels = _backend.kernels(backend, "jacobian")
    checks = _backend.kernels(backend, "checks")
    theta, X = _validate.network_args(mlp, theta, X, check_finite, checks)
    lead = theta.shape[:-1] + (X.shape[0], mlp._sizes[-1])
    J = _validate.out(
        "out", out, lead + (mlp._sizes[0],), theta.dtype, label="J", apart=dict(theta=theta, X=X)
    )
    if kernels is None:
        J[...] = reference.input_jacobian(mlp, theta, X)
    else:
        _jacobians(kernels, mlp, theta, X, None, J)
    return J


def sobolev_loss(mlp, theta, X, T, which, *, backend=None, check_finite=True, out=None):
    """Mean squared misfit to values at some rows and partial derivatives at others.

    Row ``i`` predicts the output ``A_L(X_i)`` where ``which[i] == -1`` and the partial
    derivative ``∂A_L/∂x_j (X_i)`` where ``which[i] == j >= 0``:

    .. math:: L = \\frac{1}{n} \\sum_i \\tfrac12 \\| \\mathrm{prediction}_i - T_i \\|^2

    For a population theta ``(P, D)`` the result has shape ``(P,)``: the objective a
    particle-swarm optimiser expects. Runs ``kernels.jacobian.sobolev_items``.

    Parameters
    ----------
    mlp : MLP
    theta : ndarray of shape (D,) or (P, D)
    X : ndarray of shape (n, n0)
    T : ndarray of shape (n, nL)
        Target values or target partial derivatives, row by row.
    which : integer ndarray of shape (n,)
        ``-1`` for a value row, ``j`` in ``[0, n0)`` for a row of ``∂/∂x_j``.
    backend : {"numba", "numpy"} or None
    check_finite : bool
    out : ndarray of shape (P,), optional (population theta only)

    Returns
    -------
    loss : scalar, or ndarray of shape (P,) for a population theta
    """
    kernels = _backend.kernels(backend, "jacobian")
    checks = _backend.kernels(backend, "checks")
    if _validate.kernel_ready(mlp, theta, X, T) and T.ndim == 2:
        dtype = theta.dtype  # the common call: nothing to convert
    else:
        theta, X, T = _sobolev_arrays(mlp, theta, X, T)
        dtype = theta.dtype
    n, n0 = X.shape
    which = _which(which, n, n0, checks)
    if check_finite:
        _validate.finite("theta", theta, checks)
        _validate.finite("X", X, checks)
        _validate.finite("T", T, checks)
    if theta.ndim == 1 and out is not None:
        raise ValueError("out is only for a population theta of shape (P, D)")
    inputs = dict(theta=theta, X=X, T=T, which=which)
    values = _validate.out("out", out, theta.shape[:-1] or (1,), dtype, apart=inputs)
    if kernels is None:
        values[...] = reference.sobolev_loss(mlp, theta, X, T, which)
    else:
        # One pass per block of points: values and the one Jacobian column each row
        # needs, summed per (network, block); J itself is never formed. In each block
        # the derivative rows go first, and only they carry a tangent.
        thetas = theta if theta.ndim == 2 else theta[None]
        P, nL = thetas.shape[0], mlp._sizes[-1]
        _, n_items, parallel = kernels.schedule(n0, nL, mlp._n_params, P, n, 2)
        partial = np.empty((P, n_items // P), dtype=dtype)
        call = _threads.Call("sobolev", thetas.size * n) if parallel else _threads.ONE_THREAD
        args = (mlp._spec, thetas, X, T, which, partial)
        if call.threads:
            kernels.sobolev_items_parallel(*args, n_items)
        else:
            kernels.sobolev_items(*args, 0, n_items)
        call.done()
        kernels.sobolev_mean(partial, n, values)
    return values if theta.ndim == 2 else values[0]


def _sobolev_arrays(mlp, theta, X, T):
    """Checked ``(theta, X, T)`` of `sobolev_loss` in their common float dtype."""
    _validate.mlp(mlp)
    theta = _validate.theta(mlp, theta)
    X = _validate.inputs(mlp, X)
    n, nL = X.shape[0], mlp.n_outputs
    _validate.nonempty("X", X)
    T = _validate.array("T", T)
    if T.shape != (n, nL):
        raise ValueError(f"T must have shape ({n}, {nL}) (rows of X, outputs); got {T.shape}")
    dtype = _validate.float_dtype(theta, X, T)
    return tuple(_validate.as_float(a, dtype) for a in (theta, X, T))


def _which(which, n, n0, checks):
    """``which`` checked: C-contiguous int64 of shape (n,), entries in -1..n0-1."""
    if type(which) is not np.ndarray or which.dtype is not _validate.INT64 or which.shape != (n,):
        which = _validate.array("which", which)
        if which.dtype.kind not in "iu" or which.shape != (n,):
            error = TypeError if which.dtype.kind not in "iu" else ValueError
            raise error(
                f"which must be an integer array of shape ({n},); got {which.dtype} {which.shape}"
            )
        # Range first: converting to int64 would wrap unsigned values of 2**63 and more.
        bad = _validate.outside(which, -1, n0)
    else:
        bad = _validate.outside(which, -1, n0, checks)
    which = np.ascontiguousarray(which, dtype=np.int64)
    if bad is not None:
        raise ValueError(f"which holds {bad}: entries must be -1 (a value) or 0..{n0 - 1}")
    return which
