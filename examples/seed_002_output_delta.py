"""Seed 002: should the output delta be multiplied by the sigmoid's derivative?

It depends on the loss. With cross-entropy on a sigmoid output the σ'(z) cancels and the
delta is ``P - Y``; with mean squared error it stays: ``(P - Y) σ'(z)``. A numerical
gradient check settles it: each delta is right for one loss and wrong for the other.
"""

import numpy as np

import fastbp
from fastbp.reference import sigmoid

net_ce = fastbp.MLP([3, 4, 2], hidden="sigmoid", output="sigmoid", loss="cross_entropy")
net_mse = fastbp.MLP([3, 4, 2], hidden="sigmoid", output="sigmoid", loss="mse")
theta = np.random.default_rng(1).normal(size=net_ce.n_params)  # random biases too
rng = np.random.default_rng(2)
X, Y = rng.standard_normal((20, 3)), rng.uniform(size=(20, 2))


def backprop(net, with_sigmoid_derivative):
    def loss_and_grad(t):
        (W1, b1), (W2, b2) = net.unpack(t)
        A1 = sigmoid(X @ W1 + b1)
        P = sigmoid(A1 @ W2 + b2)
        delta2 = (P - Y) / len(X)
        if with_sigmoid_derivative:
            delta2 = delta2 * P * (1 - P)
        delta1 = delta2 @ W2.T * A1 * (1 - A1)
        grad = net.pack([(X.T @ delta1, delta1.sum(0)), (A1.T @ delta2, delta2.sum(0))])
        return fastbp.loss(net, t, X, Y), grad

    return loss_and_grad


for net in (net_ce, net_mse):
    for derivative in (False, True):
        error = fastbp.gradcheck(backprop(net, derivative), theta)
        delta = "(P - Y) σ'(z)" if derivative else "P - Y        "
        verdict = "right" if error < 1e-6 else "wrong"
        print(f"loss {net.loss:13s} delta {delta}: gradcheck {float(error):.1e}  {verdict}")
