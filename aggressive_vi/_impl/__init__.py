"""The library's private machinery: no stability promise, import from :mod:`aggressive_vi` instead.

* :mod:`.checks`: every argument check, worded the same way.
* :mod:`.loaders`: what a data loader yields -> the model's input; the walk over a loader's
  samplers and generators (``set_epoch``, shuffling generators) in one place.
* :mod:`.rng`: snapshots of every random generator a run draws from.
* :mod:`.streams`: the epoch's batch iterator and the inner loop's endless stream, each able to
  save its position and replay it.
* :mod:`.progress`: the run's counters and the epoch in progress (its stream and running sums).
"""
