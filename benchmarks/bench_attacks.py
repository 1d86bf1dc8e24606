"""Attacks on real releases: a linkage attack with ground truth, and anonymeter's singling-out,
linkability and inference evaluators.

    .venv/bin/python benchmarks/bench_attacks.py                  # 2,000 patients
    .venv/bin/python benchmarks/bench_attacks.py --patients 5000 --no-anonymeter

Two releases of one generated extract: the example policy (controlled, k=6) and an enclave
policy with finer classes (k=3, l=2 on a diagnosis chapter, birth date withheld so that region and
sex make the classes). Each is attacked as released, and compared with a "naive" release of the same
subjects that only drops the direct identifiers (exact quasi-identifiers), so the table shows what
de-identification bought.

Linkage (prosecutor): the attacker generalises the targets' true quasi-identifiers with the
released levels (they know the hierarchies), joins with the release and picks one record of the
matching class; success is checked against the pseudonym each subject really got. Journalist:
the attacker's table holds every patient of the extract, released or not.

anonymeter (Giomi et al. 2023) needs pandas < 3, so it runs in benchmarks/.venv-compare (made
by compare_peers.py; `benchmarks/.venv-compare/bin/pip install anonymeter`, then put numpy back
to 2.0.2 for pycanon/anjana — anonymeter 1.1 runs on it despite its pin). ori = released subjects'
original records generalised as released, syn = the release, control = the subjects excluded
for consent (never released), all with the secret "dx" (each patient's most frequent ICD-10
chapter). Results print as a table and are written to benchmarks/.cache/attacks-<N>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE = HERE / ".cache"
COMPARE_PY = HERE / ".venv-compare" / "bin" / "python"
QIS = ["birth_date", "sex", "region_code", "ethnicity"]

FINER = {
    r"  k: 6 ": "  l: 2\n  k: 3 ",
    r"  model: controlled ": "  model: enclave ",
    r"max_overall_risk: 0\.05": "max_overall_risk: 0.34\n  override: {reason: \"attack benchmark: finer classes on purpose\"}",
    r"suppression_budget: 0\.02": "suppression_budget: 0.4",
    r"hierarchy: \{kind: date, min_level: 1\}": "hierarchy: {kind: date, min_level: 4}",
    r"\n  encounters:\n": "\n      dx: {role: sensitive, technique: keep, category: diagnoses}\n\n  encounters:\n",
}

ANONYMETER = r"""
import json, sys, warnings
import pandas as pd
from anonymeter.evaluators import InferenceEvaluator, LinkabilityEvaluator, SinglingOutEvaluator
warnings.filterwarnings("ignore")
d = sys.argv[1]
out = {}
for name in json.loads(sys.argv[2]):
    ori, syn, ctl = (pd.read_csv(f"{d}/{name}-{p}.csv", dtype=str, keep_default_na=False) for p in ("ori", "syn", "control"))
    n = min(200, len(ctl))
    res = {}
    def risk(ev):
        r = ev.risk()
        return {"risk": float(r.value), "ci": [float(r.ci[0]), float(r.ci[1])]}
    for mode in ("univariate",):  # multivariate: over 10 min on 2 shared cores
        ev = SinglingOutEvaluator(ori=ori, syn=syn, control=ctl, n_attacks=n)
        try:
            ev.evaluate(mode=mode)
            res[f"singling-out {mode}"] = risk(ev)
        except RuntimeError as exc:  # no query singles anyone out in syn: nothing to attack with
            res[f"singling-out {mode}"] = {"risk": 0.0, "ci": [0.0, 0.0], "note": str(exc)[:80]}
    ev = LinkabilityEvaluator(ori=ori, syn=syn, control=ctl, n_attacks=n,
                              aux_cols=(["birth_date", "sex"], ["region_code", "ethnicity"]), n_neighbors=1)
    ev.evaluate(n_jobs=1)
    res["linkability"] = risk(ev)
    ev = InferenceEvaluator(ori=ori, syn=syn, control=ctl, aux_cols=["birth_date", "sex", "region_code", "ethnicity"],
                            secret="dx", n_attacks=n)
    ev.evaluate(n_jobs=1)
    res["inference (dx)"] = risk(ev)
    out[name] = res
print(json.dumps(out))
"""


def extract(patients: int) -> Path:
    data = CACHE / f"attack-extract-{patients}"
    if not (data / "consents.csv").exists():
        from deidflow.samples import generate_samples

        generate_samples(data, patients)
        patients_csv = pd.read_csv(data / "patients.csv", dtype="string", keep_default_na=False)
        patients_csv["dx"] = patients_csv["patient_id"].map(_dx(data / "diagnoses.csv", "patient_id")).fillna("none")
        patients_csv.to_csv(data / "patients-dx.csv", index=False)
    return data


def _dx(diagnoses: Path, key: str) -> pd.Series:
    """Each patient's most frequent ICD-10 chapter (ties: the first in order)."""
    dx = pd.read_csv(diagnoses, dtype="string", keep_default_na=False, usecols=[key, "icd10"])
    counts = dx.assign(ch=dx["icd10"].str[0]).groupby([key, "ch"]).size().reset_index(name="n")
    counts = counts.sort_values([key, "n", "ch"], ascending=[True, False, True])
    return counts.drop_duplicates(key).set_index(key)["ch"]


