"""Side by side with the paper's code: its ``text.py`` and our ``AggressiveTrainer`` on identical work.

    python -m benchmarks.parity --reference-dir PATH --data DIR --name LABEL \
        --embed-dim 50 --hidden-dim 50 --latent-dim 1 --batch-size 16 --epochs 5 --jobs 2

Modules, one job each: :mod:`.spec` (what a run is), :mod:`.data` (the plain-text files both sides
read), :mod:`.reference` (prepare, run and parse the paper's script), :mod:`.ours` (the same run with
this library), :mod:`.batches` (the reference's batching for our trainer), :mod:`.runner` (processes,
``jobs`` at a time), :mod:`.table` (table, verdicts, JSON). See :mod:`.cli` for the options. What this
harness and :mod:`benchmarks.image_parity` do alike (processes, ``--jobs``, the results JSON, the
shared options) is written once in :mod:`benchmarks.core.side_by_side`.
"""
from .spec import MODES, SIDES, RunSpec, reference_seeds

__all__ = ["RunSpec", "MODES", "SIDES", "reference_seeds"]
