"""Input-Jacobian and Sobolev kernels against the NumPy reference, in both modes."""

import numpy as np
import pytest
from conftest import HIDDEN, make_problem, outputs_for

import fastbp
from fastbp import _validate, reference
from fastbp.kernels import jacobian as kernels

OUTPUTS = ("softmax", "sigmoid", "identity")
# in = 1 and out = 1, fewer inputs than outputs (forward mode) and more (reverse mode),
# equal widths, depth 1 to 3; 300 points span several blocks and end in a partial one.
SIZES = ([1, 1], [1, 4, 3], [3, 5, 2], [2, 16, 16, 1], [4, 4], [2, 3, 4, 5], [5, 4, 3, 2])


def assert_matches_reference(got, ref, dtype):
    assert got.shape == ref.shape and got.dtype == dtype
    if dtype == np.float64:
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-14)
    else:
        scale = max(1.0, np.abs(ref).max(initial=0.0))
        np.testing.assert_allclose(got, ref, rtol=2e-4, atol=1e-6 * scale)


def problem(sizes, hidden, output, dtype, n=300, population=3):
    sizes = outputs_for(output, sizes)
    net = fastbp.MLP(sizes, hidden=hidden, output=output)
    theta, X, T = make_problem(
        net, n=n, dtype=None, population=population, seed=len(sizes), margin=1e-5
    )
    which = np.random.default_rng(n).integers(-1, sizes[0], size=n)
    # The float64 reference runs on exactly the values the float32 kernel sees.
    cast = [a.astype(dtype).astype(np.float64) for a in (theta, X, T)]
    return net, [a.astype(dtype) for a in (theta, X, T)], cast, which


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("sizes", SIZES, ids=str)
def test_public_kernels_match_the_reference(sizes, hidden, output, dtype):
    net, (theta, X, T), (theta64, X64, T64), which = problem(sizes, hidden, output, dtype)
    A_ref, J_ref = reference.forward_and_jacobian(net, theta64, X64)
    loss_ref = reference.sobolev_loss(net, theta64, X64, T64, which)
    A, J = fastbp.forward_and_jacobian(net, theta, X)
    assert_matches_reference(A, A_ref, dtype)
    assert_matches_reference(J, J_ref, dtype)
    assert_matches_reference(fastbp.input_jacobian(net, theta, X), J_ref, dtype)
    assert_matches_reference(fastbp.sobolev_loss(net, theta, X, T, which), loss_ref, dtype)
    # One network at a time gives the rows of the population's results, bit for bit.
    for p in range(theta.shape[0]):
        A_p, J_p = fastbp.forward_and_jacobian(net, theta[p], X)
        np.testing.assert_array_equal(A_p, A[p])
        np.testing.assert_array_equal(J_p, J[p])
        np.testing.assert_array_equal(fastbp.input_jacobian(net, theta[p], X), J[p])
        single = fastbp.sobolev_loss(net, theta[p], X, T, which)
        assert single.shape == () and single.dtype == dtype
        np.testing.assert_allclose(single, fastbp.sobolev_loss(net, theta, X, T, which)[p])


def run_items(net, theta, X, mode, parallel):
    """The kernels behind the public functions, with the mode and threads forced."""
    P, n = theta.shape[0], X.shape[0]
    n_slabs = net.n_outputs if mode == kernels.REVERSE else net.n_inputs + 1
    _, n_items, _ = kernels.schedule(net.n_inputs, net.n_outputs, net.n_params, P, n, n_slabs)
    A = np.empty((P, n, net.n_outputs))
    J = np.empty((P, n, net.n_outputs, net.n_inputs))
    if parallel:
        kernels.jacobian_items_parallel(net._spec, theta, X, A, J, mode, n_items)
    else:
        kernels.jacobian_items(net._spec, theta, X, A, J, mode, 0, n_items)
    return A, J


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("sizes", [[1, 4, 3], [3, 5, 2], [2, 3, 4, 5], [6, 5, 1]], ids=str)
def test_forward_and_reverse_modes_serial_and_parallel_agree(sizes, hidden, output):
    net, _, (theta, X, _), _ = problem(sizes, hidden, output, np.float64)
    A_ref, J_ref = reference.forward_and_jacobian(net, theta, X)
    first = None
    for mode in (kernels.FORWARD, kernels.REVERSE):
        serial = run_items(net, theta, X, mode, parallel=False)
        parallel = run_items(net, theta, X, mode, parallel=True)
        for got, threaded, ref in zip(serial, parallel, (A_ref, J_ref)):
            np.testing.assert_array_equal(threaded, got)
            np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-14)
        first = first or serial
    np.testing.assert_array_equal(first[0], serial[0])  # the forward passes are one code


