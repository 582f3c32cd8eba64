"""Speed benchmarks, measured as ratios side by side in one run (shared machines are noisy).

    python -m benchmarks.speed [--size cpu|paper] [--reps 20] [--threads 1] [--out benchmarks/results]

Sections (each prints a table; all numbers go to ``speed.json``):

1. ``step``: one inner encoder step, three ways, against a joint (basic VAE) step:
   ``paper`` (full backward, the decoder's gradients discarded, joint norm clipped, as the paper's
   code does), ``inputs`` (the library: ``backward(inputs=encoder params)``), ``frozen``
   (``requires_grad_(False)`` on the decoder around the step).
2. ``iw_nll``: examples per second of ``estimators.iw_nll`` (500 samples, batched) against the usual
   one-example-at-a-time loop over the same model.
3. ``estimates``: seconds of the per-epoch validation pass (MI, AU, KL, ELBO in one pass) against a
   basic training epoch over the training batches.

Model: the paper's LSTM text VAE from ``examples.text.models`` at the ``cpu`` preset's size (or the
paper's with ``--size paper``) on random token sentences of 20-40 tokens (timing does not depend on
the words). Variants are interleaved round by round and the median is reported.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from typing import Callable, Dict, List

import torch

from aggressive_vi import VAE, AggressiveTrainer, Always, estimators
from examples.text.models import LSTMDecoder, LSTMEncoder, init_paper_

SIZES = {"cpu": dict(embed_dim=64, hidden_dim=128, vocab=5000),
         "paper": dict(embed_dim=512, hidden_dim=1024, vocab=20000)}


def token_batches(n_batches: int, batch: int, vocab: int, seed: int) -> List[torch.Tensor]:
    """Random sentences ``[batch, len]``: <s>=1 ... </s>=2, length 20-40, right-padded with 0."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        lengths = torch.randint(20, 41, (batch,), generator=g)
        x = torch.zeros(batch, int(lengths.max()) + 2, dtype=torch.long)
        for i, n in enumerate(lengths.tolist()):
            x[i, 0] = 1
            x[i, 1:n + 1] = torch.randint(4, vocab, (n,), generator=g)
            x[i, n + 1] = 2
        out.append(x)
    return out


def build(size: str, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    s = SIZES[size]
    enc = LSTMEncoder(s["vocab"], s["embed_dim"], s["hidden_dim"], 32)
    dec = LSTMDecoder(s["vocab"], s["embed_dim"], s["hidden_dim"], 32)
    init_paper_(enc, dec)
    return VAE(enc, dec)


def interleaved(fns: Dict[str, Callable[[], None]], reps: int) -> Dict[str, float]:
    """Median seconds per call of each function, calls interleaved round by round."""
    for fn in fns.values():  # warm-up
        fn()
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_steps(size: str, reps: int) -> Dict[str, float]:
    vae = build(size)
    vae.train()
    enc_params = list(vae.encoder.parameters())
    dec_params = list(vae.decoder.parameters())
    enc_opt = torch.optim.SGD(enc_params, lr=1e-3)
    dec_opt = torch.optim.SGD(dec_params, lr=1e-3)
    trainer = AggressiveTrainer(vae, enc_opt, dec_opt, stopping=Always())
    x = token_batches(1, 32, SIZES[size]["vocab"], seed=1)[0]

    def paper() -> None:
        enc_opt.zero_grad()
        dec_opt.zero_grad()
        vae.elbo(x).loss.mean().backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 5.0)
        enc_opt.step()

    def inputs() -> None:
        trainer._encoder_step(x, 1.0)

    def frozen() -> None:
        enc_opt.zero_grad(set_to_none=True)
        for p in dec_params:
            p.requires_grad_(False)
        try:
            vae.elbo(x).loss.mean().backward()
        finally:
            for p in dec_params:
                p.requires_grad_(True)
        torch.nn.utils.clip_grad_norm_(enc_params, 5.0)
        enc_opt.step()

    def joint() -> None:
        trainer._joint_step(x, 1.0)

    def decoder() -> None:
        trainer._decoder_step(x, 1.0)

    t = interleaved({"paper": paper, "inputs": inputs, "frozen": frozen, "joint": joint,
                     "decoder": decoder}, reps)
    print(f"\n## step (LSTM {size}, batch 32, 20-40 tokens): median ms per step, ratio to paper inner step")
    print("| step | ms | / paper inner | / joint |\n|---|---|---|---|")
    for k, v in t.items():
        print(f"| {k} | {1e3 * v:.1f} | {v / t['paper']:.2f} | {v / t['joint']:.2f} |")
    return {f"{k}_ms": 1e3 * v for k, v in t.items()}


