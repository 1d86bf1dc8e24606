"""The Great Expectations release gate: validate the de-identified tables against suites
generated from the policy, store the result with the release and build Data Docs.

The gate fails closed. A failed expectation fails it; so does an expectation that raised
(GX reports exceptions as `success=False` with `exception_info` instead of raising, trap 1),
which the report marks as an *error* rather than a privacy failure. Stored results use the
BASIC format with no unexpected values, and exception messages are redacted, so nothing of
the data reaches the validation JSON, the Data Docs or the manifest.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pyarrow as pa

from deidflow.errors import GateFailed
from deidflow.jsonsafe import plain
from deidflow.policy import Policy
from deidflow.validation import expectations as dx
from deidflow.validation.data_docs import build_data_docs
from deidflow.validation.suite import RunSets, build_suites, save_suite

RESULT_FORMAT: dict[str, Any] = {
    "result_format": "BASIC",
    "partial_unexpected_count": 0,
    "exclude_unexpected_values": True,
    "include_unexpected_rows": False,
}
# Result keys that can hold data values; removed from anything stored, whatever GX returns.
VALUE_KEYS = frozenset({
    "partial_unexpected_list", "partial_unexpected_counts", "partial_unexpected_index_list",
    "unexpected_list", "unexpected_index_list", "unexpected_index_query", "unexpected_rows",
    "details",
})
DOCS_SITE = "deidflow"


@dataclass
class ExpectationOutcome:
    type: str
    table: str
    columns: list[str]
    success: bool
    observed: Any
    explanation: str
    error: bool = False  # the expectation raised: a bug or an unusable input, not a verdict

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ValidationReport:
    success: bool
    expectations: list[ExpectationOutcome]
    result_path: Path | None = None
    data_docs_index: Path | None = None
    suite_paths: dict[str, Path] = field(default_factory=dict)

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [e for e in self.expectations if not e.success and not e.error]

    @property
    def errors(self) -> list[ExpectationOutcome]:
        return [e for e in self.expectations if e.error]

    def explain(self) -> str:
        """The failed and errored checks, one per line, in plain language."""
        lines = [f"[{e.table}] {e.explanation}" for e in self.failures]
        lines += [f"[{e.table}] ERROR (not a privacy verdict) {e.explanation}" for e in self.errors]
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        if self.success:
            return
        raise GateFailed(
            f"{len(self.failures)} expectation(s) failed and {len(self.errors)} raised an "
            f"error; nothing may be released:\n{self.explain()}",
            file=str(self.result_path) if self.result_path else None,
            fix="generalise or suppress more, or correct the policy if the data-sharing "
            "agreement allows it; errors are defects to report, not limits to relax",
        )

    def as_dict(self) -> dict[str, Any]:
        """Summary for the manifest: counts, each expectation's outcome, where the details are."""
        by_type: dict[str, dict[str, int]] = {}
        for e in self.expectations:
            t = by_type.setdefault(e.type, {"passed": 0, "failed": 0, "errors": 0})
            t["errors" if e.error else "passed" if e.success else "failed"] += 1
        return {
            "success": self.success,
            "evaluated": len(self.expectations),
            "passed": sum(e.success for e in self.expectations),
            "failed": len(self.failures),
            "errors": len(self.errors),
            "by_type": by_type,
            "expectations": [e.as_dict() for e in self.expectations],
            "result_file": self.result_path.name if self.result_path else None,
            "data_docs": "data_docs/index.html" if self.data_docs_index else None,
        }


# --- plain-language explanations of built-in expectations ---------------------------------------


def _explain_builtin(etype: str, kwargs: dict[str, Any], result: dict[str, Any]) -> str:
    col = kwargs.get("column")
    if etype == "expect_table_columns_to_match_set":
        mismatched = (result.get("details") or {}).get("mismatched") or {}
        if not mismatched:
            return f"column set: exactly the {len(kwargs.get('column_set') or [])} released column(s)"
        return (f"column set differs: unexpected {mismatched.get('unexpected', [])}, "
                f"missing {mismatched.get('missing', [])}")
    n = result.get("unexpected_count")
    total = result.get("element_count")
    if etype == "expect_column_values_to_not_be_null":
        return f"nulls in '{col}': {n} of {total} rows are null"
    if etype == "expect_column_values_to_match_regex":
        return (f"value shape of generalised '{col}': {n} of {total} values do not have the "
                "shape of a generalised label")
    return f"{etype} on '{col}': {n} of {total} rows unexpected" if col else etype


