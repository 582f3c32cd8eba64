"""End-to-end check of ``benchmarks.remedies`` at tiny settings (seconds): every row trains what it says
(KL schedule, free-bits threshold, phase), the JSON and the table are written, and ``--from-json``
rebuilds the same table."""
from __future__ import annotations

import json

import pytest
import torch

from benchmarks import remedies, reproduce

TINY = ["--epochs", "2", "--max-train", "48", "--max-eval", "24", "--max-iw", "16", "--iw-samples", "3",
        "--window", "2", "--max-inner-steps", "4"]


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    out = tmp_path_factory.mktemp("remedies")
    torch.set_num_threads(1)
    doc = remedies.main(["--data", "synthetic", "--seeds", "0", "--out", str(out), *TINY])
    return out, doc


def test_every_row_trains_its_remedy(comparison):
    out, _ = comparison
    doc = json.loads((out / "remedies_synthetic.json").read_text())
    runs = {r["row"]: r for r in doc["runs"]}
    assert list(runs) == list(remedies.ROWS)
    for row, run in runs.items():
        threshold = "FreeBits(nats=0.25, per_dimension=True)" if row.endswith("free_bits") else "None"
        assert run["kl_threshold"] == threshold, row
        assert (run["aggressive_epochs"] > 0) == row.startswith("aggressive"), row
        assert run["history"][0]["kl_weight"] <= 1.0
    assert runs["cyclical"]["kl_schedule"] == "CyclicalKLAnnealing(cycle_epochs=0.5, ratio=0.5, start=0.0)"
    assert runs["anneal"]["kl_schedule"].startswith("LinearKLAnnealing(start=0.1")
    assert runs["beta"]["kl_schedule"] == "ConstantKL(weight=0.4)"
    assert runs["basic"]["kl_schedule"] == runs["free_bits"]["kl_schedule"] == "ConstantKL(weight=1.0)"
    assert doc["settings"]["optimizer"].startswith("SGD lr 1.0")  # the cpu scale's


def test_the_table_and_its_json(comparison):
    out, doc = comparison
    assert json.loads((out / "remedies.json").read_text()) == json.loads(json.dumps(doc))
    assert doc["format"] == remedies.FORMAT and doc["scale"] == "cpu" and doc["wall_seconds"] > 0
    cell = doc["data"]["synthetic"]
    assert cell["complete"] and cell["budget"]["max_train"] == 48 and cell["budget"]["epochs"] == 2
    assert list(cell["summary"]) == list(remedies.ROWS)
    assert cell["summary"]["basic"]["relative_time"]["mean"] == pytest.approx(1.0)
    for row in remedies.ROWS:
        for key in ("iw_nll", "kl", "mi", "au", "train_seconds", "relative_time"):
            assert cell["summary"][row][key]["n"] == 1, (row, key)
    table = (out / "remedies.md").read_text()
    assert "| data | row | IW-NLL | KL | MI | AU | train s | time / basic | seeds |" in table
    assert table.count("| synthetic |") == len(remedies.ROWS)
    again = remedies.main(["--data", "synthetic", "--out", str(out), "--from-json"])
    assert again["markdown"] == doc["markdown"] and again["wall_seconds"] == doc["wall_seconds"]


def test_each_scale_has_a_budget_for_every_data_set():
    for scale, budgets in remedies.SCALES.items():
        assert set(budgets) == set(reproduce.DATASETS), scale
    assert {b.preset for b in remedies.SCALES["paper"].values()} == {"paper"}
    assert remedies.SCALES["paper"]["text"].max_train is None and remedies.SCALES["paper"]["synthetic"].epochs == 50
