"""The utility evidence of one release, as recorded in the manifest, and how it is computed.

`utility_evidence` takes the consented subject table (original values), the released subject
table and which consented subjects were released; everything it returns is an aggregate
(`deidflow.utility` says how no record can show through).
"""

from __future__ import annotations

import time
from datetime import date

import numpy as np
import pandas as pd

from deidflow.errors import GateFailed
from deidflow.policy import LoadedPolicy, Role
from deidflow.utility import groups as grp
from deidflow.utility import measures as ms
from deidflow.utility.record import (
    ColumnUtility, Distribution, GroupBreakdown, GroupShare, ModelComparison, UtilityEvidence,
)

#: What the search minimised, as the page names it.
SEARCH_LOSSES = {
    "loss": "Iyengar's generalisation loss (deidflow's default; suppressed records count as "
    "fully generalised)",
    "classification": "classification loss for the target (ARX's classification metric: a "
    "record costs 1 when suppressed, or when its class lacks a single majority target value "
    "or its target differs from it; ties broken by Iyengar's loss)",
}
NOT_ANALYSED = (Role.direct_identifier, Role.link_key, Role.free_text)


def released_mask(subject_ids: pd.Series, released_ids: pd.Series | pd.Index) -> np.ndarray:
    """Per consented subject: is it among `released_ids`? (Arrow's hash lookup: pandas' isin
    on Arrow text loops in Python over the ids.)"""
    import pyarrow as pa
    import pyarrow.compute as pc

    from deidflow.io import as_arrow

    def text(values: pd.Series | pd.Index) -> pa.Array:
        arr = as_arrow(pd.Series(values).astype("string"))
        return pc.cast(arr, pa.large_string()).combine_chunks()

    return pc.is_in(text(subject_ids), value_set=text(released_ids)).to_numpy(zero_copy_only=False).astype(bool)


def _hist(h: ms.Histogram) -> Distribution:
    return Distribution(labels=list(h.labels), counts=list(h.counts))


