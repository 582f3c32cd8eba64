"""Aggressive training inside PyTorch Lightning (``pip install aggressive-vi[lightning]``).

:class:`AggressiveVI` is a Lightning ``Callback`` that also runs the training step. A user keeps their
``LightningModule`` and ``Trainer``; under manual optimisation they add::

    class LitVAE(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.vae = VAE(MyEncoder(), MyDecoder())
            self.automatic_optimization = False
            self.aggressive = AggressiveVI(self.vae, stopping=MIPlateau())

        def configure_callbacks(self):
            return [self.aggressive]          # Lightning calls its hooks and saves its state

        def configure_optimizers(self):      # one optimiser per network
            return [torch.optim.Adam(self.vae.encoder.parameters()),
                    torch.optim.Adam(self.vae.decoder.parameters())]

        def training_step(self, batch, batch_idx):
            return self.aggressive.training_step(self, batch)

        def validation_step(self, batch, batch_idx):
            pass                              # the callback feeds val_mi / val_au / val_kl itself

What the callback does (docs/lightning.md explains why):

* **Algorithm.** The library's own: the inner loop draws its fresh batches from its own
  :class:`~aggressive_vi._impl.streams.InnerStream` over the training data (a loader of its own,
  under DDP with its own ``DistributedSampler`` whose ``set_epoch`` it calls on every pass), the
  windowed test is collective, and the stopping criterion, KL schedule and metrics
  (:mod:`aggressive_vi.metrics`) are the library's.
* **global_step counts decoder updates.** Lightning's manual optimisation counts every
  ``LightningOptimizer.step()`` (Lightning issue 17958). The decoder's optimiser steps through its
  ``LightningOptimizer`` (counted, once per training batch); the encoder's, in inner and joint steps
  alike, steps through ``trainer.strategy.optimizer_step`` on the unwrapped optimiser: the precision
  plugin and the ``on_before_optimizer_step`` hooks apply, the step counter does not move.
* **Precision.** Backward goes through ``LightningModule.manual_backward`` (the precision plugin's
  loss scaling) with ``inputs=`` the network being trained, the forward passes run inside Lightning's
  autocast context, and gradient clipping and the non-finite check run in
  ``on_before_optimizer_step``, after a grad scaler has unscaled the gradients. Under a grad scaler
  (``precision="16-mixed"``) a non-finite step is left to the scaler (it skips it and lowers its
  scale) instead of raising.
* **DDP.** Lightning wraps the whole ``LightningModule`` in one ``DistributedDataParallel``, whose
  reducer would wait for decoder gradients that an inner step never computes ("unused parameters").
  The callback switches that wrapper's gradient synchronisation off
  (``require_backward_grad_sync = False``, what ``no_sync()`` does) and trains through the library's
  own separate encoder and decoder wrappers (:class:`~aggressive_vi.distributed.TrainingNetworks`):
  an inner step all-reduces the encoder's gradients and nothing else.
* **Checkpoints.** Its ``state_dict`` (saved by Lightning with every checkpoint) holds the phase, the
  decoder-update counter, the stopping criterion's and KL schedule's states and the inner stream's
  position with every rank's random snapshot; a ``Trainer.fit(ckpt_path=...)`` continues from there.

Logged with ``pl_module.log`` (so every logger, ``EarlyStopping`` and ``ModelCheckpoint`` see them):
per step ``train_loss``, ``train_kl``, ``kl_weight``, ``inner_steps``, ``aggressive``; per validation
``val_mi``, ``val_mi_stderr``, ``val_au``, ``val_kl``, ``val_elbo``, ``val_reconstruction`` (nats;
reduced over ranks).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

try:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("aggressive_vi.lightning needs Lightning: pip install 'aggressive-vi[lightning]' "
                      f"(import failed: {exc})") from exc

from ._impl.checks import is_callable, one_of, positive_float_or_none, positive_int
from ._impl.components import kl_schedule_or_default, stopping_or_default
from ._impl.loaders import InputFn, extract_input, model_device, move_to_device
from ._impl.rng import rng_state, set_rng_state
from ._impl.streams import InnerStream
from .distributed import (TrainingNetworks, all_gather_object, is_distributed, rank,
                          world_size)
from .estimators import MI_ESTIMATORS, mi_metric
from .faults import ON_NONFINITE, NonFiniteError, clip_and_check, nonfinite_message
from .inner_loop import catch_up_encoder
from .metrics import ELBO, ActiveUnits, Metric, PosteriorMetric
from .model import ELBOTerms, as_vae
from .protocols import KLSchedule, StoppingCriterion, TrainingEvent, optional_state

__all__ = ["AggressiveVI", "fabric_trainer", "fabric_autocast"]

if TYPE_CHECKING:
    from .trainer import AggressiveTrainer

LoaderSource = Union[Iterable[Any], Callable[["pl.Trainer"], Iterable[Any]], None]


def _raw(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimiser inside a ``LightningOptimizer`` (or the optimiser itself)."""
    return getattr(optimizer, "optimizer", optimizer)


