"""The worker that tests/test_distributed.py starts twice, as ranks 0 and 1 of a gloo (CPU) group.

    MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 WORLD_SIZE=2 RANK=r python tests/ddp_run.py OUT_DIR

(for r in 0 and 1; ``torchrun --standalone --nproc_per_node=2 tests/ddp_run.py OUT_DIR`` does the
same; the test starts the ranks itself, in one process group, so that it can kill them all).

Each rank writes OUT_DIR/rank{r}.pt with what the test compares: its parameters and history after a
short aggressive run through the stopping switch, validation estimates over a sharded loader, and
what happened when one rank alone met a NaN or asked to stop.
"""
from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.utils.data import DataLoader, DistributedSampler

# the checkout these tests belong to comes first, before any installed aggressive_vi; then tests/
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(_HERE), _HERE]
from conftest import BernoulliDecoder, MLPEncoder, binary_data  # noqa: E402

import aggressive_vi  # noqa: E402
from aggressive_vi import (VAE, AggressiveTrainer, AnyOf, Checkpoint, FixedEpochs, FixedSteps,  # noqa: E402
                           MIPlateau, NonFiniteError, estimators)
from aggressive_vi.distributed import data_parallel  # noqa: E402

N_TRAIN, N_VAL, BATCH = 96, 32, 8


def loaders():
    train = binary_data(N_TRAIN)
    val = binary_data(N_VAL, seed=1)
    train_loader = DataLoader(train, batch_size=BATCH, sampler=DistributedSampler(train, shuffle=True, seed=0))
    val_loader = DataLoader(val, batch_size=BATCH, sampler=DistributedSampler(val, shuffle=False))
    return train_loader, val_loader


class NaNOnRank(BernoulliDecoder):
    """Returns NaN in the decoder step of decoder updates in ``bad_updates`` on rank ``bad_rank`` only
    (the trainer must use ``clip_scope="network"``: only there does the decoder step's z carry no
    gradient, which tells it from the inner steps)."""

    def __init__(self, bad_rank, bad_updates):
        super().__init__()
        self.bad_rank, self.bad_updates, self.trainer = bad_rank, bad_updates, None

    def log_prob(self, x, z):
        out = super().log_prob(x, z)
        if (dist.get_rank() == self.bad_rank and not z.requires_grad and torch.is_grad_enabled()
                and self.trainer.step + 1 in self.bad_updates):
            return out * float("nan")
        return out


def make(decoder=None, seed=0, **kwargs):
    torch.manual_seed(seed + 100 * dist.get_rank())  # ranks start apart: DDP must broadcast rank 0's
    vae = VAE(MLPEncoder(), decoder or BernoulliDecoder())
    trainer = AggressiveTrainer(vae, torch.optim.Adam(vae.encoder.parameters(), lr=1e-2),
                                torch.optim.Adam(vae.decoder.parameters(), lr=1e-2), window=3,
                                max_inner_steps=9, **kwargs)
    if isinstance(decoder, NaNOnRank):
        decoder.trainer = trainer
    return vae, trainer


