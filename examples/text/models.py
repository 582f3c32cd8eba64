"""The paper's LSTM encoder and decoder for text VAEs (He et al., ICLR 2019, section 6.1).

Token ids follow one convention everywhere in ``examples.text``: a sentence tensor ``x`` is a
``LongTensor [batch, seq_len]`` whose rows start with ``<s>``, end with ``</s>`` and are right-padded
with ``pad_id``. Both modules meet the ``aggressive_vi`` protocols:

* ``LSTMEncoder(x) -> (mean, logvar)``, each ``[batch, latent_dim]``;
* ``LSTMDecoder.log_prob(x, z) -> [batch, n_samples]`` for ``z: [batch, n_samples, latent_dim]``,
  the log-likelihood in nats of ``x[:, 1:]`` given ``x[:, :-1]`` and ``z``, pad positions excluded.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LSTMEncoder", "LSTMDecoder", "LSTMState", "init_paper_", "last_outputs", "sequence_lengths"]

LSTMState = Tuple[torch.Tensor, torch.Tensor]  # (h, c), each [1, batch, hidden_dim]


def _check_tokens(x: torch.Tensor, name: str = "x", min_len: int = 1) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a LongTensor [batch, seq_len] of token ids, got {type(x).__name__}")
    if x.dim() != 2 or x.dtype not in (torch.long, torch.int, torch.int32, torch.int64):
        raise ValueError(
            f"{name} must be an integer tensor [batch, seq_len] of token ids, "
            f"got dtype {x.dtype} and shape {tuple(x.shape)}"
        )
    if x.shape[1] < min_len:
        raise ValueError(f"{name} must have at least {min_len} positions per row, got shape {tuple(x.shape)}")


def sequence_lengths(x: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Number of non-pad tokens in each row of a right-padded ``x: [batch, seq_len]`` -> ``[batch]``."""
    return (x != pad_id).sum(dim=1)


class LSTMEncoder(nn.Module):
    """Embedding -> one-layer LSTM -> last non-pad hidden state -> linear to ``(mean, logvar)``.

    Args:
        vocab_size: number of token ids.
        embed_dim: word embedding size (paper: 512).
        hidden_dim: LSTM hidden size (paper: 1024).
        latent_dim: size of z (paper: 32).
        pad_id: id of the padding token; rows are right-padded with it.
    """

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, latent_dim: int, *, pad_id: int = 0):
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("embed_dim", embed_dim),
                            ("hidden_dim", hidden_dim), ("latent_dim", latent_dim)):
            if int(value) < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        self.vocab_size, self.embed_dim = vocab_size, embed_dim
        self.hidden_dim, self.latent_dim, self.pad_id = hidden_dim, latent_dim, pad_id
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, num_layers=1, batch_first=True)
        self.linear = nn.Linear(hidden_dim, 2 * latent_dim, bias=False)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``x: [batch, seq_len]`` token ids -> ``(mean, logvar)``, each ``[batch, latent_dim]``.

        The LSTM is causal, so its output at the last non-pad position of a right-padded row equals
        the final state of that row run alone: we gather it instead of packing. A batch without
        padding (every row ends in a token, as in batches of equal-length sentences) takes the
        LSTM's final state directly, with no gather, on the CPU, where finding that out costs no sync.
        On a GPU the forward reads nothing on the host (it can be captured in a CUDA graph), so a row made
        only of padding is not refused there: its ``mean`` and ``logvar`` are NaN (no out-of-range
        gather, no device-side assert that would poison the process), and the trainer's non-finite
        check stops or skips that update. On the CPU it raises ``ValueError``.
        """
        _check_tokens(x)
        on_cpu = x.device.type == "cpu"
        if on_cpu and bool((x[:, -1] != self.pad_id).all()):  # no padding: every row's last token is last
            _, (h_n, _) = self.lstm(self.embed(x))
            mean, logvar = self.linear(h_n[0]).chunk(2, dim=-1)
            return mean, logvar
        lengths = sequence_lengths(x, self.pad_id)
        if on_cpu and bool((lengths == 0).any()):  # on a GPU: no host sync per step
            raise ValueError("x has a row made only of padding; every row needs at least one token")
        output, _ = self.lstm(self.embed(x))  # [batch, seq_len, hidden]
        mean, logvar = self.linear(last_outputs(output, lengths)).chunk(2, dim=-1)
        return mean, logvar


def last_outputs(output: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row's output at its last token: ``output: [batch, seq_len, hidden]``, ``lengths: [batch]``
    -> ``[batch, hidden]``; a row of length 0 gives NaN (read nothing on the host, index nothing out of
    range)."""
    index = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, output.shape[-1])
    last = output.gather(1, index).squeeze(1)
    return torch.where((lengths > 0).unsqueeze(1), last, torch.full_like(last, float("nan")))


