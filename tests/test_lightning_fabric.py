"""The Fabric path: AggressiveTrainer through fabric_trainer (backward=fabric.backward, Fabric
optimisers) runs the inner loop under Fabric's precision plugin and strategy."""
import copy

import pytest

pytest.importorskip("lightning.fabric", reason="the lightning extra is not installed")

import torch  # noqa: E402
from lightning.fabric import Fabric  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from aggressive_vi import VAE, AggressiveTrainer, Engine, FixedSteps  # noqa: E402
from aggressive_vi.lightning import fabric_autocast, fabric_trainer  # noqa: E402
from conftest import BernoulliDecoder, MLPEncoder, binary_data  # noqa: E402


def data():
    train = DataLoader(binary_data(48), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(2))
    inner = DataLoader(binary_data(48), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(4))
    return train, inner


def models(start=None):
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    if start is not None:
        vae.load_state_dict(start)
    return vae, torch.optim.Adam(vae.encoder.parameters(), lr=1e-2), torch.optim.Adam(vae.decoder.parameters(), lr=1e-2)


OPTIONS = dict(stopping=FixedSteps(3), window=3, max_inner_steps=9)


def test_fabric_32_true_gives_the_plain_trainers_parameters_and_routes_every_step_through_fabric():
    vae, enc_opt, dec_opt = models()
    start = copy.deepcopy(vae.state_dict())
    fabric = Fabric(accelerator="cpu", devices=1, precision="32-true")
    calls = {"backward": 0, "step": 0}
    precision_backward, strategy_step = fabric._precision.backward, fabric._strategy.optimizer_step

    def counted_backward(*args, **kwargs):
        calls["backward"] += 1
        return precision_backward(*args, **kwargs)

    def counted_step(*args, **kwargs):
        calls["step"] += 1
        return strategy_step(*args, **kwargs)

    fabric._precision.backward, fabric._strategy.optimizer_step = counted_backward, counted_step
    trainer = fabric_trainer(fabric, vae, enc_opt, dec_opt, **OPTIONS)
    train, inner = data()
    torch.manual_seed(5)
    with fabric_autocast(fabric):
        history = trainer.fit(train, epochs=1, inner_loader=inner)
    inner_steps = round(history.records[0].inner_steps_mean * 3)
    # 3 aggressive batches: inner steps + 1 decoder step each; 3 joint batches: one backward, 2 steps
    assert calls["backward"] == inner_steps + 3 + 3
    assert calls["step"] == inner_steps + 3 + 2 * 3

    plain_vae, enc_opt, dec_opt = models(start)
    plain = AggressiveTrainer(plain_vae, enc_opt, dec_opt, **OPTIONS)
    train, inner = data()
    torch.manual_seed(5)
    plain.fit(train, epochs=1, inner_loader=inner)
    for (name, a), b in zip(vae.state_dict().items(), plain_vae.state_dict().values()):
        assert torch.equal(a, b), name


def test_fabric_bf16_mixed_autocast_covers_the_inner_loop_and_the_model_learns():
    vae, enc_opt, dec_opt = models()
    val = DataLoader(binary_data(32, seed=1), batch_size=8)
    from aggressive_vi import estimators
    start = [p.detach().clone() for p in vae.parameters()]
    dtypes = []
    vae.encoder.register_forward_hook(lambda module, args, out: dtypes.append((torch.is_grad_enabled(), out[0].dtype)))
    fabric = Fabric(accelerator="cpu", devices=1, precision="bf16-mixed")
    trainer = fabric_trainer(fabric, vae, enc_opt, dec_opt, **OPTIONS)
    train, inner = data()
    with fabric_autocast(fabric):
        history = trainer.fit(train, val_loader=val, epochs=2, inner_loader=inner)
    assert history.records[0].inner_steps_mean >= 6
    # the fp32 model is the one autocast ran: its KL is the last epoch's bf16 one up to bf16 rounding
    # (8-bit mantissa: ~0.4% per operation; 5% + 0.02 nats leaves room for a few dozen of them). With
    # fabric.autocast() around fit (cached weight casts) it was 0.14 nats vs 7.8e4 in fp32.
    kl_after = estimators.kl(vae, val)
    assert kl_after == pytest.approx(history.records[-1].val_kl, rel=0.05, abs=0.02)
    assert max(float((p - q).abs().max()) for p, q in zip(vae.parameters(), start)) > 1e-2  # it trained
    with_grad = [d for g, d in dtypes if g]
    assert len(with_grad) >= 3 * 6 + 9  # 3 aggressive batches of >= 2 windows of 3, 9 joint steps and set(with_grad) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in vae.parameters())  # mixed: the weights stay fp32


def test_fabric_trainer_refuses_a_gradient_scaler():
    vae, enc_opt, dec_opt = models()
    from lightning.fabric.plugins import MixedPrecision

    # precision="16-mixed" falls back to bf16 on CPU; the plugin with its scaler stands for a GPU's
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    fabric = Fabric(accelerator="cpu", devices=1, plugins=[plugin])
    with pytest.raises(ValueError, match="gradient scaler"):
        fabric_trainer(fabric, vae, enc_opt, dec_opt, **OPTIONS)


def test_engine_backward_is_called_for_every_step():
    vae, enc_opt, dec_opt = models()
    seen = []

    def backward(loss, inputs=None):
        seen.append(inputs is None)
        torch.autograd.backward(loss, inputs=inputs)

    trainer = AggressiveTrainer(vae, enc_opt, dec_opt, engine=Engine(backward=backward), **OPTIONS)
    train, inner = data()
    history = trainer.fit(train, epochs=1, inner_loader=inner)
    inner_steps = round(history.records[0].inner_steps_mean * 3)
    assert seen.count(False) == inner_steps  # encoder-only steps pass inputs=encoder parameters
    assert seen.count(True) == 3 + 3
    with pytest.raises(TypeError, match="backward must be callable"):
        Engine(backward=3)
    with pytest.raises(ValueError, match="backward= with precision='fp16'"):  # two loss scalings
        Engine("fp16", backward=backward)
