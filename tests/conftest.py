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


def assert_matches_reference(got, expected, dtype, what=""):
    """The agreement the kernels keep with the reference: float64 to ``rtol=1e-10``;
    float32 against the float64 reference to ``rtol=2e-4, atol=1e-6``; absolute
    tolerances scaled to the data."""
    got = np.asarray(got)
    expected = np.asarray(expected)
    assert got.shape == expected.shape, (what, got.shape, expected.shape)
    assert got.dtype == dtype, (what, got.dtype, dtype)
    scale = float(np.abs(expected).max()) if expected.size else 1.0
    if dtype == np.float64:
        rtol, atol = 1e-10, 1e-10 * scale
    else:
        rtol, atol = 2e-4, 1e-6 * max(scale, 1.0)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg=what)


def outputs_for(output, sizes):
    """``sizes`` with a second output where a softmax would have one (MLP refuses those:
    a softmax over one output is always 1)."""
    return list(sizes[:-1]) + [2] if output == "softmax" and sizes[-1] == 1 else list(sizes)


def architectures():
    """At least forty architectures: depth 1 to 4, widths from 1, odd shapes."""
    sizes = [
        [1, 1], [1, 2], [2, 1], [3, 4], [5, 3], [4, 10],
        [1, 1, 1], [2, 1, 2], [1, 3, 1], [3, 5, 2], [4, 16, 3], [2, 7, 4], [6, 2, 5],
        [3, 1, 3], [8, 12, 1], [5, 33, 2], [1, 4, 4, 1], [2, 3, 3, 2], [3, 8, 6, 4],
        [4, 1, 5, 3], [2, 17, 9, 3], [7, 5, 3, 1], [6, 6, 6, 6], [1, 2, 3, 4, 5],
        [5, 4, 3, 2, 1], [3, 9, 1, 9, 2], [2, 8, 8, 8, 3], [4, 3, 7, 2, 6], [10, 20, 10],
        [12, 3, 12], [9, 1, 1, 2], [2, 40, 2], [16, 8, 4, 2], [3, 2, 2, 2, 3], [1, 16, 1],
        [7, 13, 11, 5], [4, 4], [11, 6, 3], [2, 5, 5, 5, 2], [6, 30, 20, 10],
    ]  # fmt: skip
    return [list(s) for s in sizes]
