"""What free-text notes may say about a patient, held to what the structured release says.

Two couplings between the scrubber (`techniques.scrub`) and the structured columns:

- Ages (`note_ages`): an age written in a note is cut to the band that the birth date's
  released level allows, so that a note never tells more about age than the birth-date
  column does. Birth date released to the day, month, quarter or year: ages in whole years
  stay (a year of birth gives the age in years); to the decade: ages in 10-year bands
  (66岁 → 60-69岁); as '*', or not released at all (dropped): ages removed. A generalisation
  this module cannot read as a span of years (another hierarchy) removes them: fail closed.
  The policy's own `params.ages` is a floor: the coarser of the two is applied.
- Date shift (`check_note_shift`, at policy load): a note's dates are moved by the structured
  dates' per-subject offset only if both use the same key scope and the same `max_days`
  (the offset is drawn from the key and the width). Otherwise one subject would carry two
  offsets, and the two shifted copies of one event would narrow the true date; the policy is
  refused with both keys named.
- Dates cut to the month or year (`note_dates`): a note with `dates: month` (or `year`, or
  `replace` generalise for dates) in a release whose structured dates are shifted has its dates shifted by the same per-subject
  offset first and then cut, so a note's month is the shifted date's month: the true month
  beside a shifted date would undo the shift. Chosen over refusing the policy because this
  module already derives a note's settings from the structured release (as for ages), and a
  month is what the policy asked for. The scope and days are the structured dates' (checked
  at load like a shifting note's; refused when they are ambiguous).
"""

from __future__ import annotations

from typing import Any

from deidflow.errors import PolicyError

DATE_SHIFT_DEFAULT_DAYS = 180  # techniques.dateshift's default max_days


# --- date shift ------------------------------------------------------------------------------


def _shift_settings(policy: Any) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, int]]]:
    """(policy key, scope, days) of every structured date_shift column and of every note
    column that shifts its dates."""
    from deidflow.techniques.dateshift import DEFAULT_SCOPE
    from deidflow.techniques.scrub import date_cut

    structured, notes = [], []
    for tname, table in policy.tables.items():
        for cname, col in table.columns.items():
            key = f"tables.{tname}.columns.{cname}.params"
            if col.technique == "date_shift":
                structured.append((f"{key}.max_days", str(col.params.get("scope", DEFAULT_SCOPE)),
                                   int(col.params.get("max_days", DATE_SHIFT_DEFAULT_DAYS))))
            elif col.technique == "scrub" and col.params.get("dates") == "shift":
                notes.append((f"{key}.shift_days", str(col.params.get("shift_scope", DEFAULT_SCOPE)),
                              int(col.params["shift_days"])))
            elif col.technique == "scrub" and date_cut(col.params) is not None:
                # shifted before the cut (note_dates); days taken from the structured dates
                # unless the policy states them (then they must agree)
                days = col.params.get("shift_days")
                notes.append((f"{key}.shift_days", str(col.params.get("shift_scope", DEFAULT_SCOPE)),
                              None if days is None else int(days)))
    return structured, notes


def check_note_shift(policy: Any, source: str) -> None:
    """Every date shifted for one subject moves by one offset: structured date columns of one
    scope share their max_days, and a note that shifts its dates uses the scope and the days
    of the structured dates. Refused otherwise, naming both keys and the fix."""
    structured, notes = _shift_settings(policy)
    by_scope: dict[str, tuple[str, int]] = {}
    for key, scope, days in structured:
        first = by_scope.setdefault(scope, (key, days))
        if first[1] != days:
            raise PolicyError(
                f"{key} is {days} but {first[0]} is {first[1]}: date columns of one shift scope "
                f"('{scope}') must share max_days, or one subject gets two offsets",
                file=source, key=key,
                fix=f"set max_days: {first[1]} on both (or give one its own params.scope)")
    for key, scope, days in notes:
        if not by_scope:
            continue  # no structured date is shifted: nothing for the note to agree with
        if scope not in by_scope:
            other = next(iter(by_scope))
            raise PolicyError(
                f"{key.rsplit('.', 1)[0]}.shift_scope is '{scope}', but the structured dates are "
                f"shifted in scope '{other}' ({by_scope[other][0]}): the note's dates would move "
                "by another offset than the same subject's structured dates",
                file=source, key=key.rsplit(".", 1)[0] + ".shift_scope",
                fix=f"set shift_scope: {other} (or leave it out if that is the default)")
        want_key, want = by_scope[scope]
        if days is not None and days != want:
            raise PolicyError(
                f"{key} is {days} but {want_key} is {want}: the note's dates and the structured "
                "dates would be moved by different offsets for one subject",
                file=source, key=key,
                fix=f"set shift_days: {want} (the structured dates' max_days)")


