"""The ``fastbp`` command: demo, bench and check, run in-process in their quick modes."""

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastbp
from fastbp import benchmarks, cli
from fastbp.cli import main


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_help_lists_the_commands(capsys):
    status, out, _ = run(capsys, "--help")
    assert status == 0
    for command in ("demo", "bench", "check"):
        assert command in out


@pytest.mark.parametrize("command", ["demo", "bench", "check"])
def test_each_command_has_help(capsys, command):
    status, out, _ = run(capsys, command, "--help")
    assert status == 0 and f"fastbp {command}" in out


def test_version(capsys):
    status, out, _ = run(capsys, "--version")
    assert status == 0 and out.strip() == f"fastbp {fastbp.__version__}"


def test_python_m_fastbp_runs_outside_the_source_tree(tmp_path):
    # From the project root, the source folder fastbp/ (without fastbp.kernels) would
    # shadow the installed package.
    result = subprocess.run(
        [sys.executable, "-m", "fastbp", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "demo" in result.stdout and "bench" in result.stdout


BAD_COMMAND_LINES = {
    "no command": [],
    "unknown command": ["frobnicate"],
    "unknown option": ["check", "--fast"],
    "unknown case": ["bench", "--case", "no_such_case"],
    "bad dtype": ["bench", "--dtype", "float16"],
    "zero repeats": ["bench", "--repeats", "0"],
    "repeats not a number": ["bench", "--repeats", "many"],
    "unknown peer": ["bench", "--peers", "jax,mxnet"],
    "negative epochs": ["demo", "--epochs", "-3"],
    "seed not a number": ["check", "--seed", "x"],
    "negative seed": ["check", "--seed", "-5"],
}


@pytest.mark.parametrize("argv", BAD_COMMAND_LINES.values(), ids=BAD_COMMAND_LINES.keys())
def test_bad_command_lines_exit_2_with_one_line(capsys, argv):
    status, out, err = run(capsys, *argv)
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1 and "error" in err and "Traceback" not in err


def test_usage_errors_point_to_the_command_s_own_help(capsys):
    for argv in (["check", "--fast"], ["demo", "--epochs", "x"]):
        _, _, err = run(capsys, *argv)
        assert f"'fastbp {argv[0]} --help'" in err


def test_unknown_case_names_the_case(capsys):
    _, _, err = run(capsys, "bench", "--case", "no_such_case")
    assert "no_such_case" in err and "loss_and_grad_tiny" in err


def test_plot_without_matplotlib_is_a_one_line_error(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    status, out, err = run(capsys, "bench", "--quick", "--plot", str(tmp_path / "p.png"))
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and "matplotlib" in err


def test_json_into_a_missing_directory_is_a_one_line_error_before_timing(capsys, tmp_path):
    status, out, err = run(capsys, "bench", "--json", str(tmp_path / "missing" / "b.json"))
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and "missing" in err


def test_asking_for_a_peer_that_is_not_installed_is_an_error(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)  # find_spec now reports it missing
    status, _, err = run(capsys, "bench", "--quick", "--peers", "jax")
    assert status == 1 and err.count("\n") == 1 and "jax" in err


def test_bench_lists_its_cases(capsys):
    status, out, _ = run(capsys, "bench", "--list")
    assert status == 0
    assert [line.split()[0] for line in out.splitlines()] == list(benchmarks.CASES)


def test_bench_quick_writes_json_and_plot(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    json_path, plot_path = tmp_path / "bench.json", tmp_path / "bench.png"
    cases = ["loss_and_grad_tiny", "sobolev_loss"]
    argv = ["bench", "--quick", "--peers", "none", "--json", str(json_path)]
    argv += ["--plot", str(plot_path), "--case", cases[0], "--case", cases[1]]
    status, out, _ = run(capsys, *argv)
    assert status == 0
    assert cases[0] in out and cases[1] in out
    assert plot_path.read_bytes().startswith(b"\x89PNG")

    document = json.loads(json_path.read_text())
    assert document["settings"]["dtype"] == "float64"
    assert document["settings"]["repeats"] == 3
    assert document["machine"]["cpu_count"] >= 1 and "numpy" in document["machine"]
    assert list(document["cases"]) == cases
    for name, result in document["cases"].items():
        assert result["size"] == benchmarks.CASES[name].size
        medians = result["median_seconds"]
        assert set(medians) == {"fastbp", "numpy"} and min(medians.values()) > 0
        assert result["speedup_vs"]["numpy"] == pytest.approx(medians["numpy"] / medians["fastbp"])
        assert result["agrees_with_numpy"] == {"fastbp": True}
        sweep = document["sweeps"][name]["points"]
        assert [p["size"] for p in sweep] == list(benchmarks.CASES[name].quick_sweep)
        assert all(p["speedup_vs"]["numpy"] > 0 for p in sweep)


def test_bench_in_float32(capsys, tmp_path):
    path = tmp_path / "bench32.json"
    argv = ["bench", "--quick", "--repeats", "1", "--peers", "none", "--dtype", "float32"]
    status, out, _ = run(capsys, *argv, "--case", "input_jacobian", "--json", str(path))
    assert status == 0 and "float32" in out
    document = json.loads(path.read_text())
    assert document["settings"]["dtype"] == "float32"
    assert document["cases"]["input_jacobian"]["agrees_with_numpy"] == {"fastbp": True}


def _installed_peers():
    peers, _ = benchmarks.available_peers()
    return peers


@pytest.mark.peers
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(benchmarks.CASES))
def test_every_implementation_of_a_case_computes_the_same_thing(name, dtype):
    peers = _installed_peers()
    if not peers and name != "train_epoch_digits":
        pytest.skip("no optional peer (jax, torch, scikit-learn) is installed")
    case = benchmarks.CASES[name]
    settings = benchmarks.Settings(
        dtype=dtype, repeats=1, min_seconds=0.0, peers=peers, isolate=False
    )
    m = benchmarks.measure(case, min(case.quick_sweep), settings)
    assert m.unavailable == {}
    ran = set(m.median_seconds)
    assert {"fastbp", "numpy"} <= ran
    if name == "train_epoch_digits":
        assert m.agrees == {}  # different shuffles: nothing to compare
        assert ran == {"fastbp", "numpy"} | {p for p in peers if p in ("torch", "sklearn")}
    else:
        assert ran == {"fastbp", "numpy"} | {p for p in peers if p in ("jax", "torch")}
        assert m.agrees == {name: True for name in ran - {"numpy"}}


@pytest.mark.parametrize("name", list(benchmarks.MEMORY_FLOORS))
def test_softmax_jacobian_cases_time_their_memory_floors(capsys, name):
    settings = benchmarks.Settings(
        repeats=1, min_seconds=0.0, peers=(), settle_seconds=0.0, isolate=False
    )
    m = benchmarks.measure(benchmarks.CASES[name], 100, settings)
    assert set(m.floor_seconds) == set(benchmarks.MEMORY_FLOORS[name])
    assert set(m.median_seconds) == {"fastbp", "numpy"}  # floors are not implementations
    for floor, fraction in m.floor_fraction.items():
        assert fraction == pytest.approx(m.floor_seconds[floor] / m.median_seconds["fastbp"])
    cli._print_floors([m])
    out = capsys.readouterr().out
    assert "memory floors" in out and all(floor in out for floor in m.floor_seconds)


def test_isolated_measurement_times_each_implementation_in_a_process_of_its_own():
    settings = benchmarks.Settings(repeats=2, min_seconds=0.0, peers=(), settle_seconds=0.0)
    case = benchmarks.CASES["softmax_jacobian"]
    with benchmarks.Workers(settings) as workers:
        first = benchmarks.measure(case, 100, settings, workers)
        second = benchmarks.measure(case, 1000, settings, workers)  # the same processes
        processes = {name: worker.pid for name, worker in workers.running().items()}
    assert set(processes) == {"fastbp", "numpy"}
    assert len(set(processes.values()) | {os.getpid()}) == 3
    assert workers.running() == {}  # leaving the block stops them
    for m in (first, second):
        assert set(m.median_seconds) == {"fastbp", "numpy"}
        assert min(m.median_seconds.values()) > 0
        assert m.agrees == {"fastbp": True}  # results came back from the processes
        assert set(m.floor_seconds) == set(benchmarks.MEMORY_FLOORS["softmax_jacobian"])
        assert m.calls_per_repeat == {"fastbp": 1, "numpy": 1}


def test_benchmark_processes_import_the_fastbp_of_their_parent(monkeypatch):
    # From the project root, `python -m` would import the uninstalled ./fastbp folder.
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    settings = benchmarks.Settings(repeats=1, min_seconds=0.0, peers=(), settle_seconds=0.0)
    with benchmarks.Workers(settings) as workers:
        reply = workers.get("fastbp").ask("build", "softmax_vjp", 10)
    assert reply["fastbp"] == fastbp.__file__
    assert reply["timed"] == ["fastbp"] and reply["unavailable"] == {}


def test_an_error_in_a_benchmark_process_comes_back_with_its_traceback():
    settings = benchmarks.Settings(repeats=1, min_seconds=0.0, peers=(), settle_seconds=0.0)
    with benchmarks.Workers(settings) as workers:
        with pytest.raises(benchmarks.WorkerError, match="no_such_case"):
            workers.get("fastbp").ask("build", "no_such_case", 10)
        other = dataclasses.replace(settings, repeats=3)
        with pytest.raises(ValueError, match="other settings"):
            benchmarks.measure(benchmarks.CASES["softmax_jacobian"], 10, other, workers)


def test_each_timed_round_follows_an_untimed_round_of_as_many_calls():
    counts = []

    def run(count):  # "seconds per call": how many loops ran so far
        counts.append(count)
        return float(len(counts))

    settings = benchmarks.Settings(repeats=3, min_seconds=0.0, peers=(), settle_seconds=0.0)
    medians, calls = benchmarks._time({"fastbp": run}, settings)
    # Three loops count the calls; then an untimed and a timed loop per round (loops
    # 4 and 5, 6 and 7, 8 and 9): the median is of the timed ones only.
    assert counts == [1] * 9 and calls == {"fastbp": 1}
    assert medians == {"fastbp": 7.0}


def test_measurement_speedup_is_peer_time_over_fastbp_time():
    case = benchmarks.CASES["loss_and_grad_tiny"]
    m = benchmarks.Measurement(case, 32, {"fastbp": 2.0, "numpy": 6.0, "jax": 1.0}, {}, {}, {})
    assert m.speedup == {"numpy": 3.0, "jax": 0.5}


def test_demo_trains_digits_to_96_percent_and_checks_a_gradient(capsys):
    # --quick keeps the timings short; 30 epochs is the full digits training.
    status, out, _ = run(capsys, "demo", "--quick", "--epochs", "30")
    assert status == 0
    epochs = re.findall(
        r"epoch +(\d+) +loss [\d.]+ +held-out accuracy +[\d.]+ % +[\d.]+ ms/epoch", out
    )
    assert [int(e) for e in epochs] == list(range(1, 31))
    accuracy = float(re.search(r"digits held-out accuracy: ([\d.]+) %", out).group(1))
    assert accuracy >= 96.0
    assert re.search(r"iris: .* held-out accuracy [\d.]+ %", out)
    error = float(re.search(r"max relative error ([\d.e+-]+)", out).group(1))
    assert error < 1e-6
    for function in ("loss_and_grad", "input_jacobian", "softmax_jacobian"):
        assert re.search(rf"{function} .* fastbp .* numpy .* [\d.]+x", out)


def test_check_passes_every_kernel(capsys):
    status, out, _ = run(capsys, "check")
    assert status == 0
    lines = out.splitlines()
    results = [line for line in lines if line.startswith(("ok", "FAIL"))]
    assert results and all(line.startswith("ok") for line in results)
    for hidden in ("sigmoid", "tanh", "relu", "identity"):
        for combination in ("softmax/cross_entropy", "sigmoid/mse", "identity/mse"):
            assert any(f"{hidden}/{combination}" in line for line in results)
    assert lines[-1] == f"all {len(results)} checks passed"


def test_check_fails_on_a_wrong_gradient(capsys, monkeypatch):
    correct = fastbp.loss_and_grad

    def off_by_one_percent(*args, **kwargs):
        value, grad = correct(*args, **kwargs)
        return value, 1.01 * grad

    monkeypatch.setattr(fastbp, "loss_and_grad", off_by_one_percent)
    status, out, _ = run(capsys, "check")
    assert status == 1
    failed = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert failed and all("loss_and_grad" in line for line in failed)
    assert "FAILED" in out.splitlines()[-1]


def test_threads_are_limited_during_bench_and_restored_after(capsys, tmp_path):
    numba = pytest.importorskip("numba")
    before = numba.get_num_threads()
    path = tmp_path / "threads.json"
    argv = ["bench", "--quick", "--repeats", "1", "--peers", "none", "--threads", "1"]
    status, out, _ = run(capsys, *argv, "--case", "loss_and_grad_tiny", "--json", str(path))
    assert status == 0 and "at most 1 per library" in out
    document = json.loads(path.read_text())
    assert document["settings"]["threads"] == 1
    assert document["machine"]["numba_threads"] == 1
    assert numba.get_num_threads() == before
