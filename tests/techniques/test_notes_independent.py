"""The scrubber on a slice of the held-out `eval` split of the independent notes
(benchmarks/zh_notes_independent.py): issue 15's targets, so that a regression shows in CI.

The split was measured once, whole, after the work it judges was frozen (README, "Evaluation
on an independent split"); nothing was tuned on it. The slice is its first notes, not a
chosen subset. With a few dozen identifiers of a rare type in the slice, one miss would
already put a 0.99 target out of reach, so each type may miss max(1, 1 %) of its mentions:
the target itself wherever a type has 100 mentions or more.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def results():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_notes_independent as bench
        import zh_notes_independent as gen
    finally:
        sys.path.remove(str(BENCHMARKS))
    notes = gen.generate("eval", 150)
    return {setting: bench.measure(notes, setting) for setting in bench.SETTINGS}, gen


@pytest.mark.parametrize("setting", ["sample policy", "scrub defaults"])
def test_every_identifier_type_is_caught(results, setting):
    res, gen = results
    kinds = res[setting]["kind"]
    assert set(kinds) == set(gen.IDENTIFIER_KINDS)  # the slice holds every type
    for kind, (n, ok) in kinds.items():
        assert n - ok <= max(1, math.floor(0.01 * n)), (kind, n, ok)
    n = sum(v[0] for v in kinds.values())
    assert sum(v[1] for v in kinds.values()) / n >= 0.99


@pytest.mark.parametrize("setting", ["sample policy", "scrub defaults"])
def test_names_are_caught_whatever_the_role(results, setting):
    res, gen = results
    roles = res[setting]["role"]
    assert set(roles) == set(gen.NAME_ROLES)
    for role, (n, ok) in roles.items():
        assert n - ok <= max(1, math.floor(0.02 * n)), (role, n, ok)


@pytest.mark.parametrize("setting", ["sample policy", "scrub defaults"])
def test_ordinary_clinical_words_survive(results, setting):
    res, _ = results
    keeps = res[setting]["keep"]
    n = sum(v[0] for v in keeps.values())
    assert n > 500
    assert sum(v[1] for v in keeps.values()) / n >= 0.99


def test_generator_spans_point_at_their_text_and_repeat(results):
    _, gen = results
    a, b = gen.generate("dev", 30), gen.generate("dev", 30)
    assert [n.text for n in a] == [n.text for n in b]
    assert {n.document for n in a} == set(gen.DOCUMENT_KINDS[:16])
    for note in a:
        for s in note.identifiers + note.ordinary:
            assert note.text[s.start:s.end] == s.text
    assert a[0].text != gen.generate("eval", 1)[0].text
