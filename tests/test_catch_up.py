"""Catch-up rules (aggressive_vi.catch_up) on scripted losses, and the trainer's ``catch_up`` option.

Scripted tests have no model: an encoder step reports a per-example loss from a list, a probe reports
one from another list; the decisions are then exact. The trainer tests use the tiny MLP VAE of
conftest.py.
"""
import itertools

import pytest
import torch
from torch.utils.data import DataLoader

from aggressive_vi import VAE, AggressiveTrainer, Always
from aggressive_vi.catch_up import (CatchUpRule, FixedCount, PaperWindowTest, ProbeTest, catch_up_rule,
                                    probe_evaluator)
from aggressive_vi.catch_up import catch_up_encoder
from conftest import BernoulliDecoder, MLPEncoder, binary_data
from test_inner_loop import scripted  # an encoder step following a list of losses


def run(losses, window=2, cap=10, rule=None, evaluate=None):
    step, seen = scripted(losses)
    fresh = iter(range(1, 100))
    numbered = []
    result = catch_up_encoder(step, 0, lambda: next(fresh), max_steps=cap, device=None, on_step=numbered.append,
                              rule=rule if rule is not None else PaperWindowTest(window), evaluate=evaluate)
    taken = losses[:result.steps]  # a skipped (None) step is an error step: the first one is located
    assert result.first_error == (taken.index(None) + 1 if None in taken else 0)
    return tuple(result[:2]), seen, numbered


def probes(values):
    """An evaluate(x) whose per-example loss follows ``values``; records the x it was given."""
    given = []

    def evaluate(x):
        given.append(x)
        return torch.tensor(float(values[len(given) - 1]) * 3, dtype=torch.float64), 3

    return evaluate, given


