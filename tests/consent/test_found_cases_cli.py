"""Issue 17's "Found" list, each case through the installed `deidflow` command run from a
directory that is not the project's, and every release checked subject by subject against the
reference evaluator at the release's own consent moment (never against fixed counts: the
sample's children turn 14 as the calendar moves on). Subjects for each case are chosen by the
reference as of the test's run, so the verdicts hold whatever day the tests run."""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

import reference
from cli_env import (
    Cli, check_against_reference, manifest, only_release, registry_events, released_subjects, write_json,
    write_policy, RELEASE,
)
from deidflow.identifiers import resident_id_check_char

CHINA = timezone(timedelta(hours=8))
HEADER = ("event_id,subject_id,event,recorded_at,grantor,guardian_name,guardian_id,separate,purposes,"
          "recipients,data_categories,cross_border,valid_from,valid_until,notice_version,form_sha256")
SHA = "ab" * 32


@pytest.fixture(scope="module")
def extract(tmp_path_factory) -> Path:
    from deidflow.samples import generate_samples

    data = tmp_path_factory.mktemp("extract17")
    generate_samples(data, 300, seed=7)
    return data


class Env:
    def __init__(self, root: Path, data: Path, **policy_edits) -> None:
        self.root, self.data = root, data
        self.url = f"sqlite:///{root / 'consent.db'}"
        self.policy = write_policy(root, data, registry=self.url, edits=policy_edits or None)
        cwd = root / "elsewhere"
        cwd.mkdir(exist_ok=True)
        self.cli = Cli(cwd)
        self.cli("consent", "import", data / "consents.csv", "--policy", self.policy)

    def patients(self) -> pd.DataFrame:
        return pd.read_csv(self.data / "patients.csv", dtype=str, keep_default_na=False)

    def verdicts_now(self) -> dict[str, str]:
        p = self.patients()
        return reference.evaluate(
            registry_events(self.url),
            [{"subject_id": s, "birth_date": b} for s, b in zip(p["patient_id"], p["birth_date"])],
            as_of=datetime.now(timezone.utc), **RELEASE)

    def allowed_adults(self, n: int) -> list[str]:
        """n subjects the reference allows now who are adults (18+) for a year to come."""
        v = self.verdicts_now()
        p = self.patients().set_index("patient_id")
        limit = date.today().replace(year=date.today().year - 20)
        out = [s for s, r in sorted(v.items()) if r == "allowed" and p.at[s, "birth_date"] < limit.isoformat()]
        assert len(out) >= n
        return out[:n]

    def csv(self, name: str, rows: list[str], header: str = HEADER) -> Path:
        path = self.root / name
        path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
        return path

    def release(self, *extra: str, prefect: bool = False, ok: bool | None = True):
        return self.cli("release", self.policy, *(() if prefect else ("--no-prefect",)), *extra, ok=ok)

    def events(self) -> int:
        return len(registry_events(self.url))


def _ago(**kw) -> str:
    return (datetime.now(CHINA) - timedelta(**kw)).isoformat(timespec="seconds")


def _withdrawal(eid: str, subject: str, when: str, consent_id: str | None = None) -> str:
    row = f"{eid},{subject},withdrawn,{when},,,,,,,,,,,,"
    return row if consent_id is None else row + f",{consent_id}"


def _grant(eid: str, subject: str, when: str, **over) -> str:
    f = dict(grantor="self", guardian_name="", guardian_id="", separate="true",
             purposes="ai-model-training", recipients="shanghai-ai-lab",
             data_categories="demographics;encounters;diagnoses;labs;notes", cross_border="false",
             valid_from="2024-01-01", valid_until="2035-12-31", notice_version="v2.1", form_sha256=SHA)
    f |= over
    return (f"{eid},{subject},{over.get('event', 'granted')},{when},{f['grantor']},{f['guardian_name']},"
            f"{f['guardian_id']},{f['separate']},{f['purposes']},{f['recipients']},{f['data_categories']},"
            f"{f['cross_border']},{f['valid_from']},{f['valid_until']},{f['notice_version']},{f['form_sha256']}")


