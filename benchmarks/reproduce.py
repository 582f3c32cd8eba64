"""Reproduction study: the paper's Table 1 rows on the data sets this machine can run.

    python -m benchmarks.reproduce --data all --seeds 0 1 2 --out benchmarks/results --jobs 2

For each data set (``synthetic``, ``text``, ``image``) and each seed, trains with the same model,
data and epoch budget:

* ``basic``: basic VAE training (encoder and decoder jointly, KL weight 1);
* ``anneal``: basic training with KL annealing (``LinearKLAnnealing(0.1, warm-up)``);
* ``beta``: beta-VAE, ``ConstantKL(0.4)``;
* ``aggressive``: aggressive inference-network training (He et al., 2019), KL weight 1;
* ``aggressive_anneal``: aggressive training with the same annealing;
* ``ar``: the autoregressive decoder alone with z fixed to zero (LSTM-LM / PixelCNN), trained on
  ``-log p(x | z=0)`` by the loop in :func:`train_ar_baseline`; its NLL is exact and its KL, MI
  and AU are zero by construction (it has no latent variable).

and reports on the test split IW-NLL (``--iw-samples`` importance samples, 500 by default), KL, MI,
AU and training wall time relative to the basic VAE of the same seed, as mean and standard deviation
over seeds. Writes ``OUT/reproduce_<data>.json`` (settings, budget, every per-seed number and
per-epoch history; rewritten after every finished run, so a killed study leaves what finished) and
prints one table per data set.

Settings (see :data:`DATASETS`): the text ``cpu`` preset on the bundled corpus with SGD lr 1.0 and
the paper's text stopping rule; the image ``cpu`` preset on the bundled MNIST digits with Adam 1e-3,
``MIPlateau(patience=5, cumulative=True)`` and window 10; the synthetic study's nz=1 LSTM VAE on the
CPU-sized synthetic data with Adam 1e-3 (see ``examples.synthetic.study`` for why not SGD).
``--epochs``, ``--max-train``, ``--max-eval``, ``--max-iw`` and ``--max-aggressive-epochs`` cap the
budget for this machine (defaults per data set in :data:`DEFAULTS`; docs/results.md says why);
``--max-train all`` and ``--max-eval all`` lift the cap on a split.
``--window`` and ``--max-inner-steps`` override the inner loop's window test and cap.
``--fixed-aggressive-epochs N`` replaces the MI-plateau rule by exactly N aggressive epochs (to see
what the rule's decision costs). ``--select best`` evaluates each run's best validation epoch (-ELBO;
exact NLL for the AR row) instead of its last, as the paper's code does before testing.
``--from-json --markdown --figures DIR`` redraws tables and MI/KL curves from the JSON without training.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from aggressive_vi import (VAE, AggressiveTrainer, AnyOf, ConstantKL, FixedEpochs, LinearKLAnnealing,
                           LRDecayOnPlateau, MIPlateau, estimators)
from examples.text.experiment import json_safe  # NaN/inf -> null for strict JSON

__all__ = ["ROWS", "ROW_LABELS", "DATASETS", "Budget", "Setup", "run_one", "train_ar_baseline", "aggregate",
           "format_table", "run_study", "budgets_from_args", "main"]

FORMAT = "benchmarks.reproduce/1"
ROWS = ("basic", "anneal", "beta", "aggressive", "aggressive_anneal", "ar")
ROW_LABELS = {
    "basic": "VAE (basic)",
    "anneal": "VAE + anneal",
    "beta": "beta-VAE (0.4)",
    "aggressive": "aggressive",
    "aggressive_anneal": "aggressive + anneal",
    "ar": "AR baseline (z = 0)",
}
DATASETS = ("synthetic", "text", "image")
BETA = 0.4
KL_START = 0.1
METRICS = ("iw_nll", "neg_elbo", "kl", "mi", "au", "relative_time")
#: ``Budget.select``: evaluate the model of the last epoch, or that of the epoch with the best validation
#: loss (-ELBO for the VAE rows, exact NLL for the AR row), as the paper's code does before testing.
SELECTIONS = ("last", "best")


@dataclass
class Budget:
    """What one run may spend. ``None`` keeps the data set's default (see :data:`DEFAULTS`)."""

    epochs: int
    warm_up: float  # epochs of KL annealing from KL_START to 1 (anneal rows)
    max_train: Optional[int]  # training examples (first N); None: all
    max_eval: Optional[int]  # validation and test examples (first N); None: all
    iw_samples: int
    max_aggressive_epochs: Optional[int] = None  # cap on top of the MI-plateau rule
    max_iw: Optional[int] = None  # IW-NLL on the first N test examples (KL, MI, AU on all of them)
    curve_points: int = 16  # validation KL/MI/AU measurements per run for the training curves
    select: str = "last"  # which model is evaluated: "last" epoch, or "best" validation epoch (the paper's)
    fixed_aggressive_epochs: Optional[int] = None  # aggressive rows: FixedEpochs(n) instead of the MI rule
    window: Optional[int] = None  # inner-loop window test length; None: the data set's (text: the preset's)
    max_inner_steps: Optional[int] = None  # inner-loop cap; None: the data set's

    def __post_init__(self) -> None:
        for name in ("epochs", "iw_samples", "curve_points"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.warm_up >= 0:
            raise ValueError(f"warm_up must be >= 0 epochs, got {self.warm_up!r}")
        if self.select not in SELECTIONS:
            raise ValueError(f"select must be one of {SELECTIONS}, got {self.select!r}")
        for name, least in (("max_train", 2), ("max_eval", 2), ("max_aggressive_epochs", 1), ("max_iw", 1),
                            ("fixed_aggressive_epochs", 1), ("window", 1), ("max_inner_steps", 1)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise ValueError(f"{name} must be None or an integer >= {least}, got {value!r}")


#: Per data set defaults, picked from timed single runs on the 2-core development machine (see
#: docs/results.md): the whole study (3 data sets x 6 rows x 3 seeds, --jobs 2) in about an hour on the
#: shared, busy machine. IW-NLL on the first ``max_iw`` test examples; the image rows use 100 samples.
DEFAULTS: Dict[str, Budget] = {
    "synthetic": Budget(epochs=2, warm_up=1, max_train=1000, max_eval=500, iw_samples=500, max_iw=200),
    # window 5 / cap 30: the cpu preset's inner loop when the text studies of docs/results.md ran, kept so
    # that their commands reproduce them; --window 15 --max-inner-steps 100 gives the paper's (the preset's now)
    "text": Budget(epochs=3, warm_up=1.5, max_train=1200, max_eval=300, iw_samples=500, max_aggressive_epochs=1,
                   max_iw=100, window=5, max_inner_steps=30),
    "image": Budget(epochs=2, warm_up=1, max_train=400, max_eval=200, iw_samples=100, max_aggressive_epochs=1,
                    max_iw=100),
}


@dataclass
class Setup:
    """Everything one run of one data set needs; the VAE is freshly initialised from the seed."""

    vae: VAE
    make_optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
    train_loader: DataLoader
    val_loader: DataLoader
    test_loader: DataLoader
    iw_loader: DataLoader  # the test examples again, in batches sized for importance sampling
    iw_chunk: int
    make_stopping: Callable[[], Any]
    window: int
    max_inner_steps: int
    count_tokens: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    settings: Dict[str, Any] = field(default_factory=dict)


def _capped(make: Callable[[], Any], cap: Optional[int]) -> Callable[[], Any]:
    """``make()``, or the first of it and ``FixedEpochs(cap)`` to fire (a cap on aggressive epochs)."""
    return make if cap is None else (lambda: AnyOf(make(), FixedEpochs(cap)))


def _stopping_text(rule: str, cap: Optional[int]) -> str:
    return rule if cap is None else f"{rule}, at most {cap} aggressive epoch(s)"


def _cut(n: int, limit: Optional[int]) -> int:
    return n if limit is None else min(n, limit)


# ------------------------------------------------------------------------------------ synthetic
SYNTHETIC_DATA_SEED = 783435


@lru_cache(maxsize=2)
def _synthetic_tokens(n_train: int, n_valid: int, n_test: int):
    from examples.synthetic.data import make_synthetic_data, to_model_tokens

    data = make_synthetic_data(SYNTHETIC_DATA_SEED, n_train=n_train, n_valid=n_valid, n_test=n_test)
    return (data.vocab_size, to_model_tokens(data.train.tokens), to_model_tokens(data.valid.tokens),
            to_model_tokens(data.test.tokens))


def _setup_synthetic(budget: Budget, seed: int) -> Setup:
    from examples.synthetic.data import CPU_SPLIT_SIZES, N_SPECIALS, PAD_ID
    from examples.synthetic.study import StudyConfig, build_vae, make_optimizer

    n_train = _cut(CPU_SPLIT_SIZES["train"], budget.max_train)
    n_eval = _cut(CPU_SPLIT_SIZES["valid"], budget.max_eval)
    vocab_size, train_x, valid_x, test_x = _synthetic_tokens(n_train, n_eval, n_eval)
    config = StudyConfig(seed=seed, n_train=n_train, n_valid=n_eval, n_test=n_eval,
                         n_points=1, epochs=budget.epochs, optimizer="adam")
    torch.manual_seed(seed)
    vae = build_vae(vocab_size + N_SPECIALS, config)

    def loader(x: torch.Tensor, batch: int, shuffle: bool) -> DataLoader:
        return DataLoader(TensorDataset(x), batch_size=batch, shuffle=shuffle,
                          generator=torch.Generator().manual_seed(seed + 1) if shuffle else None)

    return Setup(
        vae=vae, make_optimizer=lambda params: make_optimizer(params, config),
        train_loader=loader(train_x, config.batch_size, True), val_loader=loader(valid_x, 100, False),
        test_loader=loader(test_x, 100, False), iw_loader=loader(test_x[: budget.max_iw], 100, False), iw_chunk=100,
        make_stopping=_capped(lambda: MIPlateau(patience=1, cumulative=False), budget.max_aggressive_epochs),
        window=config.window, max_inner_steps=config.max_inner_steps,
        count_tokens=lambda x: (x != PAD_ID).sum(dim=1) - 1,
        settings={"model": "examples.synthetic.study.build_vae (LSTM 50/50, nz=1, dropout 0.5)",
                  "optimizer": "Adam lr 1e-3 (both networks)", "batch_size": config.batch_size,
                  "stopping": _stopping_text("MIPlateau(patience=1, cumulative=False)", budget.max_aggressive_epochs),
                  "window": config.window,
                  "max_inner_steps": config.max_inner_steps, "eval_batch_size": 100,
                  "data": f"make_synthetic_data({SYNTHETIC_DATA_SEED})",
                  "sizes": {"train": n_train, "valid": n_eval, "test": n_eval}})


# ------------------------------------------------------------------------------------ text
@lru_cache(maxsize=1)
def _text_data(max_vocab: Optional[int]):
    from examples.text.experiment import load_data

    return load_data("bundled", max_vocab=max_vocab)


def _head(dataset: Any, n: Optional[int]) -> Any:
    """The first ``n`` sentences of a ``TextDataset`` (a shallow copy)."""
    if n is None or n >= len(dataset):
        return dataset
    out = copy.copy(dataset)
    out.ids = dataset.ids[:n]
    if getattr(dataset, "labels", None) is not None:
        out.labels = dataset.labels[:n]
    return out


def _setup_text(budget: Budget, seed: int) -> Setup:
    from examples.text.corpus import Vocab, count_predicted_tokens, make_loader
    from examples.text.experiment import build_vae
    from examples.text.presets import get_preset

    preset = get_preset("cpu")
    data = _text_data(preset.max_vocab)
    train = _head(data.splits["train"], budget.max_train)
    valid = _head(data.splits["valid"], budget.max_eval)
    test = _head(data.splits["test"], budget.max_eval)
    torch.manual_seed(seed)
    vae = build_vae(preset, len(data.vocab))
    cap = budget.max_aggressive_epochs if budget.max_aggressive_epochs is not None else preset.max_aggressive_epochs

    def stopping() -> Any:
        return MIPlateau() if cap is None else AnyOf(MIPlateau(), FixedEpochs(cap))

    eb = preset.eval_batch_size
    return Setup(
        vae=vae, make_optimizer=lambda params: torch.optim.SGD(params, lr=preset.lr),
        train_loader=make_loader(train, preset.batch_size, shuffle=True, seed=seed),
        val_loader=make_loader(valid, eb, shuffle=False), test_loader=make_loader(test, eb, shuffle=False),
        iw_loader=make_loader(_head(test, budget.max_iw), eb, shuffle=False), iw_chunk=50,
        make_stopping=stopping, window=preset.window, max_inner_steps=preset.max_inner_steps,
        count_tokens=lambda x: count_predicted_tokens(x, Vocab.pad_id),
        settings={"model": "examples.text preset cpu", "preset": preset.to_dict(),
                  "optimizer": f"SGD lr {preset.lr} (both networks)", "batch_size": preset.batch_size,
                  "stopping": f"MIPlateau(patience=1) then, at most, {cap} aggressive epochs",
                  "window": preset.window, "max_inner_steps": preset.max_inner_steps, "eval_batch_size": eb,
                  "data": "bundled fortunes corpus", "vocab": len(data.vocab),
                  "sizes": {"train": len(train), "valid": len(valid), "test": len(test)}})


# ------------------------------------------------------------------------------------ image
@lru_cache(maxsize=1)
def _image_splits():
    from examples.image.datasets import load_bundled_mnist

    return load_bundled_mnist()


def _setup_image(budget: Budget, seed: int) -> Setup:
    from examples.image.datasets import binarize_fixed
    from examples.image.experiment import build_vae, make_loaders, subset
    from examples.image.presets import get_preset

    preset = get_preset("cpu")
    splits = subset(_image_splits(), budget.max_train, budget.max_eval)
    torch.manual_seed(seed)
    vae = build_vae(preset)
    train, valid, test = make_loaders(splits, preset.batch_size, seed=seed, eval_seed=0)  # test: seed 1
    return Setup(
        vae=vae, make_optimizer=lambda params: torch.optim.Adam(params, lr=1e-3),
        train_loader=train, val_loader=valid, test_loader=test,
        iw_loader=DataLoader(binarize_fixed(splits.test, 1)[: budget.max_iw], batch_size=10), iw_chunk=100,
        make_stopping=_capped(lambda: MIPlateau(patience=5, cumulative=True), budget.max_aggressive_epochs),
        window=10, max_inner_steps=100,
        settings={"model": "examples.image preset cpu (ResNet encoder, PixelCNN decoder)",
                  "preset": preset.to_dict(), "optimizer": "Adam lr 1e-3 (both networks)",
                  "batch_size": preset.batch_size,
                  "stopping": _stopping_text("MIPlateau(patience=5, cumulative=True)", budget.max_aggressive_epochs),
                  "window": 10, "max_inner_steps": 100, "eval_batch_size": preset.batch_size,
                  "data": "bundled MNIST 5k, dynamically binarised (valid/test binarised once)",
                  "sizes": splits.sizes()})


SETUPS: Dict[str, Callable[[Budget, int], Setup]] = {
    "synthetic": _setup_synthetic, "text": _setup_text, "image": _setup_image}


# ------------------------------------------------------------------------------------ runs
def _kl_schedule(row: str, budget: Budget) -> Any:
    if row in ("anneal", "aggressive_anneal"):
        return LinearKLAnnealing(start=KL_START, warmup_epochs=budget.warm_up)
    if row == "beta":
        return ConstantKL(BETA)
    return ConstantKL(1.0)


def _stopping(setup: Setup, budget: Budget) -> Any:
    """The data set's rule (MI plateau, capped), or exactly ``budget.fixed_aggressive_epochs`` epochs."""
    if budget.fixed_aggressive_epochs is not None:
        return FixedEpochs(budget.fixed_aggressive_epochs)
    return setup.make_stopping()


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
        self.left_aggressive_at: Optional[int] = None

    def _record(self, trainer: AggressiveTrainer, step: int, epoch: int) -> None:
        s = estimators.summary(trainer.model, self.loader, terms=("kl", "mi", "au"))
        self.points.append({"step": step, "epoch": epoch, "kl": s["kl"], "mi": s["mi"], "au": s["au"],
                            "aggressive": bool(trainer.is_aggressive)})

    def on_fit_start(self, trainer: AggressiveTrainer) -> None:
        self._record(trainer, 0, 0)

    def on_step_end(self, trainer: AggressiveTrainer, info: Any) -> None:
        if info.step % self.every == 0:
            self._record(trainer, info.step, info.epoch)

    def on_phase_change(self, trainer: AggressiveTrainer, step: int) -> None:
        self.left_aggressive_at = step


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
    if row not in ROWS:
        raise ValueError(f"row must be one of {list(ROWS)}, got {row!r}")
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
        vae = setup.vae
        aggressive = row.startswith("aggressive")
        trainer = AggressiveTrainer(
            vae, setup.make_optimizer(vae.encoder.parameters()), setup.make_optimizer(vae.decoder.parameters()),
            stopping=_stopping(setup, budget), kl_schedule=_kl_schedule(row, budget), aggressive=aggressive,
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
        extra = {"curve": curve.points, "left_aggressive_at": curve.left_aggressive_at,
                 "window": trainer.window, "max_inner_steps": trainer.max_inner_steps,
                 "steps_per_epoch": len(setup.train_loader),
                 "evaluated_epoch": best.best_epoch if best is not None else len(history) - 1}
    return {"data": data, "row": row, "seed": seed, "metrics": metrics, "history": json_safe(history),
            "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - t0,
            "aggressive_epochs": aggressive_epochs, "settings": setup.settings, **json_safe(extra)}


# ------------------------------------------------------------------------------------ tables
def _mean_std(values: Sequence[float]) -> Dict[str, Any]:
    values = [float(v) for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def aggregate(runs: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Mean and standard deviation over seeds per row: ``{row: {metric: {mean, std, n}}}``.

    ``relative_time``: each run's training seconds over those of the basic VAE with the same seed
    (absent when that basic run is missing)."""
    basic = {r["seed"]: r["train_seconds"] for r in runs if r["row"] == "basic"}
    out: Dict[str, Dict[str, Any]] = {}
    for row in ROWS:
        mine = sorted((r for r in runs if r["row"] == row), key=lambda r: r["seed"])
        if not mine:
            continue
        cell = {m: _mean_std([r["metrics"][m] for r in mine]) for m in ("iw_nll", "neg_elbo", "kl", "mi", "au")}
        cell["relative_time"] = _mean_std([r["train_seconds"] / basic[r["seed"]] for r in mine if r["seed"] in basic])
        cell["train_seconds"] = _mean_std([r["train_seconds"] for r in mine])
        cell["seeds"] = [r["seed"] for r in mine]
        cell["iw_samples"] = mine[0]["metrics"]["iw_samples"]
        out[row] = cell
    return out


def format_table(summary: Dict[str, Dict[str, Any]], title: str = "") -> str:
    """One line per row: IW-NLL, KL, MI, AU (mean ± std over seeds), time relative to basic."""
    cols = [("IW-NLL", "iw_nll", 2), ("-ELBO", "neg_elbo", 2), ("KL", "kl", 2), ("MI", "mi", 2),
            ("AU", "au", 1), ("time/basic", "relative_time", 2)]
    width = max(len(v) for v in ROW_LABELS.values()) + 2
    lines = [title] if title else []
    lines.append("row".ljust(width) + "".join(f"{name:>16}" for name, _, _ in cols) + "  seeds")
    for row in ROWS:
        if row not in summary:
            continue
        cells = []
        for _, key, digits in cols:
            s = summary[row][key]
            text = "-" if s["mean"] is None else f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"
            cells.append(f"{text:>16}")
        lines.append(ROW_LABELS[row].ljust(width) + "".join(cells) + f"  {len(summary[row]['seeds'])}")
    return "\n".join(lines)


def format_markdown(doc: Dict[str, Any]) -> str:
    """The summary of one data set's JSON document as a Markdown table (mean ± std over seeds)."""
    summary = doc["summary"]
    head = ["row", "IW-NLL", "-ELBO", "KL", "MI", "AU", "time / basic", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in ROWS:
        if row not in summary:
            continue
        cell = summary[row]
        cells = [ROW_LABELS[row]]
        for key, digits in (("iw_nll", 2), ("neg_elbo", 2), ("kl", 2), ("mi", 2), ("au", 1), ("relative_time", 1)):
            s = cell[key]
            cells.append("-" if s["mean"] is None else f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}")
        cells.append(str(len(cell["seeds"])))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ the study
def _write(path: Path, data: str, budget: Budget, seeds: Sequence[int], rows: Sequence[str],
           runs: List[Dict[str, Any]], expected: int, command: str) -> Dict[str, Any]:
    runs = sorted(runs, key=lambda r: (ROWS.index(r["row"]), r["seed"]))
    summary = aggregate(runs)
    doc = {"format": FORMAT, "data": data, "budget": asdict(budget), "seeds": list(seeds), "rows": list(rows),
           "row_labels": {r: ROW_LABELS[r] for r in rows}, "complete": len(runs) == expected,
           "runs_done": len(runs), "runs_expected": expected, "command": command,
           "settings": runs[0]["settings"] if runs else None,
           "torch": torch.__version__, "summary": summary,
           "runs": [{k: v for k, v in r.items() if k != "settings"} for r in runs]}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(json_safe(doc), indent=1))
    tmp.replace(path)
    return doc


def _job(args: tuple) -> Dict[str, Any]:
    data, row, seed, budget, threads = args
    return run_one(data, row, seed, budget, threads=threads)


def _cost(data: str, row: str) -> int:
    """Rough relative cost, to start the longest runs first."""
    return {"image": 3, "text": 2, "synthetic": 1}[data] * (3 if row.startswith("aggressive") else 1)


def run_study(datasets: Sequence[str], seeds: Sequence[int], out: Path, budgets: Dict[str, Budget], *,
              rows: Sequence[str] = ROWS, jobs: int = 1, threads: Optional[int] = None, command: str = "",
              log: Callable[[str], None] = print) -> Dict[str, Dict[str, Any]]:
    """Run every (data set, row, seed); ``jobs`` processes at once (each ``threads`` torch threads).
    Returns ``{data: json document}``; writes ``out/reproduce_<data>.json`` after every finished run."""
    out.mkdir(parents=True, exist_ok=True)
    tasks = [(d, r, s, budgets[d], threads) for d in datasets for r in rows for s in seeds]
    # one data set after another (a study cut short leaves whole data sets), longest runs first
    tasks.sort(key=lambda t: (list(datasets).index(t[0]), -_cost(t[0], t[1])))
    done: Dict[str, List[Dict[str, Any]]] = {d: [] for d in datasets}
    docs: Dict[str, Dict[str, Any]] = {}
    expected = len(rows) * len(seeds)
    start = time.perf_counter()

    def finish(result: Dict[str, Any]) -> None:
        d = result["data"]
        done[d].append(result)
        docs[d] = _write(out / f"reproduce_{d}.json", d, budgets[d], seeds, rows, done[d], expected, command)
        m = result["metrics"]
        log(f"[{time.perf_counter() - start:7.0f}s] {d:9s} {result['row']:18s} seed {result['seed']}: "
            f"IW-NLL {m['iw_nll']:.2f} KL {m['kl']:.2f} MI {m['mi']:.2f} AU {m['au']} "
            f"train {result['train_seconds']:.0f}s eval {result['eval_seconds']:.0f}s")

    if jobs <= 1:
        for task in tasks:
            finish(_job(task))
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("fork")) as pool:
            futures = [pool.submit(_job, t) for t in tasks]
            for fut in as_completed(futures):
                finish(fut.result())
    for d in datasets:
        log("\n" + format_table(docs[d]["summary"], title=f"== {d} (test split; IW-NLL with "
                                f"{budgets[d].iw_samples} importance samples; nats) =="))
    return docs


# ------------------------------------------------------------------------------------ figures
def plot_curves(doc: Dict[str, Any], path: Path, rows: Sequence[str] = ("basic", "aggressive")) -> Path:
    """Validation MI and KL against decoder updates for ``rows`` (one thin line per seed, the
    aggressive phase's end marked), as in the paper's figures 4 and 5. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"basic": "tab:blue", "anneal": "tab:green", "beta": "tab:purple", "aggressive": "tab:red",
               "aggressive_anneal": "tab:orange"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for row in rows:
        runs = [r for r in doc["runs"] if r["row"] == row and r.get("curve")]
        for i, run in enumerate(runs):
            steps = [p["step"] for p in run["curve"]]
            for ax, key in zip(axes, ("mi", "kl")):
                ax.plot(steps, [p[key] for p in run["curve"]], color=colours.get(row, "k"), alpha=0.8, lw=1.2,
                        label=ROW_LABELS[row] if i == 0 else None)
                if run.get("left_aggressive_at"):
                    ax.axvline(run["left_aggressive_at"], color=colours.get(row, "k"), ls=":", lw=0.8)
    for ax, name in zip(axes, ("mutual information I_q(x; z) (nats)", "KL(q(z|x) || p(z)) (nats)")):
        ax.set_xlabel("decoder updates")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(loc="best", fontsize=8)
    b = doc["budget"]
    fig.suptitle(f"{doc['data']}: validation MI and KL during training ({len(doc['seeds'])} seeds, "
                 f"{b['epochs']} epochs; dotted: end of the aggressive phase)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


#: ``--max-train all`` / ``--max-eval all``: the whole split (``Budget.max_train = None``).
ALL = "all"


def _count_or_all(text: str) -> Any:
    """argparse type: a positive integer, or ``"all"`` (kept as the string; :func:`main` maps it to None)."""
    if text == ALL:
        return ALL
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="all", choices=[*DATASETS, "all"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: per data set)")
    p.add_argument("--warm-up", type=float, default=None, help="epochs of KL annealing (default: per data set)")
    p.add_argument("--max-train", type=_count_or_all, default=None,
                   help="training examples (first N, or 'all'; default: per data set)")
    p.add_argument("--max-eval", type=_count_or_all, default=None,
                   help="validation and test examples (first N, or 'all'; default: per data set)")
    p.add_argument("--max-aggressive-epochs", type=int, default=None,
                   help="cap on the aggressive phase, on top of the MI-plateau rule")
    p.add_argument("--fixed-aggressive-epochs", type=int, default=None,
                   help="aggressive rows leave the aggressive phase after exactly N epochs (no MI rule)")
    p.add_argument("--window", type=int, default=None,
                   help="inner-loop window (default: the data set's; the paper: 15 text, 10 images)")
    p.add_argument("--max-inner-steps", type=int, default=None, help="inner-loop cap (default: the data set's)")
    p.add_argument("--max-iw", type=int, default=None, help="IW-NLL on the first N test examples only")
    p.add_argument("--iw-samples", type=int, default=None, help="importance samples for IW-NLL (default 500)")
    p.add_argument("--select", default=None, choices=list(SELECTIONS),
                   help="evaluate the last epoch's model (default) or the best validation epoch's (the paper's)")
    p.add_argument("--figures", default=None, help="also write DIR/curves_<data>.png (needs matplotlib)")
    p.add_argument("--curve-rows", nargs="+", default=["basic", "aggressive"], choices=[r for r in ROWS if r != "ar"],
                   help="rows drawn in the MI/KL curves (default: basic aggressive)")
    p.add_argument("--from-json", action="store_true",
                   help="do not train: read the JSON files already in --out (for --figures / --markdown)")
    p.add_argument("--markdown", action="store_true", help="also print the tables as Markdown")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per run (default: 1 with --jobs > 1, else torch's default)")
    return p


def budgets_from_args(args: argparse.Namespace, datasets: Sequence[str]) -> Dict[str, Budget]:
    """Each data set's :data:`DEFAULTS` budget with the flags that were given applied on top
    (``--max-train all`` / ``--max-eval all`` become ``None``: the whole split)."""
    changes = {"epochs": args.epochs, "warm_up": args.warm_up, "max_train": args.max_train,
               "max_eval": args.max_eval, "iw_samples": args.iw_samples,
               "max_aggressive_epochs": args.max_aggressive_epochs, "max_iw": args.max_iw, "select": args.select,
               "fixed_aggressive_epochs": args.fixed_aggressive_epochs, "window": args.window,
               "max_inner_steps": args.max_inner_steps}
    given = {k: (None if v == ALL else v) for k, v in changes.items() if v is not None}
    return {d: Budget(**{**asdict(DEFAULTS[d]), **given}) for d in datasets}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, Any]]:
    args = build_parser().parse_args(argv)
    datasets = list(DATASETS) if args.data == "all" else [args.data]
    budgets = budgets_from_args(args, datasets)
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {args.jobs}")
    threads = args.threads if args.threads is not None else (1 if args.jobs > 1 else None)
    command = "python -m benchmarks.reproduce " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.from_json:
        docs = {}
        for d in datasets:
            path = Path(args.out) / f"reproduce_{d}.json"
            if not path.is_file():
                raise SystemExit(f"--from-json: {path} does not exist (run the study first)")
            docs[d] = json.loads(path.read_text())
            print(format_table(docs[d]["summary"], title=f"== {d} ({docs[d]['runs_done']} of "
                               f"{docs[d]['runs_expected']} runs) =="), flush=True)
    else:
        docs = run_study(datasets, args.seeds, Path(args.out), budgets, rows=args.rows, jobs=args.jobs,
                         threads=threads, command=command, log=lambda s: print(s, flush=True))
    if args.markdown:
        for d, doc in docs.items():
            print(f"\n### {d}\n\n{format_markdown(doc)}", flush=True)
    if args.figures:
        for d, doc in docs.items():
            path = plot_curves(doc, Path(args.figures) / f"curves_{d}.png", rows=args.curve_rows)
            print(f"wrote {path}", flush=True)
    return docs


if __name__ == "__main__":
    main()
