"""benchmarks/gpu.py runs end to end at tiny sizes on the CPU (its CUDA-only parts skipped with a
reason), so that a session lent a GPU spends its minutes measuring, not debugging the script.

The paper's code is never needed: a stand-in checkout in tmp_path has a ``modules`` package with the
paper's constructor signatures and the methods the benchmark calls (``forward``, ``sample``,
``log_probability``, ``loss``, ``nll_iw``), built here on our example text modules."""
import json
import math
import sys
import textwrap

import pytest
import torch

from benchmarks import gpu
from benchmarks.core.paper_modules import PaperDecoder, PaperEncoder, load_into_paper, protocol_vae
from benchmarks.core.reference import SizedVocab, import_reference, paper_vae
from examples.text.experiment import build_vae
from examples.text.presets import get_preset

_STAND_IN = '''
import math

import torch
from torch import nn

from examples.text import models


class LSTMEncoder(models.LSTMEncoder):
    def __init__(self, args, vocab_size, model_init, emb_init):
        super().__init__(vocab_size, args.ni, args.enc_nh, args.nz)
        self.nz = args.nz
        for p in self.parameters():
            model_init(p)
        emb_init(self.embed.weight)

    def sample(self, x, nsamples):
        mu, logvar = self(x)
        eps = torch.randn(mu.shape[0], nsamples, mu.shape[1], device=mu.device)
        return mu.unsqueeze(1) + (0.5 * logvar).exp().unsqueeze(1) * eps, (mu, logvar)


class LSTMDecoder(models.LSTMDecoder):
    def __init__(self, args, vocab, model_init, emb_init):
        super().__init__(len(vocab), args.ni, args.dec_nh, args.nz, dropout_in=args.dec_dropout_in,
                         dropout_out=args.dec_dropout_out)
        self.register_buffer("class_weight", torch.ones(len(vocab)))  # a buffer of its own, kept on load
        for p in self.parameters():
            model_init(p)
        emb_init(self.embed.weight)

    def log_probability(self, x, z):
        return self.log_prob(x, z)


class VAE(nn.Module):
    def __init__(self, encoder, decoder, args):
        super().__init__()
        self.encoder, self.decoder, self.args = encoder, decoder, args
        self.prior_device = args.device

    def loss(self, x, kl_weight, nsamples=1):
        z, (mu, logvar) = self.encoder.sample(x, nsamples)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=1)
        rec = -self.decoder.log_probability(x, z).mean(dim=1)
        return rec + kl_weight * kl, rec, kl

    def nll_iw(self, x, nsamples, ns=100):
        parts = []
        for _ in range(nsamples // ns):
            z, (mu, logvar) = self.encoder.sample(x, ns)
            log_q = -0.5 * ((z - mu.unsqueeze(1)).pow(2) / logvar.exp().unsqueeze(1)
                            + logvar.unsqueeze(1) + math.log(2 * math.pi)).sum(-1)
            log_p = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)
            parts.append(self.decoder.log_probability(x, z) + log_p - log_q)
        return -(torch.logsumexp(torch.cat(parts, dim=-1), dim=-1) - math.log(nsamples))
'''


@pytest.fixture
def stand_in(tmp_path):
    root = tmp_path / "checkout"
    (root / "modules").mkdir(parents=True)
    (root / "modules" / "__init__.py").write_text(textwrap.dedent(_STAND_IN))
    yield root
    sys.modules.pop("modules", None)


