"""Keyed pseudonyms: deterministic under one key, unrelated across keys (property tests),
joinable across tables, reversible only with the hospital's key, parameters checked."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.errors import KeyCustodyError, PolicyError
from deidflow.techniques import registry
from deidflow.techniques.pseudonymise import pseudonyms, reidentify, reversible_pseudonyms

from .helpers import MASTER, col, ctx, ring

texts = st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(values=texts, seed=st.binary(min_size=32, max_size=32))
def test_deterministic_under_one_key_and_injective(values, seed):
    s = pd.Series(values)
    a = pseudonyms(s, seed)
    b = pseudonyms(s.sample(frac=1, random_state=1).sort_index(), seed)
    assert (a == b).all()
    # equal inputs share a pseudonym, distinct inputs never do
    assert a.groupby(s.to_numpy()).nunique().eq(1).all()
    assert a.nunique() == s.nunique()
    assert a.str.fullmatch(r"[0-9a-f]{20}").all()


@settings(max_examples=60, deadline=None)
@given(values=texts, k1=st.binary(min_size=32, max_size=32), k2=st.binary(min_size=32, max_size=32))
def test_different_keys_give_unrelated_pseudonyms(values, k1, k2):
    if k1 == k2:
        return
    s = pd.Series(values)
    a, b = pseudonyms(s, k1), pseudonyms(s, k2)
    assert not (a == b).any()
    assert not set(a) & set(b)


def test_stable_across_tables_types_and_recipients():
    spec = col("link_key", "pseudonymise", {"scope": "patient"})
    tech = registry.get("pseudonymise")
    patients = pd.Series(["1001", "1002", None], name="patient_id")
    labs = pd.Series([1002, 1001, 1001], name="patient_id")  # ints in another table
    p = tech.apply(patients, spec, ctx(patients, keyring=ring()))
    lab = tech.apply(labs, spec, ctx(labs, keyring=ring()))
    assert lab.tolist() == [p[1], p[0], p[0]] and pd.isna(p[2])
    assert p[0].startswith("P") and len(p[0]) == 21
    other = tech.apply(patients, spec, ctx(patients, keyring=ring(recipient="rcp-b")))
    assert other[0] != p[0] and other[1] != p[1]


def test_describe_records_fingerprints_never_keys():
    spec = col("link_key", "pseudonymise", {"scope": "patient"})
    r = ring()
    d = registry.get("pseudonymise").describe(spec, ctx(pd.Series(["x"]), keyring=r))
    # the default CMAC key is bound to its algorithm: not the (HMAC) key of the same scope
    assert d["key_fingerprint"] == r.fingerprint("patient", algorithm="aes-cmac") != r.fingerprint("patient")
    assert d["master_key_fingerprint"] == r.fingerprint()
    assert d["params"]["method"] == "cmac" and "AES-CMAC" in d["params"]["algorithm"]
    text = repr(d)
    assert MASTER.hex() not in text and r.derive("patient", algorithm="aes-cmac").hex() not in text
    hmac = registry.get("pseudonymise").describe(col("link_key", "pseudonymise", {"scope": "patient", "method": "hmac"}),
                                                 ctx(pd.Series(["x"]), keyring=r))
    assert hmac["key_fingerprint"] == r.fingerprint("patient") and "HMAC-SHA256" in hmac["params"]["algorithm"]


def test_reversible_roundtrip_only_with_the_hospital_key(tmp_path):
    from deidflow.keys import create_key_file

    kf = tmp_path / "reid.key"
    create_key_file(kf, 64)
    r = ring(reidentification_key_file=kf)
    values = pd.Series(["110105194912310021", "P2", None, "P2"], name="resident_id")
    spec = col("direct_identifier", "pseudonymise", {"scope": "resident", "reversible": True})
    tokens = registry.get("pseudonymise").apply(values, spec, ctx(values, keyring=r))
    assert tokens[1] == tokens[3] and pd.isna(tokens[2]) and tokens[0] != values[0]
    back = reidentify(tokens, r.reidentification_key("resident"))
    assert back.tolist()[:2] == ["110105194912310021", "P2"]
    wrong = ring(recipient="rcp-b", reidentification_key_file=kf).reidentification_key("resident")
    with pytest.raises(KeyCustodyError) as exc:
        reidentify(tokens, wrong)
    assert tokens[0] not in str(exc.value)
    tampered = tokens.copy()
    tampered[0] = tampered[0][:-2] + ("00" if not tampered[0].endswith("00") else "11")
    with pytest.raises(KeyCustodyError):
        reidentify(tampered.iloc[:1], r.reidentification_key("resident"))
    # deterministic under one key
    assert (reversible_pseudonyms(values, r.reidentification_key("resident")).fillna("") == tokens.fillna("")).all()


def test_apply_without_keyring_fails_closed():
    with pytest.raises(KeyCustodyError):
        registry.get("pseudonymise").apply(pd.Series(["a"]), col("link_key", "pseudonymise"), ctx(pd.Series(["a"])))


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"length": 8}, "params.length"),
        ({"length": True}, "params.length"),
        ({"scope": ""}, "params.scope"),
        ({"reversible": "yes"}, "params.reversible"),
        ({"reversible": True, "length": 32}, "params.length"),
        ({"prefix": "TOO-LONG-PREFIX"}, "params.prefix"),
        ({"salt": "x"}, "unknown parameters"),
    ],
)
def test_check_refuses_bad_parameters_naming_the_column(params, fragment):
    with pytest.raises(PolicyError) as exc:
        registry.get("pseudonymise").check("patient_id", col("link_key", "pseudonymise", params))
    assert "patient_id" in str(exc.value) and fragment in str(exc.value)


def test_check_refuses_wrong_role():
    with pytest.raises(PolicyError, match="role 'sensitive'.*'lab_value'"):
        registry.get("pseudonymise").check("lab_value", col("sensitive", "pseudonymise"))


# --- AES-CMAC: the vectorised form is the standard one ----------------------------------------

import hashlib  # noqa: E402
import hmac as std_hmac  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from cryptography.hazmat.primitives import cmac  # noqa: E402
from cryptography.hazmat.primitives.ciphers import algorithms  # noqa: E402

from deidflow.errors import InputError  # noqa: E402
from deidflow.techniques import pseudonymise as ps  # noqa: E402
from deidflow.techniques.base import ApplyContext  # noqa: E402


def reference_cmac(key: bytes, message: bytes) -> bytes:
    c = cmac.CMAC(algorithms.AES(key))
    c.update(message)
    return c.finalize()


cjk = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)
any_text = st.one_of(
    st.just(""),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=100),
    st.text(cjk, max_size=33),  # 3 bytes each: up to 99 bytes
    st.text(max_size=25),  # any code point (up to 4 bytes each)
).filter(lambda v: len(v.encode("utf-8")) <= 100)


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.one_of(any_text, st.none()), max_size=40),
       key=st.one_of(st.binary(min_size=16, max_size=16), st.binary(min_size=32, max_size=32)))
def test_vectorised_cmac_equals_the_standard_cmac_byte_for_byte(values, key):
    tags = ps.cmac_tags(pa.array(values, type=pa.string()), key)
    for v, tag in zip(values, tags):
        if v is not None:
            assert tag.tobytes() == reference_cmac(key, v.encode("utf-8"))
    present = [v for v in values if v is not None]
    assert ps.cmac_digests(key, present) == b"".join(reference_cmac(key, v.encode("utf-8")) for v in present)


def test_cmac_rfc4493_vectors():
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    msg = bytes.fromhex(
        "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
        "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710")
    tags = ps.cmac_tags(pa.array([b"", msg[:16], msg[:40], msg], type=pa.binary()), key)
    assert [t.tobytes().hex() for t in tags] == [
        "bb1d6929e95937287fa37d129b756746",  # RFC 4493 §4 example 1 (empty)
        "070a16b46b4d4144f79bdd9dd04a287c",  # example 2 (16 bytes)
        "dfa66747de9ae63030ca32611497c827",  # example 3 (40 bytes)
        "51f0bebf7e3b9d92fc49741779363cfe",  # example 4 (64 bytes)
    ]


def test_default_is_cmac_under_a_key_bound_to_it_and_hmac_stays_selectable():
    r = ring()
    values = pd.Series(["P0000001", "张三", "P0000001", None], dtype="str", name="patient_id")
    tech = registry.get("pseudonymise")
    out = tech.apply(values, col("link_key", "pseudonymise", {"scope": "patient"}), ctx(values, keyring=r))
    assert isinstance(out.dtype, pd.StringDtype) and out.dtype.storage == "pyarrow"
    ckey = r.derive("patient", algorithm="aes-cmac")
    assert ckey != r.derive("patient")  # one derived key never serves two algorithms
    assert out[0] == "P" + reference_cmac(ckey, b"P0000001").hex()[:20] == out[2]
    assert out[1] == "P" + reference_cmac(ckey, "张三".encode()).hex()[:20] and pd.isna(out[3])
    spec = col("link_key", "pseudonymise", {"scope": "patient", "method": "hmac", "length": 40})
    tech.check("patient_id", spec)
    old = tech.apply(values, spec, ctx(values, keyring=r))
    # HMAC keeps its derivation, so `method: hmac` reproduces the pseudonyms of earlier releases
    want = std_hmac.new(r.derive("patient"), b"P0000001", hashlib.sha256).hexdigest()[:40]
    assert old[0] == "P" + want and old[1] != out[1]


@settings(max_examples=40, deadline=None)
@given(tables=st.lists(st.lists(st.one_of(st.sampled_from(["a", "b", "c", "长", "d" * 20]), st.text(max_size=6), st.none()),
                                max_size=30), min_size=1, max_size=5),
       method=st.sampled_from(["cmac", "hmac"]))
def test_memo_shared_by_a_partition_changes_no_pseudonym(tables, method):
    key = ring().derive("patient", algorithm=ps.METHODS[method][0])
    memo: dict = {}
    for values in tables:
        s = pd.Series(values, dtype="str")
        with_memo = ps.pseudonyms(s, key, prefix="P", method=method, memo=memo)
        alone = ps.pseudonyms(s, key, prefix="P", method=method)
        assert with_memo.isna().tolist() == s.isna().tolist()
        assert with_memo.fillna("").tolist() == alone.fillna("").tolist()
    assert key.hex() not in repr(memo)  # the memo keeps a digest of the key, never the key


def test_hmac_memo_hashes_only_values_not_seen_before_and_cmac_keeps_none(monkeypatch):
    key = ring().derive("encounter")
    memo: dict = {}
    ps.pseudonyms(pd.Series(["E1", "E2", "E3"], dtype="str"), key, prefix="E", method="hmac", memo=memo)
    seen: list[list] = []
    real = ps.hmac_digests
    monkeypatch.setattr(ps, "hmac_digests", lambda k, v: (seen.append(list(v)), real(k, v))[1])
    out = ps.pseudonyms(pd.Series(["E3", "E1", "E4", "E3", None, "E4"], dtype="str"), key, prefix="E",
                        method="hmac", memo=memo)
    assert seen == [["E4"]]
    assert out[0] == out[3] and out[2] == out[5] and pd.isna(out[4])
    entry = next(iter(memo.values()))
    assert entry.values.to_pylist() == ["E1", "E2", "E3", "E4"]
    # CMAC re-finds distinct values instead (cheaper than the lookup): nothing kept
    cmac_memo: dict = {}
    ps.pseudonyms(pd.Series(["E1"], dtype="str"), ring().derive("encounter", algorithm="aes-cmac"), memo=cmac_memo)
    assert cmac_memo == {}
    # a context carries the memo; by default each context has its own
    assert ApplyContext(table="t", column="c", subject_ids=pd.Series([], dtype="str")).memo == {}


@pytest.mark.parametrize("method, seen_first", [("cmac", False), ("hmac", False), ("hmac", True)])
def test_label_collision_refused(monkeypatch, method, seen_first):
    """Two distinct values with one label (forced here by a constant MAC) are refused: within
    a column, and for HMAC also when one was labelled in an earlier table of the partition."""
    key = ring().derive("patient", algorithm=ps.METHODS[method][0])
    memo: dict = {}
    if seen_first:
        ps.pseudonyms(pd.Series(["x"], dtype="str"), key, prefix="P", method=method, memo=memo)
    tag_of_x = ps._tags(method, pa.array(["x"], type=pa.large_string()), key)[0]
    monkeypatch.setattr(ps, "cmac_tags", lambda v, k: np.tile(tag_of_x, (len(v), 1)))
    monkeypatch.setattr(ps, "hmac_digests", lambda k, v: tag_of_x.tobytes() * len(v))
    values = pd.Series(["y"] if seen_first else ["x", "y"], dtype="str", name="patient_id")
    spec = col("link_key", "pseudonymise", {"scope": "patient", "method": method})
    context = ApplyContext(table="t", column="patient_id", subject_ids=values, keyring=ring(), memo=memo)
    with pytest.raises(InputError, match="same pseudonym") as exc:
        registry.get("pseudonymise").apply(values, spec, context)
    assert "patient_id" in str(exc.value) and key.hex() not in str(exc.value)


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"method": "sha1"}, "params.method"),
        ({"method": "hmac", "reversible": True}, "params.method"),
        ({"length": 33}, "method: hmac allows up to 64"),
    ],
)
def test_check_refuses_bad_method_and_cmac_lengths(params, fragment):
    with pytest.raises(PolicyError) as exc:
        registry.get("pseudonymise").check("patient_id", col("link_key", "pseudonymise", params))
    assert "patient_id" in str(exc.value) and fragment in str(exc.value)
    registry.get("pseudonymise").check("patient_id", col("link_key", "pseudonymise", {"method": "hmac", "length": 64}))
    registry.get("pseudonymise").check("patient_id", col("link_key", "pseudonymise", {"length": 32}))


def test_large_distinct_column_takes_the_row_path_and_matches_the_standard():
    n = 70_000  # more than the 65,536-row sample that picks the row-by-row path
    values = pd.Series([f"L{i:09d}" for i in range(n)], dtype="str")
    key = ring().derive("lab", algorithm="aes-cmac")
    out = ps.pseudonyms(values, key, prefix="L")
    for i in (0, 12_345, n - 1):
        assert out[i] == "L" + reference_cmac(key, values[i].encode()).hex()[:20]
    assert out.is_unique


@settings(max_examples=60, deadline=None)
@given(runs=st.lists(st.tuples(st.one_of(st.sampled_from(["P1", "P2", "长者", "x" * 17]), st.text(max_size=5), st.none()),
                               st.integers(1, 6)), min_size=1, max_size=25),
       method=st.sampled_from(["cmac", "hmac"]))
def test_runs_of_repeated_values_get_each_value_own_pseudonym(runs, method):
    """A child table keeps a subject's rows together: the pseudonym is computed once per run and
    repeated, and must equal what each value gets on its own (nulls stay null)."""
    values = pd.Series([v for v, n in runs for _ in range(n)], dtype="str")
    key = ring().derive("patient", algorithm=ps.METHODS[method][0])
    out = ps.pseudonyms(values, key, method=method)
    for i, v in enumerate(values):
        if pd.isna(v):
            assert pd.isna(out[i])
        else:
            assert out[i] == ps.pseudonyms(pd.Series([v], dtype="str"), key, method=method)[0]
