"""Estimators as small stateful objects: ``update(batch)`` / ``compute()`` / ``reset()``.

Use them from any training loop (yours, Lightning's, Fabric's) to log what the paper watches::

    mi = MutualInformation(model)
    for batch in val_loader:
        mi.update(batch)           # encodes under eval mode and no_grad; restores the model's mode
    mi.compute().value            # nats, reduced over ranks under torch.distributed

Every metric declares its state once with :meth:`Metric.add_state` (a name, a default and a
reduction); :meth:`Metric.compute` reduces all of it over ranks in one place, with a single
all-reduce for the ``"sum"`` states. The functions in :mod:`aggressive_vi.estimators` are the
functional twins: each runs the metric over a whole loader.

Posterior metrics (everything here but :class:`IWNLL`) also take an already computed q(z|x) with
``update_posterior(mean, logvar, x)`` (``mean``, ``logvar``: ``[batch, latent_dim]``), so one
encoder pass can feed several of them. :class:`ValidationMetrics` is such a collection: the
per-epoch ``val_*`` record of every driver (functional twin:
:func:`aggressive_vi.estimators.summary`).

>>> import torch
>>> from aggressive_vi.metrics import KL
>>> kl = KL()
>>> kl.update_posterior(torch.zeros(4, 2), torch.zeros(4, 2))   # q(z|x) = p(z): no KL
>>> kl.compute()
0.0
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import torch
from torch import nn

from ._impl.checks import non_negative_float, positive_int
from ._impl.loaders import InputFn, model_device, move_to_device
from ._impl.rows import RowBound
from .distributed import all_gather_object, all_reduce_sum, collective_device, is_distributed
from .model import VAE, as_vae, at_least_fp32, gaussian_kl_to_standard_normal

__all__ = [
    "Metric", "PosteriorMetric", "evaluation_mode",
    "KL", "ELBO", "MutualInformation", "DatasetMutualInformation", "ActiveUnits", "IWNLL",
    "ELBOEstimate", "MIEstimate", "ActiveUnitsResult", "IWNLLResult",
    "batch_mutual_information", "iw_log_likelihood", "reduce_states",
    "ValidationMetrics", "ValidationResult", "MI_ESTIMATORS", "VALIDATION_TERMS",
]

Number = Union[int, float]
State = Union[torch.Tensor, Number, List[torch.Tensor], None]
REDUCTIONS = ("sum", "cat", None)


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and ``torch.no_grad`` inside; every submodule's previous mode restored on exit."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, mode in modes:
            module.training = mode


# ---------------------------------------------------------------------------- the base
class Metric:
    """A running estimate with named, declared state.

    Subclasses call :meth:`add_state` in ``__init__`` for every piece of state and implement
    ``update`` and ``compute``. A state is a tensor (kept on the device of the data it sums), a host
    number (counts known without a device sync), ``None`` (a tensor whose shape the first update
    sets, e.g. ``[latent_dim]``), or a list of tensors (``reduce="cat"``).

    Reductions: ``"sum"`` (added over ranks), ``"cat"`` (concatenated over ranks along dim 0) or
    ``None`` (the same on every rank; not reduced).
    """

    def __init__(self) -> None:
        self._defaults: Dict[str, State] = {}
        self._reductions: Dict[str, Optional[str]] = {}

    def add_state(self, name: str, default: State, reduce: Optional[str] = "sum") -> None:
        """Declare a state ``name`` with its ``default`` value and cross-rank reduction."""
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}; got {reduce!r}")
        if reduce == "cat" and default != []:
            raise ValueError(f"a 'cat' state starts as an empty list; got default {default!r}")
        if not name.isidentifier() or name.startswith("_") or hasattr(type(self), name):
            raise ValueError(f"state name must be a public identifier not used by the class; got {name!r}")
        self._defaults[name] = default
        self._reductions[name] = reduce
        setattr(self, name, _copy(default))

    @property
    def state_names(self) -> List[str]:
        return list(self._defaults)

    @property
    def reductions(self) -> Dict[str, Optional[str]]:
        """``{state name: its cross-rank reduction}`` in declaration order."""
        return dict(self._reductions)

    def reset(self) -> None:
        """Every state back to its default."""
        for name, default in self._defaults.items():
            setattr(self, name, _copy(default))

    def _accumulate(self, name: str, value: torch.Tensor) -> None:
        """Add ``value`` to a tensor state (materialising a ``None`` state with its shape)."""
        current = getattr(self, name)
        if current is None:
            setattr(self, name, value.detach().double().clone())
        else:
            if current.device != value.device:
                current = current.to(value.device)
            setattr(self, name, current + value.detach().double())

    def reduced(self) -> Dict[str, Any]:
        """Every state reduced over ranks (one all-reduce for the ``"sum"`` states, one gather
        for each ``"cat"`` one); without a process group, the local states. Leaves the metric's own
        state unchanged. See :func:`reduce_states` for several metrics at once."""
        return reduce_states([self])[0]

    def state_dict(self) -> Dict[str, Any]:
        """The states by name (tensors as CPU copies): loads with ``weights_only=True``."""
        out: Dict[str, Any] = {}
        for name in self._defaults:
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu().clone()
            elif isinstance(value, list):
                value = [v.detach().cpu().clone() for v in value]
            out[name] = value
        return out

    def load_state_dict(self, state: Dict[str, Any], device: Optional[torch.device] = None) -> None:
        """Restore :meth:`state_dict` (tensor states moved to ``device`` when given).

        Raises:
            KeyError: a state is missing, or the dict holds one this metric does not declare.
        """
        missing = [n for n in self._defaults if n not in state]
        unknown = [n for n in state if n not in self._defaults]
        if missing or unknown:
            raise KeyError(f"{type(self).__name__}.load_state_dict: missing states {missing}, "
                           f"unknown states {unknown}")
        for name in self._defaults:
            value = state[name]
            if isinstance(value, torch.Tensor):
                value = value.to(device) if device is not None else value.clone()
            elif isinstance(value, list):
                value = [v.to(device) if device is not None else v.clone() for v in value]
            setattr(self, name, value)

    def update(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute(self) -> Any:
        """The estimate from the states reduced over ranks (a collective under a process group)."""
        return self.compute_from(self.reduced())

    def compute_from(self, reduced: Dict[str, Any]) -> Any:  # pragma: no cover - abstract
        """The estimate from states already reduced over ranks (:meth:`reduced` or
        :func:`reduce_states`): :class:`ValidationMetrics` reduces all its members once, then calls
        this on each. A subclass implements this, or overrides :meth:`compute` itself."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def reduce_states(metrics: Sequence[Metric]) -> List[Dict[str, Any]]:
    """The states of every metric in ``metrics`` reduced over ranks, in one place.

    The ``"sum"`` states of all the metrics travel in a single all-reduce (packed as float64 on the
    device of their first tensor state, else on the process group's collective device); each
    ``"cat"`` state is gathered (concatenated in rank order); ``None``-reduced states are returned
    as they are. Without a process group, the local states. The metrics' own states are unchanged.

    Returns:
        One dict per metric, ``{state name: reduced value}`` (a host number reduced by ``"sum"``
        comes back as a 0-d float64 tensor).

    Raises:
        RuntimeError: under a process group, a tensor ``"sum"`` state that this rank never updated
            (its shape is unknown here, so the ranks could not agree on the packed size).
    """
    out: List[Dict[str, Any]] = [{} for _ in metrics]
    sums = []  # (metric index, state name, value)
    for i, metric in enumerate(metrics):
        for name, reduce in metric.reductions.items():
            value = getattr(metric, name)
            if reduce == "cat":
                out[i][name] = _gather_cat(value)
            elif reduce is None:
                out[i][name] = value
            else:
                sums.append((i, name, value))
    missing = [f"{type(metrics[i]).__name__}.{name}" for i, name, value in sums if value is None]
    if missing and is_distributed():
        raise RuntimeError(f"states {missing} were never updated on this rank; every rank needs at "
                           "least one batch")
    present = [(i, name, value) for i, name, value in sums if value is not None]
    for i, name, value in sums:
        if value is None:
            out[i][name] = None
    if not present:
        return out
    device = next((v.device for _, _, v in present if isinstance(v, torch.Tensor)), None)
    if device is None:
        device = collective_device()
    packed = all_reduce_sum(torch.cat([
        torch.as_tensor(v, dtype=torch.float64, device=device).reshape(-1) for _, _, v in present]))
    offset = 0
    for i, name, value in present:
        size = value.numel() if isinstance(value, torch.Tensor) else 1
        part = packed[offset:offset + size]
        offset += size
        out[i][name] = part.reshape(value.shape) if isinstance(value, torch.Tensor) else part[0]
    return out


