"""The synchronous fluent API, with MLflow's names.

    import runstream.client as rs

    rs.set_tracking_uri("http://127.0.0.1:5000")
    rs.set_experiment("mnist")
    with rs.start_run(run_name="baseline"):
        rs.log_params({"lr": 0.01})
        for step in range(1000):
            rs.log_metric("loss", loss, step=step)   # returns at once

The client runs on one background thread; ``log_metric`` only appends to
a buffer, and params and tags are sent in the background too. Only calls
that need an answer wait for the server: ``set_experiment``,
``start_run``, ``get_run``, ``end_run`` and ``flush``.

As in MLflow the active run is per thread: ``start_run`` pushes onto this
thread's stack (``nested=True`` under a parent), and logging without an
active run starts one. A run id in ``RUNSTREAM_RUN_ID`` (or
``MLFLOW_RUN_ID``) makes the first ``start_run`` resume that run, which
is how many processes of one training job log into one run; give each a
``RUNSTREAM_LABEL`` (such as ``rank-3``) to keep its points apart.

Outside strict mode an unreachable server does not stop training: a run
started then (and an experiment set by name then) starts offline, logs as
usual, and is created when the server answers; see ``AsyncClient.create_run``.

At interpreter exit, and on SIGTERM when no other handler is installed,
active runs are ended and pending points flushed within ``exit_timeout``
seconds; what cannot be sent in time stays in the spool, and the log says
where.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import getpass
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from time import time as _now
from types import FrameType
from typing import Any

from runstream.client import validation
from runstream.client.entities import Experiment, Run
from runstream.client.errors import InvalidInput, TrackingError, Unavailable
from runstream.client.report import Failures, FlushReport
from runstream.client.run import RunHandle
from runstream.client.settings import ClientSettings, load_settings
from runstream.client.worker import Worker

logger = logging.getLogger(__name__)

_lock = threading.RLock()
_local = threading.local()
_settings: ClientSettings | None = None
_worker: Worker | None = None
_tracking_uri: str | None = None
_experiment_id: str | None = None
# An experiment set by name while the server was unreachable.
_experiment_name: str | None = None
_env_run_used = False
_hooks_installed = False
_invalid = Failures("a fluent call got bad input")


class ActiveRun(Run):
    """The run started by start_run; a context manager that ends it.

    Besides MLflow's ``info`` and ``data`` (as they were at start) it logs
    metrics straight into its run, from any thread.
    """

    def __init__(self, run: Run, handle: RunHandle) -> None:
        super().__init__(run.info, run.data)
        object.__setattr__(self, "handle", handle)
        object.__setattr__(self, "log_metric", handle.log_metric)
        object.__setattr__(self, "log_metrics", handle.log_metrics)

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(self, exc_type: type | None, *exc_info: object) -> None:
        if any(r.info.run_id == self.info.run_id for r in _stack()):
            end_run("FINISHED" if exc_type is None else "FAILED")


def _stack() -> list[ActiveRun]:
    try:
        return _local.stack  # type: ignore[no-any-return]
    except AttributeError:
        _local.stack = []
        return _local.stack  # type: ignore[no-any-return]


# The stack changes only through _push and _pop, which keep the top run's
# handle in _local.handle: log_metric reads it with one lookup.


def _push(active: ActiveRun) -> None:
    _stack().append(active)
    _local.handle = active.handle  # type: ignore[attr-defined]


def _pop() -> ActiveRun:
    stack = _stack()
    active = stack.pop()
    if stack:
        _local.handle = stack[-1].handle  # type: ignore[attr-defined]
    else:
        del _local.handle
    return active


def _current_settings() -> ClientSettings:
    global _settings
    with _lock:
        if _settings is None:
            _settings = load_settings()
        return _settings


def _get_worker() -> Worker:
    global _worker
    worker = _worker
    if worker is not None:
        return worker
    with _lock:
        if _worker is None:
            settings = _current_settings()
            if _tracking_uri is not None:
                settings = settings.model_copy(update={"tracking_uri": _tracking_uri})
            worker = Worker(settings)
            worker.start()
            _worker = worker
            _install_exit_hooks()
        return _worker


# configuration


def set_tracking_uri(uri: str) -> None:
    """Use this server from now on; a client of another URI is flushed and closed."""
    global _tracking_uri, _worker
    with _lock:
        _tracking_uri = uri.rstrip("/")
        if _worker is not None and _worker.client.tracking_uri != _tracking_uri:
            old, _worker = _worker, None
            old.close(_current_settings().exit_timeout)


def get_tracking_uri() -> str | None:
    return _tracking_uri or _current_settings().tracking_uri


def set_experiment(
    experiment_name: str | None = None, experiment_id: str | None = None
) -> Experiment:
    """Make an experiment active (created by name if missing) and return it.

    Outside strict mode, when the server cannot be reached, a name is kept
    for the runs started next, which start offline, and the experiment is
    returned with an empty id.
    """
    global _experiment_id, _experiment_name
    worker = _get_worker()
    if experiment_id is not None:
        experiment = worker.call(worker.client.get_experiment(str(experiment_id)))
    elif experiment_name:
        try:
            experiment_id = worker.call(worker.client.set_experiment(experiment_name))
            experiment = worker.call(worker.client.get_experiment(experiment_id))
        except Unavailable as exc:
            if worker.client.settings.strict:
                raise
            logger.warning(
                "experiment %r is set offline (%s); runs started now are created "
                "in it when the server answers",
                experiment_name,
                exc,
            )
            _experiment_id, _experiment_name = None, experiment_name
            return Experiment(experiment_id="", name=experiment_name)
    else:
        raise InvalidInput("set_experiment needs experiment_name or experiment_id")
    _experiment_id, _experiment_name = experiment.experiment_id, None
    return experiment


# runs


def start_run(
    run_id: str | None = None,
    experiment_id: str | None = None,
    run_name: str | None = None,
    nested: bool = False,
    parent_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    description: str | None = None,
) -> ActiveRun:
    """Start a new run, or resume ``run_id`` (or the one in RUNSTREAM_RUN_ID).

    Raises InvalidInput when a run is already active on this thread and
    ``nested`` is False, and the server's errors as they come; outside
    strict mode a new run starts offline instead when the server cannot
    be reached (resuming a run still needs the server).
    """
    global _env_run_used, _experiment_id, _experiment_name
    stack = _stack()
    if stack and not nested:
        raise InvalidInput(
            f"run {stack[0].info.run_id} is already active; end it with end_run() "
            "or start a nested run with start_run(nested=True)"
        )
    worker = _get_worker()
    client = worker.client
    tags = dict(tags or {})
    if description:
        tags["mlflow.note.content"] = description

    name: str | None = None
    with _lock:
        if run_id is None and not _env_run_used and worker.client.settings.run_id:
            run_id = worker.client.settings.run_id
            _env_run_used = True
    if run_id is not None:
        run = worker.call(client.get_run(run_id))
        if run.info.lifecycle_stage == "deleted":
            raise InvalidInput(f"run {run_id} is deleted and cannot be resumed")
        worker.call(client.update_run(run_id, status="RUNNING", run_name=run_name))
        if tags:
            worker.call(client.log_batch(run_id, tags=tags))
    else:
        parent = parent_run_id or (stack[-1].info.run_id if stack else None)
        if parent:
            tags["mlflow.parentRunId"] = parent
        if run_name:
            tags["mlflow.runName"] = run_name
        tags.setdefault("mlflow.user", _user())
        tags.setdefault("mlflow.source.name", sys.argv[0] if sys.argv else "")
        tags.setdefault("mlflow.source.type", "LOCAL")
        experiment_id = experiment_id or _experiment_id
        if experiment_id is None:
            name = _experiment_name or client.settings.experiment_name
        handle = worker.call(
            client.create_run(
                experiment_id or "0",
                experiment_name=name,
                run_name=run_name,
                tags=tags,
            )
        )
        run_id = handle.run_id
    run = worker.call(client.get_run(run_id))
    if name and run.info.experiment_id:
        # The experiment named is known now: later runs go straight to it.
        _experiment_id, _experiment_name = run.info.experiment_id, None
    active = ActiveRun(run, client.run(run_id))
    _push(active)
    return active


def end_run(status: str = "FINISHED") -> None:
    """End this thread's active run: flush its points, then set its status."""
    stack = _stack()
    if not stack:
        return
    active = _pop()
    worker = _get_worker()
    timeout = worker.client.settings.exit_timeout
    report = worker.flush(timeout)
    if report.pending:
        logger.warning(
            "run %s ended with %s points not yet acknowledged; they stay queued "
            "or spooled and are sent later",
            active.info.run_id,
            report.pending,
        )
    try:
        worker.call(
            worker.client.update_run(
                active.info.run_id, status=status, end_time=_now_ms()
            ),
            timeout + 30,
        )
    except TrackingError:
        if worker.client.settings.strict:
            raise
        logger.exception("could not mark run %s %s", active.info.run_id, status)


