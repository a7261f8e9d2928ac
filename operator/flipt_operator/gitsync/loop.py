"""The per-storage loop: open the repository once, then sync every pollInterval, forever.

A failing remote never ends the loop: it backs off (capped, with jitter) and reports.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import UTC, datetime

from ..clients.git import LocalRepository, describe_error
from ..models.common import parse_duration
from ..models.gitsync import GitSyncStorage
from ..models.sync import ConflictInfo, StorageSyncState
from ..rules.gitsync import redact_url, retry_delay, storage_ready
from .cycle import CycleReport, run_cycle
from .metrics import SyncMetrics

log = logging.getLogger(__name__)

STALE_LOCK_ENV = "FLIPT_GIT_SYNC_STALE_LOCK_SECONDS"
REPACK_PACKS_ENV = "FLIPT_GIT_SYNC_REPACK_PACKS"
REPACK_GRACE_ENV = "FLIPT_GIT_SYNC_REPACK_GRACE_SECONDS"


class StorageSync:
    def __init__(self, storage: GitSyncStorage, metrics: SyncMetrics) -> None:
        self.storage = storage
        self.metrics = metrics
        self.interval = parse_duration(storage.poll_interval)
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

    async def run(self) -> None:
        while True:
            await self.step()
            await asyncio.sleep(retry_delay(self.interval, self.failures))

    async def step(self) -> None:
        """Open the repository if needed, then one sync cycle; never raises."""
        try:
            if not self._opened:
                removed = await asyncio.to_thread(self.repo.open)
                self._opened = True
                if removed:
                    self._log.warning("recovered repository: removed %s", ", ".join(removed))
            report = await asyncio.to_thread(run_cycle, self.repo, self.storage)
        except Exception as exc:  # e.g. an unwritable volume: report and retry
            self._log.error("sync failed: %s", describe_error(exc))
            report = CycleReport(error=describe_error(exc), result="error")
        self.cycles += 1
        self._apply(report)

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
