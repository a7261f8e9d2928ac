"""The per-storage loop: open the mirror once, then poll upstream every pollInterval, forever;
and Flipt's pushes, forwarded upstream between polls.

A failing remote never ends the loop: it backs off (capped, with jitter) and reports. Polls,
the fetch before a push's ref advertisement and the forwarding of a push hold the storage's lock,
so they run one at a time per storage (pushes from several clients are serialized).

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
from typing import Any, TypeVar

from dulwich.repo import Repo

from ..clients.git import ZERO, MirrorRepository, RefUpdate, describe_error
from ..clients.git_transport import ConnectionTracker, open_remote
from ..models.common import parse_duration
from ..models.gitsync import GitSyncStorage
from ..models.sync import ConflictInfo, StorageSyncState
from ..rules.gitsync import pod_serves, redact_url, retry_delay, settled_push, stale_after_seconds, storage_ready
from .cycle import CycleReport, run_cycle
from .flipt_view import FliptView
from .git_http import receive_pack_in
from .metrics import SyncMetrics

log = logging.getLogger(__name__)

REPACK_PACKS_ENV = "FLIPT_GIT_SYNC_REPACK_PACKS"
REPACK_GRACE_ENV = "FLIPT_GIT_SYNC_REPACK_GRACE_SECONDS"
STUCK_MARGIN_ENV = "FLIPT_GIT_SYNC_STUCK_MARGIN_SECONDS"
# How long past its deadline a cycle may still run before /healthz fails: cutting the
# connections ends remote I/O at once, so this covers local work (a pack consolidation of a
# large repository took 8 s) with room to spare.
DEFAULT_STUCK_MARGIN_SECONDS = 30.0
# After the deadline the cut is repeated this often, for a connection opened meanwhile.
ABORT_REPEAT_SECONDS = 1.0
# A push's ref advertisement holds the storage's push lease until its push arrives (go-git sends
# it within milliseconds), or this long when none comes (go-git refused it itself): a second
# client's push then sees the first one's result and gets the non-fast-forward it retries on,
# instead of a server-side rejection it would not retry.
PUSH_LEASE_SECONDS = 1.0

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
        self.repo = MirrorRepository(
            storage.repository_path,
            storage.branch,
            int(os.environ.get(REPACK_PACKS_ENV, "20")),
            float(os.environ.get(REPACK_GRACE_ENV, "60")),
        )
        self.state = StorageSyncState(
            storage=storage.name,
            remote=redact_url(storage.remote),
            branch=storage.branch,
            fetch_policy=storage.fetch_policy,
        )
        self.flipt = FliptView()
        self.served = False  # the mirror holds a revision this process may serve
        self.failures = 0
        self.cycles = 0
        self._opened = False
        self._log = logging.LoggerAdapter(log, {"storage": storage.name})
        # Polls and pushes of this storage, one at a time.
        self.lock = asyncio.Lock()
        # From a push's ref advertisement to its push (see PUSH_LEASE_SECONDS).
        self.push_lease = asyncio.Lock()
        self._lease_token = 0
        # The cycle in progress: when it started (monotonic), its connections, its thread's result.
        self.cycle_started: float | None = None
        self.tracker: ConnectionTracker | None = None
        self.in_flight: asyncio.Future[Any] | None = None

    async def run(self) -> None:
        while True:
            await self.step()
            await asyncio.sleep(retry_delay(self.interval, self.failures))

    def _open(self) -> None:
        if not self._opened:
            removed = self.repo.open()
            self._opened = True
            if removed:
                self._log.warning("recovered repository: removed %s", ", ".join(removed))

    def _cycle(self, tracker: ConnectionTracker) -> CycleReport:
        """One cycle, in its own thread: open the repository if needed, then sync."""
        try:
            self._open()
            return run_cycle(self.repo, self.storage, tracker)
        except Exception as exc:  # e.g. an unwritable volume: report and retry
            error = describe_error(exc)
            if tracker.aborted:
                error = f"{tracker.reason} ({error})"
            self._log.error("sync failed: %s", error)
            return CycleReport(error=error, result="timeout" if tracker.aborted else "error")

    async def _bounded(self, name: str, work: Callable[[ConnectionTracker], T]) -> T:
        """`work` in its own daemon thread within the deadline (`syncTimeout`): at the deadline its
        connections are cut, so it ends with an error of its own; never raises but can be cancelled."""
        tracker = ConnectionTracker()
        self.tracker, self.cycle_started = tracker, time.monotonic()
        future: asyncio.Future[T] = in_daemon_thread(f"{name}-{self.storage.name}", lambda: work(tracker))
        self.in_flight = future
        try:
            try:
                return await asyncio.wait_for(asyncio.shield(future), self.sync_timeout)
            except TimeoutError:
                reason = (
                    f"sync timed out after {self.sync_timeout:g}s (syncTimeout): "
                    "remote connections closed, retrying"
                )
                self._log.error(reason)
                self.state.last_error = reason
                while True:
                    tracker.abort(reason)
                    done, _ = await asyncio.wait([future], timeout=ABORT_REPEAT_SECONDS)
                    if done:
                        return future.result()
        except asyncio.CancelledError:
            tracker.abort("git-sync is stopping")
            raise
        finally:
            self.tracker, self.cycle_started = None, None

    async def step(self) -> None:
        """One poll, bounded by the deadline; never raises (but can be cancelled)."""
        async with self.lock:
            report = await self._bounded("sync", self._cycle)
        self.cycles += 1
        self._apply(report)

    # -- serving Flipt -------------------------------------------------------------------------

    def serves_git(self) -> bool:
        """Whether Flipt may fetch from the mirror: a revision is published and, for a strict
        storage, this process has fetched upstream (lenient serves what the volume has)."""
        return self.served

    async def in_thread(self, read: Callable[[Repo], T]) -> T:
        """A read of the mirror (an upload-pack) in a worker thread, on a Repo of its own."""

        def run() -> T:
            repo = Repo(self.repo.path)
            try:
                return read(repo)
            finally:
                repo.close()

        return await asyncio.to_thread(run)

    async def lease_push(self) -> None:
        """Wait for the push lease (pushes of this storage go one after the other)."""
        await asyncio.wait_for(self.push_lease.acquire(), self.sync_timeout + PUSH_LEASE_SECONDS)
        self._lease_token += 1
        asyncio.get_running_loop().call_later(PUSH_LEASE_SECONDS, self.release_push, self._lease_token)

    def release_push(self, token: int | None = None) -> None:
        """End the push lease: its push arrived (no token), or its time is up (its token)."""
        if self.push_lease.locked() and (token is None or token == self._lease_token):
            self.push_lease.release()

    async def refresh_for_push(self) -> str | None:
        """Fetch upstream before advertising refs for a push; None, or the error."""
        await self.step()
        return None if self.state.last_fetch_time and self.state.last_attempt_time == self.state.last_fetch_time \
            else (self.state.last_error or "fetch failed")

    def push_attempt(self, heads: dict[str, str]) -> None:
        self._check_refused()
        self.flipt.push_attempt(heads)

    async def receive(self, body: bytes) -> bytes:
        """A receive-pack request: pack into the mirror, updates forwarded upstream, each ref
        reported as upstream decided; the mirror's refs follow only what upstream accepted."""
        self.flipt.push_received()
        try:
            async with self.lock:
                return await self._bounded("push", lambda tracker: self._receive(body, tracker))
        finally:
            self.release_push()

    async def forward(self, updates: list[RefUpdate]) -> dict[str, str | None]:
        """Forward updates whose objects are in the mirror already (as after receiving a pack)."""
        async with self.lock:
            return await self._bounded("push", lambda tracker: self._forward(updates, tracker))

    def _receive(self, body: bytes, tracker: ConnectionTracker) -> bytes:
        repo = Repo(self.repo.path)
        try:
            return receive_pack_in(repo, body, lambda updates: self._forward(updates, tracker))
        finally:
            repo.close()

    def _forward(self, updates: list[RefUpdate], tracker: ConnectionTracker) -> dict[str, str | None]:
        started = time.monotonic()
        try:
            access = open_remote(self.storage, tracker)
        except Exception as exc:  # e.g. an unreadable credential file: nothing was sent
            outcome: dict[str, str | None] = {ref: f"not pushed: {describe_error(exc)}" for _old, _new, ref in updates}
            self._after_forward(updates, outcome)
            return outcome
        try:
            try:
                outcome = self.repo.forward(access, updates)
            except Exception as exc:
                outcome = self._settle(updates, describe_error(exc, access.secrets), tracker)
        except Exception as exc:
            error = describe_error(exc, access.secrets)
            outcome = {ref: f"not pushed: {error}" for _old, _new, ref in updates}
        finally:
            access.close()
        self.metrics.push_duration.labels(self.storage.name).observe(time.monotonic() - started)
        self._after_forward(updates, outcome)
        return outcome

    def _settle(self, updates: list[RefUpdate], error: str, tracker: ConnectionTracker) -> dict[str, str | None]:
        """The push's reply was lost: read upstream's refs again to tell what it did."""
        self._log.warning("push outcome unknown (%s); reading upstream's refs again", error)
        if tracker.aborted:
            return {ref: f"{tracker.reason}: outcome unknown ({error})" for _old, _new, ref in updates}
        access = open_remote(self.storage, tracker)
        try:
            now = self.repo.upstream_heads(access)
        finally:
            access.close()
        return {ref: settled_push(None if new == ZERO else new, now.get(ref)) for _old, new, ref in updates}

    def _after_forward(self, updates: list[RefUpdate], outcome: dict[str, str | None]) -> None:
        now = datetime.now(UTC)
        for old, new, ref in updates:
            error = outcome.get(ref)
            name = self.storage.name
            if error is None:
                self.repo.set_head(ref, None if new == ZERO else new)
                self.flipt.pushed(ref, None if new == ZERO else new)
                self.state.last_push_time = now
                self.metrics.pushes.labels(name, "accepted").inc()
                if self.state.conflict is not None and ref == self.repo.branch_ref:
                    self.state.conflict = None  # a later write of Flipt's landed
                self._log.info("push of %s forwarded: upstream accepted %s", ref, new)
                continue
            self.metrics.pushes.labels(name, "refused").inc()
            self.state.last_error = f"push of {ref} refused: {error}"
            self._log.warning("push of %s refused upstream: %s", ref, error)
            if new != ZERO and self.repo.has_commit(new):
                files = sorted(self.repo.changed_files(old, new)) if old != ZERO and self.repo.has_commit(old) else []
                remote = error.split("moved to ")[1].rstrip(")") if "moved to " in error else old
                self._conflict(files, new, remote, now)
        if self.repo.branch_ref in outcome and outcome[self.repo.branch_ref] is None:
            self.state.revision = self.repo.head()
            self.state.remote_revision = self.state.revision
        self._update_flipt_state()

    def _conflict(self, files: list[str], local: str, remote: str, now: datetime) -> None:
        self.metrics.conflicts.labels(self.storage.name).inc()
        self.state.conflict = ConflictInfo(files=files, local_revision=local, remote_revision=remote, detected_at=now)
        self.metrics.conflict.labels(self.storage.name).set(1)

    def _check_refused(self) -> None:
        """Report a write Flipt refused after a non-fast-forward (see flipt_view)."""
        attempt = self.flipt.refused()
        if attempt is None:
            return
        ref = self.repo.branch_ref if self.repo.branch_ref in attempt.behind else sorted(attempt.behind)[0]
        mine, upstream = attempt.behind[ref]
        files: list[str] = []
        if self.repo.has_commit(mine) and self.repo.has_commit(upstream):
            files = sorted(self.repo.changed_files(mine, upstream))
        self._conflict(files, mine, upstream, datetime.now(UTC))
        self.state.last_error = (
            f"a write of Flipt's on {ref} was refused: upstream moved from {mine[:12]} to {upstream[:12]} "
            f"({', '.join(files) or 'no file'} changed)"
        )
        self._log.warning(self.state.last_error)

    def _update_flipt_state(self) -> None:
        state = self.state
        state.flipt_revision = self.flipt.refs.get(self.repo.branch_ref)
        if self.flipt.last_fetch is not None:
            state.flipt_fetch_time = datetime.fromtimestamp(self.flipt.last_fetch, UTC)
        state.behind = 0
        try:
            if state.revision and state.flipt_revision and self.repo.has_commit(state.flipt_revision):
                state.behind = self.repo.count_only_in(state.revision, state.flipt_revision)
        except Exception:  # counting is informative only
            log.debug("cannot count commits behind", exc_info=True)
        self.metrics.behind.labels(self.storage.name).set(state.behind)

    def current_state(self) -> StorageSyncState:
        """The state as /status shows it: with refusals past their grace and Flipt's position."""
        self._check_refused()
        self._update_flipt_state()
        return self.state

    # -- readiness -------------------------------------------------------------------------------

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
        fetch_failed = report.fetch_error is not None
        state.last_error = report.fetch_error or report.error
        state.degraded = fetch_failed and self.served
        state.ready = storage_ready(self.storage.fetch_policy, self.served, fetch_failed)
        self._update_flipt_state()
        self.metrics.ready.labels(name).set(1 if state.ready else 0)
        if state.last_error:
            self._log.warning(
                "sync %s: %s", report.result, state.last_error, extra={"ready": state.ready, "degraded": state.degraded}
            )
        elif report.actions:
            self._log.info("synced: %s", ", ".join(report.actions), extra={"revision": state.revision})

    def close(self) -> None:
        self.repo.close()
