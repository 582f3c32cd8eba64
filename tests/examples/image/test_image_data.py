"""Image loaders (bundled digits, OMNIGLOT file, plain arrays), their errors, and binarisation."""
import numpy as np
import pytest
import torch

from examples.image import datasets as D


def test_bundled_mnist_splits():
    s = D.load_images("bundled")
    assert s.sizes() == {"train": 4000, "valid": 500, "test": 500}
    for t in (s.train, s.valid, s.test):
        assert t.dtype == torch.float32 and t.shape[1:] == (1, 28, 28)
        assert 0.0 <= t.min() and t.max() <= 1.0
    # real digits: mostly background, some ink; no image repeated across splits
    assert 0.05 < s.train.mean() < 0.3
    def rows(t):
        return {row.tobytes() for row in (t * 255).round().to(torch.uint8).flatten(1).numpy()}
    assert not (rows(s.test) & rows(s.train)) and not (rows(s.valid) & rows(s.train))


def test_bundled_labels_are_balanced():
    with np.load(D.BUNDLED_MNIST) as a:
        for split, n in (("train", 400), ("valid", 50), ("test", 50)):
            assert np.bincount(a[f"{split}_y"], minlength=10).tolist() == [n] * 10


@pytest.mark.parametrize("array", [
    np.zeros((5, 28, 28), np.uint8), np.zeros((5, 1, 28, 28), np.float32), torch.zeros(5, 28, 28, dtype=torch.bool),
    np.full((5, 28, 28), 255, np.int64), torch.rand(5, 28, 28, dtype=torch.float64)])
def test_to_grey_levels_accepts(array):
    out = D.to_grey_levels(array)
    assert out.shape == (5, 1, 28, 28) and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1


def test_uint8_is_scaled_to_unit_interval():
    out = D.to_grey_levels(np.array([[[255] * 28] * 28, [[51] * 28] * 28], np.uint8))
    assert out[0].eq(1).all() and torch.allclose(out[1], torch.tensor(0.2))


@pytest.mark.parametrize("array, err, match", [
    (np.zeros((5, 32, 32), np.uint8), ValueError, r"\[N, 28, 28\].*got \[5, 32, 32\]"),
    (np.zeros((28, 28), np.uint8), ValueError, "shape"),
    (np.zeros((5, 3, 28, 28), np.uint8), ValueError, "shape"),
    (np.zeros((0, 28, 28), np.uint8), ValueError, "no images"),
    (np.zeros((5, 28, 28), np.complex64), TypeError, "dtype"),
    (np.array([[["a"] * 28] * 28]), TypeError, "dtype"),
    (np.full((5, 28, 28), 2.0, np.float32), ValueError, r"\[0, 1\]"),
    (np.full((5, 28, 28), np.nan, np.float32), ValueError, "NaN"),
    (np.full((5, 28, 28), 300, np.int32), ValueError, "0-255"),
    (np.full((5, 28, 28), -1, np.int16), ValueError, "0-255"),
    ([[0] * 28] * 28, TypeError, "numpy array or torch tensor"),
])
def test_to_grey_levels_errors_name_the_problem(array, err, match):
    with pytest.raises(err, match=match):
        D.to_grey_levels(array, "images")


def test_npy_and_pt_arrays_are_cut_into_splits(tmp_path):
    images = (np.arange(20 * 784) % 256).astype(np.uint8).reshape(20, 28, 28)
    np.save(tmp_path / "a.npy", images)
    torch.save(torch.from_numpy(images), tmp_path / "a.pt")
    for name in ("a.npy", "a.pt"):
        s = D.load_images(tmp_path / name, valid_fraction=0.1, test_fraction=0.2, seed=3)
        assert s.sizes() == {"train": 14, "valid": 2, "test": 4}
        together = torch.cat([s.train, s.valid, s.test])
        assert sorted((together * 255).round().sum((1, 2, 3)).tolist()) == sorted(
            torch.from_numpy(images).float().sum((1, 2)).tolist())


def test_omniglot_style_file(tmp_path):
    parts = (torch.rand(6, 1, 28, 28), torch.rand(2, 28, 28), torch.rand(3, 1, 28, 28))
    torch.save(parts, tmp_path / "omniglot.pt")
    s = D.load_images(tmp_path / "omniglot.pt")
    assert s.sizes() == {"train": 6, "valid": 2, "test": 3}
    torch.testing.assert_close(s.valid[:, 0], parts[1])


def test_file_errors(tmp_path):
    torch.save((torch.rand(4, 28, 28), torch.rand(4, 28, 28)), tmp_path / "two.pt")
    with pytest.raises(ValueError, match=r"\(train, valid, test\)"):
        D.load_omniglot(tmp_path / "two.pt")
    torch.save((torch.rand(4, 28, 28), torch.rand(4, 20, 20), torch.rand(4, 28, 28)), tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"bad.pt\[valid\].*\[4, 20, 20\]"):
        D.load_images(tmp_path / "bad.pt")
    np.save(tmp_path / "big.npy", np.zeros((4, 28, 28), np.float32) + 3)
    with pytest.raises(ValueError, match=r"big.npy.*\[0, 1\]"):
        D.load_images(tmp_path / "big.npy")
    (tmp_path / "x.csv").write_text("0")
    with pytest.raises(ValueError, match=r"\.npy or \.pt"):
        D.load_images(tmp_path / "x.csv")
    with pytest.raises(FileNotFoundError, match="bundled"):
        D.load_images(tmp_path / "missing.npy")
    np.savez(tmp_path / "splits.npz", train_x=np.zeros((4, 28, 28), np.uint8), test_x=np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="valid_x"):
        D.load_images(tmp_path / "splits.npz")
    np.save(tmp_path / "two_images.npy", np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="too few"):
        D.load_images(tmp_path / "two_images.npy")


def test_dynamic_binarization_draws_fresh_bernoulli_pixels():
    torch.manual_seed(0)
    grey = torch.full((200, 1, 28, 28), 0.3)
    grey[:, :, :14] = 0.0  # top half always off
    grey[:, :, 14:, :4] = 1.0  # a block always on
    loader = D.train_loader(grey, batch_size=100)
    first = torch.cat(list(loader))
    second = torch.cat(list(loader))
    assert first.shape == (200, 1, 28, 28) and set(first.unique().tolist()) == {0.0, 1.0}
    assert first[:, :, :14].sum() == 0 and first[:, :, 14:, :4].eq(1).all()
    # mean of 200*14*24 Bernoulli(0.3) draws: std ~ 0.0035, so +-0.02 is > 5 sigma
    assert abs(first[:, :, 14:, 4:].mean().item() - 0.3) < 0.02
    # a fresh draw each pass: the two epochs differ (same-pixel agreement would be 1.0 if not)
    assert (first != second).float().mean() > 0.1


def test_fixed_binarization_is_seeded_and_keeps_binary_images():
    grey = torch.rand(10, 1, 28, 28)
    assert torch.equal(D.binarize_fixed(grey, 1), D.binarize_fixed(grey, 1))
    assert not torch.equal(D.binarize_fixed(grey, 1), D.binarize_fixed(grey, 2))
    binary = torch.bernoulli(grey)
    assert torch.equal(D.binarize_fixed(binary, 7), binary)
    batches = list(D.eval_loader(grey, batch_size=4, seed=1))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat(batches), D.binarize_fixed(grey, 1))
