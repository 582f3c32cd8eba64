"""Encoder/decoder shapes, log_prob batched over samples, sampling and presets."""
import pytest
import torch

from examples.image import PRESETS, PixelCNNDecoder, ResNetEncoder, build_decoder, build_encoder, get_preset
from examples.image.decoder import PAPER_KERNEL_SIZES


def tiny_decoder(latent_dim=3, norm="batch"):
    return PixelCNNDecoder(latent_dim=latent_dim, channels=8, kernel_sizes=(5, 3, 3), norm=norm)


def test_encoder_shapes_and_accepts_both_layouts():
    torch.manual_seed(0)
    enc = ResNetEncoder(latent_dim=5, channels=(8, 8), hidden=16).eval()
    x = torch.bernoulli(torch.full((4, 1, 28, 28), 0.2))
    mean, logvar = enc(x)
    assert mean.shape == logvar.shape == (4, 5)
    mean2, _ = enc(x[:, 0])
    torch.testing.assert_close(mean, mean2)


@pytest.mark.parametrize("bad", [torch.zeros(2, 1, 27, 28), torch.zeros(2, 3, 28, 28), torch.zeros(28, 28)])
def test_encoder_rejects_wrong_shapes(bad):
    with pytest.raises(ValueError, match="x must be"):
        ResNetEncoder(latent_dim=2, channels=(4,), hidden=4)(bad)


def test_log_prob_matches_a_per_sample_loop():
    torch.manual_seed(0)
    dec = tiny_decoder().eval()  # eval: BatchNorm uses running statistics, so batching is exact
    x = torch.bernoulli(torch.full((3, 1, 28, 28), 0.3))
    z = torch.randn(3, 4, 3)
    batched = dec.log_prob(x, z)
    assert batched.shape == (3, 4)
    looped = torch.stack([dec.log_prob(x, z[:, s:s + 1])[:, 0] for s in range(4)], dim=1)
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-3)
    single = torch.stack([torch.stack([dec.log_prob(x[b:b + 1], z[b:b + 1, s:s + 1])[0, 0]
                                       for s in range(4)]) for b in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-3)


def test_log_prob_is_bernoulli_log_likelihood_of_the_logits():
    torch.manual_seed(1)
    dec = tiny_decoder(norm="none")
    x = torch.bernoulli(torch.full((2, 28, 28), 0.5))
    z = torch.randn(2, 2, 3)
    logits = dec.logits(x, z)
    expected = torch.distributions.Bernoulli(logits=logits).log_prob(x.unsqueeze(1).expand_as(logits)).sum((-1, -2))
    torch.testing.assert_close(dec.log_prob(x, z), expected)
    assert (dec.log_prob(x, z) < 0).all()


def test_log_prob_gradients_reach_z():
    dec = tiny_decoder(norm="none")
    z = torch.randn(2, 3, 3, requires_grad=True)
    dec.log_prob(torch.ones(2, 1, 28, 28), z).sum().backward()
    assert z.grad.abs().sum() > 0


@pytest.mark.parametrize("bad_z", [torch.randn(2, 3, 4), torch.randn(3, 1, 3), torch.randn(2, 1, 1, 3)])
def test_log_prob_rejects_wrong_z(bad_z):
    with pytest.raises(ValueError, match="z must be"):
        tiny_decoder().log_prob(torch.zeros(2, 1, 28, 28), bad_z)


def test_sample_is_binary_reproducible_and_greedy_matches_probs():
    torch.manual_seed(0)
    # 12x12 images: 144 forward passes per call instead of 784 (the CLI test samples at 28x28)
    dec = PixelCNNDecoder(latent_dim=3, channels=8, kernel_sizes=(5, 3, 3), image_size=12).eval()
    z = torch.randn(2, 3)
    img1, probs = dec.sample(z, generator=torch.Generator().manual_seed(5))
    img2, _ = dec.sample(z, generator=torch.Generator().manual_seed(5))
    assert img1.shape == probs.shape == (2, 1, 12, 12)
    assert torch.equal(img1, img2) and set(img1.unique().tolist()) <= {0.0, 1.0}
    assert ((probs >= 0) & (probs <= 1)).all()
    greedy, gprobs = dec.sample(z, greedy=True)
    # every greedy pixel is the rounded probability given the pixels before it, which are the final ones
    # (pixels within float noise of 0.5 could round either way and are left out)
    clear = (gprobs - 0.5).abs() > 1e-4
    assert clear.float().mean() > 0.9
    torch.testing.assert_close(greedy[clear], (gprobs >= 0.5).float()[clear])


def test_cropped_rows_give_the_full_image_logits():
    """Sampling computes only the rows a pixel can see (image above, latent maps a few rows below)."""
    torch.manual_seed(4)
    dec = tiny_decoder().eval()
    x = torch.bernoulli(torch.full((2, 1, 28, 28), 0.3))
    maps = dec.z_to_maps(torch.randn(2, 3)).view(2, dec.latent_maps, 28, 28)
    full = dec._net(x, maps)
    for i in (0, 9, 26, 27):
        rows = min(28, i + 1 + dec.lookahead)
        torch.testing.assert_close(dec._net(x[:, :, :rows], maps[:, :, :rows])[:, :, :i + 1], full[:, :, :i + 1])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_and_run(name):
    p = get_preset(name)
    enc, dec = build_encoder(p).eval(), build_decoder(p).eval()
    x = torch.bernoulli(torch.full((2, 1, 28, 28), 0.2))
    mean, logvar = enc(x)
    assert mean.shape == (2, p.latent_dim)
    assert dec.log_prob(x, mean.unsqueeze(1).expand(2, 2, -1)).shape == (2, 2)


def test_paper_preset_matches_the_paper():
    p = get_preset("paper")
    assert p.latent_dim == 32 and p.encoder_channels == (64, 64, 64) and p.encoder_hidden == 512
    assert p.decoder_kernel_sizes == PAPER_KERNEL_SIZES and len(PAPER_KERNEL_SIZES) == 13
    dec = build_decoder(p)
    assert len(dec.stack.blocks) == 12 and len(dec.stack.skips) == 11 and p.batch_size == 50


def test_unknown_preset_lists_choices():
    with pytest.raises(ValueError, match="cpu"):
        get_preset("huge")
