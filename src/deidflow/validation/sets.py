"""The release gate's run-time sets and the text helpers they share, without Great
Expectations: a set can be built (its members hashed) on a thread while another imports GX.

Sets that must not be written into a saved suite (the input's identifier strings, the
consented pseudonyms) are handed to the metrics through `runtime_set`: the suite only stores an
opaque reference, and a suite run without the set present errors, which the gate treats as a
failure (fail closed).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from deidflow.idcolumns import run_heads
from deidflow.io import text_buffers

_TEXT_TYPES = (pa.string(), pa.large_string())


def _as_text(values: Any) -> pa.Array | pa.ChunkedArray:
    """Values as pyarrow text (string or large_string), without a copy when they already are
    Arrow text: a pyarrow array, a pandas column or array backed by Arrow ("str",
    "string[pyarrow]", ArrowDtype, or what `Series.unique()` returns for them). Anything else
    (a list, an object column, numbers) is compared by its text."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        arr = values
    elif not isinstance(values, (pd.Series, pd.Index)) and hasattr(values, "__arrow_array__"):
        arr = values.__arrow_array__()  # a pandas array, e.g. what Series.unique() returns
    else:
        if isinstance(values, (pd.Series, pd.Index, np.ndarray)):
            series = (values if isinstance(values, pd.Series)
                      else pd.Series(values.array if isinstance(values, pd.Index) else values))
        else:
            items = values if isinstance(values, (list, tuple)) else list(values)
            try:
                return pa.array(items, type=pa.string())
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
                series = pd.Series(items, dtype=object)
        arrow_backed = (isinstance(series.dtype, pd.StringDtype) and series.dtype.storage == "pyarrow"
                        or isinstance(series.dtype, pd.ArrowDtype))
        if not arrow_backed:
            series = series.astype("string[pyarrow]")
        arr = series.array.__arrow_array__()
    if arr.type not in _TEXT_TYPES:
        if pa.types.is_dictionary(arr.type):
            arr = arr.cast(arr.type.value_type)
        arr = arr.cast(pa.large_string() if pa.types.is_large_binary(arr.type) else pa.string())
    return arr


