"""The library's private machinery: no stability promise, import from :mod:`aggressive_vi` instead.

* :mod:`.captured`: the experimental captured inner step (one CUDA graph per input shape).
* :mod:`.checks`: every argument check, worded the same way.
* :mod:`.components`: loading the pluggable parts' states; an optimiser's flags kept across a load.
* :mod:`.gate`: optimiser steps applied or refused on a flag that stays on the device.
* :mod:`.loaders`: what a data loader yields -> the model's input; the walk over a loader's
  samplers and generators (``set_epoch``, shuffling generators) in one place.
* :mod:`.precision`: autocast and the fp16 grad scalers; ``allow_tf32``.
* :mod:`.progress`: the epoch in progress (its stream and running sums) and its record.
* :mod:`.rng`: snapshots of every random generator a run draws from.
* :mod:`.streams`: the epoch's batch iterator and the inner loop's endless stream, each able to
  save its position and replay it.
"""
