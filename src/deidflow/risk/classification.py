"""A classification-aware loss for the search: keep the recipient's target predictable.

ARX's classification metric (Iyengar 2002; ARX `MetricSDClassification` with its default
penalties of 1): within each equivalence class, a model that sees only the quasi-identifiers
can at best predict the class's majority target value. A record costs 1 when it is suppressed,
when its class has no single majority value (a tie), or when its target differs from the
majority; the loss is the cost summed over records, divided by the number of records (0 to 1).
The search then trades generalisation against predictability rather than against Iyengar's
loss. The metric is not monotone (merging a tied class with one that breaks the tie lowers its
cost), which is why ARX gives it no lower bound either.

Many nodes share a classification loss (often the whole upper lattice), so ties are broken by
Iyengar's loss: the search minimises CM + LM / (N + 1). LM is at most 1 and CM moves in steps
of 1/N, so this is CM first, then LM. The bound that prunes the lattice is the LM bound scaled
the same way (CM is never below 0), so the search stays exact.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from deidflow.errors import InputError
from deidflow.risk.classes import combine_keys


class ClassificationLoss:
    """The loss for one search; `labels` gives each search row's target value (codes)."""

    name = "classification"

    def __init__(self, labels: np.ndarray, target: str = "target") -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        self.target = target
        self.n_labels = int(self.labels.max()) + 1 if len(self.labels) else 1

    @classmethod
    def for_frequencies(cls, freq: pd.DataFrame, cols: list[str], subject: pd.DataFrame,
                        target: str, *, count: str, na: str) -> "ClassificationLoss":
        """Labels aligned with the rows the search sees: each row of `freq` (distinct values of
        `cols`, `count` rows each) repeated `count` times, its rows' target values in order.
        `subject` is the consented subject table (at least `cols` and `target`)."""
        key = subject[cols].astype("string").fillna(na)
        key["__target"] = pd.factorize(subject[target].astype("string").fillna(na), sort=True)[0]
        pairs = key.groupby([*cols, "__target"], sort=False).size().rename("__n").reset_index()
        rows = freq[cols].astype("string").reset_index(drop=True).reset_index(names="__row")
        pairs = pairs.merge(rows, on=cols, how="left")
        if pairs["__row"].isna().any() or int(pairs["__n"].sum()) != int(freq[count].sum()):
            raise InputError("the target's rows do not match the searched frequency table",
                             column=target, fix="rerun the release")
        pairs = pairs.sort_values(["__row", "__target"], kind="stable")
        labels = np.repeat(pairs["__target"].to_numpy(np.int64), pairs["__n"].to_numpy(np.int64))
        return cls(labels, target)

    # --- the search's hook (risk/search.py) --------------------------------------------------

    def prepare(self, ft, lat) -> np.ndarray:
        """Count (level-0 combination, label) pairs once; return the lower bound per node."""
        if len(self.labels) != len(ft.row_combo):
            raise InputError("the target has a value for a different number of rows than the "
                             "search", column=self.target, fix="rerun the release")
        pk = ft.row_combo.astype(np.int64) * self.n_labels + self.labels
        uniq, counts = np.unique(pk, return_counts=True)
        self.pair_combo = uniq // self.n_labels
        self.pair_label = uniq % self.n_labels
        self.pair_count = counts.astype(np.int64)
        self.ft = ft
        self.n = int(ft.n_records)
        self.weight = 1.0 / (self.n + 1)
        return lat.bound * self.weight

    def of(self, node, bad: np.ndarray, generalisation_loss: float, lat) -> float:
        """The loss of a passing node whose classes `bad` are suppressed."""
        return self.classification(node, bad, lat) + self.weight * generalisation_loss

    def classification(self, node, bad: np.ndarray, lat) -> float:
        q = len(lat.qis)
        levels = [int(v) for v in node.levels]
        combo_cols = [lat.qis[i].maps[levels[i]][self.ft.codes[:, i]] for i in range(q)]
        cols = [np.concatenate([node.codes[:, i].astype(np.int64), combo_cols[i].astype(np.int64)])
                for i in range(q)]
        key, _ = combine_keys(cols, [lat.qis[i].cardinality(levels[i]) for i in range(q)])
        j = len(node.sizes)
        node_key, combo_key = key[:j], key[j:]
        order = np.argsort(node_key, kind="stable")
        combo_class = order[np.searchsorted(node_key, combo_key, sorter=order)]
        cls = combo_class[self.pair_combo]
        # per (class, label) counts, then each class's largest and second largest
        pk = cls * self.n_labels + self.pair_label
        uniq, inv = np.unique(pk, return_inverse=True)
        cnt = np.bincount(inv, weights=self.pair_count).astype(np.int64)
        pc = uniq // self.n_labels
        srt = np.lexsort((-cnt, pc))
        pc, cnt = pc[srt], cnt[srt]
        first = np.ones(len(pc), dtype=bool)
        first[1:] = pc[1:] != pc[:-1]
        top1 = np.zeros(j, dtype=np.int64)
        top1[pc[first]] = cnt[first]
        second = np.zeros(len(pc), dtype=bool)
        second[1:] = first[:-1] & ~first[1:]
        top2 = np.zeros(j, dtype=np.int64)
        top2[pc[second]] = cnt[second]
        sizes = node.sizes.astype(np.int64)
        penalty = np.where(top1 > top2, sizes - top1, sizes)
        penalty = np.where(bad, sizes, penalty)
        return float(penalty.sum()) / max(self.n, 1)

    def describe(self, node, bad, lat, loss: float) -> dict:
        cm = self.classification(node, bad, lat)
        return {"metric": self.name, "target": self.target, "classification_loss": cm,
                "generalisation_loss": (loss - cm) / self.weight, "loss": loss}
