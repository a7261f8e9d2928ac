"""One sync of one storage: fetch, then publish, push, replay or report a conflict.

Runs in a worker thread (all of it is blocking dulwich I/O). The decision comes from
`rules.gitsync.plan_sync`; this module gathers the facts and carries the decision out.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from ..clients.git import LocalRepository, PushRejectedError, RemoteMovedError, describe_error
from ..clients.git_hooks import pause_point
from ..clients.git_integrity import looks_like_corruption
from ..clients.git_refs import RefLockedError
from ..clients.git_transport import ConnectionTracker, RemoteAccess, open_remote
from ..models.gitsync import GitSyncStorage
from ..rules.gitsync import SyncAction, SyncFacts, conflicting_files, plan_sync, scrub

log = logging.getLogger(__name__)

# Flipt may commit between our reads and our compare-and-swap; that many tries per cycle.
PUBLISH_ATTEMPTS = 5


@dataclass
class ConflictFound:
    files: list[str]
    local_revision: str
    remote_revision: str
    kept_ref: str
    message: str


@dataclass
class CycleReport:
    fetched: bool = False
    fetch_error: str | None = None
    error: str | None = None  # any other failure (push, publish, ...)
    result: str = "success"  # metrics label: success, fetch_error, push_error, conflict, timeout, error
    remote_revision: str | None = None
    revision: str | None = None
    ahead: int = 0
    behind: int = 0
    conflict: ConflictFound | None = None
    fetch_seconds: float | None = None
    push_seconds: float | None = None
    actions: list[str] = field(default_factory=list)


def run_cycle(repo: LocalRepository, storage: GitSyncStorage, tracker: ConnectionTracker | None = None) -> CycleReport:
    """One cycle. `tracker` holds the cycle's connections: when another thread aborts it (the
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
        report.remote_revision = fetched.remote_head
        if fetched.remote_head is not None:
            repo.set_remote_head(fetched.remote_head)
        tracker.check()
        _reconcile(repo, access, fetched.remote_head, report)
    except Exception as exc:
        log.debug("sync cycle failed", exc_info=True)
        report.error = _with_damage(repo, exc, describe_error(exc, secrets))
        report.result = "push_error" if isinstance(exc, PushRejectedError) else "error"
        if tracker.aborted:
            reason = tracker.reason or "aborted"
            report.error = f"{reason} ({report.error})" if reason not in (report.error or "") else report.error
            report.result = "timeout"
    finally:
        if access is not None:
            access.close()
        _maintain(repo, report)
        _count(repo, report)
    return report


def _rebuild(repo: LocalRepository, access: RemoteAccess, report: CycleReport) -> None:
    result = repo.rebuild(access)
    report.actions.append("rebuilt")
    log.warning(
        "rebuilt the damaged repository from upstream (damaged: %s; moved to %s; %d objects salvaged)",
        "; ".join(result.damaged), result.quarantine, result.salvaged,
    )  # fmt: skip
    if result.lost_refs:
        lost = ", ".join(f"{ref} at {sha}" for ref, sha in sorted(result.lost_refs.items()))
        report.error = (
            f"repository rebuilt from upstream, but the history of {lost} was damaged and upstream does not "
            f"have it; the damaged files are kept in {result.quarantine}"
        )
        report.result = "error"
        log.error(report.error)


def _with_damage(repo: LocalRepository, exc: BaseException, error: str) -> str:
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


def _maintain(repo: LocalRepository, report: CycleReport) -> None:
    """Pack consolidation after the refs have moved; a failure is logged, never fatal."""
    try:
        done = repo.maintain()
    except Exception as exc:
        log.warning("pack maintenance failed: %s", describe_error(exc))
        return
    if done:
        log.info("pack maintenance: %s", done)
        report.actions.append("repacked")


def _count(repo: LocalRepository, report: CycleReport) -> None:
    try:
        local = repo.local_head()
        remote = report.remote_revision or repo.remote_head()
        report.revision = local
        if local and remote and repo.has_commit(remote):
            report.ahead = repo.count_only_in(local, remote)
            report.behind = repo.count_only_in(remote, local)
    except Exception:  # counting is informative only
        log.debug("cannot count ahead/behind", exc_info=True)


