"""The rows of the comparison and what one run may spend at each ``--scale``.

``cpu``: picked from timed single runs on the shared 2-core development machine so that the whole
command fits in about an hour at ``--jobs 1`` (it took 53 minutes, one thread, at load 4-7; see
docs/results.md):

* synthetic: one epoch over 2,000 sentences (125 decoder updates), SGD lr 1.0, validation and test
  on 500 sentences, IW-NLL with 100 samples on the first 200; the aggressive phase lasts the epoch;
* text: the ``cpu`` preset (LSTM 64/128, nz = 16) on the first 800 sentences, 2 epochs (50 decoder
  updates), the paper's inner loop (window 15, cap 100), at most 1 aggressive epoch, IW-NLL with 100
  samples on the first 100 of 200 test sentences;
* image: the ``cpu`` preset (ResNet / PixelCNN, nz = 32) on 300 digits, 2 epochs (12 decoder
  updates), window 10, cap 100, at most 1 aggressive epoch, IW-NLL with 100 samples on the first 60
  of 200 test digits.

Annealing rises over the first half of each run. ``paper``: see the package docstring.
"""
from __future__ import annotations

from typing import Dict

from benchmarks.reproduce import Budget

__all__ = ["ROWS", "SCALES"]

ROWS = ("basic", "anneal", "cyclical", "beta", "free_bits", "aggressive", "aggressive_free_bits")

SCALES: Dict[str, Dict[str, Budget]] = {
    "cpu": {
        "synthetic": Budget(epochs=1, warm_up=0.5, max_train=2000, max_eval=500, iw_samples=100, max_iw=200,
                            curve_points=1, optimizer="sgd"),
        "text": Budget(epochs=2, warm_up=1, max_train=800, max_eval=200, iw_samples=100, max_iw=100,
                       max_aggressive_epochs=1, window=15, max_inner_steps=100, curve_points=1),
        "image": Budget(epochs=2, warm_up=1, max_train=300, max_eval=200, iw_samples=100, max_iw=60,
                        max_aggressive_epochs=1, curve_points=1),
    },
    "paper": {
        "synthetic": Budget(epochs=50, warm_up=10, max_train=None, max_eval=None, iw_samples=500, max_iw=None,
                            select="best", preset="paper", optimizer="sgd"),
        "text": Budget(epochs=100, warm_up=10, max_train=None, max_eval=None, iw_samples=500, max_iw=None,
                       window=15, max_inner_steps=100, select="best", preset="paper"),
        "image": Budget(epochs=100, warm_up=10, max_train=None, max_eval=None, iw_samples=500, max_iw=None,
                        select="best", preset="paper"),
    },
}
