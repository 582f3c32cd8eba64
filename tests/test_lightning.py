"""aggressive_vi.lightning under a real Lightning Trainer (CPU, one process; DDP in
tests/test_lightning_ddp.py): the algorithm is the library's, global_step counts decoder updates, the
result matches AggressiveTrainer, and a checkpoint resumes the aggressive phase."""
import copy

import pytest

pl = pytest.importorskip("lightning.pytorch", reason="the lightning extra is not installed")

import torch  # noqa: E402
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset  # noqa: E402

from aggressive_vi import VAE, AggressiveTrainer, AnyOf, FixedEpochs, FixedSteps, MIPlateau  # noqa: E402
from conftest import BernoulliDecoder, MLPEncoder, binary_data  # noqa: E402
from lightning_models import LitVAE  # noqa: E402


def trainer(**kwargs):
    options = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    options.update(kwargs)
    return pl.Trainer(**options)


def loaders(n_train=64, batch=8, seed=1):
    train = DataLoader(binary_data(n_train), batch_size=batch, shuffle=True,
                       generator=torch.Generator().manual_seed(seed))
    val = DataLoader(binary_data(32, seed=1), batch_size=8)
    return train, val


def test_many_encoder_steps_per_decoder_step_while_aggressive_then_one_of_each():
    torch.manual_seed(0)
    train, val = loaders()
    module = LitVAE(stopping=FixedSteps(3), window=3, max_inner_steps=12, watch_decoder=True)
    trainer(max_epochs=1).fit(module, train, val)
    aggressive, basic = module.per_batch[:3], module.per_batch[3:]
    for steps in aggressive:  # at least two windows of 3 encoder steps, then the decoder's
        assert steps[-1] == "dec" and set(steps[:-1]) == {"enc"} and len(steps) - 1 >= 6
    assert basic and all(steps == ["enc", "dec"] for steps in basic)
    assert module.aggressive.left_aggressive_at == 3


@pytest.mark.parametrize("clip_scope", ["network", "joint"])
def test_inner_steps_change_no_decoder_parameter_and_compute_its_gradient_only_for_the_joint_norm(clip_scope):
    torch.manual_seed(0)
    train, val = loaders()
    module = LitVAE(stopping=FixedSteps(4), window=3, max_inner_steps=9, watch_decoder=True, lr=0.1,
                    clip_scope=clip_scope)
    trainer(max_epochs=1).fit(module, train, val)
    assert len(module.inner_decoder_unchanged) >= 4 * 6
    assert all(module.inner_decoder_unchanged)
    if clip_scope == "network":
        assert all(g is None for g in module.inner_decoder_grads)
    else:
        assert all(g is not None for g in module.inner_decoder_grads)


def test_global_step_counts_decoder_updates_and_max_steps_limits_them():
    torch.manual_seed(0)
    train, val = loaders()  # 8 batches per epoch
    module = LitVAE(stopping=FixedSteps(5), window=3, max_inner_steps=9)
    t = trainer(max_epochs=2)
    t.fit(module, train, val)
    assert t.global_step == 16 == module.aggressive.step
    assert sum(s.count("enc") for s in module.per_batch) > 16 + 5  # many more optimiser steps than that

    module = LitVAE(stopping=FixedSteps(100), window=3, max_inner_steps=9)
    t = trainer(max_steps=5)
    t.fit(module, train, val)
    assert t.global_step == 5 and len(module.per_batch) == 5  # the limit counts decoder updates
    assert all(len(s) >= 7 for s in module.per_batch)


def test_logs_validation_mi_au_kl_with_self_log():
    torch.manual_seed(0)
    train, val = loaders()
    module = LitVAE(stopping=FixedEpochs(1), window=3, max_inner_steps=9)
    t = trainer(max_epochs=2)
    t.fit(module, train, val)
    for key in ("val_mi", "val_au", "val_kl", "val_elbo", "train_loss", "inner_steps"):
        assert key in t.callback_metrics, key
    from aggressive_vi import estimators
    assert float(t.callback_metrics["val_kl"]) == pytest.approx(estimators.kl(module.vae, val), rel=1e-5)
    assert int(t.callback_metrics["val_au"]) == estimators.active_units(module.vae, val).count


