"""benchmarks.parity: config writing, output parsing, batching, tables, and both sides on tiny runs.

Nothing here needs the paper's code: the reference's output format is reproduced in a fixture written
for these tests, and the subprocess path runs a stand-in ``text.py`` written below that reads the
config the harness wrote and prints lines in that format.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import math
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from benchmarks.core.reference import CONFIG_NAME, ReferenceOutputError, reference_env
from benchmarks.core.side_by_side import make_result
from benchmarks.parity import cli
from benchmarks.parity.batches import RandomBatches, ShuffledBatches, equal_length_batches
from benchmarks.parity.data import prepare_splits
from benchmarks.parity.ours import MAX_INNER_STEPS, build_vocab, run_ours
from benchmarks.parity.reference import (parse_reference_output, prepare_reference, reference_command,
                                         run_reference, write_config)
from benchmarks.parity.runner import run_side
from benchmarks.parity.spec import RunSpec, reference_seeds
from benchmarks.parity.table import aggregate, format_markdown, format_table, read_json, verdicts, write_json

# What the reference prints, in its format (numbers made up for this test): an aggressive run of
# 3 epochs that leaves the aggressive phase at the end of epoch 1, then the final evaluation.
FIXTURE = """\
save path models/parity/x.pt
Train data: 40 samples
finish reading datasets, vocab size is 57
dropped sentences: 0
epoch: 0, iter: 0, avg_loss: 30.1000, kl: 0.0100, mi: 0.0010, recon: 30.0900,au 0, time elapsed 1.50s
pre mi:0.0000. cur mi:0.2000
kl weight 1.0000
VAL --- avg_loss: 29.0000, kl: 0.5000, mi: 0.2000, recon: 28.5000, nll: 29.0000, ppl: 100.0000
1 active units
update best loss
TEST --- avg_loss: 29.5000, kl: 0.5000, mi: 0.1000, recon: 29.0000, nll: 29.5000, ppl: 110.0000
epoch: 1, iter: 3, avg_loss: 28.0000, kl: 0.6000, mi: 0.1500, recon: 27.4000,au 1, time elapsed 5.00s
pre mi:0.2000. cur mi:0.1500
STOP BURNING
kl weight 1.0000
VAL --- avg_loss: 28.0000, kl: 0.6000, mi: 0.1500, recon: 27.4000, nll: 28.0000, ppl: 90.0000
1 active units
update best loss
epoch: 2, iter: 6, avg_loss: 27.0000, kl: 0.7000, recon: 26.3000,time elapsed 8.00s
kl weight 1.0000
VAL --- avg_loss: 28.5000, kl: 0.7000, mi: 0.3000, recon: 27.8000, nll: 28.5000, ppl: 95.0000
2 active units
TEST --- avg_loss: 27.2500, kl: 0.6250, mi: 0.4321, recon: 26.6250, nll: 27.2500, ppl: 85.5000
2 active units
iw nll computing 0%
iw nll computing 10%
iw nll: 26.9876, iw ppl: 80.1234
"""


def _stamped(text: str, times):
    lines = text.splitlines()
    assert len(lines) == len(times)
    return list(zip(times, lines))


def test_parse_reads_the_final_evaluation_and_the_phase():
    out = parse_reference_output(FIXTURE)
    m = out["metrics"]
    # the LAST TEST line (the best model's), not the in-loop one after epoch 0
    assert (m["kl"], m["mi"], m["neg_elbo"], m["ppl"]) == (0.625, 0.4321, 27.25, 85.5)
    assert m["au"] == 2 and (m["iw_nll"], m["iw_ppl"]) == (26.9876, 80.1234)
    assert out["aggressive_epochs"] == 2 and out["epochs_run"] == 3
    assert out["val_mi"] == [0.2, 0.15, 0.3]
    assert out["val_neg_elbo"] == [29.0, 28.0, 28.5]
    assert (out["train_size"], out["vocab_size"]) == (40, 57)
    assert out["train_seconds"] is None and out["iw_seconds"] is None  # no time stamps in a string


def test_parse_times_training_and_iw_from_line_stamps():
    n = len(FIXTURE.splitlines())
    times = [float(i) for i in range(n)]  # line i printed at i seconds
    names = FIXTURE.splitlines()
    first_log, final = 4, max(i for i, t in enumerate(names) if t.startswith("TEST"))
    in_loop_test = names.index(next(t for t in names if t.startswith("TEST")))
    times[in_loop_test] += 0.5  # the in-loop test took 1.5 s instead of 1
    for i in range(in_loop_test + 1, n):
        times[i] += 0.5
    out = parse_reference_output(_stamped(FIXTURE, times))
    start = times[first_log] - 1.5  # the log line says 1.50 s since the loop started
    expected_train = times[final - 1] - start - 1.5
    assert out["train_seconds"] == pytest.approx(expected_train)
    iw_line = n - 1
    assert out["iw_seconds"] == pytest.approx(times[iw_line] - times[final + 1])


@pytest.mark.parametrize("drop", ["TEST ---", "iw nll:"])
def test_parse_names_the_missing_line(drop):
    text = "\n".join(line for line in FIXTURE.splitlines() if not line.startswith(drop))
    with pytest.raises(ReferenceOutputError, match=drop.split()[0]):
        parse_reference_output(text)


def _spec(tmp_path: Path, **changes) -> RunSpec:
    files = {}
    for split, n in (("train", 40), ("valid", 12), ("test", 12)):
        path = tmp_path / f"{split}.txt"
        rng = torch.Generator().manual_seed(len(split))
        lines = []
        for _ in range(n):
            length = int(torch.randint(2, 5, (1,), generator=rng))
            lines.append(" ".join(f"w{int(t)}" for t in torch.randint(0, 12, (length,), generator=rng)))
        path.write_text("\n".join(lines) + "\n")
        files[split] = str(path)
    values = dict(data="tiny", embed_dim=6, hidden_dim=8, latent_dim=2, batch_size=8, epochs=1, iw_samples=100,
                  mode="aggressive", seed=101, **files)
    values.update(changes)
    return RunSpec(**values)


def test_spec_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="multiple of 100"):
        _spec(tmp_path, iw_samples=50)
    with pytest.raises(ValueError, match="mode"):
        _spec(tmp_path, mode="fast")
    with pytest.raises(ValueError, match="batch_size"):
        _spec(tmp_path, batch_size=0)
    spec = _spec(tmp_path, train=str(tmp_path / "missing.txt"))
    with pytest.raises(FileNotFoundError, match="train"):
        spec.check_files()


def test_write_config_gives_the_reference_its_settings(tmp_path):
    spec = _spec(tmp_path, latent_dim=3, epochs=4)
    (tmp_path / "copy" / "config").mkdir(parents=True)
    path = write_config(tmp_path / "copy", spec)
    assert path.name == f"config_{CONFIG_NAME}.py"
    loaded = importlib.util.spec_from_file_location("cfg", path)
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    p = module.params
    assert (p["nz"], p["ni"], p["enc_nh"], p["dec_nh"]) == (3, 6, 8, 8)
    assert (p["batch_size"], p["epochs"], p["dec_dropout_in"], p["dec_dropout_out"]) == (8, 4, 0.5, 0.5)
    assert p["test_nepoch"] > p["epochs"]  # only the epoch-0 in-loop test
    assert Path(p["train_data"]).is_absolute() and Path(p["train_data"]).read_text() == Path(spec.train).read_text()
    assert p["val_data"] == str(Path(spec.valid).resolve()) and p["test_data"] == str(Path(spec.test).resolve())


STAND_IN = '''\
"""A stand-in for the paper's text.py (tests only): reads the harness's config, prints its format."""
import argparse, importlib, sys
seed_set = [783435, 101, 202]
p = argparse.ArgumentParser()
for a in ("--dataset", "--aggressive", "--kl_start", "--warm_up", "--taskid", "--iw_nsamples"):
    p.add_argument(a)
args = p.parse_args()
params = importlib.import_module("config.config_" + args.dataset).params
n_train = sum(1 for line in open(params["train_data"]) if line.split())
n_test = sum(1 for line in open(params["test_data"]) if line.split())
aggressive = int(args.aggressive)
print("Train data: %d samples" % n_train)
print("epoch: 0, iter: 0, avg_loss: 1.0, kl: 0.1, recon: 0.9,time elapsed 0.01s")
for epoch in range(params["epochs"]):
    if aggressive:
        print("pre mi:0.0000. cur mi:0.1000")
    print("VAL --- avg_loss: 1.0000, kl: 0.1000, mi: 0.1000, recon: 0.9000, nll: 1.0000, ppl: 2.0000")
    print("%d active units" % params["nz"])
# the final numbers encode what the script was given, so the test can check the plumbing
print("TEST --- avg_loss: %d.0000, kl: %d.0000, mi: %d.0000, recon: 0.0000, nll: 1.0000, ppl: 2.0000"
      % (n_test, params["batch_size"], seed_set[int(args.taskid)]))
print("%d active units" % params["nz"])
print("iw nll computing 0%")
print("iw nll: %s.0000, iw ppl: 3.0000" % args.iw_nsamples)
'''


def _stand_in(tmp_path: Path) -> Path:
    ref = tmp_path / "paper-code"
    for sub in ("data", "modules", "config"):
        (ref / sub).mkdir(parents=True)
        (ref / sub / "__init__.py").write_text("")
    (ref / "logger.py").write_text("")
    (ref / "text.py").write_text(STAND_IN)
    return ref


def test_prepare_reference_copies_and_leaves_the_checkout_alone(tmp_path):
    ref = _stand_in(tmp_path)
    before = sorted(p.relative_to(ref) for p in ref.rglob("*"))
    copy = prepare_reference(ref, tmp_path / "work")
    spec = _spec(tmp_path)
    write_config(copy, spec)
    assert (copy / "text.py").read_text() == STAND_IN
    assert sorted(p.relative_to(ref) for p in ref.rglob("*")) == before  # nothing written there
    assert reference_seeds(copy / "text.py") == [783435, 101, 202]
    command = reference_command(spec, copy, "python")
    assert command[command.index("--taskid") + 1] == "1" and command[command.index("--aggressive") + 1] == "1"
    with pytest.raises(ValueError, match="seeds"):
        reference_command(_spec(tmp_path, seed=7), copy, "python")
    (ref / "modules" / "__init__.py").unlink()
    (ref / "modules").rmdir()
    with pytest.raises(FileNotFoundError, match="modules"):
        prepare_reference(ref, tmp_path / "work2")


def test_reference_env_has_one_thread_and_no_gpu():
    env = reference_env({"PYTHONPATH": "/somewhere", "HOME": "/h"})
    assert env["OMP_NUM_THREADS"] == "1" and env["CUDA_VISIBLE_DEVICES"] == "" and "PYTHONPATH" not in env


def test_run_reference_through_a_subprocess(tmp_path):
    ref = _stand_in(tmp_path)
    spec = _spec(tmp_path, mode="basic", seed=202, epochs=2, iw_samples=300)
    out = run_reference(spec, ref, tmp_path / "work")
    m = out["metrics"]
    assert (m["neg_elbo"], m["kl"], m["mi"]) == (12.0, 8.0, 202.0)  # test size, batch size, seed
    assert m["iw_nll"] == 300.0 and m["au"] == 2
    assert out["epochs_run"] == 2 and out["aggressive_epochs"] == 0
    assert out["train_seconds"] is not None and out["train_seconds"] >= 0 and out["wall_seconds"] > 0
    assert Path(out["log"]).is_file()
    (ref / "text.py").write_text(STAND_IN + "\nraise SystemExit(3)\n")
    with pytest.raises(ReferenceOutputError, match="code 3"):
        run_reference(spec, ref, tmp_path / "work")
    failed = run_side(spec, "reference", tmp_path / "work3", reference_dir=ref)
    assert "code 3" in failed["error"] and failed["side"] == "reference" and failed["seed"] == 202


def test_prepare_splits_cuts_and_decompresses(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with gzip.open(src / "c.train.txt.gz", "wt") as fh:
        fh.write("a b\n\n c  d \ne\nf g h\n")
    (src / "c.valid.txt").write_text("x\ny\n")
    (src / "c.test.txt").write_text("p\nq\nr\n")
    paths = prepare_splits(src, tmp_path / "out", {"train": 2, "test": None})
    assert paths["train"].read_text() == "a b\nc d\n"  # the empty line is not counted
    assert paths["valid"].read_text() == "x\ny\n" and paths["test"].read_text() == "p\nq\nr\n"
    with pytest.raises(ValueError, match="train"):
        prepare_splits(src, tmp_path / "out", {"train": 1})
    short = prepare_splits(src, tmp_path / "short", {"train": 2}, max_length=1)
    assert short["train"].read_text() == "e\n" and short["test"].read_text() == "p\nq\nr\n"


def test_prepare_splits_max_vocab_writes_rare_words_as_unk(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    # training counts: a 3, b 2, c 1, d 1 (c before d on the alphabetical tie-break)
    (src / "c.train.txt").write_text("a b a\nc a b\nd\n")
    (src / "c.valid.txt").write_text("a z\nd c\n")
    (src / "c.test.txt").write_text("b q\nc\n")
    paths = prepare_splits(src, tmp_path / "out", max_vocab=7)  # 4 specials + a, b, c
    assert paths["train"].read_text() == "a b a\nc a b\n<unk>\n"
    assert paths["valid"].read_text() == "a <unk>\n<unk> c\n"
    assert paths["test"].read_text() == "b <unk>\nc\n"
    for bad in (4, 0, True, 5.0):
        with pytest.raises(ValueError, match="max_vocab"):
            prepare_splits(src, tmp_path / "bad", max_vocab=bad)


def test_equal_length_batches_group_by_exact_length():
    ids = [[5], [6, 7], [8], [9, 10], [11], [12, 13, 14], [15]]
    batches = equal_length_batches(ids, batch_size=3)
    assert [tuple(b.shape) for b in batches] == [(3, 3), (1, 3), (2, 4), (1, 5)]
    assert all(bool((b != 0).all()) for b in batches)  # no padding anywhere
    got = sorted(tuple(row[1:-1].tolist()) for b in batches for row in b)
    assert got == sorted(tuple(s) for s in ids)
    assert all(int(b[0, 0]) == 1 and int(b[0, -1]) == 2 for b in batches)  # <s> ... </s>


def test_shuffled_and_random_batches_are_seeded():
    batches = [torch.full((1, 3), i) for i in range(6)]
    one, two = ShuffledBatches(batches, seed=3), ShuffledBatches(batches, seed=3)
    first = [int(b[0, 0]) for b in one]
    assert sorted(first) == list(range(6)) and first == [int(b[0, 0]) for b in two]
    later = [[int(b[0, 0]) for b in one] for _ in range(4)]
    assert any(order != first for order in later)  # a new order per pass
    draws = [int(b[0, 0]) for _ in range(5) for b in RandomBatches(batches, seed=0)]
    assert len(draws) == 30 and len(set(draws)) > 1 and len(set(draws)) < 30  # with replacement
    assert len(RandomBatches(batches, seed=0)) == 6


def test_vocab_in_order_of_first_appearance():
    vocab = build_vocab([["b", "a"], ["c", "b"], ["a", "d"]])
    assert vocab.itos[4:] == ["b", "a", "c", "d"] and vocab.itos[:4] == ["<pad>", "<s>", "</s>", "<unk>"]


def test_ours_runs_the_same_spec(tmp_path):
    spec = _spec(tmp_path, epochs=2)
    out = run_ours(spec)
    m = out["metrics"]
    for key in ("kl", "mi", "iw_nll", "neg_elbo", "iw_ppl", "ppl"):
        assert math.isfinite(m[key]), key
    assert 0 <= m["au"] <= spec.latent_dim and m["kl"] > -1e-6  # closed-form KL, float32 rounding
    assert out["aggressive_epochs"] >= 1 and out["epochs_run"] == 2 and len(out["val_mi"]) == 2
    assert out["train_size"] == 40 and out["vocab_size"] == 4 + len({w for line in Path(spec.train).read_text().split("\n")
                                                                       for w in line.split()})
    assert out["best_epoch"] in (0, 1) and out["train_seconds"] > 0
    basic = run_ours(_spec(tmp_path, mode="basic", epochs=1))
    assert basic["aggressive_epochs"] == 0


def test_our_cap_is_the_most_inner_steps_the_papers_loop_takes():
    """With a loss that improves at every step the paper's window test never ends its loop, so it runs
    to its own cap; the parity runs give our trainer that many inner steps at most."""
    from torch import nn

    from benchmarks.core.paper_update import paper_catch_up, paper_optimizers

    model = nn.Module()
    model.encoder, model.decoder = nn.Linear(1, 1), nn.Linear(1, 1)
    losses = iter(range(10_000, 0, -1))

    def improving(model, x, kl_weight):
        loss = model.encoder.weight.sum() * 0 + torch.full((x.shape[0],), float(next(losses)))
        return loss, loss.detach(), torch.zeros(x.shape[0])

    x = torch.ones(2, 5, dtype=torch.long)
    out = paper_catch_up(model, *paper_optimizers(model), x, lambda: x, forward=improving)
    assert out.steps == MAX_INNER_STEPS


def _result(side, mode, seed, mi, au, iw, data="d", clip="joint"):
    return make_result({"data": data, "mode": mode, "seed": seed, "ours_clip": clip}, side,
                       {"metrics": {"kl": 1.0, "mi": mi, "au": au, "iw_nll": iw, "neg_elbo": iw + 1},
                        "train_seconds": 10.0, "iw_seconds": 1.0, "aggressive_epochs": 1, "epochs_run": 2})


def test_table_verdicts_use_the_spread_over_seeds():
    results = [_result("reference", "aggressive", s, mi, 2, iw) for s, mi, iw in ((1, 1.0, 50.0), (2, 1.2, 52.0))]
    ours_close = [_result("ours", "aggressive", s, mi, 2, iw) for s, mi, iw in ((1, 0.95, 52.3), (2, 1.05, 52.3))]
    v = verdicts(results + ours_close)["d"]
    spread_mi = max(torch.tensor([1.0, 1.2]).std().item(), torch.tensor([0.95, 1.05]).std().item())
    assert v["mi"]["spread"] == pytest.approx(spread_mi)
    assert v["mi"]["pass"] and v["au"]["pass"] and v["iw_nll"]["pass"]  # 1.0 >= 1.1 - 0.141; 52.3 <= 51 + 1.414
    ours_worse = [_result("ours", "aggressive", s, mi, 1, iw) for s, mi, iw in ((1, 0.7, 54.0), (2, 0.72, 54.2))]
    v = verdicts(results + ours_worse)["d"]
    assert not v["mi"]["pass"] and not v["au"]["pass"] and not v["iw_nll"]["pass"]
    agg = aggregate(results + ours_close)
    assert agg["d/aggressive/reference"]["iw_nll"]["mean"] == pytest.approx(51.0)
    assert agg["d/aggressive/ours"]["mi"]["n"] == 2


def test_table_text_markdown_and_json(tmp_path):
    results = [_result("reference", "basic", 1, 0.1, 0, 60.0), _result("ours", "basic", 1, 0.2, 1, 59.0),
               _result("reference", "aggressive", 1, 1.0, 2, 58.0), _result("ours", "aggressive", 1, 1.1, 2, 57.5),
               make_result({"data": "d", "mode": "basic", "seed": 2}, "ours", {"error": "RuntimeError: boom"})]
    text = format_table(results)
    assert "57.500" in text and "mean ± sd (1)" in text and "FAILED d/basic/ours/seed 2" in text
    assert "d (aggressive): mi ours 1.100 >= ref 1.000" in text
    md = format_markdown(results)
    assert md.startswith("| data | mode | side | seed | KL |") and "| d | aggressive | ours | 1 |" in md
    path = tmp_path / "r.json"
    write_json(path, results, {"seeds": [1]})
    back = read_json(path)
    assert back["results"] == json.loads(json.dumps(results)) and back["settings"] == {"seeds": [1]}
    assert back["verdicts"]["d"]["mi"]["pass"] is True
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="format"):
        read_json(path)


def test_cli_runs_both_sides_and_writes_json(tmp_path, capsys):
    ref = _stand_in(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    spec = _spec(data)
    results = cli.main(["--reference-dir", str(ref), "--data", str(data), "--name", "tiny", "--embed-dim", "6",
                        "--hidden-dim", "8", "--latent-dim", "2", "--batch-size", "8", "--epochs", "1",
                        "--iw-samples", "100", "--seeds", "101", "--modes", "aggressive", "--jobs", "2",
                        "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path / "out")])
    assert sorted(r["side"] for r in results) == ["ours", "reference"]
    assert all("error" not in r for r in results), [r.get("error") for r in results]
    ref_result = next(r for r in results if r["side"] == "reference")
    assert ref_result["metrics"]["mi"] == 101.0  # the stand-in echoes the seed it was given
    assert ref_result["metrics"]["neg_elbo"] == len(Path(spec.test).read_text().split("\n")) - 1
    saved = read_json(tmp_path / "out" / "parity_tiny.json")
    assert len(saved["results"]) == 2 and saved["settings"]["seeds"] == [101]
    printed = capsys.readouterr().out
    assert "tiny  aggressive  ours" in printed
    again = cli.main(["--from-json", str(tmp_path / "out" / "parity_tiny.json"), "--markdown"])
    assert len(again) == 2
    with pytest.raises(SystemExit):
        cli.main(["--data", str(data), "--name", "x"])  # the reference side needs --reference-dir


def test_run_command_stamps_lines_and_kill_children_ends_runs(tmp_path):
    import threading
    import time

    from benchmarks.core.side_by_side import kill_children, run_command

    code, lines, wall = run_command([sys.executable, "-c", "print('a'); print('b')"], tmp_path, {"PATH": "/usr/bin"})
    assert code == 0 and [t for _, t in lines] == ["a", "b"] and all(s <= wall for s, _ in lines)
    out = {}
    worker = threading.Thread(target=lambda: out.update(r=run_command(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"], tmp_path, {})))
    worker.start()
    deadline = time.time() + 30
    while time.time() < deadline and kill_children() == 0:
        time.sleep(0.05)
    worker.join(timeout=30)
    assert not worker.is_alive() and out["r"][0] != 0 and out["r"][2] < 60
    code, _, wall = run_command([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path, {}, timeout=0.5)
    assert code != 0 and wall < 30


# ---------------------------------------------------------------- the clipping options and the trace's helpers
from aggressive_vi import AggressiveTrainer  # noqa: E402
from benchmarks.parity.clipping import joint_clip_backward, joint_clip_factor  # noqa: E402
from benchmarks.parity.trace import copy_weights, freeze_row, max_weight_diff, summarise_trace  # noqa: E402
from examples.text.experiment import build_vae  # noqa: E402
from examples.text.presets import Preset  # noqa: E402


def _tiny_vae(seed=0, vocab=9):
    torch.manual_seed(seed)
    return build_vae(Preset(embed_dim=4, hidden_dim=5, latent_dim=2, batch_size=3, max_vocab=None,
                            dropout_in=0.0, dropout_out=0.0), vocab)


def _tiny_batch():
    return torch.tensor([[1, 4, 5, 6, 2], [1, 7, 8, 4, 2], [1, 5, 5, 8, 2]])


def test_spec_rejects_an_unknown_clip_mode(tmp_path):
    assert _spec(tmp_path).ours_clip == "joint"  # the library's default clip_scope
    saved = _spec(tmp_path).to_dict()
    # specs written before the option, or while the library clipped per network by default
    assert RunSpec.from_dict({k: v for k, v in saved.items() if k != "ours_clip"}).ours_clip == "network"
    assert RunSpec.from_dict(dict(saved, ours_clip="library")).ours_clip == "network"
    assert RunSpec.from_dict(dict(saved, ours_clip="joint")).ours_clip == "joint"
    with pytest.raises(ValueError, match="ours_clip"):
        _spec(tmp_path, ours_clip="paper")


def test_joint_clip_factor_is_clip_grad_norm_s():
    assert joint_clip_factor([3.0, 4.0], 5.0) == pytest.approx(5.0 / (5.0 + 1e-6))
    assert joint_clip_factor([3.0, 4.0], 10.0) == 1.0
    assert joint_clip_factor([6.0, 8.0], 5.0) == pytest.approx(0.5, rel=1e-6)
    grads = [torch.full((2,), 6.0 / math.sqrt(2)), torch.full((2,), 8.0 / math.sqrt(2))]  # norms 6 and 8
    params = [torch.zeros(2, requires_grad=True) for _ in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    torch.nn.utils.clip_grad_norm_(params, 5.0)
    assert float(params[0].grad.norm()) == pytest.approx(6.0 * joint_clip_factor([6.0, 8.0], 5.0), rel=1e-6)
    with pytest.raises(ValueError, match="max_norm"):
        joint_clip_factor([1.0], 0.0)


def _grads(vae, x, max_norm):
    """Both networks' gradients of the batch-mean loss, then the joint-norm clipping factor."""
    vae.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    vae.elbo(x).loss.mean().backward()
    enc = [p.grad.clone() for p in vae.encoder.parameters()]
    dec = [p.grad.clone() for p in vae.decoder.parameters()]
    factor = joint_clip_factor([float(g.norm()) for g in enc + dec], max_norm)
    vae.zero_grad(set_to_none=True)
    return enc, dec, factor


