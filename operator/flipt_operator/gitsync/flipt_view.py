"""What the sidecar can tell about its Flipt from Flipt's git requests (no I/O).

- Which commit of each branch Flipt has: the refs an upload-pack advertisement offered whose
  commit Flipt then asked for ("want" lines), or already had (it asks for nothing it has), and
  the commits it pushed through the sidecar.
- Writes Flipt gave up on: go-git refuses a non-fast-forward push itself, before sending
  anything, so the sidecar never sees that push. It sees a receive-pack advertisement of a ref
  upstream has moved past what Flipt has; Flipt then fetches and runs its write again, which
  starts a new attempt (a new advertisement). When neither a push nor a new attempt follows
  within `REFUSAL_GRACE_SECONDS`, Flipt refused the write (its expected revision had moved on):
  that is reported as a conflict, with the files upstream changed since the revision Flipt had.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

# Flipt re-runs a write at once after its fetch; a refused one never comes back.
REFUSAL_GRACE_ENV = "FLIPT_GIT_SYNC_REFUSAL_GRACE_SECONDS"
REFUSAL_GRACE_SECONDS = float(os.environ.get(REFUSAL_GRACE_ENV, "5"))


@dataclass
class PushAttempt:
    """A receive-pack advertisement: refs where upstream (advertised) is past what Flipt has."""

    behind: dict[str, tuple[str, str]]  # ref -> (Flipt's commit, upstream's commit)
    at: float


@dataclass
class FliptView:
    refs: dict[str, str] = field(default_factory=dict)  # ref -> the commit Flipt has
    has: set[str] = field(default_factory=set)  # commits Flipt is known to have
    _offered: dict[str, str] = field(default_factory=dict)
    attempt: PushAttempt | None = None
    last_fetch: float | None = None  # time.time() of Flipt's last fetch

    def offered(self, heads: dict[str, str]) -> None:
        """An upload-pack advertisement: refs Flipt tracks whose commit it has are now current
        (it will ask only for what it lacks)."""
        self._offered = dict(heads)
        for ref, sha in heads.items():
            if ref in self.refs and sha in self.has:
                self.refs[ref] = sha
        self.last_fetch = time.time()

    def fetched(self, wants: list[str]) -> None:
        """An upload-pack request completed: Flipt now has what it wanted."""
        wanted = set(wants)
        self.has |= wanted
        for ref, sha in self._offered.items():
            if sha in wanted:
                self.refs[ref] = sha
        self.last_fetch = time.time()

    def pushed(self, ref: str, sha: str | None) -> None:
        if sha is None:
            self.refs.pop(ref, None)
            return
        self.refs[ref] = sha
        self.has.add(sha)

    def push_attempt(self, heads: dict[str, str], now: float | None = None) -> None:
        """A receive-pack advertisement; it replaces an earlier attempt (a retry)."""
        behind = {
            ref: (mine, heads[ref])
            for ref, mine in self.refs.items()
            if ref in heads and heads[ref] != mine
        }
        self.attempt = PushAttempt(behind, time.monotonic() if now is None else now)

    def push_received(self) -> None:
        self.attempt = None

    def refused(self, now: float | None = None, grace: float = REFUSAL_GRACE_SECONDS) -> PushAttempt | None:
        """The attempt Flipt gave up on, once it is older than the grace period (then forgotten)."""
        attempt = self.attempt
        if attempt is None or not attempt.behind:
            return None
        if (time.monotonic() if now is None else now) - attempt.at < grace:
            return None
        self.attempt = None
        return attempt