@pytest.mark.parametrize("clip_scope,catch_up", [("network", None), ("joint", None), ("network", "first_loss"),
                                                 ("joint", "probe")])
def test_same_final_parameters_as_aggressive_trainer(clip_scope, catch_up):
    """Same initial weights, data, loader order, inner loader and global seed: the same sequence of
    floating-point operations, so the parameters agree to the last bit.

    The training loader's order is fixed by the epoch (a one-replica DistributedSampler, whose
    set_epoch both trainers call): Lightning draws from a shuffling DataLoader's own generator
    between epochs, so with DataLoader(shuffle=True, generator=g) its second epoch sees another
    order than iterating the loader twice (test_lightning_reorders_a_generator_shuffled_loader).
    """
    options = dict(window=3, max_inner_steps=12, clip_scope=clip_scope, catch_up=catch_up, clip_grad_norm=0.5)

    def data():
        x = binary_data(64)
        train = DataLoader(x, batch_size=8, sampler=DistributedSampler(x, num_replicas=1, rank=0, seed=3))
        val = DataLoader(binary_data(32, seed=1), batch_size=8)
        inner = DataLoader(binary_data(64), batch_size=8, shuffle=True,
                           generator=torch.Generator().manual_seed(7))
        return train, val, inner

    torch.manual_seed(0)
    module = LitVAE(stopping=AnyOf(MIPlateau(), FixedEpochs(2)), inner_loader=data()[2], **options)
    start = copy.deepcopy(module.vae.state_dict())
    train, val, _ = data()
    torch.manual_seed(123)
    t = trainer(max_epochs=3)
    t.fit(module, train, val)

    vae = VAE(MLPEncoder(), BernoulliDecoder())
    vae.load_state_dict(start)
    plain = AggressiveTrainer(vae, torch.optim.Adam(vae.encoder.parameters(), lr=1e-2),
                              torch.optim.Adam(vae.decoder.parameters(), lr=1e-2),
                              stopping=AnyOf(MIPlateau(), FixedEpochs(2)), **options)
    train, val, inner = data()
    torch.manual_seed(123)
    history = plain.fit(train, val_loader=val, epochs=3, inner_loader=inner)

    assert module.aggressive.left_aggressive_at == next(
        r.left_aggressive_at for r in history.records if r.left_aggressive_at is not None)
    for (name, a), b in zip(module.vae.state_dict().items(), vae.state_dict().values()):
        assert torch.equal(a, b), name
    assert float(t.callback_metrics["val_mi"]) == pytest.approx(history.records[-1].val_mi, abs=1e-6)


def test_lightning_reorders_a_generator_shuffled_loader():
    """Why the parity test above shuffles with a set_epoch sampler: Lightning's second epoch over a
    DataLoader(shuffle=True, generator=g) is not the loader's second pass (observed with Lightning
    2.6; if this starts failing, Lightning stopped doing it and the parity test may use such a loader)."""
    seen = []

    def record(batch):
        seen.append(batch.sum(dim=1).tolist())
        return batch

    def loader():
        return DataLoader(binary_data(64), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(3))

    module = LitVAE(stopping=FixedSteps(0), get_input=record)
    trainer(max_epochs=2).fit(module, loader())
    plain = [b.sum(dim=1).tolist() for _ in range(2) for b in loader()]
    assert seen[:8] == plain[:8]  # the first epoch is the loader's first pass
    assert seen[8:] != plain[8:]


