"""Reference tables: lookup tables without a subject column (providers, organisations,
payers), released beside the patient tables with their direct identifiers treated.

This module owns their whole path: the policy's rules for them and for the foreign keys that
point at them (`check_references`), reading and checking their inputs (`read_reference`,
`reference_inputs`, a release step before transform, so that their digests enter the
release id), and their release (`release_reference_tables`, a step after the validation gate).

What was chosen, and why (README "Reference tables"):
- Not consent-filtered: a reference row describes a provider or a payer, not a patient.
- Data minimisation by default: a reference row is released only if a released row points at
  it (a released patient row, or a released row of another reference table);
  `keep: all` with a reason releases every row.
- Their key and the foreign keys into it are pseudonymised with the same parameters (checked
  at policy load), so `encounters.PROVIDER` holds the same pseudonym as `organizations.Id`.
- Their quasi-identifiers (a provider's city) are not in the patient risk: they describe
  the provider. The manifest and the review page say so beside each such column.
- A second look before anything ships: no released cell of a reference table may equal one of
  its input's direct-identifier values (names, addresses, phones), whatever the technique did.
- Their direct-identifier values (as read, those long and rare enough to identify someone) are
  known values of every patient's note: the scrubber removes them and the validation gate
  looks for them in released text (`reference_identifiers`), as for the patient tables'.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deidflow.errors import GateFailed, InputError, PolicyError

# A direct-identifier value shorter than this is not looked for by the leak check ("MA").
MIN_LEAK_CHARS = 5
PSEUDONYM_PARAMS = ("scope", "reversible", "length", "prefix", "method")


# --- the policy ------------------------------------------------------------------------------


def _pseudonym_params(column: str, spec: Any) -> dict[str, Any]:
    """A pseudonymise column's parameters with the defaults that change its values made
    explicit (the scope defaults to the column's name)."""
    p = dict(spec.params)
    p.setdefault("scope", column)
    return {k: p.get(k) for k in PSEUDONYM_PARAMS}


def foreign_keys(policy: Any) -> list[tuple[str, str, str, bool]]:
    """Every column that references a reference table: (table, column, referenced table,
    whether the referencing table is itself a reference table)."""
    out = [(t, c, col.references, False) for t, spec in policy.tables.items()
           for c, col in spec.columns.items() if col.references]
    out += [(t, c, col.references, True) for t, spec in policy.reference_tables.items()
            for c, col in spec.columns.items() if col.references]
    return out


def release_order(policy: Any) -> list[str]:
    """Reference tables in the order they are released: a table after every reference table
    that points at it (its referenced rows are known once those are released)."""
    refs = policy.reference_tables
    pointed_by = {name: {t for t, _, r, is_ref in foreign_keys(policy) if is_ref and r == name}
                  for name in refs}
    order: list[str] = []
    while len(order) < len(refs):
        ready = [n for n in refs if n not in order and pointed_by[n] <= set(order)]
        if not ready:  # check_references refuses cycles; never loop
            raise PolicyError("reference tables point at each other in a cycle",
                              key="reference_tables", fix="remove one of the references")
        order.extend(ready)
    return order


def check_references(policy: Any, source: str) -> None:
    """The policy's rules for reference tables and foreign keys; each error names the key."""
    from deidflow.policy import Role

    refs = policy.reference_tables
    for name, ref in refs.items():
        base = f"reference_tables.{name}"
        if name in policy.tables:
            raise PolicyError(f"'{name}' is declared both under tables and reference_tables",
                              file=source, key=base, fix="declare it once: under tables if its "
                              "rows are patients' records, under reference_tables otherwise")
        if ref.key not in ref.columns:
            raise PolicyError(f"{base}: key '{ref.key}' is not listed under its columns",
                              file=source, key=f"{base}.key",
                              fix="list it with role link_key and technique pseudonymise")
        key = ref.columns[ref.key]
        if key.role is not Role.link_key or key.technique != "pseudonymise":
            raise PolicyError(
                f"{base}.columns.{ref.key} is the table's key: it must be a link_key "
                f"pseudonymised (got role {key.role.value}, technique {key.technique})",
                file=source, key=f"{base}.columns.{ref.key}",
                fix="e.g. {role: link_key, technique: pseudonymise, params: {scope: provider}}")
        for col, spec in ref.columns.items():
            ckey = f"{base}.columns.{col}"
            if spec.role is Role.direct_identifier and spec.technique == "keep":
                raise PolicyError(f"{ckey} is a direct_identifier and cannot be kept",
                                  file=source, key=ckey, fix="use drop, mask or pseudonymise")
            if spec.role is Role.quasi_identifier and spec.technique == "generalise":
                raise PolicyError(
                    f"{ckey}: the search generalises the patient tables' quasi-identifiers "
                    "only; a reference table's are not in the patient risk",
                    file=source, key=ckey,
                    fix="drop it, or keep it (its value describes the provider, not a "
                    "patient; the manifest says it is outside the patient risk)")
            if spec.derived_from is not None:
                raise PolicyError(f"{ckey}: derived columns are for patient tables",
                                  file=source, key=f"{ckey}.derived_from", fix="remove derived_from")
            if spec.identifier_check is not None and spec.role in (
                    Role.direct_identifier, Role.link_key, Role.free_text):
                raise PolicyError(f"{ckey}: identifier_check cannot be set on a "
                                  f"{spec.role.value} column", file=source, key=ckey,
                                  fix="remove identifier_check")
    fks = foreign_keys(policy)
    for table, col, target, is_ref in fks:
        owner = refs[table] if is_ref else policy.tables[table]
        ckey = f"{'reference_tables' if is_ref else 'tables'}.{table}.columns.{col}"
        spec = owner.columns[col]
        if target not in refs:
            known = ", ".join(refs) or "none declared"
            hint = (f"; '{target}' is a patient table: a patient link uses subject_column"
                    if target in policy.tables else "")
            raise PolicyError(
                f"{ckey}: references '{target}', which is not a reference table "
                f"(reference tables: {known}){hint}",
                file=source, key=f"{ckey}.references",
                fix=f"declare '{target}' under reference_tables (with its key), or correct the name")
        if is_ref and target == table:
            raise PolicyError(f"{ckey}: a reference table cannot reference itself",
                              file=source, key=f"{ckey}.references", fix="remove references")
        if spec.role is not Role.link_key or spec.technique != "pseudonymise":
            raise PolicyError(
                f"{ckey}: a foreign key into '{target}' must be a link_key pseudonymised like "
                f"{target}.{refs[target].key} (got role {spec.role.value}, technique "
                f"{spec.technique})", file=source, key=ckey,
                fix="role: link_key, technique: pseudonymise, with the key's params")
        want = _pseudonym_params(refs[target].key, refs[target].columns[refs[target].key])
        got = _pseudonym_params(col, spec)
        if want != got:
            diff = ", ".join(f"{k}: {got[k]!r} vs {want[k]!r}" for k in PSEUDONYM_PARAMS if got[k] != want[k])
            raise PolicyError(
                f"{ckey} references {target}.{refs[target].key} but is pseudonymised "
                f"differently ({diff}): the released values would not join",
                file=source, key=f"{ckey}.params",
                fix="give both columns the same pseudonymise params, e.g. "
                f"params: {{scope: {want['scope']}}}")
    for name, ref in refs.items():
        if ref.keep == "referenced" and not any(t == name for _, _, t, _ in fks):
            raise PolicyError(
                f"reference_tables.{name}: no column references it, so no row of it would be "
                "released (only rows a released row references are)",
                file=source, key=f"reference_tables.{name}",
                fix=f"add 'references: {name}' to the foreign-key column that points at it, or "
                "set keep: all with a reason")
    try:
        release_order(policy)
    except PolicyError:
        raise PolicyError("reference tables reference each other in a cycle", file=source,
                          key="reference_tables", fix="remove one of the references") from None


# --- the inputs --------------------------------------------------------------------------------


def read_reference(loaded: Any, name: str) -> Any:
    """One reference table read and checked (its columns as the policy lists them, and a key
    that is present and unique on every row). Returns deidflow.io's InputTable."""
    from deidflow.io import read_table

    spec = loaded.policy.reference_tables[name]
    try:
        table = read_table(name, spec, loaded)
    except InputError as exc:
        key = exc.key.replace(f"tables.{name}", f"reference_tables.{name}", 1) if exc.key else exc.key
        raise InputError(exc.message, file=exc.file, key=key, column=exc.column, row=exc.row,
                         fix=exc.fix) from None
    ids = table.frame[spec.key]
    empty = ids.isna().to_numpy() | (ids.astype("string").str.strip() == "").fillna(True).to_numpy()
    if empty.any():
        raise InputError("a reference table's key is empty", file=str(table.path), column=spec.key,
                         row=int(np.argmax(empty)) + 2, fix="every row of a reference table needs its key")
    dup = ids.duplicated().to_numpy()
    # A repeated key makes a join ambiguous: refused when a foreign key points at the table.
    # A table nobody references (released whole, keep: all) may hold one (Synthea's
    # ma_113 providers do); the manifest counts them.
    if dup.any() and any(t == name for _, _, t, _ in foreign_keys(loaded.policy)):
        raise InputError("a reference table's key repeats, so a join on it would be ambiguous",
                         file=str(table.path), column=spec.key, row=int(np.argmax(dup)) + 2,
                         fix="each key must name one row; remove or correct the duplicated row")
    return table


def reference_inputs(work: Path) -> list[dict[str, Any]]:
    """Release step between the search and transform: read and check every reference table
    (before the tables are transformed), and add its digest to the run's inputs, so that the
    release id (fixed when transform begins) changes with it."""
    from deidflow.manifest.record import InputFile
    from deidflow.release.state import RunState, pinned_policy

    state = RunState.load(work)
    loaded = pinned_policy(state)
    added = []
    identifiers = []
    for name, spec in loaded.policy.reference_tables.items():
        table = read_reference(loaded, name)
        added.append({"table": name, "path": spec.path, "sha256": table.sha256, "rows": table.rows})
        identifiers += identifying_rows(name, spec, table.frame, loaded.policy.limits.k)
    if identifiers:
        pd.concat(identifiers, ignore_index=True).to_parquet(Path(work) / IDENTIFIERS_FILE)
    if added:
        known = {i.table for i in state.inputs}
        state.inputs = [*state.inputs, *[InputFile(**a) for a in added if a["table"] not in known]]
        state.save(work)
    return added


# --- their identifiers, looked for in the patients' notes ----------------------------------------

# In the run's private work directory: written by `reference_inputs`, read by the transform
# (the scrubber) and the validation gate, so each reference table is read once per run.
IDENTIFIERS_FILE = "reference-identifiers.parquet"


def identifying_rows(name: str, spec: Any, frame: pd.DataFrame, k: int) -> list[pd.DataFrame]:
    """(table, column, value) of the direct-identifier values of one reference table as read
    (before any technique), without those that identify nobody: the known-value rule of the
    gate (`validation.known_identifiers`: too short, a short bare number, or held by k or more
    of the table's rows, which here are providers, not subjects)."""
    from deidflow.io import as_arrow
    from deidflow.policy import Role
    from deidflow.validation.known_identifiers import identifying_values

    out = []
    for col, cspec in spec.columns.items():
        if cspec.role is not Role.direct_identifier or col not in frame:
            continue
        values = identifying_values(as_arrow(frame[col]), common=k).unique()
        if len(values):
            out.append(pd.DataFrame({"table": name, "column": col,
                                     "value": pd.Series(values.to_pylist(), dtype="string")}))
    return out


def reference_identifiers(work: Path) -> pd.DataFrame:
    """The reference tables' identifying values of this run (table, column, value); empty
    when the policy has none."""
    path = Path(work) / IDENTIFIERS_FILE
    if not path.is_file():
        return pd.DataFrame({"table": [], "column": [], "value": []}, dtype="string")
    return pd.read_parquet(path).astype("string")


def with_reference_identifiers(known: pd.DataFrame, work: Path) -> pd.DataFrame:
    """The scrubber's known values (subject_id, kind, value) with every reference table's
    identifying value added for every note (`techniques.scrub.EVERYONE`): a provider belongs
    to no subject, and any patient's note may name them. Not capped like the patient tables'
    staff values (`scrub.EVERYONE_MAX`): a reference value has no subject to fall back on."""
    from deidflow.techniques.scrub import EVERYONE

    ref = reference_identifiers(work)
    if ref.empty:
        return known
    everyone = pd.DataFrame({"subject_id": pd.Series(EVERYONE, index=ref.index, dtype="string"),
                             "kind": ref["column"], "value": ref["value"]})
    # `known` is already text (known_from_tables): no second copy of a large partition's
    return pd.concat([known, everyone], ignore_index=True)


def reference_identifier_values(work: Path) -> list[Any]:
    """The same values as Arrow arrays, for the gate's known-value check."""
    import pyarrow as pa

    ref = reference_identifiers(work)
    return [pa.array(ref["value"].to_numpy(dtype=object), type=pa.large_string())] if len(ref) else []


# --- the release -------------------------------------------------------------------------------


def _released_values(stage: Path, table: str, column: str, fmt: str, engine: str) -> pd.Series:
    from deidflow.release.transform import released_table

    values = released_table(stage, table, fmt, engine, [column])[column]
    return values.astype("string").dropna()


def _apply_columns(name: str, spec: Any, frame: pd.DataFrame, loaded: Any, keyring: Any,
                   fmt: str) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Every column through its technique, as a patient table's are; per-row keyed techniques
    (date shifting) key on the row's own key (the provider), there being no subject."""
    from deidflow.column_types import TYPED_TECHNIQUES, column_kind, describe_kind, with_kinds
    from deidflow.io import as_arrow
    from deidflow.policy import Role
    from deidflow.release.state import plain
    from deidflow.techniques import ApplyContext, registry

    out: dict[str, Any] = {}
    entries: list[dict[str, Any]] = []
    kinds: dict[str, str] = {}
    memo: dict[Any, Any] = {}
    for col, cspec in spec.columns.items():
        technique = registry.get(cspec.technique)
        ctx = ApplyContext(table=name, column=col, subject_ids=frame[spec.key], keyring=keyring,
                           frame=frame, base_dir=loaded.base_dir, memo=memo)
        result = technique.apply(frame[col], cspec, ctx)
        entry = {"column": col, "role": cspec.role.value, **plain(technique.describe(cspec, ctx))}
        if ctx.counts:
            entry["counts"] = dict(ctx.counts)
        if cspec.references:
            entry["references"] = cspec.references
        if cspec.role is Role.quasi_identifier and result is not None:
            entry["not_in_patient_risk"] = True
        if result is not None:
            out[col] = result
            if cspec.technique in TYPED_TECHNIQUES:
                kinds[col] = column_kind([as_arrow(frame[col])])
                entry["released_type"] = describe_kind(kinds[col], cspec.technique)
        entries.append(entry)
    released = pd.DataFrame(out, index=frame.index)
    if fmt == "parquet":
        released = with_kinds(released, kinds)
    return released, entries


def check_no_leak(name: str, spec: Any, frame: pd.DataFrame, released: pd.DataFrame) -> None:
    """No released cell of the table equals one of its input's direct-identifier values
    (compared trimmed and case-folded). A second look that does not trust the techniques."""
    from deidflow.policy import Role

    direct = [c for c, cs in spec.columns.items() if cs.role is Role.direct_identifier and c in frame]
    if not direct or released.empty:
        return
    norm = lambda s: s.astype("string").str.strip().str.casefold()  # noqa: E731
    known = pd.concat([norm(frame[c]) for c in direct], ignore_index=True).dropna()
    known = pd.Index(known[known.str.len() >= MIN_LEAK_CHARS].unique())
    for col in released.columns:
        hits = norm(released[col]).isin(known).fillna(False).to_numpy(dtype=bool)
        if hits.any():
            raise GateFailed(
                f"reference table '{name}', column '{col}': {int(hits.sum())} released value(s) "
                "equal a direct-identifier value of the input (name, address, phone …); "
                "nothing was published",
                key=f"reference_tables.{name}.columns.{col}",
                fix="treat the column as a direct_identifier (drop, mask or pseudonymise)")


def release_reference_tables(work: Path) -> list[dict[str, Any]]:
    """Release step after the validation gate: each reference table, its columns treated, the
    rows the released rows reference (or all, `keep: all`), written beside the patient tables.
    Returns and records (run state → manifest) one summary per table: counts, no values."""
    from deidflow.io import write_frame
    from deidflow.keys import KeyRing
    from deidflow.release.state import RunState, pinned_policy
    from deidflow.release.workdir import WorkDir

    state = RunState.load(work)
    loaded = pinned_policy(state)
    policy = loaded.policy
    if not policy.reference_tables:
        return []
    wd = WorkDir.of(work, state)
    stage = wd.staging
    fmt, engine = policy.output.format, state.engine
    keyring = KeyRing.from_policy(loaded)
    fks = foreign_keys(policy)
    # the released (pseudonymised) key values each reference table is pointed at by
    wanted: dict[str, list[pd.Series]] = {name: [] for name in policy.reference_tables}
    for table, col, target, is_ref in fks:
        if not is_ref:
            wanted[target].append(_released_values(stage, table, col, fmt, engine))
    summaries = []
    for name in release_order(policy):
        spec = policy.reference_tables[name]
        frame = read_reference(loaded, name).frame
        # The key's released values first (the pseudonyms the foreign keys hold), to choose
        # the rows; then every column on the chosen rows only, so that a rare-value rule
        # counts the rows that ship.
        keys = _apply_columns(name, spec.model_copy(update={"columns": {spec.key: spec.columns[spec.key]}}),
                              frame, loaded, keyring, "csv")[0][spec.key].astype("string")
        pointed = (pd.concat(wanted[name], ignore_index=True) if wanted[name]
                   else pd.Series([], dtype="string"))
        referenced = keys.isin(pd.Index(pointed.unique())).to_numpy(dtype=bool)
        keep = np.ones(len(frame), dtype=bool) if spec.keep == "all" else referenced
        chosen = frame.loc[keep].reset_index(drop=True)
        released, entries = _apply_columns(name, spec, chosen, loaded, keyring, fmt)
        check_no_leak(name, spec, chosen, released)
        for _, col, target, is_ref in (fk for fk in fks if fk[0] == name and fk[3]):
            wanted[target].append(released[col].astype("string").dropna())
        dangling = int((~pointed.isin(pd.Index(keys.unique()))).sum())
        if engine == "dask":
            write_frame(released, wd.staged_part(name, 0), "parquet")
        else:
            write_frame(released, stage / "data" / f"{name}.{fmt}", fmt)
        summaries.append({
            "table": name, "key": spec.key, "keep": spec.keep, "reason": spec.reason,
            "rows_in": int(len(frame)), "rows_out": int(keep.sum()),
            "dropped_unreferenced": int(len(frame) - keep.sum()),
            "unreferenced_kept": int((keep & ~referenced).sum()),
            "references_to_unknown_keys": dangling,
            "repeated_keys": int(frame[spec.key].duplicated().sum()),
            "referenced_by": sorted(f"{t}.{c}" for t, c, target, _ in fks if target == name),
            "consent_filtered": False,
            "columns": entries,
        })
    state.reference_tables = summaries
    state.save(work)
    return summaries


# --- deidflow check ----------------------------------------------------------------------------


def check_reference_inputs(loaded: Any, frames: dict[str, pd.DataFrame]) -> list[dict[str, Any]]:
    """`deidflow check`: each reference table read and checked, and how many foreign-key
    values of the input point at no row of it (they will join nothing)."""
    out = []
    tables = {name: read_reference(loaded, name) for name in loaded.policy.reference_tables}
    all_frames = {**frames, **{n: t.frame for n, t in tables.items()}}
    for name, table in tables.items():
        spec = loaded.policy.reference_tables[name]
        keys = pd.Index(table.frame[spec.key].astype("string").unique())
        unknown = 0
        refs = []
        for t, c, target, _ in foreign_keys(loaded.policy):
            if target != name or t not in all_frames:
                continue
            values = all_frames[t][c].astype("string").dropna()
            unknown += int((~values.isin(keys)).sum())
            refs.append(f"{t}.{c}")
        out.append({"table": name, "rows": table.rows, "path": str(table.path), "key": spec.key,
                    "referenced_by": refs, "unknown_references": unknown, "keep": spec.keep})
    return out
