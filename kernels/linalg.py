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
# OpenBLAS runs a product of more multiply-adds than this on threads of its own. Kernels
# that spread work over Numba's threads keep their products below it: the two kinds of
# threads then fight over the cores (see `dense.networks_on_threads`).
BLAS_THREADED_WORK = 1 << 18


def widest_product(sizes):
    """Multiply-adds per row of a network's largest layer product, for ``sizes``
    ``[n0, ..., nL]`` (plain Python): ``rows * widest_product(sizes)`` against
    ``BLAS_THREADED_WORK`` tells whether BLAS would start its own threads."""
    return max(a * b for a, b in zip(sizes[:-1], sizes[1:]))


@kernel
def uses_blas(n, k, m):
    """Whether a product of ``n * k * m`` multiply-adds goes to BLAS."""
    return n * k * m >= BLAS_MIN_WORK


# Constant arguments between kernels: a literal such as ``True`` would make Numba compile
# the callee once more, specialised on that value.
NO, YES = np.bool_(False), np.bool_(True)


@kernel
def product(A, transposed, H, R, ncols, add):
    """``R[:, :ncols] += M @ H[:, :ncols]`` if ``add``, else ``R[:, :ncols] = M @ H[:, :ncols]``
    (whatever ``R`` held, NaN included), with ``M = A.T`` if ``transposed`` else ``A``.

    The Jacobian kernels' layer products: the rows of ``H`` and ``R`` are long runs of
    points, which vectorise whatever the layer widths. Four rows of ``R`` times four
    rows of ``H`` per pass over the columns, so each ``H`` element is loaded
    once for four outputs and each ``R`` element stored once for four inputs. ``M`` is
    read through strides into ``A``'s memory, so both orientations share one code path.
    Without ``add``, each row's first pass writes instead of adding, which saves zeroing
    ``R`` first (a pass over every row: 4 % of a population Jacobian).
    """
    zero = R.dtype.type(0.0)
    M = A.reshape(A.size)  # M[k, i] is M[k * ks + i * js]
    if transposed:
        n_in, n_out = A.shape
        ks, js = 1, n_out
    else:
        n_out, n_in = A.shape
        ks, js = n_in, 1
    k = 0
    while k + 4 <= n_out:
        r0 = k * ks
        r1 = r0 + ks
        r2 = r1 + ks
        r3 = r2 + ks
        i = 0
        more = add  # False: the first pass over these rows writes them
        while i + 4 <= n_in:
            c0 = i * js
            c1 = c0 + js
            c2 = c1 + js
            c3 = c2 + js
            a0, a1, a2, a3 = M[r0 + c0], M[r0 + c1], M[r0 + c2], M[r0 + c3]
            b0, b1, b2, b3 = M[r1 + c0], M[r1 + c1], M[r1 + c2], M[r1 + c3]
            d0, d1, d2, d3 = M[r2 + c0], M[r2 + c1], M[r2 + c2], M[r2 + c3]
            e0, e1, e2, e3 = M[r3 + c0], M[r3 + c1], M[r3 + c2], M[r3 + c3]
            for c in range(ncols):
                h0 = H[i, c]
                h1 = H[i + 1, c]
                h2 = H[i + 2, c]
                h3 = H[i + 3, c]
                t0 = R[k, c] if more else zero
                t1 = R[k + 1, c] if more else zero
                t2 = R[k + 2, c] if more else zero
                t3 = R[k + 3, c] if more else zero
                R[k, c] = t0 + a0 * h0 + a1 * h1 + a2 * h2 + a3 * h3
                R[k + 1, c] = t1 + b0 * h0 + b1 * h1 + b2 * h2 + b3 * h3
                R[k + 2, c] = t2 + d0 * h0 + d1 * h1 + d2 * h2 + d3 * h3
                R[k + 3, c] = t3 + e0 * h0 + e1 * h1 + e2 * h2 + e3 * h3
            i += 4
            more = YES
        # The passes over fewer than four inputs write the rows if no pass has (a first
        # layer with one to three inputs): zeroing them first and adding took 3x as long
        # for 2 inputs, 16 outputs and 128 points (664 against 214 ns), and a choice
        # between R and 0 inside one loop was slower still.
        if i + 2 <= n_in:
            c0 = i * js
            c1 = c0 + js
            a0, a1, b0, b1 = M[r0 + c0], M[r0 + c1], M[r1 + c0], M[r1 + c1]
            d0, d1, e0, e1 = M[r2 + c0], M[r2 + c1], M[r3 + c0], M[r3 + c1]
            if more:
                for c in range(ncols):
                    h0 = H[i, c]
                    h1 = H[i + 1, c]
                    R[k, c] += a0 * h0 + a1 * h1
                    R[k + 1, c] += b0 * h0 + b1 * h1
                    R[k + 2, c] += d0 * h0 + d1 * h1
                    R[k + 3, c] += e0 * h0 + e1 * h1
            else:
                for c in range(ncols):
                    h0 = H[i, c]
                    h1 = H[i + 1, c]
                    R[k, c] = a0 * h0 + a1 * h1
                    R[k + 1, c] = b0 * h0 + b1 * h1
                    R[k + 2, c] = d0 * h0 + d1 * h1
                    R[k + 3, c] = e0 * h0 + e1 * h1
            i += 2
            more = YES
        if i < n_in:
            c0 = i * js
            a0, b0, d0, e0 = M[r0 + c0], M[r1 + c0], M[r2 + c0], M[r3 + c0]
            if more:
                for c in range(ncols):
                    h0 = H[i, c]
                    R[k, c] += a0 * h0
                    R[k + 1, c] += b0 * h0
                    R[k + 2, c] += d0 * h0
                    R[k + 3, c] += e0 * h0
            else:
                for c in range(ncols):
                    h0 = H[i, c]
                    R[k, c] = a0 * h0
                    R[k + 1, c] = b0 * h0
                    R[k + 2, c] = d0 * h0
                    R[k + 3, c] = e0 * h0
        k += 4
    while k < n_out:
        r0 = k * ks
        i = 0
        more = add
        while i + 4 <= n_in:
            c0 = i * js
            a0, a1 = M[r0 + c0], M[r0 + c0 + js]
            a2, a3 = M[r0 + c0 + 2 * js], M[r0 + c0 + 3 * js]
            for c in range(ncols):
                t0 = R[k, c] if more else zero
                R[k, c] = t0 + a0 * H[i, c] + a1 * H[i + 1, c] + a2 * H[i + 2, c] + a3 * H[i + 3, c]
            i += 4
            more = YES
        if i < n_in and not more:
            for c in range(ncols):
                R[k, c] = zero
        while i < n_in:
            a0 = M[r0 + i * js]
            for c in range(ncols):
                R[k, c] += a0 * H[i, c]
            i += 1
        k += 1


@kernel
def sum_rows(M, out):
    """``out[j] <- Σ_i M[j, i]``: the bias gradients, from a feature-major delta."""
    zero = out.dtype.type(0.0)
    for j in range(M.shape[0]):
        total = zero
        for i in range(M.shape[1]):
            total += M[j, i]
        out[j] = total


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
    """``C <- A.T @ B`` for ``A (n, k)``, ``B (n, m)``, ``C (k, m)``.

    Plain loops, not `product`: the two ran alike for the dense kernels' small
    products, and the blocked one made the first compile of ``loss_and_grad`` take
    16 s instead of 10 s.
    """
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
