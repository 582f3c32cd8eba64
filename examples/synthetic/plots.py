"""Figures of the synthetic study (matplotlib is an optional extra: ``pip install matplotlib``).

* :func:`plot_posterior_mean_space`: the paper's figure 6: held-out points in posterior mean space
  (x: model posterior mean, y: inference mean) at four stages of training, one row per run
  (basic above, aggressive below). Points on the diagonal: the inference network keeps up.
* :func:`plot_trajectory`: the paper's figure 3: one point's path through posterior mean space,
  one panel per run.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from .snapshots import Snapshot

__all__ = ["pick_stages", "trajectory_path", "plot_posterior_mean_space", "plot_trajectory"]


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the synthetic study's figures need matplotlib: pip install matplotlib") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pick_stages(snapshots: Sequence[Snapshot], n: int = 4) -> List[int]:
    """Up to ``n`` recorded steps, the first, the last and those nearest to evenly spaced steps
    in between."""
    steps = sorted({s.step for s in snapshots})
    if not steps:
        raise ValueError("no snapshots to pick stages from")
    if len(steps) <= n:
        return steps
    first, last = steps[0], steps[-1]
    targets = [first + i * (last - first) / (n - 1) for i in range(n)]
    chosen = [min(steps, key=lambda s, t=t: (abs(s - t), s)) for t in targets]
    return sorted(set(chosen))


def _at(snapshots: Sequence[Snapshot], step: int) -> Snapshot:
    for snap in snapshots:
        if snap.step == step:
            return snap
    available = [s.step for s in snapshots]
    raise ValueError(f"no snapshot at step {step}; recorded steps: {available}")


def trajectory_path(snapshots: Sequence[Snapshot], index: int = 0) -> Tuple[List[float], List[float]]:
    """The path of point ``index`` through posterior mean space: ``(model means, inference means)``.

    Between two consecutive per-step snapshots of an *aggressive* update the encoder moved first
    (inner loop) and the decoder second, and each changes only its own mean; so the corner
    ``(previous model mean, new inference mean)`` is inserted, giving the paper's staircase. Basic
    updates move both at once and get no corner.
    """
    xs: List[float] = []
    ys: List[float] = []
    previous: Optional[Snapshot] = None
    for snap in sorted(snapshots, key=lambda s: s.step):
        model, infer = snap.model_mean[index], snap.inference_mean[index]
        if previous is not None and snap.aggressive and snap.step == previous.step + 1:
            xs.append(previous.model_mean[index])
            ys.append(infer)
        xs.append(model)
        ys.append(infer)
        previous = snap
    return xs, ys


def _stats(snap: Snapshot) -> str:
    """Mean |model - inference| gap and the two spreads (standard deviations) of a snapshot."""
    n = len(snap.model_mean)
    gap = sum(abs(m - q) for m, q in zip(snap.model_mean, snap.inference_mean)) / n

    def sd(values: Sequence[float]) -> float:
        mu = sum(values) / n
        return (sum((v - mu) ** 2 for v in values) / n) ** 0.5

    return f"gap {gap:.3f}\nsd model {sd(snap.model_mean):.3f}\nsd infer {sd(snap.inference_mean):.3f}"


def _decorate(ax, limit: float) -> None:
    ax.plot([-limit, limit], [-limit, limit], linestyle="--", color="tab:purple", linewidth=1.5)
    ax.axhline(0.0, color="black", linewidth=0.6, linestyle=":")
    ax.axvline(0.0, color="black", linewidth=0.6, linestyle=":")
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
    ax.set_aspect("equal")


def plot_posterior_mean_space(runs: Dict[str, Sequence[Snapshot]], path: str, *,
                              stages: Optional[Dict[str, Sequence[int]]] = None,
                              limit: Optional[float] = None, dpi: int = 110) -> Dict[str, List[int]]:
    """Draw one row per run (in ``runs`` order) and one column per stage; save a PNG to ``path``.

    Args:
        runs: ``{name: snapshots}``, e.g. ``{"basic": [...], "aggressive": [...]}``.
        stages: steps to show per run (default: :func:`pick_stages`, four per run).
        limit: half-width of the axes, shared by all panels (default: fits the data, at least 0.1).
    Returns:
        The steps drawn for each run.
    """
    plt = _pyplot()
    if not runs:
        raise ValueError("runs is empty; expected at least one run of snapshots")
    chosen = {name: list((stages or {}).get(name) or pick_stages(snaps)) for name, snaps in runs.items()}
    n_cols = max(len(v) for v in chosen.values())
    if limit is None:
        peak = max(max(max(abs(v) for v in _at(runs[name], step).model_mean + _at(runs[name], step).inference_mean)
                       for step in steps) for name, steps in chosen.items())
        limit = max(0.1, 1.1 * peak)
    fig, axes = plt.subplots(len(runs), n_cols, figsize=(3.2 * n_cols, 3.6 * len(runs)), squeeze=False,
                             layout="constrained")
    for row, (name, steps) in enumerate(chosen.items()):
        for col in range(n_cols):
            ax = axes[row][col]
            if col >= len(steps):
                ax.axis("off")
                continue
            snap = _at(runs[name], steps[col])
            _decorate(ax, limit)
            ax.scatter(snap.model_mean, snap.inference_mean, s=8, marker="x", color="tab:red", linewidths=0.8)
            ax.text(0.03, 0.97, _stats(snap), transform=ax.transAxes, va="top", fontsize=7,
                    bbox=dict(facecolor="white", alpha=0.8, edgecolor="none"))
            phase = "aggressive" if snap.aggressive else "basic"
            ax.set_title(f"{name}: step {snap.step}\n(epoch {snap.epoch}, {phase} update)", fontsize=9)
            if row == len(runs) - 1:
                ax.set_xlabel("model posterior mean")
            if col == 0:
                ax.set_ylabel(f"{name}\ninference mean")
    fig.suptitle(f"Posterior mean space: {len(runs[next(iter(runs))][0].model_mean)} held-out points")
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return chosen


def plot_trajectory(runs: Dict[str, Sequence[Snapshot]], path: str, *, index: int = 0,
                    max_steps: Optional[int] = 80, limit: Optional[float] = None, dpi: int = 110) -> None:
    """One panel per run: the path of point ``index`` over the first ``max_steps`` decoder updates
    (all when ``None``), with arrows in time order; saved as a PNG to ``path``. The panels share
    their axes (default: fitted to the paths, at least 0.02)."""
    plt = _pyplot()
    if not runs:
        raise ValueError("runs is empty; expected at least one run of snapshots")
    paths = {}
    for name, snaps in runs.items():
        kept = [s for s in snaps if max_steps is None or s.step <= max_steps]
        if not kept:
            raise ValueError(f"run {name!r} has no snapshot up to step {max_steps}")
        paths[name] = (kept[-1].step, trajectory_path(kept, index))
    if limit is None:
        limit = max(0.02, 1.15 * max(abs(v) for _, (xs, ys) in paths.values() for v in xs + ys))
    fig, axes = plt.subplots(1, len(runs), figsize=(4.6 * len(runs), 4.6), squeeze=False)
    for col, (name, (last, (xs, ys))) in enumerate(paths.items()):
        ax = axes[0][col]
        _decorate(ax, limit)
        ax.plot(xs, ys, color="tab:green", linewidth=0.8, alpha=0.5)
        for i in range(len(xs) - 1):
            ax.annotate("", xy=(xs[i + 1], ys[i + 1]), xytext=(xs[i], ys[i]),
                        arrowprops=dict(arrowstyle="->", color="tab:green", lw=0.8))
        ax.scatter(xs[:1], ys[:1], color="black", zorder=3, label="step 0")
        ax.scatter(xs[-1:], ys[-1:], color="tab:red", zorder=3, label=f"step {last}")
        ax.legend(loc="upper left", fontsize=8)
        ax.set_title(f"{name}: one held-out point, updates 0-{last}", fontsize=10)
        ax.set_xlabel("model posterior mean")
        ax.set_ylabel("inference mean")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
