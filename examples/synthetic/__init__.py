"""The paper's synthetic data and posterior-mean-space study (He et al., ICLR 2019, figures 3 and 6).

* :mod:`.data`: the generator (2-d mixture latent driving a random LSTM language model), splits,
  and their text files (``write_text_splits``);
* :mod:`.posterior`: model posterior mean by grid quadrature, inference mean;
* :mod:`.snapshots`: the ``PosteriorMeanSnapshots`` training callback and its JSON files;
* :mod:`.study`: basic vs aggressive training of the scalar-latent LSTM VAE;
* :mod:`.plots`: the figures (needs matplotlib);
* ``python -m examples.synthetic``: all of it from the command line.
"""
from .data import SyntheticData, SyntheticGenerator, make_synthetic_data, to_model_tokens, write_text_splits
from .posterior import eval_mode, inference_mean, model_posterior_mean, z_grid
from .snapshots import PosteriorMeanSnapshots, Snapshot, load_snapshots, save_snapshots

__all__ = [
    "SyntheticData", "SyntheticGenerator", "make_synthetic_data", "to_model_tokens", "write_text_splits",
    "eval_mode", "inference_mean", "model_posterior_mean", "z_grid",
    "PosteriorMeanSnapshots", "Snapshot", "load_snapshots", "save_snapshots",
]
