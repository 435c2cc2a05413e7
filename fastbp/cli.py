"""The ``fastbp`` command: ``demo``, ``bench`` and ``check``.

``fastbp demo`` trains networks on the bundled digits and iris data, checks a gradient
and shows the speed-up over the NumPy reference; ``fastbp bench`` times fastbp against
the NumPy reference and, where installed, JAX, PyTorch and scikit-learn; ``fastbp check``
compares every kernel with the reference and with finite differences. ``python -m fastbp``
runs the same command.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import fastbp
from fastbp import benchmarks, reference
from fastbp.datasets import load_digits, load_iris, train_test_split
from fastbp.mlp import HIDDEN_ACTIVATIONS, LOSSES, OUTPUT_ACTIVATIONS
from fastbp.training import _accuracy as training_accuracy

__all__ = ["main"]


class CommandError(Exception):
    """A problem to report in one line, with the exit status to return."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message):
        raise CommandError(f"{self.prog}: error: {message} (see '{self.prog} --help')", 2)


def _integer_from(minimum, kind):
    """An argparse type: an integer of at least ``minimum`` (``kind`` names it)."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}")
        return value

    return parse


_positive_int = _integer_from(1, "a positive integer")
_seed = _integer_from(0, "a non-negative integer")


def _peer_list(text):
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["none"]:
        return ()
    unknown = [name for name in names if name not in benchmarks.OPTIONAL_PEERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected 'none' or a comma-separated list of {', '.join(benchmarks.OPTIONAL_PEERS)};"
            f" got {text!r}"
        )
    return tuple(dict.fromkeys(names))


_THREADS_HELP = (
    "at most N threads for Numba, BLAS, PyTorch and (N=1) XLA; 1 gives steadier "
    "timings on a busy machine (default: each library's own)"
)


def build_parser():
    """The argument parser of the ``fastbp`` command."""
    parser = _Parser(
        prog="fastbp",
        description="Compiled backpropagation kernels for dense networks on the CPU.",
    )
    parser.add_argument("--version", action="version", version=f"fastbp {fastbp.__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    commands.required = True

    demo = commands.add_parser(
        "demo",
        help="train on the bundled digits and iris, check a gradient, show the speed-up",
        description=(
            "Train a 64-128-10 network on the digits (a quarter held out) and a 4-16-3 "
            "network on iris, check fastbp's gradient against finite differences of "
            "fastbp.reference, and time fastbp against the NumPy reference."
        ),
    )
    demo.add_argument(
        "--epochs", type=_positive_int, help="digits training epochs (default 30, quick 3)"
    )
    demo.add_argument(
        "--quick", action="store_true", help="few epochs and repeats: a smoke test in seconds"
    )
    demo.add_argument("--threads", type=_positive_int, metavar="N", help=_THREADS_HELP)
    demo.set_defaults(run=_demo, parser=demo)

    bench = commands.add_parser(
        "bench",
        help="time fastbp against NumPy, JAX, PyTorch and scikit-learn",
        description=(
            "Time each case with every implementation side by side (warm-up call first, "
            "median of repeats, time.perf_counter), at its headline size and over a sweep "
            "of sizes. Each implementation runs in a process of its own, so that no "
            "library's threads or allocator slow another's; the rounds interleave. "
            "Speed-up = peer time / fastbp time."
        ),
    )
    bench.add_argument(
        "--case",
        action="append",
        choices=list(benchmarks.CASES),
        metavar="NAME",
        help="run only this case (repeatable); --list shows the names",
    )
    bench.add_argument("--list", action="store_true", help="list the cases and exit")
    bench.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    bench.add_argument(
        "--repeats",
        type=_positive_int,
        metavar="N",
        help="timed rounds per measurement (default 7, quick 3)",
    )
    bench.add_argument(
        "--quick", action="store_true", help="few repeats and a two-point sweep per case"
    )
    bench.add_argument(
        "--peers",
        type=_peer_list,
        metavar="LIST",
        help="optional peers to run: 'none' or a comma-separated subset of "
        "jax,torch,sklearn (default: those installed)",
    )
    bench.add_argument("--threads", type=_positive_int, metavar="N", help=_THREADS_HELP)
    bench.add_argument("--json", metavar="PATH", help="write medians, speed-ups and machine info")
    bench.add_argument(
        "--plot", metavar="PATH", help="write a PNG of speed-up against size (needs matplotlib)"
    )
    bench.set_defaults(run=_bench, parser=bench)

    check = commands.add_parser(
        "check",
        help="check every kernel against the NumPy reference and finite differences",
        description=(
            "For every hidden activation and output/loss pair, compare fastbp's "
            "loss_and_grad, input_jacobian, sobolev_loss and train (and the softmax "
            "functions) with fastbp.reference and with central finite differences, in "
            "float64. Exits with status 1 if any check fails."
        ),
    )
    check.add_argument("--seed", type=_seed, default=0, help="seed of the random problems")
    check.set_defaults(run=_check, parser=check)
    return parser


def main(argv=None):
    """Run the ``fastbp`` command.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name; ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        The exit status: 0 on success, 1 when a check fails or a file cannot be
        written, 2 for a usage error.
    """
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # reported by the command's parser, which points to its own --help
            args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        return args.run(args)
    except SystemExit as exit_:  # --help and --version
        return exit_.code if isinstance(exit_.code, int) else 0
    except CommandError as error:
        print(error, file=sys.stderr)
        return error.status
    except OSError as error:
        print(f"fastbp: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fastbp: interrupted", file=sys.stderr)
        return 130


# --------------------------------------------------------------------------- formatting


def _seconds(value):
    """A duration in the unit that makes it readable, to about three digits."""
    if value is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if value >= scale or unit == "ns":
            x = value / scale
            digits = 2 if x < 10 else 1 if x < 100 else 0
            return f"{x:.{digits}f} {unit}"


def _ratio(value):
    if value is None:
        return "-"
    digits = 2 if value < 1 else 1 if value < 100 else 0
    return f"{value:.{digits}f}x"


def _print_thread_notes(threads, not_limited):
    """Say how many threads the libraries use, and warn when other processes are busy."""
    if threads is not None:
        print(f"threads: at most {threads} per library")
        for library in not_limited:
            print(f"note: threads not limited for {library}")
    load, cpus = benchmarks.load_average(), os.cpu_count() or 1
    if load is not None and load > 0.5 * cpus:
        advice = " (--threads 1 steadies the timings)" if threads is None else ""
        print(
            f"note: load average {load:.1f} on {cpus} CPUs: other processes are busy, and "
            f"multi-threaded code (BLAS, Numba, PyTorch, XLA) times worst when they are{advice}"
        )


def _machine_line(machine):
    versions = ", ".join(
        f"{name} {machine[name]}"
        for name in ("numpy", "numba", *benchmarks.OPTIONAL_PEERS)
        if machine.get(name)
    )
    return f"{machine['cpu']}, {machine['cpu_count']} CPUs, Python {machine['python']}, {versions}"


# --------------------------------------------------------------------------- demo

_DIGITS_EPOCHS = 30
_IRIS_EPOCHS = 100


def _accuracy(net, theta, X, y):
    return training_accuracy(net, fastbp.forward(net, theta, X), y)


def _standardise(X_train, X_test):
    mean, spread = X_train.mean(axis=0), X_train.std(axis=0)
    spread[spread == 0] = 1.0
    return (X_train - mean) / spread, (X_test - mean) / spread


def _compile_everything():
    """Call each function the demo times once, on a toy problem, so that Numba compiles."""
    start = time.perf_counter()
    net = fastbp.MLP([3, 4, 2])
    X, y = np.ones((4, 3)), np.array([0, 1, 1, 0])
    theta = net.init(seed=0)
    fastbp.forward(net, theta, X)
    fastbp.loss_and_grad(net, theta, X, y)
    fastbp.input_jacobian(net, theta, X)
    fastbp.softmax_jacobian(X)
    fastbp.train(net, theta, X, y, epochs=1, batch_size=2, optimizer=fastbp.SGD(0.1, momentum=0.9))
    # The digits network too, so that its first epoch is timed, not compiled: one hidden
    # layer this wide runs the two-thread epoch kernel (fastbp.kernels.training).
    digits = fastbp.MLP([64, 128, 10], hidden="sigmoid", output="softmax")
    X, y = np.zeros((64, 64)), np.arange(64) % 10
    fastbp.train(
        digits, digits.init(seed=0), X, y, epochs=1, batch_size=32,
        optimizer=fastbp.SGD(0.1, momentum=0.9), validation=(X, y),
    )  # fmt: skip
    return time.perf_counter() - start


def _print_epoch(epoch, theta, history):
    print(
        f"  epoch {len(history['loss']):3d}  loss {history['loss'][-1]:.4f}  "
        f"held-out accuracy {100 * history['val_accuracy'][-1]:5.1f} %  "
        f"{1e3 * history['seconds'][-1]:7.1f} ms/epoch",
        flush=True,
    )
    return False


def _demo_digits(epochs):
    X, y = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, seed=0)
    net = fastbp.MLP([64, 128, 10], hidden="sigmoid", output="softmax")
    print(
        f"digits: {X.shape[0]} images of 8x8 pixels scaled to [0, 1], {X_train.shape[0]} to "
        f"train on, {X_test.shape[0]} held out\n"
        f"  MLP 64-128-10 sigmoid/softmax, minibatch SGD lr 0.5 momentum 0.9, batch 32",
        flush=True,
    )
    theta, _ = fastbp.train(
        net,
        net.init(seed=0),
        X_train,
        y_train,
        epochs=epochs,
        batch_size=32,
        optimizer=fastbp.SGD(0.5, momentum=0.9),
        seed=0,
        validation=(X_test, y_test),
        callback=_print_epoch,
        on_interrupt="raise",  # Ctrl-C ends the command (see main), as in every train here
    )
    accuracy = _accuracy(net, theta, X_test, y_test)
    print(f"digits held-out accuracy: {100 * accuracy:.1f} % ({X_test.shape[0]} images)")


def _demo_iris(epochs):
    X, y = load_iris()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, seed=0)
    X_train, X_test = _standardise(X_train, X_test)
    net = fastbp.MLP([4, 16, 3], hidden="sigmoid", output="softmax")
    start = time.perf_counter()
    theta, _ = fastbp.train(
        net,
        net.init(seed=0),
        X_train,
        y_train,
        epochs=epochs,
        batch_size=16,
        optimizer=fastbp.SGD(0.1, momentum=0.9),
        seed=0,
        on_interrupt="raise",
    )
    seconds = time.perf_counter() - start
    accuracy = _accuracy(net, theta, X_test, y_test)
    print(
        f"iris: MLP 4-16-3 on standardised measurements, {epochs} epochs of SGD in "
        f"{1e3 * seconds:.0f} ms; held-out accuracy {100 * accuracy:.1f} % "
        f"({X_test.shape[0]} flowers)"
    )


def _demo_gradcheck():
    """fastbp's gradient against central differences of the reference loss; the error."""
    rng = np.random.default_rng(0)
    net = fastbp.MLP([5, 7, 4], hidden="tanh", output="softmax")
    theta = net.init(seed=rng) + 0.1 * rng.standard_normal(net.n_params)
    X, y, l2 = rng.standard_normal((9, 5)), rng.integers(0, 4, size=9), 0.01

    def fastbp_gradient_reference_loss(t):
        return reference.loss(net, t, X, y, l2), fastbp.loss_and_grad(net, t, X, y, l2)[1]

    error = fastbp.gradcheck(fastbp_gradient_reference_loss, theta)
    verdict = "ok" if error < 1e-6 else "FAILED"
    print(
        f"gradcheck: fastbp.loss_and_grad's gradient against central differences of "
        f"fastbp.reference.loss\n  MLP 5-7-4 tanh/softmax, l2 {l2}, {net.n_params} parameters: "
        f"max relative error {float(error):.1e} (< 1e-6: {verdict})"
    )
    return error < 1e-6