def _redact(message: str) -> str:
    """An exception message without anything that could be a data value: quoted literals and
    long digit runs or e-mail-like tokens are replaced."""
    first = (message or "").strip().splitlines()[0] if message else ""
    first = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", first)
    first = re.sub(r"\S+@\S+|\d{5,}", "…", first)
    return first[:200]


def _exception(er: Any) -> tuple[bool, str]:
    info = er.exception_info or {}
    if "raised_exception" in info:
        infos = [info]
    else:  # keyed by metric id when a metric raised
        infos = [v for v in info.values() if isinstance(v, dict)]
    for i in infos:
        if i.get("raised_exception"):
            return True, _redact(str(i.get("exception_message") or ""))
    return False, ""


def _outcome(table: str, er: Any) -> ExpectationOutcome:
    cfg = er.expectation_config
    etype, kwargs = cfg.type, dict(cfg.kwargs)
    result = {k: v for k, v in (er.result or {}).items() if k not in VALUE_KEYS}
    details = (er.result or {}).get("details") or {}
    if "mismatched" in details:  # column names only: safe and needed to explain
        result["details"] = {"mismatched": details["mismatched"]}
    columns = [c for c in [kwargs.get("column"), kwargs.get("sensitive_column")] if c]
    columns = columns or list(kwargs.get("quasi_identifiers") or [])
    if kwargs.get("subject_column") and not columns:
        columns = [kwargs["subject_column"]]
    if isinstance(result.get("columns_with_identifiers"), dict) and result["columns_with_identifiers"]:
        # the columns that still hold identifiers: what the failure's policy key names
        columns = [str(c) for c in result["columns_with_identifiers"]]
    raised, message = _exception(er)
    if raised:
        return ExpectationOutcome(
            type=etype, table=table, columns=columns, success=False, observed=None, error=True,
            explanation=f"{etype} could not be evaluated ({message or 'exception'}); the gate "
            "fails closed",
        )
    impl = next((c for c in dx.CUSTOM_EXPECTATIONS if c.expectation_type == etype), None)
    try:
        explanation = (impl.explain(kwargs, result, bool(er.success)) if impl
                       else _explain_builtin(etype, kwargs, result))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        explanation = f"{etype}: {'passed' if er.success else 'failed'}"
    return ExpectationOutcome(
        type=etype, table=table, columns=columns, success=bool(er.success),
        observed=plain(result.get("observed_value", result.get("unexpected_count"))),
        explanation=explanation,
    )


