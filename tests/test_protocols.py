"""The seams: structural Protocols (nothing to inherit) and the optional state hook."""
import torch
from torch import nn

from aggressive_vi import Decoder, Encoder
from aggressive_vi.protocols import optional_state
from conftest import BernoulliDecoder, MLPEncoder


def test_user_modules_meet_the_protocols_without_inheriting():
    assert isinstance(MLPEncoder(), Encoder) and isinstance(BernoulliDecoder(), Decoder)
    assert not isinstance(nn.Linear(2, 2), Decoder)  # no log_prob

    class Plain:  # not even a Module: only the method matters
        def log_prob(self, x, z):
            return torch.zeros(z.shape[:2])

    assert isinstance(Plain(), Decoder)


def test_optional_state_is_the_state_dict_when_there_is_one():
    class WithState:
        def state_dict(self):
            return {"a": 1}

    assert optional_state(WithState()) == {"a": 1} and optional_state(object()) is None