def _copy(value: State) -> State:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, list):
        return list(value)
    return value


def _gather_cat(parts: List[torch.Tensor]) -> Optional[torch.Tensor]:
    local = torch.cat(parts) if parts else None
    if not is_distributed():
        return local
    gathered = all_gather_object(local.cpu() if local is not None else None)
    pieces = [p for p in gathered if p is not None]
    if not pieces:
        return None
    device = local.device if local is not None else None
    return torch.cat(pieces).to(device)


class PosteriorMetric(Metric):
    """A metric of q(z|x): ``update(batch)`` runs the encoder; ``update_posterior`` takes its output.

    Args:
        model: a :class:`~aggressive_vi.VAE` or a module with ``.encoder``/``.decoder``; ``None``
            when only :meth:`update_posterior` will be used.
        get_input: ``batch -> x``, how the model's input is taken from a loader batch (default: the
            model's own, ``VAE(..., get_input=...)``).
    """

    def __init__(self, model: Optional[nn.Module] = None, *, get_input: Optional[InputFn] = None) -> None:
        super().__init__()
        self.model = model
        self.get_input = get_input

    def _vae(self) -> VAE:
        if self.model is None:
            raise ValueError(f"{type(self).__name__}.update(batch) needs the model: pass "
                             f"{type(self).__name__}(model), or call update_posterior(mean, logvar)")
        return as_vae(self.model)

    def update(self, batch: Any) -> None:
        """Encode one loader batch (eval mode, no gradient; the model's modes are restored)."""
        vae = self._vae()
        fn = self.get_input if self.get_input is not None else vae.get_input
        x = move_to_device(fn(batch), model_device(vae))
        with evaluation_mode(vae):
            mean, logvar = vae.encode(x)
            self.update_posterior(mean, logvar, x)

    def update_posterior(self, mean: torch.Tensor, logvar: torch.Tensor, x: Any = None) -> None:
        """Add one batch's q(z|x): ``mean, logvar: [batch, latent_dim]`` (``x``: the batch's input,
        needed by metrics that run the decoder)."""
        raise NotImplementedError  # pragma: no cover