def _scrub_result_dict(obj: Any) -> Any:
    """A GX result dict with value-bearing keys dropped and exception texts redacted."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in VALUE_KEYS and k != "details":
                continue
            if k == "details" and isinstance(v, dict):
                v = {"mismatched": v["mismatched"]} if "mismatched" in v else {}
            if k in ("exception_message", "exception_traceback") and v:
                # the traceback holds local values; GX's renderer needs a string in its place
                v = _redact(str(v)) if k == "exception_message" else ""
            out[k] = _scrub_result_dict(v)
        return out
    if isinstance(obj, list):
        return [_scrub_result_dict(v) for v in obj]
    return obj


# --- running -----------------------------------------------------------------------------------


@contextmanager
def _quiet_gx() -> Iterator[None]:
    """GX logs 'expectation not found', store and renderer chatter at WARNING; the gate reports
    what matters itself. GX also fingerprints every pandas batch (an MD5 over a hash of every
    cell, paid per row) into the result; the gate has no use for it and it is
    a digest of the released data, so it is switched off for the run (GX skips it above a
    size threshold; the threshold is set to zero)."""
    from great_expectations.execution_engine import pandas_execution_engine as pee

    logger = logging.getLogger("great_expectations")
    level, threshold = logger.level, pee.HASH_THRESHOLD
    logger.setLevel(logging.ERROR)
    # Some GX modules set their own logger's level (e.g. the docs-site "Created temporary
    # directory" INFO line): quiet those children too, and restore them afterwards.
    children = {name: lg.level for name, lg in logging.root.manager.loggerDict.items()
                if name.startswith("great_expectations.") and isinstance(lg, logging.Logger)}
    for name in children:
        logging.getLogger(name).setLevel(logging.ERROR)
    pee.HASH_THRESHOLD = 0
    try:
        yield
    finally:
        for name, lvl in children.items():
            logging.getLogger(name).setLevel(lvl)
        logger.setLevel(level)
        pee.HASH_THRESHOLD = threshold


def _context(docs_dir: Path | None):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        ctx.add_data_docs_site(
            site_name=DOCS_SITE,
            site_config={
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                  "base_directory": str(docs_dir)},
            },
        )
    return ctx


def validate_release(
    policy: Policy,
    tables: Mapping[str, pd.DataFrame],
    *,
    input_identifiers: Iterable[str] | pd.Series | pa.Array | pa.ChunkedArray | dx.Chunks
    | dx.StringSet,
    consented_pseudonyms: Iterable[str] | pd.Series | pa.Array | pa.ChunkedArray | dx.StringSet,
    out_dir: Path,
    data_docs: bool = True,
) -> ValidationReport:
    """Validate the de-identified `tables` with suites generated from `policy`.

    `tables` may be any mapping: its keys are listed once, and each policy table is fetched
    exactly once, in policy order, and let go after its checks, so a mapping that reads a
    table on access keeps one table in memory at a time. A table other than the subject table
    may be given as `Parts` (row partitions checked one at a time). The two sets may be lists, pandas
    Series or pyarrow arrays; they are held as Arrow arrays, never as Python strings. The input
    identifiers may also be `expectations.Chunks` (read in pieces, e.g. from the run's work
    files): then only their 64-bit hashes are held, and the strings are read again to confirm
    a hit. Either set may also be a `StringSet` built beforehand (`validation.sets`, which does
    not import GX: the release hashes them while this module is imported).

    Writes `out_dir/validation.json` (BASIC results, no data values), `out_dir/suites/*.json`
    and, with `data_docs`, a self-contained Data Docs site at `out_dir/data_docs/index.html`.
    Never raises for a failed check: read `report.success` (or call `raise_if_failed`)."""
    import great_expectations as gx

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    docs_dir = out_dir / "data_docs" if data_docs else None
    outcomes: list[ExpectationOutcome] = []
    stored: list[dict[str, Any]] = []
    suite_paths: dict[str, Path] = {}

    # The names only: `name in tables` on a lazy mapping may load the table (Mapping's
    # default __contains__ calls __getitem__).
    present = list(tables)
    for name in policy.tables:
        if name not in present:
            outcomes.append(ExpectationOutcome(
                type="deidflow_table_present", table=name, columns=[], success=False,
                observed=None, explanation=f"table '{name}' of the policy is missing from the "
                "release output"))
    for name in present:
        if name not in policy.tables:
            outcomes.append(ExpectationOutcome(
                type="deidflow_table_declared", table=name, columns=[], success=False,
                observed=None, explanation=f"table '{name}' is not declared by the policy and "
                "may not be released"))

    with (_quiet_gx(), dx.runtime_set(input_identifiers) as known_ref,
          dx.runtime_set(consented_pseudonyms) as cons_ref):
        sets = RunSets(known_identifiers_ref=known_ref, n_known_identifiers=dx.runtime_size(known_ref),
                       consented_ref=cons_ref, n_consented=dx.runtime_size(cons_ref))
        suites = build_suites(policy, sets)
        ctx = _context(docs_dir)
        source = ctx.data_sources.add_pandas("release")
        for name, suite in suites.items():
            suite_paths[name] = save_suite(suite, out_dir / "suites" / f"{name}.json")
            if name not in present:
                continue
            batch_def = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(
                "all_rows")
            suite = ctx.suites.add(suite)
            vd = ctx.validation_definitions.add(
                gx.ValidationDefinition(name=f"release.{name}", data=batch_def, suite=suite))
            value = tables[name]
            if isinstance(value, Parts):
                if name == policy.subject_table:  # k, l and risk need every subject at once
                    raise ValueError("the subject table must be validated whole, not in Parts")
                per_part = []
                for i, load in enumerate(value.loaders):
                    res = vd.run(batch_parameters={"dataframe": load()}, result_format=RESULT_FORMAT)
                    _release_batches(source)
                    per_part.append([_outcome(name, er) for er in res.results])
                    stored.append({"table": name, "partition": i, "suite": suite.name,
                                   "result": plain(_scrub_result_dict(res.to_json_dict()))})
                outcomes += _combine_parts(per_part)
                continue
            res = vd.run(batch_parameters={"dataframe": value}, result_format=RESULT_FORMAT)
            del value
            _release_batches(source)
            outcomes += [_outcome(name, er) for er in res.results]
            stored.append({"table": name, "suite": suite.name,
                           "result": plain(_scrub_result_dict(res.to_json_dict()))})
        _scrub_store(ctx)
        index = build_data_docs(ctx, DOCS_SITE, docs_dir) if docs_dir is not None else None

    success = bool(outcomes) and all(e.success for e in outcomes)
    result_path = out_dir / "validation.json"
    report = ValidationReport(success=success, expectations=outcomes, result_path=result_path,
                              data_docs_index=index, suite_paths=suite_paths)
    result_path.write_text(json.dumps(
        plain({"success": success, "summary": report.as_dict(), "validations": stored}),
        ensure_ascii=False, indent=1, allow_nan=False))
    return report


@dataclass(frozen=True)
class Parts:
    """A released table given as row partitions, each loaded when its turn comes and checked
    by the table's whole suite on its own (the Dask engine's output, too big to hold at once).

    Only for tables whose expectations look at one row or one value at a time (schema,
    identifiers, consent, shapes): every table but the subject table, whose k, l and risk
    expectations need all subjects together and which is therefore always given whole."""

    loaders: tuple[Callable[[], pd.DataFrame], ...]


def _combine_parts(per_part: list[list[ExpectationOutcome]]) -> list[ExpectationOutcome]:
    """One outcome per expectation from its outcomes on every partition: it passes only if it
    passed on every partition; a failure reports the first failing partition; counts add up."""
    if not per_part:
        return []
    out = []
    for j, first in enumerate(per_part[0]):
        results = [part[j] for part in per_part]
        failed = [(i, r) for i, r in enumerate(results) if not r.success]
        observed = first.observed
        if all(isinstance(r.observed, (int, float)) and not isinstance(r.observed, bool)
               for r in results):
            observed = sum(r.observed for r in results)
        if failed:
            i, r = failed[0]
            out.append(ExpectationOutcome(
                type=r.type, table=r.table, columns=r.columns, success=False, observed=observed,
                error=any(x.error for _, x in failed),
                explanation=f"partition {i} of {len(results)} (and {len(failed) - 1} more): "
                f"{r.explanation}" if len(failed) > 1 else
                f"partition {i} of {len(results)}: {r.explanation}"))
        else:
            out.append(ExpectationOutcome(
                type=first.type, table=first.table, columns=first.columns, success=True,
                observed=observed, explanation=f"{first.explanation} (all {len(results)} partitions)"))
    return out


def _release_batches(source: Any) -> None:
    """Drop the data source's cached batches: GX keeps every batch's DataFrame in its
    execution engine for the life of the context, which would hold every released table in
    memory at once."""
    engine = source.get_execution_engine()
    engine.batch_manager.batch_data_cache.clear()
    engine.batch_manager.reset_batch_cache()


def _scrub_store(ctx: Any) -> None:
    """Redact the stored results Data Docs render from (same rules as validation.json)."""
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
    )

    store = ctx.validation_results_store
    for key in store.list_keys():
        res = store.get(key)
        data = _scrub_result_dict(res.to_json_dict())
        store.set(key, ExpectationSuiteValidationResult(**{
            k: data[k] for k in ("success", "results", "suite_name", "suite_parameters",
                                 "statistics", "meta", "batch_id", "id") if k in data}))
