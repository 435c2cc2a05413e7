"""Every headline case of ``fastbp.benchmarks`` under pytest-benchmark, and fastbp's
float32 against its float64 on the medium and large gradients.

Parametrised over case x implementation (``numpy`` is the reference); the first call
of each implementation (the compile, for fastbp and JAX) happens before timing. Cases
that write a large result also time their memory floors, NumPy writing the same bytes.
"""

import numpy as np
import pytest

from fastbp import benchmarks

SETTINGS = benchmarks.Settings(dtype=np.float64)
_built = {}


def implementations(case_name):
    if case_name not in _built:
        case = benchmarks.CASES[case_name]
        _built[case_name] = case.build(case.size, SETTINGS)
    return _built[case_name]


@pytest.mark.parametrize("implementation", benchmarks.IMPLEMENTATIONS)
@pytest.mark.parametrize("case_name", list(benchmarks.CASES))
def test_case(benchmark, case_name, implementation):
    built = implementations(case_name)
    if implementation not in built.functions:
        reason = built.unavailable.get(implementation, "not part of this case")
        pytest.skip(f"{implementation}: {reason}")
    function = built.functions[implementation]
    function()  # warm-up: compiles
    case = benchmarks.CASES[case_name]
    benchmark.group = f"{case_name} ({case.label()})"
    benchmark.extra_info["implementation"] = implementation
    benchmark(function)


@pytest.mark.parametrize(
    ("case_name", "floor"),
    [
        (case_name, floor)
        for case_name, floors in benchmarks.MEMORY_FLOORS.items()
        for floor in floors
    ],
)
def test_memory_floor(benchmark, case_name, floor):
    function = implementations(case_name).floors[floor]
    function()
    case = benchmarks.CASES[case_name]
    benchmark.group = f"{case_name} ({case.label()})"
    benchmark.extra_info["implementation"] = f"floor: {floor}"
    benchmark(function)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case_name", ["loss_and_grad_medium", "loss_and_grad_large"])
def test_float32_against_float64(benchmark, case_name, dtype):
    # The summary's "Nx vs fastbp float64" is how much faster float32 runs.
    case = benchmarks.CASES[case_name]
    built = case.build(case.size, benchmarks.Settings(dtype=dtype, peers=()))
    function = built.functions["fastbp"]
    function()
    benchmark.group = f"{case_name} ({case.label()}), float32 against float64"
    benchmark.extra_info["implementation"] = "fastbp" if dtype is np.float32 else "fastbp float64"
    benchmark(function)
