"""Random-state snapshots: every generator a run draws from comes back."""
import random

import torch

from aggressive_vi._impl.rng import rng_state, set_rng_state


def test_rng_snapshot_round_trip_covers_torch_python_and_loader_generators():
    g = torch.Generator().manual_seed(5)
    snapshot = rng_state([g])
    a = (torch.rand(3), random.random(), torch.rand(2, generator=g))
    torch.manual_seed(99)
    random.seed(99)
    set_rng_state(snapshot, [g])
    b = (torch.rand(3), random.random(), torch.rand(2, generator=g))
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and torch.equal(a[2], b[2])


def test_a_numpy_snapshot_is_restored_and_loads_with_weights_only(tmp_path):
    import numpy

    numpy.random.seed(4)
    snapshot = rng_state()
    first = numpy.random.rand(3)
    numpy.random.seed(5)
    torch.save(snapshot, tmp_path / "rng.pt")
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (numpy.random.rand(3) == first).all()
