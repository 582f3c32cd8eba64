"""AggressiveStep, the one implementation of Algorithm 1: driven by hand, as a user's own loop would,
and checked directly for what only indirect tests caught before (the KL weight of inner steps, the
decoder update's minibatch, the phase switch, its state)."""
import itertools

import pytest
import torch

from aggressive_vi import (VAE, AggressiveStep, AggressiveTrainer, Always, ConstantKL, Engine, FixedSteps,
                           LinearKLAnnealing, MIPlateau, NonFiniteError, estimators)
from aggressive_vi.catch_up import FixedCount
from conftest import BernoulliDecoder, MLPEncoder, binary_data


def vae_and_opts(seed=0, lr=0.1):
    torch.manual_seed(seed)
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    return vae, torch.optim.SGD(vae.encoder.parameters(), lr=lr), torch.optim.SGD(vae.decoder.parameters(), lr=lr)


def test_a_hand_written_loop_trains_exactly_as_the_trainer():
    """The README's loop: the same updates, bit for bit, as AggressiveTrainer over the same batches."""
    data = binary_data(48, seed=3)
    batches = [data[i:i + 8] for i in range(0, 48, 8)]

    vae, enc, dec = vae_and_opts()
    step = AggressiveStep(vae, enc, dec, stopping=FixedSteps(4), window=3, max_inner_steps=9)
    fresh = itertools.cycle(batches)  # the inner loop's fresh minibatches
    torch.manual_seed(1)
    outs = []
    for epoch in range(2):
        for x in batches:
            outs.append(step(x, lambda: next(fresh), epoch=epoch, steps_per_epoch=len(batches)))
        with torch.random.fork_rng():  # the trainer, without val_loader, draws no validation noise
            step.end_epoch(epoch, {"val_mi": estimators.mutual_information(vae, batches)})

    twin, enc2, dec2 = vae_and_opts()
    trainer = AggressiveTrainer(twin, enc2, dec2, stopping=FixedSteps(4), window=3, max_inner_steps=9)
    torch.manual_seed(1)
    trainer.fit(batches, epochs=2, inner_loader=itertools.cycle(batches))
    assert all(torch.equal(a, b) for a, b in zip(vae.parameters(), twin.parameters()))
    assert [o.aggressive for o in outs] == [True] * 4 + [False] * 8
    assert step.updates == trainer.step == 12 and step.left_aggressive_at == 4
    assert sum(o.left_aggressive for o in outs) == 1 and outs[4].left_aggressive


@pytest.mark.parametrize("clip_scope", ["network", "joint"])
def test_inner_steps_and_the_decoder_update_use_the_schedules_weight_of_that_update(clip_scope):
    vae, enc, dec = vae_and_opts()
    weights = []
    elbo = vae.elbo

    def spy(x, kl_weight=1.0, n_samples=1):
        weights.append(float(kl_weight))
        return elbo(x, kl_weight=kl_weight, n_samples=n_samples)

    vae.elbo = spy  # type: ignore[method-assign]
    given = []
    elbo_given = vae.elbo_given

    def spy_given(x, mean, logvar, kl_weight=1.0, n_samples=1):
        given.append(float(kl_weight))
        return elbo_given(x, mean, logvar, kl_weight=kl_weight, n_samples=n_samples)

    vae.elbo_given = spy_given  # type: ignore[method-assign]
    step = AggressiveStep(vae, enc, dec, stopping=Always(), catch_up=FixedCount(3), clip_scope=clip_scope,
                          kl_schedule=LinearKLAnnealing(start=0.2, warmup_epochs=1))
    x = binary_data(8)
    # "network": the decoder update reuses the encoder's output (elbo_given alone); "joint" runs the
    # whole elbo with both gradients
    inner_and_decoder = 3 if clip_scope == "network" else 4
    for update in range(3):  # 4 updates per epoch: the schedule gives 0.4, 0.6, 0.8
        step(x, lambda: x, steps_per_epoch=4)
        expected = 0.2 + 0.8 * (update + 1) / 4
        assert weights == pytest.approx([expected] * inner_and_decoder)  # every inner step of this update
        assert given == pytest.approx([expected] * 4)  # elbo goes through elbo_given; then the decoder update
        weights.clear(), given.clear()


def test_the_decoder_update_takes_the_original_minibatch_not_a_fresh_one():
    vae, enc, dec = vae_and_opts()
    seen = []
    log_prob = vae.decoder.log_prob

    def spy(x, z):
        seen.append(x)
        return log_prob(x, z)

    vae.decoder.log_prob = spy  # type: ignore[method-assign]
    x, fresh = binary_data(8, seed=1), binary_data(8, seed=2)
    step = AggressiveStep(vae, enc, dec, stopping=Always(), catch_up=FixedCount(4))
    step(x, lambda: fresh)
    assert len(seen) == 5
    assert seen[0] is x and all(s is fresh for s in seen[1:4])  # inner steps: x first, then fresh ones
    assert seen[4] is x  # the decoder update: the minibatch the loop began with


def test_the_public_updates_touch_only_their_network():
    x = binary_data(8)
    for method, moves in (("encoder_update", "encoder"), ("decoder_update", "decoder"), ("joint_update", "both")):
        vae, enc, dec = vae_and_opts()
        step = AggressiveStep(vae, enc, dec)
        before = {n: p.detach().clone() for n, p in vae.named_parameters()}
        getattr(step, method)(x, 1.0)
        changed = {n.split(".")[0] for n, p in vae.named_parameters() if not torch.equal(p, before[n])}
        assert changed == ({"encoder", "decoder"} if moves == "both" else {moves}), method


