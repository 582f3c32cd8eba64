"""TensorBoardLogger writes the per-update and per-epoch scalars and marks the phase switch."""
import pytest
import torch

from aggressive_vi import VAE, AggressiveTrainer, FixedSteps, TensorBoardLogger
from conftest import BernoulliDecoder, MLPEncoder, binary_data


def scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return acc, {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_event_file_holds_step_and_epoch_scalars_and_the_switch(tmp_path):
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    logger = TensorBoardLogger(tmp_path, every_n_steps=1)
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.1),
                                torch.optim.SGD(vae.decoder.parameters(), lr=0.1),
                                stopping=FixedSteps(2), window=2, callbacks=[logger])
    batches = [binary_data(8, seed=i) for i in range(3)]
    history = trainer.fit(batches, val_loader=batches[:2], epochs=2)
    acc, found = scalars(tmp_path)
    assert [s for s, _ in found["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert [v for _, v in found["train/inner_steps"]][:2] != [0.0, 0.0]
    assert [v for _, v in found["train/inner_steps"]][2:] == [0.0] * 4
    # 1 at the start, 1 for the two aggressive updates, 0 from the switch (before update 3) on
    assert (2, 0.0) in found["train/aggressive"] and (0, 1.0) in found["train/aggressive"]
    assert found["epoch/val_mi"] == [(3, pytest.approx(history[0].val_mi)),
                                     (6, pytest.approx(history[1].val_mi))]
    assert [v for _, v in found["epoch/val_au"]] == [float(r.val_au) for r in history]
    (text,) = acc.Tensors("phase/text_summary")  # the text entry naming the switch
    assert text.step == 2 and b"after 2 decoder updates" in text.tensor_proto.string_val[0]
    with pytest.raises(ValueError, match="exactly one of log_dir or writer"):
        TensorBoardLogger()
