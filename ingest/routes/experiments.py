"""MLflow's experiment RPCs."""

from __future__ import annotations

from aiohttp import web
from runstream.ingest import validation
from runstream.ingest.context import STORE
from runstream.ingest.routes.wire import (
    add_rpc,
    as_list,
    fields,
    json_response,
    page_response,
    page_size,
    required,
)

_VIEW_TYPES = {"ACTIVE_ONLY", "DELETED_ONLY", "ALL"}


def _tags(raw: object, field: str = "tags") -> list[tuple[str, str]]:
    pairs = []
    for index, item in enumerate(as_list(raw)):
        if not isinstance(item, dict):
            raise validation.InvalidParameter(f"{field}[{index}] must be an object")
        key = validation.check_key(f"{field}[{index}].key", item.get("key"))
        value = validation.check_string(
            f"{field}[{index}].value",
            item.get("value", ""),
            max_length=validation.MAX_EXPERIMENT_TAG_VALUE_LENGTH,
        )
        pairs.append((key, value))
    return pairs


def view_type(raw: object, field: str) -> str:
    value = str(raw or "ACTIVE_ONLY").upper()
    if value not in _VIEW_TYPES:
        raise validation.InvalidParameter(
            f"{field} {raw!r} is not one of {sorted(_VIEW_TYPES)}"
        )
    return value


async def create(request: web.Request) -> web.Response:
    body = await fields(request)
    name = validation.check_experiment_name("name", required(body, "name"))
    experiment_id = await request.app[STORE].experiments.create(
        name,
        artifact_location=body.get("artifact_location") or None,
        tags=_tags(body.get("tags")),
    )
    return json_response({"experiment_id": experiment_id})


async def get(request: web.Request) -> web.Response:
    body = await fields(request)
    experiment_id = validation.parse_experiment_id(
        "experiment_id", required(body, "experiment_id")
    )
    experiment = await request.app[STORE].experiments.get(experiment_id)
    return json_response({"experiment": experiment})


async def get_by_name(request: web.Request) -> web.Response:
    body = await fields(request)
    name = str(required(body, "experiment_name"))
    experiment = await request.app[STORE].experiments.get_by_name(name)
    return json_response({"experiment": experiment})


async def search(request: web.Request) -> web.Response:
    body = await fields(request)
    max_results = page_size(body, default=1000, upper=validation.MAX_SEARCH_RESULTS)
    experiments, token = await request.app[STORE].experiments.search(
        filter_string=str(body.get("filter") or ""),
        order_by=[str(o) for o in as_list(body.get("order_by"))],
        view_type=view_type(body.get("view_type"), "view_type"),
        max_results=max_results,
        page_token=body.get("page_token") or None,
    )
    return page_response("experiments", experiments, token)


async def update(request: web.Request) -> web.Response:
    body = await fields(request)
    experiment_id = validation.parse_experiment_id(
        "experiment_id", required(body, "experiment_id")
    )
    new_name = validation.check_experiment_name("new_name", required(body, "new_name"))
    await request.app[STORE].experiments.update_name(experiment_id, new_name)
    return json_response({})


def _lifecycle(stage: str):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.Response:
        body = await fields(request)
        experiment_id = validation.parse_experiment_id(
            "experiment_id", required(body, "experiment_id")
        )
        await request.app[STORE].experiments.set_lifecycle(experiment_id, stage)
        return json_response({})

    return handler


async def set_tag(request: web.Request) -> web.Response:
    body = await fields(request)
    experiment_id = validation.parse_experiment_id(
        "experiment_id", required(body, "experiment_id")
    )
    key = validation.check_key("key", required(body, "key"))
    value = validation.check_string(
        "value",
        body.get("value", ""),
        max_length=validation.MAX_EXPERIMENT_TAG_VALUE_LENGTH,
    )
    await request.app[STORE].experiments.set_tag(experiment_id, key, value)
    return json_response({})


async def delete_tag(request: web.Request) -> web.Response:
    body = await fields(request)
    experiment_id = validation.parse_experiment_id(
        "experiment_id", required(body, "experiment_id")
    )
    key = str(required(body, "key"))
    await request.app[STORE].experiments.delete_tag(experiment_id, key)
    return json_response({})


def setup_routes(app: web.Application) -> None:
    add_rpc(app, "POST", "/experiments/create", create)
    add_rpc(app, "GET", "/experiments/get", get)
    add_rpc(app, "GET", "/experiments/get-by-name", get_by_name)
    add_rpc(app, "POST", "/experiments/search", search)
    add_rpc(app, "GET", "/experiments/search", search)
    add_rpc(app, "POST", "/experiments/update", update)
    add_rpc(app, "POST", "/experiments/delete", _lifecycle("deleted"))
    add_rpc(app, "POST", "/experiments/restore", _lifecycle("active"))
    add_rpc(app, "POST", "/experiments/set-experiment-tag", set_tag)
    add_rpc(app, "POST", "/experiments/delete-experiment-tag", delete_tag)
