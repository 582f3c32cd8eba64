"""Faults: non-finite losses and gradients (raise or skip), bad batches named by index."""
import io
import math
import os

import pytest
import torch
from torch.utils.data import DataLoader

from aggressive_vi import VAE, AggressiveTrainer, Always, Checkpoint, NonFiniteError, PrintLogger
from conftest import BernoulliDecoder, MLPEncoder, binary_data


class PoisonableDecoder(BernoulliDecoder):
    """Returns NaN log-likelihoods when poisoned, for one phase: inner steps are the calls whose z
    depends on the encoder's parameters (z.requires_grad); decoder steps get a z without gradient."""

    def __init__(self):
        super().__init__()
        self.poison = None  # None, "inner", "decoder" or "any"
        self.times = 0  # how many calls to poison

    def log_prob(self, x, z):
        out = super().log_prob(x, z)
        phase = "inner" if z.requires_grad else "decoder"
        if self.times > 0 and self.poison in (phase, "any") and torch.is_grad_enabled():
            self.times -= 1
            return out * float("nan")
        return out


class PoisonAfter:
    """After decoder update ``step``, poison the next ``times`` calls of ``phase``; keeps a copy of the
    parameters as they were then."""

    def __init__(self, step, phase, times=1):
        self.step, self.phase, self.times = step, phase, times
        self.snapshot = None

    def on_step_end(self, trainer, info):
        if trainer.step == self.step:
            trainer.vae.decoder.poison, trainer.vae.decoder.times = self.phase, self.times
            self.snapshot = [p.detach().clone() for p in trainer.vae.parameters()]


def make(callbacks=(), **kwargs):
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), PoisonableDecoder())
    kwargs.setdefault("stopping", Always())
    # PoisonableDecoder tells an inner step from a decoder step by z.requires_grad, which holds only
    # when the decoder step runs the encoder without gradient: clip_scope="network"
    kwargs.setdefault("clip_scope", "network")
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.1),
                                torch.optim.SGD(vae.decoder.parameters(), lr=0.1), window=2,
                                max_inner_steps=6, callbacks=list(callbacks), **kwargs)
    return vae, trainer


def loader(n=48):
    return DataLoader(binary_data(n), batch_size=8)


def split(vae):
    return list(vae.encoder.parameters()), list(vae.decoder.parameters())


@pytest.mark.parametrize("phase,aggressive", [("inner", True), ("decoder", True), ("any", False)])
def test_nonfinite_loss_raises_naming_where_and_keeps_the_last_finite_state(tmp_path, phase, aggressive):
    spy = PoisonAfter(step=8, phase=phase)  # update 9 = epoch 1, batch 2 (6 batches per epoch)
    vae, trainer = make([Checkpoint(tmp_path, every_n_steps=4), spy], aggressive=aggressive)
    with pytest.raises(NonFiniteError) as info:
        trainer.fit(loader(), epochs=3)
    err = info.value
    expected_phase = {"inner": "inner", "decoder": "decoder", "any": "joint"}[phase]
    assert (err.epoch, err.step, err.batch_index, err.phase) == (1, 9, 2, expected_phase)
    assert err.checkpoint == str(tmp_path / "checkpoint-e0001-s000000008.pt") and os.path.exists(err.checkpoint)
    message = str(err)
    assert "decoder update 9 (epoch 1, batch 2)" in message and err.checkpoint in message
    assert {"inner": "inner (encoder-only) step 1", "decoder": "the decoder step",
            "any": "the joint step"}[phase] in message
    assert err.inner_step == (1 if phase == "inner" else None)
    # no parameter was touched by the failed step: all finite, and equal to the snapshot after update 8
    # for every network the failed step would have changed (the encoder did take the finite inner
    # steps of update 9 before a failing decoder step)
    enc, dec = split(vae)
    snap_enc, snap_dec = spy.snapshot[:len(enc)], spy.snapshot[len(enc):]
    assert all(torch.isfinite(p).all() for p in enc + dec)
    assert all(torch.equal(a, b) for a, b in zip(dec, snap_dec))
    if phase == "decoder":
        assert not all(torch.equal(a, b) for a, b in zip(enc, snap_enc))
    else:
        assert all(torch.equal(a, b) for a, b in zip(enc, snap_enc))
    assert all(p.grad is None for p in enc + dec)
    assert trainer.step == 8


def test_a_nonfinite_joint_scope_inner_step_raises_and_changes_neither_network(tmp_path):
    """clip_scope="joint" computes the decoder's gradient in inner steps too: a NaN there must leave
    both networks as they were and no gradient behind."""
    spy = PoisonAfter(step=8, phase="any")  # the first call of update 9 is its first inner step
    vae, trainer = make([spy], clip_scope="joint")
    with pytest.raises(NonFiniteError) as info:
        trainer.fit(loader(), epochs=3)
    assert (info.value.step, info.value.phase, info.value.inner_step) == (9, "inner", 1)
    assert all(torch.equal(a, b) for a, b in zip(vae.parameters(), spy.snapshot))
    assert all(p.grad is None for p in vae.parameters())


