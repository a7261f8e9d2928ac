"""Is this replica the active one? kopf's peering rule, read from the peering object's status.

kopf pauses its watchers when a live peer has a higher priority (or the same one), but keeps
that state to itself; the operator's own background work (sidecar polls, database re-checks)
asks this instead, so a standby replica stays quiet.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any


def _parse(stamp: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def yields_to_a_peer(status: dict[str, Any] | None, own_id: str, own_priority: int, now: datetime) -> bool:
    """True when a live peer other than us has a priority >= ours (kopf then pauses us)."""
    for peer_id, info in (status or {}).items():
        if peer_id == own_id or not isinstance(info, dict):
            continue
        seen = _parse(str(info.get("lastseen", "")))
        if seen is None or seen + timedelta(seconds=int(info.get("lifetime", 60))) <= now:
            continue  # dead (or unreadable): kopf ignores it too
        if int(info.get("priority", 0)) >= own_priority:
            return True
    return False
