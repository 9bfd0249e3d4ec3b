"""Browser attacks on a local server: DNS rebinding and cross-origin writes."""

from __future__ import annotations

import pytest
import requests

from tests.servers import ServerProcess

pytestmark = pytest.mark.timeout(60)
CREATE = "/api/2.0/mlflow/experiments/create"


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("evil.example.com", 403),
        ("evil.example.com:5000", 403),
        ("localhost:5000", 200),
        ("127.0.0.1", 200),
        ("[::1]:5000", 200),
        ("10.1.2.3:5000", 200),
    ],
)
def test_host_header_must_be_local_or_allowed(
    server: ServerProcess, host: str, status: int
) -> None:
    reply = requests.get(
        server.url + "/api/2.0/mlflow/experiments/get?experiment_id=0",
        headers={"Host": host},
    )

    assert reply.status_code == status
    if status == 403:
        assert "DNS rebinding" in reply.json()["message"]


def test_health_answers_any_host(server: ServerProcess) -> None:
    reply = requests.get(server.url + "/health", headers={"Host": "lb.internal"})

    assert reply.status_code == 200


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("https://evil.example.com", 403),
        ("http://localhost:3000", 200),
        ("http://127.0.0.1:8080", 200),
    ],
)
def test_cross_origin_writes_are_refused(
    server: ServerProcess, origin: str, status: int
) -> None:
    name = f"origin-{abs(hash(origin))}"

    reply = requests.post(
        server.url + CREATE, json={"name": name}, headers={"Origin": origin}
    )

    assert reply.status_code == status
    found = requests.get(
        server.url + "/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": name},
    )
    assert found.status_code == (200 if status == 200 else 404)


def test_cross_origin_artifact_upload_is_refused(server: ServerProcess) -> None:
    reply = requests.put(
        server.url + "/api/2.0/mlflow-artifacts/artifacts/0/x.txt",
        data=b"payload",
        headers={"Origin": "https://evil.example.com"},
    )

    assert reply.status_code == 403
    assert not (server.artifacts_root / "0" / "x.txt").exists()


def test_responses_carry_protective_headers(server: ServerProcess) -> None:
    reply = requests.get(server.url + "/api/2.0/mlflow/experiments/get?experiment_id=0")

    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert reply.headers["X-Frame-Options"] == "SAMEORIGIN"


def test_configured_host_and_origin_are_allowed(make_database, tmp_path) -> None:
    server = ServerProcess(
        make_database(),
        artifacts_root=tmp_path,
        extra_args=(
            "--allowed-hosts",
            "tracking.example.com",
            "--cors-allowed-origins",
            "https://ui.example.com",
        ),
    )
    server.start()
    try:
        reply = requests.post(
            server.url + CREATE,
            json={"name": "configured"},
            headers={
                "Host": "tracking.example.com",
                "Origin": "https://ui.example.com",
            },
        )
        assert reply.status_code == 200
    finally:
        server.stop()
