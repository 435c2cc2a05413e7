"""Small datasets for examples and benchmarks: two bundled UCI sets and a generator.

``load_iris`` and ``load_digits`` read the gzip-compressed CSV files shipped in
``fastbp/data`` (their source and licence are in ``fastbp/data/README.txt``);
``make_planar`` draws the two-class "flower" of points in the plane; and
``train_test_split`` holds out a stratified share of the rows.
"""

from __future__ import annotations

import gzip
from importlib import resources

import numpy as np

__all__ = ["load_digits", "load_iris", "make_planar", "train_test_split"]


def _read_csv(filename):
    """The integer-or-float table in ``fastbp/data/<filename>``, header row skipped."""
    with resources.files("fastbp.data").joinpath(filename).open("rb") as raw:
        with gzip.open(raw, "rt", encoding="ascii") as text:
            return np.loadtxt(text, delimiter=",", skiprows=1, dtype=np.float64)


def load_iris():
    """Fisher's iris flowers: 4 measurements of 150 flowers of 3 species.

    Returns
    -------
    X : ndarray of shape (150, 4), float64
        Sepal length, sepal width, petal length and petal width, in cm (not scaled).
    y : ndarray of shape (150,), int64
        Species: 0 setosa, 1 versicolor, 2 virginica; 50 rows of each, in that order.

    Examples
    --------
    >>> from fastbp.datasets import load_iris
    >>> X, y = load_iris()
    >>> X.shape, y.shape, y.dtype
    ((150, 4), (150,), dtype('int64'))
    """
    table = _read_csv("iris.csv.gz")
    return np.ascontiguousarray(table[:, :4]), table[:, 4].astype(np.int64)


def load_digits(scale=True):
    """The UCI optical handwritten digits: 1797 images of 8x8 pixels, classes 0..9.

    Parameters
    ----------
    scale : bool
        True (the default) divides the pixel counts by 16, so that X lies in
        ``[0, 1]``; False keeps the raw counts ``0..16`` (still as float64).

    Returns
    -------
    X : ndarray of shape (1797, 64), float64
        One image per row, pixels in row-major order (``X[i].reshape(8, 8)`` is the
        image).
    y : ndarray of shape (1797,), int64
        The digit shown, 0..9 (174 to 183 images of each).

    Examples
    --------
    >>> from fastbp.datasets import load_digits
    >>> X, y = load_digits()
    >>> X.shape, float(X.max()), sorted(set(y.tolist())) == list(range(10))
    ((1797, 64), 1.0, True)
    """
    table = _read_csv("digits.csv.gz")
    X = np.ascontiguousarray(table[:, :64])
    if scale:
        X /= 16.0
    return X, table[:, 64].astype(np.int64)


