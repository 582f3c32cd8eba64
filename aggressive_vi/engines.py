"""Engines: how a loss becomes an applied update.

The aggressive step (:class:`~aggressive_vi.AggressiveStep`) decides *what* to update (which network,
on which minibatch, with which KL weight and clipping rule); an engine decides *how*: the autocast
context of the forward pass, the backward pass (loss scaling under fp16), unscaling, clipping, the
finiteness check and the optimiser step, applied or skipped. Like ``torch.amp.GradScaler``, an
engine is a small object with a few verbs and its own ``state_dict``:

* :meth:`Engine.autocast`: the context of a training forward pass;
* :meth:`Engine.apply`: back-propagate a loss, clip, check and step, returning whether it was applied;
* :meth:`Engine.networks`: the views of the model each phase runs (DDP wrappers where there are
  several processes, :class:`~aggressive_vi.distributed.TrainingNetworks`).

:class:`Engine` is plain PyTorch (fp32, bf16 or fp16; any ``backward`` such as Fabric's, see
:func:`aggressive_vi.lightning.fabric_trainer`; an experimental CUDA-graph inner step). The Lightning
callback brings its own engine (Lightning's precision plugin, ``manual_backward`` and strategy).

Implementation choices that never change results are made here, not by the user: an inner step's
"applied" flag stays on the device where the optimiser allows it (one host sync per window of the
catch-up test; see :mod:`aggressive_vi._impl.gate`), and is read on the host on the CPU, where a read
costs nothing.
"""
from __future__ import annotations

from typing import Any, Callable, ContextManager, Dict, Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

import torch
from torch import nn

from ._impl import captured
from ._impl.checks import is_callable, one_of
from ._impl.gate import GatedStep, finite_flag
from ._impl.loaders import model_device
from ._impl.precision import PRECISIONS, Precision
from .distributed import TrainingNetworks, check_collective_device, is_distributed

__all__ = ["Engine", "UpdateEngine", "PHASES"]

#: The kinds of update: an encoder-only catch-up step, the decoder step, a joint (basic) step.
PHASES = ("inner", "decoder", "joint")

Flag = Union[bool, torch.Tensor]


@runtime_checkable
class UpdateEngine(Protocol):
    """What :class:`~aggressive_vi.AggressiveStep` needs from an engine."""

    captures_inner: bool

    def networks(self, model: nn.Module, enc_opt: torch.optim.Optimizer,
                 dec_opt: torch.optim.Optimizer) -> TrainingNetworks:
        """Bind to the model and its optimisers (once); the views each phase runs."""

    def capture(self, body: Callable[[Any], Any], enc_opt: torch.optim.Optimizer) -> Callable[[Any], Any]:
        """The inner step's runner for ``body`` (``body`` itself unless ``captures_inner``)."""

    def autocast(self) -> ContextManager[Any]:
        """The context of a training forward pass."""

    def apply(self, loss: torch.Tensor, *, params: Sequence[torch.Tensor],
              optimizers: Sequence[torch.optim.Optimizer], unscale: Sequence[torch.optim.Optimizer],
              max_norm: Optional[float], phase: str, allowed: Optional[torch.Tensor] = None) -> Tuple[Flag, Flag]:
        """Back-propagate ``loss.mean()`` (``loss``: ``[batch]``, nats) into ``params``, clip their joint
        norm to ``max_norm``, and step ``optimizers`` if loss and gradients are finite (and ``allowed``).

        ``unscale``: optimisers whose gradients are computed (and unscaled) for the norm but not
        stepped. Returns ``(applied, error)``; ``error`` is false for a routine skip (a grad scaler's
        overflow). For ``phase="inner"`` the flags may be 0-d bool tensors left on the device."""

    def state_dict(self) -> Dict[str, Any]: ...

    def load_state_dict(self, state: Optional[Dict[str, Any]]) -> None: ...


