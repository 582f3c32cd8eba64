"""The catch-up loop with the paper's window test, on scripted losses (no model): when it stops, and
what it counts. The window test is written once (PaperWindowTest); these tests drive it through the
one loop, with host and device flags."""
import pytest
import torch

from aggressive_vi.catch_up import CatchUpResult, EncoderUpdate, PaperWindowTest
from aggressive_vi.catch_up import catch_up_encoder as _loop


def catch_up_encoder(step, x, next_input, *, window, **kwargs):
    """The loop under the paper's test with ``window``."""
    return _loop(step, x, next_input, rule=PaperWindowTest(window), **kwargs)


def scripted(losses):
    """An encoder step whose per-example loss follows ``losses`` (None: a skipped step)."""
    seen = []

    def step(x):
        seen.append(x)
        value = losses[len(seen) - 1]
        return None if value is None else (torch.tensor(float(value) * 4, dtype=torch.float64), 4)

    return step, seen


def run(losses, window=2, cap=10):
    step, seen = scripted(losses)
    fresh = iter(range(1, 100))
    numbered = []
    result = catch_up_encoder(step, 0, lambda: next(fresh), window=window, max_steps=cap, device=None,
                              on_step=numbered.append)
    return tuple(result[:2]), seen, numbered


def test_the_first_window_is_compared_with_inf_and_a_rise_ends_the_loop():
    (steps, skipped), seen, numbered = run([5, 5, 4, 4, 6, 6, 1, 1, 1, 1])
    assert (steps, skipped) == (6, 0)  # windows 5, 4, then 6 > 4: out after 3 windows
    assert seen == [0, 1, 2, 3, 4, 5] and numbered == [1, 2, 3, 4, 5, 6]  # first on x, then fresh ones


def test_a_falling_loss_runs_to_the_cap_and_a_tie_continues():
    assert run([9, 9, 8, 8, 7, 7, 6, 6, 5, 5, 4, 4])[0] == (10, 0)
    assert run([3, 3, 3, 3, 3, 3, 3, 3, 3, 3])[0] == (10, 0)  # equal windows never end it early


def test_skipped_steps_are_counted_and_left_out_of_the_window_mean():
    # window 1: [None] -> inf (no example), equal to the starting inf: continue; then 5, then 7 > 5
    (steps, skipped), _, _ = run([None, 5, 7, 1], window=1)
    assert (steps, skipped) == (3, 1)


def test_the_cap_binds_even_mid_window():
    assert run([5] * 20, window=4, cap=6)[0] == (6, 0)


def device_flagged(losses, errors=None):
    """An encoder step reporting ``applied`` (and ``error``) as device tensors: ``None`` in
    ``losses`` is a step that was not applied (its loss NaN, left out of the window)."""
    errors = errors or {}

    def step(x):
        i = step.calls
        step.calls += 1
        value = losses[i]
        applied = torch.tensor(value is not None)
        loss = torch.tensor(float("nan") if value is None else float(value) * 4, dtype=torch.float64)
        return EncoderUpdate(loss, 4, applied, torch.tensor(bool(errors.get(i + 1, False))))

    step.calls = 0
    return step


def test_device_flags_give_the_same_decisions_as_host_flags():
    losses = [5, 5, 4, None, 6, 6, 1, 1]
    host = run(losses)[0]
    fresh = iter(range(1, 100))
    result = catch_up_encoder(device_flagged(losses), 0, lambda: next(fresh), window=2, max_steps=10,
                              device=None)
    assert tuple(result[:2]) == host == (6, 1)  # window means 5, 4 (the NaN step left out), then 6
    assert result.first_error == 0


def test_the_first_error_is_located_and_ends_the_loop_at_the_window_boundary():
    step = device_flagged([5, 5, 4, None, 3, 3, 2, 2, 2, 2], errors={4: True})
    fresh = iter(range(1, 100))
    result = catch_up_encoder(step, 0, lambda: next(fresh), window=3, max_steps=10, device=None,
                              stop_on_error=True)
    assert result == CatchUpResult(steps=6, skipped=1, first_error=4)  # seen at the boundary after step 6
    step = device_flagged([5, 5, 4, None, 3, 3, 2, 2, 2, 2], errors={4: True})
    fresh = iter(range(1, 100))
    result = catch_up_encoder(step, 0, lambda: next(fresh), window=3, max_steps=10, device=None)
    assert result.first_error == 4 and result.steps > 6  # without stop_on_error the loop goes on


def test_a_host_error_is_located_too():
    result = catch_up_encoder(lambda x: None if x == 2 else (torch.tensor(4.0, dtype=torch.float64), 4),
                              0, iter(range(1, 100)).__next__, window=2, max_steps=8, device=None,
                              stop_on_error=True)
    assert result == CatchUpResult(steps=4, skipped=1, first_error=3)


def test_a_skipped_step_adds_neither_loss_nor_examples_to_the_window_mean():
    """Window 2. Applied-only means: [4, -] = 4, [3, 3] = 3, [3.5, 3.5] = 3.5 > 3: out after 6 steps.
    Had the skipped step (its loss 0) counted its 4 examples, the first mean would be 2 and the loop
    would end after 4 steps."""
    def step(x):
        i = step.calls
        step.calls += 1
        value = [4, 0, 3, 3, 3.5, 3.5, 1, 1][i]
        return EncoderUpdate(torch.tensor(value * 4, dtype=torch.float64), 4, torch.tensor(i != 1),
                             torch.tensor(False))

    step.calls = 0
    fresh = iter(range(1, 100))
    result = catch_up_encoder(step, 0, lambda: next(fresh), window=2, max_steps=10, device=None)
    assert result == CatchUpResult(steps=6, skipped=1, first_error=0)
