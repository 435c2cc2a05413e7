"""Matrix products for the kernels: explicit loops for small ones, BLAS for large ones.

A BLAS call costs a few hundred nanoseconds before it does any arithmetic, which is the
whole budget of a tiny network's layer; below ``BLAS_MIN_WORK`` multiply-adds the loops
here (innermost loop contiguous, so LLVM vectorises it) are faster. Above it, ``np.dot``
on contiguous operands calls the BLAS that SciPy ships.

All arrays are C-contiguous and of one float dtype; the result is written into ``C``.
"""

import numpy as np
from numba import types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

from fastbp.kernels._config import kernel

# Measured here: with 1 << 14 rather than 1 << 16, a digits training epoch (batches of 32
# through 64-128-10) took 2.5 ms instead of 2.8 ms; tiny networks stay on the loops.
BLAS_MIN_WORK = 1 << 14


@kernel
def uses_blas(n, k, m):
    """Whether a product of ``n * k * m`` multiply-adds goes to BLAS."""
    return n * k * m >= BLAS_MIN_WORK


@kernel
def matmul(A, B, C):
    """``C <- A @ B`` for ``A (n, k)``, ``B (k, m)``, ``C (n, m)``."""
    n, k = A.shape
    m = B.shape[1]
    if uses_blas(n, k, m):
        np.dot(A, B, C)
        return
    zero = C.dtype.type(0.0)
    for i in range(n):
        for j in range(m):
            C[i, j] = zero
        for p in range(k):
            a = A[i, p]
            for j in range(m):
                C[i, j] += a * B[p, j]


@kernel
def matmul_tn(A, B, C):
    """``C <- A.T @ B`` for ``A (n, k)``, ``B (n, m)``, ``C (k, m)``."""
    n, k = A.shape
    m = B.shape[1]
    if uses_blas(n, k, m):
        np.dot(A.T, B, C)
        return
    zero = C.dtype.type(0.0)
    for p in range(k):
        for j in range(m):
            C[p, j] = zero
    for i in range(n):
        for p in range(k):
            a = A[i, p]
            for j in range(m):
                C[p, j] += a * B[i, j]


@kernel
def matmul_nt(A, B, C):
    """``C <- A @ B.T`` for ``A (n, m)``, ``B (k, m)``, ``C (n, k)``."""
    n, m = A.shape
    k = B.shape[0]
    if uses_blas(n, k, m):
        np.dot(A, B.T, C)
        return
    zero = C.dtype.type(0.0)
    for i in range(n):
        for p in range(k):
            total = zero
            for j in range(m):
                total += A[i, j] * B[p, j]
            C[i, p] = total


@intrinsic
def matrix(typingctx, flat, start, rows, cols):
    """``flat[start : start + rows * cols]`` as a C-contiguous ``(rows, cols)`` view.

    What ``flat[start:stop].reshape((rows, cols))`` gives, without its checks (about
    ten nanoseconds each, a kernel for a tiny network makes dozens): the caller makes
    sure the block lies inside ``flat``, a 1-D C-contiguous array.
    """
    if not (isinstance(flat, types.Array) and flat.ndim == 1 and flat.layout == "C"):
        return None
    if not all(isinstance(arg, types.Integer) for arg in (start, rows, cols)):
        return None
    result = flat.copy(ndim=2, layout="C")

    def codegen(context, builder, signature, args):
        flat_type = signature.args[0]
        source = make_array(flat_type)(context, builder, args[0])
        start, rows, cols = (
            context.cast(builder, value, kind, types.intp)
            for value, kind in zip(args[1:], signature.args[1:])
        )
        view = make_array(signature.return_type)(context, builder)
        itemsize = source.itemsize
        populate_array(
            view,
            data=builder.gep(source.data, [start]),
            shape=cgutils.pack_array(builder, [rows, cols]),
            strides=cgutils.pack_array(builder, [builder.mul(cols, itemsize), itemsize]),
            itemsize=itemsize,
            meminfo=source.meminfo,
            parent=source.parent,
        )
        return impl_ret_borrowed(context, builder, signature.return_type, view._getvalue())

    return result(flat, start, rows, cols), codegen
