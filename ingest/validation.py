"""MLflow's limits and name rules, checked at the HTTP boundary.

Every check raises InvalidParameter naming the field and the value, so that
a rejected request is rejected before anything is written.
"""

from __future__ import annotations

import math
import posixpath
import re

from runstream.ingest.errors import InvalidParameter

MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_EXPERIMENT_NAME_LENGTH = 500
MAX_EXPERIMENT_TAG_VALUE_LENGTH = 20000
MAX_BATCH_METRICS = 1000
MAX_BATCH_PARAMS = 100
MAX_BATCH_TAGS = 100
MAX_BATCH_ENTITIES = 1000
MAX_SEARCH_RESULTS = 50000
MAX_LABEL_LENGTH = 64
MAX_RUN_NAME_LENGTH = 250

_KEY = re.compile(r"^[/\w.\- :]*$")
_RUN_ID = re.compile(r"^[a-zA-Z0-9][\w\-]{0,255}$")
_LABEL = re.compile(r"^[\w.\-:/]*$")


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "...'"


def check_key(field: str, key: object) -> str:
    """A metric, param or tag key: MLflow's characters, length and path rules."""
    if not isinstance(key, str) or key == "":
        raise InvalidParameter(f"{field} must be a non-empty string, got {_short(key)}")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidParameter(
            f"{field} has {len(key)} characters, at most {MAX_KEY_LENGTH} are allowed"
        )
    if not _KEY.match(key):
        raise InvalidParameter(
            f"{field} {_short(key)} may only contain alphanumerics, underscores, "
            "dashes, periods, spaces, colons and slashes"
        )
    segments = key.split("/")
    if posixpath.normpath(key) != key or key.startswith("/") or ".." in segments:
        raise InvalidParameter(
            f"{field} {_short(key)} must be a normalized relative path"
        )
    return key


def check_run_id(field: str, run_id: object) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise InvalidParameter(f"{field} {_short(run_id)} is not a valid run id")
    return run_id


def check_label(field: str, label: object) -> str:
    if label is None:
        return ""
    if not isinstance(label, str) or len(label) > MAX_LABEL_LENGTH:
        raise InvalidParameter(
            f"{field} must be a string of at most {MAX_LABEL_LENGTH} characters"
        )
    if not _LABEL.match(label):
        raise InvalidParameter(
            f"{field} {_short(label)} may only contain alphanumerics and _ . - : /"
        )
    return label


def check_string(field: str, value: object, *, max_length: int | None = None) -> str:
    if not isinstance(value, str):
        raise InvalidParameter(f"{field} must be a string, got {_short(value)}")
    if max_length is not None and len(value) > max_length:
        raise InvalidParameter(
            f"{field} has {len(value)} characters, at most {max_length} are allowed"
        )
    return value


def parse_int(field: str, value: object, *, minimum: int | None = None) -> int:
    """An int64 from JSON: a number or a numeric string, as MLflow accepts."""
    if isinstance(value, bool):
        raise InvalidParameter(f"{field} must be an integer, got {value!r}")
    if isinstance(value, int):
        result = value
    elif isinstance(value, float) and value.is_integer():
        result = int(value)
    elif isinstance(value, str):
        try:
            result = int(value)
        except ValueError:
            raise InvalidParameter(
                f"{field} must be an integer, got {_short(value)}"
            ) from None
    else:
        raise InvalidParameter(f"{field} must be an integer, got {_short(value)}")
    if not -(2**63) <= result < 2**63:
        raise InvalidParameter(f"{field} {result} does not fit in 64 bits")
    if minimum is not None and result < minimum:
        raise InvalidParameter(f"{field} must be at least {minimum}, got {result}")
    return result


_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def parse_double(field: str, value: object) -> float:
    """A double from JSON: a number, a numeric string, "NaN" or "[-]Infinity"."""
    if isinstance(value, bool):
        raise InvalidParameter(f"{field} must be a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        if value in _NON_FINITE:
            return _NON_FINITE[value]
        try:
            return float(value)
        except ValueError:
            pass
    raise InvalidParameter(
        f"{field} must be a number, got {_short(value)} of type "
        f"'{type(value).__name__}'"
    )


def check_experiment_name(field: str, name: object) -> str:
    if not isinstance(name, str) or name.strip() == "":
        raise InvalidParameter(
            f"{field} must be a non-empty string, got {_short(name)}"
        )
    if len(name) > MAX_EXPERIMENT_NAME_LENGTH:
        raise InvalidParameter(
            f"{field} has {len(name)} characters, at most "
            f"{MAX_EXPERIMENT_NAME_LENGTH} are allowed"
        )
    return name


def parse_experiment_id(field: str, value: object) -> int:
    """An experiment id: a non-negative int64, as a number or a decimal string."""
    number: int | None = None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    if number is None or not 0 <= number < 2**63:
        raise InvalidParameter(f"{field} {_short(value)} is not a valid experiment id")
    return number
