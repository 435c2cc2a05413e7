"""Whether a parallel kernel should run on threads now, or on the calling thread.

A parallel call waits for all of its threads. Where other processes keep the cores
busy, the operating system can hold one of them back for a whole time slice: measured
here, with two other processes spinning on the two cores, `input_jacobian` on 256 points
took 7.7 ms a call on two threads against 28 us on one, and 64 networks on 256 points
8.0 ms against 2.9 ms.

So the API layer times its parallel calls. The first two calls of each kind and size
run on one thread, for a baseline (the first may include compiling). A call on threads
is slow when it takes ``SLOW_FACTOR`` times as long as the baseline and ``SLOW_EXCESS``
seconds more (a time slice). Two slow calls in a row (not counting the first call on
threads, which may compile too) send every call to one thread for ``HOLD_SECONDS``; then
threads are tried again. One is not enough: on an idle machine here, about one call in
3000 of the 64-network Jacobian was held back 4 ms (660 us, 4.7 ms once). Results do
not change: these kernels give the same numbers on any number of threads.
"""

from __future__ import annotations

import math
import time

HOLD_SECONDS = 1.0
SLOW_FACTOR = 3.0
SLOW_EXCESS = 1e-3

_one_thread_until = -math.inf
# (kind, size class) -> [fastest seconds on one thread, calls on one thread, calls on
# threads, slow calls on threads in a row]
_history = {}


class Call:
    """One kernel call's choice of threads, and its timing for the next calls' choice.

    Usage: ``call = Call(kind, size)``; run the parallel kernel if ``call.threads``, else
    the serial one; then ``call.done()``. ``size`` measures the work: calls within a
    factor of two of each other share a baseline.
    """

    __slots__ = ("record", "threads", "started")

    def __init__(self, kind, size):
        key = (kind, int(size).bit_length())
        record = _history.get(key)
        if record is None:
            record = _history[key] = [math.inf, 0, 0, 0]
        self.record = record
        self.started = time.perf_counter()
        self.threads = record[1] >= 2 and self.started >= _one_thread_until

    def done(self):
        global _one_thread_until
        now = time.perf_counter()
        seconds = now - self.started
        record = self.record
        if not self.threads:
            record[0] = min(record[0], seconds)
            record[1] += 1
            return
        record[2] += 1
        slow = seconds > SLOW_FACTOR * record[0] and seconds - record[0] > SLOW_EXCESS
        record[3] = record[3] + 1 if slow and record[2] > 1 else 0
        if record[3] == 2:
            record[3] = 0
            _one_thread_until = now + HOLD_SECONDS


def forget():
    """Drop what the calls so far have shown, and any hold (for tests)."""
    global _one_thread_until
    _one_thread_until = -math.inf
    _history.clear()
