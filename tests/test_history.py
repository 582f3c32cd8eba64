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