def test_the_paper_modules_behind_our_protocols(stand_in):
    modules = import_reference(stand_in, ("modules",))["modules"]
    torch.manual_seed(0)
    paper = paper_vae(modules, SizedVocab(40), embed_dim=6, hidden_dim=8, latent_dim=3)
    vae = protocol_vae(paper)
    assert isinstance(vae.encoder, PaperEncoder) and isinstance(vae.decoder, PaperDecoder)
    assert vae.latent_dim == 3
    x = torch.randint(3, 40, (4, 6))
    x[:, 0], x[:, -1] = 1, 2
    assert vae.elbo(x).loss.shape == (4,)
    assert {id(p) for p in vae.parameters()} == {id(p) for p in paper.parameters()}  # shared, not copied
    ours = build_vae(get_preset("tiny").override(embed_dim=6, hidden_dim=8, latent_dim=3), 40)
    load_into_paper(paper, ours)
    z = torch.randn(4, 2, 3)
    ours.eval(), paper.eval()
    assert torch.equal(ours.decoder.log_prob(x, z), paper.decoder.log_probability(x, z))
    other = build_vae(get_preset("tiny").override(embed_dim=6, hidden_dim=9, latent_dim=3), 40)
    with pytest.raises(KeyError, match="has no parameters"):
        load_into_paper(paper, other)


def test_flags_set_every_setting_and_restore_them():
    before = gpu.read_flags()
    with gpu.flags("fp32") as used:
        assert {used[k] for k in ("cuda.matmul.fp32_precision", "cudnn.conv.fp32_precision",
                                  "cudnn.rnn.fp32_precision")} == {"ieee"}
        assert used["cudnn.benchmark"] is False
    with gpu.flags("tf32") as used:
        assert used["cudnn.rnn.fp32_precision"] == "tf32" and used["cuda.matmul.fp32_precision"] == "tf32"
    assert gpu.read_flags() == before
    with pytest.raises(ValueError, match="fp32"):
        with gpu.flags("bf16"):
            pass


def test_targets_read_their_keys_and_say_what_was_not_measured():
    sections = {"encoder_step": {"best_ratio_to_paper_fp32": {"fp32": 0.8, "bf16": 0.6}},
                "iw_nll": {"tf32_minus_fp32_nats": -0.03}}
    verdicts = {t["name"]: t["met"] for t in gpu.evaluate_targets(sections)}
    assert verdicts["encoder step, fp32"] is True and verdicts["encoder step, bf16"] is False
    assert verdicts["TF32 estimate"] is False and verdicts["host syncs"] is None
    assert len(verdicts) == len(gpu.TARGETS)


def test_ratios_to_the_papers_step_and_the_best_of_ours_per_precision():
    medians = {"paper_fp32": 4.0, "paper_tf32": 2.0, "ours_fp32": 3.0, "ours_fp32_graph": 1.0, "ours_bf16": 6.0,
               "example_fp32": 5.0}
    out = gpu.ratios_to_paper(medians)
    assert out["ratio_to_paper_fp32"] == {"paper_fp32": 1.0, "paper_tf32": 0.5, "ours_fp32": 0.75,
                                          "ours_fp32_graph": 0.25, "ours_bf16": 1.5, "example_fp32": 1.25}
    # the captured step is the better fp32 one; bf16 has only its eager step; the example is not ours
    assert out["best_ratio_to_paper_fp32"] == {"fp32": 0.25, "bf16": 1.5}
    assert gpu.ratios_to_paper({"ours_fp32": 3.0, "paper_fp32": 2.0})["best_ratio_to_paper_fp32"] == {
        "fp32": 1.5, "bf16": None}
    assert gpu.ratios_to_paper({"ours_fp32": 3.0}) == {}  # the paper's step failed: no ratio