def note_dates(spec: Any, policy: Any) -> tuple[Any, dict[str, Any]]:
    """A scrub column that cuts its dates to the month or year, with the structured dates'
    shift (scope and days) added to its params when the release shifts structured dates, and
    what the manifest records of that choice. `check_note_shift` made sure at load that the
    scope is one of the structured dates' and the days, if stated, are theirs."""
    from deidflow.policy import Role
    from deidflow.techniques.dateshift import DEFAULT_SCOPE
    from deidflow.techniques.scrub import date_cut

    if spec.technique != "scrub" or spec.role is not Role.free_text:
        return spec, {}
    cut = date_cut(spec.params)
    if cut is None:
        return spec, {}
    structured, _ = _shift_settings(policy)
    scope = str(spec.params.get("shift_scope", DEFAULT_SCOPE))
    days = next((d for _, s, d in structured if s == scope), None)
    if days is None:
        return spec, {}  # no structured date is shifted: the true month is all there is
    params = {**spec.params, "shift_days": days, "shift_scope": scope}
    record = {"dates_shifted_before_cut": f"by the structured dates' per-subject offset (scope "
                                          f"'{scope}', up to {days} days), then cut to the {cut}"}
    return spec.model_copy(update={"params": params}), record


# --- ages --------------------------------------------------------------------------------------


REMOVE = "remove"
KEEP = "keep"


def _coarseness(setting: Any) -> float:
    if setting == KEEP:
        return 1.0  # an age in whole years
    if setting == REMOVE:
        return float("inf")
    return float(setting)


def birth_date_ages(policy: Any, levels: dict[str, int]) -> tuple[Any, str] | None:
    """The coarsest age a note may state given the birth date as released, and why (for the
    manifest); None when the policy names no birth-date column of the subject table."""
    bcol = policy.consent.birth_date_column
    columns = policy.tables[policy.subject_table].columns
    if bcol is None or bcol not in columns:
        return None
    spec = columns[bcol]
    if spec.technique == "drop":
        return REMOVE, f"birth date '{bcol}' is not released"
    if spec.technique != "generalise" or spec.hierarchy is None:
        return KEEP, f"birth date '{bcol}' is released to the day ({spec.technique})"
    h = spec.hierarchy
    level = int(levels.get(bcol, h.min_level))
    if h.kind != "date":
        if level == 0:
            return KEEP, f"birth date '{bcol}' is released as is"
        return REMOVE, f"birth date '{bcol}' is generalised by a {h.kind} hierarchy (level {level})"
    names = ["day", "month", "quarter", "year", *(["decade"] if h.decade else []), "*"]
    name = names[min(level, len(names) - 1)]
    if name == "*":
        return REMOVE, f"birth date '{bcol}' is released as '*' (level {level})"
    if name == "decade":
        return 10, f"birth date '{bcol}' is released to the decade (level {level})"
    return KEEP, f"birth date '{bcol}' is released to the {name} (level {level})"


def note_ages(spec: Any, policy: Any, levels: dict[str, int]) -> tuple[Any, dict[str, Any]]:
    """A scrub column's spec with its `ages` setting made at least as coarse as the birth
    date's released level allows, and what the manifest records of that choice."""
    from deidflow.policy import Role

    if spec.technique != "scrub" or spec.role is not Role.free_text:
        return spec, {}
    derived = birth_date_ages(policy, levels)
    if derived is None:
        return spec, {}
    allowed, why = derived
    own = spec.params.get("ages", KEEP)
    applied = own if _coarseness(own) >= _coarseness(allowed) else allowed
    record = {"ages_applied": applied, "ages_policy": own, "ages_from_birth_date": why}
    if applied == own:
        return spec, record
    return spec.model_copy(update={"params": {**spec.params, "ages": applied}}), record
