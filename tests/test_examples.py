"""The examples, which answer the questions in ../shared/seeds, run and say what they should."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(name):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        cwd=EXAMPLES,  # not the project root, whose fastbp/ would be imported, not the install
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_quickstart():
    assert "gradcheck: max relative error" in run("quickstart.py")


def test_seed_000_gradcheck_finds_the_wrong_gradient():
    out = run("seed_000_iris_flat_gradient.py").splitlines()
    wrong, right = float(out[0].split()[5]), float(out[1].split()[4])
    assert wrong > 0.1 and right < 1e-6
    assert "is 150 times the finite difference" in out[2]


def test_seed_001_gradients_have_their_parameters_shapes():
    out = run("seed_001_planar_shapes.py")
    assert "W (2, 4) -> dL/dW (2, 4)" in out and "W (4, 1) -> dL/dW (4, 1)" in out
    assert "ValueError: X must have shape (n, 2)" in out and "got (2, 400)" in out


def test_seed_002_the_delta_depends_on_the_loss():
    verdicts = [line.split()[-1] for line in run("seed_002_output_delta.py").splitlines()]
    assert verdicts == ["right", "wrong", "wrong", "right"]


def test_seed_003_softmax_jacobian():
    out = run("seed_003_softmax_jacobian.py")
    assert "diag(s) - s s^T: True" in out and "sum to 0: True" in out
    assert "(100000, 10, 10)" in out


@pytest.mark.skipif(not (EXAMPLES / "swarm_sobolev.py").exists(), reason="not written yet")
def test_seed_004_swarm_fits_values_and_derivatives():
    assert run("swarm_sobolev.py")