def resident_id(born: date, region: str = "110105", serial: str = "123") -> str:
    first17 = f"{region}{born:%Y%m%d}{serial}"
    return first17 + resident_id_check_char(first17)


# --- a withdrawal that reaches the registry after a release, signed before it -----------------
@pytest.mark.parametrize("prefect", [False, True], ids=["no-prefect", "prefect"])
def test_a_late_arriving_withdrawal_is_found_by_withdrawn_and_recheck(tmp_path, extract, prefect):
    env = Env(tmp_path, extract)
    env.release(prefect=prefect)
    check_against_reference(env.root, env.url, extract)
    rel = only_release(env.root)
    as_of = datetime.fromisoformat(manifest(rel)["consent"]["as_of"].replace("Z", "+00:00"))
    subject = sorted(released_subjects(env.url, rel.name))[0]
    before = env.cli("consent", "withdrawn", "--policy", env.policy)
    assert "no released subject has withdrawn" in before.stdout
    # Signed an hour before the release's consent moment, imported after the release.
    signed = (as_of - timedelta(hours=1)).astimezone(CHINA).isoformat()
    env.cli("consent", "import", env.csv("late.csv", [_withdrawal("W-LATE", subject, signed)]),
            "--policy", env.policy)
    found = env.cli("consent", "withdrawn", "--policy", env.policy, "--subjects")
    assert rel.name in found.stdout.replace("\n", "") and subject in found.stdout
    env.cli("recheck", env.policy)
    notices = list((env.root / "releases" / "deletion-notices" / rel.name).glob("notice-*.json"))
    assert len(notices) == 1
    assert len(json.loads(notices[0].read_text(encoding="utf-8"))["pseudonyms"]) == 1


# --- --as-of: the run's consent moment is now -------------------------------------------------
def test_past_as_of_only_for_a_dry_run_future_refused(tmp_path, extract):
    env = Env(tmp_path, extract)
    past = env.release("--as-of", _ago(days=400), ok=False)
    assert "--as-of" in past.stdout + past.stderr and "dry run" in (past.stdout + past.stderr)
    future = env.release("--as-of", (datetime.now(CHINA) + timedelta(days=200)).isoformat(), ok=False)
    assert "future" in future.stdout + future.stderr
    assert not (env.root / "releases").exists() or not any((env.root / "releases").iterdir())
    dry = env.cli("consent", "check", "--policy", env.policy, "--as-of", _ago(days=400))
    assert "dry run" in dry.stdout and "would be released" in dry.stdout
    assert not (env.root / "releases").exists() or not any((env.root / "releases").iterdir())
    assert "no release" not in dry.stdout
    # Nothing was recorded either: no release, no release record.
    assert env.cli("consent", "withdrawn", "--policy", env.policy).returncode == 0


def test_a_time_without_zone_is_china_time_for_release_and_status(tmp_path, extract):
    env = Env(tmp_path, extract)
    naive = datetime.now(CHINA).replace(tzinfo=None, microsecond=0).isoformat()
    status = env.cli("consent", "status", "--policy", env.policy, "--as-of", naive)
    instant = datetime.fromisoformat(naive).replace(tzinfo=CHINA).astimezone(timezone.utc)
    assert instant.isoformat() in status.stdout
    env.release("--as-of", naive)  # read as UTC it would be 8 hours ahead: refused as future
    got = manifest(only_release(env.root))["consent"]["as_of"].replace("Z", "+00:00")
    assert datetime.fromisoformat(got) == instant
    check_against_reference(env.root, env.url, extract)


