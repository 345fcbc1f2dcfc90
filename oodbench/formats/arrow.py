"""numpy <-> Arrow columns without pandas.

pyarrow's own conversions (``pa.array``, ``Array.to_numpy``) import pandas whenever it
is installed, to check whether their argument is a pandas object: half a second at the
start of every stage that touches Parquet. The score stage reads the feature index and
writes its score table through these helpers instead, which wrap or copy the column
buffers directly and import nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

#: the numpy dtype of each Arrow type these helpers handle
NUMPY_TYPES = {pa.int64(): np.dtype(np.int64), pa.float64(): np.dtype(np.float64)}


def column_values(table: pa.Table, name: str, arrow_type: pa.DataType) -> np.ndarray:
    """Column `name` of `table` as a new numpy array of `arrow_type` (int64 or float64);
    ValueError when it has empty (null) values, which no numpy array can hold."""
    column = table.column(name)
    if column.null_count:
        raise ValueError(f"column {name!r} has {column.null_count} empty values")
    if column.type != arrow_type:
        column = column.cast(arrow_type)  # another width or kind: a rare, slower path
    dtype = NUMPY_TYPES[arrow_type]
    out = np.empty(len(column), dtype)
    start = 0
    for chunk in column.chunks:
        n = len(chunk)
        offset = chunk.offset * dtype.itemsize
        out[start : start + n] = np.frombuffer(chunk.buffers()[1], dtype, n, offset)
        start += n
    return out


def numeric_array(values: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    """An Arrow array (int64 or float64) holding a copy of `values`."""
    data = np.ascontiguousarray(values, dtype=NUMPY_TYPES[arrow_type]).copy()
    return pa.Array.from_buffers(arrow_type, len(data), [None, pa.py_buffer(data)])


def string_array(values: Sequence[str]) -> pa.Array:
    """An Arrow string array of `values` (UTF-8)."""
    encoded = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    return pa.Array.from_buffers(pa.string(), len(encoded), buffers)
