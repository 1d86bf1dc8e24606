"""JSON-safe copies of computed values, for the run state, the validation report and the
signed manifest: the one `plain` every record goes through.

NumPy scalars and arrays become Python numbers and lists, tuples and sets lists, an object
with `as_dict()` its dict, and a non-finite float (an l-diversity ratio with no tail is
infinite) null: strict JSON readers, the manifest verifier among them, refuse `Infinity`.
Anything else JSON does not know is given as its text.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def plain(obj: Any) -> Any:
    """A JSON-safe copy of `obj` (see the module docstring)."""
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((plain(v) for v in obj), key=str)
    if isinstance(obj, np.ndarray):
        return [plain(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        return plain(obj.item())
    if hasattr(obj, "as_dict"):
        return plain(obj.as_dict())
    return str(obj)
