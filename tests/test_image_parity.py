"""benchmarks.image_parity: the image side-by-side harness, at tiny sizes on the CPU, without the
paper's code (a stand-in reference package and script take its place; the trace's reference side
is our own model behind the paper's ``vae.loss`` interface)."""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks.core.reference import ReferenceOutputError
from benchmarks.core.side_by_side import make_result
from benchmarks.image_parity import cli, launcher
from benchmarks.image_parity.data import prepare_data
from benchmarks.image_parity.ours import RandomImageBatches, run_ours
from benchmarks.image_parity.reference import (LAUNCHER_NAME, image_reference_command,
                                               parse_image_output, prepare_image_reference, run_image_reference,
                                               split_cpu_stamp, write_config)
from benchmarks.image_parity.spec import PAPER_SIZES, ImageRunSpec
from benchmarks.image_parity.table import (add_derived, format_markdown, format_table, paired_differences,
                                           read_json, time_ratios)
from benchmarks.image_parity.trace import BatchPlan, pair_tensors, trace
from examples.image.experiment import build_vae
from examples.image.presets import Preset

TINY = dict(latent_dim=3, encoder_channels=(4, 4), encoder_hidden=8, decoder_channels=4,
            decoder_kernel_sizes=(3, 3, 3), latent_maps=1)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * 0.6


def _data_file(tmp_path: Path, n_train: int = 60, n_valid: int = 20, n_test: int = 60) -> Path:
    src = tmp_path / "grey.pt"
    torch.save((_images(n_train, 1), _images(n_valid, 2), _images(n_test, 3)), src)
    out = tmp_path / "data" / "tiny.pt"
    prepare_data(src, out)
    return out


def _spec(tmp_path: Path, **kw) -> ImageRunSpec:
    values = dict(data="tiny", data_file=str(tmp_path / "data" / "tiny.pt"), batch_size=10, epochs=1,
                  iw_samples=100, mode="aggressive", seed=783435, **TINY)
    values.update(kw)
    return ImageRunSpec(**values)


# ------------------------------------------------------------------------------------ spec and data
def test_spec_checks_its_fields(tmp_path):
    spec = _spec(tmp_path)
    assert spec.aggressive and not spec.paper_sizes
    assert ImageRunSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert _spec(tmp_path, **{k: v for k, v in PAPER_SIZES.items()}).paper_sizes
    with pytest.raises(ValueError, match="iw_samples"):
        _spec(tmp_path, iw_samples=150)
    with pytest.raises(ValueError, match="odd"):
        _spec(tmp_path, decoder_kernel_sizes=(3, 4, 3))
    with pytest.raises(ValueError, match="at least 3 blocks"):
        _spec(tmp_path, decoder_kernel_sizes=(3, 3))
    with pytest.raises(ValueError, match="even"):
        _spec(tmp_path, decoder_channels=5)
    with pytest.raises(ValueError, match="mode"):
        _spec(tmp_path, mode="lazy")
    with pytest.raises(FileNotFoundError, match="data file"):
        _spec(tmp_path).check_files()


def test_prepare_data_writes_grey_training_and_binary_evaluation_images(tmp_path):
    src = tmp_path / "grey.pt"
    torch.save((_images(30, 1), _images(20, 2), _images(20, 3)), src)
    sizes = prepare_data(src, tmp_path / "out" / "d.pt", max_train=25, max_valid=10, max_test=12)
    assert sizes == {"train": 25, "valid": 10, "test": 12}
    train, valid, test = torch.load(tmp_path / "out" / "d.pt", weights_only=True)
    assert train.shape == (25, 1, 28, 28) and torch.equal(train, _images(30, 1)[:25])  # grey levels
    for split in (valid, test):
        assert set(split.unique().tolist()) <= {0.0, 1.0}
    again = tmp_path / "again.pt"
    prepare_data(src, again, max_train=25, max_valid=10, max_test=12)
    assert all(torch.equal(a, b) for a, b in zip(torch.load(again, weights_only=True), (train, valid, test)))
    with pytest.raises(ValueError, match="max_train"):
        prepare_data(src, again, max_train=31)


