"""Glue for the text CLI: data splits, model construction, evaluation table, the exported model."""
from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch.utils.data import DataLoader

from aggressive_vi import VAE, estimators
from aggressive_vi import checkpoint as library_checkpoint

from .corpus import (TextDataset, Vocab, count_predicted_tokens, make_loader, pad_batch, read_corpus,
                     resolve_splits)
from .models import LSTMDecoder, LSTMEncoder, init_paper_
from .presets import Preset

__all__ = ["TextData", "load_data", "build_vae", "evaluate", "format_table", "save_model",
           "load_model", "json_safe", "sentences_to_batch", "Interrupted", "resume_command", "MODEL_FORMAT",
           "MODEL_FILE"]

MODEL_FORMAT = "examples.text/1"  # what save_model writes (not the library's trainer checkpoint)
MODEL_FILE = "model.pt"
SPLITS = ("train", "valid", "test")


@dataclass
class TextData:
    vocab: Vocab
    splits: Dict[str, TextDataset]
    source: str

    def loader(self, split: str, batch_size: int, *, shuffle: bool, seed: int = 0,
               pin_memory: bool = False, bucket_widths: Optional[Sequence[int]] = None,
               drop_last: bool = False) -> DataLoader:
        return make_loader(self.splits[split], batch_size, shuffle=shuffle, seed=seed, pin_memory=pin_memory,
                           bucket_widths=bucket_widths, drop_last=drop_last)


def load_data(data: Union[str, Path], *, max_vocab: Optional[int] = None, vocab: Optional[Vocab] = None,
              labels: bool = False, max_length: Optional[int] = None) -> TextData:
    """Read the three splits of ``data`` (``bundled``, a directory or a file prefix; see
    :func:`examples.text.corpus.resolve_splits`) and build the vocabulary from the training split
    (or use ``vocab``, e.g. a checkpoint's). The paper's synthetic data is a directory written by
    ``python -m examples.synthetic --write-data DIR``."""
    if str(data) == "synthetic":
        raise ValueError("--data synthetic: write the synthetic splits first with "
                         "'python -m examples.synthetic --write-data DIR', then pass --data DIR")
    files = resolve_splits(data)
    corpora = {s: read_corpus(files[s], labels=labels, max_length=max_length) for s in SPLITS}
    for split, corpus in corpora.items():
        if len(corpus) == 0:
            raise ValueError(f"--data {data}: the {split} split has no sentences")
    if vocab is None:
        vocab = Vocab.build(corpora["train"].sentences, max_size=max_vocab)
    return TextData(vocab, {s: TextDataset(c, vocab) for s, c in corpora.items()}, str(data))


def build_vae(preset: Preset, vocab_size: int, pad_id: int = Vocab.pad_id) -> VAE:
    """The paper's LSTM VAE at ``preset``'s sizes, with the paper's initialisation."""
    encoder = LSTMEncoder(vocab_size, preset.embed_dim, preset.hidden_dim, preset.latent_dim, pad_id=pad_id)
    decoder = LSTMDecoder(vocab_size, preset.embed_dim, preset.hidden_dim, preset.latent_dim, pad_id=pad_id,
                          dropout_in=preset.dropout_in, dropout_out=preset.dropout_out)
    init_paper_(encoder, decoder, scale=preset.init_scale, embed_scale=preset.embed_init_scale)
    return VAE(encoder, decoder)


def evaluate(vae: VAE, loader: DataLoader, *, iw_samples: int, iw_chunk: int,
             au_threshold: float = 0.01) -> Dict[str, Any]:
    """IW-NLL (nats per sentence), PPL (per predicted token: words + ``</s>``), negative ELBO, KL,
    MI (nats; the paper's per-minibatch estimator, so it depends on the batch size) and AU."""
    iw = estimators.iw_nll(vae, loader, n_samples=iw_samples, chunk_size=min(iw_chunk, iw_samples),
                           count_tokens=lambda x: count_predicted_tokens(x, Vocab.pad_id))
    stats = estimators.summary(vae, loader, au_threshold=au_threshold)
    return {
        "iw_nll": iw.nll, "ppl": iw.perplexity, "neg_elbo": -stats["elbo"], "reconstruction": stats["reconstruction"],
        "kl": stats["kl"], "mi": stats["mi"], "au": stats["au"], "n_sentences": iw.n_examples,
        "n_tokens": iw.n_tokens, "iw_samples": iw_samples,
    }


