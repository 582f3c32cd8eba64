"""Metric objects: declared named state, reduction, state_dict, and equality with the functional
twins in ``aggressive_vi.estimators``."""
import math

import pytest
import torch
from torch.utils.data import DataLoader

from aggressive_vi import VAE, estimators, metrics
from conftest import BernoulliDecoder, MLPEncoder, binary_data


def vae():
    torch.manual_seed(0)
    return VAE(MLPEncoder(), BernoulliDecoder())


def test_add_state_declares_defaults_and_reset_restores_them():
    class Count(metrics.Metric):
        def __init__(self):
            super().__init__()
            self.add_state("total", torch.zeros((), dtype=torch.float64))
            self.add_state("n", 0)
            self.add_state("seen", 0, reduce=None)

        def update(self, x):
            self._accumulate("total", x.sum())
            self.n += x.numel()
            self.seen += 1

        def compute(self):
            r = self.reduced()
            return float(r["total"]) / float(r["n"])

    m = Count()
    m.update(torch.tensor([1.0, 2.0]))
    m.update(torch.tensor([6.0]))
    assert m.compute() == 3.0 and m.seen == 2 and m.state_names == ["total", "n", "seen"]
    saved = m.state_dict()
    m.reset()
    assert float(m.total) == 0.0 and m.n == 0 and m.seen == 0
    m.load_state_dict(saved)
    assert m.compute() == 3.0
    with pytest.raises(KeyError, match="missing states \\['seen'\\]"):
        m.load_state_dict({"total": torch.zeros(()), "n": 0})
    with pytest.raises(ValueError, match="reduce must be one of"):
        m.add_state("other", 0, reduce="mean")
    with pytest.raises(ValueError, match="state name must be a public identifier"):
        m.add_state("compute", 0)


def test_metric_objects_equal_their_functional_twins():
    model = vae()
    loader = DataLoader(binary_data(40), batch_size=8)
    kl, elbo = metrics.KL(model), metrics.ELBO(model)
    mi, au = metrics.MutualInformation(model), metrics.ActiveUnits(model, threshold=0.01)
    iw = metrics.IWNLL(model, n_samples=20, chunk_size=7)
    for batch in loader:
        for m in (kl, mi, au, elbo, iw):
            m.update(batch)
    assert kl.compute() == pytest.approx(estimators.kl(model, loader), rel=1e-12)
    assert au.compute().count == estimators.active_units(model, loader).count
    assert torch.allclose(au.compute().variances, estimators.active_units(model, loader).variances)
    # MI, ELBO and IW-NLL draw samples: the same estimate up to their sampling noise
    assert mi.compute().estimator == "minibatch" and mi.compute().n_examples == 40
    assert math.isfinite(mi.compute().stderr) and mi.compute().stderr >= 0
    assert iw.compute().n_examples == 40


def test_update_runs_in_eval_mode_without_gradient_and_restores_modes():
    model = vae()
    model.train()
    seen = []
    original = model.encoder.forward

    def spy(x):
        seen.append((model.encoder.training, torch.is_grad_enabled()))
        return original(x)

    model.encoder.forward = spy
    metrics.KL(model).update(binary_data(8))
    assert seen == [(False, False)] and model.training and model.encoder.training


def test_update_posterior_works_without_a_model_and_needs_x_where_the_decoder_runs():
    kl = metrics.KL()
    mean, logvar = torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2)
    kl.update_posterior(mean, logvar)
    assert kl.compute() == pytest.approx(0.5)  # KL(N(1,1)||N(0,1)) in one dimension: 1/2 nat
    with pytest.raises(ValueError, match="needs the model"):
        metrics.KL().update(torch.zeros(2, 6))
    with pytest.raises(ValueError, match="needs x"):
        metrics.ELBO(vae()).update_posterior(mean, logvar)
    with pytest.raises(ValueError, match="no example was added"):
        metrics.KL().compute()


