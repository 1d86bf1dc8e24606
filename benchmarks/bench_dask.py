"""The release on the Dask engine at scale: peak memory of the whole process tree, time per stage.

    .venv/bin/python benchmarks/bench_dask.py                              # 100,000 patients
    .venv/bin/python benchmarks/bench_dask.py --patients 9999999 --partitions 40

Target (issue 8): 10,000,000 patients with the Dask engine within 8 GB of memory. (Patient ids
are P + 7 digits, so the generator's largest extract is 9,999,999 patients.) The CSV extract is
generated once into benchmarks/.cache/ (notes left out: they are not part of the target, and
scrubbing is measured by bench_scrub.py), converted once with `deidflow partition`, and its
consent file imported once into a cached registry; none of that is timed as the release.

The release runs as the Prefect flow with prefect-dask's DaskTaskRunner (a LocalCluster of
--workers processes, one thread each) in a child process; a sampler adds up the resident
memory of that child and all its descendants (the Dask scheduler and workers) every 0.2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE = HERE / ".cache"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))

CHILD = r"""
import json, sys
from flows.release import dask_release_flow
out = dask_release_flow(n_workers=int(sys.argv[2]))(policy_path=sys.argv[1], engine="dask")
print(json.dumps(out))
"""


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ppid, pages = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
        rss[int(d)] = pages * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total


def _chunks(path: Path, out: Path, lines: int):
    """`path` as consecutive files of at most `lines` data lines, each with the header."""
    out.mkdir(parents=True, exist_ok=True)
    with open(path, "rb") as fh:
        header = fh.readline()
        i = 0
        while True:
            block = [fh.readline() for _ in range(lines)]
            block = [b for b in block if b]
            if not block:
                return
            chunk = out / f"consents-{i:03d}.csv"
            chunk.write_bytes(header + b"".join(block))
            yield chunk
            i += 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeline", type=Path, default=None,
                    help="also write the sampled tree RSS as 'seconds MB' lines to this file")
    ap.add_argument("--prepare-only", action="store_true",
                    help="generate, partition and import the consent file, then stop")
    args = ap.parse_args()

    from bench_release import extract
    from integration.conftest import write_policy

    from deidflow.consent.importers import import_consent_file
    from deidflow.consent.registry import ConsentRegistry
    from deidflow.partitions import partition_extract
    from deidflow.policy import load_policy
    from deidflow.release import registry_url

    data = extract(args.patients)
    (data / "notes.csv").unlink(missing_ok=True)  # not part of the target; 2 GB per 1M patients
    root = CACHE / f"dask-run-{args.patients}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "keys").mkdir(parents=True)
    no_notes = {r"\n  notes:\n(    .*\n|\n|#.*\n)*?(?=\nlimits:)": "\n"}
    csv_policy = write_policy(root, data, edits=no_notes, name="csv.yaml")

    parts = CACHE / f"parts-{args.patients}-{args.partitions}"
    if not (parts / ".done").exists():
        shutil.rmtree(parts, ignore_errors=True)
        t = time.perf_counter()
        partition_extract(load_policy(csv_policy), parts, args.partitions)
        (parts / ".done").write_text("")
        print(f"partitioned into {args.partitions} parts in {time.perf_counter() - t:.1f} s -> {parts}")
    text = csv_policy.read_text(encoding="utf-8")
    text = re.sub(r"(\n    path: )\S+/(\w+)\.csv\n",
                  lambda m: f"{m.group(1)}{parts}/{m.group(2)}\n    format: parquet\n", text)
    policy = root / "policy.yaml"
    policy.write_text(text, encoding="utf-8")

    cached = CACHE / f"consent-{args.patients}.db"
    if cached.exists():
        shutil.copyfile(cached, root / "consent.db")
    else:
        t = time.perf_counter()
        registry = ConsentRegistry(registry_url(load_policy(policy)))
        new = 0
        # One import validates a whole file in memory; 10M patients' consents (2.5 GB) are
        # imported as files of 1M lines, in order (a withdrawal follows its grant).
        for chunk in _chunks(data / "consents.csv", root / "consent-chunks", 1_000_000):
            new += import_consent_file(registry, chunk).new
            chunk.unlink()
        import sqlite3

        con = sqlite3.connect(root / "consent.db")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        shutil.copyfile(root / "consent.db", cached)
        print(f"consent import (not part of the release): {new:,} events in {time.perf_counter() - t:.1f} s")

    if args.prepare_only:
        return
    env = os.environ | {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING",
                        "DASK_LOGGING__DISTRIBUTED": "error", "PYTHONPATH": str(REPO)}
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(policy), str(args.workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    peak = [0]
    timeline: list[tuple[float, int]] = []

    def sample() -> None:
        while proc.poll() is None:
            rss = tree_rss(proc.pid)
            peak[0] = max(peak[0], rss)
            timeline.append((time.perf_counter() - t, rss))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU of the child and of every descendant it waited for (the Dask workers, the scheduler).
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    sampler.join()
    if args.timeline:
        args.timeline.write_text("".join(f"{s:.1f} {b / 2**20:.0f}\n" for s, b in timeline))
    if proc.returncode != 0:
        print(err[-4000:])
        raise SystemExit("the Dask release failed")
    r = json.loads(out.strip().splitlines()[-1])
    print(f"\nDask engine release, {args.patients:,} patients, {args.partitions} partitions, "
          f"{args.workers} worker processes")
    print(f"{'stage':<44}{'seconds':>10}")
    for name, sec in r.get("timings", {}).items():
        print(f"{name:<44}{sec:>10.2f}")
    print(f"{'flow wall incl. Prefect and cluster start':<44}{wall:>10.2f}")
    print(f"{'CPU s, flow and the processes it waited for':<44}{cpu:>10.2f}")
    print(f"{'peak RSS, whole process tree (MB)':<44}{peak[0] / 2**20:>10.0f}")
    print(f"released {r['released']:,} subjects, k={r['k']}")


if __name__ == "__main__":
    main()
