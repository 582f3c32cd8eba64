"""Checkpoints: exact resume after a real SIGKILL, the Checkpoint callback, safe loading, clear errors."""
import os
import pathlib
import signal
import subprocess
import sys
import threading

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from aggressive_vi import (VAE, AggressiveTrainer, Always, Checkpoint, CheckpointError, Engine, FixedSteps, MIPlateau,
                           latest_checkpoint)
from aggressive_vi.checkpoint import load_checkpoint, plain_state_dict, save_checkpoint, upgrade
from conftest import BernoulliDecoder, MLPEncoder, binary_data
from resume_run import EPOCHS, STEPS_PER_EPOCH, build

HERE = os.path.dirname(os.path.abspath(__file__))


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def assert_bitwise_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x, y), (x - y).abs().max()


def history_without_time(trainer):
    return [{k: v for k, v in row.items() if k != "wall_time"} for row in trainer.history.to_dicts()]


@pytest.fixture(scope="module")
def uninterrupted():
    vae, trainer, train, val = build()
    trainer.fit(train, val_loader=val, epochs=EPOCHS)
    return params(vae), history_without_time(trainer), trainer


def test_resume_after_sigkill_is_bitwise_exact(tmp_path, uninterrupted):
    reference, reference_history, reference_trainer = uninterrupted
    # the run switched phase after the kill point and every epoch had inner loops: the resumed part
    # covers the inner loop's stream, the stopping switch and a KL weight still rising
    assert [r.aggressive_steps for r in reference_trainer.history] == [10, 7]
    # 1.5 epochs in a child process, then SIGKILL: no Python cleanup of any kind runs
    hang_at = STEPS_PER_EPOCH + 7  # decoder update 17; the last checkpoint is at 15
    child = subprocess.Popen([sys.executable, os.path.join(HERE, "resume_run.py"), str(tmp_path), str(hang_at)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(120, child.kill)  # a child stuck before "hanging" fails the test, not CI
    watchdog.start()
    try:
        line = child.stdout.readline()
        assert line.strip() == "hanging", child.stderr.read()
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        watchdog.cancel()
        if child.poll() is None:
            child.kill()
    latest = latest_checkpoint(tmp_path)
    assert os.path.basename(latest) == "checkpoint-e0001-s000000015.pt"  # mid-epoch 1
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-e0001-s000000010.pt", "checkpoint-e0001-s000000015.pt"]

    # the updates after the checkpoint matter: the final weights are not those saved at update 15
    saved = list(load_checkpoint(latest)["model"].values())
    assert not all(torch.equal(a, b) for a, b in zip(saved, reference))

    torch.manual_seed(12345)  # a new process would not share the killed one's random state either
    vae, trainer, train, val = build(seed=999)  # different initial weights: all must come from the file
    trainer.fit(train, val_loader=val, epochs=EPOCHS, resume_from=tmp_path)
    assert_bitwise_equal(params(vae), reference)
    assert history_without_time(trainer) == reference_history
    assert trainer.step == reference_trainer.step and trainer.is_aggressive == reference_trainer.is_aggressive
    for mine, theirs in ((trainer.enc_opt, reference_trainer.enc_opt), (trainer.dec_opt, reference_trainer.dec_opt)):
        for p, q in zip(mine.state_dict()["state"].values(), theirs.state_dict()["state"].values()):
            assert all(torch.equal(p[k], q[k]) for k in p if isinstance(p[k], torch.Tensor))
    decay, ref_decay = trainer.callbacks[0], reference_trainer.callbacks[0]
    assert (decay.decays, decay.best_epoch, decay.reference) == (ref_decay.decays, ref_decay.best_epoch, ref_decay.reference)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_checkpoints_at_the_step_boundary_and_resumes_exactly(tmp_path, uninterrupted, signum):
    reference, reference_history, _ = uninterrupted

    class CtrlC:
        def on_step_end(self, trainer, info):
            if trainer.step == 13:
                os.kill(os.getpid(), signum)  # what a terminal's Ctrl-C (or torchrun/SLURM) sends

    _, trainer, train, val = build([CtrlC(), Checkpoint(tmp_path, at_epoch_end=False)])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(train, val_loader=val, epochs=EPOCHS)
    assert trainer.step == 13 and trainer.epoch == 1
    assert os.listdir(tmp_path) == ["checkpoint-e0001-s000000013.pt"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers given back
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    # in the same process (a notebook): fit again on the same loaders, the epoch goes on as if uninterrupted
    # (nothing else draws random numbers in between)
    trainer.fit(train, val_loader=val, epochs=EPOCHS)
    assert_bitwise_equal(params(trainer.vae), reference)
    assert history_without_time(trainer) == reference_history
    # in a new process: resume from the file
    vae, other, train2, val2 = build(seed=3)
    other.fit(train2, val_loader=val2, epochs=EPOCHS, resume_from=tmp_path / "checkpoint-e0001-s000000013.pt")
    assert_bitwise_equal(params(vae), reference)
    assert history_without_time(other) == reference_history


def test_keyboard_interrupt_mid_step_still_writes_a_tagged_checkpoint(tmp_path):
    class Interrupting(BernoulliDecoder):
        calls = 0

        def log_prob(self, x, z):
            Interrupting.calls += 1
            if Interrupting.calls == 20:
                raise KeyboardInterrupt
            return super().log_prob(x, z)

    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), Interrupting())
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.1),
                                torch.optim.SGD(vae.decoder.parameters(), lr=0.1), stopping=Always(),
                                window=3, max_inner_steps=6, callbacks=[Checkpoint(tmp_path)])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(DataLoader(binary_data(40), batch_size=8), epochs=1)
    (name,) = os.listdir(tmp_path)
    assert name.endswith("-interrupted.pt") and not trainer.at_step_boundary
    state = load_checkpoint(tmp_path / name)
    assert state["algorithm"]["updates"] == trainer.step and state["epoch_in_progress"]["stream"]["consumed"] == trainer.step


