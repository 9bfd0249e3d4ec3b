"""Protobuf's JSON mapping for the values MLflow's messages carry."""

from __future__ import annotations

import math


def double(value: float) -> float | str:
    """A float as protobuf's JSON mapping writes it: non-finite values as strings."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"
