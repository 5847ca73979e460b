"""io: one echo-time rule for every reader, one cell rule for every table."""

import json
import math

import numpy as np
import pytest

from microbleeds.errors import InputError
from microbleeds.io.sidecar import echo_times_ms, read_echo_times, read_sidecar
from microbleeds.io.tables import format_value, json_text, read_json, read_tsv, tsv_text


@pytest.mark.parametrize("stored, ms", [(0.02, [20.0]), ([0.004, 0.008], [4.0, 8.0]), (25, [25.0])])
def test_echo_time_seconds_or_ms(stored, ms):
    assert echo_times_ms({"EchoTime": stored}) == pytest.approx(ms)


@pytest.mark.parametrize("bad", [None, "twenty", [0.02, -1], [], float("nan")])
def test_unusable_echo_time_is_none(bad):
    assert echo_times_ms({} if bad is None else {"EchoTime": bad}) is None


def test_sidecar_beside_the_file(tmp_path):
    scan = tmp_path / "sub-01_echo-1_MEGRE.nii.gz"
    (tmp_path / "sub-01_echo-1_MEGRE.json").write_text(json.dumps({"EchoTime": 0.0052, "MagneticFieldStrength": 3}))
    assert read_sidecar(scan)["MagneticFieldStrength"] == 3
    assert read_echo_times([scan]) == pytest.approx([5.2])
    assert read_echo_times([tmp_path / "other.nii"]) is None


def test_unreadable_sidecar_is_ignored_with_a_warning(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.warns(UserWarning, match="x.json"):
        assert read_sidecar(tmp_path / "x.nii.gz") == {}


def test_cells_and_tables_round_trip(tmp_path):
    assert [format_value(v) for v in (None, math.nan, True, np.float32(1.5), 3, "a")] == \
        ["n/a", "n/a", "true", "1.5000", "3", "a"]
    path = tmp_path / "t.tsv"
    path.write_text(tsv_text([{"a": 1.0, "b": None}, {"a": 2}], ("a", "b")))
    columns, rows = read_tsv(path)
    assert columns == ["a", "b"] and rows == [{"a": "1.0000", "b": "n/a"}, {"a": "2", "b": ""}]
    (tmp_path / "s.json").write_text(json_text({"x": np.int64(2), "y": np.nan, "z": np.arange(2)}))
    assert read_json(tmp_path / "s.json") == {"x": 2, "y": None, "z": [0, 1]}


def test_bad_tables_name_the_file(tmp_path):
    with pytest.raises(InputError, match="missing.tsv"):
        read_tsv(tmp_path / "missing.tsv")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(InputError, match="list.json: JSON is not an object"):
        read_json(tmp_path / "list.json")


def test_text_cells_stay_one_cell(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text(tsv_text([{"note": 'a\tb\nc', "q": '"quoted" start'}], ("note", "q")))
    _, rows = read_tsv(path)
    assert rows == [{"note": "a b c", "q": '"quoted" start'}]
