"""The paper's gradient clipping in aggressive steps, for our side of the comparison (an option).

In the paper's ``text.py`` every update back-propagates the loss into both networks and clips the
*joint* gradient norm at 5 before stepping one of them: in the inner loop the encoder's step is
scaled by ``5 / |(g_enc, g_dec)|`` when that joint norm exceeds 5, and in the decoder step the
decoder's by the same factor. :class:`aggressive_vi.AggressiveTrainer` does the same by default
(``clip_scope="joint"``); with ``clip_scope="network"`` it computes only the updated network's
gradient and clips that network's norm, so its steps are larger whenever the other network's
gradient is large. A :class:`~benchmarks.parity.spec.RunSpec`'s ``ours_clip``:

* ``"network"``: ``AggressiveTrainer(clip_scope="network")``.

* ``"inner-joint"``: :func:`joint_clip_backward`, passed as the public ``Engine(backward=...)`` hook:
  in inner steps it back-propagates into both networks, scales the encoder's gradient by the joint
  clipping factor and drops the decoder's (the trainer's own clip of the encoder norm is then a
  no-op). Decoder steps clip per network (``clip_scope="network"``: the decoder step runs the encoder
  without gradient, so its joint norm cannot be formed from the hook).
* ``"joint"``: the library's default ``AggressiveTrainer(clip_scope="joint")``: inner and
  decoder steps compute both networks' gradients, clip their joint norm and step one network.
  (The runs in ``benchmarks/results/parity/*clip-joint*`` were made with this harness's earlier
  subclass that overrode the trainer's steps with the same arithmetic; ``tests/test_parity.py``
  checks the option against that arithmetic written out.)
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

import torch
from torch import nn


__all__ = ["CLIP_MODES", "joint_clip_factor", "joint_clip_backward"]

#: ``RunSpec.ours_clip`` values: the paper's rule in both (the library's default), the updated
#: network's norm, the paper's in inner steps only.
CLIP_MODES = ("joint", "network", "inner-joint")


def joint_clip_factor(norms: Sequence[float], max_norm: float) -> float:
    """The factor ``torch.nn.utils.clip_grad_norm_`` applies for gradients whose per-tensor norms are
    ``norms``: ``min(1, max_norm / (total + 1e-6))`` with ``total`` their Euclidean norm."""
    if max_norm <= 0:
        raise ValueError(f"max_norm must be positive, got {max_norm}")
    total = float(torch.linalg.vector_norm(torch.tensor([float(n) for n in norms], dtype=torch.float64)))
    return min(1.0, max_norm / (total + 1e-6))


def joint_clip_backward(model: nn.Module, max_norm: float) -> Callable[..., None]:
    """A ``backward(loss, inputs=None)`` for ``Engine(backward=...)`` that clips inner
    steps as the paper does: with ``inputs`` (the encoder's parameters, an inner step) the gradient of
    every parameter of ``model`` is computed, the joint norm clipped at ``max_norm``, and all but the
    ``inputs``' gradients dropped; without ``inputs`` it is plain ``torch.autograd.backward``."""
    params = [p for p in model.parameters() if p.requires_grad]

    def backward(loss: torch.Tensor, inputs: Optional[Sequence[torch.Tensor]] = None) -> None:
        if inputs is None:
            torch.autograd.backward(loss)
            return
        keep = {id(p) for p in inputs}
        for p in params:
            p.grad = None
        torch.autograd.backward(loss)
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        for p in params:
            if id(p) not in keep:
                p.grad = None

    return backward
