"""Metric objects reduce their named states over ranks; ``fit`` refuses uneven shards up front.

A real two-process gloo group, its ranks in one process group of their own so that a timeout kills
both workers (torchrun would start each worker in a session of its own, out of reach of a kill of
torchrun's group)."""
import os
import subprocess
import sys

import pytest
import torch

from aggressive_vi import metrics
from conftest import binary_data
from ddp_metrics_run import BATCH, N, SEEDS, model, shard_batches
from process_group import free_port, run_group

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_metrics")
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    logs = [open(out / f"rank{r}.log", "w") for r in range(2)]
    try:  # the ranks in one process group of their own, SIGKILLed as a whole at the end
        codes = run_group([dict(args=[sys.executable, os.path.join(HERE, "ddp_metrics_run.py"), str(out)],
                                cwd=ROOT, env=dict(env, RANK=str(r), LOCAL_RANK=str(r)), stdout=log,
                                stderr=subprocess.STDOUT) for r, log in enumerate(logs)], timeout=180)
    finally:
        for log in logs:
            log.close()
    assert codes == [0, 0], "".join((out / f"rank{r}.log").read_text()[-3000:] for r in range(2))
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_workers_import_the_checkout_under_test(ranks):
    assert all(r["file"].startswith(ROOT + os.sep) for r in ranks)


def test_metrics_reduce_over_ranks_to_the_single_process_value(ranks):
    vae = model()
    data = binary_data(N)
    kl, au = metrics.KL(vae), metrics.ActiveUnits(vae, threshold=0.0)
    for start in range(0, N, BATCH):
        kl.update(data[start:start + BATCH])
        au.update(data[start:start + BATCH])
    for r in ranks:  # sums in float64: equal up to the order of additions
        assert r["kl"] == pytest.approx(kl.compute(), rel=1e-12)
        assert torch.allclose(r["au_variances"], au.compute().variances, rtol=1e-6)
        assert r["elbo_count"] == N
    # the whole-data-set MI sees every rank's posteriors (in rank order) and the same seeded draws
    in_rank_order = torch.cat([data[0::2], data[1::2]])
    reference = metrics.DatasetMutualInformation(vae, n_draws=3, seed=1)
    for start in range(0, N, BATCH):
        reference.update(in_rank_order[start:start + BATCH])
    assert ranks[0]["dataset_mi"] == ranks[1]["dataset_mi"]
    assert ranks[0]["dataset_mi"] == pytest.approx(reference.compute().value, rel=1e-9)


def test_uneven_shards_fail_before_training_naming_each_ranks_length(ranks):
    for r in ranks:
        message = r["uneven_error"]
        assert message is not None and "rank 0: 5" in message and "rank 1: 4" in message
        assert "DistributedSampler" in message and "drop_last" in message
        assert r["step_after_uneven"] == 0


def in_one_process(make, key):
    """The ranks' draws made in one process: shard 0's batches from rank 0's seed, then shard 1's
    from rank 1's, into one metric; its compute() is what the all-reduced one must equal."""
    vae = model()
    data = binary_data(N)
    metric = make(vae)
    for r in range(2):
        torch.manual_seed(SEEDS[key] + r)
        for batch in shard_batches(data, r):
            metric.update(batch)
    return metric.compute()


@pytest.mark.parametrize("key,estimator", [("validation", "minibatch"), ("validation_dataset", "dataset")])
def test_the_validation_collection_reduces_to_the_single_process_record(ranks, key, estimator):
    expected = in_one_process(lambda vae: metrics.ValidationMetrics(vae, mi_estimator=estimator), key)
    for r in ranks:  # float64 sums in another order: equal to rounding
        assert r[key + "_examples"] == N and set(r[key]) == set(expected)
        assert r[key]["val_au"] == expected["val_au"]
        for name, value in expected.items():
            assert r[key][name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert ranks[0][key] == ranks[1][key]  # every rank holds the same record


def test_the_minibatch_mi_counts_and_averages_every_ranks_examples(ranks):
    expected = in_one_process(metrics.MutualInformation, "minibatch_mi")
    for r in ranks:
        mi = r["minibatch_mi"]
        assert mi["n_examples"] == N == expected.n_examples  # not this rank's N / 2
        assert mi["value"] == pytest.approx(expected.value, rel=1e-9)
        # 5 batches: the standard error's n - 1 = 4 counts the batches of both ranks
        assert mi["stderr"] == pytest.approx(expected.stderr, rel=1e-9)


def test_the_epochs_training_means_are_over_both_ranks_examples(ranks):
    # every update sees one batch of BATCH examples on each rank: the epoch's mean per example is
    # the mean of the per-batch means the two ranks saw (loss = reconstruction + kl_weight * kl)
    seen = [s for r in ranks for s in r["train_seen"]]
    expected = {"loss": sum(s["loss"] for s in seen) / len(seen),
                "kl": sum(s["kl"] for s in seen) / len(seen),
                "reconstruction": sum(s["loss"] - s["kl_weight"] * s["kl"] for s in seen) / len(seen)}
    for r in ranks:
        record = r["train_record"]
        for name, value in expected.items():  # float32 batch means against float64 sums
            assert record[name] == pytest.approx(value, rel=1e-5), name
        assert record["steps"] == len(r["train_seen"]) == 3
    assert ranks[0]["train_record"] == ranks[1]["train_record"]
    # the ranks saw different data, so a rank's own mean is not the reduced one
    own = sum(s["loss"] for s in ranks[0]["train_seen"]) / 3
    assert abs(own - expected["loss"]) > 1e-3 * abs(expected["loss"])