def test_sobolev_parallel_equals_serial():
    net = fastbp.MLP([2, 16, 16, 1], hidden="tanh", output="identity")
    theta, X, T = make_problem(net, n=300, population=5, margin=0)
    which = np.random.default_rng(0).integers(-1, 2, size=300)
    _, n_items, _ = kernels.schedule(2, 1, net.n_params, 5, 300, 2)
    partial = np.empty((2, 5, n_items // 5))
    kernels.sobolev_items(net._spec, theta, X, T, which, partial[0], 0, n_items)
    kernels.sobolev_items_parallel(net._spec, theta, X, T, which, partial[1], n_items)
    np.testing.assert_array_equal(partial[0], partial[1])
    loss = fastbp.sobolev_loss(net, theta, X, T, which)
    np.testing.assert_allclose(loss, partial[0].sum(axis=1) / 300, rtol=1e-14)
    np.testing.assert_allclose(loss, reference.sobolev_loss(net, theta, X, T, which), rtol=1e-10)


@pytest.mark.parametrize(
    "which_kind", ["values", "derivatives", "mixed", "one direction", "in order"]
)
def test_sobolev_value_and_derivative_blocks(which_kind):
    # 300 points in blocks of 128, the last one partial: tangent slabs as wide as the
    # values', none, and narrower ones; blocks sorted by direction in the kernel, and
    # blocks already in its order (derivative rows by direction, then value rows).
    net = fastbp.MLP([2, 16, 16, 1], hidden="sigmoid", output="identity")
    theta, X, T = make_problem(net, n=300, population=3, margin=0)
    which = {
        "values": np.full(300, -1),
        "derivatives": np.arange(300) % 2,
        "mixed": np.random.default_rng(1).integers(-1, 2, size=300),
        "one direction": np.full(300, 1),
        "in order": np.repeat([0, 1, -1], 100),
    }[which_kind]
    expected = reference.sobolev_loss(net, theta, X, T, which)
    np.testing.assert_allclose(fastbp.sobolev_loss(net, theta, X, T, which), expected, rtol=1e-10)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_a_saturated_softmax_output_keeps_its_derivatives_digits(backend):
    # Logits W^T x = [1, 2, 28] at x = e_0: 1 - s_2 = 1.9e-12, far below the rounding of
    # s_2 = 1 - 1.9e-12. Computed from s_2, the derivatives of A_L[2] came out with
    # relative errors of 4e-6 (forward mode) and 5e-5 (reverse mode).
    W = np.array([[1.0, 2.0, 28.0], [0.5, 0.1, 0.2], [0.0, 1.0, 3.0], [2.0, 2.0, 1.0]])
    e = np.exp([-27.0, -26.0])
    total = 1 + e.sum()
    for n0 in (1, 4):  # forward mode (1 input, 3 outputs) and reverse mode (4 and 3)
        net = fastbp.MLP([n0, 3], output="softmax")
        theta = np.concatenate([W[:n0].ravel(), np.zeros(3)])
        X = np.eye(1, n0)
        # ∂s_2/∂x_j = s_2 Σ_k s_k (W[j, 2] - W[j, k])
        exact = (e[0] * (W[:n0, 2] - W[:n0, 0]) + e[1] * (W[:n0, 2] - W[:n0, 1])) / total**2
        J = fastbp.input_jacobian(net, theta, X, backend=backend)
        np.testing.assert_allclose(J[0, 2], exact, rtol=1e-14)
        if n0 == 1:  # the Sobolev loss carries the same tangent
            which, T = np.zeros(1, dtype=np.int64), np.zeros((1, 3))
            loss = fastbp.sobolev_loss(net, theta, X, T, which, backend=backend)
            np.testing.assert_allclose(loss, 0.5 * (J[0, :, 0] ** 2).sum(), rtol=1e-14)


def test_mode_follows_the_cheaper_side():
    assert kernels.jacobian_slabs(2, 1) == (kernels.REVERSE, 1)
    assert kernels.jacobian_slabs(1, 3) == (kernels.FORWARD, 2)
    assert kernels.jacobian_slabs(4, 4) == (kernels.FORWARD, 5)


def test_seed_004_worked_example():
    # Two sigmoid layers of ones (weights and biases), then a linear output with weights
    # one and bias zero, at x = [1, 1]: the answer worked out by hand in the thread.
    net = fastbp.MLP([2, 2, 2, 1], hidden="sigmoid", output="identity")
    theta = np.ones(net.n_params)
    theta[-1] = 0.0
    X = np.ones((1, 2))
    A, J = fastbp.forward_and_jacobian(net, theta, X)
    s1 = 1 / (1 + np.exp(-3.0))
    s2 = 1 / (1 + np.exp(-(2 * s1 + 1)))
    slope = 2 * s2 * (1 - s2) * 2 * s1 * (1 - s1)
    np.testing.assert_allclose(A, [[2 * s2]], rtol=1e-14)
    np.testing.assert_allclose(J, [[[slope, slope]]], rtol=1e-13)


def test_out_buffers_are_reused_across_a_swarm_loop():
    net = fastbp.MLP([2, 8, 1], hidden="sigmoid", output="identity")
    theta, X, T = make_problem(net, n=40, population=6)
    which = np.arange(40) % 3 - 1
    A, J, losses = np.empty((6, 40, 1)), np.empty((6, 40, 1, 2)), np.empty(6)
    rng = np.random.default_rng(1)
    for _ in range(3):
        theta = theta + 0.1 * rng.standard_normal(theta.shape)
        assert fastbp.input_jacobian(net, theta, X, out=J) is J
        np.testing.assert_allclose(J, reference.input_jacobian(net, theta, X), rtol=1e-10)
        got = fastbp.forward_and_jacobian(net, theta, X, out=(A, J))
        assert got[0] is A and got[1] is J
        assert fastbp.sobolev_loss(net, theta, X, T, which, out=losses) is losses
        np.testing.assert_allclose(
            losses, reference.sobolev_loss(net, theta, X, T, which), rtol=1e-10
        )
    with pytest.raises(ValueError, match="out"):
        fastbp.input_jacobian(net, theta, X, out=np.empty((6, 40, 2, 1)))
    with pytest.raises(ValueError, match="out"):
        fastbp.sobolev_loss(net, theta[0], X, T, which, out=losses)


def test_a_jacobian_larger_than_free_memory_is_refused(monkeypatch):
    net = fastbp.MLP([3, 4, 2], output="identity")
    theta, X, T = make_problem(net, n=50, population=7)
    monkeypatch.setattr(_validate, "MEMORY_CHECK_BYTES", 0)
    monkeypatch.setattr(_validate, "_available_bytes", lambda: 10_000)
    with pytest.raises(MemoryError, match=r"J of shape \(7, 50, 2, 3\).*7 x 50 x 2 x 3 x 8 bytes"):
        fastbp.input_jacobian(net, theta, X)
    with pytest.raises(MemoryError, match="GiB"):
        fastbp.forward_and_jacobian(net, theta, X)
    # A buffer of the caller's needs no allocation, and the Sobolev loss never forms J.
    fastbp.input_jacobian(net, theta, X, out=np.empty((7, 50, 2, 3)))
    fastbp.sobolev_loss(net, theta, X, T, np.full(50, 2))