def test_end_epoch_asks_the_criterion_with_the_metrics_and_switches_once():
    vae, enc, dec = vae_and_opts()
    step = AggressiveStep(vae, enc, dec, stopping=MIPlateau())
    assert not step.end_epoch(0, {"val_mi": 1.0})
    assert step.end_epoch(1, {"val_mi": 0.5}) and not step.is_aggressive and step.left_aggressive_at == 0
    assert not step.end_epoch(2, {"val_mi": 0.1})  # already basic: nothing to end


def test_state_dict_round_trip_and_unbound_use():
    vae, enc, dec = vae_and_opts()
    step = AggressiveStep(vae, enc, dec, stopping=MIPlateau(), kl_schedule=LinearKLAnnealing(0.1, 2))
    x = binary_data(8)
    step(x, lambda: x, steps_per_epoch=2)
    step.end_epoch(0, {"val_mi": 0.3})
    state = step.state_dict()
    other = AggressiveStep(vae, stopping=MIPlateau(), kl_schedule=LinearKLAnnealing(0.1, 2))  # unbound
    other.load_state_dict(state)
    assert (other.updates, other.is_aggressive, other.stopping.state_dict()) == (1, True, step.stopping.state_dict())
    assert other.kl_weight(2) == step.kl_weight(2)
    with pytest.raises(RuntimeError, match="bind"):
        other(x, lambda: x)
    with pytest.raises(ValueError, match="enc_opt holds no encoder parameter"):
        other.bind(*vae_and_opts()[1:])  # optimisers of another model
    other.bind(torch.optim.SGD(vae.encoder.parameters(), lr=0.1), torch.optim.SGD(vae.decoder.parameters(), lr=0.1))
    assert other.bound and other(x, lambda: x).applied


def test_bind_refuses_optimisers_of_the_other_network():
    vae, enc, dec = vae_and_opts()
    with pytest.raises(ValueError, match="enc_opt holds the decoder parameter"):
        AggressiveStep(vae, dec, dec)
    with pytest.raises(TypeError, match="dec_opt must be a torch.optim.Optimizer; got NoneType"):
        AggressiveStep(vae, enc, None)


def test_an_inner_nan_names_the_step_and_applies_nothing_from_it_on():
    vae, enc, dec = vae_and_opts()
    step = AggressiveStep(vae, enc, dec, stopping=Always(), catch_up=FixedCount(4))
    good, bad = binary_data(8), torch.full((8, 6), float("nan"))
    fresh = iter([good, bad, good])
    with pytest.raises(NonFiniteError, match="inner \\(encoder-only\\) step 3") as caught:
        step(good, lambda: next(fresh), epoch=2, batch_index=5)
    assert (caught.value.epoch, caught.value.batch_index, caught.value.inner_step) == (2, 5, 3)
    assert step.updates == 0  # the decoder update was not taken


@pytest.mark.parametrize("kwargs,pattern", [
    ({"window": 0}, "window"), ({"max_inner_steps": 0}, "max_inner_steps"),
    ({"clip_scope": "both"}, "clip_scope"), ({"on_nonfinite": "ignore"}, "on_nonfinite"),
    ({"catch_up": FixedCount(2), "window": 10}, "window=10 has no effect"),
    ({"engine": "fp16"}, "engine must be"),
])
def test_bad_options_name_the_argument(kwargs, pattern):
    vae, enc, dec = vae_and_opts()
    with pytest.raises((TypeError, ValueError), match=pattern):
        AggressiveStep(vae, enc, dec, **kwargs)


def test_one_engine_serves_one_model():
    engine = Engine()
    vae, enc, dec = vae_and_opts()
    AggressiveStep(vae, enc, dec, engine=engine)
    other, enc2, dec2 = vae_and_opts()
    with pytest.raises(ValueError, match="already serves another model"):
        AggressiveStep(other, enc2, dec2, engine=engine)


def test_constant_kl_default_and_basic_from_the_start():
    vae, enc, dec = vae_and_opts()
    step = AggressiveStep(vae, enc, dec, aggressive=False)
    assert isinstance(step.kl_schedule, ConstantKL)
    x = binary_data(8)
    out = step(x, lambda: pytest.fail("basic training draws no fresh batch"))
    assert out.inner_steps == 0 and not out.aggressive and out.applied and out.terms.loss.shape == (8,)


class _CountingSGD(torch.optim.SGD):
    """An optimiser that overrides zero_grad (as a user's may, e.g. to log or to keep zeros)."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.cleared = 0

    def zero_grad(self, set_to_none=True):
        self.cleared += 1
        super().zero_grad(set_to_none=set_to_none)


@pytest.mark.parametrize("clip_scope", ["joint", "network"])
def test_the_step_leaves_no_gradient_behind_and_calls_an_overridden_zero_grad(clip_scope):
    """No gradient outlives a step (stale ones from the user's code included), and an optimiser
    whose class overrides zero_grad has it called."""
    x = binary_data(8)
    for make in (torch.optim.SGD, _CountingSGD):
        torch.manual_seed(0)
        vae = VAE(MLPEncoder(), BernoulliDecoder())
        enc, dec = make(vae.encoder.parameters(), lr=0.1), make(vae.decoder.parameters(), lr=0.1)
        step = AggressiveStep(vae, enc, dec, clip_scope=clip_scope, catch_up=FixedCount(3))
        for p in vae.parameters():  # stale gradients from the user's own code
            p.grad = torch.ones_like(p)
        step(x, lambda: binary_data(8))  # three inner steps and a decoder update
        assert all(p.grad is None for p in vae.parameters()), make.__name__
        if make is _CountingSGD:
            assert enc.cleared > 0 and dec.cleared > 0
