"""Custom Great Expectations metrics and expectations of the release gate.

Each expectation answers one privacy question about a released table and reports numbers,
never values: k-anonymity, l-diversity, GB/T 42460 class and overall risk, no direct
identifiers left, consent coverage, and the schema the policy declares. Importing this module
registers them with GX (subclassing registers); `suite.load_suite` refuses a saved suite whose
types are not registered, because GX would otherwise drop them silently (ecosystem.md trap 3).

Risk is measured per subject (patient level): a subject with several rows counts once, so a
table of visits cannot pass k-anonymity by repeating one patient k times.

Sets that must not be written into a saved suite (the input's identifier strings, the
consented pseudonyms) are handed to the metrics through `runtime_set`: the suite only stores an
opaque reference, and a suite run without the set present errors, which the gate treats as a
failure (fail closed).
"""

from __future__ import annotations

import math
import re
import secrets
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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

# --- sets passed at run time, by reference ------------------------------------------------------

def _as_text(values: Any) -> pa.Array:
    """A column as one pyarrow string array (no copy when it already is one)."""
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks().cast(pa.string())
    if isinstance(values, pa.Array):
        return values.cast(pa.string())
    series = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    if not isinstance(series.dtype, pd.StringDtype) or series.dtype.storage != "pyarrow":
        series = series.astype("string[pyarrow]")
    arr = pa.array(series.array)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr.cast(pa.string())


