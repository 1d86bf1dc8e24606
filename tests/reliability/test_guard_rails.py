"""Guard rails of a release, through the installed `deidflow` command on both paths (the default
Prefect flow and --no-prefect), from a working directory that is not the project's: each case
checks what is printed, what is written and what is not.

- policy names that would become paths outside the run (`../` in a table name);
- a private directory inside the output directory;
- limits below GB/T 42460's floors (refused; accepted with an override that the manifest and
  the review page's headline show);
- keys: signing files checked before any stage, a lost pseudonym key after earlier releases,
  every key created announced with where its backup belongs;
- released text neutralised against spreadsheet formulas, aggregates included, and labels of
  suppressed aggregate cells hidden;
- gate failures naming the policy key and the fix, their report kept in the private directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from .conftest import Env, make_env, write_policy

pytestmark = pytest.mark.slow

PATHS = [pytest.param(True, id="prefect"), pytest.param(False, id="no-prefect")]
FORMULA = '=HYPERLINK("http://evil.example/x","click")'
RARE_DEPARTMENT = "罕见病专科门诊"


def deidflow(env: Env, *args: str, prefect: bool | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("deidflow")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "deidflow.cli"]
    if prefect is not None and not prefect:
        args = (*args, "--no-prefect")
    cwd = env.root / "elsewhere"
    cwd.mkdir(exist_ok=True)
    child = {k: v for k, v in os.environ.items() if k not in ("DEIDFLOW_PSEUDONYM_KEY", "DEIDFLOW_TRUST_FILE")}
    child.update({"PREFECT_HOME": str(env.root / "prefect"), "COLUMNS": "250"})
    return subprocess.run([*cmd, *args], cwd=cwd, env=child, capture_output=True, text=True, timeout=timeout)


def _flat(text: str) -> str:
    return "".join(text.split())


def _snapshot(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


# --- names that become paths, and where the private directory may be --------------------------


@pytest.mark.parametrize("prefect", PATHS)
def test_a_table_name_climbing_out_is_refused_and_nothing_is_written_outside(tmp_path, small_extract, prefect):
    env = make_env(tmp_path / "root", small_extract)
    policy = write_policy(env.root, env.data, name="escape.yaml",
                          edits={r"\n  notes:\n": "\n  ../../escaped_notes:\n"})
    before = _snapshot(tmp_path)
    proc = deidflow(env, "release", str(policy), prefect=prefect)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "key 'tables.../../escaped_notes'" in out and "is not allowed" in out
    assert "Traceback" not in out
    new = {p for p in _snapshot(tmp_path) - before
           if not any(part in ("prefect", "elsewhere") for part in p.relative_to(tmp_path).parts)}
    # the session's other temporary directories are searched too (a climb of two levels lands
    # there); only the table's own name counts: another test's directory may hold "escaped"
    assert not any("escaped_notes" in p.name for p in _snapshot(tmp_path.parent) if tmp_path.parent in p.parents)
    assert not [p for p in new if p.is_file() and env.releases in p.parents], new
    assert not (env.private / "work").exists() or not any((env.private / "work").iterdir())


@pytest.mark.parametrize("prefect", PATHS)
def test_a_private_directory_inside_the_output_directory_is_refused(tmp_path, small_extract, prefect):
    env = make_env(tmp_path / "root", small_extract)
    policy = write_policy(env.root, env.data, name="inside.yaml",
                          edits={r"private_directory: \S+": f"private_directory: {env.root}/releases/private"})
    proc = deidflow(env, "release", str(policy), prefect=prefect)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "key'output.private_directory'" in _flat(out) and "isinsideoutput.directory" in _flat(out)
    assert not env.releases.exists() or not any(env.releases.rglob("*"))


# --- floors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("edit,key", [
    ({r"k: 6 ": "k: 1 "}, "limits.k"),
    ({r"max_overall_risk: 0.05": "max_overall_risk: 1.0"}, "limits.max_overall_risk"),
    ({r"small_cell: 5 ": "small_cell: 5\n  max_class_risk: 1.0 "}, "limits.max_class_risk"),
])
def test_limits_below_the_floor_need_an_override(tmp_path, small_extract, edit, key):
    env = make_env(tmp_path / "root", small_extract)
    policy = write_policy(env.root, env.data, name="weak.yaml", edits=edit)
    proc = deidflow(env, "release", str(policy), prefect=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert f"key '{key}'" in out and "GB/T 42460" in out and "override" in out
    assert not env.releases.exists() or not any(env.releases.iterdir())


# --- a weak-but-overridden release with planted cells: what it shows and writes -------------------


def _plant(data: Path) -> None:
    enc = pd.read_csv(data / "encounters.csv", dtype="string", keep_default_na=False)
    enc.loc[enc.index[:60], "department"] = FORMULA  # enough rows for a published margin
    enc.loc[enc.index[100], "department"] = RARE_DEPARTMENT  # one encounter: a small cell
    enc.to_csv(data / "encounters.csv", index=False)
    labs = pd.read_csv(data / "lab_results.csv", dtype="string", keep_default_na=False)
    labs.loc[labs.index[:60], "value"] = ["-1.5", "=1+1", "@SUM(A1:A2)"] * 20
    labs.to_csv(data / "lab_results.csv", index=False)


@pytest.fixture(scope="module", params=PATHS)
def overridden(request, tmp_path_factory, small_extract):
    prefect = request.param
    root = tmp_path_factory.mktemp("overridden")
    data = root / "extract"
    shutil.copytree(small_extract, data)
    _plant(data)
    env = make_env(root / "env", data, edits={
        r"k: 6 ": "k: 1 ",
        r"small_cell: 5 ": ("small_cell: 5\n  override: {reason: \"synthetic test data only, agreement "
                            "annex 3\", approved_by: \"王芳 (隐私官)\"} "),
    })
    proc = deidflow(env, "release", str(env.policy), prefect=prefect)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (release,) = [p for p in env.releases.iterdir() if not p.name.startswith(".")]
    return env, release, proc, prefect


def test_override_is_on_the_review_headline_and_in_the_manifest(overridden):
    from deidflow.manifest.verify import read_statement

    env, release, proc, _ = overridden
    pred = read_statement(release)["predicate"]
    ov = pred["limits_override"]
    # the CLI's summary (from the flow's result on the default path) names the override too
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.strip(" │").startswith("validation")]
    assert line.split("validation", 1)[1].strip(" │") == \
        "passed under an approved override of limits.k: 1 < 2", proc.stdout
    assert ov["reason"].startswith("synthetic test data") and ov["approved_by"] == "王芳 (隐私官)"
    assert ov["departures"] == ["limits.k: 1 < 2"]
    page = (release / "review.html").read_text(encoding="utf-8")
    verdicts = page.split('<div class="verdicts">', 1)[1]
    assert "Does NOT meet GB/T 42460" in page and "limits.k: 1 &lt; 2" in page
    assert "synthetic test data only" in page
    assert 'class="verdict pass"' not in page and "Validation: PASSED" not in page
    assert "passed only under overridden limits" in verdicts


def test_released_text_and_aggregates_are_neutralised(overridden):
    env, release, _, _ = overridden
    enc = pd.read_csv(release / "data" / "encounters.csv", dtype="string", keep_default_na=False)
    assert (enc["department"] == "'" + FORMULA).sum() > 0
    assert not enc["department"].str.startswith(("=", "+", "@")).any()
    labs = pd.read_csv(release / "data" / "lab_results.csv", dtype="string", keep_default_na=False)
    values = set(labs["value"])
    assert {"-1.5", "'=1+1", "'@SUM(A1:A2)"} <= values  # a plain negative number stays a number
    assert not labs["value"].str.match(r"^[=+@]").any()
    for path in (release / "aggregates").glob("*.csv"):
        agg = pd.read_csv(path, dtype="string", keep_default_na=False)
        for col in agg.columns:
            assert not agg[col].str.match(r"^[=+@\t\r]").any(), f"{path.name}.{col}"
            assert not agg[col].str.match(r"^-(?!\d)").any(), f"{path.name}.{col}"
        text = path.read_text(encoding="utf-8")
        assert RARE_DEPARTMENT not in text, "a suppressed one-count cell's label was published"
        assert "(suppressed)" in text
        assert "'=HYPERLINK" in text


def test_the_run_announced_the_keys_it_created(overridden):
    env, _, proc, _ = overridden
    err = _flat(proc.stderr)
    assert "createdreleasesigningkeypairat" in err and "Backitup" in err
    assert (env.root / "keys" / "signing.key").is_file() and (env.root / "keys" / "signing.pub").is_file()


def test_the_overridden_release_verifies_against_the_policy_key(overridden):
    env, release, _, _ = overridden
    proc = deidflow(env, "verify", str(release), "--policy", str(env.policy))
    assert proc.returncode == 0, proc.stderr
    assert "verified:" in proc.stdout


def test_a_lost_pseudonym_key_after_a_release_is_an_error_not_a_new_key(overridden):
    env, _, _, prefect = overridden
    key = env.root / "keys" / "pseudonym.key"
    saved = key.read_bytes()
    key.unlink()
    try:
        proc = deidflow(env, "release", str(env.policy), prefect=prefect)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 2, out
        assert "pseudonymkeyfileismissing" in _flat(out)
        assert "earlierreleases" in _flat(out)
        assert not key.exists(), "a new key was made"
    finally:
        key.write_bytes(saved)
        os.chmod(key, 0o600)


# --- signing files --------------------------------------------------------------------------------


def _failing_run(request, prefect: bool, case: str, build, tmp_path: Path, small_extract: Path):
    """A failing case's environment and run: on the Prefect path from the module's shared
    process (`prefect_failures`), else built by `build` and run with --no-prefect."""
    if prefect:
        return request.getfixturevalue("prefect_failures")[case]
    env = build(tmp_path / "root", small_extract)
    return env, deidflow(env, "release", str(env.policy), prefect=False)


def _without_signing_key(root: Path, small_extract: Path) -> Env:
    from deidflow.manifest.signing import generate_signing_keys

    env = make_env(root, small_extract)
    private, _ = generate_signing_keys(env.root / "keys" / "signing.key")
    private.unlink()
    return env


@pytest.mark.parametrize("prefect", PATHS)
def test_a_missing_signing_key_beside_its_public_half_fails_before_any_stage(tmp_path, small_extract, prefect,
                                                                             request):
    from deidflow.manifest.signing import public_key_path_for

    env, proc = _failing_run(request, prefect, "signing", _without_signing_key, tmp_path, small_extract)
    private = env.root / "keys" / "signing.key"
    public = public_key_path_for(private)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "thesigningkeyismissing" in _flat(out) and "signing.pub" in out and "Fix:" in out
    assert not private.exists() and public.is_file()
    # failed before the consent gate: no work directory was ever made
    assert not (env.private / "work").exists() or not any((env.private / "work").iterdir())
    assert not env.releases.exists() or not any(env.releases.iterdir())


# --- gate failures --------------------------------------------------------------------------------


def _scrubbing_names_only(root: Path, small_extract: Path) -> Env:
    return make_env(root, small_extract, edits={
        r"technique: scrub, params: \{[^}]*\}": "technique: scrub, params: {kinds: [name]}"})


@pytest.mark.parametrize("prefect", PATHS)
def test_a_gate_failure_names_the_column_and_the_fix_and_keeps_its_report(tmp_path, small_extract, prefect,
                                                                          request):
    env, proc = _failing_run(request, prefect, "gate", _scrubbing_names_only, tmp_path, small_extract)
    out = proc.stdout + proc.stderr
    flat = _flat(out)
    assert proc.returncode == 2, out
    assert "key'tables.notes.columns.text'" in flat, out
    assert "scrubmoreintables.notes.columns.text" in flat
    assert "relaxthepolicy" not in flat
    kept = list((env.private / "failed-validation").glob("*.json"))
    assert len(kept) == 1 and _flat(str(kept[0])) in flat
    report = json.loads(kept[0].read_text(encoding="utf-8"))
    assert report["success"] is False
    assert oct(kept[0].stat().st_mode & 0o777) == "0o600"
    assert not env.releases.exists() or not [p for p in env.releases.iterdir()]
    # the kept report holds counts and column names, never a note's text
    notes = pd.read_csv(env.data / "notes.csv", dtype="string", keep_default_na=False)
    text = kept[0].read_text(encoding="utf-8")
    assert not any(t in text for t in notes["text"].head(200) if len(t) > 12)


# --- a read-only private directory is not a full disk ----------------------------------------------

READ_ONLY = r"""
import errno, os, sys
private = sys.argv[1]
real_mkdir = os.mkdir
def mkdir(path, *args, **kwargs):  # the private directory's filesystem is mounted read-only
    if os.path.abspath(os.fspath(path)).startswith(private):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
    return real_mkdir(path, *args, **kwargs)
