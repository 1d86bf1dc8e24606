"""The memory engine's scrub on every core (`release.cores`): the rows cut into chunks, each
scrubbed in a forked worker, give exactly the one-process result (order, index, nulls,
dtype) and the same counts, with the key ring (pseudonyms, shifted dates) and the known
identifiers of each subject."""

from __future__ import annotations

import pandas as pd

from deidflow.keys import KeyRing
from deidflow.policy import Column
from deidflow.release import cores
from deidflow.release.engines import engine_named
from deidflow.techniques import ApplyContext, registry
from deidflow.techniques.scrub import EVERYONE

KNOWN = pd.DataFrame({
    "subject_id": ["P1"] * 3 + ["P2"] * 2 + ["P9", EVERYONE],  # P9: no note; *: every note
    "kind": ["name", "mobile", "resident_id", "name", "mobile", "name", "name"],
    "value": ["欧阳明华", "13912345678", "11010519491231002X", "李娜", "13700001111", "赵敏", "钱多多"],
})


def test_scrub_on_cores_equals_one_process():
    ring = KeyRing(b"\x11" * 32, recipient_id="r1", agreement_id="a1")
    notes = ["患者欧阳明华，电话13912345678，2025年3月7日入院，66岁。", "李娜复诊，电话13700001111。",
             None, "记录医师：钱多多  2024-01-02", "身份证11010519491231002X，家属李娜陪同。"]
    n = 203  # several chunks per worker, of uneven sizes
    values = pd.Series([notes[i % len(notes)] for i in range(n)], index=range(1000, 1000 + n),
                       name="text", dtype="string")
    subjects = pd.Series(["P1" if i % 2 else "P2" for i in range(n)], index=values.index)
    spec = Column(role="free_text", technique="scrub",
                  params={"replace": {"name": "pseudonym", "default": "placeholder"},
                          "dates": "shift", "shift_days": 30, "ages": "remove"})
    technique = registry.get("scrub")

    def context() -> ApplyContext:
        return ApplyContext(table="notes", column="text", subject_ids=subjects, keyring=ring,
                            frame=pd.DataFrame({"text": values, "patient_id": subjects}),
                            known_identifiers=KNOWN)

    one, spread = context(), context()
    want = technique.apply(values, spec, one)
    got = cores.apply_on_cores(technique, values, spec, spread, processes=2)
    pd.testing.assert_series_equal(got, want)
    assert spread.counts == one.counts and one.counts["name"] > 100
    assert not got.str.contains("钱多多|欧阳明华|13700001111").any()
    assert got.isna().sum() == n // len(notes) + (1 if n % len(notes) > 2 else 0)


def test_arrow_backed_notes_come_back_arrow_backed():
    values = pd.Series(["李娜复诊，电话13700001111。", None] * 50, dtype="string[pyarrow]", name="text")
    subjects = pd.Series(["P2"] * 100)
    spec = Column(role="free_text", technique="scrub", params={})
    technique = registry.get("scrub")
    want = technique.apply(values, spec, ApplyContext(table="n", column="text", subject_ids=subjects,
                                                      known_identifiers=KNOWN))
    got = cores.apply_on_cores(technique, values, spec, ApplyContext(
        table="n", column="text", subject_ids=subjects, known_identifiers=KNOWN), processes=2)
    pd.testing.assert_series_equal(got, want)


def test_only_row_local_techniques_on_the_memory_engine_spread():
    rows = cores.MIN_ROWS
    assert cores.spreads("scrub", rows, engine_named("memory")) == (cores.cores() > 1)
    assert not cores.spreads("scrub", rows - 1, engine_named("memory"))
    assert not cores.spreads("scrub", rows, engine_named("dask"))
    assert not cores.spreads("pseudonymise", rows, engine_named("memory"))


from hypothesis import given, strategies as st  # noqa: E402


