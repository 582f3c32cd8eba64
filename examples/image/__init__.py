"""Reference image VAE of He et al. (ICLR 2019): ResNet encoder, PixelCNN decoder, binarised images.

Public pieces:

* :class:`ResNetEncoder` -- ``encoder(x) -> (mean, logvar)``, each ``[batch, latent_dim]``.
* :class:`PixelCNNDecoder` -- ``log_prob(x, z) -> [batch, n_samples]`` (nats), ``sample(z)``.
* :func:`build_image_vae` and :data:`PRESETS` (``"paper"``, ``"cpu"``).
* :mod:`examples.image.data` -- the bundled MNIST digits, the paper's OMNIGLOT file, any
  ``[N, 28, 28]`` array, and dynamic binarisation of training batches.

Command line: ``python -m examples.image {train,evaluate,sample} --help``.
"""
from .encoder import ResNetEncoder
from .decoder import PixelCNNDecoder
from .masked import MaskedConv2d
from .presets import PRESETS, Preset, build_decoder, build_encoder, build_image_vae, get_preset

__all__ = [
    "ResNetEncoder",
    "PixelCNNDecoder",
    "MaskedConv2d",
    "PRESETS",
    "Preset",
    "get_preset",
    "build_encoder",
    "build_decoder",
    "build_image_vae",
]