def _demo_speed(repeats):
    # The bench's pause before each round (0.15 s): longer than OpenBLAS's threads spin
    # after a product they share (0.103 s here; see Settings.settle_seconds).
    settings = benchmarks.Settings(repeats=repeats, min_seconds=0.01, peers=())
    print(
        f"speed-up of fastbp over the NumPy reference (float64, median of {repeats} "
        f"repeats, both measured side by side):"
    )
    with benchmarks.Workers(settings) as workers:
        for name in ("loss_and_grad_medium", "input_jacobian", "softmax_jacobian"):
            case = benchmarks.CASES[name]
            m = benchmarks.measure(case, case.size, settings, workers)
            fast, slow = (_seconds(m.median_seconds[impl]) for impl in ("fastbp", "numpy"))
            print(
                f"  {case.function:17s} {case.label():20s} fastbp {fast:>9s}   numpy {slow:>9s}"
                f"   {_ratio(m.speedup['numpy']):>7s}",
                flush=True,
            )


def _demo(args):
    start = time.perf_counter()
    epochs = args.epochs or (3 if args.quick else _DIGITS_EPOCHS)
    print(f"fastbp {fastbp.__version__} demo")
    with benchmarks.thread_limit(args.threads) as not_limited:
        _print_thread_notes(args.threads, not_limited)
        print(f"compiling or loading the kernels: {_compile_everything():.1f} s", flush=True)
        _demo_digits(epochs)
        _demo_iris(20 if args.quick else _IRIS_EPOCHS)
        gradient_ok = _demo_gradcheck()
        _demo_speed(3 if args.quick else 5)
    print(f"demo finished in {time.perf_counter() - start:.1f} s")
    return 0 if gradient_ok else 1


