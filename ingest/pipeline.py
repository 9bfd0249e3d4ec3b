"""From a validated batch to committed points: resolve ids, encode, write.

Both the native endpoint and MLflow's log-metric/log-batch routes end here,
so every metric point takes the same path into the writer.
"""

from __future__ import annotations

import hashlib
import uuid

from runstream.ingest.batch import Batch
from runstream.ingest.store import Store
from runstream.ingest.writer import EncodedSeries, ResolvedBatch, Writer


async def commit_batch(
    store: Store, writer: Writer, batch: Batch, *, run_field: str | None = None
) -> bool:
    """Commit a batch's points; returns True when the batch id was applied before.

    A missing or deleted run is refused naming ``run_field``, or by default
    the field of the first series that names the run (``series[2].run_id``).
    """
    fields: dict[str, str] = {}
    for index, series in enumerate(batch.series):
        fields.setdefault(series.run_id, run_field or f"series[{index}].run_id")
    runs = await store.metrics.active_runs(fields)
    keys = await store.metrics.key_ids([s.key for s in batch.series])
    encoded = [
        EncodedSeries.encode(
            run_num=runs[s.run_id],
            key_id=keys[s.key],
            label=s.label,
            steps=s.steps,
            timestamps=s.timestamps,
            values=s.values,
        )
        for s in batch.series
    ]
    return await writer.write(ResolvedBatch(batch.batch_id, encoded))


def content_batch_id(route: str, body: bytes) -> uuid.UUID:
    """A batch id for a request that carries none: the hash of its content.

    The mlflow client retries every POST; a retry has the same body, so it
    maps to the same id and is applied once. Two identical requests are
    identical points, which MLflow's own store collapses as well.
    """
    digest = hashlib.blake2b(route.encode() + b"\n" + body, digest_size=16).digest()
    return uuid.UUID(bytes=digest)
