"""Search filters and orderings, compiled and run against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable

import asyncpg
import pytest
from runstream.ingest.errors import InvalidParameter
from runstream.ingest.store.search import SqlQuery, experiments_query, runs_query

EXPERIMENTS = [
    # experiment_id, name, creation_time, last_update_time, lifecycle_stage
    (1, "exp-one", 1000, 5000, "active"),
    (2, "exp-two", 2000, 2000, "active"),
    (3, "Exp-three", 3000, 3000, "deleted"),
]
EXPERIMENT_TAGS = [(1, "team", "vision"), (2, "team", "nlp")]
RUNS = [
    # run_uuid, experiment_id, name, user_id, status, start, end, lifecycle_stage
    ("a", 1, "alpha", "ann", "FINISHED", 100, 200, "active"),
    ("b", 1, "beta", "bob", "FAILED", 200, None, "active"),
    ("c", 1, "gamma", "ann", "RUNNING", 300, None, "active"),
    ("d", 1, "Delta run", "bob", "FINISHED", 300, 350, "active"),
    ("e", 1, "eps", "ann", "KILLED", 400, 450, "deleted"),
    ("f", 2, "zeta", "ann", "FINISHED", 50, 60, "active"),
]
PARAMS = [
    ("a", "lr", "0.1"),
    ("a", "opt", "adam"),
    ("b", "lr", "0.01"),
    ("b", "opt", "sgd"),
    ("c", "lr", "0.1"),
    ("d", "opt", "Adam"),
    ("e", "lr", "0.1"),
]
TAGS = [("a", "env", "prod"), ("b", "env", "dev"), ("d", "env", "prod")]
TAGS += [("d", "my tag", "x y"), ("c", "mlflow.source.type", "LOCAL")]
METRICS = [
    ("a", "loss", 0.5),
    ("a", "acc", 0.9),
    ("b", "loss", 0.25),
    ("c", "loss", math.nan),
    ("c", "acc", 0.7),
    ("d", "my metric", 1e-3),
    ("f", "loss", 1.0),
]
DATASETS = [("ds1", 1, "mnist", "abc123"), ("ds2", 1, "cifar", "def456")]
INPUTS = [("a", "ds1", "train"), ("b", "ds1", "eval"), ("b", "ds2", "train")]

RUN = "(SELECT run_num FROM runs WHERE run_uuid = $1)"


async def _seed(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.executemany(
            "INSERT INTO experiments (experiment_id, name, artifact_location,"
            " creation_time, last_update_time, lifecycle_stage)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            [(e[0], e[1], f"mlflow-artifacts:/{e[0]}", *e[2:]) for e in EXPERIMENTS],
        )
        await connection.executemany(
            "INSERT INTO experiment_tags VALUES ($1, $2, $3)", EXPERIMENT_TAGS
        )
        await connection.executemany(
            "INSERT INTO runs (run_uuid, experiment_id, name, user_id, status,"
            " start_time, end_time, lifecycle_stage, artifact_uri)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            [(*r, f"mlflow-artifacts:/{r[1]}/{r[0]}/artifacts") for r in RUNS],
        )
        await connection.executemany(
            f"INSERT INTO params VALUES ({RUN}, $2, $3)", PARAMS
        )
        await connection.executemany(f"INSERT INTO tags VALUES ({RUN}, $2, $3)", TAGS)
        await _seed_metrics_and_inputs(connection)
    finally:
        await connection.close()


async def _seed_metrics_and_inputs(connection: asyncpg.Connection) -> None:
    keys = sorted({key for _, key, _ in METRICS})
    await connection.executemany(
        "INSERT INTO metric_keys (key) VALUES ($1)", [(key,) for key in keys]
    )
    await connection.executemany(
        f"INSERT INTO latest_metrics VALUES ({RUN},"
        " (SELECT key_id FROM metric_keys WHERE key = $2), 0, 0, $3)",
        METRICS,
    )
    await connection.executemany(
        "INSERT INTO datasets VALUES ($1, $2, $3, $4, 'local', '/data')", DATASETS
    )
    await connection.executemany(
        f"INSERT INTO run_inputs VALUES ({RUN}, $2, $3::jsonb)",
        [
            (run, dataset, json.dumps([{"key": "mlflow.data.context", "value": ctx}]))
            for run, dataset, ctx in INPUTS
        ],
    )


@pytest.fixture(scope="module")
def search_url(make_database: Callable[[], str]) -> str:
    """A fresh database holding the experiments and runs above."""
    url = make_database()
    asyncio.run(_seed(url))
    return url


async def _fetch(url: str, query: SqlQuery) -> list[object]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(query.sql, *query.args)
        uuids = dict(await connection.fetch("SELECT run_num, run_uuid FROM runs"))
    finally:
        await connection.close()
    if query.sql.startswith("SELECT r.run_num"):
        return [uuids[row[0]] for row in rows]
    return [row[0] for row in rows]


def _runs(
    filter_string: str = "",
    order_by: list[str] | None = None,
    *,
    experiment_ids: list[int] | None = None,
    view_type: str = "ACTIVE_ONLY",
    limit: int = 100,
    offset: int = 0,
) -> SqlQuery:
    return runs_query(
        filter_string=filter_string,
        order_by=order_by or [],
        experiment_ids=experiment_ids or [1],
        view_type=view_type,
        limit=limit,
        offset=offset,
    )


def _experiments(
    filter_string: str = "",
    order_by: list[str] | None = None,
    *,
    view_type: str = "ACTIVE_ONLY",
) -> SqlQuery:
    return experiments_query(
        filter_string=filter_string,
        order_by=order_by or [],
        view_type=view_type,
        limit=100,
        offset=0,
    )


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("filter_string", "expected"),
    [
        ("", ["c", "d", "b", "a"]),
        ("metrics.loss < 0.3", ["b"]),
        ("metrics.loss > 0.3", ["a"]),
        ("metrics.loss != 0.5", ["c", "b"]),
        ("metrics.loss >= -1e3", ["b", "a"]),
        ("metrics.`my metric` = 1e-3", ["d"]),
        ('metrics."my metric" <= 0.001', ["d"]),
        ("params.lr = '0.1'", ["c", "a"]),
        ('params.lr = "0.1"', ["c", "a"]),
        ("params.opt LIKE 'a%'", ["a"]),
        ("params.opt ILIKE 'a%'", ["d", "a"]),
        ("params.opt != 'adam'", ["d", "b"]),
        ("params.opt IS NULL", ["c"]),
        ("params.opt is not null", ["d", "b", "a"]),
        ("tags.env = 'prod' and params.lr = '0.1'", ["a"]),
        ("tags.`my tag` = 'x y'", ["d"]),
        ("tags.mlflow.source.type = 'LOCAL'", ["c"]),
        ("attributes.run_id IN ('a', 'b')", ["b", "a"]),
        ("run_id NOT IN ('a')", ["c", "d", "b"]),
        ("attributes.run_name = 'alpha'", ["a"]),
        ("`run name` LIKE '%ta%'", ["d", "b"]),
        ("status = 'FINISHED'", ["d", "a"]),
        ("user_id = 'ann'", ["c", "a"]),
        ("start_time >= 200", ["c", "d", "b"]),
        ("start_time > 1.5e2", ["c", "d", "b"]),
        ("created < 150", ["a"]),
        ("attributes.end_time > 100", ["d", "a"]),
        ("artifact_uri LIKE '%/a/%'", ["a"]),
        ("datasets.name = 'mnist'", ["b", "a"]),
        ("datasets.digest IN ('def456')", ["b"]),
        ("datasets.context = 'train'", ["b", "a"]),
        ("datasets.context = 'eval'", ["b"]),
        ("params.lr = '0.1' AND metrics.acc > 0.8", ["a"]),
    ],
)
async def test_filter_selects_runs(
    search_url: str, filter_string: str, expected: list[str]
) -> None:
    query = _runs(filter_string)

    found = await _fetch(search_url, query)

    assert found == expected


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("order_by", "expected"),
    [
        (["metrics.loss"], ["b", "a", "c", "d"]),
        (["metrics.loss DESC"], ["a", "b", "c", "d"]),
        (["params.lr ASC"], ["b", "c", "a", "d"]),
        (["params.lr DESC"], ["c", "a", "b", "d"]),
        (["tags.env"], ["b", "d", "a", "c"]),
        (["tags.`my tag`"], ["d", "c", "b", "a"]),
        (["start_time"], ["a", "b", "c", "d"]),
        (["created DESC"], ["c", "d", "b", "a"]),
        (["attributes.end_time DESC"], ["d", "a", "c", "b"]),
        (["run_name"], ["d", "a", "b", "c"]),
        (["`run name` DESC"], ["c", "b", "a", "d"]),
        (["status", "user_id DESC"], ["b", "d", "a", "c"]),
    ],
)
async def test_order_by_sorts_missing_values_last(
    search_url: str, order_by: list[str], expected: list[str]
) -> None:
    query = _runs(order_by=order_by)

    found = await _fetch(search_url, query)

    assert found == expected


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("offset", "expected"), [(0, ["c", "d"]), (2, ["b", "a"]), (4, [])]
)
async def test_pages_follow_the_default_order(
    search_url: str, offset: int, expected: list[str]
) -> None:
    query = _runs(limit=2, offset=offset)

    found = await _fetch(search_url, query)

    assert found == expected


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("view_type", "experiment_ids", "filter_string", "expected"),
    [
        ("DELETED_ONLY", [1], "", ["e"]),
        ("ALL", [1], "params.lr = '0.1'", ["e", "c", "a"]),
        ("ACTIVE_ONLY", [1, 2], "", ["c", "d", "b", "a", "f"]),
        ("ACTIVE_ONLY", [1, 2], "metrics.loss >= 1", ["f"]),
        ("ACTIVE_ONLY", [3], "", []),
    ],
)
async def test_view_type_and_experiments_bound_runs(
    search_url: str,
    view_type: str,
    experiment_ids: list[int],
    filter_string: str,
    expected: list[str],
) -> None:
    query = _runs(filter_string, experiment_ids=experiment_ids, view_type=view_type)

    found = await _fetch(search_url, query)

    assert found == expected


@pytest.mark.timeout(30)
async def test_quoted_values_travel_as_arguments(search_url: str) -> None:
    value = "x'); DROP TABLE runs; --"
    quoted = value.replace("'", "''")
    query = _runs(f"params.opt = '{quoted}'")

    found = await _fetch(search_url, query)

    assert found == []
    assert value in query.args
    assert "DROP" not in query.sql
    assert await _fetch(search_url, _runs()) == ["c", "d", "b", "a"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("view_type", "filter_string", "order_by", "expected"),
    [
        ("ACTIVE_ONLY", "", [], [0, 2, 1]),
        ("ACTIVE_ONLY", "name = 'exp-one'", [], [1]),
        ("ACTIVE_ONLY", "name LIKE 'exp-%'", [], [2, 1]),
        ("ACTIVE_ONLY", "name ILIKE 'EXP-%'", [], [2, 1]),
        ("ACTIVE_ONLY", "name != 'Default'", [], [2, 1]),
        ("ACTIVE_ONLY", "tags.team = 'vision'", [], [1]),
        ("ACTIVE_ONLY", "tags.team IS NULL", [], [0]),
        ("ACTIVE_ONLY", "tags.team IS NOT NULL", [], [2, 1]),
        ("ACTIVE_ONLY", "creation_time > 1500", [], [0, 2]),
        ("ACTIVE_ONLY", "last_update_time >= 5000", [], [0, 1]),
        ("ACTIVE_ONLY", "experiment_id = 1", [], [1]),
        ("ACTIVE_ONLY", "experiment_id IN ('1', '2')", [], [2, 1]),
        ("ACTIVE_ONLY", "attribute.experiment_id != '0'", [], [2, 1]),
        ("ACTIVE_ONLY", "experiment_id NOT IN ('0')", [], [2, 1]),
        ("DELETED_ONLY", "", [], [3]),
        ("ALL", "name ILIKE 'exp-%'", [], [3, 2, 1]),
        ("ALL", "", ["name"], [0, 3, 1, 2]),
        ("ACTIVE_ONLY", "", ["name DESC"], [2, 1, 0]),
        ("ACTIVE_ONLY", "", ["experiment_id DESC"], [2, 1, 0]),
        ("ACTIVE_ONLY", "", ["last_update_time"], [2, 1, 0]),
        ("ACTIVE_ONLY", "", ["creation_time ASC"], [1, 2, 0]),
    ],
)
async def test_experiment_search(
    search_url: str,
    view_type: str,
    filter_string: str,
    order_by: list[str],
    expected: list[int],
) -> None:
    query = _experiments(filter_string, order_by, view_type=view_type)

    found = await _fetch(search_url, query)

    assert found == expected


@pytest.mark.parametrize(
    ("filter_string", "message"),
    [
        (
            "metrics.loss >> 1",
            "filter \"metrics.loss >> 1\": expected a comparator at '>>'",
        ),
        (
            "params.x = 'a' AND metrics.y >> 1 AND tags.z = 'b'",
            "filter \"metrics.y >> 1\": expected a comparator at '>>'",
        ),
        (
            "params.x = 'a' OR params.y = 'b'",
            "filter \"params.x = 'a' OR params.y = 'b'\": expected AND at 'OR'",
        ),
        ("params.x = 'a' AND", "expected an identifier at end of input"),
        ("params.x = 'abc", "unterminated quote at ''abc'"),
        ("params.my-key = 'a'", "unexpected text at '-key = 'a''"),
        ("foo.x = '1'", "unknown identifier type 'foo'"),
        ("nope = 'x'", "unknown attribute 'nope'"),
        ("datasets.size = 'x'", "unknown dataset field 'size'"),
        ("params.x > 'a'", "comparator > is not valid for params"),
        ("metrics.loss LIKE '1'", "comparator LIKE is not valid for metrics"),
        ("metrics.loss IS NULL", "comparator IS NULL is not valid for metrics"),
        ("run_name IN ('a')", "comparator IN is not valid for run_name"),
        ("start_time LIKE '1'", "comparator LIKE is not valid for start_time"),
        ("params.x = 1", "expected a quoted string, got 1"),
        ("status = FINISHED", "expected a quoted string or a number at 'FINISHED'"),
        ("metrics.loss = 'a'", "expected a number, got 'a'"),
        ("run_id IN ()", "expected a quoted string or a number at ')'"),
        ("run_id IN ('a' 'b')", "expected ',' or ')' at ''b''"),
        ("run_id IN ('a', 1)", "expected a quoted string, got 1"),
    ],
)
def test_bad_run_filter_names_the_clause(filter_string: str, message: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        _runs(filter_string)

    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("order_by", "message"),
    [
        (
            ["metrics.loss UP"],
            "order_by \"metrics.loss UP\": expected ASC or DESC at 'UP'",
        ),
        (["datasets.name"], "unknown identifier type 'datasets'"),
        (["start_time", "created DESC"], "orders by the same field twice"),
        ([""], "expected an identifier at end of input"),
        (["nope"], "unknown attribute 'nope'"),
    ],
)
def test_bad_run_order_by_names_the_entry(order_by: list[str], message: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        _runs(order_by=order_by)

    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("filter_string", "order_by", "message"),
    [
        ("metrics.x = 1", [], "unknown identifier type 'metrics'"),
        ("name > 'a'", [], "comparator > is not valid for name"),
        ("experiment_id = 'abc'", [], "expected a number, got 'abc'"),
        ("", ["tags.team"], "unknown identifier type 'tags'"),
        ("", ["lifecycle_stage"], "unknown attribute 'lifecycle_stage'"),
    ],
)
def test_bad_experiment_search_is_rejected(
    filter_string: str, order_by: list[str], message: str
) -> None:
    with pytest.raises(InvalidParameter) as caught:
        _experiments(filter_string, order_by)

    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("view_type", "limit", "offset", "message"),
    [
        ("SOME", 1, 0, "view_type 'SOME' is not one of ACTIVE_ONLY, DELETED_ONLY, ALL"),
        ("ALL", -1, 0, "limit is -1, expected zero or more"),
        ("ALL", 1, -5, "offset is -5, expected zero or more"),
    ],
)
def test_bad_paging_is_rejected(
    view_type: str, limit: int, offset: int, message: str
) -> None:
    with pytest.raises(InvalidParameter, match=message):
        _runs(view_type=view_type, limit=limit, offset=offset)
