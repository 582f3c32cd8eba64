"""Aggressive training inside PyTorch Lightning (``pip install aggressive-vi[lightning]``).

:class:`AggressiveVI` is a Lightning ``Callback`` that drives the library's one implementation of
Algorithm 1, :class:`~aggressive_vi.AggressiveStep`, from the user's ``training_step``. A user keeps
their ``LightningModule`` and ``Trainer``; under manual optimisation they add::

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

What the callback adds to the step (docs/lightning.md explains why):

* **The inner stream.** The inner loop draws its fresh batches from a second, independent stream over
  the training loader (as :class:`~aggressive_vi.AggressiveTrainer` does), or from ``inner_loader``.
* **global_step counts decoder updates.** Lightning's manual optimisation counts every
  ``LightningOptimizer.step()`` in ``global_step``, so each inner step would advance it too. The
  decoder's optimiser steps through its ``LightningOptimizer`` (counted, once per training batch);
  the encoder's, in inner and joint steps alike, steps through ``trainer.strategy.optimizer_step``
  on the unwrapped optimiser: the precision plugin and the ``on_before_optimizer_step`` hooks
  apply, the step counter does not move.
* **Precision.** Backward goes through ``LightningModule.manual_backward`` (the precision plugin's
  loss scaling) with ``inputs=`` the parameters being trained, the forward passes run inside
  Lightning's autocast context, and clipping and the non-finite check run in
  ``on_before_optimizer_step``, after a grad scaler has unscaled the gradients (gradients that the
  scaler unscales only later, e.g. the decoder's in a joint step, enter the norm divided by the scale).
  Under a grad scaler (``precision="16-mixed"``) a non-finite step is the scaler's to skip.
* **DDP.** Lightning wraps the whole ``LightningModule`` in one ``DistributedDataParallel``, whose
  reducer would wait for decoder gradients that an inner step never computes ("unused parameters").
  The callback switches that wrapper's gradient synchronisation off
  (``require_backward_grad_sync = False``, what ``no_sync()`` does) and trains through the library's
  own separate encoder and decoder wrappers (:class:`~aggressive_vi.distributed.TrainingNetworks`).
* **Checkpoints.** Its ``state_dict`` (saved by Lightning with every checkpoint) holds the step's state
  (phase, decoder-update count, stopping criterion, KL schedule) and the inner stream's position with
  every rank's random snapshot; a ``Trainer.fit(ckpt_path=...)`` continues from there.

Logged with ``pl_module.log`` (so every logger, ``EarlyStopping`` and ``ModelCheckpoint`` see them):
per step ``train_loss``, ``train_kl``, ``kl_weight``, ``inner_steps``, ``aggressive`` (a skipped update
logs nothing); per validation ``val_mi``, ``val_mi_stderr``, ``val_au``, ``val_kl``, ``val_elbo``,
``val_reconstruction`` (nats; reduced over ranks).
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, ContextManager, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

try:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("aggressive_vi.lightning needs Lightning: pip install 'aggressive-vi[lightning]' "
                      f"(import failed: {exc})") from exc

from ._impl.gate import finite_flag
from ._impl.loaders import check_inner_source, model_device, move_to_device
from ._impl.rng import rng_state, set_rng_state
from ._impl.streams import InnerStream
from .checkpoint import check_config
from .distributed import TrainingNetworks, all_gather_object, is_distributed, rank, world_size
from .metrics import ValidationMetrics, validation_or_default
from .protocols import KLSchedule, StoppingCriterion
from .fabric import fabric_autocast, fabric_trainer  # re-exported: Fabric users import them from here
from .step import AggressiveStep, StepDriver

__all__ = ["AggressiveVI", "fabric_trainer", "fabric_autocast"]

LoaderSource = Union[Iterable[Any], Callable[["pl.Trainer"], Iterable[Any]], None]


def _raw(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimiser inside a ``LightningOptimizer`` (or the optimiser itself)."""
    return getattr(optimizer, "optimizer", optimizer)


def _holds(optimizer: torch.optim.Optimizer, module: nn.Module) -> bool:
    ids = {id(p) for p in module.parameters()}
    return any(id(p) in ids for group in optimizer.param_groups for p in group["params"])