# --------------------------------------------------------------------------- bench


def _bench_settings(args):
    if args.peers is None:
        peers, _ = benchmarks.available_peers()
    else:
        peers, missing = benchmarks.available_peers(args.peers)
        if missing:
            names = ", ".join(sorted(missing))
            raise CommandError(f"fastbp bench: error: --peers asks for {names}, not installed")
    repeats = args.repeats or (3 if args.quick else 7)
    dtype = np.float32 if args.dtype == "float32" else np.float64
    return benchmarks.Settings(
        dtype=dtype,
        repeats=repeats,
        min_seconds=0.005 if args.quick else 0.02,
        peers=peers,
        threads=args.threads,
    )


def _check_output_path(option, path):
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise CommandError(f"fastbp bench: error: {option} {path}: no directory {parent}")


class _Table:
    """The bench table, printed row by row as the measurements arrive."""

    def __init__(self, cases, peers):
        self.implementations = ("fastbp", "numpy", *peers)
        self.peers = ("numpy", *peers)
        labels = [case.label(size) for case in cases for size in (case.size, *case.sweep)]
        self.first = max(len("case"), *(len(case.name) for case in cases)) + 2
        self.second = max(len("problem"), *(len(label) for label in labels)) + 2
        self.notes = []

    def header(self):
        times = "".join(f"{name:>10s}" for name in self.implementations)
        ratios = "".join(f"{name:>9s}" for name in self.peers)
        width = 10 * len(self.implementations)
        left = self.first + self.second
        print(f"{'':{left}s}{'median time per call':>{width}s} | fastbp speed-up vs")
        print(f"{'case':{self.first}s}{'problem':{self.second}s}{times} |{ratios}")

    def row(self, first, m):
        times = "".join(
            f"{_seconds(m.median_seconds.get(name)):>10s}" for name in self.implementations
        )
        ratios = ""
        for name in self.peers:
            text = _ratio(m.speedup.get(name))
            if m.agrees.get(name) is False:
                text += "!"
                self.notes.append(
                    f"! {name} differs from the NumPy reference in {m.case.name} "
                    f"{m.case.label(m.size)}"
                )
            ratios += f"{text:>9s}"
        label = m.case.label(m.size)
        print(f"{first:{self.first}s}{label:{self.second}s}{times} |{ratios}", flush=True)
        for name, reason in m.unavailable.items():
            self.notes.append(f"- {name} did not run {m.case.name} {label}: {reason}")


