"""The architecture of a dense network and the layout of its flat parameter vector."""

from __future__ import annotations

import operator

import numpy as np

from fastbp.kernels.codes import ACTIVATION_CODES, LOSS_CODES

HIDDEN_ACTIVATIONS = ("sigmoid", "tanh", "relu", "identity")
OUTPUT_ACTIVATIONS = ("softmax", "sigmoid", "identity")
LOSSES = ("cross_entropy", "mse")
DEFAULT_LOSS = {"softmax": "cross_entropy", "sigmoid": "cross_entropy", "identity": "mse"}


def _choice(name, value, allowed):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {allowed}; got {type(value).__name__}")
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}: expected one of {allowed}")
    return value


class MLP:
    """An immutable description of a dense network (a multi-layer perceptron).

    Layer ``l = 1..L`` computes ``Z_l = A_{l-1} @ W_l + b_l`` and ``A_l = act(Z_l)``,
    with ``A_0 = X`` and ``W_l`` of shape ``(sizes[l-1], sizes[l])``. Rows are samples.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths ``[n0, n1, ..., nL]``: ``n0`` inputs, ``nL`` outputs, at least two
        entries, all positive.
    hidden : {"sigmoid", "tanh", "relu", "identity"}
        Activation of the hidden layers.
    output : {"softmax", "sigmoid", "identity"}
        Activation of the last layer.
    loss : {"cross_entropy", "mse"} or None
        Per-row loss; ``None`` picks cross-entropy for softmax and sigmoid outputs and
        mean squared error for an identity output.

    Notes
    -----
    The flat parameter vector ``theta`` holds, for ``l = 1..L`` in order,
    ``W_l.ravel()`` (C order) then ``b_l``; every gradient has the same layout. A 2-D
    ``theta`` of shape ``(P, D)`` is a population of ``P`` networks.
    """

    __slots__ = (
        "_sizes",
        "_hidden",
        "_output",
        "_loss",
        "_offsets",
        "_n_params",
        "_spec",
        "_work_per_row",
    )

    def __init__(self, sizes, hidden="sigmoid", output="softmax", loss=None):
        try:
            sizes = tuple(sizes)
            if any(isinstance(s, (bool, np.bool_)) for s in sizes):  # True is an int too
                raise TypeError
            sizes = tuple(operator.index(s) for s in sizes)
        except TypeError:
            raise TypeError(f"sizes must be a sequence of integers; got {sizes!r}") from None
        if len(sizes) < 2:
            raise ValueError(f"sizes needs at least an input and an output width; got {sizes}")
        if min(sizes) < 1:
            raise ValueError(f"sizes must all be positive; got {sizes}")
        _choice("hidden", hidden, HIDDEN_ACTIVATIONS)
        _choice("output", output, OUTPUT_ACTIVATIONS)
        if loss is None:
            loss = DEFAULT_LOSS[output]
        _choice("loss", loss, LOSSES)
        if loss == "cross_entropy" and output == "identity":
            raise ValueError(
                "loss 'cross_entropy' needs a softmax or sigmoid output; "
                "use loss='mse' with output='identity'"
            )
        if output == "softmax" and sizes[-1] == 1:
            raise ValueError(
                f"output 'softmax' needs at least 2 outputs (a softmax over one is always 1, "
                f"its gradient 0); got sizes {sizes}: for one output use output='sigmoid'"
            )
        offsets = []
        start = 0
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            w_end = start + n_in * n_out
            offsets.append((start, w_end, w_end + n_out))
            start = w_end + n_out
        setattr_ = object.__setattr__
        setattr_(self, "_sizes", sizes)
        setattr_(self, "_hidden", hidden)
        setattr_(self, "_output", output)
        setattr_(self, "_loss", loss)
        setattr_(self, "_offsets", tuple(offsets))
        setattr_(self, "_n_params", start)
        # The kernels' view of the architecture: codes first, then the widths.
        spec = np.array(
            [ACTIVATION_CODES[hidden], ACTIVATION_CODES[output], LOSS_CODES[loss], *sizes],
            dtype=np.int64,
        )
        spec.flags.writeable = False
        setattr_(self, "_spec", spec)
        # Scratch a kernel needs per row of X (kernels.dense.workspace_per_row).
        setattr_(self, "_work_per_row", sum(sizes) + 2 * max(sizes[1:]) + 3)

    def __setattr__(self, name, value):
        raise AttributeError("MLP is immutable; build a new one instead")

    sizes = property(lambda self: list(self._sizes), doc="Layer widths ``[n0, ..., nL]``.")
    hidden = property(lambda self: self._hidden, doc="Hidden activation name.")
    output = property(lambda self: self._output, doc="Output activation name.")
    loss = property(lambda self: self._loss, doc="Loss name.")
    n_params = property(lambda self: self._n_params, doc="Length ``D`` of the flat theta.")
    n_inputs = property(lambda self: self._sizes[0], doc="Input width ``n0``.")
    n_outputs = property(lambda self: self._sizes[-1], doc="Output width ``nL``.")
    n_layers = property(lambda self: len(self._sizes) - 1, doc="Number of weight layers ``L``.")
    spec = property(
        lambda self: self._spec,
        doc="Read-only int64 array ``[hidden, output, loss, n0, ..., nL]``, the architecture "
        "as the kernels in ``fastbp.kernels`` take it (for calls from your own ``@njit`` code).",
    )

    def __repr__(self):
        return (
            f"MLP(sizes={list(self._sizes)}, hidden={self._hidden!r}, "
            f"output={self._output!r}, loss={self._loss!r})"
        )

    def __eq__(self, other):
        if not isinstance(other, MLP):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def _key(self):
        return (self._sizes, self._hidden, self._output, self._loss)

    def __reduce__(self):
        return (MLP, self._key())

    # ------------------------------------------------------------------ parameters

    def init(self, seed=0, dtype=np.float64, population=None):
        """Random parameters, Glorot-uniform weights and zero biases.

        Parameters
        ----------
        seed : int or numpy.random.Generator
            Same seed, same theta.
        dtype : float32 or float64
        population : int or None
            ``None`` gives theta of shape ``(D,)``; an integer ``P`` gives ``(P, D)``,
            ``P`` independent draws.

        Returns
        -------
        theta : ndarray of shape (D,) or (P, D)
        """
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64; got {dtype}")
        try:
            rng = np.random.default_rng(seed)
        except (TypeError, ValueError) as error:
            raise type(error)(
                f"seed must be a non-negative integer or a numpy Generator; got {seed!r}"
            ) from None
        try:
            shape = () if population is None else (operator.index(population),)
        except TypeError:
            raise TypeError(f"population must be an integer or None; got {population!r}") from None
        if shape and shape[0] < 1:
            raise ValueError(f"population must be a positive integer; got {population}")
        theta = np.zeros(shape + (self._n_params,), dtype=np.float64)
        for (n_in, n_out), (start, w_end, _) in zip(self._layer_shapes(), self._offsets):
            limit = np.sqrt(6.0 / (n_in + n_out))
            theta[..., start:w_end] = rng.uniform(-limit, limit, size=shape + (n_in * n_out,))
        return theta.astype(dtype, copy=False)

    def unpack(self, theta):
        """Split theta into per-layer ``(W, b)`` views (no copy).

        Parameters
        ----------
        theta : ndarray of shape (D,) or (P, D)

        Returns
        -------
        params : list of (W, b)
            ``W`` of shape ``(n_{l-1}, n_l)`` and ``b`` of shape ``(n_l,)``, each with a
            leading ``P`` axis for a population theta. Writing into them writes into theta.
        """
        theta = np.asarray(theta)
        if theta.ndim not in (1, 2) or theta.shape[-1] != self._n_params:
            raise ValueError(
                f"theta must have shape ({self._n_params},) or (P, {self._n_params}) "
                f"for {self!r}; got {theta.shape}"
            )
        lead = theta.shape[:-1]
        params = []
        for (n_in, n_out), (start, w_end, b_end) in zip(self._layer_shapes(), self._offsets):
            W = theta[..., start:w_end].reshape(lead + (n_in, n_out))
            params.append((W, theta[..., w_end:b_end]))
        return params

    def pack(self, params):
        """Join per-layer ``(W, b)`` into a fresh flat theta (the inverse of `unpack`).

        Parameters
        ----------
        params : sequence of (W, b)
            One pair per layer, ``W`` of shape ``(n_{l-1}, n_l)`` and ``b`` of shape
            ``(n_l,)``, or all with a common leading population axis ``P``.

        Returns
        -------
        theta : ndarray of shape (D,) or (P, D)
        """
        params = list(params)
        if len(params) != self.n_layers:
            raise ValueError(
                f"params must hold {self.n_layers} (W, b) pairs for {self!r}; got {len(params)}"
            )
        for layer, pair in enumerate(params):
            count = len(pair) if hasattr(pair, "__len__") else None
            if count != 2:
                what = f"{count} entries" if count is not None else type(pair).__name__
                raise ValueError(f"params[{layer}] must be a pair (W, b); got {what}")
        arrays = [np.asarray(a) for pair in params for a in pair]
        lead = arrays[0].shape[:-2] if arrays[0].ndim >= 2 else None
        dtype = np.result_type(*arrays, np.float32)
        if dtype.kind != "f":
            raise TypeError(f"params must hold real numbers; got dtype {dtype}")
        for layer, ((n_in, n_out), (W, b)) in enumerate(
            zip(self._layer_shapes(), zip(arrays[::2], arrays[1::2])), start=1
        ):
            if lead is None or W.shape != lead + (n_in, n_out):
                raise ValueError(
                    f"params[{layer - 1}][0] (W of layer {layer}) must have shape "
                    f"{(lead or ()) + (n_in, n_out)}; got {W.shape}"
                )
            if b.shape != lead + (n_out,):
                raise ValueError(
                    f"params[{layer - 1}][1] (b of layer {layer}) must have shape "
                    f"{lead + (n_out,)}; got {b.shape}"
                )
        theta = np.empty(lead + (self._n_params,), dtype=dtype)
        for (W, b), view in zip(zip(arrays[::2], arrays[1::2]), self.unpack(theta)):
            view[0][...] = W
            view[1][...] = b
        return theta

    def _layer_shapes(self):
        return list(zip(self._sizes[:-1], self._sizes[1:]))
