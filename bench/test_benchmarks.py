"""Every headline case of ``fastbp.benchmarks`` under pytest-benchmark.

Parametrised over case x implementation (``numpy`` is the reference); the first call
of each implementation (the compile, for fastbp and JAX) happens before timing.
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