def small_trainer(tmp_path=None, encoder_params=None, **kwargs):
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(**kwargs), BernoulliDecoder(**kwargs))
    callbacks = [Checkpoint(tmp_path, every_n_steps=2, keep_last=3)] if tmp_path is not None else []
    enc = list(vae.encoder.parameters())
    trainer = AggressiveTrainer(vae, torch.optim.SGD(enc if encoder_params is None else enc[:encoder_params], lr=0.1),
                                torch.optim.SGD(vae.decoder.parameters(), lr=0.1), stopping=FixedSteps(3),
                                window=2, max_inner_steps=4, callbacks=callbacks)
    return vae, trainer


def test_checkpoint_callback_schedule_atomicity_and_pruning(tmp_path):
    _, trainer = small_trainer(tmp_path)
    trainer.fit(DataLoader(binary_data(40), batch_size=8), epochs=2)  # 5 steps per epoch
    # saves at steps 2, 4, (epoch end 5), 6, 8, (epoch end 10: step 10 is the epoch's last update, saved
    # once, after validation); the last 3 are kept, no temp files
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-e0001-s000000006.pt", "checkpoint-e0001-s000000008.pt",
                                            "checkpoint-e0002-s000000010.pt"]
    assert trainer.last_checkpoint == str(tmp_path / "checkpoint-e0002-s000000010.pt")
    state = torch.load(trainer.last_checkpoint, weights_only=True)  # only safe types inside
    assert state["epoch"] == 2 and state["epoch_in_progress"] is None and len(state["history"]) == 2
    assert isinstance(state["history"][0], dict)


def test_atomic_save_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"a": torch.ones(2)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint({"a": Unpicklable()}, path)
    assert os.listdir(tmp_path) == ["ckpt.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))


def test_checkpoint_of_another_architecture_names_keys_and_shapes(tmp_path):
    _, trainer = small_trainer(tmp_path)
    trainer.fit(DataLoader(binary_data(16), batch_size=8), epochs=1)
    _, other = small_trainer(hidden=32)
    with pytest.raises(CheckpointError, match=r"different model architecture; shape mismatches: "
                                              r"encoder\.net\.0\.weight: checkpoint \[16, 6\] vs model \[32, 6\]"):
        other.fit(DataLoader(binary_data(16), batch_size=8), epochs=2, resume_from=trainer.last_checkpoint)

    class Extra(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = MLPEncoder().net
            self.scale = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return self.net(x * self.scale).chunk(2, -1)

    torch.manual_seed(0)
    vae = VAE(Extra(), BernoulliDecoder())
    third = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.1),
                              torch.optim.SGD(vae.decoder.parameters(), lr=0.1))
    with pytest.raises(CheckpointError, match=r"missing from the checkpoint: encoder\.scale"):
        third.load_state_dict(load_checkpoint(trainer.last_checkpoint))


