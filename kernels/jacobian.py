"""Input Jacobians of dense networks, for one parameter vector or a population of them.

Entry points (callable from the user's own ``@njit`` code; arrays C-contiguous and of
one float dtype, float32 or float64, except ``spec`` and ``which``)::

    input_jacobian(spec, theta, X, J)
    forward_and_jacobian(spec, theta, X, A, J)
    sobolev_loss(spec, theta, X, T, which, out)

- ``spec``: int64 array ``[hidden_code, output_code, loss_code, n0, n1, ..., nL]``
  (``MLP.spec``; codes from ``fastbp.kernels.codes``).
- ``theta``: ``(D,)`` or a population ``(P, D)``; per layer ``W_l.ravel()`` then ``b_l``.
- ``X``: ``(n, n0)``; ``T``: ``(n, nL)``; ``which``: integers ``(n,)`` in ``[-1, n0)``.
- ``A``: ``(n, nL)`` or ``(P, n, nL)``; ``J``: ``(n, nL, n0)`` or ``(P, n, nL, n0)``,
  ``J[.., i, k, j] = ∂A_L[i, k] / ∂X[i, j]``; ``out``: ``(1,)`` or ``(P,)`` losses.

Each writes its results into the arrays it is given and returns nothing, after checking
that the shapes (and ``which``) agree with ``spec`` (``ValueError`` if not), and picks
the mode and whether to use threads by itself. The API layer calls the kernels below
them directly (``jacobian_items`` / ``jacobian_items_parallel``, ``sobolev_items`` /
``sobolev_items_parallel`` and ``sobolev_mean``, planned by the plain-Python
``jacobian_slabs`` and ``schedule``), which trust their arguments.

Example, a swarm step inside ``@njit`` code (``losses`` of shape ``(P,)``)::

    sobolev_loss(spec, positions, X, T, which, losses)

How the work is laid out. Points are processed in blocks, transposed so that the
points of a block are the contiguous, innermost axis of every inner loop: a layer is
then a small matrix product ``W_l^T @ H`` whose rows are long runs of points, which
vectorises for any layer widths (widths of 2 or 16 give no useful SIMD on their own).
A block's columns hold several *slabs* of ``nb`` points each (fewer in the last block,
padded to whole vectors, see ``_lanes``):

- forward mode (``n0 <= nL``): slab 0 holds the activations, slab ``1 + j`` the tangent
  ``∂A_l/∂x_j``, carried through the layers as ``J_l = act'(Z_l) ⊙ (W_l^T J_{l-1})``;
- reverse mode (``n0 > nL``): one forward pass keeps every layer's activations, then
  slab ``k`` carries the cotangent of output ``k`` back, ``G_{l-1} = act'(Z_{l-1}) ⊙
  (W_l G_l)``, so the cost grows with the outputs instead of the inputs;
- the Sobolev loss runs forward mode with a single tangent slab whose direction is
  ``which[i]`` point by point: the values and exactly the needed Jacobian column, in one
  pass, without forming any Jacobian. In each block the derivative rows go first, and
  the tangent slab covers only them.

Work items are (network, block of points) pairs. The blocks' points are transposed (and,
for the Sobolev loss, ordered) once a call for all the networks; the parallel variants
hand contiguous ranges of items to the threads, and each range allocates its scratch
once.
"""

import numpy as np
from numba import config, prange
from numba.core import errors, types
from numba.extending import overload

from fastbp.kernels._config import kernel
from fastbp.kernels.activations import exp_nonpositive, sigmoid, tanh
from fastbp.kernels.checks import c_contiguous
from fastbp.kernels.codes import IDENTITY, SIGMOID, SOFTMAX, TANH
from fastbp.kernels.linalg import NO, YES, matrix, product
from fastbp.kernels.spec import check_network, n_params_before

FORWARD = 0
REVERSE = 1

# A block holds about this many columns (slabs x points): its scratch stays in L1/L2.
BLOCK_COLUMNS = 512
MAX_POINTS_PER_BLOCK = 128
# Below this many multiply-adds one thread finishes before a second one has started.
PARALLEL_MIN_WORK = 1 << 17
# The parallel variants hand out this many ranges of work items (fewer if there are
# fewer items): several per thread for load balance, each allocating scratch once.
MAX_CHUNKS = max(32, 4 * config.NUMBA_NUM_THREADS)


