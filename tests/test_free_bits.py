"""KL thresholding (free bits) as the training objective: ``VAE(..., kl_threshold=FreeBits(nats))``.

The objective: its value and gradient against the closed form (a dimension under its threshold gets no
gradient from the KL term, one above it the ELBO's); the reported terms stay the true ones; every loop
(AggressiveTrainer in both phases under every KL schedule, AggressiveStep in a hand-written loop, the
Lightning callback) trains it; resume checks it; bad input is refused with a clear error.
"""
import itertools
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from aggressive_vi import (VAE, AggressiveStep, AggressiveTrainer, CheckpointError, ConstantKL,
                           CyclicalKLAnnealing, FixedEpochs, FreeBits, LinearKLAnnealing, estimators)
from aggressive_vi.model import gaussian_kl_per_dimension
from conftest import BernoulliDecoder, LinearGaussianDecoder, MLPEncoder, binary_data

LAMBDA = 0.5


class PosteriorTable(nn.Module):
    """q(z|x) given directly: ``mean, logvar: [batch, latent_dim]`` parameters, whatever x is."""

    def __init__(self, mean, logvar):
        super().__init__()
        self.mean = nn.Parameter(mean.clone())
        self.logvar = nn.Parameter(logvar.clone())

    def forward(self, x):
        return self.mean, self.logvar


