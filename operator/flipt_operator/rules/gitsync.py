"""The git-sync sidecar's decisions, free of I/O: what a sync cycle does, retry timing, scrubbing.

The sidecar's client layer gathers facts about three commits of one storage and asks
`plan_sync` what to do:
- local: the served branch (`refs/heads/<branch>`), where Flipt commits its writes;
- remote: the remote branch head just fetched;
- base: the last remote commit the local branch was in step with (persisted on the volume).
"""

from __future__ import annotations

import enum
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass


class SyncAction(enum.Enum):
    NOTHING = "nothing"  # local and remote are the same commit
    FOLLOW_REMOTE = "follow-remote"  # no unpushed local commits: publish the remote head
    PUSH_LOCAL = "push-local"  # the remote is an ancestor of local: push local
    CHECK_FILES = "check-files"  # both moved: replay or conflict, decided by the changed files
    REWRITTEN_CONFLICT = "rewritten-conflict"  # remote history rewritten under unpushed local commits
    NO_REMOTE_BRANCH = "no-remote-branch"  # nothing to serve or the remote branch vanished


@dataclass(frozen=True)
class SyncFacts:
    local: str | None
    remote: str | None
    base: str | None
    local_in_remote: bool = False  # local is the remote head or one of its ancestors
    remote_in_local: bool = False  # the remote head is local or one of its ancestors
    base_in_remote: bool = True  # base is the remote head or one of its ancestors
    local_in_base: bool = False  # local has no commit beyond base (nothing unpushed)


def plan_sync(facts: SyncFacts) -> SyncAction:
    """The action for one cycle. Ordered so that no path can drop an unpushed local commit."""
    if facts.remote is None:
        # An empty remote gets the local branch only when we never synced with it before;
        # a branch that disappeared after a sync is reported, not recreated behind anyone's back.
        if facts.local is not None and facts.base is None:
            return SyncAction.PUSH_LOCAL
        return SyncAction.NO_REMOTE_BRANCH
    if facts.local is None:
        return SyncAction.FOLLOW_REMOTE
    if facts.local == facts.remote:
        return SyncAction.NOTHING
    if facts.local_in_remote:
        return SyncAction.FOLLOW_REMOTE
    if facts.base is not None and not facts.base_in_remote:
        # Force-push on the remote. Without unpushed local commits we follow it; with them,
        # pushing would resurrect what the remote removed and following would drop them.
        return SyncAction.FOLLOW_REMOTE if facts.local_in_base else SyncAction.REWRITTEN_CONFLICT
    if facts.remote_in_local:
        return SyncAction.PUSH_LOCAL
    return SyncAction.CHECK_FILES


def conflicting_files(local_changed: Iterable[str], remote_changed: Iterable[str]) -> list[str]:
    """Files both sides changed since the base; empty means the local commits can be replayed."""
    return sorted(set(local_changed) & set(remote_changed))


def retry_delay(poll_interval: float, failures: int, rng: random.Random | None = None) -> float:
    """Seconds until the next attempt: the poll interval, doubled per consecutive failure,
    capped at four intervals (at most 5 minutes, never below one interval), with ±10 % jitter
    so that many pods do not hit the remote at the same instant."""
    cap = max(poll_interval, min(4 * poll_interval, 300.0))
    delay = min(poll_interval * (2 ** max(failures, 0)), cap)
    jitter = (rng or random).uniform(-0.1, 0.1)
    return float(max(0.05, delay * (1 + jitter)))


_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@")
REDACTED = "***"


def redact_url(url: str) -> str:
    """The URL without its user-info (user:password@), as it may be printed."""
    return _URL_USERINFO.sub(lambda m: m.group("scheme"), url)


def scrub(text: str, secrets: Iterable[str | bytes | None] = ()) -> str:
    """Text safe for logs and status: URL user-info removed and every known secret value masked."""
    cleaned = redact_url(text)
    values = set()
    for secret in secrets:
        if isinstance(secret, bytes):
            secret = secret.decode("utf-8", "replace")
        if secret and secret.strip():
            values.add(secret.strip())
            values.add(secret)
    # Longest first, so that a secret containing another is masked whole.
    for value in sorted(values, key=len, reverse=True):
        cleaned = cleaned.replace(value, REDACTED)
    return cleaned


MIN_STALE_AFTER_SECONDS = 60.0


def stale_after_seconds(poll_interval: float, configured: float | None) -> float:
    """How stale a strict storage's published revision may get before its pod stops being ready."""
    return configured if configured is not None else max(3 * poll_interval, MIN_STALE_AFTER_SECONDS)


def pod_serves(fetch_policy: str, served: bool, seconds_since_last_fetch: float | None, stale_after: float) -> bool:
    """Whether the pod may receive traffic for this storage (the sidecar's /readyz).

    Nothing is served before a revision has been published. A lenient storage serves the last good
    state for as long as it takes; a strict one while its last successful fetch is not older than
    `stale_after`: a passing outage must not take every replica out of its Service at once, while
    a long one still does. (The storage's *status* follows `storage_ready`: not Ready at once.)"""
    if not served:
        return False
    if fetch_policy == "lenient":
        return True
    return seconds_since_last_fetch is not None and seconds_since_last_fetch <= stale_after


def storage_ready(fetch_policy: str, served: bool, last_fetch_failed: bool) -> bool:
    """Whether Flipt may be served from a storage.

    Nothing is ready before a revision has been published. Strict storages also need the last
    fetch to have succeeded; lenient ones keep serving the last good state (degraded)."""
    if not served:
        return False
    if fetch_policy == "strict":
        return not last_fetch_failed
    return True
