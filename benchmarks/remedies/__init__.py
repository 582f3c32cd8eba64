"""Remedies for posterior collapse side by side: which is worth its cost on our data.

    python -m benchmarks.remedies --jobs 1 --out benchmarks/results/remedies

On each data set (``synthetic``, ``text``, ``image``) and each seed (0, 1, 2), trains the same model on
the same data for the same epochs with each remedy, through the library's public API only:

==========================  ====================================================================
row                         what changes (everything else: the data set's settings)
==========================  ====================================================================
``basic``                   nothing: KL weight 1, basic training
``anneal``                  ``LinearKLAnnealing(0.1, warm-up)``, the paper's annealing
``cyclical``                ``CyclicalKLAnnealing``: 4 cycles over the run, the weight rising from
                            0 to 1 over the first half of each (Fu et al., NAACL 2019: M = 4, R = 0.5)
``beta``                    ``ConstantKL(0.4)``, a KL weight below one (the reproduction's beta row)
``free_bits``               ``VAE(..., kl_threshold=FreeBits(0.25))``: 0.25 nats per latent
                            dimension, KL weight 1
``aggressive``              aggressive training (He et al., ICLR 2019), KL weight 1, the data set's
                            rule for leaving the aggressive phase
``aggressive_free_bits``    aggressive training of the free-bits objective
==========================  ====================================================================

and reports on the test split IW-NLL, KL, MI (the paper's minibatch estimator) and active units (nats;
mean and standard deviation over seeds), training wall time and that time over the basic row's of the
same seed. Writes ``OUT/remedies_<data>.json`` (every run: metrics, per-epoch history, settings; in
the format of ``benchmarks.reproduce``, rewritten after every run), ``OUT/remedies.json`` (the table's
numbers, the budgets, the command and its wall time) and ``OUT/remedies.md`` (the table), and prints
the table.

Settings, and where they come from:

* The free-bits threshold is Li et al.'s (EMNLP 2019) published command: ``target_kl 8`` spread over
  ``nz = 32`` dimensions, i.e. 0.25 nats per dimension; we keep 0.25 per dimension for our nz = 1, 16
  and 32. Their code masks each example's per-dimension KL; we threshold the batch average, as
  Kingma et al. (2016) define free bits. Li et al. also anneal the KL weight from 0 and pretrain an
  autoencoder first; the ``free_bits`` row does neither (one change per row).
* Cyclical annealing: Fu et al.'s M = 4 cycles and R = 0.5, each cycle starting from weight 0.
* ``beta`` 0.4 and the annealing's start 0.1 are the reproduction study's rows (the paper anneals
  from 0.1 over 10 epochs; here over half of each run).
* Model, optimiser and data are the reproduction study's (``benchmarks.reproduce.datasets``), except
  that the synthetic rows use the paper's SGD (lr 1.0), with which one epoch separates basic from
  aggressive training on the authors' generator (see ``examples.synthetic.study``).

``--scale cpu`` (default) is sized for the 2-core development machine: the whole command (3 data sets
x 7 rows x 3 seeds) in about an hour at ``--jobs 1`` on one busy core (measured time in
docs/results.md). ``--scale paper`` takes the paper's sizes: the text and image models of the
examples' ``paper`` presets on the whole bundled corpus and digits, the synthetic data at the paper's
20k / 10k / 10k sentences, the paper's epochs (text 100, synthetic 50; images 100, where the paper's
config allows 1000 and its learning-rate decay ends runs earlier), annealing over 10 epochs, no cap on
the aggressive phase, the paper's inner loop, IW-NLL with 500 samples on the whole test split and the
model of the best validation epoch. The paper's learning-rate decay is not applied at either scale.
It is meant for a GPU and has not been run here.

The budget flags of ``benchmarks.reproduce`` (``--epochs``, ``--max-train``, ``--iw-samples``, ...)
change the chosen scale's budgets; ``--from-json`` rebuilds the table from the JSON in ``--out``.
"""
# The package, one job a module:
#   scales.py  ROWS and the budgets of each --scale
#   table.py   the combined table (all data sets) as text and Markdown, and the summary document
#   cli.py     argument parsing and main (``python -m benchmarks.remedies`` runs it)
from .scales import ROWS, SCALES
from .table import FORMAT, format_markdown, format_table, summary_document
from .cli import build_parser, main  # noqa: E402  (last: it uses the above)

__all__ = ["ROWS", "SCALES", "FORMAT", "format_markdown", "format_table", "summary_document", "build_parser",
           "main"]
