"""Check an analytic gradient against central finite differences."""

from __future__ import annotations

import numpy as np


class GradcheckResult(float):
    """The largest relative error, as a float, with where it happened.

    Attributes
    ----------
    index : int
        The coordinate of theta with the largest error.
    analytic, numeric : float
        The two gradient values at that coordinate.
    """

    def __new__(cls, error, index, analytic, numeric):
        result = super().__new__(cls, error)
        result.index = index
        result.analytic = analytic
        result.numeric = numeric
        return result

    def __reduce__(self):  # pickling: float's own would drop the attributes
        return GradcheckResult, (float(self), self.index, self.analytic, self.numeric)

    def __repr__(self):
        return (
            f"GradcheckResult({float(self):.3g}, index={self.index}, "
            f"analytic={self.analytic:.10g}, numeric={self.numeric:.10g})"
        )


def _low_precision(value):
    """Whether ``value`` is of a float type coarser than float64 (float32, float16,
    bfloat16...)."""
    dtype = np.asarray(value).dtype
    try:
        return bool(np.finfo(dtype).eps > 1e-10)
    except (TypeError, ValueError):  # not a float type, or one NumPy does not know
        return "float" in dtype.name and dtype.itemsize < 8  # ml_dtypes' bfloat16


def gradcheck(f, theta, eps=None):
    """Largest relative error between ``f``'s gradient and central differences.

    .. math::

        \\hat g_i = \\frac{f(\\theta + \\epsilon e_i) - f(\\theta - \\epsilon e_i)}{2\\epsilon},
        \\qquad
        \\mathrm{error} = \\max_i |g_i - \\hat g_i| \\,/\\,
            \\max(\\|g\\|_\\infty, \\|\\hat g\\|_\\infty)

    Errors are relative to the largest gradient entry (of either), so coordinates whose
    gradient is nearly zero do not turn rounding noise into large ratios. A correct
    gradient gives about 1e-9 or less (about 1e-3 or less where ``f`` computes in float32).
    A wrong one gives an error as large as its worst
    mistake is against that largest entry: of order one for a missing factor or a
    transposed product, less for a slip in a small entry (compare ``analytic`` and
    ``numeric`` at ``index``). Check at a random theta, not only at ``MLP.init``'s,
    whose zero biases hide mistakes in terms that multiply a bias.

    Parameters
    ----------
    f : callable
        ``f(theta) -> (value, grad)``, ``grad`` of the shape of theta. It is called
        ``2 D + 1`` times, with float64 copies of theta.
    theta : array_like of shape (D,)
        Where to check. It is not modified.
    eps : float, optional
        The finite-difference step. By default 1e-6, or 5e-3 where ``f`` returns float32
        (or coarser) values or gradients: in float32 a step of 1e-6 moves the loss by
        less than its rounding, and the differences would be noise (5e-3, about the cube
        root of float32's epsilon, balances rounding against truncation).

    Returns
    -------
    GradcheckResult
        A float (the error) with ``.index``, ``.analytic`` and ``.numeric``.

    Examples
    --------
    >>> import numpy as np, fastbp
    >>> net = fastbp.MLP([3, 2, 3])
    >>> X, y = np.ones((4, 3)), np.array([0, 1, 2, 1])
    >>> err = fastbp.gradcheck(lambda t: fastbp.loss_and_grad(net, t, X, y), net.init())
    >>> err < 1e-6
    True
    """
    point = np.array(theta, dtype=np.float64)
    if point.ndim != 1 or point.size == 0:
        raise ValueError(f"theta must be a non-empty 1-D array; got shape {point.shape}")
    if not np.isfinite(point).all():
        raise ValueError("theta holds NaN or inf")
    if eps is not None:
        eps = float(eps)
        if not eps > 0:
            raise ValueError(f"eps must be positive; got {eps}")
    returned = f(point.copy())
    if not (isinstance(returned, (tuple, list)) and len(returned) == 2):
        raise TypeError(
            "f(theta) must return a pair (value, grad), as loss_and_grad does; got "
            f"{type(returned).__name__}"
        )
    if eps is None:
        eps = 5e-3 if any(_low_precision(x) for x in returned) else 1e-6
    grad = np.asarray(returned[1], dtype=np.float64)
    if grad.shape != point.shape:
        raise ValueError(
            f"f(theta) returned a gradient of shape {grad.shape}; theta has shape {point.shape}"
        )
    numeric = np.empty_like(point)
    work = point.copy()
    for i in range(point.size):
        work[i] = point[i] + eps
        plus = float(f(work.copy())[0])
        work[i] = point[i] - eps
        minus = float(f(work.copy())[0])
        work[i] = point[i]
        numeric[i] = (plus - minus) / (2 * eps)
    difference = np.abs(grad - numeric)
    scale = max(np.abs(grad).max(), np.abs(numeric).max())
    index = int(np.argmax(difference))
    error = difference[index] / scale if scale > 0 else 0.0
    return GradcheckResult(error, index, float(grad[index]), float(numeric[index]))
