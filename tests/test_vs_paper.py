"""benchmarks.vs_paper: its pure pieces (interleaving, medians, ratios, rows, table, JSON, sizes,
argument errors) and both sides' loops on a stand-in model. Nothing here needs the paper's code: the
paper's loop runs on a small module with the paper's ``loss(x, kl_weight, nsamples)`` signature."""
from __future__ import annotations

import itertools
import json

import pytest
import torch
from torch import nn

from benchmarks.core.paper_modules import load_from_paper
from benchmarks.vs_paper import cli
from benchmarks.vs_paper.ours import build_ours, make_trainer, our_epoch
from benchmarks.vs_paper.reference import MAX_SUB_ITER, PaperLoop, load_reference
from benchmarks.vs_paper.sizes import BOS, EOS, FIRST_WORD, SIZES, Size, token_batches
from benchmarks.vs_paper.table import (FORMAT, TARGETS, format_markdown, format_table, make_row, read_json,
                                       target_for, write_json)
from benchmarks.vs_paper.timing import interleave, median, paired_steps, per_unit, ratio


def _fake_clock(step=1.0):
    counter = itertools.count()
    return lambda: next(counter) * step


def test_interleave_alternates_and_drops_warmup():
    order = []
    setups = []
    runs = {"a": lambda: order.append("a") or "ia", "b": lambda: order.append("b") or "ib"}
    out = interleave(runs, 3, warmup=2, setup={"a": lambda: setups.append("a")}, clock=_fake_clock(),
                     wall_clock=_fake_clock(2.0))
    assert order == ["a", "b"] * 5  # ABAB..., warm-up rounds included
    assert setups == ["a"] * 5
    assert out["a"]["info"] == ["ia"] * 3 and out["b"]["info"] == ["ib"] * 3
    # the fake clock ticks once per read: every timed call lasts exactly one tick
    assert out["a"]["seconds"] == [1.0] * 3 and out["b"]["seconds"] == [1.0] * 3
    assert out["a"]["wall"] == [2.0] * 3


@pytest.mark.parametrize("kwargs, message", [
    ({"runs": {}, "reps": 1}, "runs is empty"),
    ({"runs": {"a": lambda: None}, "reps": 0}, "reps must be a positive integer"),
    ({"runs": {"a": lambda: None}, "reps": True}, "reps must be a positive integer"),
    ({"runs": {"a": lambda: None}, "reps": 1, "warmup": -1}, "warmup must be a non-negative"),
    ({"runs": {"a": lambda: None}, "reps": 1, "setup": {"b": lambda: None}}, r"setup names \['b'\]"),
])
def test_interleave_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        interleave(**kwargs)


def test_paired_steps_alternate_the_order_and_cycle_batches():
    calls = []
    out = paired_steps(lambda x: calls.append(("p", x)), lambda x: calls.append(("o", x)), ["a", "b"], 5,
                       warmup=1, clock=_fake_clock(), wall_clock=_fake_clock())
    assert calls == [("p", "a"), ("o", "a"), ("o", "b"), ("p", "b"), ("p", "a"), ("o", "a"),
                     ("o", "b"), ("p", "b"), ("p", "a"), ("o", "a")]
    assert out["paper"]["seconds"] == [1.0] * 4 and len(out["ours"]["wall"]) == 4
    with pytest.raises(ValueError, match="batches is empty"):
        paired_steps(print, print, [], 3)
    with pytest.raises(ValueError, match="0 <= warmup < n_steps"):
        paired_steps(print, print, [1], 3, warmup=3)


def test_median_ratio_per_unit():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([1.0, 2.0, 3.0, 10.0]) == 2.5
    assert ratio(3.0, 2.0) == 1.5  # paper / ours: above 1, ours is faster
    assert per_unit([2.0, 9.0], [4, 3]) == [0.5, 3.0]
    with pytest.raises(ValueError, match="median of no values"):
        median([])
    with pytest.raises(ValueError, match="times must be positive"):
        ratio(0.0, 1.0)
    with pytest.raises(ValueError, match="same length"):
        per_unit([1.0], [1, 2])
    with pytest.raises(ValueError, match="units must be positive"):
        per_unit([1.0], [0])


