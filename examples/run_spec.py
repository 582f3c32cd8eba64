"""A run's settings inside the library's checkpoints, checked when the run is resumed.

Both example CLIs checkpoint with :class:`aggressive_vi.Checkpoint` into ``OUT/checkpoints`` and
resume with ``trainer.fit(resume_from=latest_checkpoint(OUT/checkpoints))``. What the trainer's
state does not hold (the text vocabulary, the preset, the options that shape training) travels in
the same file: :class:`RunSpec` is a callback with a ``state_dict``, which ``trainer.state_dict()``
saves with its own (plain strings, numbers, lists and dicts, so the file still loads with
``torch.load(..., weights_only=True)``). :func:`check_resume` compares it with the settings of the
command that resumes before anything is loaded, and names every difference.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from aggressive_vi import latest_checkpoint
from aggressive_vi.checkpoint import load_checkpoint

__all__ = ["RunMismatchError", "RunSpec", "spec_differences", "saved_spec", "check_resume", "resume_point"]

PathLike = Union[str, Path]


class RunMismatchError(ValueError):
    """``--resume`` with settings other than those of the run that wrote the checkpoint."""


def _plain(spec: Dict[str, Any]) -> Dict[str, Any]:
    """``spec`` as JSON values (tuples become lists), so that saved and current specs compare
    equal; raises ``TypeError`` naming the culprit when a value is not JSON."""
    try:
        return json.loads(json.dumps(spec))
    except TypeError as err:
        raise TypeError(f"a RunSpec holds strings, numbers, booleans, None, lists and dicts only: {err}") from err


class RunSpec:
    """Callback carrying a run's settings (a JSON-like dict) in every library checkpoint.

    ``state_dict()`` is saved by ``trainer.state_dict()`` (under ``"callbacks"``); ``load_state_dict``
    raises :class:`RunMismatchError` when the saved settings differ from this run's (a safeguard:
    the CLIs call :func:`check_resume` first, before the model is touched).
    """

    def __init__(self, spec: Dict[str, Any]) -> None:
        self.spec = _plain(spec)

    def state_dict(self) -> Dict[str, Any]:
        return {"spec": copy.deepcopy(self.spec)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        differences = spec_differences(state.get("spec"), self.spec)
        if differences:
            raise RunMismatchError("the checkpoint was written by a run with other settings: "
                                   + "; ".join(differences))


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def spec_differences(saved: Any, now: Any, name: str = "") -> List[str]:
    """Every difference between two specs, one readable line each, e.g.
    ``"preset.hidden_dim: 16 in the checkpoint, 32 now"``; long lists (a vocabulary) are summarised
    by their lengths and first differing item."""
    where = name or "settings"
    if isinstance(saved, dict) and isinstance(now, dict):
        out: List[str] = []
        for key in sorted(set(saved) | set(now)):
            sub = f"{name}.{key}" if name else str(key)
            if key not in saved:
                out.append(f"{sub}: not in the checkpoint, {_short(now[key])} now")
            elif key not in now:
                out.append(f"{sub}: {_short(saved[key])} in the checkpoint, not set now")
            else:
                out.extend(spec_differences(saved[key], now[key], sub))
        return out
    if saved == now:
        return []
    if isinstance(saved, list) and isinstance(now, list) and max(len(saved), len(now)) > 8:
        first = next((i for i, (a, b) in enumerate(zip(saved, now)) if a != b), min(len(saved), len(now)))
        at = (f"; first difference at index {first}: {_short(saved[first])} in the checkpoint, "
              f"{_short(now[first])} now" if first < min(len(saved), len(now)) else "")
        return [f"{where}: {len(saved)} items in the checkpoint, {len(now)} now{at}"]
    return [f"{where}: {_short(saved)} in the checkpoint, {_short(now)} now"]


def saved_spec(path: PathLike) -> Optional[Dict[str, Any]]:
    """The :class:`RunSpec` settings saved in the library checkpoint at ``path`` (``None`` if it
    holds none). The file is read with ``weights_only=True``."""
    state = load_checkpoint(path)
    for entry in state.get("callbacks") or []:
        if isinstance(entry, dict) and entry.get("type") == RunSpec.__name__:
            return (entry.get("state") or {}).get("spec")
    return None


def check_resume(path: PathLike, spec: RunSpec) -> None:
    """Raise :class:`RunMismatchError` unless the checkpoint at ``path`` was written by a run with
    the settings ``spec`` (the error lists every difference)."""
    saved = saved_spec(path)
    if saved is None:
        raise RunMismatchError(f"--resume: {path} holds no run settings (a RunSpec); it was not "
                               "written by this example's train command")
    differences = spec_differences(saved, spec.spec)
    if differences:
        raise RunMismatchError(
            f"--resume: {path} was written by a run with other settings: " + "; ".join(differences)
            + ". Resume with that run's options, or train into another --out"
        )


def resume_point(checkpoints: PathLike, resume: bool) -> Optional[str]:
    """The checkpoint ``train`` continues from: the latest in ``checkpoints`` with ``--resume``
    (``FileNotFoundError`` when there is none), ``None`` without. A fresh run refuses a directory
    that already holds checkpoints: its files would mix with the earlier run's (and the older,
    further-advanced ones would be kept while its own are pruned)."""
    found = latest_checkpoint(checkpoints)
    if resume and found is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {checkpoints}")
    if not resume and found is not None:
        raise FileExistsError(f"{checkpoints} already holds checkpoints of an earlier run ({Path(found).name}); "
                              "pass --resume to continue it, or another --out")
    return found
