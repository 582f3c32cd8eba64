"""Our side: ``aggressive_vi.AggressiveTrainer`` with the ``examples.text`` LSTM VAE, set up as the
reference sets itself up (see :mod:`benchmarks.parity.spec` for what is fixed on both sides).

Matched to the reference: vocabulary from the training file with ids in order of first appearance;
batches of equal-length sentences (:mod:`benchmarks.parity.batches`), a new random order every
epoch, inner-loop batches drawn with replacement; the paper's initialisation (U(-0.01, 0.01), word
embeddings U(-0.1, 0.1)); SGD lr 1.0; clipping at 5; window 15 and at most 99 inner steps (the
reference's ``while sub_iter < 100`` from 1); ``MIPlateau()``; ``LRDecayOnPlateau(patience=2,
min_epoch=15)`` restoring the best validation model before the test. Test KL, MI and AU are computed
on the test file's equal-length batches of ``batch_size`` (the MI estimator depends on the batch),
IW-NLL with ``iw_samples`` samples drawn 100 at a time.

Not matched (the library's documented behaviour): inner and decoder steps clip the gradient norm of
the network being updated, not the joint norm (unless ``spec.ours_clip`` asks for the paper's rule,
:mod:`benchmarks.parity.clipping`); the inner loop's window loss is averaged per sentence,
not per word; the decoder's last word id gets a gradient (the reference's ``padding_idx=-1`` freezes
that row); active units count variances ``> 0.01`` (the reference: ``>=``).

Run one spec in its own process: ``python -m benchmarks.parity.ours SPEC.json OUT.json``.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

from aggressive_vi import (AggressiveTrainer, ConstantKL, Engine, LinearKLAnnealing, LRDecayOnPlateau, MIPlateau,
                           estimators)
from examples.text.corpus import TextDataset, Vocab, count_predicted_tokens, read_corpus
from examples.text.experiment import build_vae, json_safe
from examples.text.presets import Preset

from ..core.side_by_side import ours_parser, run_spec_file
from .batches import RandomBatches, ShuffledBatches, equal_length_batches
from .clipping import joint_clip_backward
from .spec import IW_CHUNK, RunSpec

__all__ = ["run_ours", "build_vocab", "MAX_INNER_STEPS", "WINDOW", "main"]

WINDOW = 15
MAX_INNER_STEPS = 99  # the reference's loop: sub_iter from 1 while sub_iter < 100
CLIP = 5.0
LR = 1.0


def build_vocab(train_sentences: Sequence[Sequence[str]]) -> Vocab:
    """Every training word, ids in order of first appearance after the 4 specials (the reference's)."""
    return Vocab(tok for sent in train_sentences for tok in sent)


def _preset(spec: RunSpec) -> Preset:
    return Preset(embed_dim=spec.embed_dim, hidden_dim=spec.hidden_dim, latent_dim=spec.latent_dim,
                  batch_size=spec.batch_size, max_vocab=None, lr=LR, clip_grad_norm=CLIP,
                  dropout_in=spec.dropout, dropout_out=spec.dropout, window=WINDOW,
                  max_inner_steps=MAX_INNER_STEPS, epochs=spec.epochs, iw_samples=spec.iw_samples,
                  iw_chunk=IW_CHUNK, eval_batch_size=spec.batch_size)


def run_ours(spec: RunSpec, *, threads: Optional[int] = 1) -> Dict[str, Any]:
    """Train and test one spec; returns the same fields as the reference side's result:
    ``metrics`` (test ``kl``, ``mi``, ``au``, ``iw_nll``, ``iw_ppl``, ``neg_elbo``, ``ppl``),
    ``train_seconds`` (``fit``, per-epoch validation included), ``iw_seconds``, ``aggressive_epochs``,
    ``epochs_run``, ``train_size``, ``vocab_size``, ``val_mi`` (per epoch)."""
    spec.check_files()
    if threads:
        torch.set_num_threads(threads)
    corpora = {split: read_corpus(path) for split, path in spec.files().items()}
    vocab = build_vocab(corpora["train"].sentences)
    batches = {split: equal_length_batches(TextDataset(c, vocab).ids, spec.batch_size)
               for split, c in corpora.items()}
    preset = _preset(spec)
    torch.manual_seed(spec.seed)
    vae = build_vae(preset, len(vocab))
    enc_opt = torch.optim.SGD(vae.encoder.parameters(), lr=LR, momentum=0.0)
    dec_opt = torch.optim.SGD(vae.decoder.parameters(), lr=LR, momentum=0.0)
    decay = LRDecayOnPlateau(patience=preset.decay_patience, factor=preset.decay_factor,
                             min_epoch=preset.decay_min_epoch, max_decays=preset.max_decays,
                             compare_to="previous", restore_best=True)
    extra: Dict[str, Any] = {"clip_scope": "joint" if spec.ours_clip == "joint" else "network"}
    if spec.ours_clip == "inner-joint":
        extra["engine"] = Engine(backward=joint_clip_backward(vae, CLIP))
    kl_schedule = (LinearKLAnnealing(start=spec.kl_start, warmup_epochs=spec.warm_up) if spec.annealed
                   else ConstantKL(1.0))
    trainer = AggressiveTrainer(vae, enc_opt, dec_opt, stopping=MIPlateau(), kl_schedule=kl_schedule,
                          aggressive=spec.aggressive, window=WINDOW, max_inner_steps=MAX_INNER_STEPS,
                          clip_grad_norm=CLIP, callbacks=[decay], **extra)
    train = ShuffledBatches(batches["train"], seed=spec.seed)
    inner = RandomBatches(batches["train"], seed=spec.seed + 1)
    start = time.perf_counter()
    history = trainer.fit(train, val_loader=batches["valid"], epochs=spec.epochs, inner_loader=inner)
    train_seconds = time.perf_counter() - start
    stats = estimators.summary(vae, batches["test"])
    t0 = time.perf_counter()
    iw = estimators.iw_nll(vae, batches["test"], n_samples=spec.iw_samples, chunk_size=IW_CHUNK,
                           count_tokens=lambda x: count_predicted_tokens(x, Vocab.pad_id))
    iw_seconds = time.perf_counter() - t0
    n_tokens = sum(int(count_predicted_tokens(x, Vocab.pad_id).sum()) for x in batches["test"])
    neg_elbo = -stats["elbo"]
    metrics = {"neg_elbo": neg_elbo, "kl": stats["kl"], "mi": stats["mi"], "reconstruction": stats["reconstruction"],
               "ppl": float(torch.tensor(neg_elbo * stats["n_examples"] / n_tokens).exp()), "au": stats["au"],
               "iw_nll": iw.nll, "iw_ppl": iw.perplexity}
    records: List[Any] = list(history)
    return json_safe({
        "metrics": metrics, "train_seconds": train_seconds, "iw_seconds": iw_seconds,
        "aggressive_epochs": sum(bool(r.aggressive) for r in records), "epochs_run": len(records),
        "val_mi": [r.val_mi for r in records], "kl_weight": [r.kl_weight for r in records],
        "val_neg_elbo": [None if r.val_elbo is None else -r.val_elbo for r in records], "train_size": len(corpora["train"]), "vocab_size": len(vocab),
        "best_epoch": decay.best_epoch, "train_batches": len(batches["train"]),
    })


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = ours_parser("python -m benchmarks.parity.ours",
                         "Run our side of one side-by-side spec (JSON) and write its result.",
                         "a JSON file holding a RunSpec's fields")
    args = parser.parse_args(argv)
    return run_spec_file(args.spec, args.out, RunSpec.from_dict, lambda spec: run_ours(spec, threads=args.threads),
                         {"wall_seconds": time.perf_counter})


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
