"""The per-epoch record that ``AggressiveTrainer.fit`` returns (and shows callbacks as it grows)."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union, overload

__all__ = ["EpochRecord", "History"]


@dataclass
class EpochRecord:
    """What happened in one epoch. Losses are means over the epoch's decoder/joint steps, nats per
    example; ``val_*`` are computed on the validation loader after the epoch (``None`` without one).

    Attributes:
        epoch: 0-based index.
        steps: decoder updates taken in this epoch (one per training minibatch).
        loss: the training objective, ``reconstruction + kl_weight * kl`` (the weighted negative
            ELBO; with the model's ``kl_threshold``, its thresholded KL in place of ``kl``).
        reconstruction: -E_q[log p(x|z)].
        kl: KL(q(z|x) || p(z)) (the true KL, thresholded or not in the loss).
        kl_weight: the KL weight at the epoch's last step.
        aggressive: whether the epoch began in the aggressive phase.
        aggressive_steps: decoder updates in this epoch that were preceded by an inner loop.
        inner_steps_mean: encoder-only steps per aggressive decoder update (0 when none).
        val_mi, val_au, val_kl, val_elbo, val_reconstruction: validation estimates, the record of
            :class:`aggressive_vi.metrics.ValidationMetrics` (MI by the trainer's ``mi_estimator``,
            AU with its threshold, the ELBO with one z per example).
        val_mi_stderr: the standard error of ``val_mi``, nats.
        wall_time: seconds spent in the epoch, validation included.
        skipped_batches: decoder/joint updates skipped for a non-finite loss or gradient
            (``on_nonfinite="skip"``); their batches are left out of the epoch's means.
        skipped_inner_steps: encoder-only inner steps skipped for the same reason.
        left_aggressive_at: when the trainer left the aggressive phase during this epoch (or at its
            end), the number of decoder updates taken by then; ``None`` in every other epoch.
    """

    epoch: int
    steps: int
    loss: float
    reconstruction: float
    kl: float
    kl_weight: float
    aggressive: bool
    aggressive_steps: int
    inner_steps_mean: float
    val_mi: Optional[float] = None
    val_mi_stderr: Optional[float] = None
    val_au: Optional[int] = None
    val_kl: Optional[float] = None
    val_elbo: Optional[float] = None
    val_reconstruction: Optional[float] = None
    wall_time: float = 0.0
    skipped_batches: int = 0
    skipped_inner_steps: int = 0
    left_aggressive_at: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class History(Sequence[EpochRecord]):
    """A list of :class:`EpochRecord`, with column access and JSON export."""

    def __init__(self, records: Optional[List[EpochRecord]] = None) -> None:
        self.records: List[EpochRecord] = list(records or [])

    def append(self, record: EpochRecord) -> None:
        self.records.append(record)

    @overload
    def __getitem__(self, index: int) -> EpochRecord: ...

    @overload
    def __getitem__(self, index: slice) -> "History": ...

    def __getitem__(self, index: Union[int, slice]) -> Union[EpochRecord, "History"]:
        if isinstance(index, slice):
            return History(self.records[index])
        return self.records[index]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[EpochRecord]:
        return iter(self.records)

    def column(self, name: str) -> List[Any]:
        """One field over all epochs, e.g. ``history.column("val_mi")``."""
        valid = [f.name for f in fields(EpochRecord)]
        if name not in valid:
            raise KeyError(f"unknown column {name!r}; expected one of {valid}")
        return [getattr(r, name) for r in self.records]

    @property
    def left_aggressive_at(self) -> Optional[int]:
        """Decoder updates taken when training left the aggressive phase (``None``: it never did,
        or the run was basic from the start)."""
        for record in self.records:
            if record.left_aggressive_at is not None:
                return record.left_aggressive_at
        return None

    def to_dicts(self) -> List[Dict[str, Any]]:
        return [r.to_dict() for r in self.records]

    @classmethod
    def from_dicts(cls, rows: List[Dict[str, Any]]) -> "History":
        return cls([EpochRecord(**row) for row in rows])

    def state_dict(self) -> List[Dict[str, Any]]:
        """The records as plain dicts (what a checkpoint holds)."""
        return self.to_dicts()

    def load_state_dict(self, rows: List[Dict[str, Any]]) -> None:
        self.records = [EpochRecord(**row) for row in rows]

    def to_json(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Write the records as a JSON list (atomically: temporary file, then rename)."""
        tmp = f"{os.fspath(path)}.tmp"
        with open(tmp, "w") as fh:
            json.dump(self.to_dicts(), fh, indent=1)
        os.replace(tmp, path)

    def plot(self, path: Optional[Union[str, "os.PathLike[str]"]] = None, *, title: str = "") -> Any:
        """The paper's training-dynamics figure: I_q, E_x KL(q(z|x)||p(z)) and D_KL(q(z)||p(z)) on
        the validation set after every epoch, against decoder updates, with the switch out of the
        aggressive phase marked (needs matplotlib: ``pip install aggressive-vi[plots]``).

        ``D_KL(q(z)||p(z)) = E_x KL(q(z|x)||p(z)) - I_q`` (the identity the paper's figure uses), all
        in nats. Epochs without validation metrics are left out.

        Args:
            path: where to save the figure (PNG, PDF, ... by its extension); ``None``: don't save.
            title: the figure's title.

        Returns:
            The ``matplotlib.figure.Figure`` (one axes; its lines are labelled ``I_q``,
            ``E_x KL(q(z|x)||p(z))`` and ``KL(q(z)||p(z))``).

        Raises:
            ImportError: matplotlib is not installed.
            ValueError: no epoch has validation MI and KL (``fit`` had no ``val_loader``).
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("History.plot needs matplotlib: pip install matplotlib "
                              "(or aggressive-vi[plots])") from exc
        steps, mi, kl = [], [], []
        total = 0
        for r in self.records:
            total += r.steps
            if r.val_mi is not None and r.val_kl is not None:
                steps.append(total)
                mi.append(r.val_mi)
                kl.append(r.val_kl)
        if not steps:
            raise ValueError("History.plot needs validation MI and KL: none of the "
                             f"{len(self)} epochs has them (pass fit(..., val_loader=...))")
        fig = Figure(figsize=(6.0, 3.6), constrained_layout=True)
        ax = fig.add_subplot()
        ax.plot(steps, mi, marker="o", label="I_q")
        ax.plot(steps, kl, marker="s", label="E_x KL(q(z|x)||p(z))")
        ax.plot(steps, [k - m for k, m in zip(kl, mi)], marker="^", label="KL(q(z)||p(z))")
        switch = self.left_aggressive_at
        if switch is not None:
            ax.axvline(switch, color="grey", linestyle="--", label="left the aggressive phase")
        ax.set_xlabel("decoder updates")
        ax.set_ylabel("nats")
        if title:
            ax.set_title(title)
        ax.legend(fontsize="small")
        if path is not None:
            fig.savefig(os.fspath(path), dpi=120)
        return fig

    def __repr__(self) -> str:
        return f"History({len(self)} epochs)"
