"""Errors of the load-testing harness, split by who must act.

    LoadtestError
    ├── ConfigurationError   the options ask for something the target cannot do
    │                        (a database fault against a server we did not start)
    ├── TargetError          a server, database or proxy did not start or answer
    └── WorkerError          a worker process crashed or reported nothing

A run that finishes with missing or duplicated points is not an error: it is
a result whose ``passed`` is false.
"""

from __future__ import annotations


class LoadtestError(Exception):
    """Base of every error the harness raises on purpose."""


class ConfigurationError(LoadtestError):
    """The options are inconsistent, or name a fault the target cannot take."""


class TargetError(LoadtestError):
    """The server, database or proxy under test failed to start or to answer."""


class WorkerError(LoadtestError):
    """A worker process exited early or left no report."""
