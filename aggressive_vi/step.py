"""``AggressiveStep``: Algorithm 1 of He et al. (ICLR 2019) for one minibatch, for any loop to drive.

For every training minibatch ``x``, while the step is *aggressive*:

1. **Catch up** (:meth:`AggressiveStep.catch_up_encoder`): encoder-only updates on the (annealed)
   negative ELBO, the first on ``x`` and each later one on a fresh minibatch, until the catch-up rule
   says the inference network stopped improving (the paper's window test by default:
   :class:`~aggressive_vi.catch_up.PaperWindowTest`) or ``max_inner_steps`` are taken.
2. **Decoder update** (:meth:`AggressiveStep.decoder_update`): one decoder-only update on ``x``.

Before every decoder update and at every epoch's end (:meth:`AggressiveStep.end_epoch`) the
stopping criterion is asked whether to leave the aggressive phase; from then on each minibatch gets
one joint update (:meth:`AggressiveStep.joint_update`), i.e. basic VAE training.

:class:`~aggressive_vi.AggressiveTrainer` and the Lightning callback drive this object; a
hand-written loop can too::

    step = AggressiveStep(vae, enc_opt, dec_opt, stopping=MIPlateau())
    fresh = iter(itertools.cycle(train_loader))        # the inner loop's fresh minibatches
    for epoch in range(epochs):
        for x in train_loader:
            out = step(x, lambda: next(fresh), epoch=epoch, steps_per_epoch=len(train_loader))
        step.end_epoch(epoch, {"val_mi": estimators.mutual_information(vae, val_loader)})

Deviations from the paper's code, on purpose:

* Clipping follows the paper's rule by default (``clip_scope="joint"``: in inner and decoder updates
  both networks' gradients are computed, their joint norm is clipped, and one network is stepped).
  ``clip_scope="network"`` computes the updated network's gradient alone and clips its norm: a
  backward pass cheaper per update, but on the paper's synthetic data it kept less mutual
  information (docs/index.md, "Clipping"). Joint updates of basic training clip the joint norm
  either way.
* The cap counts inner steps exactly (``max_inner_steps=100`` allows 100; the paper's loop allows 99),
  and the window loss is averaged per example (the text code averages per word).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from ._impl.checks import non_negative_int, one_of, positive_float_or_none, positive_int
from ._impl.components import kl_schedule_or_default, load_component, stopping_or_default
from ._impl.loaders import model_device
from .catch_up import CatchUpResult, EncoderUpdate, catch_up_encoder, catch_up_rule, probe_evaluator
from .engines import Engine, UpdateEngine
from .faults import ON_NONFINITE, NonFiniteError, nonfinite_message
from .model import ELBOTerms, as_vae
from .protocols import KLSchedule, StoppingCriterion, TrainingEvent, optional_state

__all__ = ["AggressiveStep", "StepOutput", "StepDriver", "CLIP_SCOPES"]

#: ``clip_scope=``: the updated network's norm, or the paper's joint norm.
CLIP_SCOPES = ("network", "joint")


class StepOutput(NamedTuple):
    """What one call of :class:`AggressiveStep` did.

    Attributes:
        terms: the decoder (or joint) update's ELBO terms, detached, each ``[batch]`` in nats.
        applied: whether that update was applied (``False``: skipped for a non-finite value).
        kl_weight: the KL weight used.
        inner_steps: encoder-only steps taken before it (0 in basic training).
        skipped_inner: inner steps not applied.
        left_aggressive: the stopping criterion ended the aggressive phase before this update.
    """

    terms: ELBOTerms
    applied: bool
    kl_weight: float
    inner_steps: int
    skipped_inner: int
    left_aggressive: bool

    @property
    def aggressive(self) -> bool:
        """Whether an inner loop preceded this update."""
        return self.inner_steps > 0


def _check_optimizer(name: str, optimizer: Any, own: nn.Module, own_name: str,
                     other: nn.Module, other_name: str) -> None:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"{name} must be a torch.optim.Optimizer; got {type(optimizer).__name__}")
    own_ids = {id(p) for p in own.parameters()}
    other_names = {id(p): n for n, p in other.named_parameters()}
    held = [p for group in optimizer.param_groups for p in group["params"]]
    for p in held:
        if id(p) in other_names and id(p) not in own_ids:
            raise ValueError(
                f"{name} holds the {other_name} parameter {other_names[id(p)]!r} "
                f"(shape {tuple(p.shape)}); expected only {own_name} parameters, e.g. "
                f"torch.optim.SGD(model.{own_name}.parameters(), lr=...)"
            )
    if not any(id(p) in own_ids for p in held):
        raise ValueError(f"{name} holds no {own_name} parameter; expected model.{own_name}.parameters()")


class AggressiveStep:
    """Algorithm 1 for one minibatch: the phase, the decoder-update count, the stopping criterion,
    the KL schedule, the catch-up rule, clipping and the non-finite policy, with their state.

    Args:
        model: a :class:`~aggressive_vi.VAE`, or any module with ``.encoder`` and ``.decoder`` that
            meet :class:`~aggressive_vi.protocols.Encoder` / :class:`~aggressive_vi.protocols.Decoder`.
        enc_opt: optimiser over the encoder's parameters only.
        dec_opt: optimiser over the decoder's parameters only.
        stopping: when to leave the aggressive phase (default :class:`~aggressive_vi.MIPlateau`, the
            paper's text rule; it reads ``val_mi`` at :meth:`end_epoch`).
        kl_schedule: KL weight per decoder update (default ``ConstantKL(1.0)``).
        aggressive: ``False`` gives basic VAE training from the start (the baseline).
        window: inner steps per window of the catch-up test (default 15, the paper's for text; 10 for
            images); for a named ``catch_up`` rule only (a rule object holds its own).
        max_inner_steps: cap on inner steps per decoder update (paper: 100).
        catch_up: when an inner loop ends: ``None`` or ``"paper"`` (the paper's window test),
            ``"first_loss"``, ``"probe"`` or a :class:`~aggressive_vi.catch_up.CatchUpRule` object.
        clip_grad_norm: max gradient norm (paper: 5.0); ``None`` disables clipping.
        clip_scope: whose norm is clipped in inner and decoder updates: ``"joint"`` (default, the
            paper's rule: both gradients computed, their joint norm clipped, one network stepped) or
            ``"network"`` (the updated network's alone; only its gradient is computed, which saves
            the other network's backward pass in every update; docs/index.md says what it costs in
            fidelity).
        n_samples: z samples per example in the training ELBO (paper: 1).
        on_nonfinite: ``"raise"`` (default): a NaN/inf loss or gradient raises
            :class:`~aggressive_vi.NonFiniteError` and the model keeps its last finite state (an inner
            step's error is raised at the catch-up rule's next decision, with nothing applied from the
            bad step on); ``"skip"``: the update is not applied and training goes on.
        engine: how a loss becomes an applied update (default :class:`~aggressive_vi.engines.Engine`:
            plain PyTorch in fp32). One engine per step.

    Attributes:
        updates: decoder (or joint) updates taken, skipped ones included.
        is_aggressive: whether the next minibatch gets the catch-up loop.
        left_aggressive_at: ``updates`` when the aggressive phase ended (``None`` while it lasts).
        inner_step: the 1-based inner step under way (0 outside the catch-up loop): for error messages.
        last_checkpoint: the last checkpoint's path, named by :class:`~aggressive_vi.NonFiniteError`
            (set by whoever writes checkpoints).

    Raises:
        TypeError / ValueError: bad arguments, named, before any parameter changes.
    """

    def __init__(
        self,
        model: nn.Module,
        enc_opt: Optional[torch.optim.Optimizer] = None,
        dec_opt: Optional[torch.optim.Optimizer] = None,
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
        engine: Optional[UpdateEngine] = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        self.model = model
        self.vae = as_vae(model)
        self.stopping: StoppingCriterion = stopping_or_default(stopping)
        self.kl_schedule: KLSchedule = kl_schedule_or_default(kl_schedule)
        self.catch_up = catch_up_rule("catch_up", catch_up, window)
        self.max_inner_steps = positive_int("max_inner_steps", max_inner_steps)
        self.clip_grad_norm = positive_float_or_none("clip_grad_norm", clip_grad_norm)
        self.clip_scope = one_of("clip_scope", clip_scope, CLIP_SCOPES)
        self.n_samples = positive_int("n_samples", n_samples)
        self.on_nonfinite = one_of("on_nonfinite", on_nonfinite, ON_NONFINITE)
        self.engine: Optional[UpdateEngine] = _checked_engine(engine)
        self._engine_state: Optional[Dict[str, Any]] = None  # loaded before bind()
        self._inner_seen: List[Tuple[Any, torch.Tensor]] = []  # (input, loss) per inner step, for the error
        # the state (state_dict)
        self.updates = 0
        self.is_aggressive = bool(aggressive)
        self.left_aggressive_at: Optional[int] = None
        # where the step is, for error messages
        self.inner_step = 0
        self.last_checkpoint: Optional[str] = None
        self._epoch, self._batch_index = 0, 0
        self._bound = False
        if enc_opt is not None or dec_opt is not None:
            self.bind(enc_opt, dec_opt)

    def bind(self, enc_opt: Optional[torch.optim.Optimizer], dec_opt: Optional[torch.optim.Optimizer],
             engine: Optional[UpdateEngine] = None) -> None:
        """Give the step its optimisers (and an engine; default the one given at construction, or
        :class:`~aggressive_vi.engines.Engine`). Drivers whose optimisers come later (Lightning's
        ``configure_optimizers``) build the step first and bind it then.

        Raises:
            TypeError / ValueError: an optimiser that is not one, or holds the other network's
                parameters (named).
        """
        _check_optimizer("enc_opt", enc_opt, self.vae.encoder, "encoder", self.vae.decoder, "decoder")
        _check_optimizer("dec_opt", dec_opt, self.vae.decoder, "decoder", self.vae.encoder, "encoder")
        assert enc_opt is not None and dec_opt is not None
        self.enc_opt, self.dec_opt = enc_opt, dec_opt
        if engine is not None:
            self.engine = _checked_engine(engine)
        if self.engine is None:
            self.engine = Engine()
        self.nets = self.engine.networks(self.model, enc_opt, dec_opt)
        if self._engine_state is not None:
            self.engine.load_state_dict(self._engine_state)
            self._engine_state = None
        self._enc_params = [p for p in self.vae.encoder.parameters() if p.requires_grad]
        self._dec_params = [p for p in self.vae.decoder.parameters() if p.requires_grad]
        device = model_device(self.vae)
        self._inner_ok = torch.ones((), dtype=torch.bool, device=device)  # no error yet in this catch-up
        self._kl_weight = torch.zeros((), device=device)  # the captured step's KL weight
        self._run_inner = self.engine.capture(self._encoder_body, enc_opt) if self.engine.captures_inner else None
        self._bound = True

    @property
    def bound(self) -> bool:
        """Whether :meth:`bind` gave the step its optimisers."""
        return self._bound

    @property
    def _eng(self) -> UpdateEngine:
        assert self.engine is not None, "bind() first"
        return self.engine

    def _check_bound(self) -> None:
        if not self._bound:
            raise RuntimeError("AggressiveStep has no optimisers yet: pass enc_opt and dec_opt, or call "
                               "bind(enc_opt, dec_opt) first")

    # ------------------------------------------------------------------ Algorithm 1
    def __call__(self, x: Any, next_input: Callable[[], Any], *, epoch: int = 0,
                 steps_per_epoch: int = 1, batch_index: Optional[int] = None) -> StepOutput:
        """Algorithm 1 for the minibatch ``x`` (the model's input, on its device).

        Args:
            x: the minibatch.
            next_input: a fresh minibatch's model input, on the model's device (the inner loop's
                later steps; called only while aggressive).
            epoch: the 0-based epoch (for the stopping criterion and error messages).
            steps_per_epoch: decoder updates per epoch (for the KL schedule).
            batch_index: the minibatch's index in its epoch (for error messages; default ``updates``).

        Raises:
            NonFiniteError: with ``on_nonfinite="raise"``.
        """
        self._check_bound()
        self._epoch = non_negative_int("epoch", epoch)
        self._batch_index = self.updates if batch_index is None else batch_index
        left = False
        if self.is_aggressive and self.stopping.should_stop(
                TrainingEvent(epoch=epoch, step=self.updates, epoch_end=False)):
            self.leave_aggressive()
            left = True
        kl_weight = self.kl_weight(steps_per_epoch)
        if self.is_aggressive:
            result = self.catch_up_encoder(x, next_input, kl_weight)
            terms, applied = self.decoder_update(x, kl_weight)
            inner, skipped = result.steps, result.skipped
        else:
            terms, applied = self.joint_update(x, kl_weight)
            inner, skipped = 0, 0
        self.updates += 1
        return StepOutput(terms, applied, kl_weight, inner, skipped, left)

    def kl_weight(self, steps_per_epoch: int = 1) -> float:
        """The KL schedule's weight for the next decoder update."""
        return float(self.kl_schedule(self.updates, steps_per_epoch or 1))

    def end_epoch(self, epoch: int, metrics: Optional[Dict[str, Any]] = None) -> bool:
        """An epoch ended: ask the stopping criterion (with the epoch's ``metrics``, e.g. ``val_mi``).

        Returns:
            ``True`` when this ended the aggressive phase.
        """
        if self.is_aggressive and self.stopping.should_stop(
                TrainingEvent(epoch=epoch, step=self.updates, epoch_end=True, metrics=dict(metrics or {}))):
            self.leave_aggressive()
            return True
        return False

    def leave_aggressive(self) -> None:
        """End the aggressive phase now: basic training from the next minibatch on."""
        self.is_aggressive = False
        self.left_aggressive_at = self.updates

    def catch_up_encoder(self, x: Any, next_input: Callable[[], Any], kl_weight: float) -> CatchUpResult:
        """Encoder-only updates until the catch-up rule says stop: the first on ``x``, each later one
        on ``next_input()`` (:func:`~aggressive_vi.catch_up.catch_up_encoder`). Each update is gated on
        the device; the host reads once per decision of the rule.

        Raises:
            NonFiniteError: an inner step's loss or gradient was not finite (``on_nonfinite="raise"``);
                nothing from that step on was applied.
        """
        self._check_bound()
        device = model_device(self.vae)
        raising = self.on_nonfinite == "raise"
        self._inner_ok.fill_(True)
        self._kl_weight.fill_(kl_weight)
        self._inner_seen = []
        evaluate = probe_evaluator(
            lambda bx: self.nets.inner.elbo(bx, kl_weight=kl_weight, n_samples=self.n_samples).loss, device)
        try:
            result = catch_up_encoder(
                lambda batch_x: self.encoder_update(batch_x, kl_weight), x, next_input, rule=self.catch_up,
                max_steps=self.max_inner_steps, device=device, on_step=self._at_inner_step,
                stop_on_error=raising, evaluate=evaluate)
            if raising and result.first_error:
                bad_x, bad_loss = self._inner_seen[result.first_error - 1]
                self.inner_step = result.first_error
                self._raise_nonfinite("inner", bad_loss, bad_x)
        finally:
            self._inner_seen = []
            self.inner_step = 0
            self.enc_opt.zero_grad(set_to_none=True)  # no stale encoder gradient outlives the loop
        return result

    def _at_inner_step(self, step: int) -> None:
        self.inner_step = step

    def encoder_update(self, x: Any, kl_weight: float) -> EncoderUpdate:
        """One encoder-only update on ``x``; with ``clip_scope="network"`` no gradient is computed for
        the decoder's weights.

        Returns:
            The batch's summed loss (a float64 0-d tensor on the model's device, nats, not synced), its
            number of examples, and whether the update was applied and whether it failed (0-d bool
            tensors or host bools, not read).
        """
        self._check_bound()
        if self._run_inner is not None:  # a graph replay; its outputs are overwritten by the next
            self._kl_weight.fill_(kl_weight)  # the graph reads the weight from this buffer
            summed, examples, applied, error = self._run_inner(x)
        else:
            summed, examples, applied, error = self._encoder_body(x, kl_weight)
        if self.on_nonfinite == "raise":  # kept for the error message (a copy: a replay overwrites)
            self._inner_seen.append((x, summed.clone() if self._run_inner is not None else summed))
        return EncoderUpdate(summed, examples, applied, error)

    def _encoder_body(self, x: Any, kl_weight: Any = None) -> Tuple[torch.Tensor, int, Any, Any]:
        """The update itself, reading nothing on the host (what a captured step captures):
        ``(summed loss, examples, applied, error)``. ``kl_weight``: a float, or ``None`` for the 0-d
        tensor the captured step reads."""
        joint = self.clip_scope == "joint"
        self.enc_opt.zero_grad(set_to_none=True)
        if joint:
            self.dec_opt.zero_grad(set_to_none=True)
        net = self.nets.joint if joint else self.nets.inner  # joint: both gradients (DDP-synced)
        with self._eng.autocast():
            weight: Any = self._kl_weight if kl_weight is None else kl_weight  # a tensor when captured
            terms = net.elbo(x, kl_weight=weight, n_samples=self.n_samples)
        raising = self.on_nonfinite == "raise"
        applied, error = self._eng.apply(
            terms.loss, params=self._enc_params + self._dec_params if joint else self._enc_params,
            optimizers=[self.enc_opt], unscale=[self.dec_opt] if joint else [], max_norm=self.clip_grad_norm,
            phase="inner", allowed=self._inner_ok if raising else None)
        if raising:
            if isinstance(error, torch.Tensor):
                self._inner_ok.logical_and_(~error)  # in place: a captured graph holds this buffer
            elif error:
                self._inner_ok.fill_(False)
        if joint:
            self.dec_opt.zero_grad(set_to_none=True)  # it served the joint norm only
        return terms.loss.detach().sum().double(), terms.loss.shape[0], applied, error

    def decoder_update(self, x: Any, kl_weight: float) -> Tuple[ELBOTerms, bool]:
        """One decoder-only update on ``x`` (the encoder runs without gradient, unless
        ``clip_scope="joint"``).

        Returns:
            The batch's ELBO terms (detached, ``[batch]``, nats) and whether the update was applied.
        """
        self._check_bound()
        if self.clip_scope == "joint":  # the paper's: both gradients, joint norm clipped, decoder stepped
            result = self._both(x, kl_weight, stepped=self.dec_opt, phase="decoder")
            self.enc_opt.zero_grad(set_to_none=True)
            self.dec_opt.zero_grad(set_to_none=True)
            return result
        with self._eng.autocast():
            with torch.no_grad():
                mean, logvar = self.nets.decoder.encode(x)
            self.dec_opt.zero_grad(set_to_none=True)
            terms = self.nets.decoder.elbo_given(x, mean, logvar, kl_weight=kl_weight, n_samples=self.n_samples)
        applied = self._apply(terms.loss, self._dec_params, [self.dec_opt], [], "decoder", x)
        self.dec_opt.zero_grad(set_to_none=True)  # none left for the next inner loop to carry
        return _detached(terms), applied

    def joint_update(self, x: Any, kl_weight: float) -> Tuple[ELBOTerms, bool]:
        """One basic-VAE update of encoder and decoder together (their joint gradient norm clipped).

        Returns:
            The batch's ELBO terms (detached, ``[batch]``, nats) and whether the update was applied.
        """
        self._check_bound()
        return self._both(x, kl_weight, stepped=None, phase="joint")

    def _both(self, x: Any, kl_weight: float, stepped: Optional[torch.optim.Optimizer],
              phase: str) -> Tuple[ELBOTerms, bool]:
        """Both networks' gradients, their joint norm clipped; ``stepped`` (``None``: both) stepped."""
        self.enc_opt.zero_grad(set_to_none=True)
        self.dec_opt.zero_grad(set_to_none=True)
        with self._eng.autocast():
            terms = self.nets.joint.elbo(x, kl_weight=kl_weight, n_samples=self.n_samples)
        optimizers = [self.enc_opt, self.dec_opt] if stepped is None else [stepped]
        others = [opt for opt in (self.enc_opt, self.dec_opt) if opt not in optimizers]
        applied = self._apply(terms.loss, self._enc_params + self._dec_params, optimizers, others, phase, x)
        return _detached(terms), applied

    def _apply(self, loss: torch.Tensor, params: Sequence[torch.Tensor], optimizers: List[torch.optim.Optimizer],
               others: List[torch.optim.Optimizer], phase: str, x: Any) -> bool:
        applied, error = self._eng.apply(loss, params=params, optimizers=optimizers, unscale=others,
                                           max_norm=self.clip_grad_norm, phase=phase)
        if applied:
            return True
        self.enc_opt.zero_grad(set_to_none=True)
        self.dec_opt.zero_grad(set_to_none=True)
        if self.on_nonfinite == "raise" and error:
            self._raise_nonfinite(phase, loss, x)
        return False

    def _raise_nonfinite(self, phase: str, loss: torch.Tensor, x: Any) -> None:
        inner_step = self.inner_step if phase == "inner" else None
        epoch, step, batch_index, checkpoint = self._epoch, self.updates + 1, self._batch_index, self.last_checkpoint
        message = nonfinite_message(epoch=epoch, step=step, batch_index=batch_index, phase=phase,
                                    inner_step=inner_step, loss=loss, x=x, checkpoint=checkpoint)
        raise NonFiniteError(message, epoch=epoch, step=step, batch_index=batch_index, phase=phase,
                             inner_step=inner_step, checkpoint=checkpoint)

    # ------------------------------------------------------------------ state
    def config(self) -> Dict[str, Any]:
        """The algorithm options that a checkpoint records (checked when it is loaded), with the
        model's ``kl_threshold`` (part of the objective trained)."""
        return {"max_inner_steps": self.max_inner_steps, "catch_up": repr(self.catch_up),
                "clip_grad_norm": self.clip_grad_norm, "clip_scope": self.clip_scope,
                "n_samples": self.n_samples, "on_nonfinite": self.on_nonfinite,
                "kl_threshold": repr(self.vae.kl_threshold)}

    def state_dict(self) -> Dict[str, Any]:
        """The phase, the update count, the stopping criterion's and KL schedule's states, the engine's
        (fp16 grad scalers) and the options (:meth:`config`). Plain values and tensors only."""
        return {
            "updates": self.updates,
            "is_aggressive": self.is_aggressive,
            "left_aggressive_at": self.left_aggressive_at,
            "stopping": optional_state(self.stopping),
            "stopping_type": type(self.stopping).__name__,
            "kl_schedule": optional_state(self.kl_schedule),
            "engine": self.engine.state_dict() if self._bound and self.engine is not None else self._engine_state,
            "config": self.config(),
        }

    def load_state_dict(self, state: Dict[str, Any], source: str = "the state dict") -> None:
        """Restore :meth:`state_dict` (the options are checked by the caller, see
        :func:`aggressive_vi.checkpoint.check_config`).

        Raises:
            CheckpointError: a stopping criterion or KL schedule whose state does not fit.
        """
        self.updates = int(state["updates"])
        self.is_aggressive = bool(state["is_aggressive"])
        left = state.get("left_aggressive_at")
        self.left_aggressive_at = None if left is None else int(left)
        load_component("stopping", self.stopping, state.get("stopping"), state.get("stopping_type"), source)
        load_component("kl_schedule", self.kl_schedule, state.get("kl_schedule"), None, source)
        if self._bound and self.engine is not None:
            self.engine.load_state_dict(state.get("engine"))
        else:
            self._engine_state = state.get("engine")


class StepDriver:
    """What a driver of an :class:`AggressiveStep` (the trainer, the Lightning callback) shows of it:
    read-only views of the step's state, so that nothing is kept twice."""

    algorithm: AggressiveStep

    @property
    def step(self) -> int:
        """Decoder (or joint) updates taken, skipped ones included."""
        return self.algorithm.updates

    @property
    def is_aggressive(self) -> bool:
        """Whether the next minibatch gets the catch-up loop."""
        return self.algorithm.is_aggressive

    @property
    def left_aggressive_at(self) -> Optional[int]:
        """Decoder updates taken when the aggressive phase ended (``None`` while it lasts)."""
        return self.algorithm.left_aggressive_at

    @property
    def stopping(self) -> StoppingCriterion:
        return self.algorithm.stopping

    @property
    def kl_schedule(self) -> KLSchedule:
        return self.algorithm.kl_schedule


def _checked_engine(engine: Optional[UpdateEngine]) -> Optional[UpdateEngine]:
    if engine is not None and not isinstance(engine, UpdateEngine):
        raise TypeError(f"engine must be an aggressive_vi.engines.Engine (or meet engines.UpdateEngine); "
                        f"got {type(engine).__name__}")
    return engine


def _detached(terms: ELBOTerms) -> ELBOTerms:
    return ELBOTerms(*(t.detach() for t in terms))
