"""What ``AggressiveTrainer.fit`` records and restores, checked through the public API only (the
trainer's internals are being rewritten): the epoch's inner-step mean when the phase switches in
the middle of the epoch, and the stopping criterion's state across a save and a load."""
import io

import torch

from aggressive_vi import VAE, AggressiveTrainer, FixedSteps, MIPlateau
from conftest import BernoulliDecoder, MLPEncoder, binary_data


def trainer_for(stopping, callbacks=(), seed=0):
    torch.manual_seed(seed)
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    return AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.1),
                             torch.optim.SGD(vae.decoder.parameters(), lr=0.1), stopping=stopping,
                             window=2, max_inner_steps=6, callbacks=callbacks)


def test_inner_steps_mean_is_over_the_aggressive_updates_of_the_switching_epoch():
    steps = []

    class Keep:
        def on_step_end(self, trainer, info):
            steps.append(info)

    trainer = trainer_for(FixedSteps(2), callbacks=[Keep()])  # aggressive for 2 of the epoch's 5 updates
    record = trainer.fit([binary_data(8, seed=s) for s in range(5)], epochs=1)[0]
    aggressive = [s.inner_steps for s in steps if s.aggressive]
    assert len(aggressive) == record.aggressive_steps == 2 and record.steps == 5
    assert record.left_aggressive_at == 2 and all(n >= 4 for n in aggressive)  # two windows at least
    assert record.inner_steps_mean == sum(aggressive) / 2  # not / 5, the epoch's updates


def _round_trip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_the_stopping_criterions_state_is_restored_from_a_saved_trainer():
    # the image rule (cumulative, patience 5) stays aggressive through 3 epochs; its state then
    # follows from the recorded MIs: the reference is the best MI so far (starting from 0 nats) and
    # every epoch below the running best is a failure
    data = [binary_data(8, seed=s) for s in range(3)]
    trainer = trainer_for(MIPlateau(patience=5, cumulative=True))
    history = trainer.fit(data, val_loader=data, epochs=3)
    best, failures = 0.0, 0
    for mi in history.column("val_mi"):
        if mi >= best:
            best = mi
        else:
            failures += 1
    expected = {"reference": best, "reference_stderr": 0.0, "failures": failures}
    assert trainer.stopping.state_dict() == expected
    assert expected != MIPlateau(patience=5, cumulative=True).state_dict()  # a fresh one differs
    fresh = trainer_for(MIPlateau(patience=5, cumulative=True), seed=1)
    fresh.load_state_dict(_round_trip(trainer.state_dict()))
    assert fresh.stopping.state_dict() == expected
    assert fresh.is_aggressive and fresh.epoch == 3