def test_mi_standard_error_matches_the_spread_of_batch_estimates():
    # Posteriors far apart (std e^-2, means 1e4 apart): each batch estimate is log B plus the noise
    # of one sample of log q(z|x) per example, -(chi2_d - d)/2 averaged over B examples, whose
    # variance is d / (2B). The mean of n batches then has standard error sqrt(d / (2 B n)).
    # Fixed seed; the value is checked at 5 of these standard errors, and the metric's own standard
    # error (a sample standard deviation over n - 1 = 39 degrees of freedom, relative SD ~0.11) within
    # a factor 0.5-1.5 of the theory.
    torch.manual_seed(0)
    d, batch, n = 2, 16, 40
    far = metrics.MutualInformation()
    for _ in range(n):
        far.update_posterior(torch.randn(batch, d) * 1e4, torch.full((batch, d), -4.0))
    result = far.compute()
    theory = math.sqrt(d / (2 * batch * n))
    assert result.value == pytest.approx(math.log(batch), abs=5 * theory)
    assert 0.5 * theory < result.stderr < 1.5 * theory
    one = metrics.MutualInformation()
    one.update_posterior(torch.zeros(4, d), torch.zeros(4, d))
    assert math.isnan(one.compute().stderr)  # one batch: no spread to estimate


def test_doctest_of_the_module():
    import doctest

    failures, tried = doctest.testmod(metrics)
    assert tried >= 2 and failures == 0


# ---------------------------------------------------------------------------- the two MI estimators
def _linear_gaussian_data(n, seed):
    from conftest import AffineEncoder, linear_gaussian

    dec = linear_gaussian(5, 2, 1.0, scales=[1.0, 2.0])
    A, c, var = dec.exact_posterior()
    model = VAE(AffineEncoder(A, c, var.log()), dec).double()
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    x = z @ dec.W.detach().T + dec.b.detach() + torch.randn(n, 5, generator=g, dtype=torch.float64)
    truth = -0.5 * var.log().sum().item()  # I(x; z) = H(z) - H(z|x) = 0.5 sum_k log(1 + w_k^2 / s^2)
    return model, [x[i:i + 100] for i in range(0, n, 100)], truth


@pytest.mark.parametrize("estimator", ["minibatch", "dataset"])
def test_both_estimators_recover_the_linear_gaussian_mutual_information(estimator):
    # The encoder is the exact posterior and x is drawn from the model, so I_q(x; z) = I(x; z) in
    # closed form (1.151 nats). Fixed seed; tolerance: 4 of the estimator's own standard errors
    # (the mixture's bias from the example's own component is O(1/N), far below that here).
    from aggressive_vi import estimators

    model, loader, truth = _linear_gaussian_data(2000, seed=0)
    torch.manual_seed(0)
    result = estimators.mutual_information_estimate(model, loader, estimator=estimator)
    assert result.estimator == estimator and result.n_examples == 2000
    assert result.value == pytest.approx(truth, abs=4 * result.stderr)
    assert result.stderr < 0.06


def test_dataset_mi_is_zero_for_a_collapsed_encoder_and_log_n_for_separated_posteriors():
    torch.manual_seed(0)
    collapsed = metrics.DatasetMutualInformation(n_draws=10)
    for _ in range(5):
        collapsed.update_posterior(torch.zeros(100, 3), torch.zeros(100, 3))
    result = collapsed.compute()
    assert result.n_examples == 500 and abs(result.value) < 4 * result.stderr + 1e-12
    far = metrics.DatasetMutualInformation(n_draws=4)
    far.update_posterior(torch.randn(300, 2) * 1e4, torch.full((300, 2), -4.0))
    # each z has all of q(z)'s mass from its own component: log q(z) = log q(z|x) - log N; the
    # remaining noise is the one-sample entropy term, -(chi2_d - d)/2 averaged over 4 draws: SE
    # sqrt(d / 8 / N); checked at 5 of them
    value = far.compute().value
    assert value == pytest.approx(math.log(300), abs=5 * math.sqrt(2 / 8 / 300))


