"""``python -m benchmarks.gpu``: the GPU measurements of docs/gpu.md, the paper's own modules beside
ours, in one run and one JSON file.

Made for one short lease of a GPU (about 4 minutes on one H200 at the defaults; see docs/gpu.md)::

    PYTHONUNBUFFERED=1 python -m benchmarks.gpu --device cuda --reference-dir REF --out $OUT/gpu.json

``REF`` is a checkout of the paper's code (github.com/jxhe/vae-lagging-encoder); its ``modules``
package is imported from there at run time, never copied into this project. To check the script
anywhere (tiny sizes, the CUDA-only parts skipped with a reason)::

    python -m benchmarks.gpu --device cpu --quick --reference-dir REF --out /tmp/gpu.json

Every timed variant runs under TF32/cuDNN settings set explicitly for it (``"fp32"``: ``ieee`` for
CUDA matmuls and cuDNN convolutions and RNNs, :func:`aggressive_vi.allow_tf32` with ``False``;
``"tf32"``: ``tf32`` for all three), the same on the paper's side and ours, and recorded with it.
Data are the bundled corpus (``examples/text``) in batches of sentences of one length, as the paper's
``create_data_batch`` makes them (its modules do not mask padding). Sections, each isolated (an error
is recorded, the other sections still run) and each variant inside a section too:

* ``train``: our example text model at the paper's sizes trained briefly on the bundled corpus (a few
  aggressive updates, then basic training, KL annealed), or loaded from ``--checkpoint``; every
  estimate comparison below runs on it and on held-out (test-split) sentences.
* ``encoder_step``: seconds per inner (encoder) step: ``paper_*``: the paper's procedure on the
  paper's modules (both gradients, the joint norm clipped, its host read); ``ours_*``: the library's
  step (``trainer.algorithm.encoder_update``) on the same modules behind our protocols
  (:mod:`benchmarks.core.paper_modules`), eager, CUDA-graph (CUDA only), bf16; ``example_*``: our
  example text model. Interleaved rounds, medians, ratios to ``paper_fp32``.
* ``host_syncs``: synchronising CUDA calls per aggressive update (``torch.cuda.set_sync_debug_mode``),
  against the catch-up windows the update took (CUDA only).
* ``iw_nll``: the paper's IW-NLL loop (its ``nll_iw``, one sentence per call, 100 samples per chunk,
  on the paper's modules holding the trained weights) against our batched ``IWNLL`` (the same
  sentences sorted by length in padded batches; our model masks padding) in fp32, TF32 and bf16
  autocast: sentences per second and the estimates; and ``user_decoder_rows``: our ``IWNLL`` on the
  paper's own modules (a plain decoder) at ``max_rows`` auto, 256, 1024, 4096 and unbounded, with
  the peak memory above the model's (checks the GPU bound of ``max_rows="auto"``).
* ``precision``: the trained model's held-out negative ELBO in bf16 autocast against fp32 (the same
  draws), the LSTM's output dtype under bf16 autocast, and training curves in fp32, bf16 and fp16
  from the trained weights on the same bundled batches.

``targets`` (docs/gpu.md states them) reads its values from the sections; the console prints every
ratio and target in full.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import math
import platform
import random
import subprocess
import sys
import time
import traceback
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

import aggressive_vi
from aggressive_vi import (VAE, AggressiveTrainer, ConstantKL, Engine, FixedSteps, LinearKLAnnealing,
                           allow_tf32)
from aggressive_vi.metrics import IWNLL
from examples.text.corpus import TextDataset, pad_batch
from examples.text.experiment import build_vae, load_data
from examples.text.presets import get_preset

from .core.paper_modules import load_into_paper, protocol_vae
from .core.paper_update import paper_loss, paper_optimizers, paper_update
from .core.reference import SizedVocab, check_reference_dir, import_reference, paper_vae
from .core.tables import plain_table, write_json
from .core.timing import interleave, median, per_unit, synced_clock

__all__ = ["main", "build_parser", "SECTIONS", "TARGETS", "SIZES", "flags", "read_flags"]

FORMAT = "benchmarks.gpu/2"
SECTIONS = ("train", "encoder_step", "host_syncs", "iw_nll", "precision")

#: ``--quick`` (a check of the script, seconds on a CPU) and the default (the paper's text preset).
SIZES: Dict[str, Dict[str, Any]] = {
    "paper": dict(embed=512, hidden=1024, latent=32, batch=32, max_vocab=None, timing_length=40,
                  window=15, max_inner=100, train_updates=3000, train_seconds=120.0, aggressive_updates=30,
                  steps=10, reps=9, warmup=5, heldout=256, iw_samples=500, iw_chunk=100,
                  precision_updates=200, sync_updates=4),
    "quick": dict(embed=16, hidden=32, latent=4, batch=8, max_vocab=300, timing_length=12,
                  window=2, max_inner=4, train_updates=12, train_seconds=60.0, aggressive_updates=2,
                  steps=2, reps=2, warmup=4, heldout=12, iw_samples=20, iw_chunk=10,
                  precision_updates=4, sync_updates=2),
}

#: (name, JSON key under ``sections``, comparison, bound, and for some a second condition)
TARGETS: List[Dict[str, Any]] = [
    dict(name="encoder step, fp32", key="encoder_step.best_ratio_to_paper_fp32.fp32", op="<=", bound=0.85),
    dict(name="encoder step, bf16", key="encoder_step.best_ratio_to_paper_fp32.bf16", op="<=", bound=0.5),
    dict(name="bf16 estimate", key="precision.neg_elbo_bf16_minus_fp32_nats", op="abs<=", bound=0.05),
    dict(name="IW-NLL, fp32", key="iw_nll.speedup.batched_fp32_vs_paper_loop_fp32", op=">=", bound=3.0),
    dict(name="IW-NLL, TF32", key="iw_nll.speedup.batched_tf32_vs_paper_loop_fp32", op=">=", bound=6.0),
    dict(name="TF32 estimate", key="iw_nll.tf32_minus_fp32_nats", op="abs<=", bound=0.02),
    dict(name="host syncs", key="host_syncs.ours_fp32.max_excess_over_windows", op="<=", bound=2),
]

_SETTINGS = (("cuda.matmul", "fp32_precision"), ("cudnn.conv", "fp32_precision"), ("cudnn.rnn", "fp32_precision"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--reference-dir", required=True,
                   help="a checkout of the paper's code (vae-lagging-encoder) with its modules package")
    p.add_argument("--device", default="cuda", help="cuda (the measurements) or cpu (a check of the script)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and few repetitions")
    p.add_argument("--reps", type=int, default=None, help="interleaved rounds per timed variant")
    p.add_argument("--train-seconds", type=float, default=None, help="cap on the training section's time")
    p.add_argument("--checkpoint", default=None,
                   help="the trained model: loaded when the file exists, else trained and saved there")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                   help="run only these (train always runs first when an estimate section needs it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="the JSON file to write")
    return p


# ---------------------------------------------------------------------------- flags and environment
def read_flags() -> Dict[str, Any]:
    """The TF32 and cuDNN settings now in force."""
    out: Dict[str, Any] = {}
    for path, name in _SETTINGS:
        obj: Any = torch.backends
        for part in path.split("."):
            obj = getattr(obj, part)
        out[f"{path}.{name}"] = getattr(obj, name, None)
    out.update({"cudnn.enabled": torch.backends.cudnn.enabled, "cudnn.benchmark": torch.backends.cudnn.benchmark,
                "cudnn.deterministic": torch.backends.cudnn.deterministic})
    return out


@contextlib.contextmanager
def flags(mode: str) -> Iterator[Dict[str, Any]]:
    """``"fp32"``: no TF32 anywhere (``ieee`` on all three settings); ``"tf32"``: TF32 on all three;
    cuDNN's autotuner off and non-deterministic algorithms allowed, as torch's defaults. Restored on
    exit. Yields the settings read inside."""
    if mode not in ("fp32", "tf32"):
        raise ValueError(f"flags mode must be 'fp32' or 'tf32', got {mode!r}")
    saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, False
    try:
        with allow_tf32(mode == "tf32"):
            yield read_flags()
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved


def _driver() -> Optional[str]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device, reference_dir: Path) -> Dict[str, Any]:
    import numpy

    env: Dict[str, Any] = {
        "device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(), "python": platform.python_version(),
        "numpy": numpy.__version__, "aggressive_vi": aggressive_vi.__version__, "platform": platform.platform(),
        "flags_at_start": read_flags(), "reference_dir": str(reference_dir),
    }
    try:
        out = subprocess.run(["git", "-C", str(reference_dir), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=20)
        env["reference_commit"] = out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        env["reference_commit"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update({"gpu": props.name, "capability": f"{props.major}.{props.minor}",
                    "gpu_memory_gib": round(props.total_memory / 2 ** 30, 1), "driver": _driver()})
    return env


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _error(exc: BaseException) -> Dict[str, str]:
    return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


# ---------------------------------------------------------------------------- data and models
def constant_length_batches(dataset: TextDataset, batch: int, *, limit: Optional[int] = None,
                            length: Optional[int] = None, full_only: bool = False) -> List[torch.Tensor]:
    """Batches of sentences of one length each (``<s> ... </s>``, no padding), as the paper's
    ``create_data_batch``: the first ``limit`` sentences (all when ``None``) of ``length`` words (any
    when ``None``), grouped by length, up to ``batch`` per batch (exactly ``batch`` with ``full_only``)."""
    vocab = dataset.vocab
    groups: Dict[int, List[int]] = defaultdict(list)
    for i, n in enumerate(dataset.lengths()):
        if n > 0 and (length is None or n == length):
            groups[n].append(i)
    chosen = sorted(i for g in groups.values() for i in g)[:limit]
    by_len: Dict[int, List[int]] = defaultdict(list)
    for i in chosen:
        by_len[len(dataset[i])].append(i)
    out = []
    for n in sorted(by_len):
        idx = by_len[n]
        for s in range(0, len(idx), batch):
            part = idx[s:s + batch]
            if full_only and len(part) < batch:
                continue
            out.append(pad_batch([dataset[i] for i in part], vocab.pad_id, vocab.bos_id, vocab.eos_id))
    return out


class Context:
    """What the sections share: sizes, device, the paper's modules package, data, the trained model."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.cfg = dict(SIZES["quick" if args.quick else "paper"])
        if args.reps:
            self.cfg["reps"] = args.reps
        if args.train_seconds is not None:
            self.cfg["train_seconds"] = args.train_seconds
        self.device = torch.device(args.device)
        self.seed = args.seed
        self.checkpoint = Path(args.checkpoint) if args.checkpoint else None
        self.reference_dir = check_reference_dir(Path(args.reference_dir).resolve(), ("modules",))
        self.modules = import_reference(self.reference_dir, ("modules",))["modules"]
        self.data = load_data("bundled", max_vocab=self.cfg["max_vocab"])
        self.vocab_size = len(self.data.vocab)
        self.trained: Optional[VAE] = None
        pin = self.device.type == "cuda"
        train = constant_length_batches(self.data.splits["train"], self.cfg["batch"])
        random.Random(self.seed).shuffle(train)
        self.train_batches = [b.pin_memory() if pin else b for b in train]
        self.heldout = [b.to(self.device) for b in constant_length_batches(
            self.data.splits["test"], self.cfg["batch"], limit=self.cfg["heldout"])]
        # our metric's batches of the same sentences: sorted by length, padded (our model masks padding)
        rows = sorted((row[row != self.data.vocab.pad_id] for b in self.heldout for row in b), key=len)
        self.heldout_padded = [pad_batch([r[1:-1].tolist() for r in rows[i:i + self.cfg["batch"]]],
                                         self.data.vocab.pad_id, self.data.vocab.bos_id,
                                         self.data.vocab.eos_id).to(self.device)
                               for i in range(0, len(rows), self.cfg["batch"])]
        timing = constant_length_batches(self.data.splits["train"], self.cfg["batch"],
                                         length=self.cfg["timing_length"], full_only=True)[:4]
        if not timing:
            raise ValueError(f"no full batch of {self.cfg['timing_length']}-word sentences in the bundled corpus")
        self.timing_batches = [b.to(self.device) for b in timing]

    def sizes(self) -> Dict[str, Any]:
        return {**self.cfg, "vocab": self.vocab_size, "train_batches": len(self.train_batches),
                "heldout_sentences": sum(b.shape[0] for b in self.heldout),
                "timing_batch_shape": list(self.timing_batches[0].shape), "timing_batches": len(self.timing_batches)}

    def example_vae(self, seed: Optional[int] = None) -> VAE:
        """Our example text model at these sizes, the paper's initialisation."""
        torch.manual_seed(self.seed if seed is None else seed)
        preset = get_preset("paper").override(embed_dim=self.cfg["embed"], hidden_dim=self.cfg["hidden"],
                                              latent_dim=self.cfg["latent"])
        return build_vae(preset, self.vocab_size).to(self.device)

    def paper_vae(self, seed: Optional[int] = None) -> nn.Module:
        """The paper's ``VAE(LSTMEncoder, LSTMDecoder)`` from its modules, its initialisation, on the device."""
        torch.manual_seed(self.seed if seed is None else seed)
        vae = paper_vae(self.modules, SizedVocab(self.vocab_size), embed_dim=self.cfg["embed"],
                        hidden_dim=self.cfg["hidden"], latent_dim=self.cfg["latent"], dropout=0.5,
                        nsamples=1, iw_nsamples=self.cfg["iw_samples"], device=self.device)
        return vae.to(self.device)

    def trained_copy(self) -> VAE:
        if self.trained is None:
            raise RuntimeError("the training section did not produce a model (see sections.train)")
        return copy.deepcopy(self.trained)


