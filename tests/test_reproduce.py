"""End-to-end check of ``benchmarks.reproduce`` at tiny settings (seconds): table, JSON structure, and
that the autoregressive baseline has no latent variable (KL = MI = AU = 0, exact NLL)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from benchmarks import reproduce

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
TINY = ["--epochs", "1", "--max-train", "48", "--max-eval", "24", "--max-iw", "16", "--iw-samples", "3",
        "--threads", "1"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    torch.set_num_threads(1)
    docs = reproduce.main(["--data", "synthetic", "--seeds", "0", "1", "--out", str(out), *TINY])
    return out, docs


def test_json_has_every_row_and_seed(study):
    out, docs = study
    doc = json.loads((out / "reproduce_synthetic.json").read_text())
    assert doc == json.loads(json.dumps(docs["synthetic"]))  # what main returns is what it wrote
    assert doc["format"] == reproduce.FORMAT and doc["complete"] is True
    assert doc["runs_done"] == doc["runs_expected"] == len(reproduce.ROWS) * 2
    assert doc["budget"]["iw_samples"] == 3 and doc["budget"]["epochs"] == 1
    assert doc["settings"]["sizes"] == {"train": 48, "valid": 24, "test": 24}
    assert {(r["row"], r["seed"]) for r in doc["runs"]} == {(r, s) for r in reproduce.ROWS for s in (0, 1)}
    for run in doc["runs"]:
        m = run["metrics"]
        assert math.isfinite(m["iw_nll"]) and m["iw_nll"] > 0
        assert m["kl"] >= -1e-6 and 0 <= m["au"] <= 1  # float32 rounding; the synthetic latent is scalar
        assert run["train_seconds"] > 0 and len(run["history"]) == 1
        assert m["n_test"] == 16  # IW-NLL (exact NLL for the AR row) on the first --max-iw test examples
        if run["row"] != "ar":
            assert m["iw_samples"] == 3
            assert {"val_mi", "val_kl", "val_au", "aggressive"} <= set(run["history"][0])
    summary = doc["summary"]
    assert list(summary) == list(reproduce.ROWS)
    for row, cell in summary.items():
        for metric in reproduce.METRICS:
            assert cell[metric]["n"] == 2 and cell[metric]["std"] >= 0
    seconds = {(r["row"], r["seed"]): r["train_seconds"] for r in doc["runs"]}
    # each run's training time over the basic VAE's with the same seed, then mean over the seeds
    assert summary["aggressive"]["relative_time"]["mean"] == pytest.approx(
        sum(seconds["aggressive", s] / seconds["basic", s] for s in (0, 1)) / 2)
    seeds = [r for r in doc["runs"] if r["row"] == "basic"]
    assert summary["basic"]["iw_nll"]["mean"] == pytest.approx(sum(r["metrics"]["iw_nll"] for r in seeds) / 2)


def test_ar_baseline_has_no_latent_information(study):
    _, docs = study
    ar = [r for r in docs["synthetic"]["runs"] if r["row"] == "ar"]
    assert len(ar) == 2
    for run in ar:
        m = run["metrics"]
        assert (m["kl"], m["mi"], m["au"]) == (0.0, 0.0, 0)
        assert m["iw_samples"] == "exact" and m["neg_elbo"] == m["reconstruction"]
        assert run["aggressive_epochs"] == 0 and "val_nll" in run["history"][0]


def test_aggressive_rows_run_aggressive_epochs(study):
    _, docs = study
    for run in docs["synthetic"]["runs"]:
        assert (run["aggressive_epochs"] > 0) == run["row"].startswith("aggressive"), run["row"]


def test_table_lists_rows_with_mean_and_std(study):
    _, docs = study
    table = reproduce.format_table(docs["synthetic"]["summary"])
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["row", "IW-NLL", "-ELBO", "KL"]
    assert len(lines) == 1 + len(reproduce.ROWS)
    for row, line in zip(reproduce.ROWS, lines[1:]):
        assert line.startswith(reproduce.ROW_LABELS[row]) and line.count("±") == 6


def test_exact_nll_matches_decoder_at_zero():
    """The AR evaluation is -log p(x | z=0) of the decoder, averaged over examples."""
    torch.manual_seed(0)
    budget = reproduce.Budget(epochs=1, warm_up=0, max_train=16, max_eval=8, iw_samples=2)
    setup = reproduce.SETUPS["synthetic"](budget, 0)
    dec = setup.vae.decoder.eval()
    x = torch.cat([b[0] for b in setup.test_loader])
    with torch.no_grad():
        direct = -dec.log_prob(x, torch.zeros(len(x), 1, dec.latent_dim)).mean().item()
    assert reproduce.exact_nll_at_zero(dec, setup.test_loader, dec.latent_dim)["nll"] == pytest.approx(direct, rel=1e-6)


@pytest.mark.parametrize("argv, message", [(["--jobs", "0"], "--jobs"), (["--iw-samples", "0"], "iw_samples")])
def test_bad_arguments_are_named(tmp_path, argv, message):
    with pytest.raises((SystemExit, ValueError), match=message):
        reproduce.main(["--data", "synthetic", "--out", str(tmp_path), *argv])


def test_all_lifts_the_split_caps_and_other_flags_keep_defaults():
    args = reproduce.build_parser().parse_args(["--max-train", "all", "--max-eval", "all", "--epochs", "5"])
    budgets = reproduce.budgets_from_args(args, ["text", "image"])
    for data, budget in budgets.items():
        assert budget.max_train is None and budget.max_eval is None and budget.epochs == 5
        assert budget.max_iw == reproduce.DEFAULTS[data].max_iw  # not given: the data set's default
    capped = reproduce.budgets_from_args(reproduce.build_parser().parse_args(["--max-train", "64"]), ["text"])
    assert capped["text"].max_train == 64 and capped["text"].max_eval == reproduce.DEFAULTS["text"].max_eval


def test_max_train_rejects_words_other_than_all(capsys):
    with pytest.raises(SystemExit):
        reproduce.build_parser().parse_args(["--max-train", "everything"])
    assert "--max-train" in capsys.readouterr().err


def test_ar_baseline_select_best_ends_with_the_best_validation_weights():
    """With select="best" the decoder that is evaluated is the one of the lowest validation NLL."""
    torch.manual_seed(0)
    budget = reproduce.Budget(epochs=3, warm_up=0, max_train=32, max_eval=8, iw_samples=2, select="best")
    setup = reproduce.SETUPS["synthetic"](budget, 0)
    history = reproduce.train_ar_baseline(setup, budget.epochs, select="best")
    dec = setup.vae.decoder
    now = reproduce.exact_nll_at_zero(dec, setup.val_loader, dec.latent_dim)["nll"]
    assert now == pytest.approx(min(h["val_nll"] for h in history), rel=1e-6)
    with pytest.raises(ValueError, match="select"):
        reproduce.train_ar_baseline(setup, 1, select="first")


def test_select_best_is_recorded_for_every_row(tmp_path):
    doc = reproduce.main(["--data", "synthetic", "--seeds", "0", "--rows", "basic", "ar", "--out", str(tmp_path),
                          "--select", "best", *TINY[:1], "2", *TINY[2:]])["synthetic"]
    assert doc["budget"]["select"] == "best"
    for run in doc["runs"]:
        if run["row"] == "ar":
            nlls = [h["val_nll"] for h in run["history"]]
            assert run["evaluated_epoch"] == nlls.index(min(nlls))
        else:
            elbos = [h["val_elbo"] for h in run["history"]]
            assert run["evaluated_epoch"] == elbos.index(max(elbos))


def test_fixed_aggressive_epochs_replaces_the_mi_rule(tmp_path):
    """Two aggressive epochs out of three, whatever the (noisy) validation MI does."""
    doc = reproduce.main(["--data", "synthetic", "--seeds", "0", "--rows", "aggressive", "--out", str(tmp_path),
                          "--fixed-aggressive-epochs", "2", *TINY[:1], "3", *TINY[2:]])["synthetic"]
    run, = doc["runs"]
    assert [h["aggressive"] for h in run["history"]] == [True, True, False]
    assert run["aggressive_epochs"] == 2 and doc["budget"]["fixed_aggressive_epochs"] == 2
    with pytest.raises(ValueError, match="fixed_aggressive_epochs"):
        reproduce.Budget(epochs=1, warm_up=0, max_train=None, max_eval=None, iw_samples=1, fixed_aggressive_epochs=0)


def test_figures_redrawn_from_json_for_chosen_rows(study, tmp_path):
    pytest.importorskip("matplotlib")
    out, _ = study
    reproduce.main(["--data", "synthetic", "--out", str(out), "--from-json", "--figures", str(tmp_path),
                    "--curve-rows", "anneal", "aggressive_anneal"])
    png = tmp_path / "curves_synthetic.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit):
        reproduce.build_parser().parse_args(["--curve-rows", "ar"])  # no latent, no curve


def test_window_and_cap_overrides_reach_the_trainer(tmp_path):
    """--window 2 --max-inner-steps 4: every decoder update is preceded by exactly 4 inner steps (the
    window test runs at 2 and 4; the cap ends the loop at 4 whatever the test says)."""
    doc = reproduce.main(["--data", "synthetic", "--seeds", "0", "--rows", "aggressive", "--out", str(tmp_path),
                          "--window", "2", "--max-inner-steps", "4", *TINY])["synthetic"]
    run, = doc["runs"]
    assert (run["window"], run["max_inner_steps"]) == (2, 4)
    assert doc["budget"]["window"] == 2 and doc["budget"]["max_inner_steps"] == 4
    assert (doc["settings"]["window"], doc["settings"]["max_inner_steps"]) == (2, 4)  # not the data set's 15/100
    # the first window test (step 2) compares with +inf and never exits; the second (step 4) exits or not,
    # and the cap ends the loop there anyway: exactly 4 steps per update (the default window 15 gives >= 30)
    assert run["history"][0]["inner_steps_mean"] == 4


def test_text_study_defaults_reproduce_the_inner_loop_of_its_published_runs():
    """The committed text studies record the inner loop they ran with; the text budget without
    --window / --max-inner-steps is that loop (so the published runs can be made again as they are),
    whatever the example's presets use, and the flags override it."""
    parse = reproduce.build_parser().parse_args
    default = reproduce.budgets_from_args(parse([]), ["text"])["text"]
    for name in ("reproduce_text.json", "reproduce_text_aggressive3.json"):
        settings = json.loads((RESULTS / name).read_text())["settings"]
        assert (default.window, default.max_inner_steps) == (settings["window"], settings["max_inner_steps"]), name
    given = reproduce.budgets_from_args(parse(["--window", "7", "--max-inner-steps", "41"]), ["text"])["text"]
    assert (given.window, given.max_inner_steps) == (7, 41)


