"""The data files both sides read: plain-text copies of a corpus's splits, cut to a size.

The reference opens its files with ``open()`` (no ``.gz``), so :func:`prepare_splits` writes plain
text: the first ``max_sentences[split]`` non-empty lines of each split (optionally only those of at most
``max_length`` tokens), with whitespace normalised to single spaces; with ``max_vocab``, words outside
the training split's ``max_vocab`` most frequent (the text example's :meth:`Vocab.build` rule, specials
counted) are written as ``<unk>``, so that the reference, which keeps every training word, trains on
the example's vocabulary.
"""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Union

from examples.text.corpus import UNK, Vocab, resolve_splits

__all__ = ["prepare_splits", "SPLITS"]

SPLITS = ("train", "valid", "test")
PathLike = Union[str, Path]


def _lines(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.split():  # both sides drop empty lines; drop them here so cuts count sentences
                yield " ".join(line.split()) + "\n"


def prepare_splits(source: PathLike, out_dir: PathLike,
                   max_sentences: Optional[Mapping[str, Optional[int]]] = None, *,
                   max_length: Optional[int] = None, max_vocab: Optional[int] = None) -> Dict[str, Path]:
    """Write ``out_dir/{train,valid,test}.txt`` from ``source``.

    Args:
        source: ``"bundled"`` (the fortune corpus in ``examples/text/data``), a directory holding one
            file per split name (``*train*.txt[.gz]``...) or a prefix (``PREFIX.train.txt``...); see
            :func:`examples.text.corpus.resolve_splits`.
        out_dir: created if missing; files there are replaced.
        max_sentences: per split, keep the first N sentences (``None``: all).
        max_length: keep only sentences of at most this many tokens (before the cut): fewer
            distinct lengths mean fewer, fuller equal-length batches and shorter sequences.
        max_vocab: keep the training split's ``max_vocab`` most frequent words (specials included, as
            ``examples.text``'s ``--max-vocab``) and write every other word as ``<unk>`` in all splits.

    Returns:
        ``{"train": path, "valid": path, "test": path}``.

    Raises:
        ValueError: a cut below 2 sentences, or a split left empty.
    """
    limits = dict(max_sentences or {})
    unknown = set(limits) - set(SPLITS)
    if unknown:
        raise ValueError(f"max_sentences keys must be among {SPLITS}, got {sorted(unknown)}")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise ValueError(f"max_length must be None or a positive integer, got {max_length!r}")
    if max_vocab is not None and (isinstance(max_vocab, bool) or not isinstance(max_vocab, int) or max_vocab < 5):
        raise ValueError(f"max_vocab must be None or an integer >= 5 (4 specials and a word), got {max_vocab!r}")
    found = resolve_splits(source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kept_by_split: Dict[str, List[str]] = {}
    for split in SPLITS:
        limit = limits.get(split)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 2):
            raise ValueError(f"max_sentences[{split!r}] must be None or an integer >= 2, got {limit!r}")
        kept = []
        for line in _lines(Path(found[split])):
            if limit is not None and len(kept) >= limit:
                break
            if max_length is not None and len(line.split()) > max_length:
                continue
            kept.append(line)
        if not kept:
            raise ValueError(f"{found[split]}: the {split} split has no sentences")
        kept_by_split[split] = kept
    if max_vocab is not None:
        vocab = Vocab.build((line.split() for line in kept_by_split["train"]), max_size=max_vocab)
        kept_by_split = {split: [" ".join(w if w in vocab else UNK for w in line.split()) + "\n" for line in lines]
                         for split, lines in kept_by_split.items()}
    paths: Dict[str, Path] = {}
    for split, kept in kept_by_split.items():
        path = out / f"{split}.txt"
        path.write_text("".join(kept), encoding="utf-8")
        paths[split] = path
    return paths
