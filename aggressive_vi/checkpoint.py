"""Checkpoints of the whole training state: a safe file format, an architecture check, a callback.

A checkpoint is ``trainer.state_dict()`` written with ``torch.save``: tensors, numbers, strings,
lists and dicts only, so :func:`load_checkpoint` reads it with ``torch.load(..., weights_only=True)``
(no arbitrary code runs on load). See ``docs/checkpointing.md``.

* :class:`Checkpoint`: a callback that saves every ``every_n_steps`` decoder updates and at every
  epoch end, atomically (temporary file, ``fsync``, rename), keeps the last ``keep_last`` files and,
  under ``torch.distributed``, writes from rank 0 only (with every rank's random state).
* :func:`plain_state_dict` / :func:`load_plain_state_dict`: the model's weights without the
  ``module.`` prefixes of DDP wrappers, loaded back with a clear error when the architecture differs.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from ._impl.checks import positive_int_or_none
from .distributed import all_gather_object, is_distributed, is_main_process, unwrap
from .protocols import Trainer


__all__ = [
    "FORMAT", "VERSION", "CheckpointError", "Checkpoint", "save_checkpoint", "load_checkpoint",
    "latest_checkpoint", "plain_state_dict", "load_plain_state_dict", "upgrade", "check_config",
]

#: The ``"format"`` entry of a trainer checkpoint.
FORMAT = "aggressive-vi/trainer"
#: The checkpoint format's version; older ones are upgraded on load (:func:`upgrade`).
VERSION = 3
#: The oldest version :func:`upgrade` reads (version 2: the algorithm's state at the top level).
OLDEST_READABLE = 2
PathLike = Union[str, "os.PathLike[str]"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded here: not ours, a newer format, or another architecture."""


# ---------------------------------------------------------------------------- model weights
def _wrapper_prefixes(model: nn.Module) -> List[Tuple[str, str]]:
    """``(wrapped prefix, plain prefix)`` for every DDP-style wrapper inside ``model``, outermost
    first, e.g. ``("encoder.module.", "encoder.")``."""
    rules: List[Tuple[str, str]] = []
    for name, module in model.named_modules():
        inner = unwrap(module)
        if inner is module:
            continue
        inner_path = next(sub for sub, m in module.named_modules() if m is inner)
        head = f"{name}." if name else ""
        rules.append((f"{head}{inner_path}.", head))
    return rules


def _plain_key(key: str, rules: List[Tuple[str, str]]) -> str:
    for wrapped, plain in rules:
        if key.startswith(wrapped):
            return plain + key[len(wrapped):]
    return key


def plain_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """``model.state_dict()`` with the prefixes of DDP wrappers removed (the keys an unwrapped copy
    of the model would have), so checkpoints move between single-process and DDP runs."""
    rules = _wrapper_prefixes(model)
    return {_plain_key(k, rules): v for k, v in model.state_dict().items()}


