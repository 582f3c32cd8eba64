"""One rank of the two-process Fabric DDP test (tests/test_lightning_ddp.py): AggressiveTrainer through
``fabric_trainer`` under ``Fabric(accelerator="cpu", devices=2, strategy="ddp", precision="bf16-mixed")``.

Launched as ``python tests/lightning_fabric_ddp_run.py OUT_DIR`` with the torchelastic variables set
per rank (Fabric then uses these processes instead of starting its own).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402

torch.set_num_threads(1)

from lightning.fabric import Fabric  # noqa: E402
from torch.utils.data import DataLoader, DistributedSampler  # noqa: E402

import aggressive_vi  # noqa: E402
from aggressive_vi import VAE, FixedSteps  # noqa: E402
from aggressive_vi.lightning import fabric_autocast, fabric_trainer  # noqa: E402
from conftest import BernoulliDecoder, MLPEncoder, binary_data  # noqa: E402


def main(out):
    fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp", precision="bf16-mixed")
    fabric.launch()
    torch.manual_seed(1 + fabric.global_rank)  # different noise per rank; DDP copies rank 0's weights
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    data = binary_data(64)
    train = DataLoader(data, batch_size=8, sampler=DistributedSampler(data, seed=0))
    inner = DataLoader(data, batch_size=8, sampler=DistributedSampler(data, seed=1))
    first = {}

    def get_input(batch):
        first.setdefault("batch", batch.clone())
        return batch

    vae.get_input = get_input  # every consumer takes the input the model's way
    trainer = fabric_trainer(fabric, vae, torch.optim.Adam(vae.encoder.parameters(), lr=1e-2),
                             torch.optim.Adam(vae.decoder.parameters(), lr=1e-2), stopping=FixedSteps(4),
                             window=3, max_inner_steps=9)
    with fabric_autocast(fabric):
        history = trainer.fit(train, epochs=2, inner_loader=inner)
    torch.save({
        "package": aggressive_vi.__file__,
        "rank": fabric.global_rank,
        "world_size": fabric.world_size,
        "synchronised": trainer.nets.synchronised,
        "params": torch.cat([p.detach().flatten() for p in vae.parameters()]),
        "history": [{k: v for k, v in r.to_dict().items() if k != "wall_time"} for r in history.records],
        "first_batch": first["batch"],
    }, os.path.join(out, f"fabric_rank{fabric.global_rank}.pt"))


if __name__ == "__main__":
    main(sys.argv[1])
