"""The release policy: one YAML file that is the contract of a release.

It names the recipient, purpose, data-sharing agreement and release model; every input table
and every column's role and technique; the privacy limits; where consent, keys and output live.
`load_policy` refuses unknown keys, impossible settings and techniques with bad parameters,
with a message that names the file, the key and the fix. Checks that need the data (a column
the policy names but the table lacks) happen when the tables are read (`deidflow.io`).
"""

from __future__ import annotations

import os

import difflib
import hashlib
import re
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deidflow.errors import PolicyError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Role(str, Enum):
    direct_identifier = "direct_identifier"  # names a person on its own: removed or pseudonymised
    link_key = "link_key"  # joins tables (patient_id, encounter_id): keyed pseudonym
    quasi_identifier = "quasi_identifier"  # identifies in combination: generalised by the search
    sensitive = "sensitive"  # what the recipient studies: kept, measured for l / t
    free_text = "free_text"  # notes: identifiers scrubbed
    insensitive = "insensitive"  # no privacy relevance: kept as is


class ReleaseModel(str, Enum):
    """GB/T 42460-2023 release models; each has its class-risk threshold τ."""

    public = "public"
    controlled = "controlled"
    enclave = "enclave"

    @property
    def class_risk_threshold(self) -> float:
        return {"public": 1 / 20, "controlled": 1 / 5, "enclave": 1 / 3}[self.value]


class Recipient(Strict):
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    country: str = Field("CN", min_length=2, max_length=2, description="ISO 3166-1 alpha-2")

    @property
    def abroad(self) -> bool:
        """PIPL art. 38-39: a recipient outside mainland China needs cross-border consent."""
        return self.country.upper() != "CN"


class Plan(Strict):
    """GB/T 37964 5.2.4: the approved de-identification plan a run refuses to start without."""

    objective: str = Field(min_length=1)
    attacker_model: str = Field(min_length=1)
    approver: str = Field(min_length=1)
    executor: str = Field(min_length=1)
    version: str = Field(min_length=1)

    @model_validator(mode="after")
    def _four_eyes(self) -> "Plan":
        if self.approver.strip().lower() == self.executor.strip().lower():
            raise ValueError(
                "approver and executor are the same person; GB/T 37964 5.5 requires an "
                "approver different from the executor"
            )
        return self


class Release(Strict):
    agreement_id: str = Field(min_length=1, description="data-sharing agreement (DUA) id")
    pipia_id: str = Field(min_length=1, description="PIPL art. 55 impact assessment id")
    purpose: str = Field(min_length=1, description="purpose code consent must cover")
    recipient: Recipient
    model: ReleaseModel = ReleaseModel.controlled
    data_categories: list[str] = Field(min_length=1)
    retention_years: int = Field(3, ge=3, description="PIPL art. 56: at least 3 years")
    # GB/T 37964 5.5: a privacy officer approves before anything leaves (deidflow.release.
    # approval). Default: required for the public and controlled models, not for an enclave.
    approval: Literal["required", "not_required"] | None = Field(
        None, description="required | not_required (default: required unless model is enclave)")
    approval_days: int = Field(14, ge=1, le=365, description="a staged release expires after this")

    @property
    def approval_required(self) -> bool:
        if self.approval is None:
            return self.model is not ReleaseModel.enclave
        return self.approval == "required"


