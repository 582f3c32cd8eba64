"""GatedStep: an optimiser step applied only where a device flag says so, bitwise nothing otherwise,
for each strategy (fused optimisers' found_inf, snapshot-and-select, the host fallback)."""
import pytest
import torch
from torch import nn

from aggressive_vi._impl.gate import GatedStep, finite_flag


def model_and_grads(seed=0):
    torch.manual_seed(seed)
    net = nn.Linear(4, 3)
    net(torch.randn(5, 4)).pow(2).sum().backward()
    return net


def snapshot(net, opt):
    params = [p.detach().clone() for p in net.parameters()]
    state = {k: v.clone() if isinstance(v, torch.Tensor) else v
             for p in net.parameters() for k, v in opt.state.get(p, {}).items()}
    return params, state


def same(a, b):
    (pa, sa), (pb, sb) = a, b
    return (all(torch.equal(x, y) for x, y in zip(pa, pb)) and sa.keys() == sb.keys()
            and all(torch.equal(sa[k], sb[k]) if isinstance(sa[k], torch.Tensor) else sa[k] == sb[k]
                    for k in sa))


OPTIMISERS = {
    "sgd-momentum": (lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9), "select"),
    "sgd-plain": (lambda ps: torch.optim.SGD(ps, lr=0.1), "select"),
    "adam": (lambda ps: torch.optim.Adam(ps, lr=0.01), "select"),
    "adam-fused": (lambda ps: torch.optim.Adam(ps, lr=0.01, fused=True), "found_inf"),
    "sgd-fused": (lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, fused=True), "found_inf"),
}


@pytest.mark.parametrize("name", sorted(OPTIMISERS))
def test_a_false_flag_changes_nothing_and_a_true_one_steps_as_the_optimiser_would(name):
    make, strategy = OPTIMISERS[name]
    net, twin = model_and_grads(), model_and_grads()
    opt, twin_opt = make(net.parameters()), make(twin.parameters())
    gate = GatedStep(opt, mode="window")  # as on a GPU
    for _ in range(2):  # two real steps first, so that the optimiser's state exists
        gate(torch.tensor(True))
        twin_opt.step()
    assert same(snapshot(net, opt), snapshot(twin, twin_opt))
    assert gate.strategy == strategy
    before = snapshot(net, opt)
    for p in net.parameters():  # a poisoned gradient, as a NaN step would leave
        p.grad = torch.full_like(p, float("nan"))
    gate(torch.tensor(False))
    assert same(snapshot(net, opt), before)
    assert gate.strategy == strategy


def test_state_created_by_a_refused_first_step_is_removed():
    net = model_and_grads()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    gate = GatedStep(opt, mode="window")
    before = [p.detach().clone() for p in net.parameters()]
    gate(torch.tensor(False))
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before))
    assert not any(opt.state.get(p) for p in net.parameters())  # as if never stepped
    assert gate.host_reads == 1
    gate(torch.tensor(True))
    assert gate.host_reads == 2 and all(opt.state.get(p) for p in net.parameters())
    gate(torch.tensor(True))
    assert gate.host_reads == 2  # from then on the flag stays on the device


class HostStateSGD(torch.optim.SGD):
    """An optimiser whose state holds a Python number: only the host can gate it."""

    def step(self, closure=None):
        super().step(closure)
        for p in self.param_groups[0]["params"]:
            self.state[p]["count"] = self.state[p].get("count", 0) + 1


def test_an_optimiser_with_host_state_falls_back_to_a_host_read():
    net = model_and_grads()
    opt = HostStateSGD(net.parameters(), lr=0.1)
    gate = GatedStep(opt, mode="window")
    gate(torch.tensor(True))
    reads = gate.host_reads
    before = snapshot(net, opt)
    gate(torch.tensor(False))
    assert gate.strategy == "host" and gate.host_reads == reads + 1
    assert same(snapshot(net, opt), before)


def test_finite_flag_clips_and_sees_nan_in_loss_or_gradient():
    net = model_and_grads()
    loss = torch.tensor([1.0, 2.0])
    flag = finite_flag(loss, list(net.parameters()), max_norm=1e-3)
    assert flag.dtype == torch.bool and flag.shape == () and bool(flag)
    norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert float(norm) <= 1e-3 * (1 + 1e-4)  # clipped in place
    assert not bool(finite_flag(torch.tensor([1.0, float("inf")]), list(net.parameters()), None))
    next(net.parameters()).grad[0, 0] = float("nan")
    assert not bool(finite_flag(loss, list(net.parameters()), 5.0))


@pytest.mark.parametrize("name,strategy", [("adam", "host"), ("sgd-momentum", "host"), ("adam-fused", "found_inf")])
def test_auto_reads_on_the_host_on_the_cpu_unless_the_optimiser_is_fused(name, strategy):
    net = model_and_grads()
    gate = GatedStep(OPTIMISERS[name][0](net.parameters()))
    gate(torch.tensor(True))
    before = snapshot(net, gate.optimizer)
    gate(torch.tensor(False))
    assert gate.strategy == strategy and same(snapshot(net, gate.optimizer), before)
    step = GatedStep(OPTIMISERS[name][0](net.parameters()), mode="step")
    step(torch.tensor(True))
    assert step.strategy == "host"


def test_bad_mode():
    with pytest.raises(ValueError, match="mode must be one of"):
        GatedStep(torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), mode="sometimes")


@pytest.mark.parametrize("make", [
    lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, fused=True),
    lambda ps: torch.optim.Adam(ps, lr=0.1, fused=True),
])
def test_a_refused_first_step_of_a_fused_optimiser_leaves_no_state_behind(make):
    """A fused SGD creates its momentum buffers with empty_like even when found_inf refuses the step;
    the next applied step then wrote that garbage (3e37, NaN) into the weights."""
    p = torch.nn.Parameter(torch.ones(4))
    twin = torch.nn.Parameter(torch.ones(4))
    gate, plain = GatedStep(make([p]), "opt", "window"), make([twin])
    p.grad = torch.full((4,), float("nan"))
    gate(torch.tensor(False))
    assert torch.equal(p.detach(), torch.ones(4)) and not gate.optimizer.state.get(p)
    p.grad, twin.grad = torch.ones(4), torch.ones(4)
    gate(torch.tensor(True))
    plain.step()
    assert torch.equal(p.detach(), twin.detach())  # as if the refused step had never been taken
