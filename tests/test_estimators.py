"""Estimators against closed forms.

The linear-Gaussian model (p(z) = N(0, I), p(x|z) = N(Wz + b, s^2 I), W with orthogonal columns) has
an exact log p(x) and an exact diagonal Gaussian posterior. Statistical assertions use fixed seeds and
tolerances of several standard errors computed from the estimator's own variance, as stated at each.
"""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from aggressive_vi import VAE, estimators
from aggressive_vi.estimators import batch_mutual_information
from conftest import AffineEncoder, BernoulliDecoder, MLPEncoder, binary_data, linear_gaussian


def exact_vae(decoder):
    A, c, var = decoder.exact_posterior()
    return VAE(AffineEncoder(A, c, var.log()), decoder)


def sample_data(decoder, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    k = decoder.W.shape[1]
    z = torch.randn(n, k, generator=g, dtype=torch.float64)
    noise = torch.randn(n, decoder.W.shape[0], generator=g, dtype=torch.float64)
    return (z @ decoder.W.T + decoder.b + decoder.s * noise).detach()


@settings(max_examples=15, deadline=None)
@given(
    data_dim=st.integers(2, 6),
    latent_dim=st.integers(1, 3),
    s=st.floats(0.3, 2.0),
    n_samples=st.integers(1, 40),
    chunk=st.integers(1, 50),
    batch=st.integers(1, 7),
)
def test_iw_nll_is_exact_with_the_true_posterior(data_dim, latent_dim, s, n_samples, chunk, batch):
    latent_dim = min(latent_dim, data_dim)
    decoder = linear_gaussian(data_dim, latent_dim, s)
    vae = exact_vae(decoder)
    x = sample_data(decoder, 11)
    loader = DataLoader(TensorDataset(x), batch_size=batch)
    result = estimators.iw_nll(vae, loader, n_samples=n_samples, chunk_size=chunk)
    exact = -decoder.exact_log_marginal(x).mean().item()
    # with q = p(z|x) every importance weight equals p(x): exact for any K up to float64 rounding
    assert result.nll == pytest.approx(exact, abs=1e-8)
    assert result.n_examples == 11
    per_example = estimators.iw_log_likelihood(vae, x, n_samples=n_samples, chunk_size=chunk)
    torch.testing.assert_close(per_example, decoder.exact_log_marginal(x).detach())


def test_iw_nll_with_a_worse_encoder_is_above_the_truth_and_decreases_with_k():
    torch.manual_seed(0)
    decoder = linear_gaussian(4, 2, 0.5)
    A, c, var = decoder.exact_posterior()
    # a lagging encoder: shrunken mean and too wide a variance
    vae = VAE(AffineEncoder(0.5 * A, c, (4 * var).log()), decoder)
    x = sample_data(decoder, 400)
    exact = -decoder.exact_log_marginal(x).detach()
    with torch.no_grad():
        est = {k: -estimators.iw_log_likelihood(vae, x, n_samples=k, chunk_size=64) for k in (1, 10, 200)}
    # Paired comparisons on the same x: the mean gap must exceed 4 standard errors of the per-example
    # differences (the estimator's own spread), so the test fails if the ordering were noise.
    for hi, lo in ((1, 10), (10, 200)):
        d = est[hi] - est[lo]
        assert d.mean() > 4 * d.std() / math.sqrt(len(d)), (hi, lo, d.mean(), d.std())
    for k in (1, 10):
        d = est[k] - exact
        assert d.mean() > 4 * d.std() / math.sqrt(len(d)), (k, d.mean(), d.std())
    # K=200 is still above the truth on average but by less than its noise here: check only that it
    # is within 4 standard errors above or below
    d = est[200] - exact
    assert d.mean() > -4 * d.std() / math.sqrt(len(d))
    # and the loader-level function agrees with the per-batch one in expectation
    loader = DataLoader(TensorDataset(x), batch_size=64)
    torch.manual_seed(1)
    res = estimators.iw_nll(vae, loader, n_samples=200, chunk_size=64)
    assert res.nll == pytest.approx(est[200].mean().item(), abs=4 * est[200].std().item() / math.sqrt(400))


def test_iw_nll_token_counts_give_perplexity():
    decoder = linear_gaussian(3, 1, 1.0)
    vae = exact_vae(decoder)
    x = sample_data(decoder, 10)
    res = estimators.iw_nll(vae, DataLoader(TensorDataset(x), batch_size=4), n_samples=3,
                            count_tokens=lambda batch: 2 * batch.shape[0])
    assert res.n_tokens == 20
    assert res.perplexity == pytest.approx(math.exp(res.nll * 10 / 20))
    assert estimators.iw_nll(vae, [x], n_samples=2).perplexity is None


def test_mi_of_identical_posteriors_is_zero():
    torch.manual_seed(0)
    n, d = 4000, 3
    mean = torch.full((n, d), 0.7).double()
    logvar = torch.full((n, d), -0.4).double()
    mi = batch_mutual_information(mean, logvar).item()
    # Each example contributes 0.5 * (chi2_d - d): variance d / 2, so the mean over n has standard
    # error sqrt(d / (2 n)); allow 5 of them.
    assert abs(mi) < 5 * math.sqrt(d / (2 * n))


@pytest.mark.parametrize("batch", [8, 50])
def test_mi_of_far_apart_posteriors_is_log_batch_size(batch):
    torch.manual_seed(0)
    d, n_batches = 2, 40
    values = []
    for _ in range(n_batches):
        mean = torch.randn(batch, d).double() * 1e3
        logvar = torch.full((batch, d), -2.0).double()
        values.append(batch_mutual_information(mean, logvar).item())
    # mixture term is log(1/B) q(z_i|x_i); the rest is the zero-mean chi-square term above
    se = math.sqrt(d / (2 * batch * n_batches))
    assert sum(values) / n_batches == pytest.approx(math.log(batch), abs=5 * se)


def test_mutual_information_weights_batches_by_size():
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    x = binary_data(30)
    torch.manual_seed(3)
    got = estimators.mutual_information(vae, [x[:20], x[20:]])  # a DataLoader would draw from the RNG
    torch.manual_seed(3)
    with torch.no_grad():
        a = batch_mutual_information(*vae.encode(x[:20])).item()
        b = batch_mutual_information(*vae.encode(x[20:])).item()
    assert got == pytest.approx((20 * a + 10 * b) / 30, rel=1e-5)


class FixedMeans(nn.Module):
    """Posterior mean = the input itself (x: [batch, latent_dim]), fixed log-variance."""

    def forward(self, x):
        return x, torch.zeros_like(x)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 60), d=st.integers(1, 5), batch=st.integers(1, 16), seed=st.integers(0, 99))