def test_reference_size_check_names_the_split():
    cli.check_reference_sizes({"train": 250, "valid": 10, "test": 300}, 50)
    with pytest.raises(ValueError, match="6 test batches"):
        cli.check_reference_sizes({"train": 250, "valid": 10, "test": 250}, 50)
    with pytest.raises(ValueError, match="5 training batches"):
        cli.check_reference_sizes({"train": 200, "valid": 10, "test": 300}, 50)


# ------------------------------------------------------------------------------------ the reference's output
def _load_params(path: Path) -> dict:
    loaded = importlib.util.spec_from_file_location("cfg", path)
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    return module.params


def test_write_config_names_sizes_only_when_they_are_not_the_papers(tmp_path):
    (tmp_path / "copy" / "config").mkdir(parents=True)
    p = _load_params(write_config(tmp_path / "copy", _spec(tmp_path, epochs=4)))
    assert (p["nz"], p["latent_feature_map"], p["batch_size"], p["epochs"]) == (3, 1, 10, 4)
    assert p["test_nepoch"] > p["epochs"] and Path(p["data_file"]).is_absolute()
    assert p["parity_sizes"] == {"encoder_channels": [4, 4], "encoder_hidden": 8, "decoder_channels": 4,
                                 "decoder_kernel_sizes": [3, 3, 3]}
    paper = _spec(tmp_path, **{k: v for k, v in PAPER_SIZES.items()})
    assert "parity_sizes" not in _load_params(write_config(tmp_path / "copy", paper))


def _output(aggressive: bool, stop_after: int = None, epochs: int = 3, stamps: bool = True):
    """Lines in the paper's image.py format with (wall, "[cpu s] text") stamps: each epoch takes 10 s,
    the in-loop test after epoch 0 takes 5 s, IW-NLL 7 s."""
    lines, t = [], 0.0

    def add(text, dt=0.0):
        nonlocal t
        t += dt
        lines.append((t if stamps else None, f"[cpu {t / 2:.3f}] {text}" if stamps else text))

    add("Train data: 4 batches")
    add("Test data: 6 batches")
    for epoch in range(epochs):
        add(f"epoch: {epoch}, iter: {4 * epoch}, avg_loss: 500.0, kl: 1.0, recon: 499.0,au 3, time elapsed {t + 3.0:.2f}s", 3.0)
        if aggressive and stop_after is not None and epoch == stop_after:
            add("STOP BURNING", 1.0)
        add("kl weight 1.0000", 4.0)
        add(f"epoch: {epoch}, VAL")
        add(f"VAL --- avg_loss: {300 - epoch}.0000, kl: 2.0000, mi: {0.5 + epoch}, recon: 298.0000, nll: 300.0000", 2.0)
        add("5 active units", 10.0 - (3.0 + 4.0 + 2.0 + (1.0 if aggressive and stop_after == epoch else 0.0)))
        if epoch == 0:
            add("update best loss")
            add("TEST --- avg_loss: 301.0000, kl: 2.0000, mi: 0.4000, recon: 299.0000, nll: 301.0000", 5.0)
    add("TEST --- avg_loss: 297.5000, kl: 2.2500, mi: 1.2500, recon: 295.2500, nll: 297.5000", 1.0)
    add("7 active units", 1.0)
    add("iw nll computing 00%", 1.0)
    add("iw nll: 290.2500", 6.0)
    add(f"{launcher.STEPS_LINE} {4 * 20 + 4} {4 * epochs}")
    return lines


def test_parse_image_output_reads_numbers_epochs_and_times():
    out = parse_image_output(_output(aggressive=True, stop_after=1), aggressive=True)
    assert out["metrics"] == {"neg_elbo": 297.5, "kl": 2.25, "mi": 1.25, "reconstruction": 295.25, "au": 7,
                              "iw_nll": 290.25}
    assert out["epochs_run"] == 3 and out["aggressive_epochs"] == 2 and out["train_batches"] == 4
    assert out["val_mi"] == [0.5, 1.5, 2.5] and out["val_neg_elbo"] == [300.0, 299.0, 298.0]
    assert out["epoch_seconds"] == pytest.approx([10.0, 10.0, 10.0])  # the in-loop test taken out
    assert out["train_seconds"] == pytest.approx(30.0) and out["iw_seconds"] == pytest.approx(7.0)
    assert out["epoch_cpu_seconds"] == pytest.approx([5.0, 5.0, 5.0]) and out["iw_cpu_seconds"] == pytest.approx(3.5)
    # the encoder's optimiser: 4 + 80 steps, the decoder's 12; 8 aggressive updates, 4 basic joint ones
    assert out["optimizer_steps"] == [84, 12] and out["inner_steps_per_update"] == pytest.approx(10.0)
    basic = parse_image_output(_output(aggressive=False), aggressive=False)
    assert basic["aggressive_epochs"] == 0 and basic["inner_steps_per_update"] is None
    assert parse_image_output(_output(aggressive=True), aggressive=True)["aggressive_epochs"] == 3
    plain = parse_image_output("\n".join(text for _, text in _output(True, stamps=False)), aggressive=True)
    assert plain["metrics"]["iw_nll"] == 290.25 and plain["train_seconds"] is None and plain["epoch_seconds"] is None


