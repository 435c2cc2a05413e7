"""fastbp: compiled backpropagation kernels for dense neural networks on the CPU.

Numba kernels compute fused forward/backward passes, softmax Jacobians and input
Jacobians; ``fastbp.reference`` is the same API in plain NumPy, the ground truth the
kernels are tested against. Every function takes ``backend="numba"`` (the default) or
``backend="numpy"``; ``FASTBP_BACKEND=numpy`` changes the default.
"""

from fastbp import reference
from fastbp._dense import forward, loss, loss_and_grad
from fastbp._jacobian import forward_and_jacobian, input_jacobian, sobolev_loss
from fastbp._softmax import softmax, softmax_jacobian, softmax_vjp
from fastbp.gradcheck import GradcheckResult, gradcheck
from fastbp.mlp import MLP
from fastbp.training import SGD, Adam, TrainingDiverged, train

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "SGD",
    "Adam",
    "TrainingDiverged",
    "GradcheckResult",
    "forward",
    "forward_and_jacobian",
    "gradcheck",
    "input_jacobian",
    "loss",
    "loss_and_grad",
    "reference",
    "sobolev_loss",
    "softmax",
    "softmax_jacobian",
    "softmax_vjp",
    "train",
]
