"""A run's point buffer and its split into columns when a batch is sealed.

The hot path appends one tuple ``(key, value, step, seconds)`` to a deque
per run: ``deque.append`` is atomic under the GIL, so any number of threads
and tasks log without a lock, and the flusher takes points from the other
end with ``popleft``, which never races an append. Checking and grouping
happen here, at seal time, once per batch instead of once per point:
points whose key, value, step or timestamp breaks the rules are dropped
alone and counted, and the rest of the batch goes on.
"""

from __future__ import annotations

import itertools
import operator
from collections import deque
from dataclasses import dataclass

import numpy as np
from runstream.client import validation
from runstream.client.batch import Series
from runstream.client.errors import InvalidInput
from runstream.client.report import Failures

Point = tuple[object, object, object, float]

# Unsealed points cost about this much memory each (tuple, float, deque slot);
# used to bound the buffers in bytes.
POINT_OVERHEAD = 160

_INT64_MAX = 2**63
_KEY, _VALUE, _STEP, _STAMP = (operator.itemgetter(i) for i in range(4))


@dataclass
class RunBuffer:
    """The unsealed points of one run, and the keys already found valid."""

    run_id: str
    label: str
    points: deque[Point]
    # When the flusher first saw points waiting, in loop time; None when empty.
    since: float | None = None

    def __post_init__(self) -> None:
        self.good_keys: set[str] = set()

    def take(self, limit: int | None = None) -> list[Point]:
        """Remove and return up to ``limit`` points, oldest first."""
        count = len(self.points)
        if limit is not None:
            count = min(count, limit)
        # Another thread may take points between len() and the pops; extend()
        # keeps the points popped before the deque ran dry, list() would not.
        items: list[Point] = []
        try:
            items.extend(
                itertools.starmap(self.points.popleft, itertools.repeat((), count))
            )
        except IndexError:
            pass
        return items


def split(buffer: RunBuffer, items: list[Point], invalid: Failures) -> list[Series]:
    """Group a run's points into one Series per key, dropping bad points."""
    if not items:
        return []
    # Four C-level passes transpose the tuples far faster than zip(*items).
    keys = list(map(_KEY, items))
    values = list(map(_VALUE, items))
    steps = list(map(_STEP, items))
    stamps = list(map(_STAMP, items))
    ok = np.ones(len(items), dtype=bool)

    cycle = _cycle(keys)
    if cycle is not None:
        distinct = dict.fromkeys(cycle)
    else:
        try:
            distinct = dict.fromkeys(keys)
        except TypeError:
            keys = [k if isinstance(k, str) else "" for k in keys]
            distinct = dict.fromkeys(keys)
    for key in distinct:
        if key not in buffer.good_keys and not _key_ok(key, invalid, keys, ok):
            distinct[key] = False
    value_column = _values(keys, values, ok, invalid)
    step_column = _steps(keys, steps, ok, invalid)
    stamp_column = _stamps(keys, stamps, ok, invalid)
    for key in distinct:
        if distinct[key] is None:
            buffer.good_keys.add(key)

    if cycle is not None:
        # Each key's points are every len(cycle)-th row: strided views, no sort.
        period = len(cycle)
        series = []
        for offset, key in enumerate(cycle):
            stride = slice(offset, None, period)
            series.extend(
                _one(
                    buffer,
                    key,
                    step_column[stride],
                    stamp_column[stride],
                    value_column[stride],
                    ok[stride],
                )
            )
        return series
    code = {key: index for index, key in enumerate(distinct)}
    codes = np.fromiter(map(code.__getitem__, keys), dtype=np.intp, count=len(keys))
    order = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes, minlength=len(code)))[:-1]
    series = []
    for key, rows in zip(distinct, np.split(order, bounds)):
        series.extend(
            _one(
                buffer,
                key,
                step_column[rows],
                stamp_column[rows],
                value_column[rows],
                ok[rows],
            )
        )
    return series


