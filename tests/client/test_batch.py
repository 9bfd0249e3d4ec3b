"""The client's binary batches are what the server's parser reads."""

from __future__ import annotations

import uuid

import numpy as np
from runstream.client.batch import BINARY_TYPE, Series, decode, points_in, seal
from runstream.ingest.batch import parse_batch


def _series(key: str, n: int, *, label: str = "") -> Series:
    return Series(
        run_id="a" * 32,
        key=key,
        label=label,
        steps=np.arange(n, dtype=np.int64),
        timestamps=np.full(n, 1_733_250_000_000, dtype=np.int64),
        values=np.linspace(0, 1, n),
    )


def test_server_parses_a_sealed_batch_as_sent() -> None:
    series = [_series("loss", 3), _series("acc", 2, label="rank-1")]

    batch = seal(series)
    parsed = parse_batch(batch.body, BINARY_TYPE)

    assert parsed.batch_id == batch.batch_id
    assert [(s.key, s.label, len(s)) for s in parsed.series] == [
        ("loss", "", 3),
        ("acc", "rank-1", 2),
    ]
    assert parsed.series[0].values.tolist() == [0.0, 0.5, 1.0]
    assert batch.points == 5 and batch.size == len(batch.body)


def test_decode_reads_back_ids_and_columns() -> None:
    batch_id = uuid.uuid4()
    body = seal([_series("loss", 4)], batch_id=batch_id).body

    decoded_id, series = decode(body)

    assert decoded_id == batch_id
    assert series[0].steps.tolist() == [0, 1, 2, 3]
    assert points_in(body) == 4


def test_non_finite_values_survive_encoding() -> None:
    series = _series("loss", 3)
    series.values = np.array([np.nan, np.inf, -np.inf])

    parsed = parse_batch(seal([series]).body, BINARY_TYPE)

    values = parsed.series[0].values
    assert np.isnan(values[0]) and values[1] == np.inf and values[2] == -np.inf
