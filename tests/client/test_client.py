"""AsyncClient against a real server: what is logged arrives, exactly once."""

from __future__ import annotations

import asyncio
import threading

import pytest
from runstream.client import AsyncClient, ClientSettings, FlushError, InvalidInput


async def _steps(
    client: AsyncClient, run_id: str, key: str, **kwargs: str
) -> list[int]:
    series = await client.get_series(run_id, key, **kwargs)
    return sorted(series["steps"])


@pytest.mark.timeout(120)
async def test_points_from_threads_and_tasks_arrive_exactly_once(
    settings: ClientSettings,
) -> None:
    per_writer = 20_000
    async with AsyncClient(settings=settings, flush_points=7_000) as client:
        run = await client.create_run(run_name="threads-and-tasks")

        def thread_writer(index: int) -> None:
            for i in range(per_writer):
                run.log_metric("loss", i * 0.5, step=index * per_writer + i)

        async def task_writer(index: int) -> None:
            for i in range(per_writer):
                run.log_metric("loss", 1.0, step=index * per_writer + i)
                if i % 1000 == 0:
                    await asyncio.sleep(0)

        threads = [threading.Thread(target=thread_writer, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        await asyncio.gather(*(task_writer(n) for n in range(4, 8)))
        await asyncio.to_thread(lambda: [thread.join() for thread in threads])
        report = await client.flush()

        steps = await _steps(client, run.run_id, "loss")

    assert steps == list(range(8 * per_writer))
    assert report.ok and report.acknowledged == 8 * per_writer


@pytest.mark.timeout(60)
async def test_run_reads_back_shaped_as_mlflow(settings: ClientSettings) -> None:
    async with AsyncClient(settings=settings) as client:
        experiment_id = await client.set_experiment("client-shape")
        run = await client.create_run(experiment_id, run_name="shape")
        await run.log_params({"lr": 0.01, "layers": 3})
        await run.set_tag("team", "vision")
        run.log_metrics({"loss": 0.9, "acc": 0.1}, step=0)
        run.log_metric("loss", 0.3, step=1)
        run.log_metric("loss", float("nan"), step=1, timestamp=1)
        await client.flush()

        fetched = await run.get()
        series = await client.get_series(run.run_id, "loss")

    assert fetched.info.run_id == run.run_id
    assert fetched.info.experiment_id == experiment_id
    assert fetched.data.params == {"lr": "0.01", "layers": "3"}
    assert fetched.data.tags["team"] == "vision"
    assert fetched.data.metrics == {"loss": 0.3, "acc": 0.1}
    assert sorted(map(str, series["values"])) == ["0.3", "0.9", "NaN"]


@pytest.mark.timeout(60)
async def test_bad_points_are_counted_and_the_rest_of_the_batch_arrives(
    settings: ClientSettings,
) -> None:
    async with AsyncClient(settings=settings) as client:
        run = await client.create_run()
        run.log_metric("loss", 0.5, step=0)
        run.log_metric("loss", "not a number", step=1)
        run.log_metric("k" * 300, 0.5, step=2)
        run.log_metric("loss", 0.25, step=3)
        report = await client.flush()

        steps = await _steps(client, run.run_id, "loss")

    assert steps == [0, 3]
    assert report.invalid == {"invalid value": 1, "invalid key": 1}
    assert report.pending == 0


@pytest.mark.timeout(60)
async def test_strict_mode_rejects_bad_input_at_the_call(
    settings: ClientSettings,
) -> None:
    async with AsyncClient(settings=settings, strict=True) as client:
        run = await client.create_run()

        with pytest.raises(InvalidInput, match="must be a number"):
            run.log_metric("loss", "high")
        with pytest.raises(InvalidInput, match="at most 250"):
            run.log_metric("k" * 300, 1.0)
        run.log_metric("loss", 1.0)
        report = await client.flush()

    assert report.ok and report.acknowledged == 1


@pytest.mark.timeout(60)
async def test_a_series_the_server_refuses_costs_only_itself(
    settings: ClientSettings,
) -> None:
    async with AsyncClient(settings=settings, flush_points=100_000) as client:
        good = await client.create_run()
        missing = client.run("f" * 32)
        for step in range(100):
            good.log_metric("loss", 1.0, step=step)
            missing.log_metric("loss", 1.0, step=step)
        report = await client.flush()

        steps = await _steps(client, good.run_id, "loss")

    assert steps == list(range(100))
    assert sum(report.rejected.values()) == 100
    assert report.pending == 0


@pytest.mark.timeout(60)
async def test_strict_flush_raises_when_the_server_refused_points(
    settings: ClientSettings,
) -> None:
    async with AsyncClient(settings=settings, strict=True) as client:
        client.run("e" * 32).log_metric("loss", 1.0)

        with pytest.raises(FlushError, match="rejected"):
            await client.flush()


@pytest.mark.timeout(60)
async def test_labels_keep_each_process_apart_and_merge_for_mlflow(
    settings: ClientSettings,
) -> None:
    async with AsyncClient(settings=settings) as creator:
        run_id = (await creator.create_run()).run_id
    ranks = [AsyncClient(settings=settings, label=f"rank-{n}") for n in range(2)]
    for n, client in enumerate(ranks):
        await client.start()
        for step in range(n, 1000, 2):
            client.run(run_id).log_metric("loss", float(n), step=step)
    for client in ranks:
        await client.close()

    async with AsyncClient(settings=settings) as reader:
        rank_1 = await _steps(reader, run_id, "loss", label="rank-1")
        merged = await _steps(reader, run_id, "loss")

    assert rank_1 == list(range(1, 1000, 2))
    assert merged == list(range(1000))
