"""benchmarks.core: the paper's code found in a directory (a stand-in package here, never the paper's),
its update on a stand-in with the paper's ``loss`` signature, interleaved timing, tables and JSON."""
from __future__ import annotations

import itertools
import json
import sys
import textwrap

import pytest
import torch
from torch import nn

from aggressive_vi import VAE, AggressiveTrainer
from benchmarks.core.paper_update import (MAX_SUB_ITER, PaperLoop, elbo_loss, paper_catch_up, paper_optimizers,
                                          paper_update)
from benchmarks.core.reference import (SizedVocab, check_reference_dir, copy_reference, import_reference,
                                       paper_vae)
from benchmarks.core.tables import markdown_table, plain_table, read_json, write_json
from benchmarks.core.timing import alternating, interleave, medians, ratios_to
from benchmarks.parity.trace import NormRecorder
from examples.quickstart import AutoregressiveDecoder, MLPEncoder


# ---------------------------------------------------------------- reference
_STAND_IN = '''
from torch import nn


class LSTMEncoder(nn.Module):
    def __init__(self, args, vocab_size, model_init, emb_init):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, args.ni)
        self.linear = nn.Linear(args.ni, 2 * args.nz)
        model_init(self.linear.weight)
        emb_init(self.embed.weight)


class LSTMDecoder(nn.Module):
    def __init__(self, args, vocab, model_init, emb_init):
        super().__init__()
        self.vocab = vocab
        self.pred_linear = nn.Linear(args.dec_nh, len(vocab))
        model_init(self.pred_linear.weight)


class VAE(nn.Module):
    def __init__(self, encoder, decoder, args):
        super().__init__()
        self.encoder, self.decoder, self.args = encoder, decoder, args
'''


@pytest.fixture
def stand_in(tmp_path):
    """A directory laid out as the paper's checkout, with a tiny ``modules`` package of our own."""
    root = tmp_path / "checkout"
    (root / "modules").mkdir(parents=True)
    (root / "modules" / "__init__.py").write_text(textwrap.dedent(_STAND_IN))
    (root / "data").mkdir()
    (root / "data" / "__init__.py").write_text("")
    (root / "text.py").write_text("")
    (root / "logger.py").write_text("")
    yield root
    for name in ("modules", "data", "text", "logger"):
        sys.modules.pop(name, None)


def test_check_and_copy_name_what_is_missing_and_leave_the_checkout_alone(stand_in, tmp_path):
    assert check_reference_dir(stand_in) == stand_in
    with pytest.raises(FileNotFoundError, match="with config in it"):
        check_reference_dir(stand_in, ("text.py", "config"))
    (stand_in / "modules" / "__pycache__").mkdir()
    before = sorted(p.name for p in stand_in.rglob("*"))
    copy = copy_reference(stand_in, tmp_path / "work")
    assert copy == tmp_path / "work" / "reference" and (copy / "modules" / "__init__.py").is_file()
    assert not (copy / "modules" / "__pycache__").exists()
    assert sorted(p.name for p in stand_in.rglob("*")) == before


def test_import_and_build_the_paper_vae_from_a_directory(stand_in):
    loaded = import_reference(stand_in, ("modules",))
    assert str(stand_in) not in sys.path  # only for the import
    torch.manual_seed(0)
    vae = paper_vae(loaded["modules"], SizedVocab(11), embed_dim=4, hidden_dim=3, latent_dim=2, dropout=0.25,
                    nsamples=1)
    assert vae.args.nz == 2 and vae.args.dec_dropout_in == 0.25 and vae.args.nsamples == 1
    assert vae.encoder.embed.weight.shape == (11, 4) and vae.decoder.pred_linear.weight.shape == (11, 3)
    assert float(vae.encoder.linear.weight.detach().abs().max()) <= 0.01  # the paper's U(-0.01, 0.01)
    assert 0.01 < float(vae.encoder.embed.weight.detach().abs().max()) <= 0.1  # embeddings U(-0.1, 0.1)


def test_import_refuses_a_module_of_that_name_from_elsewhere(stand_in, tmp_path):
    other = tmp_path / "elsewhere"
    (other / "modules").mkdir(parents=True)
    (other / "modules" / "__init__.py").write_text("")
    import_reference(other, ("modules",))
    with pytest.raises(ImportError, match="already imported"):
        import_reference(stand_in, ("modules",))


