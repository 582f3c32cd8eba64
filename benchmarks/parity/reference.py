"""Run the paper's own ``text.py`` (He et al., 2019) from a checkout the user names, and read its output.

Nothing of that code is part of this project: :func:`prepare_reference` copies the checkout's Python
files into a scratch directory (the user's checkout is never written to), :func:`write_config` adds a
``config/config_<name>.py`` there with the run's files and sizes, and :func:`run_reference` starts
``python text.py --dataset <name> --aggressive {0,1} --taskid <i> --iw_nsamples <K>`` in that
directory with one thread and no GPU, time-stamping every line it prints.

What the script does, as read from its source (and matched by :mod:`benchmarks.parity.ours`): it
builds the vocabulary from the training file (ids in order of first appearance), batches sentences
of equal length only, trains with SGD lr 1.0 on both networks, leaves the aggressive phase at the
first epoch whose validation MI is below the previous one's, reloads the best validation model and
prints on the test file ``TEST --- ... kl ... mi ...``, ``N active units`` and, with batch size 1,
``iw nll: X, iw ppl: Y``. While aggressive (and throughout epoch 0) it also measures validation MI
and AU ten times an epoch for its log; that time is part of its training time here.

:func:`parse_reference_output` turns the printed lines into numbers; with time stamps it also gives
the training time (from the start of its training loop to its last line, minus the test-set
evaluation it runs after epoch 0) and the IW-NLL time.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..core import reference as paper
from ..core.reference import (ACTIVE_UNITS, CONFIG_NAME, FLOAT, TEXT_NEEDED, TRAIN_LOG, Line, as_lines,
                              copy_reference, final_evaluation, task_id)
from ..core.side_by_side import run_reference_script
from .spec import RunSpec

__all__ = ["prepare_reference", "write_config", "reference_command", "run_reference", "parse_reference_output"]

PathLike = Union[str, Path]
_NEEDED = (*TEXT_NEEDED, "config")

_TEST = re.compile(rf"^TEST --- avg_loss: {FLOAT}, kl: {FLOAT}, mi: {FLOAT}, recon: {FLOAT}, "
                   rf"nll: {FLOAT}, ppl: {FLOAT}")
_VAL = re.compile(rf"^VAL --- avg_loss: {FLOAT}, kl: {FLOAT}, mi: {FLOAT}")
_IW = re.compile(rf"^iw nll: {FLOAT}, iw ppl: {FLOAT}")
_PRE_MI = re.compile(rf"^pre mi:{FLOAT}\. cur mi:{FLOAT}")
_TRAIN_SIZE = re.compile(r"^Train data: (\d+) samples")
_VOCAB = re.compile(r"^finish reading datasets, vocab size is (\d+)")


def prepare_reference(reference_dir: PathLike, work_dir: PathLike, needed: Sequence[str] = _NEEDED) -> Path:
    """Copy what ``text.py`` needs (or the files and packages named in ``needed``) from
    ``reference_dir`` into ``work_dir/reference`` (replaced if present) and return that copy. Only
    Python sources travel (no data sets, images or git history); see
    :func:`benchmarks.core.reference.copy_reference`.

    Raises:
        FileNotFoundError: ``reference_dir`` lacks ``text.py`` or one of its packages.
    """
    return copy_reference(reference_dir, work_dir, needed)


def write_config(copy_dir: PathLike, spec: RunSpec) -> Path:
    """Write ``copy_dir/config/config_parity.py`` for ``spec`` (absolute file paths) and return it.

    ``test_nepoch`` is set past the budget so that the script evaluates the test file inside its loop
    only once (after epoch 0, which it always does), not after every epoch.
    """
    params: Dict[str, Any] = {
        "enc_type": "lstm", "dec_type": "lstm",
        "nz": spec.latent_dim, "ni": spec.embed_dim, "enc_nh": spec.hidden_dim, "dec_nh": spec.hidden_dim,
        "dec_dropout_in": spec.dropout, "dec_dropout_out": spec.dropout,
        "epochs": spec.epochs, "batch_size": spec.batch_size, "test_nepoch": spec.epochs + 1,
        "train_data": str(Path(spec.train).resolve()), "val_data": str(Path(spec.valid).resolve()),
        "test_data": str(Path(spec.test).resolve()),
    }
    return paper.write_config(copy_dir, params, "benchmarks.parity")


def reference_command(spec: RunSpec, copy_dir: PathLike, python: str = sys.executable) -> List[str]:
    """The command line that runs ``spec`` with the script in ``copy_dir``.

    Raises:
        ValueError: ``spec.seed`` is not one of the script's seeds.
    """
    return [python, "text.py", "--dataset", CONFIG_NAME, "--aggressive", "1" if spec.aggressive else "0",
            "--kl_start", repr(float(spec.kl_start)), "--warm_up", str(spec.warm_up),
            "--taskid", str(task_id(Path(copy_dir) / "text.py", spec.seed)), "--iw_nsamples", str(spec.iw_samples)]


def run_reference(spec: RunSpec, reference_dir: PathLike, work_dir: PathLike, *, python: str = sys.executable,
                  timeout: Optional[float] = None) -> Dict[str, Any]:
    """Copy the checkout, write the config, run the script and parse what it printed.

    Returns a result dict (see :func:`benchmarks.core.side_by_side.make_result`): ``metrics`` (test
    ``kl``, ``mi``, ``au``, ``iw_nll``, ``iw_ppl``, ``neg_elbo``), ``train_seconds``, ``iw_seconds``,
    ``wall_seconds``, ``aggressive_epochs``, ``epochs_run``, ``log`` (the path of its output).

    Raises:
        ReferenceOutputError: the script failed or printed no final numbers (the message has the
            last lines of its output).
    """
    spec.check_files()
    copy_dir = prepare_reference(reference_dir, work_dir)
    write_config(copy_dir, spec)
    return run_reference_script(reference_command(spec, copy_dir, python), copy_dir, work_dir,
                                parse_reference_output, timeout)


def parse_reference_output(output: Union[str, Sequence[Line]]) -> Dict[str, Any]:
    """Numbers from what ``text.py`` printed: a string, or ``(seconds, line)`` pairs for timings.

    The final evaluation is the last ``TEST ---`` line, the ``N active units`` line after it and the
    ``iw nll:`` line. Aggressive epochs are counted by the ``pre mi:`` lines (one per aggressive epoch)
    and epochs by the ``VAL ---`` lines.

    Returns:
        ``{"metrics": {kl, mi, au, iw_nll, iw_ppl, neg_elbo, ppl}, "aggressive_epochs", "epochs_run",
        "train_size", "vocab_size", "val_mi": [per epoch], "val_neg_elbo": [per epoch], "train_seconds", "iw_seconds"}``; the two
        times are ``None`` without time stamps.

    Raises:
        ReferenceOutputError: no final ``TEST``, active-units or ``iw nll:`` line.
    """
    lines = as_lines(output)
    texts = [text.strip() for _, text in lines]
    final, au_idx, iw_idx = final_evaluation(texts, _TEST, _IW, "iw nll: X, iw ppl: Y")
    test = [float(v) for v in _TEST.match(texts[final]).groups()]  # type: ignore[union-attr]
    iw = [float(v) for v in _IW.match(texts[iw_idx]).groups()]  # type: ignore[union-attr]
    metrics = {"neg_elbo": test[0], "kl": test[1], "mi": test[2], "reconstruction": test[3], "ppl": test[5],
               "au": int(ACTIVE_UNITS.match(texts[au_idx]).group(1)),  # type: ignore[union-attr]
               "iw_nll": iw[0], "iw_ppl": iw[1]}
    out: Dict[str, Any] = {
        "metrics": metrics,
        "aggressive_epochs": sum(1 for t in texts if _PRE_MI.match(t)),
        "epochs_run": sum(1 for t in texts if _VAL.match(t)),
        "val_mi": [float(_VAL.match(t).group(3)) for t in texts if _VAL.match(t)],  # type: ignore[union-attr]
        "val_neg_elbo": [float(_VAL.match(t).group(1)) for t in texts if _VAL.match(t)],  # type: ignore[union-attr]
        "train_size": _first_int(_TRAIN_SIZE, texts), "vocab_size": _first_int(_VOCAB, texts),
        "train_seconds": None, "iw_seconds": None,
    }
    if all(t is not None for t, _ in lines):
        out["train_seconds"], out["iw_seconds"] = _timings(lines, texts, final, au_idx, iw_idx)
    return out


def _first_int(pattern: "re.Pattern[str]", texts: Sequence[str]) -> Optional[int]:
    for t in texts:
        m = pattern.match(t)
        if m:
            return int(m.group(1))
    return None


def _timings(lines: Sequence[Line], texts: Sequence[str], final: int, au_idx: int,
             iw_idx: int) -> Tuple[Optional[float], Optional[float]]:
    stamps = [float(t) for t, _ in lines]  # type: ignore[arg-type]
    first_log = next((i for i, t in enumerate(texts) if TRAIN_LOG.match(t)), None)
    train = None
    if first_log is not None and final > 0:
        elapsed = float(TRAIN_LOG.match(texts[first_log]).group(3))  # type: ignore[union-attr]
        start = stamps[first_log] - elapsed  # its clock starts just before the first batch
        end = stamps[final - 1]  # the loop's last line; the final test follows the best-model reload
        in_loop_tests = sum(stamps[i] - stamps[i - 1] for i in range(first_log + 1, final)
                            if _TEST.match(texts[i]))
        train = end - start - in_loop_tests
    return train, stamps[iw_idx] - stamps[au_idx]
