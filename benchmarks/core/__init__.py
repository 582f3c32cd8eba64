"""What every benchmark shares, written once; the scripts under ``benchmarks/`` are thin users of it.

* :mod:`.reference`: the paper's code (He et al., 2019: a checkout of vae-lagging-encoder) found at run
  time in the directory the user passes (``--reference-dir``): checked, copied to scratch, imported,
  its LSTM VAE built; for running its scripts, their config module, seeds, environment and the
  lines both print alike. Nothing of that code is part of this project, and no test imports it.
* :mod:`.side_by_side`: the harnesses that run the paper's scripts and ours on identical work
  (:mod:`benchmarks.parity`, :mod:`benchmarks.image_parity`): child processes with a log and a time
  limit, ``--jobs`` runs at a time, the results JSON rewritten after every run, the shared command
  line and ``--from-json``, the checks their specs share.
* :mod:`.paper_update`: the paper's update as its ``text.py`` loop does it (both gradients, the joint
  norm clipped at 5, one or both networks stepped, its host reads) and its catch-up loop.
* :mod:`.paper_modules`: the paper's ``LSTMEncoder`` / ``LSTMDecoder`` behind our ``Encoder`` / ``Decoder``
  protocols (to time the library's update on the paper's own model), and weights copied between
  them and our text model in either direction.
* :mod:`.timing`: interleaved timing: rounds alternating the variants, medians, ratios.
* :mod:`.tables`: a plain-text or Markdown table from rows of cells, and JSON written atomically.

Only the library's public API is used (``aggressive_vi.*`` names without a leading underscore).
"""