# --- ids compared byte for byte --------------------------------------------------------------
@pytest.mark.parametrize("prefect", [False, True], ids=["no-prefect", "prefect"])
def test_variant_spellings_of_a_withdrawal_take_effect_or_are_reported(tmp_path, extract, prefect):
    env = Env(tmp_path, extract)
    a, b, c = env.allowed_adults(3)
    full_width = a.translate(str.maketrans("0123456789P", "０１２３４５６７８９Ｐ"))
    when = _ago(days=1)
    env.cli("consent", "import", env.csv("variants.csv", [
        _withdrawal("W-A", full_width, when), _withdrawal("W-B", f"  {b} ", when),
        _withdrawal("W-C", c.lower(), when)]), "--policy", env.policy)
    env.release(prefect=prefect)
    want = check_against_reference(env.root, env.url, extract)
    assert want[a] == want[b] == "withdrawn"
    rel = only_release(env.root)
    assert not {a, b} & released_subjects(env.url, rel.name)
    # The lower-case id matches no subject: counted in the manifest and on the review page,
    # named in the private log.
    consent = manifest(rel)["consent"]
    assert consent["orphan_withdrawals"] == 1
    review = (rel / "review.html").read_text(encoding="utf-8")
    assert "Withdrawals matching no subject of the extract" in review
    logs = list((env.root / "private" / "exclusions").glob(f"{rel.name}*.csv"))
    assert logs, list((env.root / "private").rglob("*"))
    log = pd.read_csv(logs[0], dtype=str)
    assert c.lower() in set(log.loc[log["reason"] == "orphan_withdrawal", "subject_id"])


@pytest.mark.parametrize("bad", ["\ufeff{}", "{}\u200b", "{}\u0410"], ids=["bom", "zero-width", "latin+cyrillic"])
def test_an_id_with_invisible_or_mixed_script_characters_refuses_the_whole_file(tmp_path, extract, bad):
    env = Env(tmp_path, extract)
    a, b = env.allowed_adults(2)
    before = env.events()
    path = env.csv("bad.csv", [_withdrawal("W-OK", b, _ago(days=1)),
                               _withdrawal("W-BAD", bad.format(a), _ago(days=1))])
    res = env.cli("consent", "import", path, "--policy", env.policy, ok=False)
    text = res.stdout + res.stderr
    assert "bad.csv" in text and "row 3" in text and "subject_id" in text
    assert env.events() == before  # nothing imported, not even the good row


# --- a withdrawal ends only the consent id it names ------------------------------------------
def _fhir_deny(rid: str, subject: str, when: str, *, r5: bool, inactive: bool = False) -> dict:
    if r5:
        return {"resourceType": "Consent", "id": rid, "status": "active", "decision": "deny",
                "subject": {"reference": f"Patient/{subject}"}, "date": when,
                "provision": [{"purpose": [{"code": "ai-model-training"}]}]}
    return {"resourceType": "Consent", "id": rid, "status": "inactive" if inactive else "active",
            "patient": {"reference": f"Patient/{subject}"}, "dateTime": when,
            "provision": {"type": "permit" if inactive else "deny"}}


def test_a_withdrawal_in_any_format_or_consent_id_ends_every_consent_it_covers(tmp_path, extract):
    env = Env(tmp_path, extract)
    r4_deny, r4_inactive, r5_deny, second, amended = env.allowed_adults(5)
    when = _ago(days=2)
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": _fhir_deny("d1", r4_deny, when, r5=False)},
        {"resource": _fhir_deny("d2", r4_inactive, when, r5=False, inactive=True)}]}
    env.cli("consent", "import", write_json(env.root / "deny_r4.json", bundle), "--policy", env.policy)
    env.cli("consent", "import", write_json(env.root / "deny_r5.json", {
        "resourceType": "Bundle", "type": "collection",
        "entry": [{"resource": _fhir_deny("d3", r5_deny, when, r5=True)}]}), "--policy", env.policy)
    # A second grant under another consent id, then a CSV withdrawal naming no consent id.
    env.cli("consent", "import", env.csv("second.csv", [_grant("G2", second, _ago(days=3)) + ",K-2"],
                                         header=HEADER + ",consent_id"), "--policy", env.policy)
    # A withdrawal, then an amendment of the same consent: does not bring it back.
    env.cli("consent", "import", env.csv("wd.csv", [
        _withdrawal("W2", second, when), _withdrawal("W3", amended, _ago(days=2)),
        _grant("A3", amended, _ago(days=1), event="amended")]), "--policy", env.policy)
    # A consent id used for two subjects is refused.
    shared = env.csv("shared.csv", [_grant("S1", r4_deny, _ago(days=1)) + ",SHARED",
                                    _grant("S2", second, _ago(days=1)) + ",SHARED"],
                     header=HEADER + ",consent_id")
    res = env.cli("consent", "import", shared, "--policy", env.policy, ok=False)
    assert "consent_id" in res.stdout + res.stderr and "more than one subject" in res.stdout + res.stderr
    env.release()
    want = check_against_reference(env.root, env.url, extract)
    for s in (r4_deny, r4_inactive, r5_deny, second, amended):
        assert want[s] == "withdrawn", s
    assert not {r4_deny, r4_inactive, r5_deny, second, amended} & released_subjects(
        env.url, only_release(env.root).name)


