"""KL weight schedules."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggressive_vi import ConstantKL, CyclicalKLAnnealing, LinearKLAnnealing


def test_linear_annealing_matches_the_papers_per_step_increment():
    sched = LinearKLAnnealing(start=0.1, warmup_epochs=10)
    steps_per_epoch = 100
    rate = 0.9 / 1000
    weight = 0.1
    for step in range(1200):
        weight = min(1.0, weight + rate)  # the paper's code increments before each decoder update
        assert sched(step, steps_per_epoch) == pytest.approx(weight)


@given(start=st.floats(0, 1), warmup=st.floats(0.1, 50), step=st.integers(0, 10**6), spe=st.integers(1, 1000))
def test_linear_annealing_is_monotone_and_bounded(start, warmup, step, spe):
    sched = LinearKLAnnealing(start=start, warmup_epochs=warmup)
    w = sched(step, spe)
    assert start <= w <= 1.0
    assert sched(step + 1, spe) >= w


def test_zero_warmup_and_constant():
    assert LinearKLAnnealing(start=0.3, warmup_epochs=0)(0, 10) == 1.0
    assert ConstantKL(0.4)(123, 7) == 0.4


def test_cyclical_restarts_every_cycle():
    sched = CyclicalKLAnnealing(cycle_epochs=2, ratio=0.5, start=0.0)
    spe = 10
    assert sched(0, spe) == 0.0
    assert sched(5, spe) == pytest.approx(0.5)
    assert sched(10, spe) == 1.0 and sched(19, spe) == 1.0
    assert sched(20, spe) == 0.0


@pytest.mark.parametrize("make,pattern", [
    (lambda: LinearKLAnnealing(start=1.5), r"start must be a number in \[0, 1\]; got 1.5"),
    (lambda: LinearKLAnnealing(warmup_epochs=-1), "warmup_epochs must be a non-negative number; got -1"),
    (lambda: ConstantKL(-0.1), "weight must be a non-negative number; got -0.1"),
    (lambda: CyclicalKLAnnealing(ratio=0), r"ratio must be a number in \(0, 1\]; got 0"),
    (lambda: LinearKLAnnealing()(0, 0), "steps_per_epoch must be a positive int; got 0"),
])
def test_bad_schedule_arguments(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()
