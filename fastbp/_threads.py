"""Whether a parallel kernel should run on threads now, or on the calling thread.

A parallel call waits for all of its threads. Where other processes keep the cores
busy, the operating system can hold one of them back for a whole time slice: measured
here, with two other processes spinning on the two cores, `input_jacobian` on 256 points
took 7.7 ms a call on two threads against 28 us on one, and 64 networks on 256 points
8.0 ms against 2.9 ms.

So the API layer times its parallel calls (`Call`). The first two calls of each kind
and size run on one thread, for a baseline (the first may include compiling). A call on
threads is slow when it takes ``SLOW_FACTOR`` times as long as the baseline and
``SLOW_EXCESS`` seconds more: a time slice. Two slow calls in a row send every call to
one thread for ``HOLD_SECONDS``; then threads are tried again.

Not judged: the first call on threads (it may compile), and the first ``SETTLING_CALLS``
after ``IDLE_SECONDS`` without a call of the kind. Threads that have slept wake slowly
here: after a pause of 0.15 s, the 64-network Jacobian (660 us back to back) took 7.1
and 4.6 ms on its first two calls, in about one pause in five. An idle machine also
holds a call back now and then (4.7 ms, once in 3000 calls): hence two in a row.

Results do not change: these kernels give the same numbers on any number of threads.
"""

from __future__ import annotations

import math
import time

HOLD_SECONDS = 1.0
SLOW_FACTOR = 3.0
SLOW_EXCESS = 1e-3
IDLE_SECONDS = 0.02
SETTLING_CALLS = 4

_one_thread_until = -math.inf


class _History:
    """What the calls of one kind and size class have shown."""

    __slots__ = ("baseline", "one_thread", "on_threads", "slow_in_a_row", "last", "settling")

    def __init__(self):
        self.baseline = math.inf  # the fastest call on one thread, seconds
        self.one_thread = 0  # calls on one thread
        self.on_threads = 0  # calls on threads
        self.slow_in_a_row = 0
        self.last = -math.inf  # when the last call ended
        self.settling = 0  # calls still to pass unjudged after an idle spell


_histories = {}  # (kind, size class) -> _History


class Call:
    """One kernel call's choice of threads, and its timing for the next calls' choice.

    Usage: ``call = Call(kind, size)``; run the parallel kernel if ``call.threads``, else
    the serial one; then ``call.done()``. ``size`` measures the work: calls within a
    factor of two of each other share a baseline.
    """

    __slots__ = ("history", "threads", "started")

    def __init__(self, kind, size):
        key = (kind, int(size).bit_length())
        history = _histories.get(key)
        if history is None:
            history = _histories[key] = _History()
        self.history = history
        self.started = now = time.perf_counter()
        self.threads = history.one_thread >= 2 and now >= _one_thread_until
        if now - history.last > IDLE_SECONDS:
            history.settling = SETTLING_CALLS

    def done(self):
        global _one_thread_until
        history = self.history
        history.last = now = time.perf_counter()
        seconds = now - self.started
        if not self.threads:
            history.baseline = min(history.baseline, seconds)
            history.one_thread += 1
            return
        history.on_threads += 1
        if history.settling > 0 or history.on_threads == 1:
            history.settling -= 1
            return
        baseline = history.baseline
        if seconds > SLOW_FACTOR * baseline and seconds - baseline > SLOW_EXCESS:
            history.slow_in_a_row += 1
        else:
            history.slow_in_a_row = 0
        if history.slow_in_a_row == 2:
            history.slow_in_a_row = 0
            _one_thread_until = now + HOLD_SECONDS


class _OneThread:
    """A call with no choice to make: it runs on one thread, and its time is not kept."""

    __slots__ = ()
    threads = False

    def done(self):
        pass


ONE_THREAD = _OneThread()


def forget():
    """Drop what the calls so far have shown, and any hold (for tests)."""
    global _one_thread_until
    _one_thread_until = -math.inf
    _histories.clear()
