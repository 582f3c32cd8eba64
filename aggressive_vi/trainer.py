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

from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ._impl.checks import (is_callable, non_negative_int, one_of, positive_float_or_none,
                           positive_int)
from ._impl import captured
from ._impl.gate import GATE_MODES, GatedStep, finite_flag
from ._impl.precision import PRECISIONS, Precision
from ._impl.components import (kl_schedule_or_default, load_callbacks, load_component, optimizer_flags,
                               restore_optimizer_flags, stopping_or_default)
from ._impl.loaders import (InputFn, check_inner_source, extract_input, loader_generators,
                            loader_length, model_device, move_to_device)
from ._impl.progress import EpochInProgress
from ._impl.rng import rng_state, set_rng_state
from ._impl.streams import InnerStream
from .callbacks import PrintLogger, ProgressBar, StepInfo
from .catch_up import catch_up_rule, probe_evaluator
from .checkpoint import FORMAT, VERSION, CheckpointError, load_checkpoint, load_plain_state_dict, plain_state_dict
from .distributed import (TrainingNetworks, all_gather_object, any_rank,
                          check_collective_device, is_distributed, rank, world_size)
from .estimators import MI_ESTIMATORS, summary
from .faults import (ON_NONFINITE, DeferredInterrupt, NonFiniteError, batch_context, describe_input,
                     nonfinite_message)
from .history import History
from .inner_loop import EncoderUpdate, catch_up_encoder
from .model import ELBOTerms, as_vae
from .protocols import KLSchedule, StoppingCriterion, TrainingEvent, optional_state

__all__ = ["AggressiveTrainer", "CLIP_SCOPES"]

