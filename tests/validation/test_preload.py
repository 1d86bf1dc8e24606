"""`preload` imports the gate only when no other thread can be importing at the same time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys, threading
done = threading.Event()
other = threading.Thread(target=done.wait, name=sys.argv[1])
other.start()
from deidflow.validation import preload
imported = preload(quiet="consent-snapshot")
done.set()
print(json.dumps({"imported": imported, "gx": "great_expectations" in sys.modules}))
"""


@pytest.mark.parametrize("other,expected", [("consent-snapshot_0", True), ("prefect-events", False)])
def test_the_gate_is_imported_only_beside_quiet_threads(other, expected):
    out = subprocess.run([sys.executable, "-c", SCRIPT, other], cwd=REPO, capture_output=True,
                         text=True, timeout=120, env={"PYTHONPATH": str(REPO / "src"), "PATH": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"imported": expected, "gx": expected}
