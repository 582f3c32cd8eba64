"""Tests for examples.text.corpus and examples.text.tokens: reading, vocabulary, padding, bucketing."""
import gzip

import pytest
import torch

from examples.text.corpus import (
    BucketBatchSampler, TextDataset, Vocab, count_predicted_tokens, make_loader, pad_batch, read_corpus,
    resolve_splits,
)
from examples.text.tokens import detokenize, tokenize


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_corpus_drops_empty_lines_and_counts_them(tmp_path):
    path = _write(tmp_path, "a.txt", "the cat sat\n\n   \nthe dog\n")
    corpus = read_corpus(path)
    assert corpus.sentences == [["the", "cat", "sat"], ["the", "dog"]]
    assert corpus.dropped == 2 and corpus.labels is None


def test_read_corpus_labels_and_max_length(tmp_path):
    path = _write(tmp_path, "y.txt", "4\tgreat food here\n1\tawful\n\n2\ta b c d e f\n")
    corpus = read_corpus(path, labels=True, max_length=5)
    assert corpus.sentences == [["great", "food", "here"], ["awful"]]
    assert corpus.labels == ["4", "1"]
    assert corpus.dropped == 2  # the empty line and the 6-token line
    with pytest.raises(ValueError, match="label<TAB>text"):
        read_corpus(_write(tmp_path, "bad.txt", "no tab here\n"), labels=True)


def test_read_corpus_gzip_and_missing_file(tmp_path):
    path = tmp_path / "c.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("hello world\n")
    assert read_corpus(path).sentences == [["hello", "world"]]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_corpus(tmp_path / "nope.txt")


def test_vocab_specials_cap_unknown_words_and_roundtrip(tmp_path):
    sents = [["a", "b", "a"], ["c", "a", "b"], ["d"]]
    vocab = Vocab.build(sents, max_size=6)  # 4 specials + the 2 most frequent
    assert vocab.itos[:4] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert vocab.itos[4:] == ["a", "b"]
    assert vocab.encode(["a", "c", "zebra"]) == [4, 3, 3]
    assert vocab.decode([1, 4, 5, 2, 4, 0]) == ["a", "b"]  # stops at </s>
    assert vocab.decode([4, 3], strip=False) == ["a", "<unk>"]
    vocab.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json").itos == vocab.itos
    with pytest.raises(ValueError, match="max_size"):
        Vocab.build(sents, max_size=3)


def test_pad_batch_and_predicted_token_count():
    x = pad_batch([[5, 6, 7], [8]])
    assert x.tolist() == [[1, 5, 6, 7, 2], [1, 8, 2, 0, 0]]
    assert count_predicted_tokens(x).tolist() == [4, 2]  # words + </s>


def test_bucket_widths_pad_to_the_smallest_width_that_holds_the_batch(tmp_path):
    assert pad_batch([[5, 6, 7], [8]], widths=[4, 8, 16]).shape == (2, 8)  # needs 5
    assert pad_batch([[5, 6]], widths=[4, 8]).tolist() == [[1, 5, 6, 2]]  # exactly 4
    assert pad_batch([[5] * 10], widths=[4, 8]).shape == (1, 12)  # wider than all: its own width
    path = _write(tmp_path, "w.txt", "a b c\nb\nc a\nzz yy\na\n")
    corpus = read_corpus(path)
    loader = make_loader(TextDataset(corpus, Vocab.build(corpus.sentences)), 2, shuffle=True,
                         bucket_widths=[6, 3], drop_last=True)
    batches = list(loader)
    assert len(batches) == len(loader) == 2  # the fifth sentence's short batch is dropped
    assert all(b.shape == (2, 6) or b.shape == (2, 3) for b in batches)


