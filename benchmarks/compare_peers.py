"""Peer side of bench_search.py: runs under benchmarks/.venv-compare (pandas 2, numpy 1-era
pins that pycanon and anjana need), never in deidflow's venv. Prints one JSON object.

    benchmarks/.venv-compare/bin/python benchmarks/compare_peers.py metrics OUT.csv QI,QI,... SA
    benchmarks/.venv-compare/bin/python benchmarks/compare_peers.py anjana ADULT_DIR QI,... K SUPP% [REPEAT]

`metrics`: pycanon's k, l, entropy l, recursive (c,l) and t-closeness of a released table
(deidflow's generalised output), for the agreement check, and how long pycanon took.
`anjana`: anjana's k-anonymity on adult (optionally replicated) with ARX's hierarchies: time,
rows suppressed, classes and the k pycanon measures on its output.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")


def metrics(path: str, qis: list[str], sa: str) -> dict:
    from pycanon import anonymity

    data = pd.read_csv(path, dtype=str, keep_default_na=False)
    t = time.perf_counter()
    out = {
        "k": int(anonymity.k_anonymity(data, qis)),
        "l_distinct": int(anonymity.l_diversity(data, qis, [sa])),
        "l_entropy_int": int(anonymity.entropy_l_diversity(data, qis, [sa])),
        "t_equal": float(anonymity.t_closeness(data, qis, [sa])),
    }
    c, l_rec = anonymity.recursive_c_l_diversity(data, qis, [sa])
    out["recursive_c_int"] = None if c is None or (isinstance(c, float) and np.isnan(c)) else int(c)
    out["recursive_l"] = int(l_rec)
    out["seconds"] = time.perf_counter() - t
    out["rows"] = len(data)
    out["classes"] = int(data.groupby(qis).ngroups)
    return out


def run_anjana(adult_dir: str, qis: list[str], k: int, supp: float, repeat: int) -> dict:
    import anjana.anonymity as an
    from pycanon import anonymity

    d = Path(adult_dir)
    data = pd.read_csv(d / "adult.csv", sep=";", dtype=str, keep_default_na=False)
    if repeat > 1:
        data = pd.concat([data] * repeat, ignore_index=True)
    hierarchies = {
        q: dict(pd.read_csv(d / f"adult_hierarchy_{q}.csv", sep=";", header=None, dtype=str))
        for q in qis
    }
    t = time.perf_counter()
    anon = an.k_anonymity(data, [], qis, k, supp, hierarchies)
    seconds = time.perf_counter() - t
    return {
        "seconds": seconds,
        "rows_in": len(data),
        "rows_out": len(anon),
        "suppressed": len(data) - len(anon),
        "classes": int(anon.groupby(qis).ngroups) if len(anon) else 0,
        "k": int(anonymity.k_anonymity(anon, qis)) if len(anon) else None,
    }


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "metrics":
        result = metrics(argv[1], argv[2].split(","), argv[3])
    elif mode == "anjana":
        repeat = int(argv[5]) if len(argv) > 5 else 1
        result = run_anjana(argv[1], argv[2].split(","), int(argv[3]), float(argv[4]), repeat)
    else:
        raise SystemExit(f"unknown mode {mode!r}: use metrics or anjana")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
