"""Counting missing, duplicated, unexpected and corrupted points exactly."""

from __future__ import annotations

import numpy as np
import pytest
from runstream.loadtest.drivers import Acks
from runstream.loadtest.measure import Histogram
from runstream.loadtest.verify import Expected, check
from runstream.loadtest.workload import point_values, seeds

SEED = int(seeds(3, 1, 4)[2])


def stored(steps: list[int]) -> tuple[np.ndarray, np.ndarray]:
    array = np.asarray(steps, dtype=np.int64)
    return array, point_values(np.uint64(SEED), array)


def expected(offered: int, acked: list[list[int]]) -> list[Expected]:
    return [Expected("r1", "k", SEED, offered, acked)]


def test_every_acked_point_stored_once_passes() -> None:
    result = check(expected(5, [[0, 5]]), {("r1", "k"): stored([4, 0, 1, 3, 2])})

    assert result.passed
    assert (result.missing, result.duplicated, result.stored) == (0, 0, 5)


@pytest.mark.parametrize(
    ("steps", "field", "count"),
    [
        ([0, 1, 3, 4], "missing", 1),
        ([0, 1, 2, 2, 2, 3, 4], "duplicated", 2),
        ([0, 1, 2, 3, 4, 9], "unexpected", 1),
    ],
)
def test_each_fault_is_counted_apart(steps: list[int], field: str, count: int) -> None:
    result = check(expected(5, [[0, 5]]), {("r1", "k"): stored(steps)})

    assert getattr(result, field) == count
    assert not result.passed


def test_changed_value_is_corrupted() -> None:
    steps, values = stored([0, 1, 2])
    values = values.copy()
    values[1] += 1.0

    result = check(expected(3, [[0, 3]]), {("r1", "k"): (steps, values)})

    assert result.corrupted == 1


def test_stored_without_ack_is_not_an_error() -> None:
    result = check(expected(4, [[0, 2]]), {("r1", "k"): stored([0, 1, 2, 3])})

    assert result.passed
    assert result.unacked_stored == 2


def test_series_never_stored_counts_every_acked_point_missing() -> None:
    result = check(expected(4, [[0, 4]]), {})

    assert result.missing == 4


def test_acks_merge_touching_ranges() -> None:
    acks = Acks(series=1)
    for start, stop in [(4, 6), (0, 2), (2, 4), (8, 9)]:
        acks.add(0, start, stop)

    assert acks.merged() == [[[0, 6], [8, 9]]]
    assert acks.points == 7


def test_histogram_quantiles_are_within_a_bucket() -> None:
    histogram = Histogram()
    for ns in range(1, 100_001):
        histogram.record(ns)

    assert histogram.quantile(0.5) == pytest.approx(50e-6, rel=0.13)
    assert histogram.quantile(0.99) == pytest.approx(99e-6, rel=0.13)
    assert Histogram.from_json(histogram.to_json()).summary() == histogram.summary()
