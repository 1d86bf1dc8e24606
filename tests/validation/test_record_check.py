"""The gate's whole-record k agrees with an independent per-subject recomputation."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.validation.record_check import record_class_sizes
from tests.datasets.helpers import recheck_k


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 40), st.sampled_from([object, "string[pyarrow]"]),
       st.booleans())
def test_record_k_matches_the_reference(seed, n, dtype, others):
    rng = np.random.default_rng(seed)
    pid = [f"P{i}" for i in range(n)]
    subject = pd.DataFrame({"pid": pid, "sex": rng.choice(["F", "M", None], n)})
    visits = rng.integers(1, 4, n)
    enc = pd.DataFrame({"pid": np.repeat(pid, visits)})
    enc["kind"] = rng.choice(["a", "b"], len(enc))
    enc["band"] = rng.choice(["0-9", "10-19"], len(enc))
    if others:  # rows of subjects not in the subject table count for no one
        enc = pd.concat([enc, pd.DataFrame({"pid": ["Q1", "Q2"], "kind": ["c", "c"],
                                            "band": ["0-9", "0-9"]})], ignore_index=True)
    subject["pid"], enc["pid"] = subject["pid"].astype(dtype), enc["pid"].astype(dtype)
    sizes = record_class_sizes(subject, "pid", ["sex"], [(enc, "pid", ["kind", "band"])])
    assert sizes.sum() == n
    mine = enc[enc["pid"].isin(subject["pid"])]
    assert sizes.min() == recheck_k(subject, "pid", ["sex"], [(mine, ["kind", "band"])])