def test_bucket_sampler_covers_everything_once_and_groups_lengths():
    lengths = [(i * 7919) % 40 + 1 for i in range(1000)]
    sampler = BucketBatchSampler(lengths, 16, pool=10, seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert len(batches) == len(sampler) == 63
    # bucketing: within-batch length spread is much smaller than for random batches
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 10  # random batches of 16 from 1..40 spread ~ 35
    second = list(sampler)  # a new epoch gives a new order
    assert second != batches
    fixed = list(BucketBatchSampler(lengths, 16, shuffle=False))
    assert fixed == list(BucketBatchSampler(lengths, 16, shuffle=False))
    flat = [lengths[i] for b in fixed for i in b]
    assert flat == sorted(flat)


def test_make_loader_yields_padded_long_batches(tmp_path):
    path = _write(tmp_path, "t.txt", "a b c\nb\nc a\nzz yy\n")
    corpus = read_corpus(path)
    vocab = Vocab.build(corpus.sentences)
    loader = make_loader(TextDataset(corpus, vocab), 2, shuffle=False)
    batches = list(loader)
    assert all(b.dtype == torch.long and b.dim() == 2 for b in batches)
    assert sum(b.shape[0] for b in batches) == 4
    assert all(bool((b[:, 0] == vocab.bos_id).all()) for b in batches)
    assert int(sum((b == vocab.eos_id).sum() for b in batches)) == 4


def test_text_dataset_head_cuts_sentences_and_labels_and_leaves_the_original(tmp_path):
    path = _write(tmp_path, "y.txt", "4\tgreat food\n1\tawful\n2\tfine i guess\n")
    corpus = read_corpus(path, labels=True)
    full = TextDataset(corpus, Vocab.build(corpus.sentences))
    two = full.head(2)
    assert len(two) == 2 and [two[i] for i in range(2)] == [full[0], full[1]]
    assert two.labels == ["4", "1"] and two.vocab is full.vocab and two.lengths() == [2, 1]
    assert len(full) == 3 and full.labels == ["4", "1", "2"]  # the original is not cut
    assert len(full.head(10)) == 3 and len(full.head(0)) == 0
    unlabelled = TextDataset(read_corpus(_write(tmp_path, "t.txt", "a b\nc\n")), full.vocab)
    assert unlabelled.head(1).labels is None and len(unlabelled.head(1)) == 1
    assert list(make_loader(two, 2, shuffle=False))[0].shape == (2, 4)  # <s> great food </s>
    for bad in (-1, 1.5, True, None):
        with pytest.raises(ValueError, match="n must be"):
            full.head(bad)


def test_resolve_splits(tmp_path):
    bundled = resolve_splits("bundled")
    assert all(p.is_file() for p in bundled.values())
    for split in ("train", "valid", "test"):
        _write(tmp_path, f"yahoo.{split}.txt", "x\n")
    assert resolve_splits(tmp_path / "yahoo")["valid"].name == "yahoo.valid.txt"
    assert resolve_splits(tmp_path)["test"].name == "yahoo.test.txt"
    with pytest.raises(FileNotFoundError, match="--data"):
        resolve_splits(tmp_path / "yelp")


def test_bundled_corpus_is_small_and_tokenised():
    files = resolve_splits("bundled")
    assert sum(p.stat().st_size for p in files.values()) < 3_000_000
    valid = read_corpus(files["valid"])
    assert len(valid) == 1000 and valid.dropped == 0
    assert all(tok == tok.lower() for sent in valid.sentences[:50] for tok in sent)


def test_tokenize_detokenize():
    text = 'He said, "Don\'t panic!" (quietly) -- and left...'
    tokens = tokenize(text)
    assert tokens == ["he", "said", ",", '"', "don't", "panic", "!", '"', "(", "quietly", ")", "--",
                      "and", "left", "..."]
    assert detokenize(tokens) == 'he said, "don\'t panic!" (quietly) -- and left...'
    assert tokenize("caf\u00e9 \u201cquoted\u201d") == ["cafe", '"', "quoted", '"']


def _build_corpus_module():
    import importlib.util
    from examples.text.corpus import BUNDLED_DIR
    spec = importlib.util.spec_from_file_location("build_corpus", BUNDLED_DIR / "build_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_corpus_cleans_filters_and_cuts(tmp_path):
    bc = _build_corpus_module()
    assert bc.strip_overstrike("a *____\x08\x08\x08\x08real* b\x08bold") == "a *real* bold"
    assert bc.looks_like_art("  /\\_/\\\n ( o.o )\n  > ^ <")
    assert not bc.looks_like_art("The early bird gets the worm.\n\t\t-- Proverb")
    src = tmp_path / "fortunes"
    src.mkdir()
    entries = [f"Saying number {i} is wise." for i in range(30)]
    (src / "wisdom").write_text("\n%\n".join(entries + [entries[0], "x " * 80]) + "\n")
    (src / "wisdom.dat").write_bytes(b"\x00\x01")
    (src / "art").write_text("Not read at all, whatever it holds.\n")
    splits = bc.build(src, max_tokens=50, n_valid=5, n_test=5, seed=0)
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [20, 5, 5]  # duplicate + long dropped
    everything = splits["train"] + splits["valid"] + splits["test"]
    assert sorted(everything) == sorted(" ".join(tokenize(e)) for e in entries)
    assert bc.build(src, max_tokens=50, n_valid=5, n_test=5, seed=0) == splits  # deterministic
    digest = bc.write_gz(tmp_path / "a.gz", splits["train"])
    assert digest == bc.write_gz(tmp_path / "b.gz", splits["train"])  # byte-identical
