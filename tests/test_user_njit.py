"""The Jacobian kernels called from the user's own ``@njit`` code: a compiled swarm loop."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numba import njit

import fastbp
from fastbp import reference
from fastbp.kernels import dense as dense_kernels
from fastbp.kernels import softmax as softmax_kernels
from fastbp.kernels import training as training_kernels
from fastbp.kernels.jacobian import forward_and_jacobian, input_jacobian, sobolev_loss


@njit
def particle_swarm(spec, X, T, which, positions, velocities, draws, own_best, own_best_loss):
    """Global-best PSO on the Sobolev loss; returns the index of the best particle."""
    P, D = positions.shape
    losses = np.empty(P)
    sobolev_loss(spec, positions, X, T, which, own_best_loss)
    own_best[:] = positions
    best = np.argmin(own_best_loss)
    for iteration in range(draws.shape[0]):
        for p in range(P):
            for d in range(D):
                velocities[p, d] = (
                    0.729 * velocities[p, d]
                    + 1.494 * draws[iteration, 0, p, d] * (own_best[p, d] - positions[p, d])
                    + 1.494 * draws[iteration, 1, p, d] * (own_best[best, d] - positions[p, d])
                )
                positions[p, d] += velocities[p, d]
        sobolev_loss(spec, positions, X, T, which, losses)
        for p in range(P):
            if losses[p] < own_best_loss[p]:
                own_best_loss[p] = losses[p]
                own_best[p] = positions[p]
        best = np.argmin(own_best_loss)
    return best


@njit
def slopes_of_the_best(spec, theta, X, J, A, J2):
    input_jacobian(spec, theta, X, J)
    forward_and_jacobian(spec, theta, X, A, J2)


def test_a_compiled_swarm_loop_calls_the_kernels():
    net = fastbp.MLP([1, 6, 1], hidden="tanh", output="identity")
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(60, 1))
    which = np.arange(60) % 2 - 1  # values and slopes of sin, alternately
    T = np.where(which < 0, np.sin(X[:, 0]), np.cos(X[:, 0]))[:, None]
    P, iterations = 24, 40
    positions = net.init(seed=1, population=P)
    start = reference.sobolev_loss(net, positions, X, T, which)
    velocities = np.zeros_like(positions)
    draws = rng.uniform(size=(iterations, 2, *positions.shape))
    own_best, own_best_loss = np.empty_like(positions), np.empty(P)

    best = particle_swarm(
        net.spec, X, T, which, positions, velocities, draws, own_best, own_best_loss
    )

    assert own_best_loss[best] < 0.5 * start.min()
    np.testing.assert_allclose(
        own_best_loss, fastbp.sobolev_loss(net, own_best, X, T, which), rtol=1e-14
    )
    np.testing.assert_allclose(
        own_best_loss, reference.sobolev_loss(net, own_best, X, T, which), rtol=1e-10
    )
    theta = own_best[best]  # one network, 1-D theta
    J, A, J2 = np.empty((60, 1, 1)), np.empty((60, 1)), np.empty((60, 1, 1))
    slopes_of_the_best(net.spec, theta, X, J, A, J2)
    A_ref, J_ref = reference.forward_and_jacobian(net, theta, X)
    np.testing.assert_allclose(J, J_ref, rtol=1e-10)
    np.testing.assert_allclose(J2, J_ref, rtol=1e-10)
    np.testing.assert_allclose(A, A_ref, rtol=1e-10)


def test_kernels_refuse_shapes_that_disagree_with_spec():
    net = fastbp.MLP([1, 6, 1], hidden="tanh", output="identity")
    theta, X = net.init(seed=0), np.zeros((5, 1))
    with pytest.raises(ValueError, match="theta"):
        input_jacobian(net.spec, theta[:-1], X, np.empty((5, 1, 1)))
    with pytest.raises(ValueError, match="J must have shape"):
        input_jacobian(net.spec, theta, X, np.empty((4, 1, 1)))
    with pytest.raises(ValueError, match="which"):
        sobolev_loss(net.spec, theta, X, np.zeros((5, 1)), np.full(5, 1), np.empty(1))


def test_softmax_kernels_refuse_shapes_that_disagree():
    Z = np.zeros((4, 3))
    with pytest.raises(ValueError, match="out must have the shape of Z"):
        softmax_kernels.softmax(Z, np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"out must have shape \(B, K, K\)"):
        softmax_kernels.softmax_jacobian(Z, np.zeros((4, 3, 2)))
    for G, out in ((np.zeros((4, 2)), np.zeros((4, 3))), (Z, np.zeros((3, 3)))):
        with pytest.raises(ValueError, match="G and out must have the shape of Z"):
            softmax_kernels.softmax_vjp(Z, G, out)


def _epoch_args(net, n=40, batch=8):
    """Arguments for ``training.train_epoch`` that it accepts, as a dict to spoil."""
    theta = net.init(seed=0)
    rng = np.random.default_rng(0)
    code, hyper = fastbp.SGD(0.1)._code_and_hyper()
    return dict(
        spec=net.spec, theta=theta, X=rng.standard_normal((n, 4)), Y=np.arange(n) % 3,
        l2=0.0, order=np.arange(n), batch_size=batch, optimizer=code, hyper=hyper,
        state=np.zeros((3, theta.size)), step=0, Xb=np.empty((batch, 4)),
        Yb=np.empty(batch, np.int64), grad=np.empty(theta.size),
        work=np.empty(batch * dense_kernels.workspace_per_row(net.spec)),
    )  # fmt: skip


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("Y", np.where(np.arange(40) % 3 == 2, 7, 0), "labels must be in"),
        ("Y", np.arange(39) % 3, "one label per row"),
        ("order", np.arange(40) + 1, "order must hold n row indices"),
        ("Xb", np.empty((4, 4)), "Xb and Yb must have"),
        ("Yb", np.empty(4, np.int64), "Xb and Yb must have"),
        ("work", np.empty(8), "work is shorter"),
        ("state", np.zeros((2, 1)), "state must have shape"),
        ("grad", np.empty(5), "grad must have theta's shape"),
    ],
)
def test_training_kernels_refuse_arguments_that_would_index_past_memory(name, value, message):
    # Labels and order index memory: from @njit code, without fastbp.train's checks.
    for net, split in ((fastbp.MLP([4, 16, 3], hidden="tanh"), False),
                       (fastbp.MLP([4, 64, 3], hidden="tanh"), True)):  # fmt: skip
        args = _epoch_args(net)
        theta = args["theta"].copy()
        args[name] = value
        with pytest.raises(ValueError, match=message):
            if split:
                training_kernels.train_epoch_split(*args.values(), 2)
            else:
                training_kernels.train_epoch(*args.values())
        np.testing.assert_array_equal(args["theta"], theta)  # refused before any step


def test_the_validation_kernel_refuses_labels_out_of_range_and_short_work():
    net = fastbp.MLP([4, 16, 3], hidden="tanh")
    args = _epoch_args(net)
    enough, short = args["work"], args["work"][:8]
    for Y, work, message in ((np.full(40, 3), enough, "labels"), (args["Y"], short, "work")):
        with pytest.raises(ValueError, match=message):
            training_kernels.evaluate(
                net.spec, args["theta"], args["X"], Y, 0.0, 8, np.empty((40, 3)), work
            )


def test_kernels_refuse_arrays_that_are_not_c_contiguous_when_compiling():
    # Numba would compile them for the other layout (seconds), then fail in a reshape.
    from numba.core.errors import TypingError

    net = fastbp.MLP([4, 16, 3], hidden="tanh")
    args = _epoch_args(net)
    X_fortran = np.asfortranarray(args["X"])
    calls = [
        lambda: dense_kernels.loss(
            net.spec, args["theta"], X_fortran, args["Y"], 0.0, True, args["work"]
        ),
        lambda: input_jacobian(net.spec, args["theta"], X_fortran, np.empty((40, 3, 4))),
        lambda: softmax_kernels.softmax(X_fortran, np.empty((40, 4))),
        lambda: training_kernels.train_epoch(*(args | dict(X=X_fortran)).values()),
    ]
    for call in calls:
        with pytest.raises(TypingError, match="C-contiguous"):
            call()


def test_sobolev_kernel_takes_which_of_any_integer_dtype_and_names_it_otherwise():
    from numba.core.errors import TypingError

    net = fastbp.MLP([2, 5, 1], hidden="tanh", output="identity")
    theta = net.init(seed=0, population=2)
    X = np.random.default_rng(0).uniform(-1, 1, size=(30, 2))
    T, which = np.ones((30, 1)), np.arange(30) % 3 - 1
    expected = fastbp.sobolev_loss(net, theta, X, T, which)
    losses = np.empty(2)
    for dtype in (np.int32, np.int8):
        sobolev_loss(net.spec, theta, X, T, which.astype(dtype), losses)
        np.testing.assert_array_equal(losses, expected)
    directions = np.maximum(which, 0)  # unsigned: no value rows
    expected = fastbp.sobolev_loss(net, theta, X, T, directions)
    sobolev_loss(net.spec, theta, X, T, directions.astype(np.uint64), losses)
    np.testing.assert_array_equal(losses, expected)
    with pytest.raises(TypingError, match="which must be a 1-D array of integers"):
        sobolev_loss(net.spec, theta, X, T, which.astype(np.float64), losses)


# The kernels reach parallel code through serial entry points; a new process that loads
# them from Numba's disk cache must start Numba's thread pool before calling them.
NEW_PROCESS = """
import numpy as np
from numba import njit
import fastbp
from fastbp.kernels.jacobian import forward_and_jacobian, input_jacobian, sobolev_loss
from fastbp.kernels.softmax import softmax_jacobian

