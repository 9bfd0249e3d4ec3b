"""Batches: the points of many series in one request, and their binary body.

The body is the server's native binary format
(``application/vnd.runstream.batch``)::

    b"RSB1" | uint32 header length H | H bytes of JSON header |
    per series, in header order: n int64 steps, n int64 timestamps,
    n float64 values (all little-endian)

    header = {"batch_id": "<uuid>", "series": [{"run_id", "key", "label", "n"}]}

The batch id travels inside the body, so a body written to the spool and
read back later is the same batch to the server: a retry, never a copy.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field

import numpy as np
import orjson
from runstream.client.spool import Record

BINARY_TYPE = "application/vnd.runstream.batch"
MAGIC = b"RSB1"

_HEADER_LENGTH = struct.Struct("<I")


@dataclass
class Series:
    """The points of one series (run, key, label) as numpy columns."""

    run_id: str
    key: str
    label: str
    steps: np.ndarray
    timestamps: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.values)


@dataclass(eq=False)
class SealedBatch:
    """An encoded batch on its way to the server.

    ``seq`` orders batches within one client, so that flush() can wait for
    everything sealed before it; spooled batches keep only their ``spool_ref``
    and drop the body from memory. ``runs`` are the run ids it carries.
    """

    batch_id: uuid.UUID
    body: bytes | None
    points: int
    size: int
    seq: int = 0
    attempts: int = 0
    runs: frozenset[str] = frozenset()
    spool_ref: Record | None = field(default=None, repr=False)


def encode(batch_id: uuid.UUID, series: list[Series]) -> bytes:
    """The binary body of a batch; series must be distinct (run, key, label)."""
    header = orjson.dumps(
        {
            "batch_id": str(batch_id),
            "series": [
                {"run_id": s.run_id, "key": s.key, "label": s.label, "n": len(s)}
                for s in series
            ],
        }
    )
    parts = [MAGIC, _HEADER_LENGTH.pack(len(header)), header]
    for s in series:
        parts.append(s.steps.astype("<i8", copy=False).tobytes())
        parts.append(s.timestamps.astype("<i8", copy=False).tobytes())
        parts.append(s.values.astype("<f8", copy=False).tobytes())
    return b"".join(parts)


def seal(series: list[Series], *, batch_id: uuid.UUID | None = None) -> SealedBatch:
    """Encode series into a batch with a fresh id."""
    batch_id = batch_id or uuid.uuid4()
    body = encode(batch_id, series)
    return SealedBatch(
        batch_id=batch_id,
        body=body,
        points=sum(len(s) for s in series),
        size=len(body),
        runs=frozenset(s.run_id for s in series),
    )


def decode(body: bytes) -> tuple[uuid.UUID, list[Series]]:
    """Read back a body this module encoded; raises ValueError if it is not one."""
    if len(body) < 8 or body[:4] != MAGIC:
        raise ValueError("body does not start with the RSB1 magic")
    (length,) = _HEADER_LENGTH.unpack_from(body, 4)
    header = orjson.loads(body[8 : 8 + length])
    offset = 8 + length

    series = []
    for item in header["series"]:
        n = int(item["n"])
        steps = np.frombuffer(body, dtype="<i8", count=n, offset=offset)
        stamps = np.frombuffer(body, dtype="<i8", count=n, offset=offset + 8 * n)
        values = np.frombuffer(body, dtype="<f8", count=n, offset=offset + 16 * n)
        offset += 24 * n
        series.append(
            Series(
                item["run_id"],
                item["key"],
                item.get("label") or "",
                steps,
                stamps,
                values,
            )
        )
    if offset != len(body):
        raise ValueError(f"body has {len(body) - offset} bytes after the last series")
    return uuid.UUID(header["batch_id"]), series


def points_in(body: bytes) -> int:
    """How many points a body carries, from its header alone."""
    (length,) = _HEADER_LENGTH.unpack_from(body, 4)
    header = orjson.loads(body[8 : 8 + length])
    return sum(int(item["n"]) for item in header["series"])
