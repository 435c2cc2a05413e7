"""Integer codes for activations and losses.

Kernels take these codes instead of strings or callables (a Python object crossing into
an ``@njit`` call costs microseconds; an integer costs nothing). Pure Python, so the API
layer can import it without Numba.
"""

IDENTITY = 0
SIGMOID = 1
TANH = 2
RELU = 3
SOFTMAX = 4

MSE = 0
CROSS_ENTROPY = 1

ACTIVATION_CODES = {
    "identity": IDENTITY,
    "sigmoid": SIGMOID,
    "tanh": TANH,
    "relu": RELU,
    "softmax": SOFTMAX,
}
LOSS_CODES = {"mse": MSE, "cross_entropy": CROSS_ENTROPY}
