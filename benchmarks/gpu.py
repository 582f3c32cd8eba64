"""``python -m benchmarks.gpu``: the GPU measurements of docs/gpu.md in one run, one JSON file.

Made to run in one short lease of a GPU machine (about 5 minutes on one H200 at the defaults)::

    PYTHONUNBUFFERED=1 python -m benchmarks.gpu --device cuda --out $OUT/gpu.json

and, to check the script itself anywhere (tiny sizes, the CUDA-only parts skipped)::

    python -m benchmarks.gpu --device cpu --quick --out /tmp/gpu.json

Sections (each is timed on its own and a failure in one is recorded in the JSON, not fatal):

* ``inner_step``: at the paper's text sizes (LSTM 1024, embedding 512, vocabulary 20k, nz 32, batch
  32) the time per inner step of (a) the paper's procedure: a full backward through encoder and
  decoder, the joint norm clipped, the loss read with ``.item()``; (b) ours eager
  (``AggressiveTrainer``'s encoder step: encoder-only backward, gated on the device); (c) ours
  captured (``Engine(cuda_graph=True)``; CUDA only). Interleaved repetitions, medians, ratios to (a).
* ``host_syncs``: synchronising calls per aggressive decoder update, counted with
  ``torch.cuda.set_sync_debug_mode("warn")`` (CUDA only), with the default engine.
* ``iw_nll``: sentences per second of the batched ``IWNLL`` metric against a one-sentence-at-a-time
  loop (500 samples, fp32), the estimates side by side, and the same with ``allow_tf32()``.
* ``precision``: training curves (loss per decoder update of basic training) in fp32 and bf16 from
  the same initial weights and batches, side by side, plus a short fp16 run's scaler skips.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch

from aggressive_vi import VAE, AggressiveTrainer, Engine, FixedSteps, allow_tf32
from aggressive_vi.metrics import IWNLL
from examples.text.models import LSTMDecoder, LSTMEncoder

from .core.paper_update import elbo_loss, paper_update
from .core.tables import write_json
from .core.timing import interleave, median, per_unit, ratios_to, synced_clock

__all__ = ["main", "build_parser"]

PAPER = dict(vocab=20000, embed=512, hidden=1024, latent=32, batch=32, length=40)
QUICK = dict(vocab=200, embed=16, hidden=32, latent=4, batch=8, length=12)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (the measurements) or cpu (a check of the script)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and few repetitions")
    p.add_argument("--reps", type=int, default=None, help="interleaved repetitions per variant (default 7; quick 2)")
    p.add_argument("--out", required=True, help="the JSON file to write")
    return p


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batches(cfg: Dict[str, int], n: int, device: torch.device, seed: int = 0) -> List[torch.Tensor]:
    """``n`` token batches ``[batch, length]`` (ids >= 3, with <s> first), pinned for a GPU."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randint(3, cfg["vocab"], (cfg["batch"], cfg["length"]), generator=g)
        x[:, 0] = 1
        out.append(x.pin_memory() if device.type == "cuda" else x)
    return out


