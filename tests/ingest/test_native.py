"""The native batch endpoint through a real server: durability and exactly-once."""

from __future__ import annotations

import asyncio
import math
import random
import struct
import uuid

import aiohttp
import asyncpg
import numpy as np
import orjson
import pytest

from tests.servers import ServerProcess

BINARY = "application/vnd.runstream.batch"
pytestmark = pytest.mark.timeout(120)


def binary_body(batch_id: str, series: list[dict]) -> bytes:
    header = orjson.dumps(
        {
            "batch_id": batch_id,
            "series": [
                {
                    "run_id": s["run_id"],
                    "key": s["key"],
                    "label": s.get("label"),
                    "n": len(s["values"]),
                }
                for s in series
            ],
        }
    )
    parts = [b"RSB1", struct.pack("<I", len(header)), header]
    for s in series:
        parts += [
            np.asarray(s["steps"], dtype="<i8").tobytes(),
            np.asarray(s["timestamps"], dtype="<i8").tobytes(),
            np.asarray(s["values"], dtype="<f8").tobytes(),
        ]
    return b"".join(parts)


def series(
    run_id: str,
    key: str,
    steps: list[int],
    values: list[float] | None = None,
    label: str | None = None,
) -> dict:
    return {
        "run_id": run_id,
        "key": key,
        "label": label,
        "steps": steps,
        "timestamps": [1_700_000_000_000 + s for s in steps],
        "values": values if values is not None else [s / 10 for s in steps],
    }


