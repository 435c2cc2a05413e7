"""Public API behaviour: validation, dtypes, backends, inputs left untouched."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_problem

import fastbp

NET = fastbp.MLP([3, 4, 2])  # softmax / cross-entropy
SIG = fastbp.MLP([3, 4, 2], output="sigmoid")
THETA = NET.init(seed=0)
X = np.random.default_rng(0).standard_normal((5, 3))
Y = np.eye(2)[[0, 1, 1, 0, 1]]
LABELS = np.array([0, 1, 1, 0, 1])
T = np.zeros((5, 2))
WHICH = np.array([-1, 0, 1, 2, -1])
SGD = fastbp.SGD(0.1)


def nan_at(array, index=0):
    array = np.array(array, dtype=float)
    array.flat[index] = np.nan
    return array


# (call, exception type, words the message must contain)
BAD_INPUTS = {
    "mlp not an MLP": (lambda: fastbp.forward("net", THETA, X), TypeError, "mlp"),
    "theta too short": (lambda: fastbp.forward(NET, THETA[:-1], X), ValueError, "theta"),
    "theta 3-D": (lambda: fastbp.forward(NET, THETA[None, None], X), ValueError, "theta"),
    "theta empty population": (
        lambda: fastbp.forward(NET, np.empty((0, NET.n_params)), X),
        ValueError,
        "theta",
    ),
    "theta strings": (lambda: fastbp.forward(NET, ["a"] * NET.n_params, X), TypeError, "theta"),
    "theta NaN": (lambda: fastbp.forward(NET, nan_at(THETA), X), ValueError, "theta"),
    "X wrong columns": (lambda: fastbp.forward(NET, THETA, X[:, :2]), ValueError, "X"),
    "X 1-D": (lambda: fastbp.forward(NET, THETA, X[0]), ValueError, "X[None, :]"),
    "X inf": (lambda: fastbp.loss(NET, THETA, nan_at(X) * np.inf, Y), ValueError, "X"),
    "X complex": (lambda: fastbp.forward(NET, THETA, X + 1j), TypeError, "X"),
    "X no rows in a loss": (lambda: fastbp.loss(NET, THETA, X[:0], Y[:0]), ValueError, "X"),
    "Y wrong rows": (lambda: fastbp.loss(NET, THETA, X, Y[:4]), ValueError, "Y"),
    "Y wrong columns": (lambda: fastbp.loss(NET, THETA, X, Y[:, :1]), ValueError, "Y"),
    "Y 1-D floats": (lambda: fastbp.loss(SIG, THETA, X, Y[:, 0]), ValueError, "Y"),
    "Y NaN": (lambda: fastbp.loss(NET, THETA, X, nan_at(Y)), ValueError, "Y"),
    "labels out of range": (lambda: fastbp.loss(NET, THETA, X, LABELS + 1), ValueError, "label"),
    "labels negative": (lambda: fastbp.loss(NET, THETA, X, LABELS - 1), ValueError, "label"),
    "labels without softmax": (lambda: fastbp.loss(SIG, THETA, X, LABELS), ValueError, "Y"),
    "labels wrong length": (lambda: fastbp.loss(NET, THETA, X, LABELS[:3]), ValueError, "Y"),
    "l2 negative": (lambda: fastbp.loss(NET, THETA, X, Y, l2=-1), ValueError, "l2"),
    "l2 not a number": (lambda: fastbp.loss(NET, THETA, X, Y, l2="x"), TypeError, "l2"),
    "backend unknown": (
        lambda: fastbp.forward(NET, THETA, X, backend="cuda"),
        ValueError,
        "backend",
    ),
    "out wrong shape": (
        lambda: fastbp.forward(NET, THETA, X, out=np.empty((5, 3))),
        ValueError,
        "out",
    ),
    "out wrong dtype": (
        lambda: fastbp.loss_and_grad(NET, THETA, X, Y, out=np.empty(NET.n_params, np.float32)),
        ValueError,
        "out",
    ),
    "unknown hidden": (lambda: fastbp.MLP([2, 2], hidden="gelu"), ValueError, "hidden"),
    "unknown output": (lambda: fastbp.MLP([2, 2], output="tanh"), ValueError, "output"),
    "unknown loss": (lambda: fastbp.MLP([2, 2], loss="hinge"), ValueError, "loss"),
    "cross-entropy on identity": (
        lambda: fastbp.MLP([2, 2], output="identity", loss="cross_entropy"),
        ValueError,
        "cross_entropy",
    ),
    "sizes too short": (lambda: fastbp.MLP([3]), ValueError, "sizes"),
    "sizes zero width": (lambda: fastbp.MLP([3, 0, 2]), ValueError, "sizes"),
    "sizes not integers": (lambda: fastbp.MLP([3, 2.5]), TypeError, "sizes"),
    "sizes booleans": (lambda: fastbp.MLP([True, 2]), TypeError, "sizes"),
    "sizes not a sequence": (lambda: fastbp.MLP(3), TypeError, "sizes"),
    "unpack wrong length": (lambda: NET.unpack(THETA[:-2]), ValueError, "theta"),
    "pack wrong W shape": (
        lambda: NET.pack([(np.ones((4, 3)), np.ones(4)), (np.ones((4, 2)), np.ones(2))]),
        ValueError,
        "W of layer 1",
    ),
    "pack wrong count": (lambda: NET.pack([(np.ones((3, 4)), np.ones(4))]), ValueError, "params"),
    "pack a triple": (
        lambda: NET.pack([(W, b, b) for W, b in NET.unpack(THETA)]),
        ValueError,
        "params[0] must be a pair (W, b); got 3 entries",
    ),
    "pack complex": (
        lambda: NET.pack([(W + 0j, b) for W, b in NET.unpack(THETA)]),
        TypeError,
        "real numbers",
    ),
    "softmax over one output": (lambda: fastbp.MLP([3, 4, 1]), ValueError, "output='sigmoid'"),
    "init population a float": (lambda: NET.init(population=2.0), TypeError, "population"),
    "init seed a float": (lambda: NET.init(seed=1.5), TypeError, "seed"),
    "init seed negative": (lambda: NET.init(seed=-1), ValueError, "seed"),
    "Z 3-D": (lambda: fastbp.softmax(np.ones((2, 2, 2))), ValueError, "Z"),
    "G wrong shape": (
        lambda: fastbp.softmax_vjp(np.ones((2, 3)), np.ones((3, 2))),
        ValueError,
        "G",
    ),
    "Z NaN": (lambda: fastbp.softmax_jacobian(nan_at(np.ones((2, 3)))), ValueError, "Z"),
    "T wrong shape": (
        lambda: fastbp.sobolev_loss(NET, THETA, X, T[:, :1], WHICH),
        ValueError,
        "T",
    ),
    "which out of range": (
        lambda: fastbp.sobolev_loss(NET, THETA, X, T, WHICH + 2),
        ValueError,
        "which",
    ),
    "which unsigned beyond int64": (
        lambda: fastbp.sobolev_loss(NET, THETA, X, T, np.array([2**64 - 1, 0, 1, 2, 0], np.uint64)),
        ValueError,
        "which",
    ),
    "labels unsigned beyond int64": (
        lambda: fastbp.loss_and_grad(NET, THETA, X, np.array([0, 1, 2**63, 0, 1], np.uint64)),
        ValueError,
        f"Y holds label {2**63}",
    ),
    "Y None": (lambda: fastbp.loss_and_grad(NET, THETA, X, None), TypeError, "Y"),
    "labels as floats": (
        lambda: fastbp.loss_and_grad(NET, THETA, X, LABELS.astype(float)),
        ValueError,
        "class labels must be integers: Y.astype(int); these are float64",
    ),
    "labels as booleans": (
        lambda: fastbp.loss(NET, THETA, X, LABELS.astype(bool)),
        ValueError,
        "class labels must be integers",
    ),
    "1-D targets of one output": (
        lambda: fastbp.loss(fastbp.MLP([3, 1], output="identity"), np.zeros(4), X, np.ones(5)),
        ValueError,
        "Y.reshape(5, 1)",
    ),
    "T None": (lambda: fastbp.sobolev_loss(NET, THETA, X, None, WHICH), TypeError, "T"),
    "validation targets None": (
        lambda: fastbp.train(
            NET, THETA, X, Y, epochs=1, batch_size=5, optimizer=SGD, validation=(X, None)
        ),
        TypeError,
        "Y",
    ),
    "which floats": (
        lambda: fastbp.sobolev_loss(NET, THETA, X, T, WHICH.astype(float)),
        TypeError,
        "which",
    ),
    "gradcheck wrong gradient shape": (
        lambda: fastbp.gradcheck(lambda t: (0.0, np.zeros(2)), np.ones(3)),
        ValueError,
        "gradient",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_a_message_naming_the_argument(case):
    call, error, words = BAD_INPUTS[case]
    with pytest.raises(error) as info:
        call()
    assert words in str(info.value)


def test_messages_give_expected_and_actual_shapes():
    with pytest.raises(ValueError, match=r"\(n, 3\).*\(5, 2\)"):
        fastbp.forward(NET, THETA, X[:, :2])
    with pytest.raises(ValueError, match=rf"\({NET.n_params},\).*\({NET.n_params - 1},\)"):
        fastbp.loss_and_grad(NET, THETA[:-1], X, Y)


def test_check_finite_false_skips_the_check():
    theta = nan_at(THETA)
    result = fastbp.forward(NET, theta, X, check_finite=False, backend="numpy")
    assert np.isnan(result).all()


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_no_public_function_modifies_its_inputs(backend):
    net = fastbp.MLP([3, 5, 2], hidden="relu", output="softmax")
    theta, X, Y = make_problem(net, n=6, population=2)
    labels = np.array([0, 1, 1, 0, 1, 0])
    which = np.array([-1, 0, 1, 2, -1, 0])
    Z, G = np.random.default_rng(1).standard_normal((2, 4, 3))
    args = [theta, X, Y, labels, which, Z, G]
    copies = [a.copy() for a in args]
    kw = {"backend": backend}
    fastbp.forward(net, theta, X, **kw)
    fastbp.loss(net, theta[0], X, Y, 0.1, **kw)
    fastbp.loss_and_grad(net, theta, X, labels, 0.1, **kw)
    fastbp.input_jacobian(net, theta, X, **kw)
    fastbp.forward_and_jacobian(net, theta[1], X, **kw)
    fastbp.sobolev_loss(net, theta, X, Y, which, **kw)
    fastbp.softmax(Z, **kw)
    fastbp.softmax_jacobian(Z, **kw)
    fastbp.softmax_vjp(Z, G, **kw)
    fastbp.gradcheck(lambda t: fastbp.loss_and_grad(net, t, X, Y, **kw), theta[0])
    for original, copy in zip(args, copies):
        np.testing.assert_array_equal(original, copy)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_dtype_follows_the_inputs(backend):
    theta32, X32, Y32 = make_problem(NET, n=4, dtype=np.float32)
    kw = {"backend": backend}
    assert fastbp.forward(NET, theta32, X32, **kw).dtype == np.float32
    value, grad = fastbp.loss_and_grad(NET, theta32, X32, Y32, **kw)
    assert value.dtype == np.float32 and grad.dtype == np.float32
    assert fastbp.loss_and_grad(NET, theta32, X32, Y32.astype(np.float64), **kw)[1].dtype == (
        np.float64
    )
    assert fastbp.loss(NET, theta32, X32, np.array([0, 1, 1, 0]), **kw).dtype == np.float32
    assert fastbp.forward(NET, theta32, X32.astype(np.float64), **kw).dtype == np.float64
    assert fastbp.forward(NET, theta32, np.ones((2, 3), dtype=int), **kw).dtype == np.float64
    assert fastbp.input_jacobian(NET, theta32, X32, **kw).dtype == np.float32
    assert fastbp.softmax(X32, **kw).dtype == np.float32
    assert fastbp.softmax(np.ones((2, 3), dtype=bool), **kw).dtype == np.float64


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_empty_batches(backend):
    kw = {"backend": backend}
    assert fastbp.forward(NET, THETA, X[:0], **kw).shape == (0, 2)
    assert fastbp.input_jacobian(NET, THETA, X[:0], **kw).shape == (0, 2, 3)
    assert fastbp.softmax_jacobian(np.empty((0, 4)), **kw).shape == (0, 4, 4)
    with pytest.raises(ValueError, match="0 rows"):
        fastbp.loss_and_grad(NET, THETA, X[:0], Y[:0], **kw)
    with pytest.raises(ValueError, match="0 rows"):
        fastbp.sobolev_loss(NET, THETA, X[:0], T[:0], WHICH[:0], **kw)


def test_out_is_written_and_returned():
    out = np.empty((5, 2))
    assert fastbp.forward(NET, THETA, X, out=out) is out
    np.testing.assert_array_equal(out, fastbp.forward(NET, THETA, X))
    grad = np.empty(NET.n_params)
    value, returned = fastbp.loss_and_grad(NET, THETA, X, Y, out=grad)
    assert returned is grad


def carved(inputs, name, out_shape, out_dtype=np.float64):
    """``inputs`` with ``inputs[name]`` moved into a buffer, and an ``out`` of
    ``out_shape`` in that buffer whose first entry is the input's last byte's entry."""
    data = np.asarray(inputs[name])
    base = np.zeros(data.nbytes + np.dtype(out_dtype).itemsize * int(np.prod(out_shape)), np.uint8)
    moved = base[: data.nbytes].view(data.dtype).reshape(data.shape)
    moved[...] = data
    start = data.nbytes - np.dtype(out_dtype).itemsize
    out = base[start : start + np.dtype(out_dtype).itemsize * int(np.prod(out_shape))]
    return {**inputs, name: moved}, out.view(out_dtype).reshape(out_shape)


POP = NET.init(seed=1, population=3)
# function, its inputs, the shape of its out=, and which inputs out must stay apart from
OUT_CASES = {
    "forward": (fastbp.forward, dict(theta=THETA, X=X), (5, 2)),
    "loss_and_grad targets": (fastbp.loss_and_grad, dict(theta=THETA, X=X, Y=Y), THETA.shape),
    "loss_and_grad labels": (fastbp.loss_and_grad, dict(theta=THETA, X=X, Y=LABELS), THETA.shape),
    "input_jacobian": (fastbp.input_jacobian, dict(theta=THETA, X=X), (5, 2, 3)),
    "sobolev_loss": (fastbp.sobolev_loss, dict(theta=POP, X=X, T=T, which=WHICH), (3,)),
    "softmax": (fastbp.softmax, dict(Z=X), (5, 3)),
    "softmax_jacobian": (fastbp.softmax_jacobian, dict(Z=X), (5, 3, 3)),
    "softmax_vjp": (fastbp.softmax_vjp, dict(Z=X, G=X + 1.0), (5, 3)),
}


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("case", list(OUT_CASES))
def test_out_overlapping_an_input_is_refused_and_the_input_kept(case, backend):
    function, inputs, out_shape = OUT_CASES[case]
    positional = [] if "theta" not in inputs else [NET]
    for name in inputs:
        moved, out = carved(inputs, name, out_shape)
        kept = moved[name].copy()
        with pytest.raises(ValueError, match=f"out must not share memory with {name}"):
            function(*positional, *moved.values(), out=out, backend=backend)
        np.testing.assert_array_equal(moved[name], kept)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_forward_and_jacobian_out_is_a_pair_kept_apart(backend):
    inputs = dict(theta=THETA, X=X)
    for name in inputs:
        moved, A = carved(inputs, name, (5, 2))
        with pytest.raises(ValueError, match=f"out\\[0\\] must not share memory with {name}"):
            fastbp.forward_and_jacobian(
                NET, *moved.values(), out=(A, np.empty((5, 2, 3))), backend=backend
            )
        moved, J = carved(inputs, name, (5, 2, 3))
        with pytest.raises(ValueError, match=f"out\\[1\\] must not share memory with {name}"):
            fastbp.forward_and_jacobian(
                NET, *moved.values(), out=(np.empty((5, 2)), J), backend=backend
            )
    both = np.empty(5 * 2 + 5 * 2 * 3)
    A, J = both[:10].reshape(5, 2), both[9:39].reshape(5, 2, 3)
    with pytest.raises(ValueError, match=r"out\[1\] must not share memory with out\[0\]"):
        fastbp.forward_and_jacobian(NET, THETA, X, out=(A, J), backend=backend)
    for bad, words in [((A,), "tuple of length 1"), (np.empty((5, 2, 3)), "ndarray of shape")]:
        with pytest.raises(TypeError, match=f"out must be a pair \\(A, J\\).*{words}"):
            fastbp.forward_and_jacobian(NET, THETA, X, out=bad, backend=backend)


def test_non_contiguous_and_list_inputs_are_accepted():
    X_fortran = np.asfortranarray(X)
    X_strided = np.repeat(X, 2, axis=0)[::2]
    expected = fastbp.forward(NET, THETA, X, backend="numpy")
    for Xv in (X_fortran, X_strided, X.tolist()):
        np.testing.assert_allclose(fastbp.forward(NET, THETA, Xv), expected, rtol=1e-12)


TESTS = Path(__file__).resolve().parent


def run_python(code, cwd=TESTS, **env):
    """Run ``code`` in a fresh interpreter, by default outside the project root (whose
    ``fastbp/`` folder would be imported in place of the installed package)."""
    environment = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
    )


def test_imports_from_the_project_root_too():
    # There fastbp/ is the source folder, without the fastbp.kernels that installation
    # maps from kernels/; the package makes the same mapping.
    root = TESTS.parent
    code = "import fastbp, fastbp.kernels.codes as codes; print(codes.__file__)"
    result = run_python(code, cwd=root)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).parent.name == "kernels"


def test_environment_variable_selects_the_default_backend():
    code = "import fastbp._backend as b; print(b.default())"
    assert run_python(code, FASTBP_BACKEND="numpy").stdout.strip() == "numpy"
    assert run_python(code, FASTBP_BACKEND="").stdout.strip() == "numba"
    result = run_python(
        "import fastbp, numpy as np; fastbp.softmax(np.ones(3))", FASTBP_BACKEND="cuda"
    )
    assert result.returncode != 0 and "FASTBP_BACKEND" in result.stderr


def test_missing_numba_falls_back_to_numpy_with_one_warning():
    code = (
        "import sys, warnings; sys.modules['numba'] = None\n"
        "import numpy as np, fastbp\n"
        "net = fastbp.MLP([2, 3, 2])\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    for _ in range(3):\n"
        "        fastbp.loss_and_grad(net, net.init(), np.ones((4, 2)), np.array([0, 1, 0, 1]))\n"
        "        fastbp.softmax(np.ones((2, 3)))\n"
        "print(len(caught), caught[0].message)\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    count, message = result.stdout.split(" ", 1)
    assert count == "1" and "NumPy backend" in message