def test_targets_apply_to_their_sizes_and_decide_the_verdict():
    """target_for reads TARGETS (a measure's minimum paper/ours ratio, for the sizes listed or all), and
    make_row's verdict is whether the ratio reaches it."""
    for measure, sizes, minimum in TARGETS:
        for size in ("synthetic", "cpu", "paper"):
            assert target_for(measure, size) == (minimum if sizes is None or size in sizes else None), (measure, size)
    assert target_for("encoder_step", "cpu") is None  # a measure with no target
    with pytest.raises(ValueError, match="measure must be one of"):
        target_for("nope", "cpu")
    target = target_for("aggressive_epoch", "cpu")
    above = make_row("cpu", "aggressive_epoch", [target * 1.01], [1.0])
    below = make_row("cpu", "aggressive_epoch", [target * 0.99], [1.0])
    assert (above["target"], above["met"], below["met"]) == (target, True, False)
    assert make_row("synthetic", "aggressive_epoch", [9.0], [1.0])["met"] is None  # no target at that size


def test_make_row_medians_ratio_and_verdict():
    row = make_row("cpu", "encoder_step", [0.4, 0.2, 0.3], [0.1, 0.3, 0.2], [100, 100, 100], [100, 100, 100])
    assert row["unit"] == "ms / step"
    assert row["paper"] == pytest.approx(3.0) and row["ours"] == pytest.approx(2.0)  # ms per step
    assert row["ratio"] == pytest.approx(1.5)
    assert row["target"] is None and row["met"] is None and "wall_ratio" not in row
    walled = make_row("cpu", "encoder_step", [0.3], [0.2], [1], [1], reference_wall=[0.9], our_wall=[0.3])
    assert walled["ratio"] == pytest.approx(1.5) and walled["wall_ratio"] == pytest.approx(3.0)
    basic = make_row("cpu", "basic_epoch", [2.0, 2.0], [2.5, 2.5], notes="x")
    assert basic["ratio"] == pytest.approx(0.8) and basic["target"] == 1.0 and basic["met"] is False
    assert basic["notes"] == "x"
    assert make_row("paper", "iw_nll", [3.0], [1.0], [1], [1])["met"] is True
    with pytest.raises(ValueError, match="measure must be one of"):
        make_row("cpu", "nope", [1.0], [1.0])


def test_table_and_json_round_trip(tmp_path):
    rows = [make_row("cpu", "basic_epoch", [2.0], [1.0]), make_row("synthetic", "iw_nll", [1.0], [1.0], [4], [4])]
    text = format_table(rows)
    lines = text.splitlines()
    assert lines[0].split()[:6] == ["size", "measure", "unit", "paper", "ours", "paper/ours"]
    assert "2.00x" in lines[1] and "yes" in lines[1]
    assert "1.00x" in lines[2] and "NO" in lines[2]  # IW-NLL target 1.5 missed
    md = format_markdown(rows)
    assert md.splitlines()[1].startswith("|---") and md.count("\n") == 3
    path = tmp_path / "out" / "vs.json"
    write_json(path, rows, {"loadavg": [1.0, float("nan")]})
    payload = read_json(path)
    assert payload["format"] == FORMAT and payload["rows"][0]["ratio"] == 2.0
    assert payload["settings"]["loadavg"] == [1.0, None]  # non-finite numbers written as null
    (tmp_path / "other.json").write_text(json.dumps({"format": "x"}))
    with pytest.raises(ValueError, match="expected 'benchmarks.vs_paper/1'"):
        read_json(tmp_path / "other.json")


def test_sizes_scale_the_work_and_keep_the_model():
    size = Size(**{**_tiny_size().to_dict(), "epoch_batches": 10, "aggressive_batches": 4, "fixed_updates": 3,
                   "encoder_steps": 7, "iw_sentences": 20})
    half = size.scaled(0.5)
    assert (half.epoch_batches, half.aggressive_batches, half.fixed_updates, half.encoder_steps,
            half.iw_sentences) == (5, 2, 2, 4, 10)  # rounded to the nearest (even) integer
    small = size.scaled(0.01)
    assert (small.epoch_batches, small.aggressive_batches, small.fixed_updates, small.encoder_steps) == (1, 1, 1, 1)
    assert small.iw_sentences == 6  # the paper's IW loop needs 6
    assert Size(**{**size.to_dict(), "aggressive_batches": 0}).scaled(2).aggressive_batches == 0  # none stays none
    model = ("embed_dim", "hidden_dim", "latent_dim", "vocab_size", "batch_size", "length", "fixed_inner_steps",
             "iw_samples", "reps")
    for scaled in (half, small, size.scaled(3)):
        assert [getattr(scaled, k) for k in model] == [getattr(size, k) for k in model]  # not scaled
    with pytest.raises(ValueError, match="work must be > 0"):
        SIZES["cpu"].scaled(0)
    with pytest.raises(ValueError, match="Size.reps must be an integer >= 1"):
        Size(**{**SIZES["cpu"].to_dict(), "reps": 0})
    batches = token_batches(3, 4, 5, 50, seed=0)
    assert len(batches) == 3 and all(b.shape == (4, 7) for b in batches)
    x = torch.stack(batches)
    assert (x[..., 0] == BOS).all() and (x[..., -1] == EOS).all()
    assert int(x[..., 1:-1].min()) >= FIRST_WORD and int(x[..., 1:-1].max()) < 50
    assert torch.equal(torch.stack(token_batches(3, 4, 5, 50, seed=0)), x)  # seeded