@given(n=st.integers(0, 3_000_000), processes=st.integers(1, 8))
def test_chunks_cover_the_rows_in_order_largest_first_and_bounded(n, processes):
    bounds = cores.chunk_bounds(n, processes)
    assert [lo for lo, _ in bounds] == ([0] + [hi for _, hi in bounds[:-1]] if n else [])
    assert (bounds[-1][1] if bounds else 0) == n
    sizes = [hi - lo for lo, hi in bounds]
    cap = -(-n // (processes * cores.CHUNKS_PER_CORE))
    assert all(0 < s <= cap for s in sizes)
    # the last chunks are small: no core waits for a long last chunk of the other
    if n >= 1_000_000:
        assert sizes[-1] <= 2 * cores.MIN_CHUNK and sizes[0] == cap


@given(known_subjects=st.lists(st.sampled_from(["P1", "P2", "P3", "P9", EVERYONE, None]), max_size=30),
       subjects=st.lists(st.sampled_from(["P1", "P2", "P3", "P4", None]), min_size=1, max_size=30),
       data=st.data())
def test_a_chunks_known_rows_by_codes_are_its_own_subjects_rows(known_subjects, subjects, data):
    known = pd.DataFrame({"subject_id": pd.Series(known_subjects, dtype="string"),
                          "kind": "name", "value": [f"v{i}" for i in range(len(known_subjects))]})
    subj = pd.Series(subjects, dtype="string", index=range(100, 100 + len(subjects)))
    lo = data.draw(st.integers(0, len(subjects) - 1))
    hi = data.draw(st.integers(lo + 1, len(subjects)))
    index = cores.known_index(known, subj)
    want = cores._own_known(known, subj.iloc[lo:hi])
    if index is None:
        assert len(known) == 0
        return
    pd.testing.assert_frame_equal(cores._chunk_known(known, index, lo, hi), want)


def test_two_scrubs_started_at_once_each_give_their_own_column_and_counts():
    """`start_on_cores` returns at once; two jobs in flight (their workers forked while the
    other runs) each come back as their one-process result, and then leave no job behind."""
    ring = KeyRing(b"\x22" * 32, recipient_id="r1", agreement_id="a1")
    spec = Column(role="free_text", technique="scrub",
                  params={"replace": {"name": "pseudonym", "default": "placeholder"}})
    technique = registry.get("scrub")
    first = pd.Series(["患者欧阳明华，电话13912345678。", "记录医师：钱多多"] * 60, dtype="string", name="a")
    second = pd.Series(["李娜复诊，电话13700001111。", None, "赵敏"] * 40, dtype="string", name="b")

    def context(values: pd.Series, subject: str) -> ApplyContext:
        return ApplyContext(table="notes", column=str(values.name), keyring=ring, known_identifiers=KNOWN,
                            subject_ids=pd.Series([subject] * len(values), index=values.index))

    started = [(v, cores.start_on_cores(technique, v, spec, ctx := context(v, s), processes=2), ctx)
               for v, s in ((first, "P1"), (second, "P2"))]
    assert len(cores._JOBS) == 2
    for values, job, ctx in started:
        one = context(values, str(ctx.subject_ids.iloc[0]))
        pool = job.pool
        pd.testing.assert_series_equal(job.result(), technique.apply(values, spec, one))
        workers = list(pool._pool)  # the pool's workers
        assert ctx.counts == one.counts and sum(one.counts.values()) > 0
        # done: the last workers exited by themselves (0), none ended by SIGTERM (-15)
        assert [w.exitcode for w in workers if w.exitcode is not None and w.exitcode != 0] == []
    assert not cores._JOBS


def test_an_abandoned_scrub_is_ended_with_its_workers():
    import multiprocessing

    values = pd.Series(["李娜复诊，电话13700001111。"] * 400, dtype="string", name="text")
    ctx = ApplyContext(table="n", column="text", subject_ids=pd.Series(["P2"] * 400), known_identifiers=KNOWN)
    job = cores.start_on_cores(registry.get("scrub"), values, Column(role="free_text", technique="scrub"),
                               ctx, processes=2)
    workers = list(job.pool._pool)
    assert workers
    job.close()  # a failed stage: nothing waits for the column
    assert not cores._JOBS and job.pool is None
    assert all(not w.is_alive() for w in workers)
    assert not [p for p in multiprocessing.active_children() if p in workers]


_IMPORT_BESIDE = r"""
import json, sys, threading
import pandas as pd
from deidflow.policy import Column
from deidflow.release import cores
from deidflow.techniques import ApplyContext, registry

module = "colorsys"  # imported by nothing here
values = pd.Series(["李娜复诊，电话13700001111。"] * 300, dtype="string", name="text")
spec, technique = Column(role="free_text", technique="scrub"), registry.get("scrub")
context = lambda: ApplyContext(table="n", column="text", subject_ids=pd.Series(["P2"] * 300))
out = {"no workers": cores.import_beside_workers(module, quiet="quiet")}
stop = threading.Event()
other = threading.Thread(target=stop.wait, name="someone-else")  # might import at any time
other.start()
job = cores.start_on_cores(technique, values, spec, context(), processes=2)
out["beside another thread"] = cores.import_beside_workers(module, quiet="quiet")
out["imported then"] = module in sys.modules
stop.set(); other.join()
idle = threading.Thread(target=stop.wait, name="quiet_0")  # a caller's idle thread
idle.start()
out["beside workers and idle threads"] = cores.import_beside_workers(module, quiet="quiet")
out["imported"] = module in sys.modules
idle.join()
out["same column"] = bool(job.result().equals(technique.apply(values, spec, context())))
out["nothing left"] = not cores._HANDLERS and not cores._JOBS
print(json.dumps(out))
"""


def test_a_module_is_imported_beside_running_workers_only_when_no_other_thread_could_import():
    """In a fresh interpreter: a test runner's process has threads of its own."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", _IMPORT_BESIDE], cwd=repo, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "no workers": False, "beside another thread": False, "imported then": False,
        "beside workers and idle threads": True, "imported": True, "same column": True,
        "nothing left": True}


def test_no_worker_is_forked_while_a_module_is_imported_beside_them():
    import multiprocessing
    import threading
    import time

    held = threading.Event()

    def importing() -> None:
        with cores._FORK_GUARD:  # as import_beside_workers holds it
            held.set()
            time.sleep(0.5)

    thread = threading.Thread(target=importing)
    thread.start()
    held.wait()
    start = time.monotonic()
    child = multiprocessing.get_context("fork").Process(target=int)
    child.start()  # waits for the guard
    waited = time.monotonic() - start
    child.join()
    thread.join()
    assert waited >= 0.4 and child.exitcode == 0


def test_a_worker_does_not_run_the_parents_thread_exit_hooks():
    """Prefect's log and event services register a thread-exit hook that fails in a forked
    child; a scrub worker forked after a flow run in the same process then ended with exit
    code 1. A hook of the parent's that raises stands for it here."""
    import multiprocessing
    import threading

    def parents_hook() -> None:
        raise AssertionError("the parent's service state, absent in a fork")

    threading._register_atexit(parents_hook)
    try:
        child = multiprocessing.get_context("fork").Process(target=int)
        child.start()
        child.join()
        assert child.exitcode == 0
        values = pd.Series(["李娜复诊，电话13700001111。"] * 400, dtype="string", name="text")
        ctx = ApplyContext(table="n", column="text", subject_ids=pd.Series(["P2"] * 400),
                           known_identifiers=KNOWN)
        job = cores.start_on_cores(registry.get("scrub"), values, Column(role="free_text", technique="scrub"),
                                   ctx, processes=2)
        pool = job.pool
        scrubbed = job.result()
        assert scrubbed.str.contains("13700001111").sum() == 0
        assert [w.exitcode for w in pool._pool if w.exitcode not in (None, 0)] == []
    finally:
        hooks = threading._threading_atexits  # each held as a functools.partial
        hooks[:] = [h for h in hooks if getattr(h, "func", h) is not parents_hook]


def test_a_chunk_goes_back_as_one_large_string_array_whatever_its_storage():
    import pyarrow as pa

    texts = ["李娜复诊", None, "", "𠀋 non-BMP", "a"]
    for dtype in ("string[pyarrow]", "string[python]", object):
        for values in (texts, texts[:0], [None]):
            got = cores._as_arrow(pd.Series(values, dtype=dtype))
            assert got.type == pa.large_string() and isinstance(got, pa.Array), dtype
            assert got.to_pylist() == values, dtype


@given(texts=st.lists(st.one_of(st.none(), st.text(max_size=8), st.sampled_from(["患者李娜", "𠀋"])),
                      min_size=1, max_size=40), data=st.data())
def test_a_mapped_text_column_gives_the_rows_read_work_gives(tmp_path_factory, texts, data):
    # a worker's chunk read from the memory-mapped work file: the same text, index and dtype as
    # the kept rows of the column read whole (`io.read_work`), sliced
    import pyarrow as pa
    import pyarrow.feather as feather

    from deidflow.io import read_work

    path = tmp_path_factory.mktemp("mapped") / "notes.arrow"
    frame = pd.DataFrame({"text": pd.Series(texts, dtype="string"), "n": range(len(texts))})
    # as `io.write_work` writes it, in record batches of a few rows (a work file of many)
    batch = data.draw(st.integers(1, 7))
    feather.write_feather(pa.Table.from_pandas(frame, preserve_index=False), path,
                          compression="uncompressed", chunksize=batch)
    keep = data.draw(st.lists(st.booleans(), min_size=len(texts), max_size=len(texts)))
    whole = read_work(path, keep=keep)["text"]
    mapped = cores.MappedText(path, "text", keep)
    assert len(mapped) == len(whole) and cores.MappedText.readable(path, "text")
    lo = data.draw(st.integers(0, len(whole)))
    hi = data.draw(st.integers(lo, len(whole)))
    pd.testing.assert_series_equal(mapped.rows(lo, hi), whole.iloc[lo:hi])
    assert not cores.MappedText.readable(path, "n")


def test_each_worker_scrubs_chunk_after_chunk(tmp_path, monkeypatch):
    # one worker per process for the whole column, not one forked per chunk: every chunk is
    # read (`_rows`, looked up in the module by the forked worker) by one of `processes` workers
    import os

    rows = cores._rows

    def logged(values, lo, hi):
        if lo or hi != cores.WARM_ROWS:  # not the warm-up in this process
            (tmp_path / f"{lo}-{os.getpid()}").touch()
        return rows(values, lo, hi)

    monkeypatch.setattr(cores, "_rows", logged)
    monkeypatch.setattr(cores, "MIN_CHUNK", 10)
    values = pd.Series(["李娜复诊，电话13700001111。", None] * 300, dtype="string", name="text")
    ctx = ApplyContext(table="n", column="text", subject_ids=pd.Series(["P2"] * 600), known_identifiers=KNOWN)
    spec = Column(role="free_text", technique="scrub")
    got = cores.apply_on_cores(registry.get("scrub"), values, spec, ctx, processes=2)
    want = registry.get("scrub").apply(values, spec, ApplyContext(
        table="n", column="text", subject_ids=pd.Series(["P2"] * 600), known_identifiers=KNOWN))
    pd.testing.assert_series_equal(got, want)
    calls = [p.name.split("-") for p in tmp_path.iterdir()]
    assert len(calls) == len(cores.chunk_bounds(600, 2)) > 4
    assert len({pid for _, pid in calls}) == 2 and str(os.getpid()) not in {pid for _, pid in calls}