def make_planar(n=400, seed=0, noise=0.2):
    """The planar "flower": two interleaved classes of points whose petals cross.

    Class ``j`` (0 or 1) takes angles ``t`` evenly spaced over ``[3.12 j, 3.12 (j+1)]``
    plus Gaussian noise, and radii from a four-petal rose,

    .. math:: r = 4 \\sin(4 t) + \\varepsilon, \\qquad x = (r \\sin t,\\; r \\cos t),

    so that neither class is linearly separable from the other: the classic small
    problem for a network with one hidden layer (2-4-1 with sigmoid units).

    Parameters
    ----------
    n : int
        Number of points, at least 2: ``n // 2`` of class 0, the rest of class 1.
    seed : int or numpy.random.Generator
        Same seed, same points.
    noise : float
        Standard deviation of the noise added to the angles and to the radii.

    Returns
    -------
    X : ndarray of shape (n, 2), float64
        One point per row, class 0 first.
    y : ndarray of shape (n,), int64
        Labels 0 and 1. For a network with one sigmoid output, use the float targets
        ``y[:, None].astype(float)`` of shape (n, 1); for a softmax output with two
        units, ``y`` itself.

    Examples
    --------
    >>> from fastbp.datasets import make_planar
    >>> X, y = make_planar(400, seed=0)
    >>> X.shape, int(y.sum())
    ((400, 2), 200)
    """
    n = int(n)
    if n < 2:
        raise ValueError(f"n must be at least 2 (one point per class); got {n}")
    noise = float(noise)
    if not noise >= 0:
        raise ValueError(f"noise must be non-negative; got {noise}")
    rng = np.random.default_rng(seed)
    counts = (n // 2, n - n // 2)
    X = np.empty((n, 2), dtype=np.float64)
    y = np.empty(n, dtype=np.int64)
    start = 0
    for label, count in enumerate(counts):
        rows = slice(start, start + count)
        t = np.linspace(3.12 * label, 3.12 * (label + 1), count)
        t += noise * rng.standard_normal(count)
        r = 4.0 * np.sin(4.0 * t) + noise * rng.standard_normal(count)
        X[rows, 0] = r * np.sin(t)
        X[rows, 1] = r * np.cos(t)
        y[rows] = label
        start += count
    return X, y


def train_test_split(X, y, test_size=0.25, seed=0, stratify=True):
    """Split rows at random into a training and a held-out part.

    Parameters
    ----------
    X : array_like of shape (n, ...)
    y : array_like of shape (n,) or (n, k)
        Targets, split with the same rows as X.
    test_size : float or int
        A fraction in ``(0, 1)`` of the rows, or a number of rows in ``[1, n)``, to hold
        out. A fraction is rounded up to a whole number of rows.
    seed : int or numpy.random.Generator
        Same seed, same split.
    stratify : bool
        If True and y is 1-D with integer labels, each class is split in the proportion
        ``test_size`` (a class of ``c`` rows gives about ``c * test_size`` held-out rows,
        the roundings chosen so that the total is exact), so both parts keep the class
        balance of y. Otherwise rows are drawn without regard to y.

    Returns
    -------
    X_train : ndarray of shape (n - m, ...)
    X_test : ndarray of shape (m, ...)
    y_train : ndarray of shape (n - m,) or (n - m, k)
    y_test : ndarray of shape (m,) or (m, k)
        Rows keep their order within each part; m is the number of held-out rows.

    Examples
    --------
    >>> from fastbp.datasets import load_iris, train_test_split
    >>> X_train, X_test, y_train, y_test = train_test_split(*load_iris(), test_size=0.2)
    >>> X_train.shape, X_test.shape, [int((y_test == k).sum()) for k in range(3)]
    ((120, 4), (30, 4), [10, 10, 10])
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim == 0 or y.ndim not in (1, 2) or X.shape[0] != y.shape[0]:
        raise ValueError(
            f"X and y must have the same number of rows, y of shape (n,) or (n, k); "
            f"got X {X.shape} and y {y.shape}"
        )
    n = X.shape[0]
    n_test = _held_out_count(test_size, n)
    rng = np.random.default_rng(seed)
    if stratify and y.ndim == 1 and y.dtype.kind in "iub":
        test_rows = _stratified_test_rows(y, n_test, rng)
    else:
        test_rows = rng.choice(n, size=n_test, replace=False)
    is_test = np.zeros(n, dtype=bool)
    is_test[test_rows] = True
    return X[~is_test], X[is_test], y[~is_test], y[is_test]


def _held_out_count(test_size, n):
    if isinstance(test_size, (int, np.integer)) and not isinstance(test_size, bool):
        count = int(test_size)
    elif isinstance(test_size, (float, np.floating)) and 0 < test_size < 1:
        count = int(np.ceil(test_size * n))
    else:
        raise ValueError(
            f"test_size must be a fraction in (0, 1) or a number of rows; got {test_size!r}"
        )
    if not 1 <= count < n:
        raise ValueError(
            f"test_size {test_size!r} holds out {count} of {n} rows; "
            f"both parts need at least one row"
        )
    return count


def _stratified_test_rows(y, n_test, rng):
    """``n_test`` row indices, each class contributing in proportion to its size."""
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    share = counts * (n_test / y.shape[0])
    per_class = np.floor(share).astype(np.int64)
    # Hand the rows lost to rounding down to the classes with the largest remainders.
    remainder_order = np.argsort(-(share - per_class), kind="stable")
    per_class[remainder_order[: n_test - per_class.sum()]] += 1
    rows = [
        rng.choice(np.flatnonzero(inverse == k), size=per_class[k], replace=False)
        for k in range(classes.size)
    ]
    return np.concatenate(rows)
