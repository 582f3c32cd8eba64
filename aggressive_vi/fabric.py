"""``AggressiveTrainer`` under Lightning Fabric: :func:`fabric_trainer` and :func:`fabric_autocast`.

Fabric is duck-typed here (no import of Lightning): pass a ``lightning.fabric.Fabric``. See
docs/lightning.md.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .engines import Engine

if TYPE_CHECKING:
    from .trainer import AggressiveTrainer

__all__ = ["fabric_trainer", "fabric_autocast"]


def fabric_trainer(fabric: Any, model: nn.Module, enc_opt: torch.optim.Optimizer,
                   dec_opt: torch.optim.Optimizer, **options: Any) -> "AggressiveTrainer":
    """An :class:`~aggressive_vi.AggressiveTrainer` whose steps go through a ``lightning.fabric.Fabric``.

    The model is moved to ``fabric.device``; the optimisers are set up with
    ``fabric.setup_optimizers`` (every step goes through Fabric's strategy and precision plugin);
    ``backward=fabric.backward`` (loss scaling); the model itself is not wrapped by Fabric: under a
    multi-process strategy the trainer builds its own encoder and decoder DDP wrappers over Fabric's
    process group (call ``fabric.launch()`` first). Run ``fit`` inside :func:`fabric_autocast` so that
    the precision's autocast covers every forward pass, the inner loop's included::

        fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp", precision="bf16-mixed")
        fabric.launch()
        trainer = fabric_trainer(fabric, vae, enc_opt, dec_opt, stopping=MIPlateau())
        with fabric_autocast(fabric):
            trainer.fit(train_loader, val_loader=val_loader, epochs=10)

    Args:
        options: keyword arguments of ``AggressiveTrainer`` (not ``engine``).

    Raises:
        ValueError: a precision with a gradient scaler (``"16-mixed"``): the trainer clips and checks
            gradients before the optimiser step, where a scaler's are still scaled (use
            ``"bf16-mixed"``, or ``AggressiveVI`` under the Lightning ``Trainer``, which clips after
            unscaling); or ``engine`` among ``options``.
    """
    from .trainer import AggressiveTrainer

    if "engine" in options:
        raise ValueError("fabric_trainer sets engine=Engine(backward=fabric.backward) itself; got engine= in options")
    precision: Any = getattr(getattr(fabric, "strategy", None), "precision", None)
    if getattr(precision, "scaler", None) is not None:
        raise ValueError(
            f"fabric_trainer does not support a precision with a gradient scaler (got "
            f"{type(precision).__name__} with {type(precision.scaler).__name__}): AggressiveTrainer clips and "
            "checks gradients before the step, while they are still scaled; use precision='bf16-mixed' or "
            "'32-true'")
    model.to(fabric.device)
    enc_opt, dec_opt = fabric.setup_optimizers(enc_opt, dec_opt)
    return AggressiveTrainer(model, enc_opt, dec_opt, engine=Engine(backward=fabric.backward), **options)


def fabric_autocast(fabric: Any) -> Any:
    """The context to run ``AggressiveTrainer.fit`` in under ``fabric``'s precision.

    For a mixed precision this is ``torch.autocast`` with Fabric's device and dtype but
    ``cache_enabled=False``: ``fabric.autocast()`` caches the low-precision copies of the weights until
    the context exits, which is right around one forward pass but wrong around a whole ``fit`` (every
    forward would reuse the weights of the first while the optimisers update the fp32 ones; measured:
    the model stops changing and its fp32 weights diverge). Lightning's ``Trainer`` disables the cache
    the same way. Any other precision: ``fabric.autocast()`` itself.
    """
    precision = fabric.strategy.precision
    if type(precision).__name__ == "MixedPrecision":
        dtype = torch.bfloat16 if precision.precision == "bf16-mixed" else torch.float16
        return torch.autocast(fabric.device.type, dtype=dtype, cache_enabled=False)
    return fabric.autocast()
