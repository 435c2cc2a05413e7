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

A saturated row keeps its derivatives' digits. Where ``s_q`` is near 1 (logits
[1, 2, 28] give ``1 - s_q = 1.9e-12``), ``1 - s_q`` computed from ``s_q`` keeps only the
digits that rounding ``s_q`` left, a relative error of 1e-4 or so. So at an entry above
a half (a row has one at most), both kernels take ``1 - s_q`` as the sum of the other
entries: ``J_qq = s_q Σ_{i≠q} s_i`` and :math:`(g^T J)_q = s_q \\sum_i s_i (g_q - g_i)`,
whose terms are all as small as the result. Selects, not branches: which entry it is
is data, and finding it by branches doubled the time of ``softmax_vjp``.

Each raises ``ValueError`` when the shapes disagree, before writing anything.
"""

import numpy as np
from numba import prange

from fastbp.kernels._config import kernel
from fastbp.kernels.activations import exp_nonpositive
from fastbp.kernels.checks import c_contiguous

ROWS_PER_BLOCK = 512
# Below this many output elements one thread finishes before a second one has started.
PARALLEL_MIN_ELEMENTS = 1 << 15


@kernel
def _softmax_block(Z, start, stop, out, at):
    """``out[at + r] <- softmax(Z[start + r])`` for the rows ``start..stop-1``.

    Three passes: the shifted logits ``Z - max`` of each row, one ``exp`` over the whole
    block as a flat array, then each row's scaling. ``exp`` row by row ran its vector
    loop over 8 of 10 entries and the scalar remainder over the other 2, which cost as
    much again (``softmax`` of 100,000 x 10 took 4.1 ms so, 1.6 ms flat, one thread).
    """
    K = Z.shape[1]
    for r in range(stop - start):
        b = start + r
        m = Z[b, 0]
        for k in range(1, K):
            m = max(m, Z[b, k])
        for k in range(K):
            out[at + r, k] = Z[b, k] - m
    flat = out.reshape(-1)[at * K : (at + stop - start) * K]
    for i in range(flat.shape[0]):
        flat[i] = exp_nonpositive(flat[i])
    for r in range(at, at + stop - start):
        total = Z.dtype.type(0.0)
        for k in range(K):
            total += out[r, k]
        inverse = Z.dtype.type(1.0) / total
        for k in range(K):
            out[r, k] *= inverse


@kernel
def _softmax_rows(Z, out, start, stop):
    _softmax_block(Z, start, stop, out, start)


@kernel
def _softmax_jacobian_rows(Z, out, start, stop):
    K = Z.shape[1]
    zero = Z.dtype.type(0.0)
    half = Z.dtype.type(0.5)
    s = np.empty((stop - start, K), dtype=Z.dtype)
    _softmax_block(Z, start, stop, s, 0)
    for r in range(stop - start):
        b = start + r
        rest = zero  # the entries but one above a half (see the module docstring)
        for j in range(K):
            rest += zero if s[r, j] > half else s[r, j]
        for i in range(K):
            si = s[r, i]
            for j in range(K):
                out[b, i, j] = -si * s[r, j]
            out[b, i, i] = si * rest if si > half else out[b, i, i] + si


@kernel
def _softmax_vjp_rows(Z, G, out, start, stop):
    K = Z.shape[1]
    _softmax_block(Z, start, stop, out, start)
    zero = Z.dtype.type(0.0)
    half = Z.dtype.type(0.5)
    for b in range(start, stop):
        dot = zero
        g_q = zero  # g at the s above a half, if any (see the module docstring)
        for k in range(K):
            dot += G[b, k] * out[b, k]
            g_q += G[b, k] if out[b, k] > half else zero
        d_q = zero
        for k in range(K):
            d_q += out[b, k] * (g_q - G[b, k])
        for k in range(K):
            s_k = out[b, k]
            out[b, k] = s_k * (d_q if s_k > half else G[b, k] - dot)


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
    c_contiguous(Z, out)
    if out.shape != Z.shape:
        raise ValueError("out must have the shape of Z, (B, K)")
    if Z.size >= PARALLEL_MIN_ELEMENTS:
        softmax_parallel(Z, out)
    else:
        _softmax_rows(Z, out, 0, Z.shape[0])


@kernel
def softmax_jacobian(Z, out):
    """``out[b, i, j] <- s_i (δ_ij - s_j)`` with ``s = softmax(Z[b])``; out (B, K, K)."""
    c_contiguous(Z, out)
    if out.shape != (Z.shape[0], Z.shape[1], Z.shape[1]):
        raise ValueError("out must have shape (B, K, K) for Z of shape (B, K)")
    if out.size >= PARALLEL_MIN_ELEMENTS:
        softmax_jacobian_parallel(Z, out)
    else:
        _softmax_jacobian_rows(Z, out, 0, Z.shape[0])


@kernel
def softmax_vjp(Z, G, out):
    """``out[b] <- G[b] @ J[b]``, J the softmax Jacobian at ``Z[b]``, without forming J."""
    c_contiguous(Z, G, out)
    if G.shape != Z.shape or out.shape != Z.shape:
        raise ValueError("G and out must have the shape of Z, (B, K)")
    if Z.size >= PARALLEL_MIN_ELEMENTS:
        softmax_vjp_parallel(Z, G, out)
    else:
        _softmax_vjp_rows(Z, G, out, 0, Z.shape[0])
