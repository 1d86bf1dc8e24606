"""Finding one fixed set of literal values in text: the values a release knows for every
note (`scrub.EVERYONE`: attending doctors and other staff of all tables, up to tens of
thousands of names), searched in every note of a column.

`ValueSet.find` returns exactly what `re.finditer` over the trie alternation of the values
(`identifiers.alternation`) returns: scanning left to right, at each position the longest
value that starts there, and the scan resumes after it. Python's `re` gets there by trying
the trie's first branches one after another at every character that can start a value (a
surname starts a name, and surnames are common characters): slow with thousands of values
(README, "Known values in every note"). Here every value has at least two characters, so a match can only start
where the text's first two characters are the first two of some value: the text's code points
are tested for that with numpy (a table look-up per character for the first, one per candidate
for the second, then a sorted search of the pair), and Python only compares the few values
sharing that two-character prefix at the positions that pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

from deidflow import identifiers as ids

_SHIFT = np.uint64(21)  # every code point fits in 21 bits


def code_points(text: str) -> np.ndarray:
    """The text as an array of its code points (lone surrogates kept as themselves)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


class ValueSet:
    """A set of literal values, prepared once for `find` in many texts."""

    def __init__(self, values: Iterable[str]) -> None:
        distinct = sorted(set(values))
        self.values = tuple(distinct)
        self._regex: re.Pattern[str] | None = None
        if any(len(v) < 2 for v in distinct):
            # a one-character value has no two-character prefix: the trie regex finds it
            self._regex = re.compile(ids.alternation(distinct))
            return
        by_prefix: dict[str, list[str]] = {}
        for v in distinct:
            by_prefix.setdefault(v[:2], []).append(v)
        prefixes = sorted(by_prefix)
        firsts = np.fromiter((ord(p[0]) for p in prefixes), dtype=np.int64, count=len(prefixes))
        seconds = np.fromiter((ord(p[1]) for p in prefixes), dtype=np.int64, count=len(prefixes))
        keys = (firsts.astype(np.uint64) << _SHIFT) | seconds.astype(np.uint64)
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order]
        # values of one prefix longest first: the first that starts at a position is the match
        self._groups = [sorted(by_prefix[prefixes[i]], key=len, reverse=True) for i in order.tolist()]
        # True at the code points that start a value (and, apart, at those that are a value's
        # second); one False entry past the largest, which every larger code point of a text is
        # clipped to
        self._first = np.zeros(int(firsts.max(initial=0)) + 2, dtype=bool)
        self._first[firsts] = True
        self._second = np.zeros(int(seconds.max(initial=0)) + 2, dtype=bool)
        self._second[seconds] = True

    def find(self, text: str, points: np.ndarray | None = None) -> list[tuple[int, int, str]]:
        """(start, end, value) of every match, leftmost first, longest at each start, not
        overlapping: what `re.finditer(identifiers.alternation(values), text)` finds.
        `points` is `code_points(text)` where the caller has it already."""
        if self._regex is not None:
            return [(m.start(), m.end(), m.group()) for m in self._regex.finditer(text)]
        if not self.values or len(text) < 2:
            return []
        cp = code_points(text) if points is None else points
        starts = np.flatnonzero(self._first.take(cp[:-1], mode="clip"))
        # a surname starts many words; its next character rules most of them out cheaply,
        # before the sorted search of the pair
        starts = starts[self._second.take(cp[starts + 1], mode="clip")]
        if not len(starts):
            return []
        keys = (cp[starts].astype(np.uint64) << _SHIFT) | cp[starts + 1].astype(np.uint64)
        at = np.searchsorted(self._keys, keys)
        np.minimum(at, len(self._keys) - 1, out=at)
        hit = self._keys[at] == keys
        groups = self._groups
        out: list[tuple[int, int, str]] = []
        last = 0
        startswith = text.startswith
        for p, g in zip(starts[hit].tolist(), at[hit].tolist()):
            if p < last:  # inside the previous match: the scan resumes after it
                continue
            for v in groups[g]:
                if startswith(v, p):
                    last = p + len(v)
                    out.append((p, last, v))
                    break
        return out
