"""The trainer's complete state: what ``AggressiveTrainer.state_dict`` saves and how it is restored.

Kept out of ``trainer.py`` so that the trainer reads like the algorithm. These functions are the
trainer's own machinery (they read and set its private position fields); users call
``trainer.state_dict()``, ``trainer.load_state_dict()`` and ``fit(..., resume_from=...)``.
"""
from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional

from .batches import FreshBatches, model_device
from .checkpoint import FORMAT, VERSION, CheckpointError, load_plain_state_dict, plain_state_dict
from .distributed import rank, world_size
from .history import History
from .protocols import optional_state
from .resume import EpochProgress, LoaderPosition
from .rng import loader_generators, rng_state, set_rng_state

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import AggressiveTrainer

__all__ = ["trainer_state_dict", "load_trainer_state_dict", "resume_position"]


def resume_position(trainer: "AggressiveTrainer", train_loader: Iterable[Any],
                    fresh: FreshBatches) -> None:
    """Rebuild the loaders' iterators where a loaded checkpoint left them, then restore the
    random state the run had at that moment (so the next batches and draws are the same).
    Without a loaded checkpoint, an epoch interrupted in this process (Ctrl-C) goes on."""
    pending, trainer._pending = trainer._pending, None
    if pending is None:
        if trainer._batches is not None and trainer._batches.loader is not train_loader:
            trainer._batches = trainer._progress = None  # an interrupted epoch goes on only over its loader
        return
    trainer._batches = trainer._progress = None
    position, mine = pending["position"], pending["rank"]
    epoch_state = position.get("epoch")
    if epoch_state is not None and position.get("steps_per_epoch") != trainer.steps_per_epoch:
        raise CheckpointError(
            f"{pending['source']} was taken after {epoch_state['iterator']['consumed']} batches "
            f"of epoch {trainer.epoch} with {position.get('steps_per_epoch')} batches per epoch; "
            f"this train_loader has {trainer.steps_per_epoch}: resume mid-epoch needs the same loader"
        )
    if mine is None:
        warnings.warn(f"{pending['source']} holds no random state for rank {rank()}: the run "
                      "continues, but not exactly as it would have without the interruption")
        return
    random = mine["random"]
    if position.get("fresh") is not None:
        fresh.replay(position["fresh"], random.get("fresh_iterator"))
    if epoch_state is not None:
        trainer._batches = LoaderPosition.replay(train_loader, epoch_state["iterator"],
                                                 random["epoch_iterator"], "train_loader")
        trainer._progress = EpochProgress.from_state(epoch_state["progress"], mine["epoch_sums"],
                                                     model_device(trainer.vae))
    set_rng_state(random["current"], loader_generators(train_loader, fresh.loader))



def trainer_state_dict(trainer: "AggressiveTrainer") -> Dict[str, Any]:
    """Everything needed to continue training exactly: model, optimisers, counters, phase,
    history, stopping-criterion / KL-schedule / callback states, the position inside the epoch
    and in the inner loop's stream, and (under ``per_rank[rank]``) this process's random state
    and running epoch sums.

    Only tensors, numbers, strings, lists and dicts: readable with ``weights_only=True``.
    """
    generators = loader_generators(*trainer._loaders)
    fresh_current = trainer._fresh.current if trainer._fresh is not None else None
    callbacks = []
    for callback in trainer.callbacks:
        cb_state = optional_state(callback)
        if cb_state is not None:
            callbacks.append({"type": type(callback).__name__, "state": cb_state})
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": plain_state_dict(trainer.model),
        "enc_opt": trainer.enc_opt.state_dict(),
        "dec_opt": trainer.dec_opt.state_dict(),
        "epoch": trainer.epoch,
        "step": trainer.step,
        "is_aggressive": trainer.is_aggressive,
        "stopping": optional_state(trainer.stopping),
        "stopping_type": type(trainer.stopping).__name__,
        "kl_schedule": optional_state(trainer.kl_schedule),
        "callbacks": callbacks,
        "history": trainer.history.to_dicts(),
        "position": {
            "steps_per_epoch": trainer.steps_per_epoch,
            # batches *completed* (an interrupt mid-step leaves one more drawn: it is redone)
            "epoch": None if trainer._batches is None or trainer._progress is None else {
                "iterator": dict(trainer._batches.state_dict(), consumed=trainer._progress.batches),
                "progress": trainer._progress.state_dict()},
            "fresh": trainer._fresh.state_dict() if trainer._fresh is not None else None,
        },
        "per_rank": {rank(): {  # what differs between ranks; Checkpoint gathers all ranks'
            "random": {
                "current": rng_state(generators),
                "epoch_iterator": trainer._batches.random_state if trainer._batches is not None else None,
                "fresh_iterator": fresh_current.random_state if fresh_current is not None else None,
            },
            "epoch_sums": trainer._progress.local_state() if trainer._progress is not None else None,
        }},
        "world_size": world_size(),
        "config": {"window": trainer.window, "max_inner_steps": trainer.max_inner_steps,
                   "clip_grad_norm": trainer.clip_grad_norm, "n_samples": trainer.n_samples,
                   "on_nonfinite": trainer.on_nonfinite},
    }


