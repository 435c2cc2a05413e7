"""Argument checks shared by the public functions.

Every check runs before any kernel does, and every message names the argument, what was
expected and what was given. The checks cost integer comparisons and attribute look-ups;
O(n) work (finiteness, label range) is one vectorised pass each, skipped with
``check_finite=False``.
"""

from __future__ import annotations

import math
import os

import numpy as np

from fastbp import _workspace
from fastbp.mlp import MLP

FLOAT32 = np.dtype(np.float32)
FLOAT64 = np.dtype(np.float64)
INT64 = np.dtype(np.int64)


def mlp(value):
    if type(value) is not MLP and not isinstance(value, MLP):
        raise TypeError(f"mlp must be a fastbp.MLP; got {type(value).__name__}")
    return value


def array(name, value):
    """``value`` as an ndarray, refusing objects NumPy cannot read as numbers."""
    if type(value) is np.ndarray:
        if value.dtype.kind == "f":  # the common case, first
            return value
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError) as error:
            raise TypeError(f"{name} must be an array of numbers; got {value!r}") from error
    kind = arr.dtype.kind
    if kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers; got dtype {arr.dtype}")
    return arr


def float_dtype(*arrays):
    """The working dtype: float32 only when every float argument is float32.

    Integer and boolean arrays count as float64 (they are converted to it), except
    where the caller leaves them out (integer labels do not set the dtype).
    """
    for arr in arrays:
        if arr.dtype is not FLOAT32 and arr.dtype != FLOAT32:
            return FLOAT64
    return FLOAT32


def as_float(arr, dtype):
    """C-contiguous ``arr`` of ``dtype``; no copy when it already is one."""
    if (arr.dtype is dtype or arr.dtype == dtype) and arr.flags.c_contiguous:
        return arr
    return np.ascontiguousarray(arr, dtype=dtype)


def as_labels(arr):
    """C-contiguous int64 labels; no copy when they already are."""
    if arr.dtype is INT64 and arr.flags.c_contiguous:
        return arr
    return np.ascontiguousarray(arr, dtype=INT64)


def theta(net, value):
    arr = array("theta", value)
    D = net._n_params
    if arr.ndim == 1:
        if arr.shape[0] != D:
            raise ValueError(
                f"theta has length {arr.shape[0]} but {net!r} has n_params={D}: "
                f"expected shape ({D},) or (P, {D}); got {arr.shape}"
            )
    elif arr.ndim == 2:
        if arr.shape[1] != D or arr.shape[0] == 0:
            raise ValueError(
                f"theta must have shape ({D},) or (P, {D}) with P >= 1 for {net!r}; got {arr.shape}"
            )
    else:
        raise ValueError(f"theta must have shape ({D},) or (P, {D}); got {arr.shape}")
    return arr


def inputs(net, value):
    arr = array("X", value)
    n0 = net._sizes[0]
    if arr.ndim != 2 or arr.shape[1] != n0:
        raise ValueError(
            f"X must have shape (n, {n0}) for an MLP with {n0} inputs; got {arr.shape}"
            + (" (a single point needs X[None, :])" if arr.shape == (n0,) else "")
        )
    return arr


def nonempty(name, arr):
    if arr.shape[0] == 0:
        raise ValueError(
            f"{name} has 0 rows (shape {arr.shape}): a loss is a mean over rows and "
            "needs at least one"
        )


def targets(net, value, n):
    """``(Y, is_labels)``: float targets ``(n, nL)`` or integer labels ``(n,)``."""
    arr = array("Y", value)
    nL = net._sizes[-1]
    if arr.ndim == 1 and arr.dtype.kind in "iu":
        if net._output != "softmax":
            raise ValueError(
                f"integer labels Y of shape {arr.shape} need a softmax output; this MLP's "
                f"output is {net._output!r}: pass Y of shape ({n}, {nL})"
            )
        if arr.shape[0] != n:
            raise ValueError(f"Y has {arr.shape[0]} labels but X has {n} rows")
        if arr.dtype.kind == "u" and arr.dtype.itemsize == 8:
            # Before the conversion to int64, which would wrap labels of 2**63 and more.
            labels_in_range(net, arr)
        return arr, True
    if arr.ndim != 2 or arr.shape != (n, nL):
        hint = ""
        if arr.ndim == 1 and arr.shape[0] == n:
            if nL == 1:
                hint = f" (reshape 1-D targets with Y.reshape({n}, 1))"
            elif net._output == "softmax":  # float or bool class labels, as loadtxt gives
                hint = f" (class labels must be integers: Y.astype(int); these are {arr.dtype})"
        raise ValueError(
            f"Y must have shape ({n}, {nL}) (rows of X, outputs of the MLP)"
            + (" or integer labels of shape (n,)" if net._output == "softmax" else "")
            + f"; got {arr.shape}{hint}"
        )
    return arr, False


def labels_in_range(net, labels, checks=None):
    nL = net._sizes[-1]
    bad = outside(labels, 0, nL, checks)
    if bad is not None:
        raise ValueError(f"Y holds label {bad}, outside the {nL} classes 0..{nL - 1}")


def finite(name, arr, checks=None):
    """Raise ValueError, naming ``name``, if the array ``arr`` holds NaN or inf.

    ``checks`` is ``fastbp.kernels.checks`` on the numba backend: one compiled pass
    with no temporary array (C-contiguous arrays), where NumPy's ``isfinite(arr).all()``
    costs about a microsecond for the smallest array. None: NumPy.
    """
    if arr.dtype.kind != "f":
        return
    if checks is not None and arr.flags.c_contiguous:
        ok = checks.all_finite(arr)
    else:
        ok = np.isfinite(arr).all()
    if not ok:
        raise ValueError(f"{name} holds NaN or inf (pass check_finite=False to skip this check)")