def _measure_cases(cases, settings, quick):
    """Time each case at its headline size, then over its sweep, printing the table."""
    with benchmarks.Workers(settings) as workers:
        return _measure_cases_in(cases, settings, quick, workers)


def _measure_cases_in(cases, settings, quick, workers):
    table = _Table(cases, settings.peers)
    print()
    table.header()
    headline = []
    for case in cases:
        m = benchmarks.measure(case, case.size, settings, workers)
        headline.append(m)
        table.row(case.name, m)

    print()
    print("sweeps of sizes (the plot of speed-up against size)")
    sweeps = {}
    for case in cases:
        sweeps[case.name] = []
        for size in case.quick_sweep if quick else case.sweep:
            if size == case.size:
                m = next(h for h in headline if h.case is case)
            else:
                m = benchmarks.measure(case, size, settings, workers)
            sweeps[case.name].append(m)
            table.row(case.name if len(sweeps[case.name]) == 1 else "", m)

    _print_floors(headline)
    if table.notes:
        print()
        print("\n".join(dict.fromkeys(table.notes)))
    return headline, sweeps


def _print_floors(measurements):
    """For cases that write a large result: fastbp's time against NumPy moving the same
    bytes, timed side by side (rate = floor time / fastbp time)."""
    with_floors = [m for m in measurements if m.floor_seconds]
    if not with_floors:
        return
    print()
    print(
        "memory floors (NumPy writing the same bytes, in the same run; rate = its time / fastbp's)"
    )
    for m in with_floors:
        floors = ", ".join(
            f"{name} {_seconds(seconds).strip()} ({m.floor_fraction[name]:.0%})"
            for name, seconds in m.floor_seconds.items()
        )
        fastbp_time = _seconds(m.median_seconds["fastbp"]).strip()
        print(f"{m.case.name} {m.case.label(m.size)}: fastbp {fastbp_time}; {floors}")


