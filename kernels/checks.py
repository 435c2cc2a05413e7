"""Input checks that run as compiled passes: no temporary arrays, vectorised.

``np.isfinite(a).all()`` allocates a boolean array and takes two passes; for the small
arrays of a swarm loop its fixed cost (about a microsecond) is most of a call, and for
a large batch of logits it is a tenth of the work. The API layer calls these on the
numba backend; each answers yes or no, and the caller names the culprit.
"""

from numba.core import errors, types
from numba.extending import overload

from fastbp.kernels._config import kernel


def c_contiguous(*arrays):
    """Nothing at run time. A kernel that calls it first fails to compile at once, with a
    message that says why, when one of ``arrays`` is not C-contiguous; otherwise Numba
    compiled the kernel for the other layout (seconds) and then failed in a reshape."""


@overload(c_contiguous, jit_options={"cache": True})
def _c_contiguous_overload(*arrays):
    for array in arrays:
        if isinstance(array, types.Array) and array.layout != "C":
            raise errors.TypingError(
                "fastbp's kernels take C-contiguous arrays only (np.ascontiguousarray); "
                f"one of this call's is {array}"
            )
    return lambda *arrays: None


@kernel
def all_finite(a):
    """Whether every entry of the C-contiguous array ``a`` is finite.

    ``x * 0`` is 0 for finite x and NaN for inf or NaN, so one sum answers; as an
    indexed loop it vectorises (a loop over the array's iterator does not, and took
    ten times as long).
    """
    flat = a.reshape(a.size)
    total = 0.0
    for i in range(flat.shape[0]):
        total += flat[i] * 0.0
    return total == 0.0


@kernel
def all_in_range(a, low, high):
    """Whether every entry of the C-contiguous integer array ``a`` is in ``low..high-1``."""
    flat = a.reshape(a.size)
    outside = False
    for i in range(flat.shape[0]):  # no early exit, so that the loop vectorises
        outside |= (flat[i] < low) | (flat[i] >= high)
    return not outside