def _indexed_loaders():
    """Training batches (x, index) in an order fixed by the epoch (a one-replica DistributedSampler, as
    Lightning calls its set_epoch), so that a resumed run sees the training batches of the full run."""
    x = binary_data(48)
    data = TensorDataset(x, torch.arange(48))
    train = DataLoader(data, batch_size=8, sampler=DistributedSampler(data, num_replicas=1, rank=0, seed=5))
    val = DataLoader(binary_data(32, seed=1), batch_size=8)
    return train, val


class _Recorder:
    """get_input that records the index tensor of every training and inner batch it sees, as
    ``(epoch, "train" | "inner", indices)``: the first batch of a training step is the training
    batch, the others come from the inner stream (validation batches carry no index)."""

    def __init__(self):
        self.seen = []
        self.epoch = 0
        self.first = False

    def new_step(self, epoch):
        self.epoch, self.first = epoch, True

    def __call__(self, batch):
        if isinstance(batch, (tuple, list)):
            self.seen.append((self.epoch, "train" if self.first else "inner", batch[1].tolist()))
            self.first = False
            return batch[0]
        return batch

    def inner(self, epoch):
        return [i for e, kind, i in self.seen if e == epoch and kind == "inner"]


class _RecordingLitVAE(LitVAE):
    def on_train_start(self):
        self.stopping_at_start = dict(self.aggressive.stopping.state_dict())
        self.inner_at_start = self.aggressive.inner.state_dict()

    def training_step(self, batch, batch_idx):
        self.vae.get_input.new_step(self.current_epoch)
        return super().training_step(batch, batch_idx)


def test_resume_from_a_checkpoint_taken_while_aggressive_continues_phase_stopping_and_inner_stream(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def run(max_epochs, ckpt_path=None, checkpoint=False):
        recorder = _Recorder()
        torch.manual_seed(0)
        module = _RecordingLitVAE(stopping=MIPlateau(patience=5, cumulative=True), window=3, max_inner_steps=8,
                                  get_input=recorder)
        callbacks = [ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, filename="{epoch}")] if checkpoint else []
        t = trainer(max_epochs=max_epochs, enable_checkpointing=checkpoint, callbacks=callbacks)
        t.fit(module, *_indexed_loaders(), ckpt_path=ckpt_path)
        return module, recorder, t

    full, full_seen, _ = run(2, checkpoint=True)
    saved = torch.load(tmp_path / "epoch=0.ckpt", weights_only=False)
    callback_state = next(v for k, v in saved["callbacks"].items() if k.startswith("AggressiveVI"))
    state = dict(callback_state["algorithm"], inner_stream=callback_state["inner_stream"])
    assert state["is_aggressive"] and state["updates"] == 6 and saved["global_step"] == 6
    assert state["stopping"]["reference"] != 0.0  # epoch 0's validation MI became the reference
    assert state["stopping"]["failures"] == 0
    assert state["inner_stream"]["passes"] >= 1 and state["inner_stream"]["current"]["consumed"] > 0

    resumed, resumed_seen, t = run(2, ckpt_path=str(tmp_path / "epoch=0.ckpt"))
    assert resumed_seen.inner(0) == [] and [e for e, _, _ in resumed_seen.seen] == [1] * len(resumed_seen.seen)
    # the resumed inner stream goes on where the checkpoint's left off: the batches the full run drew in
    # epoch 1 (how many depends on the losses, which differ: Lightning does not restore the global RNG)
    full_next, resumed_next = full_seen.inner(1), resumed_seen.inner(1)
    n = min(len(full_next), len(resumed_next))
    assert n >= 12 and resumed_next[:n] == full_next[:n]
    assert resumed_next[:n] != full_seen.inner(0)[:n]  # not a stream that started again
    assert t.global_step == 12 == resumed.aggressive.step
    assert resumed.stopping_at_start == state["stopping"] != MIPlateau().state_dict()
    assert resumed.inner_at_start == state["inner_stream"]


