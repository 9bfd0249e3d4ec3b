"""A batch of metric points, and the native wire formats that carry it.

A batch is what travels in one request: the points of one or more series
(a run's metric key, optionally split by a per-process label such as the
rank), with a batch id that makes retries idempotent.

JSON (``Content-Type: application/json``)::

    {"batch_id": "6f1c...-uuid",
     "series": [{"run_id": "a1b2...", "key": "loss", "label": "rank-0",
                 "steps": [0, 1], "timestamps": [1733250000000, 1733250000001],
                 "values": [0.9, "NaN"]}]}

Binary (``Content-Type: application/vnd.runstream.batch``), the same batch
without text parsing::

    b"RSB1" | uint32 header length H | H bytes of JSON header |
    per series, in header order: n int64 steps, n int64 timestamps,
    n float64 values (all little-endian)

    header = {"batch_id": ..., "series": [{"run_id", "key", "label", "n"}]}

Timestamps are milliseconds since the epoch; values may be NaN or infinite
(JSON carries them as the strings "NaN", "Infinity", "-Infinity").
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

import numpy as np
import orjson
from runstream.ingest import validation
from runstream.ingest.errors import InvalidParameter

JSON_TYPE = "application/json"
BINARY_TYPE = "application/vnd.runstream.batch"
MAGIC = b"RSB1"
MAX_SERIES = 100_000
MAX_POINTS = 5_000_000

_HEADER_LENGTH = struct.Struct("<I")


@dataclass
class Series:
    """The points of one series in one batch, as numpy columns."""

    run_id: str
    key: str
    label: str
    steps: np.ndarray
    timestamps: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class Batch:
    batch_id: uuid.UUID
    series: list[Series]

    @property
    def points(self) -> int:
        return sum(len(s) for s in self.series)


def parse_batch(body: bytes, content_type: str) -> Batch:
    """Parse and validate a native batch; raises InvalidParameter naming the field."""
    if content_type == BINARY_TYPE:
        return _parse_binary(body)
    if content_type in (JSON_TYPE, ""):
        return _parse_json(body)
    raise InvalidParameter(
        f"Content-Type {content_type!r} is not supported; "
        f"use {JSON_TYPE} or {BINARY_TYPE}"
    )


def _parse_json(body: bytes) -> Batch:
    document = _load_json(body)
    batch_id = _batch_id(document)
    raw_series = _series_list(document)
    series = []
    for index, item in enumerate(raw_series):
        field = f"series[{index}]"
        if not isinstance(item, dict):
            raise InvalidParameter(f"{field} must be an object")
        columns = {}
        for name in ("steps", "timestamps", "values"):
            column = item.get(name)
            if not isinstance(column, list):
                raise InvalidParameter(f"{field}.{name} must be an array")
            columns[name] = column
        n = len(columns["values"])
        for name in ("steps", "timestamps"):
            if len(columns[name]) != n:
                raise InvalidParameter(
                    f"{field}.{name} has {len(columns[name])} items, values has {n}"
                )
        series.append(
            _series(
                field,
                item,
                steps=_int_column(f"{field}.steps", columns["steps"]),
                timestamps=_int_column(f"{field}.timestamps", columns["timestamps"]),
                values=_float_column(f"{field}.values", columns["values"]),
            )
        )
    return _checked(Batch(batch_id, series))


def _parse_binary(body: bytes) -> Batch:
    if len(body) < 8 or body[:4] != MAGIC:
        raise InvalidParameter("body does not start with the RSB1 magic")
    (header_length,) = _HEADER_LENGTH.unpack_from(body, 4)
    start = 8 + header_length
    if start > len(body):
        raise InvalidParameter(
            f"header length {header_length} runs past the body of {len(body)} bytes"
        )
    document = _load_json(body[8:start])
    batch_id = _batch_id(document)
    raw_series = _series_list(document)
    view = memoryview(body)
    series = []
    offset = start
    for index, item in enumerate(raw_series):
        field = f"series[{index}]"
        if not isinstance(item, dict):
            raise InvalidParameter(f"{field} must be an object")
        n = validation.parse_int(f"{field}.n", item.get("n"), minimum=0)
        end = offset + 24 * n
        if end > len(body):
            raise InvalidParameter(
                f"{field}.n is {n}, but the body ends {end - len(body)} bytes early"
            )
        steps = np.frombuffer(view, dtype="<i8", count=n, offset=offset)
        timestamps = np.frombuffer(view, dtype="<i8", count=n, offset=offset + 8 * n)
        values = np.frombuffer(view, dtype="<f8", count=n, offset=offset + 16 * n)
        offset = end
        series.append(_series(field, item, steps, timestamps, values))
    if offset != len(body):
        raise InvalidParameter(
            f"body has {len(body) - offset} bytes after the last series"
        )
    return _checked(Batch(batch_id, series))


def _load_json(data: bytes) -> dict:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidParameter(f"body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidParameter("body must be a JSON object")
    return document


def _batch_id(document: dict) -> uuid.UUID:
    raw = document.get("batch_id")
    try:
        return uuid.UUID(raw)
    except (TypeError, ValueError, AttributeError):
        raise InvalidParameter(f"batch_id {raw!r} is not a UUID") from None


def _series_list(document: dict) -> list:
    raw = document.get("series")
    if not isinstance(raw, list) or not raw:
        raise InvalidParameter("series must be a non-empty array")
    if len(raw) > MAX_SERIES:
        raise InvalidParameter(f"series has {len(raw)} items, at most {MAX_SERIES}")
    return raw


def _series(
    field: str,
    item: dict,
    steps: np.ndarray,
    timestamps: np.ndarray,
    values: np.ndarray,
) -> Series:
    if len(values) == 0:
        raise InvalidParameter(f"{field} has no points")
    if int(timestamps.min()) < 0:
        raise InvalidParameter(f"{field}.timestamps must be at least 0")
    return Series(
        run_id=validation.check_run_id(f"{field}.run_id", item.get("run_id")),
        key=validation.check_key(f"{field}.key", item.get("key")),
        label=validation.check_label(f"{field}.label", item.get("label")),
        steps=steps,
        timestamps=timestamps,
        values=values,
    )


def _int_column(field: str, column: list) -> np.ndarray:
    try:
        array = np.asarray(column)
    except (ValueError, OverflowError):
        raise InvalidParameter(f"{field} must hold integers") from None
    if array.dtype.kind == "i":
        return array.astype(np.int64, copy=False)
    if (
        array.dtype.kind == "f"
        and np.all(np.isfinite(array))
        and np.all(array == np.floor(array))
    ):
        return array.astype(np.int64)
    if array.dtype.kind == "u" and (len(array) == 0 or int(array.max()) < 2**63):
        return array.astype(np.int64)
    raise InvalidParameter(f"{field} must hold integers")


def _float_column(field: str, column: list) -> np.ndarray:
    try:
        return np.asarray(column, dtype=np.float64)
    except (ValueError, TypeError):
        pass
    # The slow path finds the offending item, and accepts the strings
    # MLflow's JSON mapping uses for NaN and infinities.
    return np.array(
        [validation.parse_double(f"{field}[{i}]", v) for i, v in enumerate(column)],
        dtype=np.float64,
    )


def _checked(batch: Batch) -> Batch:
    seen: dict[tuple[str, str, str], int] = {}
    for index, series in enumerate(batch.series):
        identity = (series.run_id, series.key, series.label)
        if identity in seen:
            raise InvalidParameter(
                f"series[{index}] repeats series[{seen[identity]}] "
                f"(run {series.run_id}, key {series.key!r}); merge their points"
            )
        seen[identity] = index
    if batch.points > MAX_POINTS:
        raise InvalidParameter(
            f"batch has {batch.points} points, at most {MAX_POINTS} are allowed"
        )
    return batch
