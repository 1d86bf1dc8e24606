"""flchain: ages 50 to 101 (several distinct ages of 90 and over, which once crashed the
age hierarchy) and three sensitive outcomes, l held on each of them."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.datasets.helpers import (consent_log, import_consents, place_policy, recheck_k,
                                    recheck_l, released, setup_root)

QIS = ["age", "sex", "sample.yr"]
SENSITIVE = ["death", "mgus", "chapter"]


def _prepare(tmp_path, datasets, monkeypatch):
    raw = pd.read_csv(datasets / "survival_cohorts" / "flchain.csv")
    assert raw.loc[raw["age"] >= 90, "age"].nunique() >= 2  # what used to crash
    data = raw.assign(id=[f"F{i:05d}" for i in range(len(raw))])
    path = tmp_path / "flchain.csv"
    data.to_csv(path, index=False)
    setup_root(tmp_path, monkeypatch)
    policy = place_policy("flchain", tmp_path, {"flchain": path})
    log = consent_log(tmp_path / "consents.csv", data["id"], purpose="clinical-research",
                      recipient="survival-lab", categories=["demographics", "outcomes"])
    import_consents(policy, log)
    return policy, data


@pytest.fixture
def flchain(tmp_path, datasets, monkeypatch):
    return _prepare(tmp_path, datasets, monkeypatch)


@pytest.fixture(scope="module")
def flchain_release(tmp_path_factory, datasets):
    """The example policy's release of flchain, run once for the tests that only read it."""
    from deidflow.release import run_release

    with pytest.MonkeyPatch.context() as mp:
        policy, data = _prepare(tmp_path_factory.mktemp("flchain"), datasets, mp)
        return data, run_release(policy)


def test_flchain_release_rechecked(flchain_release):
    data, summary = flchain_release
    out = released(summary, "flchain")
    assert len(out) >= len(data) * 0.95
    assert recheck_k(out, "id", QIS) >= 6
    ls = recheck_l(out, QIS, SENSITIVE)
    assert min(ls.values()) >= 2, ls
    # every age of 90 and over is released as no more than "90+"
    old = out["age"].isin(["90+", "*"])
    assert old.sum() >= (data["age"] >= 90).sum() - (len(data) - len(out))
    assert not out["id"].isin(data["id"]).any()


def test_l_on_a_later_sensitive_column_is_met_by_the_search(flchain):
    """l is required on mgus too (third in the policy would once be ignored by the search and
    then fail the gate after the whole run): with l: 2 on sensitive columns the search meets
    it on each; the release has mgus both yes and no in every class."""
    from deidflow.release import run_release

    policy, _ = flchain
    text = policy.read_text().replace("death:      {role: sensitive", "death:      {role: insensitive")
    policy.write_text(text)
    summary = run_release(policy)
    out = released(summary, "flchain")
    ls = recheck_l(out, QIS, ["mgus", "chapter"])
    assert min(ls.values()) >= 2, ls


def test_types_survive_the_release(flchain_release):
    """Numbers stay numbers in Parquet; a generalised column is text, and the manifest says
    so for every column."""
    data, summary = flchain_release
    out = released(summary, "flchain")
    assert pd.api.types.is_integer_dtype(out["flc.grp"])
    assert pd.api.types.is_float_dtype(out["kappa"]) and pd.api.types.is_float_dtype(out["futime"])
    assert out["kappa"].dropna().isin(data["kappa"].dropna()).all()
    assert pd.api.types.is_string_dtype(out["age"]) and pd.api.types.is_string_dtype(out["death"])
    from deidflow.manifest.verify import read_record_unverified

    record = read_record_unverified(summary.release_dir)
    types = {c.column: c.params.get("released_type") for c in record.columns}
    assert types["flc.grp"] == "integer" and types["kappa"] == "number"
    assert "hierarchy's label" in types["age"]
    assert "released_type" in (summary.release_dir / "review.html").read_text()
