"""What one image side-by-side run is: the data file and the settings both implementations get.

A :class:`ImageRunSpec` is all either side needs. The reference (the paper's ``image.py``) reads the
latent size, batch size, epochs and data file from a config module the harness writes, and the
model sizes through the launcher (:mod:`benchmarks.image_parity.launcher`); the seed from its own
list (``--taskid`` picks one); the importance samples from ``--iw_nsamples``. Ours
(:mod:`benchmarks.image_parity.ours`) builds ``examples.image`` at the same sizes.

Fixed on both sides, as in the paper's image code: Adam (lr 1e-3) for each network, gradient norm
clipped at 5, KL weight 1 throughout (its default ``--kl_start 1.0``), one z sample per image,
training batches re-binarised at every draw (``x ~ Bernoulli(grey level)``), validation and test
images binarised once (in the data file both sides read), inner loop of at most 99 encoder steps
(its ``while sub_iter < 100`` from 1) with the window test every 10, the aggressive phase left after
the validation MI has failed to beat its best 5 times in total, learning rates halved after 20
epochs without a better validation loss, and the test numbers taken at the best validation epoch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Tuple

from ..core.side_by_side import IW_CHUNK, MODES, SIDES, SpecBase, check_choice, check_positive

__all__ = ["ImageRunSpec", "MODES", "SIDES", "OURS_CLIP", "OURS_INIT", "IW_CHUNK", "PAPER_SIZES", "WINDOW", "MAX_INNER_STEPS",
           "LR", "CLIP", "MI_PATIENCE", "LR_PATIENCE"]

#: our side's clipping (``AggressiveTrainer(clip_scope=...)``): the library's default or the paper's
OURS_CLIP = ("joint", "network")
#: our side's initial weights: its own, or the paper's (the same as the reference run's)
OURS_INIT = ("own", "reference")
WINDOW = 10
MAX_INNER_STEPS = 99
LR = 1e-3
CLIP = 5.0
MI_PATIENCE = 5
LR_PATIENCE = 20
#: the sizes the paper's ResNetEncoderV2 / PixelCNNDecoderV2 ("large") fix in their code
PAPER_SIZES: Dict[str, Any] = {
    "encoder_channels": (64, 64, 64), "encoder_hidden": 512, "decoder_channels": 64,
    "decoder_kernel_sizes": (7, 7, 7, 7, 7, 5, 5, 5, 5, 3, 3, 3, 3), "latent_maps": 4,
}


@dataclass(frozen=True)
class ImageRunSpec(SpecBase):
    """One run of one implementation.

    Attributes:
        data: a label for the data set (``digits``...), used in tables.
        data_file: a ``torch.save((train, valid, test))`` file (:func:`benchmarks.image_parity.data.prepare_data`).
        latent_dim: size of z (the paper's ``nz``: 32).
        encoder_channels: channels of each stride-2 residual block (paper: 64, 64, 64).
        encoder_hidden: features before the linear layer to (mean, logvar) (paper: 512).
        decoder_channels: width of the masked stack (paper: 64).
        decoder_kernel_sizes: one kernel per PixelCNN block (paper: 13 blocks, 7 to 3).
        latent_maps: 28x28 maps z is projected to (the paper's ``latent_feature_map``: 4).
        batch_size: images per batch (paper: 50).
        epochs: epoch budget.
        iw_samples: importance samples per test image (a multiple of 100).
        mode: ``"basic"`` or ``"aggressive"``.
        seed: one of the reference's seeds (``seed_set`` in its ``image.py``).
        ours_clip: our side's ``clip_scope`` (the reference ignores it): ``"joint"`` (the
            library's default and the paper's rule) or ``"network"`` (the updated network's gradient
            norm alone).
        ours_init: our side's initial weights (the reference ignores it): ``"own"`` (the image
            example's initialisation under ``seed``) or ``"reference"`` (the paper's modules built
            under ``seed`` as its script builds them, their weights and BatchNorm statistics copied
            into ours: both sides then start from the same weights; needs the paper's code).
    """

    data: str
    data_file: str
    latent_dim: int
    encoder_channels: Tuple[int, ...]
    encoder_hidden: int
    decoder_channels: int
    decoder_kernel_sizes: Tuple[int, ...]
    latent_maps: int
    batch_size: int
    epochs: int
    iw_samples: int
    mode: str
    seed: int
    ours_clip: str = "joint"
    ours_init: str = "own"

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoder_channels", tuple(self.encoder_channels))
        object.__setattr__(self, "decoder_kernel_sizes", tuple(self.decoder_kernel_sizes))
        self.check_common(("latent_dim", "encoder_hidden", "decoder_channels", "latent_maps", "batch_size", "epochs",
                           "iw_samples"))
        if not self.encoder_channels:
            raise ValueError("encoder_channels must name at least one residual block")
        for c in self.encoder_channels:
            check_positive("encoder_channels[i]", c)
        if len(self.decoder_kernel_sizes) < 3:
            raise ValueError(f"decoder_kernel_sizes needs at least 3 blocks (the paper's skip links), got "
                             f"{list(self.decoder_kernel_sizes)}")
        for k in self.decoder_kernel_sizes:
            if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
                raise ValueError(f"decoder_kernel_sizes must be positive odd integers, got "
                                 f"{list(self.decoder_kernel_sizes)}")
        if self.decoder_channels % 2:
            raise ValueError(f"decoder_channels must be even (its blocks halve it), got {self.decoder_channels}")
        check_choice("ours_clip", self.ours_clip, OURS_CLIP)
        check_choice("ours_init", self.ours_init, OURS_INIT)

    def sizes(self) -> Dict[str, Any]:
        """The model sizes (the keys of :data:`PAPER_SIZES`)."""
        return {k: getattr(self, k) for k in PAPER_SIZES}

    @property
    def paper_sizes(self) -> bool:
        """Whether the model is the paper's own (then its modules run untouched)."""
        return self.sizes() == PAPER_SIZES

    def check_files(self) -> None:
        if not Path(self.data_file).is_file():
            raise FileNotFoundError(f"the data file {self.data_file} does not exist")

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["encoder_channels"] = list(self.encoder_channels)
        d["decoder_kernel_sizes"] = list(self.decoder_kernel_sizes)
        return d
