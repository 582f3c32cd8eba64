"""Worker for tests/test_distributed_metrics.py, launched with ``torchrun --nproc_per_node=2`` (gloo).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_metrics_run.py OUT_DIR

Each rank writes OUT_DIR/rank{r}.pt: the metrics computed over its shard of a fixed data set
(reduced over both ranks by the metrics themselves; the sampling ones from a seed per rank, so that
the test can make the same draws in one process), a short training epoch's record with the losses
this rank saw at each update, and the error ``fit`` raised when the ranks' loaders yield different
numbers of batches.
"""
from __future__ import annotations

import dataclasses
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from conftest import BernoulliDecoder, MLPEncoder, binary_data  # noqa: E402

from aggressive_vi import VAE, AggressiveTrainer, Always, FixedSteps  # noqa: E402
from aggressive_vi import metrics  # noqa: E402

N, BATCH = 40, 8
SEEDS = {"validation": 20, "validation_dataset": 30, "minibatch_mi": 40}  # + rank
TRAIN_BATCHES = 3


def shard_batches(data: torch.Tensor, rank: int):
    shard = data[rank::2]  # rank 0: examples 0, 2, ...; rank 1: 1, 3, ...
    return [shard[start:start + BATCH] for start in range(0, shard.shape[0], BATCH)]


def train_batches(rank: int):
    """This rank's training batches: different data on each rank."""
    return [binary_data(BATCH, seed=100 + 10 * rank + i) for i in range(TRAIN_BATCHES)]


def train_model(callbacks=()):
    vae = model()
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.1),
                                torch.optim.SGD(vae.decoder.parameters(), lr=0.1),
                                stopping=FixedSteps(1), window=2, max_inner_steps=4, callbacks=callbacks)
    return vae, trainer


def model() -> VAE:
    torch.manual_seed(0)
    return VAE(MLPEncoder(), BernoulliDecoder())


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    result = {"file": os.path.abspath(sys.modules["aggressive_vi"].__file__)}
    vae = model()
    data = binary_data(N)
    shard = data[rank::2]  # rank 0: examples 0, 2, ...; rank 1: 1, 3, ...
    kl, au = metrics.KL(vae), metrics.ActiveUnits(vae, threshold=0.0)
    elbo_counts = metrics.ELBO(vae)
    dataset_mi = metrics.DatasetMutualInformation(vae, n_draws=3, seed=1)
    for start in range(0, shard.shape[0], BATCH):
        batch = shard[start:start + BATCH]
        kl.update(batch)
        au.update(batch)
        elbo_counts.update(batch)
        dataset_mi.update(batch)
    result["kl"] = kl.compute()
    result["au_variances"] = au.compute().variances
    result["elbo_count"] = int(elbo_counts.reduced()["count"])
    result["dataset_mi"] = dataset_mi.compute().value  # posteriors gathered: rank 0's, then rank 1's

    # the validation collection and the minibatch MI over this rank's shard, each from a seed per rank
    for key, estimator in (("validation", "minibatch"), ("validation_dataset", "dataset")):
        torch.manual_seed(SEEDS[key] + rank)
        collection = metrics.ValidationMetrics(vae, mi_estimator=estimator)
        for batch in shard_batches(data, rank):
            collection.update(batch)
        result[key] = collection.compute()
        result[key + "_examples"] = collection.results().n_examples
    torch.manual_seed(SEEDS["minibatch_mi"] + rank)
    minibatch_mi = metrics.MutualInformation(vae)
    for batch in shard_batches(data, rank):
        minibatch_mi.update(batch)
    result["minibatch_mi"] = dataclasses.asdict(minibatch_mi.compute())

    # one training epoch (one aggressive update, then joint ones) on different data per rank: the
    # record's means are over both ranks' examples; the losses each rank saw, for the test to average
    seen = []

    class KeepLosses:
        def on_step_end(self, trainer, info):
            seen.append({"loss": float(info.loss), "kl": float(info.kl), "kl_weight": info.kl_weight})

    _, trainer = train_model(callbacks=[KeepLosses()])
    trainer.fit(train_batches(rank), epochs=1)
    result["train_record"] = {k: v for k, v in trainer.history[0].to_dict().items() if k != "wall_time"}
    result["train_seen"] = seen

    # uneven shards: rank 0 has 5 batches, rank 1 has 4
    n_batches = 5 if rank == 0 else 4
    batches = [binary_data(BATCH, seed=i) for i in range(n_batches)]
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.1),
                                torch.optim.SGD(vae.decoder.parameters(), lr=0.1), stopping=Always())
    try:
        trainer.fit(batches, epochs=1)
        result["uneven_error"] = None
    except ValueError as exc:
        result["uneven_error"] = str(exc)
    result["step_after_uneven"] = trainer.step
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
