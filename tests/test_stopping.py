"""Stopping criteria: every transition, driven by hand-made events."""
import pytest

from aggressive_vi import Always, FixedEpochs, FixedSteps, MIPlateau, TrainingEvent


def epoch_end(epoch, mi):
    return TrainingEvent(epoch=epoch, step=10 * (epoch + 1), epoch_end=True, metrics={"val_mi": mi})


def run(criterion, mis):
    """Index of the epoch whose end stops the phase, or None."""
    for epoch, mi in enumerate(mis):
        if criterion.should_stop(epoch_end(epoch, mi)):
            return epoch
    return None


@pytest.mark.parametrize("mis,stop_at", [
    ([0.5, 0.8, 0.9, 0.85, 1.0], 3),  # first decrease ends it (text rule)
    ([0.5, 0.5, 0.6], None),  # equal is not a decrease: the paper's test is cur - prev < 0
    ([-0.1], 0),  # the reference starts at 0 nats, as in the paper's code
    ([0.5, 0.4], 1),
])
def test_mi_plateau_text_rule(mis, stop_at):
    assert run(MIPlateau(), mis) == stop_at


def test_mi_plateau_patience_counts_consecutive_failures_against_the_previous_epoch():
    # 1.0 -> 0.9 (fail) -> 0.8 (fail vs 0.9): stops with patience 2
    assert run(MIPlateau(patience=2), [1.0, 0.9, 0.8]) == 2
    # 1.0 -> 0.9 (fail) -> 0.95 (improves on 0.9, resets) -> 0.9 (fail) -> 1.2 -> never two in a row
    assert run(MIPlateau(patience=2), [1.0, 0.9, 0.95, 0.9, 1.2]) is None


def test_mi_plateau_cumulative_image_rule_counts_failures_against_the_best_in_total():
    mis = [1.0, 0.9, 1.1, 1.0, 1.05, 1.2, 1.15, 1.19]  # failures at 1, 3, 4, 6, 7
    assert run(MIPlateau(patience=5, cumulative=True), mis) == 7
    assert run(MIPlateau(patience=6, cumulative=True), mis) is None


def test_mi_plateau_initial_reference():
    assert run(MIPlateau(), [-0.5, 0.1]) == 0
    assert run(MIPlateau(initial=-1.0), [-0.5, 0.1, 0.05]) == 2  # the synthetic script's start


def test_mi_plateau_min_delta():
    assert run(MIPlateau(min_delta=0.1), [0.5, 0.55]) == 1
    assert run(MIPlateau(min_delta=0.1), [0.5, 0.65]) is None


def test_mi_plateau_ignores_steps_and_round_trips_its_state():
    crit = MIPlateau(patience=3, cumulative=True)
    assert not crit.should_stop(TrainingEvent(epoch=0, step=5, epoch_end=False))
    run(crit, [1.0, 0.5])
    other = MIPlateau(patience=3, cumulative=True)
    other.load_state_dict(crit.state_dict())
    assert other.state_dict() == {"reference": 1.0, "failures": 1}


def test_mi_plateau_names_a_missing_metric():
    with pytest.raises(ValueError, match="MIPlateau watches 'val_mi'.*pass val_loader"):
        MIPlateau().should_stop(TrainingEvent(epoch=0, step=1, epoch_end=True, metrics={"val_mi": None}))
    assert MIPlateau(metric="kl").requires_validation is False


@pytest.mark.parametrize("kwargs,pattern", [
    ({"patience": 0}, "patience must be >= 1; got 0"),
    ({"min_delta": -1.0}, "min_delta must be >= 0; got -1.0"),
])
def test_mi_plateau_bad_options(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        MIPlateau(**kwargs)


def test_fixed_steps():
    crit = FixedSteps(3)
    assert [crit.should_stop(TrainingEvent(0, s, False)) for s in range(5)] == [False] * 3 + [True] * 2
    with pytest.raises(ValueError, match="n must be >= 0; got -1"):
        FixedSteps(-1)


def test_fixed_epochs():
    crit = FixedEpochs(2)
    assert not crit.should_stop(TrainingEvent(0, 0, False))
    assert not crit.should_stop(TrainingEvent(0, 5, True))
    assert not crit.should_stop(TrainingEvent(1, 6, False))
    assert crit.should_stop(TrainingEvent(1, 10, True))
    assert FixedEpochs(0).should_stop(TrainingEvent(0, 0, False))


def test_always():
    assert not any(Always().should_stop(TrainingEvent(e, 100 * e, end)) for e in range(5) for end in (0, 1))


def test_a_user_criterion_in_a_few_lines_is_a_stopping_criterion():
    class StopWhenKLAbove:
        def should_stop(self, event):
            return event.epoch_end and event.metrics["kl"] > 5.0

    crit = StopWhenKLAbove()
    assert crit.should_stop(TrainingEvent(0, 1, True, {"kl": 6.0}))
