"""The opt-in captured inner step: one CUDA graph per input shape replays the whole encoder update.

``AggressiveTrainer(..., engine=Engine(cuda_graph=True))`` (single GPU; refused under ``torch.distributed``
and on other devices) runs each inner step as a replay of a CUDA graph holding the forward pass, the
backward pass into the encoder's parameters, clipping, the finiteness flag and the gated optimiser
step (:mod:`aggressive_vi._impl.gate`), so that the host only enqueues one graph launch per step and
reads the window's sums once per window.

What it needs, and how this module provides it:

* **Static shapes.** A graph replays fixed shapes; :class:`CapturedStep` keeps one graph per
  distinct input structure (shapes and dtypes of its tensors), all sharing one memory pool, up to
  ``max_graphs``; further shapes run eagerly (a warning says so once). Text needs its batches padded
  to a few widths (``examples/text``: ``--bucket-widths``) and ``drop_last=True``.
* **Static buffers.** Each graph reads its input from buffers the batch is copied into
  (``copy_(..., non_blocking=True)``); the KL weight is a 0-d tensor filled before each update; the
  outputs (summed loss, applied and error flags) are consumed by the loop's device accumulators before
  the next replay.
* **Warm-up.** The first ``warmup`` steps of each shape run eagerly on a side stream (they are real
  inner steps: the optimiser's state is created there), then the step is captured and replayed.
* **Optimisers.** Their step must be capturable: ``capturable=True`` (Adam, AdamW: PyTorch refuses
  their capture otherwise, also when fused) or SGD. A change of a param group's ``lr`` (e.g. :class:`~aggressive_vi.LRDecayOnPlateau`) drops the
  graphs, which are captured again with the new value.
* **No host reads inside.** A model whose forward reads a tensor on the host (``bool(t)``,
  ``.item()``) cannot be captured: the error says so and names ``Engine(cuda_graph=False)``.

fp16 loss scaling is not supported with the captured step yet (the scaler's bookkeeping runs on the
host); bf16 autocast is.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Hashable, List, Optional, Tuple

import torch

__all__ = ["CapturedStep", "check_capturable_optimizer", "EagerGraphs", "CudaGraphs",
           "graphs_for", "hyperparameters_of", "input_key", "static_copy", "fill_static"]



def check_capturable_optimizer(optimizer: torch.optim.Optimizer, name: str) -> None:
    """Refuse an optimiser whose step reads the host (e.g. Adam's CPU step counters)."""
    defaults = optimizer.defaults
    if isinstance(optimizer, torch.optim.SGD) or defaults.get("capturable"):
        return  # Adam and AdamW refuse capture without capturable=True, fused or not
    raise ValueError(
        f"{name} must have a capturable step for Engine(cuda_graph=True): build it with "
        "capturable=True (Adam, AdamW; with fused=True too if you like), or use torch.optim.SGD; got "
        f"{type(optimizer).__name__}(fused={defaults.get('fused')}, capturable={defaults.get('capturable')})")


def input_key(x: Any) -> Hashable:
    """The structure of a model input: nested tuple of ``(shape, dtype, device)`` per tensor.

    Raises:
        TypeError: a leaf that is not a tensor (a graph cannot take it as an input).
    """
    if isinstance(x, torch.Tensor):
        return ("T", tuple(x.shape), x.dtype, str(x.device))
    if isinstance(x, (tuple, list)):
        return (type(x).__name__,) + tuple(input_key(v) for v in x)
    if isinstance(x, dict):
        return ("dict",) + tuple((k, input_key(v)) for k, v in sorted(x.items()))
    raise TypeError(f"Engine(cuda_graph=True) needs model inputs made of tensors (also in tuples, "
                    f"lists and dicts); got {type(x).__name__}")


def static_copy(x: Any) -> Any:
    """A structure like ``x`` of fresh tensors holding the same values (the static buffers)."""
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, (tuple, list)):
        return type(x)(static_copy(v) for v in x)
    return {k: static_copy(v) for k, v in x.items()}


def fill_static(static: Any, x: Any) -> None:
    """Copy ``x`` into the static buffers ``static`` (same structure; asynchronous where it can be)."""
    if isinstance(static, torch.Tensor):
        static.copy_(x, non_blocking=True)
    elif isinstance(static, (tuple, list)):
        for s, v in zip(static, x):
            fill_static(s, v)
    else:
        for k in static:
            fill_static(static[k], x[k])


class EagerGraphs:
    """A stand-in for :class:`CudaGraphs` that "captures" a function by keeping it and "replays"
    it by calling it again on the same static buffers: what a graph does, minus the speed. Used
    on the CPU to test everything around the capture."""

    def warm(self, fn: Callable[[], Any]) -> Any:
        return fn()

    def capture(self, fn: Callable[[], Any]) -> Tuple[Callable[[], None], Any]:
        outputs: List[Any] = [None]

        def replay() -> None:
            outputs[0] = fn()

        return replay, outputs