SCRIPTS = [
    [5, 5, 4, 4, 6, 6, 1, 1, 1, 1],
    [9, 9, 8, 8, 7, 7, 6, 6, 5, 5, 4, 4],
    [3] * 12,
    [None, 5, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [None, None, 4, 4, 3, 5, 5, 5, 2, 2, 9, 9],
    [2, 8, 1, 9, 3, 3, 4, 1, 1, 1, 1, 1],
]


def reference_window_test(losses, window, cap):
    """The paper's loop restated in plain Python (from its text.py: the window's mean loss against
    the previous window's, +inf first, a rise ends it, the cap binds); a ``None`` step is left out of
    its window's mean (the library skips non-finite steps). Returns (steps taken, skipped)."""
    previous, total, count, skipped = float("inf"), 0.0, 0, 0
    for step, loss in enumerate(losses[:cap], start=1):
        if loss is None:
            skipped += 1
        else:
            total, count = total + loss * 4, count + 4
        if step % window == 0:
            current = total / count if count else float("inf")
            if current > previous:
                return step, skipped
            previous, total, count = current, 0.0, 0
    return min(cap, len(losses)), skipped


@pytest.mark.parametrize("losses", SCRIPTS)
@pytest.mark.parametrize("window,cap", [(1, 10), (2, 10), (3, 7), (4, 6)])
def test_the_window_test_decides_as_the_papers_loop_restated(losses, window, cap):
    assert run(losses, window=window, cap=cap)[0] == reference_window_test(losses, window, cap)


def test_a_rule_object_is_reusable_across_loops():
    rule = PaperWindowTest(2)
    first = run([5, 5, 6, 6, 1, 1], rule=rule)[0]
    second = run([5, 5, 4, 4, 6, 6, 1, 1], rule=rule)[0]
    assert first == (4, 0) and second == (6, 0)  # nothing carried over from the first loop


def test_first_loss_start_can_end_after_one_window():
    # the first step's loss (5) is the reference: window [5, 6] has mean 5.5 > 5 -> out after 2 steps
    assert run([5, 6, 1, 1, 2, 2], rule=PaperWindowTest(2, start="first_loss"))[0] == (2, 0)
    assert run([5, 6, 1, 1, 2, 2], rule=PaperWindowTest(2))[0] == (6, 0)  # the paper's: +inf, 5.5, 1, then 2 > 1
    # a first window below the first step's loss goes on as the paper's test: [5, 3] = 4 < 5, [4, 4] = 4 tie,
    # [6, 6] = 6 > 4: out after 6
    assert run([5, 3, 4, 4, 6, 6, 1, 1], rule=PaperWindowTest(2, start="first_loss"))[0] == (6, 0)


def test_probe_compares_the_probe_loss_before_the_loop_and_after_every_window():
    evaluate, given = probes([10, 9, 8.5, 8.5, 1])
    (steps, skipped), seen, _ = run([7] * 20, window=3, cap=50, rule=ProbeTest(3), evaluate=evaluate)
    # probes: 10 before, 9 after 3 steps, 8.5 after 6, 8.5 after 9 (no fall: out)
    assert (steps, skipped) == (9, 0)
    assert given == [0] * 4  # always the decoder update's batch, never a fresh one
    assert seen == list(range(9))  # the steps themselves: x, then fresh batches


def test_probe_tolerance_is_the_least_fall_that_counts():
    evaluate, _ = probes([10, 9.5, 9.3, 9.0])
    rule = ProbeTest(2, tolerance=0.25)
    assert run([7] * 20, window=2, cap=50, rule=rule, evaluate=evaluate)[0] == (4, 0)  # 10->9.5 ok, ->9.3 not
    assert rule.evaluations == 3


def test_probe_cap_binds_and_needs_an_evaluate():
    evaluate, _ = probes(list(range(100, 0, -1)))
    assert run([7] * 20, window=2, cap=7, rule=ProbeTest(2), evaluate=evaluate)[0] == (7, 0)
    with pytest.raises(ValueError, match="evaluate"):
        run([7] * 20, rule=ProbeTest(2), evaluate=None)


def test_fixed_count_takes_exactly_its_steps_up_to_the_cap():
    assert run([7] * 20, rule=FixedCount(3))[0] == (3, 0)
    assert run([7] * 20, cap=4, rule=FixedCount(9))[0] == (4, 0)
    assert run([None, 7, 7], rule=FixedCount(3))[0] == (3, 1)


@pytest.mark.parametrize("make,name", [
    (lambda: PaperWindowTest(0), "window"), (lambda: PaperWindowTest(2, start="zero"), "start"),
    (lambda: ProbeTest(1.5), "window"), (lambda: ProbeTest(2, tolerance=-0.1), "tolerance"),
    (lambda: FixedCount(0), "steps"), (lambda: catch_up_rule("catch_up", "fast", 15), "catch_up"),
    (lambda: catch_up_rule("catch_up", object(), 15), "catch_up"),
])
def test_bad_arguments_name_the_argument(make, name):
    with pytest.raises((ValueError, TypeError), match=name):
        make()


def test_rule_names_and_objects():
    default = catch_up_rule("catch_up", None, None)
    assert isinstance(default, PaperWindowTest) and default.window == 15 and default.start == "inf"
    paper = catch_up_rule("catch_up", "paper", 7)
    probe = catch_up_rule("catch_up", "probe", 4)
    assert isinstance(paper, PaperWindowTest) and paper.window == 7 and paper.start == "inf"
    assert isinstance(probe, ProbeTest) and probe.window == 4 and probe.tolerance == 0.0
    first = catch_up_rule("catch_up", "first_loss", 5)
    assert isinstance(first, PaperWindowTest) and first.window == 5 and first.start == "first_loss"
    rule = FixedCount(2)
    assert catch_up_rule("catch_up", rule, None) is rule
    with pytest.raises(ValueError, match="window=15 has no effect"):  # a rule holds its own window
        catch_up_rule("catch_up", rule, 15)
    assert all(isinstance(r, CatchUpRule) for r in (paper, probe, rule))


def test_probe_evaluator_repeats_its_random_numbers_and_restores_the_callers():
    evaluate = probe_evaluator(lambda x: x + torch.randn(x.shape[0]), None)
    x = torch.zeros(5)
    torch.manual_seed(3)
    first = evaluate(x)
    after_first = torch.random.get_rng_state()
    second = evaluate(x)
    assert torch.equal(first[0], second[0]) and first[1] == second[1] == 5
    assert torch.equal(torch.random.get_rng_state(), after_first)  # later calls leave the stream alone
    torch.manual_seed(3)
    torch.randint(0, 2 ** 62, (1,))  # the only draw: the seed
    assert torch.equal(after_first, torch.random.get_rng_state())
    w = torch.ones(1, requires_grad=True)
    loss, _ = probe_evaluator(lambda x: x * w, None)(torch.ones(2))
    assert not loss.requires_grad  # no graph: an evaluation cannot leak into a backward


# ------------------------------------------------------------------ through the trainer
def train(catch_up, epochs=1, window=3, cap=12):
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.1),
                                torch.optim.SGD(vae.decoder.parameters(), lr=0.1), stopping=Always(),
                                window=None if isinstance(catch_up, CatchUpRule) else window,
                                max_inner_steps=cap, catch_up=catch_up)
    steps = []
    trainer.callbacks.append(type("S", (), {"on_step_end": lambda self, t, info: steps.append(info.inner_steps)})())
    data = DataLoader(binary_data(48, seed=1), batch_size=8, shuffle=True,
                      generator=torch.Generator().manual_seed(0))
    trainer.fit(data, epochs=epochs)
    return [p.detach().clone() for p in vae.parameters()], steps, trainer