def test_joint_clip_backward_scales_the_encoder_by_the_joint_norm_and_drops_the_decoder():
    vae, x = _tiny_vae(), _tiny_batch()
    max_norm = 1e-3  # far below the joint norm, so the factor is < 1 and distinguishes the two rules
    enc, dec, factor = _grads(vae, x, max_norm)
    assert factor < 1.0
    backward = joint_clip_backward(vae, max_norm)
    torch.manual_seed(5)
    backward(vae.elbo(x).loss.mean(), inputs=list(vae.encoder.parameters()))
    for p, g in zip(vae.encoder.parameters(), enc):
        torch.testing.assert_close(p.grad, g * factor, atol=0.0, rtol=1e-4)  # tiny values: no atol
    assert all(p.grad is None for p in vae.decoder.parameters())
    # the encoder-only norm of the result is below max_norm, so the trainer's own clip leaves it as is
    assert float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in vae.encoder.parameters()]))) \
        <= max_norm * (1 + 1e-5)
    vae.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    backward(vae.elbo(x).loss.mean())  # no inputs: a plain backward into both networks
    for p, g in zip(vae.decoder.parameters(), dec):
        torch.testing.assert_close(p.grad, g)


def test_clip_scope_joint_steps_one_network_with_the_joint_factor():
    x, max_norm, lr = _tiny_batch(), 1e-3, 0.5
    vae = _tiny_vae()
    enc, dec, factor = _grads(vae, x, max_norm)
    before_enc = [p.detach().clone() for p in vae.encoder.parameters()]
    before_dec = [p.detach().clone() for p in vae.decoder.parameters()]
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=lr),
                                torch.optim.SGD(vae.decoder.parameters(), lr=lr), clip_grad_norm=max_norm,
                                clip_scope="joint")
    torch.manual_seed(5)
    update = trainer.algorithm.encoder_update(x, 1.0)
    assert update.examples == 3 and math.isfinite(float(update.loss)) and bool(update.applied)
    assert all(p.grad is None for p in vae.decoder.parameters())  # the decoder's gradient is dropped
    for p, b, g in zip(vae.encoder.parameters(), before_enc, enc):
        torch.testing.assert_close(p.detach(), b - lr * factor * g, atol=1e-9, rtol=1e-5)
    for p, b in zip(vae.decoder.parameters(), before_dec):
        assert torch.equal(p.detach(), b)  # the decoder is not stepped in an inner step
    vae2 = _tiny_vae()
    enc2, dec2, factor2 = _grads(vae2, x, max_norm)
    trainer2 = AggressiveTrainer(vae2, torch.optim.SGD(vae2.encoder.parameters(), lr=lr),
                                 torch.optim.SGD(vae2.decoder.parameters(), lr=lr), clip_grad_norm=max_norm,
                                 clip_scope="joint")
    torch.manual_seed(5)
    terms, applied = trainer2.algorithm.decoder_update(x, 1.0)
    assert applied and terms.loss.shape == (3,) and not terms.loss.requires_grad
    for p, b, g in zip(vae2.decoder.parameters(), before_dec, dec2):
        torch.testing.assert_close(p.detach(), b - lr * factor2 * g, atol=1e-9, rtol=1e-5)
    for p, b in zip(vae2.encoder.parameters(), before_enc):
        assert torch.equal(p.detach(), b)