class StringSet:
    """A run-time set of strings: a Python frozenset (each str caches its own hash, and set
    intersection runs in C), so membership of a whole column, or of every window of a text,
    is one C-level intersection whatever the set's size (five identifier strings per patient
    of a million-patient input are five million); only the few common values go back to
    pandas to find their rows."""

    SMALL = 20_000  # up to this many members a regex alternation (RE2) is cheaper to search

    SHORT = 32  # texts up to this long are searched at every window size (no length scan)

    def __init__(self, values: Iterable[Any]) -> None:
        items = values if isinstance(values, (list, tuple)) else list(values)
        try:
            members = frozenset(items) - {None, ""}
            if not isinstance(next(iter(members), ""), str):
                raise TypeError
        except TypeError:  # unhashable or not text: compare their text
            members = frozenset(str(v) for v in items
                                if v is not None and not pd.isna(v) and str(v) != "")
        self.members = members
        self._lengths: tuple[int, ...] | None = None
        self._firsts: pa.Array | None = None

    @property
    def lengths(self) -> tuple[int, ...]:
        """Distinct member lengths of two or more (single characters are not identifiers and
        would match any text); computed on first use, since it walks every member."""
        if self._lengths is None:
            try:
                sizes = np.fromiter(map(len, self.members), dtype=np.int64,
                                    count=len(self.members))
            except TypeError:  # a member that is not text (mixed input): measure its text
                sizes = np.fromiter((len(str(v)) for v in self.members), dtype=np.int64,
                                    count=len(self.members))
            counts = np.bincount(sizes) if len(sizes) else np.zeros(0, dtype=np.int64)
            self._lengths = tuple(int(n) for n in np.flatnonzero(counts) if n >= 2)
        return self._lengths

    def __len__(self) -> int:
        return len(self.members)

    def __bool__(self) -> bool:
        return bool(self.members)

    def contains(self, values: Any) -> np.ndarray:
        """Whole-value membership, one bool per value (missing values are not members)."""
        arr = _as_text(values)
        if not self.members or not len(arr):
            return np.zeros(len(arr), dtype=bool)
        present = pc.is_valid(arr).to_numpy(zero_copy_only=False)
        candidates = (arr if present.all() else arr.filter(pa.array(present))).to_pylist()
        if self.members.issuperset(candidates):
            return present  # the usual case of a consent check: every subject is a member
        common = self.members.intersection(candidates)
        if not common:
            return np.zeros(len(arr), dtype=bool)
        found = pc.is_in(arr, value_set=pa.array(list(common), type=pa.string()))
        return pc.fill_null(found, False).to_numpy(zero_copy_only=False)

    def _first_characters(self) -> pa.Array:
        if self._firsts is None:
            self._firsts = pa.array(sorted({str(m)[0] for m in self.members if len(str(m)) >= 2}),
                                    type=pa.string())
        return self._firsts

    def substring_hits(self, texts: pd.Series) -> np.ndarray:
        """True where a text contains a member of the set (of two characters or more).

        A small set is searched as the scrubber does (`find_identifiers`, an RE2 alternation
        of the literals). A large one by windows: every window of each member length is
        looked up in the set (from positions whose character starts some member), so the cost
        is linear in the texts' total length times the number
        of distinct member lengths, and independent of the set's size (an alternation of
        millions of literals is not: RE2 builds it super-linearly)."""
        arr = _as_text(texts)
        n = len(arr)
        hit = np.zeros(n, dtype=bool)
        if not n or not self.members:
            return hit
        if len(self) <= self.SMALL:
            literals = sorted((v for v in self.members if len(v) >= 2), key=len, reverse=True)
            for i in range(0, len(literals), 5000):
                pattern = "|".join(_re2_escape(v) for v in literals[i:i + 5000])
                found = pc.match_substring_regex(arr, pattern)
                hit |= pc.fill_null(found, False).to_numpy(zero_copy_only=False)
            return hit
        lens = pc.fill_null(pc.utf8_length(arr), 0).to_numpy(zero_copy_only=False)
        longest = int(lens.max())
        sizes = range(2, longest + 1) if longest <= self.SHORT else self.lengths
        rows: list[np.ndarray] = []
        windows: list[pa.Array] = []
        pending = 0

        def flush() -> None:
            nonlocal pending
            if not windows:
                return
            joined = pa.concat_arrays(windows)
            common = self.members.intersection(joined.to_pylist())
            if common:
                found = pc.is_in(joined, value_set=pa.array(sorted(common), type=pa.string()))
                hit[np.concatenate(rows)[pc.fill_null(found, False).to_numpy(
                    zero_copy_only=False)]] = True
            rows.clear(), windows.clear()
            pending = 0

        if longest <= self.SHORT:  # labels: few windows, cut them all
            for start in range(longest - 1):
                for size in sizes:
                    idx = np.flatnonzero(lens >= start + size)
                    if not idx.size:
                        break
                    windows.append(pc.utf8_slice_codeunits(arr.take(pa.array(idx)), start,
                                                           start + size))
                    rows.append(idx)
            flush()
            return hit
        # Only positions whose character starts some member can start a match: one lookup
        # per position prunes most of the text before any window is cut.
        firsts = self._first_characters()
        for start in range(longest - 1):
            idx = np.flatnonzero((lens >= start + 2) & ~hit)
            if not idx.size:
                break
            first = pc.utf8_slice_codeunits(arr.take(pa.array(idx)), start, start + 1)
            idx = idx[pc.fill_null(pc.is_in(first, value_set=firsts), False).to_numpy(
                zero_copy_only=False)]
            if not idx.size:
                continue
            sub = arr.take(pa.array(idx))
            for size in sizes:
                ok = lens[idx] >= start + size
                if not ok.any():
                    break
                windows.append(pc.utf8_slice_codeunits(sub.filter(pa.array(ok)), start,
                                                       start + size))
                rows.append(idx[ok])
                pending += int(ok.sum())
            if pending >= 2_000_000:
                flush()
        flush()
        return hit


_RE2_SPECIAL = frozenset(r"\.^$|?*+()[]{}")


def _re2_escape(text: str) -> str:
    return "".join("\\" + c if c in _RE2_SPECIAL else c for c in text)


_RUNTIME_SETS: dict[str, StringSet] = {}
_RUNTIME_LOCK = threading.Lock()


@contextmanager
def runtime_set(values: Iterable[str]) -> Iterator[str]:
    """Make `values` visible to the metrics under a fresh reference for the duration of the
    block. The reference, not the values, goes into the suite (and its saved JSON)."""
    ref = "runtime:" + secrets.token_hex(8)
    frozen = StringSet(values)  # drops missing and empty values itself
    with _RUNTIME_LOCK:
        _RUNTIME_SETS[ref] = frozen
    try:
        yield ref
    finally:
        with _RUNTIME_LOCK:
            _RUNTIME_SETS.pop(ref, None)


def runtime_size(ref: str) -> int:
    """Distinct non-empty members of a run-time set (the count goes into the suite)."""
    return len(_lookup(ref))


def _lookup(ref: str) -> StringSet:
    try:
        return _RUNTIME_SETS[ref]
    except KeyError:
        # Raised inside a metric: GX turns it into an expectation error, the gate fails closed.
        raise LookupError(
            f"run-time set {ref!r} is not available; this suite can only run inside "
            "deidflow.validation.validate_release"
        ) from None