class Hierarchy(Strict):
    """How a quasi-identifier generalises, level 0 (as is) upwards.

    kind: interval (numeric bands, `widths`), age (bands of `widths`, ages >= `top` grouped),
    date (day → month → quarter → year), region (GB/T 2260 6 → 4 → 2 digits → country),
    postcode (Chinese, 6 → 4 → 2 → 0 digits), prefix (any code generalised by its leading
    characters: postcodes of any country, `keep` per level), csv (ARX-format file: one row per
    value, one column per level), mask (replace trailing characters by '*').
    """

    kind: Literal["interval", "age", "date", "region", "postcode", "prefix", "csv", "mask"]
    widths: list[float] | None = None
    # date: a decade level between year and '*' ("1980s"). Opt-in, so that the level numbers
    # of existing policies and manifests keep their meaning ('*' stays level 4 without it).
    decade: bool = False
    # prefix: leading characters kept at each level above 0, e.g. US ZIP codes [3, 1]
    # ("02134" -> "021**" -> "0****" -> "*"); default: one character fewer per level.
    keep: list[int] | None = None
    top: float | None = None
    bottom: float | None = None
    file: str | None = None
    delimiter: str = ";"
    min_level: int = Field(0, ge=0)
    max_level: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _needs(self) -> "Hierarchy":
        if self.kind == "csv" and not self.file:
            raise ValueError("a csv hierarchy needs 'file: path/to/hierarchy.csv'")
        if self.kind == "interval" and not self.widths:
            raise ValueError("an interval hierarchy needs 'widths: [5, 10, 20]' (one per level)")
        if self.max_level is not None and self.max_level < self.min_level:
            raise ValueError("max_level is below min_level")
        if self.decade and self.kind != "date":
            raise ValueError("'decade' applies to date hierarchies only")
        if self.keep is not None:
            if self.kind != "prefix":
                raise ValueError("'keep' applies to prefix hierarchies only")
            if any(k < 0 for k in self.keep) or list(self.keep) != sorted(set(self.keep), reverse=True):
                raise ValueError("prefix 'keep' must be strictly decreasing counts of leading "
                                 "characters, e.g. [3, 1]")
        return self


class DerivedFrom(Strict):
    """A column computed from another before anything else happens, e.g. the birth date, sex
    and region carried inside an 18-digit resident ID, so that the ID itself can be dropped."""

    column: str = Field(min_length=1)
    part: Literal["birth_date", "sex", "region_code", "age"]


class IdentifierCheck(Strict):
    """How the gate's direct-identifier check treats one column, when its ordinary values look
    like identifiers (15-digit SNOMED CT codes read as old resident IDs, long decimals as
    mobile numbers). `check: off` skips the column; `allow_formats` exempts values that match
    one of the regular expressions whole from the generic detectors (known identifiers of the
    input are still looked for). Either needs a `reason`, which the manifest and the review
    page show beside the column."""

    check: bool = True  # YAML's on/off
    allow_formats: list[str] = Field(default_factory=list)
    reason: str | None = None

    @model_validator(mode="after")
    def _explained(self) -> "IdentifierCheck":
        import re

        if (not self.check or self.allow_formats) and not (self.reason or "").strip():
            raise ValueError("an identifier_check that turns the check off or allows formats "
                             "needs 'reason:' (shown to the privacy officer)")
        for pattern in self.allow_formats:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"allow_formats: {pattern!r} is not a regular expression "
                                 f"({exc})") from None
        return self


class Column(Strict):
    role: Role
    technique: str = Field(min_length=1, description="a name from the technique registry")
    params: dict[str, Any] = Field(default_factory=dict)
    hierarchy: Hierarchy | None = None
    category: str | None = Field(None, description="data category that consent must cover")
    derived_from: DerivedFrom | None = None
    identifier_check: IdentifierCheck | None = None
    # A foreign key into a reference table (`reference_tables:`): the column holds that
    # table's key values, pseudonymised alike so that joins still work (`reference_tables`).
    references: str | None = Field(None, min_length=1, description="a reference table's name")


class _TableFile(Strict):
    """Where a table's file is and how it is read (patient and reference tables alike)."""

    path: str = Field(min_length=1, description="relative to the policy file")
    format: Literal["csv", "parquet"] | None = None
    encoding: str = "utf-8"
    delimiter: str = ","


class Table(_TableFile):
    subject_column: str = Field(min_length=1, description="column holding the subject id")
    columns: dict[str, Column] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _not_a_reference(cls, data: Any) -> Any:
        if isinstance(data, dict) and "kind" in data:
            raise ValueError("a table without patient rows (providers, organisations, payers) "
                             "is declared under 'reference_tables:', not with 'kind:' under "
                             "'tables:'; move it there and name its key column ('key: Id')")
        return data