def test_dataset_mi_chunking_bounds_memory_without_changing_the_estimate():
    torch.manual_seed(0)
    mean, logvar = torch.randn(64, 3), torch.randn(64, 3) * 0.3 - 1
    results = []
    for chunk in (1 << 24, 64, 1):  # everything at once, one row per chunk, and below one row
        m = metrics.DatasetMutualInformation(n_draws=5, seed=3, chunk_elements=chunk)
        m.update_posterior(mean, logvar)
        results.append(m.compute().value)
    assert results[0] == pytest.approx(results[1], rel=1e-12) == pytest.approx(results[2], rel=1e-12)
    again = metrics.DatasetMutualInformation(n_draws=5, seed=3)
    again.update_posterior(mean, logvar)
    assert again.compute().value == results[0]  # seeded draws: the same posteriors, the same number
    # against the direct pairwise sum over components (the definition), in float64
    g = torch.Generator().manual_seed(3)
    m64, lv64 = mean.double(), logvar.double()
    eps = torch.randn((64, 5, 3), generator=g, dtype=torch.float64)
    z = (m64.unsqueeze(1) + (0.5 * lv64).exp().unsqueeze(1) * eps).reshape(-1, 3)
    pairwise = VAE.log_q_given(z.unsqueeze(0).expand(64, -1, -1), m64, lv64)  # [N, rows]
    log_qz = torch.logsumexp(pairwise, dim=0) - math.log(64)
    neg_entropy = -1.5 * math.log(2 * math.pi) - 0.5 * (1 + lv64).sum(-1)
    direct = (neg_entropy - log_qz.reshape(64, 5).mean(1)).mean().item()
    assert results[0] == pytest.approx(direct, rel=1e-10)
    with pytest.raises(ValueError, match="no example was added"):
        metrics.DatasetMutualInformation().compute()


def test_the_trainer_records_the_chosen_estimator_with_its_standard_error():
    from aggressive_vi import AggressiveTrainer, Always

    model = vae()
    data = [binary_data(16, seed=i) for i in range(3)]
    for estimator in ("minibatch", "dataset"):
        trainer = AggressiveTrainer(model, torch.optim.SGD(model.encoder.parameters(), lr=0.1),
                                    torch.optim.SGD(model.decoder.parameters(), lr=0.1),
                                    stopping=Always(), window=2, max_inner_steps=2,
                                    validation=metrics.ValidationMetrics(model, mi_estimator=estimator))
        record = trainer.fit(data, val_loader=data, epochs=1)[-1]
        assert record.val_mi is not None and record.val_mi_stderr is not None and record.val_mi_stderr > 0
    with pytest.raises(ValueError, match="mi_estimator must be one of \\('minibatch', 'dataset'\\); got 'mixture'"):
        metrics.ValidationMetrics(model, mi_estimator="mixture")


def test_iw_max_rows_bounds_the_rows_of_each_decoder_call_and_keeps_the_exact_estimate():
    from aggressive_vi import estimators
    from conftest import AffineEncoder, linear_gaussian

    dec = linear_gaussian(4, 2, 0.5)
    A, c, var = dec.exact_posterior()
    rows = []
    original = dec.log_prob

    def counting(x, z):
        rows.append(z.shape[0] * z.shape[1])
        return original(x, z)

    dec.log_prob = counting
    model = VAE(AffineEncoder(A, c, var.log()), dec).double()
    x = torch.randn(8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    result = estimators.iw_nll(model, [x], n_samples=50, chunk_size=100, max_rows=20)
    assert rows == [16] * 25  # 2 samples x 8 examples per call, 25 calls
    # with the exact posterior every importance weight is p(x): the estimate is exact for any chunking
    exact = -dec.exact_log_marginal(x).mean().item()
    assert result.nll == pytest.approx(exact, abs=1e-9)
    rows.clear()
    estimators.iw_nll(model, [x], n_samples=5, max_rows=3)  # fewer rows than examples: 1 sample a call
    assert rows == [8] * 5
    with pytest.raises(ValueError, match='max_rows must be "auto", a positive int or None; got 0'):
        estimators.iw_nll(model, [x], max_rows=0)


def test_minibatch_mi_standard_error_is_the_sample_standard_deviation_over_batches_over_root_n():
    # three batches of equal size: the estimate is the mean of the three batch estimates and its
    # standard error std(estimates, n - 1 degrees of freedom) / sqrt(3); the batch estimates are
    # recomputed with the same seeded draws
    g = torch.Generator().manual_seed(0)
    posteriors = [(torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g) * 0.5 - 1) for _ in range(3)]
    torch.manual_seed(1)
    each = torch.stack([metrics.batch_mutual_information(m, lv).double() for m, lv in posteriors])
    mi = metrics.MutualInformation()
    torch.manual_seed(1)
    for m, lv in posteriors:
        mi.update_posterior(m, lv)
    result = mi.compute()
    assert result.value == pytest.approx(each.mean().item(), rel=1e-12)
    assert result.stderr == pytest.approx(each.std(unbiased=True).item() / math.sqrt(3), rel=1e-9)
    assert each.std(unbiased=True).item() > 1e-3  # the batches differ: n and n - 1 give other errors


