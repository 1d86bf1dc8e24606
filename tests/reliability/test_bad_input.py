"""The bad-input catalogue: each way a hospital extract, a policy, a key or the consent registry
can be wrong, run through a whole release. Every case must end in deidflow's own error (never a
traceback) that says where (file, key, column or row) and how to fix it, and must leave nothing
behind: no release, no staging directory, no private work directory.

The cases damage a private copy of the generated extract (`damaged` fixture). Cases that are
caught while reading run in milliseconds; those caught later (hierarchy, key custody) pay for the
consent gate and the search, so there are few of them. The README's reliability section counts
the cases in CATALOGUE.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest
from typer.testing import CliRunner

from deidflow.cli import app
from deidflow.errors import ConsentError, DeidflowError, InputError, KeyCustodyError, PolicyError
from deidflow.release import run_release

from .conftest import Env, import_consents, leftovers, write_policy

runner = CliRunner()


def _edit_csv(path: Path, fn: Callable[[list[str]], list[str]]) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(fn(lines)), encoding="utf-8")


def _replace_in_row(path: Path, row: int, old: str, new: str) -> None:
    """Replace text in one data row (row 2 = first data row, as errors count them)."""

    def fn(lines: list[str]) -> list[str]:
        assert old in lines[row - 1], (old, lines[row - 1])
        lines[row - 1] = lines[row - 1].replace(old, new, 1)
        return lines

    _edit_csv(path, fn)


def _field(path: Path, row: int, column: str) -> str:
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[row - 1].split(",")[lines[0].split(",").index(column)]


def _set_field(path: Path, row: int, column: str, value: str) -> None:
    def fn(lines: list[str]) -> list[str]:
        header = lines[0].rstrip("\n").split(",")
        cells = lines[row - 1].rstrip("\n").split(",")
        cells[header.index(column)] = value
        lines[row - 1] = ",".join(cells) + "\n"
        return lines

    _edit_csv(path, fn)


def _repolicy(env: Env, edits: dict[str, str]) -> Path:
    return write_policy(env.root, env.data, edits=edits)


# --- the cases ------------------------------------------------------------------------------------
# Each mutates env (files, policy, key) and returns the policy path to release.


def empty_file(env: Env) -> Path:
    (env.data / "encounters.csv").write_bytes(b"")
    return env.policy


def header_only(env: Env) -> Path:
    _edit_csv(env.data / "patients.csv", lambda lines: lines[:1])
    return env.policy


def ragged_long_row(env: Env) -> Path:
    _edit_csv(env.data / "diagnoses.csv", lambda lines: lines[:50] + [lines[50].rstrip("\n") + ",extra\n"] + lines[51:])
    return env.policy


def ragged_short_row(env: Env) -> Path:
    # A row missing its last fields: silently padding it with nulls would shift nothing but
    # would release a record the hospital never wrote.
    _edit_csv(env.data / "encounters.csv",
              lambda lines: lines[:20] + [",".join(lines[20].split(",")[:4]) + "\n"] + lines[21:])
    return env.policy


def wrong_delimiter(env: Env) -> Path:
    _edit_csv(env.data / "encounters.csv", lambda lines: [ln.replace(",", ";") for ln in lines])
    return env.policy


def gbk_undeclared(env: Env) -> Path:
    p = env.data / "patients.csv"
    p.write_bytes(p.read_text(encoding="utf-8").encode("gbk"))
    return env.policy


def not_text(env: Env) -> Path:
    (env.data / "lab_results.csv").write_bytes(bytes(range(256)) * 40)
    return env.policy


def unknown_encoding(env: Env) -> Path:
    return _repolicy(env, {r"(    path: \S+/patients.csv\n)": r"\1    encoding: latin-99\n"})


def duplicate_column_names(env: Env) -> Path:
    # pandas renames the second 'unit_x' to 'unit_x.1'; the error must still name the file and
    # list what it found, so the engineer sees the doubled header.
    _edit_csv(env.data / "encounters.csv",
              lambda lines: [lines[0].replace("department", "unit_x").replace("encounter_type", "unit_x")] + lines[1:])
    return env.policy


def missing_column(env: Env) -> Path:
    def drop_last(lines: list[str]) -> list[str]:
        return [",".join(ln.rstrip("\n").split(",")[:-1]) + "\n" for ln in lines]  # insurance_no

    _edit_csv(env.data / "patients.csv", drop_last)
    return env.policy


def unclassified_column(env: Env) -> Path:
    _edit_csv(env.data / "encounters.csv",
              lambda lines: [lines[0].rstrip("\n") + ",bed_no\n"] + [ln.rstrip("\n") + ",12\n" for ln in lines[1:]])
    return env.policy


def missing_file(env: Env) -> Path:
    (env.data / "notes.csv").unlink()
    return env.policy


def empty_subject_id(env: Env) -> Path:
    _set_field(env.data / "patients.csv", 9, "patient_id", "")
    return env.policy


def duplicate_subject_id(env: Env) -> Path:
    first = _field(env.data / "patients.csv", 2, "patient_id")
    _set_field(env.data / "patients.csv", 30, "patient_id", first)
    return env.policy


def dangling_link_key(env: Env) -> Path:
    _set_field(env.data / "lab_results.csv", 100, "patient_id", "P9999999")
    return env.policy


def corrupt_parquet(env: Env) -> Path:
    (env.data / "patients.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    return _repolicy(env, {r"/patients\.csv": "/patients.parquet"})


def policy_key_typo(env: Env) -> Path:
    return _repolicy(env, {r"suppression_budget:": "suppresion_budget:"})


def policy_column_key_typo(env: Env) -> Path:
    return _repolicy(env, {r"name:         \{role: direct_identifier, technique: drop":
                           "name:         {role: direct_identifier, technique: drop, categroy: x"})


def policy_technique_typo(env: Env) -> Path:
    return _repolicy(env, {r"department:       \{role: insensitive, technique: keep":
                           "department:       {role: insensitive, technique: kep"})


def policy_not_yaml(env: Env) -> Path:
    env.policy.write_text(env.policy.read_text(encoding="utf-8").replace("limits:\n", "limits: [\n", 1),
                          encoding="utf-8")
    return env.policy


def policy_missing(env: Env) -> Path:
    return env.root / "no-such-policy.yaml"


def policy_column_not_in_data(env: Env) -> Path:
    # The policy names a column the data lacks (here: a typo in the column name).
    return _repolicy(env, {r"      attending_doctor: \{": "      attending_doctr: {"})


def unreachable_consent_db(env: Env) -> Path:
    # Port 1 on loopback: connection refused at once, no waiting for a timeout.
    return write_policy(env.root, env.data, registry="postgresql+psycopg://deidflow:s3cret-pw@127.0.0.1:1/consent")


def consent_db_path_blocked(env: Env) -> Path:
    (env.root / "blocker").write_text("a file where the registry's directory should be")
    return write_policy(env.root, env.data, registry=f"sqlite:///{env.root}/blocker/consent.db")


def consent_db_bad_url(env: Env) -> Path:
    return write_policy(env.root, env.data, registry="mysql://consent")


def output_dir_is_a_file(env: Env) -> Path:
    import_consents(env.policy, env.data)
    (env.root / "releases").write_text("a file where the output directory should be")
    return env.policy


# The cases below are caught after the consent gate and the search (they need the data).


# Values are damaged on every third row, so that whatever the consent gate keeps, bad values
# reach the stages that parse them (a subject excluded for consent is never parsed).


def impossible_birth_date(env: Env) -> Path:
    import_consents(env.policy, env.data)
    for row in range(2, 300, 3):
        _set_field(env.data / "patients.csv", row, "birth_date", "1987-02-30")
    return env.policy


def impossible_birth_date_of_one_adult(env: Env) -> Path:
    """One adult who granted consent themself, with an impossible birth date."""
    import_consents(env.policy, env.data)
    consents = pd.read_csv(env.data / "consents.csv", dtype="string", keep_default_na=False)
    one_event = consents.groupby("subject_id")["event"].transform("size") == 1
    simple = consents.loc[(consents["grantor"] == "self") & (consents["valid_until"] > "2028")
                          & (consents["event"] == "granted") & one_event]
    patients = pd.read_csv(env.data / "patients.csv", dtype="string", keep_default_na=False)
    adult = patients["birth_date"] < "1990"
    row = int(patients.index[patients["patient_id"].isin(simple["subject_id"]) & adult][0]) + 2
    _set_field(env.data / "patients.csv", row, "birth_date", "1987-02-30")
    return env.policy


def invalid_resident_ids(env: Env) -> Path:
    """Birth date derived from the resident ID (the extract has no birth_date column); some IDs
    carry a wrong GB 11643 check character."""
    p = env.data / "patients.csv"
    frame = pd.read_csv(p, dtype="string", keep_default_na=False).drop(columns=["birth_date"])
    ids = frame["resident_id"]
    last = ids.str[-1]
    wrong = last.map(lambda c: "0" if c != "0" else "1")
    frame.loc[frame.index % 3 == 0, "resident_id"] = (ids.str[:-1] + wrong)[frame.index % 3 == 0]
    frame.to_csv(p, index=False)
    policy = _repolicy(env, {r"(hierarchy: \{kind: date, min_level: 1\}[^\n]*\n)":
                             r"\1        derived_from: {column: resident_id, part: birth_date}\n"})
    import_consents(policy, env.data)
    return policy


def impossible_event_date(env: Env) -> Path:
    import_consents(env.policy, env.data)
    for row in range(2, 300, 3):
        _set_field(env.data / "encounters.csv", row, "admit_date", "2024-13-45")
    return env.policy


def mixed_types_region(env: Env) -> Path:
    # Excel turned region codes into floats on some rows: '310101' and '310101.0' in one column.
    import_consents(env.policy, env.data)
    p = env.data / "patients.csv"
    for row in range(2, 300, 3):
        _set_field(p, row, "region_code", _field(p, row, "region_code") + ".0")
    return env.policy


def qi_value_not_in_hierarchy(env: Env) -> Path:
    import_consents(env.policy, env.data)
    _set_field(env.data / "patients.csv", 3, "ethnicity", "火星族")
    return env.policy


def nul_in_note(env: Env) -> Path:
    """A stray NUL byte of a database export inside one note."""
    import_consents(env.policy, env.data)
    def fn(lines: list[str]) -> list[str]:
        at = len(lines[6].split(",", 4)[4]) // 2 + len(",".join(lines[6].split(",", 4)[:4])) + 1
        lines[6] = lines[6][:at] + "\x00" + lines[6][at:]  # inside the note's text
        return lines

    _edit_csv(env.data / "notes.csv", fn)
    return env.policy


def key_file_open_permissions(env: Env) -> Path:
    import_consents(env.policy, env.data)
    os.chmod(env.root / "keys" / "pseudonym.key", 0o644)
    return env.policy


def key_file_not_hex(env: Env) -> Path:
    import_consents(env.policy, env.data)
    key = env.root / "keys" / "pseudonym.key"
    key.write_text("correct horse battery staple correct horse battery staple!!\n")
    return env.policy


@dataclass(frozen=True)
class Case:
    make: Callable[[Env], Path]
    error: type[DeidflowError]
    message: str  # regex the message must match
    file: str | None = None  # basename the error names
    column: str | None = None
    key: str | None = None
    row: int | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def id(self) -> str:
        return self.make.__name__


CATALOGUE = [
    Case(empty_file, InputError, "file is empty", file="encounters.csv"),
    Case(header_only, InputError, "header but no rows", file="patients.csv"),
    Case(ragged_long_row, InputError, "number of fields", file="diagnoses.csv"),
    Case(ragged_short_row, InputError, "number of fields|fewer fields|ragged", file="encounters.csv"),
    Case(wrong_delimiter, InputError, "delimiter looks like ';'", file="encounters.csv",
         key="tables.encounters.delimiter"),
    Case(gbk_undeclared, InputError, "GB18030", file="patients.csv"),
    Case(not_text, InputError, "not UTF-8 and not GB18030", file="lab_results.csv"),
    Case(unknown_encoding, InputError, "unknown encoding", file="patients.csv"),
    Case(duplicate_column_names, InputError, r"duplicate column names|names column\(s\).*unit_x\.1",
         file="encounters.csv"),
    Case(missing_column, InputError, r"names column\(s\) \['insurance_no'\]", file="patients.csv",
         key="tables.patients.columns"),
    Case(policy_column_not_in_data, InputError, r"names column\(s\) \['attending_doctr'\]", file="encounters.csv",
         key="tables.encounters.columns"),
    Case(unclassified_column, InputError, r"\['bed_no'\] have no role", file="encounters.csv"),
    Case(missing_file, InputError, "input file not found", file="notes.csv", key="tables.notes.path"),
    Case(empty_subject_id, InputError, "subject id is empty", file="patients.csv", column="patient_id", row=9),
    Case(duplicate_subject_id, InputError, "one row per subject", file="patients.csv", column="patient_id", row=30),
    Case(dangling_link_key, InputError, "point to a subject that is not in 'patients'", file="lab_results.csv",
         column="patient_id", row=100),
    Case(corrupt_parquet, InputError, "cannot read Parquet", file="patients.parquet"),
    Case(policy_key_typo, PolicyError, "suppresion_budget", file="policy.yaml", key="limits.suppresion_budget"),
    Case(policy_column_key_typo, PolicyError, "categroy", file="policy.yaml",
         key="tables.patients.columns.name.categroy"),
    Case(policy_technique_typo, PolicyError, "kep", file="policy.yaml", key="tables.encounters.columns.department"),
    Case(policy_not_yaml, PolicyError, "not valid YAML at line", file="policy.yaml"),
    Case(policy_missing, PolicyError, "policy file not found", file="no-such-policy.yaml"),
    Case(unreachable_consent_db, ConsentError, "cannot reach the consent registry", key="consent.registry"),
    Case(consent_db_path_blocked, ConsentError, "consent registry", key="consent.registry"),
    Case(consent_db_bad_url, ConsentError, "unsupported consent registry backend", key="consent.registry"),
    Case(output_dir_is_a_file, InputError, "cannot create the output directory", file="releases",
         tags=("late",)),
    Case(impossible_birth_date, InputError, "not dates", column="birth_date", tags=("late",)),
    Case(impossible_birth_date_of_one_adult, InputError, "not dates|birth", column="birth_date",
         tags=("late",)),
    Case(invalid_resident_ids, InputError, "not valid 18-digit resident IDs", file="patients.csv",
         column="resident_id", tags=("late",)),
    Case(impossible_event_date, InputError, "not dates", column="admit_date", tags=("late",)),
    Case(mixed_types_region, InputError, "not 6-digit", column="region_code", tags=("late",)),
    Case(qi_value_not_in_hierarchy, InputError, r"1 distinct value\(s\) .* missing from the hierarchy \(not shown", file="ethnicity.csv",
         column="ethnicity", tags=("late",)),
    Case(nul_in_note, InputError, "NUL character", file="notes.csv", column="text", row=7,
         key="tables.notes.columns.text"),
    Case(key_file_open_permissions, KeyCustodyError, "accessible by group or others", file="pseudonym.key",
         tags=("late",)),
    Case(key_file_not_hex, KeyCustodyError, "not a hexadecimal key", file="pseudonym.key", tags=("late",)),
]


def _param(case: Case):
    marks = []
    if "late" in case.tags:
        marks.append(pytest.mark.slow)
    return pytest.param(case, id=case.id, marks=marks)


def _flat(text: str) -> str:
    """Rich wraps long lines at the terminal width; compare without any whitespace."""
    return "".join(text.split())


@pytest.mark.parametrize("case", [_param(c) for c in CATALOGUE])
def test_bad_input_is_a_clear_error_and_releases_nothing(case: Case, damaged: Env):
    policy = case.make(damaged)
    with pytest.raises(DeidflowError) as info:
        run_release(policy)
    err = info.value
    assert isinstance(err, case.error), f"{type(err).__name__}: {err}"
    assert re.search(case.message, err.message), err.render()
    assert err.fix, "every error says how to fix it"
    if case.file:
        assert err.file and Path(err.file).name == case.file, err.render()
    if case.column:
        assert err.column == case.column, err.render()
    if case.key:
        assert err.key == case.key, err.render()
    if case.row is not None:
        assert err.row == case.row, err.render()
    assert err.file or err.column or err.key, "the error names where the problem is"
    # the password of a registry URL never appears in an error
    assert "s3cret-pw" not in err.render()
    left = [p for p in leftovers(damaged) if not (case.id == "output_dir_is_a_file" and p == damaged.releases)]
    assert left == [], left
    if damaged.releases.is_dir():
        assert list(damaged.releases.iterdir()) == []

    # The same through the command line a data engineer uses: exit 2, the message, no traceback.
    res = runner.invoke(app, ["release", str(policy), "--no-prefect"])
    assert res.exit_code == 2, res.output
    out = _flat(res.output)
    assert "Traceback" not in res.output and "Fix:" in out and "Nothingwasreleased" in out
    assert _flat(err.message)[:40] in out
    assert "s3cret-pw" not in res.output


def test_catalogue_covers_every_issue_class():
    """The issue lists these input faults; each must have at least one case."""
    ids = {c.id for c in CATALOGUE}
    required = {"empty_file", "header_only", "ragged_long_row", "wrong_delimiter", "gbk_undeclared",
                "mixed_types_region", "impossible_birth_date", "duplicate_subject_id", "dangling_link_key",
                "invalid_resident_ids", "gbk_undeclared",
                "missing_column", "qi_value_not_in_hierarchy", "policy_key_typo", "key_file_open_permissions",
                "unreachable_consent_db"}
    assert required <= ids, required - ids


# --- encodings a hospital exports: read correctly, never mojibake -----------------------------------


@pytest.mark.slow
def test_gbk_gb18030_and_bom_extracts_release_the_same_bytes_as_utf8(tmp_path, small_extract, baseline):
    """The same extract re-encoded as GB18030 (declared), GBK (detected with 'auto') and UTF-8
    with a byte-order mark releases byte-identical data: every Chinese value was read as written."""
    import shutil

    from .conftest import data_digests, make_env

    data = tmp_path / "extract"
    shutil.copytree(small_extract, data)
    for name, enc, bom in (("patients", "gb18030", b""), ("diagnoses", "gbk", b""),
                           ("encounters", "utf-8", b"\xef\xbb\xbf")):
        p = data / f"{name}.csv"
        p.write_bytes(bom + p.read_text(encoding="utf-8").encode(enc))
    env = make_env(tmp_path / "root", data, edits={
        r"(    path: \S+/patients.csv\n)": r"\1    encoding: gb18030\n",
        r"(    path: \S+/diagnoses.csv\n)": r"\1    encoding: auto\n",
    })
    summary = run_release(env.policy)
    assert data_digests(summary.release_dir) == data_digests(baseline.release_dir)
