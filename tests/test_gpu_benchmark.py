"""benchmarks/gpu.py runs end to end at tiny sizes on the CPU (its CUDA-only parts skipped), so that
a session lent a GPU spends its minutes measuring, not debugging the script."""
import json
import math

from benchmarks import gpu


def test_the_gpu_script_runs_on_the_cpu_and_writes_every_section(tmp_path):
    out = tmp_path / "gpu.json"
    gpu.main(["--device", "cpu", "--quick", "--out", str(out)])
    result = json.loads(out.read_text())
    sections = result["sections"]
    assert set(sections) == {"inner_step", "host_syncs", "iw_nll", "precision"}
    step = sections["inner_step"]
    assert set(step["median_s"]) == {"paper_procedure", "ours_eager"}  # captured: CUDA only
    assert step["ratio_to_paper"]["paper_procedure"] == 1.0
    assert sections["host_syncs"]["skipped"] == "needs CUDA"
    iw = sections["iw_nll"]
    assert all(math.isfinite(iw[k]["nll"]) and iw[k]["sentences_per_s"] > 0
               for k in ("one_sentence_loop", "batched_fp32", "batched_tf32"))
    assert len(sections["precision"]["fp32"]["loss"]) == 6
    assert result["command"].startswith("python -m benchmarks.gpu --device cpu")