def test_parse_image_output_names_what_is_missing():
    lines = [text for _, text in _output(aggressive=False, stamps=False)]
    with pytest.raises(ReferenceOutputError, match="iw nll"):
        parse_image_output("\n".join(line for line in lines if not line.startswith("iw nll:")), aggressive=False)
    with pytest.raises(ReferenceOutputError, match="TEST"):
        parse_image_output("\n".join(line for line in lines if not line.startswith("TEST")), aggressive=False)
    assert split_cpu_stamp("[cpu 1.250] 3 active units") == (1.25, "3 active units")
    assert split_cpu_stamp("3 active units") == (None, "3 active units")


def test_cpu_stamped_stream_prefixes_every_line():
    buf = io.StringIO()
    stream = launcher.CPUStamped(buf)
    stream.write("a")
    stream.write("b\nc\n")
    stream.write("d\n")
    lines = buf.getvalue().splitlines()
    assert [split_cpu_stamp(line)[1] for line in lines] == ["ab", "c", "d"]
    assert all(split_cpu_stamp(line)[0] is not None for line in lines)


# ------------------------------------------------------------------------------------ a stand-in reference
STAND_IN_ENCODER = '''\
import torch.nn as nn

class ResNet(nn.Module):  # stand-in: stride-2 conv blocks
    def __init__(self, inplanes, planes, strides):
        super().__init__()
        layers = []
        for p, s in zip(planes, strides):
            layers += [nn.Conv2d(inplanes, p, 3, s, 1, bias=False), nn.BatchNorm2d(p), nn.ELU()]
            inplanes = p
        self.main = nn.Sequential(*layers)

    def forward(self, x):
        return self.main(x)

class ResNetEncoderV2(nn.Module):  # fixed sizes, as the paper's
    def __init__(self, args, ngpu=1):
        super().__init__()
        self.nz = args.nz
        self.main = nn.Sequential(ResNet(1, [64, 64, 64], [2, 2, 2]), nn.Conv2d(64, 512, 4, 1, 0, bias=False),
                                  nn.BatchNorm2d(512), nn.ELU())
        self.linear = nn.Linear(512, 2 * self.nz)
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.constant_(self.linear.bias, 0.0)
'''

STAND_IN_DECODER = '''\
import torch.nn as nn

class PixelCNN(nn.Module):  # stand-in: plain convolutions
    def __init__(self, in_channels, out_channels, num_blocks, kernel_sizes, masked_channels):
        super().__init__()
        layers = []
        for k in kernel_sizes:
            layers += [nn.Conv2d(in_channels, out_channels, k, padding=k // 2, bias=False)]
            in_channels = out_channels
        self.main = nn.Sequential(*layers)

    def forward(self, x):
        return self.main(x)

class PixelCNNDecoderV2(nn.Module):
    def __init__(self, args, ngpu=1, mode="large"):
        super().__init__()
        self.nz, self.nc, self.fm_latent = args.nz, 1, args.latent_feature_map
        self.z_transform = nn.Sequential(nn.Linear(self.nz, 28 * 28 * self.fm_latent))
        kernal_sizes = [7, 7, 7, 7, 7, 5, 5, 5, 5, 3, 3, 3, 3]
        self.main = nn.Sequential(PixelCNN(self.nc + self.fm_latent, 64, 13, kernal_sizes, self.nc),
                                  nn.Conv2d(64, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ELU(),
                                  nn.Conv2d(64, self.nc, 1, bias=False), nn.Sigmoid())
        self.reset_parameters()

    def reset_parameters(self):
        self.main[2].weight.data.fill_(1)
'''

