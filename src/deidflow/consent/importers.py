"""Read consent events from the hospital's CSV event log and from FHIR R4/R5 Consent bundles.

Both importers produce the same canonical event frame (``registry.EVENT_COLUMNS``): lists
(purposes, recipients, data categories) are casefolded, de-duplicated, sorted and ';'-joined;
``recorded_at`` is UTC; dates are calendar dates. A malformed entry is refused with a
`ConsentError` naming the file, the row or entry, the field and the fix; every problem in the
file is listed (up to ten), so one run shows what to correct. Nothing is imported from a file
with any malformed entry.

Every importer (and `cohort`) also applies the shared checks of `_checked_events`: subject and
guardian ids are stored in canonical form (`subject_ids`), and refused when they hold control
or format characters or mix scripts; an event dated more than `CLOCK_SKEW` in the future is
refused (a time without an offset is China time); a consent id may belong to one subject only;
a guardian may not be the subject, nor under 18 when the consent was signed.

CSV (``data_samples/consents.csv``)
    event_id, subject_id, event (granted|amended|withdrawn), recorded_at (ISO 8601; without an
    offset it is read as +08:00), grantor (self|guardian), guardian_name, guardian_id
    (GB 11643 resident ID, required for a guardian), separate, cross_border (true|false),
    purposes, recipients, data_categories (';'-separated), valid_from, valid_until
    (YYYY-MM-DD, empty = open), notice_version, form_sha256 (64 hex). An optional
    ``consent_id`` column groups events of one consent; without it a subject has one consent
    and each grant or amendment replaces the previous terms. Rows are numbered as file lines
    (the header is line 1). Granted/amended rows need every term; a withdrawn row needs only
    event_id, subject_id, event and recorded_at.

FHIR Consent (a JSON ``Bundle`` of ``Consent`` resources, or one ``Consent``)
    ===================  ===============================  ================================
    event field          R4                               R5
    ===================  ===============================  ================================
    subject_id           patient (reference id or         subject (same)
                         identifier.value)
    consent_id           ``Consent/<id>``                 ``Consent/<id>`` (``#p<i>`` per
                                                          provision when there are several)
    event_id             ``Consent/<id>/_history/<meta.versionId>``, or ``Consent/<id>#<sha256
                         of the resource, 16 hex>`` without a version
    event                status active → granted (amended when meta.versionId > 1);
                         inactive, rejected, not-done, entered-in-error, or a deny decision
                         (R4 provision.type, R5 decision) → withdrawn; draft, proposed,
                         unknown → skipped (not yet a consent)
    recorded_at          dateTime                         date (falls back to
                         (falls back to meta.lastUpdated) meta.lastUpdated)
    grantor              performer: a RelatedPerson        grantor: same rule
                         (reference type, or a contained
                         RelatedPerson) → guardian, else
                         self (a contained Patient: self)
    guardian name / id   reference.display / reference.identifier.value, or the contained
                         RelatedPerson's name[0].text / identifier[0].value
    purposes             provision.purpose[].code         provision.purpose[].code
    recipients           provision.actor[] with role      grantee[] and provision.actor[]
                         code IRCP (reference id or       with role IRCP
                         identifier.value)
    data_categories      provision.class[].code and       provision.resourceType[],
                         provision.code[].coding[].code   documentType[] .code and
                                                          provision.code[].coding[].code
    valid_from/until     provision.period start/end       provision.period, else period
    ===================  ===============================  ================================

    Separate consent and cross-border permission are carried by
      * the extensions ``https://deidflow.org/fhir/StructureDefinition/pipl-separate-consent``
        and ``…/pipl-cross-border`` (valueBoolean), which win when present; otherwise
      * PIPL article codings (system ``https://deidflow.org/fhir/CodeSystem/pipl-article``,
        codes ``23``, ``29``, ``39``) in R5 ``regulatoryBasis`` or R4 ``policyRule`` /
        ``category``: separate = articles 23 and 29 both present (provision to a recipient
        and sensitive medical data), cross-border = article 39 present.
    notice_version: extension ``…/notice-version`` (valueString), else R4 ``policy[0].uri``
    / R5 ``policyText.display``. form_sha256: extension ``…/form-sha256`` (valueString,
    64 hex), else ``sourceAttachment.hash`` when it is a base64 SHA-256 (FHIR's default is
    SHA-1, which is refused: the evidence hash must be SHA-256).

    Nested R4 provisions (exceptions inside a provision) are refused rather than ignored,
    because ignoring a nested deny would release data the subject excluded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deidflow.consent.registry import (
    CHINA_TZ,
    EVENT_COLUMNS,
    ConsentRegistry,
    ImportResult,
)
from deidflow.errors import ConsentError
from deidflow.identifiers import valid_resident_ids

FHIR_BASE = "https://deidflow.org/fhir"
EXT_SEPARATE = f"{FHIR_BASE}/StructureDefinition/pipl-separate-consent"
EXT_CROSS_BORDER = f"{FHIR_BASE}/StructureDefinition/pipl-cross-border"
EXT_NOTICE_VERSION = f"{FHIR_BASE}/StructureDefinition/notice-version"
EXT_FORM_SHA256 = f"{FHIR_BASE}/StructureDefinition/form-sha256"
PIPL_ARTICLE_SYSTEM = f"{FHIR_BASE}/CodeSystem/pipl-article"

CSV_REQUIRED = ("event_id", "subject_id", "event", "recorded_at")
CSV_TERMS = (
    "grantor", "separate", "purposes", "recipients", "data_categories", "cross_border",
    "valid_from", "valid_until", "notice_version", "form_sha256",
)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HAS_OFFSET = r"(?:Z|[+-]\d{2}:?\d{2})$"
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}
_MAX_LISTED = 10


class _Problems:
    """Collects malformed entries so that one run reports all of them."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[tuple[str, str, str, str]] = []  # where, field, what, fix
        self.total = 0  # problems found, including those folded into "N more rows"

    def add(self, where: str, field: str, what: str, fix: str) -> None:
        self.items.append((where, field, what, fix))
        self.total += 1

    def add_rows(self, mask: pd.Series, lines: pd.Series, field: str, what: str, fix: str) -> None:
        for line in lines[mask].tolist()[:_MAX_LISTED]:
            self.add(f"row {line}", field, what, fix)
        extra = int(mask.sum()) - _MAX_LISTED
        if extra > 0:
            self.items.append((f"{extra} more rows", field, what, fix))
            self.total += extra

    def add_where(self, mask: np.ndarray, where: list[str], field: str | list[str], what: str | list[str],
                  fix: str) -> None:
        """Like add_rows, with a label per entry ("row 5", "entry[3] (Consent/x)") and,
        optionally, a field and a message per entry."""
        hits = np.flatnonzero(np.asarray(mask, dtype=bool))
        for i in hits[:_MAX_LISTED]:
            self.add(where[i], field[i] if isinstance(field, list) else field,
                     what[i] if isinstance(what, list) else what, fix)
        if len(hits) > _MAX_LISTED:
            name = field[hits[0]] if isinstance(field, list) else field
            reason = what[hits[0]] if isinstance(what, list) else what
            self.items.append((f"{len(hits) - _MAX_LISTED} more rows", name, reason, fix))
            self.total += len(hits) - _MAX_LISTED

    def raise_if_any(self) -> None:
        if not self.items:
            return
        where, field, what, fix = self.items[0]
        lines = [f"{w}, field '{f}': {m}" for w, f, m, _ in self.items[:_MAX_LISTED]]
        shown = sum(int(w.split()[0]) if w.endswith(" more rows") else 1
                    for w, _, _, _ in self.items[:_MAX_LISTED])
        more = self.total - shown
        if more > 0:
            lines.append(f"… and {more} more problems")
        n = self.total
        summary = (f"{n} problem{'' if n == 1 else 's'} in malformed consent entries; nothing was "
                   "imported:\n    " + "\n    ".join(lines))
        row = int(where.split()[1]) if where.startswith("row ") and where.split()[1].isdigit() else None
        raise ConsentError(summary, file=self.file, row=row, column=field, fix=fix)


