"""The pieces the kernels share: the blocked small product, the matrix views, the compiled
input checks, and the aligned scratch memory."""

import numpy as np
import pytest

import fastbp
from fastbp import _validate, _workspace
from fastbp.kernels import checks, linalg
from fastbp.kernels._config import kernel


@kernel
def _product(A, transposed, H, R, ncols, add):
    linalg.product(A, transposed, H, R, ncols, add)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("add", [False, True])
def test_product_for_every_remainder_of_the_blocking(dtype, transposed, add):
    rng = np.random.default_rng(0)
    # Widths 1..9 cover every remainder of the 4 x 4 blocks (and the pairs in between).
    for n_out in range(1, 10):
        for n_in in range(1, 10):
            M = rng.standard_normal((n_out, n_in)).astype(dtype)
            A = np.ascontiguousarray(M.T) if transposed else M
            H = rng.standard_normal((n_in, 13)).astype(dtype)
            R = rng.standard_normal((n_out, 13)).astype(dtype)
            if not add:
                R[:, :11] = np.nan  # overwritten, whatever it held
            expected = R.astype(np.float64)
            product = M.astype(np.float64) @ H[:, :11].astype(np.float64)
            expected[:, :11] = expected[:, :11] + product if add else product
            _product(A, np.bool_(transposed), H, R, 11, np.bool_(add))  # 11, 12 untouched
            rtol = 1e-5 if dtype == np.float32 else 1e-13
            np.testing.assert_allclose(R, expected, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("n, k, m", [(3, 5, 7), (1, 1, 1), (40, 30, 20)])  # loops and BLAS
def test_small_and_blas_products_agree_with_numpy(n, k, m):
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((n, k)), rng.standard_normal((k, m))
    C = np.full((n, m), np.nan)
    linalg.matmul(A, B, C)
    np.testing.assert_allclose(C, A @ B, rtol=1e-13, atol=1e-13)
    At = np.ascontiguousarray(A.T)
    C2 = np.full((n, m), np.nan)
    linalg.matmul_tn(At, B, C2)
    np.testing.assert_allclose(C2, A @ B, rtol=1e-13, atol=1e-13)


@kernel
def _block(flat, start, rows, cols):
    view = linalg.matrix(flat, start, rows, cols)
    view[rows - 1, cols - 1] = -1.0  # writes through to flat
    return view


def test_matrix_is_a_writable_view_of_the_block():
    flat = np.arange(20.0)
    view = _block(flat, 3, 2, 4)
    assert view.shape == (2, 4) and view.flags.c_contiguous
    np.testing.assert_array_equal(view, [[3, 4, 5, 6], [7, 8, 9, -1]])
    assert flat[10] == -1.0 and np.shares_memory(view, flat)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (37,), (5, 7), (2, 3, 4)])
