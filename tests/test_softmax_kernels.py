"""Softmax kernels against the NumPy reference: values, Jacobians, VJPs, extremes, threads."""

import numpy as np
import pytest

import fastbp
from fastbp import _validate, reference
from fastbp.kernels import softmax as kernels

FUNCTIONS = ("softmax", "softmax_jacobian", "softmax_vjp")


def call(name, Z, G, **kw):
    if name == "softmax_vjp":
        return getattr(fastbp, name)(Z, G, **kw)
    return getattr(fastbp, name)(Z, **kw)


def expected(name, Z, G):
    Z, G = Z.astype(np.float64), G.astype(np.float64)
    if name == "softmax_vjp":
        return reference.softmax_vjp(Z, G)
    return getattr(reference, name)(Z)


def assert_matches_reference(got, ref, dtype):
    assert got.shape == ref.shape and got.dtype == dtype
    if dtype == np.float64:
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-15)
    else:
        scale = max(1.0, np.abs(ref).max(initial=0.0))
        np.testing.assert_allclose(got, ref, rtol=2e-4, atol=1e-6 * scale)


# B * K (or B * K * K) of 40000 is past PARALLEL_MIN_ELEMENTS: the threads run.
@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5,), (1, 1), (7, 3), (4000, 10)], ids=str)
def test_kernels_match_the_reference(name, dtype, shape):
    rng = np.random.default_rng(len(shape) + shape[-1])
    Z = (3 * rng.standard_normal(shape)).astype(dtype)
    G = rng.standard_normal(shape).astype(dtype)
    assert_matches_reference(call(name, Z, G), expected(name, Z, G), dtype)


def test_softmax_jacobian_by_hand():
    # s = softmax([0, ln 3]) = [1/4, 3/4]; J = [[s0(1-s0), -s0 s1], [-s1 s0, s1(1-s1)]].
    J = fastbp.softmax_jacobian(np.array([[0.0, np.log(3.0)]]))
    np.testing.assert_allclose(J[0], [[3 / 16, -3 / 16], [-3 / 16, 3 / 16]], rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stable_for_logits_of_ten_thousand(dtype):
    Z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4 - 1, -1e4]], dtype=dtype)
    G = np.ones_like(Z)
    S = fastbp.softmax(Z)
    J = fastbp.softmax_jacobian(Z)
    V = fastbp.softmax_vjp(Z, G)
    for result in (S, J, V):
        assert np.isfinite(result).all()
    np.testing.assert_allclose(S.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(J.sum(axis=2), 0, atol=1e-6)
    np.testing.assert_allclose(S[1], 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(V, 0, atol=1e-6)  # g = 1 is orthogonal to every J row
    assert_matches_reference(J, expected("softmax_jacobian", Z, G), dtype)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("dtype, big", [(np.float64, 40.0), (np.float32, 15.0)])
def test_a_saturated_row_keeps_the_digits_of_one_minus_its_largest_s(backend, dtype, big):
    # Z = [0, 0, big]: 1 - s_2 = 2e / (1 + 2e) with e = exp(-big), below the rounding of
    # s_2 itself (float64: J[2, 2] came out 0, and the VJP's last entry too).
    e = np.exp(-big)
    s = np.array([e, e, 1.0]) / (1 + 2 * e)
    g = np.array([1.0, 2.0, 3.0])
    J = np.diag(s) - np.outer(s, s)
    J[2, 2] = s[2] * (s[0] + s[1])
    V = s * (g - g @ s)
    V[2] = s[2] * (s[0] * (g[2] - g[0]) + s[1] * (g[2] - g[1]))
    Z, G = np.array([[0.0, 0.0, big]], dtype=dtype), g[None, :].astype(dtype)
    rtol = 1e-13 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(fastbp.softmax_jacobian(Z, backend=backend)[0], J, rtol=rtol)
    np.testing.assert_allclose(fastbp.softmax_vjp(Z, G, backend=backend)[0], V, rtol=rtol)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_logits_at_the_ends_of_the_float_range(backend):
    # z - max(z) rounds to -inf here: its exp is the 0 wanted. The kernels do not warn
    # (warnings are errors in this test suite); NumPy, in the reference, may.
    Z = np.array([[1e308, -1e308, 0.0], [-1e308, -1e308, 1e308]])
    with np.errstate(over="ignore" if backend == "numpy" else "raise"):
        S = fastbp.softmax(Z, backend=backend)
        J = fastbp.softmax_jacobian(Z, backend=backend)
        V = fastbp.softmax_vjp(Z, np.ones_like(Z), backend=backend)
    np.testing.assert_array_equal(S, [[1, 0, 0], [0, 0, 1]])
    np.testing.assert_array_equal(J, np.zeros((2, 3, 3)))
    np.testing.assert_array_equal(V, 0 * S)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parallel_and_serial_kernels_agree_exactly(dtype):
    rng = np.random.default_rng(3)
    Z = rng.standard_normal((1500, 7)).astype(dtype)
    G = rng.standard_normal((1500, 7)).astype(dtype)
    B = Z.shape[0]
    pairs = [
        (lambda out: kernels._softmax_rows(Z, out, 0, B), kernels.softmax_parallel, (B, 7)),
        (
            lambda out: kernels._softmax_jacobian_rows(Z, out, 0, B),
            kernels.softmax_jacobian_parallel,
            (B, 7, 7),
        ),
    ]
    for serial, parallel, shape in pairs:
        a, b = np.empty(shape, dtype), np.empty(shape, dtype)
        serial(a)
        parallel(Z, b)
        np.testing.assert_array_equal(a, b)
    a, b = np.empty_like(Z), np.empty_like(Z)
    kernels._softmax_vjp_rows(Z, G, a, 0, B)
    kernels.softmax_vjp_parallel(Z, G, b)
    np.testing.assert_array_equal(a, b)


def test_out_is_reused():
    rng = np.random.default_rng(4)
    out_s, out_j, out_v = np.empty((6, 4)), np.empty((6, 4, 4)), np.empty((6, 4))
    for _ in range(2):
        Z, G = rng.standard_normal((2, 6, 4))
        assert fastbp.softmax(Z, out=out_s) is out_s
        assert fastbp.softmax_jacobian(Z, out=out_j) is out_j
        assert fastbp.softmax_vjp(Z, G, out=out_v) is out_v
        np.testing.assert_allclose(out_s, reference.softmax(Z), rtol=1e-12)
        np.testing.assert_allclose(out_j, reference.softmax_jacobian(Z), rtol=1e-12, atol=1e-16)
        np.testing.assert_allclose(out_v, reference.softmax_vjp(Z, G), rtol=1e-12, atol=1e-16)
    with pytest.raises(ValueError, match="out"):
        fastbp.softmax_jacobian(np.ones((6, 4)), out=np.empty((6, 4)))


def test_a_jacobian_larger_than_free_memory_is_refused(monkeypatch):
    monkeypatch.setattr(_validate, "MEMORY_CHECK_BYTES", 0)
    monkeypatch.setattr(_validate, "_available_bytes", lambda: 1000)
    with pytest.raises(MemoryError, match=r"100 x 4 x 4 x 8 bytes"):
        fastbp.softmax_jacobian(np.ones((100, 4)))
    fastbp.softmax_jacobian(np.ones((100, 4)), out=np.empty((100, 4, 4)))  # no allocation


def test_vjp_out_may_not_overlap_its_inputs():
    Z, G = np.random.default_rng(0).standard_normal((2, 6, 4))
    with pytest.raises(ValueError, match="out must not share memory with G"):
        fastbp.softmax_vjp(Z, G, out=G)