# ---------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------
def events_from_csv(path: str | Path) -> pd.DataFrame:
    """The canonical events of a consents.csv event log (see the module docstring)."""
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConsentError("file not found", file=str(path),
                           fix="check the path of the consent file") from None
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise ConsentError(f"not a readable UTF-8 CSV file ({str(exc).splitlines()[0]})",
                           file=str(path),
                           fix="save the consent log as UTF-8 CSV with a header row") from None
    return events_from_frame(raw, str(path))


def events_from_frame(raw: pd.DataFrame, file: str, *, now: pd.Timestamp | None = None) -> pd.DataFrame:
    """The canonical events of an event-log table already read as text (the CSV columns);
    ``file`` names it in errors. See the module docstring."""
    raw.columns = [c.strip().lower() for c in raw.columns]
    problems = _Problems(file)
    missing = [c for c in CSV_REQUIRED + CSV_TERMS if c not in raw.columns]
    if missing:
        problems.add("header", missing[0], f"missing column(s) {', '.join(missing)}",
                     "add the columns listed in the consents.csv schema (docs: deidflow.consent.importers)")
        problems.raise_if_any()
    df = raw.apply(lambda s: s.str.strip())
    lines = pd.Series(np.arange(len(df)) + 2, index=df.index)
    for col in ("guardian_name", "guardian_id", "consent_id"):
        if col not in df.columns:
            df[col] = ""

    event = df["event"].str.lower()
    problems.add_rows(~event.isin(["granted", "amended", "withdrawn"]), lines, "event",
                      "must be granted, amended or withdrawn", "use one of granted|amended|withdrawn")
    for col in ("event_id", "subject_id"):
        problems.add_rows(df[col] == "", lines, col, "is empty", f"fill in {col}")
    dup = (df["event_id"] != "") & df["event_id"].duplicated(keep="first")
    problems.add_rows(dup, lines, "event_id", "repeats an earlier row's event_id",
                      "give every event its own event_id")

    recorded_text = df["recorded_at"].where(
        df["recorded_at"].str.contains(_HAS_OFFSET, regex=True),
        df["recorded_at"] + "+08:00",
    )
    recorded = pd.to_datetime(recorded_text, format="ISO8601", utc=True, errors="coerce")
    problems.add_rows(recorded.isna(), lines, "recorded_at", "is not an ISO 8601 date-time",
                      "write e.g. 2024-05-01T09:30:00+08:00")

    terms = event.isin(["granted", "amended"])
    grantor = df["grantor"].str.lower().where(df["grantor"] != "", "self")
    problems.add_rows(~grantor.isin(["self", "guardian"]), lines, "grantor",
                      "must be self or guardian", "use self or guardian")
    guardian = grantor == "guardian"
    gid = df["guardian_id"].str.upper()
    bad_gid = guardian & terms & ~valid_resident_ids(gid).fillna(False).astype(bool)
    problems.add_rows(bad_gid, lines, "guardian_id",
                      "a guardian's consent needs the guardian's valid 18-character resident ID",
                      "record the guardian's resident ID (GB 11643 check digit)")
    problems.add_rows(guardian & terms & (df["guardian_name"] == ""), lines, "guardian_name",
                      "a guardian's consent needs the guardian's name", "record the guardian's name")

    flags = {}
    for col in ("separate", "cross_border"):
        low = df[col].str.lower()
        ok = low.isin(_TRUE | _FALSE) | (~terms & (low == ""))
        problems.add_rows(~ok, lines, col, "must be true or false", "write true or false")
        flags[col] = low.isin(_TRUE)

    lists = {}
    for col in ("purposes", "recipients", "data_categories"):
        lists[col] = _canonical_lists(df[col])
        problems.add_rows(terms & (lists[col] == ""), lines, col,
                          "is empty for a grant", f"list the {col.replace('_', ' ')}, ';'-separated")

    dates = {}
    for col in ("valid_from", "valid_until"):
        parsed = pd.to_datetime(df[col], format="%Y-%m-%d", errors="coerce")
        problems.add_rows((df[col] != "") & parsed.isna(), lines, col, "is not a YYYY-MM-DD date",
                          "write the date as YYYY-MM-DD or leave it empty (open-ended)")
        dates[col] = parsed
    problems.add_rows(dates["valid_until"] < dates["valid_from"], lines, "valid_until",
                      "is before valid_from", "correct the validity period")

    problems.add_rows(terms & (df["notice_version"] == ""), lines, "notice_version",
                      "is empty for a grant", "record the version of the privacy notice shown (e.g. v2.1)")
    sha = df["form_sha256"].str.lower()
    bad_sha = (terms | (sha != "")) & ~sha.str.fullmatch(_HEX64.pattern[1:-1])
    problems.add_rows(bad_sha, lines, "form_sha256", "is not a 64-hex SHA-256",
                      "record sha256 of the signed consent form (64 hex characters)")
    problems.raise_if_any()

    out = pd.DataFrame({
        "event_id": df["event_id"],
        "consent_id": df["consent_id"].where(df["consent_id"] != "", df["subject_id"]),
        "subject_id": df["subject_id"],
        "event": event,
        "recorded_at": recorded,
        "grantor": grantor,
        "guardian_name": df["guardian_name"].where(guardian & (df["guardian_name"] != "")),
        "guardian_id": gid.where(guardian & (gid != "")),
        "separate": flags["separate"],
        "purposes": lists["purposes"],
        "recipients": lists["recipients"],
        "data_categories": lists["data_categories"],
        "cross_border": flags["cross_border"],
        "valid_from": dates["valid_from"],
        "valid_until": dates["valid_until"],
        "notice_version": df["notice_version"].where(df["notice_version"] != ""),
        "form_sha256": sha.where(sha != ""),
    })
    where = [f"row {n}" for n in lines.tolist()]
    out = _checked_events(out, where, problems, now=now,
                          fields={"subject_id": "subject_id", "recorded_at": "recorded_at",
                                  "guardian_id": "guardian_id", "consent_id": "consent_id"})
    problems.raise_if_any()
    return out.loc[:, list(EVENT_COLUMNS)]


