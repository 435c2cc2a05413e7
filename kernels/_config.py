"""Compilation settings shared by every kernel, defined once.

``FASTMATH`` lets LLVM contract multiply-adds, reassociate sums (so reductions vectorise)
and ignore the sign of zero, but keeps ``nnan`` and ``ninf`` off so that NaN and inf
checks inside kernels keep working. ``FASTMATH_ORDERED`` drops ``reassoc`` as well, for
code whose accuracy rests on the order of its operations (the range reductions and
compensations in ``activations``: exp, the sigmoid, tanh, log and log1p).

Importing this module starts Numba's thread pool (3 ms here). Serial entry points such
as ``jacobian.input_jacobian`` call parallel kernels; loaded from the disk cache in a new
process, they need the pool's scheduler before their first call, and Numba only starts
it for a parallel kernel called directly from Python. Without it, ``input_jacobian``
stopped the process with "LLVM ERROR: Symbol not found: allocate_sched" and
``sobolev_loss`` crashed (Numba issue 8578).
"""

import types

import numba
from numba import njit

numba.get_num_threads()  # starts the thread pool: see the module notes

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
FASTMATH_ORDERED = {"nsz", "arcp", "contract"}

_OPTIONS = {"cache": True, "nogil": True, "error_model": "numpy"}


def kernel(function=None, *, parallel=False):
    """``@njit`` with fastbp's settings: cached on disk, fast math without nnan/ninf."""

    def decorate(f):
        return njit(fastmath=FASTMATH, parallel=parallel, **_OPTIONS)(f)

    return decorate if function is None else decorate(function)


def serial_and_parallel(function):
    """``(serial, parallel)``: two kernels compiled from one source, the second with
    ``prange`` loops spread over threads.

    Numba's disk cache names a kernel's files after its function's qualified name and
    line, and does not tell the two options apart: compiled from one function, each twin
    would load whichever the other saved last (a serial population gradient then ran on
    threads, and took 8 ms where 0.3 ms was due). The parallel twin gets a function, and
    a name, of its own.
    """
    twin = types.FunctionType(
        function.__code__,
        function.__globals__,
        function.__name__ + "_parallel",
        function.__defaults__,
        function.__closure__,
    )
    twin.__qualname__ = function.__qualname__ + "_parallel"
    twin.__doc__ = function.__doc__
    return kernel(function), kernel(parallel=True)(twin)


def ordered(function):
    """``@njit`` for scalar helpers whose rounding must follow the written order."""
    return njit(fastmath=FASTMATH_ORDERED, **_OPTIONS)(function)
