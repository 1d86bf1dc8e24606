"""Small encoded tables for the risk tests, and an independent pandas reference.

The reference recomputes everything from decoded labels with `groupby`, sharing no code
with `deidflow.risk`, so agreement means the frequency-table arithmetic is right."""

from __future__ import annotations

import numpy as np
import pandas as pd

from deidflow.risk.encoding import EncodedQI, encode


def int_hierarchy(values: pd.Index, depth: int = 3) -> pd.DataFrame:
    """Integers generalised by halving: v, v//2, v//4, ..., then '*'."""
    v = pd.Series(values.astype(int), index=values)
    cols = {lvl: (v // (2**lvl)).astype(str) for lvl in range(depth)}
    cols[depth] = pd.Series("*", index=values)
    return pd.DataFrame(cols, index=values)


def encode_ints(name: str, values, depth: int = 3) -> EncodedQI:
    return encode(name, pd.Series(np.asarray(values)), lambda idx: int_hierarchy(idx, depth))


def decoded(qis, levels) -> pd.DataFrame:
    """The generalised table as labels (what a recipient would see)."""
    return pd.DataFrame({q.name: q.decode(levels.get(q.name, 0)) for q in qis})


def reference_classes(frame: pd.DataFrame, qi_names, sensitive: pd.Series | None = None):
    """Class sizes and (if sensitive) distinct / entropy per class, by pandas groupby."""
    g = frame.groupby(list(qi_names), sort=False, dropna=False)
    sizes = g.size()
    if sensitive is None:
        return sizes, None, None
    f = frame.assign(__s=np.asarray(sensitive))
    gs = f.groupby(list(qi_names), sort=False, dropna=False)["__s"]
    distinct = gs.nunique()

    def ent(s):
        p = s.value_counts(normalize=True).to_numpy()
        return float(-(p * np.log(p)).sum())

    entropy = gs.apply(ent)
    return sizes, distinct, entropy
