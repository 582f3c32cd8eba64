"""Optimiser flags survive resume; a callback's or criterion's state goes to the same class."""
import pytest
import torch

from aggressive_vi import VAE, AggressiveTrainer, Always, CheckpointError, FixedSteps, MIPlateau
from conftest import BernoulliDecoder, MLPEncoder, binary_data


def build(**adam):
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    return AggressiveTrainer(vae, torch.optim.Adam(vae.encoder.parameters(), lr=1e-3, **adam),
                             torch.optim.Adam(vae.decoder.parameters(), lr=1e-3, **adam),
                             stopping=FixedSteps(2), window=2, max_inner_steps=4)


def test_resume_keeps_the_flags_of_the_optimisers_the_user_built():
    saved = build(foreach=False)  # saved with foreach=False, capturable=False
    saved.fit([binary_data(8)], epochs=1)
    state = saved.state_dict()
    resumed = build(capturable=True, foreach=True)
    resumed.load_state_dict(state)
    for opt in (resumed.enc_opt, resumed.dec_opt):
        assert opt.param_groups[0]["capturable"] is True and opt.param_groups[0]["foreach"] is True
        assert opt.param_groups[0]["lr"] == 1e-3  # what is saved (lr, moments) is still restored
    # (capturable Adam steps only on accelerators; on this CPU the flag itself is what is checked)


def test_a_stopping_state_saved_by_another_class_is_refused():
    saved = build()
    saved.fit([binary_data(8)], epochs=1)
    state = saved.state_dict()
    state["algorithm"]["stopping"] = {"reference": 0.0, "failures": 0}
    state["algorithm"]["stopping_type"] = "MIPlateau"
    other = build()
    other.algorithm.stopping = Always()
    other.load_state_dict(state)  # a stateless criterion swapped in on purpose: nothing to load
    plateau = build()
    plateau.algorithm.stopping = MIPlateau()
    state["algorithm"]["stopping_type"] = "SomethingElse"
    with pytest.raises(CheckpointError, match="stopping=SomethingElse; this trainer has stopping=MIPlateau"):
        plateau.load_state_dict(state)
