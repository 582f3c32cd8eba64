"""A short end-to-end run of ``python -m examples.text`` (tiny preset, tiny corpus), and the lr schedule."""
import contextlib
import io
import json
import random
import shutil
import types

import pytest
import torch

from aggressive_vi import LRDecayOnPlateau
from aggressive_vi.checkpoint import load_checkpoint
from examples.run_spec import saved_spec
from examples.text.cli import main

WORDS = "the a cat dog sat ran on under mat log big small red blue".split()


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    for split, n in (("train", 96), ("valid", 32), ("test", 32)):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 7))) for _ in range(n)]
        (root / f"toy.{split}.txt").write_text("\n".join(lines) + "\n\n")
    return root


@pytest.fixture(scope="module")
def trained(corpus_dir, tmp_path_factory):
    out, cwd = tmp_path_factory.mktemp("run"), tmp_path_factory.mktemp("cwd")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        metrics = main(["train", "--data", str(corpus_dir / "toy"), "--preset", "tiny", "--epochs", "2",
                        "--out", str(out), "--no-progress", "--seed", "1"])
    assert list(cwd.iterdir()) == [], "train wrote outside its --out"
    return out, metrics, printed.getvalue()


def test_train_writes_history_metrics_checkpoint_and_prints_table(trained):
    out, metrics, printed = trained
    header = next(line for line in printed.splitlines() if line.startswith("run "))
    assert header.split() == ["run", "IW-NLL", "PPL", "-ELBO", "KL", "MI", "AU"]
    assert "aggressive (test)" in printed and "epoch   1 |" in printed
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [0, 1]
    assert all(r["val_mi"] is not None for r in history)
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("iw_nll", "ppl", "kl", "mi", "au"):
        assert saved[key] == pytest.approx(metrics[key])
    assert saved["iw_nll"] > 0 and saved["ppl"] > 1 and saved["kl"] > -1e-6
    # per-token perplexity is consistent with the per-sentence NLL and the token count
    assert saved["ppl"] == pytest.approx(2.718281828 ** (saved["iw_nll"] * 32 / saved["n_tokens"]), rel=1e-6)
    assert (out / "model.pt").is_file() and not (out / "trainer_last.pt").exists()
    # the library's checkpoints, one per epoch (the last two kept), readable without unpickling code
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["checkpoint-e0001-s000000006.pt", "checkpoint-e0002-s000000012.pt"]
    state = load_checkpoint(out / "checkpoints" / names[-1])  # torch.load(weights_only=True)
    assert state["epoch"] == 2 and state["format"] == "aggressive-vi/trainer"
    spec = saved_spec(out / "checkpoints" / names[-1])
    exported = torch.load(out / "model.pt", weights_only=True)
    assert spec["vocab"] == exported["vocab"] and spec["preset_name"] == "tiny"
    assert spec["options"]["seed"] == 1 and "epochs" not in spec["preset"]


def test_evaluate_reproduces_the_final_evaluation_of_train(trained):
    """model.pt holds the evaluated weights, vocabulary and preset: with train's seed and sample
    count, evaluate draws the same numbers as train's own test evaluation."""
    out, metrics, _ = trained
    again = main(["evaluate", "--checkpoint", str(out), "--iw-samples", "5", "--seed", "1"])
    for key in ("iw_nll", "ppl", "neg_elbo", "kl", "mi", "au", "n_tokens"):
        assert again[key] == metrics[key], key


def test_max_length_is_part_of_the_preset_and_evaluate_applies_it(corpus_dir, tmp_path):
    """--max-length drops long sentences from every split; the model's preset keeps it, so
    evaluate scores the same sentences as train's own test evaluation."""
    out = tmp_path / "short"
    metrics = main(["train", "--data", str(corpus_dir / "toy"), "--preset", "tiny", "--epochs", "1", "--max-length", "4",
                    "--iw-samples", "2", "--out", str(out), "--no-progress", "--seed", "1"])
    assert 0 < metrics["n_sentences"] < 32  # sentences of 2 to 7 words, those over 4 dropped
    assert torch.load(out / "model.pt", weights_only=True)["preset"]["max_length"] == 4
    again = main(["evaluate", "--checkpoint", str(out), "--iw-samples", "2", "--seed", "1"])
    assert again["n_sentences"] == metrics["n_sentences"] and again["iw_nll"] == metrics["iw_nll"]


def test_evaluate_and_generate_load_the_checkpoint(trained, tmp_path, capsys):
    out = trained[0]
    metrics = main(["evaluate", "--checkpoint", str(out), "--iw-samples", "3", "--split", "valid"])
    assert metrics["n_sentences"] == 32 and metrics["iw_samples"] == 3
    assert (out / "eval_valid_3.json").is_file()
    src = tmp_path / "in.txt"
    src.write_text("the cat sat on the mat\na big dog ran\n")
    lines = main(["generate", "--checkpoint", str(out), "--prior", "3", "--strategy", "beam", "--beam-size", "2",
                  "--reconstruct", str(src), "--interpolate", "the cat sat", "a dog ran", "--steps", "3",
                  "--max-len", "8", "--output", str(tmp_path / "gen.txt")])
    text = capsys.readouterr().out
    assert "# from the prior (beam)" in text and "# reconstructions" in text and "# interpolation" in text
    assert len(lines) == (1 + 3) + (1 + 4) + (1 + 3)
    assert (tmp_path / "gen.txt").read_text().splitlines() == lines
    assert "> the cat sat on the mat" in lines
    vocab_words = set(WORDS) | {"<unk>"}
    generated = [line for line in lines if not line.startswith(("#", ">"))]
    assert all(set(line.lstrip("< ").split()) <= vocab_words for line in generated)


