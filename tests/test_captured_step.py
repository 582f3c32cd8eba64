"""The opt-in captured inner step (Engine(cuda_graph=True)), on the CPU: everything around the
capture (static buffers per input shape, warm-up, replay, lr changes, the gating inside, the checks
that refuse what cannot be captured). The graphs themselves are replaced by ``EagerGraphs``, which
replay by calling the captured function again on the same static buffers: a step that depends on
anything but those buffers (a Python float baked in, a non-static input) gives a different model."""
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
    assert step.eager_steps == 2 * step.warmup and step.replays > step.eager_steps
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
