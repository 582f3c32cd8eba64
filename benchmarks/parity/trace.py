"""Update-by-update comparison of our trainer with the paper's code from the same start.

A diagnostic, not a benchmark: it loads the paper's ``modules`` and ``data`` packages by path from a
copy of ``--reference-dir`` at run time (never part of this project), builds its LSTM VAE and ours at
the same sizes, copies the reference's initial weights into ours, batches the training file with the
reference's own batcher and feeds both the same batches in the same order. Before every update the
global torch seed is set to the same value on both sides, so both draw the same z noise and dropout
masks when they consume random numbers in the same order. Per update it prints both sides' loss, KL
and pre-clipping gradient norm and the largest absolute weight difference after the update.

Our side is :class:`aggressive_vi.AggressiveTrainer` itself (its joint step in basic mode; its
catch-up loop and decoder step in aggressive mode, the inner loop's batches drawn from the same
index sequence as the reference's; the clipped norm read through a public ``Engine`` subclass,
:class:`NormRecorder`); the reference side is the paper's update as its ``text.py`` loop makes it
(:mod:`benchmarks.core.paper_update`: its modules, its optimiser settings, its clipping of the joint norm).

    OMP_NUM_THREADS=1 python -m benchmarks.parity.trace --reference-dir PATH/TO/vae-lagging-encoder \
        --data DIR --latent-dim 2 --steps 126 [--mode aggressive] [--out trace.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from aggressive_vi import AggressiveTrainer, Engine, ConstantKL, FixedSteps
from examples.text.experiment import build_vae
from examples.text.presets import Preset

from ..core.paper_update import Forward, PaperStep, elbo_loss, paper_catch_up, paper_loss, paper_update
from ..core.reference import import_reference, paper_vae
from .clipping import CLIP_MODES, joint_clip_backward
from .reference import prepare_reference

__all__ = ["load_reference", "build_reference_vae", "copy_weights", "max_weight_diff", "summarise_trace",
           "main"]


def load_reference(reference_dir: str, scratch: str) -> Dict[str, Any]:
    """Copy the checkout's sources to ``scratch`` and import its ``modules`` and ``data`` packages."""
    copy = prepare_reference(reference_dir, scratch)
    return {**import_reference(copy, ("modules", "data")), "dir": copy}


def build_reference_vae(ref: Dict[str, Any], vocab: Any, *, embed_dim: int, hidden_dim: int, latent_dim: int,
                        dropout: float) -> nn.Module:
    """The reference's ``VAE(LSTMEncoder, LSTMDecoder)`` with its own initialisers."""
    return paper_vae(ref["modules"], vocab, embed_dim=embed_dim, hidden_dim=hidden_dim, latent_dim=latent_dim,
                     dropout=dropout)


def copy_weights(src: nn.Module, dst: nn.Module) -> List[str]:
    """Copy every parameter of ``src`` into the parameter of ``dst`` with the same name and shape;
    returns the names copied.

    Raises:
        ValueError: the two modules' parameter names or shapes differ (the message lists them).
    """
    s, d = dict(src.named_parameters()), dict(dst.named_parameters())
    if set(s) != set(d):
        raise ValueError(f"parameter names differ: only in src {sorted(set(s) - set(d))}, "
                         f"only in dst {sorted(set(d) - set(s))}")
    bad = [f"{k}: {tuple(s[k].shape)} vs {tuple(d[k].shape)}" for k in s if s[k].shape != d[k].shape]
    if bad:
        raise ValueError(f"parameter shapes differ: {bad}")
    with torch.no_grad():
        for k in s:
            d[k].copy_(s[k])
    return sorted(s)


def max_weight_diff(a: nn.Module, b: nn.Module) -> Tuple[float, str]:
    """The largest absolute difference between same-named parameters of ``a`` and ``b``, and the
    name of the parameter where it is."""
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    diffs = {k: float((pa[k].detach() - pb[k].detach()).abs().max()) for k in pa}
    name = max(diffs, key=lambda k: diffs[k])
    return diffs[name], name


