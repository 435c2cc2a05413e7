"""The NumPy reference against central finite differences and hand-worked numbers."""

import math

import numpy as np
import pytest
from conftest import HIDDEN, OUTPUT_LOSS, make_problem, outputs_for

import fastbp
from fastbp import reference

FD_SIZES = ([3, 4], [3, 5, 4], [2, 4, 3, 2])


@pytest.mark.parametrize("sizes", FD_SIZES, ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("output,loss", OUTPUT_LOSS)
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_loss_and_grad_matches_finite_differences(sizes, hidden, output, loss, l2):
    net = fastbp.MLP(sizes, hidden=hidden, output=output, loss=loss)
    theta, X, Y = make_problem(net, n=6, seed=len(sizes))
    error = fastbp.gradcheck(lambda t: reference.loss_and_grad(net, t, X, Y, l2), theta)
    assert error <= 1e-6, error


@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_integer_labels_equal_one_hot_targets(l2):
    net = fastbp.MLP([3, 5, 4])
    theta, X, labels = make_problem(net, n=9, labels=True)
    onehot = np.eye(4)[labels]
    value, grad = reference.loss_and_grad(net, theta, X, labels, l2)
    value_1h, grad_1h = reference.loss_and_grad(net, theta, X, onehot, l2)
    np.testing.assert_allclose(value, value_1h, rtol=1e-14)
    np.testing.assert_allclose(grad, grad_1h, rtol=1e-14, atol=1e-16)
    assert reference.loss(net, theta, X, labels, l2) == value


def finite_difference_input_jacobian(net, theta, X, eps=1e-6):
    J = np.empty((X.shape[0], net.n_outputs, net.n_inputs))
    for j in range(net.n_inputs):
        step = np.zeros_like(X)
        step[:, j] = eps
        plus = reference.forward(net, theta, X + step)
        minus = reference.forward(net, theta, X - step)
        J[:, :, j] = (plus - minus) / (2 * eps)
    return J


@pytest.mark.parametrize("sizes", ([1, 1], [3, 5, 2], [2, 6, 4, 5]), ids=str)
@pytest.mark.parametrize("output", ["softmax", "sigmoid", "identity"])
@pytest.mark.parametrize("hidden", HIDDEN)
def test_input_jacobian_matches_finite_differences(sizes, hidden, output):
    sizes = outputs_for(output, sizes)
    net = fastbp.MLP(sizes, hidden=hidden, output=output, loss="mse")
    theta, X, _ = make_problem(net, n=5, seed=3)
    J = reference.input_jacobian(net, theta, X)
    expected = finite_difference_input_jacobian(net, theta, X)
    assert J.shape == expected.shape == (5, sizes[-1], sizes[0])
    scale = np.abs(expected).max()
    np.testing.assert_allclose(J, expected, rtol=1e-6, atol=1e-6 * scale)
    A, J2 = reference.forward_and_jacobian(net, theta, X)
    np.testing.assert_array_equal(A, reference.forward(net, theta, X))
    np.testing.assert_array_equal(J2, J)


def test_softmax_jacobian_matches_finite_differences_and_vjp(rng):
    Z = 3 * rng.standard_normal((4, 5))
    J = reference.softmax_jacobian(Z)
    eps = 1e-6
    for j in range(5):
        step = np.zeros_like(Z)
        step[:, j] = eps
        column = (reference.softmax(Z + step) - reference.softmax(Z - step)) / (2 * eps)
        np.testing.assert_allclose(J[:, :, j], column, rtol=1e-6, atol=1e-9)
    G = rng.standard_normal((4, 5))
    np.testing.assert_allclose(
        reference.softmax_vjp(Z, G), np.einsum("bi,bij->bj", G, J), rtol=1e-12, atol=1e-15
    )
    # The seed-003 formula: diag(s) - s s^T for one vector.
    s = reference.softmax(Z[0])
    np.testing.assert_allclose(J[0], np.diagflat(s) - np.outer(s, s), rtol=1e-14)


def test_softmax_is_stable_for_huge_logits():
    Z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]])
    S = reference.softmax(Z)
    np.testing.assert_allclose(S, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-15)
    assert np.isfinite(reference.softmax_jacobian(Z)).all()


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("output", ["identity", "sigmoid", "softmax"])
def test_sobolev_loss_by_hand(hidden, output):
    net = fastbp.MLP([3, 5, 2], hidden=hidden, output=output, loss="mse")
    theta, X, _ = make_problem(net, n=8, seed=5)
    rng = np.random.default_rng(7)
    T = rng.standard_normal((8, 2))
    which = np.array([-1, 0, 1, 2, -1, 2, 0, -1])
    A = reference.forward(net, theta, X)
    J = reference.input_jacobian(net, theta, X)
    total = 0.0
    for i in range(8):
        prediction = A[i] if which[i] == -1 else J[i, :, which[i]]
        total += 0.5 * np.sum((prediction - T[i]) ** 2)
    np.testing.assert_allclose(reference.sobolev_loss(net, theta, X, T, which), total / 8)


