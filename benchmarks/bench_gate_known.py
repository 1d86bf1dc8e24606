"""The validation gate's known values: how long one read of them takes, and how many come from
the patient tables other than the subject table (attending doctors, contacts), on a run that
`bench_release.py` set up (its extract, registry and policy under benchmarks/.cache/run-N/):

    .venv/bin/python benchmarks/bench_release.py --patients 20000 --with-notes
    .venv/bin/python benchmarks/bench_gate_known.py --patients 20000

Prepares the run (read, derive, consent gate), then reads the known values as the gate's
StringSet does when it builds its hashes (best of --repeat), and lists per other table and
column the distinct values looked for (`validation.known_identifiers.non_subject_values`) and
how many of them the subject table's row-count rule would have left out, being also the
value of k or more subjects (on the generated extract, whose Faker name pool is small, most).
"""

from __future__ import annotations

import argparse
import importlib
import os
import time
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    policy = CACHE / f"run-{args.patients}" / "policy.yaml"
    if not policy.is_file():
        raise SystemExit(f"{policy} not found: run bench_release.py --patients {args.patients} first")

    import pyarrow as pa
    import pyarrow.compute as pc

    from deidflow import release as st
    from deidflow.policy import Role
    from deidflow.release.state import RunState, pinned_policy
    from deidflow.release.workdir import WorkDir
    from deidflow.io import as_arrow, read_work
    from deidflow.validation.known_identifiers import non_subject_values

    validate = importlib.import_module("deidflow.release.validate")
    work = st.prepare(str(policy))
    try:
        state = RunState.load(work)
        loaded = pinned_policy(state)
        wd = WorkDir.of(work, state)
        policy_ = loaded.policy
        k = policy_.limits.k
        best = None
        for _ in range(args.repeat):
            c, t = time.process_time(), time.perf_counter()
            n = sum(len(a) for a in validate.known_values(wd, loaded).read())
            r = (time.perf_counter() - t, time.process_time() - c)
            best = r if best is None or r[1] < best[1] else best
        # the subject table's values k or more subjects share (left out of its own search)
        shared = []
        for part in wd.gated_parts(policy_.subject_table):
            frame = read_work(part)
            for col, cs in policy_.tables[policy_.subject_table].columns.items():
                if cs.role is Role.direct_identifier and col in frame:
                    counts = pc.value_counts(as_arrow(frame[col]).combine_chunks().cast(pa.large_string()))
                    shared.append(counts.field("values").filter(pc.greater_equal(counts.field("counts"), k)))
        shared = pa.concat_arrays(shared) if shared else pa.array([], pa.large_string())
        c, t = time.process_time(), time.perf_counter()
        others = validate.non_subject_known_values(wd, loaded)
        other = (time.perf_counter() - t, time.process_time() - c)
        print(f"\nthe gate's known values, {args.patients:,} patients "
              f"(load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
        print(f"{'':48s} {'values':>10s} {'wall s':>8s} {'CPU s':>8s}")
        print(f"{'one read of every known value (best)':48s} {n:>10,} {best[0]:8.3f} {best[1]:8.3f}")
        print(f"{'  the other patient tables (distinct)':48s} {sum(len(a) for a in others):>10,} "
              f"{other[0]:8.3f} {other[1]:8.3f}")
        for name, tspec in policy_.tables.items():
            if name == policy_.subject_table:
                continue
            for col, cs in tspec.columns.items():
                if cs.role is not Role.direct_identifier:
                    continue
                values = pa.chunked_array([as_arrow(read_work(p, [col])[col]) for p in wd.gated_parts(name)])
                looked = non_subject_values(values)
                common = int(pc.sum(pc.is_in(looked.cast(pa.large_string()), value_set=shared)).as_py() or 0)
                print(f"    {name}.{col}: {len(looked):,} distinct values looked for, {common:,} of "
                      f"them also the value of {k} or more subjects")
    finally:
        st.discard(work)


if __name__ == "__main__":
    main()
