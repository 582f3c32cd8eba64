"""VAE: the ELBO terms, densities and the shape checks on user modules."""

import pytest
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from aggressive_vi import VAE
from aggressive_vi.model import as_vae
from conftest import BernoulliDecoder, MLPEncoder, binary_data


def test_log_q_and_kl_match_torch_distributions(mlp_pair):
    vae = VAE(*mlp_pair)
    x = binary_data(5)
    mean, logvar = vae.encode(x)
    z = vae.sample_posterior(x, n_samples=7)
    assert z.shape == (5, 7, 2)
    q = Normal(mean.unsqueeze(1), (0.5 * logvar).exp().unsqueeze(1))
    torch.testing.assert_close(vae.log_q(z, x), q.log_prob(z).sum(-1))
    torch.testing.assert_close(vae.log_prior(z), Normal(0.0, 1.0).log_prob(z).sum(-1))
    terms = vae.elbo(x, kl_weight=0.3, n_samples=3)
    expected_kl = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(terms.kl, expected_kl)
    torch.testing.assert_close(terms.loss, terms.reconstruction + 0.3 * terms.kl)
    assert terms.loss.shape == (5,)


def test_log_joint_is_likelihood_plus_prior(mlp_pair):
    vae = VAE(*mlp_pair)
    x = binary_data(4)
    z = torch.randn(4, 3, 2)
    torch.testing.assert_close(vae.log_joint(x, z), vae.decoder.log_prob(x, z) + vae.log_prior(z))


def test_reconstruction_averages_samples(mlp_pair):
    vae = VAE(*mlp_pair)
    x = binary_data(4)
    torch.manual_seed(1)
    terms = vae.elbo(x, n_samples=5)
    torch.manual_seed(1)
    mean, logvar = vae.encode(x)
    z = vae.reparameterize(mean, logvar, 5)
    torch.testing.assert_close(terms.reconstruction, -vae.decoder.log_prob(x, z).mean(1))


class OneTensorEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 2)

    def forward(self, x):
        return self.lin(x)


class MismatchedEncoder(OneTensorEncoder):
    def forward(self, x):
        return self.lin(x), self.lin(x)[:, :1]


class WrongShapeDecoder(BernoulliDecoder):
    def log_prob(self, x, z):
        return super().log_prob(x, z).sum(1)  # [batch] instead of [batch, n_samples]


def test_encoder_returning_one_tensor_is_a_type_error():
    vae = VAE(OneTensorEncoder(), BernoulliDecoder())
    with pytest.raises(TypeError, match=r"encoder\(x\) must return a tuple \(mean, logvar\).*Tensor of shape \(3, 2\)"):
        vae.elbo(binary_data(3))


def test_mismatched_mean_and_logvar_shapes():
    vae = VAE(MismatchedEncoder(), BernoulliDecoder())
    with pytest.raises(ValueError, match=r"mean \(3, 2\), logvar \(3, 1\)"):
        vae.encode(binary_data(3))


def test_encoder_batch_size_must_match_input():
    class Pooling(OneTensorEncoder):
        def forward(self, x):
            h = self.lin(x).mean(0, keepdim=True)
            return h, h

    with pytest.raises(ValueError, match=r"batch size 3; expected \[3, latent_dim\]"):
        VAE(Pooling(), BernoulliDecoder()).encode(binary_data(3))


def test_decoder_wrong_shape():
    vae = VAE(MLPEncoder(), WrongShapeDecoder())
    with pytest.raises(ValueError, match=r"decoder.log_prob\(x, z\) must return .*\[3, 1\].*Tensor of shape \(3,\)"):
        vae.elbo(binary_data(3))


def test_decoder_without_log_prob_and_non_modules():
    with pytest.raises(TypeError, match="log_prob"):
        VAE(MLPEncoder(), nn.Linear(2, 6))
    with pytest.raises(TypeError, match="encoder must be a torch.nn.Module"):
        VAE(lambda x: x, BernoulliDecoder())


def test_as_vae_accepts_any_module_with_encoder_and_decoder(mlp_pair):
    holder = nn.Module()
    holder.encoder, holder.decoder = mlp_pair
    vae = as_vae(holder)
    assert vae.encoder is holder.encoder and vae.decoder is holder.decoder
    with pytest.raises(TypeError, match="module with .encoder and .decoder"):
        as_vae(nn.Linear(2, 2))
