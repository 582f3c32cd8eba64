"""The epoch stream and the inner stream: positions that replay to the same batches."""
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from aggressive_vi._impl.streams import INNER_SAMPLER_EPOCH_BASE, EpochStream, InnerStream


def shuffled(n=10, batch=2):
    return DataLoader(TensorDataset(torch.arange(float(n))), batch_size=batch, shuffle=True)


def ids(batch):
    return batch[0].tolist()


def test_epoch_stream_replays_to_the_batches_that_would_have_followed():
    torch.manual_seed(0)
    loader = shuffled()
    stream = EpochStream(loader, 3)
    seen = [ids(next(stream)) for _ in range(2)]
    state, local = stream.state_dict(), stream.local_state_dict()
    rest = [ids(b) for b in stream]
    assert state == {"sampler_epoch": 3, "consumed": 2} and len(seen + rest) == 5
    torch.manual_seed(123)  # whatever happened since
    replayed = EpochStream.replay(loader, state, local, "train_loader")
    assert replayed.consumed == 2 and [ids(b) for b in replayed] == rest


def test_replay_past_the_end_of_a_shorter_loader_names_it():
    loader = shuffled()
    stream = EpochStream(loader, 0)
    for _ in range(4):
        next(stream)
    with pytest.raises(ValueError, match="the inner loop's loader yielded 2 batches .* after 4"):
        EpochStream.replay(shuffled(n=4), stream.state_dict(), stream.local_state_dict(),
                           "the inner loop's loader")


def test_inner_stream_is_endless_and_replays_across_passes():
    class Sampler(torch.utils.data.Sampler):
        epochs = []

        def __init__(self):
            self.epoch = 0

        def set_epoch(self, epoch):
            Sampler.epochs.append(epoch)
            self.epoch = epoch

        def __iter__(self):
            g = torch.Generator().manual_seed(self.epoch)
            return iter(torch.randperm(6, generator=g).tolist())

        def __len__(self):
            return 6

    loader = DataLoader(TensorDataset(torch.arange(6.0)), batch_size=3, sampler=Sampler())
    stream = InnerStream(loader)
    drawn = [ids(next(stream)) for _ in range(5)]  # passes of 2 batches: 3 passes begun
    assert stream.passes == 3 and Sampler.epochs[:3] == [INNER_SAMPLER_EPOCH_BASE + p for p in range(3)]
    state, local = stream.state_dict(), stream.local_state_dict()
    following = [ids(next(stream)) for _ in range(3)]
    replayed = InnerStream.replay(loader, state, local)
    assert [ids(next(replayed)) for _ in range(3)] == following
    assert drawn[0] != drawn[2] or drawn[1] != drawn[3]  # each pass shuffled differently
    with pytest.raises(ValueError, match="inner_loader yielded no batch"):
        next(InnerStream([]))
