"""DDP: a real two-process gloo run, plus the single-process behaviour of the helpers."""
import os
import pathlib
import sys

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from aggressive_vi import VAE, AggressiveTrainer, Always, estimators
from aggressive_vi.checkpoint import load_checkpoint
from aggressive_vi.distributed import TrainingNetworks, all_gather_object, any_rank, unwrap
from conftest import BernoulliDecoder, MLPEncoder, binary_data
from ddp_run import BATCH, N_VAL
from process_group import free_port, run_group

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """Runs tests/ddp_run.py as ranks 0 and 1 of a gloo group once; returns both ranks' results and
    their output. The ranks run in one process group of their own, killed as a whole when the run
    ends, fails or times out (they trap SIGTERM, so they would outlive a plain terminate)."""
    out = tmp_path_factory.mktemp("ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # containers whose hostname does not resolve
    logs = [(open(out / f"rank{r}.out", "w"), open(out / f"rank{r}.err", "w")) for r in range(2)]
    try:
        codes = run_group([dict(args=[sys.executable, os.path.join(HERE, "ddp_run.py"), str(out)], cwd=ROOT,
                                env=dict(env, RANK=str(r), LOCAL_RANK=str(r)), stdout=o, stderr=e)
                           for r, (o, e) in enumerate(logs)], timeout=240)
    finally:
        for o, e in logs:
            o.close()
            e.close()
    text = {name: [(out / f"rank{r}.{name}").read_text() for r in range(2)] for name in ("out", "err")}
    assert codes == [0, 0], "".join(t[-3000:] for pair in zip(text["out"], text["err"]) for t in pair)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    return ranks, "".join(text["out"]), out


def test_both_ranks_ran_the_checkout_under_test(ddp):
    (r0, r1), _, _ = ddp
    for r in (r0, r1):
        assert pathlib.Path(r["package"]).resolve() == pathlib.Path(ROOT, "aggressive_vi", "__init__.py").resolve()


def test_ranks_end_with_identical_parameters_and_history(ddp):
    (r0, r1), _, _ = ddp
    assert torch.equal(r0["params"], r1["params"])  # bitwise: DDP averaged every gradient identically
    assert r0["history"] == r1["history"]
    # a short aggressive run through the switch to basic training, with inner loops in the first epoch
    assert [h["aggressive"] for h in r0["history"]] == [True, False, False]
    assert r0["history"][0]["inner_steps_mean"] >= 6 and r0["history"][1]["inner_steps_mean"] == 0
    assert all(h["steps"] == 6 for h in r0["history"])  # 96 examples / 2 ranks / batch 8


def test_resuming_a_ddp_run_mid_epoch_is_exact_on_every_rank(ddp):
    (r0, r1), _, _ = ddp
    for r in (r0, r1):
        assert torch.equal(r["resumed_params"], r["params"]) and r["resumed_history"] == r["history"]


def test_user_wrapped_networks_train_like_trainer_wrapped_ones(ddp):
    (r0, r1), _, _ = ddp
    assert torch.equal(r0["wrapped_auto"], r0["wrapped_user"]) and torch.equal(r0["wrapped_user"], r1["wrapped_user"])
    assert r0["wrapped_user_keys"] == r0["wrapped_auto_keys"] and not any("module" in k for k in r0["wrapped_user_keys"])


def _phase_counts(history):
    inner = sum(round(h["inner_steps_mean"] * h["aggressive_steps"]) for h in history)
    decoder_steps = sum(h["aggressive_steps"] for h in history)
    joint_steps = sum(h["steps"] - h["aggressive_steps"] for h in history)
    return inner, decoder_steps, joint_steps


def test_each_phase_synchronises_only_the_gradients_it_computes(ddp):
    (r0, r1), _, _ = ddp
    # the default clip_scope="joint": every update computes (so all-reduces) both networks' gradients
    inner, decoder_steps, joint_steps = _phase_counts(r0["history"])
    assert inner > 0 and decoder_steps > 0 and joint_steps > 0
    every = inner + decoder_steps + joint_steps
    assert r0["reduces"] == r1["reduces"] == {"encoder": every, "decoder": every}
    # clip_scope="network": encoder gradients are all-reduced in inner steps only, decoder gradients in
    # decoder steps only (the other network's is not computed there)
    inner, decoder_steps, joint_steps = _phase_counts(r0["history_network"])
    assert inner > 0 and decoder_steps > 0 and joint_steps == 0
    assert r0["reduces_network"] == r1["reduces_network"] == {"encoder": inner, "decoder": decoder_steps}


def test_only_rank_zero_writes_logs_and_checkpoints(ddp):
    (r0, r1), stdout, out = ddp
    assert stdout.count("epoch   0 |") == 1 and stdout.count("left the aggressive phase") == 1
    files = sorted(os.listdir(out / "ckpt"))
    assert files[-1] == "checkpoint-e0003-s000000018.pt" and not any(".tmp" in f for f in files)
    assert r0["last_checkpoint"] == r1["last_checkpoint"] == str(out / "ckpt" / files[-1])
    state = load_checkpoint(out / "ckpt" / files[-1])
    assert sorted(state["per_rank"]) == [0, 1] and state["world_size"] == 2  # both ranks' random states
    assert not torch.equal(state["per_rank"][0]["random"]["torch"],
                           state["per_rank"][1]["random"]["torch"])
    # the checkpoint of a DDP run has plain keys: it loads into a single-process trainer
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    trainer = AggressiveTrainer(vae, torch.optim.Adam(vae.encoder.parameters()),
                                torch.optim.Adam(vae.decoder.parameters()), stopping=Always(), window=3,
                                max_inner_steps=9)  # the run's options: the saved configuration is checked
    trainer.load_state_dict(state)
    assert torch.equal(torch.cat([p.reshape(-1) for p in vae.parameters()]), r0["params"])


def test_a_nan_on_one_rank_or_a_stop_on_one_rank_is_decided_on_all(ddp):
    (r0, r1), _, _ = ddp
    assert r0["raised"] == r1["raised"] == (3, "decoder")
    assert torch.equal(r0["raised_params"], r1["raised_params"]) and torch.isfinite(r0["raised_params"]).all()
    assert r0["skipped"] == r1["skipped"] == 1 and torch.equal(r0["skip_params"], r1["skip_params"])
    assert r0["stopped_at"] == r1["stopped_at"] == 2


def test_estimators_under_two_ranks_equal_one_process_over_the_same_data(ddp):
    (r0, _), _, _ = ddp
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    torch.nn.utils.vector_to_parameters(r0["params"], vae.parameters())
    val = binary_data(N_VAL, seed=1)
    whole = DataLoader(val, batch_size=BATCH)
    shards = [DataLoader(val, batch_size=BATCH, sampler=DistributedSampler(val, num_replicas=2, rank=r, shuffle=False))
              for r in range(2)]
    est = r0["estimates"]
    # deterministic estimators: one process over all the data
    assert est["kl"] == pytest.approx(estimators.kl(vae, whole), rel=1e-9)
    assert torch.allclose(est["au"], estimators.active_units(vae, whole).variances.double(), rtol=1e-5)
    # sampling estimators: the same draws as the ranks made (same seeds, same shards), combined by size
    for name, seed, fn in [("mi", 7, lambda loader: estimators.mutual_information(vae, loader)),
                           ("elbo", 8, lambda loader: estimators.elbo(vae, loader).elbo),
                           ("iw_nll", 9, lambda loader: estimators.iw_nll(vae, loader, n_samples=20, chunk_size=7).nll)]:
        per_shard = []
        for r, loader in enumerate(shards):
            torch.manual_seed(seed + r)
            per_shard.append(fn(loader))
        assert est[name] == pytest.approx(sum(per_shard) / 2, rel=1e-9, abs=1e-12), name


def test_without_a_process_group_the_helpers_are_single_process():
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    nets = TrainingNetworks(vae)
    assert nets.inner is vae and nets.decoder is vae and nets.joint is vae and not nets.synchronised
    assert any_rank(True, False) == [True, False] and all_gather_object({"a": 1}) == [{"a": 1}]
    assert unwrap(torch.nn.DataParallel(vae.encoder)) is vae.encoder


def test_under_nccl_the_model_must_be_on_the_current_cuda_device(monkeypatch):
    """NCCL collectives stage on torch.cuda.current_device(): without set_device every rank uses
    cuda:0 and checkpoint saving hangs. No GPU here: the process-group queries are stood in for, and
    the check is called with the devices a misconfigured rank 1 would report."""
    import torch.distributed as dist

    from aggressive_vi import distributed

    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    monkeypatch.setattr(dist, "get_backend", lambda *a: "nccl")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    with pytest.raises(ValueError, match=r"rank 1's model is on cuda:1 but torch.cuda.current_device\(\) "
                                         r"is cuda:0: call torch.cuda.set_device"):
        distributed.check_collective_device(torch.device("cuda", 1))
    with pytest.raises(ValueError, match="model is on cpu"):
        distributed.check_collective_device(torch.device("cpu"))
    distributed.check_collective_device(torch.device("cuda", 0))  # set_device done: fine
    assert distributed.collective_device() == torch.device("cuda", 0)
    monkeypatch.setattr(dist, "get_backend", lambda *a: "gloo")
    distributed.check_collective_device(torch.device("cpu"))
    assert distributed.collective_device() == torch.device("cpu")