class ReferenceTable(_TableFile):
    """A lookup table without a subject column (providers, organisations, payers): it holds
    no patient records, so it is not consent-filtered and not in the patient risk; its
    columns go through their techniques as in any table. `key` is the column other tables'
    foreign keys (`references: NAME`) point at; it is pseudonymised with the same parameters
    as those foreign keys, so joins work. `keep: referenced` (default, data minimisation)
    releases only the rows some released row references; `keep: all` needs a `reason`."""

    key: str = Field(min_length=1, description="the column foreign keys reference")
    columns: dict[str, Column] = Field(min_length=1)
    keep: Literal["referenced", "all"] = "referenced"
    reason: str | None = Field(None, description="why every row is released (keep: all)")

    @model_validator(mode="before")
    @classmethod
    def _no_subject(cls, data: Any) -> Any:
        if isinstance(data, dict) and "subject_column" in data:
            raise ValueError("a reference table holds no patient records and has no "
                             "subject_column; remove it (if its rows are patients' records, "
                             "declare the table under 'tables:' instead)")
        return data

    @model_validator(mode="after")
    def _explained(self) -> "ReferenceTable":
        if self.keep == "all" and not (self.reason or "").strip():
            raise ValueError("keep: all releases rows no released patient row references; "
                             "give 'reason:' (shown to the privacy officer), or leave keep out "
                             "to release only the referenced rows")
        return self


class LimitsOverride(Strict):
    """Limits weaker than GB/T 42460 for this release model, accepted only with a reason. The
    override is shown on the review page's headline and recorded in the manifest."""

    reason: str = Field(min_length=10, description="why the agreement allows weaker limits")
    approved_by: str | None = Field(None, description="who approved the departure")


class Limits(Strict):
    k: int = Field(6, ge=1, description="GB/T 39725: k > 5 for health data")
    l: int | None = Field(None, ge=1)
    l_variant: Literal["distinct", "entropy", "recursive"] = "distinct"
    c: float | None = Field(None, gt=0, description="recursive (c,l)-diversity")
    t: float | None = Field(None, gt=0, le=1)
    max_class_risk: float | None = Field(
        None, gt=0, le=1, description="default: the release model's τ"
    )
    max_overall_risk: float = Field(0.05, gt=0, le=1)
    suppression_budget: float = Field(0.02, ge=0, lt=1)
    small_cell: int = Field(5, ge=1, description="aggregates: cells below this are suppressed")
    override: LimitsOverride | None = None


class Aggregate(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_\-]+$")
    table: str
    by: list[str] = Field(min_length=1)


class Consent(Strict):
    registry: str = Field(
        "sqlite:///consent.db",
        description="SQLAlchemy URL; a relative sqlite path is relative to the policy file",
    )
    action: str = "provide"
    birth_date_column: str | None = Field(
        "birth_date",
        description="subject-table column used for the under-14 guardian rule (PIPL art. 31); "
        "null attests that the data holds no minors (the rule is skipped, the manifest says so)",
    )
    resident_id_column: str | None = Field(
        None,
        description="subject-table column holding GB 11643 resident IDs: a subject whose ID "
        "gives another birth date than birth_date_column is excluded (birth_date_mismatch)",
    )


class Keys(Strict):
    pseudonym_key_file: str = Field(
        ".deidflow/keys/pseudonym.key", description="master secret, 0600; created on first use"
    )
    pseudonym_key_env: str = Field(
        "DEIDFLOW_PSEUDONYM_KEY", description="env var that overrides the key file"
    )
    reidentification_key_file: str | None = Field(
        None, description="hospital-held AES-SIV key for reversible pseudonyms"
    )
    signing_key_file: str = ".deidflow/keys/signing.key"
    # Trust anchor (deidflow.manifest.trust): a file listing the hospital's signing keys with
    # owner and role. `deidflow verify --policy` uses it; a run refuses a signing key not in it.
    trust_file: str | None = Field(None, description="trust file of the hospital's signing keys")


