"""``python -m examples.text compare``: the same model trained aggressively and the basic way.

What the method is for, in one command: two ``train`` runs with the same data, model, initial
weights and seed, one aggressive (the inference network catches up with the model before each
decoder update, until the validation MI stops rising; then basic training) and one basic from the
start, and their test metrics side by side. With the ``quick`` preset (the default) the basic run
collapses (KL ~0, no active unit, MI within the estimator's noise) and the aggressive run keeps its
latent variable in use. ``--preset cpu`` compares the two on the whole bundled corpus at a larger
size; ``--preset paper`` at the paper's sizes (a GPU job: add ``--device cuda``). Any other ``train``
option applies to both runs.

The runs are two processes, at once with one thread each (``--jobs 2``, the default) or one after
the other (``--jobs 1``); their lines are printed as they come, prefixed with the run's name. Each
writes its own directory (``OUT/aggressive``, ``OUT/basic``, as ``train`` does), and
``OUT/compare.json`` holds both runs' test metrics and times. Ctrl-C or SIGTERM reaches both runs,
which checkpoint and stop; the same command with ``--resume`` continues them.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from aggressive_vi import latest_checkpoint

from .experiment import MODEL_FILE, Interrupted, json_safe

__all__ = ["run", "format_comparison", "MODES"]

MODES = ("aggressive", "basic")
_REPO = Path(__file__).resolve().parents[2]  # holds the examples package


def train_command(mode: str, options: Sequence[str], out: Path, *, jobs: int, resume: bool) -> List[str]:
    """The ``train`` command line of one run: ``options``, its mode and directory; one thread when
    the two runs share the machine; ``--resume`` only for a run that has a checkpoint to resume."""
    run_dir = out / mode
    argv = ["train", *options, "--aggressive", "on" if mode == "aggressive" else "off", "--out", str(run_dir),
            "--no-progress"]
    if jobs == 2:
        argv += ["--threads", "1"]
    if resume and latest_checkpoint(run_dir / "checkpoints") is not None:
        argv.append("--resume")
    return argv


def run(options: Sequence[str], *, out: Path, jobs: int, resume: bool, preset: str) -> Dict[str, Any]:
    """Train both runs with the ``train`` ``options``, print their lines and the comparison, write
    ``out/compare.json``; returns what it holds.

    Raises:
        Interrupted: after a Ctrl-C or SIGTERM, passed on to the runs, which checkpointed and stopped.
        ChildProcessError: a run failed (its own error is in the lines above).
    """
    out.mkdir(parents=True, exist_ok=True)
    commands = {mode: train_command(mode, options, out, jobs=jobs, resume=resume) for mode in MODES}
    width = max(len(m) for m in MODES)
    prefixes = {mode: f"{mode:<{width}} | " for mode in MODES}
    how = "at once, one thread each" if jobs == 2 else "one after the other"
    _say(f"compare: the same model (preset {preset}) trained twice, aggressively and the basic way, {how}; "
         "each run's lines are prefixed with its name")
    for mode in MODES:
        _say(prefixes[mode] + "python -m examples.text " + " ".join(commands[mode]))
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(_REPO), os.environ.get("PYTHONPATH")) if p))
    if jobs == 2:
        env["OMP_NUM_THREADS"] = "1"
    runs = _Runs(commands, prefixes, env)
    start = time.perf_counter()
    with runs:  # signals go on to the runs
        for batch in ([list(MODES)] if jobs == 2 else [["basic"], ["aggressive"]]):  # basic: the short one
            if runs.signal_name is None and not runs.failed:
                runs.start_and_wait(batch)
    wall = time.perf_counter() - start
    if runs.signal_name is not None:
        dirs = [str(out / mode / "checkpoints") for mode in MODES if mode in runs.started]
        raise Interrupted(runs.signal_name, "checkpoints in " + " and ".join(dirs) if dirs else None)
    if runs.failed:
        mode, code = runs.failed[0]
        raise ChildProcessError(f"the {mode} run failed (exit status {code}); its output is above, "
                                f"prefixed '{prefixes[mode].strip()}'")
    results = {mode: json.loads((out / mode / "metrics.json").read_text()) for mode in MODES}
    for mode in MODES:
        results[mode]["switch_after"] = _switch(out / mode / "history.json")
    saved = torch.load(out / "aggressive" / MODEL_FILE, map_location="cpu", weights_only=True)["preset"]
    summary = {"preset_name": preset, "preset": saved, "options": list(options), "jobs": jobs,
               "wall_seconds": wall, "runs": results, "commands": {m: commands[m] for m in MODES}}
    (out / "compare.json").write_text(json.dumps(json_safe(summary), indent=1))
    _say("\n" + format_comparison(results, latent_dim=saved["latent_dim"]))
    _say(f"\nboth runs took {wall:.0f}s; wrote {out}/compare.json, {out}/aggressive/, {out}/basic/")
    return summary


def format_comparison(results: Dict[str, Dict[str, Any]], *, latent_dim: int) -> str:
    """The runs side by side (one column each): test MI, active units, KL, IW-NLL, PPL, the
    aggressive epochs and where the switch came, training time; then how to read it."""
    rows = [("MI (nats)", lambda r: f"{r['mi']:.3f}"),
            (f"active units (of {latent_dim})", lambda r: f"{r['au']:d}"),
            ("KL (nats)", lambda r: f"{r['kl']:.3f}"),
            ("IW-NLL (nats/sentence)", lambda r: f"{r['iw_nll']:.2f}"),
            ("PPL", lambda r: f"{r['ppl']:.2f}"),
            ("aggressive epochs", lambda r: f"{r['aggressive_epochs']:d}"),
            ("switch to basic", lambda r: "-" if r.get("switch_after") is None
             else f"update {r['switch_after']}"),
            ("training time (s)", lambda r: f"{r['train_seconds']:.0f}")]
    names = list(results)
    label = max(len(r[0]) for r in rows) + 2
    col = max(12, *(len(n) + 2 for n in names))
    lines = ["".ljust(label) + "".join(f"{n:>{col}}" for n in names)]
    for title, cell in rows:
        lines.append(title.ljust(label) + "".join(f"{cell(results[n]):>{col}}" for n in names))
    first = results[names[0]]
    # the spread of the paper's MI estimate for a collapsed q(z|x), sqrt(d / 2 / N) (docs/results.md)
    noise = 2 * math.sqrt(latent_dim / 2 / first["n_sentences"])
    lines.append(f"\ntest split: {first['n_sentences']} sentences, {first['iw_samples']} importance samples. "
                 f"A collapsed latent shows KL ~0, no active unit and an MI within about +-{noise:.2f} nats "
                 "of 0 (twice the spread of the estimate when q(z|x) is the prior).")
    return "\n".join(lines)


def _switch(history_path: Path) -> Optional[int]:
    """The decoder update after which the run left the aggressive phase (``None``: it did not)."""
    for record in json.loads(history_path.read_text()):
        if record.get("left_aggressive_at") is not None:
            return int(record["left_aggressive_at"])
    return None


def _say(text: str) -> None:
    print(text, flush=True)


class _Runs:
    """The two ``train`` processes: started in sessions of their own (a terminal's Ctrl-C reaches
    this process alone), their lines printed with a prefix, and each signal this process receives
    passed on to every run still going (a first one: checkpoint and stop; a second: stop at once)."""

    def __init__(self, commands: Dict[str, List[str]], prefixes: Dict[str, str], env: Dict[str, str]) -> None:
        self.commands, self.prefixes, self.env = commands, prefixes, env
        self.started: Dict[str, subprocess.Popen] = {}
        self.failed: List[Tuple[str, int]] = []  # (mode, exit status) of runs that failed on their own
        self.signal_name: Optional[str] = None
        self._signum: Optional[int] = None
        self._previous: Dict[int, Any] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> "_Runs":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._forward)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _forward(self, signum: int, frame: Any) -> None:
        if self.signal_name is None:
            self.signal_name, self._signum = signal.Signals(signum).name, signum
        self._send(signum)

    def _send(self, signum: int) -> None:
        for proc in self.started.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    def start_and_wait(self, modes: Sequence[str]) -> None:
        procs, pumps = {}, []
        for mode in modes:
            proc = subprocess.Popen([sys.executable, "-m", "examples.text", *self.commands[mode]], env=self.env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, bufsize=1, start_new_session=True)
            procs[mode] = self.started[mode] = proc
            if self._signum is not None:  # a signal came while it was starting
                proc.send_signal(self._signum)
            pump = threading.Thread(target=self._pump, args=(proc, self.prefixes[mode]), daemon=True)
            pump.start()
            pumps.append(pump)
        pending = dict(procs)
        while pending:
            for mode, proc in list(pending.items()):
                try:
                    code = proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    continue
                del pending[mode]
                if code != 0 and self.signal_name is None:
                    self.failed.append((mode, code))
                    self._send(signal.SIGTERM)  # the other run: checkpoint and stop
        for pump in pumps:
            pump.join()

    def _pump(self, proc: subprocess.Popen, prefix: str) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._lock:
                print(prefix + line.rstrip("\n"), flush=True)
