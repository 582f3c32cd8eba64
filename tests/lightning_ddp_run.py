"""One rank of the two-process Lightning DDP test (tests/test_lightning_ddp.py): fits LitVAE with
``Trainer(accelerator="cpu", devices=2, strategy="ddp")`` on gloo and saves what the test compares.

Launched as ``python tests/lightning_ddp_run.py OUT_DIR`` with the torchelastic variables (RANK,
LOCAL_RANK, GROUP_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) set per rank, so
Lightning uses those processes instead of starting its own.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402

torch.set_num_threads(1)

import lightning.pytorch as pl  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import aggressive_vi  # noqa: E402
from aggressive_vi import AnyOf, FixedEpochs, MIPlateau  # noqa: E402
from conftest import binary_data  # noqa: E402
from lightning_models import LitVAE  # noqa: E402

BATCH = 8
N_TRAIN = 64  # 32 per rank: 4 batches per epoch
EPOCHS = 3


class FirstBatches:
    """get_input that keeps the first training batch this rank saw (ranks must see different ones)."""

    def __init__(self):
        self.first = None

    def __call__(self, batch):
        if self.first is None:
            self.first = batch.clone()
        return batch


def main(out):
    torch.manual_seed(0)
    first = FirstBatches()
    module = LitVAE(stopping=AnyOf(MIPlateau(), FixedEpochs(2)), window=3, max_inner_steps=9,
                    watch_decoder=True, get_input=first)
    train = DataLoader(binary_data(N_TRAIN), batch_size=BATCH, shuffle=True)
    val = DataLoader(binary_data(32, seed=1), batch_size=BATCH)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=EPOCHS, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    trainer.fit(module, train, val)
    callback = module.aggressive
    sampler = callback.inner_loader.sampler
    torch.save({
        "package": aggressive_vi.__file__,
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "params": torch.cat([p.detach().flatten() for p in module.vae.parameters()]),
        "global_step": trainer.global_step,
        "step": callback.step,
        "left_aggressive_at": callback.left_aggressive_at,
        "per_batch": module.per_batch,
        "inner_decoder_grads_set": bool(module.inner_decoder_grads)
        and all(g is not None for g in module.inner_decoder_grads),
        "first_inner_decoder_grad": module.first_inner_decoder_grad,
        "inner_decoder_unchanged": module.inner_decoder_unchanged,
        "first_inner_encoder_grad": module.first_inner_encoder_grad,
        "first_batch": first.first,
        "inner_sampler": (type(sampler).__name__, getattr(sampler, "rank", None), getattr(sampler, "epoch", None)),
        "inner_is_train": callback.inner_loader is trainer.train_dataloader,
        "val_mi": float(trainer.callback_metrics["val_mi"]),
    }, os.path.join(out, f"rank{trainer.global_rank}.pt"))


if __name__ == "__main__":
    main(sys.argv[1])
