"""Seed 001: a 2-4-1 sigmoid network on the planar "flower" data, squared error, whose
weight gradients came out with the wrong shapes (element-wise against matrix products).

In fastbp every gradient has its parameter's shape: unpack the flat gradient with the
same ``MLP.unpack`` as the parameters. Shape mistakes get an error naming the shapes.

Two conventions differ from the question's: rows are samples, so fastbp's ``W`` of a
layer is ``(n_in, n_out)`` (``Z = X @ W + b``), the transpose of the question's ``W`` in
``Z = W @ X``; and fastbp's squared error is ``½‖A - Y‖²`` per row, so its gradient is
half that of the question's loss without the ½.
"""

import numpy as np

import fastbp
from fastbp.datasets import make_planar

X, y = make_planar(n=400, seed=1)  # X (400, 2); rows are samples, as everywhere in fastbp
Y = y.reshape(-1, 1).astype(float)  # targets (n, nL) = (400, 1)
net = fastbp.MLP([2, 4, 1], hidden="sigmoid", output="sigmoid", loss="mse")
theta = net.init(seed=1)

loss, grad = fastbp.loss_and_grad(net, theta, X, Y)
for (W, b), (dW, db) in zip(net.unpack(theta), net.unpack(grad)):
    print(f"W {W.shape} -> dL/dW {dW.shape};  b {b.shape} -> dL/db {db.shape}")

try:
    fastbp.loss_and_grad(net, theta, X.T, Y)  # the question's (features, samples) layout
except ValueError as error:
    print(f"ValueError: {error}")

theta, history = fastbp.train(
    net, theta, X, Y, epochs=300, batch_size=32, optimizer=fastbp.SGD(1.0, momentum=0.9)
)
accuracy = np.mean((fastbp.forward(net, theta, X)[:, 0] > 0.5) == y)
print(
    f"loss {history['loss'][0]:.4f} -> {history['loss'][-1]:.4f}; accuracy {100 * accuracy:.1f} %"
)
