"""LRDecayOnPlateau: the paper's text and image learning-rate rules."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from aggressive_vi import AggressiveTrainer, AnyOf, FixedEpochs, FixedSteps, LRDecayOnPlateau, MIPlateau, TrainingEvent, VAE
from aggressive_vi.history import EpochRecord
from conftest import BernoulliDecoder, MLPEncoder, binary_data


def fake_trainer():
    model = nn.Linear(1, 1, bias=False)
    enc_opt = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
    dec_opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model.weight.grad = torch.ones(1, 1)
    enc_opt.step()  # creates momentum state
    return SimpleNamespace(model=model, enc_opt=enc_opt, dec_opt=dec_opt, stop_training=False)


def record(epoch, val_loss):
    return EpochRecord(epoch=epoch, steps=1, loss=0.0, reconstruction=0.0, kl=0.0, kl_weight=1.0,
                       aggressive=False, aggressive_steps=0, inner_steps_mean=0.0, val_elbo=-val_loss)


def drive(callback, trainer, losses):
    """Feed epochs; the model's weight is set to the epoch index so reloads are visible."""
    lrs = []
    for epoch, loss in enumerate(losses):
        with torch.no_grad():
            trainer.model.weight.fill_(epoch)
        callback.on_epoch_end(trainer, record(epoch, loss))
        lrs.append(trainer.enc_opt.param_groups[0]["lr"])
    return lrs


def test_text_rule_compares_with_the_previous_epoch_and_waits_for_min_epoch():
    trainer = fake_trainer()
    cb = LRDecayOnPlateau(patience=2, min_epoch=3)
    # 10, 9 (best), 9.5 (fail 1), 9.6 (fail 2, but epoch 3 >= 3: decay, reference := 9.6), 9.55 (improves on 9.6)
    lrs = drive(cb, trainer, [10, 9, 9.5, 9.6, 9.55])
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5]
    assert cb.decays == 1 and cb.best_epoch == 1
    assert trainer.model.weight.item() == 4  # reload at epoch 3 gave weight 1, then epoch 4 set 4
    assert trainer.enc_opt.state == {} or all(not s for s in trainer.enc_opt.state.values())
    # before min_epoch, failures do not decay
    trainer = fake_trainer()
    assert drive(LRDecayOnPlateau(patience=2, min_epoch=15), trainer, [10, 11, 12, 13]) == [1.0] * 4


def test_reload_restores_the_best_weights():
    trainer = fake_trainer()
    cb = LRDecayOnPlateau(patience=1)
    with torch.no_grad():
        trainer.model.weight.fill_(7.0)
    cb.on_epoch_end(trainer, record(0, 5.0))
    with torch.no_grad():
        trainer.model.weight.fill_(42.0)
    cb.on_epoch_end(trainer, record(1, 6.0))
    assert trainer.model.weight.item() == 7.0 and trainer.dec_opt.param_groups[0]["lr"] == 0.5


def test_image_rule_compares_with_the_best_and_stops_after_max_decays():
    trainer = fake_trainer()
    cb = LRDecayOnPlateau(patience=2, compare_to="best", max_decays=2)
    # best 5 at epoch 0; 5.5, 5.2 fail (decay 1); 5.1, 5.05 still above best 5 (decay 2 -> stop)
    lrs = drive(cb, trainer, [5, 5.5, 5.2, 5.1, 5.05])
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert trainer.stop_training


def test_state_round_trip_and_errors():
    trainer = fake_trainer()
    cb = LRDecayOnPlateau()
    drive(cb, trainer, [3.0, 4.0])
    other = LRDecayOnPlateau()
    other.load_state_dict(cb.state_dict())
    assert other.state_dict()["not_improved"] == 1 and torch.equal(other.best_state["weight"], cb.best_state["weight"])
    with pytest.raises(ValueError, match="needs validation metrics"):
        cb.on_epoch_end(trainer, record(0, 1.0).__class__(**{**record(0, 1.0).to_dict(), "val_elbo": None}))
    with pytest.raises(ValueError, match="compare_to must be one of \\('previous', 'best'\\); got 'last'"):
        LRDecayOnPlateau(compare_to="last")


def test_in_a_real_fit_the_callback_can_end_training():
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    cb = LRDecayOnPlateau(patience=1, max_decays=1)
    cb.best_loss = cb.reference = -1e9  # nothing will ever improve: decay at the first epoch, then stop
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.1),
                                torch.optim.SGD(vae.decoder.parameters(), lr=0.1), aggressive=False,
                                callbacks=[cb])
    history = trainer.fit([binary_data(8)], val_loader=[binary_data(8)], epochs=5)
    assert len(history) == 1 and trainer.enc_opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_any_of_stops_on_the_first_criterion_and_keeps_every_one_updated():
    crit = AnyOf(MIPlateau(), FixedSteps(5))
    assert crit.requires_validation
    assert not crit.should_stop(TrainingEvent(0, 2, True, {"val_mi": 1.0}))
    assert crit.criteria[0].reference == 1.0
    assert crit.should_stop(TrainingEvent(1, 5, False))
    assert AnyOf(FixedEpochs(1)).requires_validation is False
    with pytest.raises(ValueError, match="at least one"):
        AnyOf()
    other = AnyOf(MIPlateau(), FixedSteps(5))
    other.load_state_dict(crit.state_dict())
    assert other.criteria[0].reference == 1.0
