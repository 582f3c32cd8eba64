"""From loader batches to model inputs (``get_input``), the sampler walk, and loaders the inner loop
cannot share."""
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from aggressive_vi import VAE, AggressiveTrainer, Always, FixedSteps, estimators, metrics
from aggressive_vi._impl.loaders import (extract_input, loader_generators, sampler_owners,
                                         set_sampler_epoch)
from conftest import BernoulliDecoder, MLPEncoder, binary_data


def opts(vae):
    return (torch.optim.SGD(vae.encoder.parameters(), lr=0.1),
            torch.optim.SGD(vae.decoder.parameters(), lr=0.1))


def test_a_batch_of_strings_fails_clearly_instead_of_passing_the_first_string():
    with pytest.raises(TypeError, match="list of 3 elements whose first is a str.*collate_fn"):
        extract_input(["a cat", "a dog", "a bird"])
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    trainer = AggressiveTrainer(vae, *opts(vae), stopping=Always())
    with pytest.raises(TypeError, match="epoch 0, batch 0.*whose first is a str"):
        trainer.fit([["one sentence", "another one"]], epochs=1)


def test_get_input_passes_more_than_x_to_the_modules_in_training_and_estimators():
    seen = []

    class LengthAwareEncoder(MLPEncoder):
        def forward(self, inputs):
            x, lengths = inputs
            seen.append(lengths.tolist())
            return super().forward(x)

    class LengthAwareDecoder(BernoulliDecoder):
        def log_prob(self, inputs, z):
            return super().log_prob(inputs[0], z)

    torch.manual_seed(0)
    get = lambda b: (b["x"], b["lengths"])  # noqa: E731
    vae = VAE(LengthAwareEncoder(), LengthAwareDecoder(), get_input=get)  # set once, for every consumer
    batches = [{"x": binary_data(4, seed=i), "lengths": torch.full((4,), i)} for i in range(3)]
    trainer = AggressiveTrainer(vae, *opts(vae), stopping=FixedSteps(1), window=2)
    trainer.fit(batches, val_loader=batches[:1], epochs=1)
    assert [0, 0, 0, 0] in seen and [2, 2, 2, 2] in seen
    seen.clear()
    estimators.kl(vae, batches)  # the model's get_input, without repeating it
    assert seen == [[0] * 4, [1] * 4, [2] * 4]
    seen.clear()
    metric = metrics.KL(vae)
    for b in batches:
        metric.update(b)
    assert seen == [[0] * 4, [1] * 4, [2] * 4]
    with pytest.raises(TypeError, match="get_input must be callable"):
        VAE(LengthAwareEncoder(), LengthAwareDecoder(), get_input="x")


def test_a_persistent_worker_train_loader_needs_an_inner_loader_of_its_own():
    data = TensorDataset(binary_data(16))
    persistent = DataLoader(data, batch_size=4, num_workers=1, persistent_workers=True)
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    trainer = AggressiveTrainer(vae, *opts(vae), stopping=Always(), window=2, max_inner_steps=2)
    with pytest.raises(ValueError, match="persistent_workers=True and no inner_loader.*inner_loader="):
        trainer.fit(persistent, epochs=1)
    assert trainer.step == 0
    # with a loader of its own for the inner loop, every batch of the epoch is trained exactly once
    order = []

    class Recorder:
        def on_step_end(self, trainer, info):
            order.append(info.batch_index)

    trainer.callbacks.append(Recorder())
    trainer.fit(persistent, epochs=1, inner_loader=DataLoader(data, batch_size=4, shuffle=True))
    assert order == [0, 1, 2, 3] and trainer.step == 4
    basic = AggressiveTrainer(vae, *opts(vae), aggressive=False)
    basic.fit(persistent, epochs=1)  # basic training never draws inner batches: allowed
    assert basic.step == 4


def test_the_sampler_walk_finds_set_epoch_and_shuffling_generators_once():
    class EpochSampler(torch.utils.data.Sampler):
        def __init__(self, n):
            self.n, self.epoch = n, None
            self.generator = torch.Generator().manual_seed(0)

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __iter__(self):
            return iter(torch.randperm(self.n, generator=self.generator).tolist())

        def __len__(self):
            return self.n

    sampler = EpochSampler(8)
    loader = DataLoader(TensorDataset(torch.arange(8.0)), batch_size=2, sampler=sampler)
    assert sampler in sampler_owners(loader) and loader.batch_sampler in sampler_owners(loader)
    set_sampler_epoch(loader, 7)
    assert sampler.epoch == 7
    assert loader_generators(loader, loader) == [sampler.generator]
    shuffled = DataLoader(TensorDataset(torch.arange(8.0)), shuffle=True,
                          generator=torch.Generator().manual_seed(1))
    assert loader_generators(shuffled) == [shuffled.generator]


def test_an_unpinned_batch_bound_for_a_gpu_warns_once(monkeypatch):
    from aggressive_vi._impl import loaders

    monkeypatch.setattr(loaders, "_UNPINNED_WARNED", [False])
    cuda = torch.device("cuda")
    with pytest.warns(UserWarning, match="pin_memory=True"):
        try:
            loaders.move_to_device(torch.zeros(2), cuda)
        except (RuntimeError, AssertionError):
            pass  # no CUDA in this build: the warning comes before the copy
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            loaders.move_to_device(torch.zeros(2), cuda)
        except (RuntimeError, AssertionError):
            pass
    assert loaders.move_to_device(torch.zeros(2), torch.device("cpu")).device.type == "cpu"
