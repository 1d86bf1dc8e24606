"""No direct identifier left: resident IDs, mobiles, e-mails and the input's own identifier
strings, in free text and in every column; pseudonyms are not mistaken for phone numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.identifiers import check_chars
from deidflow.validation.expectations import (
    Chunks, ExpectNoDirectIdentifiers, StringSet, runtime_set,
)

from .gxhelp import raised


def resident_id(first17: str) -> str:
    digits = np.array([[int(c) for c in first17]])
    return first17 + str(check_chars(digits)[0])


ID = resident_id("11010519900307123")
KNOWN = ["张伟", ID, "13912345678", "YB1234567890"]


def pseudonyms(n: int, seed: int = 0) -> list[str]:
    raw = np.random.default_rng(seed).bytes(10 * n).hex()
    return ["P" + raw[i:i + 20] for i in range(0, 20 * n, 20)]


def check(gx_validate, df: pd.DataFrame, whole: list[str], known=KNOWN):
    with runtime_set(known) as ref:
        [res] = gx_validate(df, ExpectNoDirectIdentifiers(
            whole_value_columns=whole, known_identifiers_ref=ref, n_known_identifiers=len(known)))
    assert not raised(res), res.exception_info
    return res


def clean_notes() -> pd.DataFrame:
    return pd.DataFrame({
        "patient_id": pseudonyms(4),
        "department": ["内分泌科", "心内科", "内分泌科", "呼吸科"],
        "text": ["患者[姓名]，血糖控制可，HbA1c 7.2%。", "血压 150/95 mmHg，复诊 2023年5月。",
                 "联系电话[电话]。", "无特殊。"],
    })


def test_clean_table_passes(gx_validate):
    res = check(gx_validate, clean_notes(), ["patient_id"])
    assert res.success is True and res.result["observed_value"] == 0
    assert res.result["columns_checked"] == 3


@pytest.mark.parametrize("text,kind", [
    ("患者电话 138-1234-5678，请随访。", "mobile"),
    (f"身份证号 {ID[:6]} {ID[6:14]} {ID[14:]}。", "resident_id"),
    ("邮箱 zhang.wei@example.com 已通知。", "email"),
])
def test_identifier_in_free_text_fails(gx_validate, text, kind):
    df = clean_notes()
    df.loc[2, "text"] = text
    res = check(gx_validate, df, ["patient_id"])
    assert res.success is False
    bad = res.result["columns_with_identifiers"]
    assert list(bad) == ["text"] and bad["text"]["rows"] == 1
    assert kind in bad["text"]["kinds"]
    expl = ExpectNoDirectIdentifiers.explain(res.expectation_config.kwargs, res.result, False)
    assert "'text': 1 row(s)" in expl and kind in expl
    assert text not in expl and "138" not in expl  # numbers, never the values


def test_known_name_of_the_input_fails(gx_validate):
    df = clean_notes()
    df.loc[0, "text"] = "张伟今日复诊。"
    res = check(gx_validate, df, ["patient_id"])
    assert res.success is False
    assert "known identifier of the input" in res.result["columns_with_identifiers"]["text"]["kinds"]
    assert check(gx_validate, df, ["patient_id"], known=["李娜"]).success is True


def test_raw_identifier_in_a_link_key_column_fails(gx_validate):
    """A pseudonymisation that wrote the original value through is caught as a whole value."""
    df = clean_notes()
    df.loc[1, "patient_id"] = "YB1234567890"  # an insurance number of the input
    res = check(gx_validate, df, ["patient_id"])
    assert res.success is False and res.result["columns_with_identifiers"]["patient_id"]["rows"] == 1
    df.loc[1, "patient_id"] = ID  # a resident ID is refused even when it is not a known one
    assert check(gx_validate, df, ["patient_id"], known=[]).success is False


def test_unexpected_identifier_column_is_checked(gx_validate):
    df = clean_notes().assign(mobile=["13812345678", "13912345679", None, "15012345678"])
    res = check(gx_validate, df, ["patient_id"])
    assert res.success is False
    assert res.result["columns_with_identifiers"]["mobile"]["rows"] == 3


def test_integer_mobile_column_fails(gx_validate):
    df = clean_notes().assign(phone=np.array([13812345678, 1, 2, 3], dtype=np.int64))
    res = check(gx_validate, df, ["patient_id"])
    assert res.success is False and res.result["columns_with_identifiers"]["phone"]["rows"] == 1


def test_random_pseudonyms_are_not_phone_numbers(gx_validate):
    """20 hex characters hold an 11-digit mobile-shaped run about 8 times in 10,000: searched
    as text they would fail every large release. As whole values none is an identifier."""
    ids = pseudonyms(20_000, seed=7)
    df = pd.DataFrame({"patient_id": ids})
    from deidflow.techniques.scrub import find_identifiers

    searched = int(find_identifiers(pd.Series(ids, dtype="string"), None).sum())
    assert searched > 0  # the hazard is real for this sample...
    res = check(gx_validate, df, ["patient_id"])
    assert res.success is True  # ...and the gate does not fall for it


def test_run_without_the_known_set_is_an_error_not_a_pass(gx_validate):
    """A suite replayed outside validate_release cannot find its run-time set: GX reports an
    exception (trap 1), which the gate reads as a failure."""
    df = clean_notes()
    [res] = gx_validate(df, ExpectNoDirectIdentifiers(
        whole_value_columns=["patient_id"], known_identifiers_ref="runtime:gone",
        n_known_identifiers=4))
    assert res.success is False and raised(res)


def brute(texts: list[str | None], known: list[str]) -> list[bool]:
    return [t is not None and any(k in t for k in known if len(k) >= 2) for t in texts]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text("张伟李娜1380 ", max_size=12)), min_size=1, max_size=20),
       st.lists(st.text("张伟李娜1380 ", min_size=1, max_size=4), max_size=8),
       st.booleans())
def test_known_substrings_match_a_brute_force_search(texts, known, windows):
    """Both search paths (RE2 alternation for small sets, hashed windows for large ones) find
    exactly the texts that contain a known string of two characters or more."""
    ss = StringSet(known)
    if windows:
        ss.SMALL = -1  # force the window path
    got = ss.substring_hits(pd.Series(texts, dtype="string[pyarrow]"))
    assert got.tolist() == brute(texts, known)


def test_a_large_known_set_is_searched_by_windows():
    rng = np.random.default_rng(3)
    known = [f"YB{n}" for n in rng.integers(10**9, 10**10, 30_000)] + ["欧阳娜娜"]
    ss = StringSet(known)
    assert len(ss) > StringSet.SMALL
    texts = pd.Series(["无特殊。", f"医保 {known[123]} 已核。", "患者欧阳娜娜复诊", None],
                      dtype="string[pyarrow]")
    assert ss.substring_hits(texts).tolist() == [False, True, True, False]
    assert ss.contains(pd.Series([known[5], "YB1", None], dtype=object)).tolist() == [True, False, False]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text("张伟李娜1380 ", min_size=30, max_size=80), min_size=1, max_size=8),
       st.lists(st.text("张伟李娜1380 ", min_size=2, max_size=5), min_size=1, max_size=6))
def test_long_texts_are_searched_from_member_first_characters(texts, known):
    """Long texts through the pruned window search (`validation.windows`); same answer."""
    ss = StringSet(known)
    ss.SMALL = -1
    got = ss.substring_hits(pd.Series(texts, dtype="string[pyarrow]"))
    assert got.tolist() == brute(texts, known)


def _arrow_chunks(values: list[str | None], cut: int, large: bool) -> pa.ChunkedArray:
    """The values as a chunked Arrow array whose chunks are slices (non-zero offsets) of
    larger arrays, as a pandas column read in blocks is."""
    typ = pa.large_string() if large else pa.string()
    pad = pa.array(["pad", None, *values, "pad"], type=typ)
    inner = pad.slice(2, len(values))
    cut = min(cut, len(values))
    return pa.chunked_array([inner.slice(0, cut), inner.slice(cut)], type=typ)


_TEXT = st.one_of(st.none(), st.text("张伟1380 @.\t", max_size=6))


def _sets(known: list) -> list[StringSet]:
    """The same members held in memory and as a source read in chunks (on disk in a run)."""
    arrays = [pa.array(known[:3], type=pa.string()), pa.array(known[3:], type=pa.large_string())]
    return [StringSet(pa.array(known, type=pa.string())), StringSet(Chunks(lambda: iter(arrays)))]


@settings(max_examples=80, deadline=None)
@given(st.lists(_TEXT, min_size=1, max_size=30), st.lists(_TEXT, max_size=12),
       st.integers(0, 30), st.booleans())
def test_whole_value_membership_matches_a_python_set(values, known, cut, large):
    """`contains` (byte-signature prefilter, a binary search of the member hashes, then the
    strings compared) equals set membership, for lists, Series and sliced chunked Arrow
    arrays alike, whether the members are held or read from a source; missing and empty are
    never members."""
    members = {k for k in known if k}
    expected = [v is not None and v in members for v in values]
    for ss in _sets(known):
        assert len(ss) == len([k for k in known if k])  # non-empty members as given
        assert ss.contains(values).tolist() == expected
        assert ss.contains(pd.Series(values, dtype="str")).tolist() == expected
        assert ss.contains(_arrow_chunks(values, cut, large)).tolist() == expected


def test_a_hash_hit_is_confirmed_by_the_strings(monkeypatch):
    """Different strings with one hash (forced: every hash is 0) neither hide a member nor
    admit a stranger, held or read from a source."""
    import deidflow.validation.sets as dx

    monkeypatch.setattr(dx, "_hash64", lambda arr: np.zeros(len(arr), dtype=np.uint64))
    for ss in _sets(["P0001", "P0002", "P0003"]):
        assert ss.contains(["P0003", "P0002", "P0004", None, "P0001"]).tolist() == \
            [True, True, False, False, True]
        assert ss.substring_hits(["患者P0002复诊", "P0004", "P00"]).tolist() == [True, False, False]


def test_a_set_from_a_source_keeps_hashes_not_strings_and_rereads_only_to_confirm():
    rng = np.random.default_rng(5)
    known = [f"YB{n}" for n in rng.integers(10**9, 10**10, 30_000)] + ["欧阳娜娜", None, ""]
    reads = []

    def read():
        reads.append(1)
        yield pa.array(known[:10_000])
        yield pa.chunked_array([pa.array(known[10_000:], type=pa.large_string())])

    ss = StringSet(Chunks(read))
    held = StringSet(known)
    assert ss.members is None and len(reads) == 1 and len(ss) == len(held) == 30_001
    clean = pd.Series(["无特殊。", "YB123", None, "P0123456789abcdef0123"], dtype="str")
    assert not ss.contains(clean).any() and not ss.substring_hits(clean[:3]).any()
    assert ss.lengths == held.lengths
    n = len(reads)
    texts = pd.Series(["无特殊。", f"医保 {known[123]} 已核。", "患者欧阳娜娜复诊", None], dtype="str")
    assert ss.substring_hits(texts).tolist() == held.substring_hits(texts).tolist() == \
        [False, True, True, False]
    assert len(reads) > n  # a hit is confirmed on the strings, read again


def test_a_source_that_changes_under_the_run_is_an_error():
    batches = [pa.array(["张伟", "13912345678"])]
    ss = StringSet(Chunks(lambda: iter(list(batches))))
    batches.append(pa.array(["李娜"]))
    with pytest.raises(RuntimeError, match="changed"):
        ss.contains(["张伟"])


def test_hash64_depends_on_every_byte_and_the_length():
    from deidflow.validation.expectations import _hash64

    values = ["", "a", "a\x00", "ab", "abcdefgh", "abcdefgi", "abcdefghX", "Xbcdefgh", "张伟",
              "张伟伟", "P" + "0" * 20, "P" + "0" * 19 + "1"]
    arr = _arrow_chunks(values, 5, large=True)
    hashes = _hash64(arr)
    assert len(set(hashes.tolist())) == len(values)
    assert (_hash64(pa.array(values)) == hashes).all()  # chunking and offsets do not matter


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.sampled_from(
    [ID, f" {ID}", f"{ID[:6]}-{ID[6:]}", "13912345678", "+86 139 1234 5678", "a.b@example.cn",
     "YB1234567890", " YB1234567890\t", "张伟", "P0123456789abcdef0123", "1391234567",
     ID[:-1] + ("0" if ID[-1] != "0" else "1"), "", "@"])), min_size=1, max_size=25),
    st.integers(0, 25))
def test_whole_value_detector_matches_the_regexes_row_by_row(values, cut):
    """The prefilters (first byte, '@') never hide a whole-value identifier: the result equals
    the patterns and the known set applied to every value."""
    from deidflow.identifiers import valid_resident_ids
    from deidflow.validation.expectations import WHOLE_VALUE_PATTERNS, whole_value_identifiers

    known = StringSet(KNOWN)
    expected = []
    for v in values:
        if v is None:
            expected.append(False)
            continue
        s = pd.Series([v], dtype="string")
        is_id = bool(s.str.fullmatch(WHOLE_VALUE_PATTERNS["resident_id"]).iloc[0]) and bool(
            valid_resident_ids(s.str.replace(r"[\s\-]", "", regex=True).str.upper()).iloc[0])
        other = any(bool(s.str.fullmatch(WHOLE_VALUE_PATTERNS[k]).iloc[0])
                    for k in ("mobile", "email"))
        expected.append(is_id or other or v in KNOWN or v.strip() in KNOWN)
    got = whole_value_identifiers(_arrow_chunks(values, cut, large=True), known)
    assert got.tolist() == expected