class Output(Strict):
    format: Literal["csv", "parquet"] = "csv"
    directory: str = Field("releases", description="releases are created under this directory")
    private_directory: str = Field(
        ".deidflow/private", description="stays with the hospital: exclusion logs"
    )


class Schedule(Strict):
    release_cron: str | None = None
    recheck_cron: str | None = "0 3 * * *"


class Utility(Strict):
    """How the search measures information loss, and what the recipient's model needs.

    aggregate: how per-quasi-identifier losses combine: arithmetic (deidflow's default) or
    geometric (ARX's default: the geometric mean of loss + 1, minus 1), to reproduce ARX.
    domain: hierarchy (Iyengar: leaves are counted over the hierarchy's whole domain, so a
    column's weight does not shift with what the consent gate kept) or data (the values
    present only); see risk.search.UTILITY_DEFINITIONS.
    target: the column the recipient's model will predict, so the review page can compare a
    model trained on the original and on the released data; with `search_loss:
    classification` the search keeps that target predictable (ARX's classification metric)
    instead of minimising Iyengar's loss."""

    aggregate: Literal["arithmetic", "geometric"] = "arithmetic"
    domain: Literal["hierarchy", "data"] = "hierarchy"
    target: str | None = Field(None, min_length=1, description="subject-table column to predict")
    task: Literal["classification"] = "classification"
    search_loss: Literal["default", "classification"] = Field(
        "default", description="classification: the search minimises the classification loss")
    groups: list[str] | None = Field(
        None, description="columns to break suppression down by (default: sex, age, region and "
        "ethnicity columns found by name or hierarchy)")
    sample: int = Field(50_000, ge=1_000, description="most subjects the model is trained on")

    @model_validator(mode="after")
    def _loss_needs_target(self) -> "Utility":
        if self.search_loss == "classification" and self.target is None:
            raise ValueError("search_loss: classification needs 'target: COLUMN' (the column "
                             "the recipient's model will predict)")
        return self


