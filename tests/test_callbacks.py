"""Progress bar and print logger output."""
import io
import sys

import pytest
import torch

from aggressive_vi import VAE, AggressiveTrainer, FixedEpochs, FixedSteps, PrintLogger, ProgressBar
from conftest import BernoulliDecoder, MLPEncoder, binary_data


def fit_with(callback, epochs=2):
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.1),
                                torch.optim.SGD(vae.decoder.parameters(), lr=0.1),
                                stopping=FixedEpochs(1), window=2, callbacks=[callback])
    batches = [binary_data(8, seed=i) for i in range(3)]
    trainer.fit(batches, val_loader=batches[:1], epochs=epochs)


def test_plain_progress_line_shows_loss_kl_mi_and_phase(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import fails: the plain fallback
    stream = io.StringIO()
    fit_with(ProgressBar(refresh_every=1, stream=stream))
    out = stream.getvalue()
    assert "epoch 0 [1/3] loss" in out and "aggr(" in out
    assert "mi " not in out.split("epoch 1")[0]  # no validation MI before the first epoch ends
    assert "epoch 1 [3/3]" in out and " mi " in out.split("epoch 1")[1] and "basic" in out


def test_tqdm_progress_bar_when_installed():
    pytest.importorskip("tqdm")
    stream = io.StringIO()
    fit_with(ProgressBar(refresh_every=1, stream=stream))
    assert "epoch 1" in stream.getvalue() and "mi " in stream.getvalue()


def test_print_logger_writes_one_line_per_epoch_and_the_switch():
    stream = io.StringIO()
    fit_with(PrintLogger(stream=stream), epochs=2)
    lines = stream.getvalue().splitlines()
    # one line per epoch; the line of epoch 0, in which the switch happened (at its end), says so
    assert len(lines) == 2 and lines[0].startswith("epoch   0") and lines[1].startswith("epoch   1")
    assert "aggressive (inner" in lines[0]
    assert "then basic: left the aggressive phase after 3 decoder updates" in lines[0]
    assert "basic" in lines[1] and "aggressive" not in lines[1]


def test_progress_bar_rejects_bad_refresh():
    with pytest.raises(ValueError, match="refresh_every must be a positive int; got 0"):
        ProgressBar(refresh_every=0)


def test_verbose_and_progress_lines_do_not_share_a_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # the plain bar, which leaves a \r line open
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.1),
                                torch.optim.SGD(vae.decoder.parameters(), lr=0.1), stopping=FixedSteps(1),
                                window=2, verbose=True, progress=True)
    monkeypatch.setattr(sys, "stderr", sys.stdout)  # one stream, as on a terminal
    trainer.callbacks[0].stream = sys.stdout
    trainer.fit([binary_data(8), binary_data(8, seed=1)], val_loader=[binary_data(8)], epochs=1)
    lines = capsys.readouterr().out.split("\n")
    # the switch (after the first update) and the epoch line each start a line of their own
    assert any(line.startswith("epoch   0 |") and "left the aggressive phase after 1 decoder" in line
               for line in lines)


def test_switch_message_does_not_follow_a_tqdm_bar_on_its_line(capsys):
    """With tqdm the bar is closed before the epoch line (which announces the switch), so on a
    terminal (or in a log read line by line, \\r and \\n alike) that line does not trail the bar's text."""
    pytest.importorskip("tqdm")
    import re

    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.1),
                                torch.optim.SGD(vae.decoder.parameters(), lr=0.1), stopping=FixedSteps(1),
                                window=2, verbose=True, progress=True)
    trainer.callbacks[0].stream = sys.stdout  # bar and messages on one stream, as on a terminal
    trainer.fit([binary_data(8), binary_data(8, seed=1)], val_loader=[binary_data(8)], epochs=1)
    segments = [s.strip() for s in re.split(r"[\r\n]", capsys.readouterr().out)]
    assert any(s.startswith("epoch   0 |") and "left the aggressive phase" in s for s in segments), segments