def freeze_row(weight: torch.Tensor, row: int) -> Any:
    """Zero the gradient of ``weight[row]`` on every backward (what ``nn.Embedding(padding_idx=row)``
    does); returns the hook's handle."""
    def hook(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[row] = 0
        return grad
    return weight.register_hook(hook)


def summarise_trace(rows: Sequence[Dict[str, float]], keys: Sequence[str] = ("loss", "kl", "grad_norm")
                    ) -> Dict[str, Dict[str, float]]:
    """Per quantity: the mean of ours minus the reference's, the largest absolute difference, and the
    first update (0-based) at which the absolute difference exceeds 1e-4 (``-1``: never).

    Each row holds ``ref_<key>`` and ``ours_<key>``.
    """
    out: Dict[str, Dict[str, float]] = {}
    for key in keys:
        diffs = [r[f"ours_{key}"] - r[f"ref_{key}"] for r in rows
                 if r.get(f"ours_{key}") is not None and r.get(f"ref_{key}") is not None]
        if not diffs:
            continue
        first = next((i for i, d in enumerate(diffs) if abs(d) > 1e-4), -1)
        out[key] = {"mean_diff": float(np.mean(diffs)), "max_abs_diff": float(np.max(np.abs(diffs))),
                    "first_above_1e-4": first}
    return out


# ---------------------------------------------------------------- the reference's update (benchmarks.core)
def _row(step: PaperStep) -> Dict[str, float]:
    return {"loss": float(step.loss.mean()), "kl": float(step.kl.mean()), "grad_norm": float(step.grad_norm)}


def _ref_basic_step(vae: nn.Module, enc_opt: torch.optim.Optimizer, dec_opt: torch.optim.Optimizer,
                    x: torch.Tensor, clip: float) -> Dict[str, float]:
    return _row(paper_update(vae, enc_opt, dec_opt, x, phase="joint", clip=clip))


def _ref_aggressive_step(vae: nn.Module, enc_opt: torch.optim.Optimizer, dec_opt: torch.optim.Optimizer,
                         x: torch.Tensor, batches: Sequence[torch.Tensor], draw: Callable[[], int],
                         clip: float) -> Dict[str, float]:
    """The paper's inner loop (sub_iter 1..99, windows of 15 compared per word) then its decoder step."""
    stats: List[Tuple[float, float]] = []

    def record(step: PaperStep) -> None:
        # the factor the paper's clip applies to the encoder's step, and the one clipping the
        # encoder's norm alone would apply (our library's rule)
        joint, enc = float(step.grad_norm), float(step.encoder_norm)  # type: ignore[arg-type]
        stats.append((min(1.0, clip / (joint + 1e-6)), min(1.0, clip / (enc + 1e-6))))

    inner = paper_catch_up(vae, enc_opt, dec_opt, x, lambda: batches[draw()], clip=clip, encoder_norm=True,
                           on_step=record)
    return {**_row(paper_update(vae, enc_opt, dec_opt, x, phase="decoder", clip=clip)), "inner": inner.sub_iter,
            "inner_n": len(stats), "inner_joint_clipped": sum(1 for j, _ in stats if j < 1.0),
            "inner_enc_clipped": sum(1 for _, e in stats if e < 1.0),
            "inner_step_ratio": float(np.mean([j / e for j, e in stats]))}


class NormRecorder(Engine):
    """The library's :class:`~aggressive_vi.engines.Engine` that also records, per update, the norm of
    the gradients it is about to clip (what ``torch.nn.utils.clip_grad_norm_`` returns there).

    Args:
        backward: as ``Engine(backward=...)`` (default :func:`torch.autograd.backward`).
    """

    def __init__(self, backward: Optional[Callable[..., Any]] = None) -> None:
        super().__init__(backward=self._recording_backward)
        self._inner_backward = backward if backward is not None else torch.autograd.backward
        self._params: List[torch.Tensor] = []
        self.norms: List[float] = []

    def _recording_backward(self, loss: torch.Tensor, inputs: Optional[Sequence[torch.Tensor]] = None) -> None:
        if inputs is None:
            self._inner_backward(loss)
        else:
            self._inner_backward(loss, inputs=inputs)
        grads = [p.grad for p in self._params if p.grad is not None]
        self.norms.append(float(torch.nn.utils.get_total_norm(grads)))

    def apply(self, loss: torch.Tensor, *, params: Sequence[torch.Tensor], **kwargs: Any) -> Any:
        self._params = list(params)
        return super().apply(loss, params=params, **kwargs)


class _Replay:
    """An iterable over ``batches`` in the order given by ``draw()`` (the inner loop's stream)."""

    def __init__(self, batches: Sequence[torch.Tensor], draw: Callable[[], int]) -> None:
        self.batches, self.draw = batches, draw

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            yield self.batches[self.draw()]


def _ours_step(trainer: AggressiveTrainer, engine: NormRecorder, x: torch.Tensor, inner: Any,
               aggressive: bool) -> Dict[str, float]:
    trainer.model.train()
    steps = 0
    if aggressive:
        steps = trainer.algorithm.catch_up_encoder(x, lambda: next(inner), 1.0).steps
        terms, _ = trainer.algorithm.decoder_update(x, 1.0)
    else:
        terms, _ = trainer.algorithm.joint_update(x, 1.0)
    return {"loss": float(terms.loss.mean()), "kl": float(terms.kl.mean()), "grad_norm": engine.norms[-1],
            "inner": steps}


def _val_loss(vae: nn.Module, batches: Sequence[torch.Tensor], forward: Forward = paper_loss) -> float:
    """The mean -ELBO per sentence over ``batches``, in eval mode: the paper's model through its
    ``loss`` (:func:`~benchmarks.core.paper_update.paper_loss`), ours through ``elbo_loss``."""
    vae.eval()
    total = n = 0.0
    with torch.no_grad():
        for x in batches:
            loss, _, _ = forward(vae, x, 1.0)
            total += float(loss.sum())
            n += x.size(0)
    vae.train()
    return total / n


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.parity.trace", description=__doc__.split("\n\n")[0])
    p.add_argument("--reference-dir", required=True)
    p.add_argument("--data", required=True, help="a directory with train.txt and valid.txt")
    p.add_argument("--embed-dim", type=int, default=50)
    p.add_argument("--hidden-dim", type=int, default=50)
    p.add_argument("--latent-dim", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--steps", type=int, default=126, help="decoder updates to trace")
    p.add_argument("--seed", type=int, default=783435)
    p.add_argument("--mode", choices=("basic", "aggressive"), default="basic")
    p.add_argument("--same-noise", type=int, default=1,
                   help="1: reseed torch before every update on both sides (same dropout and z noise)")
    p.add_argument("--ours-clip", choices=CLIP_MODES, default="joint",
                   help="our clipping in aggressive steps (benchmarks.parity.clipping)")
    p.add_argument("--freeze-last-row", type=int, default=1,
                   help="1: zero the gradient of our decoder embedding's last row, as the reference's "
                        "padding_idx=-1 does")
    p.add_argument("--every", type=int, default=1, help="print every N-th update")
    p.add_argument("--out", help="write the rows and the summary as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    scratch = tempfile.mkdtemp(prefix="parity-trace-")
    ref = load_reference(args.reference_dir, scratch)
    MonoTextData = ref["data"].MonoTextData
    train = MonoTextData(str(Path(args.data) / "train.txt"), label=False)
    valid = MonoTextData(str(Path(args.data) / "valid.txt"), label=False, vocab=train.vocab)
    vocab = train.vocab
    dev = torch.device("cpu")
    batches = train.create_data_batch(batch_size=args.batch_size, device=dev, batch_first=True)
    val_batches = valid.create_data_batch(batch_size=args.batch_size, device=dev, batch_first=True)

    torch.manual_seed(args.seed)
    ref_vae = build_reference_vae(ref, vocab, embed_dim=args.embed_dim, hidden_dim=args.hidden_dim,
                                  latent_dim=args.latent_dim, dropout=args.dropout)
    preset = Preset(embed_dim=args.embed_dim, hidden_dim=args.hidden_dim, latent_dim=args.latent_dim,
                    batch_size=args.batch_size, max_vocab=None, dropout_in=args.dropout, dropout_out=args.dropout)
    ours = build_vae(preset, len(vocab))
    copied = copy_weights(ref_vae, ours)
    if args.freeze_last_row:
        freeze_row(ours.decoder.embed.weight, len(vocab) - 1)
    ref_vae.train()
    ours.train()
    r_enc = torch.optim.SGD(ref_vae.encoder.parameters(), lr=1.0, momentum=0)
    r_dec = torch.optim.SGD(ref_vae.decoder.parameters(), lr=1.0, momentum=0)
    o_enc = torch.optim.SGD(ours.encoder.parameters(), lr=1.0, momentum=0)
    o_dec = torch.optim.SGD(ours.decoder.parameters(), lr=1.0, momentum=0)
    extra: Dict[str, Any] = {"clip_scope": "joint" if args.ours_clip == "joint" else "network"}
    engine = NormRecorder(backward=joint_clip_backward(ours, 5.0) if args.ours_clip == "inner-joint" else None)
    trainer = AggressiveTrainer(ours, o_enc, o_dec, stopping=FixedSteps(10 ** 9), kl_schedule=ConstantKL(1.0),
                                aggressive=args.mode == "aggressive", window=15, max_inner_steps=99,
                                clip_grad_norm=5.0, engine=engine, **extra)

    order_rng = np.random.RandomState(args.seed)
    rows: List[Dict[str, float]] = []
    print(f"vocab {len(vocab)}, {len(batches)} training batches, copied {len(copied)} tensors; "
          f"weight diff at start {max_weight_diff(ref_vae, ours)[0]:.2e}")
    print(f"{'upd':>4} {'ref loss':>9} {'ours loss':>9} {'d loss':>9} {'ref kl':>8} {'ours kl':>8} "
          f"{'ref |g|':>8} {'ours |g|':>8} {'inner r/o':>9} {'max|dW|':>9}")
    step = 0
    epoch = 0
    val_rows: List[Dict[str, float]] = []
    while step < args.steps:
        for i in order_rng.permutation(len(batches)):
            if step >= args.steps:
                break
            x = batches[i]
            inner_seed = (args.seed * 7919 + step) % (2 ** 32)
            if args.same_noise:
                torch.manual_seed(args.seed * 1000 + step)
            rng = np.random.RandomState(inner_seed)
            r = (_ref_basic_step(ref_vae, r_enc, r_dec, x, 5.0) if args.mode == "basic" else
                 _ref_aggressive_step(ref_vae, r_enc, r_dec, x, batches,
                                      lambda: int(rng.randint(0, len(batches))), 5.0))
            if args.same_noise:
                torch.manual_seed(args.seed * 1000 + step)
            rng_o = np.random.RandomState(inner_seed)
            inner = iter(_Replay(batches, lambda: int(rng_o.randint(0, len(batches)))))
            o = _ours_step(trainer, engine, x, inner, args.mode == "aggressive")
            row = {"step": step, "epoch": epoch, **{f"ref_{k}": v for k, v in r.items()},
                   **{f"ours_{k}": v for k, v in o.items()}, }
            row["max_weight_diff"], row["max_weight_diff_in"] = max_weight_diff(ref_vae, ours)
            rows.append(row)
            if step % args.every == 0:
                print(f"{step:4d} {r['loss']:9.4f} {o['loss']:9.4f} {o['loss'] - r['loss']:9.2e} {r['kl']:8.4f} "
                      f"{o['kl']:8.4f} {r['grad_norm']:8.3f} {o['grad_norm']:8.3f} "
                      f"{str(r.get('inner', '-')) + '/' + str(o.get('inner', '-')):>9} {row['max_weight_diff']:9.2e} {row['max_weight_diff_in']}",
                      flush=True)
            step += 1
        epoch += 1
        vr, vo = _val_loss(ref_vae, val_batches), _val_loss(ours, val_batches, elbo_loss)
        val_rows.append({"epoch": epoch - 1, "ref_val_loss": vr, "ours_val_loss": vo})
        print(f"-- after epoch {epoch - 1}: validation -ELBO ref {vr:.4f}, ours {vo:.4f}", flush=True)
    summary: Dict[str, Any] = summarise_trace(rows)
    if args.mode == "aggressive":
        n_inner = sum(r["ref_inner_n"] for r in rows)
        summary["reference_inner_steps"] = {
            "steps": n_inner,
            "joint_norm_clipped": sum(r["ref_inner_joint_clipped"] for r in rows),
            "encoder_norm_clipped": sum(r["ref_inner_enc_clipped"] for r in rows),
            "mean_step_ratio_paper_over_library": float(np.average(
                [r["ref_inner_step_ratio"] for r in rows], weights=[r["ref_inner_n"] for r in rows])),
        }
    print("summary (ours - ref):", json.dumps(summary))
    result = {"settings": vars(args), "rows": rows, "validation": val_rows, "summary": summary}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":  # pragma: no cover
    main()
