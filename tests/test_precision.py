"""Mixed precision: bf16/fp16 autocast around the training forward passes, z and log q kept in
float32, fp16 grad scalers (an overflow skips the step instead of raising; scales are checkpointed).
CPU autocast: the models here are MLPs (this CPU's oneDNN has no reduced-precision LSTM)."""
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from aggressive_vi import VAE, AggressiveTrainer, Engine, FixedSteps
from conftest import BernoulliDecoder, MLPEncoder, binary_data


class DtypeSpyDecoder(BernoulliDecoder):
    """Records the dtype its first linear layer computes in, and the dtype of the z it gets."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def log_prob(self, x, z):
        self.seen.append((z.dtype, self.net[0](z).dtype))
        return super().log_prob(x, z)


def trainer(precision, decoder=None, **kwargs):
    torch.manual_seed(0)
    model = VAE(MLPEncoder(), decoder or BernoulliDecoder())
    kwargs.setdefault("stopping", FixedSteps(4))
    return AggressiveTrainer(model, torch.optim.Adam(model.encoder.parameters(), lr=1e-2),
                             torch.optim.Adam(model.decoder.parameters(), lr=1e-2), window=3,
                             max_inner_steps=9, engine=Engine(precision), **kwargs)


def data():
    return DataLoader(binary_data(48), batch_size=8)


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_the_decoder_runs_autocast_while_z_stays_float32(precision, dtype):
    decoder = DtypeSpyDecoder()
    t = trainer(precision, decoder)
    t.fit(data(), epochs=2)  # 4 aggressive updates, then basic ones
    assert decoder.seen and all(seen == (torch.float32, dtype) for seen in decoder.seen)
    assert all(p.dtype == torch.float32 for p in t.model.parameters())  # weights stay fp32
    assert all(torch.isfinite(p).all() for p in t.model.parameters())


def test_fp32_does_not_autocast():
    decoder = DtypeSpyDecoder()
    trainer("fp32", decoder).fit(data(), epochs=1)
    assert all(seen == (torch.float32, torch.float32) for seen in decoder.seen)


def test_z_log_q_prior_and_kl_are_float32_under_autocast():
    mean, logvar = torch.zeros(3, 2, dtype=torch.bfloat16), torch.zeros(3, 2, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = VAE.reparameterize(mean, logvar, 4)
        log_q = VAE.log_q_given(z, mean, logvar)
        prior = VAE.log_prior(z)
    assert z.dtype == log_q.dtype == prior.dtype == torch.float32
    # float64 stays float64 (never narrowed)
    assert VAE.reparameterize(mean.double(), logvar.double()).dtype == torch.float64


def test_an_fp16_overflow_skips_steps_instead_of_raising_and_lowers_the_scale():
    t = trainer("fp16", on_nonfinite="raise")
    t.algorithm.engine.precision.scalers["encoder"] = torch.amp.GradScaler("cpu", init_scale=2.0 ** 40)
    history = t.fit(data(), epochs=1)  # fp16 grads scaled by 2^40 overflow: skipped, not raised
    assert history[0].skipped_inner_steps > 0 and history[0].skipped_batches == 0
    assert t.algorithm.engine.precision.scalers["encoder"].get_scale() < 2.0 ** 40
    assert t.algorithm.engine.precision.scalers["decoder"].get_scale() == 2.0 ** 16  # its own scale, untouched
    assert all(torch.isfinite(p).all() for p in t.model.parameters())


def test_a_nan_loss_still_raises_in_bf16():
    class NaNDecoder(BernoulliDecoder):
        def log_prob(self, x, z):
            return super().log_prob(x, z) * float("nan")

    from aggressive_vi import NonFiniteError

    t = trainer("bf16", NaNDecoder())
    before = [p.detach().clone() for p in t.model.parameters()]
    with pytest.raises(NonFiniteError, match="inner"):
        t.fit(data(), epochs=1)
    assert all(torch.equal(p, q) for p, q in zip(t.model.parameters(), before))


def test_grad_scaler_state_travels_in_the_state_dict():
    t = trainer("fp16")
    t.algorithm.engine.precision.scalers["encoder"] = torch.amp.GradScaler("cpu", init_scale=2.0 ** 30)
    t.fit(data(), epochs=1)
    saved = t.state_dict()
    fresh = trainer("fp16")
    fresh.load_state_dict(saved)
    assert fresh.algorithm.engine.precision.scalers["encoder"].get_scale() == t.algorithm.engine.precision.scalers["encoder"].get_scale() < 2.0 ** 30
    assert saved["config"]["engine"] == "Engine(precision='fp16', cuda_graph=False)"


def test_bad_precision_names_the_argument():
    with pytest.raises(ValueError, match="precision"):
        trainer("fp8")


PER_OPERATOR = [(torch.backends.cuda.matmul, "fp32_precision"), (torch.backends.cudnn.conv, "fp32_precision"),
                (torch.backends.cudnn.rnn, "fp32_precision")]


def settings():
    return [getattr(obj, name) for obj, name in PER_OPERATOR]


def test_allow_tf32_sets_and_restores_each_operators_setting_even_after_an_error():
    from aggressive_vi import allow_tf32

    before = settings()
    with allow_tf32():
        assert settings() == ["tf32"] * 3
        with allow_tf32(False):
            assert settings() == ["ieee"] * 3  # full fp32 everywhere, cuDNN RNNs included
        assert settings() == ["tf32"] * 3
    with pytest.raises(KeyError):
        with allow_tf32():
            raise KeyError("inside")
    assert settings() == before


def test_allow_tf32_keeps_settings_made_with_the_per_operator_api():
    """Once a user has set one operator with torch's per-operator API, the legacy flags raise
    RuntimeError on read (mixed APIs), and restoring through them overwrote the others."""
    from aggressive_vi import allow_tf32

    before = settings()
    try:
        torch.backends.cudnn.rnn.fp32_precision = "ieee"
        mine = settings()
        with allow_tf32():
            assert settings() == ["tf32"] * 3
        assert settings() == mine
    finally:
        for (obj, name), value in zip(PER_OPERATOR, before):
            setattr(obj, name, value)
