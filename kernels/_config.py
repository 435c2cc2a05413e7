"""Compilation settings shared by every kernel, defined once.

``FASTMATH`` lets LLVM contract multiply-adds, reassociate sums (so reductions vectorise)
and ignore the sign of zero, but keeps ``nnan`` and ``ninf`` off so that NaN and inf
checks inside kernels keep working. ``FASTMATH_ORDERED`` drops ``reassoc`` as well, for
code whose accuracy rests on the order of its operations (the range reductions and
compensations in ``activations``: exp, expm1, log and log1p).
"""

from numba import njit

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
FASTMATH_ORDERED = {"nsz", "arcp", "contract"}

_OPTIONS = {"cache": True, "nogil": True, "error_model": "numpy"}


def kernel(function=None, *, parallel=False):
    """``@njit`` with fastbp's settings: cached on disk, fast math without nnan/ninf."""

    def decorate(f):
        return njit(fastmath=FASTMATH, parallel=parallel, **_OPTIONS)(f)

    return decorate if function is None else decorate(function)


def ordered(function):
    """``@njit`` for scalar helpers whose rounding must follow the written order."""
    return njit(fastmath=FASTMATH_ORDERED, **_OPTIONS)(function)
