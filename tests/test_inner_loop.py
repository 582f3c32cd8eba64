"""The catch-up loop's window test, on scripted losses (no model): when it stops, and what it counts."""
import pytest
import torch

from aggressive_vi.inner_loop import catch_up_encoder


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
    return result, seen, numbered


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
