"""Adult and FARS with ARX's own hierarchy files, released whole and re-checked: on adult
the release reproduces ARX's optimum (506 records suppressed, 222 classes)."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.datasets.helpers import (consent_log, import_consents, place_policy, recheck_k,
                                    released, setup_root)

ADULT_QIS = ["sex", "age", "race", "marital-status", "education", "native-country",
             "workclass", "salary-class"]
FARS_QIS = ["iage", "irace", "ideathmon", "ideathday", "isex", "ihispanic", "istatenum",
            "iinjury"]


def _prepare(tmp_path, monkeypatch, name, source, categories):
    raw = pd.read_csv(source, sep=";", dtype=str, keep_default_na=False)
    data = raw.assign(id=[f"R{i:06d}" for i in range(len(raw))])
    path = tmp_path / f"{name}.csv"
    data.to_csv(path, index=False, sep=";")
    setup_root(tmp_path, monkeypatch)
    policy = place_policy(name, tmp_path, {name: path})
    log = consent_log(tmp_path / "consents.csv", data["id"], purpose="method-benchmark",
                      recipient="benchmark-lab", categories=categories)
    import_consents(policy, log)
    return policy, data


def test_adult_reproduces_arx(tmp_path, monkeypatch, datasets):
    from deidflow.release import run_release

    policy, data = _prepare(tmp_path, monkeypatch, "adult", datasets / "adult" / "adult.csv",
                            ["demographics", "employment"])
    summary = run_release(policy)
    out = released(summary, "adult")
    assert len(data) - len(out) == 506
    assert out.groupby(ADULT_QIS).ngroups == 222
    assert recheck_k(out, "id", ADULT_QIS) >= 5
    assert not out["id"].isin(data["id"]).any()
    # occupation released as it came in
    assert out["occupation"].isin(data["occupation"]).all()
    from deidflow.manifest.verify import read_record_unverified

    utility = read_record_unverified(summary.release_dir).risk.utility
    assert round(utility["precision_arx"], 3) == 0.573 and round(utility["precision"], 3) == 0.563
    assert utility["loss_aggregate"] == "geometric" and "definitions" in utility


@pytest.mark.slow
def test_fars_release_rechecked(tmp_path, monkeypatch, datasets):
    from deidflow.release import run_release

    fars = datasets / "arx_benchmark" / "fars"
    policy, data = _prepare(tmp_path, monkeypatch, "fars", fars / "fars_int.csv",
                            ["demographics", "injuries"])
    summary = run_release(policy)
    out = released(summary, "fars")
    assert len(out) >= len(data) * 0.98
    assert recheck_k(out, "id", FARS_QIS) >= 5
    assert not out["id"].isin(data["id"]).any()
