"""Minibatch training: optimisers and the `train` loop.

Each epoch runs as one compiled call (``fastbp.kernels.training.train_epoch``): the
batches, their forward and backward passes and the optimiser steps never return to
Python. Python runs once per epoch, for the shuffle, the history, validation, progress
and the callback.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import warnings
from dataclasses import dataclass

import numpy as np

from fastbp import _backend, _dense, _validate, _workspace, reference

__all__ = ["SGD", "Adam", "TrainingDiverged", "train"]


def _number(name, value):
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number; got {value!r}") from None


def _positive(name, value):
    value = _number(name, value)
    if not value > 0 or not np.isfinite(value):
        raise ValueError(f"{name} must be a positive number; got {value}")
    return value


def _fraction(name, value):
    value = _number(name, value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1); got {value}")
    return value


@dataclass(frozen=True)
class SGD:
    """Stochastic gradient descent, with optional (Nesterov) momentum.

    .. math::

        v \\leftarrow \\mu v + g, \\qquad
        \\theta \\leftarrow \\theta - \\eta\\,(g + \\mu v \\text{ if Nesterov else } v)

    (PyTorch's convention; ``momentum=0`` is plain ``θ <- θ - η g``.)
    """

    lr: float
    momentum: float = 0.0
    nesterov: bool = False

    def __post_init__(self):
        object.__setattr__(self, "lr", _positive("lr", self.lr))
        object.__setattr__(self, "momentum", _fraction("momentum", self.momentum))
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0")

    def _code_and_hyper(self):
        return 0, np.array([self.lr, self.momentum, float(self.nesterov), 0.0, 0.0, 0.0])


@dataclass(frozen=True)
class Adam:
    """Adam (Kingma & Ba), with bias-corrected moments.

    .. math::

        m \\leftarrow \\beta_1 m + (1-\\beta_1) g, \\quad
        v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2, \\quad
        \\theta \\leftarrow \\theta - \\eta\\, \\frac{m / (1-\\beta_1^t)}
        {\\sqrt{v / (1-\\beta_2^t)} + \\epsilon}
    """

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self):
        object.__setattr__(self, "lr", _positive("lr", self.lr))
        object.__setattr__(self, "beta1", _fraction("beta1", self.beta1))
        object.__setattr__(self, "beta2", _fraction("beta2", self.beta2))
        object.__setattr__(self, "eps", _positive("eps", self.eps))

    def _code_and_hyper(self):
        return 1, np.array([self.lr, 0.0, 0.0, self.beta1, self.beta2, self.eps])


class TrainingDiverged(FloatingPointError):
    """The loss or gradient became NaN or inf during `train`.

    Attributes
    ----------
    theta : ndarray
        The last parameters whose loss and gradient were finite.
    history : dict
        The history up to the last complete epoch.
    epoch, batch : int
        Where it happened (0-based).
    """

    def __init__(self, message, theta, history, epoch, batch):
        super().__init__(message)
        self.theta = theta
        self.history = history
        self.epoch = epoch
        self.batch = batch


def _accuracy(mlp, outputs, Y):
    """Share of rows classified right, or None for a regression output."""
    if mlp.output == "identity":
        return None
    if mlp.output == "softmax":
        truth = Y if Y.ndim == 1 else Y.argmax(axis=1)
        return float(np.mean(outputs.argmax(axis=1) == truth))
    return float(np.mean((outputs > 0.5) == (Y > 0.5)))


def _evaluate(kernels, mlp, theta, X, Y, l2, rows, outputs):
    """Loss on validation data; the outputs go into ``outputs``, ``rows`` rows a call."""
    if kernels is None:
        outputs[...] = reference.forward(mlp, theta, X)
        return float(reference.loss(mlp, theta, X, Y, l2))
    work = _workspace.scratch(theta.dtype, rows * mlp._work_per_row)
    return float(kernels.evaluate(mlp._spec, theta, X, Y, l2, rows, outputs, work))


def train(
    mlp,
    theta,
    X,
    Y,
    *,
    epochs,
    batch_size,
    optimizer,
    l2=0.0,
    seed=0,
    validation=None,
    callback=None,
    progress=False,
    backend=None,
    check_finite=True,
    on_interrupt="stop",
):
    """Train by minibatch gradient descent; returns new parameters and a history.

    Each epoch shuffles the rows (``numpy.random.default_rng(seed)``, so the same seed
    gives the same batches and, on one machine with the same number of Numba threads,
    bit-identical results), then takes one optimiser step per batch of ``batch_size``
    rows (the last batch may be smaller). Wraps the kernel
    ``fastbp.kernels.training.train_epoch``, or for a network with one hidden layer wide
    enough to pay for it, ``train_epoch_split``, which splits the hidden units between
    the threads.

    Parameters
    ----------
    mlp : MLP
    theta : ndarray of shape (D,)
        Initial parameters; not modified.
    X : ndarray of shape (n, n0)
    Y : ndarray of shape (n, nL), or integer labels of shape (n,) for a softmax output
    epochs : int
    batch_size : int
        Rows per step; at most n (a larger value gives one full batch per epoch).
    optimizer : SGD or Adam
    l2 : float
        Weight decay, as in `loss`.
    seed : int
    validation : tuple (X_val, Y_val), optional
        Data to report the loss (and, for classifiers, accuracy) on after each epoch,
        in the dtype of the network being trained (float64 data for a float32 theta is
        evaluated in float32).
    callback : callable, optional
        ``callback(epoch, theta, history)`` after each epoch (``theta`` is a copy,
        ``history`` the one ``train`` returns: read it, do not change it); a true return
        value stops training.
    progress : bool
        Print one line per epoch.
    backend : {"numba", "numpy"} or None
    check_finite : bool
    on_interrupt : {"stop", "raise"}
        What Ctrl-C does. ``"stop"``: training stops at the end of the epoch under way
        and ``train`` returns its parameters and history, with a warning (a second
        Ctrl-C interrupts at once). ``"raise"``: KeyboardInterrupt, as anywhere else.
        ``"stop"`` applies to more than one epoch, where ``train`` runs in the main
        thread and Python's own SIGINT handler is in place; it puts that handler back
        before returning.

    Returns
    -------
    theta : ndarray of shape (D,)
        The trained parameters, a new array.
    history : dict of lists
        ``"loss"`` (mean training loss of each epoch, over its batches), ``"seconds"``
        (wall time of each epoch) and, with validation data, ``"val_loss"`` and
        ``"val_accuracy"`` (None for an identity output).

    Raises
    ------
    TrainingDiverged
        If the loss or gradient becomes NaN or inf; the exception carries the last
        finite parameters.
    """
    kernels = _backend.kernels(backend, "training")
    checks = _backend.kernels(backend, "checks")  # compiled: NumPy's took 28 us on digits
    theta, X, Y, l2 = _dense._loss_args(mlp, theta, X, Y, l2)
    if theta.ndim != 1:
        raise ValueError(f"train takes one network: theta must have shape (D,); got {theta.shape}")
    _dense._check_values(mlp, theta, X, Y, check_finite, checks)
    epochs = _count("epochs", epochs, minimum=0)
    batch_size = _count("batch_size", batch_size, minimum=1)
    if not isinstance(optimizer, (SGD, Adam)):
        raise TypeError(f"optimizer must be fastbp.SGD or fastbp.Adam; got {optimizer!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, or None; got {callback!r}")
    if on_interrupt not in ("stop", "raise"):
        raise ValueError(f'on_interrupt must be "stop" or "raise"; got {on_interrupt!r}')
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise TypeError("validation must be a pair (X_val, Y_val)")
        X_val, Y_val = validation
        try:
            X_val, Y_val, _ = _dense._loss_args(mlp, theta, X_val, Y_val, 0.0)[1:]
            _dense._check_values(mlp, theta, X_val, Y_val, check_finite, checks)
        except ValueError as error:
            raise ValueError(f"validation data: {error}") from None
        # In the dtype of the network being trained (float64 data for a float32 theta
        # would reach the kernels mixed).
        X_val = _validate.as_float(X_val, theta.dtype)
        if Y_val.dtype.kind == "f":
            Y_val = _validate.as_float(Y_val, theta.dtype)
    n = X.shape[0]
    batch_size = min(batch_size, n)
    code, hyper = optimizer._code_and_hyper()
    # The kernels' buffers, each on a cache-line boundary (see fastbp._workspace), the
    # last call's where they fit.
    key = (theta.shape[0], theta.dtype, X.shape[1], Y.shape[1:], Y.dtype, batch_size)
    key += (batch_size * mlp._work_per_row,)
    buffers = _workspace.take(key, lambda: _buffers(*key))
    start = theta
    theta, state, Xb, Yb, grad, work = buffers
    theta[...] = start
    state[...] = 0
    shares = 1 if kernels is None else kernels.split_shares(mlp.sizes, batch_size)
    if validation is not None:
        # Split epochs: validation products small enough for OpenBLAS's calling thread.
        rows = X_val.shape[0] if shares == 1 else min(X_val.shape[0], kernels.quiet_rows(mlp.sizes))
        outputs = np.empty((X_val.shape[0], mlp.n_outputs), theta.dtype)
    try:
        rng = np.random.default_rng(seed)
    except TypeError as error:
        raise TypeError(f"seed must be an integer or a numpy Generator; got {seed!r}") from error
    except ValueError as error:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}") from error
    history = {"loss": [], "seconds": []}
    if validation is not None:
        history.update(val_loss=[], val_accuracy=[])
    step = 0
    # One epoch: Ctrl-C raises, so that a loop of one-epoch calls stops (and the
    # handler's 10 us stay out of it).
    with _ctrl_c_noted(on_interrupt == "stop" and epochs > 1) as ctrl_c:
        for epoch in range(epochs):
            order = rng.permutation(n)
            started = time.perf_counter()
            if kernels is None:
                mean_loss, step, diverged = reference.train_epoch(
                    mlp, theta, X, Y, l2, order, batch_size, optimizer, state, step
                )
            elif shares > 1:
                mean_loss, step, diverged = kernels.train_epoch_split(
                    mlp._spec, theta, X, Y, l2, order, batch_size, code, hyper, state, step,
                    Xb, Yb, grad, work, shares,
                )  # fmt: skip
            else:
                mean_loss, step, diverged = kernels.train_epoch(
                    mlp._spec, theta, X, Y, l2, order, batch_size, code, hyper, state, step,
                    Xb, Yb, grad, work,
                )  # fmt: skip
            if diverged >= 0:
                cause = (
                    "is the learning rate too high?"
                    if check_finite
                    else "NaN or inf in the data, unchecked with check_finite=False? or too "
                    "high a learning rate?"
                )
                raise TrainingDiverged(
                    f"the loss or its gradient became NaN or inf at epoch {epoch}, batch "
                    f"{diverged} ({cause}); the last finite parameters are in this "
                    "exception's .theta",
                    theta.copy(),
                    history,
                    epoch,
                    diverged,
                )
            history["seconds"].append(time.perf_counter() - started)
            history["loss"].append(float(mean_loss))
            if validation is not None:
                val_loss = _evaluate(kernels, mlp, theta, X_val, Y_val, l2, rows, outputs)
                history["val_loss"].append(val_loss)
                history["val_accuracy"].append(_accuracy(mlp, outputs, Y_val))
            if progress:
                print(_progress_line(epoch, epochs, history), flush=True)
            if callback is not None and callback(epoch, theta.copy(), history):
                break
            if ctrl_c:
                warnings.warn(
                    f"Ctrl-C: training stopped after epoch {epoch + 1} of {epochs}",
                    stacklevel=2,
                )
                break
    trained = theta.copy()  # an array of its own, not a view of the aligned buffer
    _workspace.keep(key, buffers)
    return trained, history


def _buffers(D, dtype, n0, y_shape, y_dtype, batch_size, work_size):
    """`train`'s buffers for the key it makes: ``(theta, state, Xb, Yb, grad, work)``."""
    empty = _workspace.aligned_empty
    return (
        empty(D, dtype),
        empty((3, D), dtype),
        empty((batch_size, n0), dtype),
        empty((batch_size,) + y_shape, y_dtype),
        empty(D, dtype),
        empty(work_size, dtype),
    )


@contextlib.contextmanager
def _ctrl_c_noted(active):
    """A list to which a first Ctrl-C appends, instead of raising KeyboardInterrupt, so
    that `train` can stop between epochs (a compiled epoch cannot be interrupted, and a
    KeyboardInterrupt raised after one would lose its results). Only where ``active``,
    in the main thread, with Python's default SIGINT handler in place; it is put back on
    the first Ctrl-C (a second one raises at once) and on leaving."""
    pressed = []
    if not (
        active
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        yield pressed
        return

    def note(signum, frame):
        pressed.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, note)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _count(name, value, minimum):
    try:
        if isinstance(value, (str, bytes, bool, np.bool_)):
            raise TypeError
        number = int(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an integer; got {value!r}") from None
    if number != value or number < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return number


def _progress_line(epoch, epochs, history):
    width = len(str(epochs))
    line = f"epoch {epoch + 1:>{width}}/{epochs}  loss {history['loss'][-1]:.4f}"
    if "val_loss" in history:
        line += f"  val_loss {history['val_loss'][-1]:.4f}"
        accuracy = history["val_accuracy"][-1]
        if accuracy is not None:
            line += f"  val_acc {100 * accuracy:.2f}%"
    return line + f"  {1000 * history['seconds'][-1]:.1f} ms"
