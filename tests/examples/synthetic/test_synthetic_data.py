"""The synthetic data generator: determinism, shapes, the latent mixture and z-dependence."""
import pytest
import torch

from examples.synthetic.data import (BOS_ID, EOS_ID, MIXTURE_MEANS, N_SPECIALS, SyntheticGenerator,
                                     make_synthetic_data, to_model_tokens)

N_TRAIN = 4000


@pytest.fixture(scope="module")
def data():
    return make_synthetic_data(seed=11, n_train=N_TRAIN, n_valid=50, n_test=200)


def test_same_seed_same_data_and_other_seed_differs(data):
    again = make_synthetic_data(seed=11, n_train=N_TRAIN, n_valid=50, n_test=200)
    for name in ("train", "valid", "test"):
        assert torch.equal(getattr(data, name).tokens, getattr(again, name).tokens)
        assert torch.equal(getattr(data, name).z, getattr(again, name).z)
    other = make_synthetic_data(seed=12, n_train=50, n_valid=50, n_test=50)
    assert not torch.equal(other.valid.tokens, data.valid.tokens)


def test_shrinking_one_split_leaves_the_others_unchanged(data):
    small = make_synthetic_data(seed=11, n_train=10, n_valid=50, n_test=200)
    assert torch.equal(small.test.tokens, data.test.tokens)
    assert torch.equal(small.valid.z, data.valid.z)


def test_shapes_dtype_and_vocabulary_range(data):
    for split, n in ((data.train, N_TRAIN), (data.valid, 50), (data.test, 200)):
        assert split.tokens.shape == (n, 10) and split.tokens.dtype == torch.long
        assert split.z.shape == (n, 2) and split.component.shape == (n,)
        assert int(split.tokens.min()) >= 0 and int(split.tokens.max()) < 1000
    assert data.vocab_size == 1000
    # 4000 x 10 draws from a 1000-word vocabulary use most of it
    assert len(torch.unique(data.train.tokens)) > 900


def test_latents_follow_the_four_component_mixture(data):
    z, comp = data.train.z, data.train.component
    for k in range(4):
        zk = z[comp == k]
        # each component holds ~1000 points: frequency SE 0.007, mean SE 0.032, std SE 0.022;
        # the tolerances are > 4 standard errors
        assert abs(len(zk) / N_TRAIN - 0.25) < 0.04
        assert torch.allclose(zk.mean(0), MIXTURE_MEANS[k].double(), atol=0.15)
        assert torch.allclose(zk.std(0), torch.ones(2, dtype=torch.float64), atol=0.1)
    assert {tuple(m) for m in MIXTURE_MEANS.tolist()} == {(2, 2), (-2, -2), (2, -2), (-2, 2)}


def test_first_token_is_uniform(data):
    # 10 equal-width bins of the vocabulary, 400 expected per bin; chi-square with 9 dof has
    # P(> 27.9) = 0.001 under uniformity
    counts = torch.bincount(data.train.tokens[:, 0] // 100, minlength=10).double()
    chi2 = ((counts - N_TRAIN / 10) ** 2 / (N_TRAIN / 10)).sum()
    assert chi2 < 27.9


def test_later_tokens_depend_on_z(data):
    gen, test = data.generator, data.test
    true_lp = gen.log_prob(test.tokens, test.z)
    wrong_lp = gen.log_prob(test.tokens, test.z.flip(0))
    assert true_lp.shape == (200,)
    # the generator's sharp U(-5, 5) output layer makes x very informative about z
    assert (true_lp - wrong_lp).mean() > 20.0
    # the uniform first token alone costs log(1000) nats
    assert true_lp.max() <= -torch.log(torch.tensor(1000.0)).item() + 1e-9


def test_generator_weights_follow_the_papers_ranges():
    gen = SyntheticGenerator(seed=3)
    for module, bound in ((gen.embed, 1.0), (gen.cell, 1.0), (gen.output, 5.0)):
        for p in module.parameters():
            assert float(p.abs().max()) <= bound and float(p.abs().max()) > 0.9 * bound
    assert gen.embed.weight.shape == (1000, 100) and gen.cell.hidden_size == 100
    assert torch.equal(SyntheticGenerator(seed=3).output.weight, gen.output.weight)


def test_to_model_tokens_adds_boundaries_and_shifts_ids():
    tokens = torch.tensor([[0, 5, 999], [7, 7, 7]])
    out = to_model_tokens(tokens)
    assert out.tolist() == [[BOS_ID, N_SPECIALS, 5 + N_SPECIALS, 999 + N_SPECIALS, EOS_ID],
                            [BOS_ID] + [7 + N_SPECIALS] * 3 + [EOS_ID]]
    with pytest.raises(ValueError, match="tokens"):
        to_model_tokens(torch.zeros(3, 2))


@pytest.mark.parametrize("kwargs, name", [({"n_train": 0}, "n_train"), ({"seq_len": -1}, "seq_len"),
                                          ({"seed": 1.5}, "seed")])
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_synthetic_data(**{"n_train": 5, "n_valid": 5, "n_test": 5, **kwargs})
