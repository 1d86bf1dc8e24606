"""prepare's work-file writer (`prepare._WorkWriter`): each staged table written whole on the
writer's thread, every write finished when the block is left, and a write's error raised on
the caller's thread (a run never goes on with a work file missing)."""

from __future__ import annotations

import importlib
import threading

import pandas as pd
import pyarrow as pa
import pytest

from deidflow.errors import InputError
from deidflow.io import read_work
prepare = importlib.import_module("deidflow.release.prepare")  # the package exports a function of that name


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"id": pd.Series([f"P{i}" for i in range(n)], dtype="string[pyarrow]"),
                         "v": list(range(n))})


def test_every_write_is_done_when_the_block_is_left(tmp_path):
    (tmp_path / "state.json").write_text("{}")
    frames = {f"t{i}": _frame(1000 + i) for i in range(4)}
    with prepare._WorkWriter() as writer:
        for name, frame in frames.items():
            writer.write(frame, tmp_path / "gated" / f"{name}.arrow")
    for name, frame in frames.items():
        back = read_work(tmp_path / "gated" / f"{name}.arrow")
        assert back["id"].tolist() == frame["id"].tolist() and back["v"].tolist() == frame["v"].tolist()
    assert not [t for t in threading.enumerate() if t.name.startswith("work-writer")]


def test_a_failed_write_is_raised_here(tmp_path):
    (tmp_path / "state.json").write_text("{}")
    with pytest.raises(InputError, match="climbs"):
        with prepare._WorkWriter() as writer:
            writer.write(_frame(3), tmp_path / ".." / "out.arrow")  # refused by io.confine
    with pytest.raises(InputError, match="climbs"):  # raised at the next write, too
        with prepare._WorkWriter() as writer:
            writer.write(_frame(3), tmp_path / ".." / "out.arrow")
            writer.write(_frame(3), tmp_path / "b.arrow")


def test_the_block_s_own_error_wins_and_the_write_still_finishes(tmp_path):
    (tmp_path / "state.json").write_text("{}")
    with pytest.raises(KeyError):
        with prepare._WorkWriter() as writer:
            writer.write(_frame(50_000), tmp_path / "a.arrow")
            raise KeyError("next table")
    assert pa.ipc.open_file(tmp_path / "a.arrow").read_all().num_rows == 50_000


def test_free_text_tables_are_staged_first():
    from types import SimpleNamespace

    from deidflow.policy import Role

    def table(*roles):
        return SimpleNamespace(columns={f"c{i}": SimpleNamespace(role=r) for i, r in enumerate(roles)})

    policy = SimpleNamespace(subject_table="patients", tables={
        "patients": table(Role.link_key), "visits": table(Role.link_key, Role.insensitive),
        "notes": table(Role.link_key, Role.free_text), "labs": table(Role.insensitive)})
    assert prepare._staging_order(policy) == ["notes", "visits", "labs"]