# --- shared computations (pure pandas, also used directly by tests) -----------------------------

SENSITIVE_MISSING = "\x00<missing>"  # a missing sensitive value counts as one more value


def per_subject(df: pd.DataFrame, subject_column: str, columns: list[str]) -> pd.DataFrame:
    """One row per subject with `columns` (the first row of a subject wins: quasi-identifiers
    are per-subject attributes and are identical across a subject's rows in the subject table)."""
    cols = [subject_column, *[c for c in columns if c != subject_column]]
    sub = df[cols]
    if not sub[subject_column].is_unique:
        sub = sub.drop_duplicates(subset=[subject_column])
    return sub


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
_SEP = r"[ \-]?"
_WHOLE_ID18 = rf"[1-9](?:{_SEP}[0-9]){{16}}{_SEP}[0-9Xx]"
_WHOLE_MOBILE = rf"(?:\+?86{_SEP})?1{_SEP}[3-9](?:{_SEP}[0-9]){{9}}"
_WHOLE_EMAIL = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
WHOLE_VALUE_PATTERNS: dict[str, str] = {
    "resident_id": rf"^\s*{_WHOLE_ID18}\s*$",
    "mobile": rf"^\s*{_WHOLE_MOBILE}\s*$",
    "email": rf"^\s*{_WHOLE_EMAIL}\s*$",
}
# Kinds named in an explanation: the detectors the gate is about (the scrubber has more, e.g.
# dates and names, whose patterns would also match harmless generalised text).
REPORTED_KINDS = ("resident_id", "mobile", "email")
KIND_SAMPLE = 200  # detected values examined to name the kinds (a summary, not a count)


def _distinct_texts(values: pd.Series) -> tuple[np.ndarray, pd.Series] | None:
    """Factorised column: codes per row and the distinct values as a pyarrow string Series
    (the checks run once per distinct value). None if the column cannot hold an identifier."""
    if pd.api.types.is_bool_dtype(values):
        return None
    if pd.api.types.is_integer_dtype(values):
        values = values[values.abs() >= 10_000_000]  # shorter integers cannot be a phone/ID
        codes, uniques = pd.factorize(values)
        return codes, pd.Series(np.asarray(uniques).astype(str), dtype="string[pyarrow]")
    if not _string_like(values):
        return None
    codes, uniques = pd.factorize(values)
    return codes, pd.Series(np.asarray(uniques, dtype=object), dtype="string[pyarrow]")


def _fullmatch(texts: pd.Series, pattern: str) -> np.ndarray:
    """RE2 (pyarrow) match of an anchored pattern; pandas' own fullmatch may fall back to
    Python's `re` per value."""
    arr = pa.array(texts.astype("string[pyarrow]").array)
    return pc.fill_null(pc.match_substring_regex(arr, pattern), False).to_numpy(
        zero_copy_only=False)


def whole_value_identifiers(texts: pd.Series, known: StringSet) -> pd.Series:
    """True where the whole value (spaces and dashes aside) is a resident ID with a valid
    GB 11643 check character, a mainland mobile number, an e-mail address, or equals an
    identifier string of the input."""
    from deidflow.identifiers import valid_resident_ids

    shaped = _fullmatch(texts, WHOLE_VALUE_PATTERNS["resident_id"])
    hit = np.zeros(len(texts), dtype=bool)
    if shaped.any():
        digits = texts[shaped].str.replace(r"[\s\-]", "", regex=True).str.upper()
        hit[np.flatnonzero(shaped)] = valid_resident_ids(digits.astype("string")).to_numpy(bool)
    for kind in ("mobile", "email"):
        hit |= _fullmatch(texts, WHOLE_VALUE_PATTERNS[kind])
    if known:
        hit |= known.contains(texts)
        padded = np.flatnonzero(_fullmatch(texts, r"^\s.*|.*\s$"))
        if padded.size:  # " 13812345678" is the same identifier
            hit[padded] |= known.contains(texts.iloc[padded].str.strip())
    return pd.Series(hit, index=texts.index)


