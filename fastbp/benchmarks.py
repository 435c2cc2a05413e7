"""Side-by-side timings of fastbp against the NumPy reference, JAX, PyTorch and scikit-learn.

A benchmark *case* is one computation (``loss_and_grad`` of a 64-128-10 network on 256
rows, say) written once per implementation: ``fastbp`` (the Numba kernels),
``numpy`` (``fastbp.reference``, the baseline), and, where they can be imported, ``jax``
(``jax.jit`` of the same computation, results waited for with ``block_until_ready``),
``torch`` (PyTorch on the CPU) and, for training, ``sklearn`` (``MLPClassifier``).
Each case has a headline size and a sweep of sizes.

`measure` times every implementation of a case in the same run: one warm-up call
first (it compiles), then ``repeats`` rounds that each time every implementation in
turn, the order rotating from round to round, each timing a loop of enough calls to
last ``min_seconds`` after a pause and an untimed loop as long (see `_time`). The
result per implementation is the median over the rounds of the time per call
(``time.perf_counter``). Each implementation runs in a process of its own (see
`Workers`; ``Settings.isolate`` turns this off), so that no library's threads or
allocator state slow another's. After the warm-up, every peer's result is compared
with the NumPy reference, so that a table never compares different computations.

JAX, PyTorch, scikit-learn and matplotlib are imported only when a benchmark asks for
them. ``fastbp bench`` (see ``fastbp.cli``) drives this module and prints its tables.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

import fastbp
from fastbp import reference
from fastbp._bench_processes import WorkerError, Workers
from fastbp.datasets import load_digits

__all__ = [
    "CASES",
    "MEMORY_FLOORS",
    "OPTIONAL_PEERS",
    "Case",
    "Measurement",
    "Settings",
    "WorkerError",
    "Workers",
    "available_peers",
    "machine_info",
    "measure",
    "plot_speedups",
    "results_as_dict",
    "thread_limit",
]

OPTIONAL_PEERS = ("jax", "torch", "sklearn")
IMPLEMENTATIONS = ("fastbp", "numpy") + OPTIONAL_PEERS
_IMPORT_NAMES = {"jax": "jax", "torch": "torch", "sklearn": "sklearn"}
# Largest relative difference from the NumPy reference that still counts as agreement.
AGREEMENT = {np.float64: 1e-8, np.float32: 2e-3}
_LEARNING_RATE = 0.1
_MOMENTUM = 0.9


@dataclass(frozen=True)
class Settings:
    """How to time.

    Attributes
    ----------
    dtype : numpy float type
        float32 or float64, for every array of every implementation.
    repeats : int
        Number of timed rounds; the reported time is their median.
    min_seconds : float
        Each timed round loops over enough calls to last at least this long.
    peers : tuple of str
        The optional peers to run (a subset of ``OPTIONAL_PEERS``); fastbp and the
        NumPy reference always run.
    threads : int or None
        The PyTorch thread count (see `thread_limit` for the other libraries); None
        leaves PyTorch's default.
    settle_seconds : float
        Pause before each timed round. OpenBLAS threads spin for about 0.1 s after a
        call before they sleep (2^28 cycles: 0.103 s on the 2.6 GHz test machine, so
        the pause must be longer); without the pause, the implementation timed next
        shares the cores with the spinning threads of the one timed before (seen here:
        2 to 5 times slower, whichever of NumPy and fastbp came second).
    isolate : bool
        Time each implementation in a process of its own (see `Workers`; POSIX only,
        so the default elsewhere is False). In one process the libraries slow one
        another down (seen here: the NumPy reference 10 times slower once JAX had run).
    """

    dtype: type = np.float64
    repeats: int = 7
    min_seconds: float = 0.02
    peers: tuple = OPTIONAL_PEERS
    threads: int | None = None
    settle_seconds: float = 0.15
    isolate: bool = os.name == "posix"


@dataclass(frozen=True)
class Case:
    """One benchmark: a computation, its headline size and a sweep of sizes.

    Attributes
    ----------
    name : str
        What ``--case`` selects, e.g. ``"loss_and_grad_medium"``.
    function : str
        The fastbp function (or task) timed, e.g. ``"loss_and_grad"``.
    shape : str
        The fixed part of the problem, e.g. the architecture ``"64-128-10"``.
    size_name : str
        What the size counts, e.g. ``"n"`` (rows) or ``"P"`` (networks).
    size_label : str
        The same for a plot axis, e.g. ``"rows n"``.
    size : int
        The headline size.
    sweep : tuple of int
        Sizes for the plot of speed-up against size.
    build : callable
        ``build(size, settings) -> Implementations``.
    quick_sweep : tuple of int
        The sizes of a quick run; by default the smallest of the sweep and the headline
        size.
    """

    name: str
    function: str
    shape: str
    size_name: str
    size_label: str
    size: int
    sweep: tuple
    build: object = field(repr=False)
    quick_sweep: tuple = ()

    def __post_init__(self):
        if not self.quick_sweep:
            object.__setattr__(self, "quick_sweep", tuple(sorted({self.sweep[0], self.size})))

    @property
    def description(self):
        """``"loss_and_grad 64-128-10"``."""
        return f"{self.function} {self.shape}"

    def label(self, size=None):
        """``"64-128-10 n=256"``: the problem at one size."""
        return f"{self.shape} {self.size_name}={self.size if size is None else size}"


@dataclass
class Implementations:
    """What `Case.build` returns: zero-argument callables, one per implementation.

    ``floors`` holds NumPy operations that move the same bytes as the case's result
    (``np.copyto`` of an array of its size, say): timed side by side with the
    implementations, they give the memory bandwidth a result-writing kernel is held to.
    """

    functions: dict
    unavailable: dict = field(default_factory=dict)  # implementation -> reason
    compare: bool = True  # whether results must agree with the NumPy reference
    floors: dict = field(default_factory=dict)  # label -> zero-argument callable


@dataclass
class Measurement:
    """The timings of every implementation of one case at one size.

    Attributes
    ----------
    case : Case
    size : int
    median_seconds : dict of str to float
        Median time per call of each implementation that ran.
    calls_per_repeat : dict of str to int
    agrees : dict of str to bool
        Whether each peer's result matched the NumPy reference (absent when the case
        does not compare results, such as a training epoch).
    unavailable : dict of str to str
        Peers that were asked for but did not run, with the reason.
    floor_seconds : dict of str to float
        Median time per call of each memory floor of the case (see `Implementations`).
    """

    case: Case
    size: int
    median_seconds: dict
    calls_per_repeat: dict
    agrees: dict
    unavailable: dict
    floor_seconds: dict = field(default_factory=dict)

    @property
    def floor_fraction(self):
        """fastbp's rate as a fraction of each floor's: floor time / fastbp time."""
        fast = self.median_seconds["fastbp"]
        return {name: seconds / fast for name, seconds in self.floor_seconds.items()}

    @property
    def speedup(self):
        """fastbp's speed-up over each peer: peer median time / fastbp median time."""
        fast = self.median_seconds["fastbp"]
        return {
            name: seconds / fast
            for name, seconds in self.median_seconds.items()
            if name != "fastbp" and fast > 0
        }


