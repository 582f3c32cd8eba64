"""benchmarks.allocator: the variants' environments and one tiny run end to end (no timing asserted)."""
from __future__ import annotations

import json

from benchmarks import allocator


def test_each_variant_sets_or_removes_exactly_its_variables():
    base = {"MALLOC_TRIM_THRESHOLD_": "7", "PATH": "/bin", "PYTHONPATH": "/elsewhere"}
    default = allocator.child_env("default", 1, base)
    assert "MALLOC_TRIM_THRESHOLD_" not in default and "MALLOC_MMAP_THRESHOLD_" not in default  # the user's too
    both = allocator.child_env("both", 3, base)
    assert both["MALLOC_MMAP_THRESHOLD_"] == str(32 * 2 ** 20) and both["MALLOC_TRIM_THRESHOLD_"] == str(2 ** 30)
    assert both["OMP_NUM_THREADS"] == "3" and both["PATH"] == "/bin"
    assert both["PYTHONPATH"].split(":") == [str(allocator.ROOT), "/elsewhere"]
    trim = allocator.child_env("trim_1GiB", 1, base)
    assert trim["MALLOC_TRIM_THRESHOLD_"] == str(2 ** 30) and "MALLOC_MMAP_THRESHOLD_" not in trim


def test_a_tiny_run_times_every_measure_of_every_variant(tmp_path, capsys):
    out = tmp_path / "a.json"
    result = allocator.main(["--size", "tiny", "--rounds", "2", "--steps", "2", "--variants", "default", "both",
                             "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["medians"] == result["medians"] and set(result["runs"]) == {"default", "both"}
    for variant in ("default", "both"):
        assert len(result["runs"][variant]) == 2
        assert all(result["medians"][variant][m] > 0 for m in allocator.MEASURES)
    assert result["speedup_over_default"]["default"] == {m: 1.0 for m in allocator.MEASURES}
    assert "both" in capsys.readouterr().out
