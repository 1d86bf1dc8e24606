"""The whole-record search (quasi-identifiers in patients and encounters) on the real
diabetes 130-US hospitals data: 71,518 patients, 101,766 encounters.

    .venv/bin/python benchmarks/bench_record.py

Target (issue 19): the patient-level search within seconds. Prints the time to encode the
seven quasi-identifiers, the search itself (nodes evaluated of the lattice), and what it
reached: k over the whole record, suppressed patients, levels, and k per table alone.
The configuration is configs/datasets/diabetes.yaml's (k=5, 5 % suppression, controlled).
"""

from __future__ import annotations

import resource

import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = REPO.parent / "shared" / "datasets" / "diabetes_130_us_hospitals" / "diabetic_data.csv"


def main() -> None:
    import pandas as pd

    from deidflow.policy import load_policy
    from deidflow.risk.limits import RiskLimits


    t = time.perf_counter()
    data = pd.read_csv(DATA, dtype=str, keep_default_na=False, engine="pyarrow")
    patients = data.drop_duplicates("patient_nbr")[["patient_nbr", "race", "gender"]]
    encounters = data.drop(columns=["race", "gender"])
    t_read = time.perf_counter() - t
    loaded = load_policy(REPO / "configs" / "datasets" / "diabetes.yaml")
    policy = loaded.policy
    limits = RiskLimits.from_policy(policy)
    qi_columns = {"patients": ["race", "gender"],
                  "encounters": ["age", "admission_type_id", "admission_source_id",
                                 "medical_specialty", "time_in_hospital"]}
    frames = {"patients": patients, "encounters": encounters}
    from deidflow.whole_record import _search as stage_search

    runs, cpus = [], []
    for _ in range(3):
        t, c = time.perf_counter(), time.process_time()
        res = stage_search(frames, {"patients": "patient_nbr", "encounters": "patient_nbr"},
                           "patients", qi_columns, limits, policy, loaded.base_dir)
        runs.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"diabetes: {len(patients):,} patients, {len(encounters):,} encounters; "
          f"read+split {t_read:.2f} s")
    print(f"{'':<34}{'value':>12}")
    print(f"{'encode + search, best of 3 (s)':<34}{min(runs):>12.2f}")
    print(f"{'runs (s)':<34}{'  '.join(f'{r:.2f}' for r in runs):>12}")
    print(f"{'CPU s of each run':<34}{'  '.join(f'{r:.2f}' for r in cpus):>12}")
    import os

    print(f"{'load average (1 min)':<34}{os.getloadavg()[0]:>12.2f}")
    print(f"{'nodes evaluated':<34}{res.nodes_evaluated:>12,}")
    print(f"{'k over the whole record':<34}{res.after.k:>12}")
    print(f"{'k before':<34}{res.before.k:>12}")
    print(f"{'suppressed patients':<34}{len(res.suppressed_subjects):>12,}")
    print(f"{'peak RSS (MB)':<34}{peak:>12.0f}")
    print("levels:", res.levels)
    print("per table alone:", {t: (m['k'], m['classes']) for t, m in res.by_table.items()})


if __name__ == "__main__":
    main()