class LSTMDecoder(nn.Module):
    """LSTM language model conditioned on z (the paper's decoder).

    At every step the input is the previous token's embedding concatenated with z; the initial cell
    state is ``W z`` and the initial hidden state ``tanh(W z)``; dropout on the input embeddings and on
    the LSTM outputs; a linear layer (no bias) to vocabulary logits.
    """

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, latent_dim: int, *,
                 pad_id: int = 0, dropout_in: float = 0.5, dropout_out: float = 0.5):
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("embed_dim", embed_dim),
                            ("hidden_dim", hidden_dim), ("latent_dim", latent_dim)):
            if int(value) < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        for name, value in (("dropout_in", dropout_in), ("dropout_out", dropout_out)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        self.vocab_size, self.embed_dim = vocab_size, embed_dim
        self.hidden_dim, self.latent_dim, self.pad_id = hidden_dim, latent_dim, pad_id
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.dropout_in = nn.Dropout(dropout_in)
        self.dropout_out = nn.Dropout(dropout_out)
        self.trans_linear = nn.Linear(latent_dim, hidden_dim, bias=False)
        self.lstm = nn.LSTM(embed_dim + latent_dim, hidden_dim, num_layers=1, batch_first=True)
        self.pred_linear = nn.Linear(hidden_dim, vocab_size, bias=False)

    # -- building blocks -------------------------------------------------------------------------
    def initial_state(self, z: torch.Tensor) -> LSTMState:
        """``z: [n, latent_dim]`` -> ``(h0, c0)``, each ``[1, n, hidden_dim]``."""
        c0 = self.trans_linear(z).unsqueeze(0)
        return torch.tanh(c0), c0

    def logits(self, inputs: torch.Tensor, z: torch.Tensor,
               state: Optional[LSTMState] = None) -> Tuple[torch.Tensor, LSTMState]:
        """Vocabulary logits for every position of ``inputs``.

        Args:
            inputs: ``[n, steps]`` token ids fed to the LSTM.
            z: ``[n, latent_dim]``, one latent per row.
            state: LSTM state to continue from; ``None`` starts from ``initial_state(z)``.
        Returns:
            ``logits: [n, steps, vocab_size]`` (unnormalised) and the final state.
        """
        emb = self.dropout_in(self.embed(inputs))
        z_steps = z.unsqueeze(1).expand(-1, inputs.shape[1], -1)
        if state is None:
            state = self.initial_state(z)
        output, state = self.lstm(torch.cat([emb, z_steps], dim=-1), state)
        return self.pred_linear(self.dropout_out(output)), state

    def logits_step(self, tokens: torch.Tensor, z: torch.Tensor,
                    state: Optional[LSTMState] = None) -> Tuple[torch.Tensor, LSTMState]:
        """One decoding step: ``tokens: [n]`` (previous tokens), ``z: [n, latent_dim]`` ->
        ``(logits [n, vocab_size], new state)``."""
        logits, state = self.logits(tokens.unsqueeze(1), z, state)
        return logits.squeeze(1), state

    # -- the protocol ----------------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x | z) in nats, summed over the tokens of each sentence.

        Args:
            x: ``[batch, seq_len]`` token ids (``<s> ... </s>`` then ``pad_id``); ``x[:, 1:]`` is
                predicted from ``x[:, :-1]``; positions whose target is ``pad_id`` add nothing.
            z: ``[batch, n_samples, latent_dim]``.
        Returns:
            ``[batch, n_samples]``; all samples run through the LSTM as one batch.
        """
        _check_tokens(x, min_len=2)
        if z.dim() != 3 or z.shape[0] != x.shape[0] or z.shape[2] != self.latent_dim:
            raise ValueError(
                f"z must have shape [batch={x.shape[0]}, n_samples, latent_dim={self.latent_dim}], "
                f"got {tuple(z.shape)}"
            )
        batch, n_samples, _ = z.shape
        src, tgt = x[:, :-1], x[:, 1:]
        steps = src.shape[1]
        # Dropout is drawn once per sentence and shared by its samples (as in the paper's code).
        emb = self.dropout_in(self.embed(src))  # [batch, steps, embed]
        emb = emb.unsqueeze(1).expand(batch, n_samples, steps, self.embed_dim)
        z_steps = z.unsqueeze(2).expand(batch, n_samples, steps, self.latent_dim)
        inputs = torch.cat([emb, z_steps], dim=-1).reshape(batch * n_samples, steps, -1)
        output, _ = self.lstm(inputs, self.initial_state(z.reshape(batch * n_samples, self.latent_dim)))
        output = self.dropout_out(output).reshape(-1, self.hidden_dim)  # [batch*n*steps, hidden]
        targets = tgt.unsqueeze(1).expand(batch, n_samples, steps).reshape(-1)
        if torch.is_grad_enabled():
            nll = F.cross_entropy(self.pred_linear(output), targets, ignore_index=self.pad_id, reduction="none")
        else:
            nll = self._chunked_nll(output, targets)
        return -nll.view(batch, n_samples, steps).sum(dim=-1)

    #: Rows per chunk when scoring without gradient: enough that the logits ``[rows, vocab]`` of a
    #: small vocabulary stay in cache (``LOGIT_CHUNK_ELEMENTS`` floats, 2 MiB), and at least
    #: ``ROWS_PER_HIDDEN_UNIT x hidden_dim`` rows (at most ``MAX_CHUNK_ROWS``) so that the output layer's
    #: matrix product runs at full speed and its weight, read once per chunk, is read rarely when it
    #: does not fit in cache. Measured on one CPU core (benchmarks/results/performance-record.md):
    #: hidden 50 / vocabulary 1000, 524-row chunks were best; hidden 128 / vocabulary 3000, 1024 rows;
    #: hidden 1024 / vocabulary 20k, the more rows the better (6600 rows in one chunk 13% faster than
    #: 1024-row chunks).
    LOGIT_CHUNK_ELEMENTS = 1 << 19
    ROWS_PER_HIDDEN_UNIT = 8
    MAX_CHUNK_ROWS = 8192

    def _chunked_nll(self, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``-log p(target)`` per row of ``output: [rows, hidden]`` (``targets: [rows]``), the output
        layer and softmax computed a few hundred rows at a time so that the logits ``[rows, vocab]``
        are never materialised at once (an IW-NLL call scores ``batch x samples x steps`` rows) (no autograd graph to keep: used under ``no_grad`` only).
        The same arithmetic per row as the one-call path."""
        rows = output.shape[0]
        chunk = max(1, self.LOGIT_CHUNK_ELEMENTS // self.vocab_size,
                    min(self.MAX_CHUNK_ROWS, self.ROWS_PER_HIDDEN_UNIT * self.hidden_dim))
        if rows <= chunk:
            return F.cross_entropy(self.pred_linear(output), targets, ignore_index=self.pad_id, reduction="none")
        nll = output.new_empty(rows)
        for start in range(0, rows, chunk):
            stop = min(rows, start + chunk)
            nll[start:stop] = F.cross_entropy(self.pred_linear(output[start:stop]), targets[start:stop],
                                              ignore_index=self.pad_id, reduction="none")
        return nll


def init_paper_(*modules: nn.Module, scale: float = 0.01, embed_scale: float = 0.1) -> None:
    """The paper's initialisation, in place: every parameter ~ U(-scale, scale), then every
    ``nn.Embedding`` weight ~ U(-embed_scale, embed_scale)."""
    for module in modules:
        for param in module.parameters():
            nn.init.uniform_(param, -scale, scale)
        for sub in module.modules():
            if isinstance(sub, nn.Embedding):
                nn.init.uniform_(sub.weight, -embed_scale, embed_scale)

