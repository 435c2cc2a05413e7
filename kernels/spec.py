"""Arithmetic on ``spec``, the int64 array ``[hidden, output, loss, n0, n1, ..., nL]``
that describes an architecture to the kernels (``MLP.spec``).

theta holds, layer by layer, ``W_l.ravel()`` (shape ``(n_{l-1}, n_l)``) then ``b_l``.
"""

from fastbp.kernels._config import kernel


@kernel
def n_params(spec):
    """Length ``D`` of theta for the architecture ``spec``."""
    return n_params_before(spec, spec.shape[0] - 3)


@kernel
def check_network(spec, theta, X):
    """``ValueError`` unless theta's last axis holds ``n_params(spec)`` entries and X has
    ``spec[3]`` columns: the shape checks of every kernel called from ``@njit`` code."""
    if theta.shape[-1] != n_params(spec):
        raise ValueError("theta's last axis does not match spec (its n_params)")
    if X.shape[1] != spec[3]:
        raise ValueError("X must have spec[3] columns (the network's inputs)")


@kernel
def n_params_before(spec, layer):
    """Offset in theta of ``W_layer`` (layers counted from 1)."""
    total = 0
    for previous in range(1, layer):
        total += spec[2 + previous] * spec[3 + previous] + spec[3 + previous]
    return total
