"""Our side: ``examples.image`` (ResNet encoder, PixelCNN decoder, its loaders, trainer settings and
evaluation) on the data file and sizes of an :class:`~benchmarks.image_parity.spec.ImageRunSpec`.

Matched to the reference: the data file's three splits as they are (training grey levels binarised
at every draw, validation and test images binarised once in the file); batches of 50 in a new
random order each epoch; inner-loop batches of 50 distinct random training images, binarised
(:class:`RandomImageBatches`, the reference's ``np.random.choice(..., replace=False)``); Adam 1e-3;
clipping at 5; window 10 and at most 99 inner steps; ``MIPlateau(patience=5, cumulative=True)``;
``LRDecayOnPlateau(patience=20, compare_to="best")`` restoring the best validation model before the
test; test KL, MI and AU on batches of 50 (the MI estimator depends on the batch), IW-NLL with
``iw_samples`` samples drawn 100 at a time.

Not matched (the example's or the library's documented behaviour): inner and decoder steps clip the
gradient norm of the updated network (``spec.ours_clip="joint"``: the paper's joint norm); the
decoder's masked convolutions multiply the weight by the mask in the forward pass, so masked
weights get no gradient (the paper's zero the weight in place and their masked entries get
gradients, which enter its clipping norm); likelihoods from logits (the paper's:
``log(sigmoid + 1e-12)``); active units
count variances ``> 0.01`` (the reference: ``>=``); validation batches in a fixed order (the
reference shuffles them, which moves its per-batch MI estimate a little).

Run one spec in its own process: ``python -m benchmarks.image_parity.ours SPEC.json OUT.json``.
"""
from __future__ import annotations

import sys
import tempfile
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch

from examples.image.datasets import load_omniglot
from examples.image.experiment import build_vae, evaluate, make_loaders, make_trainer
from examples.image.presets import Preset

from aggressive_vi import LRDecayOnPlateau

from ..core.side_by_side import ours_parser, run_spec_file
from .spec import CLIP, IW_CHUNK, LR, LR_PATIENCE, MAX_INNER_STEPS, MI_PATIENCE, WINDOW, ImageRunSpec

__all__ = ["RandomImageBatches", "EpochClock", "preset_of", "run_ours", "main"]


class RandomImageBatches:
    """The inner loop's stream as the reference draws it: each batch ``batch_size`` distinct training
    images chosen uniformly at random, independently of the other batches, binarised anew.

    A pass yields ``ceil(N / batch_size)`` batches ``[batch_size, 1, 28, 28]``; indices and pixels
    come from its own seeded ``generator``.
    """

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int) -> None:
        if images.dim() != 4 or len(images) < batch_size:
            raise ValueError(f"images must be [N >= batch_size, 1, H, W], got {list(images.shape)} for "
                             f"batch_size {batch_size}")
        self.images = images
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for _ in range(len(self)):
            idx = torch.randperm(len(self.images), generator=self.generator)[:self.batch_size]
            yield torch.bernoulli(self.images[idx], generator=self.generator)


class EpochClock:
    """Callback: wall and CPU seconds (``time.process_time``) of each epoch, validation included."""

    def __init__(self) -> None:
        self.wall: List[float] = []
        self.cpu: List[float] = []
        self._t = (0.0, 0.0)

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        self._t = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, trainer: Any, record: Any) -> None:
        self.wall.append(time.perf_counter() - self._t[0])
        self.cpu.append(time.process_time() - self._t[1])


def preset_of(spec: ImageRunSpec) -> Preset:
    return Preset("parity", latent_dim=spec.latent_dim, encoder_channels=tuple(spec.encoder_channels),
                  encoder_hidden=spec.encoder_hidden, decoder_channels=spec.decoder_channels,
                  decoder_kernel_sizes=tuple(spec.decoder_kernel_sizes), latent_maps=spec.latent_maps,
                  batch_size=spec.batch_size)


