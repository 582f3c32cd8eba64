"""The synthetic data generator: determinism, shapes, the latent mixture and z-dependence."""
import math

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
    params = dict(gen.named_parameters())
    # every weight U(-1, 1) except W_2 (z -> vocabulary), U(-5, 5); each tensor has >= 200 draws, so
    # its largest |value| is within 2% of the bound with probability > 1 - 0.98**200 = 0.98 ...
    # the smallest tensors: W_t (200 draws), W_2 (2000); the rest have far more
    for name, p in params.items():
        bound = 5.0 if name.startswith("out_latent.") else 1.0  # the paper's ranges
        assert float(p.abs().max()) <= bound, name
        assert float(p.abs().max()) > 0.95 * bound, name  # P(fail) < 0.95**200 ~ 4e-5 per tensor
    # W_t, W_1 and W_2 have no bias; the LSTM keeps its biases (U(-1, 1) like its weights)
    assert gen.init_state.bias is None and gen.out_hidden.bias is None and gen.out_latent.bias is None
    assert gen.cell.bias_ih is not None
    assert gen.embed.weight.shape == (1000, 100) and gen.cell.hidden_size == 100
    assert gen.cell.input_size == 100 + 2  # the previous token's embedding and z
    assert gen.init_state.weight.shape == (100, 2)
    assert gen.out_hidden.weight.shape == (1000, 100) and gen.out_latent.weight.shape == (1000, 2)
    assert torch.equal(SyntheticGenerator(seed=3).out_latent.weight, gen.out_latent.weight)
    assert not torch.equal(SyntheticGenerator(seed=4).out_latent.weight, gen.out_latent.weight)


def test_initial_state_comes_from_z():
    gen = SyntheticGenerator(seed=5, vocab_size=50, embed_dim=6, hidden_dim=7)
    z = torch.tensor([[0.3, -1.2], [2.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    h0, c0 = gen.initial_state(z)
    expected_c0 = z @ gen.init_state.weight.T
    assert torch.allclose(c0, expected_c0) and torch.allclose(h0, torch.tanh(expected_c0))
    assert torch.equal(c0[2], torch.zeros(7, dtype=torch.float64))  # no bias: z = 0 gives a zero state


def _reference_log_prob(gen, tokens, z):
    """log p(x | z) rolled out by hand from the generator's weights, with the LSTM equations written
    out (PyTorch's gate order i, f, g, o), the state from c0 = W_t z, h0 = tanh(c0), and the
    logits W_1 h_t + W_2 z."""
    W_ih, W_hh = gen.cell.weight_ih, gen.cell.weight_hh
    b = gen.cell.bias_ih + gen.cell.bias_hh
    c = z @ gen.init_state.weight.T
    h = torch.tanh(c)
    total = torch.full((tokens.shape[0],), -math.log(gen.vocab_size), dtype=torch.float64)
    for t in range(1, tokens.shape[1]):
        x = torch.cat([gen.embed.weight[tokens[:, t - 1]], z], dim=1)
        i, f, g, o = (x @ W_ih.T + h @ W_hh.T + b).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        logits = h @ gen.out_hidden.weight.T + z @ gen.out_latent.weight.T
        total += torch.log_softmax(logits, dim=1).gather(1, tokens[:, t:t + 1]).squeeze(1)
    return total


def test_log_prob_is_the_papers_recurrence(data):
    gen, test = data.generator, data.test
    got = gen.log_prob(test.tokens[:50], test.z[:50])
    assert got.dtype == torch.float64
    assert torch.allclose(got, _reference_log_prob(gen, test.tokens[:50], test.z[:50]), atol=1e-8)


def test_z_enters_the_logits_directly_through_w2():
    gen = SyntheticGenerator(seed=6, vocab_size=40, embed_dim=5, hidden_dim=4)
    z = torch.tensor([[1.5, -0.5], [-2.0, 1.0]], dtype=torch.float64)
    state = gen.initial_state(z)
    prev = torch.tensor([3, 7])
    logits, _ = gen.next_logits(prev, z, state)
    with torch.no_grad():
        gen.out_hidden.weight.zero_()  # leave only the direct term
    direct, _ = gen.next_logits(prev, z, state)
    assert torch.allclose(direct, z @ gen.out_latent.weight.T)
    assert not torch.allclose(logits, direct)  # and the hidden-state term is there too


def test_samples_follow_the_generator():
    # a 5-word generator, one fixed z: the second token's empirical law given each first token against
    # softmax(W_1 h_1 + W_2 z); Pearson chi-square with 5 x 4 = 20 degrees of freedom, whose
    # 0.999 quantile is 45.3, so a correct sampler fails this once in a thousand seeds
    gen = SyntheticGenerator(seed=7, vocab_size=5, embed_dim=4, hidden_dim=3)
    n = 20_000
    z = torch.tensor([[1.0, -2.5]], dtype=torch.float64)
    x = gen.sample(z.expand(n, 2), 2, torch.Generator().manual_seed(0))
    first = torch.arange(5)
    logits, _ = gen.next_logits(first, z.expand(5, 2), gen.initial_state(z.expand(5, 2)))
    probs = torch.softmax(logits, dim=1)  # [first token, second token]
    counts = torch.zeros(5, 5, dtype=torch.float64)
    counts.index_put_((x[:, 0], x[:, 1]), torch.ones(n, dtype=torch.float64), accumulate=True)
    expected = counts.sum(1, keepdim=True) * probs
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 45.3
    assert float(probs.max(1).values.min()) < 0.999  # the test has something to detect


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
