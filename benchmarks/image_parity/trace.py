"""Update-by-update comparison of our image VAE training with the paper's image code, from the same
start, on the same batches, with the same noise.

A diagnostic, not a benchmark. It loads the paper's ``modules`` by path from a copy of
``--reference-dir`` at run time (never part of this project), builds its ResNet/PixelCNN VAE at the
run's sizes (:mod:`benchmarks.image_parity.launcher`) and ours (``examples.image``), copies the
paper's initial weights and BatchNorm statistics into ours, and runs ``--steps`` decoder updates on
both sides:

* the reference side is the update of the paper's ``image.py`` written out (its modules, Adam 1e-3,
  ``vae.loss``, both networks' gradients, the joint norm clipped at 5, the inner loop of at most 99
  steps with the window test every 10 on the mean loss per image, then the decoder step on the
  update's own batch);
* our side is :class:`aggressive_vi.AggressiveTrainer` itself, driven only through its public
  ``fit``: a training stream of the same batches and an inner-loop stream of the same extra batches;
  a :class:`~aggressive_vi.Callback` records the weights after every decoder (or joint) update.

Both sides get the same noise: the batches' iterators set the global torch seed before every step
(before update ``t``'s first step when its batch is drawn, before inner step ``k`` when its batch is
drawn; the written-out reference sets the same seeds at the same points), so both draw the same z
whenever they consume random numbers in the same order. Binary batches are drawn from their own
generators and are the same tensors on both sides.

Weights are compared as the networks use them: a masked convolution's weight times its mask (the
paper zeroes masked entries in place at every forward, and they get gradients and Adam updates in
between; ours multiplies by the mask in the forward pass). Per update the trace prints both sides'
loss and KL, the inner steps, the paper's gradient norm (joint; and without the masked entries'
gradients), and the largest weight and BatchNorm-statistics difference.

``--ref-masked-grads zero`` zeroes the masked entries' gradients on the reference side before its
clipping (a diagnostic variant of the paper's update, not the paper's), to tell that cause apart.

    OMP_NUM_THREADS=1 python -m benchmarks.image_parity.trace --reference-dir PATH/TO/vae-lagging-encoder \\
        --mode aggressive --steps 20 --ours-clip joint [--out trace.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from aggressive_vi import AggressiveTrainer, Callback, ConstantKL, FixedSteps

from examples.image.datasets import load_images
from examples.image.experiment import build_vae

from ..core.reference import import_reference
from . import launcher
from .ours import preset_of
from .reference import prepare_image_reference
from .spec import CLIP, LR, MAX_INNER_STEPS, WINDOW, ImageRunSpec

__all__ = ["BatchPlan", "load_reference_modules", "build_reference_vae", "TensorPairs", "pair_tensors",
           "paper_update", "paper_aggressive_update", "WeightRecorder", "run_ours", "run_reference",
           "compare", "summarise", "main"]


# ------------------------------------------------------------------------------------ batches and noise
class BatchPlan:
    """The batches and noise seeds of a trace, the same for both sides.

    ``images``: ``[N, 1, 28, 28]`` grey levels. Update ``t`` trains on ``batch(t)`` (the epochs'
    shuffled batches, binarised); its inner step ``k >= 2`` on ``inner_batch(t, k)`` (``batch_size``
    distinct random images, binarised); before step ``k`` of update ``t`` (``k = 1``: the update's own
    batch) the global torch seed is ``noise_seed(t, k)``.
    """

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int) -> None:
        if len(images) < batch_size:
            raise ValueError(f"need at least batch_size={batch_size} images, got {len(images)}")
        self.images, self.batch_size, self.seed = images, batch_size, seed
        self._batches: List[torch.Tensor] = []
        self._gen = torch.Generator().manual_seed(seed)

    def batch(self, t: int) -> torch.Tensor:
        while len(self._batches) <= t:  # one more epoch of shuffled, binarised batches
            order = torch.randperm(len(self.images), generator=self._gen)
            for start in range(0, len(order), self.batch_size):
                chunk = self.images[order[start:start + self.batch_size]]
                self._batches.append(torch.bernoulli(chunk, generator=self._gen))
        return self._batches[t]

    def inner_batch(self, t: int, k: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + t * 1_009 + k)
        idx = torch.randperm(len(self.images), generator=gen)[:self.batch_size]
        return torch.bernoulli(self.images[idx], generator=gen)

    def noise_seed(self, t: int, k: int) -> int:
        return (self.seed * 7_919 + t * 131 + k) % (2 ** 31)


class _TrainStream:
    """Our trainer's training loader: update ``t``'s batch, the noise seed set as it is drawn."""

    def __init__(self, plan: BatchPlan, steps: int, position: Dict[str, int]) -> None:
        self.plan, self.steps, self.position = plan, steps, position

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[torch.Tensor]:
        for t in range(self.steps):
            self.position.update(t=t, k=1)
            torch.manual_seed(self.plan.noise_seed(t, 1))
            yield self.plan.batch(t)


class _InnerStream:
    """Our trainer's inner loader: inner step ``k`` of the current update, seeded as it is drawn."""

    def __init__(self, plan: BatchPlan, position: Dict[str, int]) -> None:
        self.plan, self.position = plan, position

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            t, k = self.position["t"], self.position["k"] + 1
            self.position["k"] = k
            torch.manual_seed(self.plan.noise_seed(t, k))
            yield self.plan.inner_batch(t, k)


