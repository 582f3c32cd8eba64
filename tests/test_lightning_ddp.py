"""AggressiveVI under Trainer(accelerator="cpu", devices=2, strategy="ddp") and fabric_trainer under
Fabric(devices=2, strategy="ddp"): real two-process gloo runs (tests/lightning_ddp_run.py,
tests/lightning_fabric_ddp_run.py), each in a process group of its own that is killed when it ends,
fails or times out."""
import os
import pathlib
import sys

import pytest

pytest.importorskip("lightning.pytorch", reason="the lightning extra is not installed")

import torch  # noqa: E402

from process_group import free_port, run_group  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def launch(tmp_path_factory, script, name):
    out = tmp_path_factory.mktemp(name)
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", GROUP_RANK="0", PYTHONPATH=ROOT)
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    logs = [(open(out / f"rank{r}.out", "w"), open(out / f"rank{r}.err", "w")) for r in range(2)]
    try:
        codes = run_group([dict(args=[sys.executable, os.path.join(HERE, script), str(out)],
                                cwd=ROOT, env=dict(env, RANK=str(r), LOCAL_RANK=str(r)), stdout=o, stderr=e)
                           for r, (o, e) in enumerate(logs)], timeout=300)
    finally:
        for o, e in logs:
            o.close()
            e.close()
    text = "".join((out / f"rank{r}.{n}").read_text()[-4000:] for r in range(2) for n in ("out", "err"))
    assert codes == [0, 0], text
    assert "unused parameters" not in text.lower()
    return out


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = launch(tmp_path_factory, "lightning_ddp_run.py", "lightning_ddp")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def fabric_ranks(tmp_path_factory):
    out = launch(tmp_path_factory, "lightning_fabric_ddp_run.py", "fabric_ddp")
    return [torch.load(out / f"fabric_rank{r}.pt", weights_only=False) for r in range(2)]


def test_both_ranks_ran_this_checkout_as_two_processes(ranks):
    for r, result in enumerate(ranks):
        assert pathlib.Path(result["package"]).resolve() == pathlib.Path(ROOT, "aggressive_vi", "__init__.py").resolve()
        assert (result["rank"], result["world_size"]) == (r, 2)
    assert not torch.equal(ranks[0]["first_batch"], ranks[1]["first_batch"])  # sharded data


def test_identical_parameters_and_the_same_switch_step_on_both_ranks(ranks):
    r0, r1 = ranks
    assert torch.equal(r0["params"], r1["params"])
    assert r0["left_aggressive_at"] == r1["left_aggressive_at"] is not None
    assert r0["left_aggressive_at"] in (4, 8)  # the end of epoch 0 or 1 (4 batches per rank and epoch)
    assert r0["per_batch"] == r1["per_batch"]  # the same inner-step counts: the window test is collective
    assert r0["val_mi"] == r1["val_mi"]  # reduced over ranks before the stopping criterion decides


def test_global_step_counts_decoder_updates(ranks):
    for r in ranks:
        assert r["global_step"] == r["step"] == 3 * 4 == len(r["per_batch"])
        aggressive = r["per_batch"][:r["left_aggressive_at"]]
        assert all(len(s) >= 7 and s[-1] == "dec" for s in aggressive)
        assert all(s == ["enc", "dec"] for s in r["per_batch"][r["left_aggressive_at"]:])


def test_inner_steps_all_reduce_both_gradients_and_step_the_encoder_alone(ranks):
    """The default clip_scope="joint": an inner step computes both networks' gradients (for their
    joint norm), averaged over ranks, and steps the encoder alone."""
    r0, r1 = ranks
    # different batches on the two ranks, yet the same gradients: they were averaged over ranks
    assert torch.equal(r0["first_inner_encoder_grad"], r1["first_inner_encoder_grad"])
    assert r0["first_inner_decoder_grad"] is not None
    assert torch.equal(r0["first_inner_decoder_grad"], r1["first_inner_decoder_grad"])
    for r in ranks:
        assert r["inner_decoder_grads_set"] and r["inner_decoder_unchanged"] and all(r["inner_decoder_unchanged"])


def test_the_inner_loop_draws_from_the_sharded_training_loader(ranks):
    """As AggressiveTrainer: a second stream over the training loader, here Lightning's, sharded by the
    DistributedSampler Lightning put in (each pass of the inner stream calls its set_epoch, and
    Lightning's epoch calls it again before its own pass)."""
    for rank, r in enumerate(ranks):
        name, sampler_rank, _ = r["inner_sampler"]
        assert (name, sampler_rank) == ("DistributedSampler", rank) and r["inner_is_train"]


def test_fabric_ddp_ranks_end_identical_with_the_trainers_own_wrappers(fabric_ranks):
    r0, r1 = fabric_ranks
    for r, result in enumerate(fabric_ranks):
        assert pathlib.Path(result["package"]).resolve() == pathlib.Path(ROOT, "aggressive_vi", "__init__.py").resolve()
        assert (result["rank"], result["world_size"], result["synchronised"]) == (r, 2, True)
    assert not torch.equal(r0["first_batch"], r1["first_batch"])  # sharded data
    assert torch.equal(r0["params"], r1["params"])
    assert r0["history"] == r1["history"]
    assert [h["aggressive"] for h in r0["history"]] == [True, False]  # FixedSteps(4) of 4 batches per epoch
    assert r0["history"][0]["inner_steps_mean"] >= 6 and r0["history"][0]["left_aggressive_at"] == 4