def test_all_finite_finds_any_nan_or_inf(dtype, shape):
    a = np.random.default_rng(2).standard_normal(shape).astype(dtype)
    assert checks.all_finite(a)
    for bad in (np.nan, np.inf, -np.inf):
        for position in (0, a.size // 2, a.size - 1):
            b = a.copy()
            b.reshape(-1)[position] = bad
            assert not checks.all_finite(b)
    huge = np.full(shape, np.finfo(dtype).max, dtype=dtype)
    assert checks.all_finite(huge)  # large but finite: x * 0 is still 0


def test_all_in_range_and_outside():
    labels = np.array([0, 2, 1, 2], dtype=np.int64)
    assert checks.all_in_range(labels, 0, 3) and not checks.all_in_range(labels, 0, 2)
    assert not checks.all_in_range(labels, 1, 3)
    for use_kernel in (None, checks):
        assert _validate.outside(labels, 0, 3, use_kernel) is None
        assert _validate.outside(labels, 0, 2, use_kernel) == 2
        assert _validate.outside(labels - 3, -1, 3, use_kernel) == -3
        assert _validate.outside(labels[:0], 0, 1, use_kernel) is None


@pytest.mark.parametrize("shape", [7, (3, 5), (2, 3, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_aligned_empty_starts_on_a_cache_line(shape, dtype):
    a = _workspace.aligned_empty(shape, dtype)
    assert a.ctypes.data % _workspace.ALIGNMENT == 0
    assert a.shape == ((shape,) if isinstance(shape, int) else shape)
    assert a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
    assert _workspace.scratch(np.dtype(dtype), 100).ctypes.data % _workspace.ALIGNMENT == 0


def test_large_results_reuse_the_memory_of_dropped_ones():
    Z = np.random.default_rng(0).standard_normal((3000, 10))  # J: 2.4 MB
    _workspace.release_idle()
    first = fastbp.softmax_jacobian(Z)
    assert first.nbytes >= _workspace.POOL_MIN_BYTES
    assert first.flags.c_contiguous and first.flags.writeable
    assert first.ctypes.data % _workspace.ALIGNMENT == 0
    where = first.ctypes.data
    second = fastbp.softmax_jacobian(Z)  # first still alive: memory of its own
    assert not np.shares_memory(first, second)
    expected = first.copy()
    view = first[10:20]
    del first
    third = fastbp.softmax_jacobian(Z)  # a view keeps the block in use
    assert not np.shares_memory(third, view)
    del view
    fourth = fastbp.softmax_jacobian(Z)
    assert fourth.ctypes.data == where  # the dropped result's block, reused
    np.testing.assert_array_equal(fourth, expected)
    np.testing.assert_array_equal(second, third)
    del fourth
    assert _workspace.release_idle() == len(Z) * 10 * 10 * 8
    assert fastbp.softmax_jacobian(Z[:10]).flags.owndata  # small results: plain np.empty


def test_the_pool_keeps_no_more_idle_memory_than_allowed(monkeypatch):
    Z = np.random.default_rng(0).standard_normal((3000, 10))
    _workspace.release_idle()
    monkeypatch.setattr(_workspace, "POOL_IDLE_BYTES", 1 << 20)  # less than one result
    result = fastbp.softmax_jacobian(Z)
    assert not result.flags.owndata  # from the pool
    del result
    assert _workspace.release_idle() == 0  # not kept
    monkeypatch.setattr(_workspace, "POOL_IDLE_BYTES", 0)  # the pool turned off
    assert fastbp.softmax_jacobian(Z).flags.owndata


def test_the_memory_guard_hands_idle_pool_memory_back_before_refusing(monkeypatch):
    Z = np.random.default_rng(0).standard_normal((3000, 10))
    result = fastbp.softmax_jacobian(Z)
    del result  # its block waits in the pool
    answers = iter([100, 1 << 40])  # too little memory, then enough once released
    monkeypatch.setattr(_validate, "MEMORY_CHECK_BYTES", 1)
    monkeypatch.setattr(_validate, "_available_bytes", lambda: next(answers))
    J = fastbp.softmax_jacobian(Z)  # refused without the second answer
    assert J.shape == (3000, 10, 10)
    assert _workspace.release_idle() == 0  # the guard released the idle block


def test_the_pool_limit_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("FASTBP_POOL_BYTES", "1000")
    assert _workspace._idle_bytes_setting() == 1000
    monkeypatch.setenv("FASTBP_POOL_BYTES", "")
    assert 0 < _workspace._idle_bytes_setting() <= 1 << 29
    monkeypatch.setenv("FASTBP_POOL_BYTES", " 1e9 ")
    assert _workspace._idle_bytes_setting() == 10**9
    for off in ("0", "-5", "-inf"):
        monkeypatch.setenv("FASTBP_POOL_BYTES", off)
        assert _workspace._idle_bytes_setting() == 0
    for typo in ("lots", "512M", "nan"):
        monkeypatch.setenv("FASTBP_POOL_BYTES", typo)
        with pytest.warns(RuntimeWarning, match=f"FASTBP_POOL_BYTES.*{typo!r}.*default"):
            assert _workspace._idle_bytes_setting() == _workspace._default_idle_bytes()


def test_every_kernel_has_cache_files_of_its_own():
    # Numba names a kernel's disk cache after its function's module, qualified name and
    # line, whatever its options: two kernels sharing all three load each other's code.
    import importlib

    from numba.core.registry import CPUDispatcher

    seen = {}
    for name in ("activations", "checks", "dense", "jacobian", "linalg", "softmax", "training"):
        module = importlib.import_module(f"fastbp.kernels.{name}")
        for attribute, value in vars(module).items():
            if isinstance(value, CPUDispatcher):
                function = value.py_func
                key = (function.__module__, function.__qualname__, function.__code__.co_firstlineno)
                assert seen.setdefault(key, value) is value, (attribute, key)
    assert len(seen) > 50


def test_population_networks_run_on_threads_only_below_blas_s_own_threads():
    from fastbp.kernels import dense

    assert dense.networks_on_threads([4, 16, 3], 4096)
    assert dense.networks_on_threads([64, 128, 10], 32)  # 2^18 multiply-adds
    assert not dense.networks_on_threads([64, 128, 10], 33)
    assert not dense.networks_on_threads([784, 512, 256, 10], 1)