def test_optimizer_and_loader_mismatches_and_foreign_files(tmp_path):
    vae, trainer = small_trainer(tmp_path)
    trainer.fit(DataLoader(binary_data(40), batch_size=8), epochs=1)
    mid_epoch = tmp_path / "checkpoint-e0000-s000000004.pt"
    # an optimiser over a different set of parameters
    _, other = small_trainer(encoder_params=2)
    with pytest.raises(CheckpointError, match="the saved enc_opt does not fit this trainer's enc_opt"):
        other.load_state_dict(load_checkpoint(mid_epoch))
    # resuming mid-epoch with a loader of another length
    _, other = small_trainer()
    with pytest.raises(CheckpointError, match=r"after 4 batches of epoch 0 with 5 batches per epoch; "
                                              r"this train_loader has 3"):
        other.fit(DataLoader(binary_data(24), batch_size=8), epochs=1, resume_from=mid_epoch)
    # files that are not ours
    torch.save({"weights": torch.ones(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an aggressive-vi trainer checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a loadable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="directory without checkpoints"):
        load_checkpoint(tmp_path / "empty")


def test_weights_are_saved_without_data_parallel_prefixes():
    torch.manual_seed(0)
    plain = VAE(MLPEncoder(), BernoulliDecoder())
    wrapped = VAE(nn.DataParallel(plain.encoder), plain.decoder)  # same parameters, a "module." level
    assert "encoder.module.net.0.weight" in wrapped.state_dict()
    assert list(plain_state_dict(wrapped)) == list(plain.state_dict())
    trainer = AggressiveTrainer(wrapped, torch.optim.SGD(wrapped.encoder.parameters(), lr=0.1),
                                torch.optim.SGD(wrapped.decoder.parameters(), lr=0.1), engine=Engine(ddp=False))
    state = trainer.state_dict()
    _, fresh = small_trainer()
    with pytest.warns(UserWarning, match="saved with other options .*max_inner_steps"):
        fresh.load_state_dict(state, strict=False)  # a wrapped run's checkpoint loads into an unwrapped model
    assert_bitwise_equal(params(fresh.vae), params(plain))


def v2_trainer(**options):
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    options = {"window": 2, "max_inner_steps": 4, **options}
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.1, momentum=0.5),
                                torch.optim.Adam(vae.decoder.parameters(), lr=1e-2),
                                stopping=MIPlateau(patience=3), **options)
    return vae, trainer


def test_a_checkpoint_of_version_2_loads_and_training_goes_on():
    """tests/data/checkpoint-v2.pt was written by the 0.1 trainer (see tests/data/README.md)."""
    path = pathlib.Path(__file__).parent / "data" / "checkpoint-v2.pt"
    raw = torch.load(path, weights_only=True)
    assert raw["version"] == 2 and "algorithm" not in raw
    vae, trainer = v2_trainer(clip_scope="network")  # the fixture's run: 0.1's only clipping rule
    trainer.load_state_dict(load_checkpoint(path))
    assert (trainer.epoch, trainer.step, trainer.is_aggressive) == (raw["epoch"], raw["step"], raw["is_aggressive"])
    assert trainer.stopping.state_dict() == raw["stopping"]
    for name, value in vae.state_dict().items():
        assert torch.equal(value, raw["model"][name]), name
    history = trainer.fit(DataLoader(binary_data(32), batch_size=8),
                          val_loader=DataLoader(binary_data(16, seed=1), batch_size=8), epochs=3)
    assert len(history) == 3 and trainer.step == raw["step"] + 4
    assert trainer.state_dict()["version"] == 3


def test_a_checkpoint_of_version_2_keeps_its_algorithm_options_for_the_resume_check():
    """0.1 saved its options but never checked them; a v2 run resumed under today's default
    clip_scope ("joint") would not continue as it began, so the upgraded state says so."""
    path = pathlib.Path(__file__).parent / "data" / "checkpoint-v2.pt"
    _, trainer = v2_trainer()
    with pytest.raises(CheckpointError, match="clip_scope: saved 'network', now 'joint'"):
        trainer.load_state_dict(load_checkpoint(path))
    assert upgrade(torch.load(path, weights_only=True))["config"] == {
        "max_inner_steps": 4, "clip_grad_norm": 5.0, "clip_scope": "network", "n_samples": 1}


def test_a_checkpoint_of_version_1_is_refused_naming_the_version(tmp_path):
    _, trainer = v2_trainer()
    state = dict(trainer.state_dict(), version=1)
    with pytest.raises(CheckpointError, match="version 1; this aggressive-vi reads format .* versions 2 to 3"):
        trainer.load_state_dict(state)


def test_changed_algorithm_options_are_named_and_other_changes_warn():
    _, saved = v2_trainer(clip_scope="network")
    state = saved.state_dict()
    _, other = v2_trainer(clip_scope="joint")
    with pytest.raises(CheckpointError, match="clip_scope: saved 'network', now 'joint'"):
        other.load_state_dict(state)
    with pytest.warns(UserWarning, match="clip_scope: saved 'network', now 'joint'"):
        other.load_state_dict(state, strict=False)
    _, skipping = v2_trainer(clip_scope="network", on_nonfinite="skip")  # how, not what: a warning, and the state loads
    with pytest.warns(UserWarning, match="on_nonfinite: saved 'raise', now 'skip'"):
        skipping.load_state_dict(state)
