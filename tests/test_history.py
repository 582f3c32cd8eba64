"""History: records, columns, JSON."""
import json

import pytest

from aggressive_vi import EpochRecord, History


def record(epoch, mi):
    return EpochRecord(epoch=epoch, steps=3, loss=1.0, reconstruction=0.8, kl=0.2, kl_weight=1.0,
                       aggressive=epoch == 0, aggressive_steps=3 * (epoch == 0), inner_steps_mean=30.0,
                       val_mi=mi)


def test_columns_slices_and_json_round_trip(tmp_path):
    h = History([record(0, 0.5), record(1, 0.7)])
    assert h.column("val_mi") == [0.5, 0.7] and len(h[1:]) == 1 and h[-1].epoch == 1
    path = tmp_path / "history.json"
    h.to_json(path)
    loaded = History.from_dicts(json.loads(path.read_text()))
    assert loaded.to_dicts() == h.to_dicts()
    with pytest.raises(KeyError, match="unknown column 'mi'"):
        h.column("mi")


def _fit(stopping, epochs=2, batches=3):
    import torch

    from aggressive_vi import VAE, AggressiveTrainer
    from conftest import BernoulliDecoder, MLPEncoder, binary_data

    torch.manual_seed(0)
    vae = VAE(MLPEncoder(), BernoulliDecoder())
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.1),
                                torch.optim.SGD(vae.decoder.parameters(), lr=0.1),
                                stopping=stopping, window=2)
    data = [binary_data(8, seed=i) for i in range(batches)]
    return trainer.fit(data, val_loader=data[:1], epochs=epochs)


def test_history_records_the_decoder_update_at_which_the_aggressive_phase_ended():
    from aggressive_vi import Always, FixedEpochs, FixedSteps

    mid = _fit(FixedSteps(4))  # decided before update 5, in epoch 1
    assert mid.left_aggressive_at == 4 and mid.column("left_aggressive_at") == [None, 4]
    end = _fit(FixedEpochs(1))  # decided at the end of epoch 0, after its 3 updates
    assert end.left_aggressive_at == 3 and end.column("left_aggressive_at") == [3, None]
    assert _fit(Always()).left_aggressive_at is None
    assert History.from_dicts(mid.to_dicts()).left_aggressive_at == 4


def test_plot_draws_the_training_dynamics_figure_with_the_switch(tmp_path):
    rows = [dict(record(e, mi).to_dict(), val_kl=kl, steps=3) for e, (mi, kl) in
            enumerate([(0.2, 0.5), (0.6, 1.0), (0.7, 1.4)])]
    rows[1]["left_aggressive_at"] = 6
    fig = History.from_dicts(rows).plot(tmp_path / "dynamics.png", title="run")
    assert (tmp_path / "dynamics.png").stat().st_size > 1000
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["I_q"].get_xdata()) == [3, 6, 9] and list(lines["I_q"].get_ydata()) == [0.2, 0.6, 0.7]
    assert list(lines["E_x KL(q(z|x)||p(z))"].get_ydata()) == [0.5, 1.0, 1.4]
    assert list(lines["KL(q(z)||p(z))"].get_ydata()) == pytest.approx([0.3, 0.4, 0.7])
    assert list(lines["left the aggressive phase"].get_xdata()) == [6, 6]
    with pytest.raises(ValueError, match="needs validation MI and KL"):
        History([EpochRecord(epoch=0, steps=1, loss=1.0, reconstruction=1.0, kl=0.0, kl_weight=1.0,
                             aggressive=False, aggressive_steps=0, inner_steps_mean=0.0)]).plot()
