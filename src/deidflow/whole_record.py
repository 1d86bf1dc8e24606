"""The search stage when quasi-identifiers are declared beyond the subject table.

Reads every table's consented rows (subject column and quasi-identifiers; the subject table
also its sensitive columns), runs the whole-record search (`risk.record`), and leaves what
the later stages need in the run's work directory: the chosen levels (child-table columns as
`table.column`) and the subjects suppressed whole (`suppressed-subjects.parquet`, private to
the run), plus the risk per table and for the whole record for the manifest and review page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deidflow.errors import GateFailed


def _table_rows(work: Path, state: Any, name: str, columns: list[str], subject: bool) -> pd.DataFrame:
    """A table's consented rows (every partition, in order), only `columns`."""
    from deidflow.io import read_work
    from deidflow.release.workdir import WorkDir

    wd = WorkDir.of(work, state)
    frames = []
    for i in range(state.partitions):
        keep = None
        if not subject and wd.consented(name, i).is_file():
            keep = np.load(wd.consented(name, i))
        frames.append(read_work(wd.gated(name, i), columns, keep=keep))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def search_record(work: Path, state: Any, loaded: Any) -> Any:
    """The search stage over the whole record; sets and returns the run state's
    `SearchOutcome` (`release.state`)."""
    from deidflow.release.state import SearchOutcome
    from deidflow.jsonsafe import plain
    from deidflow.risk.limits import RiskLimits
    from deidflow.risk.record import child_quasi_identifiers

    policy = loaded.policy
    if not state.outcome("consent").granted:
        raise GateFailed(
            "no subject has a valid consent for this purpose and recipient; nothing to release",
            key="release",
            fix="check the consent registry (deidflow consent status) and the policy's purpose, "
            "recipient and data categories",
        )
    limits = RiskLimits.from_policy(policy)
    subject_table = policy.subject_table
    sspec = policy.tables[subject_table]
    qi_columns = {subject_table: [c for c in policy.quasi_identifiers()
                                  if sspec.columns[c].technique == "generalise"
                                  and sspec.columns[c].hierarchy is not None]}
    qi_columns.update(child_quasi_identifiers(policy))
    frames, subject_columns = {}, {}
    for name, cols in qi_columns.items():
        spec = policy.tables[name]
        extra = list(limits.measured_sensitive_columns()) if name == subject_table else []
        wanted = list(dict.fromkeys([spec.subject_column, *cols, *extra]))
        frames[name] = _table_rows(work, state, name, wanted, name == subject_table)
        subject_columns[name] = spec.subject_column

    res = _search(frames, subject_columns, subject_table, qi_columns, limits, policy,
                  loaded.base_dir)
    from deidflow.release.workdir import WorkDir

    pd.DataFrame({"subject_id": pd.Series(res.suppressed_subjects, dtype="string")}).to_parquet(
        WorkDir.of(work, state).suppressed_subjects)
    after = plain(res.after.as_dict())
    after["unit"] = "whole record (subject row and the set of each table's rows)"
    after["by_table"] = plain(res.by_table)
    state.search = SearchOutcome(
        levels={k: int(v) for k, v in res.levels.items()},
        suppressed_subjects=int(len(res.suppressed_subjects)),
        combinations=None,
        before=plain(res.before.as_dict()),
        after=after,
        utility=plain(res.utility),
        nodes_evaluated=int(res.nodes_evaluated),
        sensitive_after=plain(res.sensitive_after),
    )
    state.save(work)
    return state.search


def _search(frames, subject_columns, subject_table, qi_columns, limits, policy, base_dir):
    """Each quasi-identifier encoded once with its hierarchy (its number of levels resolves
    min/max_level), then the whole-record search."""
    from deidflow.risk.record import qualified, record_search
    from deidflow.techniques.hierarchies import encode_qi, level_range

    cache: dict = {}

    def encode(table, col, values):
        if (table, col) not in cache:
            cache[(table, col)] = encode_qi(col, values, policy.tables[table].columns[col].hierarchy,
                                            base_dir)
        return cache[(table, col)]

    bounds = {}
    for name, cols in qi_columns.items():
        for col in cols:
            enc = encode(name, col, frames[name][col])
            r = level_range(policy.tables[name].columns[col].hierarchy, enc.n_levels, column=col)
            bounds[qualified(name, col, subject_table)] = (r.start, r.stop - 1)
    return record_search(frames, subject_columns, subject_table, qi_columns, encode, limits,
                         bounds)
