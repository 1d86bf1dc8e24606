"""Custom Great Expectations metrics and expectations of the release gate.

Each expectation answers one privacy question about a released table and reports numbers,
never values: k-anonymity, l-diversity, GB/T 42460 class and overall risk, no direct
identifiers left, consent coverage, and the schema the policy declares. Importing this module
registers them with GX (subclassing registers); `suite.load_suite` refuses a saved suite whose
types are not registered, because GX would otherwise drop them silently (ecosystem.md trap 3).

Risk is measured per subject (patient level): a subject with several rows counts once, so a
table of visits cannot pass k-anonymity by repeating one patient k times.

Sets that must not be written into a saved suite (the input's identifier strings, the
consented pseudonyms) are handed to the metrics through `runtime_set` (deidflow.validation.sets,
which does not import GX): the suite only stores an opaque reference, and a suite run without
the set present errors, which the gate treats as a failure (fail closed).
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar, Tuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from great_expectations.core.metric_domain_types import MetricDomainTypes
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import BatchExpectation
from great_expectations.expectations.metrics.metric_provider import metric_value
from great_expectations.expectations.metrics.table_metric_provider import TableMetricProvider

from deidflow import identifiers as ids
from deidflow.validation.sets import (  # noqa: F401  (also used from here by the gate and tests)
    Chunks, StringSet, _as_text, _bools, _chunks, _distinct_hashes, _first_bytes, _hash64,
    _last_bytes, _lookup, _rows_with_byte, _signatures, _single, distinct_values, runtime_set,
    runtime_size,
)


# --- shared computations (pure pandas, also used directly by tests) -----------------------------

SENSITIVE_MISSING = "\x00<missing>"  # a missing sensitive value counts as one more value


def per_subject(df: pd.DataFrame, subject_column: str, columns: list[str]) -> pd.DataFrame:
    """One row per subject with `columns` (the first row of a subject wins: quasi-identifiers
    are per-subject attributes and are identical across a subject's rows in the subject table)."""
    cols = [subject_column, *[c for c in columns if c != subject_column]]
    sub = df[cols]
    if not _is_unique(sub[subject_column]):
        sub = sub.drop_duplicates(subset=[subject_column])
    return sub


def _is_unique(values: pd.Series) -> bool:
    """pandas' is_unique, counted by pyarrow for text (pandas makes Python strings of an
    Arrow column first); a missing value counts once, as in pandas."""
    dtype = values.dtype
    arrow_text = (isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"
                  or isinstance(dtype, pd.ArrowDtype) and pa.types.is_string(dtype.pyarrow_dtype))
    if not arrow_text:
        return bool(values.is_unique)
    arr = _as_text(values)
    if arr.null_count <= 1 and _distinct_hashes(arr):
        return True
    return pc.count_distinct(arr, mode="all").as_py() == len(values)


def class_sizes(df: pd.DataFrame, subject_column: str, quasi_identifiers: list[str]) -> np.ndarray:
    """Sizes (in subjects) of the equivalence classes over the released quasi-identifiers."""
    sub = per_subject(df, subject_column, quasi_identifiers)
    if not len(sub):
        return np.zeros(0, dtype=np.int64)
    if not quasi_identifiers:
        return np.array([len(sub)], dtype=np.int64)
    sizes = sub.groupby(list(quasi_identifiers), sort=False, observed=True, dropna=False).size()
    return sizes.to_numpy(dtype=np.int64)


def class_size_summary(sizes: np.ndarray) -> dict[str, Any]:
    """GB/T 42460 Annex D quantities from class sizes f_j: θ_j = 1/f_j, Rb = max θ,
    Rc = the subject-weighted mean θ = J/n (the average re-identification probability of a
    subject, El Emam; the same definition as `deidflow.risk.metrics.Gb42460`, so that a
    generalisation the search accepts is not refused here for a different reading of 'mean
    θ_j'), `rc_classes` the class-weighted mean for reference, plus a histogram of sizes so
    that Ra can be computed for any τ."""
    if len(sizes) == 0:
        return {"n_subjects": 0, "n_classes": 0, "min_size": 0, "rb": 1.0, "rc": 1.0,
                "rc_classes": 1.0, "size_values": [], "size_counts": []}
    values, counts = np.unique(sizes, return_counts=True)
    theta = 1.0 / values
    n_subjects = int(sizes.sum())
    return {
        "n_subjects": n_subjects,
        "n_classes": int(len(sizes)),
        "min_size": int(values[0]),
        "rb": float(theta.max()),
        "rc": float(len(sizes) / n_subjects),
        "rc_classes": float((theta * counts).sum() / counts.sum()),
        "size_values": values.tolist(),
        "size_counts": counts.tolist(),
    }


def share_of_classes_above(summary: dict[str, Any], tau: float) -> float:
    """Ra: share of classes whose risk θ = 1/f exceeds τ (compared as f < 1/τ, so that
    τ = 1/20 and a class of 20 are not split by floating-point rounding)."""
    if summary["n_classes"] == 0:
        return 1.0
    values = np.asarray(summary["size_values"], dtype=float)
    counts = np.asarray(summary["size_counts"], dtype=np.int64)
    risky = counts[values < (1.0 / tau) - 1e-9].sum()
    return float(risky / summary["n_classes"])


def overall_risk(summary: dict[str, Any], tau: float, release_model: str, pr: float) -> float:
    """GB/T 42460 Annex D: R = 1 if any class is above τ, else Rb·pr (public) or Rc·pr."""
    if share_of_classes_above(summary, tau) > 0:
        return 1.0
    base = summary["rb"] if release_model == "public" else summary["rc"]
    return float(base * pr)


def l_diversity(
    df: pd.DataFrame,
    subject_column: str,
    quasi_identifiers: list[str],
    sensitive_column: str,
    variant: str,
    l: int,
    c: float,
) -> dict[str, Any]:
    """Per equivalence class, the diversity of the sensitive column counted in subjects
    (a subject with several rows of one value counts once). Returns the weakest class's value
    (distinct: number of values; entropy: exp(entropy), the effective number of values;
    recursive: the largest r1 / (r_l + … + r_m) ratio) and how many classes miss `l`."""
    qi = list(quasi_identifiers)
    frame = df[[subject_column, *qi, sensitive_column]]
    if not len(frame):
        return {"observed": 0.0, "n_classes": 0, "n_classes_below": 0}
    if qi:
        cls = frame.groupby(qi, sort=False, observed=True, dropna=False).ngroup().to_numpy()
    else:
        cls = np.zeros(len(frame), dtype=np.int64)
    # Subjects keep the class of their first row (quasi-identifiers are per subject).
    subj_codes, _ = pd.factorize(frame[subject_column])
    first_class = pd.Series(cls).groupby(subj_codes, sort=False).transform("first").to_numpy()
    sens = frame[sensitive_column].astype("string").fillna(SENSITIVE_MISSING)
    sens_codes, _ = pd.factorize(sens)
    pairs = pd.DataFrame({"cls": first_class, "subj": subj_codes, "s": sens_codes})
    pairs = pairs.drop_duplicates(["subj", "s"])
    counts = pairs.groupby(["cls", "s"], sort=False).size().rename("n").reset_index()
    n_classes = int(counts["cls"].nunique())
    if variant == "distinct":
        per_class = counts.groupby("cls", sort=False).size().astype(float)
        below = per_class < l
        observed = float(per_class.min())
    elif variant == "entropy":
        total = counts.groupby("cls", sort=False)["n"].transform("sum")
        p = counts["n"] / total
        ent = (-(p * np.log(p))).groupby(counts["cls"], sort=False).sum()
        per_class = np.exp(ent)
        below = per_class < l - 1e-9
        observed = float(per_class.min())
    elif variant == "recursive":
        ordered = counts.sort_values(["cls", "n"], ascending=[True, False], kind="stable")
        rank = ordered.groupby("cls", sort=False).cumcount()
        r1 = ordered.groupby("cls", sort=False)["n"].max()
        tail = ordered["n"].where(rank >= l - 1, 0).groupby(ordered["cls"], sort=False).sum()
        with np.errstate(divide="ignore"):
            ratio = r1 / tail.reindex(r1.index).astype(float)
        below = ~(r1 < c * tail.reindex(r1.index))
        observed = float(ratio.max())
    else:
        raise ValueError(f"unknown l-diversity variant {variant!r}")
    return {
        "observed": observed if math.isfinite(observed) else float("inf"),
        "n_classes": n_classes,
        "n_classes_below": int(np.asarray(below).sum()),
    }


def _string_like(s: pd.Series) -> bool:
    return (
        pd.api.types.is_string_dtype(s)
        or pd.api.types.is_object_dtype(s)
        or isinstance(s.dtype, pd.CategoricalDtype)
    )


# Whole-value shapes (RE2: pyarrow runs them over the column in C). A link key must hold a
# pseudonym, which is random hex: searching it for a phone-shaped digit run inside would flag
# about 800 of every million pseudonyms (measured), so such columns are checked for being an
# identifier as a whole, and for equalling an identifier of the input.
_WHOLE_ID18 = rf"[1-9](?:{ids.S}[0-9]){{16}}{ids.S}[0-9Xx]"
WHOLE_VALUE_PATTERNS: dict[str, str] = {
    "resident_id": rf"^\s*{_WHOLE_ID18}\s*$",  # any 18 digits: the check digit decides
    "mobile": ids.RECOGNISERS["mobile"].whole(),
    "email": ids.RECOGNISERS["email"].whole(),
}
# Kinds named in an explanation: the detectors the gate is about (the scrubber has more, e.g.
# dates and names, whose patterns would also match harmless generalised text).
REPORTED_KINDS = ("resident_id", "mobile", "email")
KIND_SAMPLE = 200  # detected values examined to name the kinds (a summary, not a count)


_NUMBER_START = np.zeros(256, dtype=bool)  # bytes a whole-value ID or mobile can start with
_NUMBER_START[np.frombuffer(b"0123456789+ \t\n\v\f\r", dtype=np.uint8)] = True
_SPACE = np.zeros(256, dtype=bool)
_SPACE[np.frombuffer(b" \t\n\v\f\r", dtype=np.uint8)] = True


def _distinct_texts(values: pd.Series, column: Any = None) -> tuple[pa.Array, Any] | None:
    """The distinct values of a column as text (the checks run once per distinct value), and
    a function counting the rows whose value is among those flagged by a boolean mask over
    them. None if the column cannot hold an identifier. `column`: `values` already as Arrow
    text, if made."""
    if pd.api.types.is_bool_dtype(values):
        return None
    if pd.api.types.is_integer_dtype(values):
        values = values[values.abs() >= 10_000_000]  # shorter integers cannot be a phone/ID
        codes, uniques = pd.factorize(values)
        texts = pa.array(np.asarray(uniques).astype(str), type=pa.string())
        return texts, lambda hit: int(hit[codes[codes >= 0]].sum())
    if not _string_like(values):
        return None
    column = _as_text(values) if column is None else column
    uniques = _single(pc.unique(column)).drop_null()

    def rows(hit: np.ndarray) -> int:
        found = pc.is_in(column, value_set=uniques.filter(pa.array(hit)))
        return int(pc.sum(found).as_py() or 0)

    return uniques, rows


FREE_TEXT_BYTES = 64  # mean bytes per value from which a text column is searched row by row


def _texts_to_search(values: pd.Series) -> tuple[pa.Array | pa.ChunkedArray, Any] | None:
    """The texts of a column to search and how to count rows from a mask over them (see
    `_distinct_texts`). A column of long texts (notes) is given as its non-missing values,
    each row searched: such values are (nearly) all distinct, so finding the distinct ones
    first saves no search and would copy the whole column (every note, at any size).
    Rows and kinds counted are the same either way (a text's verdict depends on the text)."""
    if (pd.api.types.is_bool_dtype(values) or isinstance(values.dtype, pd.CategoricalDtype)
            or not _string_like(values) or not len(values)):
        return _distinct_texts(values)
    column = _as_text(values)
    if column.nbytes < FREE_TEXT_BYTES * len(column):
        return _distinct_texts(values, column)
    if column.null_count:
        column = column.drop_null()
    return column, lambda hit: int(np.count_nonzero(hit))


def _fullmatch(texts: pa.Array | pa.ChunkedArray, pattern: str) -> np.ndarray:
    """RE2 (pyarrow) match of an anchored pattern; pandas' own fullmatch may fall back to
    Python's `re` per value."""
    return _bools(pc.match_substring_regex(texts, pattern))


def whole_value_identifiers(texts: Any, known: StringSet) -> np.ndarray:
    """True where the whole value (spaces and dashes aside) is a resident ID with a valid
    GB 11643 check character, a mainland mobile number, an e-mail address, or equals an
    identifier string of the input.

    The regexes run only on the values that could match (a first byte that can start an ID
    or a phone number, or an '@' somewhere), found from the Arrow buffers: a column of
    pseudonyms is a few byte reads per value, not three regex scans."""
    from deidflow.identifiers import valid_resident_ids

    arr = _as_text(texts)
    sigs = _signatures(arr)
    present = sigs != 0
    first = _first_bytes(sigs)
    hit = np.zeros(len(arr), dtype=bool)
    maybe = np.union1d(np.flatnonzero(present & _NUMBER_START[first]),
                       _rows_with_byte(arr, ord("@")))
    if maybe.size:
        sub = _single(arr.take(pa.array(maybe)))
        found = np.zeros(len(sub), dtype=bool)
        shaped = _fullmatch(sub, WHOLE_VALUE_PATTERNS["resident_id"])
        if shaped.any():
            digits = pc.utf8_upper(pc.replace_substring_regex(
                sub.filter(pa.array(shaped)), r"[\s\-]", ""))
            found[np.flatnonzero(shaped)] = valid_resident_ids(
                pd.Series(digits.to_pylist(), dtype="string")).to_numpy(bool)
        for kind in ("mobile", "email"):
            found |= _fullmatch(sub, WHOLE_VALUE_PATTERNS[kind])
        hit[maybe] = found
    if known:
        hit |= known._member_mask(arr, sigs)
        padded = np.flatnonzero(present & (_SPACE[first] | _SPACE[_last_bytes(sigs)]))
        if padded.size:  # " 13812345678" is the same identifier
            hit[padded] |= known.contains(pc.utf8_trim_whitespace(arr.take(pa.array(padded))))
    return hit


CONCURRENT_BYTES = 1 << 26  # a text column this large: detectors and known values side by side
SLICE_BYTES = 1 << 28  # ... on slices of this many bytes of text


def identifier_hits(values: pd.Series, known: StringSet, *, whole_value: bool = False,
                    allowed_formats: list[str] | None = None) -> dict[str, Any]:
    """How many rows of a column hold a direct identifier, and which kinds (never the values).

    Free text and other kept columns are searched once per distinct value: the scrubber's
    own generic detectors (`techniques.scrub.find_identifiers`: resident IDs, mobiles,
    e-mails anywhere in the value), then any identifier string of the input as a substring
    (`StringSet`). `whole_value` columns (pseudonymised link keys) go through
    `whole_value_identifiers` row by row in C: pseudonyms are (nearly) all distinct, so
    finding their distinct values first would only cost time.
    """
    if whole_value and _string_like(values) and not pd.api.types.is_bool_dtype(values):
        column = _as_text(values)
        hit = whole_value_identifiers(column, known)
        if not hit.any():
            return {"rows": 0, "kinds": []}
        found = column.take(pa.array(np.flatnonzero(hit)[:KIND_SAMPLE]))
        return {"rows": int(hit.sum()),
                "kinds": identifier_kinds(found, known, whole_value=True)}
    distinct = _texts_to_search(values)
    if distinct is None:
        return {"rows": 0, "kinds": []}
    texts, count_rows = distinct
    if not len(texts):
        return {"rows": 0, "kinds": []}
    from deidflow.validation import direct

    # the scrubber's generic detectors; the input's own strings by hashed windows
    if known and texts.nbytes >= CONCURRENT_BYTES:
        # a notes column: the second opinion on all texts beside the detectors, not after
        # them on the texts they left (the same answer: a text either holds or it does not),
        # a slice at a time: the detectors' Python strings and the normalised copy of the
        # texts are held per slice, so peak memory follows the slice, not the column
        # (figures in the README)
        from concurrent.futures import ThreadPoolExecutor

        step = max(1, int(len(texts) * SLICE_BYTES / max(texts.nbytes, 1)))
        hit = np.zeros(len(texts), dtype=bool)
        starts = range(0, len(texts), step)
        # the second opinion's slices one after another on its own thread, the detectors'
        # on this one: neither waits for the other at each slice's end (about a third of a
        # core was idle so at 1M patients), and each holds one slice at a time
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="second-opinion") as pool:
            seconds = [pool.submit(direct.known_hits, texts.slice(lo, step), known) for lo in starts]
            try:
                for lo in starts:
                    part = texts.slice(lo, step)
                    found = direct.detector_hits(part)  # find_identifiers on Arrow text
                    if allowed_formats:
                        found &= ~allowed_format_mask(part, allowed_formats)
                    hit[lo:lo + len(part)] = found
                for lo, second in zip(starts, seconds):
                    hit[lo:lo + step] |= second.result()
            finally:
                for second in seconds:  # a failure here: the slices not begun are not searched
                    second.cancel()
    else:
        hit = direct.detector_hits(texts)  # find_identifiers on Arrow text, a writable copy
        if allowed_formats:  # the policy's identifier_check: values of an allowed format whole
            hit &= ~allowed_format_mask(texts, allowed_formats)
        if known:
            # the second opinion (`validation.direct`): the input's own values, as written and
            # normalised, independent of the scrubber's recognisers
            rest = np.flatnonzero(~hit)
            hit[rest] = direct.known_hits(texts.take(pa.array(rest)), known)
    if not hit.any():
        return {"rows": 0, "kinds": []}
    found = texts.filter(pa.array(hit))
    by_kind = {k: count_rows(_spread(hit, m)) for k, m in direct.kinds_of(found, known).items()}
    return {"rows": count_rows(hit),
            "kinds": sorted(by_kind) or identifier_kinds(found, known, whole_value=whole_value),
            "by_kind": by_kind}


