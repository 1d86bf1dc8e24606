"""Free-text scrubber: recall and precision per identifier kind on real public text, and
throughput on notes of about 500 characters (one process, so one core).

    .venv/bin/python benchmarks/bench_scrub.py [--notes 20000] [--throughput-only | --staff-cost]

Data (by path, never copied): /work/shared/datasets/zh_text (MultiPriv, 975 Chinese person
paragraphs whose structured fields are the gold strings) and /work/shared/datasets/synthea
(patients.csv of three Synthea runs; notes are written from each patient's own fields, so the
fields are the gold strings).

Recall counts gold occurrences (every place the gold string occurs in the text) that lie
wholly inside a replaced span. Precision counts detected spans of the kind that overlap a gold
occurrence of that kind (or, for names, are the surname of a gold name: 韩女士); spans of kinds
without gold (dates, record numbers) are left out.
"generic" runs the pattern detectors alone; "+known" adds the subject's own structured values.

Throughput: the first four rows scrub the 500-character notes; the "release notes" rows scrub
notes as the release benchmark generates them (`deidflow.samples`, ~260 characters) with what a
release passes to the scrubber for the sample policy (placeholders, dates shifted, ages
removed; each subject's direct identifiers and attending doctors), and 0, 5,000 or 20,000 staff
names known for every note (`scrub.EVERYONE`; 5,000 is the attending doctors of 1M patients).
The last row is the 500-character notes with 20,000 staff names.

Generated clinical documents (benchmarks/zh_clinical_docs.py, ten kinds of document with gold
spans): recall per identifier type (caught = no character of it left), name recall per role,
and the share of kept words (drugs, diseases, eponyms, lab values, doses, ICD codes,
departments, hospitals, ordinary clinical phrases) left wholly intact. `--split eval` (the
default) is the held-out split, never tuned on; `--split tune` the one the rules were tuned on.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from deidflow.techniques.scrub import DETECTORS, detect_spans, scrub_texts

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
_TITLE = re.compile(r"\s*(?:副?主任医师|主治医师|医师|医生|教授|主任|博士)$")


def zh_text() -> tuple[list[str], list[dict[str, list[str]]], pd.DataFrame]:
    """Paragraphs, gold strings per kind per paragraph, and the known-identifier table."""
    rows = json.loads((DATASETS / "zh_text" / "multipriv_person_975_zh.json").read_text("utf-8"))
    texts, gold, known = [], [], []
    for i, r in enumerate(rows):
        texts.append(r["naturalParagraph"])
        doctor = _TITLE.sub("", r["doctor"]).split()[-1] if r["doctor"].strip() else ""
        gold.append({
            "name": [_TITLE.sub("", r["name"]), doctor],  # 陶泰来博士 is mentioned as 陶泰来
            "resident_id": [str(r["idCardNumbers"])],
            "mobile": [str(r["phoneNumbers"])],
            "email": [r["emailAddress"]],
            "address": [r["location"]],
        })
        for kind, value in (("name", r["name"]), ("resident_id", str(r["idCardNumbers"])),
                            ("mobile", str(r["phoneNumbers"])), ("email", r["emailAddress"]),
                            ("address", r["location"])):
            known.append((str(i), kind, value))
    return texts, gold, pd.DataFrame(known, columns=["subject_id", "kind", "value"])


def synthea_notes() -> tuple[list[str], list[dict[str, list[str]]], pd.DataFrame]:
    """One bilingual note per Synthea patient, written from the patient's own fields."""
    texts, gold, known = [], [], []
    for run in sorted((DATASETS / "synthea").iterdir()):
        if not (run / "patients.csv").exists():
            continue
        p = pd.read_csv(run / "patients.csv", dtype=str, keep_default_na=False)
        for r in p.itertuples(index=False):
            sid = f"{run.name}:{r.Id}"
            title = "Mr." if r.GENDER == "M" else "Ms."
            note = (
                f"患者{r.FIRST} {r.LAST}，{'男' if r.GENDER == 'M' else '女'}，出生日期{r.BIRTHDATE}，"
                f"SSN {r.SSN}，住址{r.ADDRESS}, {r.CITY}。{title} {r.LAST} reports chest pain since "
                f"yesterday; Patient: {r.FIRST} {r.LAST}. Seen on 2024-03-05. "
                f"Lives at {r.ADDRESS}, {r.CITY}, {r.STATE}. 复诊时{r.FIRST}自诉好转。"
            )
            texts.append(note)
            gold.append({"name": [r.FIRST, r.LAST], "ssn": [r.SSN], "address": [r.ADDRESS],
                         "date": [r.BIRTHDATE, "2024-03-05"]})
            for kind, value in (("FIRST", r.FIRST), ("LAST", r.LAST), ("SSN", r.SSN),
                                ("ADDRESS", r.ADDRESS), ("DRIVERS", r.DRIVERS), ("PASSPORT", r.PASSPORT)):
                if value:
                    known.append((sid, kind, value))
            texts[-1] = note
            gold[-1]["_sid"] = [sid]
    return texts, gold, pd.DataFrame(known, columns=["subject_id", "kind", "value"])


