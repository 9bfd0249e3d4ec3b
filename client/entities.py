"""Experiments and runs as the server describes them, shaped as MLflow's.

``run.info.run_id``, ``run.data.metrics`` (latest value per key),
``run.data.params`` and ``run.data.tags`` read as they do in MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_NON_FINITE = {
    "NaN": float("nan"),
    "Infinity": float("inf"),
    "-Infinity": float("-inf"),
}


def _double(value: Any) -> float:
    if isinstance(value, str):
        return _NON_FINITE.get(value) or float(value)
    return float(value)


def _pairs(items: list[dict[str, Any]] | None) -> dict[str, str]:
    return {item["key"]: item.get("value", "") for item in items or []}


@dataclass(frozen=True)
class Experiment:
    experiment_id: str
    name: str
    artifact_location: str = ""
    lifecycle_stage: str = "active"
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Experiment:
        return cls(
            experiment_id=str(document["experiment_id"]),
            name=document.get("name", ""),
            artifact_location=document.get("artifact_location", ""),
            lifecycle_stage=document.get("lifecycle_stage", "active"),
            tags=_pairs(document.get("tags")),
        )


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    experiment_id: str
    run_name: str = ""
    user_id: str = ""
    status: str = "RUNNING"
    start_time: int | None = None
    end_time: int | None = None
    artifact_uri: str = ""
    lifecycle_stage: str = "active"

    @property
    def run_uuid(self) -> str:
        return self.run_id

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> RunInfo:
        return cls(
            run_id=document.get("run_id") or document["run_uuid"],
            experiment_id=str(document.get("experiment_id", "")),
            run_name=document.get("run_name", ""),
            user_id=document.get("user_id", ""),
            status=document.get("status", "RUNNING"),
            start_time=document.get("start_time") or None,
            end_time=document.get("end_time") or None,
            artifact_uri=document.get("artifact_uri", ""),
            lifecycle_stage=document.get("lifecycle_stage", "active"),
        )


@dataclass(frozen=True)
class RunData:
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> RunData:
        return cls(
            metrics={
                item["key"]: _double(item.get("value", 0.0))
                for item in document.get("metrics") or []
            },
            params=_pairs(document.get("params")),
            tags=_pairs(document.get("tags")),
        )


@dataclass(frozen=True)
class Run:
    info: RunInfo
    data: RunData

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Run:
        return cls(
            info=RunInfo.from_json(document["info"]),
            data=RunData.from_json(document.get("data") or {}),
        )
