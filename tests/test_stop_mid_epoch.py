"""A stop requested in the middle of an epoch (``trainer.stop_training = True``) leaves the epoch
open; calling ``fit`` again, or resuming its checkpoint in a new process, continues it bit for bit."""
import torch
from torch.utils.data import DataLoader

from aggressive_vi import VAE, AggressiveTrainer, Checkpoint, FixedSteps, latest_checkpoint
from conftest import BernoulliDecoder, MLPEncoder, binary_data


def build(callbacks=()):
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    trainer = AggressiveTrainer(vae, torch.optim.Adam(vae.encoder.parameters(), lr=1e-2),
                                torch.optim.Adam(vae.decoder.parameters(), lr=1e-2),
                                stopping=FixedSteps(8), window=2, max_inner_steps=4,
                                callbacks=list(callbacks))
    return vae, trainer


def data():
    # 6 batches per epoch, reshuffled each epoch from the loader's own generator
    return DataLoader(binary_data(48), batch_size=8, shuffle=True,
                      generator=torch.Generator().manual_seed(3))


class StopAt:
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, info):
        if info.step == self.step:
            trainer.stop_training = True


def params(vae):
    return torch.cat([p.detach().flatten() for p in vae.parameters()])


def test_stop_at_update_10_then_fit_again_trains_6_6_6_and_matches_an_uninterrupted_run():
    ref_vae, ref = build()
    ref_history = ref.fit(data(), epochs=3)

    vae, trainer = build([StopAt(10)])  # batch 4 of the second 6-batch epoch
    loader = data()
    first = trainer.fit(loader, epochs=3)
    assert [r.steps for r in first] == [6] and trainer.epoch == 1 and trainer.step == 10
    assert trainer.epoch_in_progress
    trainer.callbacks.clear()
    history = trainer.fit(loader, epochs=3)
    assert [r.steps for r in history] == [6, 6, 6] == [r.steps for r in ref_history]
    assert trainer.step == 18
    assert torch.equal(params(vae), params(ref_vae))
    assert history.left_aggressive_at == ref_history.left_aggressive_at == 8


def test_a_checkpoint_written_at_a_mid_epoch_stop_resumes_bitwise_in_a_new_trainer(tmp_path):
    ref_vae, ref = build()
    ref.fit(data(), epochs=3)

    _, stopped = build([StopAt(10), Checkpoint(tmp_path, every_n_steps=None, at_epoch_end=False)])
    stopped.fit(data(), epochs=3)
    path = latest_checkpoint(tmp_path)
    assert path is not None and path.endswith("-e0001-s000000010.pt")

    vae, resumed = build()
    history = resumed.fit(data(), epochs=3, resume_from=path)
    assert [r.steps for r in history] == [6, 6, 6]
    assert torch.equal(params(vae), params(ref_vae))
