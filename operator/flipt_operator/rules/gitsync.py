"""The git-sync sidecar's decisions, free of I/O: retry timing, readiness, push outcomes, scrubbing."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable


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


def settled_push(new: str | None, upstream_now: str | None) -> str | None:
    """The outcome of a forwarded ref update whose reply was lost (connection cut after the pack
    was sent), decided by upstream's ref as read again afterwards: None when upstream holds what
    the client pushed (`new`; None for a deletion), otherwise why it is reported as not pushed."""
    if upstream_now == new:
        return None
    now = upstream_now[:12] if upstream_now else "absent"
    return f"upstream did not confirm the push and its ref is {now}: not pushed"
