"""The per-storage loop: open the repository once, then sync every pollInterval, forever.

A failing remote never ends the loop: it backs off (capped, with jitter) and reports.

Each cycle runs in a thread of its own (a daemon thread: a cycle that never returns cannot
starve other storages of worker threads, nor keep the process alive after SIGTERM) and has a
deadline (`syncTimeout`): at the deadline its remote connections are cut (sockets shut down,
ssh killed), so the cycle fails with a timeout error and is retried. A cycle still running
`STUCK_MARGIN` after its deadline (stuck in local work, not in remote I/O) makes `/healthz`
fail, so the kubelet restarts the container.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from ..clients.git import LocalRepository, describe_error
from ..clients.git_transport import ConnectionTracker
from ..models.common import parse_duration
from ..models.gitsync import GitSyncStorage
from ..models.sync import ConflictInfo, StorageSyncState
from ..rules.gitsync import pod_serves, redact_url, retry_delay, stale_after_seconds, storage_ready
from .cycle import CycleReport, run_cycle
from .metrics import SyncMetrics

log = logging.getLogger(__name__)

STALE_LOCK_ENV = "FLIPT_GIT_SYNC_STALE_LOCK_SECONDS"
REPACK_PACKS_ENV = "FLIPT_GIT_SYNC_REPACK_PACKS"
REPACK_GRACE_ENV = "FLIPT_GIT_SYNC_REPACK_GRACE_SECONDS"
STUCK_MARGIN_ENV = "FLIPT_GIT_SYNC_STUCK_MARGIN_SECONDS"
# How long past its deadline a cycle may still run before /healthz fails: cutting the
# connections ends remote I/O at once, so this covers local work (a pack consolidation of a
# large repository took 8 s) with room to spare.
DEFAULT_STUCK_MARGIN_SECONDS = 30.0
# After the deadline the cut is repeated this often, for a connection opened meanwhile.
ABORT_REPEAT_SECONDS = 1.0

T = TypeVar("T")


def in_daemon_thread(name: str, function: Callable[[], T]) -> asyncio.Future[T]:
    """Run `function` in a new daemon thread; its result arrives on the running loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = function()
        except BaseException as exc:  # handed to the awaiting coroutine
            error = exc
        try:
            loop.call_soon_threadsafe(deliver, result, error)
        except RuntimeError:
            pass  # the loop is closed: the process is exiting

    threading.Thread(target=target, name=name, daemon=True).start()
    return future