def _mean(values: Sequence[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def _clocks() -> tuple:
    return time.perf_counter(), time.process_time()


def reference_initial_weights(vae: torch.nn.Module, spec: ImageRunSpec, reference_dir: Optional[str]) -> None:
    """Copy into ``vae`` the initial weights and BatchNorm statistics of the paper's modules built at
    ``spec``'s sizes under ``torch.manual_seed(spec.seed)``, as the paper's script builds them (the
    reference run of the same seed starts from these)."""
    if reference_dir is None:
        raise ValueError("ours_init='reference' needs the paper's code: pass reference_dir (--reference-dir)")
    from .trace import build_reference_vae, copy_into, load_reference_modules, pair_tensors

    modules = load_reference_modules(reference_dir, tempfile.mkdtemp(prefix="image-parity-init-"))
    state = torch.random.get_rng_state()
    torch.manual_seed(spec.seed)
    ref = build_reference_vae(modules, spec)
    torch.random.set_rng_state(state)
    copy_into(ref, vae, pair_tensors(ref, vae))


def run_ours(spec: ImageRunSpec, *, threads: Optional[int] = 1, verbose: bool = True,
             reference_dir: Optional[str] = None) -> Dict[str, Any]:
    """Train and test one spec; returns the reference side's fields: ``metrics`` (test ``neg_elbo``,
    ``reconstruction``, ``kl``, ``mi``, ``au``, ``iw_nll``), ``train_seconds`` / ``train_cpu_seconds``
    (``fit``, per-epoch validation included), ``iw_seconds`` / ``iw_cpu_seconds``,
    ``epoch_seconds`` / ``epoch_cpu_seconds`` (per epoch), ``aggressive_epochs``, ``epochs_run``,
    ``val_mi``, ``val_neg_elbo``, ``inner_steps_mean`` (per epoch), ``best_epoch``, ``train_batches``."""
    spec.check_files()
    if threads:
        torch.set_num_threads(threads)
    splits = load_omniglot(spec.data_file)
    torch.manual_seed(spec.seed)
    vae = build_vae(preset_of(spec))
    if spec.ours_init == "reference":
        reference_initial_weights(vae, spec, reference_dir)
    train_dl, valid_dl, test_dl = make_loaders(splits, spec.batch_size, seed=spec.seed)
    inner = RandomImageBatches(splits.train, spec.batch_size, seed=spec.seed + 1)
    clock = EpochClock()
    trainer = make_trainer(vae, aggressive=spec.aggressive, lr=LR, kl_start=1.0, patience=MI_PATIENCE,
                           window=WINDOW, max_inner_steps=MAX_INNER_STEPS, lr_patience=LR_PATIENCE,
                           callbacks=[clock], progress=False, verbose=verbose, clip_scope=spec.ours_clip)
    assert trainer.algorithm.clip_grad_norm == CLIP
    w0, c0 = _clocks()
    history = trainer.fit(train_dl, val_loader=valid_dl, epochs=spec.epochs, inner_loader=inner)
    w1, c1 = _clocks()
    torch.manual_seed(spec.seed)
    evaluate(vae, test_dl, iw_samples=0)  # the summary alone, to take its time out of the IW-NLL's
    w2, c2 = _clocks()
    torch.manual_seed(spec.seed)
    metrics = evaluate(vae, test_dl, iw_samples=spec.iw_samples, iw_chunk=IW_CHUNK)
    w3, c3 = _clocks()
    records: List[Any] = list(history)
    decay = next(c for c in trainer.callbacks if isinstance(c, LRDecayOnPlateau))
    keep = ("neg_elbo", "reconstruction", "kl", "mi", "au", "iw_nll")
    return {
        "metrics": {k: metrics[k] for k in keep},
        "train_seconds": w1 - w0, "train_cpu_seconds": c1 - c0,
        "iw_seconds": (w3 - w2) - (w2 - w1), "iw_cpu_seconds": (c3 - c2) - (c2 - c1),
        "epoch_seconds": clock.wall, "epoch_cpu_seconds": clock.cpu,
        "aggressive_epochs": sum(bool(r.aggressive) for r in records), "epochs_run": len(records),
        "val_mi": [r.val_mi for r in records],
        "val_neg_elbo": [None if r.val_elbo is None else -r.val_elbo for r in records],
        "inner_steps_mean": [r.inner_steps_mean for r in records], "best_epoch": decay.best_epoch,
        "inner_steps_per_update": _mean([r.inner_steps_mean for r in records if r.aggressive]),
        "train_batches": len(train_dl),
    }


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = ours_parser("python -m benchmarks.image_parity.ours",
                         "Run our side of one image side-by-side spec (JSON) and write its result.",
                         "a JSON file holding an ImageRunSpec's fields")
    parser.add_argument("--reference-dir", help="the paper's code, for ours_init='reference'")
    args = parser.parse_args(argv)
    return run_spec_file(args.spec, args.out, ImageRunSpec.from_dict,
                         lambda spec: run_ours(spec, threads=args.threads, reference_dir=args.reference_dir),
                         {"process_wall_seconds": time.perf_counter, "process_cpu_seconds": time.process_time})


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
