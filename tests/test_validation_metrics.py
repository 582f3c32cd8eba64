"""The validation-metrics collection (``metrics.ValidationMetrics``) and its functional twin
``estimators.summary``: one encoder pass feeds every member; the record keys are the trainer's."""
import pytest
import torch
from torch.utils.data import DataLoader

from aggressive_vi import VAE, estimators, metrics
from conftest import BernoulliDecoder, MLPEncoder, binary_data


def vae():
    torch.manual_seed(0)
    return VAE(MLPEncoder(), BernoulliDecoder())


@pytest.mark.parametrize("estimator", ["minibatch", "dataset"])
def test_summary_of_mi_alone_counts_the_examples_with_either_estimator(estimator):
    # terms=("mi",) with the dataset estimator raised KeyError: 'count' (its states are the
    # posteriors, not a count)
    model = vae()
    loader = DataLoader(binary_data(24), batch_size=8)
    out = estimators.summary(model, loader, terms=("mi",), mi_estimator=estimator)
    assert out["n_examples"] == 24 and set(out) == {"mi", "mi_stderr", "n_examples"}


def val_fields():
    from dataclasses import fields

    from aggressive_vi import EpochRecord

    return {f.name for f in fields(EpochRecord) if f.name.startswith("val_")}


def by_hand(model, batches, seed, estimator="minibatch", threshold=0.01):
    """The members one by one, fed the same encoder output in the collection's order of draws
    (the ELBO's z, then the minibatch MI's), from the same seed."""
    elbo = metrics.ELBO(model, n_samples=1)
    mi = metrics.MutualInformation() if estimator == "minibatch" else metrics.DatasetMutualInformation()
    au = metrics.ActiveUnits(threshold=threshold)
    torch.manual_seed(seed)
    with metrics.evaluation_mode(model):
        for x in batches:
            mean, logvar = model.encode(x)
            for m in (elbo, mi, au):
                m.update_posterior(mean, logvar, x)
    return elbo.compute(), mi.compute(), au.compute()


@pytest.mark.parametrize("estimator", ["minibatch", "dataset"])
def test_the_collection_equals_its_members_computed_one_by_one(estimator):
    model = vae()
    batches = [binary_data(8, seed=s) for s in range(5)]
    collection = metrics.ValidationMetrics(model, mi_estimator=estimator, au_threshold=0.001)
    torch.manual_seed(3)
    for x in batches:
        collection.update(x)
    record = collection.compute()
    elbo, mi, au = by_hand(model, batches, seed=3, estimator=estimator, threshold=0.001)
    # the same draws summed in the same order: equal to the last bit
    assert record == {"val_elbo": elbo.elbo, "val_reconstruction": elbo.reconstruction,
                      "val_kl": elbo.kl, "val_mi": mi.value, "val_mi_stderr": mi.stderr,
                      "val_au": au.count}
    assert set(record) == val_fields()  # exactly the EpochRecord's validation fields
    # the deterministic members against the estimators (closed-form KL, the mean's variance)
    assert record["val_kl"] == pytest.approx(estimators.kl(model, batches), rel=1e-12)
    assert record["val_au"] == estimators.active_units(model, batches, threshold=0.001).count
    result = collection.results()
    assert result.n_examples == 40 and torch.equal(result.au.variances, au.variances)


def test_the_validation_elbo_draws_one_z_per_example():
    model = vae()
    x = binary_data(16)
    collection = metrics.ValidationMetrics(model, terms=("elbo",))
    torch.manual_seed(1)
    collection.update(x)
    torch.manual_seed(1)
    with torch.no_grad():
        terms = model.elbo(x, n_samples=1)  # one reparameterised draw per example
    record = collection.compute()
    assert record["val_reconstruction"] == pytest.approx(terms.reconstruction.double().mean().item(), rel=1e-6)
    assert record["val_elbo"] == pytest.approx(-terms.loss.double().mean().item(), rel=1e-6)
    assert set(record) == {"val_elbo", "val_reconstruction", "val_kl"}