def bench_iw_nll(size: str, n_examples: int, n_samples: int) -> Dict[str, float]:
    vae = build(size)
    x = token_batches(1, n_examples, SIZES[size]["vocab"], seed=2)[0]
    batched = [x[i:i + 16] for i in range(0, n_examples, 16)]
    singles = [x[i:i + 1] for i in range(n_examples)]
    out = {}
    for name, loader in (("batched", batched), ("one_at_a_time", singles)):
        torch.manual_seed(0)
        t = time.perf_counter()
        res = estimators.iw_nll(vae, loader, n_samples=n_samples, chunk_size=100)
        dt = time.perf_counter() - t
        out[f"{name}_examples_per_s"] = n_examples / dt
        out[f"{name}_nll"] = res.nll
    out["speedup"] = out["batched_examples_per_s"] / out["one_at_a_time_examples_per_s"]
    print(f"\n## iw_nll ({n_samples} samples, {n_examples} sentences, LSTM {size})")
    print("| variant | examples/s | NLL |\n|---|---|---|")
    for name in ("batched", "one_at_a_time"):
        print(f"| {name} | {out[name + '_examples_per_s']:.2f} | {out[name + '_nll']:.3f} |")
    print(f"speed-up: {out['speedup']:.1f}x")
    return out


def bench_estimates(size: str, n_train: int, n_val: int) -> Dict[str, float]:
    vae = build(size)
    train = token_batches(n_train, 32, SIZES[size]["vocab"], seed=3)
    val = token_batches(n_val, 32, SIZES[size]["vocab"], seed=4)
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=1e-3),
                                torch.optim.SGD(vae.decoder.parameters(), lr=1e-3), aggressive=False)
    t = time.perf_counter()
    trainer.fit(train, epochs=1)
    epoch = time.perf_counter() - t
    t = time.perf_counter()
    estimators.summary(vae, val)
    est = time.perf_counter() - t
    print(f"\n## estimates ({n_val} validation batches vs a basic epoch of {n_train} batches)")
    print(f"| basic epoch s | MI+AU+KL+ELBO pass s | ratio |\n|---|---|---|\n"
          f"| {epoch:.2f} | {est:.2f} | {est / epoch:.3f} |")
    return {"basic_epoch_s": epoch, "estimates_s": est, "ratio": est / epoch}


def main() -> None:
    p = argparse.ArgumentParser(description="aggressive-vi speed benchmarks")
    p.add_argument("--size", choices=sorted(SIZES), default="cpu")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iw-examples", type=int, default=32)
    p.add_argument("--iw-samples", type=int, default=500)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = {
        "config": {**vars(args), "torch": torch.__version__, "machine": platform.machine(),
                   "cpus": os.cpu_count(), "device": "cpu"},
        "step": bench_steps(args.size, args.reps),
        "iw_nll": bench_iw_nll(args.size, args.iw_examples, args.iw_samples),
        "estimates": bench_estimates(args.size, n_train=20, n_val=10),
    }
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"speed_{args.size}.json")
    with open(path, "w") as fh:
        json.dump(results, fh, indent=1)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