def _bench(args):
    if args.list:
        width = max(len(name) for name in benchmarks.CASES) + 2
        for case in benchmarks.CASES.values():
            sweep = ", ".join(str(size) for size in case.sweep)
            print(
                f"{case.name:{width}s}{case.description} {case.size_name}={case.size} "
                f"(sweep {case.size_name} = {sweep})"
            )
        return 0
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise CommandError(
            "fastbp bench: error: --plot needs matplotlib, which is not installed "
            '(pip install ".[plot]" in the project, or pip install matplotlib)'
        )
    for option, path in (("--json", args.json), ("--plot", args.plot)):
        if path is not None:
            _check_output_path(option, path)
    settings = _bench_settings(args)
    cases = [benchmarks.CASES[name] for name in dict.fromkeys(args.case or benchmarks.CASES)]
    start = time.perf_counter()
    print(
        f"fastbp bench: {np.dtype(settings.dtype).name}, median of {settings.repeats} "
        f"repeat{'s' if settings.repeats > 1 else ''}, "
        f"every implementation of a case measured side by side, each in its own process"
    )
    print(f"machine: {_machine_line(benchmarks.machine_info(settings.peers))}")
    with benchmarks.thread_limit(args.threads) as not_limited:
        _print_thread_notes(args.threads, not_limited)
        headline, sweeps = _measure_cases(cases, settings, args.quick)
        # Inside the limit: the thread counts the benchmark processes were given.
        machine = benchmarks.machine_info(settings.peers)
    print()
    print(f"bench finished in {time.perf_counter() - start:.1f} s")
    if args.json is not None:
        document = benchmarks.results_as_dict(headline, sweeps, settings, machine)
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    if args.plot is not None:
        title = f"fastbp speed-up, {np.dtype(settings.dtype).name}, {machine['cpu']}"
        benchmarks.plot_speedups(sweeps, args.plot, title=title)
        print(f"wrote {args.plot}")
    wrong = [m for m in headline if m.agrees.get("fastbp") is False]
    if wrong:
        names = ", ".join(m.case.name for m in wrong)
        raise CommandError(
            f"fastbp bench: error: fastbp differs from the NumPy reference in {names}"
        )
    return 0