# ---------------------------------------------------------------------------- KL and ELBO
class KL(PosteriorMetric):
    """Mean KL(q(z|x) || N(0, I)) over the data, nats per example (closed form)."""

    kl_sum: torch.Tensor
    count: int

    def __init__(self, model: Optional[nn.Module] = None, *, get_input: Optional[InputFn] = None) -> None:
        super().__init__(model, get_input=get_input)
        self.add_state("kl_sum", torch.zeros((), dtype=torch.float64))
        self.add_state("count", 0)

    def update_posterior(self, mean: torch.Tensor, logvar: torch.Tensor, x: Any = None) -> None:
        self._accumulate("kl_sum", gaussian_kl_to_standard_normal(mean, logvar).sum())
        self.count += mean.shape[0]

    def compute(self) -> float:
        return self.compute_from(self.reduced())

    def compute_from(self, r: Dict[str, Any]) -> float:
        return float(r["kl_sum"]) / _count(self, r)


@dataclass(frozen=True)
class ELBOEstimate:
    """Data-set averages in nats per example: ``elbo = -(reconstruction + kl)``."""

    elbo: float
    reconstruction: float
    kl: float


class ELBO(PosteriorMetric):
    """Mean ELBO over the data with ``n_samples`` reparameterised draws per example (drawn at once;
    the decoder scores them a slice at a time, as the IW-NLL's ``max_rows="auto"`` does)."""

    kl_sum: torch.Tensor
    reconstruction_sum: torch.Tensor
    count: int

    def __init__(self, model: Optional[nn.Module] = None, *, n_samples: int = 1,
                 get_input: Optional[InputFn] = None) -> None:
        super().__init__(model, get_input=get_input)
        self.n_samples = positive_int("n_samples", n_samples)
        self._rows = RowBound("auto")  # the decoder's rows per call, as the IW-NLL's default
        self.add_state("kl_sum", torch.zeros((), dtype=torch.float64))
        self.add_state("reconstruction_sum", torch.zeros((), dtype=torch.float64))
        self.add_state("count", 0)

    def update_posterior(self, mean: torch.Tensor, logvar: torch.Tensor, x: Any = None) -> None:
        if x is None:
            raise ValueError("ELBO.update_posterior needs x (the decoder scores it); got None")
        vae = self._vae()
        z = vae.reparameterize(mean, logvar, self.n_samples)  # [batch, n_samples, latent_dim], drawn once
        log_px = self._rows.score(lambda chunk: vae.log_likelihood(x, chunk), z)  # [batch, n_samples]
        self._accumulate("kl_sum", gaussian_kl_to_standard_normal(at_least_fp32(mean), at_least_fp32(logvar)).sum())
        self._accumulate("reconstruction_sum", -log_px.double().mean(dim=1).sum())
        self.count += mean.shape[0]

    def compute(self) -> ELBOEstimate:
        return self.compute_from(self.reduced())

    def compute_from(self, r: Dict[str, Any]) -> ELBOEstimate:
        n = _count(self, r)
        kl, rec = float(r["kl_sum"]) / n, float(r["reconstruction_sum"]) / n
        return ELBOEstimate(-(rec + kl), rec, kl)


