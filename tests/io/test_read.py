"""Bad inputs are refused with an error naming the file, the column or row, and the fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from deidflow.errors import InputError
from deidflow.io import publish, read_tables
from deidflow.policy import load_policy

PATIENTS = "patient_id,name,sex\nP1,张三,M\nP2,李四,F\n"
VISITS = "visit_id,patient_id,dept\nV1,P1,内科\nV2,P2,外科\n"


def policy(tmp_path: Path, *, patients: str | bytes = PATIENTS, visits: str | bytes = VISITS,
           encoding: str = "utf-8", delimiter: str = ",") -> Path:
    for name, content in (("patients.csv", patients), ("visits.csv", visits)):
        data = content if isinstance(content, bytes) else content.encode("utf-8")
        (tmp_path / name).write_bytes(data)
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
                                   "patient_id": {"role": "link_key", "technique": "drop"},
                                   "dept": {"role": "insensitive", "technique": "keep"}}},
        },
    }
    p = tmp_path / "policy.yaml"
    p.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return p


def read(p: Path):
    return read_tables(load_policy(p))


def test_good_input_reads_every_column_as_text(tmp_path):
    tables = read(policy(tmp_path))
    assert tables["patients"].frame["name"].tolist() == ["张三", "李四"]
    assert str(tables["patients"].frame["name"].dtype) == "string"
    assert len(tables["visits"].sha256) == 64


def test_utf8_bom_is_stripped(tmp_path):
    tables = read(policy(tmp_path, patients=b"\xef\xbb\xbf" + PATIENTS.encode()))
    assert list(tables["patients"].frame.columns) == ["patient_id", "name", "sex"]


def test_gb18030_declared_reads_correctly(tmp_path):
    tables = read(policy(tmp_path, patients=PATIENTS.encode("gb18030"), encoding="gb18030"))
    assert tables["patients"].frame["name"].tolist() == ["张三", "李四"]


def test_gbk_detected_with_auto(tmp_path):
    tables = read(policy(tmp_path, patients=PATIENTS.encode("gbk"), encoding="auto"))
    assert tables["patients"].frame["name"].tolist() == ["张三", "李四"]


def test_gbk_undeclared_is_refused_not_mojibake(tmp_path):
    with pytest.raises(InputError) as err:
        read(policy(tmp_path, patients=PATIENTS.encode("gbk")))
    assert err.value.file.endswith("patients.csv")
    assert "GB18030" in err.value.message and "encoding: gb18030" in err.value.fix


def test_empty_file(tmp_path):
    with pytest.raises(InputError, match="file is empty") as err:
        read(policy(tmp_path, patients=""))
    assert err.value.file.endswith("patients.csv")


def test_header_only(tmp_path):
    with pytest.raises(InputError, match="header but no rows"):
        read(policy(tmp_path, patients="patient_id,name,sex\n"))


def test_ragged_rows(tmp_path):
    with pytest.raises(InputError, match="number of fields") as err:
        read(policy(tmp_path, patients=PATIENTS + "P3,王五,M,extra\n"))
    assert "quote" in err.value.fix


def test_wrong_delimiter_is_diagnosed(tmp_path):
    with pytest.raises(InputError, match="delimiter looks like ';'") as err:
        read(policy(tmp_path, patients=PATIENTS.replace(",", ";")))
    assert err.value.key == "tables.patients.delimiter"


def test_column_named_by_policy_but_missing(tmp_path):
    with pytest.raises(InputError, match=r"names column\(s\) \['sex'\]") as err:
        read(policy(tmp_path, patients="patient_id,name\nP1,张三\n"))
    assert err.value.key == "tables.patients.columns"


def test_unclassified_column_blocks_release(tmp_path):
    with pytest.raises(InputError, match=r"\['mobile'\] have no role") as err:
        read(policy(tmp_path, patients="patient_id,name,sex,mobile\nP1,张三,M,13800000000\n"))
    assert "mobile: {role:" in err.value.fix


def test_duplicate_subject_ids_name_the_row(tmp_path):
    with pytest.raises(InputError, match="one row per subject") as err:
        read(policy(tmp_path, patients=PATIENTS + "P1,张三,M\n"))
    assert err.value.row == 4 and err.value.column == "patient_id"


def test_link_key_that_points_nowhere(tmp_path):
    with pytest.raises(InputError, match="point to a subject that is not in 'patients'") as err:
        read(policy(tmp_path, visits=VISITS + "V3,P9,儿科\n"))
    assert err.value.file.endswith("visits.csv") and err.value.row == 4


def test_missing_input_file_names_the_policy_key(tmp_path):
    p = policy(tmp_path)
    (tmp_path / "visits.csv").unlink()
    with pytest.raises(InputError, match="input file not found") as err:
        read(p)
    assert err.value.key == "tables.visits.path"


def prepare_staging(root: Path, release_id: str, run: str = "run1", private: Path | None = None) -> Path:
    """The staging directory of a run (`release.WorkDir`) whose work directory exists."""
    from deidflow.release import WorkDir

    private = private or root.parent / "private"
    (private / "work" / run).mkdir(parents=True, exist_ok=True)
    return WorkDir(private / "work" / run, private, root, release_id).prepare_staging()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_directory(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    root.chmod(0o500)
    with pytest.raises(InputError, match="not writable"):
        prepare_staging(root, "R1")


def test_publish_is_a_rename_and_refuses_to_overwrite(tmp_path):
    stage = prepare_staging(tmp_path / "out", "R1")
    (stage / "data.csv").write_text("x\n")
    final = publish(stage, tmp_path / "out" / "R1")
    assert (final / "data.csv").read_text() == "x\n"
    assert not stage.exists()
    stage2 = prepare_staging(tmp_path / "out", "R1")
    with pytest.raises(InputError, match="already exists"):
        publish(stage2, final)


def test_prepare_staging_removes_leftovers_of_a_killed_run_only(tmp_path):
    root = tmp_path / "out"
    leftover = prepare_staging(root, "OLD", run="dead")
    (leftover / "partial.csv").write_text("half")
    live = prepare_staging(root, "OLD", run="live")  # another run of the same release, running
    (tmp_path / "private" / "work" / "dead").rmdir()  # the dead run's work directory was reaped
    prepare_staging(root, "NEW", run="new")
    assert not leftover.exists()
    assert live.is_dir(), "a live run's staging is never removed"


def test_output_directory_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the output directory should be")
    with pytest.raises(InputError, match="cannot create the output directory") as err:
        prepare_staging(blocker / "releases", "R1", private=tmp_path / "private")
    assert "output.directory" in err.value.fix
