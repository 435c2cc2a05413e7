"""Seed 000: an iris classifier with all parameters rolled into one flat theta, whose
hand-written partial derivatives came out wrong.

fastbp answers with the flat layout (``MLP.unpack`` / ``MLP.pack``), a correct gradient in
that layout, and ``gradcheck``, which reports a broken gradient's worst coordinate and
both values there: here every coordinate is off by the same factor, the n of the mean.
"""

import numpy as np

import fastbp
from fastbp.datasets import load_iris

X, y = load_iris()
X = (X - X.mean(axis=0)) / X.std(axis=0)
net = fastbp.MLP([4, 2, 3], hidden="sigmoid", output="softmax")  # the question's 2 hidden units
theta = net.init(seed=0)
(W1, b1), (W2, b2) = net.unpack(theta)  # views into theta: W1 (4, 2), b1 (2,), ...


def hand_written(t):
    """The question's mistake: the output delta ignores the 1/n of the mean loss."""
    (W1, b1), (W2, b2) = net.unpack(t)
    A1 = fastbp.reference.sigmoid(X @ W1 + b1)
    P = fastbp.reference.softmax(A1 @ W2 + b2)
    delta2 = P - np.eye(3)[y]  # should be divided by len(X)
    delta1 = delta2 @ W2.T * A1 * (1 - A1)
    grad = net.pack([(X.T @ delta1, delta1.sum(0)), (A1.T @ delta2, delta2.sum(0))])
    return fastbp.loss(net, t, X, y), grad


# Checked at a random theta: init's zero biases would hide a mistake in a bias's terms.
probe = np.random.default_rng(1).normal(size=net.n_params)
wrong = fastbp.gradcheck(hand_written, probe)
right = fastbp.gradcheck(lambda t: fastbp.loss_and_grad(net, t, X, y), probe)
print(f"hand-written gradient: max relative error {float(wrong):.2g} at theta[{wrong.index}]")
print(f"fastbp.loss_and_grad:  max relative error {float(right):.2g}")
print(
    f"at theta[{wrong.index}] the hand-written value is {wrong.analytic / wrong.numeric:.0f} "
    f"times the finite difference: the missing 1/n, n = {len(X)} rows"
)

theta, history = fastbp.train(
    net, theta, X, y, epochs=300, batch_size=16, optimizer=fastbp.Adam(0.05), seed=0
)
accuracy = np.mean(fastbp.forward(net, theta, X).argmax(axis=1) == y)
print(f"after training: loss {history['loss'][-1]:.3f}, training accuracy {100 * accuracy:.1f} %")