def test_resume_continues_from_the_last_epoch(trained, corpus_dir, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained[0], out)
    main(["train", "--data", str(corpus_dir / "toy"), "--preset", "tiny", "--epochs", "3", "--out", str(out),
          "--no-progress", "--seed", "1", "--resume"])
    assert f"resuming from {out / 'checkpoints' / 'checkpoint-e0002-s000000012.pt'}" in capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [0, 1, 2]
    assert history[:2] == json.loads((trained[0] / "history.json").read_text())


def test_cli_rejects_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        main(["train", "--preset", "huge", "--out", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="--data"):
        main(["train", "--data", str(tmp_path / "none"), "--preset", "tiny", "--out", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="--checkpoint"):
        main(["evaluate", "--checkpoint", str(tmp_path / "missing")])


def _fake_trainer():
    model = torch.nn.Linear(2, 1)
    opt_a = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
    opt_b = torch.optim.SGD(model.parameters(), lr=1.0)
    return types.SimpleNamespace(model=model, enc_opt=opt_a, dec_opt=opt_b, stop_training=False)


def _record(epoch, loss):
    return types.SimpleNamespace(epoch=epoch, val_elbo=-loss)


def test_text_lr_decay_halves_after_two_bad_epochs_from_epoch_15_and_reloads_best():
    trainer = _fake_trainer()
    sched = LRDecayOnPlateau(min_epoch=15)  # the text preset's setting
    losses = [10, 9, 8] + [9] * 13  # epochs 0..15: best at epoch 2, then no improvement
    for epoch, loss in enumerate(losses[:15]):
        with torch.no_grad():
            trainer.model.weight.fill_(float(epoch))  # weights remember the epoch
        sched.on_epoch_end(trainer, _record(epoch, loss))
    assert trainer.enc_opt.param_groups[0]["lr"] == 1.0  # epoch < 15: no decay yet
    sched.on_epoch_end(trainer, _record(15, 9.5))
    assert trainer.enc_opt.param_groups[0]["lr"] == 0.5 and trainer.dec_opt.param_groups[0]["lr"] == 0.5
    assert trainer.model.weight[0, 0].item() == 2.0  # best epoch's weights restored
    assert sched.decays == 1 and not trainer.stop_training
    # four more decays (two bad epochs each) stop training
    epoch = 16
    while not trainer.stop_training:
        sched.on_epoch_end(trainer, _record(epoch, 20.0 + epoch))
        epoch += 1
    assert sched.decays == 5 and trainer.enc_opt.param_groups[0]["lr"] == pytest.approx(1 / 32)
    state = sched.state_dict()
    again = LRDecayOnPlateau(min_epoch=15)
    again.load_state_dict(state)
    assert again.decays == 5 and again.best_epoch == 2


def test_text_lr_decay_resets_count_on_improvement():
    trainer = _fake_trainer()
    sched = LRDecayOnPlateau(min_epoch=0)
    for epoch, loss in enumerate([5, 6, 4.9, 6, 4.8]):  # each bad epoch is followed by a new best
        sched.on_epoch_end(trainer, _record(epoch, loss))
    assert sched.decays == 0 and trainer.enc_opt.param_groups[0]["lr"] == 1.0
    sched.on_epoch_end(trainer, _record(5, 4.85))  # worse than the reference 4.8 ...
    sched.on_epoch_end(trainer, _record(6, 4.81))  # ... twice, though better than the epoch before
    assert sched.decays == 1


def test_switch_options_reach_the_trainer(corpus_dir, tmp_path):
    """--switch-min-epochs 3 keeps 3 epochs aggressive whatever the MI does; --mi-estimator dataset
    records a whole-set MI with its standard error; a huge --switch-k-stderr counts no rise as one."""
    def run(out, *extra):
        with contextlib.redirect_stdout(io.StringIO()):
            main(["train", "--data", str(corpus_dir / "toy"), "--preset", "tiny", "--epochs", "3",
                  "--out", str(out), "--no-progress", "--seed", "1", *extra])
        return json.loads((out / "history.json").read_text())

    held = run(tmp_path / "held", "--switch-min-epochs", "3", "--mi-estimator", "dataset")
    assert [r["aggressive"] for r in held] == [True, True, True]
    assert all(r["val_mi_stderr"] is not None and r["val_mi_stderr"] > 0 for r in held)
    strict = run(tmp_path / "strict", "--switch-k-stderr", "1000", "--mi-estimator", "dataset")
    assert [r["aggressive"] for r in strict] == [True, False, False]  # no rise counts: out after epoch 0
    assert strict[0]["left_aggressive_at"] == strict[0]["steps"]


def test_bucket_widths_option_parses_and_refuses_bad_values():
    from examples.text.cli import _widths, build_parser

    assert _widths("32,16, 64") == [16, 32, 64] and _widths(None) is None
    for bad in ("16,x", "2", ""):
        with pytest.raises(SystemExit, match="--bucket-widths"):
            _widths(bad)
    args = build_parser().parse_args(["train", "--out", "o", "--precision", "bf16", "--inner-step", "cuda_graph",
                                      "--bucket-widths", "16,32"])
    assert (args.precision, args.inner_step, args.bucket_widths) == ("bf16", "cuda_graph", "16,32")