def score(texts: list[str], gold: list[dict[str, list[str]]], spans: pd.DataFrame) -> pd.DataFrame:
    by_row: dict[int, list[tuple[int, int, str]]] = {}
    for r, s, e, k in zip(spans["row"], spans["start"], spans["end"], spans["kind"]):
        by_row.setdefault(int(r), []).append((int(s), int(e), k))
    stats: dict[str, list[int]] = {}
    for i, (text, g) in enumerate(zip(texts, gold)):
        found = by_row.get(i, [])
        occ: dict[str, list[tuple[int, int]]] = {}
        for kind, values in g.items():
            if kind.startswith("_"):
                continue
            for v in values:
                if not v:
                    continue
                j = text.find(v)
                while j >= 0:
                    occ.setdefault(kind, []).append((j, j + len(v)))
                    j = text.find(v, j + 1)
        for kind, places in occ.items():
            st = stats.setdefault(kind, [0, 0, 0, 0])  # gold, recalled, spans, spans on gold
            st[0] += len(places)
            st[1] += sum(any(s <= a and b <= e for s, e, _ in found) for a, b in places)
        for s, e, k in found:
            if k in g:
                st = stats.setdefault(k, [0, 0, 0, 0])
                st[2] += 1
                # 韩女士 names the person 韩丽萍 too: a surname of a gold name counts as correct
                st[3] += any(a < e and s < b for a, b in occ.get(k, [])) or (
                    k == "name" and any(v.startswith(text[s:e]) for v in g["name"] if v))
    return pd.DataFrame(
        [{"kind": k, "gold": v[0], "recall": v[1] / v[0] if v[0] else np.nan, "spans": v[2],
          "precision": v[3] / v[2] if v[2] else np.nan} for k, v in sorted(stats.items())]
    )


def quality_table() -> pd.DataFrame:
    parts = []
    for name, (texts, gold, known) in (("zh_text", zh_text()), ("synthea", synthea_notes())):
        sids = [str(i) for i in range(len(texts))] if name == "zh_text" else [g["_sid"][0] for g in gold]
        generic = [k for k in DETECTORS if k != "known"]
        for mode, kinds in (("generic", generic), ("+known", list(DETECTORS))):
            spans = detect_spans(texts, kinds, sids, known)
            t = score(texts, gold, spans)
            t.insert(0, "detectors", mode)
            t.insert(0, "dataset", f"{name} ({len(texts)})")
            parts.append(t)
    return pd.concat(parts, ignore_index=True)


def notes_of_500(n: int) -> tuple[pd.Series, pd.Series, pd.DataFrame]:
    """n notes of about 500 characters: two or three MultiPriv paragraphs of one person's
    neighbours joined, so every note holds names, IDs, phones, e-mails and addresses."""
    texts, _, known = zh_text()
    rng = np.random.default_rng(7)
    out, sids = [], []
    m = len(texts)
    for i in rng.integers(0, m, n):
        note = texts[i]
        j = i
        while len(note) < 480:
            j = (j + 1) % m
            note += texts[j]
        out.append(note[:520])
        sids.append(str(i))
    return pd.Series(out, dtype="string"), pd.Series(sids, dtype="string"), known


