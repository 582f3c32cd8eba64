"""The image lr rule (best model, halve after patience, stop after max decays) and the run loaders."""
from types import SimpleNamespace

import pytest
import torch

from examples.image.datasets import ImageSplits
from examples.image.experiment import make_loaders
from examples.image.schedule import BestModelLRDecay


def fake_trainer():
    model = torch.nn.Linear(1, 1, bias=False)
    opt_e = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(model.parameters(), lr=1e-3)
    return SimpleNamespace(model=model, enc_opt=opt_e, dec_opt=opt_d, stop_training=False)


def record(epoch, val_loss):
    return SimpleNamespace(epoch=epoch, val_elbo=-val_loss)


def test_decay_reloads_best_and_halves_lr():
    trainer, rule = fake_trainer(), BestModelLRDecay(patience=2, max_decays=2)
    with torch.no_grad():
        trainer.model.weight.fill_(1.0)
    rule.on_epoch_end(trainer, record(0, 10.0))  # best
    with torch.no_grad():
        trainer.model.weight.fill_(2.0)
    rule.on_epoch_end(trainer, record(1, 11.0))
    assert trainer.enc_opt.param_groups[0]["lr"] == 1e-3 and trainer.model.weight.item() == 2.0
    rule.on_epoch_end(trainer, record(2, 10.5))  # second epoch without a new best: decay
    assert trainer.enc_opt.param_groups[0]["lr"] == trainer.dec_opt.param_groups[0]["lr"] == 5e-4
    assert trainer.model.weight.item() == 1.0 and rule.decays == 1 and not trainer.stop_training
    rule.on_epoch_end(trainer, record(3, 9.0))  # new best resets the count
    assert rule.best_epoch == 3 and rule.not_improved == 0
    rule.on_epoch_end(trainer, record(4, 9.5))
    rule.on_epoch_end(trainer, record(5, 9.5))
    assert rule.decays == 2 and trainer.stop_training


def test_state_round_trip_and_needs_validation():
    trainer, rule = fake_trainer(), BestModelLRDecay()
    rule.on_epoch_end(trainer, record(0, 3.0))
    other = BestModelLRDecay()
    other.load_state_dict(rule.state_dict())
    assert other.best_loss == 3.0 and other.best_epoch == 0 and other.best_state is not None
    with pytest.raises(ValueError, match="val_loader"):
        rule.on_epoch_end(trainer, SimpleNamespace(epoch=1, val_elbo=None))


def test_run_loaders_binarise_training_afresh_and_evaluation_once():
    grey = torch.full((20, 1, 28, 28), 0.5)
    train, valid, test = make_loaders(ImageSplits(grey, grey[:10], grey[:10]), batch_size=10, seed=1)
    a, b = torch.cat(list(train)), torch.cat(list(train))
    assert set(a.unique().tolist()) == {0.0, 1.0} and not torch.equal(a, b)
    assert torch.equal(torch.cat(list(valid)), torch.cat(list(valid)))
    assert not torch.equal(torch.cat(list(valid)), torch.cat(list(test)))  # different fixed seeds
