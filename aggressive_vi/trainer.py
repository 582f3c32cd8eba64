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
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence

import torch
from torch import nn

from .batches import FreshBatches, extract_input, loader_length, model_device, move_to_device
from .callbacks import Callback, PrintLogger, ProgressBar, StepInfo
from .distributed import all_reduce_sum
from .estimators import summary
from .history import EpochRecord, History
from .model import ELBOTerms, as_vae
from .protocols import KLSchedule, StoppingCriterion, TrainingEvent, optional_state
from .schedules import ConstantKL
from .stopping import MIPlateau

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
        self.callbacks: List[Any] = list(callbacks)
        if verbose:
            self.callbacks.append(PrintLogger())
        if progress:
            self.callbacks.append(ProgressBar())
        self._enc_params = [p for p in self.vae.encoder.parameters() if p.requires_grad]
        self._dec_params = [p for p in self.vae.decoder.parameters() if p.requires_grad]

        # training state (all of it goes into state_dict)
        self.epoch = 0  # epochs completed
        self.step = 0  # decoder updates taken
        self.is_aggressive = bool(aggressive)
        self.history = History()
        self.stop_training = False
        self.steps_per_epoch: Optional[int] = None

    # ------------------------------------------------------------------ the algorithm
    def fit(
        self,
        train_loader: Iterable[Any],
        *,
        val_loader: Optional[Iterable[Any]] = None,
        epochs: int = 1,
        inner_loader: Optional[Iterable[Any]] = None,
        steps_per_epoch: Optional[int] = None,
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

        Returns:
            The :class:`~aggressive_vi.History` of all epochs so far.
        """
        steps = self._check_fit_args(train_loader, val_loader, epochs, steps_per_epoch)
        self.steps_per_epoch = steps
        self.stop_training = False
        fresh = FreshBatches(inner_loader if inner_loader is not None else train_loader)
        modes = [(m, m.training) for m in self.model.modules()]
        self._call("on_fit_start")
        try:
            while self.epoch < epochs and not self.stop_training:
                self._run_epoch(train_loader, val_loader, fresh)
        finally:
            for module, mode in modes:
                module.training = mode
        self._call("on_fit_end")
        return self.history

    def _run_epoch(self, train_loader: Iterable[Any], val_loader: Optional[Iterable[Any]],
                   fresh: FreshBatches) -> None:
        start = time.perf_counter()
        epoch, began_aggressive = self.epoch, self.is_aggressive
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)  # type: ignore[union-attr]
        self._call("on_epoch_start", epoch)
        device = model_device(self.vae)
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, reconstruction, kl
        examples = batches = aggressive_steps = inner_total = 0
        kl_weight = float("nan")
        for batch_index, batch in enumerate(train_loader):
            self.model.train()
            x = move_to_device(extract_input(batch), device)
            if self.is_aggressive and self.stopping.should_stop(
                TrainingEvent(epoch=epoch, step=self.step, epoch_end=False)
            ):
                self._leave_aggressive()
            kl_weight = float(self.kl_schedule(self.step, self.steps_per_epoch or 1))
            if self.is_aggressive:
                inner = self._catch_up_encoder(x, fresh, kl_weight)
                terms = self._decoder_step(x, kl_weight)
                aggressive_steps += 1
                inner_total += inner
            else:
                inner = 0
                terms = self._joint_step(x, kl_weight)
            self.step += 1
            batches += 1
            n = terms.loss.shape[0]
            examples += n
            sums += torch.stack([terms.loss.sum(), terms.reconstruction.sum(), terms.kl.sum()]).double()
            self._call("on_step_end", StepInfo(
                epoch=epoch, step=self.step, batch_index=batch_index, loss=terms.loss.mean(),
                kl=terms.kl.mean(), kl_weight=kl_weight, aggressive=inner > 0, inner_steps=inner))
            if self.stop_training:
                break
        if batches == 0:
            raise ValueError("train_loader yielded no batch; expected a non-empty loader")
        loss, reconstruction, kl = (sums / examples).tolist()
        val: Dict[str, Any] = {}
        if val_loader is not None:
            val = summary(self.model, val_loader, au_threshold=self.au_threshold)
        record = EpochRecord(
            epoch=epoch, steps=batches, loss=loss, reconstruction=reconstruction, kl=kl,
            kl_weight=kl_weight, aggressive=began_aggressive, aggressive_steps=aggressive_steps,
            inner_steps_mean=inner_total / aggressive_steps if aggressive_steps else 0.0,
            val_mi=val.get("mi"), val_au=val.get("au"), val_kl=val.get("kl"),
            val_elbo=val.get("elbo"), val_reconstruction=val.get("reconstruction"),
        )
        if self.is_aggressive and self.stopping.should_stop(
            TrainingEvent(epoch=epoch, step=self.step, epoch_end=True, metrics=record.to_dict())
        ):
            self._leave_aggressive()
        record.wall_time = time.perf_counter() - start
        self.history.append(record)
        self.epoch += 1
        self._call("on_epoch_end", record)

    def _catch_up_encoder(self, x: Any, fresh: FreshBatches, kl_weight: float) -> int:
        """Encoder-only steps until the inference network stops improving; returns how many.

        The first step uses ``x``, each later one a fresh minibatch. Every ``window`` steps the mean
        loss per example over the window is compared with the previous window's (+inf at first); the
        loop ends when it went up, or after ``max_inner_steps`` steps. Under ``torch.distributed``
        the window's sums are all-reduced first, so every rank leaves on the same step.
        """
        window_sums = torch.zeros(2, dtype=torch.float64, device=model_device(self.vae))
        previous = math.inf
        steps = 0
        while True:
            window_sums += self._encoder_step(x, kl_weight)
            steps += 1
            if steps % self.window == 0:
                loss_sum, count = all_reduce_sum(window_sums).tolist()
                current = loss_sum / count
                if current > previous:
                    break
                previous = current
                window_sums.zero_()
            if steps >= self.max_inner_steps:
                break
            x = move_to_device(extract_input(next(fresh)), model_device(self.vae))
        self.enc_opt.zero_grad(set_to_none=True)  # no stale encoder gradient outlives the loop
        return steps

    def _encoder_step(self, x: Any, kl_weight: float) -> torch.Tensor:
        """One encoder-only update; no gradient is computed for the decoder's weights.

        Returns ``[loss sum, examples]`` of the batch (float64, on the model's device, not synced).
        """
        self.enc_opt.zero_grad(set_to_none=True)
        terms = self.vae.elbo(x, kl_weight=kl_weight, n_samples=self.n_samples)
        torch.autograd.backward(terms.loss.mean(), inputs=self._enc_params)
        self._clip(self._enc_params)
        self.enc_opt.step()
        loss = terms.loss.detach()
        return torch.stack([loss.sum().double(), loss.new_tensor(loss.shape[0], dtype=torch.float64)])

    def _decoder_step(self, x: Any, kl_weight: float) -> ELBOTerms:
        """One decoder-only update on ``x``; the encoder runs without gradient."""
        with torch.no_grad():
            mean, logvar = self.vae.encode(x)
        self.dec_opt.zero_grad(set_to_none=True)
        terms = self.vae.elbo_given(x, mean, logvar, kl_weight=kl_weight, n_samples=self.n_samples)
        terms.loss.mean().backward()
        self._clip(self._dec_params)
        self.dec_opt.step()
        self.dec_opt.zero_grad(set_to_none=True)  # none left for the next inner loop to carry
        return _detached(terms)

    def _joint_step(self, x: Any, kl_weight: float) -> ELBOTerms:
        """One basic-VAE update of encoder and decoder together (joint gradient norm clipped)."""
        self.enc_opt.zero_grad(set_to_none=True)
        self.dec_opt.zero_grad(set_to_none=True)
        terms = self.vae.elbo(x, kl_weight=kl_weight, n_samples=self.n_samples)
        terms.loss.mean().backward()
        self._clip(self._enc_params + self._dec_params)
        self.enc_opt.step()
        self.dec_opt.step()
        return _detached(terms)

    # ------------------------------------------------------------------ helpers
    def _clip(self, params: List[torch.Tensor]) -> None:
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)

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

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to continue training: model, optimisers, counters, phase, history,
        and the stopping criterion's and callbacks' state when they have one."""
        return {
            "model": self.model.state_dict(),
            "enc_opt": self.enc_opt.state_dict(),
            "dec_opt": self.dec_opt.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "is_aggressive": self.is_aggressive,
            "stopping": optional_state(self.stopping),
            "callbacks": [optional_state(c) for c in self.callbacks],
            "history": self.history.to_dicts(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.model.load_state_dict(state["model"])
        self.enc_opt.load_state_dict(state["enc_opt"])
        self.dec_opt.load_state_dict(state["dec_opt"])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.is_aggressive = bool(state["is_aggressive"])
        if state.get("stopping") is not None:
            self.stopping.load_state_dict(state["stopping"])  # type: ignore[attr-defined]
        for callback, cb_state in zip(self.callbacks, state.get("callbacks", [])):
            if cb_state is not None:
                callback.load_state_dict(cb_state)
        self.history = History.from_dicts(state["history"])


def _detached(terms: ELBOTerms) -> ELBOTerms:
    return ELBOTerms(*(t.detach() for t in terms))
