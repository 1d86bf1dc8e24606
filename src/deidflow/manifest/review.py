"""review.html: the page a privacy officer reads to approve or question a release.

One self-contained file: inline CSS, inline SVG charts, no scripts, no external URLs (a
Content-Security-Policy of default-src 'none' makes the browser enforce it). Every value from
the record is HTML-escaped. The page is rendered *before* the release is sealed, so it is one
of the files the signed manifest covers, and it states the key the release is signed with
rather than a live check (`deidflow verify` is the live check).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from deidflow.manifest.record import ReleaseRecord
from deidflow.manifest.signing import short_key_id
from deidflow.manifest.statement import (
    MANIFEST_NAME,
    PUBLIC_KEY_NAME,
    REVIEW_NAME,
    file_sha256,
    release_files,
)

# GB/T 42460-2023 class-risk threshold τ by release model.
_TAU = {"public": 1 / 20, "controlled": 1 / 5, "enclave": 1 / 3}

_SIZE_EDGES = [1, 2, 3, 4, 5, 6, 11, 21, 51, 101]
_SIZE_LABELS = ["1", "2", "3", "4", "5", "6–10", "11–20", "21–50", "51–100", "101+"]
_RISK_EDGES = [0.0, 0.01, 0.05, 0.1, 0.2, 1 / 3, 0.5, 1.0]
_RISK_LABELS = ["≤ 0.01", "0.01–0.05", "0.05–0.1", "0.1–0.2", "0.2–0.33", "0.33–0.5", "0.5–1"]

_SECTIONS = [
    ("agreement", "Agreement, recipient and purpose"),
    ("records", "Records: in, excluded, suppressed, released"),
    ("consent", "Consent snapshot and exclusions"),
    ("treatment", "Treatment of each column"),
    ("risk", "Re-identification risk before and after"),
    ("utility", "Utility for the recipient's model"),
    ("validation", "Validation"),
    ("files", "Inputs and released files"),
    ("signature", "Signature"),
    ("software", "Software"),
    ("policy", "Release policy"),
]


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def render_review(
    release_dir: Path,
    record: ReleaseRecord,
    *,
    class_sizes: Sequence[int] | None = None,
    class_risks: Sequence[float] | None = None,
    signing_fingerprint: str | None = None,
    signing_key_path: Path | None = None,
    class_sizes_before: Sequence[int] | None = None,
    k: int | None = None,
    digests: Callable[[Path], str] = file_sha256,
) -> Path:
    """Write `release_dir/review.html` and return its path.

    class_sizes: size of each equivalence class in the released subject table (one entry per
    class); class_risks: per-class re-identification risk aligned with class_sizes (default
    θ = 1/size); class_sizes_before: the same before de-identification, to compare; k: the
    policy's k (default: `risk.after["k_required"]` or 6); signing_fingerprint: the key id
    ("sha256:…") of the key `write_manifest` will sign with (or give signing_key_path and it is
    read from the key); digests: how a released file's SHA-256 is taken (give the
    `FileDigests` that `write_manifest` will use, and each file is read once).
    """
    release_dir = Path(release_dir)
    if signing_fingerprint is None:
        if signing_key_path is None:
            raise TypeError("render_review needs signing_fingerprint or signing_key_path")
        from deidflow.manifest.signing import signing_key_id

        signing_fingerprint = signing_key_id(signing_key_path)
    tau = _TAU.get(record.release_model, 1 / 5)
    k_required = int(k or record.risk.after.get("k_required") or 6)
    sections = {
        "agreement": _agreement(record),
        "records": _records(record),
        "consent": _consent(record),
        "treatment": _treatment(record) + _reference_tables(record),
        "risk": _risk(record, class_sizes, class_risks, class_sizes_before, tau, k_required),
        "utility": utility_section(record),
        "validation": _validation(record),
        "files": _files(record, release_dir, digests),
        "signature": _signature(signing_fingerprint),
        "software": _software(record),
        "policy": _policy(record),
    }
    body = "\n".join(
        f'<section id="{sid}"><h2>{e(title)}</h2>\n{sections[sid]}</section>'
        for sid, title in _SECTIONS
    )
    nav = "".join(f'<a href="#{sid}">{e(title.split(",")[0])}</a>' for sid, title in _SECTIONS)
    template = Template(
        resources.files("deidflow.manifest").joinpath("templates/review.html").read_text("utf-8")
    )
    page = template.substitute(
        title=e(f"Release {record.release_id} — {record.recipient.name}"),
        label=e(record.label),
        signing_key=e(signing_fingerprint),
        verdicts=_verdicts(record, signing_fingerprint),
        nav=nav,
        sections=body,
        deidflow_version=e(record.software.deidflow),
        # the run's finish time, not the wall clock: one record renders to one page, byte for byte
        generated_at=e(_ts(record.finished_at)),
    )
    out = release_dir / REVIEW_NAME
    out.write_text(page, encoding="utf-8")
    return out


# --- sections -----------------------------------------------------------------------------


def _verdicts(record: ReleaseRecord, fingerprint: str) -> str:
    v = record.validation
    passed = bool(v.get("success"))
    exps = v.get("expectations") or []
    failed = sum(1 for x in exps if isinstance(x, Mapping) and not x.get("success"))
    risk_after = record.risk.after
    shortfalls = gbt42460_shortfalls(record)
    # A release that does not meet GB/T 42460 never shows a green PASSED: its validation
    # passed only against the weaker limits the policy's override allowed.
    green = passed and not shortfalls
    label = "PASSED" if green else "passed only under overridden limits" if passed else "FAILED"
    parts = [
        f'<div class="verdict {"pass" if green else "fail"}">Validation: '
        f'{label} ({len(exps) - failed}/{len(exps)} checks)</div>',
        f'<div class="verdict info">Signed by key {e(short_key_id(fingerprint))}</div>',
        f'<div class="verdict info">Released: {_n(sum(record.counts.released.values()))} rows, '
        f"{_n(record.counts.excluded_for_consent)} excluded for consent, "
        f"{_n(record.counts.suppressed)} suppressed</div>",
    ]
    if "k" in risk_after:
        parts.append(f'<div class="verdict info">k after = {e(_fmt(risk_after["k"]))}</div>')
    if shortfalls:
        ov = record.limits_override or {}
        why = (f' Override reason: {e(ov.get("reason", ""))}'
               + (f' (approved by {e(ov["approved_by"])})' if ov.get("approved_by") else "")
               if ov else " No override was recorded.")
        parts.insert(0, '<div class="verdict fail">Does NOT meet GB/T 42460 for the '
                     f'{e(record.release_model)} model: {e("; ".join(shortfalls))}.{why}</div>')
    return "".join(parts)


def gbt42460_shortfalls(record: ReleaseRecord) -> list[str]:
    """How the release falls short of GB/T 42460 for its model: the policy's overridden
    limits, and what the release reached (k, class risk Rb, overall risk R) beyond the floors."""
    out = list((record.limits_override or {}).get("departures", []))
    after = record.risk.after
    tau = _TAU.get(record.release_model)
    k = after.get("k")
    if isinstance(k, (int, float)) and k < 2:
        out.append(f"k reached {_fmt(k)} < 2")
    rb = after.get("max_class_risk")
    if tau is not None and isinstance(rb, (int, float)) and rb > tau + 1e-12:
        out.append(f"class risk reached {_fmt(rb)} > τ = {_fmt(tau)}")
    r = after.get("overall_risk")
    if isinstance(r, (int, float)) and r > 0.05 + 1e-12:
        out.append(f"overall risk reached {_fmt(r)} > 0.05")
    return out


def _agreement(r: ReleaseRecord) -> str:
    abroad = r.recipient.country.upper() != "CN"
    facts = [
        ("Release", r.release_id),
        ("Data-sharing agreement", r.agreement_id),
        ("PIPIA (PIPL art. 55)", r.pipia_id),
        ("Recipient", f"{r.recipient.name} ({r.recipient.id})"),
        (
            "Recipient country",
            f"{r.recipient.country}" + (" — outside mainland China (PIPL art. 38–39)" if abroad else ""),
        ),
        ("Purpose", r.purpose),
        ("Release model", f"{r.release_model} (class-risk threshold τ = {_fmt(_TAU.get(r.release_model))})"),
        ("Data categories", ", ".join(r.data_categories)),
        ("Status of the data", r.label),
        ("Kept until (retention)", _ts(r.retention_until)),
        ("Created", _ts(r.created_at)),
        ("Run", f"{_ts(r.started_at)} → {_ts(r.finished_at)}"),
        ("Prefect flow run", r.flow_run_id or "— (run outside Prefect)"),
    ]
    plan = [
        ("Objective", r.plan.objective),
        ("Attacker model", r.plan.attacker_model),
        ("Approver", r.plan.approver),
        ("Executor", r.plan.executor),
        ("Plan version", r.plan.version),
    ]
    return _facts(facts) + "<h3>De-identification plan (GB/T 37964 5.2.4)</h3>" + _facts(plan)


def _records(r: ReleaseRecord) -> str:
    c = r.counts
    # the pipeline's own count when it gives one (extra field), else what the others imply
    implied = max(c.records_in - c.excluded_for_consent - c.suppressed, 0)
    released_subjects = int((c.model_extra or {}).get("released_subjects", implied))
    chart = stacked_bar(
        [
            ("released", released_subjects, "#3b6ea8"),
            ("suppressed (risk)", c.suppressed, "#c26a00"),
            ("excluded (no valid consent)", c.excluded_for_consent, "#90a4ae"),
        ],
        title="Subject-table records",
    )
    rows = [[e(t), _num(n)] for t, n in c.released.items()]
    return (
        _facts(
            [
                ("Records in (subject table)", _n(c.records_in)),
                ("Excluded for consent", _n(c.excluded_for_consent)),
                ("Suppressed to meet the risk limits", _n(c.suppressed)),
            ]
        )
        + _figure(chart, "Where the records of the subject table went.")
        + "<h3>Rows released per table</h3>"
        + _table(["Table", "Rows released"], rows)
    )


def _consent(r: ReleaseRecord) -> str:
    cs = r.consent
    reasons = sorted(cs.excluded_by_reason.items(), key=lambda kv: -kv[1])
    facts = _facts(
        [
            ("Consent registry", cs.registry),
            ("Snapshot as of", _ts(cs.as_of)),
            ("Consent events in snapshot", _n(cs.events)),
            ("Subjects with valid separate consent", _n(cs.granted)),
            ("Subjects excluded", _n(cs.excluded)),
            ("Digest of consent ids relied on", cs.consent_ids_digest),
            ("Withdrawals matching no subject of the extract (see the private log)",
             _n(cs.orphan_withdrawals)),
            ("Under-14 guardian rule",
             "not applied: the policy attests that the data holds no minors"
             if cs.no_minors_attested else "applied"),
        ]
    )
    if not reasons:
        return facts + "<p>No subject was excluded for consent.</p>"
    chart = bar_chart(
        [reason for reason, _ in reasons],
        [("subjects", [n for _, n in reasons], "#90a4ae")],
        title="Exclusions by reason",
    )
    rows = [[e(reason), _num(n)] for reason, n in reasons]
    return (
        facts
        + "<h3>Exclusions by reason</h3>"
        + _table(["Reason", "Subjects excluded"], rows)
        + _figure(chart, "Subjects left out because the registry held no valid consent for "
                  "this recipient, purpose and data category, by reason.")
    )


def _treatment(r: ReleaseRecord) -> str:
    rows = []
    for c in r.columns:
        params = "<br>".join(
            f"<code>{e(k)}</code> = {e(_fmt(v) if not isinstance(v, (dict, list)) else json.dumps(v, ensure_ascii=False))}"
            for k, v in c.params.items()
        )
        rows.append([e(c.table), f"<code>{e(c.column)}</code>", e(c.role), e(c.technique), params or "—"])
    out = _table(["Table", "Column", "Role", "Technique", "Parameters"], rows)
    if r.aggregates:
        arows = [
            [e(a.get("name")), e(a.get("table")), e(", ".join(map(str, a.get("by", [])))),
             _num(a.get("cells")), _num(a.get("suppressed_cells"))]
            for a in r.aggregates
        ]
        out += "<h3>Aggregates (small cells suppressed)</h3>" + _table(
            ["Name", "Table", "Grouped by", "Cells", "Cells suppressed"], arows
        )
    return out + (
        '<p class="note">Keys are never recorded here: a keyed technique shows only the '
        "fingerprint of the key it used.</p>"
    )


def _reference_tables(r: ReleaseRecord) -> str:
    """Lookup tables without a patient column (deidflow.reference_tables): rows in and out,
    the keep rule, and each column's technique; their quasi-identifiers flagged as outside
    the patient risk."""
    if not r.reference_tables:
        return ""
    rows = []
    for t in r.reference_tables:
        keep = ("all rows: " + str(t.get("reason") or "") if t.get("keep") == "all"
                else "rows a released row references")
        techniques = "<br>".join(
            f"<code>{e(c.get('column'))}</code>: {e(c.get('role'))}, {e(c.get('technique'))}"
            + (f" → {e(c.get('references'))}" if c.get("references") else "")
            + (" <em>(not in the patient risk)</em>" if c.get("not_in_patient_risk") else "")
            for c in t.get("columns", []))
        rows.append([e(t.get("table")), _num(t.get("rows_in")), _num(t.get("rows_out")),
                     _num(t.get("dropped_unreferenced")), e(keep),
                     e(", ".join(t.get("referenced_by", [])) or "—"), techniques])
    return ("<h3>Reference tables (no patient column)</h3>" + _table(
        ["Table", "Rows in", "Rows out", "Unreferenced, dropped", "Released", "Referenced by",
         "Columns"], rows)
        + '<p class="note">Reference tables hold no patient records: they are not filtered by '
        "consent, and their quasi-identifiers (a provider's city) describe the provider and are "
        "not counted in the patient risk above. Their keys are pseudonymised as the foreign keys "
        "that point at them, so joins work.</p>")


def _risk_by_table(r: ReleaseRecord) -> str:
    """Risk of each table alone and of the whole record (risk.record), when quasi-identifiers
    were declared in several tables: a table can look safe alone and not in the record."""
    by_table = r.risk.after.get("by_table") or {}
    if not by_table:
        return ""
    rows = [[e(t), _num(m.get("k")), _num(m.get("classes")), _num(m.get("unique_subjects")),
             e(", ".join(m.get("quasi_identifiers", [])))] for t, m in by_table.items()]
    rows.append(["<strong>whole record</strong>", _num(r.risk.after.get("k")),
                 _num(r.risk.after.get("classes")), "—",
                 "the subject row and the set of each table's rows"])
    return ("<h3>Risk per table and for the whole record</h3>"
            + _table(["Table", "k", "Classes", "Unique subjects", "Quasi-identifiers"], rows))


def _risk(
    r: ReleaseRecord,
    class_sizes: Sequence[int] | None,
    class_risks: Sequence[float] | None,
    sizes_before: Sequence[int] | None,
    tau: float,
    k_required: int,
) -> str:
    before, after = r.risk.before, r.risk.after
    names = [n for n in dict.fromkeys([*before, *after]) if n != "by_table"]
    rows = [[e(n), _num(before.get(n)), _num(after.get(n))] for n in names]
    out = _table(["Measure", "Before", "After"], rows) + _risk_by_table(r)
    if r.risk.levels:
        out += "<h3>Generalisation level chosen per quasi-identifier</h3>" + _table(
            ["Quasi-identifier", "Level"], [[e(k), _num(v)] for k, v in r.risk.levels.items()]
        )
    if r.risk.utility:
        out += "<h3>Utility</h3>" + _table(
            ["Measure", "Value"], [[e(k), _num(v)] for k, v in r.risk.utility.items()]
        )
    charts = []
    if class_sizes is not None and len(class_sizes):
        series = []
        if sizes_before is not None and len(sizes_before):
            series.append(("before", size_histogram(sizes_before), "#9bb7d4"))
        series.append(("after", size_histogram(class_sizes), "#3b6ea8"))
        warn = [_SIZE_EDGES[i] < k_required for i in range(len(_SIZE_LABELS))]
        charts.append(
            _figure(
                bar_chart(_SIZE_LABELS, series, title="Records by size of their class", warn=warn),
                f"How many records sit in equivalence classes of each size. Classes smaller than "
                f"k = {k_required} (red labels) are the re-identifiable ones.",
            )
        )
        risks, weights, unit = _risk_values(class_sizes, class_risks)
        hist = np.histogram(np.clip(risks, 0, 1), bins=_RISK_EDGES, weights=weights)[0]
        warn_r = [_RISK_EDGES[i] >= tau - 1e-12 for i in range(len(_RISK_LABELS))]
        charts.append(
            _figure(
                bar_chart(
                    _RISK_LABELS,
                    [(unit, [int(round(x)) for x in hist], "#3b6ea8")],
                    title="Re-identification risk θ (after)",
                    warn=warn_r,
                ),
                f"{unit.capitalize()} by class risk θ = 1/class size. Bands above the threshold "
                f"τ = {_fmt(tau)} for a {r.release_model} release are in red.",
            )
        )
    sup = r.risk.suppressed_records
    total = r.counts.records_in - r.counts.excluded_for_consent
    charts.append(
        _figure(
            stacked_bar(
                [("kept", max(total - sup, 0), "#3b6ea8"), ("suppressed", sup, "#c26a00")],
                title=f"Suppression: {_n(sup)} of {_n(total)} consented records "
                f"({_fmt(100 * sup / total if total else 0)} %)",
            ),
            "Records removed so that every remaining class meets the limits.",
        )
    )
    return out + '<div class="charts">' + "".join(charts) + "</div>"


def _validation(r: ReleaseRecord) -> str:
    v = r.validation
    passed = bool(v.get("success"))
    head = (
        f'<p class="{"ok" if passed else "bad"}">'
        f'{"All expectations passed." if passed else "Validation FAILED."}</p>'
    )
    rows = []
    for x in v.get("expectations") or []:
        if not isinstance(x, Mapping):
            continue
        kwargs = x.get("kwargs") or {}
        name = x.get("expectation_type") or x.get("type") or x.get("name") or "?"
        column = x.get("column") or kwargs.get("column") or ""
        res = x.get("result") or {}
        observed = x.get("observed", res.get("observed_value") if isinstance(res, Mapping) else None)
        ok = bool(x.get("success"))
        rows.append(
            [
                e(name),
                f"<code>{e(column)}</code>" if column else "",
                f'<span class="{"ok" if ok else "bad"}">{"pass" if ok else "FAIL"}</span>',
                e(_fmt(observed) if observed is not None else ""),
                e(x.get("description") or ""),
            ]
        )
    extra = {k: v for k, v in v.items() if k not in ("success", "expectations")}
    return (
        head
        + _table(["Expectation", "Column", "Result", "Observed", "Meaning"], rows)
        + (_facts([(k, _fmt(val)) for k, val in extra.items()]) if extra else "")
    )


def _files(r: ReleaseRecord, release_dir: Path, digests: Callable[[Path], str] = file_sha256) -> str:
    inputs = [[e(i.table), f"<code>{e(i.path)}</code>", _num(i.rows), f"<code>{e(i.sha256)}</code>"] for i in r.inputs]
    own = {REVIEW_NAME, MANIFEST_NAME, PUBLIC_KEY_NAME}
    released = [
        [f"<code>{e(name)}</code>", _num(path.stat().st_size), f"<code>{e(digests(path))}</code>"]
        for name, path in release_files(release_dir).items()
        if name not in own
    ]
    return (
        "<h3>Inputs</h3>"
        + _table(["Table", "Path", "Rows", "SHA-256"], inputs)
        + "<h3>Released files</h3>"
        + _table(["File", "Bytes", "SHA-256"], released)
    )


def _signature(fingerprint: str) -> str:
    return (
        _facts(
            [
                ("Status", f"signed by key {short_key_id(fingerprint)}"),
                ("Key id", fingerprint),
                ("Envelope", "manifest.json — DSSE, Ed25519, in-toto Statement v1"),
            ]
        )
        + '<p class="note">This page is one of the files listed, with its SHA-256, in the signed '
        "manifest, so it cannot be changed without verification failing. It shows the key the "
        "release was signed with, not a live check: to check the signature and every file, run "
        "<code>deidflow verify RELEASE_DIR --public-key hospital-signing.pub</code> with the "
        "public key the hospital gave you, and compare the key id above.</p>"
    )


def _software(r: ReleaseRecord) -> str:
    rows = [["deidflow", e(r.software.deidflow)], ["Python", e(r.software.python)]]
    rows += [[e(n), e(v)] for n, v in sorted(r.software.packages.items())]
    return _table(["Software", "Version"], rows)


def _policy(r: ReleaseRecord) -> str:
    return (
        _facts([("Policy SHA-256", r.policy_sha256)])
        + f"<details><summary>Full policy text</summary><pre>{e(r.policy_text)}</pre></details>"
    )


# --- charts (inline SVG) ------------------------------------------------------------------


def size_histogram(sizes: Sequence[int]) -> list[int]:
    """Records per class-size band (a class of size f holds f records)."""
    arr = np.asarray(sizes, dtype=np.int64)
    idx = np.digitize(arr, _SIZE_EDGES) - 1
    return [int(x) for x in np.bincount(idx[idx >= 0], weights=arr[idx >= 0], minlength=len(_SIZE_EDGES))]


def _risk_values(
    sizes: Sequence[int], risks: Sequence[float] | None
) -> tuple[np.ndarray, np.ndarray, str]:
    s = np.asarray(sizes, dtype=np.float64)
    if risks is None:
        return 1.0 / np.maximum(s, 1), s, "records"
    r = np.asarray(risks, dtype=np.float64)
    if len(r) == len(s):
        return r, s, "records"
    return r, np.ones_like(r), "classes"


def bar_chart(
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float], str]],
    *,
    title: str,
    warn: Sequence[bool] | None = None,
    width: int = 540,
) -> str:
    """Horizontal grouped bars: one row per label, one bar per series, values printed."""
    # Room for the longest label (labels are right-aligned to the axis: too narrow a column
    # cuts the start of a long exclusion reason off the chart), within reason.
    label_w = int(min(max(150, max((text_width(x) for x in labels), default=0) + 12), 420))
    width = max(width, label_w + 320)
    pad, bar_h, gap = 8, 14, 8
    row_h = bar_h * len(series) + gap
    top = 30 + (18 if len(series) > 1 else 0)
    height = top + row_h * len(labels) + pad
    vmax = max([max(v, default=0) for _, v, _ in series] + [1])
    plot_w = width - label_w - 70
    out = [
        f'<svg width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{e(title)}">',
        f'<text x="0" y="16" font-size="14" font-weight="600">{e(title)}</text>',
    ]
    if len(series) > 1:
        x = label_w
        for name, _, color in series:
            out.append(f'<rect x="{x}" y="24" width="12" height="12" fill="{color}"/>')
            out.append(f'<text x="{x + 16}" y="34" font-size="12">{e(name)}</text>')
            x += 24 + 8 * len(name)
    for i, label in enumerate(labels):
        y = top + i * row_h
        is_warn = bool(warn and warn[i])
        colour = ' fill="#b3261e"' if is_warn else ""
        out.append(
            f'<text x="{label_w - 6}" y="{y + row_h / 2 + 2:.1f}" font-size="12" '
            f'text-anchor="end"{colour}>{e(label)}</text>'
        )
        for j, (_, values, color) in enumerate(series):
            v = float(values[i]) if i < len(values) else 0.0
            w = 0 if vmax == 0 else plot_w * v / vmax
            by = y + j * bar_h
            out.append(
                f'<rect x="{label_w}" y="{by}" width="{w:.1f}" height="{bar_h - 2}" fill="{color}"/>'
            )
            out.append(
                f'<text x="{label_w + w + 4:.1f}" y="{by + bar_h - 4}" font-size="11">{_n(v)}</text>'
            )
    out.append(
        f'<line x1="{label_w}" y1="{top - 2}" x2="{label_w}" y2="{height - pad}" stroke="#5f6368"/>'
    )
    out.append("</svg>")
    return "".join(out)


def text_width(text: str, size: float = 12) -> float:
    """Rough rendered width in px of `text` at font `size`: wide (CJK, full-width) characters
    take about one em, others about 0.6 em. SVG text has no layout, so charts size by this."""
    import unicodedata

    wide = sum(1 for ch in text if unicodedata.east_asian_width(ch) in ("W", "F"))
    return size * (wide + 0.6 * (len(text) - wide))


def stacked_bar(parts: Sequence[tuple[str, float, str]], *, title: str, width: int = 540) -> str:
    """One horizontal bar split into parts, with a legend giving counts and shares."""
    total = sum(max(v, 0) for _, v, _ in parts) or 1
    height = 50 + 20 * len(parts)
    out = [
        f'<svg width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{e(title)}">',
        f'<text x="0" y="16" font-size="14" font-weight="600">{e(title)}</text>',
    ]
    x = 0.0
    for _, v, color in parts:
        w = (width - 2) * max(v, 0) / total
        out.append(f'<rect x="{x:.1f}" y="24" width="{w:.1f}" height="18" fill="{color}"/>')
        x += w
    for i, (name, v, color) in enumerate(parts):
        y = 58 + 20 * i
        out.append(f'<rect x="0" y="{y - 11}" width="12" height="12" fill="{color}"/>')
        out.append(
            f'<text x="18" y="{y}" font-size="12">{e(name)}: {_n(v)} '
            f"({_fmt(100 * max(v, 0) / total)} %)</text>"
        )
    out.append("</svg>")
    return "".join(out)


# --- small formatting pieces --------------------------------------------------------------


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{e(caption)}</figcaption></figure>"


def _facts(pairs: Sequence[tuple[str, Any]]) -> str:
    return (
        '<dl class="facts">'
        + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in pairs)
        + "</dl>"
    )


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Cells in `rows` are already escaped HTML."""
    if not rows:
        return '<p class="note">None.</p>'
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _num(v: Any) -> str:
    return f'<span class="mono">{e(_fmt(v))}</span>' if v is not None else "—"