# ------------------------------------------------------------------------------------ the two models
def load_reference_modules(reference_dir: str, scratch: str) -> Any:
    """Copy the checkout's image code to ``scratch`` and import its ``modules`` package
    (:func:`benchmarks.core.reference.import_reference`)."""
    return import_reference(prepare_image_reference(reference_dir, scratch), ("modules",))["modules"]


def build_reference_vae(modules: Any, spec: ImageRunSpec) -> nn.Module:
    """The paper's ``VAE(ResNetEncoderV2, PixelCNNDecoderV2)`` at ``spec``'s sizes, its own init."""
    args = argparse.Namespace(nz=spec.latent_dim, latent_feature_map=spec.latent_maps, device=torch.device("cpu"))
    if spec.paper_sizes:
        enc_cls, dec_cls = modules.ResNetEncoderV2, modules.PixelCNNDecoderV2
    else:
        sized = launcher.sized_classes(modules, {k: v for k, v in spec.sizes().items() if k != "latent_maps"})
        enc_cls, dec_cls = sized["ResNetEncoderV2"], sized["PixelCNNDecoderV2"]
    return modules.VAE(enc_cls(args), dec_cls(args), args)


class TensorPairs:
    """Same-role tensors of two models (parameters, then buffers), matched by order and shape, with
    the mask of each masked convolution's weight (``None`` elsewhere)."""

    def __init__(self, pairs: List[Tuple[str, str, Optional[torch.Tensor]]], params: int) -> None:
        self.pairs, self.params = pairs, params


def _tensors(model: nn.Module) -> Tuple[List[Tuple[str, torch.Tensor]], List[Tuple[str, torch.Tensor]]]:
    params = list(model.named_parameters())
    buffers = [(n, b) for n, b in model.named_buffers() if not n.endswith("mask")]
    return params, buffers