# --- children under 14 ------------------------------------------------------------------------
def test_guardians_are_other_adults_and_the_birth_date_must_match_the_resident_id(tmp_path, extract):
    data = tmp_path / "extract"
    import shutil

    shutil.copytree(extract, data)
    patients = pd.read_csv(data / "patients.csv", dtype=str, keep_default_na=False)
    env = Env(tmp_path, data, **{r"(consent:\n)": r"\1  resident_id_column: resident_id\n"})
    child = patients.loc[patients["birth_date"] > (date.today() - timedelta(days=13 * 365)).isoformat()]
    assert len(child), "the sample has children"
    verdicts = env.verdicts_now()
    order = sorted(range(len(child)), key=lambda i: verdicts[child.iloc[i]["patient_id"]] == "allowed")
    kid = child.iloc[order[0]]
    before_kid = verdicts[kid["patient_id"]]
    when = _ago(days=1)
    own = env.csv("own.csv", [_grant("K1", kid["patient_id"], when, grantor="guardian",
                                     guardian_name="王芳", guardian_id=kid["resident_id"])])
    res = env.cli("consent", "import", own, "--policy", env.policy, ok=False)
    assert "own.csv" in res.stdout + res.stderr and "guardian_id" in res.stdout + res.stderr
    toddler = resident_id(date.today() - timedelta(days=400))
    res = env.cli("consent", "import", env.csv("toddler.csv", [
        _grant("K2", kid["patient_id"], when, grantor="guardian", guardian_name="王芳", guardian_id=toddler)]),
        "--policy", env.policy, ok=False)
    assert "under 18" in res.stdout + res.stderr
    # A FHIR performer that is a contained Patient (the child): the child signed for themself.
    consent = {"resourceType": "Consent", "id": "kid-self", "status": "active",
               "contained": [{"resourceType": "Patient", "id": "me",
                              "identifier": [{"value": kid["resident_id"]}], "name": [{"text": "孩子"}]}],
               "patient": {"reference": f"Patient/{kid['patient_id']}"}, "dateTime": when,
               "performer": [{"reference": "#me"}],
               "extension": [{"url": "https://deidflow.org/fhir/StructureDefinition/pipl-separate-consent",
                              "valueBoolean": True},
                             {"url": "https://deidflow.org/fhir/StructureDefinition/notice-version",
                              "valueString": "v2.1"},
                             {"url": "https://deidflow.org/fhir/StructureDefinition/form-sha256",
                              "valueString": SHA}],
               "provision": {"type": "permit", "purpose": [{"code": "ai-model-training"}],
                             "actor": [{"role": {"coding": [{"code": "IRCP"}]},
                                        "reference": {"reference": "Organization/shanghai-ai-lab"}}],
                             "class": [{"code": c} for c in RELEASE["categories"]]}}
    env.cli("consent", "import", write_json(env.root / "kid.json", consent), "--policy", env.policy)
    # A birth-date cell that contradicts the resident ID: that subject is excluded for it.
    adult = env.allowed_adults(1)[0]
    row = patients.index[patients["patient_id"] == adult][0]
    patients.loc[row, "birth_date"] = "1950-01-01" if patients.loc[row, "birth_date"] != "1950-01-01" else "1951-01-01"
    patients.to_csv(data / "patients.csv", index=False)
    env.release()
    want = check_against_reference(env.root, env.url, data, resident_ids=True)
    kid_events = [e for e in registry_events(env.url) if e["consent_id"] == "Consent/kid-self"]
    assert [e["grantor"] for e in kid_events] == ["self"]  # not a guardian
    if before_kid != "allowed":  # (a child the sample already lets through with a guardian stays so)
        assert want[kid["patient_id"]] == "minor_without_guardian"
    assert want[adult] == "birth_date_mismatch"
    assert manifest(only_release(env.root))["consent"]["excluded_by_reason"]["birth_date_mismatch"] == 1


