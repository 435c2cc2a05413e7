"""Shared test problems: architectures, data and parameters away from ReLU kinks."""

from __future__ import annotations

import numpy as np
import pytest

import fastbp

HIDDEN = ("sigmoid", "tanh", "relu", "identity")
OUTPUT_LOSS = (
    ("softmax", "cross_entropy"),
    ("sigmoid", "cross_entropy"),
    ("sigmoid", "mse"),
    ("identity", "mse"),
    ("softmax", "mse"),
)
DTYPES = (np.float32, np.float64)


def hidden_preactivations(net, theta, X):
    """Every hidden-layer ``Z`` for ``theta`` of shape (D,)."""
    Z_all = []
    A = X
    for W, b in net.unpack(theta)[:-1]:
        Z = A @ W + b
        Z_all.append(Z)
        A = fastbp.reference.ACTIVATIONS[net.hidden](Z)
    return Z_all


def make_problem(net, n=7, dtype=np.float64, seed=0, population=None, labels=False, margin=1e-3):
    """``(theta, X, Y)`` for ``net`` whose hidden pre-activations avoid ``|z| < margin``.

    Kinks matter only for ReLU, but every activation gets the same data so that tests
    are alike. Targets are probabilities (or labels) for softmax and sigmoid outputs and
    reals for an identity output.
    """
    rng = np.random.default_rng(seed)
    for _ in range(100):
        theta = net.init(seed=rng, population=population)
        theta += 0.1 * rng.standard_normal(theta.shape)  # nonzero biases
        X = rng.standard_normal((n, net.n_inputs))
        thetas = theta if theta.ndim == 2 else theta[None]
        if all(np.abs(Z).min() > margin for t in thetas for Z in hidden_preactivations(net, t, X)):
            break
    else:  # pragma: no cover - a hundred draws all landing on a kink
        raise RuntimeError("could not draw parameters away from the ReLU kinks")
    nL = net.n_outputs
    if labels:
        Y = rng.integers(0, nL, size=n)
    elif net.output == "softmax":
        Y = rng.dirichlet(np.ones(nL), size=n)
    elif net.output == "sigmoid":
        Y = rng.uniform(0, 1, size=(n, nL))
    else:
        Y = rng.standard_normal((n, nL))
    cast = (lambda a: a.astype(dtype)) if dtype is not None else (lambda a: a)
    return cast(theta), cast(X), (Y if labels else cast(Y))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
