"""Stage 4, validate: the Great Expectations gate on the staged release (`validation/`): k,
l, class and overall risk, no direct identifier left, consent coverage, schema. Any failure
stops the release before publishing. The utility evidence for the manifest is computed beside
the gate, in a forked process (`_EvidenceAhead`), and kept only if the gate passed.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from deidflow.io import as_arrow, read_work
from deidflow.policy import LoadedPolicy, Role
from deidflow.jsonsafe import plain
from deidflow.release.state import RunState, WholeRecordCheck, pinned_policy
from deidflow.release.engines import engine_of
from deidflow.release.workdir import WorkDir


def known_values(work: WorkDir, loaded: LoadedPolicy) -> Any:
    """Every direct-identifier value of the consented subjects, for the validation gate, as a
    source it reads column by column from the memory-mapped gated subject table (repeats and
    nulls left in: the gate handles them), then the other patient tables' and the reference
    tables' (distinct). The gate keeps their 64-bit hashes, not the strings,
    and reads the strings again only to confirm a hash hit: at 10M subjects the strings and
    their index, held whole, were most of the flow process's memory (figures: README)."""
    from deidflow.reference_tables import reference_identifier_values
    from deidflow.validation.known_identifiers import identifying_values
    from deidflow.validation.sets import Chunks

    spec = loaded.policy.tables[loaded.policy.subject_table]
    parts = work.gated_parts(loaded.policy.subject_table)
    present = set(pa.ipc.open_file(parts[0]).schema.names) if parts else set()
    direct = [c for c, cs in spec.columns.items() if cs.role is Role.direct_identifier and c in present]

    others: list[list[pa.Array]] = []  # the other tables' values: distinct, read once, kept

    def read():
        for part in parts:
            table = pa.feather.read_table(part, columns=direct, memory_map=True)
            for col in direct:
                values = table.column(col)
                if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
                    # not text in the work file: its text as pandas gives it (as the gate
                    # would have read it), e.g. a mobile column read as integers
                    values = as_arrow(read_work(part, [col])[col])
                # values too short or too common to identify anyone are not looked for
                yield identifying_values(values, common=loaded.policy.limits.k)
            del table  # unmaps the part before the next one is read
        # and every other patient table's (attending doctors, contacts), as read
        if not others:
            others.append(non_subject_known_values(work, loaded))
        yield from others[0]
        # and the reference tables' (providers, organisations), as read: reference_tables
        yield from reference_identifier_values(work.root)

    return Chunks(read)


def non_subject_known_values(work: WorkDir, loaded: LoadedPolicy) -> list[pa.Array]:
    """The distinct identifying values of every direct-identifier column of every patient table
    but the subject table, over all its rows as read (before any technique): the scrubber
    looks for them in every note (`scrub.known_from_tables`), so the gate looks for them in
    every released text. Every row, not only the consented subjects': a doctor is the same
    person whoever's encounter names them. Which values identify someone is
    `known_identifiers.non_subject_values`'s rule (length and shape only: one doctor fills
    many rows)."""
    from deidflow.validation.known_identifiers import non_subject_values

    policy = loaded.policy
    out = []
    for name, tspec in policy.tables.items():
        if name == policy.subject_table:
            continue
        parts = work.gated_parts(name)
        present = set(pa.ipc.open_file(parts[0]).schema.names) if parts else set()
        direct = [c for c, cs in tspec.columns.items() if cs.role is Role.direct_identifier and c in present]
        for col in direct:
            seen = []
            for part in parts:
                values = pa.feather.read_table(part, columns=[col], memory_map=True).column(col)
                if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
                    values = as_arrow(read_work(part, [col])[col])  # as the gate reads it
                seen.append(pc.unique(pc.cast(values.combine_chunks(), pa.large_string())))
            if seen:
                values = non_subject_values(pa.concat_arrays(seen))
                if len(values):
                    out.append(values)
    return out


class _ReleasedTables(Mapping[str, Any]):
    """The staged release's tables, each read from its file when asked for and not kept, so
    the validation gate holds one released table at a time (or, as the engine gives it, one
    partition of a table at a time, except the subject table: `Engine.released_for_gate`)."""

    def __init__(self, work: WorkDir, state: RunState, policy: Any) -> None:
        self.work, self.stage, self.policy = work, work.staging, policy
        self.engine = engine_of(state)
        self.fmt = policy.output.format

    def _exists(self, name: str) -> bool:
        return self.engine.has_released(self.work, name, self.fmt)

    def __getitem__(self, name: str) -> Any:
        if not self._exists(name):
            raise KeyError(name)
        return self.engine.released_for_gate(self.work, name, self.fmt, name == self.policy.subject_table)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._exists(name)

    def __iter__(self):
        """The policy's tables that are in the release, then anything else found there (which
        the gate refuses as undeclared)."""
        found = []
        data = self.stage / "data"
        if data.is_dir():
            found = sorted(p.name if p.is_dir() else p.name.split(".")[0] for p in data.iterdir())
        declared = [name for name in self.policy.tables if name in found]
        return iter(declared + [n for n in dict.fromkeys(found) if n not in self.policy.tables])

    def __len__(self) -> int:
        return sum(1 for _ in self)