# --------------------------------------------------------------------------- timing


def time_calls(function, count):
    """Seconds per call of ``function`` over a loop of ``count`` calls."""
    start = time.perf_counter()
    for _ in range(count):
        function()
    return (time.perf_counter() - start) / count


def calls_per_repeat(run, min_seconds):
    """How many calls make one timed round of at least ``min_seconds``; ``run(count)``
    times a loop of ``count`` calls and returns the seconds per call.

    Each estimate is the fastest of three loops, and `_time` pauses before counting as
    before a round: one slow call must not set the count. Seen here, fastbp's calls
    right after the NumPy process had run a case on OpenBLAS's threads (which then spin
    for 0.1 s) took milliseconds; a single call made a round, and every round timed one
    cold call (229 us, against 24 us for rounds of 521 calls counted after a pause)."""
    calls = 1
    while True:
        elapsed = min(run(calls) for _ in range(3)) * calls
        if elapsed >= 0.2 * min_seconds or calls >= 100_000:
            break
        calls *= 10
    return max(1, min(100_000, math.ceil(calls * min_seconds / max(elapsed, 1e-9))))


def _time(runs, settings):
    """Median seconds per call and calls per round of each ``runs[name](count)``, all
    interleaved, with a pause and an untimed round before each timed one.

    The pause lets the other processes' threads go idle; the untimed round after it
    brings the timed one back to the steady state of back-to-back calls, which is what
    a training or swarm loop runs in. Seen here without it: rounds of ten digits epochs
    took 2.09 ms a call after the pause against 1.64 ms back to back, the first five
    calls slower than the rest (threads and cores waking up).
    """
    calls = {}
    for name, run in runs.items():  # counted after the same pause as the rounds
        time.sleep(settings.settle_seconds)
        calls[name] = calls_per_repeat(run, settings.min_seconds)
    samples = {name: [] for name in runs}
    names = list(runs)
    for round_ in range(settings.repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            time.sleep(settings.settle_seconds)
            runs[name](calls[name])
            samples[name].append(runs[name](calls[name]))
    return {name: statistics.median(s) for name, s in samples.items()}, calls


def _as_numpy(result):
    """A result of any implementation as one flat float64 NumPy array."""
    if isinstance(result, (tuple, list)):
        return np.concatenate([_as_numpy(part) for part in result])
    if hasattr(result, "detach"):  # a torch tensor
        result = result.detach().cpu().numpy()
    return np.asarray(result, dtype=np.float64).ravel()


def _relative_difference(result, expected):
    got, want = _as_numpy(result), _as_numpy(expected)
    if got.shape != want.shape:
        return math.inf
    scale = max(np.abs(want).max(initial=0.0), np.finfo(np.float64).tiny)
    return float(np.abs(got - want).max(initial=0.0) / scale)


def measure(case, size, settings, workers=None):
    """Time every implementation of ``case`` at ``size``, side by side.

    Parameters
    ----------
    case : Case
    size : int
    settings : Settings
    workers : Workers, optional
        The processes to time in, when ``settings.isolate``; reuse one across the
        measurements of a run (starting a process that imports a peer takes seconds).
        Without it, processes are started for this measurement alone.

    Returns
    -------
    Measurement
    """
    if not settings.isolate:
        with _jax_precision_restored():
            return _measure_here(case, size, settings)
    if workers is None:
        with Workers(settings) as own:
            return _measure_isolated(case, size, settings, own)
    if workers.settings != settings:
        raise ValueError("workers were started with other settings than this measurement's")
    return _measure_isolated(case, size, settings, workers)


def _warm_up(built, names):
    """The first call (it compiles) of each of ``names`` that ``built`` has: the
    functions that ran, their results, and why those that failed did not run. Only a
    peer may fail; an error of fastbp or the reference propagates."""
    functions, results, unavailable = {}, {}, {}
    for name in names:
        function = built.functions.get(name)
        if function is None:
            continue
        if name in ("fastbp", "numpy"):
            results[name] = function()
        else:
            try:
                with _quiet_peer():
                    results[name] = function()
            except Exception as error:
                unavailable[name] = _reason(error)
                continue
        functions[name] = function
    return functions, results, unavailable


def _floors(built):
    return {f"floor: {label}": function for label, function in built.floors.items()}


def _measurement(case, size, settings, results, runs, unavailable, compare):
    """Compare the results with the reference's, time ``runs``, and collect it all."""
    agrees = {}
    if compare:
        tolerance = AGREEMENT[settings.dtype]
        for name, result in results.items():
            if name != "numpy":
                agrees[name] = _relative_difference(result, results["numpy"]) <= tolerance
    medians, calls = _time(runs, settings)
    floor_seconds = {}
    for name in [name for name in medians if name.startswith("floor: ")]:
        floor_seconds[name[len("floor: ") :]] = medians.pop(name)
        del calls[name]
    return Measurement(case, size, medians, calls, agrees, unavailable, floor_seconds)


def _measure_here(case, size, settings):
    built = case.build(size, settings)
    functions, results, unavailable = _warm_up(built, built.functions)
    functions.update(_floors(built))
    runs = {
        name: (lambda count, function=function: time_calls(function, count))
        for name, function in functions.items()
    }
    unavailable = {**built.unavailable, **unavailable}
    return _measurement(case, size, settings, results, runs, unavailable, built.compare)


def build_in_process(name, case_name, size, settings):
    """In an implementation's own process: build the case for that implementation alone
    (a peer's process imports no other peer) and make its warm-up call.

    Returns the functions to time there, by name (the NumPy process also times the
    memory floors), and a picklable reply: the results as flat float64 arrays (if the
    case compares them), why the implementation did not run, whether to compare, and
    the file of the fastbp imported.
    """
    peers = (name,) if name in OPTIONAL_PEERS else ()
    built = CASES[case_name].build(size, dataclasses.replace(settings, peers=peers))
    functions, results, unavailable = _warm_up(built, [name])
    if name == "numpy":
        functions.update(_floors(built))
    reply = {
        "results": {key: _as_numpy(value) for key, value in results.items()}
        if built.compare
        else {},
        "unavailable": {**built.unavailable, **unavailable},
        "timed": list(functions),
        "compare": built.compare,
        "fastbp": fastbp.__file__,  # which fastbp the process imported
    }
    return functions, reply


def _measure_isolated(case, size, settings, workers):
    results, runs, unavailable, compare = {}, {}, {}, True
    for name in ("fastbp", "numpy", *settings.peers):
        worker = workers.get(name)
        try:
            reply = worker.ask("build", case.name, size)
        except WorkerError as error:
            if name in ("fastbp", "numpy"):
                raise
            unavailable[name] = str(error).strip().splitlines()[-1]
            continue
        results.update(reply["results"])
        unavailable.update(reply["unavailable"])
        compare = reply["compare"]
        for timed in reply["timed"]:
            runs[timed] = lambda count, worker=worker, timed=timed: worker.ask("time", timed, count)
    return _measurement(case, size, settings, results, runs, unavailable, compare)


# --------------------------------------------------------------------------- peers


def available_peers(requested=OPTIONAL_PEERS):
    """The requested optional peers that are installed, and why the others are not run.

    Parameters
    ----------
    requested : iterable of str
        Names from ``OPTIONAL_PEERS``.

    Returns
    -------
    peers : tuple of str
    missing : dict of str to str
        Each requested peer that cannot be imported, with the reason.
    """
    peers, missing = [], {}
    for name in requested:
        if importlib.util.find_spec(_IMPORT_NAMES[name]) is None:
            missing[name] = "not installed"
        else:
            peers.append(name)
    return tuple(peers), missing


_torch_default_threads = {}
_SINGLE_THREADED_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


@contextlib.contextmanager
def thread_limit(threads):
    """Run Numba, BLAS, OpenMP and (for one thread) XLA on at most ``threads`` threads.

    On a machine whose cores other processes are using, thread pools that wait for
    each other (BLAS after a parallel Numba region, say) can make a call a hundred
    times slower; one thread per library gives steadier timings. PyTorch's count is
    set by the benchmarks themselves (`Settings.threads`). Everything is restored on
    exit, except XLA's, which is fixed once JAX has started.

    Parameters
    ----------
    threads : int or None
        None changes nothing.

    Yields
    ------
    not_limited : list of str
        Libraries whose threads could not be limited, with the reason.
    """
    if threads is None:
        yield []
        return
    not_limited = []
    restore = []
    try:
        import numba

        previous = numba.get_num_threads()
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        restore.append(lambda: numba.set_num_threads(previous))
    except ImportError:
        pass
    try:
        import scipy.linalg.cython_blas  # noqa: F401  (Numba's BLAS: load it to limit it)
        import threadpoolctl
    except ImportError:
        not_limited.append("BLAS (needs threadpoolctl, or OPENBLAS_NUM_THREADS set at start)")
    else:
        restore.append(threadpoolctl.threadpool_limits(limits=threads).restore_original_limits)
    if "jax" in sys.modules:
        not_limited.append("XLA (JAX has already started)")
    elif threads == 1:
        flags = os.environ.get("XLA_FLAGS")
        if not flags:
            os.environ["XLA_FLAGS"] = _SINGLE_THREADED_XLA
        elif _SINGLE_THREADED_XLA not in flags:  # a `Workers` process inherits them
            os.environ["XLA_FLAGS"] = f"{flags} {_SINGLE_THREADED_XLA}"
        restore.append(lambda: _restore_environment("XLA_FLAGS", flags))
    else:
        not_limited.append("XLA (only a limit of one thread is supported)")
    try:
        yield not_limited
    finally:
        for undo in reversed(restore):
            undo()
        torch = sys.modules.get("torch")
        if torch is not None and "threads" in _torch_default_threads:
            torch.set_num_threads(_torch_default_threads["threads"])


def _restore_environment(name, value):
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _import_jax(dtype):
    # Only the CPU is measured; naming it spares JAX probing for accelerators.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    if dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    return jax


@contextlib.contextmanager
def _jax_precision_restored():
    """Leave JAX's float64 switch as it was: the benchmarks turn it on for float64 cases."""
    jax = sys.modules.get("jax")
    before = None if jax is None else jax.config.jax_enable_x64
    try:
        yield
    finally:
        jax = sys.modules.get("jax")
        if jax is not None:
            jax.config.update("jax_enable_x64", bool(before))


@contextlib.contextmanager
def _quiet_peer():
    """Silence the deprecation notices peers raise about their own internals on first use."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _reason(error):
    return f"{type(error).__name__}: {error}".splitlines()[0]


def _peer_functions(settings, makers):
    """Run each ``makers[peer]()`` for the requested peers; a failure makes it unavailable."""
    functions, unavailable = {}, {}
    for name, make in makers.items():
        if name not in settings.peers:
            continue
        try:
            with _quiet_peer():
                functions[name] = make()
        except Exception as error:
            unavailable[name] = _reason(error)
    return functions, unavailable


def _layer_slices(net):
    """``(w_start, w_end, b_end, n_in, n_out)`` for each layer of the flat theta."""
    slices, start = [], 0
    for n_in, n_out in zip(net.sizes[:-1], net.sizes[1:]):
        w_end = start + n_in * n_out
        slices.append((start, w_end, w_end + n_out, n_in, n_out))
        start = w_end + n_out
    return slices


def _last_preactivation(net, theta, X, matmul_view, hidden):
    """``Z_L`` of a sigmoid (or other) hidden stack, for JAX or PyTorch arrays."""
    layers = _layer_slices(net)
    A = X
    for index, (start, w_end, b_end, n_in, n_out) in enumerate(layers):
        Z = A @ matmul_view(theta[start:w_end], (n_in, n_out)) + theta[w_end:b_end]
        A = hidden(Z) if index < len(layers) - 1 else Z
    return Z


def _jax_network(net, dtype):
    """JAX functions ``logits(theta, X)`` and ``outputs(theta, X)`` for ``net``."""
    jax = _import_jax(dtype)
    hidden = {"sigmoid": jax.nn.sigmoid, "tanh": jax.numpy.tanh, "relu": jax.nn.relu}
    hidden = hidden.get(net.hidden, lambda Z: Z)

    def logits(theta, X):
        return _last_preactivation(net, theta, X, lambda a, shape: a.reshape(shape), hidden)

    def outputs(theta, X):
        Z = logits(theta, X)
        if net.output == "softmax":
            return jax.nn.softmax(Z, axis=-1)
        return jax.nn.sigmoid(Z) if net.output == "sigmoid" else Z

    return jax, logits, outputs


def _import_torch(settings):
    import torch

    _torch_default_threads.setdefault("threads", torch.get_num_threads())
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    return torch


def _torch_network(net, settings):
    torch = _import_torch(settings)

    hidden = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}
    hidden = hidden.get(net.hidden, lambda Z: Z)

    def logits(theta, X):
        return _last_preactivation(net, theta, X, lambda a, shape: a.view(shape), hidden)

    def outputs(theta, X):
        Z = logits(theta, X)
        if net.output == "softmax":
            return torch.softmax(Z, dim=-1)
        return torch.sigmoid(Z) if net.output == "sigmoid" else Z

    return torch, logits, outputs


def _jax_call(jax, function, *arrays):
    """A zero-argument call of the jitted ``function`` that waits for its result."""
    compiled = jax.jit(function)
    on_device = [jax.device_put(a) for a in arrays]
    return lambda: jax.block_until_ready(compiled(*on_device))


# --------------------------------------------------------------------------- cases


def _classification_problem(sizes, n, dtype, population=None):
    net = fastbp.MLP(sizes, hidden="sigmoid", output="softmax")
    rng = np.random.default_rng(0)
    theta = net.init(seed=rng, dtype=dtype, population=population)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], size=n).astype(np.int64)
    return net, theta, X, y


def _jax_mean_cross_entropy(jax, logits):
    def mean_cross_entropy(theta, X, y):
        log_p = jax.nn.log_softmax(logits(theta, X), axis=-1)
        return -jax.numpy.take_along_axis(log_p, y[:, None], axis=1).mean()

    return mean_cross_entropy


def _build_loss_and_grad(sizes, population=False):
    """The gradient case of ``sizes``: of one network on ``size`` rows, or with
    ``population`` of ``size`` networks on 32 rows (JAX and PyTorch vmap over them)."""

    def build(size, settings):
        P, n = (size, _POPULATION_ROWS) if population else (None, size)
        net, theta, X, y = _classification_problem(sizes, n, settings.dtype, population=P)

        def jax_version():
            jax, logits, _ = _jax_network(net, settings.dtype)
            value_and_grad = jax.value_and_grad(_jax_mean_cross_entropy(jax, logits))
            if population:
                value_and_grad = jax.vmap(value_and_grad, in_axes=(0, None, None))
            return _jax_call(jax, value_and_grad, theta, X, y)

        def torch_version():
            torch, logits, _ = _torch_network(net, settings)
            theta_t, X_t, y_t = (torch.from_numpy(a) for a in (theta, X, y))

            def mean_cross_entropy(theta):
                return torch.nn.functional.cross_entropy(logits(theta, X_t), y_t)

            if population:
                grad_and_value = torch.func.vmap(torch.func.grad_and_value(mean_cross_entropy))
                return lambda: grad_and_value(theta_t)[::-1]  # (values, grads), as the others

            def call():
                leaf = theta_t.detach().requires_grad_(True)
                value = mean_cross_entropy(leaf)
                (grad,) = torch.autograd.grad(value, leaf)
                return value.detach(), grad

            return call

        peers, unavailable = _peer_functions(settings, {"jax": jax_version, "torch": torch_version})
        functions = {
            "fastbp": lambda: fastbp.loss_and_grad(net, theta, X, y, backend="numba"),
            "numpy": lambda: reference.loss_and_grad(net, theta, X, y),
        }
        return Implementations({**functions, **peers}, unavailable)

    return build


_POPULATION_ROWS = 32


_JACOBIAN_SIZES = (2, 16, 16, 1)
_POINTS = 256


def _regression_problem(n, dtype, population=None):
    net = fastbp.MLP(_JACOBIAN_SIZES, hidden="sigmoid", output="identity")
    rng = np.random.default_rng(0)
    theta = net.init(seed=rng, dtype=dtype, population=population)
    X = rng.uniform(-1.0, 1.0, size=(n, net.n_inputs)).astype(dtype)
    return net, theta, X, rng


def _jax_jacobian(jax, outputs, population):
    """``J(theta, X)`` of shape (n, nL, n0), or (P, n, nL, n0) with ``population``."""

    def single_row(theta, x):
        return outputs(theta, x[None, :])[0]

    per_rows = jax.vmap(jax.jacfwd(single_row, argnums=1), in_axes=(None, 0))
    return jax.vmap(per_rows, in_axes=(0, None)) if population else per_rows


def _torch_jacobian(torch, outputs, population):
    def single_row(theta, x):
        return outputs(theta, x[None, :])[0]

    per_rows = torch.func.vmap(torch.func.jacfwd(single_row, argnums=1), in_dims=(None, 0))
    return torch.func.vmap(per_rows, in_dims=(0, None)) if population else per_rows


def _build_input_jacobian(population):
    def build(size, settings):
        P, n = (size, _POINTS) if population else (None, size)
        net, theta, X, _ = _regression_problem(n, settings.dtype, population=P)

        def jax_version():
            jax, _, outputs = _jax_network(net, settings.dtype)
            return _jax_call(jax, _jax_jacobian(jax, outputs, population), theta, X)

        def torch_version():
            torch, _, outputs = _torch_network(net, settings)
            jacobian = _torch_jacobian(torch, outputs, population)
            theta_t, X_t = torch.from_numpy(theta), torch.from_numpy(X)
            return lambda: jacobian(theta_t, X_t)

        peers, unavailable = _peer_functions(settings, {"jax": jax_version, "torch": torch_version})
        functions = {
            "fastbp": lambda: fastbp.input_jacobian(net, theta, X, backend="numba"),
            "numpy": lambda: reference.input_jacobian(net, theta, X),
        }
        return Implementations({**functions, **peers}, unavailable)

    return build


def _build_sobolev_loss(P, settings):
    net, theta, X, rng = _regression_problem(_POINTS, settings.dtype, population=P)
    T = rng.standard_normal((_POINTS, net.n_outputs)).astype(settings.dtype)
    which = rng.integers(-1, net.n_inputs, size=_POINTS).astype(np.int64)
    rows = np.arange(_POINTS)
    derivative_column = np.maximum(which, 0)

    def jax_version():
        jax, _, outputs = _jax_network(net, settings.dtype)
        jnp = jax.numpy
        jacobian = _jax_jacobian(jax, outputs, population=False)

        def single_network(theta, X, T, which):
            derivatives = jacobian(theta, X)[rows, :, derivative_column]
            prediction = jnp.where(which[:, None] < 0, outputs(theta, X), derivatives)
            return 0.5 * ((prediction - T) ** 2).sum(axis=1).mean()

        population = jax.vmap(single_network, in_axes=(0, None, None, None))
        return _jax_call(jax, population, theta, X, T, which)

    def torch_version():
        torch, _, outputs = _torch_network(net, settings)
        jacobian = _torch_jacobian(torch, outputs, population=False)
        X_t, T_t, which_t = (torch.from_numpy(a) for a in (X, T, which))
        rows_t, column_t = torch.from_numpy(rows), torch.from_numpy(derivative_column)
        is_value = (which_t < 0)[:, None]

        def single_network(theta):
            derivatives = jacobian(theta, X_t)[rows_t, :, column_t]
            prediction = torch.where(is_value, outputs(theta, X_t), derivatives)
            return 0.5 * ((prediction - T_t) ** 2).sum(dim=1).mean()

        population = torch.func.vmap(single_network)
        theta_t = torch.from_numpy(theta)
        return lambda: population(theta_t)

    peers, unavailable = _peer_functions(settings, {"jax": jax_version, "torch": torch_version})
    functions = {
        "fastbp": lambda: fastbp.sobolev_loss(net, theta, X, T, which, backend="numba"),
        "numpy": lambda: reference.sobolev_loss(net, theta, X, T, which),
    }
    return Implementations({**functions, **peers}, unavailable)


_CLASSES = 10


def _logits_problem(B, dtype, with_gradient=False):
    rng = np.random.default_rng(0)
    Z = (3.0 * rng.standard_normal((B, _CLASSES))).astype(dtype)
    G = rng.standard_normal((B, _CLASSES)).astype(dtype) if with_gradient else None
    return Z, G


# The memory floors of the cases that have them, by label (see `Implementations`).
MEMORY_FLOORS = {
    "softmax_jacobian": ("np.empty + fill", "ndarray.copy"),
    "softmax_jacobian_out": ("fill", "np.copyto"),
}


def _memory_floors(result, fresh):
    """NumPy writing as many bytes as ``result`` holds: into a fresh array (``fresh``,
    which pays the operating system's first touch of new pages) or into ``result``."""
    source = np.ones_like(result)
    if fresh:
        operations = (lambda: np.empty_like(result).fill(1.0), source.copy)
    else:
        operations = (lambda: result.fill(1.0), lambda: np.copyto(result, source))
    labels = MEMORY_FLOORS["softmax_jacobian" if fresh else "softmax_jacobian_out"]
    return dict(zip(labels, operations))


def _build_softmax_jacobian(B, settings, reuse=False):
    Z, _ = _logits_problem(B, settings.dtype)

    def jax_version():
        jax = _import_jax(settings.dtype)

        def jacobian(Z):
            S = jax.nn.softmax(Z, axis=-1)
            eye = jax.numpy.eye(Z.shape[-1], dtype=Z.dtype)
            return S[:, :, None] * (eye - S[:, None, :])

        return _jax_call(jax, jacobian, Z)

    def torch_version():
        torch = _import_torch(settings)
        Z_t = torch.from_numpy(Z)
        eye = torch.eye(_CLASSES, dtype=Z_t.dtype)

        def call():
            S = torch.softmax(Z_t, dim=-1)
            return S[:, :, None] * (eye - S[:, None, :])

        return call

    peers, unavailable = _peer_functions(settings, {"jax": jax_version, "torch": torch_version})
    J = np.empty((B, _CLASSES, _CLASSES), dtype=settings.dtype)
    out = J if reuse else None  # reuse: a loop that keeps its buffer; the peers allocate
    functions = {
        "fastbp": lambda: fastbp.softmax_jacobian(Z, backend="numba", out=out),
        "numpy": lambda: reference.softmax_jacobian(Z),
    }
    floors = _memory_floors(J, fresh=not reuse)
    return Implementations({**functions, **peers}, unavailable, floors=floors)


def _build_softmax_jacobian_out(B, settings):
    return _build_softmax_jacobian(B, settings, reuse=True)


def _build_softmax_vjp(B, settings):
    Z, G = _logits_problem(B, settings.dtype, with_gradient=True)

    def jax_version():
        jax = _import_jax(settings.dtype)

        def vjp(Z, G):
            _, pullback = jax.vjp(lambda logits: jax.nn.softmax(logits, axis=-1), Z)
            return pullback(G)[0]

        return _jax_call(jax, vjp, Z, G)

    def torch_version():
        torch = _import_torch(settings)
        Z_t, G_t = torch.from_numpy(Z), torch.from_numpy(G)

        def call():
            leaf = Z_t.detach().requires_grad_(True)
            (V,) = torch.autograd.grad(torch.softmax(leaf, dim=-1), leaf, G_t)
            return V

        return call

    peers, unavailable = _peer_functions(settings, {"jax": jax_version, "torch": torch_version})
    functions = {
        "fastbp": lambda: fastbp.softmax_vjp(Z, G, backend="numba"),
        # The NumPy route forms every Jacobian, then multiplies.
        "numpy": lambda: np.einsum("bi,bij->bj", G, reference.softmax_jacobian(Z)),
    }
    return Implementations({**functions, **peers}, unavailable)


_DIGITS_SIZES = (64, 128, 10)


def _build_training_epoch(batch_size, settings):
    """One epoch of minibatch SGD with momentum on the digits, from the same start."""
    dtype = settings.dtype
    X, y = load_digits()
    X = X.astype(dtype)
    n = X.shape[0]
    net = fastbp.MLP(_DIGITS_SIZES, hidden="sigmoid", output="softmax")
    theta0 = net.init(seed=0, dtype=dtype)
    optimizer = fastbp.SGD(_LEARNING_RATE, momentum=_MOMENTUM)

    def fastbp_epoch():
        theta, _ = fastbp.train(
            net,
            theta0,
            X,
            y,
            epochs=1,
            batch_size=batch_size,
            optimizer=optimizer,
            seed=0,
            backend="numba",
        )
        return theta

    def numpy_epoch():
        rng = np.random.default_rng(0)
        theta, velocity = theta0.copy(), np.zeros_like(theta0)
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            _, grad = reference.loss_and_grad(net, theta, X[rows], y[rows])
            velocity *= _MOMENTUM
            velocity -= _LEARNING_RATE * grad
            theta += velocity
        return theta

    def sklearn_version():
        from sklearn.neural_network import MLPClassifier

        classifier = MLPClassifier(
            hidden_layer_sizes=_DIGITS_SIZES[1:-1],
            activation="logistic",
            solver="sgd",
            alpha=0.0,
            batch_size=batch_size,
            learning_rate_init=_LEARNING_RATE,
            momentum=_MOMENTUM,
            nesterovs_momentum=False,
            shuffle=True,
            random_state=0,
        )
        classes = np.arange(_DIGITS_SIZES[-1])
        return lambda: classifier.partial_fit(X, y, classes=classes)

    def torch_version():
        torch = _import_torch(settings)
        generator = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        layers = []
        for index, (n_in, n_out) in enumerate(zip(_DIGITS_SIZES[:-1], _DIGITS_SIZES[1:])):
            layers.append(torch.nn.Linear(n_in, n_out, dtype=torch.from_numpy(X).dtype))
            if index < len(_DIGITS_SIZES) - 2:
                layers.append(torch.nn.Sigmoid())
        model = torch.nn.Sequential(*layers)
        sgd = torch.optim.SGD(model.parameters(), lr=_LEARNING_RATE, momentum=_MOMENTUM)
        X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)

        def epoch():
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, batch_size):
                rows = order[start : start + batch_size]
                sgd.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(X_t[rows]), y_t[rows]).backward()
                sgd.step()

        return epoch

    peers, unavailable = _peer_functions(
        settings, {"torch": torch_version, "sklearn": sklearn_version}
    )
    functions = {"fastbp": fastbp_epoch, "numpy": numpy_epoch}
    # Shuffles differ between libraries, so the trained parameters are not compared.
    return Implementations({**functions, **peers}, unavailable, compare=False)


