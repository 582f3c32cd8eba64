"""AggressiveTrainer: the inner loop, the phase switch, modes, batch formats and input errors."""
from typing import List

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from aggressive_vi import (VAE, AggressiveTrainer, Always, FixedEpochs, FixedSteps, LinearKLAnnealing,
                           MIPlateau)
from conftest import BernoulliDecoder, MLPEncoder, binary_data


class SpySGD(torch.optim.SGD):
    """SGD that calls ``before()`` and ``after()`` around every step."""

    def __init__(self, params, lr, before=lambda: None, after=lambda: None):
        super().__init__(params, lr=lr)
        self.before, self.after = before, after

    def step(self, closure=None):
        self.before()
        out = super().step(closure)
        self.after()
        return out


def make_trainer(window=3, cap=10, **kwargs):
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    enc_opt = torch.optim.SGD(vae.encoder.parameters(), lr=0.1)
    dec_opt = torch.optim.SGD(vae.decoder.parameters(), lr=0.1)
    kwargs.setdefault("stopping", Always())
    return vae, AggressiveTrainer(vae, enc_opt, dec_opt, window=window, max_inner_steps=cap, **kwargs)


def loader(n=40, batch=8, seed=0):
    return DataLoader(binary_data(n, seed=seed), batch_size=batch, shuffle=True)


@pytest.mark.parametrize("clip_scope", ["network", "joint"])
def test_inner_steps_leave_the_decoder_untouched_and_without_gradients(clip_scope):
    """"network" computes no gradient for the network not being stepped; "joint" (the paper's rule)
    computes both for the norm but steps one network, and leaves no stale gradient behind."""
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    dec_params = list(vae.decoder.parameters())
    enc_params = list(vae.encoder.parameters())
    snapshot = [p.detach().clone() for p in dec_params]
    inner_counts: List[int] = []
    counter = {"inner": 0}

    def before_encoder_step():
        counter["inner"] += 1
        if clip_scope == "network":
            assert all(p.grad is None for p in dec_params), "a decoder gradient was computed in an inner step"
        else:
            assert all(p.grad is not None for p in dec_params), "the joint norm needs the decoder's gradient"
        assert all(torch.equal(p, s) for p, s in zip(dec_params, snapshot)), "decoder changed in inner step"

    def before_decoder_step():
        inner_counts.append(counter["inner"])
        counter["inner"] = 0
        if clip_scope == "network":
            assert all(p.grad is None for p in enc_params), "an encoder gradient was computed in a decoder step"
        else:
            assert all(p.grad is not None for p in enc_params), "the joint norm needs the encoder's gradient"

    def after_decoder_step():
        for s, p in zip(snapshot, dec_params):
            s.copy_(p.detach())

    enc_opt = SpySGD(enc_params, 0.1, before=before_encoder_step)
    dec_opt = SpySGD(dec_params, 0.1, before=before_decoder_step, after=after_decoder_step)
    window, cap = 3, 10
    trainer = AggressiveTrainer(vae, enc_opt, dec_opt, stopping=Always(), window=window, max_inner_steps=cap,
                                clip_scope=clip_scope)
    history = trainer.fit(loader(), epochs=2)
    assert all(p.grad is None for p in dec_params + enc_params) or clip_scope == "network"
    assert len(inner_counts) == 10  # 5 batches x 2 epochs
    for count in inner_counts:
        # at least two windows (the first is compared with +inf), at most the cap, and the loop
        # ends on a window boundary unless the cap ends it
        assert 2 * window <= count <= cap
        assert count % window == 0 or count == cap
    assert history[0].inner_steps_mean == pytest.approx(sum(inner_counts[:5]) / 5)
    assert all(r.aggressive and r.aggressive_steps == 5 for r in history)


