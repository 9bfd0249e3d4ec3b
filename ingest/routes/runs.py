"""MLflow's run RPCs: lifecycle, params, tags, inputs and search."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from runstream.ingest import validation
from runstream.ingest.context import STORE
from runstream.ingest.errors import InvalidParameter
from runstream.ingest.routes.experiments import view_type
from runstream.ingest.routes.wire import (
    add_rpc,
    as_list,
    fields,
    json_response,
    page_response,
    page_size,
    required,
    run_id_of,
)


def pairs(raw: object, field: str, *, max_value_length: int) -> list[tuple[str, str]]:
    """Params or tags: a list of {key, value}, checked against MLflow's rules."""
    result = []
    for index, item in enumerate(as_list(raw)):
        if not isinstance(item, dict):
            raise InvalidParameter(f"{field}[{index}] must be an object")
        key = validation.check_key(f"{field}[{index}].key", item.get("key"))
        value = item.get("value", "")
        if value is None:
            value = ""
        value = validation.check_string(
            f"{field}[{index}].value", str(value), max_length=max_value_length
        )
        result.append((key, value))
    return result


def params_of(raw: object, field: str = "params") -> list[tuple[str, str]]:
    params = pairs(raw, field, max_value_length=validation.MAX_PARAM_VALUE_LENGTH)
    seen: dict[str, str] = {}
    for index, (key, value) in enumerate(params):
        if key in seen and seen[key] != value:
            raise InvalidParameter(
                f"{field}[{index}].key {key!r} appears twice with different values"
            )
        seen[key] = value
    return list(seen.items())


def tags_of(raw: object, field: str = "tags") -> list[tuple[str, str]]:
    return pairs(raw, field, max_value_length=validation.MAX_TAG_VALUE_LENGTH)


async def create(request: web.Request) -> web.Response:
    body = await fields(request)
    experiment_id = validation.parse_experiment_id(
        "experiment_id", body.get("experiment_id", "0")
    )
    start_time = body.get("start_time")
    run = await request.app[STORE].runs.create(
        experiment_id=experiment_id,
        user_id=validation.check_string("user_id", body.get("user_id") or ""),
        run_name=_run_name(body),
        start_time=(
            validation.parse_int("start_time", start_time, minimum=0)
            if start_time is not None
            else None
        ),
        tags=tags_of(body.get("tags")),
        run_id=(
            validation.check_run_id("run_id", body["run_id"])
            if body.get("run_id")
            else None
        ),
    )
    return json_response({"run": run})


async def get(request: web.Request) -> web.Response:
    body = await fields(request)
    run = await request.app[STORE].runs.get(run_id_of(body))
    return json_response({"run": run})


async def update(request: web.Request) -> web.Response:
    body = await fields(request)
    end_time = body.get("end_time")
    status = body.get("status") or None
    info = await request.app[STORE].runs.update(
        run_id_of(body),
        status=None if status is None else validation.check_string("status", status),
        end_time=(
            validation.parse_int("end_time", end_time) if end_time is not None else None
        ),
        run_name=_run_name(body),
    )
    return json_response({"run_info": info})


def _run_name(body: dict[str, Any]) -> str | None:
    name = body.get("run_name") or None
    if name is None:
        return None
    return validation.check_string(
        "run_name", name, max_length=validation.MAX_RUN_NAME_LENGTH
    )


def _lifecycle(stage: str):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.Response:
        body = await fields(request)
        run_id = run_id_of(body)
        store = request.app[STORE]
        await store.runs.set_lifecycle(run_id, stage)
        store.metrics.forget_run(run_id)
        return json_response({})

    return handler


async def log_parameter(request: web.Request) -> web.Response:
    body = await fields(request)
    params = params_of([{"key": required(body, "key"), "value": body.get("value")}])
    await request.app[STORE].runs.log_params_and_tags(
        run_id_of(body), params=params, tags=[]
    )
    return json_response({})


async def set_tag(request: web.Request) -> web.Response:
    body = await fields(request)
    tags = tags_of([{"key": required(body, "key"), "value": body.get("value")}])
    await request.app[STORE].runs.log_params_and_tags(
        run_id_of(body), params=[], tags=tags
    )
    return json_response({})


async def delete_tag(request: web.Request) -> web.Response:
    body = await fields(request)
    await request.app[STORE].runs.delete_tag(
        run_id_of(body), str(required(body, "key"))
    )
    return json_response({})


async def log_inputs(request: web.Request) -> web.Response:
    body = await fields(request)
    run_id = run_id_of(body)
    datasets = [
        _dataset_input(i, item) for i, item in enumerate(as_list(body.get("datasets")))
    ]
    if datasets:
        await request.app[STORE].runs.log_inputs(run_id, datasets)
    else:
        await request.app[STORE].runs.check_active(run_id)
    return json_response({})


def _dataset_input(index: int, item: Any) -> dict[str, Any]:
    field = f"datasets[{index}]"
    if not isinstance(item, dict) or not isinstance(item.get("dataset"), dict):
        raise InvalidParameter(f"{field}.dataset must be an object")
    dataset = item["dataset"]
    limits = {"name": 500, "digest": 36, "source_type": 36, "source": 65535}
    for name, limit in limits.items():
        validation.check_string(
            f"{field}.dataset.{name}", required(dataset, name), max_length=limit
        )
    tags = [
        {"key": str(t.get("key")), "value": str(t.get("value", ""))}
        for t in as_list(item.get("tags"))
        if isinstance(t, dict)
    ]
    return {"dataset": dataset, "tags": tags}


async def search(request: web.Request) -> web.Response:
    body = await fields(request)
    max_results = page_size(body, default=1000, upper=validation.MAX_SEARCH_RESULTS)
    experiment_ids = [
        validation.parse_experiment_id(f"experiment_ids[{i}]", e)
        for i, e in enumerate(as_list(body.get("experiment_ids")))
    ]
    runs, token = await request.app[STORE].runs.search(
        experiment_ids=experiment_ids,
        filter_string=str(body.get("filter") or ""),
        order_by=[str(o) for o in as_list(body.get("order_by"))],
        view_type=view_type(body.get("run_view_type"), "run_view_type"),
        max_results=max_results,
        page_token=body.get("page_token") or None,
    )
    return page_response("runs", runs, token)


def setup_routes(app: web.Application) -> None:
    add_rpc(app, "POST", "/runs/create", create)
    add_rpc(app, "GET", "/runs/get", get)
    add_rpc(app, "POST", "/runs/update", update)
    add_rpc(app, "POST", "/runs/delete", _lifecycle("deleted"))
    add_rpc(app, "POST", "/runs/restore", _lifecycle("active"))
    add_rpc(app, "POST", "/runs/log-parameter", log_parameter)
    add_rpc(app, "POST", "/runs/set-tag", set_tag)
    add_rpc(app, "POST", "/runs/delete-tag", delete_tag)
    add_rpc(app, "POST", "/runs/log-inputs", log_inputs)
    add_rpc(app, "POST", "/runs/search", search)
