"""fastbp: compiled backpropagation kernels for dense neural networks on the CPU.

Numba kernels compute fused forward/backward passes, softmax Jacobians and input
Jacobians; ``fastbp.reference`` is the same API in plain NumPy, the ground truth the
kernels are tested against. Every function takes ``backend="numba"`` (the default) or
``backend="numpy"``; ``FASTBP_BACKEND=numpy`` changes the default.
"""


def _kernels_beside_the_source():
    """In a source checkout, ``kernels/`` sits beside this folder and installation maps
    it to ``fastbp.kernels`` (``package-dir`` in pyproject.toml). Where this folder is
    imported as it is, from the project root, make the same mapping, so that
    ``import fastbp`` works there too."""
    import importlib.util
    import os
    import sys

    if importlib.util.find_spec(f"{__name__}.kernels") is not None:
        return  # installed, or an editable install: the mapping is in place
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels")
    init = os.path.join(folder, "__init__.py")
    if not os.path.isfile(init):
        return
    spec = importlib.util.spec_from_file_location(
        f"{__name__}.kernels", init, submodule_search_locations=[folder]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    globals()["kernels"] = module


_kernels_beside_the_source()

from fastbp import reference  # noqa: E402
from fastbp._dense import forward, loss, loss_and_grad  # noqa: E402
from fastbp._jacobian import forward_and_jacobian, input_jacobian, sobolev_loss  # noqa: E402
from fastbp._softmax import softmax, softmax_jacobian, softmax_vjp  # noqa: E402
from fastbp.gradcheck import GradcheckResult, gradcheck  # noqa: E402
from fastbp.mlp import MLP  # noqa: E402
from fastbp.training import SGD, Adam, TrainingDiverged, train  # noqa: E402

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