def _single(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _chunks(arr: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]


def _bools(found: Any) -> np.ndarray:
    """A pyarrow boolean result as numpy, missing as False."""
    return np.asarray(pc.fill_null(found, False).to_numpy(zero_copy_only=False), dtype=bool)


_BLOCK = 1 << 16  # values per numpy pass: the temporaries stay in the CPU cache


def _signatures(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Per value, (byte length up to 255, first byte, last byte) packed in 24 bits, read from
    the Arrow buffers (no per-value work in Python, no copy of the text); 0 for a missing or
    empty value."""
    out = np.zeros(len(arr), dtype=np.uint32)
    at = 0
    for chunk in _chunks(arr):
        for b in range(0, len(chunk), _BLOCK):
            part = chunk.slice(b, _BLOCK)
            k = len(part)
            off, data = text_buffers(part)
            size = off[1:] - off[:-1]
            sig = out[at:at + k]
            np.minimum(size, 255, out=sig, casting="unsafe")
            sig <<= 16
            # (an empty value's "first byte" may lie past the end: clipped, then zeroed below)
            sig |= np.take(data, off[:-1], mode="clip").astype(np.uint32) << 8
            sig |= np.take(data, off[1:] - 1, mode="clip")
            sig[size == 0] = 0
            if part.null_count:
                sig[~_bools(pc.is_valid(part))] = 0
            at += k
    return out


def _first_bytes(sigs: np.ndarray) -> np.ndarray:
    return (sigs >> 8).astype(np.uint8)  # the cast keeps the low 8 bits


def _last_bytes(sigs: np.ndarray) -> np.ndarray:
    return sigs.astype(np.uint8)


def _rows_with_byte(arr: pa.Array | pa.ChunkedArray, byte: int) -> np.ndarray:
    """Positions of the values that contain `byte` (an ASCII character), found by one scan of
    the text buffer rather than per value."""
    out, base = [], 0
    for chunk in _chunks(arr):
        n = len(chunk)
        if n:
            off, data = text_buffers(chunk)
            if off[-1] > off[0]:
                pos = np.flatnonzero(data[off[0]:off[-1]] == byte) + off[0]
                if pos.size:
                    rows = np.unique(np.searchsorted(off, pos, side="right") - 1)
                    if chunk.null_count:
                        rows = rows[_bools(pc.is_valid(chunk))[rows]]
                    out.append(rows + base)
        base += n
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


_MIX1 = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xBF58476D1CE4E5B9)


def _hash64(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash of every value's bytes, computed 8 bytes at a time over the Arrow
    buffers (a few vectorised passes, however many values). Only a prefilter: equal hashes
    are always confirmed by comparing the strings."""
    parts = [c.slice(b, _BLOCK) for c in _chunks(arr) for b in range(0, len(c), _BLOCK)]
    out = np.zeros(len(arr), dtype=np.uint64)
    at = 0
    for part in parts:
        off, data = text_buffers(part)
        k, lo, hi = len(part), int(off[0]), int(off[-1])
        buf = np.zeros(hi - lo + 8, dtype=np.uint8)  # padded: an 8-byte read never runs off
        buf[:hi - lo] = data[lo:hi]
        words = np.ndarray((hi - lo + 1,), dtype="<u8", buffer=buf, strides=(1,))
        starts = (off[:-1] - lo).astype(np.int64)
        lens = (off[1:] - off[:-1]).astype(np.int64)
        h = lens.astype(np.uint64) * _MIX1
        n_words = (lens + 7) >> 3
        for j in range(int(n_words.max())):
            rows = np.flatnonzero(n_words > j)
            word = words[starts[rows] + 8 * j]
            rest = lens[rows] - 8 * j
            short = rest < 8  # keep only the value's own bytes of its last word
            if short.any():
                keep = (np.uint64(1) << (rest[short].astype(np.uint64) * np.uint64(8))) - np.uint64(1)
                word[short] &= keep
            x = (h[rows] ^ word) * _MIX2
            h[rows] = x ^ (x >> np.uint64(31))
        out[at:at + k] = h
        at += k
    return out


_CONFIRM_BLOCK = 1 << 20  # texts compared with their members at a time


class Chunks:
    """Text values given as a function that yields them as Arrow arrays (each call reads them
    afresh), for a set too large to hold as strings: at 10M patients the input's identifier
    strings are ~60M. `StringSet` reads them once to build its hashes, and again only to
    confirm a hash hit (or to list member lengths and first characters, on first need)."""

    def __init__(self, read: Callable[[], Iterable[pa.Array | pa.ChunkedArray]]) -> None:
        self.read = read


class StringSet:
    """A run-time set of strings, held as the sorted 64-bit hashes of its non-empty members
    (no Python string is made per member) and, when given in memory, the members as one
    pyarrow array; given as `Chunks`, the members stay where they are (the run's
    memory-mapped work files) and are read again only to confirm a hit.

    Membership is tested in three steps: a 16-MB table of the (byte length, first byte, last
    byte) signatures of the members rules out almost every value of a column at the cost of
    reading three bytes (pseudonyms share no signature with names, IDs or phone numbers); the
    candidates left are hashed and looked up among the member hashes (a binary search); and
    every hash hit is confirmed by comparing the strings, so a hash collision can neither admit
    a stranger nor hide a member: a value is a member exactly when it equals one."""

    SMALL = 20_000  # up to this many members a regex alternation (RE2) is cheaper to search

    PATTERN_BYTES = 4000  # literal bytes per RE2 alternation (see substring_hits)
    SHORT = 32  # texts up to this long are cut into every window (no window index built)

    def __init__(self, values: Any) -> None:
        self._source = values if isinstance(values, Chunks) else None
        self._table = np.zeros(1 << 24, dtype=bool)
        self._lengths: tuple[int, ...] | None = None
        self._windows: Any = None  # the byte-window index of a large set, on first need
        self.members: pa.Array | None = None
        if self._source is None:
            arr = _single(_as_text(values))
            sigs = _signatures(arr)
            if not sigs.all():  # missing and empty values are not members
                keep = sigs != 0
                arr, sigs = arr.filter(pa.array(keep)), sigs[keep]
            self.members = arr
            self._table[sigs] = True
            hashes = _hash64(arr)
            # members ordered by hash: a hit's member is found by position, not by a string hash table
            self._order: np.ndarray | None = np.argsort(hashes)
            self._hashes = hashes[self._order]
            self._size = len(arr)
            return
        parts, self._size = [], 0
        for values in self._source.read():
            for chunk in _chunks(_as_text(values)):
                sigs = _signatures(chunk)
                present = sigs != 0  # missing and empty values are not members
                self._table[sigs[present]] = True
                hashes = _hash64(chunk)  # all rows: dropping the others' hashes copies no text
                parts.append(hashes if present.all() else hashes[present])
                self._size += int(present.sum())
        self._hashes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
        del parts
        self._hashes.sort()  # repeats kept: a binary search needs no distinct values
        self._order = None

    def _source_chunks(self) -> Iterator[tuple[pa.Array, np.ndarray]]:
        """The source's members, chunk by chunk, without missing and empty values, with their
        signatures."""
        for values in self._source.read():
            for chunk in _chunks(_as_text(values)):
                sigs = _signatures(chunk)
                if not sigs.all():
                    keep = sigs != 0
                    chunk, sigs = chunk.filter(pa.array(keep)), sigs[keep]
                if len(chunk):
                    yield chunk, sigs

    def _member_chunks(self) -> Iterator[pa.Array]:
        if self.members is not None:
            yield self.members
            return
        seen = 0
        for chunk, _ in self._source_chunks():
            seen += len(chunk)
            yield chunk
        if seen != self._size:  # the files changed under the run: no answer can be trusted
            raise RuntimeError(f"the run-time set's source now yields {seen} members, not "
                               f"{self._size}; its work files changed during validation")

    @property
    def lengths(self) -> tuple[int, ...]:
        """Distinct member lengths (in characters) of two or more (single characters are not
        identifiers and would match any text); computed on first use."""
        if self._lengths is None:
            sizes = [np.unique(pc.utf8_length(c).to_numpy(zero_copy_only=False))
                     for c in self._member_chunks()]
            found = np.unique(np.concatenate(sizes)) if sizes else np.zeros(0, dtype=np.int64)
            self._lengths = tuple(int(n) for n in found if n >= 2)
        return self._lengths

    def __len__(self) -> int:
        """Non-empty members as given (a repeated value counts each time: finding the
        distinct ones of five million strings would cost more than the whole check)."""
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def contains(self, values: Any) -> np.ndarray:
        """Whole-value membership, one bool per value (missing values are not members)."""
        return self._member_mask(_as_text(values))

    def _member_mask(self, arr: pa.Array | pa.ChunkedArray,
                     sigs: np.ndarray | None = None) -> np.ndarray:
        n = len(arr)
        out = np.zeros(n, dtype=bool)
        if not n or not self:
            return out
        sigs = _signatures(arr) if sigs is None else sigs
        cand = np.flatnonzero(self._table[sigs])
        if not cand.size:
            return out
        cands = arr if cand.size == n else arr.take(pa.array(cand))
        probe = _hash64(cands)
        pos = self._search(probe)
        hit = self._hashes[np.minimum(pos, len(self._hashes) - 1)] == probe
        rows = np.flatnonzero(hit)
        if rows.size:
            texts = cands if rows.size == len(cands) else cands.take(pa.array(rows))
            out[cand[rows]] = self._confirm(texts, probe[rows], pos[rows])
        return out

    def _search(self, probe: np.ndarray) -> np.ndarray:
        """Where each probe hash is, or would be, among the sorted member hashes. Many probes
        are searched in sorted order: one pass through the members instead of a cache miss
        per step of every search (several times faster for millions of probes; the figures
        are benchmarks/bench_validation.py's)."""
        if len(probe) <= 4096:
            return np.searchsorted(self._hashes, probe)
        order = np.argsort(probe)
        pos = np.empty(len(probe), dtype=np.int64)
        pos[order] = np.searchsorted(self._hashes, probe[order])
        return pos

    def _confirm(self, texts: pa.Array, probe: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Which of `texts` (whose hashes `probe` are member hashes, first found at `pos`)
        equal a member: the strings decide, never the hash."""
        if self._order is None:  # members on disk: read those with a wanted hash
            wanted = np.unique(probe)
            found = []
            for chunk in self._member_chunks():
                h = _hash64(chunk)
                at = np.minimum(np.searchsorted(wanted, h), len(wanted) - 1)
                sel = np.flatnonzero(wanted[at] == h)
                if sel.size:
                    found.append(chunk.take(pa.array(sel)).cast(pa.large_string()))
            if not found:
                return np.zeros(len(texts), dtype=bool)
            return _bools(pc.is_in(texts, value_set=pa.concat_arrays(found)))
        # each text against the member at its hash's first position, a block at a time (all
        # 8.4M subjects of a 10M release at once would copy their 300 MB of pseudonyms)
        same = np.empty(len(texts), dtype=bool)
        for b in range(0, len(texts), _CONFIRM_BLOCK):
            block = texts.slice(b, _CONFIRM_BLOCK)
            same[b:b + len(block)] = _bools(pc.equal(block, self.members.take(
                pa.array(self._order[pos[b:b + len(block)]]))))
        # a hash that two different members share (never seen, but possible): pos is the
        # first of them; compare such a text with every member of its hash
        last = len(self._hashes) - 1
        shared = (pos < last) & (self._hashes[np.minimum(pos + 1, last)] == probe)
        unsure = np.flatnonzero(~same & shared)
        if unsure.size:
            lo = pos[unsure]
            hi = np.searchsorted(self._hashes, probe[unsure], side="right")
            size = hi - lo
            at = np.repeat(lo - np.concatenate(([0], np.cumsum(size)[:-1])), size) + np.arange(int(size.sum()))
            same[unsure] = _bools(pc.is_in(texts.take(pa.array(unsure)),
                                           value_set=self.members.take(pa.array(self._order[at]))))
        return same

    def _literals(self) -> list[str]:
        """The distinct members of two characters or more, longest first (a small set only)."""
        found: set[str] = set()
        for c in self._member_chunks():
            found.update(c.filter(pc.greater_equal(pc.utf8_length(c), 2)).to_pylist())
        return sorted(found, key=len, reverse=True)

    def substring_hits(self, texts: Any) -> np.ndarray:
        """True where a text contains a member of the set (of two characters or more).

        A small set is searched as the scrubber does (`find_identifiers`, an RE2 alternation
        of the literals). A large one by hashed byte windows (`validation.windows`), pruned by
        the members' first bytes and prefixes, so the cost is linear in the texts' bytes and
        independent of the set's size (an alternation of millions of literals is not: RE2
        builds it super-linearly)."""
        arr = _single(_as_text(texts))
        n = len(arr)
        hit = np.zeros(n, dtype=bool)
        if not n or not self:
            return hit
        if len(self) <= self.SMALL:
            # Alternations of a few kilobytes each, every one run only over the texts not hit
            # yet: RE2's automaton for one alternation of thousands of literals outgrows its
            # memory budget and falls back to a search about ten times slower.
            for pattern in _alternations(self._literals(), self.PATTERN_BYTES):
                rest = np.flatnonzero(~hit)
                if not rest.size:
                    break
                hit[rest] = _bools(pc.match_substring_regex(arr.take(pa.array(rest)), pattern))
            return hit
        lens = pc.fill_null(pc.utf8_length(arr), 0).to_numpy(zero_copy_only=False)
        longest = int(lens.max())
        if longest <= self.SHORT:
            # labels (a structured column's distinct values): every window of every size is
            # looked up whole, without building the window index of a large set
            rows: list[np.ndarray] = []
            windows: list[pa.Array] = []
            for start in range(longest - 1):
                for size in range(2, longest - start + 1):
                    idx = np.flatnonzero(lens >= start + size)
                    if not idx.size:
                        break
                    windows.append(pc.utf8_slice_codeunits(arr.take(pa.array(idx)), start,
                                                           start + size))
                    rows.append(idx)
            if windows:
                found = self._member_mask(pa.concat_arrays(windows))
                if found.any():
                    hit[np.concatenate(rows)[found]] = True
            return hit
        # long texts: hashed byte windows (`validation.windows`), linear in the texts
        if self._windows is None:
            from deidflow.validation.windows import WindowSearch

            self._windows = WindowSearch(self._member_chunks())
        return self._windows.hits(arr, self)


_RE2_SPECIAL = frozenset(r"\.^$|?*+()[]{}")


def _alternations(literals: list[str], budget: int) -> Iterator[str]:
    """RE2 alternations of the literals, in their order, each of about `budget` bytes."""
    current: list[str] = []
    size = 0
    for text in literals:
        current.append(_re2_escape(text))
        size += len(text.encode("utf-8"))
        if size >= budget:
            yield "|".join(current)
            current, size = [], 0
    if current:
        yield "|".join(current)


def _re2_escape(text: str) -> str:
    return "".join("\\" + c if c in _RE2_SPECIAL else c for c in text)


_RUNTIME_SETS: dict[str, StringSet] = {}
_RUNTIME_LOCK = threading.Lock()


@contextmanager
def runtime_set(values: Any) -> Iterator[str]:
    """Make `values` (a list, a pandas Series, a pyarrow array of strings, `Chunks` or a
    `StringSet`) visible to the metrics under a fresh reference for the duration of the block.
    The reference, not the values, goes into the suite (and its saved JSON)."""
    ref = "runtime:" + secrets.token_hex(8)
    # a StringSet as it is (built beforehand, e.g. while the gate was imported); anything else
    # becomes one, which drops missing and empty values itself
    frozen = values if isinstance(values, StringSet) else StringSet(values)
    with _RUNTIME_LOCK:
        _RUNTIME_SETS[ref] = frozen
    try:
        yield ref
    finally:
        with _RUNTIME_LOCK:
            _RUNTIME_SETS.pop(ref, None)


def runtime_size(ref: str) -> int:
    """Non-empty members of a run-time set as given (the count goes into the suite)."""
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


def _distinct_hashes(arr: pa.Array | pa.ChunkedArray) -> bool:
    """True if the values' 64-bit hashes are all different, which proves the values are
    (equal strings hash alike); False proves nothing. A sort of 8 bytes per value, where a
    hash table of the strings (pyarrow's unique, count_distinct) costs four times as long."""
    h = _hash64(arr)
    h.sort()
    return not bool((h[1:] == h[:-1]).any())


def distinct_values(values: Any) -> pa.Array | pa.ChunkedArray:
    """The distinct values of a text column, a missing value once (as `pc.unique`, in an
    order of its own), without a hash table of the strings in the two shapes a release has:
    a subject table's column, which has no repeat, and another table's subject column, whose
    repeats are runs (its rows are grouped by subject). Each run is cut to its first row; if
    the hashes of what is left are all different, so are the values. Otherwise, and when more
    than one value is missing, pyarrow's unique decides."""
    arr = _as_text(values)
    starts = run_heads(arr, min_run=1)  # the first row of each run (a missing value is its own)
    if starts is not None and len(starts) < len(arr):
        arr = arr.take(pa.array(starts))
    if arr.null_count <= 1 and _distinct_hashes(arr):
        return arr
    return pc.unique(arr)
