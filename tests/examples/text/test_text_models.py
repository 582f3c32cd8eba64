"""Tests for examples.text.models: shapes, padding, batching over samples, initialisation."""
import pytest
import torch
import torch.nn.functional as F

from examples.text.models import LSTMDecoder, LSTMEncoder, init_paper_

PAD, BOS, EOS = 0, 1, 2
V, E, H, NZ = 11, 6, 8, 3


def _batch():
    # three sentences of different lengths, right-padded
    return torch.tensor([
        [BOS, 4, 5, 6, 7, EOS],
        [BOS, 8, EOS, PAD, PAD, PAD],
        [BOS, 9, 10, EOS, PAD, PAD],
    ])


def _models(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    enc = LSTMEncoder(V, E, H, NZ, pad_id=PAD)
    dec = LSTMDecoder(V, E, H, NZ, pad_id=PAD, dropout_in=dropout, dropout_out=dropout)
    return enc, dec


def test_encoder_shapes_and_padding_invariance():
    enc, _ = _models()
    x = _batch()
    mean, logvar = enc(x)
    assert mean.shape == (3, NZ) and logvar.shape == (3, NZ)
    # each row alone, without padding, gives the same posterior parameters
    for i, n in enumerate([6, 3, 4]):
        m_i, lv_i = enc(x[i:i + 1, :n])
        torch.testing.assert_close(m_i[0], mean[i], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(lv_i[0], logvar[i], rtol=1e-5, atol=1e-6)
    # more padding changes nothing
    longer = torch.cat([x, torch.full((3, 4), PAD)], dim=1)
    torch.testing.assert_close(enc(longer)[0], mean, rtol=1e-5, atol=1e-6)


def test_encoder_rejects_bad_input():
    enc, _ = _models()
    with pytest.raises(ValueError, match="x must"):
        enc(torch.zeros(3, 4))  # float
    with pytest.raises(ValueError, match="only of padding"):
        enc(torch.tensor([[BOS, EOS], [PAD, PAD]]))


def test_log_prob_matches_per_sample_loop_and_manual_sum():
    enc, dec = _models()
    dec.eval()
    x = _batch()
    z = torch.randn(3, 5, NZ)
    lp = dec.log_prob(x, z)
    assert lp.shape == (3, 5)
    for s in range(5):
        torch.testing.assert_close(dec.log_prob(x, z[:, s:s + 1])[:, 0], lp[:, s], rtol=1e-5, atol=1e-5)
    # manual per-sentence, per-token sum through logits_step
    for i, n in enumerate([6, 3, 4]):
        for s in range(5):
            state, total = None, 0.0
            for t in range(n - 1):
                logits, state = dec.logits_step(x[i:i + 1, t], z[i:i + 1, s], state)
                total += torch.log_softmax(logits, -1)[0, x[i, t + 1]].item()
            assert abs(total - lp[i, s].item()) < 1e-4


def test_padding_does_not_leak_into_likelihood():
    _, dec = _models()
    dec.eval()
    x = _batch()
    z = torch.randn(3, 2, NZ)
    lp = dec.log_prob(x, z)
    longer = torch.cat([x, torch.full((3, 3), PAD)], dim=1)
    torch.testing.assert_close(dec.log_prob(longer, z), lp, rtol=1e-5, atol=1e-5)
    # a row alone, unpadded, has the same likelihood
    torch.testing.assert_close(dec.log_prob(x[1:2, :3], z[1:2]), lp[1:2], rtol=1e-5, atol=1e-5)
    assert torch.isfinite(lp).all() and (lp < 0).all()


def test_log_prob_of_one_token_is_the_softmax():
    torch.manual_seed(1)
    v = 4
    dec = LSTMDecoder(v, 5, 7, 2, pad_id=PAD, dropout_in=0.0, dropout_out=0.0).eval()
    z = torch.randn(1, 1, 2)
    xs = torch.tensor([[BOS, w] for w in range(1, v)])  # skip pad target (ignored by design)
    lp = dec.log_prob(xs, z.expand(len(xs), 1, 2))
    logits, _ = dec.logits_step(torch.tensor([BOS]), z[:, 0])
    expected = torch.log_softmax(logits, -1)[0, 1:]
    torch.testing.assert_close(lp[:, 0], expected, rtol=1e-5, atol=1e-6)


def test_log_prob_rejects_bad_z():
    _, dec = _models()
    with pytest.raises(ValueError, match="z must have shape"):
        dec.log_prob(_batch(), torch.randn(3, NZ))
    with pytest.raises(ValueError, match="z must have shape"):
        dec.log_prob(_batch(), torch.randn(2, 1, NZ))


def test_dropout_active_only_in_training():
    _, dec = _models(dropout=0.5)
    x, z = _batch(), torch.randn(3, 1, NZ)
    dec.train()
    a, b = dec.log_prob(x, z), dec.log_prob(x, z)
    assert not torch.allclose(a, b)
    dec.eval()
    torch.testing.assert_close(dec.log_prob(x, z), dec.log_prob(x, z))


def test_gradients_reach_encoder_through_z():
    enc, dec = _models()
    x = _batch()
    mean, logvar = enc(x)
    z = (mean + torch.randn_like(mean) * (0.5 * logvar).exp()).unsqueeze(1)
    dec.log_prob(x, z).sum().backward()
    assert enc.lstm.weight_hh_l0.grad is not None and enc.lstm.weight_hh_l0.grad.abs().sum() > 0


def test_init_paper():
    enc, dec = _models()
    init_paper_(enc, dec)
    for module in (enc, dec):
        for name, p in module.named_parameters():
            bound = 0.1 if name.startswith("embed") else 0.01
            assert p.abs().max() <= bound
            assert p.abs().max() > bound / 2  # actually drawn at that scale


def test_extra_padding_to_a_bucket_width_changes_no_likelihood():
    from examples.text.corpus import pad_batch

    enc, dec = _models()
    sentences = [[4, 5, 6, 7], [8], [9, 10]]
    tight, wide = pad_batch(sentences), pad_batch(sentences, widths=[16])
    assert wide.shape[1] == 16 > tight.shape[1]
    z = torch.randn(3, 2, NZ)
    torch.testing.assert_close(dec.log_prob(wide, z), dec.log_prob(tight, z))
    for a, b in zip(enc(wide), enc(tight)):
        torch.testing.assert_close(a, b)

def test_log_prob_without_grad_is_chunked_and_equal(monkeypatch):
    # Under no_grad the output layer and softmax run a few rows at a time (IW-NLL speed); the result
    # must be the one-call result: the same arithmetic per row, so equal to float32 rounding.
    torch.manual_seed(0)
    dec = LSTMDecoder(50, 8, 16, 3, pad_id=0)
    dec.eval()
    x = torch.randint(4, 50, (5, 9))
    x[:, 0], x[3, 6:] = 1, 0  # one row right-padded: pad targets must add nothing in either path
    x[3, 5] = 2
    z = torch.randn(5, 7, 3)
    expected = dec.log_prob(x, z).detach()  # grad enabled: the one-call path
    monkeypatch.setattr(LSTMDecoder, "LOGIT_CHUNK_ELEMENTS", 50 * 13)
    monkeypatch.setattr(LSTMDecoder, "MAX_CHUNK_ROWS", 1)  # 13 rows a chunk: 280 rows, a ragged last one
    calls = []
    original = F.cross_entropy

    def counting(*args, **kwargs):
        calls.append(args[0].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "cross_entropy", counting)
    with torch.no_grad():
        chunked = dec.log_prob(x, z)
    assert calls == [13] * 21 + [280 - 13 * 21]
    torch.testing.assert_close(chunked, expected, rtol=0, atol=1e-5)


def test_encoder_without_padding_takes_the_final_state():
    # A batch with no padding uses the LSTM's final state instead of the gather; a pad column added
    # to the same sentences forces the gather path: the posteriors must agree.
    enc, _ = _models()
    x = torch.tensor([[BOS, 4, 5, 6, EOS], [BOS, 7, 8, 9, EOS]])
    padded = torch.cat([x, torch.full((2, 1), PAD)], dim=1)
    mean, logvar = enc(x)
    mean_p, logvar_p = enc(padded)
    torch.testing.assert_close(mean, mean_p, rtol=0, atol=1e-6)
    torch.testing.assert_close(logvar, logvar_p, rtol=0, atol=1e-6)
    mean.sum().backward()  # and the gradient reaches the encoder's weights through the final state
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in enc.parameters())


def test_the_gpu_path_gives_nan_for_a_row_of_padding_instead_of_an_out_of_range_gather():
    """On a GPU the encoder reads nothing on the host, so it cannot refuse an all-padding row; an index
    of -1 there was a device-side assert that poisons the process. The gather it uses on a GPU, run here
    on the CPU: the empty row is NaN (the trainer's non-finite check then stops or skips the update),
    the others are each row's output at its last token."""
    from examples.text.models import last_outputs

    output = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)  # [batch 2, seq 3, hidden 2]
    last = last_outputs(output, torch.tensor([2, 0]))
    assert torch.equal(last[0], output[0, 1]) and torch.isnan(last[1]).all()
