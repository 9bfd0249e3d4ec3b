"""Sealing a run's buffer: grouping by key, and bad points dropped alone."""

from __future__ import annotations

import logging
from collections import deque

import pytest
from runstream.client.buffer import RunBuffer, split
from runstream.client.report import Failures

NOW = 1_733_250_000.0


@pytest.fixture
def buffer() -> RunBuffer:
    return RunBuffer("r" * 32, "rank-0", deque())


def test_points_are_grouped_by_key_in_logged_order(buffer: RunBuffer) -> None:
    items = [("loss", 0.5, 1, NOW), ("acc", 0.1, 1, NOW), ("loss", 0.4, 2, NOW + 1)]

    series = split(buffer, items, Failures("test"))

    assert [(s.key, s.label) for s in series] == [("loss", "rank-0"), ("acc", "rank-0")]
    assert series[0].values.tolist() == [0.5, 0.4]
    assert series[0].steps.tolist() == [1, 2]
    assert series[0].timestamps.tolist() == [1_733_250_000_000, 1_733_250_001_000]


def test_missing_steps_default_to_zero(buffer: RunBuffer) -> None:
    items = [("loss", 1.0, None, NOW), ("loss", 2.0, 7, NOW)]

    (series,) = split(buffer, items, Failures("test"))

    assert series.steps.tolist() == [0, 7]


@pytest.mark.parametrize(
    ("bad", "kind"),
    [
        (("loss", "high", 2, NOW), "invalid value"),
        (("loss", None, 2, NOW), "invalid value"),
        (("loss", 0.3, "two", NOW), "invalid step"),
        (("loss", 0.3, 2, float("nan")), "invalid timestamp"),
        (("k" * 251, 0.3, 2, NOW), "invalid key"),
        (("a/../b", 0.3, 2, NOW), "invalid key"),
        ((["not", "hashable"], 0.3, 2, NOW), "invalid key"),
    ],
)
def test_one_bad_point_costs_only_itself(
    buffer: RunBuffer, bad: tuple, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    items = [("loss", 0.1, 1, NOW), bad, ("loss", 0.2, 3, NOW), ("acc", 0.9, 1, NOW)]
    failures = Failures("points dropped")

    with caplog.at_level(logging.WARNING):
        series = split(buffer, items, failures)

    kept = {s.key: s.values.tolist() for s in series}
    assert kept == {"loss": [0.1, 0.2], "acc": [0.9]}
    assert failures.counts() == {kind: 1}
    assert kind in caplog.text


def test_a_failure_kind_is_logged_once_and_counted_always(
    buffer: RunBuffer, caplog: pytest.LogCaptureFixture
) -> None:
    failures = Failures("points dropped")
    items = [("loss", "bad", i, NOW) for i in range(50)]

    with caplog.at_level(logging.WARNING):
        split(buffer, items, failures)
        split(buffer, items, failures)

    assert failures.counts() == {"invalid value": 100}
    assert caplog.text.count("invalid value") == 1


def test_numpy_scalars_are_numbers(buffer: RunBuffer) -> None:
    np = pytest.importorskip("numpy")
    items = [("loss", np.float32(0.5), np.int64(3), NOW)]

    (series,) = split(buffer, items, Failures("test"))

    assert series.values.tolist() == [0.5] and series.steps.tolist() == [3]
