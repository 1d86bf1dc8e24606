"""The full release on a generated extract: time per stage and peak memory.

    .venv/bin/python benchmarks/bench_release.py                 # 100,000 patients
    .venv/bin/python benchmarks/bench_release.py --patients 1000000

Target (issue 8): 1,000,000 patients (about 20 columns over four tables) in under 30 s wall on
2 cores, peak memory under 4 GB. The extract is generated once into benchmarks/.cache/ and reused.
The release runs in a child process so that its peak RSS is its own.

With --flow the same release also runs as the Prefect flow (flows/release.py), the way a
scheduled deployment runs it: against a standing Prefect server (started here first, not
timed, as `make server` would be running), so the figure is the flow's own wall time with
its task bookkeeping, not Prefect's server start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE = HERE / ".cache"

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from deidflow import release as st
times, peaks, cpu = {}, {}, {}
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
c = time.process_time(); t = time.perf_counter(); work = st.prepare(sys.argv[1]); times["prepare (read, derive, consent gate)"] = time.perf_counter() - t
peaks["prepare (read, derive, consent gate)"] = peak(); cpu["prepare (read, derive, consent gate)"] = time.process_time() - c
try:
    for name, fn in st.STAGES:
        c = time.process_time(); t = time.perf_counter(); fn(work); times[name] = time.perf_counter() - t
        peaks[name] = peak(); cpu[name] = time.process_time() - c
    s = st.summarise(work)
finally:
    st.discard(work)
print(json.dumps({"times": times, "peaks": peaks, "cpu": cpu, "released": s.released, "excluded": s.excluded_for_consent,
                  "suppressed": s.suppressed, "k": s.k, "levels": s.levels}))
"""


FLOW_CHILD = r"""
import json, resource, sys, time
t = time.perf_counter()
from flows.release import release_flow
out = release_flow(sys.argv[1])
print(json.dumps({"wall": time.perf_counter() - t, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "released": out["released"]}))
"""


def _server(home: Path):
    """A Prefect server on a free port; returns (process, api url)."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start",
                             "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    for _ in range(240):
        try:
            urllib.request.urlopen(api + "/health", timeout=1)
            return proc, api, env
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("the Prefect server did not start")
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the Prefect server did not answer within 120 s")


def run_flow(policy: Path, root: Path) -> dict:
    import signal

    proc, api, env = _server(root / "prefect-home")
    try:
        out = subprocess.run([sys.executable, "-c", FLOW_CHILD, str(policy)], capture_output=True,
                             text=True, cwd=REPO, env=env | {"PREFECT_API_URL": api})
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    if out.returncode != 0:
        print(out.stderr[-3000:])
        raise SystemExit("the release flow failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def extract(patients: int) -> Path:
    data = CACHE / f"extract-{patients}"
    if not (data / "consents.csv").exists():
        from deidflow.samples import generate_samples

        t = time.perf_counter()
        generate_samples(data, patients)
        print(f"generated {patients:,} patients in {time.perf_counter() - t:.1f} s -> {data}")
    return data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--with-notes", action="store_true",
                    help="also release the free-text notes (3 notes per patient; the scrubber "
                    "runs at ~6,000 notes/s per core, so this dominates: see bench_scrub.py)")
    ap.add_argument("--flow", action="store_true",
                    help="also time the Prefect release flow against a standing Prefect server")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    from integration.conftest import write_policy  # the example policy with paths moved

    from deidflow.consent.importers import import_consent_file
    from deidflow.consent.registry import ConsentRegistry
    from deidflow.policy import load_policy
    from deidflow.release import _registry_url

    data = extract(args.patients)
    root = CACHE / f"run-{args.patients}"
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    (root / "keys").mkdir(parents=True)
    # Issue 8's target is "about 20 columns over four tables": the structured tables. The
    # notes table (free text) is opt-in because scrubbing is measured by bench_scrub.py.
    edits = {} if args.with_notes else {r"\n  notes:\n(    .*\n|\n)*?(?=\nlimits:)": "\n"}
    policy = write_policy(root, data, edits=edits)
    cached = CACHE / f"consent-{args.patients}.db"
    t = time.perf_counter()
    if cached.exists():  # the import is not part of the release: reuse a registry made before
        shutil.copyfile(cached, root / "consent.db")
        new = "cached"
    else:
        res = import_consent_file(ConsentRegistry(_registry_url(load_policy(policy))), data / "consents.csv")
        new = f"{res.new:,}"
        import sqlite3

        con = sqlite3.connect(root / "consent.db")  # fold the WAL into the file before copying
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        shutil.copyfile(root / "consent.db", cached)
    t_import = time.perf_counter() - t
    rows = {p.stem: sum(1 for _ in open(p, "rb")) - 1 for p in data.glob("*.csv")}

    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, str(policy)], capture_output=True, text=True,
                         env=os.environ | {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    wall = time.perf_counter() - t
    if out.returncode != 0:
        print(out.stderr[-3000:])
        raise SystemExit("release failed")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    r = json.loads(out.stdout.strip().splitlines()[-1])

    print(f"\nfull release, {args.patients:,} patients; rows per table: "
          + ", ".join(f"{k} {v:,}" for k, v in sorted(rows.items())))
    print(f"consent import (not part of the release): {new} events in {t_import:.2f} s")
    print(f"{'stage':<40}{'wall s':>10}{'CPU s':>10}{'peak RSS so far (MB)':>24}")
    for name, sec in r["times"].items():
        print(f"{name:<40}{sec:>10.2f}{r['cpu'][name]:>10.2f}{r['peaks'][name]:>24.0f}")
    print(f"{'sum of stages':<40}{sum(r['times'].values()):>10.2f}{sum(r['cpu'].values()):>10.2f}")
    print(f"{'wall incl. interpreter start/imports':<40}{wall:>10.2f}")
    print(f"{'peak RSS (MB)':<40}{peak_mb:>10.0f}")
    print(f"released {r['released']:,}, excluded for consent {r['excluded']:,}, "
          f"suppressed {r['suppressed']:,}, k={r['k']}, levels {r['levels']}")
    if args.flow:
        for d in (root / "releases").iterdir():  # the same release again, as the flow
            shutil.rmtree(d)
        f = run_flow(policy, root)
        assert f["released"] == r["released"], (f, r)
        print(f"{'Prefect release flow, wall (server up)':<40}{f['wall']:>10.2f}")
        print(f"{'Prefect release flow, peak RSS (MB)':<40}{f['peak']:>10.0f}")


if __name__ == "__main__":
    main()
