"""The bundled datasets, the planar generator and the train/test split."""

import numpy as np
import pytest

from fastbp.datasets import load_digits, load_iris, make_planar, train_test_split


def test_iris_has_150_flowers_in_three_classes_of_50():
    X, y = load_iris()
    assert X.shape == (150, 4) and X.dtype == np.float64 and X.flags.c_contiguous
    assert y.shape == (150,) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [50, 50, 50]
    assert 0 < X.min() and X.max() < 8  # centimetres
    # Fisher's values, not the UCI file's two typos (rows 35 and 38 counting from 1).
    assert X[34].tolist() == [4.9, 3.1, 1.5, 0.2]
    assert X[37].tolist() == [4.9, 3.6, 1.4, 0.1]


def test_digits_have_1797_images_in_ten_classes_scaled_to_the_unit_interval():
    X, y = load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float64 and X.flags.c_contiguous
    assert y.shape == (1797,) and y.dtype == np.int64
    counts = np.bincount(y)
    assert counts.size == 10 and counts.sum() == 1797 and counts.min() >= 174
    assert X.min() == 0.0 and X.max() == 1.0
    raw, _ = load_digits(scale=False)
    assert np.array_equal(raw, 16 * X)
    assert np.array_equal(raw, np.round(raw)) and raw.max() == 16


def test_loaders_match_the_copies_in_scikit_learn():
    datasets = pytest.importorskip("sklearn.datasets")
    iris, digits = datasets.load_iris(), datasets.load_digits()
    X, y = load_iris()
    assert np.array_equal(X, iris.data) and np.array_equal(y, iris.target)
    X, y = load_digits(scale=False)
    assert np.array_equal(X, digits.data) and np.array_equal(y, digits.target)


def test_loaders_return_fresh_arrays():
    X, _ = load_iris()
    X[:] = 0
    assert load_iris()[0].max() > 0


@pytest.mark.parametrize("n", [2, 7, 400])
def test_planar_flower_shapes_and_balanced_labels(n):
    X, y = make_planar(n, seed=3)
    assert X.shape == (n, 2) and X.dtype == np.float64
    assert y.shape == (n,) and y.dtype == np.int64
    assert y.tolist() == [0] * (n // 2) + [1] * (n - n // 2)
    assert np.isfinite(X).all()


def test_planar_flower_lies_on_a_four_petal_rose():
    X, y = make_planar(400, seed=0, noise=0.0)
    angle = np.arctan2(X[:, 0], X[:, 1])
    # Without noise every point is (r sin t, r cos t) with r = 4 sin(4t): |x| = 4 |sin 4t|.
    assert np.allclose(np.hypot(X[:, 0], X[:, 1]), 4 * np.abs(np.sin(4 * angle)), atol=1e-9)
    assert np.abs(X).max() <= 4 + 1e-12


def test_planar_flower_is_reproducible_and_seeded():
    X1, _ = make_planar(50, seed=1)
    X2, _ = make_planar(50, seed=1)
    X3, _ = make_planar(50, seed=2)
    assert np.array_equal(X1, X2) and not np.array_equal(X1, X3)


def test_planar_flower_rejects_too_few_points():
    with pytest.raises(ValueError, match="n must be at least 2"):
        make_planar(1)


def test_split_holds_out_a_stratified_quarter_of_the_digits():
    X, y = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, seed=0)
    assert X_train.shape == (1347, 64) and X_test.shape == (450, 64)
    assert y_train.shape == (1347,) and y_test.shape == (450,)
    share = np.bincount(y_test, minlength=10) / np.bincount(y, minlength=10)
    assert np.all(np.abs(share - 0.25) < 0.01)
    # Every row lands in exactly one part.
    rows = np.concatenate([X_train, X_test])
    assert np.array_equal(np.unique(rows, axis=0), np.unique(X, axis=0))


def test_split_keeps_x_and_y_rows_together_and_in_order():
    X = np.arange(40, dtype=float).reshape(20, 2)
    y = np.arange(20) % 2
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=6, seed=4)
    assert X_test.shape == (6, 2) and np.bincount(y_test).tolist() == [3, 3]
    for part_X, part_y in ((X_train, y_train), (X_test, y_test)):
        index = (part_X[:, 0] / 2).astype(int)
        assert np.array_equal(part_y, y[index])
        assert np.all(np.diff(index) > 0)


def test_split_of_float_targets_draws_rows_at_random():
    X = np.arange(10.0)[:, None]
    Y = np.linspace(0, 1, 20).reshape(10, 2)
    _, X_test, _, Y_test = train_test_split(X, Y, test_size=0.3, seed=0)
    assert X_test.shape == (3, 1) and Y_test.shape == (3, 2)
    assert np.array_equal(Y_test, Y[X_test[:, 0].astype(int)])


def test_split_is_seeded():
    X, y = load_iris()
    first = train_test_split(X, y, seed=1)[1]
    assert np.array_equal(first, train_test_split(X, y, seed=1)[1])
    assert not np.array_equal(first, train_test_split(X, y, seed=2)[1])


@pytest.mark.parametrize("test_size", [0, 1.0, 1.5, 10, -1, "a", True])
def test_split_rejects_a_test_size_that_leaves_a_part_empty(test_size):
    with pytest.raises(ValueError, match="test_size"):
        train_test_split(np.zeros((10, 2)), np.zeros(10, dtype=int), test_size=test_size)


def test_split_rejects_mismatched_rows():
    with pytest.raises(ValueError, match=r"X \(10, 2\) and y \(9,\)"):
        train_test_split(np.zeros((10, 2)), np.zeros(9))