def _sgd(module: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(module.parameters(), lr=1.0, momentum=0)


def _trainer(vae: VAE, ctx: Context, *, engine: Engine, aggressive: bool = True, **kwargs: Any) -> AggressiveTrainer:
    """As the paper's text setup: SGD lr 1.0 for both networks, clip 5, its window and cap."""
    kwargs.setdefault("stopping", FixedSteps(10 ** 9))
    return AggressiveTrainer(vae, _sgd(vae.encoder), _sgd(vae.decoder), aggressive=aggressive,
                             window=ctx.cfg["window"], max_inner_steps=ctx.cfg["max_inner"], clip_grad_norm=5.0,
                             engine=engine, **kwargs)


@torch.no_grad()
def heldout_neg_elbo(vae: VAE, batches: Sequence[torch.Tensor], *, seed: int = 0,
                     autocast: Optional[torch.dtype] = None) -> float:
    """Mean negative ELBO (nats per sentence, KL weight 1) over ``batches`` in eval mode, the draws
    from ``seed``; the forward under ``torch.autocast(dtype=autocast)`` when given."""
    was = vae.training
    vae.eval()
    torch.manual_seed(seed)
    total, n = torch.zeros((), dtype=torch.float64, device=batches[0].device), 0
    ctx = (torch.autocast(device_type=batches[0].device.type, dtype=autocast) if autocast is not None
           else contextlib.nullcontext())
    try:
        with ctx:
            for x in batches:
                total += vae.elbo(x).loss.double().sum()
                n += x.shape[0]
    finally:
        vae.train(was)
    return float(total) / n


# ---------------------------------------------------------------------------- sections
def train(ctx: Context) -> Dict[str, Any]:
    """Our example text model trained briefly on the bundled corpus (or loaded from ``--checkpoint``)."""
    cfg = ctx.cfg
    vae = ctx.example_vae()
    meta = {"sizes": {k: cfg[k] for k in ("embed", "hidden", "latent", "max_vocab")}, "vocab": ctx.vocab_size,
            "seed": ctx.seed}
    if ctx.checkpoint is not None and ctx.checkpoint.exists():
        saved = torch.load(ctx.checkpoint, map_location=ctx.device, weights_only=True)
        if saved.get("format") != FORMAT or saved.get("meta") != meta:
            raise ValueError(f"--checkpoint {ctx.checkpoint}: made for other sizes ({saved.get('meta')}), "
                             f"expected {meta}; remove it to train again")
        vae.load_state_dict(saved["state"])
        ctx.trained = vae
        return {"loaded": str(ctx.checkpoint), **saved["record"],
                "heldout_neg_elbo": heldout_neg_elbo(vae, ctx.heldout, seed=1)}
    per_epoch = len(ctx.train_batches)
    start, done = time.perf_counter(), {"by": "updates"}

    class Budget:
        def on_step_end(self, trainer: Any, info: Any) -> None:
            if trainer.step >= cfg["train_updates"]:
                trainer.stop_training = True
            elif time.perf_counter() - start > cfg["train_seconds"]:
                done["by"] = "seconds"
                trainer.stop_training = True

    annealing = LinearKLAnnealing(0.1, warmup_epochs=0.5 * cfg["train_updates"] / per_epoch)
    trainer = _trainer(vae, ctx, engine=Engine("fp32"), stopping=FixedSteps(cfg["aggressive_updates"]),
                       kl_schedule=annealing, callbacks=[Budget()])
    with flags("tf32") as used:  # the model's training, not a measurement: TF32 for speed
        history = trainer.fit(ctx.train_batches, epochs=math.ceil(cfg["train_updates"] / per_epoch) + 1)
    _sync(ctx.device)
    ctx.trained = vae
    record = {"updates": trainer.step, "aggressive_updates": cfg["aggressive_updates"], "stopped_by": done["by"],
              "seconds": time.perf_counter() - start, "flags": used,
              "epochs": [{"loss": r.loss, "kl": r.kl, "inner_steps_mean": r.inner_steps_mean} for r in history]}
    if ctx.checkpoint is not None:
        ctx.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = ctx.checkpoint.with_name(ctx.checkpoint.name + ".tmp")
        torch.save({"format": FORMAT, "meta": meta, "record": record,
                    "state": {k: v.cpu() for k, v in vae.state_dict().items()}}, tmp)
        tmp.replace(ctx.checkpoint)
        record["saved"] = str(ctx.checkpoint)
    record["heldout_neg_elbo"] = heldout_neg_elbo(vae, ctx.heldout, seed=1)
    return record


def _cycle(batches: Sequence[torch.Tensor]) -> Callable[[], torch.Tensor]:
    counter = iter(range(10 ** 12))
    return lambda: batches[next(counter) % len(batches)]


def _encoder_variants(ctx: Context) -> Dict[str, Tuple[str, Callable[[], Callable[[torch.Tensor], Any]]]]:
    """``{name: (flags mode, build)}``; ``build()`` makes the model and returns its step ``step(x)``."""
    cuda = ctx.device.type == "cuda"

    def paper() -> Callable[[torch.Tensor], Any]:
        vae = ctx.paper_vae()
        enc, dec = paper_optimizers(vae)
        return lambda x: paper_update(vae, enc, dec, x, phase="encoder", forward=paper_loss)

    def ours(precision: str, graph: bool, example: bool = False) -> Callable[[], Callable[[torch.Tensor], Any]]:
        def build() -> Callable[[torch.Tensor], Any]:
            vae = ctx.example_vae() if example else protocol_vae(ctx.paper_vae())
            trainer = _trainer(vae, ctx, engine=Engine(precision, cuda_graph=graph))
            return lambda x: trainer.algorithm.encoder_update(x, 1.0)  # the trainer's own inner step
        return build

    variants: Dict[str, Tuple[str, Callable[[], Callable[[torch.Tensor], Any]]]] = {
        "paper_fp32": ("fp32", paper), "paper_tf32": ("tf32", paper),
        "ours_fp32": ("fp32", ours("fp32", False)), "ours_tf32": ("tf32", ours("fp32", False)),
        "ours_bf16": ("fp32", ours("bf16", False)),
        "example_fp32": ("fp32", ours("fp32", False, example=True)),
        "example_bf16": ("fp32", ours("bf16", False, example=True)),
    }
    if cuda:
        variants["ours_fp32_graph"] = ("fp32", ours("fp32", True))
        variants["ours_bf16_graph"] = ("fp32", ours("bf16", True))
    return variants


def ratios_to_paper(medians: Dict[str, float]) -> Dict[str, Any]:
    """``ratio_to_paper_fp32``: each variant's median seconds over ``paper_fp32``'s (below 1: faster
    than the paper's code); ``best_ratio_to_paper_fp32``: per precision, the lower of our eager and
    captured step (``None`` where neither was timed). Empty without a ``paper_fp32`` median."""
    if "paper_fp32" not in medians:
        return {}
    ratios = {k: v / medians["paper_fp32"] for k, v in medians.items()}
    best: Dict[str, Optional[float]] = {}
    for precision in ("fp32", "bf16"):
        mine = [ratios[k] for k in (f"ours_{precision}", f"ours_{precision}_graph") if k in ratios]
        best[precision] = min(mine) if mine else None
    return {"ratio_to_paper_fp32": ratios, "best_ratio_to_paper_fp32": best}


def encoder_step(ctx: Context) -> Dict[str, Any]:
    """Seconds per inner step of every variant (see the module doc); one failing variant is recorded
    in ``errors`` and the others are timed."""
    cfg, device = ctx.cfg, ctx.device
    steps, reps = cfg["steps"], cfg["reps"]
    errors: Dict[str, Any] = {}
    ready: Dict[str, Callable[[], None]] = {}
    used: Dict[str, Any] = {}
    notes: Dict[str, str] = {}
    if device.type != "cuda":
        notes["ours_fp32_graph"] = notes["ours_bf16_graph"] = "skipped: CUDA graphs need CUDA"
    for name, (mode, build) in _encoder_variants(ctx).items():
        try:
            with flags(mode) as used[name]:
                step = build()
                draw = _cycle(ctx.timing_batches)
                for _ in range(cfg["warmup"]):  # cuDNN/cuBLAS choices; the captured step captures here
                    step(draw())
                _sync(device)
        except Exception as exc:  # e.g. a failed capture, a CPU without a bf16 LSTM: keep the others
            errors[name] = _error(exc)
            continue

        def run(name: str = name, mode: str = mode, step: Callable[[torch.Tensor], Any] = step,
                draw: Callable[[], torch.Tensor] = draw) -> None:
            if name in errors:
                return
            try:
                with flags(mode):
                    for _ in range(steps):
                        step(draw())
            except Exception as exc:
                errors[name] = _error(exc)

        ready[name] = run
    out: Dict[str, Any] = {"steps_per_round": steps, "rounds": reps, "batch_shape": list(ctx.timing_batches[0].shape),
                           "flags": used, "errors": errors, "notes": notes}
    if not ready:
        return out
    timed = interleave(ready, reps, warmup=1, clock=synced_clock(device))
    seconds = {k: per_unit(v["seconds"], [steps] * reps) for k, v in timed.items() if k not in errors}
    medians = {k: median(v) for k, v in seconds.items()}
    out.update({"seconds_per_step": seconds, "median_s": medians})
    out.update(ratios_to_paper(medians))
    if "paper_tf32" in medians and "ours_tf32" in medians:
        out["ours_tf32_over_paper_tf32"] = medians["ours_tf32"] / medians["paper_tf32"]
    return out


def host_syncs(ctx: Context) -> Dict[str, Any]:
    """Synchronising CUDA calls per aggressive update, counted with ``torch.cuda.set_sync_debug_mode``,
    against the windows of the catch-up test each update took."""
    if ctx.device.type != "cuda":
        return {"skipped": "needs CUDA: torch.cuda.set_sync_debug_mode counts CUDA synchronisations only"}
    cfg = ctx.cfg
    window = cfg["window"]
    loader = ctx.timing_batches[:cfg["sync_updates"]]  # on the device already: no copy to count
    variants = {"ours_fp32": (False, False), "ours_fp32_graph": (True, False), "example_fp32": (False, True)}
    out: Dict[str, Any] = {"window": window, "max_inner_steps": cfg["max_inner"]}
    for name, (graph, example) in variants.items():
        try:
            vae = ctx.example_vae() if example else protocol_vae(ctx.paper_vae())
            log: List[warnings.WarningMessage] = []  # filled live by catch_warnings below
            marks: List[int] = []
            inner: List[int] = []

            def syncs_so_far() -> int:  # host work only: reads the warnings recorded so far
                return sum(1 for w in log if "synchroniz" in str(w.message))

            class Count:
                def on_epoch_start(self, trainer: Any, epoch: int) -> None:
                    marks[:], inner[:] = [syncs_so_far()], []

                def on_step_end(self, trainer: Any, info: Any) -> None:
                    marks.append(syncs_so_far())
                    inner.append(int(info.inner_steps))

            trainer = _trainer(vae, ctx, engine=Engine("fp32", cuda_graph=graph), callbacks=[Count()])
            with flags("fp32") as used:
                trainer.fit(loader, epochs=1)  # warm-up epoch (the captured step captures here), not counted
                torch.cuda.synchronize()
                with warnings.catch_warnings(record=True) as record:
                    warnings.simplefilter("always")
                    log = record
                    torch.cuda.set_sync_debug_mode("warn")
                    try:
                        trainer.fit(loader, epochs=2)
                    finally:
                        torch.cuda.set_sync_debug_mode("default")
                total = syncs_so_far()
            per_update = [b - a for a, b in zip(marks, marks[1:])]
            windows = [math.ceil(n / window) for n in inner]
            excess = [s - w for s, w in zip(per_update, windows)]
            out[name] = {"flags": used, "syncs_per_update": per_update, "inner_steps": inner, "windows": windows,
                         "max_excess_over_windows": max(excess) if excess else None, "total_syncs": total,
                         "before_first_epoch_start": marks[0] if marks else None,
                         "after_last_update": total - marks[-1] if marks else None,
                         "sync_sites": _sites(w for w in log if "synchroniz" in str(w.message))}
        except Exception as exc:
            out[name] = _error(exc)
    return out


def _sites(caught: Iterator[warnings.WarningMessage]) -> Dict[str, int]:
    """How many synchronisations each Python line caused (``file:line``)."""
    counts: Dict[str, int] = defaultdict(int)
    for w in caught:
        counts[f"{w.filename}:{w.lineno}"] += 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def iw_nll(ctx: Context) -> Dict[str, Any]:
    """The paper's IW-NLL loop against our batched metric, on the trained model and held-out sentences."""
    cfg, device = ctx.cfg, ctx.device
    ours = ctx.trained_copy().eval()
    paper = ctx.paper_vae()
    load_into_paper(paper, ours)
    paper.eval()
    samples, chunk = cfg["iw_samples"], cfg["iw_chunk"]
    sentences = [row.unsqueeze(0) for b in ctx.heldout for row in b]
    out: Dict[str, Any] = {"sentences": len(sentences), "n_samples": samples, "chunk": chunk,
                           "batched_batches": len(ctx.heldout_padded)}
    with torch.no_grad(), flags("fp32"):  # the two models are the same function (no sampling here)
        x = ctx.heldout[0]
        z = torch.randn(x.shape[0], 3, cfg["latent"], device=device, generator=None)
        out["models_agree_max_abs_nats"] = float((ours.decoder.log_prob(x, z)
                                                  - paper.decoder.log_probability(x, z)).abs().max())

    def paper_loop(rows: Sequence[torch.Tensor]) -> float:  # its calc_iwnll: a sentence per nll_iw call
        total = 0.0
        for row in rows:
            total += paper.nll_iw(row, nsamples=samples, ns=chunk).sum().item()
        return total / len(rows)

    def batched(batches: Sequence[torch.Tensor]) -> float:
        metric = IWNLL(ours, n_samples=samples, chunk_size=chunk)
        for b in batches:
            metric.update(b)
        return metric.compute().nll

    bf16 = (lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16))
    variants = {"paper_loop_fp32": ("fp32", paper_loop, sentences, contextlib.nullcontext),
                "paper_loop_tf32": ("tf32", paper_loop, sentences, contextlib.nullcontext),
                "batched_fp32": ("fp32", batched, ctx.heldout_padded, contextlib.nullcontext),
                "batched_tf32": ("tf32", batched, ctx.heldout_padded, contextlib.nullcontext),
                "batched_bf16": ("fp32", batched, ctx.heldout_padded, bf16)}
    for name, (mode, fn, data, extra) in variants.items():
        try:
            with torch.no_grad(), flags(mode) as used, extra():
                fn(data[:2])  # warm-up
                _sync(device)
                torch.manual_seed(ctx.seed)
                start = time.perf_counter()
                nll = fn(data)
                _sync(device)
                seconds = time.perf_counter() - start
            out[name] = {"nll": nll, "seconds": seconds, "sentences_per_s": len(sentences) / seconds, "flags": used}
        except Exception as exc:
            out[name] = _error(exc)
    out["user_decoder_rows"] = _rows_sweep(paper, ctx.heldout, samples, chunk, device, ctx.seed)
    rate = {k: v["sentences_per_s"] for k, v in out.items() if isinstance(v, dict) and "sentences_per_s" in v}
    pairs = {"batched_fp32_vs_paper_loop_fp32": ("batched_fp32", "paper_loop_fp32"),
             "batched_tf32_vs_paper_loop_fp32": ("batched_tf32", "paper_loop_fp32"),
             "batched_tf32_vs_paper_loop_tf32": ("batched_tf32", "paper_loop_tf32"),
             "batched_bf16_vs_paper_loop_fp32": ("batched_bf16", "paper_loop_fp32")}
    out["speedup"] = {k: rate[a] / rate[b] for k, (a, b) in pairs.items() if a in rate and b in rate}
    nll = {k: v["nll"] for k, v in out.items() if isinstance(v, dict) and "nll" in v}
    for key, (a, b) in {"tf32_minus_fp32_nats": ("batched_tf32", "batched_fp32"),
                        "bf16_minus_fp32_nats": ("batched_bf16", "batched_fp32"),
                        "paper_loop_minus_batched_fp32_nats": ("paper_loop_fp32", "batched_fp32"),
                        "paper_loop_tf32_minus_fp32_nats": ("paper_loop_tf32", "paper_loop_fp32")}.items():
        if a in nll and b in nll:
            out[key] = nll[a] - nll[b]
    out["note"] = ("tf32/bf16 minus fp32: the same draws (same seed, same batches), so the difference is the "
                   "arithmetic's; paper loop minus batched: other draws, so it includes Monte Carlo noise")
    return out