class ZDeafDecoder(nn.Module):
    """log p(x|z) = -sum(x^2): the loss depends on the batch alone, so windows are predictable."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def log_prob(self, x, z):
        return -(x ** 2).sum(-1, keepdim=True).expand(-1, z.shape[1]) + 0 * self.w * z.sum(-1)


class ConstantEncoder(nn.Module):
    """q(z|x) = N(0, I) for every x: the KL term is 0."""

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(2))

    def forward(self, x):
        out = self.p.expand(x.shape[0], 2)
        return out, out


@pytest.mark.parametrize("trend,expected", [(+1, 8), (-1, 20)])
def test_window_test_leaves_when_the_windowed_loss_rises(trend, expected):
    torch.manual_seed(0)
    vae = VAE(ConstantEncoder(), ZDeafDecoder())
    enc_opt = torch.optim.SGD(vae.encoder.parameters(), lr=0.0)  # the encoder's loss stays put
    dec_opt = torch.optim.SGD(vae.decoder.parameters(), lr=0.0)
    # fresh batches whose loss grows (trend +1) or shrinks (-1) with every draw
    fresh = [torch.full((2, 3), 1.0 + 0.1 * i) for i in range(100)][::trend]
    steps = []
    trainer = AggressiveTrainer(vae, enc_opt, dec_opt, stopping=Always(), window=4, max_inner_steps=20,
                                callbacks=[type("Spy", (), {"on_step_end": lambda s, t, info: steps.append(info.inner_steps)})()])
    trainer.fit([fresh[0]], epochs=1, inner_loader=fresh)
    # rising: window 2 (steps 5-8) is worse than window 1, so the loop stops at 8 = 2 * window;
    # falling: every window improves, so the cap (20) ends it
    assert steps == [expected]


def test_basic_training_updates_both_networks_every_step():
    vae, trainer = make_trainer(aggressive=False)
    enc_before = [p.clone() for p in vae.encoder.parameters()]
    history = trainer.fit(loader(), epochs=1)
    assert not history[0].aggressive and history[0].inner_steps_mean == 0 and history[0].aggressive_steps == 0
    assert all(not torch.equal(a, b) for a, b in zip(enc_before, vae.encoder.parameters()))
    assert trainer.step == 5


@pytest.mark.parametrize("n", [0, 3, 7])
def test_fixed_steps_is_aggressive_for_exactly_n_decoder_updates(n):
    _, trainer = make_trainer(stopping=FixedSteps(n))
    history = trainer.fit(loader(), epochs=2)
    assert sum(r.aggressive_steps for r in history) == n
    assert trainer.is_aggressive is False


def test_fixed_epochs_and_always():
    _, trainer = make_trainer(stopping=FixedEpochs(1))
    assert [r.aggressive for r in trainer.fit(loader(), epochs=3)] == [True, False, False]
    _, trainer = make_trainer(stopping=Always())
    assert [r.aggressive for r in trainer.fit(loader(), epochs=2)] == [True, True]


def test_kl_schedule_is_applied_per_decoder_update():
    _, trainer = make_trainer(aggressive=False, kl_schedule=LinearKLAnnealing(start=0.2, warmup_epochs=2))
    history = trainer.fit(loader(), epochs=3)  # 5 steps per epoch
    assert history[0].kl_weight == pytest.approx(0.2 + 5 * 0.8 / 10)
    assert history[1].kl_weight == pytest.approx(1.0)


def test_fit_continues_to_the_total_epoch_count():
    _, trainer = make_trainer(aggressive=False)
    trainer.fit(loader(), epochs=1)
    history = trainer.fit(loader(), epochs=3)
    assert [r.epoch for r in history] == [0, 1, 2] and trainer.step == 15


def test_modes_train_inside_fit_and_restored_after():
    seen = []

    class ModeEncoder(MLPEncoder):
        def forward(self, x):
            seen.append(self.training)
            return super().forward(x)

    vae = VAE(ModeEncoder(), BernoulliDecoder())
    vae.eval()
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.1),
                                torch.optim.SGD(vae.decoder.parameters(), lr=0.1), stopping=Always(), window=2)
    trainer.fit([binary_data(4)], val_loader=[binary_data(4)], epochs=1)
    assert True in seen and False in seen  # train for steps, eval for validation
    assert not vae.training and not vae.encoder.training


@pytest.mark.parametrize("evaluated", ["vae", "encoder", "decoder"])
def test_a_callback_that_evaluates_mid_epoch_does_not_leave_the_next_step_in_eval_mode(evaluated):
    seen = []

    class ModeEncoder(MLPEncoder):
        def forward(self, x):
            seen.append(self.training)
            return super().forward(x)

    class EvaluatesAfterEachStep:
        def on_step_end(self, trainer, info):
            seen.append("step end")
            getattr(trainer.vae, "encoder" if evaluated == "encoder" else "decoder").eval()
            if evaluated == "vae":
                trainer.vae.eval()

    vae = VAE(ModeEncoder(), BernoulliDecoder())
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.1),
                                torch.optim.SGD(vae.decoder.parameters(), lr=0.1), stopping=Always(),
                                aggressive=False, callbacks=[EvaluatesAfterEachStep()])
    trainer.fit([binary_data(4)] * 3, epochs=1)
    assert seen == [True, "step end"] * 3


def test_batches_as_tuple_dict_and_integer_tokens_pass_through():
    class TokenEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.out = nn.Linear(4, 4)

        def forward(self, x):
            assert x.dtype == torch.long
            return self.out(self.emb(x).mean(1)).chunk(2, -1)

    class TokenDecoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.out = nn.Linear(2, 10)

        def log_prob(self, x, z):
            assert x.dtype == torch.long
            logp = self.out(z).log_softmax(-1)  # [batch, n, vocab]
            return logp.gather(-1, x.unsqueeze(1).expand(-1, z.shape[1], -1)).sum(-1)

    tokens = torch.randint(0, 10, (12, 5))
    vae = VAE(TokenEncoder(), TokenDecoder())
    opts = (torch.optim.SGD(vae.encoder.parameters(), lr=0.1), torch.optim.SGD(vae.decoder.parameters(), lr=0.1))
    for data in (DataLoader(TensorDataset(tokens, torch.zeros(12)), batch_size=4),
                 [{"x": tokens[:6], "label": 1}, {"x": tokens[6:]}],
                 [tokens]):
        trainer = AggressiveTrainer(vae, *opts, stopping=FixedSteps(1), window=2)
        assert len(trainer.fit(data, val_loader=data, epochs=1)) == 1


def test_callbacks_see_steps_and_can_stop_training():
    events = []

    class Recorder:
        def on_fit_start(self, trainer):
            events.append("fit_start")

        def on_step_end(self, trainer, info):
            events.append(("step", info.step, info.aggressive))
            if info.step == 3:
                trainer.stop_training = True

        def on_epoch_end(self, trainer, record):
            events.append(("epoch", record.epoch, record.steps))

        def on_fit_end(self, trainer):
            events.append("fit_end")

    _, trainer = make_trainer(callbacks=[Recorder()])
    history = trainer.fit(loader(), epochs=5)
    # stopped in the middle of epoch 0: the epoch stays open (not recorded), to be trained on
    assert events == ["fit_start", ("step", 1, True), ("step", 2, True), ("step", 3, True), "fit_end"]
    assert len(history) == 0 and trainer.epoch == 0 and trainer.epoch_in_progress


def test_verbose_prints_a_line_per_epoch(capsys):
    _, trainer = make_trainer(stopping=FixedEpochs(1), verbose=True)
    trainer.fit(loader(), val_loader=loader(16), epochs=2)
    out = capsys.readouterr().out
    assert out.count("epoch ") == 2 and "val_mi" in out and "left the aggressive phase" in out


def test_state_dict_round_trip():
    _, trainer = make_trainer(stopping=MIPlateau())
    trainer.fit(loader(), val_loader=loader(16), epochs=2)
    state = trainer.state_dict()
    _, other = make_trainer(stopping=MIPlateau())
    other.load_state_dict(state)
    assert other.epoch == 2 and other.step == trainer.step and other.is_aggressive == trainer.is_aggressive
    assert other.history.to_dicts() == trainer.history.to_dicts()
    assert other.stopping.state_dict() == trainer.stopping.state_dict()
    assert all(torch.equal(a, b) for a, b in zip(other.model.parameters(), trainer.model.parameters()))


# ---------------------------------------------------------------------------- errors
def params_of(module):
    return [p.detach().clone() for p in module.parameters()]


def assert_unchanged(module, before):
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_optimiser_holding_the_other_networks_parameters():
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    with pytest.raises(ValueError, match=r"enc_opt holds the decoder parameter 'net.0.weight'"):
        AggressiveTrainer(vae, torch.optim.SGD(vae.parameters(), lr=1.0),
                          torch.optim.SGD(vae.decoder.parameters(), lr=1.0))
    with pytest.raises(ValueError, match=r"dec_opt holds the encoder parameter"):
        AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=1.0),
                          torch.optim.SGD(vae.encoder.parameters(), lr=1.0))
    with pytest.raises(TypeError, match="enc_opt must be a torch.optim.Optimizer"):
        AggressiveTrainer(vae, None, torch.optim.SGD(vae.decoder.parameters(), lr=1.0))


def test_mi_plateau_without_validation_loader():
    vae, trainer = make_trainer(stopping=MIPlateau())
    before = params_of(vae)
    with pytest.raises(ValueError, match=r"stopping=MIPlateau\(.*val_loader is None"):
        trainer.fit(loader(), epochs=1)
    assert_unchanged(vae, before)


def test_empty_loaders():
    vae, trainer = make_trainer()
    with pytest.raises(ValueError, match=r"train_loader is empty \(len 0\)"):
        trainer.fit(DataLoader(TensorDataset(torch.zeros(0, 6)), batch_size=4), epochs=1)
    with pytest.raises(ValueError, match="train_loader yielded no batch"):
        trainer.fit(iter([]), epochs=1, steps_per_epoch=1)
    with pytest.raises(ValueError, match=r"has no len\(\); pass fit\(..., steps_per_epoch=N\)"):
        trainer.fit(iter([binary_data(4)]), epochs=1)


@pytest.mark.parametrize("encoder,decoder,error,pattern", [
    ("one_tensor", "ok", TypeError, r"must return a tuple \(mean, logvar\)"),
    ("ok", "wrong_shape", ValueError, r"must return log p\(x\|z\) of shape \[batch, n_samples\]"),
])
def test_bad_modules_fail_before_any_parameter_changes(encoder, decoder, error, pattern):
    class OneTensor(MLPEncoder):
        def forward(self, x):
            return self.net(x)

    class WrongShape(BernoulliDecoder):
        def log_prob(self, x, z):
            return super().log_prob(x, z)[:, 0]

    vae = VAE(OneTensor() if encoder == "one_tensor" else MLPEncoder(),
              WrongShape() if decoder == "wrong_shape" else BernoulliDecoder())
    before = params_of(vae)
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=1.0),
                                torch.optim.SGD(vae.decoder.parameters(), lr=1.0), stopping=Always())
    with pytest.raises(error, match=pattern):
        trainer.fit(loader(), epochs=1)
    assert_unchanged(vae, before)


@pytest.mark.parametrize("kwargs,pattern", [
    ({"window": 0}, "window must be a positive int; got 0"),
    ({"cap": 2.5}, "max_inner_steps must be a positive int; got 2.5"),
    ({"clip_grad_norm": -1.0}, "clip_grad_norm must be a positive number or None; got -1.0"),
    ({"stopping": object()}, "stopping must have a method should_stop"),
    ({"clip_scope": "both"}, "clip_scope must be one of"),
])
def test_bad_options(kwargs, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        make_trainer(**kwargs)


def test_bad_batches_name_what_came():
    _, trainer = make_trainer()
    with pytest.raises(TypeError, match="a loader batch is a str"):
        trainer.fit(["not a tensor"], epochs=1)
    with pytest.raises(ValueError, match=r"mapping with keys \['y'\]; expected a key 'x'"):
        trainer.fit([{"y": binary_data(2)}], epochs=1)


def test_clip_scope_joint_trains_with_only_the_updated_network_stepped():
    """The paper's joint-norm rule: an aggressive epoch runs and no gradient of either network
    outlives an update (the arithmetic of one step, and that an inner step leaves the decoder as it
    was, are checked against the rule written out in tests/test_parity.py)."""
    vae, trainer = make_trainer(clip_scope="joint", clip_grad_norm=1e-2, stopping=FixedSteps(10 ** 6))
    seen = []

    class Check:
        def on_step_end(self, t, info):
            seen.append(all(p.grad is None for p in t.model.parameters()))

    trainer.callbacks.append(Check())
    history = trainer.fit(loader(), epochs=1)
    assert history[0].aggressive_steps == len(loader()) and all(seen)
    assert trainer.state_dict()["config"]["clip_scope"] == "joint"
