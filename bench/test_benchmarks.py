"""Every headline case of ``fastbp.benchmarks`` under pytest-benchmark.

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