def _rows_sweep(paper: nn.Module, batches: Sequence[torch.Tensor], samples: int, chunk: int,
                device: torch.device, seed: int) -> Dict[str, Any]:
    """Our ``IWNLL`` on the paper's own modules behind our protocols (a user's plain decoder, whose
    logits ``[rows, length, vocabulary]`` are held at once) at several ``max_rows``: sentences per
    second and peak memory above the model's, so that ``"auto"``'s GPU bound can be checked."""
    user = protocol_vae(paper)
    out: Dict[str, Any] = {}
    for rows in ("auto", 256, 1024, 4096, None):
        name = f"max_rows_{rows}"
        try:
            with torch.no_grad(), flags("fp32"):
                metric = IWNLL(user, n_samples=samples, chunk_size=chunk, max_rows=rows)
                metric.update(batches[0][:2])  # warm-up
                metric.reset()
                _sync(device)
                base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                torch.manual_seed(seed)
                start = time.perf_counter()
                for b in batches:
                    metric.update(b)
                nll = metric.compute().nll
                _sync(device)
                seconds = time.perf_counter() - start
            peak = (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20 if device.type == "cuda" else None
            out[name] = {"nll": nll, "seconds": seconds, "peak_mib_above_model": peak,
                         "halvings": metric._rows.halvings,
                         "sentences_per_s": sum(b.shape[0] for b in batches) / seconds}
        except Exception as exc:
            out[name] = _error(exc)
    return out


def precision(ctx: Context) -> Dict[str, Any]:
    """bf16 against fp32 on the trained model: its held-out estimate, the LSTM's dtype under autocast,
    and training curves from the trained weights on the same bundled batches."""
    cfg, device = ctx.cfg, ctx.device
    out: Dict[str, Any] = {}
    trained = ctx.trained_copy()
    with flags("fp32") as used:
        out["flags"] = used
        fp32 = heldout_neg_elbo(trained, ctx.heldout, seed=1)
        out["heldout_neg_elbo_fp32"] = fp32
        try:
            bf16 = heldout_neg_elbo(trained, ctx.heldout, seed=1, autocast=torch.bfloat16)
            out["heldout_neg_elbo_bf16"] = bf16
            out["neg_elbo_bf16_minus_fp32_nats"] = bf16 - fp32
        except Exception as exc:
            out["heldout_neg_elbo_bf16"] = _error(exc)
        try:
            with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                x = ctx.heldout[0]
                output, _ = trained.encoder.lstm(trained.encoder.embed(x))
            out["lstm_output_dtype_under_bf16_autocast"] = str(output.dtype)
        except Exception as exc:
            out["lstm_output_dtype_under_bf16_autocast"] = _error(exc)
    batches = ctx.train_batches[:cfg["precision_updates"]]
    curves: Dict[str, Any] = {}
    for name in ("fp32", "bf16", "fp16"):
        try:
            vae = ctx.trained_copy().train()
            losses: List[torch.Tensor] = []

            class Record:
                def on_step_end(self, trainer: Any, info: Any) -> None:
                    losses.append(info.loss.detach())

            trainer = _trainer(vae, ctx, engine=Engine(name), aggressive=False, kl_schedule=ConstantKL(1.0),
                               on_nonfinite="skip", callbacks=[Record()])
            with flags("fp32"):
                torch.manual_seed(ctx.seed)
                _sync(device)
                start = time.perf_counter()
                history = trainer.fit(batches, epochs=1)
                _sync(device)
                seconds = time.perf_counter() - start
                after = heldout_neg_elbo(vae, ctx.heldout, seed=1)
            curves[name] = {"loss": [float(v) for v in losses], "seconds": seconds,
                            "skipped": history[-1].skipped_batches, "heldout_neg_elbo_after": after}
        except Exception as exc:  # e.g. a CPU whose oneDNN has no reduced-precision LSTM
            curves[name] = _error(exc)
    out["curves"] = curves
    ran = [k for k, v in curves.items() if "loss" in v]
    tail = max(1, len(batches) // 5)
    out["last_fifth_mean_loss"] = {k: sum(curves[k]["loss"][-tail:]) / tail for k in ran}
    if "fp32" in ran and "bf16" in ran:
        out["max_abs_loss_gap_bf16_fp32"] = max(abs(a - b) for a, b in zip(curves["fp32"]["loss"],
                                                                           curves["bf16"]["loss"]))
        out["heldout_after_bf16_minus_fp32_nats"] = (curves["bf16"]["heldout_neg_elbo_after"]
                                                     - curves["fp32"]["heldout_neg_elbo_after"])
    return out


# ---------------------------------------------------------------------------- targets and console
def lookup(sections: Dict[str, Any], key: str) -> Any:
    value: Any = sections
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def evaluate_targets(sections: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Each of :data:`TARGETS` with its measured ``value`` and ``met`` (``None``: not measured)."""
    out = []
    for t in TARGETS:
        value = lookup(sections, t["key"])
        met: Optional[bool] = None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            met = {"<=": value <= t["bound"], ">=": value >= t["bound"],
                   "abs<=": abs(value) <= t["bound"]}[t["op"]]
        out.append({**t, "value": value, "met": met})
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, dict) and "error" in value:
        return value["error"]
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def summary(name: str, section: Dict[str, Any]) -> str:
    """Every ratio and estimate of a section, one per line, in full."""
    lines = [f"== {name} ({section.get('wall_s', 0.0):.1f} s)"]
    if "error" in section:
        return "\n".join(lines + [f"  error: {section['error']}"])
    if "skipped" in section:
        return "\n".join(lines + [f"  skipped: {section['skipped']}"])
    if name == "encoder_step":
        ratios = section.get("ratio_to_paper_fp32", {})
        rows = [[k, f"{v * 1e3:.3f}", _fmt(ratios.get(k))] for k, v in section.get("median_s", {}).items()]
        lines.append(plain_table(["variant", "ms/step", "x paper_fp32"], rows, right_from=1))
        lines += [f"  best ours / paper_fp32: {_fmt(section.get('best_ratio_to_paper_fp32'))}",
                  f"  ours_tf32 / paper_tf32: {_fmt(section.get('ours_tf32_over_paper_tf32'))}"]
        lines += [f"  {k}: {v['error']}" for k, v in section.get("errors", {}).items()]
        lines += [f"  {k}: {v}" for k, v in section.get("notes", {}).items()]
    elif name == "host_syncs":
        for k, v in section.items():
            if isinstance(v, dict) and "syncs_per_update" in v:
                lines.append(f"  {k}: syncs {v['syncs_per_update']} windows {v['windows']} "
                             f"max excess {v['max_excess_over_windows']}")
            elif isinstance(v, dict) and "error" in v:
                lines.append(f"  {k}: {v['error']}")
    elif name == "iw_nll":
        for k, v in section.items():
            if isinstance(v, dict) and "nll" in v:
                lines.append(f"  {k}: nll {v['nll']:.4f} nats, {v['sentences_per_s']:.2f} sentences/s")
            elif isinstance(v, dict) and "error" in v:
                lines.append(f"  {k}: {v['error']}")
        for k, v in section.get("user_decoder_rows", {}).items():
            lines.append(f"  paper modules, {k}: " + (v["error"] if "error" in v else
                         f"{v['sentences_per_s']:.2f} sentences/s, peak {_fmt(v['peak_mib_above_model'])} MiB, "
                         f"nll {v['nll']:.4f}, halvings {v['halvings']}"))
        lines += [f"  speedup {k}: {_fmt(v)}" for k, v in section.get("speedup", {}).items()]
        lines += [f"  {k}: {_fmt(section[k])}" for k in section if k.endswith("_nats")]
    elif name == "precision":
        lines += [f"  {k}: {_fmt(v)}" for k, v in section.items() if k not in ("curves", "flags")]
        for k, v in section.get("curves", {}).items():
            lines.append(f"  curve {k}: " + (v["error"] if "error" in v else
                                             f"{len(v['loss'])} updates, {v['seconds']:.1f} s, "
                                             f"held-out after {v['heldout_neg_elbo_after']:.3f}"))
    else:
        lines += [f"  {k}: {_fmt(v)}" for k, v in section.items() if k not in ("epochs", "flags")]
    return "\n".join(lines)


def targets_table(targets: Sequence[Dict[str, Any]]) -> str:
    rows = [[t["name"], t["key"], f"{t['op']} {t['bound']}", _fmt(t["value"]),
             {True: "met", False: "MISSED", None: "not measured"}[t["met"]]] for t in targets]
    return plain_table(["target", "key (under sections)", "bound", "value", "verdict"], rows)


# ---------------------------------------------------------------------------- main
def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (use --device cpu --quick to check the script)")
    if args.reps is not None and args.reps < 1:
        raise SystemExit(f"--reps must be >= 1, got {args.reps}")
    started = time.perf_counter()
    ctx = Context(args)
    result: Dict[str, Any] = {
        "format": FORMAT,
        "command": " ".join(["python -m benchmarks.gpu"] + (list(argv) if argv is not None else sys.argv[1:])),
        "environment": environment(device, ctx.reference_dir), "sizes": ctx.sizes(), "sections": {},
        "targets": [], "gpu_run": device.type == "cuda"}
    runners: Dict[str, Callable[[Context], Dict[str, Any]]] = {
        "train": train, "encoder_step": encoder_step, "host_syncs": host_syncs, "iw_nll": iw_nll,
        "precision": precision}
    wanted = set(args.sections)
    if wanted & {"iw_nll", "precision"}:
        wanted.add("train")
    out = Path(args.out)
    for name in SECTIONS:
        if name not in wanted:
            continue
        start = time.perf_counter()
        try:
            section = runners[name](ctx)
        except Exception as exc:  # record it and go on: one lease, every section that can run
            section = _error(exc)
        section["wall_s"] = time.perf_counter() - start
        result["sections"][name] = section
        result["targets"] = evaluate_targets(result["sections"])
        result["wall_s"] = time.perf_counter() - started
        write_json(out, result)
        print(summary(name, section), flush=True)
    print(targets_table(result["targets"]), flush=True)
    print(f"total {result['wall_s']:.1f} s; JSON: {out}", flush=True)
    return result


if __name__ == "__main__":
    main()
