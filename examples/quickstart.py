"""Loss, gradient, gradient check and input Jacobian of a small network."""

import numpy as np

import fastbp

net = fastbp.MLP([4, 16, 3], hidden="sigmoid", output="softmax")
theta = net.init(seed=0)
rng = np.random.default_rng(0)
X = rng.standard_normal((32, 4))
y = rng.integers(0, 3, size=32)

loss, grad = fastbp.loss_and_grad(net, theta, X, y, l2=1e-3)
# Checked at a random theta: init's zero biases would hide a mistake in a bias's terms.
probe = rng.normal(size=net.n_params)
error = fastbp.gradcheck(lambda t: fastbp.loss_and_grad(net, t, X, y, l2=1e-3), probe)
J = fastbp.input_jacobian(net, theta, X)
print(f"{net}\nloss {loss:.6f}, |grad| {np.linalg.norm(grad):.6f}")
print(f"gradcheck: max relative error {float(error):.2e}")
print(f"input Jacobian of the first row (3 outputs x 4 inputs):\n{J[0]}")
