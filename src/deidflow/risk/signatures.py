"""Each subject's record signature at a lattice node: what makes the patient-level search and
its report cheap.

A subject's record at a node is the set of generalised quasi-identifier combinations over
their rows (`risk.record` stacks every table's rows, other tables' columns "absent"). The rows
fall into blocks, one per table, and within a block the other blocks' quasi-identifiers are
constant; so the record is the disjoint union of one set per block, and a block's set depends
only on that block's own levels. A block's per-subject signatures are therefore computed once
per distinct levels of its own quasi-identifiers and reused by every lattice node sharing them
(the search visits many nodes that differ only in another table's levels), by the chosen
node's report and by the per-table figures. A node then costs one addition per block and one
hash factorisation over the subjects, instead of a sort over every stacked row.

Within a block the distinct (subject, level-0 combination) pairs are found once. At a node a
subject's part of the signature is:
- one 64-bit mix of its class, when no subject has two distinct combinations in the block (the
  subject table: one row each), with no de-duplication at all;
- the exact bit mask of its classes, hashed once, when the block has at most 64 classes at
  these levels (an OR per subject: no sort);
- otherwise the wrapping sum of 64-bit mixes of its distinct classes, de-duplicated by a sort.
The signature is the sum of the blocks' parts; equal records give equal signatures, and unequal
ones collide with probability about n²/2⁶⁴. Classes are numbered in order of each one's first
subject, so the numbering does not depend on the signatures' values.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from deidflow.errors import InputError
from deidflow.risk.classes import FrequencyTable, _mix64, frequency_table, group
from deidflow.risk.encoding import EncodedQI

# Block signatures kept per block (each n_subjects × 8 bytes): enough for the distinct levels
# of one table that a search visits in a row, small beside the rows themselves.
_CACHE = 12
# Up to this many classes in a block, a subject's set is an exact bit mask (one word).
_MASK_CLASSES = 64
# Classes ids stay below this, so that (block, class) pairs mix to distinct inputs.
_BLOCK_SHIFT = np.uint64(40)


@dataclass(frozen=True)
class _Block:
    qi_index: tuple[int, ...]  # positions of the block's own quasi-identifiers
    qis: tuple[EncodedQI, ...]  # those quasi-identifiers over the block's rows only
    ft: FrequencyTable  # distinct level-0 combinations of the block's rows
    pair_subject: np.ndarray  # (p,) distinct (subject, combination) pairs, by subject
    pair_combo: np.ndarray  # (p,)
    starts: np.ndarray  # first pair of each subject present in the block
    owners: np.ndarray  # that subject
    single: bool  # no subject has two distinct combinations in the block
    salt: np.uint64


class RecordSignatures:
    """Per-subject record signatures of stacked rows, by block, cached by block levels.

    `subject`: each row's subject as dense codes 0..n_subjects-1. `blocks`: (first row, end
    row, quasi-identifier names) per block; the blocks must cover the rows in order, and every
    quasi-identifier not named by a block must be constant over that block's rows (checked).
    Without blocks, all rows and quasi-identifiers form one block."""

    def __init__(self, qis: Sequence[EncodedQI], subject: np.ndarray, n_subjects: int,
                 blocks: Sequence[tuple[int, int, Sequence[str]]] | None = None) -> None:
        self.qis = list(qis)
        self.n_subjects = int(n_subjects)
        n = len(subject)
        names = [q.name for q in self.qis]
        if blocks is None:
            blocks = [(0, n, names)]
        self._check(blocks, names, n)
        self._spans = [(int(lo), int(hi)) for lo, hi, _ in blocks]
        self.blocks = [self._block(b, lo, hi, [names.index(c) for c in cols], subject)
                       for b, (lo, hi, cols) in enumerate(blocks)]
        self._cache: list[OrderedDict] = [OrderedDict() for _ in self.blocks]

    def _check(self, blocks, names, n) -> None:
        edge = 0
        for lo, hi, cols in blocks:
            unknown = [c for c in cols if c not in names]
            if lo != edge or hi < lo or unknown:
                raise InputError(
                    "record blocks must cover the stacked rows in order and name only "
                    "quasi-identifiers", key="blocks",
                    fix="give (first row, end row, quasi-identifiers) per table, in row order")
            for q in self.qis:  # another block's column must be "absent" throughout
                if q.name not in cols and hi > lo and q.codes[lo:hi].min() != q.codes[lo:hi].max():
                    raise InputError(
                        f"varies over rows {lo}..{hi - 1}, which belong to a block that does "
                        "not name it", column=q.name,
                        fix="name each quasi-identifier in the block of the table it belongs to")
            edge = hi
        if edge != n:
            raise InputError("record blocks must cover the stacked rows in order", key="blocks",
                             fix="give (first row, end row, quasi-identifiers) per table")

    def _block(self, b: int, lo: int, hi: int, idx: list[int], subject: np.ndarray) -> _Block:
        from dataclasses import replace

        qis = tuple(replace(self.qis[i], codes=self.qis[i].codes[lo:hi]) for i in idx)
        subj = np.asarray(subject[lo:hi], dtype=np.int64)
        if qis and hi > lo:
            ft = frequency_table(qis)
            width = max(ft.n_combos, 1)
            # rows usually come grouped by subject: a stable sort of nearly sorted keys is
            # about one pass (np.unique's sort is several times slower here)
            pairs = np.sort(subj * width + ft.row_combo, kind="stable")
            pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])]
            pair_subject, pair_combo = pairs // width, pairs % width
        else:  # a block without quasi-identifiers of its own: every row alike
            ft = None
            pair_subject = np.unique(subj)
            pair_combo = np.zeros(len(pair_subject), dtype=np.int64)
        starts = np.flatnonzero(np.concatenate([[True], pair_subject[1:] != pair_subject[:-1]])) \
            if len(pair_subject) else np.zeros(0, dtype=np.int64)
        return _Block(qi_index=tuple(idx), qis=qis, ft=ft, pair_subject=pair_subject,
                      pair_combo=pair_combo, starts=starts, owners=pair_subject[starts],
                      single=len(starts) == len(pair_subject),
                      salt=np.uint64(b) << _BLOCK_SHIFT)

    def frequency_table(self) -> FrequencyTable:
        """The stacked rows' distinct level-0 combinations with their counts, from the
        blocks' (each block's other columns are constant), for the lattice's loss tables.
        Rows are not mapped to combinations (`row_combo` is empty)."""
        codes, counts = [], []
        for blk, (lo, hi) in zip(self.blocks, self._spans):
            if hi == lo:
                continue
            const = np.array([q.codes[lo] for q in self.qis], dtype=np.int32)
            m = blk.ft.n_combos if blk.ft is not None else 1
            part = np.tile(const, (m, 1))
            if blk.ft is not None:
                part[:, list(blk.qi_index)] = blk.ft.codes
                counts.append(blk.ft.counts)
            else:
                counts.append(np.array([hi - lo], dtype=np.int64))
            codes.append(part)
        q = len(self.qis)
        return FrequencyTable(
            names=tuple(x.name for x in self.qis),
            codes=np.concatenate(codes) if codes else np.zeros((0, q), dtype=np.int32),
            counts=np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64),
            row_combo=np.zeros(0, dtype=np.int64),
            n_records=int(sum(hi - lo for lo, hi in self._spans)))

    def has_rows(self, b: int) -> np.ndarray:
        """Whether each subject has a row in block `b`."""
        out = np.zeros(self.n_subjects, dtype=bool)
        out[self.blocks[b].owners] = True
        return out

    def block_signature(self, b: int, levels: Sequence[int]) -> np.ndarray:
        """Block `b`'s part of every subject's signature at a node's `levels` (one per
        quasi-identifier, in the order given at construction); 0 for subjects without rows in
        the block."""
        blk = self.blocks[b]
        key = tuple(int(levels[i]) for i in blk.qi_index)
        cache = self._cache[b]
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        out = self._compute(blk, key)
        cache[key] = out
        if len(cache) > _CACHE:
            cache.popitem(last=False)
        return out

    def _compute(self, blk: _Block, levels: tuple[int, ...]) -> np.ndarray:
        out = np.zeros(self.n_subjects, dtype=np.uint64)
        if not len(blk.pair_subject):
            return out
        if blk.ft is None:
            out[blk.owners] = _mix64(np.full(len(blk.owners), blk.salt, dtype=np.uint64))
            return out
        g = group(blk.ft, blk.qis, levels)
        cls = g.combo_class[blk.pair_combo]
        if blk.single:
            out[blk.owners] = _mix64(cls.astype(np.uint64) + blk.salt)
        elif g.n_classes <= _MASK_CLASSES:
            bits = np.left_shift(np.uint64(1), cls.astype(np.uint64))
            masks = np.bitwise_or.reduceat(bits, blk.starts)
            out[blk.owners] = _mix64(_mix64(masks) ^ blk.salt)
        else:
            width = max(g.n_classes, 1)
            # subjects are sorted already, the classes within a subject nearly so
            pairs = np.sort(blk.pair_subject * width + cls, kind="stable")
            pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])]
            owner = pairs // width
            starts = np.flatnonzero(np.concatenate([[True], owner[1:] != owner[:-1]]))
            out[owner[starts]] = np.add.reduceat(_mix64((pairs % width).astype(np.uint64)
                                                        + blk.salt), starts)
        return out

    def signature(self, levels: Sequence[int]) -> np.ndarray:
        """Every subject's record signature at `levels`."""
        sig = self.block_signature(0, levels).copy()
        for b in range(1, len(self.blocks)):
            sig += self.block_signature(b, levels)
        return sig

    def classes(self, levels: Sequence[int], subjects: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """(class of each subject, size of each class in subjects) at `levels`, classes
        numbered by first subject. `subjects`: a boolean mask or index of the subjects to
        group (default all)."""
        sig = self.signature(levels)
        return _factorised(sig if subjects is None else sig[subjects])

    def block_classes(self, b: int, levels: Sequence[int], subjects: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Classes of `subjects` (mask or index) by block `b`'s set alone."""
        return _factorised(self.block_signature(b, levels)[subjects])


def _factorised(sig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cls, uniques = pd.factorize(sig)
    return cls.astype(np.int64), np.bincount(cls, minlength=len(uniques)).astype(np.int64)


__all__ = ["RecordSignatures"]
