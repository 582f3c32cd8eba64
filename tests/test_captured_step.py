"""The opt-in captured inner step (Engine(cuda_graph=True)), on the CPU: everything around the
capture (static buffers per input shape, warm-up, replay, lr changes, the gating inside, the checks
that refuse what cannot be captured). The graphs themselves are replaced by ``EagerGraphs``, which
replay by calling the captured function again on the same static buffers: a step that depends on
anything but those buffers (a Python float baked in, a non-static input) gives a different model."""
import copy

import pytest
import torch
from torch.utils.data import DataLoader

from aggressive_vi import VAE, AggressiveTrainer, Engine, FixedSteps, LinearKLAnnealing
from aggressive_vi._impl import captured
from conftest import BernoulliDecoder, MLPEncoder, binary_data


def sgd(params, lr=0.05):
    return torch.optim.SGD(params, lr=lr, momentum=0.5)


def train(cuda_graph, monkeypatch=None, *, epochs=1, data=None, **kwargs):
    if monkeypatch is not None:
        monkeypatch.setattr(captured, "graphs_for", lambda device: captured.EagerGraphs())
    torch.manual_seed(0)
    model = VAE(MLPEncoder(), BernoulliDecoder())
    trainer = AggressiveTrainer(model, sgd(model.encoder.parameters()), sgd(model.decoder.parameters()),
                                stopping=FixedSteps(10 ** 6), window=3, max_inner_steps=12,
                                engine=Engine(cuda_graph=cuda_graph), kl_schedule=LinearKLAnnealing(0.1, 1.0),
                                **kwargs)
    loader = data or DataLoader(binary_data(44), batch_size=8, shuffle=True,
                                generator=torch.Generator().manual_seed(1))  # 5 batches of 8, one of 4
    trainer.fit(loader, epochs=epochs)
    return trainer


def params(trainer):
    return [p.detach().clone() for p in trainer.model.parameters()]


@pytest.mark.parametrize("on_nonfinite", ["raise", "skip"])
def test_replaying_on_static_buffers_trains_bitwise_like_the_eager_step(monkeypatch, on_nonfinite):
    eager = train(False, on_nonfinite=on_nonfinite)
    graph = train(True, monkeypatch, on_nonfinite=on_nonfinite)
    assert all(torch.equal(a, b) for a, b in zip(params(eager), params(graph)))
    step = graph.algorithm.engine.captured
    assert step.captures == 2  # batches of 8 and the last one of 4: one graph per shape
    # the first step creates SGD's momentum buffers: new state tensors drop the (empty) graphs once
    assert step.eager_steps == 2 * step.warmup + 1 and step.replays > step.eager_steps
    assert eager.history[0].inner_steps_mean == graph.history[0].inner_steps_mean


def test_an_lr_change_drops_the_graphs_and_captures_again(monkeypatch):
    monkeypatch.setattr(captured, "graphs_for", lambda device: captured.EagerGraphs())
    step = captured.CapturedStep(lambda x: x * 2, hyperparameters=lambda: lr[0], graphs=captured.EagerGraphs(), warmup=1)
    lr = [0.1]
    x = torch.ones(3)
    for _ in range(3):
        assert torch.equal(step(x), x * 2)
    assert (step.captures, step.eager_steps, step.replays) == (1, 1, 2)
    lr[0] = 0.05
    step(x), step(x)
    assert (step.captures, step.eager_steps) == (2, 2)


def test_the_static_buffer_takes_each_new_batch():
    seen = []
    step = captured.CapturedStep(lambda x: seen.append(x) or x.sum(), hyperparameters=lambda: 0, graphs=captured.EagerGraphs(), warmup=1)
    outs = [float(step(torch.full((2,), float(v)))) for v in range(4)]
    assert outs == [0.0, 2.0, 4.0, 6.0]
    assert all(s is seen[1] for s in seen[1:])  # one buffer from the first batch on, refilled


def test_more_shapes_than_graphs_run_eagerly_with_one_warning():
    step = captured.CapturedStep(lambda x: x + 1, hyperparameters=lambda: 0,
                                 graphs=captured.EagerGraphs(), warmup=0, max_graphs=2)
    step(torch.zeros(1)), step(torch.zeros(2))
    with pytest.warns(UserWarning, match="more than 2 input shapes"):
        assert torch.equal(step(torch.zeros(3)), torch.ones(3))
    assert step.captures == 2 and step.eager_steps == 1


def test_a_failed_capture_says_what_the_step_must_not_do():
    class Refusing(captured.EagerGraphs):
        def capture(self, fn):
            raise RuntimeError("operation not permitted when stream is capturing")

    step = captured.CapturedStep(lambda x: x, hyperparameters=lambda: 0,
                                 graphs=Refusing(), warmup=0)
    with pytest.raises(RuntimeError, match="cuda_graph=False.*not permitted"):
        step(torch.zeros(1))


def test_inputs_must_be_tensors():
    assert captured.input_key((torch.zeros(2, 3), {"lengths": torch.zeros(2, dtype=torch.long)}))
    with pytest.raises(TypeError, match="tensors"):
        captured.input_key(("a string",))


def model_and_opts(enc_opt=None):
    model = VAE(MLPEncoder(), BernoulliDecoder())
    return model, (enc_opt or sgd)(model.encoder.parameters()), sgd(model.decoder.parameters())


