"""NHEFS: a real survey extract with a dropped row-number column (whose small integers once
matched inside every released number) and two sensitive outcomes."""

from __future__ import annotations

import pandas as pd

from tests.datasets.helpers import (consent_log, identifiers_left, import_consents,
                                    place_policy, recheck_k, recheck_l, released, setup_root)

QIS = ["sex", "age", "race", "education", "marital", "ht", "wt71"]


def test_nhefs_release_rechecked(tmp_path, monkeypatch, datasets):
    from deidflow.release import run_release

    source = datasets / "nhefs" / "nhefs.csv"
    data = pd.read_csv(source, dtype=str)
    setup_root(tmp_path, monkeypatch)
    policy = place_policy("nhefs", tmp_path, {"nhefs": source})
    import_consents(policy, consent_log(tmp_path / "consents.csv", data["seqn"],
                                        purpose="clinical-research", recipient="causal-lab",
                                        categories=["survey"]))
    summary = run_release(policy)
    out = released(summary, "nhefs")
    assert len(out) >= len(data) * 0.95
    assert "id" not in out and "birthplace" not in out
    assert recheck_k(out, "seqn", QIS) >= 5
    assert min(recheck_l(out, QIS, ["death", "qsmk"]).values()) >= 2
    assert not out["seqn"].isin(data["seqn"]).any()
    assert identifiers_left({"nhefs": out}, data["seqn"]) == 0
    assert pd.api.types.is_float_dtype(out["sbp"])  # numbers stay numbers