STAND_IN_SCRIPT = '''\
"""A stand-in for the paper's image.py (tests only): builds its modules from the config, loads the
data file, steps two optimisers and prints the paper's lines, with numbers that encode its inputs."""
import argparse, importlib, math, sys
import torch
from torchvision.utils import save_image
from modules import ResNetEncoderV2, PixelCNNDecoderV2
seed_set = [783435, 101, 202]
p = argparse.ArgumentParser()
for a in ("--dataset", "--aggressive", "--kl_start", "--taskid", "--iw_nsamples"):
    p.add_argument(a)
args = p.parse_args()
params = importlib.import_module("config.config_" + args.dataset).params
args = argparse.Namespace(**vars(args), **params)
enc, dec = ResNetEncoderV2(args), PixelCNNDecoderV2(args)
n_enc = sum(q.numel() for q in enc.parameters())
n_dec = sum(q.numel() for q in dec.parameters())
x_train, x_val, x_test = torch.load(args.data_file)
batches = math.ceil(len(x_train) / args.batch_size)
print("Train data: %d batches" % batches)
print("Test data: %d batches" % math.ceil(len(x_test) / args.batch_size))
enc_opt, dec_opt = torch.optim.Adam(enc.parameters()), torch.optim.Adam(dec.parameters())
aggressive = int(args.aggressive)
it = 0
for epoch in range(args.epochs):
    for b in range(batches):
        for _ in range(3 if aggressive else 1):
            enc_opt.step()
        dec_opt.step()
        if b == 0:
            print("epoch: %d, iter: %d, avg_loss: 1.0, kl: 0.1, recon: 0.9,time elapsed 0.01s" % (epoch, it))
        it += 1
    print("kl weight 1.0000")
    print("epoch: %d, VAL" % epoch)
    print("VAL --- avg_loss: 1.0000, kl: 0.1000, mi: 0.1000, recon: 0.9000, nll: 1.0000")
    print("%d active units" % args.nz)
    if epoch == 0:
        print("TEST --- avg_loss: 1.0000, kl: 0.1000, mi: 0.1000, recon: 0.9000, nll: 1.0000")
print("TEST --- avg_loss: %d.0000, kl: %d.0000, mi: %d.0000, recon: 0.0000, nll: 1.0000"
      % (n_enc, n_dec, seed_set[int(args.taskid)]))
print("%d active units" % len(x_test))
print("iw nll computing 00%")
print("iw nll: %s.0000" % args.iw_nsamples)
'''


def _stand_in(tmp_path: Path) -> Path:
    ref = tmp_path / "paper-code"
    for sub in ("modules", "modules/encoders", "modules/decoders", "config"):
        (ref / sub).mkdir(parents=True, exist_ok=True)
    (ref / "modules" / "encoders" / "enc_resnet_v2.py").write_text(STAND_IN_ENCODER)
    (ref / "modules" / "decoders" / "dec_pixelcnn_v2.py").write_text(STAND_IN_DECODER)
    (ref / "modules" / "encoders" / "__init__.py").write_text("from .enc_resnet_v2 import *\n")
    (ref / "modules" / "decoders" / "__init__.py").write_text("from .dec_pixelcnn_v2 import *\n")
    (ref / "modules" / "__init__.py").write_text("from .encoders import *\nfrom .decoders import *\n")
    (ref / "logger.py").write_text("")
    (ref / "image.py").write_text(STAND_IN_SCRIPT)
    return ref


def _expected_sizes(spec: ImageRunSpec):
    """Parameter counts of the stand-in's two networks rebuilt at ``spec``'s sizes by the launcher."""
    args = argparse.Namespace(nz=spec.latent_dim, latent_feature_map=spec.latent_maps)
    enc_ns, dec_ns = {}, {}
    exec(STAND_IN_ENCODER, enc_ns)
    exec(STAND_IN_DECODER, dec_ns)
    enc = launcher.rebuild_encoder(enc_ns["ResNetEncoderV2"](args), enc_ns["ResNet"], channels=spec.encoder_channels,
                                   hidden=spec.encoder_hidden, latent_dim=spec.latent_dim)
    dec = launcher.rebuild_decoder(dec_ns["PixelCNNDecoderV2"](args), dec_ns["PixelCNN"],
                                   channels=spec.decoder_channels, kernel_sizes=spec.decoder_kernel_sizes)
    return sum(p.numel() for p in enc.parameters()), sum(p.numel() for p in dec.parameters())


