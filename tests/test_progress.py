"""The epoch in progress: running sums with named states, its record, and its saved position."""
import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from aggressive_vi._impl.progress import EpochInProgress, TrainingSums


def test_training_sums_average_per_example_and_count_skips_and_inner_steps():
    sums = TrainingSums()
    sums.update(torch.tensor([1.0, 3.0]), torch.tensor([0.5, 1.5]), torch.tensor([0.5, 1.5]),
                inner_steps=30, aggressive=True, skipped_inner=2)
    sums.update(None, None, None, inner_steps=0, aggressive=False, skipped_inner=0)
    sums.update(torch.tensor([5.0]), torch.tensor([4.0]), torch.tensor([1.0]),
                inner_steps=0, aggressive=False, skipped_inner=0)
    assert sums.compute() == {"loss": 3.0, "reconstruction": 2.0, "kl": 1.0}
    assert (sums.batches, sums.skipped_batches, sums.aggressive_steps, sums.inner_total,
            sums.skipped_inner_steps, sums.examples) == (3, 1, 1, 30, 2, 3)
    empty = TrainingSums()
    empty.update(None, None, None, inner_steps=0, aggressive=False, skipped_inner=0)
    assert all(math.isnan(v) for v in empty.compute().values())


def test_epoch_in_progress_records_and_replays_its_position():
    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(torch.arange(12.0)), batch_size=3, shuffle=True)
    run = EpochInProgress(loader, epoch=4, began_aggressive=True)
    first = next(run.stream)
    run.add(torch.tensor([2.0, 2.0, 2.0]), torch.ones(3), torch.ones(3), inner_steps=20,
            aggressive=True, kl_weight=0.5, skipped_inner=0)
    run.left_aggressive_at = 7
    state, local = run.state_dict(), run.local_state_dict()
    assert state["stream"] == {"sampler_epoch": 4, "consumed": 1} and state["left_aggressive_at"] == 7
    rest = [b[0].tolist() for b in run.stream]
    torch.manual_seed(99)
    again = EpochInProgress.replay(loader, state, local, device=None)
    assert [b[0].tolist() for b in again.stream] == rest and first is not None
    record = again.record({"mi": 0.3, "mi_stderr": 0.01, "au": 2})
    assert (record.epoch, record.steps, record.loss, record.kl_weight, record.inner_steps_mean) == (4, 1, 2.0, 0.5, 20.0)
    assert record.aggressive and record.left_aggressive_at == 7
    assert (record.val_mi, record.val_mi_stderr, record.val_au) == (0.3, 0.01, 2)
    assert record.wall_time >= state["elapsed"]
    with pytest.raises(KeyError, match="missing states"):
        EpochInProgress.replay(loader, state, {"stream": local["stream"], "sums": {}}, device=None)


def test_the_record_takes_the_collections_val_keys_or_summarys_plain_ones():
    run = EpochInProgress([torch.zeros(1)], epoch=0, began_aggressive=False)
    run.add(torch.ones(2), torch.ones(2), torch.zeros(2), inner_steps=0, aggressive=False,
            kl_weight=1.0, skipped_inner=0)
    val = {"val_mi": 0.3, "val_mi_stderr": 0.01, "val_au": 2, "val_kl": 1.5, "val_elbo": -4.0,
           "val_reconstruction": 2.5}
    for given in (val, {k[len("val_"):]: v for k, v in val.items()}):
        record = run.record(given)
        assert {k: getattr(record, k) for k in val} == val
    assert run.record({}).val_mi is None


def test_the_running_sums_live_on_the_models_device_from_the_start():
    """On a GPU, sums made on the CPU were copied to the device at the first update and the example
    count at the epoch's end (host-to-device copies the CPU sync count cannot see). The meta device
    stands in for the GPU: every sum state is made there and stays there."""
    meta = torch.device("meta")
    run = EpochInProgress([torch.zeros(1)], epoch=0, began_aggressive=False, device=meta)
    sums = run.sums
    assert all(getattr(sums, k).device == meta for k in ("loss_sum", "reconstruction_sum", "kl_sum", "examples"))
    loss = torch.zeros(8, device=meta)
    sums.update(loss, loss, loss, inner_steps=0, aggressive=False, skipped_inner=0)
    assert all(getattr(sums, k).device == meta for k in ("loss_sum", "reconstruction_sum", "kl_sum", "examples"))
