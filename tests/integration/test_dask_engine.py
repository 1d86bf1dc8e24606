"""The Dask engine: the same extract, partitioned by subject and released on a LocalCluster
through prefect-dask, gives exactly the rows the in-memory engine gives."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from deidflow.policy import load_policy
from deidflow.release import released_table, run_release

from .conftest import write_policy

pytestmark = pytest.mark.slow


def _partitioned_policy(env, parts: int):
    from deidflow.partitions import partition_extract

    out = env.root / "parted"
    partition_extract(load_policy(env.policy), out, parts, block_bytes=1 << 16)  # many blocks per table
    text = env.policy.read_text(encoding="utf-8")
    text = re.sub(r"(\n    path: )\S+/(\w+)\.csv\n", lambda m: f"{m.group(1)}{out}/{m.group(2)}\n    format: parquet\n", text)
    path = env.root / "dask.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _rows(release_dir, engine: str, loaded) -> dict[str, pd.DataFrame]:
    """Each released table as text, rows sorted. The Dask engine writes Parquet, where kept
    numbers and dates keep their type (deidflow.column_types); the memory engine's CSV keeps
    the input's text: a typed column is compared as its text in the CSV would parse."""
    out = {}
    for name, spec in loaded.policy.tables.items():
        frame = released_table(release_dir, name, "csv", engine)
        for col in frame.columns:
            if pd.api.types.is_numeric_dtype(frame[col]):
                frame[col] = frame[col].map(lambda v: None if pd.isna(v) else repr(float(v)))
            elif engine != "dask" and frame[col].astype("string").str.fullmatch(
                    r"-?[0-9]+(\.[0-9]*)?").fillna(True).all() and frame[col].notna().any():
                frame[col] = pd.to_numeric(frame[col]).map(
                    lambda v: None if pd.isna(v) else repr(float(v)))
            elif pd.api.types.is_datetime64_any_dtype(frame[col]):
                frame[col] = frame[col].dt.strftime("%Y-%m-%d")
        frame = frame.astype("string")
        out[name] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    return out


def test_partitions_are_co_partitioned_by_subject(env):
    from deidflow.partitions import read_partition

    policy = _partitioned_policy(env, 3)
    loaded = load_policy(policy)
    total = 0
    for i in range(3):
        frames = read_partition(loaded, i)  # raises if a row's subject is in another part
        total += len(frames["patients"])
    assert total == len(pd.read_csv(env.data / "patients.csv"))


def test_dask_engine_matches_memory_engine(env, prefect_harness):
    from flows.release import dask_release_flow

    memory = run_release(env.policy)
    policy = _partitioned_policy(env, 3)
    result = dask_release_flow(n_workers=2)(policy_path=str(policy), engine="dask")
    from pathlib import Path

    dask_dir = Path(result["release_dir"])
    assert len(list((dask_dir / "data" / "patients").glob("part-*.parquet"))) == 3
    loaded = load_policy(env.policy)
    a = _rows(memory.release_dir, "memory", loaded)
    b = _rows(dask_dir, "dask", loaded)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_dtype=False, obj=name)
    assert result["released"] == memory.released and result["k"] == memory.k
    # aggregates are computed from the same released rows
    assert (memory.release_dir / "aggregates").is_dir()
    for p in (memory.release_dir / "aggregates").glob("*.csv"):
        assert p.read_bytes() == (dask_dir / "aggregates" / p.name).read_bytes()
