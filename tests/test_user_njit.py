"""The Jacobian kernels called from the user's own ``@njit`` code: a compiled swarm loop."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numba import njit

import fastbp
from fastbp import reference
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
