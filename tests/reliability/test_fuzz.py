"""Fuzzing the two doors every input comes through: the table reader and the policy loader.

Whatever bytes a file holds and whatever a policy says, deidflow either accepts it or raises its
own error (a DeidflowError subclass, which the CLI prints as "where: what / Fix: how"); any other
exception would reach the user as an internal error. Where an input is well formed, what is read
is exactly what was written, in any declared encoding (no mojibake, no lost or invented cells).
"""

from __future__ import annotations

import copy
import csv
import io
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from deidflow.errors import DeidflowError, InputError, PolicyError
from deidflow.io import read_tables
from deidflow.policy import load_policy, parse_policy

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = yaml.safe_load((REPO / "configs" / "release.yaml").read_text(encoding="utf-8"))

FUZZ = settings(max_examples=80, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# --- the reader -----------------------------------------------------------------------------------

COLUMNS = ["patient_id", "name", "sex"]


def _policy(tmp: Path, encoding: str, delimiter: str = ",") -> Path:
    raw = {
        "plan": {"objective": "o", "attacker_model": "a", "approver": "x", "executor": "y", "version": "1"},
        "release": {"agreement_id": "A", "pipia_id": "P", "purpose": "p", "data_categories": ["d"], "approval": "not_required",
                    "recipient": {"id": "r", "name": "R"}},
        "subject_table": "patients",
        "consent": {"birth_date_column": None},
        "tables": {
            "patients": {"path": "patients.csv", "subject_column": "patient_id", "encoding": encoding,
                         "delimiter": delimiter,
                         "columns": {"patient_id": {"role": "link_key", "technique": "drop"},
                                     "name": {"role": "direct_identifier", "technique": "drop"},
                                     "sex": {"role": "insensitive", "technique": "keep"}}},
            "visits": {"path": "visits.csv", "subject_column": "patient_id",
                       "columns": {"visit_id": {"role": "link_key", "technique": "drop"},
                                   "patient_id": {"role": "link_key", "technique": "drop"}}},
        },
    }
    p = tmp / "policy.yaml"
    p.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return p


# Cells a hospital export really contains: CJK (incl. GB18030-only characters), Latin, digits,
# the delimiter, quotes, line breaks inside quoted cells, spaces.
CELL = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("张王李赵刘陈杨黄周吴䶮𠀀㐀,\"' ;\t\n-_./0123456789MFabcXYZé")),
        st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
    ),
    max_size=12,
)


@st.composite
def tables(draw):
    n = draw(st.integers(1, 8))
    ids = draw(st.lists(st.text(alphabet="PQ0123456789", min_size=1, max_size=6), min_size=n, max_size=n,
                        unique=True))
    rows = [[pid, draw(CELL), draw(CELL)] for pid in ids]
    return rows


def _csv_bytes(rows: list[list[str]], encoding: str, bom: bool, delimiter: str) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    w.writerow(COLUMNS)
    w.writerows(rows)
    data = buf.getvalue().encode(encoding)
    return (b"\xef\xbb\xbf" + data) if bom else data


def _encodable(rows: list[list[str]], encoding: str) -> bool:
    try:
        "".join(c for r in rows for c in r).encode(encoding)
        return True
    except UnicodeEncodeError:
        return False


@FUZZ
@given(rows=tables(), file_enc=st.sampled_from(["utf-8", "gb18030", "gbk"]), bom=st.booleans(),
       declared=st.sampled_from(["same", "auto"]), delimiter=st.sampled_from([",", "\t", "|"]))
def test_well_formed_tables_read_back_exactly(tmp_path_factory, rows, file_enc, bom, declared, delimiter):
    assume(_encodable(rows, file_enc))
    bom = bom and file_enc == "utf-8"
    tmp = tmp_path_factory.mktemp("read")
    (tmp / "patients.csv").write_bytes(_csv_bytes(rows, file_enc, bom, delimiter))
    visits = "visit_id,patient_id\n" + "".join(f"V{i},{r[0]}\n" for i, r in enumerate(rows))
    (tmp / "visits.csv").write_text(visits, encoding="utf-8")
    enc = file_enc if declared == "same" else "auto"
    try:
        tables = read_tables(load_policy(_policy(tmp, enc, delimiter)))
    except InputError as err:
        # Legitimate refusals only: a GBK file whose bytes also happen to be valid UTF-8 is
        # read as UTF-8 under 'auto' — that must then be caught, not silently accepted.
        pytest.fail(f"well-formed input refused: {err}")
    frame = tables["patients"].frame
    assert list(frame.columns) == COLUMNS
    expected = pd.DataFrame(rows, columns=COLUMNS, dtype="string").replace("", pd.NA)
    got = frame.reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