def _masks(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {f"{name}.weight" if name else "weight": m.mask for name, m in model.named_modules()
            if isinstance(getattr(m, "mask", None), torch.Tensor) and hasattr(m, "weight")}


def pair_tensors(ref: nn.Module, ours: nn.Module) -> TensorPairs:
    """Match ``ref``'s parameters and buffers (masks aside) with ``ours``' in order.

    Raises:
        ValueError: different counts, a shape that differs, or masked weights that do not line up
            with equal masks.
    """
    rp, rb = _tensors(ref)
    op, ob = _tensors(ours)
    if len(rp) != len(op) or len(rb) != len(ob):
        raise ValueError(f"the models differ: {len(rp)} vs {len(op)} parameters, {len(rb)} vs {len(ob)} buffers")
    rmask, omask = _masks(ref), _masks(ours)
    pairs: List[Tuple[str, str, Optional[torch.Tensor]]] = []
    for (rn, rt), (on, ot) in list(zip(rp, op)) + list(zip(rb, ob)):
        if rt.shape != ot.shape:
            raise ValueError(f"{rn} {tuple(rt.shape)} and {on} {tuple(ot.shape)} differ in shape")
        if (rn in rmask) != (on in omask):
            raise ValueError(f"{rn} and {on}: one is a masked convolution's weight, the other not")
        mask = None
        if rn in rmask:
            if not torch.equal(rmask[rn].to(torch.bool), omask[on].to(torch.bool)):
                raise ValueError(f"{rn} and {on} have different masks")
            mask = omask[on].detach().clone()
        pairs.append((rn, on, mask))
    return TensorPairs(pairs, len(rp))


def _state(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in list(model.named_parameters()) + list(model.named_buffers())}


def copy_into(ref: nn.Module, ours: nn.Module, pairs: TensorPairs) -> None:
    """Copy ``ref``'s parameters and buffers into ``ours`` (``pairs`` from :func:`pair_tensors`)."""
    rs = dict(list(ref.named_parameters()) + list(ref.named_buffers()))
    os_ = dict(list(ours.named_parameters()) + list(ours.named_buffers()))
    with torch.no_grad():
        for rn, on, _ in pairs.pairs:
            os_[on].copy_(rs[rn])


def compare(ref_state: Dict[str, torch.Tensor], our_state: Dict[str, torch.Tensor],
            pairs: TensorPairs) -> Dict[str, Any]:
    """Largest absolute difference of the effective weights (masked weights times their mask) and of
    the floating-point buffers (BatchNorm's running statistics), each with the reference's name of
    the tensor where it is."""
    worst = {"weight": (0.0, ""), "buffer": (0.0, "")}
    for i, (rn, on, mask) in enumerate(pairs.pairs):
        if not ref_state[rn].is_floating_point():  # BatchNorm's num_batches_tracked: a count of forward
            continue  # passes (used only without a momentum), which differs whenever the inner steps do
        a, b = ref_state[rn].double(), our_state[on].double()
        if mask is not None:
            a, b = a * mask, b * mask
        d = float((a - b).abs().max()) if a.numel() else 0.0
        kind = "weight" if i < pairs.params else "buffer"
        if d > worst[kind][0]:
            worst[kind] = (d, rn)
    return {"max_weight_diff": worst["weight"][0], "max_weight_diff_in": worst["weight"][1],
            "max_buffer_diff": worst["buffer"][0], "max_buffer_diff_in": worst["buffer"][1]}


# ------------------------------------------------------------------------------------ the paper's update
def _masked_entries(vae: nn.Module) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    return [(m.weight, m.mask) for m in vae.modules() if isinstance(getattr(m, "mask", None), torch.Tensor)]


def paper_update(vae: nn.Module, enc_opt: torch.optim.Optimizer, dec_opt: torch.optim.Optimizer, x: torch.Tensor,
                 stepped: Sequence[torch.optim.Optimizer], *, clip: float = CLIP,
                 masked_grads: str = "keep") -> Dict[str, float]:
    """One update as ``image.py`` makes it: both networks' gradients of the batch's mean loss, their
    joint norm clipped at ``clip``, then ``stepped`` stepped. ``masked_grads="zero"`` (diagnostic
    only) zeroes the masked weights' gradients before the clip.

    Returns the batch's mean loss and KL, the joint norm before clipping (``grad_norm``), the norm
    without the masked entries (``grad_norm_unmasked``), each network's own norm, and the summed
    loss (for the window test)."""
    enc_opt.zero_grad()
    dec_opt.zero_grad()
    loss, _, kl = vae.loss(x, 1.0, nsamples=1)
    loss.mean(dim=-1).backward()
    masked = _masked_entries(vae)
    if masked_grads == "zero":
        for w, m in masked:
            if w.grad is not None:
                w.grad.mul_(m)

    def norm(params: Sequence[torch.Tensor], unmask: bool = False) -> float:
        masks = {id(w): m for w, m in masked} if unmask else {}
        parts = [(p.grad * masks[id(p)] if id(p) in masks else p.grad).double().norm()
                 for p in params if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack(parts))) if parts else 0.0

    stats = {"grad_norm_unmasked": norm(list(vae.parameters()), unmask=True),
             "enc_grad_norm": norm(list(vae.encoder.parameters())),
             "dec_grad_norm_unmasked": norm(list(vae.decoder.parameters()), unmask=True)}
    total = float(torch.nn.utils.clip_grad_norm_(vae.parameters(), clip))
    for opt in stepped:
        opt.step()
    loss, kl = loss.detach(), kl.detach()
    return {"loss": float(loss.mean()), "kl": float(kl.mean()), "loss_sum": float(loss.sum()), "grad_norm": total,
            **stats}


