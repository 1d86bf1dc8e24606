"""The gate's search of many known strings (every direct-identifier value of the input) inside
many texts (every released note), linear in the texts' bytes and independent of the number
of known strings.

A known string is found where a byte window of the text equals it. UTF-8 is
self-synchronising, so a window of valid UTF-8 bytes that equals a member starts and ends on
character boundaries: searching bytes is searching characters. Windows are not all cut:

1. a table of the members' first bytes keeps the positions where some member can start (in
   Chinese text, the first byte of each character and the digits);
2. the first `PREFIX` bytes there are hashed and looked up in a 2-MB bit table of the
   members' prefixes, which keeps a few per cent of the positions;
3. a table of which member byte lengths start with that prefix hash says which windows to
   cut; each window is hashed exactly as `sets._hash64` hashes a whole value and looked up
   among the set's sorted member hashes;
4. a hash hit is confirmed on the strings by the set (`StringSet._confirm`), once, for all
   the texts: a collision can neither admit a stranger nor hide a member.

The texts are cut into blocks of about `BLOCK_BYTES` bytes, searched on two threads (the work
is numpy calls on large arrays, which release the GIL).
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deidflow.io import text_buffers

PREFIX = 6  # bytes of a member's start looked up first: two CJK characters, six digits
FILTER_BITS = 24  # the prefix bit table: 2**24 bits, 2 MB
MASK_BITS = 20  # the prefix → member byte lengths table: 2**20 words of 64 bits, 8 MB
BLOCK_BYTES = 1 << 24  # text bytes searched at a time
THREADS = 2

_MIX1 = np.uint64(0x9E3779B97F4A7C15)  # as sets._hash64
_MIX2 = np.uint64(0xBF58476D1CE4E5B9)
_MIXK = np.uint64(0xD6E8FEB86659FD93)  # the prefix hash (any odd constant)


def _padded(data: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Bytes lo..hi followed by 8 zero bytes, and the (unaligned) 64-bit word at every byte."""
    seg = np.zeros(hi - lo + 8, dtype=np.uint8)
    seg[:hi - lo] = data[lo:hi]
    words = np.ndarray((hi - lo + 1,), dtype="<u8", buffer=seg, strides=(1,))
    return seg, words


