"""`deidflow scrub INPUT.csv --column C --out OUT.csv [--policy P]` through the installed
command, from a working directory that is not the project's: the column scrubbed as a
release would, every other column and the row order kept, bad input a clear error."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
DEIDFLOW = shutil.which("deidflow") or str(Path(sys.executable).with_name("deidflow"))


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DEIDFLOW, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


NOTES = pd.DataFrame({
    "id": ["007", "008", "009", "010"],
    "text": ["患者王伟，男，93岁，电话１３８１２３４５６７８，2023-06-09就诊。医师签名：毛春生",
             "", "主任医师查体：双肺呼吸音清。患者安返病房。", "术者：欧阳明月  一助：李 娜  护照E12345678"],
    "ward": ["心内科", "骨科", "", "普外科"],
})


@pytest.fixture()
def elsewhere(tmp_path: Path) -> Path:
    d = tmp_path / "somewhere else"
    d.mkdir()
    NOTES.to_csv(d / "notes.csv", index=False)
    return d


def test_scrubs_one_column_and_keeps_the_rest(elsewhere):
    res = run("scrub", "notes.csv", "--column", "text", "--out", "out/scrubbed.csv", cwd=elsewhere)
    assert res.returncode == 0, res.stderr + res.stdout
    out = pd.read_csv(elsewhere / "out" / "scrubbed.csv", dtype=str, keep_default_na=False)
    assert out["id"].tolist() == ["007", "008", "009", "010"]  # as written, leading zeros kept
    assert out["ward"].tolist() == NOTES["ward"].tolist()
    assert out["text"].tolist() == [
        "患者[姓名]，男，[90岁以上]，电话[电话]，2023-06就诊。医师签名：[姓名]",
        "",
        "主任医师查体：双肺呼吸音清。患者安返病房。",
        "术者：[姓名]  一助：[姓名]  护照[证件号]",
    ]
    # the summary names kinds and counts, never a value
    assert "name 4" in res.stdout + res.stderr and "王伟" not in res.stdout + res.stderr


def test_policy_settings_are_the_release_settings(elsewhere, tmp_path):
    policy = (REPO / "configs" / "release.yaml").read_text(encoding="utf-8")
    policy = policy.replace("dates: shift, shift_days: 30, ages: remove", "dates: year")
    (tmp_path / "policy.yaml").write_text(policy.replace("../data_samples/", str(REPO / "data_samples") + "/"),
                                          encoding="utf-8")
    res = run("scrub", "notes.csv", "--column", "text", "--out", "o.csv", "--policy",
              str(tmp_path / "policy.yaml"), cwd=elsewhere)
    assert res.returncode == 0, res.stderr + res.stdout
    out = pd.read_csv(elsewhere / "o.csv", dtype=str, keep_default_na=False)
    assert "，2023就诊" in out["text"][0]  # the policy's dates: year, not the default month


def test_missing_column_is_a_clear_error(elsewhere):
    res = run("scrub", "notes.csv", "--column", "note", "--out", "o.csv", cwd=elsewhere)
    assert res.returncode == 2
    text = res.stdout + res.stderr
    assert "no column 'note'" in text and "--column" in text and "Traceback" not in text
    assert not (elsewhere / "o.csv").exists()


def test_wrong_encoding_is_a_clear_error(elsewhere):
    (elsewhere / "gbk.csv").write_bytes("id,text\n1,患者王伟\n".encode("gbk"))
    res = run("scrub", "gbk.csv", "--column", "text", "--out", "o.csv", "--encoding", "utf-8", cwd=elsewhere)
    assert res.returncode == 2
    text = res.stdout + res.stderr
    assert "does not decode as utf-8" in text and "--encoding" in text and "Traceback" not in text
    assert not (elsewhere / "o.csv").exists()
    # auto reads GB18030/GBK exports
    res = run("scrub", "gbk.csv", "--column", "text", "--out", "o.csv", cwd=elsewhere)
    assert res.returncode == 0, res.stdout + res.stderr
    assert pd.read_csv(elsewhere / "o.csv", dtype=str)["text"].tolist() == ["患者[姓名]"]


def test_missing_file_is_a_clear_error(elsewhere):
    res = run("scrub", "nope.csv", "--column", "text", "--out", "o.csv", cwd=elsewhere)
    assert res.returncode == 2 and "file not found" in res.stdout + res.stderr