def paper_aggressive_update(vae: nn.Module, enc_opt: torch.optim.Optimizer, dec_opt: torch.optim.Optimizer,
                            plan: BatchPlan, t: int, *, clip: float = CLIP, masked_grads: str = "keep",
                            window: int = WINDOW, max_steps: int = MAX_INNER_STEPS) -> Dict[str, Any]:
    """``image.py``'s inner loop (steps 1..99, the window's mean loss per image compared every 10
    steps with the previous window's, starting from 1e4), then its decoder step on update ``t``'s
    batch. Step ``k`` is seeded with ``plan.noise_seed(t, k)``; the decoder step continues that noise."""
    x = plan.batch(t)
    x_enc, n, pre, cur, k = x, 0, 1e4, 0.0, 1
    inner: List[Dict[str, float]] = []
    while k <= max_steps:
        torch.manual_seed(plan.noise_seed(t, k))
        step = paper_update(vae, enc_opt, dec_opt, x_enc, (enc_opt,), clip=clip, masked_grads=masked_grads)
        inner.append(step)
        cur += step["loss_sum"]
        n += x_enc.shape[0]
        if k % window == 0:
            cur /= n
            if pre - cur < 0:
                break
            pre, cur, n = cur, 0.0, 0
        k += 1
        if k <= max_steps:
            x_enc = plan.inner_batch(t, k)
    steps = len(inner)
    out = paper_update(vae, enc_opt, dec_opt, x, (dec_opt,), clip=clip, masked_grads=masked_grads)
    return {**out, "inner": steps,
            "inner_clipped_joint": sum(1 for s in inner if s["grad_norm"] > clip),
            "inner_clipped_unmasked": sum(1 for s in inner if s["grad_norm_unmasked"] > clip),
            "inner_clipped_encoder": sum(1 for s in inner if s["enc_grad_norm"] > clip)}


def run_reference(vae: nn.Module, plan: BatchPlan, steps: int, *, aggressive: bool, masked_grads: str = "keep",
                  every: Optional[Callable[[int, Dict[str, Any], Dict[str, torch.Tensor]], None]] = None
                  ) -> List[Tuple[Dict[str, Any], Dict[str, torch.Tensor]]]:
    """``steps`` updates of the paper's training (Adam 1e-3 per network) on ``plan``; returns per
    update its numbers and the model's state after it."""
    enc_opt = torch.optim.Adam(vae.encoder.parameters(), lr=LR)
    dec_opt = torch.optim.Adam(vae.decoder.parameters(), lr=LR)
    vae.train()
    out = []
    for t in range(steps):
        if aggressive:
            row = paper_aggressive_update(vae, enc_opt, dec_opt, plan, t, masked_grads=masked_grads)
        else:
            torch.manual_seed(plan.noise_seed(t, 1))
            row = {**paper_update(vae, enc_opt, dec_opt, plan.batch(t), (enc_opt, dec_opt),
                                  masked_grads=masked_grads), "inner": 0}
        out.append((row, _state(vae)))
        if every is not None:
            every(t, row, out[-1][1])
    return out


