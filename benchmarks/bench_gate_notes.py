"""The validation gate's direct-identifier check on a released notes column, with and
without its two narrowings (the second, normalised search only on the texts whose NFKC form
can matter, `validation/normal_forms.py`; long texts searched row by row instead of distinct
value first): CPU seconds, best of --repeat, and the same answer both ways.

    .venv/bin/python benchmarks/bench_release.py --patients 100000 --with-notes   # first
    .venv/bin/python benchmarks/bench_gate_notes.py --patients 100000

It reads the notes that `bench_release.py --with-notes` released (benchmarks/.cache/run-N) and
the input's direct identifiers of its extract, as the gate does.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"
DIRECT = ["name", "resident_id", "mobile", "address", "insurance_no"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    import deidflow.techniques.scrub  # noqa: F401  (imported before timing, as the gate does)
    from deidflow.validation import direct, expectations, normal_forms
    from deidflow.validation.known_identifiers import identifying_values
    from deidflow.validation.sets import Chunks, StringSet

    released = sorted((CACHE / f"run-{args.patients}" / "releases").glob("*/data/notes.csv"))
    if not released:
        raise SystemExit(f"no released notes: run bench_release.py --patients {args.patients} "
                         "--with-notes first")
    text_columns = pcsv.ConvertOptions(column_types={c: pa.string() for c in DIRECT})
    patients = pcsv.read_csv(CACHE / f"extract-{args.patients}" / "patients.csv",
                             convert_options=text_columns)
    known = StringSet(Chunks(lambda: (identifying_values(patients.column(c), common=5) for c in DIRECT)))
    known.substring_hits(pa.array(["x" * 40]))  # the window index, built once per gate run
    notes = pcsv.read_csv(released[-1]).column("text").cast(pa.large_string())
    column = pd.Series(pd.arrays.ArrowStringArray(notes))

    t = time.process_time()
    normal_forms.nfkc_tables()
    tables = time.process_time() - t

    def measure() -> tuple[float, dict]:
        best, out = None, None
        for _ in range(args.repeat):
            c = time.process_time()
            out = expectations.identifier_hits(column, known)
            c = time.process_time() - c
            best = c if best is None else min(best, c)
        return best, out

    narrow, free = direct.NARROW_BYTES, expectations.FREE_TEXT_BYTES
    direct.NARROW_BYTES = expectations.FREE_TEXT_BYTES = 1 << 62  # the full passes
    full, full_out = measure()
    direct.NARROW_BYTES, expectations.FREE_TEXT_BYTES = narrow, free
    narrowed, out = measure()
    assert out == full_out, (out, full_out)
    relevant = normal_forms.may_change(notes.combine_chunks(), known)

    print(f"\ngate, direct identifiers of one notes column: {len(notes):,} released notes, "
          f"{notes.nbytes / 2**20:.0f} MB, mean {pc.mean(pc.utf8_length(notes)).as_py():.0f} characters; "
          f"{len(known):,} known values")
    print(f"{'':<44}{'CPU s':>10}")
    print(f"{'full passes (NFKC + second search of all)':<44}{full:>10.2f}")
    print(f"{'narrowed (this code)':<44}{narrowed:>10.2f}")
    print(f"{'NFKC tables, once per process':<44}{tables:>10.2f}")
    print(f"notes needing the second search: {int(relevant.sum()):,} of {len(relevant):,}; "
          f"same answer: {out}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; "
          f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
