"""``python -m examples.text compare`` (the README's main command) at the tiny scale: the same
model trained both ways, its lines, its table and its JSON."""
import contextlib
import io
import json

import pytest
from toy_corpus import write_toy_corpus

from aggressive_vi import latest_checkpoint
from examples.text import compare
from examples.text.cli import main

# 96 training sentences in batches of 16 (tiny preset): 6 decoder updates per epoch


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_toy_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def compared(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        summary = main(["compare", "--data", str(corpus), "--preset", "tiny", "--epochs", "3", "--iw-samples", "2",
                        "--max-aggressive-epochs", "1", "--seed", "5", "--out", str(out)])
    return out, summary, printed.getvalue()


def test_compare_trains_the_same_model_both_ways(compared):
    out, summary, _ = compared
    commands = summary["commands"]
    for mode in compare.MODES:  # the same options but the mode and the directory, one thread each
        argv = commands[mode]
        i = argv.index("--aggressive")
        assert argv[i + 1] == ("on" if mode == "aggressive" else "off")
        assert argv[argv.index("--out") + 1] == str(out / mode)
        assert argv[argv.index("--threads") + 1] == "1"
        assert argv[argv.index("--seed") + 1] == "5" and argv[argv.index("--preset") + 1] == "tiny"
    strip = lambda argv: [a for a in argv if a not in ("on", "off") and not a.startswith(str(out))]  # noqa: E731
    assert strip(commands["aggressive"]) == strip(commands["basic"])
    runs = summary["runs"]
    assert runs["aggressive"]["aggressive"] is True and runs["basic"]["aggressive"] is False
    assert runs["aggressive"]["aggressive_epochs"] == 1 and runs["basic"]["aggressive_epochs"] == 0
    assert runs["aggressive"]["switch_after"] == 6 and runs["basic"]["switch_after"] is None  # after epoch 0
    for mode in compare.MODES:
        assert runs[mode]["epochs"] == 3 and runs[mode]["n_sentences"] == 32
        assert (out / mode / "model.pt").is_file() and latest_checkpoint(out / mode / "checkpoints")
        history = json.loads((out / mode / "history.json").read_text())
        assert len(history) == 3
    saved = json.loads((out / "compare.json").read_text())
    assert saved["runs"]["aggressive"]["iw_nll"] == pytest.approx(runs["aggressive"]["iw_nll"])
    assert saved["preset"]["latent_dim"] == 4 and saved["wall_seconds"] > 0


def test_the_comparison_table_puts_the_runs_side_by_side():
    runs = {"aggressive": {"mi": 0.54, "au": 5, "kl": 0.764, "iw_nll": 36.33, "ppl": 36.63, "aggressive_epochs": 4,
                           "switch_after": 328, "train_seconds": 190.2, "n_sentences": 256, "iw_samples": 50},
            "basic": {"mi": -0.045, "au": 0, "kl": 0.006, "iw_nll": 36.47, "ppl": 37.13, "aggressive_epochs": 0,
                      "switch_after": None, "train_seconds": 18.0, "n_sentences": 256, "iw_samples": 50}}
    table = compare.format_comparison(runs, latent_dim=8)
    lines = table.splitlines()
    assert lines[0].split() == ["aggressive", "basic"]
    rows = {line[:24].strip(): line[24:].split() for line in lines[1:] if line.strip() and "  " in line}
    assert rows["MI (nats)"] == ["0.540", "-0.045"]
    assert rows["active units (of 8)"] == ["5", "0"]
    assert rows["KL (nats)"] == ["0.764", "0.006"]
    assert rows["IW-NLL (nats/sentence)"] == ["36.33", "36.47"]
    assert rows["switch to basic"] == ["update", "328", "-"]
    assert rows["training time (s)"] == ["190", "18"]
    assert "+-0.25 nats" in table  # 2 sqrt(8 / 2 / 256): the MI of a collapsed latent


def test_the_compare_command_prints_both_runs_and_the_table(compared):
    """Every line of a run comes prefixed with its name, the switch included; the table follows."""
    printed = compared[2]
    assert "aggressive | epoch   0 |" in printed and "basic      | epoch   2 |" in printed
    switch = "then basic: left the aggressive phase after 6 decoder updates"
    assert "aggressive | epoch   0 |" in printed.split(switch)[0]
    table = printed[printed.index("MI (nats)"):]
    for row in ("active units (of 4)", "KL (nats)", "IW-NLL (nats/sentence)", "switch", "training time (s)"):
        assert row in table
    assert "update 6" in table


def test_resume_is_passed_only_to_a_run_with_a_checkpoint(tmp_path):
    ckpts = tmp_path / "aggressive" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "checkpoint-e0001-s000000006.pt").write_bytes(b"")
    assert "--resume" in compare.train_command("aggressive", [], tmp_path, jobs=2, resume=True)
    assert "--resume" not in compare.train_command("basic", [], tmp_path, jobs=2, resume=True)
    assert "--resume" not in compare.train_command("aggressive", [], tmp_path, jobs=2, resume=False)
    assert "--threads" not in compare.train_command("basic", [], tmp_path, jobs=1, resume=False)  # torch's default


def test_a_failing_run_is_an_error_naming_it(corpus, tmp_path):
    (tmp_path / "basic" / "checkpoints").mkdir(parents=True)  # a fresh run refuses a directory with checkpoints
    (tmp_path / "basic" / "checkpoints" / "checkpoint-e0001-s000000006.pt").write_bytes(b"")
    with pytest.raises(ChildProcessError, match="the basic run failed"):
        main(["compare", "--data", str(corpus), "--preset", "tiny", "--epochs", "1", "--out", str(tmp_path)])
