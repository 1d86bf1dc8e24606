"""idcolumns is the floor every id comparison stands on: it imports nothing from deidflow, and
reading inputs (io) no longer pulls in the consent gate (the io ↔ consent cycle is gone)."""

from __future__ import annotations

import subprocess
import sys


def _modules_after(import_line: str) -> set[str]:
    code = f"import sys; {import_line}; print('\\n'.join(m for m in sys.modules if m.startswith('deidflow')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_idcolumns_imports_nothing_from_deidflow():
    assert _modules_after("import deidflow.idcolumns") == {"deidflow", "deidflow.idcolumns"}


def test_reading_inputs_does_not_import_the_consent_package():
    loaded = _modules_after("import deidflow.io; from deidflow.io import check_links")
    assert not {m for m in loaded if m.startswith("deidflow.consent")}, loaded
