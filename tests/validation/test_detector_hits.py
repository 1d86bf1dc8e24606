"""The gate's generic detectors on Arrow text (`direct.detector_hits`) answer as the scrubber's
`find_identifiers` does, text for text: the gate calls the former on every released note, so
any difference would be a weaker (or stricter) gate."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.techniques.scrub import find_identifiers
from deidflow.validation import direct

# digits (ASCII and full-width), separators, an ID's check letter, e-mail characters, labels
# and the Chinese text around them
ALPHABET = "0123456789１２３４５６７８９０Xx -－@._a身份证号码电话手机：:，王小明。\u3000"
PIECES = st.sampled_from(["110101199003074518", "11010119900307451X", "13812345678", "１３８１２３４５６７８",
                          "110101900307451", "身份证号：", "wang.xm@example.cn", "138 1234 5678"])
TEXT = st.lists(st.one_of(st.text(alphabet=ALPHABET, max_size=12), PIECES), max_size=6).map("".join)


def _reference(texts: list[str | None]) -> np.ndarray:
    return np.asarray(find_identifiers(pd.Series(texts, dtype=object), None), dtype=bool)


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.one_of(TEXT, st.none()), min_size=1, max_size=25))
def test_detector_hits_equal_find_identifiers(texts):
    expected = _reference(texts)
    assert direct.detector_hits(pa.array(texts, type=pa.large_string())).tolist() == expected.tolist()
    # a chunked column, as the gate may hold one
    chunked = pa.chunked_array([pa.array(texts[:1], type=pa.string()), pa.array(texts[1:], type=pa.string())])
    assert direct.detector_hits(chunked).tolist() == expected.tolist()


def test_detector_hits_on_real_chinese_paragraphs(datasets):
    """Held out of any tuning: the MultiPriv Chinese paragraphs (each holds an ID number, a
    mobile and an e-mail), as written and with their identifiers cut out."""
    rows = json.loads((datasets / "zh_text" / "multipriv_person_975_zh.json").read_text("utf-8"))
    texts = [r["naturalParagraph"] for r in rows]
    cut = [t.replace(str(r["idCardNumbers"]), "[ID]").replace(r["phoneNumbers"], "[PHONE]")
           .replace(r["emailAddress"], "[EMAIL]") for t, r in zip(texts, rows)]
    both = texts + cut + [None]
    found = direct.detector_hits(pa.array(both, type=pa.string()))
    assert found.tolist() == _reference(both).tolist()
    assert found[:len(texts)].mean() > 0.99  # it is not vacuous: the real identifiers are found
    assert found.dtype == bool and found.flags.writeable