class CudaGraphs:
    """Warm-up on a side stream and capture into graphs that share one memory pool, on ``device``
    (the model's, which need not be the current one: ``cuda:1`` without ``torch.cuda.set_device``).

    The capture is thread-local (``capture_error_mode="thread_local"``): another thread's CUDA calls
    during it, e.g. a ``DataLoader``'s pin-memory thread, do not invalidate it."""

    def __init__(self, device: Optional[torch.device] = None) -> None:
        self.device = device
        with torch.cuda.device(device):
            self.pool = torch.cuda.graph_pool_handle()

    def warm(self, fn: Callable[[], Any]) -> Any:
        with torch.cuda.device(self.device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = fn()
            torch.cuda.current_stream().wait_stream(side)
        return out

    def capture(self, fn: Callable[[], Any]) -> Tuple[Callable[[], None], Any]:
        with torch.cuda.device(self.device):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
                out = fn()
        return graph.replay, [out]


def graphs_for(device: torch.device) -> Any:
    """The graph implementation for ``device``: :class:`CudaGraphs` on CUDA.

    Raises:
        ValueError: any other device (CUDA graphs exist only there).
    """
    if device.type != "cuda":
        raise ValueError(f"Engine(cuda_graph=True) needs the model on a CUDA device; got {device}. "
                         "Use Engine(cuda_graph=False) (the default) elsewhere")
    return CudaGraphs(device)


def hyperparameters_of(optimizer: torch.optim.Optimizer) -> Hashable:
    """What a captured step bakes in of ``optimizer``: the host values of every param group (lr,
    betas, ...) and the identity of every state tensor (``optimizer.load_state_dict``, e.g. a second
    ``fit(resume_from=...)`` in one process, replaces them: a graph holding the old ones would update
    orphans)."""
    plain = (int, float, bool, str, type(None))
    groups = tuple(tuple(sorted((k, v if isinstance(v, plain) else tuple(v) if isinstance(v, tuple) else "tensor")
                                for k, v in group.items() if k != "params"))
                   for group in optimizer.param_groups)
    state = tuple(id(v) for entry in optimizer.state.values() for v in entry.values() if isinstance(v, torch.Tensor))
    return groups, state


class CapturedStep:
    """``step(x)``: the encoder update ``body(static_x)`` as a replayed graph for ``x``'s shape.

    Args:
        body: runs one update on its (static) input and returns its outputs (tensors that the
            caller consumes before the next call). It must read nothing from the host, and should
            set the gradients to ``None`` first (``zero_grad(set_to_none=True)``): at capture this
            makes the graph produce the gradients instead of accumulating into them.
        hyperparameters: a host value whose change invalidates the graphs (e.g. the lrs).
        graphs: :class:`CudaGraphs` (default) or :class:`EagerGraphs`.
        warmup: applied eager steps per shape before its capture (3: cuDNN and cuBLAS pick their
            algorithms, the optimiser creates its state).
        max_graphs: shapes with a graph of their own; further ones run eagerly.
        applied: ``applied(outputs) -> bool``, whether a warm-up step was applied (read on the host,
            during warm-up only): a refused one (a NaN at the first inner steps) does not count, so
            the optimiser's state is never created inside a capture. Default: every step counts.

    Attributes:
        captures: graphs captured so far; ``replays`` and ``eager_steps`` count the steps.
    """

    #: recaptures for changed hyperparameters after which a warning says what they cost
    FREQUENT_RECAPTURES = 4

    def __init__(self, body: Callable[[Any], Any], *,
                 hyperparameters: Callable[[], Hashable], graphs: Optional[Any] = None,
                 warmup: int = 3, max_graphs: int = 8,
                 applied: Optional[Callable[[Any], bool]] = None) -> None:
        self.body = body
        self.hyperparameters = hyperparameters
        self.graphs = graphs if graphs is not None else CudaGraphs()
        self.warmup, self.max_graphs = warmup, max_graphs
        self.applied = applied
        self._shapes: Dict[Hashable, Dict[str, Any]] = {}
        self._hyper: Optional[Hashable] = None
        self.captures = self.replays = self.eager_steps = self.recaptures = 0
        self._warned = self._warned_recaptures = False

    def reset(self) -> None:
        """Drop every graph (the next steps warm up and capture again)."""
        self._shapes.clear()

    def __call__(self, x: Any) -> Any:
        hyper = self.hyperparameters()
        if hyper != self._hyper:
            if self._shapes and any(e["replay"] is not None for e in self._shapes.values()):
                self.recaptures += 1
                if self.recaptures >= self.FREQUENT_RECAPTURES and not self._warned_recaptures:
                    self._warned_recaptures = True
                    warnings.warn(f"Engine(cuda_graph=True): the encoder optimiser's hyperparameters or state "
                                  f"changed {self.recaptures} times, and every change drops the graphs and "
                                  "captures them again (warm-up steps included); a learning rate changed at "
                                  "every update makes the captured step slower than the eager one: keep it "
                                  "constant within an epoch, or use Engine(cuda_graph=False)", stacklevel=3)
            self.reset()
            self._hyper = hyper
        key = input_key(x)
        entry = self._shapes.get(key)
        if entry is None:
            if len(self._shapes) >= self.max_graphs:
                if not self._warned:
                    self._warned = True
                    warnings.warn(f"Engine(cuda_graph=True): more than {self.max_graphs} input shapes; "
                                  "further shapes run eagerly (pad batches to a few widths, and use "
                                  "drop_last=True)", stacklevel=3)
                self.eager_steps += 1
                return self.body(x)
            entry = self._shapes[key] = {"static": static_copy(x), "warm": 0, "replay": None, "out": None}
        else:
            fill_static(entry["static"], x)
        if entry["replay"] is None and entry["warm"] < self.warmup:
            self.eager_steps += 1
            out = self.graphs.warm(lambda: self.body(entry["static"]))
            if self.applied is None or self.applied(out):  # a refused step creates no optimiser state
                entry["warm"] += 1
            return out
        if entry["replay"] is None:
            try:
                entry["replay"], entry["out"] = self.graphs.capture(lambda: self.body(entry["static"]))
            except Exception as exc:
                raise RuntimeError(
                    "Engine(cuda_graph=True) could not capture the encoder step; the model's forward and "
                    "the optimiser's step must not read tensors on the host (bool(t), t.item(), "
                    "printing) nor change shapes. Use Engine(cuda_graph=False). The capture failed with: "
                    f"{type(exc).__name__}: {exc}") from exc
            self.captures += 1
        entry["replay"]()
        self.replays += 1
        return entry["out"][0]