#: How far ahead of this machine's clock an event may be dated (clocks of hospital systems
#: drift; more than this is a date in the future, refused).
CLOCK_SKEW = pd.Timedelta(minutes=5)
GUARDIAN_MIN_AGE = 18


def _checked_events(out: pd.DataFrame, where: list[str], problems: _Problems, *,
                    now: pd.Timestamp | None, fields: dict[str, str]) -> pd.DataFrame:
    """The checks every importer shares, on the canonical frame: ids (refused: control or
    format characters, mixed scripts; otherwise canonicalised), no future-dated event, one
    subject per consent id, and a guardian who is neither the subject nor under 18."""
    from deidflow.consent.subject_ids import canonical_series, id_problems

    if out.empty:
        return out
    for col in ("subject_id", "guardian_id"):
        present = out[col].notna().to_numpy()
        found = id_problems(out[col].where(out[col].notna(), ""))
        if found:
            mask = np.zeros(len(out), dtype=bool)
            mask[list(found)] = True
            what = [f"id {found[i]}" if i in found else "" for i in range(len(out))]
            problems.add_where(mask & present, where, fields[col], what,
                               "retype the id without invisible characters and in one script "
                               "(ids are compared after Unicode NFKC)")
        out[col] = canonical_series(out[col].astype(object).where(out[col].notna(), None)).where(
            out[col].notna(), None) if present.any() else out[col]
    now = pd.Timestamp.now(tz="UTC") if now is None else now
    recorded = pd.to_datetime(out["recorded_at"], utc=True)
    problems.add_where((recorded > now + CLOCK_SKEW).to_numpy(), where, fields["recorded_at"],
                       "is in the future", "date the event when it was signed or received "
                       "(a time without an offset is China time, +08:00)")
    subjects_per_consent = out.groupby("consent_id")["subject_id"].transform("nunique")
    problems.add_where((subjects_per_consent > 1).to_numpy(), where, fields["consent_id"],
                       "is used for more than one subject", "give each subject's consent its own consent id")
    guardian = (out["grantor"] == "guardian") & out["guardian_id"].notna()
    problems.add_where((guardian & (out["guardian_id"] == out["subject_id"])).to_numpy(), where,
                       fields["guardian_id"], "is the subject's own id: a guardian is another person",
                       "record the guardian's own resident ID")
    from deidflow.identifiers import resident_id_parts

    born = resident_id_parts(out["guardian_id"].astype("string"))["birth_date"]
    signed = recorded.dt.tz_convert(CHINA_TZ)
    age = (signed.dt.year - born.dt.year
           - ((signed.dt.month * 100 + signed.dt.day) < (born.dt.month * 100 + born.dt.day)).astype(int))
    minor_guardian = guardian & born.notna() & (age < GUARDIAN_MIN_AGE)
    problems.add_where(minor_guardian.to_numpy(), where, fields["guardian_id"],
                       f"belongs to someone under {GUARDIAN_MIN_AGE} when the consent was signed",
                       "a guardian must be an adult (PIPL art. 31): record the parent's or "
                       "legal guardian's resident ID")
    return out