def window_hashes(words: np.ndarray, pos: np.ndarray, size: int) -> np.ndarray:
    """The hash of the `size` bytes at each of `pos`, equal to `sets._hash64` of those bytes
    as one value."""
    h = np.full(len(pos), size, dtype=np.uint64) * _MIX1
    for j in range((size + 7) // 8):
        word = words[pos + 8 * j]
        rest = size - 8 * j
        if rest < 8:
            word &= np.uint64((1 << (8 * rest)) - 1)
        x = (h ^ word) * _MIX2
        h = x ^ (x >> np.uint64(31))
    return h


@dataclass
class _Group:
    """Members whose byte length is at least `prefix`, indexed by their first `prefix` bytes."""

    prefix: int
    lead: np.ndarray  # bool[256]: first bytes of members
    filter: np.ndarray  # packed bits, 2**FILTER_BITS
    masks: np.ndarray  # uint64, 2**MASK_BITS: bit i set → a member of length lengths[i (mod 64)]
    lengths: np.ndarray  # distinct member byte lengths


def _prefix_hash(words: np.ndarray, prefix: int) -> np.ndarray:
    key = words & np.uint64((1 << (8 * prefix)) - 1) if prefix < 8 else words
    return key * _MIXK


def _group(firsts: np.ndarray, words: np.ndarray, sizes: np.ndarray, prefix: int) -> _Group:
    lead = np.zeros(256, dtype=bool)
    lead[firsts] = True
    hk = _prefix_hash(words, prefix)
    bits = np.zeros(1 << FILTER_BITS, dtype=bool)
    bits[hk >> np.uint64(64 - FILTER_BITS)] = True
    lengths, index = np.unique(sizes, return_inverse=True)
    pairs = np.unique((hk >> np.uint64(64 - MASK_BITS)) * np.uint64(64)
                      + (index % 64).astype(np.uint64))
    masks = np.zeros(1 << MASK_BITS, dtype=np.uint64)
    np.bitwise_or.at(masks, (pairs // np.uint64(64)).astype(np.int64),
                     np.left_shift(np.uint64(1), pairs % np.uint64(64)))
    return _Group(prefix, lead, np.packbits(bits, bitorder="little"), masks, lengths)


class WindowSearch:
    """The index of a set's members for `hits`; built from the members' text chunks (each
    member of two characters or more: one character names nobody and would match anything)."""

    def __init__(self, chunks: Iterable[pa.Array]) -> None:
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for chunk in chunks:
            chunk = chunk.filter(pc.fill_null(pc.greater_equal(pc.utf8_length(chunk), 2), False))
            if not len(chunk):
                continue
            off, data = text_buffers(chunk)
            lo, hi = int(off[0]), int(off[-1])
            _, words = _padded(data, lo, hi)
            start = (off[:-1] - lo).astype(np.int64)
            parts.append(((data[lo:hi][start]).copy(), words[start].copy(),
                          (off[1:] - off[:-1]).astype(np.int64)))
        self.groups: list[_Group] = []
        if not parts:
            return
        firsts, words, sizes = (np.concatenate(p) for p in zip(*parts))
        long = sizes >= PREFIX
        if long.any():
            self.groups.append(_group(firsts[long], words[long], sizes[long], PREFIX))
        if (~long).any():  # a few short members (two Latin letters): a shorter prefix
            short = ~long
            self.groups.append(_group(firsts[short], words[short], sizes[short],
                                      int(sizes[short].min())))

    def hits(self, arr: pa.Array, known: Any) -> np.ndarray:
        """True where a text of `arr` (one string array) contains a member of `known` (the
        `StringSet` whose sorted member hashes and string confirmation are used)."""
        n = len(arr)
        out = np.zeros(n, dtype=bool)
        if not n or not self.groups:
            return out
        off, _ = text_buffers(arr)
        blocks, start = [], 0
        while start < n:  # rows cut so that each block holds about BLOCK_BYTES of text
            stop = int(np.searchsorted(off, off[start] + BLOCK_BYTES, side="right")) - 1
            stop = min(max(stop, start + 1), n)
            blocks.append((start, stop))
            start = stop
        if len(blocks) == 1 or THREADS <= 1:
            found = [self._block(arr, a, b, known) for a, b in blocks]
        else:
            with ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="known-windows") as pool:
                found = list(pool.map(lambda ab: self._block(arr, ab[0], ab[1], known), blocks))
        rows = [r for r, _, _, _ in found if len(r)]
        if not rows:
            return out
        rows_all = np.concatenate(rows)
        texts = pa.concat_arrays([t for r, t, _, _ in found if len(r)])
        probe = np.concatenate([p for r, _, p, _ in found if len(r)])
        pos = np.concatenate([q for r, _, _, q in found if len(r)])
        texts = texts.cast(known.members.type if known.members is not None else pa.large_string())
        same = known._confirm(texts, probe, pos)
        # a one-character member (not searched) may share a byte length with a searched one
        same &= np.asarray(pc.greater_equal(pc.utf8_length(texts), 2))
        out[rows_all[same]] = True
        if arr.null_count:
            out &= np.asarray(pc.is_valid(arr))
        return out

    def _block(self, arr: pa.Array, first: int, stop: int, known: Any):
        """Rows [first, stop): the rows, windows, hashes and hash positions of every hash hit."""
        off, data = text_buffers(arr)
        off = off[first:stop + 1]
        lo, hi = int(off[0]), int(off[-1])
        seg, words = _padded(data, lo, hi)
        ends = (off[1:] - lo).astype(np.int64)
        hashes = known._hashes
        last = len(hashes) - 1
        rows, windows, probes, where = [], [], [], []
        for g in self.groups:
            pos = np.flatnonzero(g.lead[seg[:hi - lo]])
            if not pos.size:
                continue
            hk = _prefix_hash(words[pos], g.prefix)
            fb = hk >> np.uint64(64 - FILTER_BITS)
            keep = (g.filter[fb >> np.uint64(3)] >> (fb & np.uint64(7)).astype(np.uint8)) & 1
            keep = keep.astype(bool)
            pos, hk = pos[keep], hk[keep]
            if not pos.size:
                continue
            mask = g.masks[hk >> np.uint64(64 - MASK_BITS)]
            row = np.searchsorted(ends, pos, side="right")  # the text each position is in
            room = ends[np.minimum(row, len(ends) - 1)] - pos
            for bit in range(min(64, len(g.lengths))):
                sel = np.flatnonzero((mask >> np.uint64(bit)) & np.uint64(1))
                if not sel.size:
                    continue
                for size in g.lengths[bit::64]:
                    at = sel[room[sel] >= size]
                    if not at.size:
                        continue
                    p = pos[at]
                    h = window_hashes(words, p, int(size))
                    q = np.searchsorted(hashes, h)
                    hit = hashes[np.minimum(q, last)] == h
                    if hit.any():
                        p, h, q = p[hit], h[hit], q[hit]
                        rows.append(row[at[hit]] + first)
                        grab = seg[p[:, None] + np.arange(int(size))]
                        windows.append(pa.StringArray.from_buffers(
                            len(p), pa.py_buffer(np.arange(len(p) + 1, dtype=np.int32) * np.int32(size)),
                            pa.py_buffer(grab.tobytes())))
                        probes.append(h)
                        where.append(q)
        if not rows:
            return np.zeros(0, dtype=np.int64), None, None, None
        return (np.concatenate(rows), pa.concat_arrays(windows), np.concatenate(probes),
                np.concatenate(where))