# Constant arguments between kernels: a literal such as ``1`` or ``True`` would make
# Numba compile the callee once more, specialised on that value.
ZERO, ONE, TWO = np.int64(0), np.int64(1), np.int64(2)

# --------------------------------------------------------------------------- layout


@kernel
def _max_width(spec):
    width = 0
    for k in range(3, spec.shape[0]):
        width = max(width, spec[k])
    return width


def schedule(n_inputs, n_outputs, n_params, n_networks, n_points, n_slabs):
    """How to run a call: ``(points per block, work items, parallel)``.

    ``n_slabs`` columns per point: ``n_inputs + 1`` in forward mode, ``n_outputs`` in
    reverse mode, 2 for the Sobolev loss. Plain Python, also compiled (``_schedule``),
    so that the API layer and the kernels decide alike.
    """
    nb = BLOCK_COLUMNS // n_slabs
    # A multiple of 8 points, and no more than the call has.
    nb = max(8, min(MAX_POINTS_PER_BLOCK, nb - nb % 8, n_points + (-n_points) % 8))
    n_items = n_networks * ((n_points + nb - 1) // nb)
    # Multiply-adds: about n_params per point and slab (weights dominate biases).
    work = n_networks * n_points * n_params * (n_slabs + 1)
    return nb, n_items, n_items > 1 and work >= PARALLEL_MIN_WORK


def jacobian_slabs(n_inputs, n_outputs):
    """``(mode, n_slabs)``: forward mode when there are no more inputs than outputs."""
    if n_inputs <= n_outputs:
        return FORWARD, n_inputs + 1
    return REVERSE, n_outputs


_schedule = kernel(schedule)
_jacobian_slabs = kernel(jacobian_slabs)


# --------------------------------------------------------------------------- population axis


def as_population(theta):
    """``theta`` as ``(P, D)``: a 1-D theta becomes a population of one (no copy)."""
    return theta


@overload(as_population, jit_options={"cache": True})
def _as_population_overload(theta):
    if theta.ndim == 1:
        return lambda theta: theta.reshape((1, theta.shape[0]))
    return lambda theta: theta


def with_population_axis(theta, result):
    """``result`` with a leading population axis of length 1 when theta is 1-D."""
    return result


@overload(with_population_axis, jit_options={"cache": True})
def _with_population_axis_overload(theta, result):
    if theta.ndim == 1:
        return lambda theta, result: result.reshape((1,) + result.shape)
    return lambda theta, result: result


# --------------------------------------------------------------------------- block steps


# Slabs are addressed through row views: an index such as ``base + t`` could be
# negative as far as the compiler knows, and its wraparound check stops vectorisation.


@kernel
def _activate(code, R, b, nb, n_slabs, tw, scratch):
    """Slab 0 of ``R`` (``W^T H``, the pre-activations but for the bias ``b``) <-
    ``act(Z)`` with ``Z = W^T H + b``, and the tangent slabs ``1..n_slabs-1`` <- their
    product with the Jacobian of ``act`` at ``Z``.

    Slab 0 is ``nb`` columns wide, each tangent slab ``tw <= nb``: tangent column ``t``
    belongs to the point of column ``t`` (see `_forward_block`). ``scratch`` (3, nb)."""
    n_out = b.shape[0]
    one = R.dtype.type(1.0)
    zero = R.dtype.type(0.0)
    first = scratch[0, :nb]
    second = scratch[1, :nb]
    if code == SOFTMAX or code == IDENTITY:
        for k in range(n_out):
            z = R[k, :nb]
            bk = b[k]
            for t in range(nb):
                z[t] += bk
    if code == SOFTMAX:
        # Column-wise softmax: the points of the block are the vector lanes.
        for t in range(nb):
            first[t] = R[0, t]
            second[t] = zero
        for k in range(1, n_out):
            for t in range(nb):
                first[t] = max(first[t], R[k, t])
        for k in range(n_out):
            for t in range(nb):
                e = exp_nonpositive(R[k, t] - first[t])
                R[k, t] = e
                second[t] += e
        for t in range(nb):
            second[t] = one / second[t]
        for k in range(n_out):
            for t in range(nb):
                R[k, t] *= second[t]
        # Tangent u -> s ⊙ (u - <s, u>), but at an s_q above a half (a point has one at
        # most), where 1 - s_q would lose its digits to rounding near s_q = 1 (a
        # saturated output): u_q -> s_q Σ_k s_k (u_q - u_k), each term as small as the
        # result (as in `fastbp.kernels.softmax`).
        half = R.dtype.type(0.5)
        inner, u_q = first[:tw], second[:tw]
        for s in range(1, n_slabs):
            at = nb + (s - 1) * tw
            for t in range(tw):
                inner[t] = zero
                u_q[t] = zero
            for k in range(n_out):
                u = R[k, at : at + tw]
                for t in range(tw):
                    inner[t] += R[k, t] * u[t]
                    u_q[t] += u[t] if R[k, t] > half else zero
            d_q = scratch[2, :tw]
            for t in range(tw):
                d_q[t] = zero
            for k in range(n_out):
                u = R[k, at : at + tw]
                for t in range(tw):
                    d_q[t] += R[k, t] * (u_q[t] - u[t])
            for k in range(n_out):
                u = R[k, at : at + tw]
                for t in range(tw):
                    u[t] = R[k, t] * (d_q[t] if R[k, t] > half else u[t] - inner[t])
        return
    if code == IDENTITY:
        return
    # R[k, t] rather than a row view in the activation loops: with a view, the Sobolev
    # loss took 4 % longer. The tangents then take the derivative from the activations
    # just written, through views: keeping it in scratch as the activations were computed
    # made a 16-unit sigmoid layer of 128 points and 88 tangents take 1.75 us, not 1.35.
    for k in range(n_out):
        bk = b[k]
        if code == SIGMOID:
            for t in range(nb):
                R[k, t] = sigmoid(R[k, t] + bk)
        elif code == TANH:
            for t in range(nb):
                R[k, t] = tanh(R[k, t] + bk)
        else:  # RELU
            for t in range(nb):
                R[k, t] = max(R[k, t] + bk, zero)
        a = R[k, :tw]
        for s in range(1, n_slabs):
            u = R[k, nb + (s - 1) * tw : nb + s * tw]
            if code == SIGMOID:
                for t in range(tw):
                    u[t] *= a[t] * (one - a[t])
            elif code == TANH:
                for t in range(tw):
                    u[t] *= one - a[t] * a[t]
            else:  # RELU
                for t in range(tw):
                    u[t] *= one if a[t] > zero else zero


@kernel
def _scale_by_derivative(code, A, G, n_rows, nb, n_slabs):
    """Every slab of ``G`` <- ``act'(Z) ⊙ G``, the derivative written in terms of the
    activations ``A = act(Z)`` (element-wise hidden activations only)."""
    one = G.dtype.type(1.0)
    zero = G.dtype.type(0.0)
    if code == IDENTITY:
        return
    for i in range(n_rows):
        a = A[i, :nb]
        for s in range(n_slabs):
            g = G[i, s * nb : (s + 1) * nb]
            if code == SIGMOID:
                for t in range(nb):
                    g[t] *= a[t] * (one - a[t])
            elif code == TANH:
                for t in range(nb):
                    g[t] *= one - a[t] * a[t]
            else:  # RELU
                for t in range(nb):
                    g[t] = g[t] if a[t] > zero else zero


@kernel
def _seed_cotangents(code, A, G, n_out, nb):
    """Slab ``q`` of ``G`` <- ``∂A_L[q]/∂Z_L`` (row ``m``: with respect to ``Z_L[m]``)."""
    one = G.dtype.type(1.0)
    zero = G.dtype.type(0.0)
    for q in range(n_out):
        for m in range(n_out):
            g = G[m, q * nb : (q + 1) * nb]
            if code == SOFTMAX and m == q:
                # s_q (1 - s_q), 1 - s_q summed from the other s: computed from s_q, it
                # would keep only the digits that rounding s_q left where s_q is near 1.
                for t in range(nb):
                    g[t] = zero
                for k in range(n_out):
                    if k != q:
                        for t in range(nb):
                            g[t] += A[k, t]
                for t in range(nb):
                    g[t] *= A[q, t]
            elif code == SOFTMAX:
                for t in range(nb):
                    g[t] = -A[q, t] * A[m, t]
            elif m != q:
                for t in range(nb):
                    g[t] = zero
            elif code == SIGMOID:
                for t in range(nb):
                    g[t] = A[m, t] * (one - A[m, t])
            else:  # IDENTITY
                for t in range(nb):
                    g[t] = one


@kernel
def _last_layer_cotangents(output, hidden, W, A, H, G, nb):
    """Slab ``q`` of ``G`` <- the cotangent of output ``q`` at the last hidden layer,
    ``act'(Z_{L-1}) ⊙ W_L[:, q] out'(Z_L[q])``, for an element-wise output (sigmoid or
    identity), whose Jacobian is diagonal: `_seed_cotangents` and the product by ``W_L``
    in one pass, then `_scale_by_derivative`. ``W`` (n_{L-1}, nL); ``A`` the outputs,
    ``H`` the last hidden layer's activations."""
    one = G.dtype.type(1.0)
    n_rows, nL = W.shape
    for q in range(nL):
        a = A[q, :nb]
        for i in range(n_rows):
            w = W[i, q]
            g = G[i, q * nb : (q + 1) * nb]
            if output == SIGMOID:
                for t in range(nb):
                    g[t] = w * (a[t] * (one - a[t]))
            else:  # IDENTITY
                for t in range(nb):
                    g[t] = w
    _scale_by_derivative(hidden, H, G, n_rows, nb, nL)


@kernel
def _scatter(R, width, first_slab, n_rows, n_slabs, out, start, size, slab_major):
    """``out[start + t, c] <- R[r, (first_slab + s) * width + t]`` for the points
    ``t < size`` of a block, rows ``r < n_rows`` and slabs ``s < n_slabs``, into column
    ``c = s * n_rows + r`` if ``slab_major`` else ``c = r * n_slabs + s`` of ``out``."""
    for r in range(n_rows):
        for s in range(n_slabs):
            at = (first_slab + s) * width
            source = R[r, at : at + size]
            column = s * n_rows + r if slab_major else r * n_slabs + s
            for t in range(size):
                out[start + t, column] = source[t]


@kernel
def _lanes(size):
    """``size`` rounded up to a multiple of 8 (a vector of float64, half of float32):
    no more than a block's ``nb``, itself a multiple of 8 (`schedule`)."""
    return size + (-size) % 8


@kernel
def _forward_block(spec, thetas, p, H, nb, n_slabs, tw, directions, buffers, keep_all, scratch):
    """Forward pass of network ``p`` over a block of points; returns the index of the
    buffer holding the output layer.

    ``H`` (n0, >= nb): the block's inputs, feature-major (`_input_blocks`). The values'
    slab is ``nb`` columns wide, ``nb`` a multiple of 8 (see `_lanes`): the columns past
    the block's last point hold zeros as inputs, so that every loop runs in whole
    vectors (a population Jacobian on 133 points, blocks of 128 and 5, took 4.6 % longer
    with scalar tails); their results are not read.

    ``n_slabs == 1``: values only. Otherwise tangent slab ``s``, ``tw`` columns wide
    (a multiple of 8, at most ``nb``) for the block's first ``tw`` points, starts as
    ``e_{s-1}`` (``directions`` empty), or (one slab, the Sobolev loss) as ``e_j`` for
    the columns ``directions[j] .. directions[j+1]`` and 0 from ``directions[n0]`` on:
    the points come sorted by direction, so that each run is a fill (2-16-16-1 networks
    on 256 points, one thread: 67 ns a point instead of 72 with a point-by-point loop
    when a third of the rows are values, 70 instead of 78 when none are).
    ``keep_all``: layer ``l`` goes to ``buffers[l]`` (reverse mode needs them all);
    else the two first buffers alternate.
    """
    hidden, output = spec[0], spec[1]
    L = spec.shape[0] - 4
    n0 = spec[3]
    zero = H.dtype.type(0.0)
    ncols = nb + (n_slabs - 1) * tw
    offset = 0
    current = 0
    for layer in range(1, L + 1):
        n_in = spec[2 + layer]
        n_out = spec[3 + layer]
        bias = offset + n_in * n_out
        target = layer if keep_all else layer % 2
        R = buffers[target]
        # Layer 1 multiplies the values only: the tangents of the inputs are unit
        # vectors, and W^T e_j is row j of W.
        W = matrix(thetas[p], offset, n_in, n_out)
        product(W, YES, H, R, nb if layer == 1 else ncols, NO)
        if layer == 1 and n_slabs > 1:
            if directions.shape[0] == 0:
                for j in range(n_slabs - 1):
                    for k in range(n_out):
                        w = thetas[p, offset + j * n_out + k]
                        u = R[k, nb + j * tw : nb + (j + 1) * tw]
                        for t in range(tw):
                            u[t] = w
            else:
                # Loops from 0 over views: one from a variable start does not
                # vectorise (the index could be negative as far as LLVM knows).
                for k in range(n_out):
                    for j in range(n0 + 1):
                        w = thetas[p, offset + j * n_out + k] if j < n0 else zero
                        u = R[k, nb + directions[j] : nb + (directions[j + 1] if j < n0 else tw)]
                        for t in range(u.shape[0]):
                            u[t] = w
        code = output if layer == L else hidden
        _activate(code, R, thetas[p, bias : bias + n_out], nb, n_slabs, tw, scratch)
        H = R
        current = target
        offset = bias + n_out
    return current


@kernel
def _sort_key(direction, n0):
    """A Sobolev row's place in its block's order: its direction, or ``n0`` for a value
    row (``direction`` -1); int64 whatever ``which``'s integer type."""
    key = np.int64(direction)
    return n0 if key < 0 else key


@kernel
def _n_slabs(spec, mode):
    """Columns per point in ``mode``: ``nL`` cotangents (REVERSE), or the values and
    ``n0`` tangents (FORWARD)."""
    return spec[spec.shape[0] - 1] if mode == REVERSE else spec[3] + 1


@kernel
def _blocks_of(spec, thetas, n, n_slabs):
    """``(nb, blocks)``: points per block (`schedule`), and blocks, for ``n`` points."""
    nb, _, _ = _schedule(spec[3], spec[spec.shape[0] - 1], thetas.shape[1], ONE, n, n_slabs)
    return nb, (n + nb - 1) // nb


@kernel
def _input_blocks(spec, thetas, X, mode):
    """X's rows in the blocks of points of ``mode``, feature-major: ``(blocks, n0, nb)``,
    zeros past the last point (see `_forward_block`). Made once a call, for every
    network: copied in each of a population's blocks, X took 184 ns of a 2-16-16-1
    network's 7.9 us a block."""
    n, n0 = X.shape
    nb, blocks = _blocks_of(spec, thetas, n, _n_slabs(spec, mode))
    Xt = np.empty((blocks, n0, nb), dtype=X.dtype)
    zero = X.dtype.type(0.0)
    for b in range(blocks):
        start = b * nb
        size = min(nb, n - start)
        for j in range(n0):
            x = Xt[b, j]
            for t in range(size):
                x[t] = X[start + t, j]
            for t in range(size, nb):
                x[t] = zero
    return Xt


@kernel
def _sobolev_blocks(spec, thetas, X, T, which):
    """The Sobolev loss's blocks of points, ordered once a call for every network:
    ``(Xt, Tt, runs)``.

    In each block the derivative rows go first, sorted by direction (``which``), then
    the value rows, each kind in their order: the tangent slab then covers the derivative
    rows only (for 2-16-16-1 networks on 256 points, one thread: 48 ns a point instead
    of 72 when all are value rows, 72 instead of 75 when a third are), and starts as a
    fill of each direction's run (see `_forward_block`). ``Xt`` (blocks, n0, nb) and
    ``Tt`` (blocks, nL, nb): X's and T's rows in that order, feature-major, zeros past the
    block's last point; ``runs[b, j]``: the first column of direction ``j``, and
    ``runs[b, n0]`` the number of derivative rows. Sorting each block for each network
    took a tenth of the loss's time.
    """
    n, n0 = X.shape
    nL = T.shape[1]
    nb, blocks = _blocks_of(spec, thetas, n, TWO)
    Xt = np.zeros((blocks, n0, nb), dtype=X.dtype)
    Tt = np.zeros((blocks, nL, nb), dtype=T.dtype)
    runs = np.empty((blocks, n0 + 1), dtype=np.int64)
    place = np.empty(n0 + 1, dtype=np.int64)
    for b in range(blocks):
        start = b * nb
        size = min(nb, n - start)
        place[:] = 0
        for t in range(size):
            place[_sort_key(which[start + t], n0)] += 1
        total_before = 0
        for j in range(n0 + 1):
            runs[b, j] = total_before
            total_before, place[j] = total_before + place[j], total_before
        for t in range(size):
            key = _sort_key(which[start + t], n0)
            column = place[key]
            place[key] += 1
            for j in range(n0):
                Xt[b, j, column] = X[start + t, j]
            for k in range(nL):
                Tt[b, k, column] = T[start + t, k]
    return Xt, Tt, runs


@kernel
def _sobolev_block(spec, thetas, p, H, Tb, runs, size, buffers, scratch):
    """``Σ_i ½ ‖prediction_i - T_i‖²`` over the ``size`` points of one block, ordered
    as `_sobolev_blocks` leaves them: inputs ``H`` (n0, nb), targets ``Tb`` (nL, nb),
    ``runs`` (n0 + 1,)."""
    nL = spec[spec.shape[0] - 1]
    n0 = spec[3]
    n_derivatives = runs[n0]
    width = _lanes(size)
    n_slabs = TWO if n_derivatives > 0 else ONE
    last = _forward_block(
        spec, thetas, p, H, width, n_slabs, _lanes(n_derivatives), runs, buffers, NO, scratch
    )
    R = buffers[last]
    total = R.dtype.type(0.0)
    half = R.dtype.type(0.5)
    for k in range(nL):
        # The derivative rows' predictions are in the tangent slab, the values' in slab 0.
        target = Tb[k, :size]
        derivatives = R[k, width : width + n_derivatives]
        for t in range(n_derivatives):
            r = derivatives[t] - target[t]
            total += half * r * r
        values = R[k, :size]
        for t in range(n_derivatives, size):
            r = values[t] - target[t]
            total += half * r * r
    return total


# --------------------------------------------------------------------------- work items


@kernel
def _jacobian_range(spec, thetas, Xt, A, J, mode, first, stop):
    """`jacobian_items` on the inputs in blocks, ``Xt`` from `_input_blocks`."""
    L = spec.shape[0] - 4
    n0 = spec[3]
    nL = spec[spec.shape[0] - 1]
    n = J.shape[1]
    reverse = mode == REVERSE
    n_slabs = _n_slabs(spec, mode)
    blocks, nb = Xt.shape[0], Xt.shape[2]
    # Forward mode alternates two buffers; reverse mode keeps every layer's activations
    # and alternates two more for the cotangents.
    # Not zeroed: every step writes the rows and columns it reads (zeroing took a tenth
    # of a 128-point block's time).
    n_buffers = L + 3 if reverse else 2
    buffers = np.empty((n_buffers, _max_width(spec), n_slabs * nb), dtype=thetas.dtype)
    scratch = np.empty((3, nb), dtype=thetas.dtype)
    empty = np.empty(0, dtype=np.int64)
    for item in range(first, stop):
        p = item // blocks
        block = item % blocks
        start = block * nb
        size = min(nb, n - start)
        width = _lanes(size)
        forward_slabs = ONE if reverse else n_slabs
        last = _forward_block(
            spec, thetas, p, Xt[block], width, forward_slabs, width, empty, buffers, reverse,
            scratch,
        )  # fmt: skip
        R = buffers[last]
        if A.shape[0] > 0:
            _scatter(R, width, ZERO, nL, ONE, A[p], start, size, NO)
        if not reverse:
            _scatter(R, width, ONE, nL, n0, J[p].reshape((n, nL * n0)), start, size, NO)
            continue
        # Slab k of the cotangents: ∂A_L[k]/∂(layer), carried down to the inputs.
        G = buffers[L + 1]
        ncols = nL * width
        top = L
        if spec[1] != SOFTMAX and L > 1:
            # The output's Jacobian is diagonal: the seed and the product by W_L in one
            # pass (64 2-16-16-1 networks on 256 points, one thread: 906-934 us,
            # against 947-975 with the seed and the product apart).
            offset = n_params_before(spec, L)
            W = matrix(thetas[p], offset, spec[2 + L], nL)
            G = buffers[L + 2]  # where the product by W_L would have gone
            _last_layer_cotangents(spec[1], spec[0], W, R, buffers[L - 1], G, width)
            top = L - 1
        else:
            _seed_cotangents(spec[1], R, G, nL, width)
        for layer in range(top, 0, -1):
            n_in = spec[2 + layer]
            n_out = spec[3 + layer]
            Gp = buffers[L + 1 + (L - layer + 1) % 2]
            offset = n_params_before(spec, layer)
            product(matrix(thetas[p], offset, n_in, n_out), NO, G, Gp, ncols, NO)
            if layer > 1:
                _scale_by_derivative(spec[0], buffers[layer - 1], Gp, n_in, width, nL)
            G = Gp
        _scatter(G, width, ZERO, n0, nL, J[p].reshape((n, nL * n0)), start, size, YES)


@kernel
def jacobian_items(spec, thetas, X, A, J, mode, first, stop):
    """Outputs and input Jacobians for work items ``first .. stop``, serially.

    Item ``q`` is network ``q // blocks`` on block ``q % blocks`` of the points.
    thetas (P, D); X (n, n0); A (P, n, nL), or (0, 0, 0) to skip the outputs;
    J (P, n, nL, n0); ``mode`` FORWARD or REVERSE.
    """
    _jacobian_range(spec, thetas, _input_blocks(spec, thetas, X, mode), A, J, mode, first, stop)


@kernel(parallel=True)
def jacobian_items_parallel(spec, thetas, X, A, J, mode, n_items):
    """``jacobian_items`` for items ``0 .. n_items`` on all threads."""
    Xt = _input_blocks(spec, thetas, X, mode)
    chunks = min(n_items, MAX_CHUNKS)
    for chunk in prange(chunks):
        first = chunk * n_items // chunks
        stop = (chunk + 1) * n_items // chunks
        _jacobian_range(spec, thetas, Xt, A, J, mode, first, stop)


@kernel
def _sobolev_range(spec, thetas, Xt, Tt, runs, partial, n, first, stop):
    """`sobolev_items` on the blocks ordered by `_sobolev_blocks`."""
    blocks, nb = Xt.shape[0], Xt.shape[2]
    buffers = np.empty((2, _max_width(spec), 2 * nb), dtype=thetas.dtype)
    scratch = np.empty((3, nb), dtype=thetas.dtype)
    for item in range(first, stop):
        p = item // blocks
        block = item % blocks
        size = min(nb, n - block * nb)
        partial[p, block] = _sobolev_block(
            spec, thetas, p, Xt[block], Tt[block], runs[block], size, buffers, scratch
        )


@kernel
def sobolev_items(spec, thetas, X, T, which, partial, first, stop):
    """``partial[p, block]``: the Sobolev misfit sums of work items ``first .. stop``.

    partial (P, blocks), with blocks of ``_schedule(..., n_slabs=2)[0]`` points.
    """
    Xt, Tt, runs = _sobolev_blocks(spec, thetas, X, T, which)
    _sobolev_range(spec, thetas, Xt, Tt, runs, partial, X.shape[0], first, stop)


@kernel(parallel=True)
def sobolev_items_parallel(spec, thetas, X, T, which, partial, n_items):
    """``sobolev_items`` for items ``0 .. n_items`` on all threads."""
    Xt, Tt, runs = _sobolev_blocks(spec, thetas, X, T, which)
    chunks = min(n_items, MAX_CHUNKS)
    for chunk in prange(chunks):
        first = chunk * n_items // chunks
        stop = (chunk + 1) * n_items // chunks
        _sobolev_range(spec, thetas, Xt, Tt, runs, partial, X.shape[0], first, stop)


@kernel
def sobolev_mean(partial, n, out):
    """``out[p] <- (1/n) Σ_block partial[p, block]``, summed in block order."""
    scale = out.dtype.type(1.0) / n
    for p in range(partial.shape[0]):
        total = out.dtype.type(0.0)
        for block in range(partial.shape[1]):
            total += partial[p, block]
        out[p] = total * scale


# --------------------------------------------------------------------------- entry points


@kernel
def population_jacobian(spec, thetas, X, A, J, mode, parallel):
    """Outputs and input Jacobians of the ``P`` networks in ``thetas`` (P, D).

    A (P, n, nL), or (0, 0, 0) to skip the outputs; J (P, n, nL, n0); ``mode``
    FORWARD or REVERSE; ``parallel``: use the threads.
    """
    n0 = spec[3]
    nL = spec[spec.shape[0] - 1]
    n_slabs = _n_slabs(spec, mode)
    _, n_items, _ = _schedule(n0, nL, thetas.shape[1], thetas.shape[0], X.shape[0], n_slabs)
    if parallel and n_items > 1:
        jacobian_items_parallel(spec, thetas, X, A, J, mode, n_items)
    else:
        jacobian_items(spec, thetas, X, A, J, mode, ZERO, n_items)


@kernel
def population_sobolev(spec, thetas, X, T, which, out, parallel):
    """Sobolev losses ``out[p]`` of the ``P`` networks in ``thetas`` (P, D)."""
    n0 = spec[3]
    nL = spec[spec.shape[0] - 1]
    n = X.shape[0]
    nb, n_items, _ = _schedule(n0, nL, thetas.shape[1], thetas.shape[0], n, TWO)
    partial = np.empty((thetas.shape[0], (n + nb - 1) // nb), dtype=out.dtype)
    if parallel and n_items > 1:
        sobolev_items_parallel(spec, thetas, X, T, which, partial, n_items)
    else:
        sobolev_items(spec, thetas, X, T, which, partial, ZERO, n_items)
    sobolev_mean(partial, n, out)


@kernel
def input_jacobian(spec, theta, X, J):
    """``J <- ∂A_L/∂X`` per point: J (n, nL, n0), or (P, n, nL, n0) for theta (P, D)."""
    c_contiguous(spec, theta, X, J)
    thetas = as_population(theta)
    Js = with_population_axis(theta, J)
    check_network(spec, thetas, X)
    n0 = spec[3]
    nL = spec[spec.shape[0] - 1]
    if Js.shape != (thetas.shape[0], X.shape[0], nL, n0):
        raise ValueError("J must have shape (n, nL, n0) or (P, n, nL, n0)")
    mode, n_slabs = _jacobian_slabs(n0, nL)
    _, _, parallel = _schedule(n0, nL, thetas.shape[1], thetas.shape[0], X.shape[0], n_slabs)
    no_values = np.empty((0, 0, 0), dtype=Js.dtype)
    population_jacobian(spec, thetas, X, no_values, Js, mode, parallel)


@kernel
def forward_and_jacobian(spec, theta, X, A, J):
    """``A <- A_L(X)`` and ``J <- ∂A_L/∂X``: A (n, nL) and J (n, nL, n0), each with a
    leading P axis for theta (P, D)."""
    c_contiguous(spec, theta, X, A, J)
    thetas = as_population(theta)
    As = with_population_axis(theta, A)
    Js = with_population_axis(theta, J)
    check_network(spec, thetas, X)
    n0 = spec[3]
    nL = spec[spec.shape[0] - 1]
    if Js.shape != (thetas.shape[0], X.shape[0], nL, n0):
        raise ValueError("J must have shape (n, nL, n0) or (P, n, nL, n0)")
    if As.shape != (thetas.shape[0], X.shape[0], nL):
        raise ValueError("A must have shape (n, nL) or (P, n, nL)")
    mode, n_slabs = _jacobian_slabs(n0, nL)
    _, _, parallel = _schedule(n0, nL, thetas.shape[1], thetas.shape[0], X.shape[0], n_slabs)
    population_jacobian(spec, thetas, X, As, Js, mode, parallel)


def integer_which(which):
    """Nothing at run time; a kernel that calls it fails to compile, with a message that
    names ``which``, unless ``which`` is a 1-D array of integers."""


@overload(integer_which, jit_options={"cache": True})
def _integer_which_overload(which):
    if not (
        isinstance(which, types.Array)
        and which.ndim == 1
        and isinstance(which.dtype, types.Integer)
    ):
        raise errors.TypingError(f"which must be a 1-D array of integers; got {which}")
    return lambda which: None


@kernel
def sobolev_loss(spec, theta, X, T, which, out):
    """``out[p] <- (1/n) Σ_i ½ ‖prediction_i - T_i‖²``: out (P,), or (1,) for theta (D,).

    ``prediction_i`` is ``A_L(X_i)`` where ``which[i] == -1`` and ``∂A_L/∂x_j (X_i)``
    where ``which[i] == j``; X (n, n0) with n >= 1, T (n, nL), which (n,) of any
    integer dtype.
    """
    c_contiguous(spec, theta, X, T, which, out)
    integer_which(which)
    thetas = as_population(theta)
    check_network(spec, thetas, X)
    n = X.shape[0]
    n0 = spec[3]
    nL = spec[spec.shape[0] - 1]
    if T.shape != (n, nL) or which.shape[0] != n or n == 0:
        raise ValueError("T must have shape (n, nL) and which (n,), with n >= 1")
    if out.shape[0] != thetas.shape[0]:
        raise ValueError("out must have shape (P,), or (1,) for a 1-D theta")
    for i in range(n):
        if which[i] < -1 or which[i] >= n0:
            raise ValueError("which must hold -1 (a value) or an input index 0..n0-1")
    _, _, parallel = _schedule(n0, nL, thetas.shape[1], thetas.shape[0], n, TWO)
    population_sobolev(spec, thetas, X, T, which, out, parallel)
