"""Column codecs: lossless for every input, small for the common ones."""

from __future__ import annotations

import numpy as np
import pytest
from runstream.ingest import encoding

INTS = {
    "linear": np.arange(0, 5000, 5, dtype=np.int64),
    "single": np.array([42], dtype=np.int64),
    "offsets": 1_700_000_000_000
    + np.cumsum(np.random.default_rng(1).integers(0, 40, 999)),
    "wide": np.array([0, 2**40, -(2**50), 7], dtype=np.int64),
    "negative": np.array([-5, -3, 10, 2], dtype=np.int64),
}
FLOATS = {
    "float64": np.random.default_rng(2).random(1000),
    "float32": np.random.default_rng(3)
    .random(1000)
    .astype(np.float32)
    .astype(np.float64),
    "special": np.array([np.nan, np.inf, -np.inf, -0.0, 1e308, 5e-324]),
}


@pytest.mark.parametrize("name", INTS)
def test_int_columns_round_trip(name: str) -> None:
    column = INTS[name].astype(np.int64)

    decoded = encoding.decode_ints(encoding.encode_ints(column), len(column))

    np.testing.assert_array_equal(decoded, column)


@pytest.mark.parametrize("name", FLOATS)
def test_float_columns_round_trip_bit_for_bit(name: str) -> None:
    column = FLOATS[name]

    decoded = encoding.decode_floats(encoding.encode_floats(column), len(column))

    assert decoded.tobytes() == column.tobytes()


@pytest.mark.parametrize(
    ("column", "most_bytes"),
    [
        (INTS["linear"], 17),
        (INTS["offsets"].astype(np.int64), 9 + 4 * 999),
    ],
    ids=["linear-steps", "timestamps"],
)
def test_common_int_columns_are_small(column: np.ndarray, most_bytes: int) -> None:
    assert len(encoding.encode_ints(column)) <= most_bytes


def test_float32_values_take_four_bytes() -> None:
    assert len(encoding.encode_floats(FLOATS["float32"])) == 1 + 4 * 1000