def _facts(repo: LocalRepository, local: str | None, remote: str | None) -> SyncFacts:
    base = repo.last_synced()
    if local is None or remote is None:
        return SyncFacts(local=local, remote=remote, base=base)
    return SyncFacts(
        local=local,
        remote=remote,
        base=base,
        local_in_remote=repo.is_ancestor(local, remote),
        remote_in_local=repo.is_ancestor(remote, local),
        base_in_remote=base is None or repo.is_ancestor(base, remote),
        local_in_base=base is not None and repo.is_ancestor(local, base),
    )


def _reconcile(repo: LocalRepository, access: RemoteAccess, remote: str | None, report: CycleReport) -> None:
    for _attempt in range(PUBLISH_ATTEMPTS):
        local = repo.local_head()
        facts = _facts(repo, local, remote)
        action = plan_sync(facts)
        report.actions.append(action.value)
        if action is SyncAction.NOTHING:
            assert remote is not None
            repo.set_last_synced(remote)
            return
        if action is SyncAction.NO_REMOTE_BRANCH:
            report.error = f"remote has no branch {repo.branch}"
            report.result = "error"
            return
        if action is SyncAction.FOLLOW_REMOTE:
            assert remote is not None
            if facts.base is not None and not facts.base_in_remote:
                log.warning("remote history of %s was rewritten; no unpushed local commits, following it", repo.branch)
            if not _publish(repo, local, remote):
                continue  # Flipt committed meanwhile: decide again
            repo.set_last_synced(remote)
            return
        if action is SyncAction.PUSH_LOCAL:
            assert local is not None
            _push(repo, access, remote, local, report)
            return
        if action is SyncAction.REWRITTEN_CONFLICT:
            assert local is not None and remote is not None and facts.base is not None
            kept = repo.keep(local)
            report.conflict = ConflictFound(
                files=sorted(repo.changed_files(facts.base, local)),
                local_revision=local,
                remote_revision=remote,
                kept_ref=kept,
                message=(
                    f"remote history of {repo.branch} was rewritten (force-push) while local commits "
                    f"were not pushed; they are kept on {kept}; reset the local branch to resolve"
                ),
            )
            report.result = "conflict"
            return
        # CHECK_FILES: both sides moved since the base.
        assert local is not None and remote is not None
        if _replay_or_conflict(repo, access, facts, report):
            return
    report.error = f"{repo.branch} kept changing during {PUBLISH_ATTEMPTS} attempts; retrying next cycle"
    report.result = "error"


def _publish(repo: LocalRepository, old: str | None, new: str) -> bool:
    try:
        return repo.publish(old, new)
    except RefLockedError:
        return False


def _push(
    repo: LocalRepository, access: RemoteAccess, remote: str | None, new: str, report: CycleReport
) -> None:
    started = time.monotonic()
    try:
        repo.push(access, remote, new)
    except RemoteMovedError as exc:
        log.info("%s; will fetch and retry", exc)
        report.actions.append("remote-moved")
        return
    except PushRejectedError as exc:
        report.error = describe_error(exc, access.secrets)
        report.result = "push_error"
        return
    finally:
        report.push_seconds = time.monotonic() - started
    pause_point("after-push")
    repo.set_remote_head(new)
    repo.set_last_synced(new)
    report.remote_revision = new
    report.actions.append("pushed")


def _replay_or_conflict(repo: LocalRepository, access: RemoteAccess, facts: SyncFacts, report: CycleReport) -> bool:
    """True when this cycle is done; False to decide again (Flipt moved the branch)."""
    local, remote = facts.local, facts.remote
    assert local is not None and remote is not None
    base = facts.base or repo.merge_base(local, remote)
    chain = repo.first_parent_chain(base, local) if base else None
    if base is None or chain is None:
        files = sorted(repo.changed_files(base, local)) if base else []
        overlap = files
    else:
        overlap = conflicting_files(repo.changed_files(base, local), repo.changed_files(base, remote))
    if overlap or chain is None:
        kept = repo.keep(local)
        report.conflict = ConflictFound(
            files=overlap,
            local_revision=local,
            remote_revision=remote,
            kept_ref=kept,
            message=(
                f"local commits change files the remote changed too ({', '.join(overlap) or 'unrelated history'}); "
                f"not pushed, kept on {kept}"
            ),
        )
        report.result = "conflict"
        return True
    replayed = repo.replay(chain, remote)
    if not _publish(repo, local, replayed):
        return False
    repo.set_last_synced(remote)
    report.actions.append("replayed")
    _push(repo, access, remote, replayed, report)
    return True