class IgnoresZ(nn.Module):
    """log p(x|z) that does not depend on z: no reconstruction gradient reaches the encoder."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))

    def log_prob(self, x, z):
        return -(x - self.bias).pow(2).sum(-1, keepdim=True).expand(z.shape[:2]) + 0.0 * z.sum(-1)


def posterior(batch=8):
    """Dimensions 0 and 1 far above LAMBDA in batch-averaged KL, 2 and 3 far below it."""
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(batch, 4, generator=g) * torch.tensor([2.0, 1.5, 0.05, 0.1])
    logvar = torch.randn(batch, 4, generator=g) * 0.1 + torch.tensor([-1.0, -0.5, 0.0, 0.05])
    kl_mean = gaussian_kl_per_dimension(mean, logvar).mean(0)
    assert (kl_mean[:2] > 2 * LAMBDA).all() and (kl_mean[2:] < LAMBDA / 10).all()
    return mean, logvar


def gradients(vae, x, seed=1):
    torch.manual_seed(seed)  # the same z noise for every model compared
    vae.zero_grad()
    vae.elbo(x).loss.mean().backward()
    return vae.encoder.mean.grad.clone(), vae.encoder.logvar.grad.clone()


def test_the_loss_is_the_thresholded_batch_average_per_dimension_and_in_total():
    kl = gaussian_kl_per_dimension(*posterior())
    expected = torch.clamp(kl.mean(0), min=LAMBDA).sum()
    assert FreeBits(LAMBDA)(kl).shape == (8,)
    torch.testing.assert_close(FreeBits(LAMBDA)(kl).mean(), expected)
    total = kl.sum(-1)
    for threshold in (0.1, 100.0):  # below and above the batch-averaged total
        torch.testing.assert_close(FreeBits(threshold, per_dimension=False)(kl).mean(),
                                   torch.clamp(total.mean(), min=threshold))
        torch.testing.assert_close(FreeBits(threshold, per_dimension=False)(total),
                                   FreeBits(threshold, per_dimension=False)(kl))
    assert torch.equal(FreeBits(0.0)(kl), kl.sum(-1))  # lambda 0: the KL itself (every KL_d is > 0 here)


def test_a_dimension_under_its_threshold_gets_no_gradient_and_one_above_it_the_elbos():
    mean, logvar = posterior()
    x = binary_data(8, data_dim=3)
    plain = VAE(PosteriorTable(mean, logvar), IgnoresZ())
    thresholded = VAE(PosteriorTable(mean, logvar), IgnoresZ(), kl_threshold=FreeBits(LAMBDA))
    for got, elbo in zip(gradients(thresholded, x), gradients(plain, x)):
        assert torch.equal(got[:, 2:], torch.zeros_like(got[:, 2:]))  # under: zero
        assert elbo[:, 2:].abs().max() > 0  # where the ELBO's is not
        torch.testing.assert_close(got[:, :2], elbo[:, :2], rtol=0, atol=0)  # above: the ELBO's


def test_with_a_decoder_that_reads_z_only_the_kl_gradient_of_the_dimensions_under_it_is_removed():
    mean, logvar = posterior()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(8, 3, generator=g)
    decoder = LinearGaussianDecoder(torch.randn(3, 4, generator=g), torch.zeros(3), 1.0)
    plain = VAE(PosteriorTable(mean, logvar), decoder)
    thresholded = VAE(PosteriorTable(mean, logvar), decoder, kl_threshold=FreeBits(LAMBDA))
    (gm, gl), (em, el) = gradients(thresholded, x), gradients(plain, x)
    batch = mean.shape[0]
    kl_grad_mean, kl_grad_logvar = mean / batch, 0.5 * (logvar.exp() - 1) / batch  # of mean_b KL_d
    torch.testing.assert_close(gm[:, :2], em[:, :2])
    torch.testing.assert_close(gl[:, :2], el[:, :2])
    torch.testing.assert_close(gm[:, 2:], em[:, 2:] - kl_grad_mean[:, 2:])
    torch.testing.assert_close(gl[:, 2:], el[:, 2:] - kl_grad_logvar[:, 2:])


def test_the_reported_terms_are_the_true_ones_and_a_tensor_kl_weight_works():
    torch.manual_seed(0)
    encoder, decoder = MLPEncoder(latent_dim=3), BernoulliDecoder(latent_dim=3)
    plain, thresholded = VAE(encoder, decoder), VAE(encoder, decoder, kl_threshold=FreeBits(5.0))
    x = binary_data(16)
    torch.manual_seed(1)
    true = plain.elbo(x, kl_weight=0.3)
    torch.manual_seed(1)
    got = thresholded.elbo(x, kl_weight=0.3)
    assert torch.equal(got.reconstruction, true.reconstruction) and torch.equal(got.kl, true.kl)
    torch.testing.assert_close(got.loss.mean(), true.reconstruction.mean() + 0.3 * 3 * 5.0)  # every KL_d < 5
    torch.manual_seed(1)
    as_tensor = thresholded.elbo(x, kl_weight=torch.tensor(0.3))  # what the captured inner step passes
    torch.testing.assert_close(as_tensor.loss, got.loss)
    loader = DataLoader(binary_data(32, seed=3), batch_size=8)
    torch.manual_seed(2)
    a = estimators.summary(thresholded, loader)
    torch.manual_seed(2)
    b = estimators.summary(plain, loader)
    assert {k: v for k, v in a.items() if k != "au_detail"} == {k: v for k, v in b.items() if k != "au_detail"}
    torch.manual_seed(3)
    iw_a = estimators.iw_nll(thresholded, loader, n_samples=8).nll
    torch.manual_seed(3)
    assert iw_a == estimators.iw_nll(plain, loader, n_samples=8).nll


def _trainer(vae, schedule, aggressive, lr=0.05):
    return AggressiveTrainer(vae, torch.optim.Adam(vae.encoder.parameters(), lr=lr),
                             torch.optim.Adam(vae.decoder.parameters(), lr=lr), stopping=FixedEpochs(1),
                             kl_schedule=schedule, aggressive=aggressive, window=2, max_inner_steps=6)


SCHEDULES = [ConstantKL(1.0), ConstantKL(0.4), LinearKLAnnealing(0.1, 1.0), CyclicalKLAnnealing(1.0, 0.5)]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("aggressive", [True, False], ids=["aggressive-then-basic", "basic"])
def test_the_trainer_trains_the_thresholded_objective_in_both_phases_under_every_schedule(schedule, aggressive):
    """A decoder that ignores z leaves the KL as the encoder's only loss: under a threshold above
    every dimension's KL the encoder gets no gradient at all and stays where it started, through the
    aggressive phase and basic training; without the threshold it moves."""
    train = DataLoader(binary_data(32), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    val = DataLoader(binary_data(16, seed=1), batch_size=8)
    moved = {}
    for threshold in (None, FreeBits(100.0)):
        torch.manual_seed(0)
        vae = VAE(MLPEncoder(), IgnoresZ(), kl_threshold=threshold)
        start = [p.detach().clone() for p in vae.encoder.parameters()]
        history = _trainer(vae, schedule, aggressive).fit(train, val_loader=val, epochs=2)
        assert [r.aggressive for r in history] == ([True, False] if aggressive else [False, False])
        moved[threshold] = any(not torch.equal(a, b) for a, b in zip(start, vae.encoder.parameters()))
        if threshold is not None:  # the reported KL is the true one
            val_kl = history.records[-1].val_kl
            assert val_kl == pytest.approx(estimators.kl(vae, val), rel=1e-6) and val_kl < 100
    assert moved == {None: True, FreeBits(100.0): False}


def test_the_trainers_validation_record_is_the_true_elbo():
    train = DataLoader(binary_data(32), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    val = DataLoader(binary_data(16, seed=1), batch_size=8)
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), BernoulliDecoder(), kl_threshold=FreeBits(LAMBDA))
    trainer = _trainer(vae, LinearKLAnnealing(0.1, 1.0), True)
    torch.manual_seed(5)
    record = trainer.fit(train, val_loader=val, epochs=1).records[-1]
    twin = VAE(vae.encoder, vae.decoder)  # the same networks, no threshold
    torch.manual_seed(5)
    trainer.validation.reset()
    for x in val:
        trainer.validation.update(x)
    ours = trainer.validation.compute()
    torch.manual_seed(5)
    theirs = estimators.summary(twin, val)
    assert ours["val_elbo"] == pytest.approx(theirs["elbo"], rel=1e-6)
    assert ours["val_kl"] == pytest.approx(theirs["kl"], rel=1e-6) == pytest.approx(record.val_kl, rel=1e-6)


def test_aggressive_step_in_a_hand_written_loop():
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), BernoulliDecoder(), kl_threshold=FreeBits(LAMBDA))
    step = AggressiveStep(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.1),
                          torch.optim.SGD(vae.decoder.parameters(), lr=0.1),
                          stopping=FixedEpochs(1), kl_schedule=LinearKLAnnealing(0.2, 1.0), window=2,
                          max_inner_steps=6)
    train = DataLoader(binary_data(32), batch_size=8)
    fresh = itertools.cycle(train)
    for epoch in range(2):
        for x in train:
            out = step(x, lambda: next(fresh), epoch=epoch, steps_per_epoch=len(train))
            # the update's loss is the thresholded objective of the encoder it used (unchanged by a
            # decoder update; a joint update moved it, so check the aggressive phase's)
            if out.aggressive:
                with torch.no_grad():
                    per_dimension = gaussian_kl_per_dimension(*vae.encode(x))
                torch.testing.assert_close(out.terms.kl, per_dimension.sum(-1))
                torch.testing.assert_close(out.terms.loss - out.terms.reconstruction,
                                           out.kl_weight * FreeBits(LAMBDA)(per_dimension))
        step.end_epoch(epoch, {})
    assert step.left_aggressive_at == len(train) and step.config()["kl_threshold"] == repr(FreeBits(LAMBDA))

    frozen = VAE(MLPEncoder(), IgnoresZ(), kl_threshold=FreeBits(100.0))
    start = [p.detach().clone() for p in frozen.encoder.parameters()]
    step = AggressiveStep(frozen, torch.optim.SGD(frozen.encoder.parameters(), lr=0.1),
                          torch.optim.SGD(frozen.decoder.parameters(), lr=0.1), window=2, max_inner_steps=6)
    x = binary_data(8)
    out = step(x, lambda: x)
    assert out.inner_steps >= 4  # the catch-up loop ran on the thresholded loss, with nothing to learn
    assert all(torch.equal(a, b) for a, b in zip(start, frozen.encoder.parameters()))


def test_resume_refuses_another_threshold(tmp_path):
    def trainer(threshold):
        torch.manual_seed(0)
        vae = VAE(MLPEncoder(), BernoulliDecoder(), kl_threshold=threshold)
        return _trainer(vae, ConstantKL(1.0), True)

    train = DataLoader(binary_data(16), batch_size=8)
    saved = trainer(FreeBits(LAMBDA))
    saved.fit(train, val_loader=train, epochs=1)
    state = saved.state_dict()
    trainer(FreeBits(LAMBDA)).load_state_dict(state)  # the same objective: fine
    for other in (FreeBits(0.25), FreeBits(LAMBDA, per_dimension=False), None):
        with pytest.raises(CheckpointError, match=r"kl_threshold: saved 'FreeBits\(nats=0.5, per_dimension=True\)'"):
            trainer(other).load_state_dict(state)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(FreeBits(0.25)).load_state_dict(state, strict=False)
    assert any("kl_threshold" in str(w.message) for w in caught)


@pytest.mark.parametrize("nats", [-0.1, float("nan"), float("inf"), True, "0.5", None])
def test_a_bad_threshold_is_refused(nats):
    with pytest.raises(ValueError, match=r"FreeBits\(nats=...\) must be a finite number >= 0"):
        FreeBits(nats)


def test_bad_input_names_what_was_wrong():
    with pytest.raises(ValueError, match="per_dimension"):
        FreeBits(0.5, per_dimension="yes")
    total_only = torch.rand(8)  # a model that reports the total KL alone
    with pytest.raises(ValueError, match=r"needs the KL per latent dimension.*per_dimension=False"):
        FreeBits(0.5)(total_only)
    assert FreeBits(0.5, per_dimension=False)(total_only).shape == (8,)
    with pytest.raises(ValueError, match=r"\[batch, latent_dim\] or \[batch\]"):
        FreeBits(0.5, per_dimension=False)(torch.rand(2, 3, 4))
    with pytest.raises(TypeError, match="kl_threshold must be callable"):
        VAE(MLPEncoder(), BernoulliDecoder(), kl_threshold=0.5)
    vae = VAE(MLPEncoder(), BernoulliDecoder(), kl_threshold=lambda kl: kl)  # forgot to reduce
    with pytest.raises(ValueError, match=r"must return the KL term per example, \[batch\] = \[8\]"):
        vae.elbo(binary_data(8))


def test_lightning_trains_the_same_thresholded_objective_as_the_trainer():
    pl = pytest.importorskip("lightning.pytorch", reason="the lightning extra is not installed")
    from torch.utils.data import DistributedSampler

    from aggressive_vi.lightning import AggressiveVI
    from lightning_models import LitVAE

    def data():
        x = binary_data(64)
        train = DataLoader(x, batch_size=8, sampler=DistributedSampler(x, num_replicas=1, rank=0, seed=3))
        inner = DataLoader(binary_data(64), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(7))
        return train, DataLoader(binary_data(32, seed=1), batch_size=8), inner

    options = dict(window=3, max_inner_steps=9, kl_schedule=LinearKLAnnealing(0.1, 1.0))
    final = {}
    for threshold in (FreeBits(LAMBDA), None):
        torch.manual_seed(0)
        module = LitVAE(stopping=FixedEpochs(1), inner_loader=data()[2], kl_threshold=threshold, **options)
        start = {k: v.clone() for k, v in module.vae.state_dict().items()}
        train, val, _ = data()
        torch.manual_seed(123)
        pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, max_epochs=2,
                   enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                   ).fit(module, train, val)
        final[threshold] = module.vae.state_dict()
    vae = VAE(MLPEncoder(), BernoulliDecoder(), kl_threshold=FreeBits(LAMBDA))
    vae.load_state_dict(start)
    plain = AggressiveTrainer(vae, torch.optim.Adam(vae.encoder.parameters(), lr=1e-2),
                              torch.optim.Adam(vae.decoder.parameters(), lr=1e-2), stopping=FixedEpochs(1),
                              **options)
    train, val, inner = data()
    torch.manual_seed(123)
    plain.fit(train, val_loader=val, epochs=2, inner_loader=inner)
    for name, value in vae.state_dict().items():
        assert torch.equal(final[FreeBits(LAMBDA)][name], value), name
    assert any(not torch.equal(final[None][k], v) for k, v in vae.state_dict().items())

    saved = AggressiveVI(VAE(MLPEncoder(), BernoulliDecoder(), kl_threshold=FreeBits(LAMBDA))).state_dict()
    with pytest.raises(CheckpointError, match="kl_threshold"):
        AggressiveVI(VAE(MLPEncoder(), BernoulliDecoder())).load_state_dict(saved)


def test_every_view_of_the_model_a_phase_trains_keeps_the_threshold():
    from aggressive_vi.distributed import TrainingNetworks

    threshold = FreeBits(LAMBDA)
    wrapped = VAE(nn.DataParallel(MLPEncoder()), BernoulliDecoder(), kl_threshold=threshold)  # as a DDP user's
    nets = TrainingNetworks(wrapped, ddp=False)
    assert nets.synchronised
    assert all(view.kl_threshold is threshold for view in (nets.inner, nets.decoder, nets.joint, nets.plain))


def test_the_captured_inner_step_trains_the_thresholded_objective_bitwise_like_the_eager_one(monkeypatch):
    """The captured inner step reads the KL weight from a device buffer and must neither read the
    host nor bake in a Python value: the thresholded loss reads nothing, and replayed on its static
    buffers (EagerGraphs, the CPU stand-in for CUDA graphs) it trains the same model as the eager step."""
    from aggressive_vi import Engine, FixedSteps
    from aggressive_vi._impl import captured

    def train(cuda_graph):
        torch.manual_seed(0)
        vae = VAE(MLPEncoder(), BernoulliDecoder(), kl_threshold=FreeBits(LAMBDA))
        trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.05, momentum=0.5),
                                    torch.optim.SGD(vae.decoder.parameters(), lr=0.05, momentum=0.5),
                                    stopping=FixedSteps(10 ** 6), window=3, max_inner_steps=12,
                                    engine=Engine(cuda_graph=cuda_graph), kl_schedule=LinearKLAnnealing(0.1, 1.0))
        trainer.fit(DataLoader(binary_data(40), batch_size=8, shuffle=True,
                               generator=torch.Generator().manual_seed(1)), epochs=1)
        return trainer

    from test_host_syncs import HostReads

    vae = VAE(MLPEncoder(), BernoulliDecoder(), kl_threshold=FreeBits(LAMBDA))
    with HostReads().counting() as reads:  # what a graph could not capture
        vae.elbo(binary_data(8), kl_weight=torch.tensor(0.5)).loss.mean().backward()
        FreeBits(LAMBDA, per_dimension=False)(torch.rand(8, 3))
    assert reads.count == 0
    eager = train(False)
    monkeypatch.setattr(captured, "graphs_for", lambda device: captured.EagerGraphs())
    graph = train(True)
    assert graph.algorithm.engine.captured.replays > 0
    assert all(torch.equal(a, b) for a, b in zip(eager.model.parameters(), graph.model.parameters()))
