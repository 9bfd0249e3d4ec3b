"""Every route, fed wrong types and shapes: a 4xx naming the problem, never a 500."""

from __future__ import annotations

import itertools

import pytest
import requests

from tests.servers import ServerProcess

pytestmark = pytest.mark.timeout(120)
API = "/api/2.0/mlflow"
ROUTES = [
    ("POST", "/experiments/create", ["name", "artifact_location", "tags"]),
    ("GET", "/experiments/get", ["experiment_id"]),
    ("GET", "/experiments/get-by-name", ["experiment_name"]),
    (
        "POST",
        "/experiments/search",
        ["max_results", "filter", "order_by", "view_type", "page_token"],
    ),
    ("POST", "/experiments/update", ["experiment_id", "new_name"]),
    ("POST", "/experiments/delete", ["experiment_id"]),
    ("POST", "/experiments/set-experiment-tag", ["experiment_id", "key", "value"]),
    ("POST", "/runs/create", ["experiment_id", "run_name", "start_time", "tags"]),
    ("GET", "/runs/get", ["run_id"]),
    ("POST", "/runs/update", ["run_id", "status", "end_time", "run_name"]),
    ("POST", "/runs/delete", ["run_id"]),
    (
        "POST",
        "/runs/search",
        [
            "experiment_ids",
            "filter",
            "max_results",
            "order_by",
            "run_view_type",
            "page_token",
        ],
    ),
    ("POST", "/runs/log-parameter", ["run_id", "key", "value"]),
    ("POST", "/runs/set-tag", ["run_id", "key", "value"]),
    ("POST", "/runs/delete-tag", ["run_id", "key"]),
    ("POST", "/runs/log-metric", ["run_id", "key", "value", "timestamp", "step"]),
    ("POST", "/runs/log-batch", ["run_id", "metrics", "params", "tags"]),
    ("POST", "/runs/log-inputs", ["run_id", "datasets"]),
    (
        "GET",
        "/metrics/get-history",
        ["run_id", "metric_key", "max_results", "page_token"],
    ),
    (
        "GET",
        "/metrics/get-history-bulk-interval",
        ["run_ids", "metric_key", "max_results", "start_step", "end_step"],
    ),
]
WRONG_VALUES = [
    None,
    "",
    "x" * 300,
    -1,
    2**70,
    1.5,
    True,
    [],
    {},
    [{}],
    [1, "a"],
    {"key": 5},
    "NaN",
    "../x",
    "\x00",
]


@pytest.fixture(scope="module")
def run_id(server: ServerProcess) -> str:
    reply = requests.post(server.url + API + "/runs/create", json={})
    return str(reply.json()["run"]["info"]["run_id"])


def _send(
    server: ServerProcess, method: str, path: str, body: dict
) -> requests.Response:
    if method == "GET":
        params = {k: v for k, v in body.items() if isinstance(v, (str, int, float))}
        return requests.get(server.url + API + path, params=params, timeout=30)
    return requests.post(server.url + API + path, json=body, timeout=30)


@pytest.mark.parametrize(
    ("method", "path", "fields"), ROUTES, ids=[r[1] for r in ROUTES]
)
def test_wrong_values_get_4xx(
    server: ServerProcess, run_id: str, method, path, fields
) -> None:
    failures = []
    for field, value in itertools.product(fields, WRONG_VALUES):
        body = {"run_id": run_id, "experiment_id": "0", field: value}

        reply = _send(server, method, path, body)

        if (
            reply.status_code >= 500
            or "error_code" not in reply.text
            and reply.status_code >= 400
        ):
            failures.append(
                f"{field}={value!r}: {reply.status_code} {reply.text[:200]}"
            )
    assert failures == []


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"text"', b"{"])
def test_a_body_that_is_not_a_json_object_is_400(
    server: ServerProcess, body: bytes
) -> None:
    reply = requests.post(
        server.url + API + "/runs/create",
        data=body,
        headers={"Content-Type": "application/json"},
    )

    assert reply.status_code == 400
    assert reply.json()["error_code"] == "INVALID_PARAMETER_VALUE"


BATCH_ID = "6f1c2a1e-3b1d-4f7e-9d8e-1b2c3d4e5f60"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{}", "application/json"),
        (b'{"batch_id": 5, "series": []}', "application/json"),
        (b'{"batch_id": "%s", "series": "x"}' % BATCH_ID.encode(), "application/json"),
        (b'{"batch_id": "%s", "series": [5]}' % BATCH_ID.encode(), "application/json"),
        (
            b'{"batch_id": "%s", "series": [{"steps": {}}]}' % BATCH_ID.encode(),
            "application/json",
        ),
        (b"RSB1", "application/vnd.runstream.batch"),
        (b"RSB1\xff\xff\xff\xff{}", "application/vnd.runstream.batch"),
        (b"RSB1\x02\x00\x00\x00{}", "application/vnd.runstream.batch"),
        (b"XXXX\x02\x00\x00\x00{}", "application/vnd.runstream.batch"),
        (
            b'RSB1\x3b\x00\x00\x00{"batch_id": "%s", "series": [{"n": -1}]}'
            % BATCH_ID.encode(),
            "application/vnd.runstream.batch",
        ),
        (b"{}", "text/plain"),
    ],
)
def test_malformed_native_batches_get_4xx(
    server: ServerProcess, body: bytes, content_type: str
) -> None:
    reply = requests.post(
        server.url + "/api/runstream/v1/batches",
        data=body,
        headers={"Content-Type": content_type},
    )

    assert 400 <= reply.status_code < 500
    assert reply.json()["error_code"] == "INVALID_PARAMETER_VALUE"