# --------------------------------------------------------------------------- check

_REFERENCE_TOLERANCE = 1e-10  # float64 kernels against the reference, relative to the largest
_DIFFERENCE_TOLERANCE = 1e-6  # analytic derivatives against central differences


def _relative_error(got, expected):
    got = np.concatenate([np.ravel(a) for a in got])
    expected = np.concatenate([np.ravel(a) for a in expected])
    scale = max(np.abs(expected).max(), np.finfo(np.float64).tiny)
    return float(np.abs(got - expected).max() / scale)


def _architectures():
    for hidden in HIDDEN_ACTIVATIONS:
        for output in OUTPUT_ACTIVATIONS:
            for loss in LOSSES:
                if not (output == "identity" and loss == "cross_entropy"):
                    yield fastbp.MLP([3, 5, 4, 3], hidden=hidden, output=output, loss=loss)


def _targets(net, rng, n):
    if net.output == "softmax":
        return rng.dirichlet(np.ones(net.n_outputs), size=n)
    if net.output == "sigmoid":
        return rng.uniform(0.0, 1.0, size=(n, net.n_outputs))
    return rng.standard_normal((n, net.n_outputs))


def _away_from_kinks(net, rng, n, population=None, margin=1e-3):
    """``(theta, X)`` whose hidden pre-activations all satisfy ``|z| > margin``.

    Finite differences across a ReLU kink measure the kink, not the gradient.
    """
    for _ in range(200):
        theta = net.init(seed=rng, population=population)
        theta += 0.1 * rng.standard_normal(theta.shape)
        X = rng.standard_normal((n, net.n_inputs))
        smallest = np.inf
        for t in theta if theta.ndim == 2 else theta[None]:
            A = X
            for W, b in net.unpack(t)[:-1]:
                Z = A @ W + b
                smallest = min(smallest, np.abs(Z).min())
                A = reference.ACTIVATIONS[net.hidden](Z)
        if smallest > margin:
            return theta, X
    raise RuntimeError("no parameters away from the ReLU kinks in 200 draws")


def _jacobian_by_differences(net, theta, X, eps=1e-6):
    J = np.empty((X.shape[0], net.n_outputs, net.n_inputs))
    for j in range(net.n_inputs):
        step = np.zeros_like(X)
        step[:, j] = eps
        plus = fastbp.forward(net, theta, X + step)
        minus = fastbp.forward(net, theta, X - step)
        J[:, :, j] = (plus - minus) / (2 * eps)
    return J


def _net_checks(net, rng):
    """``(function, check)`` pairs for one network, each ``check()`` returning
    ``(error against the reference, error against finite differences or None)``."""
    n, l2 = 6, 0.01
    theta, X = _away_from_kinks(net, rng, n)
    population, X_pop = _away_from_kinks(net, rng, n, population=3)
    Y = _targets(net, rng, n)
    labels = rng.integers(0, net.n_outputs, size=n)
    T = rng.standard_normal((n, net.n_outputs))
    which = rng.integers(-1, net.n_inputs, size=n)

    def loss_and_grad(targets):
        got = fastbp.loss_and_grad(net, theta, X, targets, l2)
        expected = reference.loss_and_grad(net, theta, X, targets, l2)
        fd = fastbp.gradcheck(lambda t: fastbp.loss_and_grad(net, t, X, targets, l2), theta)
        return _relative_error(got, expected), float(fd)

    def population_loss_and_grad():
        got = fastbp.loss_and_grad(net, population, X_pop, Y, l2)
        return _relative_error(got, reference.loss_and_grad(net, population, X_pop, Y, l2)), None

    def forward_and_jacobian():
        got = fastbp.forward_and_jacobian(net, theta, X)
        expected = reference.forward_and_jacobian(net, theta, X)
        fd = _relative_error([got[1]], [_jacobian_by_differences(net, theta, X)])
        return _relative_error(got, expected), fd

    def population_input_jacobian():
        got = fastbp.input_jacobian(net, population, X_pop)
        return _relative_error([got], [reference.input_jacobian(net, population, X_pop)]), None

    def population_sobolev_loss():
        got = fastbp.sobolev_loss(net, population, X_pop, T, which)
        expected = reference.sobolev_loss(net, population, X_pop, T, which)
        return _relative_error([got], [expected]), None

    def train(optimizer):
        settings = dict(
            epochs=2, batch_size=4, optimizer=optimizer, l2=l2, seed=1, on_interrupt="raise"
        )
        got, _ = fastbp.train(net, theta, X, Y, **settings, backend="numba")
        expected, _ = fastbp.train(net, theta, X, Y, **settings, backend="numpy")
        return _relative_error([got], [expected]), None

    checks = [("loss_and_grad", lambda: loss_and_grad(Y))]
    if net.output == "softmax":
        checks.append(("loss_and_grad labels", lambda: loss_and_grad(labels)))
    checks += [
        ("loss_and_grad P=3", population_loss_and_grad),
        ("forward_and_jacobian", forward_and_jacobian),
        ("input_jacobian P=3", population_input_jacobian),
        ("sobolev_loss P=3", population_sobolev_loss),
        ("train SGD nesterov", lambda: train(fastbp.SGD(0.1, momentum=0.9, nesterov=True))),
        ("train Adam", lambda: train(fastbp.Adam(0.01))),
    ]
    return checks


