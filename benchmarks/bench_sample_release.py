"""Releasing the 2,000-patient sample (notes included) against importing its stack.

    .venv/bin/python benchmarks/bench_sample_release.py [--repeat 3]

Target (issue 16): the release costs at most a few times the import of its stack (deidflow,
Great Expectations, Prefect). Each run is a fresh process started from `/` through the
installed `deidflow` command, timed from spawn to exit, best of --repeat by wall time, with
the process's CPU time (user + sys of the child and its children) and peak RSS:

- the bare import of the stack (`deidflow.cli`, `great_expectations`, `prefect`,
  `flows.release`) in `python -c`;
- `deidflow release POLICY --no-prefect` (the in-process executor);
- `deidflow release POLICY` (the default Prefect path, its temporary local API included).

The sample's consents are imported first (not timed); each release goes to a fresh output
directory, so every run is a new release rather than the rerun short cut.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

IMPORT = "import deidflow.cli, great_expectations, prefect, flows.release"


def timed(cmd: list[str], env: dict) -> tuple[float, float, float]:
    """Wall, CPU (user+sys) and peak RSS (MB) of one fresh process run from `/`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd="/", env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        print(out.stdout[-2000:], out.stderr[-2000:])
        raise SystemExit(f"failed: {' '.join(cmd)}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu, after.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    from integration.conftest import write_policy

    from deidflow.consent.importers import import_consent_file
    from deidflow.consent.registry import ConsentRegistry
    from deidflow.policy import load_policy
    from deidflow.release import registry_url

    root = Path(tempfile.mkdtemp(prefix="bench-sample-"))
    try:
        (root / "keys").mkdir()
        policy = write_policy(root, REPO / "data_samples")
        import_consent_file(ConsentRegistry(registry_url(load_policy(policy))),
                            REPO / "data_samples" / "consents.csv")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env |= {"PYTHONPATH": str(REPO), "PATH": f"{BIN}:{env.get('PATH', '')}",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        runs = {
            "import of the stack": [sys.executable, "-c", IMPORT],
            "release --no-prefect": [str(BIN / "deidflow"), "release", str(policy), "--no-prefect"],
            "release (default, Prefect)": [str(BIN / "deidflow"), "release", str(policy)],
        }
        best: dict[str, tuple[float, float, float]] = {}
        load = os.getloadavg()[0]
        for _ in range(args.repeat):
            for name, cmd in runs.items():
                shutil.rmtree(root / "releases", ignore_errors=True)
                r = timed(cmd, env)
                if name not in best or r[0] < best[name][0]:
                    best[name] = r
        load = max(load, os.getloadavg()[0])
        base = best["import of the stack"]
        print(f"\nsample release (2,000 patients, notes included), best of {args.repeat}, from /")
        print(f"{'':<30}{'wall s':>9}{'CPU s':>9}{'× import (wall)':>17}{'× import (CPU)':>16}{'peak MB':>9}")
        for name, (wall, cpu, peak) in best.items():
            print(f"{name:<30}{wall:>9.2f}{cpu:>9.2f}{wall / base[0]:>17.1f}{cpu / base[1]:>16.1f}{peak:>9.0f}")
        print(f"load average (1 min), highest seen: {load:.2f}; {os.cpu_count()} CPUs")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