def identifier_hits(values: pd.Series, known: StringSet, *, whole_value: bool = False,
                    ) -> dict[str, Any]:
    """How many rows of a column hold a direct identifier, and which kinds (never the values).

    Free text and other kept columns are searched: the scrubber's own generic detectors
    (`techniques.scrub.find_identifiers`: resident IDs, mobiles, e-mails anywhere in the
    value), then any identifier string of the input as a substring (`StringSet`).
    `whole_value` columns (pseudonymised link keys) go through `whole_value_identifiers`.
    Both run once per distinct value.
    """
    if whole_value and _string_like(values) and not pd.api.types.is_bool_dtype(values):
        # pseudonyms are (nearly) all distinct: factorising them first would only cost time
        texts = values.astype("string[pyarrow]").reset_index(drop=True)
        found: tuple[np.ndarray, pd.Series] | None = (np.arange(len(texts)), texts)
    else:
        found = _distinct_texts(values)
    if found is None:
        return {"rows": 0, "kinds": []}
    codes, texts = found
    if not len(texts):
        return {"rows": 0, "kinds": []}
    if whole_value:
        hit = whole_value_identifiers(texts, known).to_numpy(bool)
    else:
        from deidflow.techniques.scrub import find_identifiers

        # the scrubber's generic detectors; the input's own strings by hashed windows
        hit = np.array(find_identifiers(texts, None), dtype=bool)  # a writable copy
        if known:
            rest = np.flatnonzero(~hit)
            hit[rest] = known.substring_hits(texts.iloc[rest])
    if not hit.any():
        return {"rows": 0, "kinds": []}
    valid = codes >= 0
    rows = int(hit[codes[valid]].sum())
    return {"rows": rows, "kinds": identifier_kinds(texts[hit], known, whole_value=whole_value)}


def identifier_kinds(texts: pd.Series, known: StringSet, *, whole_value: bool = False,
                     ) -> list[str]:
    """Names of the identifier kinds among detected values (a sample of them: this names
    what was found for the explanation, the row count comes from the detector)."""
    texts = texts.iloc[:KIND_SAMPLE].astype(object)
    kinds: list[str] = []
    if whole_value:
        sample = pd.Series(texts.to_numpy(), dtype="string[pyarrow]")
        for name, pattern in WHOLE_VALUE_PATTERNS.items():
            if sample.str.fullmatch(pattern).fillna(False).any():
                kinds.append(name)
        if known and known.contains(sample).any():
            kinds.append("known identifier of the input")
        return kinds or ["identifier"]
    from deidflow.techniques.scrub import IDENTIFIER_PATTERNS

    sample = pd.Series(texts.to_numpy(), dtype=object)
    for name in REPORTED_KINDS:
        pattern = IDENTIFIER_PATTERNS.get(name) if hasattr(IDENTIFIER_PATTERNS, "get") else None
        if pattern is None:
            continue
        regex = pattern if hasattr(pattern, "search") else re.compile(str(pattern))
        if any(regex.search(t) for t in sample if isinstance(t, str)):
            kinds.append(name)
    if known and known.substring_hits(pd.Series(sample.to_numpy(), dtype="string[pyarrow]")).any():
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
    value_keys = ("whole_value_columns", "known_identifiers_ref")

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(cls, execution_engine, metric_domain_kwargs, metric_value_kwargs, metrics,
                runtime_configuration):
        df = _frame(execution_engine, metric_domain_kwargs)
        known = _lookup(metric_value_kwargs["known_identifiers_ref"])
        whole = set(metric_value_kwargs["whole_value_columns"])
        return {str(col): identifier_hits(df[col], known, whole_value=col in whole)
                for col in df.columns}


class UnconsentedSubjects(TableMetricProvider):
    metric_name = "deidflow.unconsented_subjects"
    value_keys = ("subject_column", "consented_ref")

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(cls, execution_engine, metric_domain_kwargs, metric_value_kwargs, metrics,
                runtime_configuration):
        df = _frame(execution_engine, metric_domain_kwargs)
        consented = _lookup(metric_value_kwargs["consented_ref"])
        subjects = pd.Series(df[metric_value_kwargs["subject_column"]].unique())
        missing = subjects.isna().to_numpy() | ~consented.contains(subjects.astype("string"))
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

    metric_dependencies: ClassVar[Tuple[str, ...]] = ("deidflow.direct_identifier_hits",)
    success_keys: ClassVar[Tuple[str, ...]] = (
        "whole_value_columns", "known_identifiers_ref", "n_known_identifiers")

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
        parts = [f"'{c}': {h['rows']} row(s) with {', '.join(h['kinds'])}" for c, h in bad.items()]
        return "direct identifiers left: " + "; ".join(parts)


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
