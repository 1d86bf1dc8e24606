"""Stage 2, search: the frequency table of quasi-identifier combinations (one partial table per
partition, merged) and the lattice search for generalisation levels and suppressed
combinations (`deidflow.risk.search` computes the risk; this module feeds it and records the
outcome). Both engines search the very same merged, sorted table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from deidflow.errors import GateFailed
from deidflow.policy import LoadedPolicy
from deidflow.jsonsafe import plain
from deidflow.release.state import SearchOutcome, RunState, pinned_policy
from deidflow.release.workdir import WorkDir


NA = "<NA>"  # how a missing quasi-identifier value is encoded (risk/encoding.py)


COUNT = "__count"


def _search_columns(loaded: LoadedPolicy) -> tuple[list[str], list[str]]:
    """The quasi-identifiers the search generalises and the sensitive columns it measures
    (every one the gate checks: `risk.limits`)."""
    from deidflow.risk.limits import RiskLimits

    policy = loaded.policy
    spec = policy.tables[policy.subject_table]
    qis = [c for c in policy.quasi_identifiers()
           if spec.columns[c].technique == "generalise" and spec.columns[c].hierarchy is not None]
    return qis, list(RiskLimits.from_policy(policy).measured_sensitive_columns())


def frequency_partition(work: Path, index: int) -> str:
    """Distinct combinations of one partition's subjects with their counts (a distributed
    group-by's map side). Returns the path of the partial table, or "" when the policy
    declares quasi-identifiers beyond the subject table: the whole-record search
    (`whole_record.py`) reads every table's rows itself and would not look at it."""
    state = RunState.load(work)
    loaded = pinned_policy(state)
    from deidflow.risk.record import child_quasi_identifiers

    if child_quasi_identifiers(loaded.policy):
        return ""
    qis, scols = _search_columns(loaded)
    cols = qis + scols
    wd = WorkDir.of(work, state)
    subject = wd.gated_part(loaded.policy.subject_table, index, cols or None)
    frame = subject[cols].astype("string").fillna(NA) if cols else pd.DataFrame(index=subject.index)
    freq = (frame.groupby(cols, sort=True).size().rename(COUNT).reset_index() if cols and len(frame)
            else pd.DataFrame({**{c: pd.Series(dtype="string") for c in cols}, COUNT: pd.Series(dtype="int64")}))
    out = wd.frequencies(index)
    out.parent.mkdir(parents=True, exist_ok=True)
    freq.to_parquet(out)
    return str(out)


def _merged_frequencies(work: Path, state: RunState, cols: list[str]) -> pd.DataFrame:
    wd = WorkDir.of(work, state)
    for i in range(state.partitions):
        if not wd.frequencies(i).exists():
            frequency_partition(work, i)
    parts = [pd.read_parquet(wd.frequencies(i)) for i in range(state.partitions)]
    freq = pd.concat(parts, ignore_index=True)
    if not cols:
        return pd.DataFrame({COUNT: [int(freq[COUNT].sum())]})
    if len(parts) == 1:  # one partition's table is already grouped and sorted
        return freq
    return freq.groupby(cols, sort=True)[COUNT].sum().reset_index()


def search(work: Path) -> SearchOutcome:
    """Choose the quasi-identifiers' generalisation levels and the combinations to suppress."""
    from dataclasses import replace

    from deidflow.risk.search import search as lattice_search
    from deidflow.techniques.hierarchies import encode_qi

    state = RunState.load(work)
    loaded = pinned_policy(state)
    policy = loaded.policy
    spec = policy.tables[policy.subject_table]
    consent = state.outcome("consent")
    if not consent.granted:
        from deidflow.consent.gate import reason_counts_text

        raise GateFailed(
            "no subject has a valid consent for this purpose and recipient; nothing to release "
            f"({reason_counts_text(consent.excluded_by_reason)})",
            key="release",
            fix="check the consent registry (deidflow consent status) and the policy's purpose, "
            "recipient and data categories",
        )
    from deidflow.risk.record import child_quasi_identifiers

    if child_quasi_identifiers(policy):  # quasi-identifiers beyond the subject table
        from deidflow.whole_record import search_record

        return search_record(work, state, loaded)
    qi_cols, scols = _search_columns(loaded)
    freq = _merged_frequencies(work, state, qi_cols + scols)
    counts = freq[COUNT].to_numpy(dtype=np.int64)
    qis = []
    for col in qi_cols:
        enc = encode_qi(col, freq[col].mask(freq[col] == NA), spec.columns[col].hierarchy, loaded.base_dir)
        qis.append(replace(enc, codes=np.repeat(enc.codes, counts)))
    sensitives = {c: np.repeat(pd.factorize(freq[c], sort=True)[0], counts) for c in scols}
    bounds = {}
    for q in qis:
        h = spec.columns[q.name].hierarchy
        top = q.n_levels - 1
        bounds[q.name] = (h.min_level, top if h.max_level is None else min(top, h.max_level))
    from deidflow.risk.limits import RiskLimits

    loss = None  # the policy may ask the search to keep its utility target predictable
    if policy.utility is not None and policy.utility.search_loss == "classification":
        from deidflow.risk.classification import ClassificationLoss

        cols = qi_cols + scols
        loss = ClassificationLoss.for_frequencies(
            freq, cols, WorkDir.of(work, state).gated_table(policy.subject_table, list(dict.fromkeys([*cols, policy.utility.target]))),
            policy.utility.target, count=COUNT, na=NA)
    result = lattice_search(qis, **RiskLimits.from_policy(policy).search_kwargs(),
                            sensitives=sensitives, level_bounds=bounds, loss=loss)
    # Back from rows to combinations: a combination is suppressed when the search suppressed
    # any of its rows (all rows of a combination share a class, so the search suppresses
    # whole combinations; "any" keeps it fail-closed if one ever did not).
    mask = np.asarray(result.suppressed, dtype=bool)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else np.array([], dtype=np.int64)
    sup_rows = np.add.reduceat(mask.astype(np.int64), starts) if len(counts) else np.array([], dtype=np.int64)
    sup_combo = sup_rows > 0
    freq.loc[sup_combo, qi_cols + scols].to_parquet(WorkDir.of(work, state).suppressed_combos)
    state.search = SearchOutcome(
        levels={k: int(v) for k, v in result.levels.items()},
        suppressed_subjects=int(counts[sup_combo].sum()),
        combinations=int(len(freq)),
        before=plain(result.before.as_dict()),
        after=plain(result.after.as_dict()),
        utility=plain(result.utility),
        nodes_evaluated=int(result.nodes_evaluated),
        sensitive_after=plain(result.sensitive_after),
    )
    state.save(work)
    return state.search