def validate(work: Path) -> dict[str, Any]:
    """Run the Great Expectations suite on the staged release. Any failure stops the release."""
    from deidflow.validation.gate import validate_release

    state = RunState.load(work)
    loaded = pinned_policy(state)
    policy = loaded.policy
    wd = WorkDir.of(work, state)
    tables = _ReleasedTables(wd, state, policy)
    known = known_values(wd, loaded)
    mapping = wd.pseudonym_mapping()
    ahead = _EvidenceAhead.start(engine_of(state), (loaded, wd, state, tables, mapping))
    try:
        return _validate(work, state, loaded, wd, tables, known, mapping, ahead)
    finally:
        ahead.close()


def _validate(work: Path, state: RunState, loaded: LoadedPolicy, wd: WorkDir, tables: "_ReleasedTables",
              known: Any, mapping: pd.DataFrame, ahead: "_EvidenceAhead") -> dict[str, Any]:
    from deidflow.validation.gate import validate_release

    policy = loaded.policy
    stage = wd.staging
    consented = mapping["pseudonym"] if "pseudonym" in mapping else pd.Series([], dtype="string")
    report = validate_release(
        policy, tables,
        input_identifiers=known,  # the gate handles repeats and nulls itself
        consented_pseudonyms=consented.astype("string"),
        out_dir=stage / "validation",
    )
    state.validation = plain(report.as_dict())
    # k over the whole record, recomputed from the released files (validation.record_check)
    from deidflow.validation.record_check import check_whole_record

    whole = check_whole_record(policy, lambda t, cols: engine_of(state).released_for_checks(
        wd, t, policy.output.format, cols))
    passed = report.success
    if whole:
        state.whole_record = WholeRecordCheck(**whole)
        state.validation["whole_record"] = state.whole_record.model_dump()  # in the manifest too
        if not state.whole_record.ok:
            passed = False
            state.validation["success"] = False
            state.validation.setdefault("expectations", []).append({
                "type": "whole_record_k", "success": False,
                "explanation": f"k over the whole record is {whole['k']}, below "
                               f"k={whole['k_required']}"})
    state.save(work)
    if not passed:
        from deidflow.validation import direct  # identifiers left: the scrubber's to fix
        from deidflow.validation.advice import gate_failure, keep_report

        failed = [e for e in state.validation.get("expectations", []) if not e.get("success")]
        if direct.gate_fix(e.get("type", "") for e in failed):
            direct.write_leak_log(wd.leak_log,
                                  direct.leak_rows(tables, failed, known))
        kept = keep_report(stage / "validation" / "validation.json", wd.private, state.run_id)
        raise gate_failure(policy, state.validation, kept)
    # Utility evidence from the consented input and the staged output: aggregates only.
    evidence = ahead.result()
    state.utility_evidence = evidence if evidence is not None else _evidence(loaded, wd, state, tables, mapping)
    state.save(work)
    return {"success": True, "expectations": len(state.validation.get("expectations", []))}


def _evidence(loaded: LoadedPolicy, wd: WorkDir, state: RunState, tables: Any, mapping: pd.DataFrame) -> Any:
    """The release's utility evidence (`utility.evidence`)."""
    from deidflow.utility.evidence import utility_evidence

    policy = loaded.policy
    searched = state.outcome("search")
    return utility_evidence(
        loaded, wd.gated_table(policy.subject_table), tables[policy.subject_table], mapping["subject_id"],
        levels=searched.levels, search_loss=searched.utility.get("metric", "loss"),
        as_of=datetime.fromisoformat(state.as_of).date())


_AHEAD_JOB: tuple | None = None  # what the forked process computes from (inherited, not pickled)


def _evidence_in_child(_: int) -> Any:
    try:
        return _evidence(*_AHEAD_JOB)
    except BaseException:  # noqa: BLE001 - the parent computes it again and raises the error itself
        return None


class _EvidenceAhead:
    """The utility evidence computed in a forked process on the other core while this one runs
    the validation gate (single-threaded pandas and GX work for the most part), for the
    in-process engine. The process inherits the run's inputs (nothing is pickled on the way
    in) and returns only the evidence (aggregates). It is used only once the gate has passed;
    a failed or killed gate ends it. If the process fails, cannot start, or gives nothing,
    the evidence is computed here as before, which raises any error it has itself."""

    def __init__(self, pool: Any = None, pending: Any = None) -> None:
        self.pool, self.pending = pool, pending

    @classmethod
    def start(cls, engine: Any, job: tuple) -> "_EvidenceAhead":
        import multiprocessing

        from deidflow.release.cores import cores

        if engine.distributed or cores() < 2 or "fork" not in multiprocessing.get_all_start_methods():
            return cls()
        import signal

        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            # a Prefect flow run's process: its SIGTERM handler, inherited by the fork,
            # raises in the worker as the pool ends it and prints a traceback
            return cls()
        # Imported here, not in the pool's result thread when it unpickles the evidence (two
        # threads importing at once can see half-initialised modules; `validation.preload`)
        import deidflow.utility.evidence  # noqa: F401
        import deidflow.utility.record  # noqa: F401

        global _AHEAD_JOB
        _AHEAD_JOB = job
        try:
            pool = multiprocessing.get_context("fork").Pool(1, maxtasksperchild=1)
        except OSError:
            return cls()
        finally:
            _AHEAD_JOB = None  # the child has its copy
        return cls(pool, pool.apply_async(_evidence_in_child, (0,)))

    def result(self) -> Any:
        if self.pending is None:
            return None
        try:
            return self.pending.get()
        except Exception:  # noqa: BLE001 - computed again in this process
            return None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