CACHE = Path(__file__).resolve().parent / ".cache"
# What a release passes to the scrubber for the sample policy's notes (configs/release.yaml:
# placeholders, dates shifted by 30 days at most, ages removed), with `release.transform`'s
# known identifiers: the subject table's direct identifiers, the subject's own attending
# doctors, and every staff value of the release for every note (`scrub.EVERYONE`).
RELEASE_SUBJECT_COLUMNS = ("name", "resident_id", "mobile", "address", "insurance_no", "postcode")


def release_notes(n: int) -> tuple[pd.Series, pd.Series, pd.DataFrame, list[str]]:
    """The first n notes of a generated extract (`deidflow.samples`, as bench_release.py
    makes them), their subjects, the subjects' known identifiers, and the attending doctors
    the notes name (generated once into benchmarks/.cache/)."""
    from deidflow.samples.generate import generate_samples

    patients = max(1, -(-n // 3))
    root = CACHE / f"scrub-extract-{patients}"
    if not (root / "notes.csv").exists():
        generate_samples(root, patients)
    notes = pd.read_csv(root / "notes.csv", dtype=str, keep_default_na=False, nrows=n)
    people = pd.read_csv(root / "patients.csv", dtype=str, keep_default_na=False)
    enc = pd.read_csv(root / "encounters.csv", dtype=str, keep_default_na=False)
    parts = [pd.DataFrame({"subject_id": people["patient_id"], "kind": c, "value": people[c]})
             for c in RELEASE_SUBJECT_COLUMNS]
    doctors = enc[["patient_id", "attending_doctor"]].drop_duplicates()
    parts.append(pd.DataFrame({"subject_id": doctors["patient_id"], "kind": "attending_doctor",
                               "value": doctors["attending_doctor"]}))
    known = pd.concat(parts, ignore_index=True).astype("string")
    return (notes["text"].astype("string"), notes["patient_id"].astype("string"), known,
            sorted(set(enc["attending_doctor"])))


def staff_values(count: int, named: list[str]) -> pd.DataFrame:
    """`count` distinct staff names known for every note: the doctors the notes name, then
    more realistic Chinese names from the sample generator's Faker pools (seed after seed)."""
    from deidflow.samples.generate import DEFAULT_SEED
    from deidflow.samples.pools import faker_pools
    from deidflow.techniques.scrub import EVERYONE

    names = dict.fromkeys(named)
    seed = DEFAULT_SEED
    while len(names) < count:
        pools = faker_pools(seed)
        names.update(dict.fromkeys(pools.male_names.to_pylist() + pools.female_names.to_pylist()))
        seed += 1
    values = list(names)[:count]
    return pd.DataFrame({"subject_id": EVERYONE, "kind": "attending_doctor", "value": values}, dtype="string")


def release_settings(n: int) -> list[tuple[str, pd.Series, dict]]:
    """(label, notes, scrub_texts arguments) of the release-like rows of `throughput`."""
    texts, sids, known, named = release_notes(n)
    offsets = np.random.default_rng(11).integers(-30, 31, len(texts))
    base = dict(subject_ids=sids, replace="placeholder", dates="shift", date_offsets=offsets, ages="remove")
    out = []
    for staff in (0, 5_000, 20_000):
        k = known if not staff else pd.concat([known, staff_values(staff, named)], ignore_index=True)
        out.append((f"release notes, + known, {staff:,} staff", texts, dict(base, known=k)))
    long_texts, long_sids, long_known = notes_of_500(n)
    out.append(("500-char notes, + known, 20,000 staff", long_texts,
                dict(subject_ids=long_sids, known=pd.concat([long_known, staff_values(20_000, named)],
                                                            ignore_index=True))))
    return out


def staff_cost(n: int, repeat: int = 5) -> pd.DataFrame:
    """What the staff names known for every note cost over none: the release-like settings
    run in alternation, CPU time; the first call builds the value set, the best of `repeat`
    after it does not."""
    settings = release_settings(n)[:3]
    first, warm = {}, {label: [] for label, _, _ in settings}
    for label, notes, kw in settings:
        c = time.process_time()
        scrub_texts(notes, **kw)
        first[label] = time.process_time() - c
    for _ in range(repeat):
        for label, notes, kw in settings:
            c = time.process_time()
            scrub_texts(notes, **kw)
            warm[label].append(time.process_time() - c)
    m = len(settings[0][1])
    base = min(warm[settings[0][0]])
    return pd.DataFrame([{"configuration": label, "notes": m, "first call µs/note": round(1e6 * first[label] / m, 1),
                          f"best of {repeat} µs/note": round(1e6 * min(warm[label]) / m, 1),
                          "over no staff µs/note": round(1e6 * (min(warm[label]) - base) / m, 1)}
                         for label, _, _ in settings])


def throughput(n: int) -> pd.DataFrame:
    texts, sids, known = notes_of_500(n)
    rows = []
    settings = [(label, texts, kw) for label, kw in (
        ("placeholder, generic detectors", dict(kinds=[k for k in DETECTORS if k != "known"])),
        ("placeholder, + known identifiers", dict(subject_ids=sids, known=known)),
        ("pseudonym, + known identifiers", dict(subject_ids=sids, known=known, replace="pseudonym",
                                                key=b"\x01" * 32)),
        ("generalise dates (month) + addresses", dict(subject_ids=sids, known=known, dates="month",
                                                      replace={"address": "generalise"})),
    )]
    for label, notes, kw in settings + release_settings(n):
        best, best_cpu = float("inf"), float("inf")
        for _ in range(3):
            t, c = time.perf_counter(), time.process_time()
            scrub_texts(notes, **kw)
            best = min(best, time.perf_counter() - t)
            best_cpu = min(best_cpu, time.process_time() - c)
        m = len(notes)
        rows.append({"configuration": label, "notes": m, "mean chars": round(float(notes.str.len().mean())),
                     "wall s": round(best, 3), "notes/s (wall)": round(m / best),
                     "cpu s": round(best_cpu, 3), "notes/s (cpu)": round(m / best_cpu),
                     "µs/note (cpu)": round(1e6 * best_cpu / m)})
    return pd.DataFrame(rows)


def generated_table(split: str, n: int) -> pd.DataFrame:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import zh_clinical_docs as docs_mod

    docs = docs_mod.generate(split, n, docs_mod.SEEDS[split])
    spans = detect_spans([t for t, _ in docs], [k for k in DETECTORS if k != "known"])
    res = docs_mod.score(docs, spans)
    rows = []
    for group, label in (("kind", "identifier type (recall)"), ("role", "name, by role (recall)"),
                         ("keep", "kept word (share intact)")):
        for k, (total, ok) in sorted(res[group].items()):
            rows.append({"what": label, "kind": k, "n": total, "share": ok / total})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notes", type=int, default=20000)
    ap.add_argument("--split", default="eval", choices=["eval", "eval2", "eval3", "tune"])
    ap.add_argument("--docs", type=int, default=600)
    ap.add_argument("--throughput-only", action="store_true",
                    help="print only the throughput table (skip recall, precision and documents)")
    ap.add_argument("--staff-cost", action="store_true",
                    help="print only what 5,000 and 20,000 staff names cost over none (CPU, alternated)")
    args = ap.parse_args()
    pd.set_option("display.width", 160)
    if args.staff_cost:
        print(f"Staff names known for every note (one process, CPU; load average {os.getloadavg()[0]:.1f})\n")
        print(staff_cost(args.notes).to_string(index=False))
        return
    if args.throughput_only:
        print(f"Throughput (one process, best of 3; load average {os.getloadavg()[0]:.1f})\n")
        print(throughput(args.notes).to_string(index=False))
        return
    print(f"Generated clinical documents, split '{args.split}' ({args.docs} documents, generic detectors)\n")
    print(generated_table(args.split, args.docs).to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print()
    q = quality_table()
    print("Recall / precision per kind\n")
    print(q.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print(f"\nThroughput (one process, best of 3; load average {os.getloadavg()[0]:.1f})\n")
    print(throughput(args.notes).to_string(index=False))


if __name__ == "__main__":
    main()
