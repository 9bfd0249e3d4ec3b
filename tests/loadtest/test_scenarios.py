"""Every fault scenario, small and fast, against the real server: nothing lost."""

from __future__ import annotations

from typing import Any

import pytest
from runstream.loadtest.runner import run_loadtest
from runstream.loadtest.targets import RunstreamServer

from tests.loadtest.conftest import small_settings


def assert_exactly_once(result: dict[str, Any]) -> None:
    points = result["points"]
    assert result["missing"] == 0, result["verification"]["examples"]
    assert result["duplicated"] == 0, result["verification"]["examples"]
    assert points["unacked"] == 0, result["errors"]
    assert points["corrupted"] == 0
    assert points["unexpected"] == 0
    assert points["offered"] > 0
    assert points["stored"] == points["offered"]
    assert result["passed"]


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "scenario",
    [
        "none",
        "server-kill",
        "network-cut",
        "network-blackhole",
        "reply-loss",
        "slow-network",
    ],
)
async def test_scenario_loses_and_duplicates_nothing(
    scenario: str, own_server: RunstreamServer
) -> None:
    settings = small_settings(scenario=scenario)

    result = await run_loadtest(settings, target=own_server)

    assert_exactly_once(result)
    if scenario != "none":
        assert result["scenario"]["restored_at"] is not None
        assert result["scenario"]["recovery"]["caught_up"] is not None


@pytest.mark.timeout(120)
async def test_postgres_stop_loses_and_duplicates_nothing(
    own_cluster_server: RunstreamServer,
) -> None:
    settings = small_settings(scenario="postgres-stop")

    result = await run_loadtest(settings, target=own_cluster_server)

    assert_exactly_once(result)
    assert result["scenario"]["restored_at"] is not None
    assert result["resources"]["postgres"]["peak_rss_bytes"] > 0


@pytest.mark.timeout(90)
async def test_reply_loss_is_answered_as_duplicate(own_server: RunstreamServer) -> None:
    settings = small_settings(scenario="reply-loss", fault_for=1.0)

    result = await run_loadtest(settings, target=own_server)

    assert_exactly_once(result)
    assert result["requests"]["duplicates"] > 0


@pytest.mark.timeout(90)
async def test_overload_sheds_load_and_loses_nothing(make_database, tmp_path) -> None:
    # A small writer queue, so that four times the workers overflow it fast.
    server = RunstreamServer(
        make_database(),
        folder=tmp_path / "server",
        env={"RUNSTREAM_MAX_QUEUE_POINTS": "1000"},
    )
    settings = small_settings(scenario="overload")

    async with server:
        result = await run_loadtest(settings, target=server)

    assert_exactly_once(result)
    assert result["workload"]["workers"] == 8
    assert result["requests"]["overloaded"] > 0
    assert result["resources"]["server"]["peak_rss_bytes"] > 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("driver", ["runstream", "mlflow"])
@pytest.mark.parametrize("scenario", ["none", "network-cut"])
async def test_other_drivers_lose_and_duplicate_nothing(
    driver: str, scenario: str, own_server: RunstreamServer
) -> None:
    settings = small_settings(driver=driver, scenario=scenario)

    result = await run_loadtest(settings, target=own_server)

    assert_exactly_once(result)
