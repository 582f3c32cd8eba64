"""benchmarks/iw_memory.py: the user-written text VAE scores what it should, the measurement reports
the rows per decoder call that the bound allows, and the command line writes its JSON (at a tiny size;
no timing or memory figure is asserted: they depend on the machine)."""
import json
import math

import pytest
import torch

from aggressive_vi.protocols import Decoder, Encoder
from benchmarks import iw_memory

TINY = iw_memory.SIZES["tiny"]


def test_user_model_meets_the_protocols_and_scores_each_sample_alone():
    vae = iw_memory.build(TINY, seed=0).eval()
    assert isinstance(vae.encoder, Encoder) and isinstance(vae.decoder.decoder, Decoder)
    x = iw_memory.sentences(3, 7, TINY["vocab"], seed=1)
    assert (x[:, 0] == iw_memory.BOS).all() and (x[:, -1] == iw_memory.EOS).all()
    mean, logvar = vae.encoder(x)
    assert mean.shape == logvar.shape == (3, TINY["latent"])
    z = torch.randn(3, 4, TINY["latent"])
    with torch.no_grad():
        together = vae.decoder.log_prob(x, z)
        alone = torch.cat([vae.decoder.log_prob(x, z[:, k:k + 1]) for k in range(4)], dim=1)
        # sample 0 of sentence 0 by hand: log-softmax over the whole vocabulary, summed over positions
        dec = vae.decoder.decoder
        c0 = dec.init_state(z[:1, :1])
        inp = torch.cat([dec.embed(x[:1, :-1]), z[:1, :1].expand(1, 6, -1)], dim=-1)
        h, _ = dec.lstm(inp, (torch.tanh(c0), c0))
        by_hand = dec.out(h).log_softmax(-1).gather(-1, x[:1, 1:, None]).sum()
    assert together.shape == (3, 4) and (together < 0).all()
    assert torch.allclose(together, alone, atol=1e-5)
    assert torch.allclose(together[0, 0], by_hand, atol=1e-5)
    assert vae.decoder.calls == [12, 3, 3, 3, 3]


@pytest.mark.parametrize("tokens", [6])
def test_a_larger_bound_never_uses_fewer_rows_per_call(tokens):
    bounds = [4, 8, 12, None]
    results = [iw_memory.measure("tiny", tokens, rows, samples=10, chunk=5) for rows in bounds]
    keys = {"size", "tokens", "rows_bound", "rows_per_call", "calls", "peak_mib", "logits_mib", "seconds",
            "nll", "measure"}
    for r, rows in zip(results, bounds):
        assert set(r) == keys and r["rows_bound"] == rows and r["tokens"] == tokens
        assert r["peak_mib"] >= 0 and r["seconds"] > 0
        expected = iw_memory.expected_rows(rows, TINY["batch"], 10, 5, torch.device("cpu"))
        assert r["rows_per_call"] == expected
        assert r["calls"] == math.ceil(10 / (expected // TINY["batch"]))
        assert r["logits_mib"] == pytest.approx(expected * (tokens - 1) * TINY["vocab"] * 4 / 2 ** 20)
    used = [r["rows_per_call"] for r in results]
    assert used == [4, 8, 12, 20]  # batch 4: 1, 2, 3 samples per call, then the whole chunk of 5
    assert all(a <= b for a, b in zip(used, used[1:]))
    assert max(r["nll"] for r in results) - min(r["nll"] for r in results) < 1e-3  # same draws


def test_fit_per_row_is_a_least_squares_line():
    rows = [{"rows_per_call": n, "peak_mib": 3.0 + 0.5 * n, "logits_mib": 0.25 * n} for n in (64, 256, 1024)]
    fit = iw_memory.fit_per_row(rows + [{"skipped": "too big"}])
    assert fit == pytest.approx({"mib_per_row": 0.5, "intercept_mib": 3.0, "logits_mib_per_row": 0.25})
    assert iw_memory.fit_per_row(rows[:1]) is None


def test_command_line_measures_in_a_child_and_skips_what_is_too_big(tmp_path, capsys):
    out = tmp_path / "iw.json"
    # tiny, 6 tokens: 8 rows are 7.6e-6 GiB of logits, 20 rows (no bound) 1.9e-5 GiB: over the limit
    doc = iw_memory.main(["--sizes", "tiny", "--tokens", "6", "--rows", "8", "none", "--samples", "10",
                          "--chunk", "5", "--max-logits-gib", "1e-5", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(doc))
    assert doc["format"] == iw_memory.FORMAT and doc["torch"] == torch.__version__
    assert doc["command"].startswith("python -m benchmarks.iw_memory --sizes tiny")
    measured, skipped = doc["results"]
    assert "error" not in measured, measured.get("error")
    assert measured["rows_per_call"] == 8 and measured["calls"] == 5 and measured["peak_mib"] >= 0
    assert measured["measure"] == "ru_maxrss above setup"
    assert skipped["rows_bound"] is None and skipped["rows_per_call"] == 20 and "peak_mib" not in skipped
    assert "max-logits-gib" in skipped["skipped"]
    table = capsys.readouterr().out
    assert "rows/call" in table and "skipped" in table


def test_rows_argument():
    parse = iw_memory.build_parser().parse_args
    assert parse(["--rows", "64", "none", "auto"]).rows == [64, None, "auto"]
    with pytest.raises(SystemExit):
        parse(["--rows", "0"])