# fmt: off
CASES = {
    case.name: case
    for case in (
        Case("loss_and_grad_tiny", "loss_and_grad", "4-16-3", "n", "rows n", 32,
             (8, 32, 128, 512), _build_loss_and_grad((4, 16, 3))),
        Case("loss_and_grad_medium", "loss_and_grad", "64-128-10", "n", "rows n", 256,
             (16, 64, 256, 1024, 4096), _build_loss_and_grad((64, 128, 10))),
        Case("loss_and_grad_large", "loss_and_grad", "784-512-256-10", "n", "rows n", 256,
             (16, 64, 256, 1024), _build_loss_and_grad((784, 512, 256, 10))),
        Case("population_loss_and_grad", "loss_and_grad", "4-16-3 n=32", "P", "networks P", 100,
             (1, 10, 100, 1000), _build_loss_and_grad((4, 16, 3), population=True)),
        Case("population_jacobian", "input_jacobian", "2-16-16-1 N=256", "P", "networks P", 64,
             (1, 4, 16, 64, 256), _build_input_jacobian(population=True)),
        Case("input_jacobian", "input_jacobian", "2-16-16-1", "N", "points N", 256,
             (16, 64, 256, 1024, 4096), _build_input_jacobian(population=False)),
        Case("sobolev_loss", "sobolev_loss", "2-16-16-1 N=256", "P", "networks P", 64,
             (1, 4, 16, 64, 256), _build_sobolev_loss),
        Case("softmax_jacobian", "softmax_jacobian", "K=10", "B", "rows B", 100_000,
             (100, 1000, 10_000, 100_000), _build_softmax_jacobian),
        Case("softmax_jacobian_out", "softmax_jacobian out=", "K=10", "B", "rows B", 100_000,
             (100, 1000, 10_000, 100_000), _build_softmax_jacobian_out),
        Case("softmax_vjp", "softmax_vjp", "K=10", "B", "rows B", 100_000,
             (100, 1000, 10_000, 100_000), _build_softmax_vjp),
        # A quick run skips batch 8, the slowest epoch of the sweep.
        Case("train_epoch_digits", "train 1 epoch", "digits 64-128-10 SGD", "batch",
             "batch size", 32, (8, 32, 128), _build_training_epoch, quick_sweep=(32, 128)),
    )
}
# fmt: on