def _holds(optimizer: torch.optim.Optimizer, module: nn.Module) -> bool:
    ids = {id(p) for p in module.parameters()}
    return any(id(p) in ids for group in optimizer.param_groups for p in group["params"])


class AggressiveVI(Callback):
    """Aggressive inference-network training (He et al., ICLR 2019) as a Lightning callback.

    Args:
        model: the :class:`~aggressive_vi.VAE` (or module with ``.encoder``/``.decoder``) inside the
            ``LightningModule``, e.g. ``self.vae``.
        stopping, kl_schedule, aggressive, window, max_inner_steps, clip_grad_norm, n_samples,
        au_threshold, mi_estimator, on_nonfinite, get_input: as in
            :class:`~aggressive_vi.AggressiveTrainer` (same defaults: the paper's).
        inner_loader: where the inner loop draws its fresh batches: a loader, or
            ``trainer -> loader``. Default: a loader of its own over the training loader's dataset
            (same ``batch_size``, ``collate_fn``, ``num_workers``, ``drop_last``), shuffled by a
            ``RandomSampler`` seeded with ``inner_seed``, under DDP by a ``DistributedSampler``
            (``seed=inner_seed``) over this rank's shard.
        inner_seed: seed of the default inner loader's shuffle.
        ddp: train through separate encoder/decoder DDP wrappers (``None``: whenever
            ``torch.distributed`` has several processes); see the module docstring.

    Raises:
        TypeError / ValueError: bad arguments (at construction), or at ``on_train_start`` a module
            that is not under manual optimisation or optimisers that do not split encoder/decoder.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        stopping: Optional[StoppingCriterion] = None,
        kl_schedule: Optional[KLSchedule] = None,
        aggressive: bool = True,
        window: int = 15,
        max_inner_steps: int = 100,
        clip_grad_norm: Optional[float] = 5.0,
        n_samples: int = 1,
        au_threshold: float = 0.01,
        mi_estimator: str = "minibatch",
        on_nonfinite: str = "raise",
        get_input: InputFn = extract_input,
        inner_loader: LoaderSource = None,
        inner_seed: int = 0,
        ddp: Optional[bool] = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        self.model = model
        self.vae = as_vae(model)
        self.stopping: StoppingCriterion = stopping_or_default(stopping)
        self.kl_schedule: KLSchedule = kl_schedule_or_default(kl_schedule)
        self.window = positive_int("window", window)
        self.max_inner_steps = positive_int("max_inner_steps", max_inner_steps)
        self.clip_grad_norm = positive_float_or_none("clip_grad_norm", clip_grad_norm)
        self.n_samples = positive_int("n_samples", n_samples)
        self.au_threshold = au_threshold
        self.mi_estimator = one_of("mi_estimator", mi_estimator, MI_ESTIMATORS)
        self.on_nonfinite = one_of("on_nonfinite", on_nonfinite, ON_NONFINITE)
        self.get_input = is_callable("get_input", get_input, "get_input(batch) -> model input")
        self.inner_source = inner_loader
        self.inner_seed = int(inner_seed)
        self.ddp = ddp
        # the run's state (state_dict composes it)
        self.step = 0  # decoder updates taken (== trainer.global_step)
        self.is_aggressive = bool(aggressive)
        self.left_aggressive_at: Optional[int] = None
        self.epochs_decided = 0  # epochs whose end the stopping criterion has seen
        # per-fit
        self.nets: Optional[TrainingNetworks] = None
        self.inner: Optional[InnerStream] = None
        self.inner_loader: Optional[Iterable[Any]] = None
        self.last_inner_steps = 0
        self.skipped_steps = 0
        self._restore: Optional[Dict[str, Any]] = None
        self._pending: Optional[Tuple[torch.Tensor, Sequence[torch.Tensor], str, Any]] = None
        self._applied = True
        self._inner_step = 0
        self._scaler: Any = None
        self._val: Dict[str, Metric] = {}
        self._val_seen = False
        self._val_metrics: Dict[str, Any] = {}
        self._enc_params: List[torch.Tensor] = [p for p in self.vae.encoder.parameters() if p.requires_grad]
        self._dec_params: List[torch.Tensor] = [p for p in self.vae.decoder.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ setup
    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if pl_module.automatic_optimization:
            raise ValueError("AggressiveVI needs manual optimisation: set self.automatic_optimization = False "
                             "in the LightningModule's __init__")
        self._split_optimizers(pl_module)
        self._silence_outer_ddp(trainer)
        self.nets = TrainingNetworks(self.model, self.ddp)
        self._scaler = getattr(trainer.precision_plugin, "scaler", None)
        self.inner_loader = self._make_inner_loader(trainer)
        restore, self._restore = self._restore, None
        self.inner = InnerStream(self.inner_loader)
        if restore is not None and restore.get("inner_stream") is not None:
            local = (restore.get("inner_local") or {}).get(rank())
            # the replay sets the random state the pass began with and draws the pass again; the
            # loader's own generators keep where that left them (where the saved run's were), the
            # global generators get back the state Lightning gave this run
            now = rng_state()
            self.inner = InnerStream.replay(self.inner_loader, restore["inner_stream"], local)
            set_rng_state(now)

    @staticmethod
    def _silence_outer_ddp(trainer: "pl.Trainer") -> None:
        """Lightning's one wrapper around the whole module would wait for decoder gradients that
        inner steps never compute; the library's own encoder/decoder wrappers synchronise instead."""
        outer = trainer.strategy.model
        if isinstance(outer, nn.parallel.DistributedDataParallel):
            outer.require_backward_grad_sync = False

    def _split_optimizers(self, pl_module: "pl.LightningModule") -> None:
        optimizers = pl_module.optimizers(use_pl_optimizer=True)
        optimizers = list(optimizers) if isinstance(optimizers, (list, tuple)) else [optimizers]
        enc = [o for o in optimizers if _holds(_raw(o), self.vae.encoder)]
        dec = [o for o in optimizers if _holds(_raw(o), self.vae.decoder)]
        if len(enc) != 1 or len(dec) != 1 or enc[0] is dec[0]:
            raise ValueError(
                "configure_optimizers must return one optimiser over the encoder's parameters and one over "
                f"the decoder's, e.g. [Adam(vae.encoder.parameters()), Adam(vae.decoder.parameters())]; got "
                f"{len(optimizers)} optimiser(s), {len(enc)} holding encoder and {len(dec)} holding decoder "
                "parameters")
        self.enc_opt, self.dec_opt = enc[0], dec[0]

    def _make_inner_loader(self, trainer: "pl.Trainer") -> Iterable[Any]:
        source = self.inner_source
        if source is not None:
            return source(trainer) if callable(source) and not hasattr(source, "__iter__") else source
        from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

        train: Any = trainer.train_dataloader
        dataset = getattr(train, "dataset", None)
        batch_size = getattr(train, "batch_size", None)
        if dataset is None or batch_size is None:
            raise ValueError(
                "AggressiveVI cannot build the inner loop's loader from the training loader "
                f"({type(train).__name__}: it needs .dataset and .batch_size); pass "
                "AggressiveVI(..., inner_loader=DataLoader(train_dataset, batch_size=..., shuffle=True))")
        if is_distributed():
            sampler: Any = DistributedSampler(dataset, num_replicas=world_size(), rank=rank(), shuffle=True,
                                              seed=self.inner_seed)
        else:
            sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(self.inner_seed))
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=train.collate_fn,
                          num_workers=train.num_workers, drop_last=train.drop_last,
                          pin_memory=train.pin_memory)

    # ------------------------------------------------------------------ the algorithm
    def training_step(self, pl_module: "pl.LightningModule", batch: Any) -> torch.Tensor:
        """One decoder update on ``batch``, preceded while aggressive by the encoder's catch-up loop
        on fresh batches from the inner stream; call it from ``training_step``.

        Returns the batch's mean loss (negative annealed ELBO, nats per example), detached.
        """
        trainer = pl_module.trainer
        if self.nets is None or self.inner is None:
            raise RuntimeError("AggressiveVI.training_step ran before on_train_start: add the callback to the "
                               "Trainer (or return it from configure_callbacks)")
        self._silence_outer_ddp(trainer)
        device = model_device(self.vae)
        x = move_to_device(self.get_input(batch), device)
        if self.is_aggressive and self.stopping.should_stop(
                TrainingEvent(epoch=trainer.current_epoch, step=self.step, epoch_end=False)):
            self._leave_aggressive()
        steps_per_epoch = trainer.num_training_batches
        steps_per_epoch = int(steps_per_epoch) if math.isfinite(steps_per_epoch) else 1
        kl_weight = float(self.kl_schedule(self.step, steps_per_epoch))
        if self.is_aggressive:
            inner_steps = self._catch_up_encoder(pl_module, x, kl_weight)
            terms = self._decoder_step(pl_module, x, kl_weight)
        else:
            inner_steps = 0
            terms = self._joint_step(pl_module, x, kl_weight)
        self.step += 1
        self.last_inner_steps = inner_steps
        loss = terms.loss.mean()
        pl_module.log_dict({"train_loss": loss, "train_kl": terms.kl.mean(), "kl_weight": kl_weight,
                            "inner_steps": float(inner_steps), "aggressive": float(inner_steps > 0)},
                           on_step=True, on_epoch=False)
        return loss

    def _catch_up_encoder(self, pl_module: "pl.LightningModule", x: Any, kl_weight: float) -> int:
        """The library's catch-up loop (:func:`~aggressive_vi.inner_loop.catch_up_encoder`) with
        encoder steps through Lightning's precision plugin and strategy; the first on ``x``, each
        later one on a fresh batch of the inner stream. Returns the steps taken."""
        assert self.nets is not None and self.inner is not None
        nets, inner, device = self.nets, self.inner, model_device(self.vae)

        def step(batch_x: Any) -> Optional[Tuple[torch.Tensor, int]]:
            terms = nets.inner.elbo(batch_x, kl_weight=kl_weight, n_samples=self.n_samples)
            if not self._backward_and_step(pl_module, terms.loss, self._enc_params, "inner", batch_x,
                                           [(self.enc_opt, False)]):
                return None
            return terms.loss.detach().sum().double(), terms.loss.shape[0]

        steps = catch_up_encoder(step, x, lambda: move_to_device(self.get_input(next(inner)), device),
                                 window=self.window, max_steps=self.max_inner_steps, device=device,
                                 on_step=self._set_inner_step).steps
        self._inner_step = 0
        _raw(self.enc_opt).zero_grad(set_to_none=True)
        return steps

    def _set_inner_step(self, step: int) -> None:
        self._inner_step = step

    def _decoder_step(self, pl_module: "pl.LightningModule", x: Any, kl_weight: float) -> ELBOTerms:
        assert self.nets is not None
        with torch.no_grad():
            mean, logvar = self.nets.decoder.encode(x)
        terms = self.nets.decoder.elbo_given(x, mean, logvar, kl_weight=kl_weight, n_samples=self.n_samples)
        self._backward_and_step(pl_module, terms.loss, self._dec_params, "decoder", x, [(self.dec_opt, True)])
        _raw(self.dec_opt).zero_grad(set_to_none=True)
        return ELBOTerms(*(t.detach() for t in terms))

    def _joint_step(self, pl_module: "pl.LightningModule", x: Any, kl_weight: float) -> ELBOTerms:
        assert self.nets is not None
        terms = self.nets.joint.elbo(x, kl_weight=kl_weight, n_samples=self.n_samples)
        self._backward_and_step(pl_module, terms.loss, self._enc_params + self._dec_params, "joint", x,
                                [(self.enc_opt, False), (self.dec_opt, True)])
        return ELBOTerms(*(t.detach() for t in terms))

    def _backward_and_step(self, pl_module: "pl.LightningModule", loss: torch.Tensor,
                           params: Sequence[torch.Tensor], phase: str, x: Any,
                           optimizers: Sequence[Tuple[Any, bool]]) -> bool:
        """Backward through the precision plugin into ``params`` only, then step each optimiser:
        ``counted`` ones through their ``LightningOptimizer`` (one ``global_step``), the others
        through the strategy on the unwrapped optimiser. Clipping and the finite check happen in
        :meth:`on_before_optimizer_step`. Returns whether the update was applied."""
        for opt, _ in optimizers:
            _raw(opt).zero_grad(set_to_none=True)
        pl_module.manual_backward(loss.mean(), inputs=params)
        self._pending = (loss, params, phase, x)
        self._applied = True
        strategy = pl_module.trainer.strategy
        for opt, counted in optimizers:
            if counted:
                opt.step()
            else:
                strategy.optimizer_step(_raw(opt), closure=lambda: None, model=pl_module)
        self._pending = None
        return self._applied

    def on_before_optimizer_step(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                                 optimizer: Any) -> None:
        """Clip (after a grad scaler has unscaled) and check the gradients of the step under way;
        a non-finite one is dropped (the optimiser then changes nothing) or raises."""
        if self._pending is None:
            return  # the second optimiser of a joint step: already clipped and checked
        loss, params, phase, x = self._pending
        self._pending = None
        if clip_and_check(loss, params, self.clip_grad_norm):
            return
        self._applied = False
        self.skipped_steps += 1
        for p in self._enc_params + self._dec_params:
            p.grad = None  # the optimiser skips parameters without a gradient
        if self._scaler is not None or self.on_nonfinite == "skip":
            return  # under a grad scaler non-finite steps are routine: the scaler lowers its scale
        inner_step = self._inner_step if phase == "inner" else None
        epoch, batch_index = trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_idx
        raise NonFiniteError(
            nonfinite_message(epoch=epoch, step=self.step + 1, batch_index=batch_index, phase=phase,
                              inner_step=inner_step, loss=loss, x=x, checkpoint=None),
            epoch=epoch, step=self.step + 1, batch_index=batch_index, phase=phase, inner_step=inner_step,
            checkpoint=None)

    def _leave_aggressive(self) -> None:
        self.is_aggressive = False
        self.left_aggressive_at = self.step

    # ------------------------------------------------------------------ validation and the switch
    def _fresh_metrics(self) -> Dict[str, Metric]:
        return {"elbo": ELBO(self.model, n_samples=self.n_samples), "mi": mi_metric(self.mi_estimator),
                "au": ActiveUnits(threshold=self.au_threshold)}

    def on_validation_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._val = self._fresh_metrics()
        self._val_seen = False

    def on_validation_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.sanity_checking or dataloader_idx != 0:
            return
        x = move_to_device(self.get_input(batch), model_device(self.vae))
        with torch.no_grad():  # Lightning has set eval mode
            mean, logvar = self.vae.encode(x)
            for metric in self._val.values():
                assert isinstance(metric, PosteriorMetric)
                metric.update_posterior(mean, logvar, x)
        self._val_seen = True

    def on_validation_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.sanity_checking or not self._val_seen:
            return
        elbo, mi, au = (self._val[k].compute() for k in ("elbo", "mi", "au"))  # reduced over ranks
        self._val_metrics = {"val_mi": mi.value, "val_mi_stderr": mi.stderr, "val_au": au.count,
                             "val_kl": elbo.kl, "val_elbo": elbo.elbo, "val_reconstruction": elbo.reconstruction}
        logged = {k: float(v) for k, v in self._val_metrics.items() if v is not None and math.isfinite(float(v))}
        # already reduced and the same on every rank; sync_dist averages equal values (exact) and spares
        # the user Lightning's warning about epoch-level logging without it
        pl_module.log_dict(logged, on_step=False, on_epoch=True, sync_dist=is_distributed())
        if not self._fitting(trainer):
            return  # trainer.validate(): log only, no stopping decision
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            # the epoch's end: decide here, before ModelCheckpoint saves at on_validation_end
            self._epoch_end(trainer)

    @staticmethod
    def _fitting(trainer: "pl.Trainer") -> bool:
        from lightning.pytorch.trainer.states import TrainerFn

        return trainer.state.fn == TrainerFn.FITTING

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._epoch_end(trainer)  # no-op when validation already decided for this epoch

    def _epoch_end(self, trainer: "pl.Trainer") -> None:
        epoch = trainer.current_epoch
        if self.epochs_decided > epoch:
            return
        self.epochs_decided = epoch + 1
        if self.is_aggressive and self.stopping.should_stop(
                TrainingEvent(epoch=epoch, step=self.step, epoch_end=True, metrics=dict(self._val_metrics))):
            self._leave_aggressive()
        self._val_metrics = {}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        """Phase, counters, stopping / KL-schedule states and the inner stream's position, with every
        rank's random snapshot of its current pass (gathered: Lightning saves rank 0's callback
        state). A collective under DDP: Lightning calls it on every rank when it checkpoints."""
        inner = self.inner
        local = inner.local_state_dict() if inner is not None else None
        gathered = all_gather_object(local)
        return {
            "step": self.step,
            "is_aggressive": self.is_aggressive,
            "left_aggressive_at": self.left_aggressive_at,
            "epochs_decided": self.epochs_decided,
            "stopping": optional_state(self.stopping),
            "stopping_type": type(self.stopping).__name__,
            "kl_schedule": optional_state(self.kl_schedule),
            "inner_stream": inner.state_dict() if inner is not None else None,
            "inner_local": dict(enumerate(gathered)),
            "world_size": world_size(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the inner stream is replayed at the next ``on_train_start``."""
        from ._impl.components import load_component

        self.step = int(state["step"])
        self.is_aggressive = bool(state["is_aggressive"])
        left = state.get("left_aggressive_at")
        self.left_aggressive_at = None if left is None else int(left)
        self.epochs_decided = int(state.get("epochs_decided", 0))
        load_component("stopping", self.stopping, state.get("stopping"), state.get("stopping_type"),
                       "the Lightning checkpoint")
        load_component("kl_schedule", self.kl_schedule, state.get("kl_schedule"), None, "the Lightning checkpoint")
        self._restore = {"inner_stream": state.get("inner_stream"), "inner_local": state.get("inner_local")}


# ---------------------------------------------------------------------------- Lightning Fabric
def fabric_trainer(fabric: Any, model: nn.Module, enc_opt: torch.optim.Optimizer,
                   dec_opt: torch.optim.Optimizer, **options: Any) -> "AggressiveTrainer":
    """An :class:`~aggressive_vi.AggressiveTrainer` whose steps go through a ``lightning.fabric.Fabric``.

    The model is moved to ``fabric.device``; the optimisers are set up with
    ``fabric.setup_optimizers`` (every step goes through Fabric's strategy and precision plugin);
    ``backward=fabric.backward`` (loss scaling); the model itself is not wrapped by Fabric: under a
    multi-process strategy the trainer builds its own encoder and decoder DDP wrappers over Fabric's
    process group (call ``fabric.launch()`` first). Run ``fit`` inside :func:`fabric_autocast` so that
    the precision's autocast covers every forward pass, the inner loop's included::

        fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp", precision="bf16-mixed")
        fabric.launch()
        trainer = fabric_trainer(fabric, vae, enc_opt, dec_opt, stopping=MIPlateau())
        with fabric_autocast(fabric):
            trainer.fit(train_loader, val_loader=val_loader, epochs=10)

    Args:
        options: keyword arguments of ``AggressiveTrainer`` (not ``backward``).

    Raises:
        ValueError: a precision with a gradient scaler (``"16-mixed"``): the trainer clips and checks
            gradients before the optimiser step, where a scaler's are still scaled (use
            ``"bf16-mixed"``, or ``AggressiveVI`` under the Lightning ``Trainer``, which clips after
            unscaling); or ``backward`` among ``options``.
    """
    from .trainer import AggressiveTrainer

    if "backward" in options:
        raise ValueError("fabric_trainer sets backward=fabric.backward itself; got backward= in options")
    precision: Any = getattr(getattr(fabric, "strategy", None), "precision", None)
    if getattr(precision, "scaler", None) is not None:
        raise ValueError(
            f"fabric_trainer does not support a precision with a gradient scaler (got "
            f"{type(precision).__name__} with {type(precision.scaler).__name__}): AggressiveTrainer clips and "
            "checks gradients before the step, while they are still scaled; use precision='bf16-mixed' or "
            "'32-true'")
    model.to(fabric.device)
    enc_opt, dec_opt = fabric.setup_optimizers(enc_opt, dec_opt)
    return AggressiveTrainer(model, enc_opt, dec_opt, backward=fabric.backward, **options)


def fabric_autocast(fabric: Any) -> Any:
    """The context to run ``AggressiveTrainer.fit`` in under ``fabric``'s precision.

    For a mixed precision this is ``torch.autocast`` with Fabric's device and dtype but
    ``cache_enabled=False``: ``fabric.autocast()`` caches the low-precision copies of the weights until
    the context exits, which is right around one forward pass but wrong around a whole ``fit`` (every
    forward would reuse the weights of the first while the optimisers update the fp32 ones; measured:
    the model stops changing and its fp32 weights diverge). Lightning's ``Trainer`` disables the cache
    the same way. Any other precision: ``fabric.autocast()`` itself.
    """
    precision = fabric.strategy.precision
    if type(precision).__name__ == "MixedPrecision":
        dtype = torch.bfloat16 if precision.precision == "bf16-mixed" else torch.float16
        return torch.autocast(fabric.device.type, dtype=dtype, cache_enabled=False)
    return fabric.autocast()
