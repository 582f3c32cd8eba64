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
from ddp_metrics_run import BATCH, N, model
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