def test_active_units_are_unbiased_variances_over_the_data(n, d, batch, seed):
    g = torch.Generator().manual_seed(seed)
    scales = torch.rand(d, generator=g) * 0.3
    x = torch.randn(n, d, generator=g) * scales + 5.0
    vae = VAE(FixedMeans(), BernoulliDecoder(data_dim=d, latent_dim=d))
    res = estimators.active_units(vae, DataLoader(x, batch_size=batch), threshold=0.01)
    expected = x.double().var(dim=0, unbiased=True)
    torch.testing.assert_close(res.variances.double(), expected, rtol=1e-4, atol=1e-6)
    assert res.count == int((res.variances > 0.01).sum())
    assert res.variances.shape == (d,)


def test_active_units_counts_dimensions_above_threshold():
    x = torch.zeros(100, 4)
    x[:, 0] = torch.linspace(-1, 1, 100)  # variance ~0.34: active
    x[:, 2] = torch.linspace(-0.05, 0.05, 100)  # variance ~0.0009: inactive
    vae = VAE(FixedMeans(), BernoulliDecoder(data_dim=4, latent_dim=4))
    assert estimators.active_units(vae, [x[:50], x[50:]]).count == 1
    assert estimators.active_units(vae, [x], threshold=1e-4).count == 2


def test_kl_and_elbo_averages():
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    x = binary_data(12)
    loader = DataLoader(x, batch_size=5)
    with torch.no_grad():
        terms = vae.elbo(x)
    assert estimators.kl(vae, loader) == pytest.approx(terms.kl.mean().item(), rel=1e-5)
    est = estimators.elbo(vae, loader, n_samples=2)
    assert est.kl == pytest.approx(terms.kl.mean().item(), rel=1e-5)
    assert est.elbo == pytest.approx(-(est.reconstruction + est.kl))
    assert est.reconstruction > 0


def test_estimators_restore_modes_and_do_not_train():
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    vae.train()
    vae.decoder.eval()
    before = [p.clone() for p in vae.parameters()]
    estimators.summary(vae, [binary_data(8)])
    assert vae.training and vae.encoder.training and not vae.decoder.training
    assert all(torch.equal(a, b) for a, b in zip(before, vae.parameters()))
    assert all(p.grad is None for p in vae.parameters())


def test_estimators_reject_empty_loaders_and_bad_options():
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    with pytest.raises(ValueError, match="loader yielded no batch"):
        estimators.kl(vae, [])
    with pytest.raises(ValueError, match="n_samples must be a positive int; got 0"):
        estimators.iw_nll(vae, [binary_data(2)], n_samples=0)
    with pytest.raises(ValueError, match="terms must be among"):
        estimators.summary(vae, [binary_data(2)], terms=("nll",))
    with pytest.raises(ValueError, match="at least 2 examples"):
        estimators.active_units(vae, [binary_data(1)])