# ---------------------------------------------------------------- the paper's update
class _PaperStyle(nn.Module):
    """Our tiny VAE behind the paper's ``loss(x, kl_weight, nsamples) -> (loss, rc, kl)``."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.vae = VAE(MLPEncoder(6, 8, 2), AutoregressiveDecoder(6, 8, 2))
        self.encoder, self.decoder = self.vae.encoder, self.vae.decoder

    def loss(self, x, kl_weight, nsamples=1):
        terms = self.vae.elbo(x, kl_weight=kl_weight, n_samples=nsamples)
        return terms.loss, terms.reconstruction, terms.kl


def _batches(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.bernoulli(torch.full((5, 6), 0.5), generator=g) for _ in range(n)]


def _expected_grads(model, x):
    torch.manual_seed(3)
    model.zero_grad(set_to_none=True)
    model.loss(x, 1.0)[0].mean().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("phase, moved", [("encoder", {"encoder"}), ("decoder", {"decoder"}),
                                          ("joint", {"encoder", "decoder"})])
def test_paper_update_clips_the_joint_norm_and_steps_its_networks(phase, moved):
    model, x, clip = _PaperStyle(), _batches()[0], 1e-3
    grads = _expected_grads(model, x)
    total = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    factor = min(1.0, clip / (float(total) + 1e-6))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    enc_opt, dec_opt = paper_optimizers(model)
    torch.manual_seed(3)
    step = paper_update(model, enc_opt, dec_opt, x, phase=phase, clip=clip, encoder_norm=True)
    assert float(step.grad_norm) == pytest.approx(float(total), rel=1e-5)
    assert step.encoder_norm is not None and step.encoder_norm < float(total)
    assert isinstance(step.read, float) if phase == "encoder" else len(step.read) == 2
    for (name, p), g in zip(model.named_parameters(), grads):
        net = name.split(".")[1]  # vae.encoder.* / vae.decoder.*
        expected = before[name] - factor * g if net in moved else before[name]
        torch.testing.assert_close(p.detach(), expected, atol=1e-7, rtol=1e-5)
    with pytest.raises(ValueError, match="phase must be one of"):
        paper_update(model, enc_opt, dec_opt, x, phase="inner")


def test_paper_catch_up_counts_windows_and_fixed_steps():
    model, batches = _PaperStyle(), _batches()
    enc_opt, dec_opt = paper_optimizers(model)
    draws = itertools.cycle(batches)
    seen = []
    out = paper_catch_up(model, enc_opt, dec_opt, batches[0], lambda: next(draws), fixed_steps=4, on_step=seen.append)
    assert out.steps == 4 and len(seen) == 4 and out.sub_iter == 5
    out = paper_catch_up(model, enc_opt, dec_opt, batches[0], lambda: next(draws))
    assert out.steps % 15 == 0 or out.steps == MAX_SUB_ITER - 1
    assert out.sub_iter == (out.steps if out.steps % 15 == 0 else MAX_SUB_ITER)
    loop = PaperLoop(_PaperStyle(), batches, seed=0)
    assert loop.epoch(aggressive=True, fixed_steps=2) == {"inner_steps": 8}
    assert loop.epoch(aggressive=False) == {"inner_steps": 0}


def test_elbo_loss_gives_the_paper_s_triple_from_our_vae():
    vae, x = _PaperStyle().vae, _batches()[0]
    torch.manual_seed(0)
    loss, rec, kl = elbo_loss(vae, x, 0.5)
    assert loss.shape == rec.shape == kl.shape == (5,)
    torch.testing.assert_close(loss, rec + 0.5 * kl)


def test_norm_recorder_reads_the_norm_the_trainer_clips():
    model, x = _PaperStyle(), _batches()[0]
    grads = _expected_grads(model, x)
    total = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
    engine = NormRecorder()
    vae = model.vae
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=1.0),
                                torch.optim.SGD(vae.decoder.parameters(), lr=1.0), engine=engine, clip_grad_norm=1e-3)
    torch.manual_seed(3)
    trainer.algorithm.joint_update(x, 1.0)
    assert engine.norms[-1] == pytest.approx(total, rel=1e-5)


# ---------------------------------------------------------------- timing
def _fake_clock():
    counter = itertools.count()
    return lambda: float(next(counter))


def test_interleave_and_alternating_order_and_medians():
    order = []
    out = interleave({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, 2, warmup=1,
                     clock=_fake_clock(), wall_clock=_fake_clock())
    assert order == ["a", "b"] * 3 and medians(out) == {"a": 1.0, "b": 1.0}
    calls = []
    out = alternating({"a": lambda x: calls.append(("a", x)), "b": lambda x: calls.append(("b", x)),
                       "c": lambda x: calls.append(("c", x))}, [0, 1], 2, clock=_fake_clock(),
                      wall_clock=_fake_clock())
    assert calls == [("a", 0), ("b", 0), ("c", 0), ("c", 1), ("b", 1), ("a", 1)]
    assert out["c"]["seconds"] == [1.0, 1.0]
    assert ratios_to({"base": 2.0, "x": 3.0}, "base") == {"base": 1.0, "x": 1.5}
    with pytest.raises(ValueError, match="steps is empty"):
        alternating({}, [1], 1)


# ---------------------------------------------------------------- tables
def test_tables_align_and_json_round_trips(tmp_path):
    text = plain_table(["name", "n"], [["a", 1], ["long name", 22]], right_from=1)
    assert text.splitlines() == ["name        n", "a           1", "long name  22"]
    assert markdown_table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
    path = write_json(tmp_path / "sub" / "x.json", {"format": "f/1", "v": [1.0, float("inf")]})
    assert json.loads(path.read_text())["v"] == [1.0, None] and not path.with_name("x.json.tmp").exists()
    assert read_json(path, "f/1")["v"][0] == 1.0
    with pytest.raises(ValueError, match="expected 'g/1'"):
        read_json(path, "g/1")


# ---------------------------------------------------------------- side by side
_GUARDED = '''
import os, signal, sys, threading, time
from benchmarks.core.side_by_side import guarded, run_all, run_command

def sleeper(spec, side, work):
    return run_command([sys.executable, "-c", "import time; time.sleep(60)"], ".", {})

threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
start = time.time()
try:
    guarded(lambda: run_all([(None, "a", None), (None, "b", None)], sleeper, jobs=2))
except SystemExit as stop:
    print("stopped", stop.code, round(time.time() - start))
'''


def test_a_terminated_harness_kills_its_runs_and_exits():
    """SIGTERM while runs are under way: the children are killed and the harness exits 128 + 15 at
    once, instead of waiting for them (each would sleep 60 s)."""
    import subprocess
    out = subprocess.run([sys.executable, "-c", _GUARDED], capture_output=True, text=True, timeout=50)
    words = out.stdout.split()
    assert words[:2] == ["stopped", "143"], out.stdout + out.stderr
    assert int(words[2]) < 30
