"""Sample-extract generator benchmark: wall time and peak memory of `generate_samples` for
10k and 100k patients (1M with --full), against calling Faker once per row.

    .venv/bin/python benchmarks/bench_samples.py                 # 10k, 100k
    .venv/bin/python benchmarks/bench_samples.py --full          # also 1,000,000
    .venv/bin/python benchmarks/bench_samples.py --sizes 20000 --baseline-rows 1000

Each size runs in its own Python process, so "peak RSS" is that process's high-water mark
(os.wait4), imports included, and one size's memory does not hide another's. The time is
measured inside the process around generate_samples only (all six tables, CSVs written),
as wall time and as CPU time (user+sys; steadier on a shared machine).

The baseline is the obvious per-row approach for the patients table alone (Faker zh_CN name,
resident ID, mobile, address, postcode, birth date per row, csv.writer): run on a small N and
extrapolated linearly. It is a lower bound for a per-row generator of the whole extract,
which would also compose encounters, diagnoses, labs, notes and consents row by row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

SRC = Path(__file__).resolve().parents[1] / "src"

_CHILD = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {src!r})
from deidflow.samples import generate_samples
t0, c0 = time.perf_counter(), time.process_time()
paths = generate_samples(Path({out!r}), {n})
elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({{"seconds": elapsed, "cpu": cpu, "bytes": sum(p.stat().st_size for p in paths.values()),
                   "rows": sum(sum(1 for _ in open(p, "rb")) - 1 for p in paths.values())}}))
"""

_BASELINE = """
import csv, json, sys, time, random
from faker import Faker
n = {n}
fake = Faker("zh_CN"); fake.seed_instance(1); random.seed(1)
t0, c0 = time.perf_counter(), time.process_time()
with open({out!r}, "w", newline="") as fh:
    w = csv.writer(fh)
    w.writerow(["patient_id", "name", "resident_id", "mobile", "birth_date", "sex", "region_code",
                "address", "postcode", "ethnicity", "insurance_no"])
    for i in range(n):
        male = random.random() < 0.49
        rid = fake.ssn(min_age=0, max_age=95, gender="M" if male else "F")
        name = fake.last_name() + (fake.first_name_male() if male else fake.first_name_female())
        w.writerow([f"P{{i + 1:07d}}", name, rid, fake.phone_number(),
                    f"{{rid[6:10]}}-{{rid[10:12]}}-{{rid[12:14]}}", "M" if male else "F", rid[:6],
                    fake.address(), fake.postcode(), random.choice(["汉族", "回族", "壮族"]),
                    fake.numerify("################")])
print(json.dumps({{"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0}}))
"""


def run_child(code: str) -> tuple[dict, float]:
    """Run code in a fresh interpreter; return its JSON line and its peak RSS in MiB."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed with exit {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--full", action="store_true",
                    help="also 1,000,000 patients (~40 CPU s, ~3.3 GB of CSV in the temp dir)")
    ap.add_argument("--baseline-rows", type=int, default=2_000, help="rows for the per-row Faker baseline")
    args = ap.parse_args()
    sizes = sorted(set(args.sizes + ([1_000_000] if args.full else [])))

    console = Console(width=160)
    with tempfile.TemporaryDirectory(prefix="bench_samples_") as tmp:
        base, base_rss = run_child(_BASELINE.format(n=args.baseline_rows, out=f"{tmp}/baseline.csv"))
        per_row = base["cpu"] / args.baseline_rows
        table = Table(title="deidflow samples: generate_samples (six tables) vs per-row Faker (patients only)")
        for col in ("patients", "rows written", "CSV MB", "wall s", "CPU s", "patients/CPU s", "peak RSS MiB",
                    "per-row Faker CPU s (extrapolated)", "speed-up (CPU)"):
            table.add_column(col, justify="right")
        for n in sizes:
            with console.status(f"generating {n:,} patients…"):
                got, rss = run_child(_CHILD.format(src=str(SRC), out=f"{tmp}/n{n}", n=n))
            faker_s = per_row * n
            table.add_row(f"{n:,}", f"{got['rows']:,}", f"{got['bytes'] / 1e6:,.0f}", f"{got['seconds']:.2f}",
                          f"{got['cpu']:.2f}", f"{n / got['cpu']:,.0f}", f"{rss:,.0f}", f"{faker_s:,.1f}",
                          f"{faker_s / got['cpu']:.1f}×")
            subprocess.run(["rm", "-rf", f"{tmp}/n{n}"], check=True)
        console.print(table)
        console.print(f"per-row Faker baseline: {args.baseline_rows:,} patient rows in {base['cpu']:.2f} CPU s "
                      f"({base['seconds']:.2f} s wall; {per_row * 1e6:,.0f} µs/row, peak RSS {base_rss:,.0f} MiB), "
                      "extrapolated linearly")
        console.print("CPU s = the process's user+sys time (time.process_time): on a shared machine wall time "
                      "includes waiting for a core; compare CPU with CPU.")


if __name__ == "__main__":
    main()
