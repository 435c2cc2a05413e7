"""Memory for the kernels: scratch kept between calls, and a pool for large results.

Scratch: one buffer per thread and dtype (kernels release the GIL, so two threads may
run kernels at once), grown when a call needs more, so that steady-state calls do not
allocate.

Results of ``POOL_MIN_BYTES`` or more come from a pool: when the last array using one
is gone, its memory waits for the next result of the same size instead of going back
to the operating system, as PyTorch's and JAX's allocators do. A new block of memory
costs a page fault per 4 KiB on its first write: a fresh 80 MB softmax Jacobian took
9.3 ms, one written into reused memory 5.1 ms. At most ``POOL_IDLE_BYTES`` wait
(512 MiB, or an eighth of the memory on a smaller machine; ``FASTBP_POOL_BYTES`` in the
environment sets it, as a number of bytes such as ``1e9``, and 0 turns the pool off).

Buffers start on a 64-byte boundary (a cache line, two AVX registers): a kernel's rows
of scratch then line up with the vector loads, which NumPy's 16-byte alignment leaves to
chance. Seen here: a 4-16-3 network's gradient on 32 rows took 2.5 us in a process whose
scratch happened to be aligned and 3.3 us in one whose scratch was not.
"""

from __future__ import annotations

import math
import os
import threading
import warnings

import numpy as np

ALIGNMENT = 64
POOL_MIN_BYTES = 1 << 20


def _default_idle_bytes():
    """512 MiB, or an eighth of the machine's memory where that is less."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return 1 << 29
    return min(1 << 29, memory // 8)


def _idle_bytes_setting():
    """``FASTBP_POOL_BYTES`` as a number of bytes (``1e9`` too; 0 or less: no pool),
    or the default, with a warning, where it is not a number: a typo in the environment
    should not stop ``import fastbp``."""
    value = os.environ.get("FASTBP_POOL_BYTES", "").strip()
    if not value:
        return _default_idle_bytes()
    try:
        number = float(value)
        if math.isnan(number):
            raise ValueError
    except ValueError:
        default = _default_idle_bytes()
        warnings.warn(
            f"FASTBP_POOL_BYTES must be a number of bytes, such as 1e9; got {value!r}, "
            f"so fastbp keeps its default of {default} bytes",
            RuntimeWarning,
            stacklevel=2,
        )
        return default
    return int(min(max(number, 0.0), 2.0**62))


POOL_IDLE_BYTES = _idle_bytes_setting()
_local = threading.local()


def aligned_empty(shape, dtype):
    """``np.empty(shape, dtype)`` whose data starts on an ``ALIGNMENT``-byte boundary."""
    # math.prod and a tuple test, not np.prod and np.ndim: those took 4 of this
    # function's 7 microseconds, and `train` makes six of these buffers per call.
    dtype = np.dtype(dtype)
    shape = tuple(map(int, shape)) if isinstance(shape, (tuple, list)) else (int(shape),)
    return _aligned_bytes(math.prod(shape) * dtype.itemsize).view(dtype).reshape(shape)


def _aligned_bytes(nbytes):
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    skip = -raw.ctypes.data % ALIGNMENT
    return raw[skip : skip + nbytes]


def scratch(dtype, size):
    """A 1-D array of ``dtype`` with at least ``size`` entries, owned by this thread."""
    buffers = _local.__dict__
    buffer = buffers.get(dtype)
    if buffer is None or buffer.shape[0] < size:
        buffer = buffers[dtype] = aligned_empty(max(size, 1), dtype)
    return buffer


# --------------------------------------------------------------------------- kept sets

# A set of buffers up to this size waits, one set a thread, for the next call that needs
# the same (see `take`).
KEEP_MAX_BYTES = 1 << 22
_kept = threading.local()


def take(key, make):
    """The buffers that the last call on this thread with this ``key`` handed to
    `keep`, or new ones from ``make()`` (a tuple of arrays).

    For the per-call buffers of `fastbp.train`: memory that the last call left mapped
    and in cache, where new memory costs page faults and cold misses (a one-epoch call
    on the digits took 20-26 us less of 1.33 ms). A call that fails does not hand its
    set back, and a call inside another's (a callback that trains) finds none.
    """
    kept = getattr(_kept, "set", None)
    if kept is not None and kept[0] == key:
        _kept.set = None
        return kept[1]
    return make()


def keep(key, buffers):
    """Leave ``buffers`` (a tuple of arrays, no longer used) for the next `take` of
    ``key`` on this thread, in place of any set left before; none over
    ``KEEP_MAX_BYTES``."""
    if sum(buffer.nbytes for buffer in buffers) <= KEEP_MAX_BYTES:
        _kept.set = (key, buffers)


# --------------------------------------------------------------------------- result pool

_idle = {}  # nbytes -> blocks (aligned uint8 arrays) no result uses
_idle_bytes = 0
_pool_lock = threading.Lock()


class _Lease:
    """Lends a pooled block to one result array, which keeps it as its ``base``; the
    block goes back to the pool when the array and all its views are gone."""

    __slots__ = ("__array_interface__", "_block")

    def __init__(self, block, shape, dtype):
        self._block = block
        self.__array_interface__ = {
            "shape": shape,
            "typestr": dtype.str,
            "data": (block.ctypes.data, False),
            "version": 3,
        }

    def __del__(self):
        try:
            _give_back(self._block)
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def _give_back(block):
    global _idle_bytes
    with _pool_lock:
        if _idle_bytes + block.nbytes <= POOL_IDLE_BYTES:
            _idle.setdefault(block.nbytes, []).append(block)
            _idle_bytes += block.nbytes


def result_empty(shape, dtype):
    """A new C-contiguous result array, ``np.empty(shape, dtype)`` as far as the caller
    can tell; of ``POOL_MIN_BYTES`` or more, in memory from the pool."""
    global _idle_bytes
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < POOL_MIN_BYTES or POOL_IDLE_BYTES <= 0:
        return np.empty(shape, dtype)
    with _pool_lock:
        blocks = _idle.get(nbytes)
        block = blocks.pop() if blocks else None
        if block is not None:
            _idle_bytes -= nbytes
    if block is None:
        block = _aligned_bytes(nbytes)
    return np.asarray(_Lease(block, tuple(shape), dtype))


def release_idle():
    """Hand the pool's idle memory back to the operating system; returns how much."""
    global _idle_bytes
    with _pool_lock:
        released, _idle_bytes = _idle_bytes, 0
        _idle.clear()
    return released
