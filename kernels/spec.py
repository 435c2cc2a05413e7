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
def n_params_before(spec, layer):
    """Offset in theta of ``W_layer`` (layers counted from 1)."""
    total = 0
    for previous in range(1, layer):
        total += spec[2 + previous] * spec[3 + previous] + spec[3 + previous]
    return total
