"""The release gate's expectation suites, generated from the policy, and their safe reloading.

One suite per released table (GX validates one batch per suite). Every suite states the schema
the policy declares and that no direct identifier is left; every table's subject column must
be consented; the subject table also carries k-anonymity, l-diversity and GB/T 42460 risk.
Thresholds come from the policy only, never from the data.

A saved suite is plain GX JSON. `load_suite` refuses one whose expectation types are not
registered: GX itself would drop such an expectation with a log line and validate without it
(ecosystem.md trap 3), which for a privacy gate means passing without the check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
from great_expectations.exceptions import ExpectationNotFoundError
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
from great_expectations.expectations.registry import get_expectation_impl

from deidflow.errors import DeidflowError
from deidflow.policy import Column, Policy, Role
from deidflow.validation import expectations as dx

SUITE_PREFIX = "deidflow."

# Shapes of generalised labels, by hierarchy kind, at any level (the level is the search's
# choice): GB/T 2260 region codes 6 → 4 → 2 digits (optionally zero- or star-padded) or the
# top label; postcodes 6 → 4 → 2 → 0 digits, padded the same way.
GENERALISED_SHAPES: dict[str, str] = {
    "region": r"^(?:[0-9]{2}(?:[0-9]{2}){0,2}[0*]*|[A-Z]{2}|\*+|[^0-9]*)$",
    "postcode": r"^(?:[0-9]{0,6}[0*]*|\*+)$",
}


@dataclass(frozen=True)
class RunSets:
    """References to the run-time sets (see `expectations.runtime_set`) and their sizes."""

    known_identifiers_ref: str
    n_known_identifiers: int
    consented_ref: str
    n_consented: int


def released_columns(policy: Policy, table: str) -> list[str]:
    """Columns the policy releases for `table`: every listed column whose technique keeps it."""
    return [c for c, spec in policy.tables[table].columns.items() if spec.technique != "drop"]


def _declared_kind(spec: Column) -> str:
    """The value kind a released column must have. Only what holds whatever the output format
    (a CSV release reads back as strings): pseudonyms, masks and scrubbed text are strings."""
    if spec.role in (Role.link_key, Role.direct_identifier, Role.free_text):
        return "string"
    return "any"


def released_quasi_identifiers(policy: Policy) -> list[str]:
    """Quasi-identifiers of the subject table that are released (a dropped one cannot link)."""
    kept = set(released_columns(policy, policy.subject_table))
    return [c for c in policy.quasi_identifiers() if c in kept]


def identifier_check_settings(spec: Any) -> dict[str, Any]:
    """The table's per-column identifier_check settings, as the expectation takes them."""
    unchecked, formats = [], {}
    for col, cspec in spec.columns.items():
        ic = cspec.identifier_check
        if ic is None:
            continue
        if not ic.check:
            unchecked.append(col)
        elif ic.allow_formats:
            formats[col] = list(ic.allow_formats)
    return {"unchecked_columns": unchecked, "allowed_formats": formats}


def build_suites(policy: Policy, sets: RunSets) -> dict[str, gx.ExpectationSuite]:
    """One suite per policy table, named `deidflow.<table>`."""
    suites = {}
    for table in policy.tables:
        # Built through the constructor: `add_expectation` needs an active data context.
        suites[table] = gx.ExpectationSuite(
            name=f"{SUITE_PREFIX}{table}", expectations=table_expectations(policy, table, sets))
    return suites


def table_expectations(policy: Policy, table: str, sets: RunSets) -> list[Any]:
    spec = policy.tables[table]
    columns = released_columns(policy, table)
    subject = spec.subject_column
    out: list[Any] = [
        dx.ExpectTableToMatchPolicySchema(
            columns=columns,
            dtypes={c: _declared_kind(spec.columns[c]) for c in columns},
        ),
        gxe.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=True),
        dx.ExpectNoDirectIdentifiers(
            whole_value_columns=[c for c in columns if spec.columns[c].role is Role.link_key],
            known_identifiers_ref=sets.known_identifiers_ref,
            n_known_identifiers=sets.n_known_identifiers,
            table=table,
            **identifier_check_settings(spec),
        ),
    ]
    if subject in columns:
        out += [
            gxe.ExpectColumnValuesToNotBeNull(column=subject),
            dx.ExpectSubjectsToBeConsented(
                subject_column=subject,
                consented_ref=sets.consented_ref,
                n_consented=sets.n_consented,
            ),
        ]
    for col in columns:
        cspec = spec.columns[col]
        if cspec.hierarchy is not None and cspec.hierarchy.kind in GENERALISED_SHAPES:
            out.append(gxe.ExpectColumnValuesToMatchRegex(
                column=col, regex=GENERALISED_SHAPES[cspec.hierarchy.kind]))
    if table == policy.subject_table:
        out += risk_expectations(policy)
    return out