def test_reference_runs_through_the_launcher_at_the_specs_sizes(tmp_path):
    ref = _stand_in(tmp_path)
    before = {p.relative_to(ref): p.read_bytes() for p in ref.rglob("*") if p.is_file()}
    _data_file(tmp_path)
    spec = _spec(tmp_path, seed=101, iw_samples=200)
    out = run_image_reference(spec, ref, tmp_path / "work")
    n_enc, n_dec = _expected_sizes(spec)
    # the stand-in prints its two networks' parameter counts and its seed in its TEST line
    assert (out["metrics"]["neg_elbo"], out["metrics"]["kl"], out["metrics"]["mi"]) == (n_enc, n_dec, 101)
    assert out["metrics"]["au"] == 60 and out["metrics"]["iw_nll"] == 200
    assert out["epochs_run"] == 1 and out["aggressive_epochs"] == 1 and out["train_batches"] == 6
    assert out["inner_steps_per_update"] == pytest.approx(3.0)
    assert out["train_cpu_seconds"] is not None and out["iw_seconds"] is not None
    assert {p.relative_to(ref): p.read_bytes() for p in ref.rglob("*") if p.is_file()} == before
    copy = tmp_path / "work" / "reference"
    assert (copy / LAUNCHER_NAME).read_text() == Path(launcher.__file__).read_text()
    assert image_reference_command(spec, copy, "py")[:3] == ["py", LAUNCHER_NAME, "--dataset"]
    with pytest.raises(ValueError, match="seed 5"):
        image_reference_command(_spec(tmp_path, seed=5), copy, "py")


def test_launcher_check_rebuild_accepts_the_stand_in_and_refuses_other_layers(tmp_path):
    copy = prepare_image_reference(_stand_in(tmp_path), tmp_path / "work")
    sys.path.insert(0, str(copy))
    saved = {k: v for k, v in sys.modules.items() if k == "modules" or k.startswith("modules.")}
    for k in saved:
        del sys.modules[k]
    try:
        modules = importlib.import_module("modules")
        launcher.check_rebuild(modules)  # the stand-in's layout is the one the launcher rebuilds
        cls = importlib.import_module("modules.decoders.dec_pixelcnn_v2").PixelCNNDecoderV2
        original = cls.__init__

        def with_a_layer_more(self, args, *a, **k):  # a version whose head the launcher would not rebuild
            original(self, args, *a, **k)
            self.main.append(nn.Identity())

        cls.__init__ = with_a_layer_more
        try:
            with pytest.raises(RuntimeError, match="PixelCNNDecoderV2"):
                launcher.check_rebuild(modules)
        finally:
            cls.__init__ = original
    finally:
        sys.path.remove(str(copy))
        for k in [k for k in sys.modules if k == "modules" or k.startswith("modules.")]:
            del sys.modules[k]
        sys.modules.update(saved)


# ------------------------------------------------------------------------------------ our side, runner, table
def test_random_image_batches_draw_distinct_binary_images():
    images = _images(25)
    batches = list(RandomImageBatches(images, 10, seed=3))
    assert len(batches) == 3 and all(b.shape == (10, 1, 28, 28) for b in batches)
    assert all(set(b.unique().tolist()) <= {0.0, 1.0} for b in batches)
    again = list(RandomImageBatches(images, 10, seed=3))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))


def test_run_ours_returns_the_reference_fields(tmp_path):
    _data_file(tmp_path, n_train=20, n_test=20)
    out = run_ours(_spec(tmp_path, epochs=1), verbose=False)
    assert set(out["metrics"]) == {"neg_elbo", "reconstruction", "kl", "mi", "au", "iw_nll"}
    assert all(math.isfinite(v) for v in out["metrics"].values())
    assert out["epochs_run"] == 1 and out["aggressive_epochs"] == 1 and out["train_batches"] == 2
    assert len(out["epoch_cpu_seconds"]) == 1 and out["inner_steps_per_update"] >= 20  # two windows at least
    assert out["iw_cpu_seconds"] > 0 and out["train_cpu_seconds"] > 0


