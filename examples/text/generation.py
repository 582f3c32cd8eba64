"""Decoding sentences from latent codes: greedy, beam search (width K) and ancestral sampling,
from the prior, from the posterior (reconstruction), and along a line between two sentences' codes.

Every decoder is batched over the latents (no Python loop over sentences) and runs the decoder with
dropout off. They return token-id lists without ``<s>``/``</s>``; ``to_text`` detokenises them.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence

import torch
from torch import nn

from ..devices import check_generator, module_device
from .corpus import Vocab
from .models import LSTMDecoder
from .tokens import detokenize

__all__ = ["greedy_decode", "sample_decode", "beam_search", "decode", "from_prior", "reconstruct",
           "interpolate", "to_text", "STRATEGIES"]

STRATEGIES = ("greedy", "beam", "sample")
NEVER = (Vocab.pad_id, Vocab.bos_id)  # ids no decoder should emit


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def _check_z(decoder: LSTMDecoder, z: torch.Tensor) -> None:
    if z.dim() != 2 or z.shape[1] != decoder.latent_dim:
        raise ValueError(f"z must have shape [n, latent_dim={decoder.latent_dim}], got {tuple(z.shape)}")


def _trim(rows: torch.Tensor, eos_id: int) -> List[List[int]]:
    out = []
    for row in rows.tolist():
        out.append(row[: row.index(eos_id)] if eos_id in row else row)
    return out


def _ban(logits: torch.Tensor, banned: Sequence[int]) -> torch.Tensor:
    if banned:
        logits = logits.clone()
        logits[..., list(banned)] = float("-inf")
    return logits


def _step_decode(decoder: LSTMDecoder, z: torch.Tensor, pick, max_len: int, bos_id: int,
                 eos_id: int, banned: Sequence[int]) -> List[List[int]]:
    _check_z(decoder, z)
    with _eval_mode(decoder):
        n = z.shape[0]
        tokens = torch.full((n,), bos_id, dtype=torch.long, device=z.device)
        done = torch.zeros(n, dtype=torch.bool, device=z.device)
        out, state = [], None
        for _ in range(max_len):
            logits, state = decoder.logits_step(tokens, z, state)
            logits = _ban(logits, banned)
            tokens = torch.where(done, torch.full_like(tokens, eos_id), pick(logits))
            out.append(tokens)
            done |= tokens == eos_id
            if bool(done.all()):
                break
    return _trim(torch.stack(out, dim=1), eos_id)


def greedy_decode(decoder: LSTMDecoder, z: torch.Tensor, *, max_len: int = 100,
                  bos_id: int = Vocab.bos_id, eos_id: int = Vocab.eos_id,
                  banned: Sequence[int] = NEVER) -> List[List[int]]:
    """Most likely token at every step. ``z: [n, latent_dim]`` -> ``n`` id lists (at most ``max_len``).
    ``banned`` ids are never produced (default ``<pad>`` and ``<s>``; add ``<unk>`` for prettier text)."""
    return _step_decode(decoder, z, lambda logits: logits.argmax(dim=-1), max_len, bos_id, eos_id, banned)


def sample_decode(decoder: LSTMDecoder, z: torch.Tensor, *, temperature: float = 1.0, max_len: int = 100,
                  generator: Optional[torch.Generator] = None, bos_id: int = Vocab.bos_id,
                  eos_id: int = Vocab.eos_id, banned: Sequence[int] = NEVER) -> List[List[int]]:
    """Ancestral sampling from p(x | z), softmax temperature ``temperature`` (1.0 = the model),
    renormalised without the ``banned`` ids."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")

    def pick(logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits / temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    check_generator(generator, z.device)
    return _step_decode(decoder, z, pick, max_len, bos_id, eos_id, banned)


def beam_search(decoder: LSTMDecoder, z: torch.Tensor, *, beam_size: int = 5, max_len: int = 100,
                bos_id: int = Vocab.bos_id, eos_id: int = Vocab.eos_id,
                banned: Sequence[int] = NEVER) -> List[List[int]]:
    """Beam search of width ``beam_size`` for each row of ``z: [n, latent_dim]``, batched over rows
    and beams. Returns, per row, the finished hypothesis with the highest total log-probability (as
    the paper's code; no length normalisation); if none finished within ``max_len``, the best live one."""
    _check_z(decoder, z)
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    k = beam_size
    with _eval_mode(decoder):
        n, vocab = z.shape[0], decoder.vocab_size
        zk = z.repeat_interleave(k, dim=0)  # [n*k, nz]
        scores = torch.full((n, k), float("-inf"), device=z.device)
        scores[:, 0] = 0.0  # only one live beam at the start
        tokens = torch.full((n * k,), bos_id, dtype=torch.long, device=z.device)
        history = torch.empty(n, k, 0, dtype=torch.long, device=z.device)
        finished = torch.zeros(n, k, dtype=torch.bool, device=z.device)
        state = None
        for _ in range(max_len):
            logits, state = decoder.logits_step(tokens, zk, state)
            logp = _ban(torch.log_softmax(logits.float(), dim=-1), banned).view(n, k, vocab)
            # a finished beam keeps its score and can only be extended by </s> at no cost
            frozen = torch.full_like(logp, float("-inf"))
            frozen[..., eos_id] = 0.0
            logp = torch.where(finished.unsqueeze(-1), frozen, logp)
            total = (scores.unsqueeze(-1) + logp).view(n, k * vocab)
            scores, flat = total.topk(k, dim=-1)  # [n, k]
            parent, word = flat // vocab, flat % vocab
            history = torch.cat([history.gather(1, parent.unsqueeze(-1).expand(-1, -1, history.shape[2])),
                                 word.unsqueeze(-1)], dim=2)
            finished = finished.gather(1, parent) | (word == eos_id)
            rows = (parent + torch.arange(n, device=z.device).unsqueeze(1) * k).view(-1)
            state = (state[0][:, rows], state[1][:, rows])
            tokens = word.view(-1)
            if bool(finished.all()):
                break
        ranked = torch.where(finished, scores, scores - 1e9)  # prefer finished hypotheses
        best = ranked.argmax(dim=1)
        chosen = history[torch.arange(n, device=z.device), best]
    return _trim(chosen, eos_id)


def decode(decoder: LSTMDecoder, z: torch.Tensor, strategy: str = "greedy", *, beam_size: int = 5,
           temperature: float = 1.0, max_len: int = 100, generator: Optional[torch.Generator] = None,
           banned: Sequence[int] = NEVER) -> List[List[int]]:
    """Dispatch on ``strategy`` in ``STRATEGIES``."""
    if strategy == "greedy":
        return greedy_decode(decoder, z, max_len=max_len, banned=banned)
    if strategy == "beam":
        return beam_search(decoder, z, beam_size=beam_size, max_len=max_len, banned=banned)
    if strategy == "sample":
        return sample_decode(decoder, z, temperature=temperature, max_len=max_len, generator=generator,
                             banned=banned)
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")


def from_prior(decoder: LSTMDecoder, n: int, strategy: str = "sample", *,
               generator: Optional[torch.Generator] = None, **kwargs) -> List[List[int]]:
    """Decode ``n`` codes z ~ N(0, I) drawn from the prior, on the decoder's device (``generator``,
    if given, must be there too: ``examples.devices.make_generator(seed, device)``)."""
    device = module_device(decoder)
    check_generator(generator, device)
    z = torch.randn(n, decoder.latent_dim, generator=generator, device=device)
    return decode(decoder, z, strategy, generator=generator, **kwargs)


def _posterior_codes(encoder: nn.Module, x: torch.Tensor, use_mean: bool,
                     generator: Optional[torch.Generator]) -> torch.Tensor:
    with _eval_mode(encoder):
        mean, logvar = encoder(x.to(module_device(encoder)))
    if use_mean:
        return mean
    check_generator(generator, mean.device)
    noise = torch.randn(mean.shape, generator=generator, device=mean.device)
    return mean + noise * (0.5 * logvar).exp()


def reconstruct(encoder: nn.Module, decoder: LSTMDecoder, x: torch.Tensor, strategy: str = "greedy", *,
                use_mean: bool = True, generator: Optional[torch.Generator] = None, **kwargs) -> List[List[int]]:
    """Encode ``x: [batch, seq_len]`` (moved to the encoder's device) and decode its code: the
    posterior mean (``use_mean``) or one sample z ~ q(z | x) (as the paper's code)."""
    z = _posterior_codes(encoder, x, use_mean, generator)
    return decode(decoder, z, strategy, generator=generator, **kwargs)


def interpolate(encoder: nn.Module, decoder: LSTMDecoder, x_a: torch.Tensor, x_b: torch.Tensor, *,
                steps: int = 5, strategy: str = "greedy", **kwargs) -> List[List[int]]:
    """Decode ``steps`` points evenly spaced from the posterior mean of ``x_a`` to that of ``x_b``
    (both ``[1, seq_len]``), endpoints included."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    za = _posterior_codes(encoder, x_a, True, None)
    zb = _posterior_codes(encoder, x_b, True, None)
    weights = torch.linspace(0, 1, steps, device=za.device).unsqueeze(1)
    z = (1 - weights) * za[:1] + weights * zb[:1]
    return decode(decoder, z, strategy, **kwargs)


def to_text(vocab: Vocab, ids: List[int]) -> str:
    """Token ids -> detokenised string."""
    return detokenize(vocab.decode(ids))