def risk_expectations(policy: Policy) -> list[Any]:
    """k, l, class risk and overall risk over the released quasi-identifiers, per subject.
    The limits, and the sensitive columns l holds on, are those the search met
    (`risk.limits.RiskLimits`)."""
    from deidflow.risk.limits import RiskLimits

    subject = policy.tables[policy.subject_table].subject_column
    limits = RiskLimits.from_policy(policy)
    qi = list(limits.quasi_identifiers)
    out: list[Any] = [
        dx.ExpectSubjectsToBeKAnonymous(subject_column=subject, quasi_identifiers=qi, k=limits.k),
        dx.ExpectMaxClassRiskToBeAtMost(
            subject_column=subject, quasi_identifiers=qi, max_class_risk=limits.max_class_risk),
        dx.ExpectOverallRiskToBeAtMost(
            subject_column=subject, quasi_identifiers=qi,
            release_model=limits.release_model,
            tau=limits.max_class_risk,
            # GB/T 42460 pr (context risk): 1 for public; the policy has no field for the
            # controlled/enclave attack probabilities, so 1 (the conservative bound) there too.
            pr=1.0,
            max_overall_risk=limits.max_overall_risk,
        ),
    ]
    if limits.l is not None:
        for col in limits.sensitive_columns:
            out.append(dx.ExpectSensitiveColumnToBeLDiverse(
                subject_column=subject, quasi_identifiers=qi, sensitive_column=col,
                l=limits.l, variant=limits.l_variant, c=float(limits.c or 0.0)))
    return out


# --- saving and loading -------------------------------------------------------------------------


def save_suite(suite: gx.ExpectationSuite, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = suite.to_json_dict()
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True, default=str))
    return path


def load_suite(path: str | Path) -> gx.ExpectationSuite:
    """Read a saved suite, refusing any expectation type that is not registered (or any
    configuration GX would not rebuild) instead of silently validating without it."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DeidflowError(
            f"cannot read the expectation suite: {exc}",
            file=str(p), fix="pass a suite JSON written by deidflow (validation/suites/*.json)",
        ) from None
    configs = data.get("expectations") if isinstance(data, dict) else None
    if not isinstance(configs, list) or not data.get("name"):
        raise DeidflowError(
            "not an expectation suite (no 'name' or no 'expectations' list)",
            file=str(p), fix="pass a suite JSON written by deidflow (validation/suites/*.json)",
        )
    for i, cfg in enumerate(configs):
        etype = cfg.get("type") if isinstance(cfg, dict) else None
        try:
            get_expectation_impl(str(etype))
        except ExpectationNotFoundError:
            raise DeidflowError(
                f"expectation type '{etype}' is not registered, so Great Expectations would "
                "drop it and validate without it",
                file=str(p), key=f"expectations[{i}].type",
                fix="import the module that defines it (deidflow.validation.expectations) "
                "before loading, or regenerate the suite from the policy",
            ) from None
        try:  # the configuration GX would build: a missing threshold must not pass quietly
            ExpectationConfiguration(type=str(etype), kwargs=dict(cfg.get("kwargs") or {}),
                                     meta=cfg.get("meta")).to_domain_obj()
        except Exception as exc:  # pydantic, GX and type errors alike: refuse, name the entry
            first = (str(exc).strip().splitlines() or [type(exc).__name__])
            raise DeidflowError(
                f"expectation '{etype}' has an invalid configuration and would be dropped "
                f"({' '.join(line.strip() for line in first[:3])})",
                file=str(p), key=f"expectations[{i}].kwargs",
                fix="regenerate the suite from the policy",
            ) from None
    try:
        suite = gx.ExpectationSuite(**{k: data[k] for k in (
            "name", "expectations", "meta", "notes", "suite_parameters", "id") if k in data})
    except Exception as exc:
        raise DeidflowError(
            f"Great Expectations cannot rebuild the suite: {type(exc).__name__}",
            file=str(p), fix="regenerate the suite from the policy",
        ) from None
    if len(suite.expectations) != len(configs):
        raise DeidflowError(
            f"{len(configs) - len(suite.expectations)} expectation(s) of the suite have an "
            "invalid configuration and would be dropped",
            file=str(p), fix="regenerate the suite from the policy",
        )
    return suite


def expectation_types(suite: gx.ExpectationSuite) -> list[str]:
    return [e.expectation_type for e in suite.expectations]
