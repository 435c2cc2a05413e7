"""Seed 003: the local gradient of a softmax layer.

The Jacobian of ``s = softmax(x)`` is ``J[i, j] = s_i (δ_ij - s_j)``, i.e.
``diag(s) - s sᵀ`` (the question's code used the inputs x where s belongs). Backprop
never needs J itself: ``g @ J = s * (g - g·s)``. And the softmax must subtract the
maximum, or ``exp`` overflows.
"""

import numpy as np

import fastbp

x = np.array([1.0, 2.0, 3.0, 4.0])
s = fastbp.softmax(x)
J = fastbp.softmax_jacobian(x)
print("softmax:", s)
print("Jacobian equals diag(s) - s s^T:", np.allclose(J, np.diag(s) - np.outer(s, s)))
print("rows of J sum to 0:", np.allclose(J.sum(axis=1), 0))

g = np.array([0.1, -0.2, 0.3, 0.05])  # dL/ds from the layer above
print("g @ J            :", g @ J)
print("softmax_vjp(x, g):", fastbp.softmax_vjp(x, g))

Z = np.random.default_rng(3).standard_normal((100_000, 10))  # a batch of logits
JB = fastbp.softmax_jacobian(Z)  # (100000, 10, 10), one Jacobian per row
print("batched Jacobians:", JB.shape)
print("stable at logits ±1e4:", fastbp.softmax(np.array([1e4, -1e4, 0.0])))
