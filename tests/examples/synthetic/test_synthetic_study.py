"""The study end to end with tiny settings, and the figure helpers."""
import importlib.util
import json

import pytest

from examples.synthetic.__main__ import main
from examples.synthetic.plots import pick_stages, trajectory_path
from examples.synthetic.snapshots import Snapshot, load_snapshots
from examples.synthetic.study import StudyConfig

TINY = ["--n-train", "48", "--n-valid", "16", "--n-test", "8", "--n-points", "8", "--epochs", "2",
        "--embed-dim", "8", "--hidden-dim", "8", "--dz", "1.0", "--snapshot-every", "2",
        "--window", "2", "--max-inner-steps", "4", "--quiet"]
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out, cwd = tmp_path_factory.mktemp("synthetic"), tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        summary = main(TINY + ["--out", str(out)])
    assert list(cwd.iterdir()) == [], "the study wrote outside its --out"
    return out, summary


def test_cli_writes_snapshots_histories_summary_and_figures(tiny_run, capsys):
    out, summary = tiny_run
    snaps = load_snapshots(str(out / "snapshots.json"))["runs"]
    assert list(snaps) == ["basic", "aggressive"]
    for mode, run in snaps.items():
        # 48 / 16 = 3 updates per epoch, 2 epochs: snapshots every 2 updates plus the last
        assert [s.step for s in run] == [0, 2, 4, 6]
        assert all(len(s.model_mean) == 8 and len(s.inference_mean) == 8 for s in run)
        assert all(abs(v) <= 20.0 for s in run for v in s.model_mean)  # a mean over the grid
        history = json.loads((out / f"history_{mode}.json").read_text())
        assert [r["epoch"] for r in history] == [0, 1]
    # both runs start from the same weights
    for field in ("model_mean", "inference_mean"):
        assert getattr(snaps["basic"][0], field) == getattr(snaps["aggressive"][0], field)
    assert not any(s.aggressive for s in snaps["basic"])
    assert snaps["aggressive"][1].aggressive  # step 2 followed an inner loop
    traj = load_snapshots(str(out / "trajectory.json"))["runs"]
    assert [s.step for s in traj["aggressive"]] == list(range(7))
    assert all(len(s.model_mean) == 1 for s in traj["aggressive"])
    on_disk = json.loads((out / "summary.json").read_text())
    assert set(on_disk["runs"]) == {"basic", "aggressive"}
    assert [s["step"] for s in on_disk["runs"]["aggressive"]["snapshots"]] == [0, 2, 4, 6]
    assert on_disk["runs"]["basic"]["final"]["val_mi"] is not None
    if HAVE_MPL:
        for name in ("posterior_mean_space.png", "trajectory.png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert summary["figures"]["stages"] == {"basic": [0, 2, 4, 6], "aggressive": [0, 2, 4, 6]}
    else:
        assert not (out / "posterior_mean_space.png").exists()


def test_cli_is_deterministic(tiny_run, tmp_path):
    out, _ = tiny_run
    main(TINY + ["--out", str(tmp_path), "--no-plots", "--modes", "aggressive"])
    again = load_snapshots(str(tmp_path / "snapshots.json"))["runs"]["aggressive"]
    first = load_snapshots(str(out / "snapshots.json"))["runs"]["aggressive"]
    assert again == first


def test_cli_rejects_bad_settings(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(TINY + ["--out", str(tmp_path), "--n-points", "50"])  # more points than the test split
    assert "n_points" in capsys.readouterr().err
    with pytest.raises(ValueError, match="modes"):
        StudyConfig(modes=["fast"])


def _snap(step, model, infer, aggressive):
    return Snapshot(step=step, epoch=0, aggressive=aggressive, model_mean=[model], inference_mean=[infer])


def test_trajectory_path_inserts_the_encoder_move_of_aggressive_updates():
    snaps = [_snap(0, 0.0, 0.0, True), _snap(1, 1.0, 0.5, True), _snap(2, 1.5, 1.2, True)]
    xs, ys = trajectory_path(snaps)
    # (0,0) -> encoder catches up (0, 0.5) -> decoder moves (1, 0.5) -> (1, 1.2) -> (1.5, 1.2)
    assert list(zip(xs, ys)) == [(0.0, 0.0), (0.0, 0.5), (1.0, 0.5), (1.0, 1.2), (1.5, 1.2)]
    basic = [_snap(0, 0.0, 0.0, False), _snap(1, 1.0, 0.5, False)]
    assert list(zip(*trajectory_path(basic))) == [(0.0, 0.0), (1.0, 0.5)]
    # snapshots further apart than one update get no corner: the moves interleaved in between
    gap = [_snap(0, 0.0, 0.0, True), _snap(5, 1.0, 0.5, True)]
    assert list(zip(*trajectory_path(gap))) == [(0.0, 0.0), (1.0, 0.5)]


def test_pick_stages_spreads_over_the_recorded_steps():
    snaps = [_snap(s, 0.0, 0.0, False) for s in (0, 100, 200, 300, 400, 500, 600, 626)]
    assert pick_stages(snaps) == [0, 200, 400, 626]
    assert pick_stages([_snap(s, 0.0, 0.0, False) for s in (0, 100, 200, 300, 313)]) == [0, 100, 200, 313]
    assert pick_stages(snaps[:3]) == [0, 100, 200]
    with pytest.raises(ValueError):
        pick_stages([])


def test_study_defaults_to_the_papers_optimiser():
    import torch

    from examples.synthetic.study import make_optimizer

    config = StudyConfig()
    assert config.optimizer == "sgd"
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(2))], config)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["lr"] == 1.0
    adam = make_optimizer([torch.nn.Parameter(torch.zeros(2))], StudyConfig(optimizer="adam"))
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == 1e-3