class Policy(Strict):
    version: Literal[1] = 1
    plan: Plan
    release: Release
    subject_table: str
    tables: dict[str, Table] = Field(min_length=1)
    reference_tables: dict[str, ReferenceTable] = Field(default_factory=dict)
    limits: Limits = Limits()
    utility: Utility = Utility()
    aggregates: list[Aggregate] = Field(default_factory=list)
    consent: Consent = Consent()
    keys: Keys = Keys()
    output: Output = Output()
    schedule: Schedule = Schedule()

    @model_validator(mode="after")
    def _coherent(self) -> "Policy":
        if self.subject_table not in self.tables:
            raise ValueError(
                f"subject_table '{self.subject_table}' is not one of the tables "
                f"({', '.join(self.tables)})"
            )
        for name, table in self.tables.items():
            if table.subject_column not in table.columns:
                raise ValueError(
                    f"tables.{name}: subject_column '{table.subject_column}' is not listed "
                    "under its columns; list it with role link_key"
                )
            for col, spec in table.columns.items():
                if spec.role is Role.quasi_identifier and spec.technique == "generalise":
                    if spec.hierarchy is None:
                        raise ValueError(
                            f"tables.{name}.columns.{col} is a quasi_identifier to generalise "
                            "but has no hierarchy; add e.g. 'hierarchy: {kind: date}'"
                        )
                    # In another table it is part of the subject's whole record
                    # (risk.record): the search generalises it with the subject table's.
                if spec.role is Role.direct_identifier and spec.technique == "keep":
                    raise ValueError(
                        f"tables.{name}.columns.{col} is a direct_identifier and cannot be kept; "
                        "use drop, mask or pseudonymise"
                    )
        for agg in self.aggregates:
            if agg.table not in self.tables:
                raise ValueError(f"aggregate '{agg.name}' names unknown table '{agg.table}'")
            missing = [c for c in agg.by if c not in self.tables[agg.table].columns]
            if missing:
                raise ValueError(f"aggregate '{agg.name}' groups by unknown columns {missing}")
        bcol = self.consent.birth_date_column
        if bcol is not None and bcol not in self.tables[self.subject_table].columns:
            raise ValueError(
                f"consent.birth_date_column '{bcol}' is not a column of the subject table "
                f"'{self.subject_table}'; name the birth-date column (needed for the under-14 "
                "guardian rule) or set it to null if the data has no minors"
            )
        if self.limits.l is not None and not self.sensitive_columns():
            raise ValueError("limits.l is set but no column has role 'sensitive'")
        rcol = self.consent.resident_id_column
        if rcol is not None and rcol not in self.tables[self.subject_table].columns:
            raise ValueError(
                f"consent.resident_id_column '{rcol}' is not a column of the subject table "
                f"'{self.subject_table}'; name the column holding resident IDs, or leave it out"
            )
        return self

    @model_validator(mode="after")
    def _identifier_checks(self) -> "Policy":
        """A per-column identifier_check is for ordinary values that look like identifiers;
        identifiers themselves, link keys and free text are always checked."""
        for name, table in self.tables.items():
            for col, spec in table.columns.items():
                if spec.identifier_check is not None and spec.role in (
                        Role.direct_identifier, Role.link_key, Role.free_text):
                    raise ValueError(
                        f"tables.{name}.columns.{col}: identifier_check cannot be set on a "
                        f"{spec.role.value} column; it is for sensitive, quasi-identifying or "
                        "insensitive values that look like identifiers"
                    )
        return self

    @model_validator(mode="after")
    def _utility_columns(self) -> "Policy":
        if self.utility is None:
            return self
        subject = self.tables[self.subject_table].columns
        for key, col in [("target", self.utility.target), *[("groups", g) for g in self.utility.groups or []]]:
            if col is not None and col not in subject:
                raise ValueError(
                    f"utility.{key} '{col}' is not a column of the subject table "
                    f"'{self.subject_table}'; name one of: {', '.join(subject)}")
        target = self.utility.target
        if target is not None and subject[target].role in (Role.direct_identifier, Role.link_key,
                                                           Role.free_text):
            raise ValueError(f"utility.target '{target}' is a {subject[target].role.value}; a "
                             "model target must be a quasi-identifier, sensitive or insensitive column")
        return self

    # --- views the pipeline uses -------------------------------------------------------------

    @property
    def max_class_risk(self) -> float:
        if self.limits.max_class_risk is not None:
            return self.limits.max_class_risk
        return self.release.model.class_risk_threshold

    def columns_with(self, role: Role, table: str | None = None) -> list[tuple[str, str]]:
        return [
            (t, c)
            for t, spec in self.tables.items()
            if table is None or t == table
            for c, col in spec.columns.items()
            if col.role is role
        ]

    def quasi_identifiers(self) -> list[str]:
        return [c for _, c in self.columns_with(Role.quasi_identifier, self.subject_table)]

    def sensitive_columns(self) -> list[str]:
        return [c for _, c in self.columns_with(Role.sensitive, self.subject_table)]


