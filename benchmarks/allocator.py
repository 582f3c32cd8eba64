"""``python -m benchmarks.allocator``: what glibc's allocator settings do to a training step on the CPU.

On Linux, glibc's ``malloc`` hands large blocks back to the kernel when they are freed and takes
fresh pages when they are asked for again, so a step that allocates the same large tensors every time
(a text decoder's logits and their gradient) can spend much of its time in page faults. Two
environment variables, read when a process starts, change that: ``MALLOC_MMAP_THRESHOLD_`` (blocks
above it are mapped and unmapped one by one; setting it also stops glibc from raising it by itself)
and ``MALLOC_TRIM_THRESHOLD_`` (free memory above it at the top of the heap is returned). This script
times the same work in child processes that differ only in those variables, the variants alternated
round by round, and prints medians and their ratio to the default::

    python -m benchmarks.allocator --rounds 5 --out benchmarks/results/allocator_cpu.json

The work, on ``benchmarks.iw_memory``'s plain LSTM text VAE (a user's own model, no chunking) at its
``cpu`` size with 12-token sentences: ``inner`` (``AggressiveStep.encoder_update``, the paper's joint
clipping), ``joint`` (a basic step) and ``iw_nll`` (100 samples of 32 sentences, the library's
default rows); milliseconds of process CPU time per step, median of ``--steps`` after a warm-up.
The library sets nothing: these are the user's process settings (docs/performance.md).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

from .core.tables import plain_table, write_json
from .iw_memory import ROOT, SIZES, build, sentences

__all__ = ["VARIANTS", "MEASURES", "measure", "child_env", "run_child", "main"]

#: environment of each variant (``None``: the variable is removed)
VARIANTS: Dict[str, Dict[str, Optional[str]]] = {
    "default": {"MALLOC_MMAP_THRESHOLD_": None, "MALLOC_TRIM_THRESHOLD_": None},
    "mmap_32MiB": {"MALLOC_MMAP_THRESHOLD_": str(32 * 2 ** 20), "MALLOC_TRIM_THRESHOLD_": None},
    "trim_1GiB": {"MALLOC_MMAP_THRESHOLD_": None, "MALLOC_TRIM_THRESHOLD_": str(2 ** 30)},
    "both": {"MALLOC_MMAP_THRESHOLD_": str(32 * 2 ** 20), "MALLOC_TRIM_THRESHOLD_": str(2 ** 30)},
}
MEASURES = ("inner", "joint", "iw_nll")


def measure(size: str = "cpu", tokens: int = 12, steps: int = 20, warmup: int = 3) -> Dict[str, float]:
    """Median milliseconds (process CPU time) per step of each of :data:`MEASURES`, in this process."""
    from aggressive_vi import AggressiveStep, estimators
    dims = SIZES[size]
    vae = build(dims)
    step = AggressiveStep(vae, torch.optim.SGD(vae.encoder.parameters(), lr=1.0),
                          torch.optim.SGD(vae.decoder.parameters(), lr=1.0))
    batches = [sentences(dims["batch"], tokens, dims["vocab"], seed=i) for i in range(4)]
    work = {"inner": lambda i: step.encoder_update(batches[i % 4], 1.0),
            "joint": lambda i: step.joint_update(batches[i % 4], 1.0),
            "iw_nll": lambda i: estimators.iw_nll(vae, batches[i % 4:i % 4 + 1], n_samples=100)}
    out: Dict[str, float] = {}
    for name in MEASURES:
        n = steps if name != "iw_nll" else max(2, steps // 5)
        times = []
        for i in range(warmup + n):
            start = time.process_time()
            work[name](i)
            if i >= warmup:
                times.append(time.process_time() - start)
        out[name] = 1e3 * statistics.median(times)
    return out


def child_env(variant: str, threads: int, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """``base`` (default: this process's environment) with the variant's variables set or removed,
    this checkout first on ``PYTHONPATH`` and ``threads`` OpenMP threads."""
    base = dict(os.environ if base is None else base)
    env = {k: v for k, v in base.items() if k not in VARIANTS[variant]}
    env.update({k: v for k, v in VARIANTS[variant].items() if v is not None})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_child(variant: str, spec: Dict[str, Any], threads: int) -> Dict[str, float]:
    """:func:`measure` in a fresh process under the variant's environment (:func:`child_env`)."""
    env = child_env(variant, threads)
    out = subprocess.run([sys.executable, "-m", "benchmarks.allocator", "--child", json.dumps(spec)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=3600)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{variant}: exit status {out.returncode}: {out.stderr.strip()[-500:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.allocator", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="rounds; each runs every variant once, in turn")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--size", choices=list(SIZES), default="cpu")
    p.add_argument("--tokens", type=int, default=12)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="JSON file to write")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        print("RESULT " + json.dumps(measure(**spec)), flush=True)
        return {}
    if args.rounds < 1 or args.steps < 2 or args.threads < 1 or "default" not in args.variants:
        p.error("--rounds >= 1, --steps >= 2, --threads >= 1, and the variants must include default")
    spec = {"size": args.size, "tokens": args.tokens, "steps": args.steps}
    runs: Dict[str, List[Dict[str, float]]] = {v: [] for v in args.variants}
    for r in range(args.rounds):
        order = args.variants if r % 2 == 0 else list(reversed(args.variants))
        for variant in order:
            runs[variant].append(run_child(variant, spec, args.threads))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{v} inner {runs[v][-1]['inner']:.1f} ms"
                                                          for v in args.variants), flush=True)
    medians = {v: {m: statistics.median(run[m] for run in runs[v]) for m in MEASURES} for v in args.variants}
    ratios = {v: {m: medians["default"][m] / medians[v][m] for m in MEASURES} for v in args.variants}
    print()
    print(plain_table(["variant", *(f"{m} ms" for m in MEASURES), *(f"{m} x default" for m in MEASURES)],
                      [[v, *(f"{medians[v][m]:.2f}" for m in MEASURES), *(f"{ratios[v][m]:.2f}" for m in MEASURES)]
                       for v in args.variants], right_from=1))
    result = {"argv": list(sys.argv[1:] if argv is None else argv), "torch": torch.__version__,
              "machine": platform.machine(), "libc": platform.libc_ver(), "spec": spec, "threads": args.threads,
              "variants": {v: VARIANTS[v] for v in args.variants}, "runs": runs, "medians": medians,
              "speedup_over_default": ratios}
    if args.out:
        write_json(args.out, result)
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":  # pragma: no cover
    main()
