"""Run the paper's own ``image.py`` (He et al., 2019) from a checkout the user names, and read its output.

Nothing of that code is part of this project. :func:`prepare_image_reference` copies the checkout's
``image.py``, ``logger.py``, ``modules`` and ``config`` into a scratch directory (the checkout is
never written to) and puts :mod:`benchmarks.image_parity.launcher` beside them as ``run_image.py``;
:func:`write_config` adds ``config/config_parity.py`` with the run's data file, latent size, latent
maps, batch size and epochs (and, when the model is not the paper's own size, ``parity_sizes`` for
the launcher); :func:`run_image_reference` starts ``python run_image.py --dataset parity
--aggressive {0,1} --taskid <i> --iw_nsamples <K>`` there with one thread and no GPU.

What the script does, as read from its source (and matched by :mod:`benchmarks.image_parity.ours`):
Adam (lr 1e-3) per network, training batches of 50 shuffled and binarised with ``torch.bernoulli``
at every draw, inner-loop batches of 50 distinct random training images (``np.random.choice``
without replacement), binarised; up to 99 inner steps with the window test every 10; both networks'
gradients computed in every step and their joint norm clipped at 5; the aggressive phase left after
the validation MI has failed to beat its best 5 times in total (``STOP BURNING``); the model of the
best validation loss reloaded for the test; test ``TEST --- ...``, ``N active units`` and
``iw nll: X`` (importance samples drawn 100 at a time, batches of 50). While aggressive (and
throughout epoch 0) it also measures validation MI and AU five times an epoch for its log; that time
is part of its training time here, as it is part of the script.

:func:`parse_image_output` turns the printed lines into numbers, and, with the time stamps the
harness adds (wall) and the launcher adds (``[cpu S]``, the process's CPU seconds), into per-epoch,
training and IW-NLL times.
"""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..core import reference as paper
from ..core.reference import (ACTIVE_UNITS, CONFIG_NAME, FLOAT, TRAIN_LOG, Line, as_lines, copy_reference,
                              final_evaluation, task_id)
from ..core.side_by_side import run_reference_script
from . import launcher
from .spec import ImageRunSpec

__all__ = ["prepare_image_reference", "write_config", "image_reference_command", "run_image_reference",
           "parse_image_output", "split_cpu_stamp", "NEEDED", "LAUNCHER_NAME"]

PathLike = Union[str, Path]
LAUNCHER_NAME = "run_image.py"
NEEDED = ("image.py", "logger.py", "modules", "config")

_TEST = re.compile(rf"^TEST --- avg_loss: {FLOAT}, kl: {FLOAT}, mi: {FLOAT}, recon: {FLOAT}, nll: {FLOAT}")
_VAL = re.compile(rf"^VAL --- avg_loss: {FLOAT}, kl: {FLOAT}, mi: {FLOAT}, recon: {FLOAT}, nll: {FLOAT}")
_IW = re.compile(rf"^iw nll: {FLOAT}")
_KL_WEIGHT = re.compile(r"^kl weight ")
_STOP = re.compile(r"^STOP BURNING")
_BATCHES = re.compile(r"^Train data: (\d+) batches")
_CPU = re.compile(r"^\[cpu ([0-9.]+)\] ?")


def prepare_image_reference(reference_dir: PathLike, work_dir: PathLike) -> Path:
    """Copy the paper's image code from ``reference_dir`` to ``work_dir/reference`` and add the
    launcher as ``run_image.py``; returns the copy.

    Raises:
        FileNotFoundError: ``reference_dir`` lacks ``image.py`` or one of the packages it imports.
    """
    copy = copy_reference(reference_dir, work_dir, NEEDED)
    shutil.copy2(launcher.__file__, copy / LAUNCHER_NAME)
    return copy


