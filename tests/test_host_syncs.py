"""Host syncs during aggressive training: one per window of the catch-up test plus a constant per
decoder update, counted on the CPU by intercepting every way a tensor's value reaches the host
(``.item()``, ``.tolist()``, ``bool()``, ``float()``, ``int()``, ``index``, ``.numpy()``), so that
the count cannot creep back. On a GPU each of these blocks the host until the device catches up.

Reads made by ``torch.utils.data`` are not counted: a DataLoader draws its iterator's base seed from
a CPU generator (``.item()`` on a CPU tensor, once per pass over the loader), never from the device.
"""
import contextlib
import math
import sys

import pytest
import torch
from torch.utils.data import DataLoader

from aggressive_vi import AggressiveTrainer, FixedSteps, VAE
from aggressive_vi._impl import gate
from conftest import BernoulliDecoder, MLPEncoder, binary_data

READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy")


class HostReads:
    """Counts tensor-to-host reads while active."""

    def __init__(self):
        self.count = 0

    @contextlib.contextmanager
    def counting(self):
        originals = {name: getattr(torch.Tensor, name) for name in READS}

        def wrap(original):
            def counted(t, *args, **kwargs):
                caller = sys._getframe(1).f_code.co_filename
                if "torch/utils/data" not in caller.replace("\\", "/"):
                    self.count += 1
                return original(t, *args, **kwargs)
            return counted

        for name, original in originals.items():
            setattr(torch.Tensor, name, wrap(original))
        try:
            yield self
        finally:
            for name, original in originals.items():
                setattr(torch.Tensor, name, original)


class PerUpdate:
    """A callback: the reads and inner steps of each decoder update."""

    def __init__(self, reads):
        self.reads, self.last, self.rows = reads, None, []

    def on_step_end(self, trainer, info):
        if self.last is not None:
            self.rows.append((self.reads.count - self.last, info.inner_steps))
        self.last = self.reads.count


OPTIMISERS = {
    "sgd-momentum": lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.5),
    "adam-fused": lambda ps, lr: torch.optim.Adam(ps, lr=lr / 10, fused=True),
}


@pytest.mark.parametrize("on_nonfinite", ["raise", "skip"])
@pytest.mark.parametrize("name,device_gate", [("sgd-momentum", True), ("adam-fused", False)])
def test_one_host_read_per_window_plus_a_constant_per_update(name, device_gate, on_nonfinite, monkeypatch):
    """With the device-side gate (what a GPU gets; on the CPU the engine reads each step's flag, which
    costs nothing there, unless the optimiser is fused) every inner step stays on the device."""
    monkeypatch.setattr(gate, "HOST_READS_ON_CPU", not device_gate)
    torch.manual_seed(0)
    model = VAE(MLPEncoder(), BernoulliDecoder())
    make = OPTIMISERS[name]
    window, cap = 5, 40
    reads = HostReads()
    per_update = PerUpdate(reads)
    trainer = AggressiveTrainer(model, make(model.encoder.parameters(), 0.05),
                                make(model.decoder.parameters(), 0.05), stopping=FixedSteps(10 ** 6),
                                window=window, max_inner_steps=cap, on_nonfinite=on_nonfinite,
                                callbacks=[per_update])
    loader = DataLoader(binary_data(96), batch_size=8, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    with reads.counting():
        trainer.fit(loader, epochs=1)
    rows = per_update.rows  # (reads, inner steps) of every update after the first
    assert len(rows) == len(loader) - 1
    assert sum(steps for _, steps in rows) >= 4 * window * len(rows) / 2  # loops long enough to tell
    for count, steps in rows:
        windows = math.ceil(steps / window)  # boundaries read, and the cap's partial window
        assert count <= windows + 1, (count, steps)  # + the decoder step's check
    # before the device-side gate, each inner step read its finiteness flag: >= steps + windows
    assert sum(c for c, _ in rows) < sum(s for _, s in rows) / 2


def test_reading_every_step_on_the_host_gives_the_same_model(monkeypatch):
    finals = {}
    for inner_sync in ("step", "window"):
        monkeypatch.setattr(gate, "HOST_READS_ON_CPU", inner_sync == "step")
        torch.manual_seed(0)
        model = VAE(MLPEncoder(), BernoulliDecoder())
        # SGD: the CPU Adam reads its own step counters with .item() (CPU tensors on a GPU too)
        trainer = AggressiveTrainer(model, torch.optim.SGD(model.encoder.parameters(), lr=0.05, momentum=0.5),
                                    torch.optim.SGD(model.decoder.parameters(), lr=0.05, momentum=0.5),
                                    stopping=FixedSteps(10 ** 6), window=3, max_inner_steps=9)
        reads = HostReads()
        with reads.counting():
            history = trainer.fit(DataLoader(binary_data(32), batch_size=8), epochs=1)
        inner = history[0].inner_steps_mean * history[0].aggressive_steps
        finals[inner_sync] = ([p.detach().clone() for p in model.parameters()], reads.count, inner)
    (p_step, reads_step, inner), (p_window, reads_window, _) = finals["step"], finals["window"]
    assert all(torch.equal(a, b) for a, b in zip(p_step, p_window))  # bitwise the same training
    assert reads_step >= inner > reads_window
