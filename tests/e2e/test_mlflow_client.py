"""The real mlflow client against the real server: what compatibility means."""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Iterator

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException

from tests.servers import ServerProcess


@pytest.fixture
def client(tracking_uri: str) -> Iterator[MlflowClient]:
    mlflow.set_tracking_uri(tracking_uri)
    yield MlflowClient(tracking_uri=tracking_uri)
    while mlflow.active_run():
        mlflow.end_run()
    # set_experiment is process-wide in mlflow (a global and an environment
    # variable for subprocesses); forget it between tests.
    mlflow.tracking.fluent._active_experiment_id = None
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def error_code(excinfo: pytest.ExceptionInfo[MlflowException]) -> str:
    return str(excinfo.value.error_code)


def test_fluent_run_round_trip(client: MlflowClient) -> None:
    mlflow.set_experiment(unique("fluent"))

    with mlflow.start_run(run_name="first") as run:
        mlflow.log_param("alpha", 0.5)
        mlflow.log_params({"beta": 1, "gamma": "x"})
        mlflow.set_tag("team", "ingest")
        mlflow.set_tags({"a": "1", "b": "2"})
        for step in range(10):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"acc": 0.75, "f1": 0.5}, step=3)

    fetched = client.get_run(run.info.run_id)
    assert fetched.info.status == "FINISHED"
    assert fetched.info.run_name == "first"
    assert fetched.info.end_time is not None
    assert fetched.data.params == {"alpha": "0.5", "beta": "1", "gamma": "x"}
    assert fetched.data.tags["team"] == "ingest"
    assert fetched.data.tags["mlflow.runName"] == "first"
    assert fetched.data.metrics == {"loss": 0.1, "acc": 0.75, "f1": 0.5}
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [
        (s, 1.0 / (s + 1)) for s in range(10)
    ]


def test_log_batch_at_full_limits(client: MlflowClient) -> None:
    run = client.create_run(client.get_experiment_by_name("Default").experiment_id)
    now = int(time.time() * 1000)
    metrics = [Metric(f"m{i}", float(i), now, i) for i in range(800)]
    params = [Param(f"p{i}", str(i)) for i in range(100)]
    tags = [RunTag(f"t{i}", "v" * 8000) for i in range(100)]
    store = mlflow.tracking._tracking_service.utils._get_store()

    store.log_batch(run.info.run_id, metrics=metrics, params=params, tags=tags)
    store.log_batch(
        run.info.run_id,
        metrics=[Metric("full", float(i), now, i) for i in range(1000)],
        params=[],
        tags=[],
    )

    fetched = client.get_run(run.info.run_id).data
    assert len(fetched.metrics) == 801
    assert len(fetched.params) == 100
    assert fetched.tags["t99"] == "v" * 8000
    assert fetched.metrics["full"] == 999.0
    assert len(client.get_metric_history(run.info.run_id, "full")) == 1000


@pytest.mark.parametrize(
    ("metrics", "params", "tags"),
    [(1001, 0, 0), (0, 101, 0), (0, 0, 101), (900, 100, 1)],
    ids=["metrics", "params", "tags", "total"],
)
def test_batch_over_the_limit_is_refused_whole(
    client: MlflowClient, metrics: int, params: int, tags: int
) -> None:
    run = client.create_run("0")
    now = int(time.time() * 1000)
    store = mlflow.tracking._tracking_service.utils._get_store()

    with pytest.raises(MlflowException) as excinfo:
        store.log_batch(
            run.info.run_id,
            metrics=[Metric(f"m{i}", 1.0, now, 0) for i in range(metrics)],
            params=[Param(f"p{i}", "1") for i in range(params)],
            tags=[RunTag(f"t{i}", "1") for i in range(tags)],
        )

    assert error_code(excinfo) == "INVALID_PARAMETER_VALUE"
    data = client.get_run(run.info.run_id).data
    assert data.metrics == {} and data.params == {}


def test_search_runs_filters_orders_and_pages(client: MlflowClient) -> None:
    experiment_id = client.create_experiment(unique("search"))
    for i in range(7):
        run = client.create_run(experiment_id, run_name=f"r{i}")
        client.log_metric(run.info.run_id, "loss", 1.0 - i / 10, step=0)
        client.log_param(run.info.run_id, "depth", str(i % 3))
        client.set_tag(run.info.run_id, "parity", "even" if i % 2 == 0 else "odd")

    by_param = client.search_runs(
        [experiment_id], filter_string="metrics.loss < 0.75 and params.depth = '1'"
    )
    by_tag = client.search_runs(
        [experiment_id],
        filter_string="metrics.loss < 0.75 and tags.parity = 'odd'",
        order_by=["metrics.loss DESC"],
    )
    assert [r.info.run_name for r in by_param] == ["r4"]
    assert [r.info.run_name for r in by_tag] == ["r3", "r5"]

    pages, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id],
            order_by=["params.depth ASC", "metrics.loss ASC"],
            max_results=3,
            page_token=token,
        )
        pages.append([r.info.run_name for r in page])
        token = page.token
        if not token:
            break
    assert pages == [["r6", "r3", "r0"], ["r4", "r1", "r5"], ["r2"]]

    frame = mlflow.search_runs(
        experiment_ids=[experiment_id], filter_string="params.depth = '0'"
    )
    assert sorted(frame["tags.mlflow.runName"]) == ["r0", "r3", "r6"]