# ---------------------------------------------------------------------------- mutual information
def batch_mutual_information(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The paper's minibatch estimate of I_q(x; z), a scalar tensor in nats.

    ``I = E_x E_q(z|x)[log q(z|x) - log q(z)]`` where the aggregate posterior q(z) is the mixture of
    the batch's B posteriors, ``q(z) = (1/B) sum_j q(z|x_j)``, with one sample z per x. The first term
    is the exact negative entropy of each Gaussian. Equals ``E_x KL(q(z|x)||p) - KL(q(z)||p)`` in
    expectation; it is at most log B, so it depends on the batch size.

    Args:
        mean: ``[batch, latent_dim]``.
        logvar: ``[batch, latent_dim]``.
    """
    batch, latent_dim = mean.shape
    neg_entropy = (-0.5 * latent_dim * math.log(2 * math.pi) - 0.5 * (1 + logvar).sum(-1)).mean()
    z = VAE.reparameterize(mean, logvar, 1).transpose(0, 1)  # [1, batch, latent_dim]
    # log q(z_i | x_j) for every pair: [batch (i, the sample), batch (j, the component)]
    log_density = VAE.log_q_given(z.expand(batch, -1, -1), mean, logvar).t()
    log_qz = torch.logsumexp(log_density, dim=1) - math.log(batch)
    return neg_entropy - log_qz.mean()


@dataclass(frozen=True)
class MIEstimate:
    """An estimate of I_q(x; z) in nats with its standard error.

    Attributes:
        value: the estimate, nats.
        stderr: its standard error, nats (``nan`` when it cannot be estimated, e.g. one batch).
        estimator: ``"minibatch"`` (the paper's: each minibatch's mixture as q(z)) or ``"dataset"``
            (the whole data set's mixture, :class:`DatasetMutualInformation`).
        n_examples: examples seen (all ranks).
    """

    value: float
    stderr: float
    estimator: str
    n_examples: int

    def __float__(self) -> float:
        return self.value


class MutualInformation(PosteriorMetric):
    """The paper's minibatch estimator of I_q(x; z): :func:`batch_mutual_information` averaged over
    batches, weighted by their size.

    The aggregate posterior is each minibatch's mixture, so the estimate is at most log(batch size):
    compare values computed with the same batch size. Its standard error treats the batch estimates
    as independent draws: ``sqrt(weighted variance of the batch estimates / number of batches)``.
    """

    estimator = "minibatch"
    weighted_sum: torch.Tensor
    weighted_sq_sum: torch.Tensor
    count: int
    batches: int

    def __init__(self, model: Optional[nn.Module] = None, *, get_input: Optional[InputFn] = None) -> None:
        super().__init__(model, get_input=get_input)
        self.add_state("weighted_sum", torch.zeros((), dtype=torch.float64))  # sum_b B_b * I_b
        self.add_state("weighted_sq_sum", torch.zeros((), dtype=torch.float64))  # sum_b B_b * I_b^2
        self.add_state("count", 0)  # sum_b B_b
        self.add_state("batches", 0)

    def update_posterior(self, mean: torch.Tensor, logvar: torch.Tensor, x: Any = None) -> None:
        value = batch_mutual_information(mean, logvar).double()
        b = mean.shape[0]
        self._accumulate("weighted_sum", value * b)
        self._accumulate("weighted_sq_sum", value * value * b)
        self.count += b
        self.batches += 1

    def compute(self) -> MIEstimate:
        return self.compute_from(self.reduced())

    def compute_from(self, r: Dict[str, Any]) -> MIEstimate:
        n, batches = _count(self, r), float(r["batches"])
        mean = float(r["weighted_sum"]) / n
        var = max(float(r["weighted_sq_sum"]) / n - mean * mean, 0.0)
        stderr = math.sqrt(var / (batches - 1)) if batches > 1 else math.nan
        return MIEstimate(mean, stderr, self.estimator, int(n))


class DatasetMutualInformation(PosteriorMetric):
    """I_q(x; z) with the aggregate posterior of the whole data set: q(z) = (1/N) sum_j q(z|x_j).

    ``I = (1/N) sum_i [ -H(q(z|x_i)) - (1/S) sum_s log q(z_is) ]`` with ``S = n_draws`` samples
    ``z_is ~ q(z|x_i)`` per example; the entropy term is exact. Unlike the paper's minibatch
    estimator (:class:`MutualInformation`) it is bounded by log N rather than log(batch), does not
    depend on the batch size, and with several draws per example it is much less noisy. The
    posteriors of all N examples are kept (``[N, latent_dim]`` twice; gathered from every rank under
    ``torch.distributed``) and ``log q(z)`` is evaluated as two matrix products per chunk of
    ``[rows, N]`` log densities, at most ``chunk_elements`` of them, so memory stays bounded.

    The draws come from a generator seeded with ``seed`` (the same on every rank, and the same from
    one epoch to the next: the estimate moves only when the posteriors do). The standard error is
    ``std_i(term_i) / sqrt(N)`` over the per-example terms.

    Args:
        n_draws: z samples per example (S).
        seed: seed of the draws.
        chunk_elements: bound on the ``rows x N`` pairwise log densities of one chunk.
    """

    estimator = "dataset"
    means: List[torch.Tensor]
    logvars: List[torch.Tensor]

    def __init__(self, model: Optional[nn.Module] = None, *, n_draws: int = 10, seed: int = 0,
                 chunk_elements: int = 1 << 24, get_input: Optional[InputFn] = None) -> None:
        super().__init__(model, get_input=get_input)
        self.n_draws = positive_int("n_draws", n_draws)
        self.seed = int(seed)
        self.chunk_elements = positive_int("chunk_elements", chunk_elements)
        self.add_state("means", [], reduce="cat")  # [batch, latent_dim] per update
        self.add_state("logvars", [], reduce="cat")

    def update_posterior(self, mean: torch.Tensor, logvar: torch.Tensor, x: Any = None) -> None:
        self.means.append(mean.detach().double())
        self.logvars.append(logvar.detach().double())

    def compute(self) -> MIEstimate:
        return self.compute_from(self.reduced())

    def compute_from(self, r: Dict[str, Any]) -> MIEstimate:
        mean, logvar = r["means"], r["logvars"]
        if mean is None or mean.shape[0] < 1:
            raise ValueError("DatasetMutualInformation.compute(): no example was added; call update first")
        n, d = mean.shape
        generator = torch.Generator(device=mean.device).manual_seed(self.seed)
        eps = torch.randn((n, self.n_draws, d), generator=generator, dtype=mean.dtype, device=mean.device)
        z = (mean.unsqueeze(1) + (0.5 * logvar).exp().unsqueeze(1) * eps).reshape(n * self.n_draws, d)
        # log q(z_r | x_j) = -(z_r^2 . p_j - 2 z_r . m_j p_j + c_j) / 2 with p_j = exp(-logvar_j): two
        # matrix products per chunk of rows instead of a [rows, N, latent_dim] tensor
        precision = (-logvar).exp()  # [N, d]
        constant = (mean.pow(2) * precision + logvar).sum(-1) + d * math.log(2 * math.pi)  # [N]
        rows = max(1, self.chunk_elements // max(1, n))
        log_qz = torch.cat([
            torch.logsumexp(-0.5 * (chunk.pow(2) @ precision.t() - 2 * chunk @ (mean * precision).t()
                                    + constant), dim=1)  # [rows]: over the N components
            for chunk in z.split(rows)
        ]) - math.log(n)
        neg_entropy = -0.5 * d * math.log(2 * math.pi) - 0.5 * (1 + logvar).sum(-1)  # [N]
        terms = neg_entropy - log_qz.reshape(n, self.n_draws).mean(1)
        stderr = float(terms.std(unbiased=True)) / math.sqrt(n) if n > 1 else math.nan
        return MIEstimate(float(terms.mean()), stderr, self.estimator, int(n))


# ---------------------------------------------------------------------------- active units
@dataclass(frozen=True)
class ActiveUnitsResult:
    """Active latent units (Burda et al., 2016).

    Attributes:
        count: dimensions whose posterior-mean variance exceeds the threshold.
        variances: ``[latent_dim]`` unbiased variance over the data of E_q(z|x)[z_d].
        threshold: the threshold used.
    """

    count: int
    variances: torch.Tensor
    threshold: float

    def __int__(self) -> int:
        return self.count


class ActiveUnits(PosteriorMetric):
    """Count the latent dimensions with ``Var_x(E_q(z|x)[z_d]) > threshold`` (paper: 0.01)."""

    mean_sum: Optional[torch.Tensor]
    mean_sq_sum: Optional[torch.Tensor]
    count: int

    def __init__(self, model: Optional[nn.Module] = None, *, threshold: float = 0.01,
                 get_input: Optional[InputFn] = None) -> None:
        super().__init__(model, get_input=get_input)
        self.threshold = non_negative_float("threshold", threshold)
        self.add_state("mean_sum", None)  # [latent_dim], shaped by the first update
        self.add_state("mean_sq_sum", None)
        self.add_state("count", 0)

    def update_posterior(self, mean: torch.Tensor, logvar: torch.Tensor, x: Any = None) -> None:
        m = mean.detach().double()
        self._accumulate("mean_sum", m.sum(0))
        self._accumulate("mean_sq_sum", m.pow(2).sum(0))
        self.count += mean.shape[0]

    def compute(self) -> ActiveUnitsResult:
        return self.compute_from(self.reduced())

    def compute_from(self, r: Dict[str, Any]) -> ActiveUnitsResult:
        count = float(r["count"])
        if count < 2 or r["mean_sum"] is None:
            raise ValueError(f"active_units needs at least 2 examples; the loader gave {int(count)}")
        variances = ((r["mean_sq_sum"] - r["mean_sum"].pow(2) / count) / (count - 1)).clamp_min(0.0)
        return ActiveUnitsResult(int((variances > self.threshold).sum().item()),
                                 variances.float().cpu(), self.threshold)


# ---------------------------------------------------------------------------- IW-NLL
def iw_log_likelihood(
    model: nn.Module, x: Any, *, n_samples: int = 500, chunk_size: int = 100,
    max_rows: Union[int, str, None] = "auto",
) -> torch.Tensor:
    """Importance-weighted estimate of log p(x) for one batch: ``[batch]``, nats.

    ``log p(x) ~= logsumexp_k [log p(x, z_k) - log q(z_k|x)] - log K`` with ``z_k ~ q(z|x)``,
    K = ``n_samples``. All K samples are drawn at once (``[batch, K, latent_dim]``: small), then the
    decoder scores them ``chunk_size`` samples at a time, fewer when ``batch x samples`` would exceed
    ``max_rows`` (at least one sample per call: the batch itself is not split). How the work is split
    never changes the draws, so the estimate does not depend on ``chunk_size`` or ``max_rows`` (up to
    floating-point rounding). ``max_rows="auto"`` (default) picks the rows from the device
    (:func:`~aggressive_vi._impl.rows.rows_per_call`: 64 on the CPU, 512 on a GPU, the samples per
    call halved whenever a call runs out of device memory); the decoder's memory grows with the rows
    (a text decoder's logits are ``[rows, length, vocabulary]``). An int bound is kept as given, out
    of memory or not. A lower bound on log p(x) in expectation that tightens as K
    grows; exact for any K when q(z|x) is the true posterior. Does not change the model's mode or
    disable gradients: call inside :func:`evaluation_mode` (as :class:`IWNLL` does).
    """
    positive_int("n_samples", n_samples)
    return _iw_log_likelihood(as_vae(model), x, n_samples, RowBound(max_rows, chunk_size))


def _iw_log_likelihood(vae: Any, x: Any, n_samples: int, rows: RowBound) -> torch.Tensor:
    mean, logvar = vae.encode(x)
    z = vae.reparameterize(mean, logvar, n_samples)  # [batch, K, latent_dim], drawn once
    log_q = vae.log_q_given(z, mean, logvar)
    log_joint = rows.score(lambda chunk: vae.log_joint(x, chunk), z)
    return torch.logsumexp(log_joint - log_q, dim=1) - math.log(n_samples)


@dataclass(frozen=True)
class IWNLLResult:
    """Importance-weighted negative log-likelihood over a data set.

    Attributes:
        nll: mean of -log p(x) over examples, nats per example.
        n_examples: examples evaluated (all ranks together).
        n_tokens: the total of ``count_tokens`` over examples when it was given, else ``None``.
    """

    nll: float
    n_examples: int
    n_tokens: Optional[int] = None

    @property
    def perplexity(self) -> Optional[float]:
        """``exp(sum of NLL / n_tokens)`` (per-token perplexity), ``None`` without token counts."""
        if self.n_tokens is None:
            return None
        return math.exp(self.nll * self.n_examples / self.n_tokens)

    def __float__(self) -> float:
        return self.nll


class IWNLL(Metric):
    """Importance-weighted NLL (the paper's reported likelihood), nats per example.

    Args:
        model: the VAE.
        n_samples: importance samples per example (the paper uses 500).
        chunk_size: samples per decoder call; lower it to save memory.
        max_rows: bound on ``batch x samples`` rows per decoder call; ``"auto"`` (default) chooses it
            from the device and halves the samples per call when one runs out of device memory,
            ``None``: no bound (see :func:`iw_log_likelihood`). The estimate does not depend on it.
        count_tokens: optional ``x -> number of tokens in the batch``, for
            :attr:`IWNLLResult.perplexity` (for text: words plus end-of-sentence symbols). It
            receives the model's input ``x`` (what ``get_input`` takes from the loader batch, already
            on the model's device), not the batch itself, and returns an int or a tensor (summed).
        get_input: ``batch -> x`` (see :class:`PosteriorMetric`).
    """

    nll_sum: torch.Tensor
    tokens: torch.Tensor
    count: int

    def __init__(self, model: nn.Module, *, n_samples: int = 500, chunk_size: int = 100,
                 max_rows: Union[int, str, None] = "auto",
                 count_tokens: Optional[Callable[[Any], Union[int, torch.Tensor]]] = None,
                 get_input: Optional[InputFn] = None) -> None:
        super().__init__()
        self.model = model
        self.n_samples = positive_int("n_samples", n_samples)
        self.chunk_size = positive_int("chunk_size", chunk_size)
        self.max_rows = max_rows
        self._rows = RowBound(max_rows, chunk_size)  # checks max_rows; keeps what an OOM taught it
        self.count_tokens = count_tokens
        self.get_input = get_input
        self.add_state("nll_sum", torch.zeros((), dtype=torch.float64))
        self.add_state("count", 0)
        self.add_state("tokens", torch.zeros((), dtype=torch.float64))

    def update(self, batch: Any) -> None:
        vae = as_vae(self.model)
        fn = self.get_input if self.get_input is not None else vae.get_input
        x = move_to_device(fn(batch), model_device(vae))
        with evaluation_mode(vae):
            self.update_input(x)

    def update_input(self, x: Any) -> None:
        """Add one batch given the model's input ``x`` (already on the model's device)."""
        ll = _iw_log_likelihood(as_vae(self.model), x, self.n_samples, self._rows)
        self._accumulate("nll_sum", -ll.sum())
        self.count += ll.shape[0]
        if self.count_tokens is not None:
            self._accumulate("tokens", torch.as_tensor(self.count_tokens(x), dtype=torch.float64)
                             .sum().to(ll.device))

    def compute(self) -> IWNLLResult:
        return self.compute_from(self.reduced())

    def compute_from(self, r: Dict[str, Any]) -> IWNLLResult:
        n = _count(self, r)
        return IWNLLResult(nll=float(r["nll_sum"]) / n, n_examples=int(n),
                           n_tokens=int(round(float(r["tokens"]))) if self.count_tokens is not None else None)


# ---------------------------------------------------------------------------- the validation record
#: The two estimators of I_q(x; z): ``"minibatch"`` (the paper's) and ``"dataset"``.
MI_ESTIMATORS = ("minibatch", "dataset")

#: What :class:`ValidationMetrics` can estimate (all of them by default).
VALIDATION_TERMS = ("elbo", "kl", "mi", "au")


class _ExampleCount(PosteriorMetric):
    """Examples seen (all ranks): the collection's ``n_examples``, whatever its members."""

    count: int

    def __init__(self) -> None:
        super().__init__()
        self.add_state("count", 0)

    def update_posterior(self, mean: torch.Tensor, logvar: torch.Tensor, x: Any = None) -> None:
        self.count += mean.shape[0]

    def compute_from(self, r: Dict[str, Any]) -> int:
        return int(r["count"])


@dataclass(frozen=True)
class ValidationResult:
    """What :class:`ValidationMetrics` estimated, each ``None`` when its term was not asked for.

    Attributes:
        elbo: ELBO, reconstruction and KL, nats per example (term ``"elbo"``).
        kl: mean KL(q(z|x) || N(0, I)), nats per example (term ``"elbo"`` or ``"kl"``).
        mi: I_q(x; z) with its standard error, nats (term ``"mi"``).
        au: active units with the per-dimension variances (term ``"au"``).
        n_examples: examples seen, all ranks together.
    """

    elbo: Optional[ELBOEstimate]
    kl: Optional[float]
    mi: Optional[MIEstimate]
    au: Optional[ActiveUnitsResult]
    n_examples: int

    def record(self) -> Dict[str, Any]:
        """The ``val_*`` fields of :class:`~aggressive_vi.history.EpochRecord` that were estimated:
        ``val_elbo``, ``val_reconstruction``, ``val_kl``, ``val_mi``, ``val_mi_stderr`` (floats,
        nats; the standard error ``nan`` when it cannot be estimated) and ``val_au`` (an int)."""
        out: Dict[str, Any] = {}
        if self.elbo is not None:
            out.update(val_elbo=self.elbo.elbo, val_reconstruction=self.elbo.reconstruction)
        if self.kl is not None:
            out["val_kl"] = self.kl
        if self.mi is not None:
            out.update(val_mi=self.mi.value, val_mi_stderr=self.mi.stderr)
        if self.au is not None:
            out["val_au"] = self.au.count
        return out


class ValidationMetrics:
    """The per-epoch validation record, several metrics updated and computed as one.

    Every driver (the trainer, the Lightning callback, a user's loop) builds its ``val_*`` record
    with this one object, so the numbers mean the same everywhere: one encoder pass per batch feeds
    every member, and :meth:`compute` reduces all of their states over ranks together (one
    all-reduce, through :func:`reduce_states`).

    Members, by ``terms``:

    * ``"elbo"``: :class:`ELBO` with ``n_samples`` reparameterised draws per example (default one,
      the trainer's validation ELBO); gives ``val_elbo``, ``val_reconstruction`` and ``val_kl``.
    * ``"kl"``: :class:`KL`, the closed form (only when ``"elbo"``, which includes it, is not asked).
    * ``"mi"``: :class:`MutualInformation` (``mi_estimator="minibatch"``, the paper's) or
      :class:`DatasetMutualInformation` (``"dataset"``); gives ``val_mi`` and ``val_mi_stderr``.
    * ``"au"``: :class:`ActiveUnits` with ``au_threshold``; gives ``val_au``.

    The sampling members draw from torch's global generator in this order for each batch: the
    ELBO's draws, then the minibatch MI's.

    Args:
        model: the VAE (or a module with ``.encoder``/``.decoder``); ``None`` only when no member
            runs the decoder (no ``"elbo"``) and only :meth:`update_posterior` is used.
        au_threshold: variance threshold of the active-unit count (paper: 0.01).
        mi_estimator: ``"minibatch"`` or ``"dataset"`` (see :data:`MI_ESTIMATORS`).
        n_samples: z draws per example of the validation ELBO.
        terms: which of :data:`VALIDATION_TERMS` to estimate.

    >>> import torch
    >>> from aggressive_vi.metrics import ValidationMetrics
    >>> val = ValidationMetrics(terms=("kl", "mi", "au"))
    >>> val.update_posterior(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), torch.zeros(2, 2))
    >>> record = val.compute()
    >>> sorted(record)
    ['val_au', 'val_kl', 'val_mi', 'val_mi_stderr']
    >>> record["val_kl"], record["val_au"]   # KL(N(+-1, 1) || N(0, 1)) = 1/2 nat; one mean varies
    (0.5, 1)
    """

    def __init__(self, model: Optional[nn.Module] = None, *, au_threshold: float = 0.01,
                 mi_estimator: str = "minibatch", n_samples: int = 1,
                 terms: Iterable[str] = VALIDATION_TERMS) -> None:
        wanted = set(terms)
        unknown = wanted - set(VALIDATION_TERMS)
        if unknown:
            raise ValueError(f"terms must be among {VALIDATION_TERMS}; got unknown {sorted(unknown)}")
        if mi_estimator not in MI_ESTIMATORS:
            raise ValueError(f"mi_estimator must be one of {MI_ESTIMATORS}; got {mi_estimator!r}")
        if "elbo" in wanted and model is None:
            raise ValueError("ValidationMetrics(terms with 'elbo') needs the model (the decoder scores "
                             "x); got model=None")
        self.model = model
        self.au_threshold, self.mi_estimator, self.n_samples = au_threshold, mi_estimator, n_samples
        self.terms = tuple(t for t in VALIDATION_TERMS if t in wanted)
        self.members: Dict[str, PosteriorMetric] = {}  # in the order their draws are made
        if "elbo" in wanted:
            self.members["elbo"] = ELBO(model, n_samples=n_samples)
        elif "kl" in wanted:
            self.members["kl"] = KL()
        if "mi" in wanted:
            self.members["mi"] = (MutualInformation() if mi_estimator == "minibatch"
                                  else DatasetMutualInformation())
        if "au" in wanted:
            self.members["au"] = ActiveUnits(threshold=au_threshold)
        self.members["examples"] = _ExampleCount()

    def update(self, x: Any) -> None:
        """Add one batch of model input ``x`` (e.g. ``[batch, data_dim]``; moved to the model's
        device): one encoder pass in eval mode without gradient (the modes are restored), its
        ``q(z|x)`` given to every member."""
        if self.model is None:
            raise ValueError("ValidationMetrics.update(x) needs the model: pass ValidationMetrics(model), "
                             "or call update_posterior(mean, logvar, x)")
        vae = as_vae(self.model)
        x = move_to_device(x, model_device(vae))
        with evaluation_mode(vae):
            mean, logvar = vae.encode(x)
            self.update_posterior(mean, logvar, x)

    def update_posterior(self, mean: torch.Tensor, logvar: torch.Tensor, x: Any = None) -> None:
        """Add one batch's q(z|x): ``mean, logvar: [batch, latent_dim]``; ``x``, the batch's input,
        is needed with ``"elbo"`` (the decoder scores it). Call under ``torch.no_grad`` (as
        :meth:`update` does) unless gradients are wanted."""
        for member in self.members.values():
            member.update_posterior(mean, logvar, x)

    def results(self) -> ValidationResult:
        """Every member's estimate, from one reduction of all their states over ranks (a collective
        under a process group: call it on every rank)."""
        names = list(self.members)
        reduced = dict(zip(names, reduce_states([self.members[n] for n in names])))
        n_examples = self.members["examples"].compute_from(reduced["examples"])
        if n_examples <= 0:
            raise ValueError("ValidationMetrics.compute(): no example was added; call update first "
                             "(an empty loader?)")
        out = {n: self.members[n].compute_from(reduced[n]) for n in names if n != "examples"}
        elbo = out.get("elbo")
        return ValidationResult(elbo=elbo, kl=elbo.kl if elbo is not None else out.get("kl"),
                                mi=out.get("mi"), au=out.get("au"), n_examples=n_examples)

    def compute(self) -> Dict[str, Any]:
        """The record: ``{"val_elbo", "val_reconstruction", "val_kl", "val_mi", "val_mi_stderr",
        "val_au"}`` for the default terms (see :meth:`ValidationResult.record`), the same on every
        rank, ready for :class:`~aggressive_vi.history.EpochRecord` or a logger."""
        return self.results().record()

    def reset(self) -> None:
        """Every member back to its defaults (call at the start of each validation run)."""
        for member in self.members.values():
            member.reset()

    def state_dict(self) -> Dict[str, Dict[str, Any]]:
        """``{member name: its state_dict()}`` (names: the terms' members and ``"examples"``)."""
        return {name: member.state_dict() for name, member in self.members.items()}

    def load_state_dict(self, state: Dict[str, Dict[str, Any]],
                        device: Optional[torch.device] = None) -> None:
        """Restore :meth:`state_dict`.

        Raises:
            KeyError: a member is missing or unknown (the collection was built with other terms).
        """
        if set(state) != set(self.members):
            raise KeyError(f"ValidationMetrics.load_state_dict: expected members {sorted(self.members)}; "
                           f"got {sorted(state)}")
        for name, member in self.members.items():
            member.load_state_dict(state[name], device=device)

    def __repr__(self) -> str:
        return (f"ValidationMetrics(au_threshold={self.au_threshold:g}, mi_estimator={self.mi_estimator!r}, "
                f"n_samples={self.n_samples}, terms={self.terms})")


def validation_or_default(model: nn.Module, validation: Optional["ValidationMetrics"]) -> "ValidationMetrics":
    """``validation``, checked to be over ``model``, or ``ValidationMetrics(model)``.

    Raises:
        TypeError: not a :class:`ValidationMetrics`.
        ValueError: built over another model (or none).
    """
    if validation is None:
        return ValidationMetrics(model)
    if not isinstance(validation, ValidationMetrics):
        raise TypeError(f"validation must be an aggressive_vi.metrics.ValidationMetrics; got "
                        f"{type(validation).__name__}")
    own = as_vae(model)
    theirs = as_vae(validation.model) if validation.model is not None else None
    if theirs is None or theirs.encoder is not own.encoder or theirs.decoder is not own.decoder:
        raise ValueError("validation must be built over the model being trained: ValidationMetrics(model, ...); "
                         f"got one over {type(validation.model).__name__}")
    return validation


def _count(metric: Metric, reduced: Dict[str, Any]) -> float:
    n = float(reduced["count"])
    if n <= 0:
        raise ValueError(f"{type(metric).__name__}.compute(): no example was added; call update first "
                         "(an empty loader?)")
    return n