def outside(arr, low, high, checks=None):
    """An entry of the integer array ``arr`` outside ``low..high-1`` (its smallest or its
    largest), or None when every entry is inside (``checks`` as for `finite`)."""
    if arr.size == 0:
        return None
    if checks is not None and arr.flags.c_contiguous and checks.all_in_range(arr, low, high):
        return None
    smallest, largest = arr.min(), arr.max()
    if smallest < low:
        return smallest
    return largest if largest >= high else None


def scalar(name, value):
    """``value`` as a finite, non-negative float."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number; got {value!r}") from None
    if not (0.0 <= number < math.inf):
        raise ValueError(f"{name} must be finite and >= 0; got {value!r}")
    return number


# Below this many bytes a result is allocated without asking how much memory is free.
MEMORY_CHECK_BYTES = 1 << 28


def _available_bytes():
    """Memory that can still be allocated: MemAvailable where Linux reports it, else the
    free physical pages."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not a POSIX system
        return None


def out(name, value, shape, dtype, label="the result", apart=None):
    """``value`` (the argument ``name``) checked as a result buffer, or a new array.

    A buffer must not share memory with the arrays in ``apart`` (name -> array), the
    inputs the kernel reads while it writes. A new array of ``MEMORY_CHECK_BYTES`` or
    more is refused with MemoryError, naming ``label`` and the size, when it would not
    fit in the memory that is free.
    """
    if value is None:
        nbytes = dtype.itemsize * math.prod(shape)
        if nbytes >= MEMORY_CHECK_BYTES:
            available = _available_bytes()
            if available is not None and nbytes > available and _workspace.release_idle():
                available = _available_bytes()
            if available is not None and nbytes > available:
                what = " x ".join(str(length) for length in shape)
                raise MemoryError(
                    f"{label} of shape {shape} would take {what} x {dtype.itemsize} bytes = "
                    f"{nbytes / 2**30:.1f} GiB, more than the {available / 2**30:.1f} GiB "
                    "of memory available: pass fewer networks or points per call"
                )
        return _workspace.result_empty(shape, dtype)
    if type(value) is not np.ndarray:
        raise TypeError(f"{name} must be a numpy array; got {type(value).__name__}")
    if value.shape != shape or value.dtype != dtype or not value.flags.c_contiguous:
        raise ValueError(
            f"{name} must be a C-contiguous {dtype} array of shape {shape}; got "
            f"{value.dtype} {value.shape}"
            + ("" if value.flags.c_contiguous else " (not C-contiguous)")
        )
    if not value.flags.writeable:
        raise ValueError(f"{name} is read-only")
    if apart:
        separate(name, value, **apart)
    return value


_NO_TARGETS = object()  # kernel_ready's Y when a call has none (None is a wrong Y)


def kernel_ready(net, theta, X, Y=_NO_TARGETS):
    """True when ``(theta, X, Y)`` can go to a kernel as they are: ndarrays of one float
    dtype (integer labels aside), C-contiguous, of the right shapes. Without ``Y``:
    the same for ``(theta, X)``.

    The fast path of the common call: it only accepts. Anything it turns down goes
    through the checks above, which convert, or raise with a message. Written for
    speed (each attribute look-up costs tens of nanoseconds): this is most of the
    Python time of a call for a tiny network.
    """
    ndarray = np.ndarray
    if type(theta) is not ndarray or type(X) is not ndarray:
        return False
    dtype = theta.dtype
    if X.dtype is not dtype or (dtype is not FLOAT64 and dtype is not FLOAT32):
        return False
    if type(net) is not MLP or X.ndim != 2:
        return False
    n, n0 = X.shape
    if n == 0 or n0 != net._sizes[0]:
        return False
    shape = theta.shape  # (D,), or (P, D) with P >= 1
    if not (len(shape) == 1 or (len(shape) == 2 and shape[0] > 0)) or shape[-1] != net._n_params:
        return False
    if Y is _NO_TARGETS:
        return theta.flags.c_contiguous and X.flags.c_contiguous
    if type(Y) is not ndarray:
        return False
    if Y.dtype is INT64:
        if Y.shape != (n,) or net._output != "softmax":
            return False
    elif Y.dtype is not dtype or Y.shape != (n, net._sizes[-1]):
        return False
    return theta.flags.c_contiguous and X.flags.c_contiguous and Y.flags.c_contiguous


def separate(name, result, **inputs):
    """Refuse a result buffer that overlaps an input the kernel still reads."""
    for input_name, array in inputs.items():
        if np.may_share_memory(result, array):
            raise ValueError(f"{name} must not share memory with {input_name}")


def network_args(net, theta_value, X_value, check_finite, checks=None):
    """Checked ``(theta, X)`` converted to their common float dtype (``checks`` as for
    `finite`)."""
    if kernel_ready(net, theta_value, X_value):
        th, X = theta_value, X_value
    else:
        mlp(net)
        th = theta(net, theta_value)
        X = inputs(net, X_value)
        dtype = float_dtype(th, X)
        th = as_float(th, dtype)
        X = as_float(X, dtype)
    if check_finite:
        finite("theta", th, checks)
        finite("X", X, checks)
    return th, X