def _n(v: Any) -> str:
    try:
        return f"{int(round(float(v))):,}"
    except (TypeError, ValueError):
        return str(v)


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        if v == int(v) and abs(v) < 1e15:
            return f"{int(v):,}"
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def _ts(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# --- utility evidence (issue 21) ----------------------------------------------------------


def utility_section(r: ReleaseRecord) -> str:
    """Per column loss with before/after plots, suppression and loss by group (flagged where a
    group loses much more than average), and the model comparison, from the record's
    `utility_evidence` (aggregates only; small cells are already withheld in it)."""
    u = r.utility_evidence
    if u is None:
        return '<p class="note">No utility evidence was computed for this release.</p>'
    out = _facts([
        ("Search minimised", u.search_loss_description),
        ("Consented subjects", _n(u.subjects)),
        ("Released subjects", _n(u.released)),
        ("Suppressed", f"{_pct(u.suppressed_share)} of consented subjects"),
        ("Mean record loss", _fmt(round(u.mean_record_loss, 4))),
    ])
    out += "<h3>Information loss per column</h3>" + _table(
        ["Column", "Role", "Technique", "Level", "Precision", "Precision incl. suppression",
         "Non-uniform entropy (bits/record)", "NUE normalised", "Distribution change (TVD)", "Note"],
        [[f"<code>{e(c.column)}</code>", e(c.role), e(c.technique),
          e("—" if c.level is None else f"{c.level} of {c.top_level}"), _num(_r(c.precision)),
          _num(_r(c.precision_with_suppression)), _num(_r(c.nue_bits)), _num(_r(c.nue_normalised)),
          _num(_r(c.tvd)), e(c.note)] for c in u.columns])
    plots = [_distribution_figure(c, u.small_cell) for c in u.columns if c.before and c.after]
    if plots:
        out += "<h3>Distributions before and after</h3>" + '<div class="charts">' + "".join(plots) + "</div>"
    out += "<h3>Suppression and information loss by group</h3>"
    out += f'<p class="note">A group is {e(u.flag_rule)}. Groups of fewer than {u.small_cell} subjects are pooled or withheld.</p>'
    if not u.groups:
        out += '<p class="note">No sex, age, region or ethnicity column found (name them under utility.groups).</p>'
    for g in u.groups:
        rows = [[e(x.label), _num(x.subjects),
                 _flagged(_pct(x.suppressed_share), x.flag_suppression),
                 _flagged(_fmt(round(x.loss, 4)), x.flag_loss)] for x in g.groups]
        out += f"<h4>{e(g.kind)} (<code>{e(g.column)}</code>)</h4>" + _table(
            ["Group", "Consented subjects", "Suppressed", "Mean record loss"], rows)
        if g.groups:
            out += _figure(bar_chart(
                [x.label for x in g.groups],
                [("suppressed %", [round(100 * x.suppressed_share, 1) for x in g.groups], "#c26a00")],
                title=f"Suppressed by {g.kind}: {g.column} (overall {_pct(u.suppressed_share)})",
                warn=[x.flag_suppression or x.flag_loss for x in g.groups], width=420),
                "Share of each group's consented subjects suppressed; flagged groups in red.")
        if any(x.flag_suppression or x.flag_loss for x in g.groups):
            out += (f'<p class="bad">Fairness warning: some {e(g.kind)} groups lose much more than '
                    "average; a model trained on this release may serve them worse.</p>")
    out += "<h3>Model trained on original vs released data</h3>"
    m = u.model
    if m is None:
        out += f'<p class="note">{e(u.model_note)}</p>'
    else:
        sample = (f"a random sample: {_n(m.train_original)} training and {_n(m.test)} held-out "
                  f"subjects of {_n(m.population)}" if m.sampled else
                  f"all {_n(m.population)} consented subjects ({_n(m.test)} held out)")
        out += _facts([
            ("Target", m.target), ("Model", m.model), ("Features", ", ".join(m.features)),
            ("Subjects used", sample + " — the released model trained on the "
             f"{_n(m.train_released)} of those training subjects that were released"),
            ("Accuracy, original → released", f"{m.accuracy_original:.4f} → {m.accuracy_released:.4f} "
             f"(difference {m.accuracy_difference:+.4f})"),
            ("AUC, original → released", "—" if m.auc_difference is None else
             f"{m.auc_original:.4f} → {m.auc_released:.4f} (difference {m.auc_difference:+.4f})"),
        ])
        out += ('<p class="note">Both models are scored on the same held-out part of the original '
                "consented records; the released model sees them recoded to the released levels, "
                f"as a recipient would. {e(u.model_note)}</p>")
    out += "<h3>Definitions</h3>" + _facts(list(u.definitions.items()))
    return out


def _distribution_figure(c: Any, small_cell: int) -> str:
    def bars(d: Any) -> tuple[list[str], list[int]]:
        labels = [lab + (" †" if v is None else "") for lab, v in zip(d.labels, d.counts)]
        return labels, [0 if v is None else v for v in d.counts]

    lb, vb = bars(c.before)
    la, va = bars(c.after)
    note = f" † fewer than {small_cell} subjects: withheld."
    if lb == la:
        chart = bar_chart(lb, [("before", vb, "#9bb7d4"), ("after", va, "#3b6ea8")],
                          title=f"{c.column}: before and after", width=420)
        return _figure(chart, f"{c.column}: consented (before) and released (after) subjects." + note)
    return _figure(
        bar_chart(lb, [("before", vb, "#9bb7d4")], title=f"{c.column}: before", width=360)
        + bar_chart(la, [("after", va, "#3b6ea8")], title=f"{c.column}: after (level {c.level})", width=360),
        f"{c.column}: consented values, and the values released." + note)


def _flagged(text: str, flag: bool) -> str:
    return f'<span class="bad">⚠ {e(text)}</span>' if flag else e(text)


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


# --- the approval section (deidflow.release.approval puts it after <main>) ------------------------

def approval_section(approval: Any | None) -> str:
    """While staged (`approval` None): the "awaiting approval" banner. Once approved: who
    approved with which key, when, their comment and the digest of the staged review page
    they saw. Inline styles only (the page's CSP allows no more)."""
    if approval is None:
        return (
            '<section id="approval" class="approval awaiting" style="border:3px solid #c26a00;'
            'background:#fff3e0;padding:12px 16px;margin:14px 0;border-radius:6px">'
            '<h2 style="color:#c26a00;margin:0 0 6px">Awaiting approval</h2>'
            "<p>This release is staged: it is sealed and signed by the executor, and nothing has "
            "left the hospital. It is published only when the privacy officer approves it with "
            "their own key (<code>deidflow approve</code>), or discarded when they reject it.</p>"
            "</section>"
        )
    when = approval.approved_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = [
        ("Approved by", e(approval.approver)),
        ("Approver key", f'<span class="mono">{e(short_key_id(approval.key_id))}</span>'),
        ("Executor key", f'<span class="mono">{e(short_key_id(approval.executor_key_id))}</span>'),
        ("Approved at", e(when)),
        ("Comment", e(approval.comment) or "<em>none</em>"),
        ("Staged at", e(approval.staged_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))),
        ("Review page approved (SHA-256)", f'<code>{e(approval.review_sha256)}</code>'),
        ("Staged manifest (SHA-256)", f'<code>{e(approval.staged_manifest_sha256)}</code>'),
    ]
    facts = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return (
        '<section id="approval" class="approval approved" style="border:3px solid #1b7f3b;'
        'background:#e8f5e9;padding:12px 16px;margin:14px 0;border-radius:6px">'
        '<h2 style="color:#1b7f3b;margin:0 0 6px">Approved for release</h2>'
        f'<dl class="facts">{facts}</dl>'
        '<p class="note">The manifest carries two signatures over one statement: the '
        "executor's and the approver's. The digest above is that of the review page the "
        "approver saw while the release was staged (the same page with the banner in place of "
        "this block).</p></section>"
    )
