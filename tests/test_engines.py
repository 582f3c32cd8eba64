"""The plain-PyTorch engine: what apply() does with a loss, its flags, its refusals and its state."""
import pytest
import torch

from aggressive_vi import VAE, Engine
from aggressive_vi.engines import UpdateEngine
from conftest import BernoulliDecoder, MLPEncoder, binary_data


def bound(precision="fp32"):
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    enc, dec = torch.optim.SGD(vae.encoder.parameters(), lr=0.1), torch.optim.SGD(vae.decoder.parameters(), lr=0.1)
    engine = Engine(precision)
    engine.networks(vae, enc, dec)
    return engine, vae, enc, dec


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def test_an_engine_meets_the_protocol_the_step_drives():
    assert isinstance(Engine(), UpdateEngine)


def test_a_joint_update_applies_lr_times_the_clipped_gradient():
    engine, vae, enc, dec = bound()
    x = binary_data(8)
    loss = vae.elbo(x).loss
    grads = torch.autograd.grad(loss.mean(), list(vae.parameters()), retain_graph=True)
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    before = params(vae)
    applied, error = engine.apply(loss, params=list(vae.parameters()), optimizers=[enc, dec], max_norm=0.01,
                                  phase="joint")
    assert applied is True and error is False
    factor = min(1.0, 0.01 / (float(norm) + 1e-6))
    for p, b, g in zip(vae.parameters(), before, grads):
        torch.testing.assert_close(p.detach(), b - 0.1 * factor * g)


def test_an_inner_update_returns_device_flags_and_is_gated_by_allowed():
    engine, vae, enc, dec = bound()
    x = binary_data(8)
    before = params(vae.encoder)
    applied, error = engine.apply(vae.elbo(x).loss, params=list(vae.encoder.parameters()), optimizers=[enc],
                                  max_norm=5.0, phase="inner", allowed=torch.tensor(False))
    assert isinstance(applied, torch.Tensor) and not bool(applied) and not bool(error)
    assert all(torch.equal(a, b) for a, b in zip(vae.encoder.parameters(), before))  # refused: unchanged
    enc.zero_grad(set_to_none=True)
    nan = vae.elbo(x).loss * float("nan")
    applied, error = engine.apply(nan, params=list(vae.encoder.parameters()), optimizers=[enc], max_norm=5.0,
                                  phase="inner")
    assert not bool(applied) and bool(error)  # a non-finite loss is an error, not applied
    assert all(torch.equal(a, b) for a, b in zip(vae.encoder.parameters(), before))


def test_a_non_finite_decoder_update_is_reported_as_an_error_and_not_applied():
    engine, vae, enc, dec = bound()
    x = binary_data(8)
    before = params(vae.decoder)
    applied, error = engine.apply(vae.elbo(x).loss * float("inf"), params=list(vae.decoder.parameters()),
                                  optimizers=[dec], max_norm=None, phase="decoder")
    assert (applied, error) == (False, True)
    assert all(torch.equal(a, b) for a, b in zip(vae.decoder.parameters(), before))


def test_fp16_keeps_a_scaler_per_phase_in_its_state():
    engine, *_ = bound("fp16")
    state = engine.state_dict()
    assert state["name"] == "fp16" and set(state["scalers"]) == {"encoder", "decoder"}
    assert bound("bf16")[0].state_dict()["scalers"] == {}


@pytest.mark.parametrize("make,error,pattern", [
    (lambda: Engine("fp8"), ValueError, "precision must be one of"),
    (lambda: Engine("fp16", backward=torch.autograd.backward), ValueError, "let one of them scale"),
    (lambda: Engine(backward="mine"), TypeError, "backward must be callable"),
])
def test_cross_option_rules_live_in_the_constructor(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


def test_an_unbound_engine_says_so():
    with pytest.raises(RuntimeError, match="not bound"):
        Engine().autocast()