class LoadedPolicy(BaseModel):
    """A validated policy with where it came from: its path, its text and that text's hash."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    policy: Policy
    path: Path
    text: str
    sha256: str

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str | Path) -> Path:
        p = Path(relative).expanduser()
        # Normalised (no "configs/../"): these paths are printed to operators and officers.
        return Path(os.path.normpath(p if p.is_absolute() else (self.base_dir / p)))


def _key_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if p not in ("function-after",)) or "(top level)"


def _fix_for(err: dict[str, Any], model_keys: list[str]) -> str:
    etype = err["type"]
    loc = err["loc"]
    if etype == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), model_keys, n=1)
        return f"did you mean '{close[0]}'?" if close else "remove the key; see configs/release.yaml"
    if etype == "missing":
        return f"add '{loc[-1]}'; see configs/release.yaml for an example"
    if etype in ("enum", "literal_error"):
        return f"use one of: {err.get('ctx', {}).get('expected', '')}"
    return "correct the value; see configs/release.yaml for a documented example"


def _siblings(loc: tuple[Any, ...]) -> list[str]:
    """Known keys at the level of an error, for 'did you mean' suggestions."""
    model: Any = Policy
    for part in loc[:-1]:
        fields = getattr(model, "model_fields", None)
        if fields is None:
            return []
        if part in fields:
            ann = fields[part].annotation
            model = _model_in(ann)
        # dict keys (table/column names) keep the same value model
    fields = getattr(model, "model_fields", None)
    return list(fields) if fields else []


def _model_in(ann: Any) -> Any:
    args = getattr(ann, "__args__", None)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for a in args or ():
        m = _model_in(a)
        if m is not None:
            return m
    return None


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PolicyError(
            f"not valid YAML{line}: {getattr(exc, 'problem', exc)}",
            file=source,
            fix="check indentation and quoting",
        ) from None
    if not isinstance(raw, dict):
        raise PolicyError(
            "the policy must be a YAML mapping", file=source, fix="see configs/release.yaml"
        )
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        lines = []
        for err in exc.errors()[:10]:
            key = _key_path(err["loc"])
            lines.append(f"{key}: {err['msg']}")
        more = f" (and {exc.error_count() - 10} more)" if exc.error_count() > 10 else ""
        raise PolicyError(
            "; ".join(lines) + more,
            file=source,
            key=_key_path(first["loc"]),
            fix=_fix_for(first, _siblings(first["loc"])),
        ) from None
    _check_techniques(policy, source)
    _check_path_names(policy, source)
    _check_floors(policy, source)
    _check_reference_and_notes(policy, source)
    return policy


def _check_reference_and_notes(policy: Policy, source: str) -> None:
    """Reference tables and their foreign keys (`deidflow.reference_tables`); notes' date
    shift against the structured dates' (`deidflow.note_consistency`)."""
    from deidflow.note_consistency import check_note_shift
    from deidflow.reference_tables import check_references

    check_references(policy, source)
    check_note_shift(policy, source)


def _check_techniques(policy: Policy, source: str) -> None:
    """Each technique validates its own parameters; errors name the column."""
    from deidflow.techniques import registry

    for tname, table in policy.tables.items():
        for cname, col in table.columns.items():
            key = f"tables.{tname}.columns.{cname}"
            try:
                registry.get(col.technique).check(cname, col)
            except PolicyError as exc:
                raise PolicyError(exc.message, file=source, key=key, fix=exc.fix) from None
    for tname, ref in policy.reference_tables.items():  # as in any table
        for cname, col in ref.columns.items():
            try:
                registry.get(col.technique).check(cname, col)
            except PolicyError as exc:
                raise PolicyError(exc.message, file=source, key=f"reference_tables.{tname}.columns.{cname}",
                                  fix=exc.fix) from None


def load_policy(path: str | Path) -> LoadedPolicy:
    p = Path(path)
    if not p.is_file():
        raise PolicyError(
            "policy file not found",
            file=str(p),
            fix="pass the path of a release policy, e.g. configs/release.yaml",
        )
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError(
            "policy file is not UTF-8", file=str(p), fix="save the policy as UTF-8"
        ) from None
    policy = parse_policy(text, source=str(p))
    loaded = LoadedPolicy(
        policy=policy, path=p.resolve(), text=text, sha256=hashlib.sha256(raw).hexdigest()
    )
    _check_directories(loaded)
    return loaded


# --- names that become paths ---------------------------------------------------------------------
#
# Table and aggregate names name files and directories of the release, the staging and the
# private work directory (data/<table>.csv, gated/<table>/…); column names name files of the
# validation report. A name with "/", ".." or a control character would write outside them.

TABLE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,63}")
# letters (CJK too), digits, _, - and inner dots (R's `sample.yr`); never ".." (checked below)
COLUMN_NAME = re.compile(r"[^\W][\w\-.]{0,127}")