class _LightningEngine:
    """The engine under a Lightning ``Trainer``: ``manual_backward``, the strategy's optimiser steps
    (the decoder's counted in ``global_step``, the encoder's not), clipping and the finite check in
    ``on_before_optimizer_step`` (after the precision plugin unscaled)."""

    captures_inner = False

    def __init__(self, pl_module: "pl.LightningModule", dec_wrapper: Any, ddp: Optional[bool]) -> None:
        self.pl_module = pl_module
        self.dec_wrapper = dec_wrapper  # the decoder's LightningOptimizer: its steps are counted
        self.ddp = ddp
        self.scaler = getattr(pl_module.trainer.precision_plugin, "scaler", None)
        self._pending: Optional[Tuple[torch.Tensor, List[torch.Tensor], Optional[float]]] = None
        self._applied, self._error = True, False

    def networks(self, model: nn.Module, enc_opt: torch.optim.Optimizer,
                 dec_opt: torch.optim.Optimizer) -> TrainingNetworks:
        self.dec_opt = dec_opt
        return TrainingNetworks(model, self.ddp)

    def capture(self, body: Callable[[Any], Any], enc_opt: torch.optim.Optimizer) -> Callable[[Any], Any]:
        return body

    def autocast(self) -> ContextManager[Any]:
        return contextlib.nullcontext()  # Lightning's precision context wraps training_step

    def apply(self, loss: torch.Tensor, *, params: Sequence[torch.Tensor],
              optimizers: Sequence[torch.optim.Optimizer], unscale: Sequence[torch.optim.Optimizer] = (),
              max_norm: Optional[float], phase: str, allowed: Optional[torch.Tensor] = None) -> Tuple[bool, bool]:
        if allowed is not None and not bool(allowed):  # an earlier inner step of this loop failed
            return False, False
        self.pl_module.manual_backward(loss.mean(), inputs=list(params))
        self._pending = (loss, list(params), max_norm)
        self._applied, self._error = True, False
        strategy = self.pl_module.trainer.strategy
        for opt in optimizers:
            if opt is self.dec_opt:
                self.dec_wrapper.step()
            else:
                strategy.optimizer_step(opt, closure=lambda: None, model=self.pl_module)
        self._pending = None
        return self._applied, self._error

    def before_optimizer_step(self, optimizer: Any) -> None:
        """Clip and check the update under way (its first optimiser's hook: the norm covers every
        gradient of the update; those not unscaled yet count divided by the scale)."""
        if self._pending is None:
            return  # the second optimiser of a joint update: already clipped and checked
        loss, params, max_norm = self._pending
        self._pending = None
        own = {id(p) for group in _raw(optimizer).param_groups for p in group["params"]}
        later = [p for p in params if id(p) not in own] if self.scaler is not None else []
        inv_scale = 1.0 / float(self.scaler.get_scale()) if later and self.scaler is not None else 1.0
        now = [p for p in params if id(p) in own] if later else params
        if bool(finite_flag(loss, now, max_norm, scaled=later, inv_scale=inv_scale)):
            return
        self._applied = False
        self._error = self.scaler is None  # under a grad scaler an overflow is routine
        for p in params:
            p.grad = None  # the optimiser skips parameters without a gradient

    def state_dict(self) -> Dict[str, Any]:
        return {}  # Lightning saves its precision plugin's scaler itself

    def load_state_dict(self, state: Optional[Dict[str, Any]]) -> None:
        pass


