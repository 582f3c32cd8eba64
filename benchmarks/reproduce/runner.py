"""One run of the study: train one (data set, row, seed) and evaluate it on the test split.

:func:`run_one` trains a VAE row with ``AggressiveTrainer`` (recording validation KL, MI and AU along
the way with :class:`LatentCurve`, and the decoder update at which the aggressive phase ended from
``History.left_aggressive_at``), or the ``ar`` row with :func:`train_ar_baseline`; then reports
IW-NLL, -ELBO, KL, MI and AU (nats) on the test examples, and the seconds spent.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Any, Callable, Dict, Iterable, List, Optional

import torch
from torch import nn

from aggressive_vi import VAE, AggressiveTrainer, LRDecayOnPlateau, estimators
from examples.text.experiment import json_safe  # NaN/inf -> null for strict JSON

from .datasets import SELECTIONS, SETUPS, Budget, Setup
from .rows import ALL_ROWS, is_aggressive, kl_schedule_for, kl_threshold_for, stopping_for

__all__ = ["exact_nll_at_zero", "train_ar_baseline", "LatentCurve", "run_one"]


def _zeros_like_latent(x: torch.Tensor, latent_dim: int) -> torch.Tensor:
    return torch.zeros(x.shape[0], 1, latent_dim)


@torch.no_grad()
def exact_nll_at_zero(decoder: nn.Module, loader: Iterable[Any], latent_dim: int,
                      count_tokens: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> Dict[str, Any]:
    """``-log p(x | z=0)`` averaged over the loader (nats per example), in eval mode; with
    ``count_tokens``, also the per-token perplexity."""
    was = decoder.training
    decoder.eval()
    total, count, tokens = 0.0, 0, 0.0
    try:
        for batch in loader:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            total -= decoder.log_prob(x, _zeros_like_latent(x, latent_dim)).double().sum().item()
            count += x.shape[0]
            if count_tokens is not None:
                tokens += float(count_tokens(x).sum())
    finally:
        decoder.train(was)
    out: Dict[str, Any] = {"nll": total / count, "n_examples": count}
    if count_tokens is not None:
        out["ppl"] = math.exp(total / tokens)
    return out


def train_ar_baseline(setup: Setup, epochs: int, clip_grad_norm: float = 5.0,
                      select: str = "last") -> List[Dict[str, Any]]:
    """Train ``setup.vae.decoder`` alone on ``-log p(x | z=0)`` (the autoregressive baseline: the
    latent input is always zero, so it is a plain LSTM-LM / PixelCNN). Same optimiser, batches,
    clipping and epochs as the VAE rows. With ``select="best"`` the decoder ends with the weights of
    its best validation epoch. Returns per-epoch ``{epoch, loss, val_nll, wall_time}``."""
    if select not in SELECTIONS:
        raise ValueError(f"select must be one of {SELECTIONS}, got {select!r}")
    decoder = setup.vae.decoder
    latent_dim = decoder.latent_dim
    opt = setup.make_optimizer(decoder.parameters())
    history = []
    best_nll, best_state = math.inf, None
    start = time.perf_counter()
    for epoch in range(epochs):
        decoder.train()
        total, count = 0.0, 0
        for batch in setup.train_loader:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            loss = -decoder.log_prob(x, _zeros_like_latent(x, latent_dim)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(decoder.parameters(), clip_grad_norm)
            opt.step()
            total += loss.item() * x.shape[0]
            count += x.shape[0]
        val = exact_nll_at_zero(decoder, setup.val_loader, latent_dim)
        history.append({"epoch": epoch, "loss": total / count, "val_nll": val["nll"],
                        "wall_time": time.perf_counter() - start})
        if select == "best" and val["nll"] < best_nll:
            best_nll, best_state = val["nll"], copy.deepcopy(decoder.state_dict())
    if best_state is not None:
        decoder.load_state_dict(best_state)
    return history


class LatentCurve:
    """Callback: validation KL, MI and AU every ``every`` decoder updates (and before the first),
    for the MI/KL-over-training figures. Encoder-only passes over the validation loader."""

    def __init__(self, loader: Iterable[Any], every: int) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.loader, self.every = loader, every
        self.points: List[Dict[str, Any]] = []

    def _record(self, trainer: AggressiveTrainer, step: int, epoch: int) -> None:
        s = estimators.summary(trainer.model, self.loader, terms=("kl", "mi", "au"))
        self.points.append({"step": step, "epoch": epoch, "kl": s["kl"], "mi": s["mi"], "au": s["au"],
                            "aggressive": bool(trainer.is_aggressive)})

    def on_fit_start(self, trainer: AggressiveTrainer) -> None:
        self._record(trainer, 0, 0)

    def on_step_end(self, trainer: AggressiveTrainer, info: Any) -> None:
        if info.step % self.every == 0:
            self._record(trainer, info.step, info.epoch)


def _evaluate_vae(setup: Setup, iw_samples: int) -> Dict[str, Any]:
    vae = setup.vae
    stats = estimators.summary(vae, setup.test_loader)
    iw = estimators.iw_nll(vae, setup.iw_loader, n_samples=iw_samples, chunk_size=min(setup.iw_chunk, iw_samples),
                           count_tokens=setup.count_tokens)
    return {"iw_nll": iw.nll, "ppl": iw.perplexity, "neg_elbo": -stats["elbo"],
            "reconstruction": stats["reconstruction"], "kl": stats["kl"], "mi": stats["mi"], "au": stats["au"],
            "n_test": iw.n_examples, "iw_samples": iw_samples}


def run_one(data: str, row: str, seed: int, budget: Budget, threads: Optional[int] = None) -> Dict[str, Any]:
    """Train and evaluate one (data set, row, seed). Returns metrics, per-epoch history and times."""
    if data not in SETUPS:
        raise ValueError(f"data must be one of {sorted(SETUPS)}, got {data!r}")
    if row not in ALL_ROWS:
        raise ValueError(f"row must be one of {list(ALL_ROWS)}, got {row!r}")
    if threads:
        torch.set_num_threads(threads)
    setup = SETUPS[data](budget, seed)
    # the budget's inner-loop override, if any, replaces the data set's (and is what the JSON records)
    setup.window = budget.window or setup.window
    setup.max_inner_steps = budget.max_inner_steps or setup.max_inner_steps
    setup.settings.update(window=setup.window, max_inner_steps=setup.max_inner_steps)
    torch.manual_seed(seed)
    start = time.perf_counter()
    if row == "ar":
        history = train_ar_baseline(setup, budget.epochs, select=budget.select)
        train_seconds = time.perf_counter() - start
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        latent_dim = setup.vae.decoder.latent_dim
        # No latent variable: KL, MI and AU are zero by construction and the NLL is exact (no sampling).
        # "iw_nll" over the same test examples as the VAE rows' IW-NLL, "neg_elbo" over their -ELBO's.
        exact = exact_nll_at_zero(setup.vae.decoder, setup.iw_loader, latent_dim, setup.count_tokens)
        full = exact_nll_at_zero(setup.vae.decoder, setup.test_loader, latent_dim)
        metrics = {"iw_nll": exact["nll"], "ppl": exact.get("ppl"), "neg_elbo": full["nll"],
                   "reconstruction": full["nll"], "kl": 0.0, "mi": 0.0, "au": 0, "n_test": exact["n_examples"],
                   "iw_samples": "exact"}
        aggressive_epochs = 0
        nlls = [h["val_nll"] for h in history]
        extra = {"evaluated_epoch": nlls.index(min(nlls)) if budget.select == "best" else len(nlls) - 1}
    else:
        threshold = kl_threshold_for(row)
        if threshold is not None:  # the same networks, trained on the thresholded objective
            setup.vae = VAE(setup.vae.encoder, setup.vae.decoder, get_input=setup.vae.get_input,
                            kl_threshold=threshold)
        vae = setup.vae
        aggressive = is_aggressive(row)
        schedule = kl_schedule_for(row, budget)
        trainer = AggressiveTrainer(
            vae, setup.make_optimizer(vae.encoder.parameters()), setup.make_optimizer(vae.decoder.parameters()),
            stopping=stopping_for(setup, budget), kl_schedule=schedule, aggressive=aggressive,
            window=setup.window, max_inner_steps=setup.max_inner_steps, clip_grad_norm=5.0)
        total_steps = budget.epochs * len(setup.train_loader)
        curve = LatentCurve(setup.val_loader, every=max(1, math.ceil(total_steps / budget.curve_points)))
        trainer.callbacks.append(curve)
        best = None
        if budget.select == "best":
            # The paper's best-model reload (validation -ELBO) with its decay switched off: min_epoch past
            # the last epoch, so the learning rates never change within this budget.
            best = LRDecayOnPlateau(min_epoch=budget.epochs, restore_best=True)
            trainer.callbacks.append(best)
        hist = trainer.fit(setup.train_loader, val_loader=setup.val_loader, epochs=budget.epochs)
        train_seconds = time.perf_counter() - start
        history = hist.to_dicts()
        aggressive_epochs = sum(bool(r.aggressive) for r in hist)
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        metrics = _evaluate_vae(setup, budget.iw_samples)
        # the decoder update at which the trainer left the aggressive phase (None: it never did)
        extra = {"curve": curve.points, "left_aggressive_at": hist.left_aggressive_at,
                 "kl_schedule": repr(schedule), "kl_threshold": repr(threshold),
                 "window": trainer.algorithm.catch_up.window, "max_inner_steps": trainer.algorithm.max_inner_steps,
                 "steps_per_epoch": len(setup.train_loader),
                 "evaluated_epoch": best.best_epoch if best is not None else len(history) - 1}
    return {"data": data, "row": row, "seed": seed, "metrics": metrics, "history": json_safe(history),
            "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - t0,
            "aggressive_epochs": aggressive_epochs, "settings": setup.settings, **json_safe(extra)}

