"""The paper's PixelCNN decoder p(x|z) over binary 28x28 images, with Bernoulli logits."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..devices import check_generator
from .masked import MaskedStack, _norm, init_conv_
from .shapes import as_image_batch

__all__ = ["PixelCNNDecoder", "PAPER_KERNEL_SIZES"]

#: Kernel sizes of the 13 blocks of the paper's ("large") PixelCNN decoder.
PAPER_KERNEL_SIZES: Tuple[int, ...] = (7, 7, 7, 7, 7, 5, 5, 5, 5, 3, 3, 3, 3)


class PixelCNNDecoder(nn.Module):
    """Autoregressive decoder: z -> ``latent_maps`` feature maps, concatenated to the image, masked stack.

    A linear layer maps z to ``latent_maps`` maps of ``H x W`` (4 in the paper); they are concatenated
    to the image as extra input channels that the first (mask-A) layer sees unmasked, so every pixel's
    logit depends on z and on the pixels before it in raster order, never on itself or later pixels.
    A head of 1x1 convolutions gives one Bernoulli logit per pixel.

    Args:
        latent_dim: size of z.
        channels: width of the masked stack (64 in the paper).
        kernel_sizes: one kernel size per block (13 blocks in the paper: :data:`PAPER_KERNEL_SIZES`).
        latent_maps: number of feature maps z is mapped to.
        norm: ``"batch"`` (the paper's BatchNorm) or ``"none"``. In training mode BatchNorm's
            statistics are pooled over the batch and all pixels, so the causal property holds
            exactly only in eval mode (or with ``norm="none"``); the leak is O(1 / (batch * H * W)).
        image_size: H = W (28).
    """

    def __init__(self, latent_dim: int = 32, channels: int = 64,
                 kernel_sizes: Sequence[int] = PAPER_KERNEL_SIZES, latent_maps: int = 4,
                 norm: str = "batch", image_size: int = 28) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if latent_maps < 1:
            raise ValueError(f"latent_maps must be >= 1, got {latent_maps}")
        self.latent_dim = latent_dim
        self.latent_maps = latent_maps
        self.image_size = image_size
        self.z_to_maps = nn.Linear(latent_dim, latent_maps * image_size * image_size)
        self.lookahead = int(kernel_sizes[0]) // 2  # rows of latent maps below a pixel that it sees
        self.stack = MaskedStack(1 + latent_maps, channels, kernel_sizes, masked_channels=1, norm=norm)
        self.head = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False), _norm(channels, norm), nn.ELU(),
            nn.Conv2d(channels, 1, 1, bias=False),
        )
        # As the paper's decoder: He initialisation (by fan-out) in the masked stack only; the head's
        # two 1x1 convolutions keep PyTorch's default initialisation and have no bias. (He init of
        # the last 1x1 convolution, whose fan-out is 1, gives weights of std 1.4 and confident random
        # logits: at the side-by-side sizes the initial -ELBO was 2-2.6x the paper's,
        # benchmarks/results/image_parity/README.md.)
        init_conv_(self.stack)
        nn.init.xavier_uniform_(self.z_to_maps.weight)
        nn.init.zeros_(self.z_to_maps.bias)

    # -- core -------------------------------------------------------------------------------------
    def _check_z(self, z: torch.Tensor, batch: Optional[int]) -> torch.Tensor:
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
        if z.dim() == 2:
            z = z.unsqueeze(1)
        if z.dim() != 3 or z.shape[-1] != self.latent_dim or (batch is not None and z.shape[0] != batch):
            want = "batch" if batch is None else str(batch)
            raise ValueError(f"z must be [{want}, n_samples, {self.latent_dim}] (or [{want}, "
                             f"{self.latent_dim}]), got {list(z.shape)}")
        return z

    def logits(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits of every pixel given the pixels before it and z.

        Args:
            x: ``[batch, 1, H, W]`` (or ``[batch, H, W]``) binary images.
            z: ``[batch, n_samples, latent_dim]`` (or ``[batch, latent_dim]`` for one sample).

        Returns:
            ``[batch, n_samples, H, W]`` logits; all samples run as one batch of ``batch * n_samples``.
        """
        x = as_image_batch(x, "x", self.image_size)
        z = self._check_z(z, x.shape[0])
        b, s, _ = z.shape
        size = self.image_size
        maps = self.z_to_maps(z).view(b * s, self.latent_maps, size, size)
        images = x.unsqueeze(1).expand(b, s, 1, size, size).reshape(b * s, 1, size, size)
        return self._net(images, maps).view(b, s, size, size)

    def _net(self, images: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """``[n, 1, h, W]`` images and ``[n, latent_maps, h, W]`` maps -> ``[n, 1, h, W]`` logits.

        ``h`` may be fewer than H rows: no layer looks at later image rows, and only the first layer
        looks at the (unmasked) latent maps of the ``kernel_sizes[0] // 2`` rows below, so the logits
        of the first ``h - kernel_sizes[0] // 2`` rows are the same as on the full image (this speeds up
        sampling).
        """
        return self.head(self.stack(torch.cat([images.to(maps.dtype), maps], dim=1)))

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) in nats, summed over the H*W pixels: ``[batch, n_samples]``.

        ``x``: ``[batch, 1, H, W]`` or ``[batch, H, W]`` with values in {0, 1};
        ``z``: ``[batch, n_samples, latent_dim]``.
        """
        x = as_image_batch(x, "x", self.image_size)
        logits = self.logits(x, z)
        target = x.to(logits.dtype).expand(-1, logits.shape[1], -1, -1)  # [batch, 1->n, H, W]
        nll = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return -nll.flatten(2).sum(-1)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(x, z)

    # -- generation -------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, z: torch.Tensor, *, greedy: bool = False,
               generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Ancestral sampling, one pixel at a time in raster order (H * W forward passes).

        Args:
            z: ``[batch, latent_dim]`` latent codes.
            greedy: take each pixel as ``p >= 0.5`` instead of drawing it.
            generator: optional ``torch.Generator`` for reproducible draws, on ``z``'s device
                (``torch.Generator(device=z.device)``; a CPU generator cannot draw CUDA pixels).

        Returns:
            ``(images, probs)``: binary images ``[batch, 1, H, W]`` and the final Bernoulli means
            ``[batch, 1, H, W]`` given the sampled pixels.
        """
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != self.latent_dim:
            shape = list(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must be [batch, {self.latent_dim}], got {shape}")
        check_generator(generator, z.device)
        size = self.image_size
        maps = self.z_to_maps(z).view(z.shape[0], self.latent_maps, size, size)
        img = torch.zeros(z.shape[0], 1, size, size, device=z.device, dtype=z.dtype)
        for i in range(size):
            for j in range(size):
                # rows far below i cannot matter to row i: compute only those that can (see _net)
                rows = min(size, i + 1 + self.lookahead)
                p = torch.sigmoid(self._net(img[:, :, :rows], maps[:, :, :rows])[:, 0, i, j])
                if greedy:
                    img[:, 0, i, j] = (p >= 0.5).to(img.dtype)
                else:
                    img[:, 0, i, j] = torch.bernoulli(p, generator=generator)
        probs = torch.sigmoid(self._net(img, maps))
        return img, probs