def _check_path_names(policy: Policy, source: str) -> None:
    def bad(key: str, name: str, what: str, pattern: re.Pattern[str]) -> None:
        if not pattern.fullmatch(name) or ".." in name:
            raise PolicyError(
                f"{what} name {name!r} is not allowed: it names files of the release",
                file=source, key=key,
                fix=f"use {'ASCII letters, digits, _ and -' if pattern is TABLE_NAME else 'letters, digits, _, - and single inner dots'}"
                " (no '/', '..' or spaces), at most "
                f"{64 if pattern is TABLE_NAME else 128} characters",
            )

    for tname, table in policy.tables.items():
        bad(f"tables.{tname}", tname, "table", TABLE_NAME)
        for cname in table.columns:
            bad(f"tables.{tname}.columns.{cname}", cname, "column", COLUMN_NAME)
    for i, agg in enumerate(policy.aggregates):
        bad(f"aggregates[{i}].name", agg.name, "aggregate", TABLE_NAME)
    for rname, ref in policy.reference_tables.items():  # reference tables name files too
        bad(f"reference_tables.{rname}", rname, "table", TABLE_NAME)
        for cname in ref.columns:
            bad(f"reference_tables.{rname}.columns.{cname}", cname, "column", COLUMN_NAME)
    bad("subject_table", policy.subject_table, "table", TABLE_NAME)


def _check_directories(loaded: LoadedPolicy) -> None:
    """The private directory (exclusion logs with raw ids, the run's raw work files) must not
    sit inside the output directory, whose releases are shipped; nor may they be one."""
    out = Path(os.path.realpath(loaded.resolve(loaded.policy.output.directory)))
    private = Path(os.path.realpath(loaded.resolve(loaded.policy.output.private_directory)))
    if private == out or out in private.parents:
        raise PolicyError(
            f"output.private_directory ({private}) is inside output.directory ({out}): the "
            "exclusion log and the run's raw work files would sit beside what is shipped",
            file=str(loaded.path), key="output.private_directory",
            fix="put the private directory outside the output directory, e.g. "
            "private_directory: .deidflow/private and directory: releases",
        )
    if private in out.parents:
        raise PolicyError(
            f"output.directory ({out}) is inside output.private_directory ({private})",
            file=str(loaded.path), key="output.directory",
            fix="keep the two directories apart",
        )


# --- limits floors (GB/T 42460) ------------------------------------------------------------------

K_FLOOR = 2  # k = 1 is no anonymity at all: every record may be unique
OVERALL_RISK_FLOOR = 0.05  # GB/T 42460-2023: overall re-identification risk R <= 0.05


def limit_departures(policy: Policy) -> list[str]:
    """Each limit weaker than GB/T 42460 allows for the policy's release model, as
    'key: value > floor' (empty when the limits meet it)."""
    lim = policy.limits
    tau = policy.release.model.class_risk_threshold
    out = []
    if lim.k < K_FLOOR:
        out.append(f"limits.k: {lim.k} < {K_FLOOR}")
    if lim.max_class_risk is not None and lim.max_class_risk > tau:
        out.append(
            f"limits.max_class_risk: {lim.max_class_risk:g} > τ = {tau:g} "
            f"({policy.release.model.value} model)"
        )
    if lim.max_overall_risk > OVERALL_RISK_FLOOR:
        out.append(f"limits.max_overall_risk: {lim.max_overall_risk:g} > {OVERALL_RISK_FLOOR:g}")
    return out


def _check_floors(policy: Policy, source: str) -> None:
    departures = limit_departures(policy)
    if departures and policy.limits.override is None:
        raise PolicyError(
            "limits weaker than GB/T 42460 allows for the "
            f"{policy.release.model.value} release model: " + "; ".join(departures),
            file=source, key=departures[0].split(":")[0],
            fix="raise the limit to the floor; only if the data-sharing agreement allows weaker "
            "limits, add 'limits: {override: {reason: \"…\", approved_by: \"…\"}}' (it is "
            "shown on the review page and recorded in the manifest)",
        )


def override_record(policy: Policy) -> dict[str, Any] | None:
    """What the manifest records of a limits override (None when the limits meet the floors)."""
    departures = limit_departures(policy)
    if not departures or policy.limits.override is None:
        return None
    return {"reason": policy.limits.override.reason, "approved_by": policy.limits.override.approved_by,
            "departures": departures}