class Native:
    """A thin client of the native endpoints, for tests."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def create_run(self) -> str:
        async with self.session.post(
            self.base + "/api/2.0/mlflow/runs/create", json={"experiment_id": "0"}
        ) as reply:
            return str((await reply.json())["run"]["info"]["run_id"])

    async def post(self, body: bytes, *, binary: bool = True) -> tuple[int, dict, dict]:
        content_type = BINARY if binary else "application/json"
        async with self.session.post(
            self.base + "/api/runstream/v1/batches",
            data=body,
            headers={"Content-Type": content_type},
        ) as reply:
            return reply.status, await reply.json(), dict(reply.headers)

    async def read(self, run_id: str, key: str, label: str | None = None) -> dict:
        params = {"run_id": run_id, "key": key}
        if label is not None:
            params["label"] = label
        async with self.session.get(
            self.base + "/api/runstream/v1/series", params=params
        ) as reply:
            assert reply.status == 200, await reply.text()
            return dict(await reply.json())

    async def run(self, run_id: str) -> dict:
        async with self.session.get(
            self.base + "/api/2.0/mlflow/runs/get", params={"run_id": run_id}
        ) as reply:
            return dict((await reply.json())["run"])


@pytest.fixture
async def native(server: ServerProcess):
    async with aiohttp.ClientSession() as session:
        yield Native(session, server.url)


async def test_json_and_binary_batches_store_the_same_points(native: Native) -> None:
    run_id = await native.create_run()
    points = series(run_id, "loss", [0, 1, 2], [0.5, math.nan, math.inf])
    json_points = dict(points, key="loss_json", values=[0.5, "NaN", "Infinity"])

    status_b, reply_b, _ = await native.post(binary_body(str(uuid.uuid4()), [points]))
    status_j, reply_j, _ = await native.post(
        orjson.dumps({"batch_id": str(uuid.uuid4()), "series": [json_points]}),
        binary=False,
    )

    assert (status_b, status_j) == (200, 200)
    assert reply_b["points"] == reply_j["points"] == 3
    for key in ("loss", "loss_json"):
        stored = await native.read(run_id, key)
        assert stored["steps"] == [0, 1, 2]
        assert stored["values"] == [0.5, "NaN", "Infinity"]


async def test_retried_batch_id_writes_nothing_twice(native: Native) -> None:
    run_id = await native.create_run()
    body = binary_body(str(uuid.uuid4()), [series(run_id, "loss", list(range(100)))])

    first = await native.post(body)
    replies = await asyncio.gather(*(native.post(body) for _ in range(20)))

    assert first[0] == 200 and first[1]["duplicate"] is False
    assert all(status == 200 and reply["duplicate"] for status, reply, _ in replies)
    stored = await native.read(run_id, "loss")
    assert stored["steps"] == list(range(100))


async def test_concurrent_writers_keep_the_latest_by_step(native: Native) -> None:
    run_id = await native.create_run()
    steps = list(range(2000))
    random.Random(7).shuffle(steps)
    chunks = [steps[i : i + 50] for i in range(0, len(steps), 50)]

    replies = await asyncio.gather(
        *(
            native.post(binary_body(str(uuid.uuid4()), [series(run_id, "loss", c)]))
            for c in chunks
        )
    )

    assert all(status == 200 for status, _, _ in replies)
    latest = (await native.run(run_id))["data"]["metrics"]
    assert latest == [
        {"key": "loss", "value": 199.9, "timestamp": 1_700_000_001_999, "step": 1999}
    ]
    assert (await native.read(run_id, "loss"))["steps"] == list(range(2000))


async def test_concurrent_first_batches_of_a_new_key_all_commit(native: Native) -> None:
    runs = [await native.create_run() for _ in range(20)]
    key = f"fresh_{uuid.uuid4().hex[:8]}"

    replies = await asyncio.gather(
        *(
            native.post(binary_body(str(uuid.uuid4()), [series(r, key, [0, 1])]))
            for r in runs
        )
    )

    assert [status for status, _, _ in replies] == [200] * 20
    stored = [len((await native.read(r, key))["steps"]) for r in runs]
    assert stored == [2] * 20


async def test_labels_split_a_series_but_mlflow_sees_it_whole(native: Native) -> None:
    run_id = await native.create_run()
    body = binary_body(
        str(uuid.uuid4()),
        [
            series(run_id, "loss", [0, 1], label="rank-0"),
            series(run_id, "loss", [0, 1], [9.0, 9.5], label="rank-1"),
        ],
    )

    status, _, _ = await native.post(body)

    assert status == 200
    assert (await native.read(run_id, "loss", "rank-1"))["values"] == [9.0, 9.5]
    assert len((await native.read(run_id, "loss"))["values"]) == 4
    latest = (await native.run(run_id))["data"]["metrics"][0]
    assert (latest["step"], latest["value"]) == (1, 9.5)


@pytest.mark.parametrize(
    ("mutate", "status", "fragment"),
    [
        (
            lambda s: s.update(values=s["values"][:-1]),
            400,
            "series[0].steps has 3 items, values has 2",
        ),
        (lambda s: s.update(key="bad key!"), 400, "series[0].key"),
        (lambda s: s.update(key="k" * 251), 400, "series[0].key has 251 characters"),
        (lambda s: s.update(values=[1.0, "x", 2.0]), 400, "series[0].values[1]"),
        (
            lambda s: s.update(steps=[0, 1.5, 2]),
            400,
            "series[0].steps must hold integers",
        ),
        (lambda s: s.update(run_id="0" * 32), 404, "series[0].run_id"),
    ],
    ids=["lengths", "key-chars", "key-length", "value", "step", "missing-run"],
)
async def test_bad_batch_is_refused_with_the_field_named(
    native: Native, mutate, status, fragment
) -> None:
    run_id = await native.create_run()
    bad = series(run_id, "loss", [0, 1, 2])
    mutate(bad)

    code, reply, _ = await native.post(
        orjson.dumps({"batch_id": str(uuid.uuid4()), "series": [bad]}), binary=False
    )

    assert code == status
    assert fragment in reply["message"]
    assert (await native.run(run_id))["data"]["metrics"] == []


async def test_batch_for_a_deleted_run_is_refused(native: Native) -> None:
    run_id = await native.create_run()
    async with native.session.post(
        native.base + "/api/2.0/mlflow/runs/delete", json={"run_id": run_id}
    ) as reply:
        assert reply.status == 200

    status, reply, _ = await native.post(
        binary_body(str(uuid.uuid4()), [series(run_id, "loss", [0])])
    )

    assert status == 400
    assert run_id in reply["message"] and "active" in reply["message"]


async def test_full_queue_answers_503_with_retry_after(make_database, tmp_path) -> None:
    url = make_database()
    server = ServerProcess(
        url,
        artifacts_root=tmp_path,
        env={"RUNSTREAM_MAX_QUEUE_POINTS": "1000", "RUNSTREAM_WRITER_CONNECTIONS": "1"},
    )
    server.start()
    blocker = await asyncpg.connect(url)
    try:
        async with aiohttp.ClientSession() as session:
            native = Native(session, server.url)
            run_id = await native.create_run()
            bodies = [
                binary_body(
                    str(uuid.uuid4()), [series(run_id, "k", list(range(i, 1000 + i)))]
                )
                for i in range(3)
            ]
            # Hold the writer inside its first commit, so the next batch
            # waits in the queue and fills it.
            hold = blocker.transaction()
            await hold.start()
            await blocker.execute("LOCK TABLE applied_batches IN EXCLUSIVE MODE")
            first = asyncio.create_task(native.post(bodies[0]))
            await asyncio.sleep(0.5)
            second = asyncio.create_task(native.post(bodies[1]))
            await asyncio.sleep(0.5)

            status, reply, headers = await native.post(bodies[2])

            assert status == 503
            assert headers.get("Retry-After") == "1"
            assert reply["error_code"] == "TEMPORARILY_UNAVAILABLE"
            await hold.rollback()
            assert (await first)[0] == 200 and (await second)[0] == 200
            assert len((await native.read(run_id, "k"))["steps"]) == 2000
    finally:
        await blocker.close()
        server.stop()


async def test_a_batch_failing_in_commit_fails_alone(make_database, tmp_path) -> None:
    url = make_database()
    server = ServerProcess(
        url, artifacts_root=tmp_path, env={"RUNSTREAM_WRITER_CONNECTIONS": "1"}
    )
    server.start()
    database = await asyncpg.connect(url)
    try:
        async with aiohttp.ClientSession() as session:
            native = Native(session, server.url)
            good_run, doomed_run = await native.create_run(), await native.create_run()
            for run_id in (good_run, doomed_run):  # the server now caches both runs
                first = binary_body(str(uuid.uuid4()), [series(run_id, "k", [0])])
                assert (await native.post(first))[0] == 200
            # The doomed run vanishes behind the server's back: its next batch
            # passes validation and fails only inside the group's COPY.
            await database.execute("DELETE FROM runs WHERE run_uuid = $1", doomed_run)
            hold = database.transaction()
            await hold.start()
            await database.execute("LOCK TABLE applied_batches IN EXCLUSIVE MODE")
            blocker = asyncio.create_task(
                native.post(
                    binary_body(str(uuid.uuid4()), [series(good_run, "b", [0])])
                )
            )
            await asyncio.sleep(0.3)
            good = asyncio.create_task(
                native.post(
                    binary_body(str(uuid.uuid4()), [series(good_run, "k", [1])])
                )
            )
            doomed = asyncio.create_task(
                native.post(
                    binary_body(str(uuid.uuid4()), [series(doomed_run, "k", [1])])
                )
            )
            await asyncio.sleep(0.3)  # both wait in the queue: one group
            await hold.rollback()

            assert (await blocker)[0] == 200
            assert (await good)[0] == 200
            status, reply, _ = await doomed
            assert status == 500 and reply["error_code"] == "INTERNAL_ERROR"
            assert (await native.read(good_run, "k"))["steps"] == [0, 1]
        assert "committing them one by one" in server.log()
    finally:
        await database.close()
        server.stop()


async def test_acked_points_survive_kill_9(make_database, tmp_path) -> None:
    server = ServerProcess(make_database(), artifacts_root=tmp_path)
    server.start()
    try:
        async with aiohttp.ClientSession() as session:
            native = Native(session, server.url)
            run_id = await native.create_run()
            acked: list[int] = []
            for i in range(5):
                steps = list(range(i * 1000, (i + 1) * 1000))
                status, _, _ = await native.post(
                    binary_body(str(uuid.uuid4()), [series(run_id, "loss", steps)])
                )
                assert status == 200
                acked.extend(steps)
                if i == 4:
                    server.kill()  # right after the ack: no drain, no cleanup

        server.start()

        async with aiohttp.ClientSession() as session:
            stored = await Native(session, server.url).read(run_id, "loss")
        assert stored["steps"] == acked
    finally:
        server.stop()
