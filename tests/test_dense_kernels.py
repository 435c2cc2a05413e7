"""The fused dense kernels against the NumPy reference."""

import numpy as np
import pytest
from conftest import (
    DTYPES,
    HIDDEN,
    OUTPUT_LOSS,
    architectures,
    assert_matches_reference,
    make_problem,
    outputs_for,
)

import fastbp
from fastbp import reference

ARCHITECTURES = architectures()
BATCHES = (1, 7, 33)


def reference_inputs(theta, X, Y):
    """The float64 arrays the reference sees: the same (possibly float32) numbers."""
    as64 = (lambda a: a.astype(np.float64)) if theta.dtype == np.float32 else (lambda a: a)
    return as64(theta), as64(X), (Y if Y.dtype.kind in "iu" else as64(Y))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("output,loss", OUTPUT_LOSS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_loss_and_grad_match_reference(hidden, output, loss, dtype):
    assert len(ARCHITECTURES) >= 40
    for index, sizes in enumerate(ARCHITECTURES):
        net = fastbp.MLP(outputs_for(output, sizes), hidden=hidden, output=output, loss=loss)
        n = BATCHES[index % len(BATCHES)]
        labels = output == "softmax" and index % 2 == 1
        theta, X, Y = make_problem(net, n=n, dtype=dtype, seed=index, labels=labels)
        l2 = 0.05 * (index % 3)
        what = f"{net} n={n} l2={l2} labels={labels}"
        value, grad = fastbp.loss_and_grad(net, theta, X, Y, l2)
        ref_value, ref_grad = reference.loss_and_grad(net, *reference_inputs(theta, X, Y), l2)
        assert_matches_reference(value, ref_value, dtype, what)
        assert_matches_reference(grad, ref_grad, dtype, what)
        assert_matches_reference(fastbp.loss(net, theta, X, Y, l2), ref_value, dtype, what)
        ref_out = reference.forward(net, *reference_inputs(theta, X, Y)[:2])
        assert_matches_reference(fastbp.forward(net, theta, X), ref_out, dtype, what)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("labels", [False, True])
def test_population_equals_stacked_singles_and_serial(dtype, labels):
    net = fastbp.MLP([3, 9, 5, 4], hidden="tanh", output="softmax")
    thetas, X, Y = make_problem(net, n=11, dtype=dtype, population=5, labels=labels)
    values, grads = fastbp.loss_and_grad(net, thetas, X, Y, 0.1)
    outputs = fastbp.forward(net, thetas, X)
    losses = fastbp.loss(net, thetas, X, Y, 0.1)
    for p, theta in enumerate(thetas):
        value, grad = fastbp.loss_and_grad(net, theta, X, Y, 0.1)
        assert values[p] == value and losses[p] == value
        np.testing.assert_array_equal(grads[p], grad)
        np.testing.assert_array_equal(outputs[p], fastbp.forward(net, theta, X))
    # The serial and parallel population kernels come from one source and agree exactly.
    from fastbp.kernels import dense

    work = np.empty(5 * 11 * net._work_per_row, dtype=dtype)
    serial_values, serial_grads = np.empty_like(values), np.empty_like(grads)
    Yk = Y.astype(np.int64) if labels else Y
    assert dense.loss_and_grad_population(
        net._spec, thetas, X, Yk, 0.1, serial_values, serial_grads, True, work
    )
    np.testing.assert_array_equal(serial_values, values)
    np.testing.assert_array_equal(serial_grads, grads)
    serial_losses, serial_outputs = np.empty_like(losses), np.empty_like(outputs)
    assert dense.loss_population(net._spec, thetas, X, Yk, 0.1, serial_losses, True, work)
    assert dense.forward_population(net._spec, thetas, X, serial_outputs, True, work)
    np.testing.assert_array_equal(serial_losses, losses)
    np.testing.assert_array_equal(serial_outputs, outputs)


def test_large_layers_use_blas_and_still_match():
    net = fastbp.MLP([70, 150, 40, 10], hidden="sigmoid", output="softmax")
    theta, X, Y = make_problem(net, n=64, labels=True)
    value, grad = fastbp.loss_and_grad(net, theta, X, Y, 1e-3)
    ref_value, ref_grad = reference.loss_and_grad(net, theta, X, Y, 1e-3)
    assert_matches_reference(value, ref_value, np.float64)
    assert_matches_reference(grad, ref_grad, np.float64)


def test_populations_with_blas_sized_products_run_one_network_at_a_time_and_match():
    # 64 x 70 x 150 multiply-adds a product: past BLAS's own threads, so the population
    # runs on the serial kernel (dense.networks_on_threads), each product on BLAS.
    from fastbp.kernels import dense

    net = fastbp.MLP([70, 150, 40, 10], hidden="tanh", output="softmax")
    assert not dense.networks_on_threads(net.sizes, 64)
    thetas, X, Y = make_problem(net, n=64, population=3, labels=True, margin=0)
    values, grads = fastbp.loss_and_grad(net, thetas, X, Y, 1e-3)
    losses = fastbp.loss(net, thetas, X, Y, 1e-3)
    outputs = fastbp.forward(net, thetas, X)
    for p, theta in enumerate(thetas):
        ref_value, ref_grad = reference.loss_and_grad(net, theta, X, Y, 1e-3)
        assert_matches_reference(values[p], ref_value, np.float64)
        assert_matches_reference(losses[p], ref_value, np.float64)
        assert_matches_reference(grads[p], ref_grad, np.float64)
        assert_matches_reference(outputs[p], reference.forward(net, theta, X), np.float64)


@pytest.mark.parametrize("layout", ["fortran", "strided", "readonly"])
def test_any_memory_layout_of_X_and_theta(layout):
    net = fastbp.MLP([4, 6, 3])
    theta, X, Y = make_problem(net, n=9, labels=True)
    expected = fastbp.loss_and_grad(net, theta, X, Y)
    if layout == "fortran":
        X2, theta2 = np.asfortranarray(X), theta
    elif layout == "strided":
        X2, theta2 = np.repeat(X, 2, axis=0)[::2], np.repeat(theta, 2)[::2]
    else:
        X2, theta2 = X.copy(), theta.copy()
        X2.flags.writeable = theta2.flags.writeable = False
    value, grad = fastbp.loss_and_grad(net, theta2, X2, Y)
    assert value == expected[0]
    np.testing.assert_array_equal(grad, expected[1])


@pytest.mark.parametrize("population", [None, 3])
def test_kernels_reject_bad_values_naming_the_argument(population):
    net = fastbp.MLP([3, 4, 2])
    theta, X, Y = make_problem(net, n=5, population=population)
    labels = np.array([0, 1, 1, 0, 1])
    for name, args in {
        "theta": (np.where(np.arange(theta.shape[-1]) == 2, np.inf, theta), X, Y),
        "X": (theta, np.where(X > 0.5, np.nan, X), Y),
        "Y": (theta, X, np.where(Y > 0.5, np.nan, Y)),
    }.items():
        for function in (fastbp.loss_and_grad, fastbp.loss):
            with pytest.raises(ValueError, match=f"^{name} holds NaN or inf"):
                function(net, *args)
        with pytest.raises(ValueError, match="label"):
            fastbp.loss_and_grad(net, theta, X, labels * 2, check_finite=False)
    with pytest.raises(ValueError, match="X holds NaN"):
        fastbp.forward(net, theta, np.full_like(X, np.nan))
    value, _ = fastbp.loss_and_grad(net, theta, np.full_like(X, np.nan), Y, check_finite=False)
    assert np.isnan(value).all()


def test_a_rejected_call_leaves_out_untouched():
    net = fastbp.MLP([3, 4, 2])
    theta, X, Y = make_problem(net, n=5)
    grad = np.full(net.n_params, 7.0)
    with pytest.raises(ValueError):
        fastbp.loss_and_grad(net, theta, np.full_like(X, np.inf), Y, out=grad)
    assert np.all(grad == 7.0)


def test_workspace_is_reused_between_calls():
    from fastbp import _workspace

    net = fastbp.MLP([4, 16, 3])
    theta, X, Y = make_problem(net, n=32, labels=True)
    fastbp.loss_and_grad(net, theta, X, Y)
    first = _workspace.scratch(np.dtype(np.float64), 1)
    fastbp.loss_and_grad(net, theta, X, Y)
    assert _workspace.scratch(np.dtype(np.float64), 1) is first


def test_kernels_called_directly_check_shapes():
    from fastbp.kernels import dense

    net = fastbp.MLP([3, 4, 2])
    theta, X, Y = make_problem(net, n=5)
    work = np.empty(5 * net._work_per_row)
    grad = np.empty_like(theta)
    calls = {
        "X": lambda: dense.loss_and_grad(
            net.spec, theta, X[:, :2].copy(), Y, 0.0, grad, True, work
        ),
        "theta": lambda: dense.loss_and_grad(net.spec, theta[:-1], X, Y, 0.0, grad, True, work),
        "Y": lambda: dense.loss_and_grad(net.spec, theta, X, Y[:4], 0.0, grad, True, work),
        "work": lambda: dense.loss_and_grad(net.spec, theta, X, Y, 0.0, grad, True, work[:9]),
        "grad": lambda: dense.loss_and_grad(net.spec, theta, X, Y, 0.0, grad[:-1], True, work),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=name):
            call()


def test_out_may_not_overlap_the_inputs():
    net = fastbp.MLP([3, 4, 2])
    theta, X, Y = make_problem(net, n=5)
    with pytest.raises(ValueError, match="out must not share memory with theta"):
        fastbp.loss_and_grad(net, theta, X, Y, out=theta)


def test_population_kernels_called_directly_with_no_rows():
    from fastbp.kernels import dense

    net = fastbp.MLP([3, 4, 2])
    thetas, X, Y = make_problem(net, n=5, population=2)
    values, grads = np.zeros(2), np.zeros_like(thetas)
    assert dense.loss_and_grad_population(
        net.spec, thetas, X[:0], Y[:0], 0.0, values, grads, True, np.empty(0)
    )
    assert dense.forward_population(net.spec, thetas, X[:0], np.empty((2, 0, 2)), True, np.empty(0))


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_cross_entropy_at_logits_far_apart_is_finite(backend):
    # Logits +-1e308: the shifted logit of the class of weight 0 rounds to -inf, and its
    # term must be 0, not 0 * inf (NaN), for labels and for one-hot targets alike. NumPy
    # may warn on the way, in the reference (the kernels do not).
    net = fastbp.MLP([1, 2], output="softmax")
    theta, X = np.array([1e308, -1e308, 0.0, 0.0]), np.array([[1.0]])
    for Y in (np.array([0]), np.array([[1.0, 0.0]])):
        quiet = "ignore" if backend == "numpy" else "raise"
        with np.errstate(over=quiet, invalid=quiet):  # 0 * inf on the way, in NumPy
            loss, grad = fastbp.loss_and_grad(net, theta, X, Y, backend=backend)
        assert loss == 0 and np.array_equal(grad, np.zeros(4))