def generalise(frame: pd.DataFrame, levels: dict[str, int]) -> pd.DataFrame:
    """The attacker's copy of the documented hierarchies (configs/release.yaml)."""
    out = pd.DataFrame(index=frame.index)
    d = pd.to_datetime(frame["birth_date"], format="%Y-%m-%d")
    out["birth_date"] = {0: d.dt.strftime("%Y-%m-%d"), 1: d.dt.strftime("%Y-%m"),
                         2: d.dt.year.astype(str) + "-Q" + d.dt.quarter.astype(str),
                         3: d.dt.year.astype(str)}.get(levels["birth_date"], pd.Series("*", index=frame.index))
    region = frame["region_code"].astype(str)
    out["region_code"] = {0: region, 1: region.str[:4], 2: region.str[:2]}.get(
        levels["region_code"], pd.Series("CN", index=frame.index))
    for col in ("sex", "ethnicity"):
        table = pd.read_csv(REPO / "configs" / "hierarchies" / f"{col}.csv", header=None, dtype=str,
                            keep_default_na=False)
        out[col] = frame[col].map(dict(zip(table[0], table[levels[col]])))
    return out[QIS].astype(str)


def _classes(keys: pd.DataFrame) -> pd.Series:
    return keys.astype(str).agg("|".join, axis=1)


def linkage(raw: pd.DataFrame, released: pd.DataFrame, levels: dict[str, int], rng: np.random.Generator,
            rounds: int = 200) -> dict:
    """Prosecutor and journalist success of the class-join attack, and of the same attack on a
    naive release (exact quasi-identifiers) of the same subjects."""
    targets = raw.loc[raw["released"]].reset_index(drop=True)
    rel_class = _classes(released[QIS])
    size = rel_class.value_counts()
    t_class = _classes(generalise(targets, levels))
    c = t_class.map(size).to_numpy(dtype=float)
    # simulate: pick a random member of the class, compare with the truth
    order = rel_class.sort_values(kind="stable")
    first = pd.Series(np.arange(len(order)), index=order.to_numpy()).groupby(level=0).min()
    idx = order.index.to_numpy()
    starts = t_class.map(first).to_numpy(dtype=np.int64)
    pseud = released["patient_id"].to_numpy()
    truth = targets["pseudonym"].to_numpy()
    sims = [np.mean(pseud[idx[starts + rng.integers(0, c.astype(np.int64))]] == truth) for _ in range(rounds)]
    every = _classes(generalise(raw, levels)).map(size).to_numpy(dtype=float)
    journalist = np.where(raw["released"].to_numpy(), 1.0 / every, 0.0)
    naive = _classes(targets[QIS])
    naive_c = naive.map(naive.value_counts()).to_numpy(dtype=float)
    return {"prosecutor expected": float(np.mean(1 / c)), "prosecutor measured": float(np.mean(sims)),
            "max class risk": float((1 / c).max()), "journalist": float(journalist.mean()),
            "naive prosecutor": float(np.mean(1 / naive_c)), "naive uniques": float(np.mean(naive_c == 1)),
            "classes": int(len(size)), "k": int(c.min())}


def release_one(name: str, data: Path, edits: dict[str, str], root: Path) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from integration.conftest import write_policy

    from deidflow.consent.importers import import_consent_file
    from deidflow.consent.registry import ConsentRegistry
    from deidflow.keys import KeyRing
    from deidflow.manifest.verify import read_statement
    from deidflow.policy import load_policy
    from deidflow.release import registry_url, run_release
    from deidflow.techniques import ApplyContext, registry

    shutil.rmtree(root, ignore_errors=True)
    (root / "keys").mkdir(parents=True, mode=0o700)
    policy = write_policy(root, data, edits=edits)
    loaded = load_policy(policy)
    import_consent_file(ConsentRegistry(registry_url(loaded)), data / "consents.csv")
    t = time.perf_counter()
    summary = run_release(policy)
    took = time.perf_counter() - t
    pred = read_statement(summary.release_dir)["predicate"]
    released = pd.read_csv(summary.release_dir / "data" / "patients.csv", dtype="string", keep_default_na=False)
    raw = pd.read_csv(data / loaded.policy.tables["patients"].path.split("/")[-1], dtype="string",
                      keep_default_na=False)
    if "dx" not in raw:
        raw["dx"] = raw["patient_id"].map(_dx(data / "diagnoses.csv", "patient_id")).fillna("none")
    spec = loaded.policy.tables["patients"].columns["patient_id"]
    ctx = ApplyContext(table="patients", column="patient_id", subject_ids=raw["patient_id"],
                       keyring=KeyRing.from_policy(loaded))
    raw["pseudonym"] = registry.get("pseudonymise").apply(raw["patient_id"], spec, ctx).astype(str).to_numpy()
    raw["released"] = raw["pseudonym"].isin(released["patient_id"])
    excluded = pd.read_csv(root / "private" / "exclusions" / f"{summary.release_id}.csv", dtype="string")
    raw["excluded"] = raw["patient_id"].isin(excluded["subject_id"])
    if "dx" not in released:
        rel_dx = _dx(summary.release_dir / "data" / "diagnoses.csv", "patient_id")
        released["dx"] = released["patient_id"].map(rel_dx).fillna("none")
    return {"name": name, "seconds": took, "summary": summary, "claims": pred["risk"]["after"],
            "levels": pred["risk"]["levels"], "raw": raw, "released": released}


