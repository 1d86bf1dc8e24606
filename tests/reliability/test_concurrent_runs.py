"""Two releases of one policy into one output directory at the same time, as two scheduler
jobs would start them: real processes (`deidflow release --no-prefect`), overlapping from
prepare to publish. Exactly one publishes; the other reports that release (verified against
its manifest) or is refused with a clear message; neither fails with an internal error,
neither deletes the other's staging, and nothing partial is left."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import leftovers, make_env

pytestmark = pytest.mark.slow


def _start(env, n: int) -> subprocess.Popen:
    child = {k: v for k, v in os.environ.items() if k != "DEIDFLOW_PSEUDONYM_KEY"}
    child.update({"PREFECT_HOME": str(env.root / "prefect"), "COLUMNS": "200"})
    cwd = env.root / f"job{n}"
    cwd.mkdir()
    return subprocess.Popen([sys.executable, "-m", "deidflow.cli", "release", str(env.policy), "--no-prefect"],
                            cwd=cwd, env=child, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_runs_into_one_output_directory(tmp_path, small_extract):
    from deidflow.manifest.signing import public_key_path_for
    from deidflow.manifest.verify import verify_release
    from deidflow.policy import load_policy

    env = make_env(tmp_path, small_extract)
    jobs = [_start(env, n) for n in (1, 2)]
    outputs = [job.communicate(timeout=600)[0] for job in jobs]
    codes = [job.returncode for job in jobs]

    for out in outputs:
        assert "internal error" not in out.lower() and "Traceback" not in out, out
    releases = [p for p in env.releases.iterdir() if not p.name.startswith(".")]
    assert len(releases) == 1, sorted(env.releases.iterdir())
    (release,) = releases
    published = [out for code, out in zip(codes, outputs) if code == 0 and "already released" not in out]
    assert len(published) == 1, outputs
    other = outputs[1 - outputs.index(published[0])]
    code = codes[outputs.index(other)]
    # The other run either reports the release it found (verified) or is refused, clearly.
    if code == 0:
        assert "already released" in other and release.name in other, other
    else:
        assert "another release is running into" in other and str(env.releases) in other, other
    # Both found the same release id; each printed the one directory that exists.
    assert all(str(release) in out for out in outputs if "release " in out)

    loaded = load_policy(env.policy)
    report = verify_release(release, public_key_path=public_key_path_for(
        loaded.resolve(loaded.policy.keys.signing_key_file)))
    assert report.ok, report.messages()
    # No staging of either run and no private work directory is left behind.
    assert leftovers(env) == [release]
