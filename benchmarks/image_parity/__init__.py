"""Side by side with the paper's image code: its ``image.py`` and our ``examples.image`` VAE
(``AggressiveTrainer``) on identical work.

    python -m benchmarks.image_parity --reference-dir PATH --data bundled --name digits \
        --max-train 500 --max-valid 250 --max-test 300 --encoder-channels 16 16 16 --encoder-hidden 128 \
        --decoder-channels 16 --decoder-kernels 5 5 3 3 --epochs 8 --iw-samples 100

Modules: :mod:`.spec` (what a run is), :mod:`.data` (the ``torch.save`` file both sides read),
:mod:`.launcher` (runs the paper's script unchanged, its networks at the run's sizes),
:mod:`.reference` (prepare, run and parse the paper's script), :mod:`.ours` (the same run with the
image example), :mod:`.runner` (processes, one at a time), :mod:`.table` (the text harness's table
with image columns and time ratios), :mod:`.trace` (update-by-update comparison from the same
start). See :mod:`.cli` for the options. What this harness and :mod:`benchmarks.parity` do alike
(processes, ``--jobs``, the results JSON, the shared options) is written once in
:mod:`benchmarks.core.side_by_side`.
"""
from .spec import MODES, PAPER_SIZES, SIDES, ImageRunSpec

__all__ = ["ImageRunSpec", "MODES", "SIDES", "PAPER_SIZES"]
