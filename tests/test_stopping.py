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
    assert other.state_dict() == {"reference": 1.0, "reference_stderr": 0.0, "failures": 1}


def test_mi_plateau_names_a_missing_metric():
    with pytest.raises(ValueError, match="MIPlateau watches 'val_mi'.*pass val_loader"):
        MIPlateau().should_stop(TrainingEvent(epoch=0, step=1, epoch_end=True, metrics={"val_mi": None}))
    assert MIPlateau(metric="kl").requires_validation is False


@pytest.mark.parametrize("kwargs,pattern", [
    ({"patience": 0}, "patience must be a positive int; got 0"),
    ({"min_delta": -1.0}, "min_delta must be a non-negative number; got -1.0"),
    ({"k_stderr": -2}, "k_stderr must be a non-negative number; got -2"),
    ({"min_epochs": 1.5}, "min_epochs must be a non-negative int; got 1.5"),
])
def test_mi_plateau_bad_options(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        MIPlateau(**kwargs)


def test_fixed_steps():
    crit = FixedSteps(3)
    assert [crit.should_stop(TrainingEvent(0, s, False)) for s in range(5)] == [False] * 3 + [True] * 2
    with pytest.raises(ValueError, match="n must be a non-negative int; got -1"):
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


def epoch(e, mi, se=None):
    metrics = {"val_mi": mi}
    if se is not None:
        metrics["val_mi_stderr"] = se
    return TrainingEvent(epoch=e, step=10 * (e + 1), epoch_end=True, metrics=metrics)


def test_default_plateau_is_the_papers_rule_and_fires_on_a_noisy_start():
    # the paper's rule: reference 0, stop at the first MI below the previous epoch's
    crit = MIPlateau()
    assert crit.should_stop(epoch(0, -0.05, 0.06))  # noise below 0 at epoch 0 ends the phase
    crit = MIPlateau()
    assert [crit.should_stop(epoch(e, v)) for e, v in enumerate([0.2, 0.5, 0.7, 0.69])] == [False] * 3 + [True]


def test_k_stderr_counts_rises_inside_the_noise_as_no_rise_and_min_epochs_delays_the_switch():
    crit = MIPlateau(k_stderr=2.0, min_epochs=2)
    # epoch 0: -0.05 +- 0.06 against the initial 0: no significant rise, but inside min_epochs
    assert not crit.should_stop(epoch(0, -0.05, 0.06))
    # epoch 1: 0.5 +- 0.05 against -0.05 +- 0.06: a rise of 0.55 > 2 * 0.078
    assert not crit.should_stop(epoch(1, 0.5, 0.05)) and crit.failures == 0
    # epoch 2: 0.55 +- 0.05: +0.05 < 2 * 0.071, no significant rise: counted, patience 1: stop
    assert crit.should_stop(epoch(2, 0.55, 0.05))
    # the same sequence under the paper's rule would have stopped at epoch 0
    paper = MIPlateau()
    assert paper.should_stop(epoch(0, -0.05, 0.06))


def test_min_epochs_alone_and_a_missing_stderr():
    crit = MIPlateau(min_epochs=3)
    assert [crit.should_stop(epoch(e, v)) for e, v in enumerate([-0.1, -0.2, 0.3, 0.2])] == [False] * 3 + [True]
    with pytest.raises(ValueError, match="needs the standard error 'val_mi_stderr'"):
        MIPlateau(k_stderr=1.0).should_stop(epoch(0, 0.3))


def test_k_stderr_counts_the_reference_epochs_standard_error_too():
    # a rise of 0.5 with se 0.3 now and 0.6 at the reference: 0.5 < 1 * hypot(0.3, 0.6) = 0.67, no
    # significant rise; with the current epoch's error alone (0.3) it would have been one
    crit = MIPlateau(k_stderr=1.0)
    assert not crit.should_stop(epoch(0, 2.0, 0.6))  # 2.0 > hypot(0.6, 0): the initial 0 has none
    assert crit.state_dict() == {"reference": 2.0, "reference_stderr": 0.6, "failures": 0}
    assert crit.should_stop(epoch(1, 2.5, 0.3))
    # the same rise against a precise reference is significant: 0.5 > hypot(0.3, 0.01)
    precise = MIPlateau(k_stderr=1.0)
    assert not precise.should_stop(epoch(0, 2.0, 0.01)) and not precise.should_stop(epoch(1, 2.5, 0.3))


def test_k_stderr_cumulative_keeps_the_best_epochs_standard_error_as_the_reference():
    # the reference is the best epoch (2.0 +- 0.6), not the last failed one (1.0 +- 0.01)
    crit = MIPlateau(k_stderr=1.0, cumulative=True, patience=2)
    assert not crit.should_stop(epoch(0, 2.0, 0.6))
    assert not crit.should_stop(epoch(1, 1.0, 0.01)) and crit.failures == 1
    assert crit.state_dict()["reference_stderr"] == 0.6
    # +0.5 against 2.0 +- 0.6: 0.5 < hypot(0.01, 0.6); a second failure ends the phase
    assert crit.should_stop(epoch(2, 2.5, 0.01))
