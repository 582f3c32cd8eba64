"""Glue for the image CLI: loaders, trainer, evaluation table, the exported model, sample grids."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import DataLoader

from aggressive_vi import (VAE, AggressiveTrainer, Engine, ConstantKL, LinearKLAnnealing, LRDecayOnPlateau, MIPlateau,
                           PrintLogger, ProgressBar, estimators)
from aggressive_vi import checkpoint as library_checkpoint

from ..devices import make_generator, module_device
from .datasets import ImageSplits, eval_loader, train_loader
from .presets import Preset, build_decoder, build_encoder, get_preset

__all__ = ["MODEL_FORMAT", "MODEL_FILE", "subset", "make_loaders", "build_vae", "make_trainer", "evaluate",
           "format_table", "save_model", "load_model", "sample_grid", "reconstruction_grid", "image_grid",
           "write_grid"]

MODEL_FORMAT = "examples.image/1"  # what save_model writes (not the library's trainer checkpoint)
MODEL_FILE = "model.pt"
PathLike = Union[str, Path]


def subset(splits: ImageSplits, max_train: Optional[int] = None, max_eval: Optional[int] = None) -> ImageSplits:
    """The first ``max_train`` training and ``max_eval`` valid/test images (for quick runs)."""
    cut = lambda t, n: t if n is None else t[:n]  # noqa: E731
    return ImageSplits(cut(splits.train, max_train), cut(splits.valid, max_eval), cut(splits.test, max_eval),
                       splits.source)


def make_loaders(splits: ImageSplits, batch_size: int, *, seed: int = 0, eval_seed: int = 0,
                 pin_memory: bool = False) -> Tuple[DataLoader, DataLoader, DataLoader]:
    """``(train, valid, test)``: training batches re-binarised at every draw (shuffled with ``seed``);
    valid and test binarised once with ``eval_seed`` (and ``eval_seed + 1``), in order. Batches
    are made on the CPU (so the shuffling and binarising generators are CPU ones) and moved to the
    model's device by the trainer and the estimators; pass ``pin_memory=True`` for a CUDA model."""
    gen = torch.Generator().manual_seed(seed)  # the sampler's: a DataLoader shuffles on the CPU
    return (train_loader(splits.train, batch_size, generator=gen, pin_memory=pin_memory),
            eval_loader(splits.valid, batch_size, seed=eval_seed, pin_memory=pin_memory),
            eval_loader(splits.test, batch_size, seed=eval_seed + 1, pin_memory=pin_memory))


