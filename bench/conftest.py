"""pytest-benchmark settings for the side-by-side suite, and a table of speed-ups.

Run with ``pytest bench`` (``pip install ".[test]"``; JAX, PyTorch and scikit-learn are
timed too where they are installed). Each case is timed for every implementation in the
same session; the summary at the end gives, for each case, every other implementation's
median divided by fastbp's (how many times longer it took). In the float32 group the
other implementation is fastbp in float64.

Here every library shares one process, so one's threads and allocator state can slow
another (``fastbp.benchmarks`` describes what was seen); ``fastbp bench`` times each
implementation in a process of its own and gives the steadier figures.
"""

from collections import defaultdict


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    medians = defaultdict(dict)
    for bench in session.benchmarks:
        if bench.has_error or not bench.stats:
            continue
        medians[bench.group][bench.extra_info["implementation"]] = bench.stats.median
    write = terminalreporter.write_line
    terminalreporter.section("speed-up of fastbp (median against median, this run)")
    for group, times in sorted(medians.items()):
        if "fastbp" not in times:
            continue
        others = ", ".join(
            f"{_ratio(times[name] / times['fastbp'])} vs {name}"
            for name in sorted(times)
            if name != "fastbp"
        )
        write(f"{group}: fastbp {1e6 * times['fastbp']:.1f} us; {others}")


def _ratio(value):
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"
