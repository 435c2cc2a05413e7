"""Scratch memory for the kernels, kept between calls so that steady-state calls do not
allocate. One buffer per thread and dtype (kernels release the GIL, so two threads may
run kernels at once), grown when a call needs more."""

from __future__ import annotations

import threading

import numpy as np

_local = threading.local()


def scratch(dtype, size):
    """A 1-D array of ``dtype`` with at least ``size`` entries, owned by this thread."""
    buffers = _local.__dict__
    buffer = buffers.get(dtype)
    if buffer is None or buffer.shape[0] < size:
        buffer = buffers[dtype] = np.empty(max(size, 1), dtype=dtype)
    return buffer
