"""Named fault scenarios: what breaks, when, and for how long.

Each scenario waits until ``fault_at`` seconds into the run, breaks one
thing for ``fault_for`` seconds, restores it, and records when. The runner
then measures what the workers lost (must be nothing) and how long the
acknowledgements took to catch up.

| name | fault |
| --- | --- |
| none | no fault: the baseline |
| server-kill | SIGKILL of the server, restart on the same port |
| postgres-stop | PostgreSQL stopped in immediate mode (no checkpoint), restarted |
| network-cut | the proxy resets every connection and refuses new ones |
| network-blackhole | the proxy swallows every byte; requests hang until timeout |
| reply-loss | requests reach the server, the proxy resets before the reply |
| slow-network | the proxy throttles to 256 KiB/s per direction, +50 ms a chunk |
| overload | several times the workers, unpaced, many requests in flight |
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from runstream.loadtest.errors import ConfigurationError
from runstream.loadtest.proxy import ProxyMode, TcpProxy
from runstream.loadtest.targets import Target
from runstream.loadtest.workload import DriverOptions, Workload

SLOW_RATE = 256 * 1024
SLOW_LATENCY = 0.05


@dataclass
class FaultContext:
    target: Target
    proxy: TcpProxy | None
    started: float  # monotonic time the workers were told to go
    fault_at: float
    fault_for: float
    events: list[tuple[float, str]] = field(default_factory=list)
    injected_at: float | None = None
    restored_at: float | None = None
    restore_seconds: float | None = None

    def now(self) -> float:
        return time.monotonic() - self.started

    def event(self, what: str) -> None:
        self.events.append((round(self.now(), 3), what))

    async def until_fault(self) -> None:
        await asyncio.sleep(max(0.0, self.fault_at - self.now()))


class Scenario:
    """No fault; the base of the others."""

    name = "none"
    needs_proxy = False

    def check(self, target: Target) -> None:
        """Raise ConfigurationError when the target cannot take this fault."""

    def adjust(
        self, workload: Workload, options: DriverOptions, *, overload_factor: int
    ) -> tuple[Workload, DriverOptions]:
        return workload, options

    async def run(self, context: FaultContext) -> None:
        return

    async def inject(self, context: FaultContext) -> None:
        await context.until_fault()
        context.event(f"{self.name}: fault")
        context.injected_at = context.now()
        await self.fault(context)
        await asyncio.sleep(context.fault_for)
        began = time.monotonic()
        await self.repair(context)
        context.restore_seconds = round(time.monotonic() - began, 3)
        context.restored_at = context.now()
        context.event(f"{self.name}: restored")

    async def fault(self, context: FaultContext) -> None:
        raise NotImplementedError

    async def repair(self, context: FaultContext) -> None:
        raise NotImplementedError


class _Fault(Scenario):
    async def run(self, context: FaultContext) -> None:
        await self.inject(context)


class ServerKill(_Fault):
    name = "server-kill"

    def check(self, target: Target) -> None:
        if not target.can_kill:
            raise ConfigurationError(
                "server-kill needs a server the harness started; drop --url"
            )

    async def fault(self, context: FaultContext) -> None:
        await context.target.kill()

    async def repair(self, context: FaultContext) -> None:
        await context.target.restart()


class PostgresStop(_Fault):
    name = "postgres-stop"

    def check(self, target: Target) -> None:
        if target.database is None:
            raise ConfigurationError(
                "postgres-stop needs the embedded database the harness starts; "
                "drop --url and --db"
            )

    async def fault(self, context: FaultContext) -> None:
        assert context.target.database is not None, "check() ran"
        await context.target.database.stop_immediately()

    async def repair(self, context: FaultContext) -> None:
        assert context.target.database is not None, "check() ran"
        await context.target.database.restart()


class _ProxyFault(_Fault):
    needs_proxy = True
    mode = ProxyMode("cut")

    async def fault(self, context: FaultContext) -> None:
        assert context.proxy is not None, "the runner starts a proxy"
        context.proxy.set_mode(self.mode)

    async def repair(self, context: FaultContext) -> None:
        assert context.proxy is not None, "the runner starts a proxy"
        context.proxy.set_mode(ProxyMode("pass"))


class NetworkCut(_ProxyFault):
    name = "network-cut"
    mode = ProxyMode("cut")


class NetworkBlackhole(_ProxyFault):
    name = "network-blackhole"
    mode = ProxyMode("blackhole")

    def adjust(
        self, workload: Workload, options: DriverOptions, *, overload_factor: int
    ) -> tuple[Workload, DriverOptions]:
        # Requests caught in the hole only fail by timing out.
        timeout = min(options.request_timeout, 3.0)
        return workload, options.model_copy(update={"request_timeout": timeout})


class ReplyLoss(_ProxyFault):
    """Committed batches whose answers are lost: the retries must write nothing."""

    name = "reply-loss"
    mode = ProxyMode("drop-replies")


class SlowNetwork(_ProxyFault):
    name = "slow-network"
    mode = ProxyMode("slow", rate=SLOW_RATE, latency=SLOW_LATENCY)


class Overload(Scenario):
    """Several times the workers, unpaced: the server must shed load, not fail."""

    name = "overload"

    def adjust(
        self, workload: Workload, options: DriverOptions, *, overload_factor: int
    ) -> tuple[Workload, DriverOptions]:
        workload = workload.model_copy(
            update={"workers": workload.workers * overload_factor, "rate": 0.0}
        )
        options = options.model_copy(
            update={
                "max_in_flight": max(options.max_in_flight, 16),
                "max_pending": max(options.max_pending, 32),
            }
        )
        return workload, options


SCENARIOS: dict[str, type[Scenario]] = {
    cls.name: cls
    for cls in (
        Scenario,
        ServerKill,
        PostgresStop,
        NetworkCut,
        NetworkBlackhole,
        ReplyLoss,
        SlowNetwork,
        Overload,
    )
}


def scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]()
    except KeyError:
        raise ConfigurationError(
            f"scenario {name!r} is not one of {', '.join(SCENARIOS)}"
        ) from None