# --------------------------------------------------------------------------- reports


def _cpu_name():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module_name):
    from importlib import metadata

    try:
        return metadata.version({"sklearn": "scikit-learn"}.get(module_name, module_name))
    except metadata.PackageNotFoundError:
        return None


_THREAD_VARIABLES = (
    "NUMBA_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "XLA_FLAGS",
)


def load_average():
    """The one-minute load average of the machine, or None where it is not known."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def machine_info(peers=()):
    """The machine, library versions and thread settings a set of timings was taken with.

    Parameters
    ----------
    peers : iterable of str
        Optional peers whose versions to include.

    Returns
    -------
    dict
    """
    info = {
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_average": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "fastbp": fastbp.__version__,
        "numpy": np.__version__,
        "numba": _version("numba"),
        **{name: _version(name) for name in peers},
        "thread_variables": {k: os.environ[k] for k in _THREAD_VARIABLES if k in os.environ},
    }
    try:
        import numba

        info["numba_threads"] = numba.get_num_threads()
    except ImportError:
        pass
    # Only where PyTorch was timed in this process (Settings.isolate False); a process of
    # its own sets its count from Settings.threads.
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
    return info


def _measurement_as_dict(m):
    return {
        "size": m.size,
        "median_seconds": m.median_seconds,
        "speedup_vs": m.speedup,
        "calls_per_repeat": m.calls_per_repeat,
        "agrees_with_numpy": m.agrees,
        "unavailable": m.unavailable,
        **({"floor_seconds": m.floor_seconds} if m.floor_seconds else {}),
    }


def results_as_dict(headline, sweeps, settings, machine):
    """The JSON document of ``fastbp bench --json``.

    Parameters
    ----------
    headline : list of Measurement
        One per case, at its headline size.
    sweeps : dict of str to list of Measurement
        Case name to its measurements, in increasing size.
    settings : Settings
    machine : dict
        From `machine_info`.

    Returns
    -------
    dict
        ``{"machine", "settings", "cases", "sweeps"}``. ``cases[name]`` holds the
        description, ``size_name``, ``size``, ``median_seconds`` (per implementation),
        ``speedup_vs`` (per peer: its median over fastbp's median) and
        ``agrees_with_numpy``; ``sweeps[name]["points"]`` holds the same per size.
    """
    cases = {
        m.case.name: {
            "description": m.case.description,
            "size_name": m.case.size_name,
            **_measurement_as_dict(m),
        }
        for m in headline
    }
    sweep_dicts = {
        name: {
            "description": points[0].case.description,
            "size_name": points[0].case.size_name,
            "points": [_measurement_as_dict(m) for m in points],
        }
        for name, points in sweeps.items()
        if points
    }
    return {
        "machine": machine,
        "settings": {
            "dtype": np.dtype(settings.dtype).name,
            "repeats": settings.repeats,
            "min_seconds_per_repeat": settings.min_seconds,
            "timer": "time.perf_counter, median over repeats of the time per call",
            "peers": list(settings.peers),
            "threads": settings.threads,
        },
        "cases": cases,
        "sweeps": sweep_dicts,
    }


def plot_speedups(sweeps, path, title=""):
    """Write a PNG of fastbp's speed-up over each peer against size, one panel per case.

    Parameters
    ----------
    sweeps : dict of str to list of Measurement
    path : str or path-like
    title : str

    Raises
    ------
    ModuleNotFoundError
        If matplotlib is not installed.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    panels = [points for points in sweeps.values() if points]
    columns = min(3, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / columns))
    figure = Figure(figsize=(4.6 * columns, 3.6 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    styles = {
        "numpy": ("C0", "o-"),
        "jax": ("C1", "s--"),
        "torch": ("C2", "^-."),
        "sklearn": ("C3", "d:"),
    }
    for ax, points in zip(axes, panels):
        case = points[0].case
        sizes = [m.size for m in points]
        for peer, (colour, style) in styles.items():
            speedups = [m.speedup.get(peer, math.nan) for m in points]
            if not all(math.isnan(s) for s in speedups):
                ax.plot(sizes, speedups, style, color=colour, label=f"vs {peer}")
        ax.axhline(1.0, color="0.6", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sizes, [str(size) for size in sizes])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(case.description, fontsize=9)
        ax.set_xlabel(case.size_label)
        ax.set_ylabel("fastbp speed-up (peer time / fastbp time)", fontsize=8)
        ax.legend(fontsize=7)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.savefig(path, dpi=110)
