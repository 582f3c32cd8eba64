"""Speed against the paper's own code (He et al., 2019), side by side in one process.

    python -m benchmarks.vs_paper --reference-dir PATH --out benchmarks/results/vs_paper.json

The paper's modules are imported at run time from ``--reference-dir`` (never vendored, never
imported by tests). Modules, one job each: :mod:`.sizes` (the three sizes and their batches),
:mod:`.reference` (the paper's modules and its loop's per-step work), :mod:`.ours` (the same with this
library), :mod:`.timing` (interleaved rounds, medians, ratios), :mod:`.measures` (every measure at a
size), :mod:`.table` (rows, table, JSON), :mod:`.cli` (the options).
"""
from .sizes import SIZES, Size
from .timing import interleave, median, ratio

__all__ = ["SIZES", "Size", "interleave", "median", "ratio"]