def test_phase_switch_step_comes_from_the_history(tmp_path):
    """The run's ``left_aggressive_at`` is ``History.left_aggressive_at``: one fixed aggressive epoch of
    3 decoder updates (48 examples, batch 16), so the phase ends after update 3; the curve points agree
    (aggressive up to step 3, not after); a basic run never leaves a phase it never entered."""
    from aggressive_vi import History

    doc = reproduce.main(["--data", "synthetic", "--seeds", "0", "--rows", "basic", "aggressive", "--out", str(tmp_path),
                          "--fixed-aggressive-epochs", "1", *TINY[:1], "2", *TINY[2:]])["synthetic"]
    runs = {r["row"]: r for r in doc["runs"]}
    aggressive = runs["aggressive"]
    assert aggressive["steps_per_epoch"] == 3
    assert aggressive["left_aggressive_at"] == 3 == History.from_dicts(aggressive["history"]).left_aggressive_at
    assert [h["left_aggressive_at"] for h in aggressive["history"]] == [3, None]
    curve = aggressive["curve"]
    assert [p["step"] for p in curve] == list(range(7))  # 6 updates, 16 curve points at most: every update
    assert [p["aggressive"] for p in curve] == [p["step"] <= 3 for p in curve]
    assert runs["basic"]["left_aggressive_at"] is None
    assert all(h["left_aggressive_at"] is None for h in runs["basic"]["history"])


def test_text_setup_cuts_the_splits_to_the_budget():
    """The text splits are cut with the example's public ``TextDataset.head``: the first N sentences."""
    from examples.text.experiment import load_data
    from examples.text.presets import get_preset

    budget = reproduce.Budget(epochs=1, warm_up=0, max_train=8, max_eval=5, iw_samples=2, max_iw=3)
    setup = reproduce.SETUPS["text"](budget, 0)
    assert setup.settings["sizes"] == {"train": 8, "valid": 5, "test": 5}
    assert sum(len(b) for b in setup.train_loader) == 8
    assert sum(len(b) for b in setup.iw_loader) == 3
    full = load_data("bundled", max_vocab=get_preset("cpu").max_vocab).splits["test"]
    assert len(full) > 5  # the corpus's own split is left whole
    test_sentences = sorted(tuple(row[1:int((row != 0).sum()) - 1].tolist()) for b in setup.test_loader for row in b)
    assert test_sentences == sorted(tuple(full[i]) for i in range(5))
