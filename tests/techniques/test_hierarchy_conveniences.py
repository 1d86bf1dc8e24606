"""Hierarchy conveniences for data as users bring it: a decade level for dates, a prefix
hierarchy for postcodes of any country, and ARX files with repeated identical rows."""

from __future__ import annotations

import pandas as pd
import pytest

from deidflow.errors import InputError
from deidflow.policy import Hierarchy
from deidflow.risk.encoding import read_arx_hierarchy
from deidflow.techniques.hierarchies import encode_qi, generalise_values


def test_date_decade_level_is_opt_in():
    dates = pd.Series(["1984-03-07", "1989-12-31", "1990-01-01", None])
    plain = encode_qi("d", dates, Hierarchy(kind="date"))
    with_decade = encode_qi("d", dates, Hierarchy(kind="date", decade=True))
    assert plain.n_levels == 5 and with_decade.n_levels == 6
    assert list(generalise_values("d", dates, Hierarchy(kind="date", decade=True), 4)[:3]) == [
        "1980s", "1980s", "1990s"]
    assert generalise_values("d", dates, Hierarchy(kind="date", decade=True), 4).isna().iloc[3]
    assert (generalise_values("d", dates[:3], Hierarchy(kind="date", decade=True), 5) == "*").all()
    with pytest.raises(ValueError, match="decade"):
        Hierarchy(kind="age", decade=True)


def test_us_zip_codes_with_a_prefix_hierarchy():
    zips = pd.Series(["02134", "02139", "01841", "90210", None])
    h = Hierarchy(kind="prefix", keep=[3, 1])
    assert list(generalise_values("zip", zips, h, 1)[:4]) == ["021**", "021**", "018**", "902**"]
    assert list(generalise_values("zip", zips, h, 2)[:4]) == ["0****", "0****", "0****", "9****"]
    assert (generalise_values("zip", zips[:4], h, 3) == "*").all()
    # the Chinese postcode kind refuses them and names the prefix hierarchy as the fix
    with pytest.raises(InputError) as err:
        encode_qi("zip", zips, Hierarchy(kind="postcode"))
    assert "kind: prefix" in err.value.fix


def test_prefix_default_drops_one_character_per_level():
    h = Hierarchy(kind="prefix")
    q = encode_qi("c", pd.Series(["E11.9", "E11.2", "I10"]), h)
    assert list(q.decode(1)) == ["E11.*", "E11.*", "I10"]  # keeps 4: I10 is kept whole
    assert list(q.decode(3)) == ["E1***", "E1***", "I1*"]
    assert list(q.decode(q.n_levels - 1)) == ["*", "*", "*"]
    with pytest.raises(ValueError, match="decreasing"):
        Hierarchy(kind="prefix", keep=[1, 3])


def test_arx_file_with_a_repeated_identical_row(tmp_path, datasets):
    path = tmp_path / "age.csv"
    path.write_text("1;[0,4];*\n2;[0,4];*\n2;[0,4];*\n")
    table = read_arx_hierarchy(str(path))
    assert list(table.index) == ["1", "2"]
    path.write_text("1;[0,4];*\n2;[0,4];*\n2;[0,9];*\n")
    with pytest.raises(InputError) as err:
        read_arx_hierarchy(str(path))
    assert err.value.row == 3 and "differ" in err.value.message


def test_arx_fars_age_hierarchy_is_accepted(datasets):
    path = datasets / "arx_benchmark" / "fars" / "fars_int_hierarchy_iage.csv"
    raw = pd.read_csv(path, sep=";", header=None, dtype=str)
    assert raw.duplicated().any()  # the file as ARX ships it has a repeated row
    table = read_arx_hierarchy(str(path))
    assert table.index.is_unique and len(table) == len(raw.drop_duplicates())
