"""The server's rules for keys, labels and values, checked before sending.

The client checks what it logs so that one bad point is dropped alone, at
the call in strict mode or when its batch is sealed otherwise, instead of
costing the server's rejection of the whole batch. The rules mirror
MLflow's (reference/mlflow.md section 9).
"""

from __future__ import annotations

import math
import numbers
import posixpath
import re

from runstream.client.errors import InvalidInput

MAX_KEY_LENGTH = 250
MAX_LABEL_LENGTH = 64
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000

_KEY = re.compile(r"^[/\w.\- :]*$")
_LABEL = re.compile(r"^[\w.\-:/]*$")
_RUN_ID = re.compile(r"^[a-zA-Z0-9][\w\-]{0,255}$")


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def check_key(key: object, *, what: str = "key") -> str:
    """A metric, param or tag key: MLflow's characters, length and path rules."""
    if not isinstance(key, str) or key == "":
        raise InvalidInput(f"{what} must be a non-empty string, got {_short(key)}")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(
            f"{what} {_short(key)} has {len(key)} characters, "
            f"at most {MAX_KEY_LENGTH} are allowed"
        )
    if not _KEY.match(key):
        raise InvalidInput(
            f"{what} {_short(key)} may only contain alphanumerics, underscores, "
            "dashes, periods, spaces, colons and slashes"
        )
    if posixpath.normpath(key) != key or key.startswith("/"):
        raise InvalidInput(f"{what} {_short(key)} must be a normalized relative path")
    return key


def check_label(label: object) -> str:
    """A per-process label such as ``rank-3``; None means no label."""
    if label is None:
        return ""
    if not isinstance(label, str) or len(label) > MAX_LABEL_LENGTH:
        raise InvalidInput(
            f"label must be a string of at most {MAX_LABEL_LENGTH} characters, "
            f"got {_short(label)}"
        )
    if not _LABEL.match(label):
        raise InvalidInput(
            f"label {_short(label)} may only contain alphanumerics and _ . - : /"
        )
    return label


def check_run_id(run_id: object) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise InvalidInput(f"run id {_short(run_id)} is not a valid run id")
    return run_id


def check_value(key: str, value: object) -> float:
    """A metric value: a real number, NaN and infinities included, not a bool."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInput(
            f"metric {_short(key)} value must be a number, got {_short(value)} "
            f"of type {type(value).__name__!r}"
        )
    return float(value)


def check_step(key: str, step: object) -> int:
    if step is None:
        return 0
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise InvalidInput(
            f"metric {_short(key)} step must be an integer, got {_short(step)}"
        )
    if not -(2**63) <= int(step) < 2**63:
        raise InvalidInput(f"metric {_short(key)} step {step} does not fit in 64 bits")
    return int(step)


def check_timestamp(key: str, timestamp: object) -> float:
    """A timestamp in milliseconds since the epoch, returned in seconds."""
    if (
        isinstance(timestamp, bool)
        or not isinstance(timestamp, numbers.Real)
        or not math.isfinite(timestamp)
        or timestamp < 0
    ):
        raise InvalidInput(
            f"metric {_short(key)} timestamp must be milliseconds since the "
            f"epoch, got {_short(timestamp)}"
        )
    return float(timestamp) / 1000.0


def param_value(key: str, value: object, *, limit: int) -> str:
    """A param or tag value as MLflow stores it: str(value), length-checked."""
    text = str(value)
    if len(text) > limit:
        raise InvalidInput(
            f"value of {_short(key)} has {len(text)} characters, "
            f"at most {limit} are allowed"
        )
    return text