def format_table(rows: Dict[str, Dict[str, Any]]) -> str:
    """A plain-text table with one row per run/split: IW-NLL, PPL, -ELBO, KL, MI, AU."""
    cols = [("IW-NLL", "iw_nll", "{:.2f}"), ("PPL", "ppl", "{:.2f}"), ("-ELBO", "neg_elbo", "{:.2f}"),
            ("KL", "kl", "{:.3f}"), ("MI", "mi", "{:.3f}"), ("AU", "au", "{:d}")]
    width = max([len("run")] + [len(name) for name in rows]) + 2
    lines = ["run".ljust(width) + "".join(f"{c[0]:>10}" for c in cols)]
    for name, metrics in rows.items():
        cells = []
        for _, key, fmt in cols:
            value = metrics.get(key)
            cells.append(f"{'-' if value is None else fmt.format(value):>10}")
        lines.append(name.ljust(width) + "".join(cells))
    return "\n".join(lines)


def save_model(path: Union[str, Path], vae: VAE, vocab: Vocab, preset: Preset, extra: Dict[str, Any]) -> Path:
    """Export the trained model for ``evaluate`` / ``generate``: its weights (on the CPU) with what
    rebuilds it (vocabulary, preset) and ``extra`` (options, data, best epoch), written atomically.

    Not a training checkpoint: ``train --resume`` continues from the library's checkpoints in
    ``OUT/checkpoints`` (:class:`aggressive_vi.Checkpoint`). Loads with ``weights_only=True``.
    """
    path = Path(path)
    weights = {k: v.detach().cpu() for k, v in vae.state_dict().items()}
    payload = {"format": MODEL_FORMAT, "model": weights, "vocab": vocab.to_list(),
               "preset": preset.to_dict(), **extra}
    library_checkpoint.save_checkpoint(payload, path)  # the library's atomic write (temp, fsync, rename)
    return path


def load_model(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu"):
    """-> ``(vae, vocab, preset, saved dict)`` from what :func:`save_model` wrote; ``path`` may be
    the run directory (its ``model.pt``). The model is on ``map_location``, in eval mode."""
    path = Path(path)
    if path.is_dir():
        if not (path / MODEL_FILE).is_file() and (path / "checkpoints").is_dir():
            raise FileNotFoundError(f"--checkpoint {path}: no {MODEL_FILE} yet (train writes it when it "
                                    f"finishes); {path}/checkpoints holds an unfinished run: continue it "
                                    "with `train ... --resume`")
        path = path / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint {path}: no such file (train writes OUT/{MODEL_FILE})")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
        found = saved.get("format") if isinstance(saved, dict) else type(saved).__name__
        raise ValueError(f"--checkpoint {path}: format {found!r}, expected {MODEL_FORMAT!r} "
                         f"(the {MODEL_FILE} that train writes)")
    vocab = Vocab.from_list(saved["vocab"])
    preset = Preset.from_dict(saved["preset"])
    vae = build_vae(preset, len(vocab))
    vae.load_state_dict(saved["model"])
    return vae.to(map_location).eval(), vocab, preset, saved


def json_safe(value: Any) -> Any:
    """Replace non-finite floats with ``None`` for strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def sentences_to_batch(lines: List[List[str]], vocab: Vocab) -> torch.Tensor:
    """Token lists -> padded ``LongTensor [n, max_len + 2]`` (unknown words become ``<unk>``)."""
    return pad_batch([vocab.encode(tokens) for tokens in lines], vocab.pad_id, vocab.bos_id, vocab.eos_id)


class Interrupted(KeyboardInterrupt):
    """A command stopped by Ctrl-C (SIGINT) or SIGTERM; ``saved`` says what it saved first
    (``"checkpoint PATH"``), ``None`` when nothing."""

    def __init__(self, signal_name: str, saved: Optional[str]) -> None:
        super().__init__(f"interrupted by {signal_name}")
        self.signal_name = signal_name
        self.saved = saved

    @property
    def exit_code(self) -> int:
        """The shells' convention: 128 + the signal's number (130 after SIGINT, 143 after SIGTERM)."""
        return 143 if self.signal_name == "SIGTERM" else 130

    def line(self, argv: Sequence[str]) -> str:
        """One line for the terminal: what was saved and the command (``argv``: this one's
        arguments) that resumes from it."""
        if self.saved is None:
            return str(self)
        return f"{self}: {self.saved}; resume with: {resume_command(argv)}"


def resume_command(argv: Sequence[str]) -> str:
    """``python -m examples.text ARGV --resume`` (``--resume`` added once), quoted for a shell."""
    resume = list(argv) if "--resume" in argv else [*argv, "--resume"]
    return "python -m examples.text " + shlex.join(resume)