def flat(vae):
    return torch.cat([p.detach().reshape(-1) for p in vae.parameters()])


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank = dist.get_rank()
    result = {"package": aggressive_vi.__file__}

    # 1. a short aggressive run through the stopping switch, with checkpoints (rank 0 writes)
    train, val = loaders()
    vae, trainer = make(stopping=AnyOf(MIPlateau(), FixedEpochs(2)), verbose=True,
                        callbacks=[Checkpoint(os.path.join(out_dir, "ckpt"), every_n_steps=4, keep_last=None)])
    assert trainer.nets.synchronised
    # count the gradient all-reduces of each network (one bucket each: the networks are tiny)
    reduces = {"encoder": 0, "decoder": 0}

    def counting(name):
        def hook(state, bucket):
            reduces[name] += 1
            return default_hooks.allreduce_hook(None, bucket)
        return hook

    trainer.nets.joint.encoder.register_comm_hook(None, counting("encoder"))
    trainer.nets.joint.decoder.ddp.register_comm_hook(None, counting("decoder"))
    trainer.fit(train, val_loader=val, epochs=3)
    result["reduces"] = dict(reduces)
    result["params"] = flat(vae)
    result["history"] = [{k: v for k, v in r.items() if k != "wall_time"} for r in trainer.history.to_dicts()]
    result["last_checkpoint"] = trainer.last_checkpoint

    # 1b. resume the same run from its mid-epoch checkpoint after decoder update 8 (epoch 1, batch 2):
    # each rank gets its own random state back and its sampler's shard at the same position
    vae, trainer = make(seed=5, stopping=AnyOf(MIPlateau(), FixedEpochs(2)))
    trainer.fit(train, val_loader=val, epochs=3,
                resume_from=os.path.join(out_dir, "ckpt", "checkpoint-e0001-s000000008.pt"))
    result["resumed_params"] = flat(vae)
    result["resumed_history"] = [{k: v for k, v in r.items() if k != "wall_time"} for r in trainer.history.to_dicts()]

    # 1c. clip_scope="network": one aggressive epoch, counting the reduces again
    # (its own names: section 2 estimates with the model of 1b)
    _, per_network = make(stopping=FixedEpochs(1), clip_scope="network")
    reduces.update(encoder=0, decoder=0)
    per_network.nets.joint.encoder.register_comm_hook(None, counting("encoder"))
    per_network.nets.joint.decoder.ddp.register_comm_hook(None, counting("decoder"))
    per_network.fit(train, epochs=1)
    result["reduces_network"] = dict(reduces)
    result["history_network"] = [{k: v for k, v in r.items() if k != "wall_time"}
                                 for r in per_network.history.to_dicts()]

    # 2. estimators over the sharded validation loader, each with a known seed per rank
    est = {"kl": estimators.kl(vae, val), "au": estimators.active_units(vae, val).variances.double()}
    torch.manual_seed(7 + rank)
    est["mi"] = estimators.mutual_information(vae, val)
    torch.manual_seed(8 + rank)
    est["elbo"] = estimators.elbo(vae, val).elbo
    torch.manual_seed(9 + rank)
    est["iw_nll"] = estimators.iw_nll(vae, val, n_samples=20, chunk_size=7).nll
    result["estimates"] = est

    # 3. a NaN on rank 1 alone: both ranks raise at the same update (no hang)
    vae, trainer = make(NaNOnRank(bad_rank=1, bad_updates={3}), stopping=FixedSteps(100), clip_scope="network")
    try:
        trainer.fit(train, epochs=1)
        result["raised"] = None
    except NonFiniteError as err:
        result["raised"] = (err.step, err.phase)
    result["raised_params"] = flat(vae)

    # 4. ... or both skip it and stay identical
    vae, trainer = make(NaNOnRank(bad_rank=1, bad_updates={2, 5}), stopping=FixedSteps(4), on_nonfinite="skip",
                        clip_scope="network")
    trainer.fit(train, epochs=1)
    result["skipped"] = trainer.history[0].skipped_batches
    result["skip_params"] = flat(vae)

    # 5. a callback on rank 0 alone stops training: every rank stops after the same update
    class StopOnRank0:
        def on_step_end(self, trainer, info):
            if rank == 0 and trainer.step == 2:
                trainer.stop_training = True

    vae, trainer = make(stopping=FixedSteps(100), callbacks=[StopOnRank0()])
    trainer.fit(train, epochs=2)
    result["stopped_at"] = trainer.step

    # 6. the user wraps the networks (data_parallel, here with DDP options) or the trainer does:
    # the same training either way
    for name, wrap in (("auto", False), ("user", True)):
        vae, _ = make(seed=11)
        model = data_parallel(vae, broadcast_buffers=False) if wrap else vae
        trainer = AggressiveTrainer(model, torch.optim.SGD(model.encoder.parameters(), lr=0.1),
                                    torch.optim.SGD(model.decoder.parameters(), lr=0.1),
                                    stopping=FixedSteps(3), window=2, max_inner_steps=4)
        torch.manual_seed(12)
        trainer.fit(train, epochs=1)
        result[f"wrapped_{name}"] = flat(vae)
        result[f"wrapped_{name}_keys"] = sorted(trainer.state_dict()["model"])

    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


if __name__ == "__main__":
    if sys.argv[1:] == ["--print-package"]:  # which aggressive_vi a run of this script uses
        print(aggressive_vi.__file__)
    else:
        main(sys.argv[1])
