"""runstream's native endpoints: columnar batches in, whole series out.

POST /api/runstream/v1/batches   a batch (ingest/batch.py) -> after COMMIT
                                 {"batch_id", "points", "duplicate"}
GET  /api/runstream/v1/series    ?run_id=&key=[&label=] -> the whole series
                                 as columns, in step order; JSON, or the
                                 binary layout of a batch's columns when
                                 Accept is application/vnd.runstream.series
"""

from __future__ import annotations

import struct

import numpy as np
import orjson
from aiohttp import web
from runstream.ingest.batch import parse_batch
from runstream.ingest.context import STORE, WRITER
from runstream.ingest.pipeline import commit_batch
from runstream.ingest.protojson import double
from runstream.ingest.routes.wire import json_response, query_fields, required

PREFIX = "/api/runstream/v1"
SERIES_TYPE = "application/vnd.runstream.series"


async def post_batch(request: web.Request) -> web.Response:
    body = await request.read()
    batch = parse_batch(body, request.content_type if request.body_exists else "")
    duplicate = await commit_batch(request.app[STORE], request.app[WRITER], batch)
    return json_response(
        {
            "batch_id": str(batch.batch_id),
            "points": batch.points,
            "duplicate": duplicate,
        }
    )


async def get_series(request: web.Request) -> web.Response:
    query = query_fields(request)
    run_id = str(required(query, "run_id"))
    key = str(required(query, "key"))
    label = query.get("label")
    columns = await request.app[STORE].metrics.series(run_id, key, label=label)
    if SERIES_TYPE in request.headers.get("Accept", ""):
        header = orjson.dumps({"run_id": run_id, "key": key, "n": len(columns.values)})
        body = b"".join(
            [
                struct.pack("<I", len(header)),
                header,
                columns.steps.astype("<i8").tobytes(),
                columns.timestamps.astype("<i8").tobytes(),
                columns.values.astype("<f8").tobytes(),
            ]
        )
        return web.Response(body=body, content_type=SERIES_TYPE)
    values: object = columns.values
    if not np.all(np.isfinite(columns.values)):
        values = [double(v) for v in columns.values.tolist()]
    payload = {
        "run_id": run_id,
        "key": key,
        "steps": columns.steps,
        "timestamps": columns.timestamps,
        "values": values,
    }
    return web.Response(
        body=orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
        content_type="application/json",
    )


def setup_routes(app: web.Application) -> None:
    app.router.add_post(f"{PREFIX}/batches", post_batch)
    app.router.add_get(f"{PREFIX}/series", get_series)