@njit
def swarm_step(spec, thetas, X, T, which, losses, A, J, Z, S):
    sobolev_loss(spec, thetas, X, T, which, losses)
    input_jacobian(spec, thetas, X, J)
    forward_and_jacobian(spec, thetas, X, A, J)
    softmax_jacobian(Z, S)

net = fastbp.MLP([2, 16, 16, 1], hidden="sigmoid", output="identity")
thetas = net.init(seed=0, population=64)
X = np.random.default_rng(0).uniform(-1, 1, size=(256, 2))
T, which, losses = np.zeros((256, 1)), np.arange(256) % 3 - 1, np.empty(64)
A, J = np.empty((64, 256, 1)), np.empty((64, 256, 1, 2))
Z, S = np.zeros((10000, 10)), np.empty((10000, 10, 10))
swarm_step(net.spec, thetas, X, T, which, losses, A, J, Z, S)
np.testing.assert_allclose(losses, fastbp.sobolev_loss(net, thetas, X, T, which), rtol=1e-12)
print("ok")
"""


def test_njit_code_in_a_new_process_runs_the_cached_kernels():
    # The first process compiles and caches whatever is not cached yet; the second
    # loads everything from the cache (where a missing thread pool crashed).
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-c", NEW_PROCESS],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == "ok"