os.mkdir = mkdir
from deidflow.cli import app
app(sys.argv[2:])
"""


@pytest.mark.parametrize("prefect", PATHS)
def test_a_read_only_private_directory_is_reported_as_such(tmp_path, small_extract, prefect, request):
    if prefect:
        env, proc = request.getfixturevalue("prefect_failures")["read_only"]
    else:
        env = make_env(tmp_path / "root", small_extract)
        child = {k: v for k, v in os.environ.items() if k != "DEIDFLOW_PSEUDONYM_KEY"}
        child.update({"PREFECT_HOME": str(env.root / "prefect"), "COLUMNS": "250"})
        args = ["release", str(env.policy), "--no-prefect"]
        cwd = env.root / "elsewhere"
        cwd.mkdir()
        proc = subprocess.run([sys.executable, "-c", READ_ONLY, str(env.private), *args], cwd=cwd, env=child,
                              capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    flat = _flat(out.split("error:", 1)[-1])
    assert "Read-onlyfilesystem" in flat and "read-onlyornot-writabledirectory" in flat
    assert "freespace" not in flat and "Traceback" not in out
    assert not env.releases.exists() or not any(env.releases.iterdir())


# --- the Prefect path's failing runs in one process ------------------------------------------------
# Each `deidflow release` on the default path starts Prefect's temporary server, most of a failing
# run's time: the Prefect-path runs of the three tests above share one child process (one server
# start), the CLI app called as the installed command calls it, each run from its own directory.
# The read-only case's mkdir hook (READ_ONLY) matches that case's private directory alone.

PREFECT_BATCH = r"""
import errno, json, os, sys
runs, read_only = json.loads(sys.argv[1]), sys.argv[2]
real_mkdir = os.mkdir
def mkdir(path, *args, **kwargs):  # the read-only case's private directory's filesystem
    if os.path.abspath(os.fspath(path)).startswith(read_only):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
    return real_mkdir(path, *args, **kwargs)
