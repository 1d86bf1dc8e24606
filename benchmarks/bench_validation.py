"""Validation-gate benchmark: the full suite the example policy generates for its subject
table, over a synthetic released table of 1,000,000 patients (target: under 5 s).

    .venv/bin/python benchmarks/bench_validation.py               # 1,000,000 rows
    .venv/bin/python benchmarks/bench_validation.py --rows 200000 --repeat 3
    .venv/bin/python benchmarks/bench_validation.py --release --repeat 3   # the real release
    .venv/bin/python benchmarks/bench_validation.py --release /copy/of/release/data

`--dask PATIENTS PARTITIONS` measures the validation stage of a Dask release the way the flow
runs it (`release.validate(work)`, in a child process: wall, CPU and peak RSS) on the output of
an earlier `bench_dask.py` run (benchmarks/.cache/dask-run-N/ and parts-N-P/), without running
that release again: a work directory is rebuilt under /tmp (the gated subject table's
direct-identifier columns from the input parts, i.e. every input subject's, and the released
pseudonyms as the consented ones) and the staged data is linked to the cached release's.

`--release` times `validate_release` on the full 1M-patient release that bench_release.py
leaves in benchmarks/.cache/run-1000000/releases/ (four tables, 14.4M rows; target: under
4 s): the released CSVs are read first (pyarrow, all columns text, pandas "str"), the input
identifiers are the direct-identifier values of the extract's patients.csv and the consented
pseudonyms the released patient_id values, both passed as pyarrow arrays.

The table has the shape the example policy (configs/release.yaml) releases for `patients`:
a 21-character keyed pseudonym, birth date generalised to month, sex, a 4-digit region code
and ethnicity, in classes of 20-80 patients (so every privacy check passes and runs to the
end). The run-time sets are realistic: the consented pseudonyms, and five identifier strings
per patient of the input (name, resident ID, mobile, address, insurance number).

Prints one row per expectation (that expectation alone in a suite, so shared metrics are
counted in each that needs them) and the full suite as `validate_release` runs it (shared
metrics once), with and without Data Docs. Rerunnable; nothing is written outside a temp dir.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from deidflow.identifiers import check_chars  # noqa: E402
from deidflow.policy import load_policy  # noqa: E402


def released_patients(n: int, seed: int = 1) -> pd.DataFrame:
    """Column-wise synthetic release: classes are assigned as blocks of 20-80 patients."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(20, 81, size=n // 20 + 1)
    keep = np.cumsum(sizes) <= n  # whole classes only; the remainder joins the last one
    sizes = sizes[keep]
    sizes[-1] += n - sizes.sum()
    cls = np.repeat(np.arange(len(sizes)), sizes)
    rng.shuffle(cls)
    hexs = np.frombuffer(rng.bytes(10 * n).hex().encode(), dtype="S20").astype(str)
    months = pd.period_range("1930-01", "2019-12", freq="M").astype(str).to_numpy()
    regions = np.array([f"{p}{c:02d}" for p in (11, 12, 31, 32, 33, 44, 51) for c in range(1, 21)])
    ethnic = np.array(["汉族", "少数民族"])
    # class j -> a fixed combination, so classes are exactly the blocks above
    j = np.arange(len(sizes))
    combo = pd.DataFrame({
        "birth_date": months[j % len(months)],
        "sex": np.where((j // len(months)) % 2 == 0, "F", "M"),
        "region_code": regions[(j // (2 * len(months))) % len(regions)],
        "ethnicity": ethnic[(j // (2 * len(months) * len(regions))) % 2],
    })
    out = combo.iloc[cls].reset_index(drop=True)
    out.insert(0, "patient_id", np.char.add("P", hexs))
    return out.astype("str")


def input_identifiers(n: int, seed: int = 2) -> list[str]:
    rng = np.random.default_rng(seed)
    surnames = list("王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗")
    given = list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华")
    names = (pd.Series(rng.choice(surnames, n)) + pd.Series(rng.choice(given, n))
             + pd.Series(rng.choice(given, n)))
    first17 = (pd.Series(rng.integers(110000, 660000, n).astype(str))
               + pd.Series(rng.integers(19300101, 20191231, n).astype(str))
               + pd.Series(rng.integers(100, 1000, n).astype(str)))
    digits = (np.frombuffer("".join(first17).encode("ascii"), dtype=np.uint8)
              .reshape(n, 17).astype(np.int64) - ord("0"))
    ids = first17 + pd.Series(check_chars(digits).astype(str))
    mobiles = pd.Series(rng.integers(13_000_000_000, 19_999_999_999, n).astype(str))
    addresses = "上海市黄浦区南京东路" + pd.Series(rng.integers(1, 999, n).astype(str)) + "号"
    insurance = "YB" + pd.Series(rng.integers(10**9, 10**10, n).astype(str))
    return [*names, *ids, *mobiles, *addresses, *insurance]


CACHE = REPO / "benchmarks" / ".cache"
IDENTIFIER_COLUMNS = ["name", "resident_id", "mobile", "address", "insurance_no", "postcode"]


def read_text_csv(path: Path, columns: list[str] | None = None):
    """A CSV as a pyarrow table with every column as text (as the release writes them)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    with path.open(encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").split(",")
    wanted = columns or header
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        include_columns=wanted, column_types={c: pa.string() for c in wanted},
        strings_can_be_null=True))


def bench_release(repeat: int, console: Console, data: Path | None = None) -> None:
    """validate_release on the real 1M-patient release (tables read before timing)."""
    import resource

    import pyarrow as pa

    from deidflow.validation.gate import validate_release

    run_dir = CACHE / "run-1000000"
    policy = load_policy(run_dir / "policy.yaml").policy
    if data is None:  # a published release (not a staging directory being written)
        complete = [d for d in sorted((run_dir / "releases").glob("*/data"))
                    if not d.parent.name.startswith(".")
                    and all((d / f"{t}.csv").is_file() for t in policy.tables)]
        if not complete:
            raise SystemExit(f"no release under {run_dir / 'releases'}; run "
                             "benchmarks/bench_release.py --patients 1000000 first")
        data = complete[-1]
    t = time.perf_counter()
    tables = {name: read_text_csv(data / f"{name}.csv").to_pandas() for name in policy.tables}
    extract = read_text_csv(Path(policy.tables[policy.subject_table].path),
                            [c for c in IDENTIFIER_COLUMNS
                             if c in policy.tables[policy.subject_table].columns])
    known = pa.concat_arrays([c.combine_chunks() for c in extract.columns]).drop_null()
    consented = pa.array(tables[policy.subject_table]["patient_id"].array.__arrow_array__()
                         .combine_chunks())
    rows = sum(len(df) for df in tables.values())
    console.print(f"{data}: {len(tables)} tables, {rows:,} rows, {len(known):,} "
                  f"input identifiers, {len(consented):,} consented pseudonyms (read in "
                  f"{time.perf_counter() - t:.1f} s)")
    table = Table(title=f"validate_release on the 1M-patient release (best of {repeat})")
    for col in ("run", "wall s", "cpu s", "success", "expectations"):
        table.add_column(col, justify="right" if col.endswith("s") else "left")
    with tempfile.TemporaryDirectory() as tmp:
        for docs in (False, True):
            sec, cpu, report = timed(lambda: validate_release(
                policy, tables, input_identifiers=known, consented_pseudonyms=consented,
                out_dir=Path(tmp) / f"run{docs}", data_docs=docs), repeat)
            table.add_row(f"validate_release{' + Data Docs' if docs else ''}", f"{sec:.2f}",
                          f"{cpu:.2f}", str(report.success), str(len(report.expectations)))
            if not report.success:
                console.print(f"[red]{report.explain()}")
    console.print(table)
    console.print(f"peak RSS of the process (tables included) "
                  f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB; cores: "
                  f"{os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; target: under 4 s")


DASK_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
t, c = time.perf_counter(), time.process_time()
from deidflow import release
out = release.validate(Path(sys.argv[1]))
print(json.dumps({"wall": time.perf_counter() - t, "cpu": time.process_time() - c,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "expectations": out["expectations"]}))
"""


def bench_dask(patients: int, partitions: int, console: Console) -> None:
    """release.validate on a cached Dask release's output (see the module docstring)."""
    import json
    import re
    import shutil
    import subprocess

    from deidflow.io import write_work
    from deidflow.policy import Role
    from deidflow.release import RunState

    run = CACHE / f"dask-run-{patients}"
    parts = CACHE / f"parts-{patients}-{partitions}"
    releases = [d for d in sorted((run / "releases").glob("*")) if d.is_dir()
                and not d.name.startswith(".") and (d / "data").is_dir()]
    if not releases or not (parts / ".done").exists():
        raise SystemExit(f"no cached Dask release under {run}; run benchmarks/bench_dask.py "
                         f"--patients {patients} --partitions {partitions} first")
    release_dir = releases[-1]
    root = Path(tempfile.gettempdir()) / f"valid-dask-{patients}-{partitions}"
    text = (run / "policy.yaml").read_text(encoding="utf-8")
    text = re.sub(r"(?m)^(  directory: ).*$", rf"\g<1>{root / 'releases'}", text)
    text = re.sub(r"(?m)^(  private_directory: ).*$", rf"\g<1>{root / 'private'}", text)
    root.mkdir(exist_ok=True)
    policy_path = root / "policy.yaml"
    policy_path.write_text(text, encoding="utf-8")
    policy = load_policy(policy_path).policy
    subject = policy.subject_table
    sid = policy.tables[subject].subject_column
    direct = [c for c, cs in policy.tables[subject].columns.items()
              if cs.role is Role.direct_identifier]
    work = root / "private" / "work" / "bench"
    t = time.perf_counter()
    if not (work / ".done").exists():  # the gated subject table's identifier columns, once
        shutil.rmtree(work, ignore_errors=True)
        for i, part in enumerate(sorted((parts / subject).glob("part-*.parquet"))):
            write_work(pd.read_parquet(part, columns=[sid, *direct]),
                       work / "gated" / subject / f"part-{i:05d}.arrow")
            released = pd.read_parquet(release_dir / "data" / subject / part.name, columns=[sid])
            out = work / "pseudonyms" / part.name
            out.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame({"subject_id": released[sid].astype("string"),
                          "pseudonym": released[sid].astype("string")}).to_parquet(out)
        (work / ".done").write_text("")
    stage = root / "releases" / f".staging-{release_dir.name}.bench"  # WorkDir.staging of run "bench"
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "data").mkdir(parents=True)
    for table in (release_dir / "data").iterdir():
        (stage / "data" / table.name).symlink_to(table)
    import hashlib

    policy_text = policy_path.read_text(encoding="utf-8")
    RunState(policy_path=str(policy_path), policy_text=policy_text,
             policy_sha256=hashlib.sha256(policy_text.encode("utf-8")).hexdigest(),
             run_id="bench", started_at="2026-01-01T00:00:00+00:00",
             as_of="2026-01-01T00:00:00+00:00", release_id=release_dir.name, engine="dask",
             partitions=partitions).save(work)
    console.print(f"work directory and staged data ready in {time.perf_counter() - t:.1f} s "
                  f"({root}); validating {release_dir.name} in a child process")
    env = os.environ | {"PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-c", DASK_CHILD, str(work)], capture_output=True,
                          text=True, cwd=REPO, env=env)
    shutil.rmtree(stage, ignore_errors=True)
    if proc.returncode != 0:
        console.print(proc.stderr[-4000:], markup=False)
        raise SystemExit("the validation stage failed")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    console.print(f"release.validate, Dask release of {patients:,} patients in {partitions} "
                  f"partitions: {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU, peak RSS "
                  f"{r['peak_mb']:,.0f} MB (imports included), {r['expectations']} expectations "
                  f"passed; cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """Best wall time and the CPU time of that run (the machine is shared: CPU seconds show
    the work, wall seconds what a user waits under the current load)."""
    best, cpu, out = float("inf"), 0.0, None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall = time.perf_counter() - t
        if wall < best:
            best, cpu = wall, time.process_time() - c
    return best, cpu, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--release", nargs="?", const="", default=None, metavar="DATA_DIR",
                    help="time validate_release on the real 1M-patient release instead (its "
                    "data/ directory; default: the one under benchmarks/.cache/run-1000000)")
    ap.add_argument("--dask", nargs=2, type=int, default=None, metavar=("PATIENTS", "PARTITIONS"),
                    help="measure release.validate on a cached Dask release (bench_dask.py's)")
    args = ap.parse_args()
    console = Console()
    if args.dask is not None:
        bench_dask(*args.dask, console)
        return
    if args.release is not None:
        bench_release(args.repeat, console, Path(args.release) if args.release else None)
        return

    t = time.perf_counter()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    from deidflow.validation import expectations as dx
    from deidflow.validation.gate import RESULT_FORMAT, _quiet_gx, validate_release
    from deidflow.validation.suite import RunSets, build_suites
    t_import = time.perf_counter() - t

    loaded = load_policy(REPO / "configs" / "release.yaml")
    policy = loaded.policy.model_copy(update={"tables": {"patients": loaded.policy.tables["patients"]}})
    t = time.perf_counter()
    df = released_patients(args.rows)
    known = input_identifiers(args.rows)
    consented = df["patient_id"].tolist()
    t_data = time.perf_counter() - t
    console.print(f"{len(df):,} rows, {len(known):,} input identifiers, {len(consented):,} "
                  f"consented pseudonyms (built in {t_data:.1f} s; GX import {t_import:.1f} s)")

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    bd = (ctx.data_sources.add_pandas("bench").add_dataframe_asset("patients")
          .add_batch_definition_whole_dataframe("all"))
    table = Table(title=f"Validation gate, {len(df):,} released patients (best of {args.repeat})")
    table.add_column("expectation")
    table.add_column("wall s", justify="right")
    table.add_column("cpu s", justify="right")
    table.add_column("success")
    with _quiet_gx(), dx.runtime_set(known) as kref, dx.runtime_set(consented) as cref:
        sets = RunSets(kref, len(known), cref, len(consented))
        suite = build_suites(policy, sets)["patients"]
        failed = []
        for i, exp in enumerate(suite.expectations):
            one = gx.ExpectationSuite(name=f"one-{i}", expectations=[exp])
            sec, cpu, res = timed(lambda: bd.get_batch(batch_parameters={"dataframe": df})
                             .validate(one, result_format=RESULT_FORMAT), args.repeat)
            label = exp.expectation_type + (f" ({exp.configuration.kwargs['column']})"
                                            if "column" in exp.configuration.kwargs else "")
            table.add_row(label, f"{sec:.2f}", f"{cpu:.2f}", str(res.success))
            if not res.success:
                failed.append(label)
    with tempfile.TemporaryDirectory() as tmp:
        for docs in (False, True):
            sec, cpu, report = timed(lambda: validate_release(
                policy, {"patients": df}, input_identifiers=known,
                consented_pseudonyms=consented, out_dir=Path(tmp) / f"run{docs}",
                data_docs=docs), args.repeat)
            table.add_row(f"[bold]full suite via validate_release{' + Data Docs' if docs else ''}"
                          f" ({len(report.expectations)} expectations)",
                          f"[bold]{sec:.2f}", f"[bold]{cpu:.2f}", str(report.success))
    console.print(table)
    if failed:
        console.print(f"[red]unexpected failures: {failed}")
    console.print(f"cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; target: full "
                  "suite under 5 s at 1,000,000 rows")


if __name__ == "__main__":
    main()
