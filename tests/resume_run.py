"""A small aggressive run shared by the resume tests; run as a script it is the process that gets killed.

    python tests/resume_run.py CHECKPOINT_DIR HANG_AT_STEP

trains with a Checkpoint every 5 decoder updates, prints "hanging" once the decoder update
HANG_AT_STEP is done and then sleeps until the test kills it with SIGKILL. It imports the
``aggressive_vi`` of its own checkout (``python tests/resume_run.py --print-package`` prints which).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, List, Sequence, Tuple

import torch
from torch.utils.data import DataLoader

# the checkout these tests belong to comes first, before any installed aggressive_vi; then tests/
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(_HERE), _HERE]
from conftest import BernoulliDecoder, MLPEncoder, binary_data  # noqa: E402

import aggressive_vi  # noqa: E402
from aggressive_vi import (VAE, AggressiveTrainer, AnyOf, Checkpoint, FixedSteps,  # noqa: E402
                           LinearKLAnnealing, LRDecayOnPlateau, MIPlateau)

EPOCHS = 2
STEPS_PER_EPOCH = 10  # 80 examples, batch 8


def build(callbacks: Sequence[Any] = (), seed: int = 0) -> Tuple[VAE, AggressiveTrainer, DataLoader, DataLoader]:
    """Model, trainer and loaders. The training loader shuffles with the global torch RNG (no seeded
    generator of its own): the hardest case for resuming, since its order depends on the RNG state
    when each epoch (and each inner-loop pass) begins."""
    torch.manual_seed(seed)
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    trainer = AggressiveTrainer(
        vae, torch.optim.Adam(vae.encoder.parameters(), lr=1e-2),
        torch.optim.SGD(vae.decoder.parameters(), lr=0.1, momentum=0.9),
        # aggressive until decoder update 17, i.e. past the kill at 15; MIPlateau carries state
        stopping=AnyOf(MIPlateau(patience=5, cumulative=True), FixedSteps(17)),
        kl_schedule=LinearKLAnnealing(start=0.1, warmup_epochs=1.5), window=3, max_inner_steps=10,
        callbacks=[LRDecayOnPlateau(patience=2, restore_best=False), *callbacks])
    train = DataLoader(binary_data(80), batch_size=8, shuffle=True)
    val = DataLoader(binary_data(24, seed=1), batch_size=8)
    return vae, trainer, train, val


class HangAfter:
    """Announces the end of decoder update ``step`` and then blocks, waiting to be killed."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: AggressiveTrainer, info: Any) -> None:
        if trainer.step == self.step:
            print("hanging", flush=True)
            time.sleep(600)


def main(argv: List[str]) -> None:
    torch.set_num_threads(1)
    directory, hang_at = argv[0], int(argv[1])
    _, trainer, train, val = build([Checkpoint(directory, every_n_steps=5, keep_last=2), HangAfter(hang_at)])
    trainer.fit(train, val_loader=val, epochs=EPOCHS)
    print("finished", flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--print-package"]:  # which aggressive_vi a run of this script uses
        print(aggressive_vi.__file__)
    else:
        main(sys.argv[1:])