# --- future-dated events, naive times, unknown ids --------------------------------------------
def test_future_dated_events_are_refused_and_unknown_ids_cannot_be_withdrawn(tmp_path, extract):
    env = Env(tmp_path, extract)
    a = env.allowed_adults(1)[0]
    before = env.events()
    tomorrow = (datetime.now(CHINA) + timedelta(days=1)).isoformat(timespec="seconds")
    res = env.cli("consent", "import", env.csv("future.csv", [_withdrawal("W-F", a, tomorrow)]),
                  "--policy", env.policy, ok=False)
    assert "future.csv" in res.stdout + res.stderr and "recorded_at" in res.stdout + res.stderr
    assert env.events() == before
    res = env.cli("consent", "withdraw", a.lower(), "--reason", "phone call", "--policy", env.policy, ok=False)
    assert a.lower() in res.stdout + res.stderr and a in res.stdout + res.stderr  # names the near match
    assert env.events() == before
    env.cli("consent", "withdraw", a.translate(str.maketrans("0123456789", "０１２３４５６７８９")),
            "--reason", "signed form at ward 3", "--policy", env.policy)
    assert env.verdicts_now()[a] == "withdrawn"


# --- birth_date_column: null ----------------------------------------------------------------
def test_no_minors_attestation_skips_the_age_rule_and_is_recorded(tmp_path, extract):
    env = Env(tmp_path, extract, **{r"(consent:\n)": r"\1  birth_date_column: null\n"})
    env.release()
    want = check_against_reference(env.root, env.url, extract, age_rule=False)
    assert "minor_without_guardian" not in want.values()
    rel = only_release(env.root)
    assert manifest(rel)["consent"]["no_minors_attested"] is True
    assert "the policy attests that the data holds no minors" in (rel / "review.html").read_text(encoding="utf-8")


def test_a_release_that_excludes_everyone_names_the_reasons(tmp_path, extract):
    env = Env(tmp_path, extract, **{r'purpose: "ai-model-training"': 'purpose: "marketing"'})
    res = env.release(ok=False)
    text = " ".join((res.stdout + res.stderr).split())
    assert "nothing to release" in text and "wrong_purpose:" in text and "no_consent:" in text


# --- a cohort that signed one form ------------------------------------------------------------
def test_import_cohort_records_one_grant_per_subject_with_the_forms_digest(tmp_path, extract):
    env = Env(tmp_path, extract)
    no_consent = sorted(s for s, r in env.verdicts_now().items() if r == "no_consent")
    adults = set(env.patients().loc[env.patients()["birth_date"] < "2000-01-01", "patient_id"])
    cohort = [s for s in no_consent if s in adults][:3]
    assert cohort
    ids = env.root / "cohort.csv"
    ids.write_text("subject_id\n" + "\n".join(cohort) + "\n", encoding="utf-8")
    form = env.root / "form.pdf"
    form.write_bytes(b"%PDF broad consent form v3")
    args = ("consent", "import-cohort", ids, "--form", form, "--purpose", "ai-model-training",
            "--recipient", "shanghai-ai-lab", "--categories", ",".join(RELEASE["categories"]),
            "--notice-version", "v3.0", "--policy", env.policy)
    first = env.cli(*args)
    assert f"{len(cohort)} grants read, {len(cohort)} new" in first.stdout
    assert f"{len(cohort)} grants read, 0 new" in env.cli(*args).stdout
    digest = hashlib.sha256(form.read_bytes()).hexdigest()
    mine = [e for e in registry_events(env.url) if e["subject_id"] in cohort]
    assert {e["form_sha256"] for e in mine if e["event_id"].startswith("cohort:")} == {digest}
    verdicts = env.verdicts_now()
    assert all(verdicts[s] == "allowed" for s in cohort)
