"""Causality of the masked convolutions and of the whole PixelCNN decoder."""
import pytest
import torch

from examples.image.decoder import PixelCNNDecoder
from examples.image.masked import MaskedConv2d, MaskedStack, causal_mask

SIZE = 28


def test_causal_mask_a_and_b():
    a, b = causal_mask(5, "A"), causal_mask(5, "B")
    assert a[2, 2] == 0 and b[2, 2] == 1  # centre hidden only by A
    assert a[:2].all() and b[:2].all()  # rows above fully visible
    assert a[2, :2].all() and not a[2, 3:].any() and not b[2, 3:].any()  # left visible, right hidden
    assert not a[3:].any() and not b[3:].any()  # rows below hidden
    assert int(a.sum()) == 12 and int(b.sum()) == 13


@pytest.mark.parametrize("bad", [(4, "A"), (3, "C")])
def test_causal_mask_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        causal_mask(*bad)


def _dependency_map(fn, x, i, j):
    """|d out[i, j] / d x| over all input pixels: which inputs the output at (i, j) sees."""
    x = x.clone().requires_grad_(True)
    out = fn(x)
    out[..., i, j].sum().backward()
    return x.grad.abs().sum(dim=(0, 1))  # [H, W]


def _later_or_same(i, j, size=SIZE):
    """Boolean [H, W] mask of pixels (i, j) and after in raster order."""
    order = torch.arange(size * size).view(size, size)
    return order >= i * size + j


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_masked_conv_does_not_see_the_future(mask_type):
    torch.manual_seed(0)
    conv = MaskedConv2d(mask_type, 2, 3, 5)
    x = torch.randn(2, 2, 9, 9)
    for (i, j) in [(0, 0), (4, 4), (4, 0), (8, 8)]:
        grad = _dependency_map(conv, x, i, j)
        later = _later_or_same(i, j, 9)
        if mask_type == "B":
            later[i, j] = False  # B sees the centre
        assert grad[later].sum() == 0
        if (i, j) != (0, 0) or mask_type == "B":
            assert grad[~later].sum() > 0  # and it does see something


def test_unmasked_channels_see_everything_in_the_kernel():
    conv = MaskedConv2d("A", 2, 1, 3, masked_channels=1)
    assert conv.mask[0, 0].sum() == 4 and conv.mask[0, 1].sum() == 9


def test_masked_weights_get_no_gradient():
    conv = MaskedConv2d("A", 1, 1, 3)
    conv(torch.randn(1, 1, 5, 5)).sum().backward()
    assert (conv.weight.grad * (1 - conv.mask)).abs().max() == 0


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_stack_output_at_a_pixel_ignores_that_pixel_and_later_ones(norm):
    torch.manual_seed(1)
    stack = MaskedStack(1, 8, (5, 3, 3, 3, 3), masked_channels=1, norm=norm)
    stack.train(norm == "none")  # BatchNorm's batch statistics pool all pixels: check in eval mode
    x = torch.bernoulli(torch.full((3, 1, SIZE, SIZE), 0.5))
    for (i, j) in [(0, 0), (0, 27), (13, 14), (27, 27)]:
        grad = _dependency_map(stack, x, i, j)
        assert grad[_later_or_same(i, j)].max() == 0, (i, j)
        if (i, j) != (0, 0):
            assert grad[~_later_or_same(i, j)].sum() > 0, (i, j)


def test_decoder_logits_causal_by_perturbation():
    """Flip pixels at and after (i, j): logits at (i, j) and before do not move; earlier flips do."""
    torch.manual_seed(2)
    dec = PixelCNNDecoder(latent_dim=4, channels=16, kernel_sizes=(7, 5, 3, 3), norm="batch").eval()
    x = torch.bernoulli(torch.full((2, 1, SIZE, SIZE), 0.3))
    z = torch.randn(2, 1, 4)
    base = dec.logits(x, z)
    flat = torch.arange(SIZE * SIZE).view(SIZE, SIZE)
    for k in [0, 100, 400, 783]:
        i, j = divmod(k, SIZE)
        flipped = x.clone()
        flipped[:, 0][:, flat >= k] = 1 - flipped[:, 0][:, flat >= k]
        out = dec.logits(flipped, z)
        assert torch.equal(out[..., flat <= k], base[..., flat <= k]), k
        if k < 783:
            assert not torch.allclose(out[..., flat > k], base[..., flat > k])


def test_decoder_depends_on_z():
    torch.manual_seed(3)
    dec = PixelCNNDecoder(latent_dim=4, channels=8, kernel_sizes=(3, 3, 3)).eval()
    x = torch.zeros(1, 1, SIZE, SIZE)
    a = dec.logits(x, torch.zeros(1, 1, 4))
    b = dec.logits(x, torch.ones(1, 1, 4))
    assert (a - b).abs()[..., 0, 0].max() > 0  # even the first pixel sees z