def utility_evidence(
    loaded: LoadedPolicy,
    consented: pd.DataFrame,
    released: pd.DataFrame,
    released_ids: pd.Series | pd.Index,
    *,
    levels: dict[str, int],
    search_loss: str = "loss",
    as_of: date,
) -> UtilityEvidence:
    """The evidence for a release whose consented subjects are the rows of `consented`, of whom
    those with an id in `released_ids` are the rows of `released`."""
    started = time.perf_counter()
    policy = loaded.policy
    spec = policy.tables[policy.subject_table]
    sid = spec.subject_column
    small = policy.limits.small_cell
    n = len(consented)
    kept = released_mask(consented[sid], released_ids)
    if int(kept.sum()) != len(released):
        raise GateFailed(
            f"utility evidence: {int(kept.sum())} consented subjects are recorded as released but "
            f"the released table '{policy.subject_table}' has {len(released)} rows",
            key="utility",
            fix="the release and its record of released subjects disagree; rerun the release",
        )
    suppressed = int(n - kept.sum())
    columns: list[ColumnUtility] = []
    ratios: list[np.ndarray] = []
    views: dict[str, pd.Series] = {}  # each model feature as released, per consented subject
    for col, cs in spec.columns.items():
        if cs.role in NOT_ANALYSED:
            columns.append(ColumnUtility(column=col, role=cs.role.value, technique=cs.technique,
                                         note="identifier or free text: not analysed, never plotted"))
            continue
        if col not in consented:
            continue
        after = released[col] if col in released else None
        if cs.technique == "generalise" and cs.hierarchy is not None:
            from deidflow.techniques.hierarchies import encode_qi

            level = levels.get(col, cs.params.get("level"))
            enc = encode_qi(col, consented[col], cs.hierarchy, loaded.base_dir)
            level = int(level if level is not None else 0)
            top = enc.n_levels - 1
            gen = pd.Series(enc.decode(level), index=consented.index, dtype="string")
            gen = gen.mask(gen == ms.NA)
            prec, prec_sup = ms.precision(level, top, n, suppressed)
            lost, most = ms.nue_per_record(consented[col], gen, kept)
            h_bits = float(most.sum())
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios.append(np.where(most > 0, lost / np.where(most > 0, most, 1), 0.0))
            views[col] = gen
            hb, ha, tvd = ms.before_after(consented[col], after if after is not None else gen[kept],
                                          small, before_generalised=gen)
            columns.append(ColumnUtility(
                column=col, role=cs.role.value, technique=cs.technique, level=level, top_level=top,
                precision=prec, precision_with_suppression=prec_sup, nue_bits=float(lost.sum()) / n,
                nue_normalised=float(lost.sum()) / h_bits if h_bits > 0 else 0.0, tvd=tvd,
                before=_hist(hb), after=_hist(ha)))
            continue
        if after is None:  # dropped: nothing released to compare
            columns.append(ColumnUtility(column=col, role=cs.role.value, technique=cs.technique,
                                         note="not in the release"))
            continue
        hb, ha, tvd = ms.before_after(consented[col], after, small)
        if cs.technique == "keep":
            views[col] = consented[col]
        columns.append(ColumnUtility(
            column=col, role=cs.role.value, technique=cs.technique,
            precision=1.0 if cs.technique == "keep" else None, tvd=tvd,
            before=_hist(hb), after=_hist(ha),
            note="" if cs.technique == "keep" else "not generalised: compare the distributions"))
    record_loss = np.mean(ratios, axis=0) if ratios else np.zeros(n)
    record_loss = np.where(kept, record_loss, 1.0)
    breakdowns = []
    for g in grp.group_columns(policy):
        h = spec.columns[g.column].hierarchy
        labels = grp.group_labels(consented[g.column], g.kind, as_of, h.kind if h else None)
        rows = grp.breakdown(labels, ~kept, record_loss, small)
        breakdowns.append(GroupBreakdown(column=g.column, kind=g.kind,
                                         groups=[GroupShare(**r.__dict__) for r in rows]))
    model, note = _model(loaded, consented, views, kept)
    return UtilityEvidence(
        table=policy.subject_table, subjects=n, released=int(kept.sum()),
        suppressed_share=suppressed / n if n else 0.0,
        mean_record_loss=float(record_loss.mean()) if n else 0.0,
        search_loss=search_loss, search_loss_description=SEARCH_LOSSES.get(search_loss, search_loss),
        small_cell=small, columns=columns, groups=breakdowns, flag_rule=grp.FLAG_RULE,
        model=model, model_note=note, definitions=dict(ms.DEFINITIONS),
        seconds=time.perf_counter() - started,
    )


def _model(loaded: LoadedPolicy, consented: pd.DataFrame, views: dict[str, pd.Series],
           kept: np.ndarray) -> tuple[ModelComparison | None, str]:
    from deidflow.utility.model import compare_models

    utility = loaded.policy.utility
    if utility is None or utility.target is None:
        return None, "The policy names no target column (utility: {target: COLUMN}): no model was compared."
    target = utility.target
    if target not in views:
        return None, (f"The target '{target}' is not released as kept or generalised values: "
                      "no model was compared.")
    features = [c for c in views if c != target]
    if not features:
        return None, "No kept or generalised column is left to predict the target from."
    original = consented[[*features, target]]
    released_view = pd.DataFrame({c: views[c] for c in [*features, target]}, index=consented.index)
    scores = compare_models(original, released_view, target, kept, sample=utility.sample)
    if scores is None:
        return None, "Too few subjects or target classes to train and score a model."
    note = ""
    if loaded.policy.tables[loaded.policy.subject_table].columns[target].technique == "generalise":
        note = ("The target itself is generalised: the released model predicts, and is scored "
                "on, the released (coarser) classes.")
    return scores, note