def test_summary_is_the_collections_record_without_the_prefix():
    model = vae()
    loader = DataLoader(binary_data(24), batch_size=8)
    torch.manual_seed(5)
    out = estimators.summary(model, loader, au_threshold=0.02)
    collection = metrics.ValidationMetrics(model, au_threshold=0.02)
    torch.manual_seed(5)
    for x in loader:
        collection.update(x)
    result = collection.results()
    detail = out.pop("au_detail")
    assert detail.count == result.au.count and torch.equal(detail.variances, result.au.variances)
    assert out.pop("n_examples") == 24
    assert {"val_" + k: v for k, v in out.items()} == result.record()


def test_reset_and_state_dict():
    model = vae()
    batches = [binary_data(8, seed=s) for s in range(3)]
    collection = metrics.ValidationMetrics(model)
    torch.manual_seed(0)
    for x in batches:
        collection.update(x)
    first = collection.compute()
    saved = collection.state_dict()
    assert set(saved) == {"elbo", "mi", "au", "examples"}
    collection.reset()
    with pytest.raises(ValueError, match="no example was added"):
        collection.compute()
    torch.manual_seed(0)
    for x in batches:  # after reset: the same as a fresh collection, not the sum of two runs
        collection.update(x)
    assert collection.compute() == first
    other = metrics.ValidationMetrics(model)
    other.load_state_dict(torch.load(_saved(saved), weights_only=True))
    assert other.compute() == first
    with pytest.raises(KeyError, match="expected members"):
        metrics.ValidationMetrics(model, terms=("kl",)).load_state_dict(saved)


def _saved(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_bad_options_name_the_argument():
    with pytest.raises(ValueError, match=r"terms must be among \('elbo', 'kl', 'mi', 'au'\); got unknown \['nll'\]"):
        metrics.ValidationMetrics(vae(), terms=("mi", "nll"))
    with pytest.raises(ValueError, match="mi_estimator must be one of"):
        metrics.ValidationMetrics(vae(), mi_estimator="mixture")
    with pytest.raises(ValueError, match="needs the model"):
        metrics.ValidationMetrics()
    with pytest.raises(ValueError, match="update\\(x\\) needs the model"):
        metrics.ValidationMetrics(terms=("kl",)).update(binary_data(4))


def test_the_trainer_records_the_collections_values():
    # the trainer validates right after the epoch's last update: from the random state at that
    # point, the collection over the validation loader gives the record's values exactly
    from aggressive_vi import AggressiveTrainer, Always

    model = vae()
    train = [binary_data(8, seed=s) for s in range(3)]
    val = [binary_data(8, seed=10 + s) for s in range(3)]
    states = []

    class KeepRandomState:
        def on_step_end(self, trainer, info):
            states.append(torch.get_rng_state())

    trainer = AggressiveTrainer(model, torch.optim.SGD(model.encoder.parameters(), lr=0.1),
                                torch.optim.SGD(model.decoder.parameters(), lr=0.1), stopping=Always(),
                                window=2, max_inner_steps=4,
                                validation=metrics.ValidationMetrics(model, au_threshold=0.001),
                                callbacks=[KeepRandomState()])
    record = trainer.fit(train, val_loader=val, epochs=1)[-1]
    collection = metrics.ValidationMetrics(model, au_threshold=0.001)
    torch.set_rng_state(states[-1])
    for x in val:
        collection.update(x)
    assert {k: getattr(record, k) for k in val_fields()} == collection.compute()


def test_active_units_result_has_one_name_and_the_old_one_warns():
    result = estimators.active_units(vae(), [binary_data(8)])
    assert type(result) is metrics.ActiveUnitsResult and "ActiveUnits" not in estimators.__all__
    with pytest.warns(DeprecationWarning, match="ActiveUnitsResult"):
        assert estimators.ActiveUnits is metrics.ActiveUnitsResult
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        estimators.Nothing
