"""Peak memory of IW-NLL against the bound on rows per decoder call (issue 20, item 2).

    python -m benchmarks.iw_memory [--sizes paper cpu] [--tokens 12 40] [--rows 64 256 1024 none]
        [--samples 100] [--chunk 100] [--threads 1] [--device cpu|cuda] [--max-logits-gib G]
        [--out benchmarks/results/iw_memory_<device>.json]

Each setting runs ``aggressive_vi.estimators.iw_nll(vae, [x], n_samples=--samples,
chunk_size=--chunk, max_rows=R)`` on one batch of random sentences of ``--tokens`` tokens
(``<s>`` and ``</s>`` included) and reports the peak memory of that call. ``R`` (``--rows``) bounds
``batch x samples`` rows per decoder call: an int, ``none`` (no bound: ``batch x chunk`` rows) or
``auto`` (the library's default on the device).

The model is what a user writes, not the example text model (whose decoder scores its logits in
pieces and so hides the cost): :class:`UserEncoder` and :class:`UserDecoder` below, the paper's LSTM
structure, whose decoder makes the whole ``[rows, tokens - 1, vocabulary]`` logits at once and
scores them with ``cross_entropy(reduction="none")``. Weights are seeded torch defaults and tokens
random: memory does not depend on the values.

Memory:

* CPU: every setting in a fresh Python process (peaks never mix); ``peak MiB`` is the growth of
  ``getrusage(RUSAGE_SELF).ru_maxrss`` over the IW-NLL call, above what setup (model, data, a
  one-row warm-up) had reached. A setting whose logits per call would exceed ``--max-logits-gib``
  (default 4 on the CPU, none on a GPU) is skipped, so a shared machine is not run out of memory.
* CUDA: ``torch.cuda.max_memory_allocated()`` over the call (peak stats reset before it) minus the
  bytes allocated before it, in this process; a call that runs out of memory is recorded as such.

``logits MiB`` is the analytic size of one call's logits, ``rows x (tokens - 1) x vocabulary x 4``
bytes, so a reader sees what dominates. A least-squares line of peak against rows per call
(``MiB/row``) is printed per size and length as a check that the measure is sane (it should grow
linearly, at about twice the logits per row: the logits and their log-softmax).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from aggressive_vi import VAE, estimators
from aggressive_vi._impl.rows import RowBound

from .core.tables import plain_table, write_json

__all__ = ["SIZES", "UserEncoder", "UserDecoder", "RowCounter", "build", "sentences", "expected_rows",
           "logits_mib", "measure", "run_isolated", "fit_per_row", "main"]

FORMAT = "benchmarks.iw_memory/1"
MIB = 2 ** 20
BOS, EOS = 1, 2
ROOT = Path(__file__).resolve().parents[1]

#: Model sizes: ``paper`` is the paper's text preset; ``tiny`` is for tests and a quick check.
SIZES: Dict[str, Dict[str, int]] = {
    "paper": dict(embed=512, hidden=1024, latent=32, vocab=20000, batch=32),
    "cpu": dict(embed=64, hidden=128, latent=16, vocab=3000, batch=32),
    "tiny": dict(embed=8, hidden=16, latent=4, vocab=50, batch=4),
}

RowsBound = Union[int, str, None]


# ---------------------------------------------------------------------------- what a user writes
class UserEncoder(nn.Module):
    """Embedding -> LSTM -> linear: ``x [batch, tokens]`` (long) -> ``(mean, logvar)``, each
    ``[batch, latent]``, from the LSTM's last hidden state."""

    def __init__(self, vocab: int, embed: int, hidden: int, latent: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.linear = nn.Linear(hidden, 2 * latent)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        _, (h, _) = self.lstm(self.embed(x))
        mean, logvar = self.linear(h[-1]).chunk(2, dim=-1)
        return mean, logvar


class UserDecoder(nn.Module):
    """An LSTM language model conditioned on z, scored over the whole vocabulary in one go.

    Each input token's embedding is concatenated with z; the LSTM starts from ``c0 = W z``,
    ``h0 = tanh(c0)``; a linear layer gives logits over the vocabulary for every position.
    """

    def __init__(self, vocab: int, embed: int, hidden: int, latent: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.dropout_in = nn.Dropout(dropout)
        self.init_state = nn.Linear(latent, hidden, bias=False)
        self.lstm = nn.LSTM(embed + latent, hidden, batch_first=True)
        self.dropout_out = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, vocab)

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``x [batch, tokens]``, ``z [batch, n, latent]`` -> log p(x|z) ``[batch, n]``, nats
        summed over the ``tokens - 1`` predicted positions. Memory: the logits
        ``[batch * n, tokens - 1, vocabulary]`` and their log-softmax, at once."""
        batch, n, latent = z.shape
        inputs, targets = x[:, :-1], x[:, 1:]
        steps = inputs.shape[1]
        emb = self.dropout_in(self.embed(inputs))                                  # [batch, steps, embed]
        emb = emb.unsqueeze(1).expand(batch, n, steps, emb.shape[-1]).reshape(batch * n, steps, -1)
        zs = z.reshape(batch * n, 1, latent)
        c0 = self.init_state(zs).transpose(0, 1).contiguous()                     # [1, rows, hidden]
        h, _ = self.lstm(torch.cat([emb, zs.expand(-1, steps, -1)], dim=-1), (torch.tanh(c0), c0))
        logits = self.out(self.dropout_out(h))                                     # [rows, steps, vocab]
        target = targets.unsqueeze(1).expand(batch, n, steps).reshape(-1)
        nll = F.cross_entropy(logits.reshape(batch * n * steps, -1), target, reduction="none")
        return -nll.view(batch, n, steps).sum(-1)


class RowCounter(nn.Module):
    """A decoder passed through unchanged, counting the rows (``batch x n``) of each call."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.calls: List[int] = []

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.calls.append(z.shape[0] * z.shape[1])
        return self.decoder.log_prob(x, z)


def build(size: Dict[str, int], seed: int = 0) -> VAE:
    """``VAE(UserEncoder, RowCounter(UserDecoder))`` at ``size`` (torch's default init, seeded)."""
    torch.manual_seed(seed)
    dims = (size["vocab"], size["embed"], size["hidden"], size["latent"])
    return VAE(UserEncoder(*dims), RowCounter(UserDecoder(*dims)))


def sentences(batch: int, tokens: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """Random sentences ``[batch, tokens]``: ``<s>`` (1), words in ``[3, vocab)``, ``</s>`` (2)."""
    if tokens < 3:
        raise ValueError(f"tokens must be at least 3 (<s>, a word, </s>); got {tokens}")
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(3, vocab, (batch, tokens), generator=g)
    x[:, 0], x[:, -1] = BOS, EOS
    return x


def expected_rows(rows: RowsBound, batch: int, samples: int, chunk: int, device: torch.device) -> int:
    """Rows of the largest decoder call that ``iw_nll`` makes (as the library splits the samples)."""
    return batch * RowBound(rows, chunk).samples_per_call(batch, samples, device)


def logits_mib(rows: int, tokens: int, vocab: int) -> float:
    """Size of one call's float32 logits ``[rows, tokens - 1, vocab]``, MiB."""
    return rows * (tokens - 1) * vocab * 4 / MIB


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---------------------------------------------------------------------------- one setting
def measure(size_name: str, tokens: int, rows: RowsBound, *, samples: int = 100, chunk: int = 100,
            device: str = "cpu", seed: int = 0, size: Optional[Dict[str, int]] = None) -> Dict[str, Any]:
    """Peak memory of one ``iw_nll`` call, in this process (see the module docstring for how).

    On the CPU, ``peak_mib`` is the growth of this process's peak RSS: meaningful only in a fresh
    process (:func:`run_isolated`), and 0 when the process had already peaked higher.

    Returns:
        A dict: ``size``, ``tokens``, ``rows_bound``, ``rows_per_call`` (the largest call's rows),
        ``calls``, ``peak_mib``, ``logits_mib`` (of the largest call), ``seconds`` (the IW-NLL call),
        ``nll`` (nats per sentence: the same for every bound, up to rounding), ``measure``.
    """
    size = dict(SIZES[size_name] if size is None else size)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    vae = build(size, seed).to(dev)
    x = sentences(size["batch"], tokens, size["vocab"], seed).to(dev)
    estimators.iw_nll(vae, [x[:1]], n_samples=1, chunk_size=1, max_rows=None)  # warm-up: one row
    vae.decoder.calls.clear()
    torch.manual_seed(seed + 1)
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
    else:
        before = _maxrss_mib()
    start = time.perf_counter()
    result = estimators.iw_nll(vae, [x], n_samples=samples, chunk_size=chunk, max_rows=rows)
    if cuda:
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    if cuda:
        peak = (torch.cuda.max_memory_allocated(dev) - before) / MIB
    else:
        peak = _maxrss_mib() - before
    largest = max(vae.decoder.calls)
    return {"size": size_name, "tokens": tokens, "rows_bound": rows, "rows_per_call": largest,
            "calls": len(vae.decoder.calls), "peak_mib": peak,
            "logits_mib": logits_mib(largest, tokens, size["vocab"]), "seconds": seconds, "nll": result.nll,
            "measure": "cuda max_memory_allocated above before" if cuda else "ru_maxrss above setup"}


def _worker(spec: Dict[str, Any]) -> None:
    torch.set_num_threads(spec.pop("threads"))
    print("RESULT " + json.dumps(measure(**spec)), flush=True)


def run_isolated(spec: Dict[str, Any], threads: int, timeout: float = 3600) -> Dict[str, Any]:
    """:func:`measure` (``spec``: its arguments) in a fresh Python process with ``threads`` threads;
    an ``error`` entry when the child fails (killed for memory, a timeout). The child imports this
    checkout (its root first on ``PYTHONPATH``), not an installed copy."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "benchmarks.iw_memory", "--worker", json.dumps({**spec, "threads": threads})]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        return {"error": f"exit status {out.returncode}: {out.stderr.strip()[-500:]}"}
    return json.loads(lines[-1][len("RESULT "):])


def fit_per_row(results: Sequence[Dict[str, Any]]) -> Optional[Dict[str, float]]:
    """Least-squares line of ``peak_mib`` against ``rows_per_call`` over measured settings (at least
    two distinct row counts): ``mib_per_row``, ``intercept_mib``, and ``logits_mib_per_row``."""
    done = [r for r in results if "peak_mib" in r]
    if len({r["rows_per_call"] for r in done}) < 2:
        return None
    xs, ys = [r["rows_per_call"] for r in done], [r["peak_mib"] for r in done]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / sum((a - mx) ** 2 for a in xs)
    return {"mib_per_row": slope, "intercept_mib": my - slope * mx,
            "logits_mib_per_row": done[0]["logits_mib"] / done[0]["rows_per_call"]}


# ---------------------------------------------------------------------------- command line
def _rows_arg(text: str) -> RowsBound:
    if text.lower() == "none":
        return None
    if text == "auto":
        return "auto"
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"--rows takes positive ints, 'none' or 'auto'; got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.iw_memory", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["paper", "cpu"])
    p.add_argument("--tokens", nargs="+", type=int, default=[12, 40],
                   help="sentence lengths, <s> and </s> included")
    p.add_argument("--rows", nargs="+", type=_rows_arg, default=[64, 256, 1024, None],
                   help="bounds on rows per decoder call: ints, 'none' (no bound), 'auto'")
    p.add_argument("--samples", type=int, default=100, help="importance samples per sentence")
    p.add_argument("--chunk", type=int, default=100, help="iw_nll's chunk_size")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-logits-gib", type=float, default=None,
                   help="skip settings whose logits per call exceed this (default: 4 on the CPU, no limit else)")
    p.add_argument("--out", default=None, help="JSON file (default benchmarks/results/iw_memory_<device>.json)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p


def _fmt_bound(rows: RowsBound) -> str:
    return "none" if rows is None else str(rows)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.worker is not None:
        _worker(json.loads(args.worker))
        return {}
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    limit = args.max_logits_gib if args.max_logits_gib is not None else (4.0 if device.type == "cpu" else None)
    results: List[Dict[str, Any]] = []
    for size_name in args.sizes:
        size = SIZES[size_name]
        for tokens in args.tokens:
            for rows in args.rows:
                spec = dict(size_name=size_name, tokens=tokens, rows=rows, samples=args.samples,
                            chunk=args.chunk, device=args.device, seed=args.seed)
                planned = expected_rows(rows, size["batch"], args.samples, args.chunk, device)
                planned_mib = logits_mib(planned, tokens, size["vocab"])
                if limit is not None and planned_mib > limit * 1024:
                    r = {"skipped": f"logits {planned_mib / 1024:.1f} GiB per call > --max-logits-gib {limit:g}"}
                elif device.type == "cpu":
                    r = run_isolated(spec, args.threads)
                else:
                    try:
                        r = measure(**spec)
                    except torch.cuda.OutOfMemoryError as exc:
                        r = {"error": f"out of memory: {str(exc).splitlines()[0]}"}
                        torch.cuda.empty_cache()
                r = {"size": size_name, "tokens": tokens, "rows_bound": rows, "rows_per_call": planned,
                     "logits_mib": planned_mib, **r, "expected_rows_per_call": planned}
                results.append(r)
                print(f"{size_name} {tokens} tokens rows {_fmt_bound(rows)}: "
                      + (f"{r['peak_mib']:.0f} MiB, {r['seconds']:.1f} s" if "peak_mib" in r
                         else r.get("skipped") or r.get("error")), flush=True)
    fits = []
    for size_name in args.sizes:
        for tokens in args.tokens:
            fit = fit_per_row([r for r in results if r["size"] == size_name and r["tokens"] == tokens])
            if fit is not None:
                fits.append({"size": size_name, "tokens": tokens, **fit})
    print(f"\nIW-NLL peak memory, device {args.device}, {args.threads} thread(s), {args.samples} samples, "
          f"chunk {args.chunk}, torch {torch.__version__}")
    print(plain_table(
        ["size", "tokens", "rows bound", "rows/call", "calls", "peak MiB", "logits MiB/call", "peak/logits",
         "seconds", "nll"],
        [[r["size"], r["tokens"], _fmt_bound(r["rows_bound"]), r["rows_per_call"], r.get("calls", "-"),
          f"{r['peak_mib']:.1f}" if "peak_mib" in r else ("skipped" if "skipped" in r else "error"),
          f"{r['logits_mib']:.1f}",
          f"{r['peak_mib'] / r['logits_mib']:.2f}" if "peak_mib" in r else "-",
          f"{r['seconds']:.1f}" if "seconds" in r else "-", f"{r['nll']:.2f}" if "nll" in r else "-"]
         for r in results], right_from=1))
    for f in fits:
        print(f"{f['size']}, {f['tokens']} tokens: peak grows {f['mib_per_row']:.2f} MiB per row "
              f"(logits {f['logits_mib_per_row']:.2f} MiB per row; ratio "
              f"{f['mib_per_row'] / f['logits_mib_per_row']:.2f}), intercept {f['intercept_mib']:.0f} MiB")
    doc = {"format": FORMAT,
           "command": "python -m benchmarks.iw_memory " + " ".join(sys.argv[1:] if argv is None else argv),
           "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
           "machine": platform.machine(), "device": args.device, "threads": args.threads,
           "samples": args.samples, "chunk": args.chunk, "seed": args.seed, "max_logits_gib": limit,
           "sizes": {s: SIZES[s] for s in args.sizes}, "results": results, "fits": fits}
    out = args.out or f"benchmarks/results/iw_memory_{device.type}.json"
    write_json(out, doc)
    print(f"wrote {out}")
    return doc


if __name__ == "__main__":
    main()
