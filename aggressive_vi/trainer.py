"""``AggressiveTrainer``: the training procedure of He et al. (ICLR 2019), Algorithm 1.

For every training minibatch, while the trainer is *aggressive*:

1. **Catch up** (:meth:`AggressiveTrainer._catch_up_encoder`): take encoder-only steps on the
   (annealed) negative ELBO, the first on the minibatch itself and each later one on a fresh minibatch
   from the training (or ``inner_loader``) stream, until the mean loss of a window of ``window`` steps
   is higher than the previous window's (the first window is compared with +inf, so at least two
   windows run), or ``max_inner_steps`` steps are taken.
2. **Decoder step** (:meth:`AggressiveTrainer._decoder_step`): one decoder-only step on the original
   minibatch.

After every decoder update and every epoch the stopping criterion is asked whether to leave the
aggressive phase; from then on each minibatch gets one joint step (:meth:`_joint_step`), i.e. basic
VAE training.

Deviations from the paper's code, on purpose:

* No gradient is computed for the decoder's weights during the inner steps (the paper's code computes
  and discards them) and none for the encoder's during the decoder step. Gradient clipping therefore
  applies to the encoder's gradient norm alone in inner steps and to the decoder's alone in decoder
  steps (the paper clips the joint norm, which includes the discarded gradients). In joint steps the
  joint norm is clipped, as in the paper.
* The cap counts inner steps exactly (``max_inner_steps=100`` allows 100; the paper's loop allows 99),
  and the window loss is averaged per example (the text code averages per word).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .batches import FreshBatches, extract_input, loader_length, model_device, move_to_device
from .callbacks import PrintLogger, ProgressBar, StepInfo
from .checkpoint import load_checkpoint
from .distributed import TrainingNetworks, all_reduce_sum, any_rank
from .estimators import summary
from .faults import (ON_NONFINITE, DeferredInterrupt, NonFiniteError, batch_context, clip_and_check,
                     describe_input, nonfinite_message)
from .history import History
from .model import ELBOTerms, as_vae
from .protocols import KLSchedule, StoppingCriterion, TrainingEvent
from .resume import EpochProgress, LoaderPosition
from .schedules import ConstantKL
from .stopping import MIPlateau
from .trainer_state import load_trainer_state_dict, resume_position, trainer_state_dict

__all__ = ["AggressiveTrainer"]


def _optimizer_params(optimizer: torch.optim.Optimizer) -> List[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _check_optimizer(name: str, optimizer: Any, own: nn.Module, own_name: str,
                     other: nn.Module, other_name: str) -> None:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"{name} must be a torch.optim.Optimizer; got {type(optimizer).__name__}")
    own_ids = {id(p) for p in own.parameters()}
    other_names = {id(p): n for n, p in other.named_parameters()}
    held = _optimizer_params(optimizer)
    for p in held:
        if id(p) in other_names and id(p) not in own_ids:
            raise ValueError(
                f"{name} holds the {other_name} parameter {other_names[id(p)]!r} "
                f"(shape {tuple(p.shape)}); expected only {own_name} parameters, e.g. "
                f"torch.optim.SGD(model.{own_name}.parameters(), lr=...)"
            )
    if not any(id(p) in own_ids for p in held):
        raise ValueError(f"{name} holds no {own_name} parameter; expected model.{own_name}.parameters()")


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")


class AggressiveTrainer:
    """Trains a VAE with aggressive inference-network updates until the stopping criterion fires.

    Args:
        model: a :class:`~aggressive_vi.VAE`, or any module with ``.encoder`` and ``.decoder`` that
            meet :class:`~aggressive_vi.protocols.Encoder` / :class:`~aggressive_vi.protocols.Decoder`.
        enc_opt: optimiser over the encoder's parameters only.
        dec_opt: optimiser over the decoder's parameters only.
        stopping: when to leave the aggressive phase (default :class:`~aggressive_vi.MIPlateau`,
            the paper's text rule; it needs ``val_loader``).
        kl_schedule: KL weight per decoder update (default ``ConstantKL(1.0)``).
        aggressive: ``False`` gives basic VAE training from the start (the baseline).
        window: inner steps per window of the catch-up test (paper: 15 text, 10 images).
        max_inner_steps: cap on inner steps per decoder update (paper: 100).
        clip_grad_norm: max gradient norm (paper: 5.0); ``None`` disables clipping.
        n_samples: z samples per example in the training ELBO (paper: 1).
        au_threshold: variance threshold of the validation active-unit count (paper: 0.01).
        on_nonfinite: ``"raise"`` (default): a NaN/inf loss or gradient stops training with a
            :class:`~aggressive_vi.NonFiniteError` before the step is applied; ``"skip"``: the step is
            not applied, training goes on, and the skips are counted in the history.
        ddp: under an initialised ``torch.distributed`` process group, wrap encoder and decoder in
            separate ``DistributedDataParallel`` wrappers (``None``: whenever there are several
            processes). See :mod:`aggressive_vi.distributed`.
        callbacks: objects with any of the hooks in :mod:`aggressive_vi.callbacks`.
        verbose: print one line per epoch (adds a :class:`~aggressive_vi.PrintLogger`).
        progress: show a progress bar (adds a :class:`~aggressive_vi.ProgressBar`).

    Raises:
        TypeError / ValueError: bad arguments, e.g. an optimiser holding the other network's
            parameters; raised here, before any parameter changes.
    """

    def __init__(
        self,
        model: nn.Module,
        enc_opt: torch.optim.Optimizer,
        dec_opt: torch.optim.Optimizer,
        *,
        stopping: Optional[StoppingCriterion] = None,
        kl_schedule: Optional[KLSchedule] = None,
        aggressive: bool = True,
        window: int = 15,
        max_inner_steps: int = 100,
        clip_grad_norm: Optional[float] = 5.0,
        n_samples: int = 1,
        au_threshold: float = 0.01,
        on_nonfinite: str = "raise",
        ddp: Optional[bool] = None,
        callbacks: Sequence[Any] = (),
        verbose: bool = False,
        progress: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        self.model = model
        self.vae = as_vae(model)
        _check_optimizer("enc_opt", enc_opt, self.vae.encoder, "encoder", self.vae.decoder, "decoder")
        _check_optimizer("dec_opt", dec_opt, self.vae.decoder, "decoder", self.vae.encoder, "encoder")
        _check_positive_int("window", window)
        _check_positive_int("max_inner_steps", max_inner_steps)
        _check_positive_int("n_samples", n_samples)
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be positive or None; got {clip_grad_norm!r}")
        if on_nonfinite not in ON_NONFINITE:
            raise ValueError(f"on_nonfinite must be one of {ON_NONFINITE}; got {on_nonfinite!r}")
        self.stopping: StoppingCriterion = stopping if stopping is not None else MIPlateau()
        if not callable(getattr(self.stopping, "should_stop", None)):
            raise TypeError(
                f"stopping must have a method should_stop(event) -> bool; got "
                f"{type(self.stopping).__name__}"
            )
        self.kl_schedule: KLSchedule = kl_schedule if kl_schedule is not None else ConstantKL(1.0)
        if not callable(self.kl_schedule):
            raise TypeError(
                f"kl_schedule must be callable as schedule(step, steps_per_epoch) -> float; got "
                f"{type(self.kl_schedule).__name__}"
            )
        self.enc_opt = enc_opt
        self.dec_opt = dec_opt
        self.window = window
        self.max_inner_steps = max_inner_steps
        self.clip_grad_norm = clip_grad_norm
        self.n_samples = n_samples
        self.au_threshold = au_threshold
        self.on_nonfinite = on_nonfinite
        self.callbacks: List[Any] = list(callbacks)
        if progress:  # before the logger, so the bar's line is closed when an epoch line prints
            self.callbacks.append(ProgressBar())
        if verbose:
            self.callbacks.append(PrintLogger())
        self._enc_params = [p for p in self.vae.encoder.parameters() if p.requires_grad]
        self._dec_params = [p for p in self.vae.decoder.parameters() if p.requires_grad]
        self.nets = TrainingNetworks(model, ddp)  # the model itself, or DDP views of it

        # training state (all of it goes into state_dict)
        self.epoch = 0  # epochs completed
        self.step = 0  # decoder updates taken (skipped ones included)
        self.is_aggressive = bool(aggressive)
        self.history = History()
        self.stop_training = False
        self.steps_per_epoch: Optional[int] = None
        self.last_checkpoint: Optional[str] = None  # set by the Checkpoint callback
        self.at_step_boundary = True  # False while a decoder update is under way
        self._batches: Optional[LoaderPosition] = None  # the epoch in progress: its iterator
        self._progress: Optional[EpochProgress] = None  # ... and its running sums
        self._fresh: Optional[FreshBatches] = None
        self._loaders: Sequence[Any] = ()
        self._pending: Optional[Dict[str, Any]] = None  # a loaded position, applied by fit
        self._interrupt = DeferredInterrupt()
        self._batch_index = self._inner_step = 0
        self._first_batch: Optional[str] = None

    # ------------------------------------------------------------------ the algorithm
    def fit(
        self,
        train_loader: Iterable[Any],
        *,
        val_loader: Optional[Iterable[Any]] = None,
        epochs: int = 1,
        inner_loader: Optional[Iterable[Any]] = None,
        steps_per_epoch: Optional[int] = None,
        resume_from: Optional[Any] = None,
    ) -> History:
        """Train until ``epochs`` epochs are complete (counting epochs of earlier ``fit`` calls).

        Args:
            train_loader: yields minibatches (a tensor, ``(x, ...)`` or ``{"x": x, ...}``).
            val_loader: data for the per-epoch validation MI, AU, KL and ELBO (needed by
                :class:`~aggressive_vi.MIPlateau`).
            epochs: total number of epochs to have trained when ``fit`` returns.
            inner_loader: where the inner loop draws its fresh minibatches (default: a second,
                independent iterator over ``train_loader``).
            steps_per_epoch: needed only when ``train_loader`` has no ``len``.
            resume_from: a checkpoint file (or a directory of them: the latest is used) written by
                :class:`~aggressive_vi.Checkpoint`; training continues exactly where it was saved,
                given loaders that yield the same batches (docs/checkpointing.md). ``None``: go on
                from the trainer's current state.

        Returns:
            The :class:`~aggressive_vi.History` of all epochs so far.

        Raises:
            NonFiniteError: a NaN/inf loss or gradient (with ``on_nonfinite="raise"``).
            CheckpointError: ``resume_from`` does not fit this model, optimisers or loader.
            KeyboardInterrupt: after writing a checkpoint when a Checkpoint callback is present.
        """
        steps = self._check_fit_args(train_loader, val_loader, epochs, steps_per_epoch)
        if resume_from is not None:
            self.load_state_dict(load_checkpoint(resume_from))
        self.steps_per_epoch = steps
        self.stop_training = False
        self._first_batch = None
        inner_source = inner_loader if inner_loader is not None else train_loader
        fresh = self._fresh  # the inner loop's stream goes on across fit calls over the same loader
        if fresh is None or fresh.loader is not inner_source or self._pending is not None:
            fresh = FreshBatches(inner_source)
        self._fresh, self._loaders = fresh, (train_loader, fresh.loader)
        resume_position(self, train_loader, fresh)  # no-op unless a checkpoint was loaded
        modes = [(m, m.training) for m in self.model.modules()]
        self._call("on_fit_start")
        try:
            with self._interrupt:  # a first Ctrl-C ends fit at the next step boundary
                while self.epoch < epochs and not self.stop_training:
                    self._run_epoch(train_loader, val_loader, fresh)
                    self._stop_requested()  # a Ctrl-C during validation is honoured here
        except KeyboardInterrupt:
            self._call("on_interrupt")  # e.g. Checkpoint writes one before we propagate
            raise
        finally:
            for module, mode in modes:
                module.training = mode
        self._call("on_fit_end")
        return self.history

    def _run_epoch(self, train_loader: Iterable[Any], val_loader: Optional[Iterable[Any]],
                   fresh: FreshBatches) -> None:
        epoch = self.epoch
        batches, progress = self._epoch_position(train_loader)  # a resumed epoch goes on from there
        self._call("on_epoch_start", epoch)
        device = model_device(self.vae)
        for batch in batches:
            self._batch_index = batch_index = batches.consumed - 1
            self.at_step_boundary = False
            with batch_context(self._where, batch, self._first_batch):  # errors name the batch
                self.model.train()
                x = move_to_device(extract_input(batch), device)
                if self.is_aggressive and self.stopping.should_stop(
                    TrainingEvent(epoch=epoch, step=self.step, epoch_end=False)
                ):
                    progress.left_aggressive_at = self.step
                    self._leave_aggressive()
                kl_weight = float(self.kl_schedule(self.step, self.steps_per_epoch or 1))
                if self.is_aggressive:
                    inner, skipped_inner = self._catch_up_encoder(x, fresh, kl_weight)
                    terms, applied = self._decoder_step(x, kl_weight)
                else:
                    inner, skipped_inner = 0, 0
                    terms, applied = self._joint_step(x, kl_weight)
            if self._first_batch is None:
                self._first_batch = describe_input(batch)
            self.step += 1
            progress.add(*(terms if applied else (None, None, None)), inner_steps=inner,
                         aggressive=inner > 0, kl_weight=kl_weight, skipped_inner=skipped_inner)
            self.at_step_boundary = True
            self._call("on_step_end", StepInfo(
                epoch=epoch, step=self.step, batch_index=batch_index, loss=terms.loss.mean(),
                kl=terms.kl.mean(), kl_weight=kl_weight, aggressive=inner > 0, inner_steps=inner,
                skipped=not applied))
            if self._stop_requested():
                break
        if progress.batches == 0:
            raise ValueError("train_loader yielded no batch; expected a non-empty loader")
        val: Dict[str, Any] = {}
        if val_loader is not None:
            val = summary(self.model, val_loader, au_threshold=self.au_threshold)
        record = progress.record(val)  # training sums reduced over ranks
        if self.is_aggressive and self.stopping.should_stop(
            TrainingEvent(epoch=epoch, step=self.step, epoch_end=True, metrics=record.to_dict())
        ):
            record.left_aggressive_at = self.step
            self._leave_aggressive()
        record.wall_time = progress.elapsed
        self._batches = self._progress = None
        self.history.append(record)
        self.epoch += 1
        self._call("on_epoch_end", record)

    def _catch_up_encoder(self, x: Any, fresh: FreshBatches, kl_weight: float) -> Tuple[int, int]:
        """Encoder-only steps until the inference network stops improving.

        The first step uses ``x``, each later one a fresh minibatch. Every ``window`` steps the mean
        loss per example over the window is compared with the previous window's (+inf at first); the
        loop ends when it went up, or after ``max_inner_steps`` steps. Under ``torch.distributed``
        the window's sums are all-reduced first, so every rank leaves on the same step.

        Returns:
            ``(steps taken, steps skipped for a non-finite loss or gradient)``.
        """
        device = model_device(self.vae)
        window_loss = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device
        window_count = 0  # examples in the window's applied steps (known on the host)
        previous = math.inf
        steps = skipped = 0
        while True:
            self._inner_step = steps + 1
            applied = self._encoder_step(x, kl_weight)
            if applied is None:
                skipped += 1
            else:
                window_loss += applied[0]
                window_count += applied[1]
            steps += 1
            if steps % self.window == 0:  # the only host sync of the loop
                sums = torch.stack([window_loss, window_loss.new_tensor(float(window_count))])
                loss_total, count = all_reduce_sum(sums).tolist()
                current = loss_total / count if count > 0 else math.inf
                if current > previous:
                    break
                previous = current
                window_loss.zero_()
                window_count = 0
            if steps >= self.max_inner_steps:
                break
            x = move_to_device(extract_input(next(fresh)), device)
        self._inner_step = 0
        self.enc_opt.zero_grad(set_to_none=True)  # no stale encoder gradient outlives the loop
        return steps, skipped

    def _encoder_step(self, x: Any, kl_weight: float) -> Optional[Tuple[torch.Tensor, int]]:
        """One encoder-only update; no gradient is computed for the decoder's weights.

        Returns the batch's summed loss (a float64 0-d tensor on the model's device, not synced) and
        its number of examples, or ``None`` when the step was skipped for a non-finite loss or
        gradient.
        """
        self.enc_opt.zero_grad(set_to_none=True)
        terms = self.nets.inner.elbo(x, kl_weight=kl_weight, n_samples=self.n_samples)
        torch.autograd.backward(terms.loss.mean(), inputs=self._enc_params)
        if not self._clip_and_check(terms.loss, self._enc_params, "inner", x):
            return None
        self.enc_opt.step()
        return terms.loss.detach().sum().double(), terms.loss.shape[0]

    def _decoder_step(self, x: Any, kl_weight: float) -> Tuple[ELBOTerms, bool]:
        """One decoder-only update on ``x``; the encoder runs without gradient.

        Returns the batch's terms and whether the update was applied (not skipped)."""
        with torch.no_grad():
            mean, logvar = self.nets.decoder.encode(x)
        self.dec_opt.zero_grad(set_to_none=True)
        terms = self.nets.decoder.elbo_given(x, mean, logvar, kl_weight=kl_weight,
                                             n_samples=self.n_samples)
        terms.loss.mean().backward()
        applied = self._clip_and_check(terms.loss, self._dec_params, "decoder", x)
        if applied:
            self.dec_opt.step()
        self.dec_opt.zero_grad(set_to_none=True)  # none left for the next inner loop to carry
        return _detached(terms), applied

    def _joint_step(self, x: Any, kl_weight: float) -> Tuple[ELBOTerms, bool]:
        """One basic-VAE update of encoder and decoder together (joint gradient norm clipped)."""
        self.enc_opt.zero_grad(set_to_none=True)
        self.dec_opt.zero_grad(set_to_none=True)
        terms = self.nets.joint.elbo(x, kl_weight=kl_weight, n_samples=self.n_samples)
        terms.loss.mean().backward()
        applied = self._clip_and_check(terms.loss, self._enc_params + self._dec_params, "joint", x)
        if applied:
            self.enc_opt.step()
            self.dec_opt.step()
        return _detached(terms), applied

    # ------------------------------------------------------------------ helpers
    def _clip_and_check(self, loss: torch.Tensor, params: List[torch.Tensor], phase: str,
                        x: Any) -> bool:
        """Clip the gradient norm; ``True`` when loss and gradients are finite on every rank.

        Otherwise the gradients are dropped and, with ``on_nonfinite="raise"``, a
        :class:`NonFiniteError` names where it happened (the model keeps its last finite state).
        """
        if clip_and_check(loss, params, self.clip_grad_norm):
            return True
        self.enc_opt.zero_grad(set_to_none=True)
        self.dec_opt.zero_grad(set_to_none=True)
        if self.on_nonfinite == "raise":
            where = dict(epoch=self.epoch, step=self.step + 1, batch_index=self._batch_index,
                         phase=phase, inner_step=self._inner_step if phase == "inner" else None,
                         checkpoint=self.last_checkpoint)
            raise NonFiniteError(nonfinite_message(loss=loss, x=x, **where), **where)
        return False

    def _where(self) -> str:
        """Where training is, for error messages: epoch, batch, inner step."""
        text = f"epoch {self.epoch}, batch {self._batch_index} (decoder update {self.step + 1})"
        if self._inner_step > 1:
            text += f", inner step {self._inner_step} (on a fresh batch from the inner loop's loader)"
        return text

    def _stop_requested(self) -> bool:
        """After a decoder update: should the epoch end here? A Ctrl-C raises ``KeyboardInterrupt``
        at this step boundary. Under DDP the flags are OR-ed over ranks (one small all-reduce)."""
        stop, interrupt = any_rank(self.stop_training, self._interrupt.requested,
                                   device=model_device(self.vae))
        self.stop_training = stop
        if interrupt:
            raise KeyboardInterrupt(f"fit interrupted ({self._interrupt.signal_name or 'on another rank'}); "
                                    "stopped at a step boundary")
        return stop

    def _leave_aggressive(self) -> None:
        self.is_aggressive = False
        self._call("on_phase_change", self.step)

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            fn = getattr(callback, hook, None)
            if fn is not None:
                fn(self, *args)

    def _check_fit_args(self, train_loader: Iterable[Any], val_loader: Optional[Iterable[Any]],
                        epochs: int, steps_per_epoch: Optional[int]) -> int:
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative int; got {epochs!r}")
        length = loader_length(train_loader)
        if length == 0:
            raise ValueError("train_loader is empty (len 0); expected at least one batch")
        if val_loader is not None and loader_length(val_loader) == 0:
            raise ValueError("val_loader is empty (len 0); expected at least one batch or None")
        if (self.is_aggressive and val_loader is None
                and getattr(self.stopping, "requires_validation", False)):
            raise ValueError(
                f"stopping={self.stopping!r} decides on validation metrics but val_loader is None; "
                "pass fit(..., val_loader=...) or use a criterion such as FixedSteps(n)"
            )
        if steps_per_epoch is not None:
            _check_positive_int("steps_per_epoch", steps_per_epoch)
            return steps_per_epoch
        if length is None:
            raise ValueError(
                "train_loader has no len(); pass fit(..., steps_per_epoch=N) so that the KL "
                "schedule knows how long an epoch is"
            )
        return length

    # ------------------------------------------------------------------ position in the run
    def _epoch_position(self, train_loader: Iterable[Any]) -> Tuple[LoaderPosition, EpochProgress]:
        """The epoch's batch iterator and running sums: new ones (``set_epoch`` called on the
        loader's sampler) unless a checkpoint taken mid-epoch was just resumed."""
        if self._batches is None or self._progress is None:
            self._batches = LoaderPosition(train_loader, self.epoch)
            self._progress = EpochProgress(self.epoch, self.is_aggressive, model_device(self.vae))
        return self._batches, self._progress

    # ------------------------------------------------------------------ state (see trainer_state.py)
    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to continue training exactly: model, optimisers, counters, phase,
        history, stopping-criterion / KL-schedule / callback states, the position inside the epoch
        and in the inner loop's stream, and each process's random state and running epoch sums.

        Only tensors, numbers, strings, lists and dicts: readable with ``weights_only=True``.
        """
        return trainer_state_dict(self)

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; the position in the epoch and the random state
        take effect at the next :meth:`fit` (with the same loaders).

        Raises:
            CheckpointError: another format, or a model/optimiser/stopping criterion that does not
                fit (the error names the mismatched keys and shapes).
        """
        load_trainer_state_dict(self, state)


def _detached(terms: ELBOTerms) -> ELBOTerms:
    return ELBOTerms(*(t.detach() for t in terms))
