"""One poll of one storage: fetch every upstream branch into the mirror and publish it.

Runs in a worker thread (all of it is blocking dulwich I/O). Flipt's pushes do not wait for a
poll: they are forwarded at once (`forward.py`); a poll only brings upstream's own changes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from ..clients.git import MirrorRepository, describe_error
from ..clients.git_integrity import looks_like_corruption
from ..clients.git_transport import ConnectionTracker, RemoteAccess, open_remote
from ..models.gitsync import GitSyncStorage
from ..rules.gitsync import scrub

log = logging.getLogger(__name__)


@dataclass
class CycleReport:
    fetched: bool = False
    fetch_error: str | None = None
    error: str | None = None  # any other failure (publish, ...)
    result: str = "success"  # metrics label: success, fetch_error, timeout, error
    remote_revision: str | None = None  # upstream's head of the storage's branch
    revision: str | None = None  # the mirror's head of the branch after the cycle
    fetch_seconds: float | None = None
    actions: list[str] = field(default_factory=list)


def run_cycle(repo: MirrorRepository, storage: GitSyncStorage, tracker: ConnectionTracker | None = None) -> CycleReport:
    """One poll. `tracker` holds the cycle's connections: when another thread aborts it (the
    deadline passed), the cycle's remote I/O fails and the error says why."""
    tracker = tracker or ConnectionTracker()
    report = CycleReport()
    access: RemoteAccess | None = None
    secrets: list[str] = []
    try:
        started = time.monotonic()
        try:
            tracker.check()
            access = open_remote(storage, tracker)
            secrets = access.secrets
            if repo.damage:
                _rebuild(repo, access, report)
            fetched = repo.fetch(access)
        except Exception as exc:  # every transport raises its own kind; all mean "fetch failed"
            report.fetch_error = _with_damage(repo, exc, describe_error(exc, secrets))
            if access is not None:
                report.fetch_error = scrub(access.explain(report.fetch_error), secrets)
            if tracker.aborted:
                report.fetch_error = f"{tracker.reason} ({report.fetch_error})"
                report.result = "timeout"
            else:
                report.result = "fetch_error"
            return report
        finally:
            report.fetch_seconds = time.monotonic() - started
        report.fetched = True
        tracker.check()
        report.remote_revision = fetched.heads.get(repo.branch_ref)
        moved = repo.publish(fetched.heads)
        if moved:
            report.actions.append(f"published {len(moved)} branch(es)")
        if report.remote_revision is None:
            report.error = f"upstream has no branch {repo.branch}"
            report.result = "error"
    except Exception as exc:
        log.debug("sync cycle failed", exc_info=True)
        report.error = _with_damage(repo, exc, describe_error(exc, secrets))
        report.result = "error"
        if tracker.aborted:
            reason = tracker.reason or "aborted"
            report.error = f"{reason} ({report.error})" if reason not in (report.error or "") else report.error
            report.result = "timeout"
    finally:
        if access is not None:
            access.close()
        _maintain(repo, report)
        report.revision = _head(repo)
    return report


def _head(repo: MirrorRepository) -> str | None:
    try:
        return repo.head()
    except Exception:  # informative only
        log.debug("cannot read the mirror's head", exc_info=True)
        return None


def _rebuild(repo: MirrorRepository, access: RemoteAccess, report: CycleReport) -> None:
    result = repo.rebuild(access)
    report.actions.append("rebuilt")
    log.warning("rebuilt the damaged repository from upstream (damaged: %s; moved to %s)",
                "; ".join(result.damaged), result.quarantine)  # fmt: skip


def _with_damage(repo: MirrorRepository, exc: BaseException, error: str) -> str:
    """A corruption error makes the cycle look for damaged files; the next cycle rebuilds."""
    if not looks_like_corruption(exc):
        return error
    try:
        damage = repo.check_thoroughly()
    except Exception:
        log.warning("cannot check the repository for damage", exc_info=True)
        return error
    if not damage:
        return error
    return f"local repository damaged ({'; '.join(d.describe() for d in damage)}): rebuilding from upstream ({error})"


def _maintain(repo: MirrorRepository, report: CycleReport) -> None:
    """Pack consolidation after the refs have moved; a failure is logged, never fatal."""
    try:
        done = repo.maintain()
    except Exception as exc:
        log.warning("pack maintenance failed: %s", describe_error(exc))
        return
    if done:
        log.info("pack maintenance: %s", done)
        report.actions.append("repacked")
