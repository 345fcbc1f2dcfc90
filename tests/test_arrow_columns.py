"""numpy <-> Arrow columns without pandas (oodbench/formats/arrow.py): the values equal
pyarrow's own conversions, across chunks, slices, casts and non-ASCII strings."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oodbench.formats.arrow import column_values, numeric_array, string_array


def test_column_values_across_chunks_and_sliced_chunks() -> None:
    first = pa.array(np.arange(10, dtype=np.int64)).slice(3, 5)  # a chunk with an offset
    second = pa.array(np.arange(100, 104, dtype=np.int64))
    table = pa.table({"a": pa.chunked_array([first, second])})
    got = column_values(table, "a", pa.int64())
    np.testing.assert_array_equal(got, [3, 4, 5, 6, 7, 100, 101, 102, 103])
    assert got.dtype == np.int64 and got.flags.writeable


def test_column_values_casts_other_types_and_refuses_nulls() -> None:
    table = pa.table(
        {"i32": pa.array([1, -2], pa.int32()), "f32": pa.array([0.5, 2], pa.float32())}
    )
    np.testing.assert_array_equal(column_values(table, "i32", pa.int64()), [1, -2])
    assert column_values(table, "f32", pa.float64()).tolist() == [0.5, 2.0]
    with pytest.raises(ValueError, match="column 'x' has 1 empty values"):
        column_values(pa.table({"x": pa.array([1, None], pa.int64())}), "x", pa.int64())


def test_built_arrays_round_trip_through_parquet(tmp_path) -> None:
    names = ["val", "val", "ImageNet-O", "", "naïve 画像"]
    scores = np.array([0.5, -1e300, np.inf, 0.0, 3.25])
    index = np.array([4, 2, 0, 7, 2**62])
    table = pa.Table.from_arrays(
        [
            string_array(names),
            numeric_array(index, pa.int64()),
            numeric_array(scores, pa.float64()),
        ],
        names=["dataset", "index", "score"],
    )
    pq.write_table(table, tmp_path / "t.parquet")
    back = pq.read_table(tmp_path / "t.parquet")
    assert back.column("dataset").to_pylist() == names
    assert back.column("index").to_pylist() == index.tolist()
    assert back.column("score").to_pylist() == scores.tolist()
    assert back.equals(pa.table({"dataset": names, "index": index, "score": scores}))


def test_the_helpers_import_no_pandas(tmp_path) -> None:
    code = f"""
import sys
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
from oodbench.formats.arrow import column_values, numeric_array, string_array
t = pa.Table.from_arrays([string_array(["a"]), numeric_array(np.ones(1), pa.float64())], names=["s", "x"])
pq.write_table(t, {str(tmp_path / "x.parquet")!r})
column_values(pq.ParquetFile({str(tmp_path / "x.parquet")!r}).read(), "x", pa.float64())
print("pandas" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