class AggressiveVI(StepDriver, Callback):
    """Aggressive inference-network training (He et al., ICLR 2019) as a Lightning callback.

    The options ``stopping``, ``kl_schedule``, ``aggressive``, ``window``, ``max_inner_steps``,
    ``catch_up``, ``clip_grad_norm``, ``clip_scope``, ``n_samples``, ``on_nonfinite`` and
    ``validation`` are as in :class:`~aggressive_vi.AggressiveTrainer` (same defaults: the paper's).
    Precision and backward are Lightning's (``Trainer(precision=...)``).

    Args:
        model: the :class:`~aggressive_vi.VAE` (or module with ``.encoder``/``.decoder``) inside the
            ``LightningModule``, e.g. ``self.vae``.
        inner_loader: where the inner loop draws its fresh batches: a loader, or
            ``trainer -> loader``. Default: a second, independent stream over the training loader
            (under DDP, Lightning's sharded one), as :class:`~aggressive_vi.AggressiveTrainer` does.
        ddp: train through separate encoder/decoder DDP wrappers (``None``: whenever
            ``torch.distributed`` has several processes); see the module docstring.

    Attributes:
        algorithm: the :class:`~aggressive_vi.AggressiveStep` (built here; given its optimisers at
            ``on_train_start``, when ``configure_optimizers`` has made them).

    Raises:
        TypeError / ValueError: bad arguments (at construction), or at ``on_train_start`` a module
            that is not under manual optimisation, optimisers that do not split encoder/decoder, or
            a Trainer whose validation cannot feed a stopping criterion that needs it (named).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        stopping: Optional[StoppingCriterion] = None,
        kl_schedule: Optional[KLSchedule] = None,
        aggressive: bool = True,
        window: Optional[int] = None,
        max_inner_steps: int = 100,
        catch_up: Any = None,
        clip_grad_norm: Optional[float] = 5.0,
        clip_scope: str = "joint",
        n_samples: int = 1,
        on_nonfinite: str = "raise",
        validation: Optional[ValidationMetrics] = None,
        inner_loader: LoaderSource = None,
        ddp: Optional[bool] = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        self.model = model
        self.algorithm = AggressiveStep(  # checks the options now; bound to the optimisers at on_train_start
            model, stopping=stopping, kl_schedule=kl_schedule, aggressive=aggressive, window=window,
            max_inner_steps=max_inner_steps, catch_up=catch_up, clip_grad_norm=clip_grad_norm,
            clip_scope=clip_scope, n_samples=n_samples, on_nonfinite=on_nonfinite)
        self.validation = validation_or_default(model, validation)
        self.inner_source = inner_loader
        self.ddp = ddp
        self.epochs_decided = 0  # epochs whose end the stopping criterion has seen
        # per-fit
        self.inner: Optional[InnerStream] = None
        self.inner_loader: Optional[Iterable[Any]] = None
        self.last_inner_steps = 0
        self.skipped_steps = 0
        self._engine: Optional[_LightningEngine] = None
        self._restore: Optional[Dict[str, Any]] = None
        self._val_seen = False
        self._val_metrics: Dict[str, Any] = {}

    # ------------------------------------------------------------------ setup
    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if pl_module.automatic_optimization:
            raise ValueError("AggressiveVI needs manual optimisation: set self.automatic_optimization = False "
                             "in the LightningModule's __init__")
        self._check_validation(trainer, pl_module)
        if trainer.global_step != self.step:
            raise ValueError(
                f"AggressiveVI has taken {self.step} decoder updates in an earlier fit, but this Trainer starts at "
                f"global_step {trainer.global_step}: continue with Trainer.fit(..., ckpt_path=...), or build a new "
                "AggressiveVI (and module) to start over")
        enc, dec = self._split_optimizers(pl_module)
        self._silence_outer_ddp(trainer)
        self._engine = _LightningEngine(pl_module, dec, self.ddp)
        self.algorithm.bind(_raw(enc), _raw(dec), engine=self._engine)
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

    def _check_validation(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        """A stopping criterion that reads validation metrics needs a validation every epoch."""
        if not (self.is_aggressive and getattr(self.stopping, "requires_validation", False)):
            return
        criterion = f"stopping={self.stopping!r} decides at every epoch's end on validation metrics"
        overridden = type(pl_module).validation_step is not pl.LightningModule.validation_step
        if not overridden:
            raise ValueError(f"{criterion}, but {type(pl_module).__name__} has no validation_step: add one "
                             "(it may just pass; the callback computes the metrics itself), or use a criterion "
                             "such as FixedSteps(n)")
        every = trainer.check_val_every_n_epoch
        if every is not None and every != 1:
            raise ValueError(f"{criterion}, but Trainer(check_val_every_n_epoch={every}) validates only every "
                             f"{every} epochs: use check_val_every_n_epoch=1, or a criterion such as FixedSteps(n)")

    @staticmethod
    def _silence_outer_ddp(trainer: "pl.Trainer") -> None:
        """Lightning's one wrapper around the whole module would wait for decoder gradients that
        inner steps never compute; the library's own encoder/decoder wrappers synchronise instead."""
        outer = trainer.strategy.model
        if isinstance(outer, nn.parallel.DistributedDataParallel):
            outer.require_backward_grad_sync = False

    def _split_optimizers(self, pl_module: "pl.LightningModule") -> Tuple[Any, Any]:
        optimizers = pl_module.optimizers(use_pl_optimizer=True)
        optimizers = list(optimizers) if isinstance(optimizers, (list, tuple)) else [optimizers]
        vae = self.algorithm.vae
        enc = [o for o in optimizers if _holds(_raw(o), vae.encoder)]
        dec = [o for o in optimizers if _holds(_raw(o), vae.decoder)]
        if len(enc) != 1 or len(dec) != 1 or enc[0] is dec[0]:
            raise ValueError(
                "configure_optimizers must return one optimiser over the encoder's parameters and one over "
                f"the decoder's, e.g. [Adam(vae.encoder.parameters()), Adam(vae.decoder.parameters())]; got "
                f"{len(optimizers)} optimiser(s), {len(enc)} holding encoder and {len(dec)} holding decoder "
                "parameters")
        return enc[0], dec[0]

    def _make_inner_loader(self, trainer: "pl.Trainer") -> Iterable[Any]:
        source = self.inner_source
        if source is None:
            train: Any = trainer.train_dataloader  # a second, independent stream over it
            check_inner_source(train, None)  # not one a persistent-worker loader can give
            return train
        return source(trainer) if callable(source) and not hasattr(source, "__iter__") else source

    # ------------------------------------------------------------------ the algorithm
    def training_step(self, pl_module: "pl.LightningModule", batch: Any) -> torch.Tensor:
        """One decoder update on ``batch``, preceded while aggressive by the encoder's catch-up loop
        on fresh batches from the inner stream; call it from ``training_step``.

        Returns the batch's mean loss (negative annealed ELBO, nats per example), detached.
        """
        trainer = pl_module.trainer
        inner = self.inner
        if inner is None or not self.algorithm.bound:
            raise RuntimeError("AggressiveVI.training_step ran before on_train_start: add the callback to the "
                               "Trainer (or return it from configure_callbacks)")
        self._silence_outer_ddp(trainer)
        device = model_device(self.algorithm.vae)
        get_input = self.algorithm.vae.get_input  # the model's: VAE(..., get_input=...)
        steps_per_epoch = trainer.num_training_batches
        out = self.algorithm(
            move_to_device(get_input(batch), device), lambda: move_to_device(get_input(next(inner)), device),
            epoch=trainer.current_epoch, steps_per_epoch=int(steps_per_epoch) if math.isfinite(steps_per_epoch) else 1,
            batch_index=trainer.fit_loop.epoch_loop.batch_idx)
        self.last_inner_steps = out.inner_steps
        self.skipped_steps += out.skipped_inner + (not out.applied)
        loss = out.terms.loss.mean()
        if out.applied:
            pl_module.log_dict({"train_loss": loss, "train_kl": out.terms.kl.mean(), "kl_weight": out.kl_weight,
                                "inner_steps": float(out.inner_steps), "aggressive": float(out.aggressive)},
                               on_step=True, on_epoch=False)
        return loss

    def on_before_optimizer_step(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                                 optimizer: Any) -> None:
        """Clip (after a grad scaler has unscaled) and check the gradients of the update under way;
        a non-finite one is dropped (the optimiser then changes nothing)."""
        if self._engine is not None:
            self._engine.before_optimizer_step(optimizer)

    # ------------------------------------------------------------------ validation and the switch
    def on_validation_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self.validation.reset()
        self._val_seen = False

    def on_validation_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.sanity_checking or dataloader_idx != 0:
            return
        self.validation.update(self.algorithm.vae.get_input(batch))  # eval mode, no gradient
        self._val_seen = True

    def on_validation_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.sanity_checking or not self._val_seen:
            return
        self._val_metrics = self.validation.compute()  # reduced over ranks
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
        if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # cut short (max_steps, a stop): the epoch did not end, nor did its validation run
        self._epoch_end(trainer)  # no-op when validation already decided for this epoch

    def _epoch_end(self, trainer: "pl.Trainer") -> None:
        epoch = trainer.current_epoch
        if self.epochs_decided > epoch:
            return
        self.epochs_decided = epoch + 1
        if (not self._val_metrics and self.is_aggressive
                and getattr(self.stopping, "requires_validation", False)):
            raise ValueError(
                f"stopping={self.stopping!r} decides at every epoch's end on validation metrics, but no "
                f"validation ran in epoch {epoch}: give Trainer.fit(module, train_loader, val_loader) a "
                "validation loader (with limit_val_batches > 0), or use a criterion such as FixedSteps(n)")
        self.algorithm.end_epoch(epoch, self._val_metrics)
        self._val_metrics = {}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        """The step's state (phase, counters, stopping / KL-schedule states) and the inner stream's
        position, with every rank's random snapshot of its current pass (gathered: Lightning saves
        rank 0's callback state). A collective under DDP: Lightning calls it on every rank when it
        checkpoints."""
        inner = self.inner
        local = inner.local_state_dict() if inner is not None else None
        gathered = all_gather_object(local)
        return {
            "algorithm": self.algorithm.state_dict(),
            "epochs_decided": self.epochs_decided,
            "inner_stream": inner.state_dict() if inner is not None else None,
            "inner_local": dict(enumerate(gathered)),
            "world_size": world_size(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (also the layout of version 0.1, with the step's state at the top
        level); the inner stream is replayed at the next ``on_train_start``.

        Raises:
            CheckpointError: the checkpoint was saved with other algorithm options or another
                ``kl_threshold`` on the model (each named with its saved and current value).
        """
        algorithm = state.get("algorithm")
        if algorithm is None:  # 0.1's layout
            algorithm = {"updates": state["step"], "is_aggressive": state["is_aggressive"],
                         "left_aggressive_at": state.get("left_aggressive_at"), "stopping": state.get("stopping"),
                         "stopping_type": state.get("stopping_type"), "kl_schedule": state.get("kl_schedule")}
        check_config(algorithm.get("config"), self.algorithm.config(), "the Lightning checkpoint")
        self.algorithm.load_state_dict(algorithm, "the Lightning checkpoint")
        self.epochs_decided = int(state.get("epochs_decided", 0))
        self._restore = {"inner_stream": state.get("inner_stream"), "inner_local": state.get("inner_local")}
