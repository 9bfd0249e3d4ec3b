"""Column codecs for the points of one history row (``metric_chunks``).

Each column is a ``bytea`` whose first byte names its codec:

    0 RAW      n little-endian int64 or float64
    1 LINEAR   int64 start, int64 stride: start + i * stride (steps 0, 1, 2, ...)
    2 OFFSET   int64 base, then n int32 offsets from base (timestamps in ms
               within 24 days of the first)
    3 FLOAT32  n float32 that widen to the logged float64 exactly (values
               that came from float32 tensors)

Encoding picks the smallest codec that reproduces the column exactly; it is
lossless for every input, NaN and infinities included.
"""

from __future__ import annotations

import struct

import numpy as np

RAW, LINEAR, OFFSET, FLOAT32 = 0, 1, 2, 3

_I64 = np.dtype("<i8")
_F64 = np.dtype("<f8")
_I32 = np.dtype("<i4")
_F32 = np.dtype("<f4")
_LINEAR = struct.Struct("<Bqq")
_BASE = struct.Struct("<Bq")
_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1


def encode_ints(column: np.ndarray) -> bytes:
    """Encode an int64 column (steps or timestamps)."""
    n = len(column)
    first = int(column[0])
    if n == 1:
        return _LINEAR.pack(LINEAR, first, 0)
    stride = int(column[1]) - first
    if n == 2 or _is_linear(column, first, stride):
        return _LINEAR.pack(LINEAR, first, stride)
    offsets = column - first
    if int(offsets.min()) >= _I32_MIN and int(offsets.max()) <= _I32_MAX:
        return _BASE.pack(OFFSET, first) + offsets.astype(_I32).tobytes()
    return bytes([RAW]) + column.astype(_I64, copy=False).tobytes()


def encode_floats(column: np.ndarray) -> bytes:
    """Encode a float64 column (values)."""
    with np.errstate(over="ignore", invalid="ignore"):
        narrow = column.astype(_F32)
    if np.array_equal(narrow.astype(_F64), column, equal_nan=True):
        return bytes([FLOAT32]) + narrow.tobytes()
    return bytes([RAW]) + column.astype(_F64, copy=False).tobytes()


def decode_ints(data: bytes, n: int) -> np.ndarray:
    """Decode an int64 column of ``n`` points."""
    codec = data[0]
    if codec == LINEAR:
        _, start, stride = _LINEAR.unpack_from(data)
        return start + stride * np.arange(n, dtype=_I64)
    if codec == OFFSET:
        _, base = _BASE.unpack_from(data)
        offsets = np.frombuffer(data, dtype=_I32, count=n, offset=_BASE.size)
        return offsets.astype(_I64) + base
    if codec == RAW:
        return np.frombuffer(data, dtype=_I64, count=n, offset=1)
    raise ValueError(f"unknown integer codec {codec}")


def decode_floats(data: bytes, n: int) -> np.ndarray:
    """Decode a float64 column of ``n`` points."""
    codec = data[0]
    if codec == FLOAT32:
        return np.frombuffer(data, dtype=_F32, count=n, offset=1).astype(_F64)
    if codec == RAW:
        return np.frombuffer(data, dtype=_F64, count=n, offset=1)
    raise ValueError(f"unknown float codec {codec}")


def _is_linear(column: np.ndarray, first: int, stride: int) -> bool:
    last = int(column[-1])
    if last != first + stride * (len(column) - 1):
        return False
    return bool(np.all(np.diff(column) == stride))
