"""Tests for examples.text.generation: exactness of beam search, and all decoders on a tiny trained model."""
import itertools

import pytest
import torch

from examples.text.corpus import Vocab, pad_batch
from examples.text.generation import (
    NEVER, beam_search, decode, from_prior, greedy_decode, interpolate, reconstruct, sample_decode, to_text,
)
from examples.text.models import LSTMDecoder, LSTMEncoder

EOS = Vocab.eos_id


def _sequence_logp(dec, z, seq):
    x = torch.tensor([[Vocab.bos_id, *seq, EOS]])
    return dec.log_prob(x, z.view(1, 1, -1)).item()


def test_beam_search_with_exhaustive_width_finds_the_best_sentence():
    torch.manual_seed(0)
    vocab_size, max_len = 5, 3
    dec = LSTMDecoder(vocab_size, 4, 6, 2, dropout_in=0.0, dropout_out=0.0).eval()
    with torch.no_grad():
        dec.pred_linear.weight.mul_(30)  # make the distribution peaked and the choice non-trivial
    z = torch.randn(3, 2)
    words = [w for w in range(vocab_size) if w not in (EOS, *NEVER)]  # pad and <s> are never emitted
    found = beam_search(dec, z, beam_size=vocab_size ** max_len, max_len=max_len)
    for row in range(3):
        candidates = [list(c) for m in range(max_len) for c in itertools.product(words, repeat=m)]
        scores = {tuple(c): _sequence_logp(dec, z[row], c) for c in candidates}
        best = max(scores, key=scores.get)
        assert scores[tuple(found[row])] == pytest.approx(scores[best], abs=1e-5)


def test_beam_of_width_one_is_greedy():
    torch.manual_seed(1)
    dec = LSTMDecoder(9, 5, 7, 3, dropout_in=0.0, dropout_out=0.0)
    with torch.no_grad():
        dec.pred_linear.weight.mul_(10)
    z = torch.randn(6, 3)
    assert beam_search(dec, z, beam_size=1, max_len=12) == greedy_decode(dec, z, max_len=12)


def test_decoders_leave_training_mode_and_validate_input():
    dec = LSTMDecoder(9, 5, 7, 3)
    dec.train()
    greedy_decode(dec, torch.randn(2, 3), max_len=3)
    assert dec.training
    with pytest.raises(ValueError, match="z must have shape"):
        greedy_decode(dec, torch.randn(2, 4))
    with pytest.raises(ValueError, match="strategy"):
        decode(dec, torch.randn(2, 3), "top-k")
    with pytest.raises(ValueError, match="temperature"):
        sample_decode(dec, torch.randn(2, 3), temperature=0.0)


@pytest.fixture(scope="module")
def tiny_trained():
    """An encoder/decoder pair trained (plain reconstruction + small KL) to memorise two sentences."""
    torch.manual_seed(0)
    vocab = Vocab(["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "far", "away"])
    sents = [["the", "cat", "sat", "on", "the", "mat"], ["a", "dog", "ran", "far", "away"]]
    x = pad_batch([vocab.encode(s) for s in sents])
    enc = LSTMEncoder(len(vocab), 16, 32, 2)
    dec = LSTMDecoder(len(vocab), 16, 32, 2, dropout_in=0.0, dropout_out=0.0)
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=0.02)
    for _ in range(80):
        mean, logvar = enc(x)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - logvar - 1).sum(-1)
        loss = (-dec.log_prob(x, z.unsqueeze(1)).squeeze(1) + 0.1 * kl).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return vocab, sents, x, enc, dec


def test_all_strategies_reconstruct_a_memorised_sentence(tiny_trained):
    vocab, sents, x, enc, dec = tiny_trained
    expected = [" ".join(s) for s in sents]
    for strategy in ("greedy", "beam"):
        out = reconstruct(enc, dec, x, strategy, beam_size=3, max_len=20)
        assert [to_text(vocab, ids) for ids in out] == expected
    gen = torch.Generator().manual_seed(0)
    out = reconstruct(enc, dec, x, "sample", temperature=0.05, max_len=20, generator=gen)
    assert [to_text(vocab, ids) for ids in out] == expected


def test_interpolation_goes_from_one_sentence_to_the_other(tiny_trained):
    vocab, sents, x, enc, dec = tiny_trained
    out = interpolate(enc, dec, x[:1], x[1:], steps=5, max_len=20)
    assert len(out) == 5
    assert to_text(vocab, out[0]) == " ".join(sents[0])
    assert to_text(vocab, out[-1]) == " ".join(sents[1])


def test_prior_samples_are_sentences_of_known_words(tiny_trained):
    vocab, _, _, _, dec = tiny_trained
    gen = torch.Generator().manual_seed(0)
    out = from_prior(dec, 8, "sample", generator=gen, max_len=15)
    assert len(out) == 8
    assert all(len(ids) <= 15 and all(i != EOS for i in ids) for ids in out)
    gen2 = torch.Generator().manual_seed(0)
    assert from_prior(dec, 8, "sample", generator=gen2, max_len=15) == out  # reproducible


def test_banned_tokens_are_never_emitted():
    torch.manual_seed(2)
    dec = LSTMDecoder(6, 5, 7, 2, dropout_in=0.0, dropout_out=0.0)
    with torch.no_grad():
        dec.pred_linear.weight.zero_()
        dec.pred_linear.weight[Vocab.unk_id] = 5.0  # <unk> dominates every step
    dec.lstm.bias_ih_l0.data.fill_(1.0)
    z = torch.randn(4, 2)
    assert all(set(ids) == {Vocab.unk_id} for ids in greedy_decode(dec, z, max_len=5))
    banned = (*NEVER, Vocab.unk_id)
    for strategy in ("greedy", "beam", "sample"):
        gen = torch.Generator().manual_seed(0)
        out = decode(dec, z, strategy, beam_size=3, max_len=5, banned=banned, generator=gen)
        assert all(not set(ids) & set(banned) for ids in out), strategy
