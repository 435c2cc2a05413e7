"""Fit a network to values at some points and partial derivatives at others, by swarm.

The data give, at each point ``x = (x1, x2)``, either ``f(x)``, or ``∂f/∂x1``, or
``∂f/∂x2`` of ``f(x) = sin(x1) + x1 x2 / 2``, never more than one of them. A particle
swarm (plain NumPy) moves 256 parameter vectors of a 2-8-8-1 sigmoid network; each
iteration scores all of them with one call, ``fastbp.sobolev_loss``: shape ``(P, D)`` in,
``(P,)`` out, values and the one needed Jacobian column per point in a single pass.
"""

import time

import numpy as np

import fastbp


def f_and_gradient(X):
    x1, x2 = X[:, 0], X[:, 1]
    return np.sin(x1) + 0.5 * x1 * x2, np.stack([np.cos(x1) + 0.5 * x2, 0.5 * x1], axis=1)


rng = np.random.default_rng(0)
net = fastbp.MLP([2, 8, 8, 1], hidden="sigmoid", output="identity")

# 180 training points; which = -1: T is f(x); which = j: T is ∂f/∂x_j.
X = rng.uniform(-2, 2, size=(180, 2))
which = np.arange(180) % 3 - 1
values, gradients = f_and_gradient(X)
T = np.where(which < 0, values, gradients[np.arange(180), np.maximum(which, 0)])[:, None]

# Global-best particle swarm with the usual constriction coefficients.
P, iterations = 256, 600
inertia, pull_own, pull_best = 0.729, 1.494, 1.494
positions = net.init(seed=1, population=P)
velocities = 0.1 * rng.standard_normal(positions.shape)
losses = np.empty(P)  # one buffer, reused every iteration
fastbp.sobolev_loss(net, positions, X, T, which, out=losses)
own_best, own_best_loss = positions.copy(), losses.copy()

start = time.perf_counter()
for iteration in range(1, iterations + 1):
    best = own_best[np.argmin(own_best_loss)]
    r_own, r_best = rng.uniform(size=(2, *positions.shape))
    velocities = (
        inertia * velocities
        + pull_own * r_own * (own_best - positions)
        + pull_best * r_best * (best - positions)
    )
    np.clip(velocities, -1.0, 1.0, out=velocities)
    positions += velocities
    fastbp.sobolev_loss(net, positions, X, T, which, out=losses)
    improved = losses < own_best_loss
    own_best[improved], own_best_loss[improved] = positions[improved], losses[improved]
    if iteration == 1 or iteration % 100 == 0:
        print(f"iteration {iteration:4d}   best Sobolev loss {own_best_loss.min():.5f}")
seconds = time.perf_counter() - start
print(f"{iterations} iterations x {P} networks in {seconds:.2f} s")

# How well does the best network fit values and both derivatives on fresh points?
theta = own_best[np.argmin(own_best_loss)]
X_test = rng.uniform(-2, 2, size=(1000, 2))
f_test, gradient_test = f_and_gradient(X_test)
A, J = fastbp.forward_and_jacobian(net, theta, X_test)
print(f"RMS error on fresh points: f {np.sqrt(np.mean((A[:, 0] - f_test) ** 2)):.4f}", end="")
for j in range(2):
    error = np.sqrt(np.mean((J[:, 0, j] - gradient_test[:, j]) ** 2))
    print(f", df/dx{j + 1} {error:.4f}", end="")
print(f"   (f itself has RMS {np.sqrt(np.mean(f_test**2)):.3f})")
