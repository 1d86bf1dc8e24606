"""The utility section (issue 21): what it costs on a 1M-patient release, and what it shows on
adult and diabetes under the default and the classification-aware search.

    .venv/bin/python benchmarks/bench_utility.py --patients 1000000   # cost (run under flock)
    .venv/bin/python benchmarks/bench_utility.py --datasets           # README's model table

Cost: the sample extract (generated once into benchmarks/.cache/, as bench_release.py does)
released with the example policy plus `utility: {target: sex}` (the subject table of the
sample has no clinical outcome; sex is predicted from birth date, region and ethnicity only to
time the model), notes left out. The stages run in a child process; the utility evidence is
computed inside the validate stage and timed there (its own clock, `seconds`), and the reading
of the consented subject table it needs is timed apart. Target: under 10 s at 1M patients.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE = HERE / ".cache"

CHILD = r"""
import json, sys, time
import deidflow.cli
from deidflow import release as st
work = st.prepare(sys.argv[1])
times = {}
try:
    for step in st.plan_for("memory"):
        if step.name == "publish":
            break
        t = time.perf_counter()
        st.run_step(step, work, lambda fn, parts: [fn(work, i) for i in parts])
        times[step.name] = time.perf_counter() - t
    state = st.RunState.load(work)
    t = time.perf_counter()
    from deidflow.release.workdir import WorkDir
    WorkDir.of(work, state).gated_table(st.pinned_policy(state).policy.subject_table)
    read = time.perf_counter() - t
    u = state.utility_evidence.model_dump(mode="json")
    print(json.dumps({"times": times, "read_consented": read, "utility": u["seconds"],
                      "model": (u.get("model") or {}).get("seconds"), "subjects": u["subjects"],
                      "train": (u.get("model") or {}).get("train_original"),
                      "test": (u.get("model") or {}).get("test")}))
finally:
    st.discard(work)
"""


def cost(patients: int) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(HERE))
    import shutil

    from bench_release import extract
    from integration.conftest import write_policy

    from deidflow.consent.importers import import_consent_file
    from deidflow.consent.registry import ConsentRegistry, registry_url_for
    from deidflow.policy import load_policy

    data = extract(patients)
    root = CACHE / f"utility-run-{patients}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "keys").mkdir(parents=True)
    edits = {r"\n  notes:\n(    .*\n|\n|#.*\n)*?(?=\nlimits:)": "\n",
             r"\nlimits:": "\nutility: {target: sex, task: classification}\n\nlimits:"}
    policy = write_policy(root, data, edits=edits)
    cached = CACHE / f"consent-{patients}.db"
    if cached.exists():
        shutil.copyfile(cached, root / "consent.db")
    else:
        import_consent_file(ConsentRegistry(registry_url_for(load_policy(policy))), data / "consents.csv")
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, str(policy)], capture_output=True, text=True,
                         env=os.environ | {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    wall = time.perf_counter() - t
    if out.returncode != 0:
        print(out.stderr[-3000:])
        raise SystemExit("release failed")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\nutility evidence on a {patients:,}-patient release ({r['subjects']:,} consented subjects)")
    print(f"{'what':<52}{'wall s':>10}")
    for name, sec in r["times"].items():
        print(f"{'stage ' + name:<52}{sec:>10.2f}")
    print(f"{'  of which utility evidence (inside validate)':<52}{r['utility']:>10.2f}")
    print(f"{'    of which the model comparison':<52}{r['model'] or 0:>10.2f}")
    print(f"{'  reading the consented subject table for it':<52}{r['read_consented']:>10.2f}")
    print(f"{'utility section added (evidence + read)':<52}{r['utility'] + r['read_consented']:>10.2f}"
          f"   target < 10 s")
    print(f"model sample: {r['train']:,} training + {r['test']:,} held-out subjects; "
          f"child wall incl. imports {wall:.1f} s")


def datasets() -> None:
    sys.path.insert(0, str(REPO / "tests"))
    import shutil
    import tempfile

    from utility.helpers import prepare_dataset

    from deidflow.manifest.verify import read_record_unverified
    from deidflow.release import run_release

    rows = []
    for name in ("adult", "diabetes"):
        for loss in ("default", "classification"):
            root = Path(tempfile.mkdtemp(prefix=f"utility-{name}-"))
            try:
                policy = prepare_dataset(name, root, search_loss=loss)
                t = time.perf_counter()
                s = run_release(policy)
                wall = time.perf_counter() - t
                rec = read_record_unverified(s.release_dir)
                u, m = rec.utility_evidence, rec.utility_evidence.model
                flagged = sum(x.flag_suppression or x.flag_loss for g in u.groups for x in g.groups)
                rows.append((name, loss, s.levels, s.suppressed, u.subjects, m, u.seconds, wall, flagged,
                             rec.risk.utility.get("classification_loss")))
            finally:
                shutil.rmtree(root, ignore_errors=True)
    print(f"\n{'dataset':<10}{'search':<16}{'suppr.':>8}{'acc orig':>10}{'acc rel':>10}{'Δacc':>9}"
          f"{'AUC orig':>10}{'AUC rel':>10}{'ΔAUC':>9}{'flags':>7}{'util s':>8}{'release s':>10}")
    for name, loss, levels, sup, n, m, us, wall, flagged, cm in rows:
        print(f"{name:<10}{loss:<16}{sup:>8,}{m.accuracy_original:>10.4f}{m.accuracy_released:>10.4f}"
              f"{m.accuracy_difference:>+9.4f}{m.auc_original:>10.4f}{m.auc_released:>10.4f}"
              f"{m.auc_difference:>+9.4f}{flagged:>7}{us:>8.2f}{wall:>10.1f}")
    for name, loss, levels, *_rest in rows:
        print(f"{name} / {loss}: levels {levels}; classification loss {_rest[-1]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--datasets", action="store_true", help="adult and diabetes, both search losses")
    args = ap.parse_args()
    if args.datasets:
        datasets()
    else:
        cost(args.patients)


if __name__ == "__main__":
    main()
