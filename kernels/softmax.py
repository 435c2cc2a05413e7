"""Row-wise softmax, batched softmax Jacobians and softmax vector-Jacobian products.

Every kernel writes into a buffer that the caller owns and runs in parallel over blocks
of rows once the batch is large enough to pay for starting the threads. Each is stable
for any finite logits: the row maximum is subtracted before ``exp``.

Signatures (callable from the user's own ``@njit`` code; every array C-contiguous,
``Z``, ``G`` and the outputs of one float dtype, float32 or float64)::

    softmax(Z, out)              # Z (B, K) -> out (B, K)
    softmax_jacobian(Z, out)     # Z (B, K) -> out (B, K, K), out[b, i, j] = s_i (δ_ij - s_j)
    softmax_vjp(Z, G, out)       # Z, G (B, K) -> out (B, K), out[b] = G[b] @ J[b]

``softmax_vjp`` never forms ``J``: :math:`(g^T J)_j = s_j (g_j - \\sum_i g_i s_i)`.
"""

import numpy as np
from numba import prange

from fastbp.kernels._config import kernel
from fastbp.kernels.activations import exp

ROWS_PER_BLOCK = 512
# Below this many output elements one thread finishes before a second one has started.
PARALLEL_MIN_ELEMENTS = 1 << 15


@kernel
def _softmax_into(Z, b, out, row):
    """``out[row] <- softmax(Z[b])``. Indexes rows in place: a row view per row costs
    more than the arithmetic of a short row."""
    K = Z.shape[1]
    m = Z[b, 0]
    for k in range(1, K):
        m = max(m, Z[b, k])
    total = Z.dtype.type(0.0)
    for k in range(K):
        e = exp(Z[b, k] - m)
        out[row, k] = e
        total += e
    inverse = Z.dtype.type(1.0) / total
    for k in range(K):
        out[row, k] *= inverse


@kernel
def _softmax_rows(Z, out, start, stop):
    for b in range(start, stop):
        _softmax_into(Z, b, out, b)


@kernel
def _softmax_jacobian_rows(Z, out, start, stop):
    K = Z.shape[1]
    s = np.empty((1, K), dtype=Z.dtype)
    for b in range(start, stop):
        _softmax_into(Z, b, s, 0)
        for i in range(K):
            si = s[0, i]
            for j in range(K):
                out[b, i, j] = -si * s[0, j]
            out[b, i, i] += si


@kernel
def _softmax_vjp_rows(Z, G, out, start, stop):
    K = Z.shape[1]
    for b in range(start, stop):
        _softmax_into(Z, b, out, b)
        dot = Z.dtype.type(0.0)
        for k in range(K):
            dot += G[b, k] * out[b, k]
        for k in range(K):
            out[b, k] *= G[b, k] - dot


# The row loops are plain kernels; the parallel variants hand blocks of rows to them
# (a prange body calling a compiled function keeps that function's vectorised code).
@kernel(parallel=True)
def softmax_parallel(Z, out):
    B = Z.shape[0]
    for block in prange((B + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK):
        _softmax_rows(Z, out, block * ROWS_PER_BLOCK, min(B, (block + 1) * ROWS_PER_BLOCK))


@kernel(parallel=True)
def softmax_jacobian_parallel(Z, out):
    B = Z.shape[0]
    for block in prange((B + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK):
        start = block * ROWS_PER_BLOCK
        _softmax_jacobian_rows(Z, out, start, min(B, start + ROWS_PER_BLOCK))


@kernel(parallel=True)
def softmax_vjp_parallel(Z, G, out):
    B = Z.shape[0]
    for block in prange((B + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK):
        start = block * ROWS_PER_BLOCK
        _softmax_vjp_rows(Z, G, out, start, min(B, start + ROWS_PER_BLOCK))


@kernel
def softmax(Z, out):
    """``out[b] <- softmax(Z[b])`` for ``Z, out`` of shape (B, K)."""
    if Z.size >= PARALLEL_MIN_ELEMENTS:
        softmax_parallel(Z, out)
    else:
        _softmax_rows(Z, out, 0, Z.shape[0])


@kernel
def softmax_jacobian(Z, out):
    """``out[b, i, j] <- s_i (δ_ij - s_j)`` with ``s = softmax(Z[b])``; out (B, K, K)."""
    if out.size >= PARALLEL_MIN_ELEMENTS:
        softmax_jacobian_parallel(Z, out)
    else:
        _softmax_jacobian_rows(Z, out, 0, Z.shape[0])


@kernel
def softmax_vjp(Z, G, out):
    """``out[b] <- G[b] @ J[b]``, J the softmax Jacobian at ``Z[b]``, without forming J."""
    if Z.size >= PARALLEL_MIN_ELEMENTS:
        softmax_vjp_parallel(Z, G, out)
    else:
        _softmax_vjp_rows(Z, G, out, 0, Z.shape[0])