#: ``AggressiveTrainer(clip_scope=...)``: the updated network's norm, or the paper's joint norm.
CLIP_SCOPES = ("network", "joint")


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
        catch_up: when an inner loop ends: ``None`` (default), the paper's window test; a name of
            ``aggressive_vi.catch_up.RULES`` (``"paper"``, ``"first_loss"``, ``"probe"``, built with
            ``window``) or a rule object (:mod:`aggressive_vi.catch_up`).
        clip_grad_norm: max gradient norm (paper: 5.0); ``None`` disables clipping.
        clip_scope: whose gradient norm is clipped in inner and decoder steps: ``"network"``
            (default): the network being updated, and only its gradient is computed; ``"joint"``: the
            paper's rule, both networks' gradients computed and their joint norm clipped, then only
            the one network stepped (the other's gradient is dropped). ``"joint"`` costs the other
            network's backward pass in every step; in the side-by-side runs against the paper's code
            it is what made the synthetic nz=2 MI match (docs/results.md). Joint steps of basic
            training clip the joint norm either way.
        n_samples: z samples per example in the training ELBO (paper: 1).
        au_threshold: variance threshold of the validation active-unit count (paper: 0.01).
        mi_estimator: how the validation MI (``EpochRecord.val_mi``, with ``val_mi_stderr``) is
            estimated: ``"minibatch"`` (the paper's: each minibatch's mixture as the aggregate
            posterior) or ``"dataset"`` (the whole validation set's mixture, 10 draws per example:
            quieter, and independent of the batch size). See :mod:`aggressive_vi.estimators`.
        on_nonfinite: ``"raise"`` (default): a NaN/inf loss or gradient stops training with a
            :class:`~aggressive_vi.NonFiniteError`, and the model keeps its last finite state; ``"skip"``:
            the step is not applied, training goes on, and the skips are counted in the history. Inner
            steps decide on the device (no host sync per step; see :mod:`aggressive_vi._impl.gate`),
            so an inner step's error is raised at the end of its window, with nothing applied from
            the bad step on.
        precision: ``"fp32"`` (default), ``"bf16"`` (autocast around the training forward passes; z,
            log q and the KL stay in float32) or ``"fp16"`` (autocast and a ``GradScaler`` per phase,
            saved in checkpoints; an overflow skips the step, as routine, instead of raising). See
            :mod:`aggressive_vi._impl.precision`. Validation estimates stay in full precision.
        inner_sync: how inner steps decide to apply an update without reading the host per step:
            ``"auto"`` (default): on a GPU gate on the device (one host sync per window; the
            optimiser must be fused, capturable, or SGD, else it reads per step and warns once), on
            the CPU read per step (free there) unless the optimiser is fused; ``"window"``: gate on
            the device everywhere; ``"step"``: read every step. Results are identical in all three.
        inner_step: ``"eager"`` (default) or ``"cuda_graph"``: each inner step replays a CUDA graph
            of the whole encoder update (single GPU; the encoder's optimiser SGD or built with
            ``capturable=True``; not with fp16; see :mod:`aggressive_vi._impl.captured` for what the model must
            allow). Refused on other devices and under ``torch.distributed``.
        ddp: under an initialised ``torch.distributed`` process group, wrap encoder and decoder in
            separate ``DistributedDataParallel`` wrappers (``None``: whenever there are several
            processes). See :mod:`aggressive_vi.distributed`.
        backward: ``backward(loss)`` / ``backward(loss, inputs=params)``, how the trainer
            back-propagates a scalar loss (default :func:`torch.autograd.backward`); e.g.
            ``backward=fabric.backward`` puts Lightning Fabric's precision plugin (loss scaling) on every
            inner, decoder and joint step (docs/lightning.md).
        get_input: ``batch -> x``, how the model's input is taken from a loader batch (training,
            inner-loop and validation batches alike). Default: the batch itself when it is a
            tensor, its first element when it is a tuple/list, ``batch["x"]`` when it is a dict;
            e.g. ``get_input=lambda b: (b["tokens"], b["lengths"])`` passes more.
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
        catch_up: Any = None,
        clip_grad_norm: Optional[float] = 5.0,
        clip_scope: str = "network",
        n_samples: int = 1,
        au_threshold: float = 0.01,
        mi_estimator: str = "minibatch",
        on_nonfinite: str = "raise",
        precision: str = "fp32",
        inner_sync: str = "auto",
        inner_step: str = "eager",
        ddp: Optional[bool] = None,
        backward: Optional[Callable[..., Any]] = None,
        get_input: InputFn = extract_input,
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
        self.window = positive_int("window", window)
        self.max_inner_steps = positive_int("max_inner_steps", max_inner_steps)
        self.catch_up = catch_up_rule("catch_up", catch_up, self.window)
        self.n_samples = positive_int("n_samples", n_samples)
        self.clip_grad_norm = positive_float_or_none("clip_grad_norm", clip_grad_norm)
        self.clip_scope = one_of("clip_scope", clip_scope, CLIP_SCOPES)
        self.on_nonfinite = one_of("on_nonfinite", on_nonfinite, ON_NONFINITE)
        self.stopping: StoppingCriterion = stopping_or_default(stopping)
        self.kl_schedule: KLSchedule = kl_schedule_or_default(kl_schedule)
        self.get_input = is_callable("get_input", get_input, "get_input(batch) -> model input")
        self.backward: Callable[..., Any] = is_callable(
            "backward", backward if backward is not None else torch.autograd.backward,
            "backward(loss, inputs=None)")
        self.enc_opt = enc_opt
        self.dec_opt = dec_opt
        self.au_threshold = au_threshold
        self.mi_estimator = one_of("mi_estimator", mi_estimator, MI_ESTIMATORS)
        self.callbacks: List[Any] = list(callbacks)
        if progress:  # before the logger, so the bar's line is closed when an epoch line prints
            self.callbacks.append(ProgressBar())
        if verbose:
            self.callbacks.append(PrintLogger())
        self._enc_params = [p for p in self.vae.encoder.parameters() if p.requires_grad]
        self._dec_params = [p for p in self.vae.decoder.parameters() if p.requires_grad]
        device = model_device(self.vae)
        check_collective_device(device)  # NCCL: the model on the current device
        self.precision = Precision(one_of("precision", precision, PRECISIONS),
                                   device.type if device is not None else "cpu")
        self._enc_gate = GatedStep(enc_opt, "enc_opt", one_of("inner_sync", inner_sync, GATE_MODES))
        self._inner_ok = torch.ones((), dtype=torch.bool, device=device)  # no error yet in this catch-up
        self._kl_weight = torch.zeros((), device=device)  # the captured step's KL weight
        self.inner_step = one_of("inner_step", inner_step, captured.INNER_STEPS)
        self._captured: Optional[captured.CapturedStep] = None
        if self.inner_step == "cuda_graph":
            self._captured = self._captured_step(device)
        self._inner_seen: List[Tuple[Any, torch.Tensor]] = []  # its (input, loss), for the error
        self.nets = TrainingNetworks(model, ddp)  # the model itself, or DDP views of it

        # the run's state (state_dict composes it)
        self.epoch = 0  # epochs completed
        self.step = 0  # decoder updates taken (skipped ones included)
        self.is_aggressive = bool(aggressive)
        self.history = History()
        self.steps_per_epoch: Optional[int] = None
        self._epoch_run: Optional[EpochInProgress] = None  # the epoch under way, if any
        self._inner: Optional[InnerStream] = None  # the inner loop's stream
        self._restore: Optional[Dict[str, Any]] = None  # a loaded position, applied by the next fit
        # per-fit bookkeeping
        self.stop_training = False
        self.last_checkpoint: Optional[str] = None  # set by the Checkpoint callback
        self.at_step_boundary = True  # False while a decoder update is under way
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
            train_loader: yields minibatches (a tensor, ``(x, ...)`` or ``{"x": x, ...}``; see
                ``get_input``).
            val_loader: data for the per-epoch validation MI, AU, KL and ELBO (needed by
                :class:`~aggressive_vi.MIPlateau`).
            epochs: total number of epochs to have trained when ``fit`` returns.
            inner_loader: where the inner loop draws its fresh minibatches (default: a second,
                independent iterator over ``train_loader``; required when ``train_loader`` has
                ``persistent_workers=True``).
            steps_per_epoch: needed only when ``train_loader`` has no ``len``.
            resume_from: a checkpoint file (or a directory of them: the latest is used) written by
                :class:`~aggressive_vi.Checkpoint`; training continues exactly where it was saved,
                given loaders that yield the same batches (docs/checkpointing.md). ``None``: go on
                from the trainer's current state (an epoch stopped in the middle goes on).

        Returns:
            The :class:`~aggressive_vi.History` of all completed epochs.

        Raises:
            NonFiniteError: a NaN/inf loss or gradient (with ``on_nonfinite="raise"``).
            CheckpointError: ``resume_from`` does not fit this model, optimisers or loader.
            ValueError: bad arguments, e.g. ranks whose loaders yield different numbers of batches.
            KeyboardInterrupt: after writing a checkpoint when a Checkpoint callback is present.
        """
        steps = self._check_fit_args(train_loader, val_loader, epochs, steps_per_epoch, inner_loader)
        if resume_from is not None:
            self.load_state_dict(load_checkpoint(resume_from))
        self.steps_per_epoch = steps
        self.stop_training = False
        self._first_batch = None
        self._attach_streams(train_loader, inner_loader if inner_loader is not None else train_loader)
        inner = self._inner
        assert inner is not None
        modes = [(m, m.training) for m in self.model.modules()]
        self._call("on_fit_start")
        try:
            with self._interrupt:  # a first Ctrl-C ends fit at the next step boundary
                while self.epoch < epochs and not self.stop_training:
                    self._run_epoch(train_loader, val_loader, inner)
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
                   inner: InnerStream) -> None:
        """Train one epoch (or the rest of one). A stop requested before its last batch leaves
        the epoch open (not recorded, ``epoch`` unchanged): the next ``fit`` goes on from there."""
        run = self._epoch_in_progress(train_loader)
        epoch = self.epoch
        self._call("on_epoch_start", epoch)
        device = model_device(self.vae)
        for batch in run.stream:
            self._batch_index = batch_index = run.stream.consumed - 1
            self.at_step_boundary = False
            with batch_context(self._where, batch, self._first_batch):  # errors name the batch
                self.model.train()
                x = self._input(batch, device)
                if self.is_aggressive and self.stopping.should_stop(
                    TrainingEvent(epoch=epoch, step=self.step, epoch_end=False)
                ):
                    run.left_aggressive_at = self.step
                    self._leave_aggressive()
                kl_weight = float(self.kl_schedule(self.step, self.steps_per_epoch or 1))
                if self.is_aggressive:
                    inner_steps, skipped_inner = self._catch_up_encoder(x, inner, kl_weight)
                    terms, applied = self._decoder_step(x, kl_weight)
                else:
                    inner_steps, skipped_inner = 0, 0
                    terms, applied = self._joint_step(x, kl_weight)
            if self._first_batch is None:
                self._first_batch = describe_input(batch)
            self.step += 1
            run.add(*(terms if applied else (None, None, None)), inner_steps=inner_steps,
                    aggressive=inner_steps > 0, kl_weight=kl_weight, skipped_inner=skipped_inner)
            self.at_step_boundary = True
            self._call("on_step_end", StepInfo(
                epoch=epoch, step=self.step, batch_index=batch_index, loss=terms.loss.mean(),
                kl=terms.kl.mean(), kl_weight=kl_weight, aggressive=inner_steps > 0,
                inner_steps=inner_steps, skipped=not applied))
            if self._stop_requested() and run.batches != self.steps_per_epoch:
                return  # stopped in the middle: the epoch stays open
        if run.batches == 0:
            raise ValueError("train_loader yielded no batch; expected a non-empty loader")
        val: Dict[str, Any] = {}
        if val_loader is not None:
            val = summary(self.model, val_loader, au_threshold=self.au_threshold,
                          mi_estimator=self.mi_estimator, get_input=self.get_input)
        record = run.record(val)  # training sums reduced over ranks
        if self.is_aggressive and self.stopping.should_stop(
            TrainingEvent(epoch=epoch, step=self.step, epoch_end=True, metrics=record.to_dict())
        ):
            record.left_aggressive_at = self.step
            self._leave_aggressive()
        record.wall_time = run.elapsed
        self._epoch_run = None
        self.history.append(record)
        self.epoch += 1
        self._call("on_epoch_end", record)

    def _catch_up_encoder(self, x: Any, inner: InnerStream, kl_weight: float) -> Tuple[int, int]:
        """Encoder-only steps until the inference network stops improving: the first on ``x``,
        each later one on a fresh minibatch of the inner stream; every ``window`` steps the window's
        mean loss is compared with the previous window's, and the loop ends when it went up or
        after ``max_inner_steps`` steps (:func:`~aggressive_vi.inner_loop.catch_up_encoder`).

        Each step is gated on the device (applied only when its loss and gradients are finite and,
        with ``on_nonfinite="raise"``, no earlier step of the loop failed); the host reads the
        window's sums once per window, and a failed step is raised there.

        Returns:
            ``(steps taken, steps skipped for a non-finite loss or gradient)``.
        """
        device = model_device(self.vae)
        raising = self.on_nonfinite == "raise"
        self._inner_ok.fill_(True)
        self._kl_weight.fill_(kl_weight)
        self._inner_seen = []
        evaluate = None if self.catch_up is None else probe_evaluator(
            lambda bx: self.nets.inner.elbo(bx, kl_weight=kl_weight, n_samples=self.n_samples).loss, device)
        try:
            result = catch_up_encoder(
                lambda batch_x: self._encoder_step(batch_x, kl_weight), x,
                lambda: self._input(next(inner), device), window=self.window,
                max_steps=self.max_inner_steps, device=device, on_step=self._set_inner_step,
                stop_on_error=raising, rule=self.catch_up, evaluate=evaluate)
            if raising and result.first_error:
                bad_x, bad_loss = self._inner_seen[result.first_error - 1]
                self._inner_step = result.first_error
                self._raise_nonfinite("inner", bad_loss, bad_x)
        finally:
            self._inner_seen = []
            self._inner_step = 0
            self.enc_opt.zero_grad(set_to_none=True)  # no stale encoder gradient outlives the loop
        return result.steps, result.skipped

    def _set_inner_step(self, step: int) -> None:
        self._inner_step = step

    def _encoder_step(self, x: Any, kl_weight: float) -> EncoderUpdate:
        """One encoder-only update; no gradient is computed for the decoder's weights.

        Returns the batch's summed loss (a float64 0-d tensor on the model's device, not synced), its
        number of examples, and whether the update was applied and whether it failed (0-d bool
        tensors, not read on the host).
        """
        if self._captured is not None:  # a graph replay; its outputs are overwritten by the next
            summed, examples, applied, error = self._captured(x)
        else:
            summed, examples, applied, error = self._encoder_body(x, kl_weight)
        if self.on_nonfinite == "raise":  # kept for the error message (a copy: a replay overwrites)
            self._inner_seen.append((x, summed.clone() if self._captured is not None else summed))
        return EncoderUpdate(summed, examples, applied, error)

    def _encoder_body(self, x: Any, kl_weight: Any) -> Tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]:
        """The update itself, reading nothing on the host (what ``inner_step="cuda_graph"``
        captures): ``(summed loss, examples, applied, error)``. ``kl_weight``: a float, or the 0-d
        tensor the captured step reads."""
        joint = self.clip_scope == "joint"
        self.enc_opt.zero_grad(set_to_none=True)
        if joint:
            self.dec_opt.zero_grad(set_to_none=True)
        net = self.nets.joint if joint else self.nets.inner  # joint: both gradients (DDP-synced)
        with self.precision.autocast(cache_enabled=self._captured is None):
            terms = net.elbo(x, kl_weight=kl_weight, n_samples=self.n_samples)
        scaler = self.precision.scaler("encoder")
        loss = terms.loss.mean()
        targets = self._enc_params + self._dec_params if joint else self._enc_params
        self.backward(scaler.scale(loss) if scaler is not None else loss, inputs=targets)
        if scaler is not None:
            for opt in ((self.enc_opt, self.dec_opt) if joint else (self.enc_opt,)):
                scaler.unscale_(opt)
        finite = finite_flag(terms.loss, targets, self.clip_grad_norm)
        raising = self.on_nonfinite == "raise"
        applied = finite & self._inner_ok if raising else finite
        error = ~finite if scaler is None else torch.zeros_like(finite)  # overflow: routine
        if raising:
            self._inner_ok.logical_and_(~error)  # in place: the captured graph holds this buffer
        self._enc_gate(applied)
        if joint:
            self.dec_opt.zero_grad(set_to_none=True)  # it served the joint norm only
        if scaler is not None:
            scaler.update()
        return terms.loss.detach().sum().double(), terms.loss.shape[0], applied, error

    def _captured_step(self, device: Optional[torch.device]) -> "captured.CapturedStep":
        """The graph-replayed inner step, after checking that it can work here."""
        if is_distributed():
            raise ValueError("inner_step='cuda_graph' is single-GPU for now; under torch.distributed "
                             "use inner_step='eager'")
        if self.precision.name == "fp16":
            raise ValueError("inner_step='cuda_graph' does not support precision='fp16' yet (the grad "
                             "scaler's bookkeeping runs on the host); use precision='bf16' or 'fp32'")
        captured.check_capturable_optimizer(self.enc_opt, "enc_opt")
        graphs = captured.graphs_for(device if device is not None else torch.device("cpu"))
        self._enc_gate.mode = "window"  # gate on the device, never on the host, inside the graph
        return captured.CapturedStep(
            lambda static_x: self._encoder_body(static_x, self._kl_weight),
            hyperparameters=lambda: captured.hyperparameters_of(self.enc_opt), graphs=graphs)

    def _decoder_step(self, x: Any, kl_weight: float) -> Tuple[ELBOTerms, bool]:
        """One decoder-only update on ``x``; the encoder runs without gradient.

        Returns the batch's terms and whether the update was applied (not skipped)."""
        if self.clip_scope == "joint":  # the paper's: both gradients, joint norm clipped, decoder stepped
            result = self._joint_update(x, kl_weight, [self.dec_opt], "decoder")
            self.enc_opt.zero_grad(set_to_none=True)
            self.dec_opt.zero_grad(set_to_none=True)
            return result
        with self.precision.autocast():
            with torch.no_grad():
                mean, logvar = self.nets.decoder.encode(x)
            self.dec_opt.zero_grad(set_to_none=True)
            terms = self.nets.decoder.elbo_given(x, mean, logvar, kl_weight=kl_weight,
                                                 n_samples=self.n_samples)
        applied = self._backward_and_step(terms.loss, self._dec_params, [self.dec_opt], "decoder", x)
        self.dec_opt.zero_grad(set_to_none=True)  # none left for the next inner loop to carry
        return _detached(terms), applied

    def _joint_step(self, x: Any, kl_weight: float) -> Tuple[ELBOTerms, bool]:
        """One basic-VAE update of encoder and decoder together (joint gradient norm clipped)."""
        return self._joint_update(x, kl_weight, [self.enc_opt, self.dec_opt], "joint")

    def _joint_update(self, x: Any, kl_weight: float, stepped: Sequence[torch.optim.Optimizer],
                      phase: str) -> Tuple[ELBOTerms, bool]:
        """Both networks' gradients, their joint norm clipped, then the ``stepped`` optimisers
        stepped (the others' gradients are unscaled under fp16 but not applied)."""
        self.enc_opt.zero_grad(set_to_none=True)
        self.dec_opt.zero_grad(set_to_none=True)
        with self.precision.autocast():
            terms = self.nets.joint.elbo(x, kl_weight=kl_weight, n_samples=self.n_samples)
        others = [opt for opt in (self.enc_opt, self.dec_opt) if opt not in stepped]
        applied = self._backward_and_step(terms.loss, self._enc_params + self._dec_params,
                                          stepped, phase, x, unscale=others)
        return _detached(terms), applied

    # ------------------------------------------------------------------ helpers
    def _backward_and_step(self, loss: torch.Tensor, params: Sequence[torch.Tensor],
                           optimizers: Sequence[torch.optim.Optimizer], phase: str, x: Any,
                           unscale: Sequence[torch.optim.Optimizer] = ()) -> bool:
        """Back-propagate ``loss.mean()`` (scaled under fp16), unscale, clip, check (one host
        read) and step the optimisers; ``True`` when applied.

        A non-finite step drops the gradients and, with ``on_nonfinite="raise"`` and no grad scaler,
        raises a :class:`NonFiniteError` naming where it happened (the model keeps its last finite
        state). Under fp16 a non-finite step is the scaler's overflow: skipped, and the scale lowered.
        ``unscale``: optimisers whose gradients are computed (and unscaled) but not stepped.
        """
        scaler = self.precision.scaler("decoder")
        mean = loss.mean()
        self.backward(scaler.scale(mean) if scaler is not None else mean)
        if scaler is not None:
            for opt in (*optimizers, *unscale):
                scaler.unscale_(opt)
        applied = bool(finite_flag(loss, params, self.clip_grad_norm))  # the step's one host read
        if applied:
            for opt in optimizers:
                opt.step()
        if scaler is not None:
            scaler.update()
        if applied:
            return True
        self.enc_opt.zero_grad(set_to_none=True)
        self.dec_opt.zero_grad(set_to_none=True)
        if self.on_nonfinite == "raise" and scaler is None:
            self._raise_nonfinite(phase, loss, x)
        return False

    def _raise_nonfinite(self, phase: str, loss: torch.Tensor, x: Any) -> None:
        inner_step = self._inner_step if phase == "inner" else None
        message = nonfinite_message(epoch=self.epoch, step=self.step + 1, batch_index=self._batch_index,
                                    phase=phase, inner_step=inner_step, loss=loss, x=x,
                                    checkpoint=self.last_checkpoint)
        raise NonFiniteError(message, epoch=self.epoch, step=self.step + 1,
                             batch_index=self._batch_index, phase=phase, inner_step=inner_step,
                             checkpoint=self.last_checkpoint)

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

    def _input(self, batch: Any, device: Optional[torch.device]) -> Any:
        return move_to_device(self.get_input(batch), device)

    def _check_fit_args(self, train_loader: Iterable[Any], val_loader: Optional[Iterable[Any]],
                        epochs: int, steps_per_epoch: Optional[int],
                        inner_loader: Optional[Iterable[Any]]) -> int:
        non_negative_int("epochs", epochs)
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
        if self.is_aggressive:
            check_inner_source(train_loader, inner_loader)
        if steps_per_epoch is not None:
            steps = positive_int("steps_per_epoch", steps_per_epoch)
        elif length is None:
            raise ValueError(
                "train_loader has no len(); pass fit(..., steps_per_epoch=N) so that the KL "
                "schedule knows how long an epoch is"
            )
        else:
            steps = length
        if is_distributed():  # every rank must take the same number of steps, or collectives hang
            lengths = all_gather_object(length if length is not None else steps)
            if len(set(lengths)) > 1:
                shown = ", ".join(f"rank {r}: {n}" for r, n in enumerate(lengths))
                raise ValueError(
                    f"train_loader yields a different number of batches on each rank ({shown}); "
                    "every rank must take the same steps. Shard with "
                    "torch.utils.data.DistributedSampler (it pads to equal shards) and/or "
                    "DataLoader(..., drop_last=True)"
                )
        return steps

    # ------------------------------------------------------------------ position in the run
    def _attach_streams(self, train_loader: Iterable[Any], inner_source: Iterable[Any]) -> None:
        """Set up the epoch and inner streams for this ``fit``: from a loaded checkpoint when one
        is pending (then restore the random state it saved), else keep what is under way over the
        same loaders (a stopped or interrupted epoch goes on)."""
        restore, self._restore = self._restore, None
        if restore is None:
            if self._epoch_run is not None and self._epoch_run.loader is not train_loader:
                self._epoch_run = None  # an epoch in progress goes on only over its loader
            if self._inner is None or self._inner.loader is not inner_source:
                self._inner = InnerStream(inner_source)
            return
        self._epoch_run = None
        self._inner = InnerStream(inner_source)
        saved_epoch, mine, source = restore["epoch_in_progress"], restore["rank"], restore["source"]
        if saved_epoch is not None and restore["steps_per_epoch"] != self.steps_per_epoch:
            raise CheckpointError(
                f"{source} was taken after {saved_epoch['stream']['consumed']} batches of epoch "
                f"{self.epoch} with {restore['steps_per_epoch']} batches per epoch; this train_loader "
                f"has {self.steps_per_epoch}: resume mid-epoch needs the same loader"
            )
        if mine is None:
            import warnings
            warnings.warn(f"{source} holds no random state for rank {rank()}: the run "
                          "continues, but not exactly as it would have without the interruption")
            return
        if restore["inner_stream"] is not None:
            self._inner = InnerStream.replay(inner_source, restore["inner_stream"], mine["inner_stream"])
        if saved_epoch is not None:
            self._epoch_run = EpochInProgress.replay(train_loader, saved_epoch, mine["epoch_in_progress"],
                                                     model_device(self.vae))
        set_rng_state(mine["random"], loader_generators(train_loader, inner_source))

    def _epoch_in_progress(self, train_loader: Iterable[Any]) -> EpochInProgress:
        """The epoch under way, or a new one (``set_epoch`` called on the loader's sampler)."""
        if self._epoch_run is None:
            self._epoch_run = EpochInProgress(train_loader, self.epoch, self.is_aggressive)
        return self._epoch_run

    @property
    def epoch_in_progress(self) -> bool:
        """Whether an epoch has begun and not ended (e.g. ``stop_training`` was set mid-epoch)."""
        return self._epoch_run is not None and self._epoch_run.batches > 0

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to continue training exactly: model, optimisers, counters, phase,
        history, stopping-criterion / KL-schedule / callback states, the epoch in progress and the
        inner loop's stream (positions), and under ``per_rank[rank]`` what differs between
        processes (random states, running epoch sums).

        Only tensors, numbers, strings, lists and dicts: readable with ``weights_only=True``.
        """
        run, inner = self._epoch_run, self._inner
        loaders = [x.loader for x in (run, inner) if x is not None]
        callbacks = [{"type": type(cb).__name__, "state": optional_state(cb)}
                     for cb in self.callbacks if optional_state(cb) is not None]
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": plain_state_dict(self.model),
            "enc_opt": self.enc_opt.state_dict(),
            "dec_opt": self.dec_opt.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "is_aggressive": self.is_aggressive,
            "steps_per_epoch": self.steps_per_epoch,
            "stopping": optional_state(self.stopping),
            "stopping_type": type(self.stopping).__name__,
            "kl_schedule": optional_state(self.kl_schedule),
            "callbacks": callbacks,
            "history": self.history.state_dict(),
            "precision": self.precision.state_dict(),  # the fp16 grad scalers
            "epoch_in_progress": run.state_dict() if run is not None else None,
            "inner_stream": inner.state_dict() if inner is not None else None,
            "per_rank": {rank(): {  # Checkpoint gathers every rank's
                "random": rng_state(loader_generators(*loaders)),
                "epoch_in_progress": run.local_state_dict() if run is not None else None,
                "inner_stream": inner.local_state_dict() if inner is not None else None,
            }},
            "world_size": world_size(),
            "config": {"window": self.window, "max_inner_steps": self.max_inner_steps,
                       "clip_grad_norm": self.clip_grad_norm, "clip_scope": self.clip_scope,
                       "n_samples": self.n_samples,
                       "on_nonfinite": self.on_nonfinite, "precision": self.precision.name},
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; the position in the epoch and the random state
        take effect at the next :meth:`fit` (with the same loaders). The optimisers keep the flags
        they were built with (``foreach``, ``fused``, ``capturable``, ``differentiable``).

        Raises:
            CheckpointError: another format, or a model/optimiser/stopping criterion that does not
                fit (the error names the mismatched keys and shapes).
        """
        import os
        import warnings

        source = str(state.get("source", "the state dict"))
        if state.get("format", FORMAT) != FORMAT or int(state.get("version", 0)) != VERSION:
            raise CheckpointError(
                f"{source} has format {state.get('format')!r} version {state.get('version')!r}; "
                f"expected {FORMAT!r} version {VERSION}"
            )
        load_plain_state_dict(self.model, state["model"], source)
        for name, optimizer in (("enc_opt", self.enc_opt), ("dec_opt", self.dec_opt)):
            flags = optimizer_flags(optimizer)
            try:
                optimizer.load_state_dict(state[name])
            except (ValueError, KeyError) as exc:
                raise CheckpointError(f"{source}: the saved {name} does not fit this trainer's "
                                      f"{name}: {exc}") from exc
            restore_optimizer_flags(optimizer, flags)
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.is_aggressive = bool(state["is_aggressive"])
        load_component("stopping", self.stopping, state.get("stopping"), state.get("stopping_type"), source)
        load_component("kl_schedule", self.kl_schedule, state.get("kl_schedule"), None, source)
        load_callbacks(self.callbacks, state.get("callbacks", []), source)
        self.history = History()
        self.history.load_state_dict(state["history"])
        self.precision.load_state_dict(state.get("precision"))
        per_rank = state.get("per_rank") or {}
        mine = per_rank.get(rank())
        if mine is None and per_rank:
            mine = per_rank[min(per_rank)]
            warnings.warn(f"{source} was saved by {state.get('world_size')} process(es) and holds "
                          f"no state for rank {rank()}; using rank {min(per_rank)}'s random state "
                          "and epoch sums")
        self._epoch_run = None
        self._restore = {"epoch_in_progress": state.get("epoch_in_progress"),
                         "inner_stream": state.get("inner_stream"),
                         "steps_per_epoch": state.get("steps_per_epoch"), "rank": mine, "source": source}
        if os.path.isfile(source):
            self.last_checkpoint = source


def _detached(terms: ELBOTerms) -> ELBOTerms:
    return ELBOTerms(*(t.detach() for t in terms))
