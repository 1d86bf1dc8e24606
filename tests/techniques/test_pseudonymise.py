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
    assert d["key_fingerprint"] == r.fingerprint("patient")
    assert d["master_key_fingerprint"] == r.fingerprint()
    text = repr(d)
    assert MASTER.hex() not in text and r.derive("patient").hex() not in text


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
