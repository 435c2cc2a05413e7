"""Public softmax, batched softmax Jacobians and vector-Jacobian products.

Each function validates ``Z`` (and ``G``), settles the dtype, allocates the result and
hands it to a kernel in ``fastbp.kernels.softmax`` (or to ``fastbp.reference``).
"""

from __future__ import annotations

from fastbp import _backend, _validate, reference


def _logits(Z, check_finite, checks, *others):
    Z = _validate.array("Z", Z)
    if Z.ndim not in (1, 2) or Z.shape[-1] == 0:
        raise ValueError(f"Z must have shape (B, K) or (K,) with K >= 1; got {Z.shape}")
    dtype = _validate.float_dtype(Z, *others)
    Z = _validate.as_float(Z, dtype)
    if check_finite:
        _validate.finite("Z", Z, checks)
    return Z


def softmax(Z, *, backend=None, check_finite=True, out=None):
    """Softmax of each row, stable for any finite logits.

    Wraps the kernel ``fastbp.kernels.softmax.softmax``.

    Parameters
    ----------
    Z : ndarray of shape (B, K) or (K,)
    backend : {"numba", "numpy"} or None
    check_finite : bool
    out : ndarray of the shape of Z, optional

    Returns
    -------
    S : ndarray of the shape of Z, each row summing to 1
    """
    kernels = _backend.kernels(backend, "softmax")
    Z = _logits(Z, check_finite, _backend.kernels(backend, "checks"))
    result = _validate.out("out", out, Z.shape, Z.dtype, apart=dict(Z=Z))
    if kernels is None:
        result[...] = reference.softmax(Z)
    else:
        kernels.softmax(Z.reshape(-1, Z.shape[-1]), result.reshape(-1, Z.shape[-1]))
    return result


def softmax_jacobian(Z, *, backend=None, check_finite=True, out=None):
    """Jacobian of the softmax of each row, ``J[b, i, j] = s_i (δ_ij - s_j)``.

    Wraps the kernel ``fastbp.kernels.softmax.softmax_jacobian``.

    Parameters
    ----------
    Z : ndarray of shape (B, K) or (K,)
    backend : {"numba", "numpy"} or None
    check_finite : bool
    out : ndarray of shape (B, K, K) or (K, K), optional

    Returns
    -------
    J : ndarray of shape (B, K, K), or (K, K) for a 1-D Z
    """
    kernels = _backend.kernels(backend, "softmax")
    Z = _logits(Z, check_finite, _backend.kernels(backend, "checks"))
    K = Z.shape[-1]
    result = _validate.out("out", out, Z.shape + (K,), Z.dtype, label="J", apart=dict(Z=Z))
    if kernels is None:
        result[...] = reference.softmax_jacobian(Z)
    else:
        kernels.softmax_jacobian(Z.reshape(-1, K), result.reshape(-1, K, K))
    return result


def softmax_vjp(Z, G, *, backend=None, check_finite=True, out=None):
    """Vector-Jacobian products ``G[b] @ J[b]`` of the softmax, never forming ``J``.

    Wraps the kernel ``fastbp.kernels.softmax.softmax_vjp``.

    Parameters
    ----------
    Z : ndarray of shape (B, K) or (K,)
        Logits.
    G : ndarray of the shape of Z
        Gradients with respect to the softmax output.
    backend : {"numba", "numpy"} or None
    check_finite : bool
    out : ndarray of the shape of Z, optional

    Returns
    -------
    V : ndarray of the shape of Z, the gradients with respect to the logits
    """
    kernels = _backend.kernels(backend, "softmax")
    checks = _backend.kernels(backend, "checks")
    G = _validate.array("G", G)
    Z = _logits(Z, check_finite, checks, G)
    if G.shape != Z.shape:
        raise ValueError(f"G must have the shape of Z, {Z.shape}; got {G.shape}")
    G = _validate.as_float(G, Z.dtype)
    if check_finite:
        _validate.finite("G", G, checks)
    result = _validate.out("out", out, Z.shape, Z.dtype, apart=dict(Z=Z, G=G))
    if kernels is None:
        result[...] = reference.softmax_vjp(Z, G)
    else:
        K = Z.shape[-1]
        kernels.softmax_vjp(Z.reshape(-1, K), G.reshape(-1, K), result.reshape(-1, K))
    return result