def build_vae(preset: Union[str, Preset]) -> VAE:
    """``VAE(ResNetEncoder, PixelCNNDecoder)`` at the preset's sizes, with the paper's initialisation."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    return VAE(build_encoder(p), build_decoder(p))


def make_trainer(vae: VAE, *, aggressive: bool = True, lr: float = 1e-3, kl_start: float = 1.0,
                 warm_up: int = 10, patience: int = 5, window: int = 10, max_inner_steps: int = 100,
                 lr_patience: int = 20, callbacks: Sequence[Any] = (), progress: bool = True,
                 verbose: bool = True, precision: str = "fp32", clip_scope: str = "joint") -> AggressiveTrainer:
    """The paper's image training: Adam(lr) per network, aggressive until validation MI fails to beat
    its best ``patience`` times in total, window 10, at most 100 inner steps, clip 5.0, KL weight from
    ``kl_start`` to 1 over ``warm_up`` epochs (``kl_start=1``: no annealing, the paper's default), lr
    halved after ``lr_patience`` epochs without a better validation loss (best model reloaded).
    On a GPU the Adams are fused, so that inner steps are gated on the device (docs/gpu.md);
    ``precision``: ``Engine(precision)``; ``clip_scope``: ``AggressiveTrainer(clip_scope=...)``
    (default ``"joint"``, the paper's clipping of both networks' gradient norm; ``"network"``: the
    updated network's alone)."""
    schedule = ConstantKL(1.0) if kl_start >= 1.0 else LinearKLAnnealing(start=kl_start, warmup_epochs=warm_up)
    shown: List[Any] = ([ProgressBar()] if progress else []) + ([PrintLogger()] if verbose else [])
    fused = next(vae.parameters()).device.type == "cuda"
    return AggressiveTrainer(
        vae, torch.optim.Adam(vae.encoder.parameters(), lr=lr, fused=fused),
        torch.optim.Adam(vae.decoder.parameters(), lr=lr, fused=fused), engine=Engine(precision),
        stopping=MIPlateau(patience=patience, cumulative=True), kl_schedule=schedule, aggressive=aggressive,
        window=window, max_inner_steps=max_inner_steps, clip_grad_norm=5.0, clip_scope=clip_scope,
        callbacks=[LRDecayOnPlateau(patience=lr_patience, compare_to="best"), *callbacks, *shown])


def evaluate(vae: VAE, loader: DataLoader, *, iw_samples: int = 500, iw_chunk: int = 100,
             iw_batch_size: int = 2, au_threshold: float = 0.01) -> Dict[str, Any]:
    """IW-NLL (nats per image; skipped when ``iw_samples == 0``), negative ELBO, reconstruction, KL, MI
    (the paper's per-minibatch estimator, so it depends on ``loader``'s batch size) and AU.

    IW-NLL runs over the same images in batches of ``iw_batch_size`` with ``iw_chunk`` samples per
    decoder call (``iw_batch_size * iw_chunk`` images at once): the default 200 images per call ran
    1.7x faster per image on CPU than 1,000 (cache), and bounds memory.
    """
    out: Dict[str, Any] = {}
    s = estimators.summary(vae, loader, au_threshold=au_threshold)
    out.update(neg_elbo=-s["elbo"], reconstruction=s["reconstruction"], kl=s["kl"], mi=s["mi"], au=s["au"],
               n_examples=s["n_examples"], mi_batch_size=loader.batch_size)
    if iw_samples > 0:
        images = torch.cat([b for b in loader])
        iw_loader = DataLoader(images, batch_size=iw_batch_size, shuffle=False,
                               pin_memory=getattr(loader, "pin_memory", False))
        res = estimators.iw_nll(vae, iw_loader, n_samples=iw_samples, chunk_size=min(iw_chunk, iw_samples))
        out.update(iw_nll=res.nll, iw_samples=iw_samples)
    return out


def format_table(metrics: Dict[str, Any], title: str = "") -> str:
    """A two-column text table of :func:`evaluate`'s numbers."""
    rows = [("IW-NLL (nats/image)", metrics.get("iw_nll"), "{:.2f}"),
            ("  importance samples", metrics.get("iw_samples"), "{}"),
            ("-ELBO (nats/image)", metrics.get("neg_elbo"), "{:.2f}"),
            ("  reconstruction", metrics.get("reconstruction"), "{:.2f}"),
            ("  KL", metrics.get("kl"), "{:.2f}"),
            ("MI (nats)", metrics.get("mi"), "{:.2f}"),
            ("AU", metrics.get("au"), "{}"),
            ("images", metrics.get("n_examples"), "{}")]
    lines = [title] if title else []
    lines += [f"{name:<22}{fmt.format(value):>10}" for name, value, fmt in rows if value is not None]
    return "\n".join(lines)


# -------------------------------------------------------------------------------- the exported model
def save_model(path: PathLike, vae: VAE, preset: Preset, **meta: Any) -> Path:
    """Export the trained model for ``evaluate`` / ``sample``: its weights (on the CPU) with what
    rebuilds it (the preset) and ``meta`` (data source, options), written atomically.

    Not a training checkpoint: ``train --resume`` continues from the library's checkpoints in
    ``OUT/checkpoints`` (:class:`aggressive_vi.Checkpoint`). Loads with ``weights_only=True``.
    """
    path = Path(path)
    weights = {k: v.detach().cpu() for k, v in vae.state_dict().items()}
    payload = {"format": MODEL_FORMAT, "preset": preset.to_dict(), "model": weights, **meta}
    library_checkpoint.save_checkpoint(payload, path)  # the library's atomic write (temp, fsync, rename)
    return path


def load_model(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Tuple[VAE, Preset, Dict[str, Any]]:
    """``(vae, preset, saved dict)`` from a file written by :func:`save_model`; ``path`` may be the
    run directory (its ``model.pt``). The model is on ``map_location``, in eval mode."""
    path = Path(path)
    if path.is_dir():
        if not (path / MODEL_FILE).exists() and (path / "checkpoints").is_dir():
            raise FileNotFoundError(f"--checkpoint {path}: no {MODEL_FILE} yet (train writes it when it "
                                    f"finishes); {path}/checkpoints holds an unfinished run: continue it "
                                    "with `train ... --resume`")
        path = path / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"--checkpoint {path} does not exist (expected DIR/{MODEL_FILE} from `train`)")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
        found = saved.get("format") if isinstance(saved, dict) else type(saved).__name__
        raise ValueError(f"--checkpoint {path}: format {found!r}, expected {MODEL_FORMAT!r} "
                         f"(the {MODEL_FILE} that train writes)")
    raw = dict(saved["preset"])
    preset = Preset(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    vae = build_vae(preset)
    vae.load_state_dict(saved["model"])
    return vae.to(map_location).eval(), preset, saved


# -------------------------------------------------------------------------------- images
@torch.no_grad()
def sample_grid(vae: VAE, n: int, *, seed: int = 0, ncol: int = 10) -> Tuple[torch.Tensor, torch.Tensor]:
    """``n`` images from the prior: z ~ N(0, I), then pixels by ancestral sampling.

    Returns ``(binary_grid, probability_grid)`` as ``[H', W']`` images in [0, 1], on the CPU. The
    draws are made on the model's device, with a generator there (seeded with ``seed``).
    """
    device = module_device(vae)
    gen = make_generator(seed, device)
    decoder = vae.decoder
    z = torch.randn(n, decoder.latent_dim, generator=gen, device=device)
    was = vae.training
    vae.eval()
    try:
        images, probs = decoder.sample(z, generator=gen)
    finally:
        vae.train(was)
    return image_grid(images.cpu(), ncol), image_grid(probs.cpu(), ncol)


@torch.no_grad()
def reconstruction_grid(vae: VAE, x: torch.Tensor, *, seed: int = 0, ncol: int = 10) -> torch.Tensor:
    """Inputs and their reconstructions in alternating rows: z = the posterior mean of each input,
    then x' drawn pixel by pixel from p(x|z). ``x``: ``[n, 1, 28, 28]`` binary images (any device:
    they are moved to the model's, where the draws are made). Returns a CPU ``[H', W']`` grid."""
    device = module_device(vae)
    gen = make_generator(seed, device)
    was = vae.training
    vae.eval()
    try:
        mean, _ = vae.encode(x.to(device))
        recon, _ = vae.decoder.sample(mean, generator=gen)
    finally:
        vae.train(was)
    x, recon = x.cpu(), recon.cpu()
    ncol = max(1, min(ncol, len(x)))
    rows = []
    for start in range(0, len(x), ncol):
        rows += [x[start:start + ncol], recon[start:start + ncol]]
        if len(rows[-1]) < ncol:  # pad the last pair of rows to full width
            pad = torch.zeros(ncol - len(rows[-1]), *x.shape[1:])
            rows[-2], rows[-1] = torch.cat([rows[-2], pad]), torch.cat([rows[-1], pad])
    return image_grid(torch.cat(rows), ncol)


def image_grid(images: torch.Tensor, ncol: int = 8, padding: int = 2, pad_value: float = 0.5) -> torch.Tensor:
    """Tile ``[N, 1, H, W]`` (or ``[N, H, W]``) images into one ``[rows*(H+p)+p, ncol*(W+p)+p]`` image."""
    if images.dim() == 4:
        images = images[:, 0]
    if images.dim() != 3 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty [N, 1, H, W] or [N, H, W], got {list(images.shape)}")
    n, h, w = images.shape
    ncol = max(1, min(ncol, n))
    nrow = (n + ncol - 1) // ncol
    grid = torch.full((nrow * (h + padding) + padding, ncol * (w + padding) + padding), pad_value)
    for k in range(n):
        r, c = divmod(k, ncol)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[top:top + h, left:left + w] = images[k].float()
    return grid


def write_grid(path: PathLike, grid: torch.Tensor) -> Path:
    """Write a grid from :func:`sample_grid` / :func:`reconstruction_grid` (``[H, W]``, 0 black to 1
    white) as a greyscale PNG, with matplotlib (the ``examples`` extra)."""
    from matplotlib.image import imsave

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imsave(path, grid.detach().float().cpu().numpy(), cmap="gray", vmin=0.0, vmax=1.0)
    return path