def test_delete_and_restore_run(client: MlflowClient) -> None:
    experiment_id = client.create_experiment(unique("lifecycle"))
    run = client.create_run(experiment_id)
    run_id = run.info.run_id

    client.delete_run(run_id)

    assert client.get_run(run_id).info.lifecycle_stage == "deleted"
    assert client.search_runs([experiment_id]) == []
    deleted = client.search_runs([experiment_id], run_view_type=ViewType.DELETED_ONLY)
    assert [r.info.run_id for r in deleted] == [run_id]
    with pytest.raises(MlflowException) as excinfo:
        client.log_metric(run_id, "loss", 1.0)
    assert error_code(excinfo) == "INVALID_PARAMETER_VALUE"

    client.restore_run(run_id)

    client.log_metric(run_id, "loss", 1.0)
    assert client.get_run(run_id).data.metrics == {"loss": 1.0}
    assert [r.info.run_id for r in client.search_runs([experiment_id])] == [run_id]


def test_experiment_lifecycle(client: MlflowClient) -> None:
    name = unique("exp")
    assert client.get_experiment_by_name(name) is None

    experiment_id = client.create_experiment(name, tags={"owner": "me"})
    with pytest.raises(MlflowException) as excinfo:
        client.create_experiment(name)
    assert error_code(excinfo) == "RESOURCE_ALREADY_EXISTS"

    client.rename_experiment(experiment_id, name + "-renamed")
    client.set_experiment_tag(experiment_id, "stage", "dev")
    experiment = client.get_experiment(experiment_id)
    assert experiment.name == name + "-renamed"
    assert experiment.tags == {"owner": "me", "stage": "dev"}
    assert experiment.artifact_location.endswith(f"/{experiment_id}")

    client.delete_experiment(experiment_id)
    assert client.get_experiment(experiment_id).lifecycle_stage == "deleted"
    names = [
        e.name for e in client.search_experiments(filter_string=f"name LIKE '{name}%'")
    ]
    assert names == []
    client.restore_experiment(experiment_id)
    names = [
        e.name for e in client.search_experiments(filter_string=f"name LIKE '{name}%'")
    ]
    assert names == [name + "-renamed"]


def test_default_experiment_exists(client: MlflowClient) -> None:
    default = client.get_experiment("0")

    with mlflow.start_run() as run:
        mlflow.log_metric("x", 1.0)

    assert default.name == "Default"
    assert client.get_run(run.info.run_id).info.experiment_id == "0"


@pytest.mark.parametrize(
    ("action", "code"),
    [
        (lambda c, r: c.get_run("0" * 32), "RESOURCE_DOES_NOT_EXIST"),
        (lambda c, r: c.log_metric("f" * 32, "loss", 1.0), "RESOURCE_DOES_NOT_EXIST"),
        (lambda c, r: c.log_param(r, "alpha", "2"), "INVALID_PARAMETER_VALUE"),
        (lambda c, r: c.log_metric(r, "k" * 251, 1.0), "INVALID_PARAMETER_VALUE"),
        (lambda c, r: c.log_metric(r, "../escape", 1.0), "INVALID_PARAMETER_VALUE"),
        (lambda c, r: c.log_param(r, "long", "v" * 6001), "INVALID_PARAMETER_VALUE"),
        (lambda c, r: c.get_experiment("424242"), "RESOURCE_DOES_NOT_EXIST"),
    ],
    ids=[
        "unknown-run",
        "metric-unknown-run",
        "param-conflict",
        "long-key",
        "path-key",
        "long-param",
        "unknown-experiment",
    ],
)
def test_bad_input_gets_mlflow_error_codes(client: MlflowClient, action, code) -> None:
    run = client.create_run("0")
    client.log_param(run.info.run_id, "alpha", "1")

    with pytest.raises(MlflowException) as excinfo:
        action(client, run.info.run_id)

    assert error_code(excinfo) == code
    assert client.get_run(run.info.run_id).data.params == {"alpha": "1"}


def test_nan_and_infinity_round_trip(client: MlflowClient) -> None:
    run = client.create_run("0")
    run_id = run.info.run_id

    client.log_metric(run_id, "nan", math.nan, step=0)
    client.log_metric(run_id, "pos", math.inf, step=0)
    client.log_metric(run_id, "neg", -math.inf, step=0)

    metrics = client.get_run(run_id).data.metrics
    assert math.isnan(metrics["nan"])
    assert metrics["pos"] == math.inf and metrics["neg"] == -math.inf
    assert math.isnan(client.get_metric_history(run_id, "nan")[0].value)


def test_latest_metric_follows_step_not_arrival(client: MlflowClient) -> None:
    run = client.create_run("0")
    run_id = run.info.run_id

    for step, value in [(5, 0.5), (9, 0.9), (2, 0.2)]:
        client.log_metric(run_id, "loss", value, step=step)

    assert client.get_run(run_id).data.metrics["loss"] == 0.9
    steps = sorted(m.step for m in client.get_metric_history(run_id, "loss"))
    assert steps == [2, 5, 9]


def test_restart_keeps_everything(make_database, tmp_path) -> None:
    server = ServerProcess(make_database(), artifacts_root=tmp_path / "artifacts")
    server.start()
    try:
        client = MlflowClient(tracking_uri=server.url)
        experiment_id = client.create_experiment("kept")
        run = client.create_run(experiment_id, run_name="durable")
        for step in range(100):
            client.log_metric(run.info.run_id, "loss", step / 100, step=step)
        client.log_param(run.info.run_id, "alpha", "0.1")
        client.set_terminated(run.info.run_id)

        assert server.stop() == 0
        server.start()

        fetched = client.get_run(run.info.run_id)
        assert fetched.info.status == "FINISHED"
        assert fetched.data.params == {"alpha": "0.1"}
        assert fetched.data.metrics == {"loss": 0.99}
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 100
        assert client.get_experiment_by_name("kept").experiment_id == experiment_id
    finally:
        server.stop()
