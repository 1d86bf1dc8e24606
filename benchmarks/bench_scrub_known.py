"""What a scrub worker spends on each subject's own known values: a fresh known table
(`scrub._known_table`, built per chunk) and the search with the known kind alone
(`scrub._detect`), CPU seconds, best and median of --repeat, on the release-like notes of
bench_scrub.py (`deidflow.samples`, ~260 characters, three notes per patient side by side)
with 0 and 20,000 staff names known for every note.

    .venv/bin/python benchmarks/bench_scrub_known.py [--notes 50000] [--repeat 5]

Run it on two trees (main and a branch) to compare; the machine's load average is printed
beside the table.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_scrub  # noqa: E402

from deidflow.techniques import scrub  # noqa: E402


def known_cost(n: int, repeat: int) -> pd.DataFrame:
    rows = []
    for label, notes, kw in bench_scrub.release_settings(n)[::2]:
        texts, sids = notes.tolist(), kw["subject_ids"].tolist()
        table_s, total_s = [], []
        for _ in range(repeat):
            gc.collect()
            c = time.process_time()
            table = scrub._known_table(kw["known"])
            t = time.process_time()
            scrub._detect(texts, ("known",), sids, None, table=table, all_ages=False)
            table_s.append(t - c)
            total_s.append(time.process_time() - c)
            del table
        total_s.sort()
        rows.append({"configuration": label, "notes": len(texts), "known rows": len(kw["known"]),
                     "table cpu s (best)": round(min(table_s), 3),
                     "table+search cpu s (best)": round(total_s[0], 3),
                     "table+search cpu s (median)": round(total_s[len(total_s) // 2], 3),
                     "µs/note (best)": round(1e6 * total_s[0] / len(texts), 1)})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notes", type=int, default=50000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    table = known_cost(args.notes, args.repeat)
    print(f"Known values per chunk (one process; load average {os.getloadavg()[0]:.1f})\n")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