def test_catch_up_paper_trains_bit_for_bit_as_the_default():
    default, default_steps, _ = train(None, epochs=2)
    paper, paper_steps, _ = train("paper", epochs=2)
    assert default_steps == paper_steps and len(default_steps) == 12
    assert all(torch.equal(a, b) for a, b in zip(default, paper))


def test_catch_up_probe_and_fixed_through_the_trainer():
    _, steps, trainer = train("probe", window=2, cap=11)
    assert steps and all(s == 11 or s % 2 == 0 for s in steps)  # a multiple of the window, or the cap
    assert trainer.algorithm.catch_up.evaluations == sum(min(s // 2, 5) + 1 for s in steps)
    _, steps, _ = train(FixedCount(4))
    assert steps == [4] * 6
    default, _, _ = train(None)
    fixed, _, _ = train(FixedCount(4))
    assert not all(torch.equal(a, b) for a, b in zip(default, fixed))  # the option reaches the loop


def test_trainer_rejects_a_bad_catch_up():
    with pytest.raises(ValueError, match="catch_up"):
        train("fastest")
    with pytest.raises(TypeError, match="catch_up"):
        train(itertools.count())


# ------------------------------------------------------------------ the benchmark's helpers (no training)
def test_benchmark_rule_specs_and_verdict():
    from benchmarks.catch_up import aggregate, make_rule

    assert make_rule("paper", 15) is None
    assert repr(make_rule("probe:4:0.5", 15)) == "ProbeTest(window=4, tolerance=0.5)"
    assert repr(make_rule("first_loss", 9)) == "PaperWindowTest(window=9, start='first_loss')"
    assert repr(make_rule("first_loss:4", 9)) == "PaperWindowTest(window=4, start='first_loss')"
    assert repr(make_rule("fixed:7", 15)) == "FixedCount(steps=7)"
    with pytest.raises(ValueError, match="--rules"):
        make_rule("probe", 15)

    def fake(rule, seed, steps, mi, au, nll):
        return {"data": "d", "rule": rule, "seed": seed, "inner_steps_per_update": steps,
                "probe_forwards_per_update": 0.0, "train_seconds": 1.0,
                "metrics": {"iw_nll": nll, "neg_elbo": nll, "kl": mi, "mi": mi, "au": au}}

    runs = [fake("paper", 0, 40, 1.0, 1, 50.0), fake("paper", 1, 40, 1.2, 1, 52.0),
            fake("cheap", 0, 18, 1.1, 1, 51.0), fake("cheap", 1, 22, 1.1, 1, 51.0),  # mean 20 = half of 40
            fake("bad", 0, 10, 0.1, 0, 60.0), fake("bad", 1, 10, 0.1, 0, 60.0)]
    summary = aggregate(runs)["d"]
    assert summary["cheap"]["verdict"]["meets_aim"] is True
    assert summary["bad"]["verdict"]["quality_within_paper_spread"] == {"mi": False, "au": False, "iw_nll": False}
    assert summary["bad"]["verdict"]["at_most_half_the_steps"] is True and not summary["bad"]["verdict"]["meets_aim"]