os.mkdir = mkdir
from deidflow.cli import app
for run in runs:
    os.chdir(run["cwd"])
    mark = "@@RUN " + run["name"] + "@@"
    print(mark, flush=True)
    print(mark, file=sys.stderr, flush=True)
    try:
        app(run["args"])
        code = 0
    except SystemExit as exc:
        code = exc.code
    sys.stdout.flush(); sys.stderr.flush()
    print("@@CODE " + json.dumps(code), flush=True)
print("@@END@@", flush=True)
print("@@END@@", file=sys.stderr, flush=True)
"""


def _runs(stream: str) -> dict[str, str]:
    body = stream.split("@@END@@", 1)[0]
    return {chunk.split("@@\n", 1)[0]: chunk.split("@@\n", 1)[1] for chunk in body.split("@@RUN ")[1:]}


@pytest.fixture(scope="module")
def prefect_failures(tmp_path_factory, small_extract) -> dict[str, tuple[Env, subprocess.CompletedProcess]]:
    base = tmp_path_factory.mktemp("prefect-failures")
    envs = {"signing": _without_signing_key(base / "signing", small_extract),
            "gate": _scrubbing_names_only(base / "gate", small_extract),
            "read_only": make_env(base / "read_only", small_extract)}
    runs = []
    for name, env in envs.items():
        cwd = env.root / "elsewhere"
        cwd.mkdir()
        runs.append({"name": name, "cwd": str(cwd), "args": ["release", str(env.policy)]})
    child = {k: v for k, v in os.environ.items() if k not in ("DEIDFLOW_PSEUDONYM_KEY", "DEIDFLOW_TRUST_FILE")}
    child.update({"PREFECT_HOME": str(base / "prefect"), "COLUMNS": "250"})
    proc = subprocess.run([sys.executable, "-c", PREFECT_BATCH, json.dumps(runs), str(envs["read_only"].private)],
                          cwd=base, env=child, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0 and "@@END@@" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    outs, errs = _runs(proc.stdout), _runs(proc.stderr)
    out = {}
    for name, env in envs.items():
        stdout, code = outs[name].rsplit("@@CODE ", 1)
        out[name] = (env, subprocess.CompletedProcess(runs[0]["args"], json.loads(code), stdout, errs[name]))
    return out


def test_a_forged_copy_of_a_real_release_is_not_verified(overridden, tmp_path):
    """A real release (from either path), its data changed and re-signed with a stranger's key
    shipped inside: `verify` against the hospital's key exits 1; `releases list` says untrusted."""
    from deidflow.manifest.seal import write_manifest
    from deidflow.manifest.signing import generate_signing_keys
    from deidflow.manifest.statement import record_from_statement
    from deidflow.manifest.verify import read_statement

    env, release, _, _ = overridden
    out = tmp_path / "out"
    forged = out / release.name
    shutil.copytree(release, forged)
    stranger, _ = generate_signing_keys(tmp_path / "mallory" / "m.key")
    record = record_from_statement(read_statement(forged))
    (forged / "data" / "patients.csv").write_bytes((forged / "data" / "patients.csv").read_bytes() + b"\n")
    (forged / "review.html").unlink()
    (forged / "signer.pub").unlink()
    write_manifest(forged, record, stranger)
    proc = deidflow(env, "verify", str(forged), "--policy", str(env.policy))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "not signed by a trusted executor key" in proc.stderr
    proc = deidflow(env, "verify", str(forged), "--public-key", str(forged / "signer.pub"))
    assert proc.returncode == 2 and "inside the release being checked" in proc.stderr
    proc = deidflow(env, "releases", "list", str(out), "--policy", str(env.policy))
    assert proc.returncode == 0 and "untrusted" in proc.stdout and "verified" not in proc.stdout.split("signatures checked")[0]
