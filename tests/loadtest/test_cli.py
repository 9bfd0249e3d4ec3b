"""``runstream loadtest``: options, the JSON result and the offline HTML report."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from runstream.loadtest.cli import loadtest_command

from tests.servers import ServerProcess


@pytest.mark.timeout(60)
def test_json_and_html_report_a_passing_run(
    server: ServerProcess, database_url: str, tmp_path: Path
) -> None:
    json_path, html_path = tmp_path / "result.json", tmp_path / "report.html"

    outcome = CliRunner().invoke(
        loadtest_command,
        [
            "--url",
            server.url,
            "--db",
            database_url,
            "--workers",
            "2",
            "--keys",
            "5",
            "--duration",
            "1",
            "--rate",
            "5000",
            "--json",
            str(json_path),
            "--html",
            str(html_path),
            "--no-progress",
        ],
    )

    assert outcome.exit_code == 0, outcome.output
    result = orjson.loads(json_path.read_bytes())
    assert (result["missing"], result["duplicated"]) == (0, 0)
    assert result["passed"] and result["points"]["acked"] > 0
    page = html_path.read_text()
    assert page.count("<svg") == 3
    assert "<script" not in page
    # Offline: no reference to any address but the SVG namespace.
    assert re.findall(r"https?://[^'\"\s]+", page) == ["http://www.w3.org/2000/svg"] * 3


def test_a_fault_the_target_cannot_take_is_refused(server: ServerProcess) -> None:
    outcome = CliRunner().invoke(
        loadtest_command,
        [
            "--url",
            server.url,
            "--scenario",
            "postgres-stop",
            "--duration",
            "1",
            "--no-progress",
        ],
    )

    assert outcome.exit_code == 1
    assert "postgres-stop needs the embedded database" in outcome.output


def test_a_workload_without_workers_is_a_usage_error() -> None:
    outcome = CliRunner().invoke(loadtest_command, ["--workers", "0"])

    assert outcome.exit_code == 2
    assert "--workers" in outcome.output