def load_trainer_state_dict(trainer: "AggressiveTrainer", state: Dict[str, Any]) -> None:
    """Restore what :meth:`state_dict` saved; the position in the epoch and the random state
    take effect at the next :meth:`fit` (with the same loaders).

    Raises:
        CheckpointError: another format, or a model/optimiser/stopping criterion that does not
            fit (the error names the mismatched keys and shapes).
    """
    source = str(state.get("source", "the state dict"))
    if state.get("format", FORMAT) != FORMAT or int(state.get("version", 0)) > VERSION:
        raise CheckpointError(
            f"{source} has format {state.get('format')!r} version {state.get('version')!r}; "
            f"expected {FORMAT!r} version <= {VERSION}"
        )
    load_plain_state_dict(trainer.model, state["model"], source)
    for name, optimizer in (("enc_opt", trainer.enc_opt), ("dec_opt", trainer.dec_opt)):
        try:
            optimizer.load_state_dict(state[name])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{source}: the saved {name} does not fit this trainer's "
                                  f"{name}: {exc}") from exc
    trainer.epoch = int(state["epoch"])
    trainer.step = int(state["step"])
    trainer.is_aggressive = bool(state["is_aggressive"])
    _load_component(trainer, "stopping", trainer.stopping, state.get("stopping"),
                         state.get("stopping_type"), source)
    _load_component(trainer, "kl_schedule", trainer.kl_schedule, state.get("kl_schedule"), None, source)
    _load_callbacks(trainer, state.get("callbacks", []), source)
    trainer.history = History.from_dicts(state["history"])
    per_rank = state.get("per_rank") or {}
    mine = per_rank.get(rank())
    if mine is None and per_rank:
        mine = per_rank[min(per_rank)]
        warnings.warn(f"{source} was saved by {state.get('world_size')} process(es) and holds "
                      f"no state for rank {rank()}; using rank {min(per_rank)}'s random state "
                      "and epoch sums")
    trainer._pending = {"position": state.get("position") or {}, "rank": mine, "source": source}
    if os.path.isfile(source):
        trainer.last_checkpoint = source


def _load_component(trainer: "AggressiveTrainer", name: str, component: Any, saved: Any, saved_type: Optional[str],
                    source: str) -> None:
    if saved is None:
        return
    if not callable(getattr(component, "load_state_dict", None)):
        return  # the user swapped in a stateless component on purpose
    if saved_type is not None and saved_type != type(component).__name__:
        raise CheckpointError(f"{source} holds the state of {name}={saved_type}; this trainer "
                              f"has {name}={type(component).__name__}")
    component.load_state_dict(saved)


def _load_callbacks(trainer: "AggressiveTrainer", saved: List[Any], source: str) -> None:
    """Give each callback with ``load_state_dict`` the saved state of the same class (in order)."""
    unused = [entry for entry in saved if isinstance(entry, dict) and "type" in entry]
    for callback in trainer.callbacks:
        if not callable(getattr(callback, "load_state_dict", None)):
            continue
        match = next((e for e in unused if e["type"] == type(callback).__name__), None)
        if match is not None:
            unused.remove(match)
            callback.load_state_dict(match["state"])
    if unused:
        warnings.warn(f"{source} holds state for callbacks {[e['type'] for e in unused]} that "
                      "this trainer does not have; it was not restored")