def _spread(hit: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A mask over the hit values, as a mask over all values."""
    out = np.zeros(len(hit), dtype=bool)
    out[np.flatnonzero(hit)[mask]] = True
    return out


def allowed_format_mask(texts: Any, formats: list[str]) -> np.ndarray:
    """Which texts match one of `formats` whole (policy `identifier_check.allow_formats`)."""
    import pyarrow.compute as pc

    arr = _single(_as_text(texts))
    out = np.zeros(len(arr), dtype=bool)
    for pattern in formats:
        m = pc.match_substring_regex(arr, f"^(?:{pattern})$")
        out |= np.asarray(m.fill_null(False), dtype=bool)
    return out


def identifier_kinds(texts: Any, known: StringSet, *, whole_value: bool = False,
                     ) -> list[str]:
    """Names of the identifier kinds among detected values (a sample of them: this names
    what was found for the explanation, the row count comes from the detector)."""
    sample = _single(_as_text(texts)).slice(0, KIND_SAMPLE)
    kinds: list[str] = []
    if whole_value:
        for name, pattern in WHOLE_VALUE_PATTERNS.items():
            if _fullmatch(sample, pattern).any():
                kinds.append(name)
        if known and known.contains(sample).any():
            kinds.append("known identifier of the input")
        return kinds or ["identifier"]
    from deidflow.techniques.scrub import IDENTIFIER_PATTERNS

    values = [t for t in sample.to_pylist() if isinstance(t, str)]
    for name in REPORTED_KINDS:
        pattern = IDENTIFIER_PATTERNS.get(name) if hasattr(IDENTIFIER_PATTERNS, "get") else None
        if pattern is None:
            continue
        regex = pattern if hasattr(pattern, "search") else re.compile(str(pattern))
        if any(regex.search(t) for t in values):
            kinds.append(name)
    if known and known.substring_hits(sample).any():
        kinds.append("known identifier of the input")
    return kinds or ["identifier"]


def _frame(execution_engine: PandasExecutionEngine, metric_domain_kwargs: dict) -> pd.DataFrame:
    df, _, _ = execution_engine.get_compute_domain(
        metric_domain_kwargs, domain_type=MetricDomainTypes.TABLE
    )
    return df


# --- metrics ------------------------------------------------------------------------------------


class SubjectClassSizes(TableMetricProvider):
    """Equivalence-class size summary over the quasi-identifiers, in subjects."""

    metric_name = "deidflow.subject_class_sizes"
    value_keys = ("subject_column", "quasi_identifiers")

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(cls, execution_engine, metric_domain_kwargs, metric_value_kwargs, metrics,
                runtime_configuration):
        df = _frame(execution_engine, metric_domain_kwargs)
        sizes = class_sizes(df, metric_value_kwargs["subject_column"],
                            list(metric_value_kwargs["quasi_identifiers"]))
        return class_size_summary(sizes)


class SensitiveDiversity(TableMetricProvider):
    metric_name = "deidflow.sensitive_diversity"
    value_keys = ("subject_column", "quasi_identifiers", "sensitive_column", "variant", "l", "c")

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(cls, execution_engine, metric_domain_kwargs, metric_value_kwargs, metrics,
                runtime_configuration):
        df = _frame(execution_engine, metric_domain_kwargs)
        v = metric_value_kwargs
        return l_diversity(df, v["subject_column"], list(v["quasi_identifiers"]),
                           v["sensitive_column"], v["variant"], int(v["l"]), float(v["c"]))


class DirectIdentifierHits(TableMetricProvider):
    """Identifier hits per column. Every column of the table is checked, not only those the
    policy releases: a column that should not be there is the likeliest place for one."""

    metric_name = "deidflow.direct_identifier_hits"
    value_keys = ("whole_value_columns", "known_identifiers_ref", "unchecked_columns",
                  "allowed_formats")

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(cls, execution_engine, metric_domain_kwargs, metric_value_kwargs, metrics,
                runtime_configuration):
        df = _frame(execution_engine, metric_domain_kwargs)
        known = _lookup(metric_value_kwargs["known_identifiers_ref"])
        whole = set(metric_value_kwargs["whole_value_columns"])
        # The policy's per-column identifier_check: columns turned off are not searched,
        # allowed formats are exempt from the generic detectors.
        unchecked = set(metric_value_kwargs.get("unchecked_columns") or [])
        formats = dict(metric_value_kwargs.get("allowed_formats") or {})
        columns = [(str(col), df[col]) for col in df.columns if str(col) not in unchecked]
        # Columns are independent and their work is Arrow and numpy calls, which release the
        # GIL: two at a time on two cores. What they import lazily is imported here first, so
        # the threads only call. The set's own lazy parts are idempotent.
        import deidflow.identifiers  # noqa: F401
        import deidflow.techniques.scrub  # noqa: F401
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="identifier-hits") as pool:
            hits = list(pool.map(
                lambda item: identifier_hits(item[1], known, whole_value=item[0] in whole,
                                             allowed_formats=formats.get(item[0])), columns))
        return {col: h for (col, _), h in zip(columns, hits)}


class UnconsentedSubjects(TableMetricProvider):
    metric_name = "deidflow.unconsented_subjects"
    value_keys = ("subject_column", "consented_ref")

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(cls, execution_engine, metric_domain_kwargs, metric_value_kwargs, metrics,
                runtime_configuration):
        df = _frame(execution_engine, metric_domain_kwargs)
        consented = _lookup(metric_value_kwargs["consented_ref"])
        # distinct subjects in C (a missing subject is one more, unconsented, subject)
        subjects = distinct_values(df[metric_value_kwargs["subject_column"]])
        missing = ~consented.contains(subjects)
        return {"n_subjects": int(len(subjects)), "n_unconsented": int(missing.sum())}


DTYPE_KINDS = ("string", "integer", "numeric", "datetime", "boolean", "any")


def dtype_kind_matches(s: pd.Series, kind: str) -> bool:
    t = pd.api.types
    return {
        "any": lambda: True,
        "string": lambda: _string_like(s) and not t.is_bool_dtype(s),
        "integer": lambda: t.is_integer_dtype(s) and not t.is_bool_dtype(s),
        "numeric": lambda: t.is_numeric_dtype(s) and not t.is_bool_dtype(s),
        "datetime": lambda: t.is_datetime64_any_dtype(s),
        "boolean": lambda: t.is_bool_dtype(s),
    }[kind]()


class PolicySchemaDifferences(TableMetricProvider):
    metric_name = "deidflow.policy_schema_differences"
    value_keys = ("columns", "dtypes")

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(cls, execution_engine, metric_domain_kwargs, metric_value_kwargs, metrics,
                runtime_configuration):
        df = _frame(execution_engine, metric_domain_kwargs)
        declared = list(metric_value_kwargs["columns"])
        dtypes = dict(metric_value_kwargs["dtypes"])
        present = [str(c) for c in df.columns]
        wrong = {
            c: str(df[c].dtype)
            for c, kind in dtypes.items()
            if c in df.columns and not dtype_kind_matches(df[c], kind)
        }
        return {
            "missing": [c for c in declared if c not in present],
            "unexpected": [c for c in present if c not in declared],
            "wrong_type": wrong,
        }


# --- expectations -------------------------------------------------------------------------------


class DeidflowExpectation(BatchExpectation):
    """Base of the gate's expectations: whole-table domain, and a one-line explanation of a
    result in plain language for the release report."""

    domain_keys: ClassVar[Tuple[str, ...]] = ("batch_id", "row_condition", "condition_parser")

    @classmethod
    def explain(cls, kwargs: dict[str, Any], result: dict[str, Any], success: bool) -> str:
        raise NotImplementedError


def _patients(n: int) -> str:
    return f"{n} patient{'s' if n != 1 else ''}"


class ExpectSubjectsToBeKAnonymous(DeidflowExpectation):
    """Every equivalence class over the released quasi-identifiers holds at least k subjects."""

    subject_column: str
    quasi_identifiers: list[str]
    k: int  # required, so it is persisted (trap 2)

    metric_dependencies: ClassVar[Tuple[str, ...]] = ("deidflow.subject_class_sizes",)
    success_keys: ClassVar[Tuple[str, ...]] = ("subject_column", "quasi_identifiers", "k")

    def _validate(self, metrics, runtime_configuration=None, execution_engine=None):
        m = metrics["deidflow.subject_class_sizes"]
        return {
            "success": m["n_classes"] > 0 and m["min_size"] >= self.k,
            "result": {"observed_value": m["min_size"], "n_classes": m["n_classes"],
                       "n_subjects": m["n_subjects"], "k": self.k},
        }

    @classmethod
    def explain(cls, kwargs, result, success):
        if result.get("n_subjects", 0) == 0:
            return "k-anonymity: the table has no subjects to release"
        verdict = "meets" if success else "is below"
        return (f"k-anonymity: smallest class has {_patients(result['observed_value'])}, "
                f"policy requires {kwargs['k']} ({verdict} k over "
                f"{', '.join(kwargs['quasi_identifiers']) or 'no quasi-identifiers'})")


class ExpectSensitiveColumnToBeLDiverse(DeidflowExpectation):
    """Every equivalence class has at least l well-represented sensitive values."""

    subject_column: str
    quasi_identifiers: list[str]
    sensitive_column: str
    l: int
    variant: str
    c: float  # recursive (c,l)-diversity only; stored as 0 otherwise

    metric_dependencies: ClassVar[Tuple[str, ...]] = ("deidflow.sensitive_diversity",)
    success_keys: ClassVar[Tuple[str, ...]] = (
        "subject_column", "quasi_identifiers", "sensitive_column", "l", "variant", "c")

    def _validate(self, metrics, runtime_configuration=None, execution_engine=None):
        m = metrics["deidflow.sensitive_diversity"]
        return {
            "success": m["n_classes"] > 0 and m["n_classes_below"] == 0,
            "result": {"observed_value": m["observed"], "n_classes": m["n_classes"],
                       "n_classes_below": m["n_classes_below"], "l": self.l,
                       "variant": self.variant},
        }

    @classmethod
    def explain(cls, kwargs, result, success):
        col, l_req, variant = kwargs["sensitive_column"], kwargs["l"], kwargs["variant"]
        below, n = result.get("n_classes_below", 0), result.get("n_classes", 0)
        obs = result.get("observed_value")
        if variant == "recursive":
            what = f"largest r1/(r_l+…+r_m) is {obs:.3g}, policy requires below c={kwargs['c']}"
        elif variant == "entropy":
            what = f"lowest entropy-l is {obs:.3g}, policy requires {l_req}"
        else:
            what = f"least diverse class has {obs:g} distinct value(s), policy requires {l_req}"
        return f"l-diversity ({variant}) of '{col}': {what}; {below} of {n} classes fall short"


class ExpectMaxClassRiskToBeAtMost(DeidflowExpectation):
    """GB/T 42460 Rb: the largest class risk θ = 1/f is at most the policy's threshold."""

    subject_column: str
    quasi_identifiers: list[str]
    max_class_risk: float

    metric_dependencies: ClassVar[Tuple[str, ...]] = ("deidflow.subject_class_sizes",)
    success_keys: ClassVar[Tuple[str, ...]] = (
        "subject_column", "quasi_identifiers", "max_class_risk")

    def _validate(self, metrics, runtime_configuration=None, execution_engine=None):
        m = metrics["deidflow.subject_class_sizes"]
        ra = share_of_classes_above(m, self.max_class_risk)
        return {
            "success": m["n_classes"] > 0 and ra == 0,
            "result": {"observed_value": m["rb"], "share_of_classes_above": ra,
                       "n_classes": m["n_classes"], "max_class_risk": self.max_class_risk},
        }

    @classmethod
    def explain(cls, kwargs, result, success):
        rb = result.get("observed_value", 1.0)
        return (f"class risk: highest class risk is {rb:.4g} (a class of "
                f"{_patients(round(1 / rb)) if rb else 'no'}), threshold {kwargs['max_class_risk']:.4g}; "
                f"{result.get('share_of_classes_above', 0):.2%} of classes are above it")


class ExpectOverallRiskToBeAtMost(DeidflowExpectation):
    """GB/T 42460 Annex D overall risk R at most `max_overall_risk` (R = 1 if Ra > 0)."""

    subject_column: str
    quasi_identifiers: list[str]
    release_model: str
    tau: float
    pr: float
    max_overall_risk: float

    metric_dependencies: ClassVar[Tuple[str, ...]] = ("deidflow.subject_class_sizes",)
    success_keys: ClassVar[Tuple[str, ...]] = (
        "subject_column", "quasi_identifiers", "release_model", "tau", "pr", "max_overall_risk")

    def _validate(self, metrics, runtime_configuration=None, execution_engine=None):
        m = metrics["deidflow.subject_class_sizes"]
        r = overall_risk(m, self.tau, self.release_model, self.pr) if m["n_classes"] else 1.0
        return {
            "success": r <= self.max_overall_risk + 1e-12,
            "result": {"observed_value": r, "ra": share_of_classes_above(m, self.tau),
                       "rb": m["rb"], "rc": m["rc"], "release_model": self.release_model,
                       "max_overall_risk": self.max_overall_risk},
        }

    @classmethod
    def explain(cls, kwargs, result, success):
        r = result.get("observed_value", 1.0)
        why = ""
        if result.get("ra", 0) > 0:
            why = f" because {result['ra']:.2%} of classes exceed τ={kwargs['tau']:.4g}"
        return (f"overall risk ({kwargs['release_model']} release): R = {r:.4g}{why}, "
                f"policy allows at most {kwargs['max_overall_risk']:.4g}")


class ExpectNoDirectIdentifiers(DeidflowExpectation):
    """No value of any column holds a resident ID, mobile, e-mail or an identifier string of
    the input (names, IDs, phones), using the scrubber's detectors; pseudonymised link keys
    (`whole_value_columns`) must not *be* one."""

    whole_value_columns: list[str]
    known_identifiers_ref: str
    n_known_identifiers: int
    table: str = ""  # named in the explanation
    unchecked_columns: list[str] = []  # policy identifier_check: off
    allowed_formats: dict[str, list[str]] = {}  # policy identifier_check.allow_formats

    metric_dependencies: ClassVar[Tuple[str, ...]] = ("deidflow.direct_identifier_hits",)
    success_keys: ClassVar[Tuple[str, ...]] = (
        "whole_value_columns", "known_identifiers_ref", "n_known_identifiers",
        "unchecked_columns", "allowed_formats")

    def _validate(self, metrics, runtime_configuration=None, execution_engine=None):
        hits = metrics["deidflow.direct_identifier_hits"]
        bad = {c: h for c, h in hits.items() if h["rows"]}
        return {
            "success": not bad,
            "result": {"observed_value": int(sum(h["rows"] for h in bad.values())),
                       "columns_with_identifiers": bad,
                       "columns_checked": len(hits)},
        }

    @classmethod
    def explain(cls, kwargs, result, success):
        bad = result.get("columns_with_identifiers") or {}
        if not bad:
            return (f"direct identifiers: none found in {result.get('columns_checked', 0)} "
                    "column(s) checked")
        from deidflow.validation import direct

        where = f" in table '{kwargs['table']}'" if kwargs.get("table") else ""
        return (f"direct identifiers left{where}: "
                + "; ".join(direct.explain(c, h) for c, h in bad.items())
                + " (fix the scrubbing settings, not the risk limits; if these are ordinary "
                "values that look like identifiers, set the column's identifier_check: "
                "{allow_formats: [...], reason: ...} or {check: off, reason: ...} in the policy)")


class ExpectSubjectsToBeConsented(DeidflowExpectation):
    """Every released subject's pseudonym maps to a consented subject of the snapshot."""

    subject_column: str
    consented_ref: str
    n_consented: int

    metric_dependencies: ClassVar[Tuple[str, ...]] = ("deidflow.unconsented_subjects",)
    success_keys: ClassVar[Tuple[str, ...]] = ("subject_column", "consented_ref", "n_consented")

    def _validate(self, metrics, runtime_configuration=None, execution_engine=None):
        m = metrics["deidflow.unconsented_subjects"]
        return {
            "success": m["n_unconsented"] == 0,
            "result": {"observed_value": m["n_unconsented"], "n_subjects": m["n_subjects"]},
        }

    @classmethod
    def explain(cls, kwargs, result, success):
        return (f"consent coverage: {result.get('observed_value', '?')} of "
                f"{result.get('n_subjects', '?')} released subject(s) in '{kwargs['subject_column']}' "
                f"have no consent in the snapshot")


class ExpectTableToMatchPolicySchema(DeidflowExpectation):
    """The table has exactly the columns the policy releases, with the declared kinds."""

    columns: list[str]
    dtypes: dict[str, str]

    metric_dependencies: ClassVar[Tuple[str, ...]] = ("deidflow.policy_schema_differences",)
    success_keys: ClassVar[Tuple[str, ...]] = ("columns", "dtypes")

    def _validate(self, metrics, runtime_configuration=None, execution_engine=None):
        d = metrics["deidflow.policy_schema_differences"]
        n = len(d["missing"]) + len(d["unexpected"]) + len(d["wrong_type"])
        return {"success": n == 0, "result": {"observed_value": n, **d}}

    @classmethod
    def explain(cls, kwargs, result, success):
        if success:
            return f"schema: the {len(kwargs['columns'])} column(s) the policy releases, as declared"
        parts = []
        if result.get("missing"):
            parts.append(f"missing {result['missing']}")
        if result.get("unexpected"):
            parts.append(f"not released by the policy {result['unexpected']}")
        if result.get("wrong_type"):
            wt = ", ".join(f"'{c}' is {t}, policy declares {kwargs['dtypes'][c]}"
                           for c, t in result["wrong_type"].items())
            parts.append(wt)
        return "schema differs from the policy: " + "; ".join(parts)


CUSTOM_EXPECTATIONS: tuple[type[DeidflowExpectation], ...] = (
    ExpectSubjectsToBeKAnonymous,
    ExpectSensitiveColumnToBeLDiverse,
    ExpectMaxClassRiskToBeAtMost,
    ExpectOverallRiskToBeAtMost,
    ExpectNoDirectIdentifiers,
    ExpectSubjectsToBeConsented,
    ExpectTableToMatchPolicySchema,
)