def _cycle(keys: list) -> list[str] | None:
    """The distinct keys in order if ``keys`` repeats them in a fixed cycle.

    A training loop logs the same keys in the same order every step; then
    each key's rows are a stride of the batch and need no grouping. The
    checks are C-level list passes (``index``, slices, ``count``), a few
    percent of grouping by sort. Only string keys are tried: comparing
    other objects may run their own ``__eq__``.
    """
    first = keys[0]
    if type(first) is not str:
        return None
    try:
        period = keys.index(first, 1)
    except ValueError:
        period = len(keys)
    cycle = keys[:period]
    try:
        if len(set(cycle)) < period:
            return None
        for offset, key in enumerate(cycle):
            column = keys[offset::period]
            if column.count(key) != len(column):
                return None
    except (TypeError, ValueError):
        # An unhashable key, or one whose comparison with a string fails:
        # the general path replaces or drops it.
        return None
    return cycle


def _one(
    buffer: RunBuffer,
    key: object,
    steps: np.ndarray,
    stamps: np.ndarray,
    values: np.ndarray,
    ok: np.ndarray,
) -> list[Series]:
    if not ok.all():
        steps, stamps, values = steps[ok], stamps[ok], values[ok]
    if len(values) == 0:
        return []
    return [Series(buffer.run_id, str(key), buffer.label, steps, stamps, values)]


def _key_ok(key: object, invalid: Failures, keys: list, ok: np.ndarray) -> bool:
    try:
        validation.check_key(key, what="metric key")
    except InvalidInput as exc:
        bad = np.fromiter((k == key for k in keys), dtype=bool, count=len(keys))
        ok &= ~bad
        invalid.add("invalid key", int(bad.sum()), str(exc))
        return False
    return True


def _values(keys: list, values: list, ok: np.ndarray, invalid: Failures) -> np.ndarray:
    # numpy infers float64 or int64 for numbers only; strings, None and other
    # objects give another dtype and take the slow path that names them.
    # (A bool among floats passes as 0 or 1, as MLflow's own check lets it.)
    try:
        column = np.array(values)
    except (ValueError, OverflowError):
        column = None
    if column is not None and column.dtype.kind in "fiu" and column.ndim == 1:
        return column.astype(np.float64, copy=False)
    column = np.zeros(len(values), dtype=np.float64)
    for index, (key, value) in enumerate(zip(keys, values)):
        try:
            column[index] = validation.check_value(str(key), value)
        except (InvalidInput, OverflowError) as exc:
            ok[index] = False
            invalid.add("invalid value", 1, str(exc))
    return column


def _steps(keys: list, steps: list, ok: np.ndarray, invalid: Failures) -> np.ndarray:
    if steps[0] is None and steps.count(None) == len(steps):
        return np.zeros(len(steps), dtype=np.int64)
    try:
        column = np.array(steps)
    except (ValueError, OverflowError):
        column = None
    if column is not None and column.dtype == np.int64 and column.ndim == 1:
        return column
    column = np.zeros(len(steps), dtype=np.int64)
    for index, (key, step) in enumerate(zip(keys, steps)):
        if step is None:
            continue
        if type(step) is int and -_INT64_MAX <= step < _INT64_MAX:
            column[index] = step
            continue
        try:
            column[index] = validation.check_step(str(key), step)
        except InvalidInput as exc:
            ok[index] = False
            invalid.add("invalid step", 1, str(exc))
    return column


def _stamps(keys: list, stamps: list, ok: np.ndarray, invalid: Failures) -> np.ndarray:
    # The hot path stores seconds as floats, and NaN for a timestamp it could
    # not read; see run.seconds().
    millis = np.rint(np.array(stamps, dtype=np.float64) * 1000.0)
    bad = ~np.isfinite(millis) | (millis < 0) | (millis >= 2.0**63)
    if bad.any():
        ok &= ~bad
        first = int(np.argmax(bad))
        invalid.add(
            "invalid timestamp",
            int(bad.sum()),
            f"metric {keys[first]!r} timestamp must be milliseconds since the epoch",
        )
        millis[bad] = 0
    return millis.astype(np.int64)
