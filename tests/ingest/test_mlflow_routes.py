"""MLflow routes over raw HTTP: retries, chart reads, inputs and /metrics."""

from __future__ import annotations

import time
import uuid

import mlflow
import numpy as np
import orjson
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient

from tests.servers import ServerProcess

pytestmark = pytest.mark.timeout(60)
API = "/api/2.0/mlflow"


def new_run(base: str) -> str:
    reply = requests.post(base + API + "/runs/create", json={"experiment_id": "0"})
    return str(reply.json()["run"]["info"]["run_id"])


def test_a_retried_log_batch_is_applied_once(server: ServerProcess) -> None:
    run_id = new_run(server.url)
    now = int(time.time() * 1000)
    body = orjson.dumps(
        {
            "run_id": run_id,
            "metrics": [
                {"key": "loss", "value": 1.0 / (s + 1), "timestamp": now, "step": s}
                for s in range(50)
            ],
        }
    )

    replies = [
        requests.post(
            server.url + API + "/runs/log-batch",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        for _ in range(3)
    ]

    assert [r.status_code for r in replies] == [200, 200, 200]
    history = MlflowClient(server.url).get_metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == list(range(50))


def test_history_pages_cover_the_series_once(server: ServerProcess) -> None:
    run_id = new_run(server.url)
    client = MlflowClient(server.url)
    now = int(time.time() * 1000)
    for start in range(0, 3000, 1000):
        client.log_batch(
            run_id,
            metrics=[
                mlflow.entities.Metric("loss", float(s), now, s)
                for s in range(start, start + 1000)
            ],
        )

    steps, token = [], None
    while True:
        query = {"run_id": run_id, "metric_key": "loss", "max_results": 700}
        if token:
            query["page_token"] = token
        page = requests.get(server.url + API + "/metrics/get-history", params=query)
        document = page.json()
        assert len(document.get("metrics", [])) <= 700
        steps += [m["step"] for m in document.get("metrics", [])]
        token = document.get("next_page_token")
        if not token:
            break

    assert steps == list(range(3000))


def test_bulk_interval_downsamples_keeping_first_and_last(
    server: ServerProcess,
) -> None:
    run_ids = [new_run(server.url) for _ in range(2)]
    client = MlflowClient(server.url)
    now = int(time.time() * 1000)
    for run_id in run_ids:
        client.log_batch(
            run_id,
            metrics=[
                mlflow.entities.Metric("acc", s / 1000, now, s) for s in range(1000)
            ],
        )

    reply = requests.get(
        server.url + API + "/metrics/get-history-bulk-interval",
        params={
            "run_ids": run_ids,
            "metric_key": "acc",
            "max_results": 11,
            "start_step": 100,
            "end_step": 600,
        },
    )

    points = reply.json()["metrics"]
    for run_id in run_ids:
        steps = [p["step"] for p in points if p["run_id"] == run_id]
        assert steps == list(range(100, 601, 50))


def test_bulk_interval_limits_are_checked(server: ServerProcess) -> None:
    reply = requests.get(
        server.url + API + "/metrics/get-history-bulk-interval",
        params={"run_ids": ["a" * 32], "metric_key": "acc", "max_results": 2501},
    )

    assert reply.status_code == 400
    assert "max_results" in reply.json()["message"]


def test_log_inputs_from_the_mlflow_client(server: ServerProcess) -> None:
    mlflow.set_tracking_uri(server.url)
    frame = pd.DataFrame({"x": np.arange(5), "y": np.arange(5) * 2.0})
    dataset = mlflow.data.from_pandas(frame, name="train-set")

    with mlflow.start_run() as run:
        mlflow.log_input(dataset, context="train")
        mlflow.log_input(dataset, context="train")

    inputs = MlflowClient(server.url).get_run(run.info.run_id).inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["train-set"]
    assert inputs[0].dataset.digest == dataset.digest
    assert {t.key: t.value for t in inputs[0].tags}["mlflow.data.context"] == "train"


def test_prometheus_metrics_count_committed_points(server: ServerProcess) -> None:
    def committed() -> float:
        text = requests.get(server.url + "/metrics").text
        line = next(
            line
            for line in text.splitlines()
            if line.startswith("runstream_points_committed_total")
        )
        return float(line.split()[-1])

    run_id = new_run(server.url)
    before = committed()

    MlflowClient(server.url).log_metric(run_id, "loss", 0.5)

    assert committed() == before + 1
    text = requests.get(server.url + "/metrics").text
    for name in (
        "runstream_group_size",
        "runstream_commit_seconds",
        "runstream_queue_points",
        "runstream_requests_rejected",
    ):
        assert name in text


def test_unknown_route_is_mlflow_endpoint_not_found(server: ServerProcess) -> None:
    reply = requests.get(server.url + API + "/no/such/thing")

    assert reply.status_code == 404
    assert reply.json()["error_code"] == "ENDPOINT_NOT_FOUND"


def test_probes(server: ServerProcess) -> None:
    assert requests.get(server.url + "/health").text == "OK"
    assert requests.get(server.url + "/version").text.count(".") == 2
    info = requests.get(server.url + "/api/3.0/mlflow/server-info").json()
    assert info["multipart_uploads_enabled"] is False


def test_a_client_chosen_run_id_creates_once(server: ServerProcess) -> None:
    run_id = uuid.uuid4().hex
    body = {"experiment_id": "0", "run_id": run_id, "run_name": "offline"}

    first = requests.post(server.url + API + "/runs/create", json=body)
    again = requests.post(server.url + API + "/runs/create", json=body)
    other = requests.post(
        server.url + API + "/experiments/create", json={"name": run_id}
    )
    elsewhere = requests.post(
        server.url + API + "/runs/create",
        json={**body, "experiment_id": other.json()["experiment_id"]},
    )
    bad = requests.post(
        server.url + API + "/runs/create", json={**body, "run_id": "-x"}
    )

    assert first.status_code == again.status_code == 200
    assert first.json()["run"]["info"]["run_id"] == run_id
    assert again.json()["run"]["info"] == first.json()["run"]["info"]
    assert elsewhere.status_code == 400
    assert elsewhere.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
    assert bad.status_code == 400 and "run_id" in bad.json()["message"]
