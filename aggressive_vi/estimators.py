"""Estimators over a data loader: importance-weighted NLL, mutual information, active units, KL, ELBO.

Each is a pure function of ``(model, loader, options)``, the functional twin of a metric object in
:mod:`aggressive_vi.metrics`: it streams the loader batch by batch (batched over examples and
samples, no per-example Python loop), runs the model in eval mode under ``torch.no_grad`` and
restores every submodule's train/eval mode afterwards. Under ``torch.distributed`` the per-rank
states are reduced, so every rank returns the number for the union of the ranks' shards.

``model`` is a :class:`~aggressive_vi.model.VAE` or any module with ``.encoder``/``.decoder`` that
meet the protocols. ``get_input`` (every function) says how the model's input is taken from a loader
batch. All results are in nats.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Union

import torch
from torch import nn

from ._impl.loaders import InputFn, model_device, move_to_device
from ._impl.checks import one_of
from .metrics import (ELBO, IWNLL, KL, MI_ESTIMATORS, VALIDATION_TERMS, ActiveUnitsResult,
                      DatasetMutualInformation, ELBOEstimate, IWNLLResult, MIEstimate, Metric,
                      MutualInformation, PosteriorMetric, ValidationMetrics, ValidationResult,
                      batch_mutual_information, evaluation_mode, iw_log_likelihood)
from .metrics import ActiveUnits as _ActiveUnitsMetric
from .model import as_vae


def __getattr__(name: str) -> Any:
    # 0.1 named the result of active_units() ``estimators.ActiveUnits``, the name of the metric in
    # aggressive_vi.metrics; the result is ActiveUnitsResult now, the old name a deprecated alias
    if name == "ActiveUnits":
        warnings.warn("aggressive_vi.estimators.ActiveUnits is deprecated: the result of active_units() "
                      "is ActiveUnitsResult (aggressive_vi.metrics.ActiveUnits is the metric)",
                      DeprecationWarning, stacklevel=2)
        return ActiveUnitsResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "IWNLLResult",
    "ActiveUnitsResult",
    "ELBOEstimate",
    "MIEstimate",
    "evaluation_mode",
    "iw_log_likelihood",
    "iw_nll",
    "batch_mutual_information",
    "mutual_information",
    "mutual_information_estimate",
    "active_units",
    "kl",
    "elbo",
    "summary",
    "run_metrics",
    "MI_ESTIMATORS",
    "mi_metric",
]

def mi_metric(estimator: str = "minibatch", **options: Any) -> PosteriorMetric:
    """A fresh MI metric: :class:`~aggressive_vi.metrics.MutualInformation` for ``"minibatch"``
    (the paper's estimator), :class:`~aggressive_vi.metrics.DatasetMutualInformation` for
    ``"dataset"`` (``options``: its ``n_draws``, ``seed``, ``chunk_elements``)."""
    one_of("estimator", estimator, MI_ESTIMATORS)
    if estimator == "minibatch":
        if options:
            raise ValueError(f"the minibatch MI estimator takes no options; got {sorted(options)}")
        return MutualInformation()
    return DatasetMutualInformation(**options)


def _inputs(model: nn.Module, loader: Iterable[Any], get_input: Optional[InputFn]) -> Iterator[Any]:
    device = model_device(model)
    fn = get_input if get_input is not None else as_vae(model).get_input  # the model's, set once
    seen = False
    for batch in loader:
        seen = True
        yield move_to_device(fn(batch), device)
    if not seen:
        raise ValueError("loader yielded no batch; expected a non-empty loader")


def run_metrics(model: nn.Module, loader: Iterable[Any], metrics: Dict[str, Metric], *,
                get_input: Optional[InputFn] = None) -> Dict[str, Any]:
    """Feed every batch of ``loader`` to ``metrics`` in one pass and return ``{name: compute()}``.

    Posterior metrics share one encoder pass per batch; :class:`~aggressive_vi.metrics.IWNLL` runs
    its own. The model is in eval mode under ``no_grad`` throughout; its modes are restored.
    """
    vae = as_vae(model)
    posterior = [m for m in metrics.values() if isinstance(m, PosteriorMetric)]
    likelihood = [m for m in metrics.values() if isinstance(m, IWNLL)]
    with evaluation_mode(model):
        for x in _inputs(vae, loader, get_input):
            if posterior:
                mean, logvar = vae.encode(x)
                for p in posterior:
                    p.update_posterior(mean, logvar, x)
            for iw in likelihood:
                iw.update_input(x)
    return {name: m.compute() for name, m in metrics.items()}


def iw_nll(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    n_samples: int = 500,
    chunk_size: int = 100,
    max_rows: Union[int, str, None] = "auto",
    count_tokens: Optional[Callable[[Any], Union[int, torch.Tensor]]] = None,
    get_input: Optional[InputFn] = None,
) -> IWNLLResult:
    """Importance-weighted NLL over a loader (the paper's reported likelihood), nats per example.

    Args:
        n_samples: importance samples per example (the paper uses 500).
        chunk_size: samples per decoder call; lower it to save memory.
        max_rows: bound on ``batch x samples`` rows per decoder call (memory grows with it);
            ``"auto"`` (default) chooses it from the device (64 rows on the CPU, 512 on a GPU, the
            samples per call halved whenever a call runs out of device memory); an int is kept as
            given; ``None``: no bound. The estimate does not
            depend on ``chunk_size`` or ``max_rows`` (all samples are drawn at once).
        count_tokens: optional ``x -> number of tokens in the batch``, for
            :attr:`IWNLLResult.perplexity` (for text: words plus end-of-sentence symbols). It
            receives the model's input ``x`` (what ``get_input`` takes from the loader batch, already
            on the model's device), not the batch itself, and returns an int or a tensor (summed).
    """
    metric = IWNLL(model, n_samples=n_samples, chunk_size=chunk_size, max_rows=max_rows,
                   count_tokens=count_tokens)
    return run_metrics(model, loader, {"iw": metric}, get_input=get_input)["iw"]


def mutual_information_estimate(model: nn.Module, loader: Iterable[Any], *,
                                estimator: str = "minibatch", get_input: Optional[InputFn] = None,
                                **options: Any) -> MIEstimate:
    """I_q(x; z) with its standard error (nats), by ``estimator``:

    * ``"minibatch"`` (default, the paper's): the aggregate posterior is each minibatch's mixture,
      one z per example; at most log(batch size), so compare values at the same batch size.
    * ``"dataset"``: the mixture of all N posteriors of the loader, ``n_draws`` z per example
      (default 10; see :class:`~aggressive_vi.metrics.DatasetMutualInformation`).
    """
    metric = mi_metric(estimator, **options)
    return run_metrics(model, loader, {"mi": metric}, get_input=get_input)["mi"]


def mutual_information(model: nn.Module, loader: Iterable[Any], *, estimator: str = "minibatch",
                       get_input: Optional[InputFn] = None, **options: Any) -> float:
    """I_q(x; z) in nats (:func:`mutual_information_estimate` without its standard error).

    The default is the paper's estimator (aggregate posterior = each minibatch's mixture), bounded
    by log(batch size); ``estimator="dataset"`` uses the whole loader's mixture.
    """
    return mutual_information_estimate(model, loader, estimator=estimator, get_input=get_input,
                                       **options).value


def active_units(model: nn.Module, loader: Iterable[Any], *, threshold: float = 0.01,
                 get_input: Optional[InputFn] = None) -> ActiveUnitsResult:
    """Count the latent dimensions with ``Var_x(E_q(z|x)[z_d]) > threshold`` (paper: 0.01)."""
    metric = _ActiveUnitsMetric(threshold=threshold)
    return run_metrics(model, loader, {"au": metric}, get_input=get_input)["au"]


def kl(model: nn.Module, loader: Iterable[Any], *, get_input: Optional[InputFn] = None) -> float:
    """Mean KL(q(z|x) || N(0, I)) over the data, nats per example (closed form)."""
    return run_metrics(model, loader, {"kl": KL()}, get_input=get_input)["kl"]


def elbo(model: nn.Module, loader: Iterable[Any], *, n_samples: int = 1,
         get_input: Optional[InputFn] = None) -> ELBOEstimate:
    """Mean ELBO over the data with ``n_samples`` reparameterised draws per example."""
    return run_metrics(model, loader, {"elbo": ELBO(model, n_samples=n_samples)},
                       get_input=get_input)["elbo"]


_TERMS = VALIDATION_TERMS


def summary(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    terms: Iterable[str] = _TERMS,
    au_threshold: float = 0.01,
    n_samples: int = 1,
    mi_estimator: str = "minibatch",
    get_input: Optional[InputFn] = None,
) -> Dict[str, Any]:
    """Several estimates in one pass over the loader: the functional twin of
    :class:`~aggressive_vi.metrics.ValidationMetrics` (which makes the trainer's ``val_*`` record).

    Args:
        terms: any of ``"elbo"`` (also gives ``reconstruction`` and ``kl``), ``"kl"``, ``"mi"``
            (also gives ``mi_stderr``), ``"au"`` (gives ``au`` and ``au_detail``, an
            :class:`~aggressive_vi.metrics.ActiveUnitsResult`).
        au_threshold: variance threshold of the active-unit count (paper: 0.01).
        n_samples: z draws per example of the ELBO (the trainer's validation uses one).
        mi_estimator: ``"minibatch"`` (the paper's) or ``"dataset"`` (see :func:`mi_metric`).

    Returns:
        A dict of floats (nats per example; ``au`` an int) for the requested terms, plus
        ``n_examples`` (all ranks): the keys of the collection's record without ``val_``.
    """
    collection = ValidationMetrics(model, terms=terms, au_threshold=au_threshold,
                                   n_samples=n_samples, mi_estimator=mi_estimator)
    with evaluation_mode(model):
        for x in _inputs(as_vae(model), loader, get_input):
            collection.update(x)
    return _summary_dict(collection.results())


def _summary_dict(result: ValidationResult) -> Dict[str, Any]:
    out: Dict[str, Any] = {"n_examples": result.n_examples}
    out.update({key[len("val_"):]: value for key, value in result.record().items()})
    if result.au is not None:
        out["au_detail"] = result.au
    return out
