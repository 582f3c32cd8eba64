"""Text corpora in the paper's format: vocabulary, file reader, length-bucketed batches.

Files hold one sentence (or document) per line, whitespace-separated tokens, optionally preceded by
``label<TAB>`` (Yelp); plain or gzip-compressed (``.gz``). Empty lines are dropped and counted.
A batch is a ``LongTensor [batch, max_len + 2]``: ``<s>``, the token ids, ``</s>``, then ``<pad>``.
"""
from __future__ import annotations

import copy
import gzip
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Union

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = [
    "PAD", "BOS", "EOS", "UNK", "Vocab", "Corpus", "read_corpus", "TextDataset", "pad_batch",
    "BucketBatchSampler", "make_loader", "count_predicted_tokens", "BUNDLED_DIR", "resolve_splits",
]

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3 as in the paper's code
BUNDLED_DIR = Path(__file__).resolve().parent / "data"
PathLike = Union[str, Path]


class Vocab:
    """Token <-> id map with ``<pad>`` = 0, ``<s>`` = 1, ``</s>`` = 2, ``<unk>`` = 3."""

    def __init__(self, tokens: Iterable[str] = ()):
        self.itos: List[str] = list(SPECIALS)
        self.stoi: Dict[str, int] = {tok: i for i, tok in enumerate(self.itos)}
        for tok in tokens:
            if tok not in self.stoi:
                self.stoi[tok] = len(self.itos)
                self.itos.append(tok)

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], *, max_size: Optional[int] = None,
              min_freq: int = 1) -> "Vocab":
        """The ``max_size`` most frequent tokens (specials included in the count) seen at least
        ``min_freq`` times; ties broken alphabetically so the result is deterministic."""
        if max_size is not None and max_size <= len(SPECIALS):
            raise ValueError(f"max_size must exceed the {len(SPECIALS)} special tokens, got {max_size}")
        counts = Counter(tok for sent in sentences for tok in sent if tok not in SPECIALS)
        ranked = sorted((tok for tok, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            ranked = ranked[: max_size - len(SPECIALS)]
        return cls(ranked)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __getitem__(self, token: str) -> int:
        return self.stoi.get(token, self.unk_id)

    def encode(self, tokens: Sequence[str]) -> List[int]:
        """Token strings -> ids; unknown tokens map to ``<unk>``."""
        return [self.stoi.get(tok, self.unk_id) for tok in tokens]

    def decode(self, ids: Iterable[int], *, strip: bool = True) -> List[str]:
        """Ids -> tokens. With ``strip``: drop ``<s>``/``<pad>`` and stop at the first ``</s>``."""
        out = []
        for i in ids:
            i = int(i)
            if strip and i == self.eos_id:
                break
            if strip and i in (self.pad_id, self.bos_id):
                continue
            out.append(self.itos[i])
        return out

    def to_list(self) -> List[str]:
        return list(self.itos)

    @classmethod
    def from_list(cls, itos: Sequence[str]) -> "Vocab":
        if tuple(itos[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a saved vocabulary must start with {SPECIALS}, got {tuple(itos[:4])}")
        return cls(itos[len(SPECIALS):])

    def save(self, path: PathLike) -> None:
        Path(path).write_text(json.dumps(self.itos))

    @classmethod
    def load(cls, path: PathLike) -> "Vocab":
        return cls.from_list(json.loads(Path(path).read_text()))


@dataclass
class Corpus:
    """Tokenised lines of one file. ``labels`` is ``None`` unless read with ``labels=True``."""

    sentences: List[List[str]]
    labels: Optional[List[str]]
    dropped: int  # empty lines and lines over max_length

    def __len__(self) -> int:
        return len(self.sentences)


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def read_corpus(path: PathLike, *, labels: bool = False, max_length: Optional[int] = None) -> Corpus:
    """Read one sentence per line (whitespace tokens), optionally ``label<TAB>text``.

    Args:
        path: text file, plain or ``.gz``.
        labels: lines are ``label<TAB>text``; a line without a tab raises ``ValueError``.
        max_length: drop sentences with more tokens than this (counted in ``Corpus.dropped``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file {path} does not exist")
    sentences: List[List[str]] = []
    label_list: Optional[List[str]] = [] if labels else None
    dropped = 0
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\n")
            label = None
            if labels:
                if "\t" not in line:
                    if not line.strip():
                        dropped += 1
                        continue
                    raise ValueError(f"{path}:{lineno}: labels=True expects 'label<TAB>text', got {line[:60]!r}")
                label, line = line.split("\t", 1)
            tokens = line.split()
            if not tokens or (max_length is not None and len(tokens) > max_length):
                dropped += 1
                continue
            sentences.append(tokens)
            if label_list is not None:
                label_list.append(label.strip())
    return Corpus(sentences, label_list, dropped)


class TextDataset(Dataset):
    """Sentences as id lists (without ``<s>``/``</s>``); item ``i`` is ``list[int]``."""

    def __init__(self, corpus: Corpus, vocab: Vocab):
        self.ids = [vocab.encode(sent) for sent in corpus.sentences]
        self.labels = corpus.labels
        self.vocab = vocab

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> List[int]:
        return self.ids[index]

    def lengths(self) -> List[int]:
        return [len(s) for s in self.ids]

    def head(self, n: int) -> "TextDataset":
        """The first ``n`` sentences (all of them when ``n >= len(self)``) as a new dataset with the
        same vocabulary; ``labels``, when present, are cut alike. ``self`` is left unchanged."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"head: n must be an integer >= 0, got {n!r}")
        out = copy.copy(self)
        out.ids = self.ids[:n]
        out.labels = None if self.labels is None else self.labels[:n]
        return out


def bucket_width(width: int, widths: Optional[Sequence[int]]) -> int:
    """The smallest of ``widths`` that holds ``width`` positions (``width`` itself when none does, or
    when ``widths`` is empty/None): padding batches to a few widths gives a captured inner step
    (``inner_step="cuda_graph"``) a few static shapes."""
    fitting = [w for w in (widths or ()) if w >= width]
    return min(fitting) if fitting else width


def pad_batch(sentences: Sequence[Sequence[int]], pad_id: int = 0, bos_id: int = 1, eos_id: int = 2,
              widths: Optional[Sequence[int]] = None) -> torch.Tensor:
    """``[[5, 6], [7]] -> [[<s>, 5, 6, </s>], [<s>, 7, </s>, <pad>]]`` as ``LongTensor [batch, width]``,
    ``width = max_len + 2`` or, with ``widths``, the smallest of them that holds it (more padding:
    the models ignore pad positions, so the log-likelihoods are the same)."""
    if len(sentences) == 0:
        raise ValueError("pad_batch needs at least one sentence")
    width = bucket_width(max(len(s) for s in sentences) + 2, widths)
    out = torch.full((len(sentences), width), pad_id, dtype=torch.long)
    for row, sent in enumerate(sentences):
        out[row, : len(sent) + 2] = torch.tensor([bos_id, *sent, eos_id], dtype=torch.long)
    return out


class BucketBatchSampler(Sampler[List[int]]):
    """Batches of similar length: shuffle, cut into pools of ``pool`` batches, sort each pool by
    length, cut it into batches, shuffle the batches. Without ``shuffle``: sorted by length, fixed.

    Each pass draws a new order from ``seed`` and an internal epoch counter (``set_epoch`` sets it).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, shuffle: bool = True,
                 pool: int = 50, seed: int = 0, drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths, self.batch_size, self.shuffle = list(lengths), batch_size, shuffle
        self.pool, self.seed, self.drop_last, self.epoch = pool, seed, drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self, order: List[int]) -> List[List[int]]:
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def __iter__(self) -> Iterator[List[int]]:
        index = list(range(len(self.lengths)))
        if not self.shuffle:
            index.sort(key=lambda i: self.lengths[i])
            yield from self._batches(index)
            return
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        rng.shuffle(index)
        span = self.pool * self.batch_size
        batches: List[List[int]] = []
        for start in range(0, len(index), span):
            chunk = sorted(index[start:start + span], key=lambda i: self.lengths[i])
            batches.extend(chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        rng.shuffle(batches)
        yield from batches

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def make_loader(dataset: TextDataset, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                pool: int = 50, pin_memory: bool = False, bucket_widths: Optional[Sequence[int]] = None,
                drop_last: bool = False) -> DataLoader:
    """A ``DataLoader`` of padded ``LongTensor [batch, seq_len]`` batches bucketed by length.

    Batches are made on the CPU; the trainer and the estimators move them to the model's device.
    ``pin_memory=True`` (for a CUDA model) puts them in page-locked memory, which makes that copy
    faster. ``bucket_widths`` pads every batch to the smallest of these widths that holds it and
    ``drop_last=True`` drops a short last batch: together they give a captured inner step a few
    static shapes."""
    vocab = dataset.vocab
    widths = sorted(bucket_widths) if bucket_widths else None
    sampler = BucketBatchSampler(dataset.lengths(), batch_size, shuffle=shuffle, seed=seed, pool=pool,
                                 drop_last=drop_last)
    return DataLoader(dataset, batch_sampler=sampler, pin_memory=pin_memory,
                      collate_fn=lambda sents: pad_batch(sents, vocab.pad_id, vocab.bos_id, vocab.eos_id, widths))


def count_predicted_tokens(x: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Tokens the decoder predicts per sentence: words + ``</s>`` (everything but ``<s>`` and pads).
    ``x: [batch, seq_len]`` -> ``[batch]``; the paper's perplexity divides by their sum."""
    return (x != pad_id).sum(dim=1) - 1


def resolve_splits(data: PathLike) -> Dict[str, Path]:
    """Find ``train``/``valid``/``test`` files for ``--data``.

    ``bundled`` -> the fortune corpus shipped in ``examples/text/data``; a directory -> the files in it
    whose names contain ``train``, ``valid`` and ``test``; otherwise a prefix such as
    ``datasets/yahoo_data/yahoo`` -> ``yahoo.train.txt``, ``yahoo.valid.txt``, ``yahoo.test.txt``.
    """
    if str(data) == "bundled":
        return {s: BUNDLED_DIR / f"fortunes.{s}.txt.gz" for s in ("train", "valid", "test")}
    path = Path(data)
    found: Dict[str, Path] = {}
    for split in ("train", "valid", "test"):
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if split in p.name and p.name.endswith((".txt", ".txt.gz")))
            if len(matches) != 1:
                raise FileNotFoundError(
                    f"--data {data}: expected exactly one file with '{split}' in its name ending in .txt "
                    f"or .txt.gz, found {[m.name for m in matches]}")
            found[split] = matches[0]
        else:
            candidates = [Path(f"{data}.{split}.txt"), Path(f"{data}.{split}.txt.gz")]
            existing = [c for c in candidates if c.is_file()]
            if not existing:
                raise FileNotFoundError(f"--data {data}: expected 'bundled', a directory, or a prefix with "
                                        f"{candidates[0]} (or .gz); not found")
            found[split] = existing[0]
    return found
