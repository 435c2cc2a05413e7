"""The vectorisable scalar functions every kernel is built on, against NumPy."""

import numpy as np
import pytest

from fastbp.kernels._config import kernel
from fastbp.kernels.activations import exp, exp_nonpositive, log, log1p, sigmoid, tanh


@kernel
def _apply(code, x, out):
    for i in range(x.shape[0]):
        if code == 0:
            out[i] = exp(x[i])
        elif code == 1:
            out[i] = log(x[i])
        elif code == 2:
            out[i] = sigmoid(x[i])
        elif code == 4:
            out[i] = log1p(x[i])
        elif code == 5:
            out[i] = exp_nonpositive(x[i])
        else:
            out[i] = tanh(x[i])


_CODES = {"exp": 0, "log": 1, "sigmoid": 2, "tanh": 3, "log1p": 4, "exp_nonpositive": 5}


def apply(name, x):
    out = np.empty_like(x)
    _apply(_CODES[name], x, out)
    return out


def test_exp_float64_within_1e_15_from_underflow_to_overflow():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-745, 709.7, 200_000), rng.uniform(-1, 1, 10_000)])
    expected = np.exp(x)
    got = apply("exp", x)
    normal = expected > np.finfo(np.float64).tiny
    np.testing.assert_allclose(got[normal], expected[normal], rtol=1.5e-15, atol=0)
    subnormal = ~normal & (expected > 0)
    np.testing.assert_allclose(got[subnormal], expected[subnormal], rtol=1e-3, atol=5e-324)
    edges = apply("exp", np.array([-800.0, -746.0, 0.0, 710.0, 800.0]))
    assert edges[0] == 0 and edges[1] == 0 and edges[2] == 1 and np.isinf(edges[3:]).all()


def test_exp_float32_stays_float32_and_accurate():
    x = np.random.default_rng(1).uniform(-87, 88, 50_000).astype(np.float32)
    got = apply("exp", x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, np.exp(x.astype(np.float64)), rtol=2e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_nonpositive_is_exp_bit_for_bit(dtype):
    rng = np.random.default_rng(5)
    info = np.finfo(dtype)
    low = -750.0 if dtype == np.float64 else -110.0
    x = np.concatenate([
        rng.uniform(low, 0, 200_000), -(10 ** rng.uniform(-30, 0, 10_000)),
        # around the smallest normal and subnormal results, and the clamps
        np.linspace(-709.0, -707.0, 1001) if dtype == np.float64 else np.linspace(-89, -86, 1001),
        np.linspace(-746.5, -744.0, 1001) if dtype == np.float64 else np.linspace(-105, -102, 1001),
        [0.0, -0.0, -info.smallest_subnormal, -info.max, -np.inf, np.nan],
    ]).astype(dtype)  # fmt: skip
    got = apply("exp_nonpositive", x)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, apply("exp", x))
    assert (got[x > low] > 0).any() and (got == 0).any()  # the range reaches underflow


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_of_positive_normal_numbers(dtype):
    rng = np.random.default_rng(2)
    x = np.exp(rng.uniform(-80, 80, 50_000)).astype(dtype)
    x = np.concatenate([x, np.array([1.0, 2.0, np.sqrt(2), 1.5], dtype=dtype)])
    got = apply("log", x)
    assert got.dtype == dtype
    expected = np.log(x.astype(np.float64))
    if dtype == np.float64:
        np.testing.assert_allclose(got, expected, rtol=3e-16, atol=5e-16)
    else:
        np.testing.assert_allclose(got, expected, rtol=2e-7, atol=1e-7)


def test_sigmoid_is_stable_and_accurate():
    x = np.concatenate([np.linspace(-700, 700, 20_001), [-1e300, 1e300, 0.0]])
    got = apply("sigmoid", x)
    e = np.exp(-np.abs(x))
    expected = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    np.testing.assert_allclose(got, expected, rtol=1e-15, atol=0)
    assert np.isfinite(got).all()


def test_sigmoid_float32_stays_float32_and_accurate():
    rng = np.random.default_rng(6)
    x = np.concatenate([rng.uniform(-87, 30, 100_000), rng.uniform(-1, 1, 20_000)])
    x = x.astype(np.float32)
    got = apply("sigmoid", x)
    assert got.dtype == np.float32
    z = x.astype(np.float64)
    e = np.exp(-np.abs(z))
    expected = np.where(z >= 0, 1 / (1 + e), e / (1 + e))
    np.testing.assert_allclose(got, expected, rtol=4 * np.finfo(np.float32).eps, atol=0)
    edges = apply("sigmoid", np.array([-1e30, -104.0, 0.0, 1e30, np.inf, -np.inf], np.float32))
    np.testing.assert_array_equal(edges, [0.0, 0.0, 0.5, 1.0, 1.0, 0.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh_keeps_relative_accuracy_for_every_magnitude(dtype):
    # Tiny arguments are where tanh from (1 - e) / (1 + e) loses every digit.
    rng = np.random.default_rng(3)
    magnitudes = np.concatenate([rng.uniform(0, 25, 100_000), 10 ** rng.uniform(-30, 0, 20_000)])
    edges = [0.17, 0.1733, 0.18, 0.3466, 0.35, 9.0, 18.0, 20.0, 40.0, 1e4, 1e30]
    x = np.concatenate([magnitudes, -magnitudes, edges]).astype(dtype)
    got = apply("tanh", x)
    assert got.dtype == dtype
    expected = np.tanh(x.astype(np.float64))
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(got, expected, rtol=4 * eps, atol=0)
    special = apply("tanh", np.array([0.0, -0.0, 1e300, -1e300, 5e-324]))
    np.testing.assert_array_equal(special, [0.0, 0.0, 1.0, -1.0, 5e-324])
    assert list(np.signbit(special[:2])) == [False, True]  # tanh(±0) = ±0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log1p_keeps_relative_accuracy_for_tiny_arguments(dtype):
    # The sigmoid output's cross-entropy takes log1p(exp(-|z|)), arguments in (0, 1].
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.uniform(0, 1, 50_000), 10 ** rng.uniform(-40, 0, 50_000)])
    x = np.concatenate([x, -x / 2, [0.0, 1.0, 1e-300, 3.0, 1e6]]).astype(dtype)
    got = apply("log1p", x)
    assert got.dtype == dtype
    expected = np.log1p(x.astype(np.float64))
    np.testing.assert_allclose(got, expected, rtol=4 * np.finfo(dtype).eps, atol=0)