def write_config(copy_dir: PathLike, spec: ImageRunSpec) -> Path:
    """Write ``copy_dir/config/config_parity.py`` for ``spec`` and return it.

    ``test_nepoch`` is set past the budget so that the script evaluates the test set inside its loop
    only after epoch 0 (which it always does), not every 5 epochs. ``enc_layers`` and
    ``dec_kernel_size`` carry the sizes under the paper's config names (its image script does not
    read them); ``parity_sizes`` is what the launcher reads.
    """
    params: Dict[str, Any] = {
        "img_size": [1, 28, 28], "nz": spec.latent_dim, "latent_feature_map": spec.latent_maps,
        "enc_layers": list(spec.encoder_channels), "dec_kernel_size": list(spec.decoder_kernel_sizes),
        "batch_size": spec.batch_size, "epochs": spec.epochs, "test_nepoch": spec.epochs + 1,
        "data_file": str(Path(spec.data_file).resolve()),
    }
    if not spec.paper_sizes:
        params["parity_sizes"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.sizes().items()
                                  if k != "latent_maps"}
    return paper.write_config(copy_dir, params, "benchmarks.image_parity")


def image_reference_command(spec: ImageRunSpec, copy_dir: PathLike, python: str = sys.executable) -> List[str]:
    """The command line that runs ``spec`` through the launcher in ``copy_dir``.

    Raises:
        ValueError: ``spec.seed`` is not one of the script's seeds.
    """
    return [python, LAUNCHER_NAME, "--dataset", CONFIG_NAME, "--aggressive", "1" if spec.aggressive else "0",
            "--kl_start", "1.0", "--taskid", str(task_id(Path(copy_dir) / "image.py", spec.seed)),
            "--iw_nsamples", str(spec.iw_samples)]


def run_image_reference(spec: ImageRunSpec, reference_dir: PathLike, work_dir: PathLike, *,
                        python: str = sys.executable, timeout: Optional[float] = None) -> Dict[str, Any]:
    """Copy the checkout, write the config, run the script and parse what it printed (see
    :func:`parse_image_output`; adds ``wall_seconds``, ``log`` and ``command``).

    Raises:
        ReferenceOutputError: the script failed or printed no final numbers.
    """
    spec.check_files()
    copy_dir = prepare_image_reference(reference_dir, work_dir)
    write_config(copy_dir, spec)
    return run_reference_script(image_reference_command(spec, copy_dir, python), copy_dir, work_dir,
                                lambda lines: parse_image_output(lines, aggressive=spec.aggressive), timeout)


def split_cpu_stamp(text: str) -> Tuple[Optional[float], str]:
    """``("[cpu 1.5] text")`` -> ``(1.5, "text")``; a line without the launcher's stamp -> ``(None, text)``."""
    m = _CPU.match(text)
    if m is None:
        return None, text
    return float(m.group(1)), text[m.end():]