# ------------------------------------------------------------------------------------ our side
class WeightRecorder(Callback):
    """Records, after every decoder (or joint) update, the step's loss, KL and inner steps and the
    model's parameters and buffers (through the public ``on_step_end`` hook)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.rows: List[Tuple[Dict[str, Any], Dict[str, torch.Tensor]]] = []

    def on_step_end(self, trainer: Any, info: Any) -> None:
        row = {"loss": float(info.loss), "kl": float(info.kl), "inner": int(info.inner_steps)}
        self.rows.append((row, _state(self.model)))


def run_ours(vae: nn.Module, plan: BatchPlan, steps: int, *, aggressive: bool, clip_scope: str = "joint"
             ) -> List[Tuple[Dict[str, Any], Dict[str, torch.Tensor]]]:
    """``steps`` updates of ``AggressiveTrainer.fit`` (Adam 1e-3 per network, window 10, at most 99
    inner steps, clip 5, ``clip_scope``) on ``plan``'s batches and noise."""
    enc_opt = torch.optim.Adam(vae.encoder.parameters(), lr=LR)
    dec_opt = torch.optim.Adam(vae.decoder.parameters(), lr=LR)
    recorder = WeightRecorder(vae)
    trainer = AggressiveTrainer(vae, enc_opt, dec_opt, stopping=FixedSteps(10 ** 9), kl_schedule=ConstantKL(1.0),
                                aggressive=aggressive, window=WINDOW, max_inner_steps=MAX_INNER_STEPS,
                                clip_grad_norm=CLIP, clip_scope=clip_scope, callbacks=[recorder])
    position = {"t": 0, "k": 1}
    trainer.fit(_TrainStream(plan, steps, position), epochs=1, inner_loader=_InnerStream(plan, position))
    return recorder.rows


# ------------------------------------------------------------------------------------ the trace
def summarise(rows: Sequence[Dict[str, Any]], tolerance: float = 1e-4) -> Dict[str, Any]:
    """The first update (0-based) whose weights, buffers, loss or inner steps differ (weights and
    buffers by more than ``tolerance``; ``-1``: none), the largest differences, and how often the
    paper's clipping was active."""
    def first(pred: Callable[[Dict[str, Any]], bool]) -> int:
        return next((r["step"] for r in rows if pred(r)), -1)

    out: Dict[str, Any] = {
        "updates": len(rows),
        "first_weight_diff": first(lambda r: r["max_weight_diff"] > tolerance),
        "first_buffer_diff": first(lambda r: r["max_buffer_diff"] > tolerance),
        "first_loss_diff": first(lambda r: abs(r["ours_loss"] - r["ref_loss"]) > tolerance * max(1.0, abs(r["ref_loss"]))),
        "first_inner_diff": first(lambda r: r["ours_inner"] != r["ref_inner"]),
        "max_weight_diff": max((r["max_weight_diff"] for r in rows), default=0.0),
        "max_buffer_diff": max((r["max_buffer_diff"] for r in rows), default=0.0),
        "max_loss_diff": max((abs(r["ours_loss"] - r["ref_loss"]) for r in rows), default=0.0),
        "updates_clipped_joint": sum(1 for r in rows if r["ref_grad_norm"] > CLIP),
        "updates_clipped_unmasked": sum(1 for r in rows if r["ref_grad_norm_unmasked"] > CLIP),
        "tolerance": tolerance,
    }
    if rows and "ref_inner_clipped_joint" in rows[0]:
        out["inner_steps"] = sum(r["ref_inner"] for r in rows)
        for key in ("joint", "unmasked", "encoder"):
            out[f"inner_clipped_{key}"] = sum(r[f"ref_inner_clipped_{key}"] for r in rows)
    return out