def _model(cfg: Dict[str, int], device: torch.device, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    enc = LSTMEncoder(cfg["vocab"], cfg["embed"], cfg["hidden"], cfg["latent"])
    dec = LSTMDecoder(cfg["vocab"], cfg["embed"], cfg["hidden"], cfg["latent"])
    return VAE(enc, dec).to(device)


def _trainer(vae: VAE, enc_opt: torch.optim.Optimizer, **kwargs: Any) -> AggressiveTrainer:
    dec_opt = torch.optim.SGD(vae.decoder.parameters(), lr=1.0)
    return AggressiveTrainer(vae, enc_opt, dec_opt, stopping=FixedSteps(10 ** 9), **kwargs)


def inner_step(cfg: Dict[str, int], device: torch.device, reps: int, steps: int) -> Dict[str, Any]:
    """Seconds per inner step: the paper's procedure, ours eager, ours captured (CUDA)."""
    batches = _batches(cfg, 8, device)
    variants: Dict[str, Callable[[], Any]] = {}

    paper = _model(cfg, device)
    paper_enc = torch.optim.SGD(paper.encoder.parameters(), lr=1.0)
    paper_dec = torch.optim.SGD(paper.decoder.parameters(), lr=1.0)  # zeroed each step, never stepped
    it_paper = iter(range(10 ** 9))

    def paper_step() -> None:  # the paper's loop: full backward, joint clip, a host read per step
        x = batches[next(it_paper) % len(batches)].to(device, non_blocking=True)
        paper_update(paper, paper_enc, paper_dec, x, phase="encoder", forward=elbo_loss)

    variants["paper_procedure"] = paper_step
    for name, cuda_graph in (("ours_eager", False), ("ours_captured", True)):
        if name == "ours_captured" and device.type != "cuda":
            continue
        vae = _model(cfg, device)
        opt = torch.optim.SGD(vae.encoder.parameters(), lr=1.0)
        trainer = _trainer(vae, opt, engine=Engine(cuda_graph=cuda_graph))
        counter = iter(range(10 ** 9))

        def ours(trainer: AggressiveTrainer = trainer, counter: Iterator[int] = counter) -> None:
            x = batches[next(counter) % len(batches)].to(device, non_blocking=True)
            trainer.algorithm.encoder_update(x, 1.0)  # the trainer's own inner step, as the loop calls it

        variants[name] = ours
    for fn in variants.values():  # warm-up (the captured step captures here)
        for _ in range(4):
            fn()
    t = interleave({name: _repeat(fn, steps) for name, fn in variants.items()}, reps, warmup=0,
                   clock=synced_clock(device))
    times = {k: per_unit(v["seconds"], [steps] * reps) for k, v in t.items()}
    medians = {k: median(v) for k, v in times.items()}
    return {"config": cfg, "steps_per_rep": steps, "reps": reps, "seconds": times, "median_s": medians,
            "ratio_to_paper": ratios_to(medians, "paper_procedure")}


def _repeat(fn: Callable[[], Any], steps: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(steps):
            fn()
    return run


def host_syncs(cfg: Dict[str, int], device: torch.device) -> Dict[str, Any]:
    """Synchronising CUDA calls per decoder update, by ``torch.cuda.set_sync_debug_mode``."""
    if device.type != "cuda":
        return {"skipped": "needs CUDA"}
    out: Dict[str, Any] = {}
    for variant in ("default",):  # the engine chooses how inner steps are gated (SGD: on the device)
        vae = _model(cfg, device)
        opt = torch.optim.SGD(vae.encoder.parameters(), lr=1.0)
        trainer = _trainer(vae, opt, window=5, max_inner_steps=30)
        loader = _batches(cfg, 4, device, seed=1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                history = trainer.fit(loader, epochs=1)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = sum("synchroniz" in str(w.message) for w in caught)
        inner = history[0].inner_steps_mean
        out[variant] = {"sync_warnings": syncs, "updates": len(loader), "inner_steps_mean": inner,
                           "syncs_per_update": syncs / len(loader)}
    return out


def _one_sentence_nll(vae: VAE, x: torch.Tensor, n_samples: int, chunk: int) -> float:
    """The paper's loop: one sentence at a time, ``chunk`` samples per decoder call."""
    total = 0.0
    with torch.no_grad():
        for row in x.split(1):
            mean, logvar = vae.encode(row)
            pieces = []
            for start in range(0, n_samples, chunk):
                z = vae.reparameterize(mean, logvar, min(chunk, n_samples - start))
                pieces.append(vae.log_joint(row, z) - vae.log_q_given(z, mean, logvar))
            ll = torch.logsumexp(torch.cat(pieces, dim=1).double(), dim=1) - math.log(n_samples)
            total += -float(ll.sum())
    return total / x.shape[0]


def iw_nll(cfg: Dict[str, int], device: torch.device, sentences: int, n_samples: int) -> Dict[str, Any]:
    vae = _model(cfg, device).eval()
    x = torch.cat(_batches(cfg, max(1, sentences // cfg["batch"]), device, seed=2))[:sentences].to(device)
    out: Dict[str, Any] = {"sentences": int(x.shape[0]), "n_samples": n_samples}
    _sync(device)
    start = time.perf_counter()
    torch.manual_seed(0)
    loop = _one_sentence_nll(vae, x, n_samples, chunk=100)
    _sync(device)
    out["one_sentence_loop"] = {"nll": loop, "sentences_per_s": x.shape[0] / (time.perf_counter() - start)}
    for name, context in (("batched_fp32", contextlib.nullcontext()), ("batched_tf32", allow_tf32())):
        metric = IWNLL(vae, n_samples=n_samples)
        torch.manual_seed(0)
        _sync(device)
        start = time.perf_counter()
        with context:
            metric.update(x)
            nll = metric.compute().nll
        _sync(device)
        out[name] = {"nll": nll, "sentences_per_s": x.shape[0] / (time.perf_counter() - start)}
    out["speedup_batched_fp32"] = out["batched_fp32"]["sentences_per_s"] / out["one_sentence_loop"]["sentences_per_s"]
    out["tf32_minus_fp32_nats"] = out["batched_tf32"]["nll"] - out["batched_fp32"]["nll"]
    return out


def precision_curves(cfg: Dict[str, int], device: torch.device, updates: int) -> Dict[str, Any]:
    batches = _batches(cfg, updates, device, seed=3)
    curves: Dict[str, Any] = {}
    for precision in ("fp32", "bf16", "fp16"):
        vae = _model(cfg, device)
        enc_opt = torch.optim.SGD(vae.encoder.parameters(), lr=1.0)
        losses: List[float] = []

        class Record:
            def on_step_end(self, trainer: Any, info: Any) -> None:
                losses.append(info.loss)

        trainer = AggressiveTrainer(vae, enc_opt, torch.optim.SGD(vae.decoder.parameters(), lr=1.0),
                                    aggressive=False, engine=Engine(precision), on_nonfinite="skip",
                                    callbacks=[Record()])
        torch.manual_seed(0)
        start = time.perf_counter()
        try:
            history = trainer.fit(batches, epochs=1)
        except RuntimeError as exc:  # e.g. a CPU whose oneDNN has no reduced-precision LSTM
            curves[precision] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        _sync(device)
        curves[precision] = {"loss": [float(v) for v in losses], "seconds": time.perf_counter() - start,
                             "skipped": history[0].skipped_batches}
    ran = [k for k in ("fp32", "bf16", "fp16") if "loss" in curves[k]]
    tail = max(1, updates // 5)
    curves["last_fifth_mean"] = {k: statistics.mean(curves[k]["loss"][-tail:]) for k in ran}
    if "bf16" in ran:
        curves["max_abs_gap_bf16_fp32"] = max(abs(a - b) for a, b in zip(curves["fp32"]["loss"],
                                                                          curves["bf16"]["loss"]))
    return curves


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (use --device cpu --quick to check the script)")
    cfg = QUICK if args.quick else PAPER
    reps = args.reps or (2 if args.quick else 7)
    result: Dict[str, Any] = {
        "command": " ".join(["python -m benchmarks.gpu"] + (argv if argv is not None else sys.argv[1:])),
        "torch": torch.__version__, "python": platform.python_version(), "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cuda": torch.version.cuda, "sections": {}}
    sections: Dict[str, Callable[[], Any]] = {
        "inner_step": lambda: inner_step(cfg, device, reps, 3 if args.quick else 20),
        "host_syncs": lambda: host_syncs(cfg, device),
        "iw_nll": lambda: iw_nll(cfg, device, 8 if args.quick else 64, 20 if args.quick else 500),
        "precision": lambda: precision_curves(cfg, device, 6 if args.quick else 300),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name, run in sections.items():
        start = time.perf_counter()
        try:
            result["sections"][name] = run()
        except Exception as exc:  # record it and go on: one lease, every section that can run
            result["sections"][name] = {"error": f"{type(exc).__name__}: {exc}",
                                        "traceback": traceback.format_exc()}
        result["sections"][name]["wall_s"] = time.perf_counter() - start
        write_json(out, result, nonfinite_as_null=False)
        print(f"{name}: {json.dumps(result['sections'][name], default=str)[:600]}", flush=True)
    return result


if __name__ == "__main__":
    main()
