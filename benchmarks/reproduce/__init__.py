"""Reproduction study: the paper's Table 1 rows on the data sets this machine can run.

    python -m benchmarks.reproduce --data all --seeds 0 1 2 --out benchmarks/results --jobs 2

For each data set (``synthetic``, ``text``, ``image``) and each seed, trains with the same model,
data and epoch budget:

* ``basic``: basic VAE training (encoder and decoder jointly, KL weight 1);
* ``anneal``: basic training with KL annealing (``LinearKLAnnealing(0.1, warm-up)``);
* ``beta``: beta-VAE, ``ConstantKL(0.4)``;
* ``aggressive``: aggressive inference-network training (He et al., 2019), KL weight 1;
* ``aggressive_anneal``: aggressive training with the same annealing;
* ``ar``: the autoregressive decoder alone with z fixed to zero (LSTM-LM / PixelCNN), trained on
  ``-log p(x | z=0)`` by the loop in :func:`train_ar_baseline`; its NLL is exact and its KL, MI
  and AU are zero by construction (it has no latent variable).

``--rows`` also takes the rows of ``python -m benchmarks.remedies`` (``cyclical``, ``free_bits``,
``aggressive_free_bits``; see :mod:`benchmarks.reproduce.rows`).

and reports on the test split IW-NLL (``--iw-samples`` importance samples, 500 by default), KL, MI,
AU and training wall time relative to the basic VAE of the same seed, as mean and standard deviation
over seeds. Writes ``OUT/reproduce_<data>.json`` (settings, budget, every per-seed number and
per-epoch history; rewritten after every finished run, so a killed study leaves what finished) and
prints one table per data set.

Settings (see :data:`DATASETS`): the text ``cpu`` preset on the bundled corpus with SGD lr 1.0 and
the paper's text stopping rule; the image ``cpu`` preset on the bundled MNIST digits with Adam 1e-3,
``MIPlateau(patience=5, cumulative=True)`` and window 10; the synthetic study's nz=1 LSTM VAE on the
CPU-sized synthetic data with Adam 1e-3 (see ``examples.synthetic.study`` for why not SGD).
``--epochs``, ``--max-train``, ``--max-eval``, ``--max-iw`` and ``--max-aggressive-epochs`` cap the
budget for this machine (defaults per data set in :data:`DEFAULTS`; docs/results.md says why);
``--max-train all`` and ``--max-eval all`` lift the cap on a split.
``--window`` and ``--max-inner-steps`` override the inner loop's window test and cap; ``--preset paper``
trains the examples' paper-sized text and image models (synthetic: the paper's split sizes), and
``--optimizer sgd`` the synthetic rows with the paper's SGD.
``--fixed-aggressive-epochs N`` replaces the MI-plateau rule by exactly N aggressive epochs (to see
what the rule's decision costs). ``--select best`` evaluates each run's best validation epoch (-ELBO;
exact NLL for the AR row) instead of its last, as the paper's code does before testing.
``--from-json --markdown --figures DIR`` redraws tables and MI/KL curves from the JSON without training.
"""
# The package, one job a module:
#   rows.py      the rows: names, labels, KL schedule and aggressive-phase stopping per row
#   datasets.py  Budget and per data set DEFAULTS; synthetic / text / image setups (SETUPS)
#   runner.py    one run: run_one, the AR baseline (train_ar_baseline, exact_nll_at_zero), LatentCurve
#   study.py     the study loop (process pool) and the JSON document it rewrites after every run
#   tables.py    aggregate over seeds; text and Markdown tables
#   figures.py   MI/KL curves from the JSON
#   cli.py       argument parsing and main (``python -m benchmarks.reproduce`` runs it)
from .datasets import DATASETS, DEFAULTS, OPTIMIZERS, PRESETS, SELECTIONS, SETUPS, SYNTHETIC_DATA_SEED, Budget, Setup
from .figures import plot_curves
from .rows import ALL_ROWS, BETA, KL_START, ROW_LABELS, ROWS
from .runner import LatentCurve, exact_nll_at_zero, run_one, train_ar_baseline
from .study import FORMAT, run_study
from .tables import METRICS, aggregate, format_markdown, format_table
from .cli import ALL, add_budget_flags, budgets_from_args, build_parser, main  # noqa: E402  (last: it uses all the above)

__all__ = ["ROWS", "ROW_LABELS", "DATASETS", "Budget", "Setup", "run_one", "train_ar_baseline", "aggregate",
           "format_table", "run_study", "budgets_from_args", "main", "FORMAT", "METRICS", "SELECTIONS",
           "DEFAULTS", "SETUPS", "SYNTHETIC_DATA_SEED", "BETA", "KL_START", "LatentCurve", "exact_nll_at_zero",
           "format_markdown", "plot_curves", "ALL", "build_parser", "ALL_ROWS", "add_budget_flags", "PRESETS",
           "OPTIMIZERS"]