def test_refuses_automatic_optimisation():
    class Auto(LitVAE):
        def __init__(self):
            super().__init__(stopping=FixedSteps(1))
            self.automatic_optimization = True

        def configure_optimizers(self):  # Lightning itself refuses two optimisers here
            return torch.optim.Adam(self.vae.parameters())

    train, val = loaders()
    with pytest.raises(ValueError, match="manual optimisation"):
        trainer(max_epochs=1).fit(Auto(), train, val)


def test_refuses_optimisers_that_do_not_split_encoder_and_decoder():
    class OneOptimiser(LitVAE):
        def configure_optimizers(self):
            return torch.optim.Adam(self.vae.parameters())

    train, val = loaders()
    with pytest.raises(ValueError, match="one optimiser over the encoder"):
        trainer(max_epochs=1).fit(OneOptimiser(stopping=FixedSteps(1)), train, val)


def test_a_grad_scaler_precision_scales_every_backward_and_clipping_sees_unscaled_gradients():
    """precision="16-mixed" becomes bf16 on CPU, so the fp16 plugin with its GradScaler is given
    explicitly. Every backward (inner steps included) is scaled; the callback clips in
    on_before_optimizer_step, after the scaler unscaled: the clipped norms are max_norm itself (had it
    clipped the scaled gradients, they would be max_norm / scale after unscaling)."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    class Watch(LitVAE):
        def on_before_optimizer_step(self, optimizer):
            super().on_before_optimizer_step(optimizer)
            grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            if grads:
                self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0 ** 10))
    scaled = []
    scale = plugin.scaler.scale
    plugin.scaler.scale = lambda t: (scaled.append(t.dtype), scale(t))[1]
    torch.manual_seed(0)
    train, val = loaders()
    # clip_scope="network": each optimiser's own gradients are clipped to 0.05, which Watch can see
    module = Watch(stopping=FixedSteps(3), window=3, max_inner_steps=9, clip_grad_norm=0.05, clip_scope="network")
    module.norms = []
    t = trainer(max_epochs=1, plugins=[plugin])
    t.fit(module, train, val)
    n_steps = sum(len(s) for s in module.per_batch)
    backwards = sum(len(s) - 1 for s in module.per_batch[:3]) + 3 + 5  # inner + decoder, then 5 joint
    assert t.global_step == 8 and len(scaled) == backwards and n_steps == backwards + 5
    finite = [n for n in module.norms if n == n]
    assert finite and max(finite) == pytest.approx(0.05, rel=1e-3) and all(n <= 0.05 * 1.001 for n in finite)


class _CountingStop:
    """Never stops; counts the epoch-end events it was asked about."""

    requires_validation = True

    def __init__(self):
        self.epoch_ends = []

    def should_stop(self, event):
        if event.epoch_end:
            self.epoch_ends.append((event.epoch, event.metrics.get("val_mi")))
        return False


def test_the_stopping_criterion_sees_each_epoch_end_once_and_not_trainer_validate():
    torch.manual_seed(0)
    train, val = loaders()
    stop = _CountingStop()
    module = LitVAE(stopping=stop, window=3, max_inner_steps=6)
    t = trainer(max_epochs=2, num_sanity_val_steps=2)
    t.fit(module, train, val)
    assert [e for e, _ in stop.epoch_ends] == [0, 1] and all(mi is not None for _, mi in stop.epoch_ends)
    assert stop.epoch_ends[-1][1] == pytest.approx(float(t.callback_metrics["val_mi"]))
    t.validate(module, val, verbose=False)
    assert len(stop.epoch_ends) == 2 and "val_mi" in t.callback_metrics


def test_max_steps_ending_mid_epoch_under_mi_plateau_just_stops():
    torch.manual_seed(0)
    train, val = loaders()  # 8 batches per epoch
    module = LitVAE(stopping=MIPlateau(), window=3, max_inner_steps=6)
    t = trainer(max_steps=5)
    t.fit(module, train, val)
    assert t.global_step == 5 == module.aggressive.step and module.aggressive.is_aggressive


def test_validation_every_second_epoch_is_refused_naming_the_trainer_option():
    train, val = loaders()
    module = LitVAE(stopping=MIPlateau(), window=3, max_inner_steps=6)
    with pytest.raises(ValueError, match="check_val_every_n_epoch=2"):
        trainer(max_epochs=2, check_val_every_n_epoch=2).fit(module, train, val)
    trainer(max_epochs=1, check_val_every_n_epoch=2).fit(LitVAE(stopping=FixedSteps(2), window=3, max_inner_steps=6),
                                                         train, val)  # a criterion without validation: fine


def test_a_module_without_validation_step_is_refused_naming_it():
    class NoValidation(LitVAE):
        validation_step = pl.LightningModule.validation_step

    train, val = loaders()
    with pytest.raises(ValueError, match="NoValidation has no validation_step"):
        trainer(max_epochs=1).fit(NoValidation(stopping=MIPlateau(), window=3, max_inner_steps=6), train, val)


def test_no_validation_data_is_named_at_the_epochs_end():
    train, _ = loaders()
    with pytest.raises(ValueError, match="no validation ran in epoch 0"):
        trainer(max_epochs=1).fit(LitVAE(stopping=MIPlateau(), window=3, max_inner_steps=6), train)


def test_fitting_again_with_a_new_trainer_is_refused_unless_resumed():
    torch.manual_seed(0)
    train, val = loaders()
    module = LitVAE(stopping=FixedSteps(2), window=3, max_inner_steps=6)
    trainer(max_epochs=1).fit(module, train, val)
    with pytest.raises(ValueError, match="taken 8 decoder updates in an earlier fit, but this Trainer starts at "
                                         "global_step 0"):
        trainer(max_epochs=2).fit(module, train, val)


def test_a_skipped_update_logs_no_training_loss():
    class NaNAfter(LitVAE):
        def training_step(self, batch, batch_idx):
            if batch_idx == 2:
                batch = batch * float("nan")
            return super().training_step(batch, batch_idx)

    torch.manual_seed(0)
    train, val = loaders()
    module = NaNAfter(stopping=FixedSteps(0), window=3, max_inner_steps=6, on_nonfinite="skip")
    logged = []
    module.log_dict = lambda values, **kw: logged.append(dict(values))  # type: ignore[method-assign]
    trainer(max_epochs=1, limit_val_batches=0).fit(module, train, val)
    losses = [v["train_loss"] for v in logged if "train_loss" in v]
    assert len(losses) == 7 and all(torch.isfinite(torch.as_tensor(v)) for v in losses)  # 8 batches, 1 skipped
    assert module.aggressive.skipped_steps == 1


def test_under_a_grad_scaler_a_joint_update_clips_the_joint_norm_of_unscaled_gradients():
    """In a joint update the encoder's optimiser steps first: at its hook the precision plugin has
    unscaled the encoder's gradients but not yet the decoder's. The joint norm must count the
    decoder's divided by the scale (had it counted them scaled, the clipping factor would be ~1/scale
    too small and the joint norm after unscaling far below max_norm)."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    class Watch(LitVAE):
        def on_before_optimizer_step(self, optimizer):
            super().on_before_optimizer_step(optimizer)
            grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0 ** 10))
    torch.manual_seed(0)
    train, val = loaders()
    module = Watch(stopping=FixedSteps(0), window=3, max_inner_steps=9, clip_grad_norm=0.05)
    module.norms = []
    trainer(max_epochs=1, plugins=[plugin]).fit(module, train, val)
    assert all(steps == ["enc", "dec"] for steps in module.per_batch) and len(module.norms) == 16
    joint = [(e ** 2 + d ** 2) ** 0.5 for e, d in zip(module.norms[0::2], module.norms[1::2])]
    assert all(n == pytest.approx(0.05, rel=1e-3) for n in joint)  # every update clipped to max_norm