def test_cli_argument_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main([])
    assert "--reference-dir is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--reference-dir", str(tmp_path / "missing")])
    assert "not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--reference-dir", str(tmp_path), "--reps", "0"])
    assert "--reps must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--reference-dir", str(tmp_path), "--work", "0"])
    assert "--work must be > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # an empty directory is not the paper's code
        cli.main(["--reference-dir", str(tmp_path)])
    assert "expected the paper's code with text.py" in capsys.readouterr().err


def test_cli_from_json_prints_the_table(tmp_path, capsys):
    path = tmp_path / "vs.json"
    write_json(path, [make_row("cpu", "basic_epoch", [3.0], [2.0])], {})
    rows = cli.main(["--from-json", str(path)])
    assert rows[0]["ratio"] == 1.5
    assert "1.50x" in capsys.readouterr().out
    other = tmp_path / "other.json"
    write_json(other, [make_row("paper", "iw_nll", [2.0], [1.0], [1], [1])], {"sizes": {"paper": {}}})
    merged = tmp_path / "merged.json"
    rows = cli.main(["--from-json", str(path), str(other), "--out", str(merged)])
    assert [r["size"] for r in rows] == ["cpu", "paper"]
    payload = read_json(merged)
    assert [r["size"] for r in payload["rows"]] == ["cpu", "paper"]
    assert payload["settings"]["merged_from"][1]["sizes"] == {"paper": {}}


def test_load_reference_names_what_is_missing(tmp_path):
    (tmp_path / "text.py").write_text("")
    with pytest.raises(FileNotFoundError, match="with modules in it"):
        load_reference(tmp_path)


def _tiny_size():
    return Size("tiny", embed_dim=6, hidden_dim=8, latent_dim=2, vocab_size=30, batch_size=4, length=5,
                epoch_batches=3, aggressive_batches=2, fixed_inner_steps=3, fixed_updates=2, encoder_steps=2,
                iw_sentences=6, iw_samples=100, reps=1)


def test_load_from_paper_gives_the_same_model_and_names_mismatches():
    size = _tiny_size()
    torch.manual_seed(0)
    a, b = build_ours(size), build_ours(size)
    load_from_paper(a, b)
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), name
    other = build_ours(Size(**{**size.to_dict(), "hidden_dim": 9}))
    with pytest.raises(KeyError, match="has no parameters"):
        load_from_paper(a, other)