def test_hand_worked_two_layer_example():
    # MLP([1, 1, 1], sigmoid hidden, identity output, mse); W1=2, b1=-1, W2=3, b2=0.5;
    # one row x=1 with target y=2.
    #   z1 = 2*1 - 1 = 1            a1 = σ(1) = 0.7310585786
    #   z2 = 3*a1 + 0.5 = 2.6931757359 = a2
    #   loss = ½ (a2 - y)² = ½ 0.6931757359² = 0.2402463
    #   ∂/∂z2 = a2 - y = 0.6931757359: ∂W2 = a1 * 0.69317 = 0.5067521, ∂b2 = 0.6931757
    #   ∂/∂z1 = 3 * 0.69317 * σ'(1) = 2.0795272 * 0.1966119 = 0.4088599 = ∂W1 = ∂b1
    net = fastbp.MLP([1, 1, 1], hidden="sigmoid", output="identity")
    theta = np.array([2.0, -1.0, 3.0, 0.5])
    a1 = 1 / (1 + math.exp(-1))
    residual = 3 * a1 + 0.5 - 2
    dz1 = 3 * residual * a1 * (1 - a1)
    value, grad = reference.loss_and_grad(net, theta, np.array([[1.0]]), np.array([[2.0]]))
    np.testing.assert_allclose(value, 0.5 * residual**2, rtol=1e-15)
    np.testing.assert_allclose(grad, [dz1, dz1, a1 * residual, residual], rtol=1e-15)
    np.testing.assert_allclose(
        [value, *grad], [0.2402463, 0.4088599, 0.4088599, 0.5067521, 0.6931757], rtol=1e-6
    )


def test_seed_004_input_derivative():
    # ../shared/seeds/004: two inputs, two sigmoid hidden units, one linear output, all
    # weights 1, hidden biases 1, output bias 0, input [1, 1]. Each hidden unit sees
    # w·x + b = 3, so ∂y/∂x_j = Σ_h σ'(3) * 1 * 1 = 2 σ(3)(1 - σ(3)) = 0.0903533.
    net = fastbp.MLP([2, 2, 1], hidden="sigmoid", output="identity")
    theta = net.pack([(np.ones((2, 2)), np.ones(2)), (np.ones((2, 1)), np.zeros(1))])
    X = np.array([[1.0, 1.0]])
    for backend in ("numpy", "numba"):
        J = fastbp.input_jacobian(net, theta, X, backend=backend)
        np.testing.assert_allclose(J[0, 0], [0.0903533, 0.0903533], rtol=1e-6)