def anonymeter_frames(run: dict, out: Path) -> list[str]:
    raw, released, levels = run["raw"], run["released"], run["levels"]
    ori_raw = raw.loc[raw["released"]]
    ctl_raw = raw.loc[raw["excluded"]]
    name = run["name"]
    cols = QIS + ["dx"]
    generalise(ori_raw, levels).assign(dx=ori_raw["dx"].to_numpy()).to_csv(out / f"{name}-ori.csv", index=False)
    released[cols].to_csv(out / f"{name}-syn.csv", index=False)
    generalise(ctl_raw, levels).assign(dx=ctl_raw["dx"].to_numpy()).to_csv(out / f"{name}-control.csv", index=False)
    naive = f"{name} naive"
    ori_raw[cols].to_csv(out / f"{naive}-ori.csv", index=False)
    ori_raw[cols].to_csv(out / f"{naive}-syn.csv", index=False)
    ctl_raw[cols].to_csv(out / f"{naive}-control.csv", index=False)
    return [name, naive]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-anonymeter", action="store_true")
    args = ap.parse_args()
    os.environ.pop("DEIDFLOW_PSEUDONYM_KEY", None)
    data = extract(args.patients)
    rng = np.random.default_rng(args.seed)
    runs = [release_one("controlled k=6", data, {}, CACHE / f"attack-run-{args.patients}-a"),
            release_one("enclave k=3 l=2", data, {**FINER, r"/patients\.csv": "/patients-dx.csv"},
                        CACHE / f"attack-run-{args.patients}-b")]
    results: dict = {"patients": args.patients, "releases": {}}
    for run in runs:
        res = linkage(run["raw"], run["released"], run["levels"], rng)
        claims = run["claims"]
        res |= {"claimed avg": claims["prosecutor_avg"], "claimed max": claims["prosecutor_max"],
                "released": run["summary"].released, "levels": run["levels"], "release seconds": run["seconds"]}
        assert res["prosecutor expected"] <= claims["prosecutor_avg"] + 1e-12
        assert res["max class risk"] <= claims["prosecutor_max"] + 1e-12
        results["releases"][run["name"]] = res

    print(f"\nLinkage attack, {args.patients:,} generated patients (success = share of targets re-identified)")
    head = f"{'release':<18}{'released':>9}{'classes':>8}{'k':>4}{'claimed avg':>12}{'expected':>10}" \
           f"{'measured':>10}{'journalist':>11}{'max risk':>9}{'claimed max':>12}{'naive':>8}{'naive uniq':>11}"
    print(head)
    for name, r in results["releases"].items():
        print(f"{name:<18}{r['released']:>9}{r['classes']:>8}{r['k']:>4}{r['claimed avg']:>12.4f}"
              f"{r['prosecutor expected']:>10.4f}{r['prosecutor measured']:>10.4f}{r['journalist']:>11.4f}"
              f"{r['max class risk']:>9.4f}{r['claimed max']:>12.4f}{r['naive prosecutor']:>8.3f}"
              f"{r['naive uniques']:>11.3f}")

    if not args.no_anonymeter:
        if not COMPARE_PY.exists():
            print(f"\nanonymeter skipped: {COMPARE_PY} not found (run benchmarks/compare_peers.py first)")
        else:
            with tempfile.TemporaryDirectory() as tmp:
                names = [n for run in runs for n in anonymeter_frames(run, Path(tmp))]
                t = time.perf_counter()
                proc = subprocess.run([str(COMPARE_PY), "-c", ANONYMETER, tmp, json.dumps(names)],
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    print("\nanonymeter failed:\n" + proc.stderr[-2000:])
                else:
                    results["anonymeter"] = json.loads(proc.stdout)
                    results["anonymeter seconds"] = time.perf_counter() - t
                    print(f"\nanonymeter 1.1 (risk, 95% CI; n_attacks = min(200, control size)), "
                          f"{results['anonymeter seconds']:.1f} s")
                    evals = list(next(iter(results["anonymeter"].values())))
                    print(f"{'data':<24}" + "".join(f"{e:>26}" for e in evals))
                    for name, res in results["anonymeter"].items():
                        cells = "".join(f"{res[e]['risk']:>8.3f} [{res[e]['ci'][0]:.3f},{res[e]['ci'][1]:.3f}]".rjust(26)
                                        for e in evals)
                        print(f"{name:<24}{cells}")
    out = CACHE / f"attacks-{args.patients}.json"
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