def test_copy_weights_and_max_weight_diff():
    a, b = _tiny_vae(seed=0), _tiny_vae(seed=1)
    diff, _ = max_weight_diff(a, b)
    assert diff > 0
    names = copy_weights(a, b)
    assert "decoder.pred_linear.weight" in names and max_weight_diff(a, b)[0] == 0.0
    with torch.no_grad():
        b.decoder.trans_linear.weight[0, 0] += 0.25
    diff, where = max_weight_diff(a, b)
    assert diff == pytest.approx(0.25) and where == "decoder.trans_linear.weight"
    with pytest.raises(ValueError, match="shapes differ"):
        copy_weights(a, _tiny_vae(vocab=10))
    with pytest.raises(ValueError, match="names differ"):
        copy_weights(a.encoder, b)


def test_freeze_row_zeroes_that_row_s_gradient_only():
    emb = torch.nn.Embedding(5, 3)
    freeze_row(emb.weight, 4)
    emb(torch.tensor([0, 4, 4, 2])).sum().backward()
    assert torch.equal(emb.weight.grad[4], torch.zeros(3))
    assert torch.equal(emb.weight.grad[0], torch.ones(3)) and torch.equal(emb.weight.grad[2], torch.ones(3))


def test_summarise_trace_reports_mean_max_and_first_divergence():
    rows = [{"ref_loss": 1.0, "ours_loss": 1.0, "ref_kl": 0.0, "ours_kl": 0.0},
            {"ref_loss": 2.0, "ours_loss": 2.00001, "ref_kl": 0.0, "ours_kl": 0.0},
            {"ref_loss": 3.0, "ours_loss": 3.5, "ref_kl": 0.1, "ours_kl": 0.0}]
    out = summarise_trace(rows, keys=("loss", "kl", "grad_norm"))
    assert out["loss"]["first_above_1e-4"] == 2 and out["loss"]["max_abs_diff"] == pytest.approx(0.5)
    assert out["loss"]["mean_diff"] == pytest.approx((0.0 + 0.00001 + 0.5) / 3)
    assert out["kl"]["first_above_1e-4"] == 2 and out["kl"]["mean_diff"] == pytest.approx(-0.1 / 3)
    assert "grad_norm" not in out  # no such columns
    assert summarise_trace(rows[:1])["loss"]["first_above_1e-4"] == -1