def _softmax_checks(rng):
    Z, G = 3 * rng.standard_normal((5, 4)), rng.standard_normal((5, 4))

    def softmax():
        return _relative_error([fastbp.softmax(Z)], [reference.softmax(Z)]), None

    def softmax_jacobian():
        J = fastbp.softmax_jacobian(Z)
        eps = 1e-6
        by_differences = np.empty_like(J)
        for j in range(Z.shape[1]):
            step = np.zeros_like(Z)
            step[:, j] = eps
            plus, minus = fastbp.softmax(Z + step), fastbp.softmax(Z - step)
            by_differences[:, :, j] = (plus - minus) / (2 * eps)
        fd = _relative_error([J], [by_differences])
        return _relative_error([J], [reference.softmax_jacobian(Z)]), fd

    def softmax_vjp():
        got = fastbp.softmax_vjp(Z, G)
        return _relative_error([got], [reference.softmax_vjp(Z, G)]), None

    return [
        ("softmax", softmax),
        ("softmax_jacobian", softmax_jacobian),
        ("softmax_vjp", softmax_vjp),
    ]


def _run_check(function, problem, check):
    """Run one check, print its line, and return whether it passed."""
    try:
        reference_error, difference_error = check()
    except Exception as error:  # a kernel that raises has failed its check
        print(f"FAIL  {function:22s} {problem:38s}  {type(error).__name__}: {error}")
        return False
    ok = reference_error <= _REFERENCE_TOLERANCE and (
        difference_error is None or difference_error <= _DIFFERENCE_TOLERANCE
    )
    differences = "" if difference_error is None else f"  finite differences {difference_error:.1e}"
    print(
        f"{'ok' if ok else 'FAIL':4s}  {function:22s} {problem:38s}  "
        f"reference {reference_error:.1e}{differences}",
        flush=True,
    )
    return ok


def _check(args):
    rng = np.random.default_rng(args.seed)
    print(
        "fastbp check: each public function, for every activation, output and loss of a "
        f"3-5-4-3 network in float64, against fastbp.reference (relative error <= "
        f"{_REFERENCE_TOLERANCE:g}) and central finite differences (<= "
        f"{_DIFFERENCE_TOLERANCE:g}); the test suite covers float32 and many more shapes"
    )
    results = []
    for net in _architectures():
        problem = f"{net.hidden}/{net.output}/{net.loss} 3-5-4-3"
        for function, check in _net_checks(net, rng):
            results.append(_run_check(function, problem, check))
    for function, check in _softmax_checks(rng):
        results.append(_run_check(function, "B=5 K=4", check))
    failures = results.count(False)
    if failures:
        print(f"{failures} of {len(results)} checks FAILED")
        return 1
    print(f"all {len(results)} checks passed")
    return 0