def trace(ref_vae: nn.Module, ours: nn.Module, plan: BatchPlan, steps: int, *, aggressive: bool,
          clip_scope: str = "joint", masked_grads: str = "keep", verbose: bool = True) -> Dict[str, Any]:
    """Copy ``ref_vae``'s state into ``ours``, run both sides and compare them update by update."""
    pairs = pair_tensors(ref_vae, ours)
    copy_into(ref_vae, ours, pairs)
    start = compare(_state(ref_vae), _state(ours), pairs)
    ref_rows = run_reference(ref_vae, plan, steps, aggressive=aggressive, masked_grads=masked_grads)
    our_rows = run_ours(ours, plan, steps, aggressive=aggressive, clip_scope=clip_scope)
    rows: List[Dict[str, Any]] = []
    if verbose:
        print(f"{'upd':>4} {'ref loss':>9} {'ours loss':>9} {'d loss':>9} {'ref kl':>7} {'ours kl':>7} "
              f"{'inner r/o':>9} {'ref |g|':>8} {'unmasked':>8} {'max|dW|':>9} {'max|dBN|':>9}  where")
    for t, ((r, rs), (o, os_)) in enumerate(zip(ref_rows, our_rows)):
        row = {"step": t, **{f"ref_{k}": v for k, v in r.items() if k != "loss_sum"},
               **{f"ours_{k}": v for k, v in o.items()}, **compare(rs, os_, pairs)}
        rows.append(row)
        if verbose:
            print(f"{t:4d} {r['loss']:9.3f} {o['loss']:9.3f} {o['loss'] - r['loss']:9.2e} {r['kl']:7.3f} {o['kl']:7.3f} "
                  f"{str(r['inner']) + '/' + str(o['inner']):>9} {r['grad_norm']:8.2f} {r['grad_norm_unmasked']:8.2f} "
                  f"{row['max_weight_diff']:9.2e} {row['max_buffer_diff']:9.2e}  {row['max_weight_diff_in']}",
                  flush=True)
    return {"start": start, "rows": rows, "summary": summarise(rows)}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.image_parity.trace", description=__doc__.split("\n\n")[0])
    p.add_argument("--reference-dir", required=True)
    p.add_argument("--data", default="bundled", help="the training images (examples.image.datasets.load_images)")
    p.add_argument("--max-train", type=int, default=500)
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--latent-maps", type=int, default=4)
    p.add_argument("--encoder-channels", type=int, nargs="+", default=[16, 16, 16])
    p.add_argument("--encoder-hidden", type=int, default=128)
    p.add_argument("--decoder-channels", type=int, default=16)
    p.add_argument("--decoder-kernels", type=int, nargs="+", default=[5, 5, 3, 3])
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--steps", type=int, default=20, help="decoder updates to trace")
    p.add_argument("--seed", type=int, default=783435)
    p.add_argument("--mode", choices=("basic", "aggressive"), default="aggressive")
    p.add_argument("--ours-clip", choices=("joint", "network"), default="joint", help="our clip_scope")
    p.add_argument("--ref-masked-grads", choices=("keep", "zero"), default="keep",
                   help="zero: a diagnostic variant of the paper's update without the masked entries' gradients")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="write the rows and the summary as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = ImageRunSpec(data="trace", data_file="-", latent_dim=args.latent_dim,
                        encoder_channels=tuple(args.encoder_channels), encoder_hidden=args.encoder_hidden,
                        decoder_channels=args.decoder_channels, decoder_kernel_sizes=tuple(args.decoder_kernels),
                        latent_maps=args.latent_maps, batch_size=args.batch_size, epochs=1, iw_samples=100,
                        mode=args.mode, seed=args.seed, ours_clip=args.ours_clip)
    modules = load_reference_modules(args.reference_dir, tempfile.mkdtemp(prefix="image-trace-"))
    images = load_images(args.data).train[:args.max_train]
    torch.manual_seed(args.seed)
    ref_vae = build_reference_vae(modules, spec)
    ours = build_vae(preset_of(spec))
    plan = BatchPlan(images, args.batch_size, args.seed)
    result = trace(ref_vae, ours, plan, args.steps, aggressive=args.mode == "aggressive", clip_scope=args.ours_clip,
                   masked_grads=args.ref_masked_grads)
    print("at the start:", json.dumps(result["start"]))
    print("summary:", json.dumps(result["summary"]))
    result["settings"] = vars(args)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":  # pragma: no cover
    main()