@pytest.mark.parametrize("make,pattern", [
    (lambda: AggressiveTrainer(*model_and_opts(), engine=Engine(cuda_graph=True)),
     "needs the model on a CUDA device; got cpu"),
    (lambda: Engine("fp16", cuda_graph=True), "cuda_graph=True does not support precision='fp16'"),
])
def test_what_cannot_be_captured_is_refused_at_construction(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_an_optimiser_that_reads_the_host_is_refused(monkeypatch):
    monkeypatch.setattr(captured, "graphs_for", lambda device: captured.EagerGraphs())
    model, enc_opt, dec_opt = model_and_opts(lambda ps: torch.optim.Adam(ps, lr=1e-3))
    with pytest.raises(ValueError, match="enc_opt must have a capturable step.*capturable=True"):
        AggressiveTrainer(model, enc_opt, dec_opt, engine=Engine(cuda_graph=True))
    model, enc_opt, dec_opt = model_and_opts(lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True))
    with pytest.raises(ValueError, match="capturable"):  # PyTorch refuses to capture it
        AggressiveTrainer(model, enc_opt, dec_opt, engine=Engine(cuda_graph=True))
    model, enc_opt, dec_opt = model_and_opts(lambda ps: torch.optim.Adam(ps, lr=1e-3, capturable=True))
    AggressiveTrainer(model, enc_opt, dec_opt, engine=Engine(cuda_graph=True))  # accepted


class StrictGraphs(captured.EagerGraphs):
    """Like a CUDA capture: no host read of a tensor (bool(t)) and no new optimiser state inside it."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def capture(self, fn):
        def refuse(tensor):
            raise RuntimeError("operation not permitted when stream is capturing (a host read)")

        before = len(self.optimizer.state)
        replay, outputs = super().capture(fn)
        original = torch.Tensor.__bool__
        torch.Tensor.__bool__ = refuse  # type: ignore[method-assign]
        try:
            replay()
        finally:
            torch.Tensor.__bool__ = original  # type: ignore[method-assign]
        if len(self.optimizer.state) != before:
            raise RuntimeError("operation not permitted when stream is capturing (a new allocation)")
        return replay, outputs


def captured_trainer(monkeypatch, decoder=None, **kwargs):
    torch.manual_seed(0)
    model = VAE(MLPEncoder(), decoder or BernoulliDecoder())
    enc_opt = sgd(model.encoder.parameters())
    monkeypatch.setattr(captured, "graphs_for", lambda device: StrictGraphs(enc_opt))
    options = {"window": 3, "max_inner_steps": 12, **kwargs}
    return AggressiveTrainer(model, enc_opt, sgd(model.decoder.parameters()), stopping=FixedSteps(10 ** 6),
                             engine=Engine(cuda_graph=True), **options)


def test_a_nan_at_the_first_inner_steps_raises_nonfinite_error_not_a_failed_capture(monkeypatch):
    from aggressive_vi import NonFiniteError

    class NaNFirst(BernoulliDecoder):
        calls = 0

        def log_prob(self, x, z):
            NaNFirst.calls += 1
            out = super().log_prob(x, z)
            return out * float("nan") if NaNFirst.calls <= 2 else out

    trainer = captured_trainer(monkeypatch, NaNFirst(), window=6)  # the error is read after the capture would be
    with pytest.raises(NonFiniteError, match="inner \\(encoder-only\\) step 1"):
        trainer.fit(DataLoader(binary_data(16), batch_size=8), epochs=1)
    NaNFirst.calls = 0
    trainer = captured_trainer(monkeypatch, NaNFirst(), on_nonfinite="skip")
    history = trainer.fit(DataLoader(binary_data(16), batch_size=8), epochs=1)  # refused warm-ups don't count
    assert history[0].skipped_inner_steps == 2 and trainer.algorithm.engine.captured.captures == 1


def test_loading_the_optimisers_state_captures_again(monkeypatch):
    trainer = captured_trainer(monkeypatch)
    data = DataLoader(binary_data(16), batch_size=8)
    trainer.fit(data, epochs=1)
    step = trainer.algorithm.engine.captured
    assert step.captures == 1
    state = copy.deepcopy(trainer.state_dict())  # as read back from a file: new tensors
    trainer.load_state_dict(state)  # the optimiser's state tensors are replaced: a live graph would update orphans
    trainer.fit(data, epochs=2)
    assert step.captures == 2


def test_a_learning_rate_changed_at_every_update_warns_once(monkeypatch):
    class Decay:
        def on_step_end(self, trainer, info):
            for group in trainer.enc_opt.param_groups:
                group["lr"] *= 0.9

    trainer = captured_trainer(monkeypatch, callbacks=[Decay()])
    with pytest.warns(UserWarning, match="changed 4 times, and every change drops the graphs") as caught:
        trainer.fit(DataLoader(binary_data(64), batch_size=8), epochs=1)
    assert sum("drops the graphs" in str(w.message) for w in caught) == 1


def test_the_capture_is_thread_local_and_on_the_models_device(monkeypatch):
    """CudaGraphs with torch.cuda stood in: what it asks of CUDA (no GPU here)."""
    entered, graphs = [], []

    class Device:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            entered.append(self.device)

        def __exit__(self, *exc):
            return False

    class Graph:
        def replay(self):
            pass

    class GraphContext:
        def __init__(self, graph, **kwargs):
            graphs.append(kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.cuda, "device", Device)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: "pool")
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", GraphContext)
    device = torch.device("cuda", 1)
    graphs_ = captured.graphs_for(device)
    _, out = graphs_.capture(lambda: 7)
    assert out == [7] and graphs == [{"pool": "pool", "capture_error_mode": "thread_local"}]
    assert entered == [device, device]  # the pool and the capture on cuda:1, not the current device
