"""The gate's independent check: the input's own identifier values found in released text
however they are written (full-width, regrouped), whatever the scrubber's recognisers say;
and the explanation names column, kind and count."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from deidflow.validation import direct
from deidflow.validation.expectations import identifier_hits
from deidflow.validation.sets import StringSet


def test_known_values_are_found_normalised():
    known = StringSet(["13812345678", "王小明", "YB20230001"])
    texts = pa.array(["电话１３８１２３４５６７８", "电话138 1234-5678", "医保YB20230001", "主治王小明",
                      "电话13812345679", "无", None])
    assert direct.known_hits(texts, known).tolist() == [True, True, True, True, False, False, False]


def test_a_leak_the_recognisers_miss_is_still_caught_and_named():
    # a staff name has no shape: only the known value finds it
    known = StringSet(["夏莹", "13812345678"])
    notes = pd.Series(["记录医师：夏莹", "记录医师：[姓名]", "联系１３８ １２３４ ５６７８", "记录医师：夏莹"],
                      dtype="string")
    hits = identifier_hits(notes, known)
    assert hits["rows"] == 3
    assert hits["by_kind"][direct.KNOWN_KIND] == 3 and hits["by_kind"]["mobile"] == 1
    text = direct.explain("text", hits)
    assert text.startswith("'text': 3 row(s) with known identifier of the input 3, mobile 1")
    assert "夏莹" not in text and "138" not in text


def test_the_fix_points_at_scrubbing_not_risk():
    fix = direct.gate_fix(["expect_no_direct_identifiers", "expect_subjects_to_be_k_anonymous"])
    assert "scrub" in fix and "relax" not in fix
    assert direct.gate_fix(["expect_subjects_to_be_k_anonymous"]) is None


def test_leak_rows_name_rows_only(tmp_path):
    frame = pd.DataFrame({"text": ["无", "电话13812345678", "夏莹查房", None], "n": [1, 2, 3, 4]})
    rows = direct.leak_rows({"notes": frame}, [{"type": direct.DIRECT_TYPE, "table": "notes"}],
                            StringSet(["夏莹"]))
    assert rows == {"notes": {"text": [1, 2]}}
    path = direct.write_leak_log(tmp_path / "gate" / "r.json", rows)
    assert (path.stat().st_mode & 0o777) == 0o600 and "夏莹" not in path.read_text()


def test_leak_rows_of_a_large_column_are_found_slice_by_slice(monkeypatch):
    # a notes column past Arrow's 2 GB string limit is searched in the gate's slices: row
    # numbers are the column's, whatever the slicing
    from deidflow.validation import expectations

    short = ["无", "电话13812345678", "夏莹查房", None, "记录：[姓名]", "夏莹"] * 7
    # short texts are searched once per distinct value, notes (long texts) row by row
    frame = pd.DataFrame({"text": short, "note": [None if t is None else t + "。" * 80 for t in short]})
    failed = [{"type": direct.DIRECT_TYPE, "table": "notes"}]
    whole = direct.leak_rows({"notes": frame}, failed, StringSet(["夏莹"]))
    monkeypatch.setattr(expectations, "SLICE_BYTES", 40)  # a few rows a slice
    assert direct.leak_rows({"notes": frame}, failed, StringSet(["夏莹"])) == whole
    rows = [i + o for i in range(0, 42, 6) for o in (1, 2, 5)]
    assert whole["notes"] == {"text": rows, "note": rows}
    # only the columns the gate named, where it named some
    named = [{"type": direct.DIRECT_TYPE, "table": "notes", "columns": ["note"]}]
    assert direct.leak_rows({"notes": frame}, named, StringSet(["夏莹"])) == {"notes": {"note": rows}}


def test_a_large_column_is_normalised_in_slices_alike(monkeypatch):
    texts = pa.array(["电话１３８１２３４５６７８", None, "电话138 1234-5678", "无"] * 50)
    whole = direct.normalised(texts)
    monkeypatch.setattr(direct, "_SLICE_BYTES", 64)  # many slices, on two threads
    assert direct.normalised(texts).equals(whole)
    assert whole[0].as_py() == "电话13812345678" and whole[2].as_py() == "电话13812345678"


def test_a_large_column_checks_detectors_and_known_values_side_by_side(monkeypatch):
    """Above CONCURRENT_BYTES the two checks run beside each other on all texts: the same
    rows and kinds as one after the other."""
    from deidflow.validation import expectations

    known = StringSet(["夏莹", "13812345678"])
    notes = pd.Series(["记录医师：夏莹", "记录医师：[姓名]", "联系１３８ １２３４ ５６７８", "电话13900001111",
                       None] * 3, dtype="string")
    before = identifier_hits(notes, known)
    monkeypatch.setattr(expectations, "CONCURRENT_BYTES", 1)
    assert identifier_hits(notes, known) == before and before["rows"] == 9
    monkeypatch.setattr(expectations, "SLICE_BYTES", 20)  # a few texts per slice
    assert identifier_hits(notes, known) == before


def test_long_texts_searched_row_by_row_count_as_the_distinct_values_do(monkeypatch):
    """Notes (long, nearly all distinct) are searched row by row instead of distinct value by
    distinct value: the same rows and kinds, repeats and missing values included."""
    from deidflow.validation import expectations

    known = StringSet(["夏莹", "13812345678"])
    pad = "患者自诉症状逐渐加重，休息后无明显缓解。"
    notes = pd.Series([pad + "记录医师：夏莹", pad + "记录医师：[姓名]", pad + "联系１３８ １２３４ ５６７８",
                       pad + "电话13900001111", None] * 3 + [pad + "记录医师：夏莹"], dtype="string")
    row_by_row = identifier_hits(notes, known)
    assert len(expectations._texts_to_search(notes)[0]) == 13  # every row but the missing
    monkeypatch.setattr(expectations, "FREE_TEXT_BYTES", 1 << 30)  # distinct values first
    assert len(expectations._texts_to_search(notes)[0]) == 4  # the distinct texts
    assert identifier_hits(notes, known) == row_by_row
    assert row_by_row["rows"] == 10 and row_by_row["by_kind"][direct.KNOWN_KIND] == 7