@FUZZ
@given(blob=st.one_of(
    st.binary(max_size=400),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    tables().map(lambda rows: _csv_bytes(rows, "utf-8", False, ",")).flatmap(
        lambda b: st.integers(0, max(len(b) - 1, 0)).map(lambda cut: b[:cut])),  # truncated files
    tables().map(lambda rows: _csv_bytes(rows, "utf-8", False, ",")).flatmap(
        lambda b: st.tuples(st.integers(0, max(len(b) - 1, 0)), st.binary(min_size=1, max_size=3)).map(
            lambda t: b[:t[0]] + t[1] + b[t[0] + 1:])),  # a flipped byte
), encoding=st.sampled_from(["utf-8", "gb18030", "auto"]))
def test_any_bytes_are_read_or_refused_with_our_error(tmp_path_factory, blob, encoding):
    tmp = tmp_path_factory.mktemp("bytes")
    (tmp / "patients.csv").write_bytes(blob)
    (tmp / "visits.csv").write_text("visit_id,patient_id\n", encoding="utf-8")
    try:
        read_tables(load_policy(_policy(tmp, encoding)))
    except InputError as err:
        assert err.file and err.fix
    # (visits.csv is header-only, so a success here would be a bug: reaching it means the
    # reader accepted an empty table)
    else:  # pragma: no cover - the assertion message says what went wrong
        pytest.fail("a header-only visits table was accepted")


# --- the policy loader ------------------------------------------------------------------------------

def _paths(node, prefix=()):
    """Every (path) in a nested dict/list."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


ALL_PATHS = [p for p in _paths(EXAMPLE) if p]

JUNK = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20)),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.text(max_size=8), children, max_size=3)),
    max_leaves=6,
)


def _technique_params() -> list[str]:
    from deidflow.techniques import registry

    names = set()
    for tech in (registry.get(n) for n in registry.names()) if hasattr(registry, "names") else []:
        names |= set(tech.allowed_params)
    return sorted(names) or ["level", "max_days", "scope", "replace", "min_count", "k", "scale"]


PARAM_NAMES = _technique_params()


@st.composite
def mutated_policies(draw):
    raw = copy.deepcopy(EXAMPLE)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(ALL_PATHS))
        parent = raw
        try:
            for p in path[:-1]:
                parent = parent[p]
            leaf = path[-1]
            parent[leaf]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this branch
        action = draw(st.sampled_from(["delete", "junk", "typo", "params", "swap_level"]))
        if action == "delete":
            del parent[leaf]
        elif action == "junk":
            parent[leaf] = draw(JUNK)
        elif action == "typo" and isinstance(leaf, str) and isinstance(parent, dict):
            pos = draw(st.integers(0, len(leaf)))
            parent[leaf[:pos] + draw(st.text(alphabet="abcxyz_", min_size=1, max_size=2)) + leaf[pos + 1:]] = \
                parent.pop(leaf)
        elif action == "params" and isinstance(parent[leaf], dict) and "technique" in parent[leaf]:
            parent[leaf]["params"] = draw(st.dictionaries(st.sampled_from(PARAM_NAMES), JUNK, max_size=3))
        elif action == "swap_level" and isinstance(parent[leaf], dict) and "hierarchy" in parent[leaf]:
            parent[leaf]["hierarchy"] = draw(st.fixed_dictionaries({
                "kind": st.sampled_from(["interval", "age", "date", "region", "postcode", "csv", "mask", "x"]),
            }, optional={"widths": JUNK, "min_level": JUNK, "max_level": JUNK, "top": JUNK, "file": JUNK}))
    return raw


@FUZZ
@given(raw=mutated_policies())
def test_mutated_policies_load_or_fail_with_policy_error(raw):
    text = yaml.safe_dump(raw, allow_unicode=True)
    try:
        parse_policy(text, source="fuzz.yaml")
    except PolicyError as err:
        assert err.file == "fuzz.yaml" and err.fix
        assert "Traceback" not in err.render()


@FUZZ
@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_arbitrary_policy_text_fails_with_policy_error(text):
    try:
        parse_policy(text, source="fuzz.yaml")
    except PolicyError as err:
        assert err.fix
    else:
        pytest.fail("arbitrary text was accepted as a policy")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=200))
def test_policy_file_bytes_load_or_fail_with_our_error(tmp_path_factory, blob):
    p = tmp_path_factory.mktemp("pol") / "policy.yaml"
    p.write_bytes(blob)
    with pytest.raises(DeidflowError):
        load_policy(p)