def test_run_ours_from_the_papers_weights_needs_its_code(tmp_path):
    _data_file(tmp_path, n_train=20, n_test=20)
    with pytest.raises(ValueError, match="reference_dir"):
        run_ours(_spec(tmp_path, ours_init="reference"), verbose=False)


def test_cli_runs_both_sides_and_writes_the_table(tmp_path, capsys):
    ref = _stand_in(tmp_path)
    src = tmp_path / "grey.pt"
    torch.save((_images(60, 1), _images(20, 2), _images(60, 3)), src)
    argv = ["--reference-dir", str(ref), "--data", str(src), "--name", "tiny", "--batch-size", "10",
            "--latent-dim", "3", "--latent-maps", "1", "--encoder-channels", "4", "4", "--encoder-hidden", "8",
            "--decoder-channels", "4", "--decoder-kernels", "3", "3", "3", "--epochs", "1", "--iw-samples", "100",
            "--seeds", "783435", "--modes", "basic", "--work-dir", str(tmp_path / "w"), "--out", str(tmp_path / "o")]
    results = cli.main(argv)
    assert sorted(r["side"] for r in results) == ["ours", "reference"]
    assert not any(r.get("error") for r in results)
    payload = read_json(tmp_path / "o" / "image_parity_tiny.json")
    assert payload["settings"]["data_sizes"] == {"train": 60, "valid": 20, "test": 60}
    assert "tiny/basic" in payload["time_ratios"]
    printed = capsys.readouterr().out
    assert "IW-NLL" in printed and "time ours / paper's code, tiny/basic" in printed
    assert cli.main(["--from-json", str(tmp_path / "o" / "image_parity_tiny.json"), "--markdown"])
    with pytest.raises(SystemExit):
        cli.main(argv[:-4] + ["--max-test", "50", "--work-dir", str(tmp_path / "w2")])  # too few test batches


def _result(side, mode, seed, *, mi, iw, epoch_cpu, aggr, inner=None, batches=4, iw_cpu=10.0):
    outcome = {"metrics": {"kl": 1.0, "mi": mi, "au": 3, "iw_nll": iw, "neg_elbo": iw + 1},
               "aggressive_epochs": aggr, "epoch_cpu_seconds": epoch_cpu, "epoch_seconds": epoch_cpu,
               "inner_steps_per_update": inner, "train_batches": batches, "iw_cpu_seconds": iw_cpu,
               "iw_seconds": iw_cpu, "train_seconds": sum(epoch_cpu), "train_cpu_seconds": sum(epoch_cpu)}
    return make_result({"data": "d", "mode": mode, "seed": seed, "ours_clip": "joint"}, side, outcome)


def test_table_derives_epoch_times_and_ratios():
    r = add_derived(_result("ours", "aggressive", 1, mi=1.0, iw=90, epoch_cpu=[10.0, 20.0, 2.0], aggr=2, inner=9.0))
    assert r["aggressive_epoch_cpu_seconds"] == 15.0 and r["basic_epoch_cpu_seconds"] == 2.0
    assert r["aggressive_step_cpu_seconds"] == pytest.approx(15.0 / (4 * 10.0))
    results = [_result("ours", "aggressive", s, mi=1.0, iw=90, epoch_cpu=[10.0, 10.0], aggr=2, inner=4.0, iw_cpu=5.0)
               for s in (1, 2)]
    results += [_result("reference", "aggressive", s, mi=1.1, iw=89, epoch_cpu=[20.0, 20.0], aggr=2, inner=4.0)
                for s in (1, 2)]
    ratios = time_ratios(results)["d/aggressive"]
    assert ratios["aggressive_epoch_cpu_seconds"] == pytest.approx(0.5)
    assert ratios["iw_cpu_seconds"] == pytest.approx(0.5)
    assert ratios["basic_epoch_cpu_seconds"] is None
    text, md = format_table(results), format_markdown(results)
    assert "aggressive epoch, CPU 0.50" in text and "| d | aggressive | ours |" in md
    assert "d (aggressive): mi ours 1.000 >= ref 1.100" in text  # the text harness's check, shared


