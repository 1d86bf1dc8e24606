"""Which of the input's direct-identifier values the gate looks for in the release.

The gate searches every released value for any identifier string of the input (names, IDs,
phones of the consented subjects; of the doctors and contacts the other patient tables name;
of the reference tables). A value that cannot identify anyone only produces false
alarms there: a dropped row-number column's "7" is found inside every number, and a value that
many subjects share points at none of them. Such values are left out of the known set; what
is left out is decided here only, and the rule is stated in the manifest's validation notes.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MIN_CHARS = 2  # one character names nobody
MIN_DIGITS = 6  # a bare number shorter than this is a count, a year or a row number


def identifying_values(values: pa.Array | pa.ChunkedArray, *, common: int) -> pa.Array:
    """`values` without nulls, values shorter than MIN_CHARS characters, bare numbers of
    fewer than MIN_DIGITS digits, and values held by `common` or more rows (subjects)."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.large_string())
    arr = arr.filter(pc.is_valid(arr))
    if not len(arr):
        return arr
    # one byte per character for the short ones that matter (digits, one letter): the byte
    # length first, and the digit test only on values short enough to be dropped for it
    length = np.asarray(pc.binary_length(arr))
    keep = length >= MIN_CHARS
    short = np.flatnonzero(length < MIN_DIGITS)
    if len(short):
        digits = np.asarray(pc.match_substring_regex(arr.take(pa.array(short)), r"^\s*[0-9]+\s*$"))
        keep[short[digits]] = False
        # a single character of several bytes (one CJK character) is still one character
        one = short[np.asarray(pc.utf8_length(arr.take(pa.array(short)))) < MIN_CHARS]
        keep[one] = False
    if common > 1:
        counts = pc.value_counts(arr)
        frequent = counts.field("values").filter(pc.greater_equal(counts.field("counts"), common))
        if len(frequent):
            keep &= ~np.asarray(pc.is_in(arr, value_set=frequent))
    return arr.filter(pa.array(keep))


def non_subject_values(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The distinct identifying values of a direct-identifier column of a patient table other
    than the subject table (an encounter's attending doctor, a contact, a guardian).

    Such a value names someone who is not the row's subject, so the subject table's row-count
    rule does not apply: a doctor in 5,000 encounters is one person, not a value 5,000 people
    share, and one column cannot tell whether the same name string is several people. Nor does
    a name's frequency among the patients say how many of the staff bear it. Left out: only
    what `identifying_values` leaves out for its length and shape."""
    return pc.unique(identifying_values(values, common=0))


def rule(common: int) -> str:
    """The rule in words, for the manifest and the review page."""
    return (f"input identifier values are looked for unless shorter than {MIN_CHARS} "
            f"characters, bare numbers of fewer than {MIN_DIGITS} digits, or shared by "
            f"{common} or more subjects (the subject table's); the other patient tables' "
            f"(doctors, contacts) are looked for however many rows hold them")
