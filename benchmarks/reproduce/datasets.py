"""The data sets of the study: what one run may spend (:class:`Budget`, :data:`DEFAULTS`) and how
each data set builds a freshly initialised run (:class:`Setup`, :data:`SETUPS`).

* ``synthetic``: the synthetic study's nz=1 LSTM VAE (``examples.synthetic.study``) on the CPU-sized
  synthetic data, Adam 1e-3, ``MIPlateau(patience=1, cumulative=False)``;
* ``text``: the ``examples.text`` ``cpu`` preset on the bundled corpus, SGD lr 1.0, the paper's text
  stopping rule;
* ``image``: the ``examples.image`` ``cpu`` preset on the bundled MNIST digits, Adam 1e-3,
  ``MIPlateau(patience=5, cumulative=True)``, window 10.

Only the examples' public APIs are used (splits are cut with ``TextDataset.head`` and
``examples.image.experiment.subset``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Dict, Iterable, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from aggressive_vi import VAE, AnyOf, FixedEpochs, MIPlateau

__all__ = ["DATASETS", "SELECTIONS", "PRESETS", "OPTIMIZERS", "Budget", "DEFAULTS", "Setup", "SETUPS",
           "SYNTHETIC_DATA_SEED"]

DATASETS = ("synthetic", "text", "image")
#: ``Budget.preset``: the examples' ``cpu`` sizes, or the paper's (text and image models; synthetic splits).
PRESETS = ("cpu", "paper")
#: ``Budget.optimizer`` of the synthetic data: Adam lr 1e-3, or the paper's SGD lr 1.0.
OPTIMIZERS = ("adam", "sgd")
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
    preset: str = "cpu"  # text and image: the examples' preset; synthetic: split sizes (CPU or the paper's)
    optimizer: str = "adam"  # synthetic only: "adam" (lr 1e-3, as the Table 1 rows ran) or "sgd" (lr 1.0)

    def __post_init__(self) -> None:
        for name in ("epochs", "iw_samples", "curve_points"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.warm_up >= 0:
            raise ValueError(f"warm_up must be >= 0 epochs, got {self.warm_up!r}")
        if self.select not in SELECTIONS:
            raise ValueError(f"select must be one of {SELECTIONS}, got {self.select!r}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {self.preset!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
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
    from examples.synthetic.data import CPU_SPLIT_SIZES, N_SPECIALS, PAD_ID, PAPER_SPLIT_SIZES
    from examples.synthetic.study import StudyConfig, build_vae, make_optimizer

    sizes = PAPER_SPLIT_SIZES if budget.preset == "paper" else CPU_SPLIT_SIZES
    n_train = _cut(sizes["train"], budget.max_train)
    n_eval = _cut(sizes["valid"], budget.max_eval)
    vocab_size, train_x, valid_x, test_x = _synthetic_tokens(n_train, n_eval, n_eval)
    config = StudyConfig(seed=seed, n_train=n_train, n_valid=n_eval, n_test=n_eval,
                         n_points=1, epochs=budget.epochs, optimizer=budget.optimizer)
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
                  "optimizer": ("SGD lr 1.0" if budget.optimizer == "sgd" else "Adam lr 1e-3") + " (both networks)",
                  "batch_size": config.batch_size,
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
    """The first ``n`` sentences of a ``TextDataset`` (all of them when ``n`` is ``None``)."""
    return dataset if n is None else dataset.head(n)


def _setup_text(budget: Budget, seed: int) -> Setup:
    from examples.text.corpus import Vocab, count_predicted_tokens, make_loader
    from examples.text.experiment import build_vae
    from examples.text.presets import get_preset

    preset = get_preset(budget.preset)
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
        settings={"model": f"examples.text preset {budget.preset}", "preset": preset.to_dict(),
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

    preset = get_preset(budget.preset)
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
        settings={"model": f"examples.image preset {budget.preset} (ResNet encoder, PixelCNN decoder)",
                  "preset": preset.to_dict(), "optimizer": "Adam lr 1e-3 (both networks)",
                  "batch_size": preset.batch_size,
                  "stopping": _stopping_text("MIPlateau(patience=5, cumulative=True)", budget.max_aggressive_epochs),
                  "window": 10, "max_inner_steps": 100, "eval_batch_size": preset.batch_size,
                  "data": "bundled MNIST 5k, dynamically binarised (valid/test binarised once)",
                  "sizes": splits.sizes()})


SETUPS: Dict[str, Callable[[Budget, int], Setup]] = {
    "synthetic": _setup_synthetic, "text": _setup_text, "image": _setup_image}