def parse_image_output(output: Union[str, Sequence[Line]], *,
                       aggressive: bool) -> Dict[str, Any]:
    """Numbers from what ``image.py`` printed: a string, or ``(wall seconds, line)`` pairs.

    The final evaluation is the last ``TEST ---`` line, the ``N active units`` line after it and the
    ``iw nll:`` line after that. An epoch ends with the ``N active units`` line after its ``VAL``
    line. With ``aggressive``, the aggressive epochs are those up to the one that printed ``STOP
    BURNING`` (all, if it never did).

    Returns:
        ``{"metrics": {neg_elbo, kl, mi, reconstruction, au, iw_nll}, "epochs_run",
        "aggressive_epochs", "val_mi", "val_neg_elbo", "train_batches", and per clock ("wall" from
        the harness's stamps, "cpu" from the launcher's): "train_seconds", "iw_seconds",
        "epoch_seconds" [per epoch], "train_cpu_seconds", "iw_cpu_seconds", "epoch_cpu_seconds"}``;
        a time is ``None`` where its stamps are missing.

    Raises:
        ReferenceOutputError: no final ``TEST``, active-units or ``iw nll:`` line.
    """
    walls: List[Optional[float]] = []
    cpus: List[Optional[float]] = []
    texts: List[str] = []
    for wall, text in as_lines(output):
        cpu, rest = split_cpu_stamp(text.strip())
        walls.append(wall)
        cpus.append(cpu)
        texts.append(rest.strip())
    tests = [i for i, t in enumerate(texts) if _TEST.match(t)]
    final, au_idx, iw_idx = final_evaluation(texts, _TEST, _IW, "iw nll: X")
    test = [float(v) for v in _TEST.match(texts[final]).groups()]  # type: ignore[union-attr]
    metrics = {"neg_elbo": test[0], "kl": test[1], "mi": test[2], "reconstruction": test[3],
               "au": int(ACTIVE_UNITS.match(texts[au_idx]).group(1)),  # type: ignore[union-attr]
               "iw_nll": float(_IW.match(texts[iw_idx]).group(1))}  # type: ignore[union-attr]
    vals = [i for i, t in enumerate(texts) if _VAL.match(t) and i < final]
    epoch_ends = [next((j for j in range(i + 1, len(texts)) if ACTIVE_UNITS.match(texts[j])), i) for i in vals]
    kl_lines = [i for i, t in enumerate(texts) if _KL_WEIGHT.match(t)]
    stop = next((i for i, t in enumerate(texts) if _STOP.match(t)), None)
    if not aggressive:
        aggressive_epochs = 0
    elif stop is None:
        aggressive_epochs = len(vals)
    else:
        aggressive_epochs = sum(1 for i in kl_lines if i < stop) + 1
    batches = next((int(m.group(1)) for m in map(_BATCHES.match, texts) if m), None)
    steps = next(([int(n) for n in t[len(launcher.STEPS_LINE):].split()] for t in texts
                  if t.startswith(launcher.STEPS_LINE)), None)
    inner_mean = None
    if steps is not None and len(steps) >= 2 and batches and aggressive_epochs:
        # the encoder's optimiser steps once per inner step while aggressive, once per batch after
        aggressive_updates = batches * aggressive_epochs
        inner_mean = (steps[0] - (steps[1] - aggressive_updates)) / aggressive_updates
    out: Dict[str, Any] = {
        "metrics": metrics, "epochs_run": len(vals), "aggressive_epochs": aggressive_epochs,
        "optimizer_steps": steps, "inner_steps_per_update": inner_mean,
        "val_mi": [float(_VAL.match(texts[i]).group(3)) for i in vals],  # type: ignore[union-attr]
        "val_neg_elbo": [float(_VAL.match(texts[i]).group(1)) for i in vals],  # type: ignore[union-attr]
        "train_batches": batches,
    }
    first_log = next((i for i, t in enumerate(texts) if TRAIN_LOG.match(t)), None)
    in_loop_tests = [i for i in tests if i < final]
    for clock, stamps in (("", walls), ("_cpu", cpus)):
        times = _timings(stamps, texts, first_log, epoch_ends, in_loop_tests, final, au_idx, iw_idx,
                         clock_is_wall=clock == "")
        for key in ("train", "iw", "epoch"):
            out[f"{key}{clock}_seconds"] = times[key]
    return out


def _timings(stamps: Sequence[Optional[float]], texts: Sequence[str], first_log: Optional[int],
             epoch_ends: Sequence[int], in_loop_tests: Sequence[int], final: int, au_idx: int, iw_idx: int,
             *, clock_is_wall: bool) -> Dict[str, Any]:
    none: Dict[str, Any] = {"train": None, "iw": None, "epoch": None}
    if first_log is None or any(stamps[i] is None for i in [first_log, final - 1, au_idx, iw_idx, *epoch_ends,
                                                             *in_loop_tests, *[i - 1 for i in in_loop_tests]]):
        return none
    s = [float(v) if v is not None else float("nan") for v in stamps]
    if clock_is_wall:  # the script's own clock starts just before its first batch
        start = s[first_log] - float(TRAIN_LOG.match(texts[first_log]).group(3))  # type: ignore[union-attr]
    else:  # CPU: from the last line printed before the loop ("Test data: N batches"; the models'
        # construction, a fraction of a second, falls inside)
        start = s[first_log - 1] if first_log > 0 and stamps[first_log - 1] is not None else s[first_log]
    test_spans = [(s[i - 1], s[i]) for i in in_loop_tests]  # an in-loop test: from the line before it

    def minus_tests(a: float, b: float) -> float:
        return b - a - sum(t1 - t0 for t0, t1 in test_spans if a <= t0 and t1 <= b)

    bounds = [start] + [s[i] for i in epoch_ends]
    epochs = [minus_tests(a, b) for a, b in zip(bounds, bounds[1:])]
    return {"train": minus_tests(start, s[final - 1]), "iw": s[iw_idx] - s[au_idx], "epoch": epochs}
