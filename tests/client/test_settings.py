"""Settings come from RUNSTREAM_* variables, and MLflow's where users expect them."""

from __future__ import annotations

import pytest
from runstream.client.errors import ConfigurationError
from runstream.client.settings import load_settings


def test_mlflow_variables_apply_when_runstream_ones_are_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000/")
    monkeypatch.setenv("MLFLOW_RUN_ID", "abc123")

    settings = load_settings()

    assert settings.tracking_uri == "http://127.0.0.1:5000"
    assert settings.run_id == "abc123"


def test_runstream_variables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("RUNSTREAM_TRACKING_URI", "http://127.0.0.1:6000")
    monkeypatch.setenv("RUNSTREAM_RUN_ID", "fromrunstream")
    monkeypatch.setenv("MLFLOW_RUN_ID", "frommlflow")
    monkeypatch.setenv("RUNSTREAM_LABEL", "rank-3")

    settings = load_settings()

    assert settings.tracking_uri == "http://127.0.0.1:6000"
    assert settings.run_id == "fromrunstream"
    assert settings.label == "rank-3"


@pytest.mark.parametrize(
    ("field", "value"),
    [("overflow", "drop"), ("label", "rank 3!"), ("flush_points", 0)],
)
def test_invalid_settings_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=field):
        load_settings(**{field: value})
