"""One process per implementation for ``fastbp.benchmarks``.

Libraries timed in one process change one another's speed. Thread pools that spin
after a call share the two cores with whatever runs next, and a library's import can
change the allocator's state or the floating-point flags for all the others. Seen here,
in one process, for ``loss_and_grad`` 64-128-10 n=256: the NumPy reference took 1.0 ms
alone and 9–10 ms once JAX had run, and fastbp took 230 µs alone and 310–510 µs beside
JAX and PyTorch. A user of one library runs it alone, so each implementation is timed
in a process of its own. That process is started once (a new interpreter that runs
`main`: nothing inherited but the environment, and the caller's script is not imported
again, so it needs no ``if __name__ == "__main__"`` guard). It
builds the problems it is sent, makes the warm-up call and times loops of calls on
request, over a socket; the parent interleaves the rounds as before. POSIX only (the
socket is passed as an inherited file descriptor).

The new interpreter is given the parent's ``sys.path`` before it imports anything, so
it imports the same fastbp: ``python -m`` or ``-c`` would put the working directory
first, and in a source checkout that is the uninstalled ``fastbp/`` folder.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import traceback
from multiprocessing.connection import Connection


class WorkerError(RuntimeError):
    """An implementation's process raised, or ended, while building or timing."""


class Workers:
    """The processes of one benchmark run, started on first use, one per implementation.

    Use as a context manager; leaving it stops every process.

    Parameters
    ----------
    settings : fastbp.benchmarks.Settings
        Sent to each process: its dtype, thread limit and timing settings.
    """

    def __init__(self, settings):
        self.settings = settings
        self._workers = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        for worker in self._workers.values():
            worker.stop()
        self._workers.clear()

    def running(self):
        """The processes alive now, by implementation (each has ``pid``)."""
        return {name: worker for name, worker in self._workers.items() if worker.alive}

    def get(self, name):
        """The process for implementation ``name`` (a peer's sees only that peer)."""
        worker = self._workers.get(name)
        if worker is None or not worker.alive:
            worker = self._workers[name] = _Worker(self.settings, name)
        return worker


class _Worker:
    def __init__(self, settings, name):
        self.name = name
        ours, theirs = socket.socketpair()
        with ours, theirs:
            start = f"import sys; sys.path[:] = {sys.path!r}; import {__name__} as m; m.main()"
            command = [sys.executable, "-c", start, str(theirs.fileno()), name]
            self._process = subprocess.Popen(
                command, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL
            )
            self._connection = Connection(ours.detach())
        self._connection.send(settings)

    @property
    def pid(self):
        return self._process.pid

    @property
    def alive(self):
        return self._process.poll() is None

    def ask(self, *message):
        try:
            self._connection.send(message)
            status, value = self._connection.recv()
        except (EOFError, OSError) as error:
            code = self._process.poll()
            raise WorkerError(
                f"the {self.name} process ended (exit code {code}): {type(error).__name__}"
            ) from None
        if status == "error":
            raise WorkerError(value)
        return value

    def stop(self):
        try:
            self._connection.send(("stop",))
        except OSError:
            pass
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._connection.close()


def _serve(connection, name):
    """The process's loop: its settings, then ``build`` and ``time`` requests until
    ``stop``."""
    from fastbp import benchmarks

    settings = connection.recv()
    functions = {}
    with benchmarks.thread_limit(settings.threads):
        while True:
            try:
                command, *arguments = connection.recv()
            except EOFError:
                return
            if command == "stop":
                return
            try:
                if command == "build":
                    functions, reply = benchmarks.build_in_process(name, *arguments, settings)
                else:  # "time"
                    function_name, count = arguments
                    reply = benchmarks.time_calls(functions[function_name], count)
            except Exception:
                connection.send(("error", traceback.format_exc(limit=-3).strip()))
            else:
                connection.send(("ok", reply))


def main():
    """The process's entry point: ``argv`` is ``[-c, socket file descriptor, name]``."""
    try:
        _serve(Connection(int(sys.argv[1])), sys.argv[2])
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the parent reports
        pass