class StorageSync:
    def __init__(self, storage: GitSyncStorage, metrics: SyncMetrics) -> None:
        self.storage = storage
        self.metrics = metrics
        self.interval = parse_duration(storage.poll_interval)
        self.sync_timeout = parse_duration(storage.sync_timeout)
        self.stale_after = stale_after_seconds(
            self.interval, parse_duration(storage.stale_after) if storage.stale_after else None)
        self.stuck_margin = float(os.environ.get(STUCK_MARGIN_ENV, DEFAULT_STUCK_MARGIN_SECONDS))
        self.repo = LocalRepository(
            storage.repository_path,
            storage.branch,
            float(os.environ.get(STALE_LOCK_ENV, "10")),
            int(os.environ.get(REPACK_PACKS_ENV, "20")),
            float(os.environ.get(REPACK_GRACE_ENV, "60")),
        )
        self.state = StorageSyncState(
            storage=storage.name,
            remote=redact_url(storage.remote),
            branch=storage.branch,
            fetch_policy=storage.fetch_policy,
        )
        self.served = False  # a revision has been published to Flipt by this process
        self.failures = 0
        self.cycles = 0
        self._opened = False
        self._log = logging.LoggerAdapter(log, {"storage": storage.name})
        # The cycle in progress: when it started (monotonic), its connections, its thread's result.
        self.cycle_started: float | None = None
        self.tracker: ConnectionTracker | None = None
        self.in_flight: asyncio.Future[CycleReport] | None = None

    async def run(self) -> None:
        while True:
            await self.step()
            await asyncio.sleep(retry_delay(self.interval, self.failures))

    def _cycle(self, tracker: ConnectionTracker) -> CycleReport:
        """One cycle, in its own thread: open the repository if needed, then sync."""
        try:
            if not self._opened:
                removed = self.repo.open()
                self._opened = True
                if removed:
                    self._log.warning("recovered repository: removed %s", ", ".join(removed))
            return run_cycle(self.repo, self.storage, tracker)
        except Exception as exc:  # e.g. an unwritable volume: report and retry
            error = describe_error(exc)
            if tracker.aborted:
                error = f"{tracker.reason} ({error})"
            self._log.error("sync failed: %s", error)
            return CycleReport(error=error, result="timeout" if tracker.aborted else "error")

    async def step(self) -> None:
        """One sync cycle, bounded by the deadline; never raises (but can be cancelled)."""
        tracker = ConnectionTracker()
        self.tracker, self.cycle_started = tracker, time.monotonic()
        self.in_flight = in_daemon_thread(f"sync-{self.storage.name}", lambda: self._cycle(tracker))
        try:
            try:
                report = await asyncio.wait_for(asyncio.shield(self.in_flight), self.sync_timeout)
            except TimeoutError:
                reason = (
                    f"sync timed out after {self.sync_timeout:g}s (syncTimeout): "
                    "remote connections closed, retrying"
                )
                self._log.error(reason)
                self.state.last_error = reason
                report = await self._after_abort(tracker, reason)
        except asyncio.CancelledError:
            tracker.abort("git-sync is stopping")
            raise
        finally:
            self.tracker, self.cycle_started = None, None
        self.cycles += 1
        self._apply(report)

    async def _after_abort(self, tracker: ConnectionTracker, reason: str) -> CycleReport:
        assert self.in_flight is not None
        while True:
            tracker.abort(reason)
            done, _ = await asyncio.wait([self.in_flight], timeout=ABORT_REPEAT_SECONDS)
            if done:
                return self.in_flight.result()

    def serves_pod(self) -> bool:
        """Whether the pod may take traffic for this storage (/readyz): see `rules.gitsync.pod_serves`."""
        last = self.state.last_fetch_time
        age = (datetime.now(UTC) - last).total_seconds() if last is not None else None
        return pod_serves(self.storage.fetch_policy, self.served, age, self.stale_after)

    def stuck_for(self, now: float | None = None) -> float | None:
        """Seconds the running cycle has been going when that is past deadline + margin."""
        started = self.cycle_started
        if started is None:
            return None
        running = (time.monotonic() if now is None else now) - started
        return running if running > self.sync_timeout + self.stuck_margin else None

    def _apply(self, report: CycleReport) -> None:
        state, name, now = self.state, self.storage.name, datetime.now(UTC)
        state.last_attempt_time = now
        self.metrics.syncs.labels(name, report.result).inc()
        if report.fetch_seconds is not None and report.fetched:
            self.metrics.fetch_duration.labels(name).observe(report.fetch_seconds)
        if report.push_seconds is not None:
            self.metrics.push_duration.labels(name).observe(report.push_seconds)
        if report.fetched:
            self.failures = 0
            state.last_fetch_time = now
            state.remote_revision = report.remote_revision
            self.metrics.last_success.labels(name).set(time.time())
            if report.revision is not None:
                self.served = True
        else:
            self.failures += 1
            # A lenient storage serves what the volume already has.
            if self.storage.fetch_policy == "lenient" and report.revision is not None:
                self.served = True
        state.revision = report.revision if self.served else None
        state.ahead, state.behind = report.ahead, report.behind
        fetch_failed = report.fetch_error is not None
        state.last_error = report.fetch_error or report.error or (report.conflict.message if report.conflict else None)
        state.degraded = fetch_failed and self.served
        state.ready = storage_ready(self.storage.fetch_policy, self.served, fetch_failed)
        self._apply_conflict(report, now)
        self.metrics.ahead.labels(name).set(state.ahead)
        self.metrics.behind.labels(name).set(state.behind)
        self.metrics.ready.labels(name).set(1 if state.ready else 0)
        if state.last_error:
            self._log.warning(
                "sync %s: %s", report.result, state.last_error, extra={"ready": state.ready, "degraded": state.degraded}
            )
        elif report.actions and report.actions != ["nothing"]:
            self._log.info("synced: %s", ", ".join(report.actions), extra={"revision": state.revision})

    def _apply_conflict(self, report: CycleReport, now: datetime) -> None:
        # A conflict stays while it holds; cycles that cannot tell (fetch failed) keep it too.
        found = report.conflict
        if found is None:
            if report.fetched and report.error is None:
                self.state.conflict = None
        else:
            previous = self.state.conflict
            if previous is None:
                self.metrics.conflicts.labels(self.storage.name).inc()
            self.state.conflict = ConflictInfo(
                files=found.files,
                local_revision=found.local_revision,
                remote_revision=found.remote_revision,
                detected_at=previous.detected_at if previous else now,
            )
        self.metrics.conflict.labels(self.storage.name).set(1 if self.state.conflict else 0)

    def close(self) -> None:
        self.repo.close()