def test_side_label_and_relabel_put_clip_variants_beside_ours():
    from benchmarks.core.side_by_side import relabel
    from benchmarks.parity.table import side_label
    ref = _result("reference", "aggressive", 1, 1.4, 2, 47.0)
    ref2 = _result("reference", "aggressive", 2, 1.5, 2, 47.2)
    default = [_result("ours", "aggressive", s, mi, 2, 47.5) for s, mi in ((1, 1.6), (2, 1.5))]
    network = [make_result({"data": "e", "mode": "aggressive", "seed": s, "ours_clip": "network"}, "ours",
                           {"metrics": {"kl": 1.0, "mi": mi, "au": 2, "iw_nll": 48.0, "neg_elbo": 49.0}})
               for s, mi in ((1, 1.0), (2, 1.1))]
    assert side_label(ref) == "reference" and side_label(default[0]) == "ours"
    assert side_label(network[0]) == "ours/network"
    assert side_label(make_result({"data": "d", "mode": "basic", "seed": 1, "ours_clip": "library"}, "ours", {})) \
        == "ours/network"  # saved while the library's default was per-network clipping
    merged = relabel([ref, ref2] + default + network, "d")
    assert {r["data"] for r in merged} == {"d"} and network[0]["data"] == "e"  # copies; the input is unchanged
    v = verdicts(merged)
    assert set(v) == {"d", "d [ours/network]"}
    assert v["d"]["mi"]["pass"] and not v["d [ours/network]"]["mi"]["pass"]
    assert v["d"]["mi"]["ours"] == pytest.approx(1.55)
    text = format_table(merged)
    assert "ours/network" in text and "d (aggressive): mi ours 1.550 >= ref 1.450" in text
    assert text.index("ours/network") > text.index("  ours  ")  # the variant's rows after ours' rows


def test_the_papers_annealing_recipe_reaches_both_sides(tmp_path):
    """kl_start/warm_up: passed to text.py as --kl_start/--warm_up, and our side anneals linearly to 1
    over warm_up epochs (the KL weight at each epoch's last update: 0.1 + 0.9 / 2 after one of two)."""
    ref = _stand_in(tmp_path)
    copy = prepare_reference(ref, tmp_path / "work")
    spec = _spec(tmp_path, kl_start=0.1, warm_up=2, epochs=2)
    command = reference_command(spec, copy, "python")
    assert command[command.index("--kl_start") + 1] == "0.1" and command[command.index("--warm_up") + 1] == "2"
    assert run_ours(spec)["kl_weight"] == pytest.approx([0.55, 1.0])
    assert run_ours(_spec(tmp_path, epochs=1))["kl_weight"] == [1.0]  # the default: no annealing
    for bad, name in (({"kl_start": 1.5}, "kl_start"), ({"warm_up": 0}, "warm_up")):
        with pytest.raises(ValueError, match=name):
            _spec(tmp_path, **bad)