def test_paired_differences_match_seeds_and_label_the_variant():
    def run(side, seed, iw, init="own"):
        r = _result(side, "aggressive", seed, mi=1.0, iw=iw, epoch_cpu=[1.0], aggr=1, inner=2.0)
        r["spec"]["ours_init"] = init
        return r

    results = [run("reference", 1, 90.0), run("reference", 2, 92.0), run("reference", 3, 95.0),
               run("ours", 1, 91.0, "reference"), run("ours", 2, 90.0, "reference")]
    paired = paired_differences(results)["d/aggressive [ours/reference-init]"]
    assert paired["seeds"] == [1, 2] and paired["iw_nll"]["mean"] == pytest.approx(-0.5)
    assert paired["iw_nll"]["se"] == pytest.approx(1.5) and paired["iw_nll"]["ours_better"] == 1
    assert "paired by seed, ours - paper's code, d/aggressive [ours/reference-init], 2 seeds: IW-NLL -0.50 ± 1.50" \
        in format_table(results)
    with pytest.raises(ValueError, match="ours_init"):
        ImageRunSpec(**{**_spec(Path(".")).to_dict(), "ours_init": "theirs"})


# ------------------------------------------------------------------------------------ the trace
class PaperInterface(nn.Module):
    """Our VAE behind the paper's ``vae.loss(x, kl_weight, nsamples) -> (loss, rec, kl)`` interface:
    the trace's reference side then runs the paper's update arithmetic on our own model."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae, self.encoder, self.decoder = vae, vae.encoder, vae.decoder

    def loss(self, x, kl_weight, nsamples=1):
        t = self.vae.elbo(x, kl_weight=kl_weight, n_samples=nsamples)
        return t.loss, t.reconstruction, t.kl


def _tiny_vae():
    return build_vae(Preset("t", batch_size=10, **TINY))


@pytest.mark.parametrize("mode,clip", [("aggressive", "joint"), ("basic", "network")])
def test_trace_of_the_papers_update_against_our_trainer_is_exact_where_the_rules_agree(mode, clip):
    """The written-out paper update on our model and AggressiveTrainer.fit with the paper's clipping
    (basic steps clip the joint norm either way) agree bit for bit: same batches, same noise, same
    weights after every update."""
    torch.manual_seed(0)
    ref, ours = PaperInterface(_tiny_vae()), _tiny_vae()
    out = trace(ref, ours, BatchPlan(_images(60), 10, seed=1), 3, aggressive=mode == "aggressive",
                clip_scope=clip, verbose=False)
    s = out["summary"]
    assert s["updates"] == 3 and s["max_weight_diff"] == 0.0 and s["max_buffer_diff"] == 0.0
    assert s["max_loss_diff"] == 0.0 and s["first_inner_diff"] == -1
    if mode == "aggressive":
        assert s["inner_steps"] >= 3 * 10  # a window test needs two windows


def test_trace_tells_the_libraries_clipping_apart():
    torch.manual_seed(0)
    ref, ours = PaperInterface(_tiny_vae()), _tiny_vae()
    s = trace(ref, ours, BatchPlan(_images(60), 10, seed=1), 2, aggressive=True, clip_scope="network",
              verbose=False)["summary"]
    assert s["inner_clipped_joint"] > 0  # clipped: then the joint and the encoder's own norm differ
    assert s["first_weight_diff"] == 0 and s["max_weight_diff"] > 1e-4


def test_batch_plan_is_deterministic_and_pair_tensors_checks_shapes():
    a, b = BatchPlan(_images(30), 10, seed=4), BatchPlan(_images(30), 10, seed=4)
    assert torch.equal(a.batch(5), b.batch(5)) and torch.equal(a.inner_batch(2, 7), b.inner_batch(2, 7))
    assert not torch.equal(a.inner_batch(2, 7), a.inner_batch(2, 8))
    assert a.noise_seed(1, 2) != a.noise_seed(2, 1)
    with pytest.raises(ValueError, match="differ"):
        pair_tensors(_tiny_vae(), build_vae(Preset("u", batch_size=10, **{**TINY, "decoder_channels": 6})))
