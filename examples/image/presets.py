"""Named model sizes: ``paper`` (He et al.'s OMNIGLOT model) and ``cpu`` (minutes per epoch on 2 cores)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Tuple

from torch import nn

from .decoder import PAPER_KERNEL_SIZES, PixelCNNDecoder
from .encoder import ResNetEncoder

__all__ = ["Preset", "PRESETS", "get_preset", "build_encoder", "build_decoder", "build_image_vae"]


@dataclass(frozen=True)
class Preset:
    """Sizes of the encoder and decoder, and the training batch size.

    ``encoder_channels``: channels of each stride-2 residual block; ``encoder_hidden``: features before
    the linear layer to (mean, logvar); ``decoder_channels``/``decoder_kernel_sizes``: width and
    per-block kernels of the masked stack; ``latent_maps``: maps z is projected to.
    """

    name: str
    latent_dim: int
    encoder_channels: Tuple[int, ...]
    encoder_hidden: int
    decoder_channels: int
    decoder_kernel_sizes: Tuple[int, ...]
    latent_maps: int
    batch_size: int

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


PRESETS: Dict[str, Preset] = {
    # The paper's OMNIGLOT model (enc_resnet_v2 + dec_pixelcnn_v2 "large", latent_feature_map 4).
    "paper": Preset("paper", latent_dim=32, encoder_channels=(64, 64, 64), encoder_hidden=512,
                    decoder_channels=64, decoder_kernel_sizes=PAPER_KERNEL_SIZES, latent_maps=4,
                    batch_size=50),
    # Same shape, fewer and narrower blocks (5 of 16 channels; ~0.19 CPU-seconds per training step of
    # 50 images, ~15x less than `paper`): an aggressive epoch on the bundled digits in minutes.
    "cpu": Preset("cpu", latent_dim=32, encoder_channels=(32, 32, 32), encoder_hidden=256,
                  decoder_channels=16, decoder_kernel_sizes=(7, 5, 5, 3, 3), latent_maps=4,
                  batch_size=50),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ``ValueError`` listing the choices otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}") from None


def build_encoder(preset: Preset) -> ResNetEncoder:
    return ResNetEncoder(preset.latent_dim, preset.encoder_channels, preset.encoder_hidden)


def build_decoder(preset: Preset) -> PixelCNNDecoder:
    return PixelCNNDecoder(preset.latent_dim, preset.decoder_channels, preset.decoder_kernel_sizes,
                           preset.latent_maps)


def build_image_vae(preset: str | Preset = "cpu") -> nn.Module:
    """``aggressive_vi.VAE(encoder, decoder)`` for a preset (name or :class:`Preset`)."""
    from aggressive_vi import VAE  # the core library; imported late so the models work without it

    p = get_preset(preset) if isinstance(preset, str) else preset
    return VAE(build_encoder(p), build_decoder(p))