class Engine:
    """Plain PyTorch updates.

    Args:
        precision: ``"fp32"`` (default), ``"bf16"`` (autocast around the training forward passes; z,
            log q and the KL stay float32) or ``"fp16"`` (autocast and a ``GradScaler`` per phase, saved
            in checkpoints; an overflow skips the step as routine). Validation estimates are never
            autocast. See :mod:`aggressive_vi._impl.precision`.
        backward: ``backward(loss)`` / ``backward(loss, inputs=params)`` (default
            :func:`torch.autograd.backward`), e.g. ``fabric.backward``.
        cuda_graph: experimental, not yet run on a GPU: each inner step replays a CUDA graph of the
            whole encoder update (single GPU; the encoder's optimiser SGD or built with
            ``capturable=True``; not with fp16). See :mod:`aggressive_vi._impl.captured`.
        ddp: under an initialised ``torch.distributed`` process group, train through separate encoder
            and decoder ``DistributedDataParallel`` wrappers (``None``: whenever there are several
            processes). See :mod:`aggressive_vi.distributed`.

    Raises:
        ValueError: a combination that cannot work (``backward`` with fp16, whose loss scaling would
            go unchecked by a custom backward; ``cuda_graph`` with fp16), named with what to do.
    """

    def __init__(self, precision: str = "fp32", *, backward: Optional[Callable[..., Any]] = None,
                 cuda_graph: bool = False, ddp: Optional[bool] = None) -> None:
        self.precision_name = one_of("precision", precision, PRECISIONS)
        if backward is not None and self.precision_name == "fp16":
            raise ValueError("backward= with precision='fp16': the engine would scale the loss before your "
                             "backward, which may scale it again (e.g. Fabric's precision plugin); let one of "
                             "them scale: precision='fp32' with a backward that scales, or no backward")
        if cuda_graph and self.precision_name == "fp16":
            raise ValueError("cuda_graph=True does not support precision='fp16' yet (the grad scaler's "
                             "bookkeeping runs on the host); use precision='bf16' or 'fp32'")
        self.backward: Callable[..., Any] = is_callable(
            "backward", backward if backward is not None else torch.autograd.backward,
            "backward(loss, inputs=None)")
        self.captures_inner = bool(cuda_graph)
        self.ddp = ddp
        self._precision: Optional[Precision] = None
        self._gates: Dict[int, GatedStep] = {}
        self._bound: Optional[nn.Module] = None
        self._graphs: Any = None  # cuda_graph=True: the graphs on the model's device, made when bound
        #: the captured inner step (``cuda_graph=True``, once bound): its ``captures``, ``replays`` and
        #: ``eager_steps`` counters say what ran
        self.captured: Optional[captured.CapturedStep] = None

    def __repr__(self) -> str:
        return f"Engine(precision={self.precision_name!r}, cuda_graph={self.captures_inner})"

    def networks(self, model: nn.Module, enc_opt: torch.optim.Optimizer,
                 dec_opt: torch.optim.Optimizer) -> TrainingNetworks:
        """Bind to ``model`` (an engine serves one model) and return the views each phase runs.

        Raises:
            ValueError: the engine is bound to another model already, or ``cuda_graph=True`` where it
                cannot work (not on a CUDA device, under ``torch.distributed``, an optimiser whose step
                is not capturable).
        """
        if self._bound is not None and self._bound is not model:
            raise ValueError("this Engine already serves another model; give each trainer its own Engine()")
        self._bound = model
        device = model_device(model)
        check_collective_device(device)  # NCCL: the model on the current device
        self._precision = Precision(self.precision_name, device.type if device is not None else "cpu")
        self._gates = {id(opt): GatedStep(opt, name) for opt, name in ((enc_opt, "enc_opt"), (dec_opt, "dec_opt"))}
        if self.captures_inner:
            if is_distributed():
                raise ValueError("Engine(cuda_graph=True) is single-GPU for now; under torch.distributed use "
                                 "cuda_graph=False")
            captured.check_capturable_optimizer(enc_opt, "enc_opt")
            self._graphs = captured.graphs_for(device if device is not None else torch.device("cpu"))  # refuses non-CUDA
            self._gates[id(enc_opt)].mode = "window"  # gate on the device, never on the host, in the graph
        return TrainingNetworks(model, self.ddp)

    def capture(self, body: Callable[[Any], Any], enc_opt: torch.optim.Optimizer) -> Callable[[Any], Any]:
        """The inner step's runner: ``body`` itself, or with ``cuda_graph=True`` a graph-replayed
        :class:`~aggressive_vi._impl.captured.CapturedStep` of it on the graphs :meth:`networks` made
        for the model's device. ``body`` returns ``(summed loss, examples, applied, error)``; warm-up
        steps count only when applied."""
        if not self.captures_inner:
            return body
        if self._graphs is None:
            raise RuntimeError("the engine is not bound to a model yet (AggressiveStep binds it)")
        self.captured = captured.CapturedStep(body, hyperparameters=lambda: captured.hyperparameters_of(enc_opt),
                                              graphs=self._graphs, applied=lambda out: bool(out[2]))
        return self.captured

    @property
    def precision(self) -> Precision:
        if self._precision is None:
            raise RuntimeError("the engine is not bound to a model yet (AggressiveStep binds it)")
        return self._precision

    def autocast(self) -> ContextManager[Any]:
        return self.precision.autocast(cache_enabled=not self.captures_inner)

    def apply(self, loss: torch.Tensor, *, params: Sequence[torch.Tensor],
              optimizers: Sequence[torch.optim.Optimizer], unscale: Sequence[torch.optim.Optimizer] = (),
              max_norm: Optional[float], phase: str, allowed: Optional[torch.Tensor] = None) -> Tuple[Flag, Flag]:
        """See :meth:`UpdateEngine.apply`. ``phase="inner"``: no host read (the flags stay on the
        device; the step is gated there); otherwise one host read."""
        scaler = self.precision.scaler("encoder" if phase == "inner" else "decoder")
        mean = loss.mean()
        scaled = scaler.scale(mean) if scaler is not None else mean
        if phase == "inner":
            self.backward(scaled, inputs=list(params))
        else:
            self.backward(scaled)
        if scaler is not None:
            for opt in (*optimizers, *unscale):
                scaler.unscale_(opt)
        finite = finite_flag(loss, params, max_norm)
        if phase == "inner":
            ok = finite & allowed if allowed is not None else finite
            for opt in optimizers:
                self._gates[id(opt)](ok)
            error = ~finite if scaler is None else torch.zeros_like(finite)  # an overflow is routine
            if scaler is not None:
                scaler.update()
            return ok, error
        applied = bool(finite)  # the step's one host read
        if applied:
            for opt in optimizers:
                opt.step()
        if scaler is not None:
            scaler.update()
        return applied, (not applied) and scaler is None

    def state_dict(self) -> Dict[str, Any]:
        """The fp16 grad scalers' states (``{}`` otherwise)."""
        return self.precision.state_dict()

    def load_state_dict(self, state: Optional[Dict[str, Any]]) -> None:
        self.precision.load_state_dict(state)