def active_run() -> ActiveRun | None:
    stack = _stack()
    return stack[-1] if stack else None


def last_active_run_id() -> str | None:
    run = active_run()
    return run.info.run_id if run else None


def get_run(run_id: str) -> Run:
    """The run as the server has it now; logged points may still be in flight."""
    worker = _get_worker()
    return worker.call(worker.client.get_run(run_id))


def flush(timeout: float | None = None) -> FlushReport:
    """Wait until everything logged so far is acknowledged, or ``timeout`` passes.

    Returns the report; ``report.pending`` is what was not acknowledged in
    time. In strict mode raises FlushError when points were refused.
    """
    return _get_worker().flush(timeout)


# logging


def _handle() -> RunHandle:
    stack = _stack()
    if not stack:
        start_run()
    return stack[-1].handle  # type: ignore[attr-defined,no-any-return]


def log_metric(
    key: str,
    value: float,
    step: int | None = None,
    synchronous: bool | None = None,
    timestamp: int | None = None,
    run_id: str | None = None,
) -> None:
    """Buffer one point for the active run (or ``run_id``); returns at once.

    ``timestamp`` is in milliseconds. ``synchronous=True`` also waits for
    the flush, as MLflow's synchronous logging does.
    """
    try:
        handle = _local.handle if run_id is None else _run(run_id)
    except AttributeError:
        handle = _handle()
    if type(handle) is not RunHandle or timestamp is not None or synchronous:
        handle.log_metric(key, value, step, timestamp)
        if synchronous:
            flush()
        return
    # RunHandle.log_metric inlined: its call frame is a sixth of this
    # function's cost on the hot path (benchmarks/client_e2e.py).
    points = handle._points
    points.append((key, value, step, _now()))
    if len(points) >= handle._limit:
        handle._client._overflow(handle.run_id)


