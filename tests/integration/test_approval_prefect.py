"""The approval step on the default Prefect path, through the installed command from another
working directory: one staged release carries holding back, the rerun, refusals and the
approval. Approve, reject and expiry act on the staged release, not on the run that staged
it, so rejection, expiry, declining and verify's refusals are in test_approval.py only (each
would cost one more Prefect run for no new code path)."""

from __future__ import annotations

import json

import pytest

from .test_approval import World, make_world, staged_of, visible
from .test_cli_paths import run

pytestmark = pytest.mark.slow


def release(world: World):
    return run(["release", str(world.policy)], world.cwd,
               extra_env={"PREFECT_HOME": str(world.root / "prefect")})


def decide(world: World, *args: str):
    return run(list(args), world.cwd)


@pytest.fixture(scope="module")
def world(tmp_path_factory, extract) -> World:
    w = make_world(tmp_path_factory.mktemp("approval-prefect"), extract)
    proc = release(w)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    w.first = proc.stdout  # type: ignore[attr-defined]
    return w


def test_the_flow_stages_and_holds_the_release_back(world: World):
    staged = staged_of(world)
    out = world.first  # type: ignore[attr-defined]
    assert "awaiting approval" in out and staged.staged_id in out
    assert f"deidflow approve {staged.staged_id}" in out and str(staged.review_page) in out.replace("\n", "")
    assert visible(world.releases) == [] and not list(world.releases.glob(".staging-*"))
    assert staged.flow_run_id  # staged by the Prefect flow run, which it names
    rerun = release(world)
    assert rerun.returncode == 0 and "still awaiting approval" in rerun.stdout, rerun.stdout + rerun.stderr
    assert staged_of(world) == staged and visible(world.releases) == []


def test_refusals_then_approval_publish_a_release_verify_accepts(world: World):
    staged = staged_of(world)
    common = ["--policy", str(world.policy), "--yes"]
    same = decide(world, "approve", staged.staged_id, "--key", str(world.executor_key), *common)
    assert same.returncode == 2 and "executor's key" in same.stderr
    review = staged.review_page
    original = review.read_bytes()
    review.write_bytes(original.replace(b"Awaiting approval", b"Approved already"))
    tampered = decide(world, "approve", staged.staged_id, "--key", str(world.officer_key), *common)
    review.write_bytes(original)
    assert tampered.returncode == 2 and "review.html: changed since signing" in tampered.stderr
    assert visible(world.releases) == []
    ok = decide(world, "approve", staged.staged_id, "--key", str(world.officer_key), *common,
                "--comment", "prefect path")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (published,) = visible(world.releases)
    assert len(json.loads((published / "manifest.json").read_text())["signatures"]) == 2
    check = decide(world, "verify", str(published), "--trust", str(world.trust))
    assert check.returncode == 0 and "approved by" in check.stdout and "prefect path" in check.stdout