class _PaperStyle(nn.Module):
    """Our VAE behind the paper's ``loss(x, kl_weight, nsamples) -> (loss, rc, kl)``, each [batch]."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        self.encoder, self.decoder = vae.encoder, vae.decoder

    def loss(self, x, kl_weight, nsamples=1):
        terms = self.vae.elbo(x, kl_weight=kl_weight, n_samples=nsamples)
        return terms.loss, terms.reconstruction, terms.kl


def test_paper_loop_steps_and_our_epoch_on_a_stand_in():
    size = _tiny_size()
    torch.manual_seed(0)
    batches = token_batches(3, size.batch_size, size.length, size.vocab_size, seed=1)
    loop = PaperLoop(_PaperStyle(build_ours(size)), batches, seed=0)
    before = [p.detach().clone() for p in loop.vae.decoder.parameters()]
    assert loop.catch_up(batches[0], fixed_steps=3) == 3
    # inner steps move the encoder only
    assert all(torch.equal(p, q) for p, q in zip(before, loop.vae.decoder.parameters()))
    steps = loop.catch_up(batches[0])
    assert 30 <= steps <= MAX_SUB_ITER - 1 and (steps % 15 == 0 or steps == MAX_SUB_ITER - 1)
    assert loop.epoch(aggressive=True, fixed_steps=2) == {"inner_steps": 6}
    assert loop.epoch(aggressive=False) == {"inner_steps": 0}
    ours = build_ours(size)
    assert our_epoch(make_trainer(ours, aggressive=True, fixed_steps=2), batches) == {"inner_steps": 6}
    assert our_epoch(make_trainer(ours, aggressive=False), batches) == {"inner_steps": 0}


def test_overhead_alternate_swaps_the_order_and_drops_warmup():
    from benchmarks.vs_paper.overhead import alternate

    calls = []
    a, b = alternate(lambda x: calls.append(("a", x)), lambda x: calls.append(("b", x)), [1, 2], 3, warmup=1)
    assert calls == [("a", 1), ("b", 1), ("b", 2), ("a", 2), ("a", 1), ("b", 1), ("b", 2), ("a", 2)]
    assert a >= 0 and b >= 0


class _PaperDecoderAPI(nn.Module):
    """Our example decoder behind the paper's decoder method name (``log_probability``)."""

    def __init__(self, decoder):
        super().__init__()
        self.inner = decoder

    def log_probability(self, x, z):
        return self.inner.log_prob(x, z)


class _PaperModel(nn.Module):
    """A stand-in for the paper's VAE: ``.encoder`` (forward -> mean, logvar; ``nz``), ``.decoder``
    (``log_probability``) and ``loss`` as the paper's loop calls it."""

    def __init__(self, size):
        super().__init__()
        ours = build_ours(size)
        self.encoder = ours.encoder
        self.encoder.nz = size.latent_dim
        self.decoder = _PaperDecoderAPI(ours.decoder)
        self._vae = ours

    def loss(self, x, kl_weight, nsamples=1):
        terms = self._vae.elbo(x, kl_weight=kl_weight, n_samples=nsamples)
        return terms.loss, terms.reconstruction, terms.kl


def test_our_side_can_run_the_papers_own_modules_behind_our_protocols(monkeypatch):
    """--modules paper: our side is a copy of the reference's own model behind our protocols, from the
    same initial weights, and its rows are labelled <size>/paper-modules."""
    from benchmarks.vs_paper import measures

    size = _tiny_size()
    monkeypatch.setattr(measures, "build_reference_vae", lambda ref, size, seed: _PaperModel(size))
    pair = measures.ModelPair(None, size, seed=0, modules="paper")
    assert all(torch.equal(p, q) for p, q in zip(pair.reference.parameters(), pair.ours.parameters()))
    assert not any(p is q for p, q in zip(pair.reference.parameters(), pair.ours.parameters()))  # a copy
    rows = measures.measure_size(None, size, groups=["encoder_step"], modules="paper", log=lambda line: None)
    assert [r["size"] for r in rows] == ["tiny/paper-modules"] and rows[0]["measure"] == "encoder_step"
    with pytest.raises(ValueError, match="modules must be one of"):
        measures.ModelPair(None, size, seed=0, modules="mine")


def test_floor_splits_the_papers_operator_time_into_what_ours_also_runs():
    """benchmarks.vs_paper.floor: an operator counts as shared when ours calls it at least as often as
    the paper's loop does; the ceiling is the paper's total over that shared time."""
    from benchmarks.vs_paper.floor import op_times, split_shared

    paper = {"aten::mm": (60.0, 3), "aten::item": (10.0, 2), "aten::lstm": (30.0, 1)}
    ours = {"aten::mm": (50.0, 3), "aten::item": (1.0, 1), "aten::isfinite": (5.0, 1), "aten::lstm": (30.0, 2)}
    split = split_shared(paper, ours)
    assert split["paper"] == 100.0 and split["ours"] == 86.0
    assert split["shared"] == 90.0  # mm and lstm; item is called less often by ours
    assert split["paper_only"] == ["aten::item"] and split["ours_only"] == ["aten::lstm", "aten::isfinite"]
    times = op_times(lambda: torch.ones(3).mul_(2.0).sum(), rounds=3)  # the profiler's real keys
    assert times["aten::mul_"][1] == 3 and times["aten::sum"][1] == 3 and times["aten::mul_"][0] >= 0