def test_dataset_mi_standard_error_is_the_sample_standard_deviation_over_examples_over_root_n():
    # four examples, per-example terms recomputed from the definition with the metric's seeded draws
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(4, 2, generator=g, dtype=torch.float64), torch.full((4, 2), -1.0, dtype=torch.float64)
    metric = metrics.DatasetMutualInformation(n_draws=3, seed=5)
    metric.update_posterior(mean, logvar)
    eps = torch.randn((4, 3, 2), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    z = (mean.unsqueeze(1) + (0.5 * logvar).exp().unsqueeze(1) * eps).reshape(-1, 2)
    log_qz = torch.logsumexp(VAE.log_q_given(z.unsqueeze(0).expand(4, -1, -1), mean, logvar), dim=0) - math.log(4)
    neg_entropy = -math.log(2 * math.pi) - 0.5 * (1 + logvar).sum(-1)
    terms = neg_entropy - log_qz.reshape(4, 3).mean(1)
    result = metric.compute()
    assert result.value == pytest.approx(terms.mean().item(), rel=1e-10)
    assert result.stderr == pytest.approx(terms.std(unbiased=True).item() / 2, rel=1e-9)


def test_a_unit_whose_variance_equals_the_threshold_is_not_active():
    # posterior means per dimension: [0, 0.5, 1] (unbiased variance exactly 0.25), [0, 1, 2] (1.0)
    # and [0.5, 0.5, 0.5] (0.0): exact in binary floating point
    mean = torch.tensor([[0.0, 0.0, 0.5], [0.5, 1.0, 0.5], [1.0, 2.0, 0.5]])
    for threshold, active in ((0.25, 1), (0.0, 2), (0.2499, 2), (1.0, 0)):
        au = metrics.ActiveUnits(threshold=threshold)
        au.update_posterior(mean, torch.zeros(3, 3))
        result = au.compute()
        assert result.variances.tolist() == [0.25, 1.0, 0.0]
        assert result.count == active, threshold  # Var > threshold, strictly (the paper's test)
        val = metrics.ValidationMetrics(terms=("au",), au_threshold=threshold)
        val.update_posterior(mean, torch.zeros(3, 3))
        assert val.compute() == {"val_au": active}


def test_the_iw_estimate_does_not_depend_on_how_the_samples_are_split():
    """All K samples are drawn at once and only the decoder's scoring is chunked: the same seed gives
    the same estimate (to rounding) for any chunk_size/max_rows, on a model whose q is not the
    posterior (so every weight differs and a change of draws would show)."""
    from aggressive_vi import estimators

    torch.manual_seed(0)
    model = VAE(MLPEncoder(), BernoulliDecoder()).eval()
    x = binary_data(12)
    values = []
    for chunk, rows in ((100, None), (7, "auto"), (100, 24), (3, 5)):
        torch.manual_seed(1)
        values.append(estimators.iw_nll(model, [x], n_samples=50, chunk_size=chunk, max_rows=rows).nll)
    assert max(values) - min(values) < 1e-5


def test_auto_rows_bound_the_decoder_calls_on_the_cpu():
    from aggressive_vi._impl.rows import CPU_ROWS, GPU_ROWS, rows_per_call
    from aggressive_vi.metrics import iw_log_likelihood

    assert rows_per_call("auto", torch.device("cpu")) == CPU_ROWS
    assert rows_per_call("auto", torch.device("cuda", 0)) == GPU_ROWS > CPU_ROWS  # bounded on a GPU too
    assert rows_per_call(None, None) is None
    assert rows_per_call(10, None) == 10
    decoder = BernoulliDecoder()
    seen = []
    original = decoder.log_prob
    decoder.log_prob = lambda x, z: seen.append(z.shape[0] * z.shape[1]) or original(x, z)
    model = VAE(MLPEncoder(), decoder)
    with torch.no_grad():
        iw_log_likelihood(model, binary_data(16), n_samples=500)
    assert max(seen) <= CPU_ROWS and sum(seen) == 16 * 500


class _MemoryBoundDecoder(BernoulliDecoder):
    """Raises ``torch.OutOfMemoryError`` for calls of more than ``limit`` rows, as a GPU would."""

    def __init__(self, limit):
        super().__init__()
        self.limit, self.calls = limit, []

    def log_prob(self, x, z):
        rows = z.shape[0] * z.shape[1]
        self.calls.append(rows)
        if rows > self.limit:
            raise torch.OutOfMemoryError(f"{rows} rows")
        return super().log_prob(x, z)


def test_auto_rows_halve_on_out_of_memory_and_keep_the_estimate():
    """Under max_rows="auto" a call that runs out of memory is retried with half the samples, and
    the metric keeps the smaller slice for later batches; the draws are made before any call, so
    the estimate equals an unsliced one's (to rounding)."""
    from aggressive_vi._impl.rows import CPU_ROWS

    x = binary_data(8)
    torch.manual_seed(0)
    reference = VAE(MLPEncoder(), BernoulliDecoder())
    decoder = _MemoryBoundDecoder(limit=20)  # 8 examples: at most 2 samples per call fit
    decoder.load_state_dict(reference.decoder.state_dict())
    model = VAE(reference.encoder, decoder)
    metric = metrics.IWNLL(model, n_samples=40)
    torch.manual_seed(1)
    metric.update(x)
    first = list(decoder.calls)
    assert first[0] == 8 * (CPU_ROWS // 8) and first.count(8 * 2) == 20  # 8 -> 4 -> 2 samples per call
    assert metric._rows.halvings == 2
    decoder.calls.clear()
    metric.update(x)
    assert set(decoder.calls) == {16}  # the second batch starts at what the first one learned
    torch.manual_seed(1)
    expected = estimators.iw_nll(reference, [x], n_samples=40, max_rows=None).nll
    metric.reset()
    torch.manual_seed(1)
    metric.update(x)
    assert metric.compute().nll == pytest.approx(expected, abs=1e-5)


def test_an_int_row_bound_is_the_users_and_is_not_halved():
    decoder = _MemoryBoundDecoder(limit=20)
    model = VAE(MLPEncoder(), decoder)
    with pytest.raises(torch.OutOfMemoryError):
        estimators.iw_nll(model, [binary_data(8)], n_samples=40, max_rows=32)
    assert decoder.calls == [32]
    decoder.calls.clear()
    one_sample = _MemoryBoundDecoder(limit=4)  # 8 rows at one sample each: nothing left to halve
    with pytest.raises(torch.OutOfMemoryError):
        estimators.iw_nll(VAE(MLPEncoder(), one_sample), [binary_data(8)], n_samples=40)
    assert one_sample.calls[-1] == 8


def test_the_elbo_metric_slices_its_samples_and_keeps_the_estimate():
    """ELBO(n_samples=K) draws its K samples at once and scores them CPU_ROWS rows at a time: the
    same seed gives the same estimate as the model's own elbo_given in one call."""
    from aggressive_vi._impl.rows import CPU_ROWS

    torch.manual_seed(0)
    decoder = _MemoryBoundDecoder(limit=10 ** 9)
    model = VAE(MLPEncoder(), decoder).eval()
    x = binary_data(16)
    metric = metrics.ELBO(model, n_samples=50)
    with torch.no_grad():
        mean, logvar = model.encode(x)
        torch.manual_seed(3)
        metric.update_posterior(mean, logvar, x)
        assert max(decoder.calls) <= CPU_ROWS and sum(decoder.calls) == 16 * 50
        torch.manual_seed(3)
        terms = model.elbo_given(x, mean, logvar, n_samples=50)
    result = metric.compute()
    assert result.reconstruction == pytest.approx(terms.reconstruction.mean().item(), abs=1e-5)
    assert result.kl == pytest.approx(terms.kl.mean().item(), abs=1e-6)
