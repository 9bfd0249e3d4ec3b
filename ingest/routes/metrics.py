"""MLflow's metric RPCs: log-metric and log-batch (via the writer), history reads."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from aiohttp import web
from runstream.ingest import validation
from runstream.ingest.batch import Batch, Series
from runstream.ingest.context import STORE, WRITER
from runstream.ingest.errors import InvalidParameter
from runstream.ingest.pipeline import commit_batch, content_batch_id
from runstream.ingest.routes.runs import params_of, tags_of
from runstream.ingest.routes.wire import (
    add_rpc,
    as_list,
    fields,
    json_response,
    page_response,
    required,
    run_id_of,
)
from runstream.ingest.store.metrics import check_max_results

MAX_BULK_RUNS = 100
MAX_BULK_RESULTS = 2500


def _metrics_batch(route: str, body: bytes, run_id: str, metrics: list[Any]) -> Batch:
    """MLflow metrics of one request as a batch: one series per key, request order."""
    by_key: dict[str, list[tuple[int, int, float]]] = {}
    for index, item in enumerate(metrics):
        field = f"metrics[{index}]"
        if not isinstance(item, dict):
            raise InvalidParameter(f"{field} must be an object")
        key = validation.check_key(f"{field}.key", required(item, "key", field))
        value = validation.parse_double(
            f"{field}.value", required(item, "value", field)
        )
        timestamp = validation.parse_int(
            f"{field}.timestamp", required(item, "timestamp", field), minimum=0
        )
        step = validation.parse_int(f"{field}.step", item.get("step", 0) or 0)
        by_key.setdefault(key, []).append((step, timestamp, value))
    series = []
    for key, points in by_key.items():
        columns = list(zip(*points))
        series.append(
            Series(
                run_id=run_id,
                key=key,
                label="",
                steps=np.array(columns[0], dtype=np.int64),
                timestamps=np.array(columns[1], dtype=np.int64),
                values=np.array(columns[2], dtype=np.float64),
            )
        )
    return Batch(content_batch_id(route, body), series)


async def log_metric(request: web.Request) -> web.Response:
    body = await fields(request)
    run_id = validation.check_run_id("run_id", run_id_of(body))
    metric = {k: body.get(k) for k in ("key", "value", "timestamp", "step")}
    if metric["timestamp"] is None:
        metric["timestamp"] = int(time.time() * 1000)
    batch = _metrics_batch("log-metric", await request.read(), run_id, [metric])
    await commit_batch(
        request.app[STORE], request.app[WRITER], batch, run_field="run_id"
    )
    return json_response({})


async def log_batch(request: web.Request) -> web.Response:
    body = await fields(request)
    run_id = validation.check_run_id("run_id", run_id_of(body))
    metrics = as_list(body.get("metrics"))
    params = params_of(body.get("params"))
    tags = tags_of(body.get("tags"))
    _check_batch_limits(len(metrics), len(params), len(tags))
    batch = None
    if metrics:
        batch = _metrics_batch("log-batch", await request.read(), run_id, metrics)
    store = request.app[STORE]
    # MLflow's order: params (a changed value refuses the request before any
    # metric is written), then metrics, then tags.
    if params:
        await store.runs.log_params_and_tags(run_id, params=params, tags=[])
    if batch is not None:
        await commit_batch(store, request.app[WRITER], batch, run_field="run_id")
    if tags:
        await store.runs.log_params_and_tags(run_id, params=[], tags=tags)
    if not (params or tags or batch):
        await store.runs.check_active(run_id)
    return json_response({})


def _check_batch_limits(metrics: int, params: int, tags: int) -> None:
    limits = (
        ("metrics", metrics, validation.MAX_BATCH_METRICS),
        ("params", params, validation.MAX_BATCH_PARAMS),
        ("tags", tags, validation.MAX_BATCH_TAGS),
    )
    for field, count, limit in limits:
        if count > limit:
            raise InvalidParameter(
                f"A batch logging request can contain at most {limit} {field}. "
                f"Got {count} {field}. Please split up {field} across multiple "
                "requests and try again."
            )
    total = metrics + params + tags
    if total > validation.MAX_BATCH_ENTITIES:
        raise InvalidParameter(
            f"A batch logging request can contain at most "
            f"{validation.MAX_BATCH_ENTITIES} metrics, params and tags together. "
            f"Got {total}."
        )


async def get_history(request: web.Request) -> web.Response:
    query = await fields(request)
    run_id = run_id_of(query)
    key = str(required(query, "metric_key"))
    max_results = query.get("max_results")
    if max_results is not None:
        max_results = validation.parse_int("max_results", max_results)
        if max_results <= 0:
            raise InvalidParameter(f"max_results must be positive, got {max_results}")
    metrics, token = await request.app[STORE].metrics.history_page(
        run_id, key, max_results=max_results, page_token=query.get("page_token") or None
    )
    return page_response("metrics", metrics, token)


async def get_history_bulk_interval(request: web.Request) -> web.Response:
    query = await fields(request)
    run_ids = [str(r) for r in as_list(query.get("run_ids"))]
    if not run_ids or len(run_ids) > MAX_BULK_RUNS:
        raise InvalidParameter(
            f"run_ids must name 1 to {MAX_BULK_RUNS} runs, got {len(run_ids)}"
        )
    key = str(required(query, "metric_key"))
    start, end = query.get("start_step"), query.get("end_step")
    if (start is None) != (end is None):
        raise InvalidParameter("start_step and end_step must be given together")
    max_results = check_max_results(
        validation.parse_int("max_results", query.get("max_results", MAX_BULK_RESULTS)),
        upper=MAX_BULK_RESULTS,
    )
    metrics = await request.app[STORE].metrics.bulk_interval(
        run_ids,
        key,
        start_step=None if start is None else validation.parse_int("start_step", start),
        end_step=None if end is None else validation.parse_int("end_step", end),
        max_results=max_results,
    )
    return json_response({"metrics": metrics})


def setup_routes(app: web.Application) -> None:
    add_rpc(app, "POST", "/runs/log-metric", log_metric)
    add_rpc(app, "POST", "/runs/log-batch", log_batch)
    add_rpc(app, "GET", "/metrics/get-history", get_history)
    add_rpc(app, "GET", "/metrics/get-history-bulk-interval", get_history_bulk_interval)