def log_metrics(
    metrics: Mapping[str, float],
    step: int | None = None,
    synchronous: bool | None = None,
    run_id: str | None = None,
) -> None:
    """Buffer one point per key with a shared step and timestamp."""
    handle = _handle() if run_id is None else _run(run_id)
    handle.log_metrics(metrics, step)
    if synchronous:
        flush()


def _run(run_id: str) -> RunHandle:
    return _get_worker().client.run(run_id)


def log_param(key: str, value: Any, synchronous: bool | None = None) -> Any:
    """Log a param in the background; returns the value, as MLflow does."""
    log_params({key: value}, synchronous=synchronous)
    return value


def log_params(
    params: Mapping[str, Any],
    synchronous: bool | None = None,
    run_id: str | None = None,
) -> None:
    _send_pairs("params", params, synchronous, run_id)


def set_tag(key: str, value: Any, synchronous: bool | None = None) -> None:
    set_tags({key: value}, synchronous=synchronous)


def set_tags(
    tags: Mapping[str, Any],
    synchronous: bool | None = None,
    run_id: str | None = None,
) -> None:
    _send_pairs("tags", tags, synchronous, run_id)


def _send_pairs(
    kind: str,
    pairs: Mapping[str, Any],
    synchronous: bool | None,
    run_id: str | None,
) -> None:
    worker = _get_worker()
    run_id = run_id or _handle().run_id
    limit = (
        validation.MAX_PARAM_VALUE_LENGTH
        if kind == "params"
        else validation.MAX_TAG_VALUE_LENGTH
    )
    try:
        checked = {
            validation.check_key(k, what=f"{kind[:-1]} key"): validation.param_value(
                k, v, limit=limit
            )
            for k, v in pairs.items()
        }
    except InvalidInput as exc:
        if worker.client.settings.strict:
            raise
        _invalid.add(f"invalid {kind[:-1]}", 1, str(exc))
        return
    call = worker.client.log_batch(run_id, **{kind: checked})
    if synchronous:
        worker.call(call)
    else:
        worker.submit(call, what=f"logging {kind} of run {run_id}")


# exit


def _install_exit_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_shutdown, "FINISHED")
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    logger.info("SIGTERM: flushing tracked points before exiting")
    _shutdown("KILLED")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _shutdown(status: str) -> None:
    """End this thread's runs and close the client within exit_timeout."""
    global _worker
    with _lock:
        worker, _worker = _worker, None
    if worker is None:
        return
    client = worker.client
    timeout = client.settings.exit_timeout
    deadline = time.monotonic() + timeout
    stack = _stack()
    try:
        worker.wait_submitted(timeout)
        remaining = max(0.0, deadline - time.monotonic())
        worker.call(client.flush(remaining), remaining + 5)
        while stack:
            active = _pop()
            update = client.update_run(
                active.info.run_id, status=status, end_time=_now_ms()
            )
            worker.call(update, max(1.0, deadline - time.monotonic()))
    except (TrackingError, concurrent.futures.TimeoutError) as exc:
        # The server is away: the runs keep their status, and close()
        # below spools the points, which matter more.
        logger.warning("at exit: %s; spooling what was not sent", exc or type(exc))
    report = worker.close(max(0.0, deadline - time.monotonic()))
    if report is not None:
        logger.info("at exit: %s", report.summary())


def _now_ms() -> int:
    return int(time.time() * 1000)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
