"""Building string columns from pools and numbers with Arrow kernels, one pass per column.

Faker is far too slow per row at these sizes; instead small pools are
indexed with numpy-drawn positions and pieces are joined element-wise by Arrow, which skips
null pieces, so an optional phrase is just a piece masked to null.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NULL = pa.scalar(None, pa.string())


def pool(values: Sequence[str] | np.ndarray) -> pa.Array:
    return pa.array(list(values), pa.string())


def pick(values: pa.Array, idx: np.ndarray) -> pa.Array:
    return values.take(pa.array(idx, pa.int64()))


def text(values: np.ndarray) -> pa.Array:
    """A numpy unicode array as an Arrow string array."""
    return pa.array(values.astype(str), pa.string()) if len(values) else pa.array([], pa.string())


def digits(values: np.ndarray, width: int = 0) -> pa.Array:
    """Integers as decimal strings, zero-padded to `width`."""
    out = pa.array(np.asarray(values, dtype=np.int64)).cast(pa.string())
    return pc.utf8_lpad(out, width, "0") if width else out


def join(*parts: pa.Array | str) -> pa.Array:
    """Element-wise concatenation; null pieces are skipped, plain str are literals."""
    return pc.binary_join_element_wise(*parts, "", null_handling="skip")


def when(mask: np.ndarray, value: pa.Array | str) -> pa.Array:
    """`value` where mask is true, else null (a piece `join` leaves out)."""
    if isinstance(value, str):
        value = pa.scalar(value, pa.string())
    return pc.if_else(pa.array(mask, pa.bool_()), value, NULL)


def choose(index: np.ndarray, *options: pa.Array | str) -> pa.Array:
    """Per row, the option numbered `index` (literals broadcast)."""
    n = len(index)
    arrays = [pa.array([o] * n, pa.string()) if isinstance(o, str) else o for o in options]
    return pc.choose(pa.array(np.asarray(index, dtype=np.int8)), *arrays)


def slice_(values: pa.Array, start: int, stop: int) -> pa.Array:
    return pc.utf8_slice_codeunits(values, start, stop)