def check_model_state(model: nn.Module, state: Dict[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` naming every missing/unexpected key and shape mismatch."""
    own = plain_state_dict(model)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {list(state[k].shape)} vs model {list(v.shape)}"
              for k, v in own.items()
              if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != v.shape]
    if not (missing or unexpected or shapes):
        return

    def listed(items: List[str]) -> str:
        return ", ".join(items[:10]) + (f", ... ({len(items) - 10} more)" if len(items) > 10 else "")

    problems = []
    if missing:
        problems.append(f"missing from the checkpoint: {listed(missing)}")
    if unexpected:
        problems.append(f"not in this model: {listed(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {listed(shapes)}")
    raise CheckpointError(
        f"{source} was saved from a different model architecture; " + "; ".join(problems)
    )


def load_plain_state_dict(model: nn.Module, state: Dict[str, torch.Tensor],
                          source: str = "the checkpoint") -> None:
    """Load weights saved by :func:`plain_state_dict` into ``model`` (wrapped or not), after
    :func:`check_model_state`."""
    check_model_state(model, state, source)
    rules = _wrapper_prefixes(model)
    to_wrapped = {_plain_key(k, rules): k for k in model.state_dict()}
    model.load_state_dict({to_wrapped[k]: v for k, v in state.items()})


# ---------------------------------------------------------------------------- files
def save_checkpoint(state: Dict[str, Any], path: PathLike) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same directory, flushed and
    ``fsync``-ed, then renamed over ``path`` (a crash leaves the old file or the new, never half)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: PathLike, map_location: Any = "cpu") -> Dict[str, Any]:
    """Read a checkpoint with ``torch.load(..., weights_only=True)`` and check its format.

    ``path`` may be a directory: its latest checkpoint (see :func:`latest_checkpoint`) is read.

    Raises:
        FileNotFoundError: no such file, or a directory without checkpoints.
        CheckpointError: not a checkpoint of this library, or one from a newer version.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"resume_from={path!r} is a directory without checkpoints")
        path = found
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors have many types
        raise CheckpointError(f"{path!r} is not a loadable checkpoint: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path!r} is not an aggressive-vi trainer checkpoint (format "
            f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r}); "
            f"expected format {FORMAT!r} as written by trainer.state_dict()"
        )
    if int(state.get("version", 0)) > VERSION:
        raise CheckpointError(
            f"{path!r} has checkpoint version {state['version']}; this aggressive-vi reads up to "
            f"version {VERSION}: upgrade the library"
        )
    state["source"] = path
    return state


def upgrade(state: Dict[str, Any], source: str = "the state dict") -> Dict[str, Any]:
    """``state`` in the current layout: a version-2 trainer state (the phase, update count and
    stopping/KL-schedule states at the top level, the fp16 scalers under ``"precision"``) is moved
    under ``"algorithm"``; the current version is returned unchanged.

    Raises:
        CheckpointError: another format, or a version this library cannot read (named).
    """
    version = int(state.get("version", 0))
    if state.get("format", FORMAT) != FORMAT or not OLDEST_READABLE <= version <= VERSION:
        raise CheckpointError(
            f"{source} has format {state.get('format')!r} version {state.get('version')!r}; this "
            f"aggressive-vi reads format {FORMAT!r} versions {OLDEST_READABLE} to {VERSION}"
        )
    if version == VERSION:
        return state
    history = state.get("history") or []
    left = next((row.get("left_aggressive_at") for row in history
                 if isinstance(row, dict) and row.get("left_aggressive_at") is not None), None)
    algorithm = {"updates": state["step"], "is_aggressive": state["is_aggressive"], "left_aggressive_at": left,
                 "stopping": state.get("stopping"), "stopping_type": state.get("stopping_type"),
                 "kl_schedule": state.get("kl_schedule"), "engine": state.get("precision")}
    # a v2 config was never checked; its algorithm options are (a v2 run resumed with the default
    # clip_scope, "joint" since v3, would not continue as it began)
    saved = state.get("config") or {}
    config = {k: saved[k] for k in ALGORITHM_OPTIONS if k in saved} or None
    return dict(state, version=VERSION, algorithm=algorithm, config=config)


#: Options whose change makes a resumed run differ from the one that was saved.
ALGORITHM_OPTIONS = ("max_inner_steps", "catch_up", "clip_grad_norm", "clip_scope", "n_samples", "kl_threshold")


def check_config(saved: Optional[Dict[str, Any]], current: Dict[str, Any], source: str, *,
                 strict: bool = True) -> None:
    """Compare the options a state was saved with (``saved``; ``None``: not recorded) with ``current``.

    Raises:
        CheckpointError: with ``strict``, an algorithm option (:data:`ALGORITHM_OPTIONS`) changed; the
            error names each one with its saved and current value. Any other change warns.
    """
    import warnings

    if not saved:
        return
    changed = {k: (saved[k], current.get(k)) for k in saved if k in current and saved[k] != current[k]}
    if not changed:
        return
    listed = "; ".join(f"{k}: saved {old!r}, now {new!r}" for k, (old, new) in changed.items())
    if strict and any(k in ALGORITHM_OPTIONS for k in changed):
        raise CheckpointError(
            f"{source} was saved with other algorithm options ({listed}): the run would not continue as "
            "it began. Build the trainer with the saved values, or load with "
            "load_state_dict(state, strict=False) to continue with the new ones")
    warnings.warn(f"{source} was saved with other options ({listed}); continuing with the new ones",
                  stacklevel=3)


_NAME = re.compile(r"^(?P<prefix>.+)-e(?P<epoch>\d+)-s(?P<step>\d+)(?P<tag>-interrupted)?\.pt$")


def _listed(directory: PathLike, prefix: Optional[str] = None) -> List[Tuple[Tuple[int, int, int], str]]:
    found = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        m = _NAME.match(name)
        if m and (prefix is None or m["prefix"] == prefix):
            key = (int(m["step"]), int(m["epoch"]), 1 if m["tag"] else 0)
            found.append((key, os.path.join(os.fspath(directory), name)))
    return sorted(found)


def latest_checkpoint(directory: PathLike, prefix: Optional[str] = None) -> Optional[str]:
    """The most advanced checkpoint a :class:`Checkpoint` callback wrote in ``directory`` (by
    decoder update, then epoch), or ``None``; e.g. ``fit(..., resume_from=latest_checkpoint(d))``."""
    found = _listed(directory, prefix)
    return found[-1][1] if found else None


# ---------------------------------------------------------------------------- the callback
class Checkpoint:
    """Save the trainer's full state during ``fit``.

    Args:
        directory: where to write the files, named ``{prefix}-e{epochs done, 4 digits}-s{decoder
            updates, 9 digits}.pt`` and zero-padded so that they sort in training order, e.g.
            ``checkpoint-e0000-s000000114.pt`` after 114 decoder updates of the first epoch.
        every_n_steps: also save every this many decoder updates (``None``: epoch ends only); at an
            epoch's last update the epoch-end save stands for it (one file per step).
        at_epoch_end: save after every epoch (after validation and the stopping decision).
        keep_last: keep this many most recent files of this prefix (``None``: keep all).
        prefix: file-name prefix.

    Also saves when ``fit`` returns in the middle of an epoch (``trainer.stop_training`` set by a
    callback), and when ``fit`` is interrupted (Ctrl-C / ``KeyboardInterrupt``): at the next step boundary
    after a first Ctrl-C (an exact resume point), or, for an interrupt that cannot wait, at once into
    a file tagged ``-interrupted`` (resuming from it redoes the interrupted batch). Sets
    ``trainer.last_checkpoint`` to the newest path, which a :class:`~aggressive_vi.faults.NonFiniteError`
    names. Under ``torch.distributed`` every rank must have this callback (the ranks' random states
    and epoch sums are gathered), and only rank 0 writes.
    """

    def __init__(self, directory: PathLike, *, every_n_steps: Optional[int] = None,
                 at_epoch_end: bool = True, keep_last: Optional[int] = 3,
                 prefix: str = "checkpoint") -> None:
        positive_int_or_none("every_n_steps", every_n_steps)
        positive_int_or_none("keep_last", keep_last)
        if not prefix or "/" in prefix or os.sep in prefix:
            raise ValueError(f"prefix must be a non-empty file-name prefix; got {prefix!r}")
        self.directory = os.fspath(directory)
        self.every_n_steps = every_n_steps
        self.at_epoch_end = at_epoch_end
        self.keep_last = keep_last
        self.prefix = prefix
        self.last_path: Optional[str] = None

    def path_for(self, trainer: Trainer, interrupted: bool = False) -> str:
        tag = "-interrupted" if interrupted else ""
        name = f"{self.prefix}-e{trainer.epoch:04d}-s{trainer.step:09d}{tag}.pt"
        return os.path.join(self.directory, name)

    def save(self, trainer: Trainer, *, interrupted: bool = False) -> str:
        """Write the trainer's state now; returns the path (the same on every rank)."""
        state = trainer.state_dict()
        if is_distributed() and not interrupted:
            merged: Dict[int, Any] = {}
            for part in all_gather_object(state["per_rank"]):
                merged.update(part)
            state["per_rank"] = merged
        path = self.path_for(trainer, interrupted)
        if is_main_process():
            save_checkpoint(state, path)
            self._prune()
        self.last_path = path
        trainer.last_checkpoint = path
        return path

    def _prune(self) -> None:
        if self.keep_last is None:
            return
        for _, path in _listed(self.directory, self.prefix)[: -self.keep_last]:
            try:
                os.remove(path)
            except FileNotFoundError:  # pragma: no cover - removed by someone else meanwhile
                pass

    # hooks
    def on_fit_start(self, trainer: Trainer) -> None:
        if self.last_path is not None:
            trainer.last_checkpoint = self.last_path

    def on_step_end(self, trainer: Trainer, info: Any) -> None:
        if self.every_n_steps is None or trainer.step % self.every_n_steps:
            return
        if self.at_epoch_end and info.batch_index + 1 == trainer.steps_per_epoch:
            return  # the epoch's last update: the epoch-end save (after validation) writes this step
        self.save(trainer)

    def on_epoch_end(self, trainer: Trainer, record: Any) -> None:
        if self.at_epoch_end:
            self.save(trainer)

    def on_fit_end(self, trainer: Trainer) -> None:
        if trainer.epoch_in_progress:  # stopped in the middle of an epoch: keep where it stopped
            self.save(trainer)

    def on_interrupt(self, trainer: Trainer) -> None:
        self.save(trainer, interrupted=not trainer.at_step_boundary)

    def __repr__(self) -> str:
        return (f"Checkpoint({self.directory!r}, every_n_steps={self.every_n_steps}, "
                f"keep_last={self.keep_last}, prefix={self.prefix!r})")