def _canonical_lists(values: pd.Series) -> pd.Series:
    """'b; A;a' → 'a;b': casefolded, de-duplicated, sorted, so set tests are string-exact."""
    codes, uniques = pd.factorize(values)
    canon = np.array(
        [";".join(sorted({t.strip().casefold() for t in str(u).split(";") if t.strip()}))
         for u in uniques],
        dtype=object,
    )
    return pd.Series(canon[codes] if len(canon) else np.array([], dtype=object), index=values.index)


# ---------------------------------------------------------------------------------------
# FHIR
# ---------------------------------------------------------------------------------------
def events_from_fhir(path: str | Path, *, now: pd.Timestamp | None = None) -> pd.DataFrame:
    """The canonical events of a FHIR R4/R5 Bundle of Consent resources (mapping above)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConsentError("file not found", file=str(path), fix="check the path of the bundle") from None
    except json.JSONDecodeError as exc:
        raise ConsentError(f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
                           file=str(path), fix="export the bundle as FHIR JSON") from None
    problems = _Problems(str(path))
    if isinstance(doc, dict) and doc.get("resourceType") == "Consent":
        entries = [{"resource": doc}]
    elif isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
        entries = doc.get("entry") or []
        if not isinstance(entries, list):
            problems.add("Bundle", "entry", "must be a list", "put the Consent resources in Bundle.entry[]")
            problems.raise_if_any()
    else:
        problems.add("document", "resourceType", "must be Bundle or Consent",
                      "export the consents as a FHIR Bundle of Consent resources")
        problems.raise_if_any()
    rows: list[dict[str, Any]] = []
    for index, entry in enumerate(entries):
        res = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(res, dict):
            problems.add(f"entry[{index}]", "resource", "is missing", "each entry needs a resource")
            continue
        if res.get("resourceType") != "Consent":
            continue  # Patients, RelatedPersons, … may travel in the same bundle
        rows.extend(_consent_rows(res, index, problems))
    if not rows:
        problems.raise_if_any()
        frame = pd.DataFrame({c: pd.Series(dtype=object) for c in EVENT_COLUMNS})
        frame["recorded_at"] = pd.Series(dtype="datetime64[us, UTC]")
        return frame
    out = pd.DataFrame(rows)
    out["recorded_at"] = pd.to_datetime(out["recorded_at"], utc=True)
    for col in ("valid_from", "valid_until"):
        out[col] = pd.to_datetime(out[col])
    out = _checked_events(out, out.pop("_where").tolist(), problems, now=now,
                          fields={"subject_id": "patient/subject", "recorded_at": "dateTime/date",
                                  "guardian_id": "performer/grantor", "consent_id": "id"})
    problems.raise_if_any()
    return out.loc[:, list(EVENT_COLUMNS)]


_WITHDRAWN_STATUS = {"inactive", "rejected", "not-done", "entered-in-error"}
_SKIPPED_STATUS = {"draft", "proposed", "unknown"}


def _consent_rows(res: dict[str, Any], index: int, problems: _Problems) -> list[dict[str, Any]]:
    rid = res.get("id")
    where = f"entry[{index}] (Consent/{rid})" if rid else f"entry[{index}]"
    n_before = len(problems.items)

    def bad(field: str, what: str, fix: str) -> None:
        problems.add(where, field, what, fix)

    if not rid:
        bad("id", "is missing", "give every Consent an id (withdrawals refer to it)")
        return []
    r5_marks = [k for k in ("decision", "grantor", "grantee", "date", "regulatoryBasis",
                            "controller", "manager", "subject") if k in res]
    r4_marks = [k for k in ("dateTime", "patient", "scope", "performer", "policyRule") if k in res]
    if r5_marks and r4_marks:
        bad(r5_marks[0], f"mixes R5 ({', '.join(r5_marks)}) and R4 ({', '.join(r4_marks)}) elements",
            "export the bundle in one FHIR version")
        return []
    r5 = bool(r5_marks) or isinstance(res.get("provision"), list)

    status = res.get("status")
    if status in _SKIPPED_STATUS:
        return []
    if status != "active" and status not in _WITHDRAWN_STATUS:
        bad("status", f"'{status}' is not a Consent status",
            "use active, inactive, rejected, entered-in-error (or draft/proposed to skip)")
        return []

    subject = _reference_id(res.get("subject" if r5 else "patient"))
    if not subject:
        bad("subject" if r5 else "patient", "names no patient",
            "reference the patient, e.g. {\"reference\": \"Patient/P0000001\"}")

    when = res.get("date" if r5 else "dateTime") or (res.get("meta") or {}).get("lastUpdated")
    recorded = _parse_instant(when)
    if recorded is None:
        bad("date" if r5 else "dateTime", f"'{when}' is not a FHIR date/dateTime",
            "record when the consent was given, e.g. 2024-05-01T09:30:00+08:00")

    if r5:
        provisions = res.get("provision") or [{}]
        if not isinstance(provisions, list):
            bad("provision", "must be a list in R5", "write provision as a list")
            return []
        deny = res.get("decision", "permit") == "deny"
    else:
        prov = res.get("provision") or {}
        if not isinstance(prov, dict):
            bad("provision", "must be one object in R4", "write provision as an object")
            return []
        if prov.get("provision"):
            bad("provision.provision", "nested provisions are not supported",
                "split the exceptions into separate Consent resources, one per scope")
        provisions = [prov]
        deny = prov.get("type", "permit") == "deny"

    withdrawn = status in _WITHDRAWN_STATUS or deny
    version = str((res.get("meta") or {}).get("versionId") or "")
    kind = "withdrawn" if withdrawn else ("amended" if version not in ("", "1") else "granted")

    grantor_refs = res.get("grantor" if r5 else "performer") or []
    guardian_ref = next((g for g in grantor_refs if _is_related_person(g, res)), None)
    guardian_name = guardian_id = None
    if guardian_ref is not None:
        guardian_name, guardian_id = _guardian_identity(guardian_ref, res)
        if not withdrawn:
            ok = guardian_id is not None and bool(valid_resident_ids(pd.Series([guardian_id])).iloc[0])
            if not ok:
                bad("grantor" if r5 else "performer",
                    "a RelatedPerson grantor needs the guardian's valid resident ID",
                    "put the guardian's 18-character resident ID in identifier.value")
            if not guardian_name:
                bad("grantor" if r5 else "performer", "the guardian has no name",
                    "set display (or the contained RelatedPerson's name)")

    articles = _article_codes(res, r5)
    separate = _extension_bool(res, EXT_SEPARATE)
    if separate is None:
        separate = {"23", "29"} <= articles
    cross = _extension_bool(res, EXT_CROSS_BORDER)
    if cross is None:
        cross = "39" in articles

    notice = _extension_str(res, EXT_NOTICE_VERSION)
    if notice is None:
        notice = ((res.get("policyText") or {}).get("display") if r5
                  else next((p.get("uri") for p in res.get("policy") or [] if p.get("uri")), None))
    form = _form_sha256(res, r5, bad)
    if not withdrawn:
        if not notice:
            bad("extension[notice-version]", "is missing",
                f"add extension {EXT_NOTICE_VERSION} with the notice version shown")
        if not form:
            bad("extension[form-sha256]", "is missing",
                f"add extension {EXT_FORM_SHA256} with sha256 of the signed form")

    grantees = [_reference_id(g) for g in res.get("grantee") or []] if r5 else []
    out = []
    for p_index, prov in enumerate(provisions):
        ppath = f"provision[{p_index}]" if r5 else "provision"
        purposes = [c.get("code") for c in prov.get("purpose") or [] if c.get("code")]
        recipients = list(grantees) + [
            _reference_id(a.get("reference")) for a in prov.get("actor") or []
            if _has_code(a.get("role"), "IRCP")
        ]
        cat_fields = ("resourceType", "documentType") if r5 else ("class",)
        categories = [c.get("code") for f in cat_fields for c in prov.get(f) or [] if c.get("code")]
        categories += [cd.get("code") for cc in prov.get("code") or []
                       for cd in (cc.get("coding") or []) if cd.get("code")]
        if not withdrawn:
            if not purposes:
                bad(f"{ppath}.purpose", "is empty", "code the purpose, e.g. ai-model-training")
            if not [r for r in recipients if r]:
                bad(f"{ppath}.actor", "names no recipient (role IRCP)" + (" and grantee is empty" if r5 else ""),
                    "add an actor with role IRCP referencing the recipient organisation")
            if not categories:
                bad(f"{ppath}.{cat_fields[0]}", "lists no data category",
                    "code the data categories covered, e.g. diagnoses, labs")
        period = prov.get("period") or (res.get("period") if r5 else None) or {}
        start, end = _parse_date(period.get("start")), _parse_date(period.get("end"))
        if period.get("start") and start is None:
            bad(f"{ppath}.period.start", f"'{period.get('start')}' is not a date", "write YYYY-MM-DD")
        if period.get("end") and end is None:
            bad(f"{ppath}.period.end", f"'{period.get('end')}' is not a date", "write YYYY-MM-DD")
        if len(problems.items) > n_before or not subject or recorded is None:
            continue
        consent_id = f"Consent/{rid}" + (f"#p{p_index}" if len(provisions) > 1 else "")
        if version:
            event_id = f"Consent/{rid}/_history/{version}"
        else:
            canon = json.dumps(res, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
            event_id = f"Consent/{rid}#{hashlib.sha256(canon.encode()).hexdigest()[:16]}"
        if len(provisions) > 1:
            event_id += f"#p{p_index}"
        out.append({
            "_where": where,
            "event_id": event_id,
            "consent_id": consent_id,
            "subject_id": subject,
            "event": kind,
            "recorded_at": recorded,
            "grantor": "guardian" if guardian_ref is not None else "self",
            "guardian_name": guardian_name,
            "guardian_id": guardian_id,
            "separate": bool(separate),
            "purposes": _canonical_list(purposes),
            "recipients": _canonical_list([r for r in recipients if r]),
            "data_categories": _canonical_list(categories),
            "cross_border": bool(cross),
            "valid_from": start,
            "valid_until": end,
            "notice_version": notice,
            "form_sha256": form,
        })
    return out


def _canonical_list(items: list[str]) -> str:
    return ";".join(sorted({str(i).strip().casefold() for i in items if str(i).strip()}))


def _reference_id(ref: Any) -> str | None:
    if not isinstance(ref, dict):
        return None
    if ref.get("reference"):
        return str(ref["reference"]).rstrip("/").split("/")[-1].lstrip("#") or None
    ident = ref.get("identifier") or {}
    return ident.get("value") or None


def _is_related_person(ref: dict[str, Any], res: dict[str, Any]) -> bool:
    """A grantor that is a RelatedPerson: by its reference type, its declared type, or, for a
    contained resource (``#id``), the contained resource's own resourceType. A contained
    Patient (the child signing for themself) is not a guardian."""
    if not isinstance(ref, dict):
        return False
    text = str(ref.get("reference") or "")
    if text.startswith("#"):
        contained = next((c for c in res.get("contained") or []
                          if isinstance(c, dict) and c.get("id") == text[1:]), None)
        return contained is not None and contained.get("resourceType") == "RelatedPerson"
    if text:
        return text.split("/")[-2:-1] == ["RelatedPerson"]
    return ref.get("type") == "RelatedPerson"


def _guardian_identity(ref: dict[str, Any], res: dict[str, Any]) -> tuple[str | None, str | None]:
    name = ref.get("display")
    gid = (ref.get("identifier") or {}).get("value")
    text = str(ref.get("reference") or "")
    if text.startswith("#"):
        contained = next((c for c in res.get("contained") or [] if c.get("id") == text[1:]), {})
        names = contained.get("name") or [{}]
        name = name or names[0].get("text") or (names[0].get("family", "") + "".join(names[0].get("given", [])))
        idents = contained.get("identifier") or [{}]
        gid = gid or idents[0].get("value")
    return (name or None), (str(gid).upper() if gid else None)


def _has_code(concept: Any, code: str) -> bool:
    return isinstance(concept, dict) and any(c.get("code") == code for c in concept.get("coding") or [])


def _article_codes(res: dict[str, Any], r5: bool) -> set[str]:
    concepts = (res.get("regulatoryBasis") or []) if r5 else (res.get("policyRule") and [res["policyRule"]] or [])
    concepts = list(concepts) + list(res.get("category") or [])
    return {
        str(c.get("code")) for cc in concepts for c in (cc.get("coding") or [])
        if c.get("system") == PIPL_ARTICLE_SYSTEM
    }


def _extension(res: dict[str, Any], url: str) -> dict[str, Any] | None:
    return next((e for e in res.get("extension") or [] if e.get("url") == url), None)


def _extension_bool(res: dict[str, Any], url: str) -> bool | None:
    ext = _extension(res, url)
    return None if ext is None else bool(ext.get("valueBoolean"))


def _extension_str(res: dict[str, Any], url: str) -> str | None:
    ext = _extension(res, url)
    return None if ext is None else (ext.get("valueString") or None)


def _form_sha256(res: dict[str, Any], r5: bool, bad: Any) -> str | None:
    text = _extension_str(res, EXT_FORM_SHA256)
    if text is not None:
        text = text.lower()
        if not _HEX64.match(text):
            bad("extension[form-sha256]", "is not 64 hex characters", "write sha256 as 64 hex characters")
            return None
        return text
    att = res.get("sourceAttachment")
    att = att[0] if isinstance(att, list) and att else att
    if isinstance(att, dict) and att.get("hash"):
        try:
            digest = base64.b64decode(att["hash"], validate=True)
        except (binascii.Error, ValueError):
            digest = b""
        if len(digest) != 32:
            bad("sourceAttachment.hash", "is not a base64 SHA-256 (FHIR's default SHA-1 is too weak as evidence)",
                f"add extension {EXT_FORM_SHA256} with the form's sha256 in hex")
            return None
        return digest.hex()
    return None


def _parse_instant(text: Any) -> pd.Timestamp | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        ts = pd.Timestamp(text)
    except (ValueError, TypeError):
        return None
    if ts.tzinfo is None:
        ts = ts.tz_localize(CHINA_TZ)
    return ts.tz_convert("UTC")


def _parse_date(text: Any) -> pd.Timestamp | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        ts = pd.Timestamp(text)
    except (ValueError, TypeError):
        return None
    if ts.tzinfo is not None:
        ts = ts.tz_convert(CHINA_TZ).tz_localize(None)
    return ts.normalize()


# ---------------------------------------------------------------------------------------
def read_consent_file(path: str | Path, fmt: str = "auto") -> pd.DataFrame:
    """Events of a consent file: ``.csv`` → CSV log, ``.json`` → FHIR bundle (or force fmt)."""
    path = Path(path)
    kind = fmt if fmt != "auto" else ("csv" if path.suffix.lower() == ".csv" else
                                      "fhir" if path.suffix.lower() == ".json" else "")
    if kind == "csv":
        return events_from_csv(path)
    if kind == "fhir":
        return events_from_fhir(path)
    raise ConsentError(f"cannot tell the format of '{path.name}'", file=str(path),
                       fix="name the file .csv (event log) or .json (FHIR Bundle), or pass --format")


def import_consent_file(registry: ConsentRegistry, path: str | Path, fmt: str = "auto") -> ImportResult:
    """Validate the whole file, then record its events in one transaction (idempotent)."""
    events = read_consent_file(path, fmt)
    return registry.append_events(events, source=str(path))