def test_gradcheck_catches_the_seed_002_mistake():
    # Seed 002: with cross-entropy on a sigmoid output the output delta is P - Y; also
    # multiplying it by σ'(z) (right only for mse) gives a wrong gradient.
    net = fastbp.MLP([3, 4, 2], hidden="sigmoid", output="sigmoid", loss="cross_entropy")
    theta, X, Y = make_problem(net, n=10, seed=2)

    def wrong_loss_and_grad(t):
        (W1, b1), (W2, b2) = net.unpack(t)
        A1 = reference.sigmoid(X @ W1 + b1)
        P = reference.sigmoid(A1 @ W2 + b2)
        delta = (P - Y) * P * (1 - P) / len(X)  # the extra σ'(z)
        hidden_delta = delta @ W2.T * A1 * (1 - A1)
        grad = net.pack([(X.T @ hidden_delta, hidden_delta.sum(0)), (A1.T @ delta, delta.sum(0))])
        return reference.loss(net, t, X, Y), grad

    error = fastbp.gradcheck(wrong_loss_and_grad, theta)
    assert error > 0.1
    assert 0 <= error.index < net.n_params
    assert fastbp.gradcheck(lambda t: reference.loss_and_grad(net, t, X, Y), theta) < 1e-7


def test_gradcheck_of_a_float32_gradient_steps_wide_enough():
    # At eps=1e-6 float32 losses differ by rounding noise only: a right gradient looked
    # wrong (errors of 0.3 and more).
    net = fastbp.MLP([3, 8, 2])
    theta, X, Y = make_problem(net, n=10, seed=4)
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)

    def in_float32(t):
        return reference.loss_and_grad(net, t.astype(np.float32), X32, Y32)

    assert fastbp.gradcheck(in_float32, theta) < 1e-3
    assert fastbp.gradcheck(in_float32, theta, eps=1e-6) > 1e-2  # the noise it avoids

    def halved(t):
        value, grad = in_float32(t)
        return value, grad / 2

    assert fastbp.gradcheck(halved, theta) > 0.3


def test_gradcheck_results_survive_pickling():
    # As they do on their way back from a multiprocessing worker.
    import pickle

    net = fastbp.MLP([3, 4, 2])
    theta, X, Y = make_problem(net, n=10)
    result = fastbp.gradcheck(lambda t: reference.loss_and_grad(net, t, X, Y), theta)
    again = pickle.loads(pickle.dumps(result))
    assert float(again) == float(result) and again.index == result.index
    assert (again.analytic, again.numeric) == (result.analytic, result.numeric)


def test_gradcheck_says_what_f_must_return():
    # A common slip: passing loss instead of loss_and_grad.
    net = fastbp.MLP([3, 4, 2])
    theta, X, Y = make_problem(net, n=10)
    with pytest.raises(TypeError, match=r"pair \(value, grad\)"):
        fastbp.gradcheck(lambda t: fastbp.loss(net, t, X, Y), theta)


def test_huge_finite_weights_without_l2_give_a_finite_loss_on_both_backends():
    # W * W overflows for weights of 1e160; without l2 the penalty is not computed.
    net = fastbp.MLP([4, 16, 3])
    theta, X, y = make_problem(net, n=20, labels=True)
    theta = theta * 1e160
    with np.errstate(over="ignore"):
        expected = reference.loss(net, theta, X, y)
    assert np.isfinite(expected)
    assert fastbp.loss(net, theta, X, y) == pytest.approx(expected, rel=1e-10)


def test_population_equals_stacked_single_results():
    net = fastbp.MLP([3, 6, 2], hidden="tanh", output="sigmoid")
    thetas, X, Y = make_problem(net, n=5, population=4)
    values, grads = reference.loss_and_grad(net, thetas, X, Y, 0.2)
    A, J = reference.forward_and_jacobian(net, thetas, X)
    which = np.array([-1, 0, 2, 1, -1])
    sobolev = reference.sobolev_loss(net, thetas, X, Y, which)
    assert values.shape == (4,) and grads.shape == thetas.shape
    assert A.shape == (4, 5, 2) and J.shape == (4, 5, 2, 3) and sobolev.shape == (4,)
    for p, theta in enumerate(thetas):
        value, grad = reference.loss_and_grad(net, theta, X, Y, 0.2)
        assert values[p] == value
        np.testing.assert_array_equal(grads[p], grad)
        np.testing.assert_array_equal(A[p], reference.forward(net, theta, X))
        np.testing.assert_array_equal(J[p], reference.input_jacobian(net, theta, X))
        assert sobolev[p] == reference.sobolev_loss(net, theta, X, Y, which)
