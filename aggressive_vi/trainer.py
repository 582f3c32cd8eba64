"""``AggressiveTrainer``: epochs, streams, validation, callbacks and exact resume around
:class:`~aggressive_vi.AggressiveStep`, which is Algorithm 1 of He et al. (ICLR 2019) for one
minibatch (see :mod:`aggressive_vi.step` for the algorithm and its deviations from the paper's code).

Per epoch the trainer draws each minibatch from the training loader and hands it to the step with a
source of fresh minibatches for the inner loop (a second, independent stream over the training loader,
or ``inner_loader``); after the epoch it computes the validation record (MI, active units, KL, ELBO)
and asks the step whether to leave the aggressive phase.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence

import torch
from torch import nn

from ._impl.checks import non_negative_int, positive_int
from ._impl.components import load_callbacks, optimizer_flags, restore_optimizer_flags
from ._impl.loaders import (check_inner_source, loader_generators, loader_length, model_device,
                            move_to_device)
from ._impl.progress import EpochInProgress
from ._impl.rng import rng_state, set_rng_state
from ._impl.streams import InnerStream
from .callbacks import PrintLogger, ProgressBar, StepInfo
from .checkpoint import (FORMAT, VERSION, CheckpointError, check_config, check_model_state, load_checkpoint,
                         load_plain_state_dict, plain_state_dict, upgrade)
from .distributed import TrainingNetworks, all_gather_object, any_rank, is_distributed, rank, world_size
from .engines import UpdateEngine
from .metrics import ValidationMetrics, validation_or_default
from .faults import DeferredInterrupt, batch_context, describe_input
from .history import History
from .protocols import KLSchedule, StoppingCriterion, optional_state
from .step import AggressiveStep, StepDriver

__all__ = ["AggressiveTrainer"]


class AggressiveTrainer(StepDriver):
    """Trains a VAE with aggressive inference-network updates until the stopping criterion fires.

    The algorithm's options ``stopping``, ``kl_schedule``, ``aggressive``, ``window``,
    ``max_inner_steps``, ``catch_up``, ``clip_grad_norm``, ``clip_scope``, ``n_samples``,
    ``on_nonfinite`` and ``engine`` are as in :class:`~aggressive_vi.AggressiveStep` (defaults: the
    paper's; ``stopping`` defaults to :class:`~aggressive_vi.MIPlateau`, which needs ``val_loader``).

    Args:
        model: a :class:`~aggressive_vi.VAE`, or any module with ``.encoder`` and ``.decoder`` that
            meet :class:`~aggressive_vi.protocols.Encoder` / :class:`~aggressive_vi.protocols.Decoder`.
        enc_opt: optimiser over the encoder's parameters only.
        dec_opt: optimiser over the decoder's parameters only.
        validation: the per-epoch validation record (``EpochRecord.val_*``), a
            :class:`~aggressive_vi.metrics.ValidationMetrics` over ``model`` (default
            ``ValidationMetrics(model)``: the paper's minibatch MI, active units at variance 0.01, the
            ELBO with one sample); e.g. ``ValidationMetrics(model, mi_estimator="dataset")``.
        callbacks: objects with any of the hooks in :mod:`aggressive_vi.callbacks`.
        verbose: print one line per epoch (adds a :class:`~aggressive_vi.PrintLogger`).
        progress: show a progress bar (adds a :class:`~aggressive_vi.ProgressBar`).

    Attributes:
        algorithm: the :class:`~aggressive_vi.AggressiveStep` the trainer drives (its phase, update
            count, stopping criterion and KL schedule).

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
        window: Optional[int] = None,
        max_inner_steps: int = 100,
        catch_up: Any = None,
        clip_grad_norm: Optional[float] = 5.0,
        clip_scope: str = "joint",
        n_samples: int = 1,
        on_nonfinite: str = "raise",
        engine: Optional[UpdateEngine] = None,
        validation: Optional[ValidationMetrics] = None,
        callbacks: Sequence[Any] = (),
        verbose: bool = False,
        progress: bool = False,
    ) -> None:
        self.algorithm = AggressiveStep(
            model, enc_opt, dec_opt, stopping=stopping, kl_schedule=kl_schedule, aggressive=aggressive,
            window=window, max_inner_steps=max_inner_steps, catch_up=catch_up, clip_grad_norm=clip_grad_norm,
            clip_scope=clip_scope, n_samples=n_samples, on_nonfinite=on_nonfinite, engine=engine)
        self.model = model
        self.vae = self.algorithm.vae
        self.validation = validation_or_default(model, validation)
        self.callbacks: List[Any] = list(callbacks)
        if progress:  # before the logger, so the bar's line is closed when an epoch line prints
            self.callbacks.append(ProgressBar())
        if verbose:
            self.callbacks.append(PrintLogger())
        # the run's state (state_dict composes it with the algorithm's)
        self.epoch = 0  # epochs completed
        self.history = History()
        self.steps_per_epoch: Optional[int] = None
        self._epoch_run: Optional[EpochInProgress] = None  # the epoch under way, if any
        self._inner: Optional[InnerStream] = None  # the inner loop's stream
        self._restore: Optional[Dict[str, Any]] = None  # a loaded position, applied by the next fit
        # per-fit bookkeeping
        self.stop_training = False
        self.at_step_boundary = True  # False while a decoder update is under way
        self._interrupt = DeferredInterrupt()
        self._batch_index = 0
        self._first_batch: Optional[str] = None

    # ------------------------------------------------------------------ what callbacks see
    @property
    def enc_opt(self) -> torch.optim.Optimizer:
        return self.algorithm.enc_opt

    @property
    def dec_opt(self) -> torch.optim.Optimizer:
        return self.algorithm.dec_opt

    @property
    def nets(self) -> TrainingNetworks:
        """The model views each phase runs (DDP wrappers under ``torch.distributed``)."""
        return self.algorithm.nets

    @property
    def last_checkpoint(self) -> Optional[str]:
        """The newest checkpoint a :class:`~aggressive_vi.Checkpoint` callback wrote (named by a
        :class:`~aggressive_vi.NonFiniteError`)."""
        return self.algorithm.last_checkpoint

    @last_checkpoint.setter
    def last_checkpoint(self, path: Optional[str]) -> None:
        self.algorithm.last_checkpoint = path

    # ------------------------------------------------------------------ the loop
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
                ``VAE(..., get_input=...)``).
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
        fresh = lambda: self._input(next(inner), device)  # noqa: E731  # the inner loop's minibatches
        for batch in run.stream:
            self._batch_index = batch_index = run.stream.consumed - 1
            self.at_step_boundary = False
            before = self.step
            with batch_context(self._where, batch, None):  # get_input's errors: the loader's batch
                x = self._input(batch, device)
            with batch_context(self._where, x, self._first_batch):  # errors name what the modules got
                if not self._in_train_mode():  # e.g. after a callback evaluated the model
                    self.model.train()
                out = self.algorithm(x, fresh, epoch=epoch, steps_per_epoch=self.steps_per_epoch or 1,
                                     batch_index=batch_index)
            if self._first_batch is None:
                self._first_batch = describe_input(x)
            if out.left_aggressive:
                run.left_aggressive_at = before
                self._call("on_phase_change", before)
            terms = out.terms
            run.add(*(terms if out.applied else (None, None, None)), inner_steps=out.inner_steps,
                    aggressive=out.aggressive, kl_weight=out.kl_weight, skipped_inner=out.skipped_inner)
            self.at_step_boundary = True
            if any(hasattr(callback, "on_step_end") for callback in self.callbacks):
                self._call("on_step_end", StepInfo(
                    epoch=epoch, step=self.step, batch_index=batch_index, loss=terms.loss.mean(),
                    kl=terms.kl.mean(), kl_weight=out.kl_weight, aggressive=out.aggressive,
                    inner_steps=out.inner_steps, skipped=not out.applied))
            if self._stop_requested(device) and run.batches != self.steps_per_epoch:
                return  # stopped in the middle: the epoch stays open
        if run.batches == 0:
            raise ValueError("train_loader yielded no batch; expected a non-empty loader")
        val: Dict[str, Any] = {}
        if val_loader is not None:
            self.validation.reset()
            for batch in val_loader:
                self.validation.update(self.vae.get_input(batch))  # eval mode, no gradient
            val = self.validation.compute()  # reduced over ranks
        record = run.record(val)  # training sums reduced over ranks
        before = self.step
        if self.algorithm.end_epoch(epoch, record.to_dict()):
            record.left_aggressive_at = before
            self._call("on_phase_change", before)
        record.wall_time = run.elapsed
        self._epoch_run = None
        self.history.append(record)
        self.epoch += 1
        self._call("on_epoch_end", record)

    # ------------------------------------------------------------------ helpers
    def _where(self) -> str:
        """Where training is, for error messages: epoch, batch, inner step."""
        text = f"epoch {self.epoch}, batch {self._batch_index} (decoder update {self.step + 1})"
        inner_step = self.algorithm.inner_step
        if inner_step > 1:
            text += f", inner step {inner_step} (on a fresh batch from the inner loop's loader)"
        return text

    def _in_train_mode(self) -> bool:
        """Whether the model and both networks are in training mode (three attribute reads: calling
        ``train()`` on every batch walks every submodule)."""
        return self.model.training and self.vae.encoder.training and self.vae.decoder.training

    def _stop_requested(self, device: Optional[torch.device] = None) -> bool:
        """After a decoder update: should the epoch end here? A Ctrl-C raises ``KeyboardInterrupt``
        at this step boundary. Under DDP the flags are OR-ed over ranks (one small all-reduce, staged
        on ``device``, default the model's)."""
        stop, interrupt = any_rank(self.stop_training, self._interrupt.requested,
                                   device=device or model_device(self.vae))
        self.stop_training = stop
        if interrupt:
            raise KeyboardInterrupt(f"fit interrupted ({self._interrupt.signal_name or 'on another rank'}); "
                                    "stopped at a step boundary")
        return stop

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            fn = getattr(callback, hook, None)
            if fn is not None:
                fn(self, *args)

    def _input(self, batch: Any, device: Optional[torch.device]) -> Any:
        return move_to_device(self.vae.get_input(batch), device)

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
            self._epoch_run = EpochInProgress(train_loader, self.epoch, self.is_aggressive,
                                              device=model_device(self.vae))
        return self._epoch_run

    @property
    def epoch_in_progress(self) -> bool:
        """Whether an epoch has begun and not ended (e.g. ``stop_training`` was set mid-epoch)."""
        return self._epoch_run is not None and self._epoch_run.batches > 0

    # ------------------------------------------------------------------ state
    def config(self) -> Dict[str, Any]:
        """The options a checkpoint records and checks on load: the algorithm's
        (:meth:`AggressiveStep.config`) and the validation's."""
        return dict(self.algorithm.config(), engine=repr(self.algorithm.engine), validation=repr(self.validation))

    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to continue training exactly: model, optimisers, the algorithm's state
        (phase, update count, stopping-criterion / KL-schedule / engine states), epochs, history,
        callback states, the epoch in progress and the inner loop's stream (positions), the options,
        and under ``per_rank[rank]`` what differs between processes (random states, running sums).

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
            "algorithm": self.algorithm.state_dict(),
            "epoch": self.epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "callbacks": callbacks,
            "history": self.history.state_dict(),
            "epoch_in_progress": run.state_dict() if run is not None else None,
            "inner_stream": inner.state_dict() if inner is not None else None,
            "per_rank": {rank(): {  # Checkpoint gathers every rank's
                "random": rng_state(loader_generators(*loaders)),
                "epoch_in_progress": run.local_state_dict() if run is not None else None,
                "inner_stream": inner.local_state_dict() if inner is not None else None,
            }},
            "world_size": world_size(),
            "config": self.config(),
        }

    def load_state_dict(self, state: Dict[str, Any], *, strict: bool = True) -> None:
        """Restore what :meth:`state_dict` saved (or an older format it can read); the position in
        the epoch and the random state take effect at the next :meth:`fit` (with the same loaders).
        The optimisers keep the flags they were built with (``foreach``, ``fused``, ``capturable``,
        ``differentiable``).

        Args:
            strict: refuse a state saved with other algorithm options
                (:data:`aggressive_vi.checkpoint.ALGORITHM_OPTIONS`: ``max_inner_steps``, ``catch_up``,
                ``clip_grad_norm``, ``clip_scope``, ``n_samples``, the model's ``kl_threshold``): the
                run would not continue as it began. ``False``: warn instead. Options that do not change the
                algorithm (``on_nonfinite``, the engine, the validation's) only warn.

        Raises:
            CheckpointError: another format or version, a model/optimiser/stopping criterion that does
                not fit (the error names the mismatched keys and shapes), or changed options.
        """
        import os
        import warnings

        source = str(state.get("source", "the state dict"))
        state = upgrade(state, source)
        check_model_state(self.model, state["model"], source)  # the architecture first: the most basic misfit
        check_config(state.get("config"), self.config(), source, strict=strict)
        load_plain_state_dict(self.model, state["model"], source)
        for name, optimizer in (("enc_opt", self.enc_opt), ("dec_opt", self.dec_opt)):
            flags = optimizer_flags(optimizer)
            try:
                optimizer.load_state_dict(state[name])
            except (ValueError, KeyError) as exc:
                raise CheckpointError(f"{source}: the saved {name} does not fit this trainer's "
                                      f"{name}: {exc}") from exc
            restore_optimizer_flags(optimizer, flags)
        self.algorithm.load_state_dict(state["algorithm"], source)
        self.epoch = int(state["epoch"])
        load_callbacks(self.callbacks, state.get("callbacks", []), source)
        self.history = History()
        self.history.load_state_dict(state["history"])
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
