"""What the library adds to a step beyond the model's arithmetic, at the synthetic size (where it shows).

    python -m benchmarks.vs_paper.overhead [--steps 300]

Each line is a median of CPU time with the two variants alternating call by call: the trainer's
private steps against the same work written by hand, ``fit`` against its steps, the finiteness
check against clipping alone, ``model.train()``, and a fresh batch from the example's
``DataLoader`` (bundled corpus, cpu preset) against one from a list.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable, Dict, Sequence, Tuple

import torch

from aggressive_vi.faults import clip_and_check

from ..core.timing import alternating, medians
from .ours import build_ours, make_trainer
from .sizes import SIZES, token_batches

__all__ = ["alternate", "main"]


def alternate(fa: Callable[[Any], Any], fb: Callable[[Any], Any], inputs: Sequence[Any], n: int,
              warmup: int = 10) -> Tuple[float, float]:
    """Median CPU seconds of ``fa(x)`` and ``fb(x)``, called alternately (order swapped every call)."""
    t = medians(alternating({"a": fa, "b": fb}, inputs, n + warmup, warmup=warmup))
    return t["a"], t["b"]


def main(argv: Any = None) -> Dict[str, float]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.vs_paper.overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    size = SIZES["synthetic"]
    torch.manual_seed(0)
    vae = build_ours(size)
    batches = token_batches(20, size.batch_size, size.length, size.vocab_size, seed=1)
    trainer = make_trainer(vae, aggressive=True)
    enc, dec = list(vae.encoder.parameters()), list(vae.decoder.parameters())
    eo, do = trainer.enc_opt, trainer.dec_opt

    def bare_encoder(x: torch.Tensor) -> None:
        eo.zero_grad(set_to_none=True)
        torch.autograd.backward(vae.elbo(x, kl_weight=1.0).loss.mean(), inputs=enc)
        torch.nn.utils.clip_grad_norm_(enc, 5.0)
        eo.step()

    def bare_joint(x: torch.Tensor) -> None:
        eo.zero_grad(set_to_none=True)
        do.zero_grad(set_to_none=True)
        vae.elbo(x, kl_weight=1.0).loss.mean().backward()
        torch.nn.utils.clip_grad_norm_(enc + dec, 5.0)
        eo.step()
        do.step()

    out: Dict[str, float] = {}
    a, b = alternate(bare_encoder, lambda x: trainer.algorithm.encoder_update(x, 1.0), batches, args.steps)
    out["encoder_step_us"] = 1e6 * (b - a)
    print(f"encoder step: bare {a * 1e6:.0f} us, library {b * 1e6:.0f} us, +{(b - a) * 1e6:.0f} us ({b / a - 1:+.1%})")
    a, b = alternate(bare_joint, lambda x: trainer.algorithm.joint_update(x, 1.0), batches, args.steps)
    out["joint_step_us"] = 1e6 * (b - a)
    print(f"joint step: bare {a * 1e6:.0f} us, library {b * 1e6:.0f} us, +{(b - a) * 1e6:.0f} us ({b / a - 1:+.1%})")

    def steps(_: Any) -> None:
        for x in batches:
            trainer.algorithm.joint_update(x, 1.0)

    def fit(_: Any) -> None:
        make_trainer(vae, aggressive=False).fit(batches, epochs=1)

    a, b = alternate(steps, fit, [None], max(10, args.steps // 8), warmup=2)
    out["fit_loop_us_per_batch"] = 1e6 * (b - a) / len(batches)
    print(f"basic epoch of {len(batches)} batches: steps alone {a * 1e3:.1f} ms, fit {b * 1e3:.1f} ms, "
          f"{(b - a) / len(batches) * 1e6:+.0f} us per batch")
    vae.elbo(batches[0]).loss.mean().backward()
    params, loss = enc + dec, vae.elbo(batches[0]).loss.detach()
    reps = 200

    def many(f: Callable[[], Any]) -> Callable[[Any], None]:
        def run(_: Any) -> None:
            for _ in range(reps):
                f()
        return run

    a, b = alternate(many(lambda: torch.nn.utils.clip_grad_norm_(params, 5.0)),
                     many(lambda: clip_and_check(loss, params, 5.0)), [None], 40, warmup=2)
    out["finiteness_check_us"] = 1e6 * (b - a) / reps
    print(f"clip_grad_norm_ {a / reps * 1e6:.1f} us, clip_and_check {b / reps * 1e6:.1f} us: "
          f"the finiteness check adds {(b - a) / reps * 1e6:+.1f} us")
    a, b = alternate(many(lambda: None), many(vae.train), [None], 40, warmup=2)
    out["model_train_us"] = 1e6 * (b - a) / reps
    print(f"model.train(): {(b - a) / reps * 1e6:.1f} us per call")
    from examples.text.experiment import load_data
    from examples.text.presets import get_preset

    preset = get_preset("cpu")
    data = load_data("bundled", max_vocab=preset.max_vocab)
    loader = data.loader("train", preset.batch_size, shuffle=True, seed=0)
    ready = [batch for _, batch in zip(range(50), loader)]
    from_loader, from_list = _endless(loader), _endless(ready)
    a, b = alternate(lambda _: next(from_list), lambda _: next(from_loader), [None], 200)
    out["dataloader_us"] = 1e6 * b
    print(f"a fresh inner batch: from a list {a * 1e6:.0f} us, from the example's DataLoader {b * 1e6:.0f} us")
    return out


def _endless(source: Any) -> Any:
    """One pass after another over ``source`` (what the inner loop's stream does, minus its bookkeeping)."""
    while True:
        yield from source


if __name__ == "__main__":  # pragma: no cover
    main()
