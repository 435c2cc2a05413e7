"""When parallel kernels fall back to one thread: on a clock the test sets, not on timing."""

import math

import numpy as np
import pytest
from conftest import make_problem

import fastbp
from fastbp import _threads


class Clock:
    def __init__(self):
        self.now = 100.0

    def perf_counter(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(_threads, "time", clock)
    _threads.forget()
    yield clock
    _threads.forget()


def run(clock, seconds, kind="jacobian", size=1000):
    """One call that takes ``seconds``; returns whether it ran on threads."""
    call = _threads.Call(kind, size)
    clock.now += seconds
    call.done()
    return call.threads


def settle(clock):
    """The two calls of the baseline (100 us), then the calls on threads not judged."""
    assert not run(clock, 5.0) and not run(clock, 1e-4)
    for _ in range(_threads.SETTLING_CALLS):
        assert run(clock, 5.0)  # compiling, then threads waking: no verdict


def test_the_first_two_calls_of_a_size_run_on_one_thread_for_a_baseline(clock):
    assert [run(clock, 1e-4) for _ in range(3)] == [False, False, True]
    assert not run(clock, 1e-4, size=10_000)  # another size class: a baseline of its own
    assert not run(clock, 1e-4, kind="sobolev")


def test_two_calls_held_back_a_time_slice_send_calls_to_one_thread_for_a_while(clock):
    settle(clock)
    assert run(clock, 8e-3)  # 80 times the baseline, 7.9 ms more: a time slice
    assert run(clock, 1e-4)  # one could be a hiccup
    assert run(clock, 8e-3) and run(clock, 8e-3)  # two in a row: other processes
    assert not run(clock, 1e-4) and not run(clock, 1e-4)
    clock.now += _threads.HOLD_SECONDS
    assert run(clock, 5e-5)  # threads again


@pytest.mark.parametrize("seconds", [2.9e-4, 9e-4])
def test_slow_calls_that_are_no_time_slice_keep_the_threads(clock, seconds):
    # 2.9x the baseline; or 9x it, but only 0.8 ms more (a hiccup, not a time slice).
    settle(clock)
    assert run(clock, seconds) and run(clock, seconds) and run(clock, seconds)
    assert run(clock, 1e-4)


def test_calls_after_an_idle_spell_are_not_judged_at_once(clock):
    settle(clock)
    clock.now += 0.15  # threads fall asleep
    slow = [run(clock, 7e-3) for _ in range(_threads.SETTLING_CALLS)]
    assert all(slow) and run(clock, 1e-4)
    assert run(clock, 7e-3) and run(clock, 7e-3)  # settled: now two in a row count
    assert not run(clock, 1e-4)


def test_one_thread_gives_the_same_results(monkeypatch):
    net = fastbp.MLP([2, 16, 16, 1], hidden="sigmoid", output="identity")
    thetas, X, _ = make_problem(net, n=300, population=16, margin=0)
    T, which = np.ones((300, 1)), np.arange(300) % 3 - 1
    small = fastbp.MLP([4, 16, 3])
    swarm, Xs, ys = make_problem(small, n=64, population=40, labels=True, margin=0)

    def results():
        return [
            fastbp.input_jacobian(net, thetas, X),
            fastbp.sobolev_loss(net, thetas, X, T, which),
            *fastbp.loss_and_grad(small, swarm, Xs, ys),
        ]

    _threads.forget()
    results()
    results()  # the baselines, on one thread
    on_threads = results()
    monkeypatch.setattr(_threads, "_one_thread_until", math.inf)
    for got, expected in zip(results(), on_threads):
        np.testing.assert_array_equal(got, expected)
    _threads.forget()