def test_skip_mode_counts_skipped_batches_and_inner_steps():
    steps = []

    class Record:
        def on_step_end(self, trainer, info):
            steps.append(info.skipped)

    vae, trainer = make([PoisonAfter(step=2, phase="decoder", times=2), PoisonAfter(step=7, phase="inner", times=3),
                         Record()], on_nonfinite="skip")
    trainer.callbacks.append(PrintLogger(stream=io.StringIO()))
    history = trainer.fit(loader(), epochs=2)
    assert "skipped 2 batches, 0 inner steps" in trainer.callbacks[-1].stream.getvalue()
    assert [r.skipped_batches for r in history] == [2, 0]
    assert [r.skipped_inner_steps for r in history] == [0, 3]
    assert steps[2:4] == [True, True] and sum(steps) == 2 and trainer.step == 12
    assert all(math.isfinite(r.loss) and math.isfinite(r.kl) for r in history)
    assert all(torch.isfinite(p).all() for p in vae.parameters())


def test_nonfinite_gradient_with_a_finite_loss_is_caught():
    class InfGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t.clone()

        @staticmethod
        def backward(ctx, grad):
            return grad * float("inf")

    class BadGradient(BernoulliDecoder):
        def log_prob(self, x, z):
            return InfGrad.apply(super().log_prob(x, z))

    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), BadGradient())
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.1),
                                torch.optim.SGD(vae.decoder.parameters(), lr=0.1), stopping=Always(), window=2)
    before = [p.detach().clone() for p in vae.parameters()]
    with pytest.raises(NonFiniteError, match=r"non-finite gradient in inner \(encoder-only\) step 1 of decoder "
                                             r"update 1 \(epoch 0, batch 0\); loss = \d"):
        trainer.fit(loader(), epochs=1)
    assert all(torch.equal(a, b) for a, b in zip(before, vae.parameters()))


def test_nonfinite_input_batch_is_named():
    data = binary_data(24)
    data[19, 3] = float("nan")  # batch 2 of 8
    _, trainer = make(aggressive=False)
    with pytest.raises(NonFiniteError, match=r"epoch 0, batch 2\).*The input batch itself is not finite: "
                                             r"Tensor\(float32, shape \[8, 6\]\) with 1 NaN and 0 inf values"):
        trainer.fit(DataLoader(data, batch_size=8), epochs=1)


@pytest.mark.parametrize("bad,pattern", [
    (torch.zeros(8, 6, dtype=torch.float64), r"input Tensor\(float64, shape \[8, 6\]\) \(the first batch was "
                                             r"Tensor\(float32, shape \[8, 6\]\)\): .*dtype"),
    (torch.zeros(8, 5), r"input Tensor\(float32, shape \[8, 5\]\) \(the first batch was Tensor\(float32, shape "
                        r"\[8, 6\]\)\): .*(shape|size)"),
])
def test_a_batch_the_model_cannot_take_is_named_by_index(bad, pattern):
    batches = [binary_data(8, seed=i) for i in range(3)] + [bad]
    _, trainer = make()
    with pytest.raises(RuntimeError, match=r"^epoch 0, batch 3 \(decoder update 4\), " + pattern):
        trainer.fit(batches, epochs=1, inner_loader=batches[:3])


def test_the_error_names_what_the_modules_received_not_the_raw_batch():
    """Dict batches (a Hugging Face loader) through the model's get_input: the prefix shows the input
    the modules got, and get_input's own failure shows the loader's batch."""
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), BernoulliDecoder(), get_input=lambda b: b["input_ids"])
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.1),
                                torch.optim.SGD(vae.decoder.parameters(), lr=0.1), stopping=Always(), window=2)
    batches = [{"input_ids": binary_data(8, seed=i), "mask": torch.ones(8)} for i in range(2)]
    batches.append({"input_ids": torch.zeros(8, 5), "mask": torch.ones(8)})
    with pytest.raises(RuntimeError, match=r"^epoch 0, batch 2 \(decoder update 3\), input Tensor\(float32, "
                                           r"shape \[8, 5\]\) \(the first batch was Tensor\(float32, shape \[8, 6\]\)\)"):
        trainer.fit(batches, epochs=1, inner_loader=batches[:2])
    with pytest.raises(KeyError, match=r"epoch 0, batch 0 .*input dict\{'ids'"):
        trainer.fit([{"ids": binary_data(8)}], epochs=2, inner_loader=batches[:2])


def test_bad_option():
    with pytest.raises(ValueError, match=r"on_nonfinite must be one of \('raise', 'skip'\); got 'ignore'"):
        make(on_nonfinite="ignore")


@pytest.mark.parametrize("error", [KeyError("lengths"), AttributeError("no attribute 'hidden'"),
                                   AssertionError("shapes differ"), type("UserError", (Exception,), {})("mine")])
def test_any_exception_from_the_users_modules_gets_the_epoch_and_batch(error):
    class Failing(BernoulliDecoder):
        calls = 0

        def log_prob(self, x, z):
            Failing.calls += 1
            if Failing.calls == 3:
                raise error
            return super().log_prob(x, z)

    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), Failing())
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.1),
                                torch.optim.SGD(vae.decoder.parameters(), lr=0.1), aggressive=False)
    with pytest.raises(type(error)) as info:
        trainer.fit([binary_data(8, seed=i) for i in range(4)], epochs=1)
    assert "epoch 0, batch 2 (decoder update 3)" in str(info.value)
    assert info.value.aggressive_vi_context.startswith("epoch 0, batch 2")
