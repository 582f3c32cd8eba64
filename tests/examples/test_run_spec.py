"""examples.run_spec: a run's settings saved in the library's checkpoints and compared on resume."""
import pytest
import torch

from aggressive_vi import AggressiveTrainer, Checkpoint, VAE, latest_checkpoint
from examples.run_spec import RunMismatchError, RunSpec, check_resume, saved_spec, spec_differences


def test_differences_name_nested_keys_missing_keys_and_values():
    saved = {"preset": {"hidden": 16, "kl": 1.0}, "seed": 3, "old": True}
    now = {"preset": {"hidden": 32, "kl": 1.0}, "seed": 3, "new": "x"}
    assert spec_differences(saved, now) == [
        'new: not in the checkpoint, "x" now',
        "old: true in the checkpoint, not set now",
        "preset.hidden: 16 in the checkpoint, 32 now",
    ]
    assert spec_differences(saved, saved) == []


def test_long_lists_are_summarised_by_length_and_first_difference():
    words = [f"w{i}" for i in range(100)]
    assert spec_differences({"vocab": words}, {"vocab": words[:50] + ["x"] + words[51:]}) == [
        'vocab: 100 items in the checkpoint, 100 now; first difference at index 50: "w50" in the checkpoint, '
        '"x" now']
    assert spec_differences({"vocab": words}, {"vocab": words[:90]}) == [
        "vocab: 100 items in the checkpoint, 90 now"]
    assert spec_differences({"k": [1, 2]}, {"k": [1, 3]}) == ["k: [1, 2] in the checkpoint, [1, 3] now"]


def test_tuples_compare_equal_to_the_lists_a_checkpoint_gives_back():
    spec = RunSpec({"channels": (4, 4, 4)})
    assert spec.state_dict() == {"spec": {"channels": [4, 4, 4]}}
    with pytest.raises(TypeError, match="RunSpec holds strings"):
        RunSpec({"device": torch.device("cpu")})


class _Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(3, 4)

    def forward(self, x):
        return self.net(x).chunk(2, dim=-1)


class _Decoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(2, 3)

    def log_prob(self, x, z):
        mean = self.net(z)
        return -((x.unsqueeze(1) - mean) ** 2).sum(-1)


def _trainer(spec, directory):
    vae = VAE(_Encoder(), _Decoder())
    return AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.1),
                             torch.optim.SGD(vae.decoder.parameters(), lr=0.1), aggressive=False,
                             callbacks=[spec, Checkpoint(directory)])


def test_the_library_saves_the_spec_and_refuses_another_on_resume(tmp_path):
    torch.manual_seed(0)
    data = torch.randn(8, 3)
    _trainer(RunSpec({"seed": 1, "vocab": ["a", "b"]}), tmp_path).fit(torch.utils.data.DataLoader(data, 4))
    path = latest_checkpoint(tmp_path)
    assert saved_spec(path) == {"seed": 1, "vocab": ["a", "b"]}
    check_resume(path, RunSpec({"seed": 1, "vocab": ["a", "b"]}))  # the same settings: no error
    with pytest.raises(RunMismatchError, match=r"--resume: .* seed: 1 in the checkpoint, 2 now"):
        check_resume(path, RunSpec({"seed": 2, "vocab": ["a", "b"]}))
    # the callback itself refuses too, when the library loads the checkpoint
    other = _trainer(RunSpec({"seed": 1, "vocab": ["a", "c"]}), tmp_path / "other")
    with pytest.raises(RunMismatchError, match='vocab: \\["a", "b"\\] in the checkpoint, \\["a", "c"\\] now'):
        other.fit(torch.utils.data.DataLoader(data, 4), epochs=2, resume_from=path)


def test_a_checkpoint_without_a_spec_is_refused(tmp_path):
    vae = VAE(_Encoder(), _Decoder())
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.1),
                                torch.optim.SGD(vae.decoder.parameters(), lr=0.1), aggressive=False,
                                callbacks=[Checkpoint(tmp_path)])
    trainer.fit(torch.utils.data.DataLoader(torch.randn(4, 3), 4))
    with pytest.raises(RunMismatchError, match="holds no run settings"):
        check_resume(latest_checkpoint(tmp_path), RunSpec({"seed": 1}))