def test_the_gpu_script_runs_on_the_cpu_and_writes_every_section(stand_in, tmp_path, capsys):
    out = tmp_path / "gpu.json"
    checkpoint = tmp_path / "model.pt"
    argv = ["--device", "cpu", "--quick", "--reference-dir", str(stand_in), "--out", str(out),
            "--checkpoint", str(checkpoint)]
    gpu.main(argv)
    result = json.loads(out.read_text())
    assert result["format"] == gpu.FORMAT and result["gpu_run"] is False
    env = result["environment"]
    assert env["torch"] == torch.__version__ and env["flags_at_start"] and "aggressive_vi" in env
    sections = result["sections"]
    assert set(sections) == set(gpu.SECTIONS) and not any("error" in s for s in sections.values())

    trained = sections["train"]
    assert trained["updates"] == gpu.SIZES["quick"]["train_updates"] and checkpoint.exists()
    assert math.isfinite(trained["heldout_neg_elbo"])

    step = sections["encoder_step"]
    # timed side by side: the paper's procedure on its modules, ours on them, our example model
    assert {"paper_fp32", "paper_tf32", "ours_fp32", "ours_tf32", "example_fp32"} <= set(step["median_s"])
    ratios = gpu.ratios_to_paper(step["median_s"])  # the ratios come from the medians written beside them
    assert step["ratio_to_paper_fp32"] == ratios["ratio_to_paper_fp32"]
    assert step["best_ratio_to_paper_fp32"] == ratios["best_ratio_to_paper_fp32"]
    assert step["flags"]["paper_fp32"] == step["flags"]["ours_fp32"]
    assert step["flags"]["ours_fp32"]["cudnn.rnn.fp32_precision"] == "ieee"
    assert step["flags"]["ours_tf32"]["cudnn.rnn.fp32_precision"] == "tf32"
    assert "ours_fp32_graph" in step["notes"]  # CUDA only
    # a CPU without a bf16 LSTM fails those variants alone: isolated, the others keep their timings
    for name in ("ours_bf16", "example_bf16"):
        assert name in step["errors"] or name in step["median_s"]

    assert sections["host_syncs"]["skipped"].startswith("needs CUDA")

    iw = sections["iw_nll"]
    for name in ("paper_loop_fp32", "paper_loop_tf32", "batched_fp32", "batched_tf32"):
        assert math.isfinite(iw[name]["nll"]) and iw[name]["sentences_per_s"] > 0, name
    assert iw["models_agree_max_abs_nats"] == 0.0  # the trained weights, in the paper's modules
    assert iw["tf32_minus_fp32_nats"] == 0.0  # no TF32 on a CPU: the same draws give the same estimate
    assert iw["sentences"] == gpu.SIZES["quick"]["heldout"]
    assert set(iw["speedup"]) >= {"batched_fp32_vs_paper_loop_fp32", "batched_tf32_vs_paper_loop_fp32"}
    sweep = iw["user_decoder_rows"]  # a plain decoder at several row bounds: the same draws, one estimate
    assert set(sweep) == {"max_rows_auto", "max_rows_256", "max_rows_1024", "max_rows_4096", "max_rows_None"}
    assert max(v["nll"] for v in sweep.values()) - min(v["nll"] for v in sweep.values()) < 1e-3
    assert all(v["halvings"] == 0 and v["peak_mib_above_model"] is None for v in sweep.values())  # CPU

    prec = sections["precision"]
    assert len(prec["curves"]["fp32"]["loss"]) == gpu.SIZES["quick"]["precision_updates"]
    assert math.isfinite(prec["heldout_neg_elbo_fp32"])

    targets = {t["key"]: t for t in result["targets"]}
    assert targets["host_syncs.ours_fp32.max_excess_over_windows"]["met"] is None
    assert targets["encoder_step.best_ratio_to_paper_fp32.fp32"]["value"] is not None

    printed = capsys.readouterr().out
    for name, ratio in step["ratio_to_paper_fp32"].items():  # every ratio printed, in full
        assert name in printed and f"{ratio:.4g}" in printed
    assert "IW-NLL, TF32" in printed and "verdict" in printed

    # a second run loads the trained model instead of training it again
    gpu.main(argv + ["--sections", "iw_nll"])
    again = json.loads(out.read_text())
    assert again["sections"]["train"]["loaded"] == str(checkpoint)
    assert again["sections"]["iw_nll"]["batched_fp32"]["nll"] == pytest.approx(iw["batched_fp32"]["nll"])


def test_the_script_names_a_missing_reference(tmp_path):
    with pytest.raises(FileNotFoundError, match="modules"):
        gpu.main(["--device", "cpu", "--quick", "--reference-dir", str(tmp_path), "--out", str(tmp_path / "x.json")])
