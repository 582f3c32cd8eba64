"""MI and KL during training, drawn from a study's JSON document (the paper's figures 4 and 5)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence

from .rows import ROW_LABELS

__all__ = ["plot_curves"]


def plot_curves(doc: Dict[str, Any], path: Path, rows: Sequence[str] = ("basic", "aggressive")) -> Path:
    """Validation MI and KL against decoder updates for ``rows`` (one thin line per seed, the
    aggressive phase's end marked), as in the paper's figures 4 and 5. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"basic": "tab:blue", "anneal": "tab:green", "beta": "tab:purple", "aggressive": "tab:red",
               "aggressive_anneal": "tab:orange", "cyclical": "tab:olive", "free_bits": "tab:cyan",
               "aggressive_free_bits": "tab:brown"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for row in rows:
        runs = [r for r in doc["runs"] if r["row"] == row and r.get("curve")]
        for i, run in enumerate(runs):
            steps = [p["step"] for p in run["curve"]]
            for ax, key in zip(axes, ("mi", "kl")):
                ax.plot(steps, [p[key] for p in run["curve"]], color=colours.get(row, "k"), alpha=0.8, lw=1.2,
                        label=ROW_LABELS[row] if i == 0 else None)
                if run.get("left_aggressive_at"):
                    ax.axvline(run["left_aggressive_at"], color=colours.get(row, "k"), ls=":", lw=0.8)
    for ax, name in zip(axes, ("mutual information I_q(x; z) (nats)", "KL(q(z|x) || p(z)) (nats)")):
        ax.set_xlabel("decoder updates")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(loc="best", fontsize=8)
    b = doc["budget"]
    fig.suptitle(f"{doc['data']}: validation MI and KL during training ({len(doc['seeds'])} seeds, "
                 f"{b['epochs']} epochs; dotted: end of the aggressive phase)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
