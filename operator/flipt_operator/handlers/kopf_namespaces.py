"""A namespace created while the operator starts must not go unserved (kopf 1.45.2).

With a namespace pattern (`--namespace 'team-*'`) kopf's namespace observer LISTs namespaces,
then starts a watcher that LISTs again and streams from that listing. The watcher's listing
arrives as events of type None, which kopf's handler for namespace events skips. A namespace
created between the two listings is therefore in neither: no watch is started in it until it
changes. Seen in the test suite: a namespace made as the operator started was served 3 minutes
later, when it was deleted. The listed namespaces are revised like watched ones (adding a
matching namespace that is already known changes nothing).
"""

from __future__ import annotations

from typing import Any

from kopf._cogs.structs import bodies, references
from kopf._core.reactor import observation

# kopf's own, kept for the test that shows why this module exists.
KOPF_HANDLER = observation.process_discovered_namespace_event


async def process_discovered_namespace_event(
    *,
    raw_event: bodies.RawEvent,
    namespaces: Any,
    insights: references.Insights,
    **_: Any,
) -> None:
    async with insights.revised:
        observation.revise_namespaces(raw_events=[raw_event], insights=insights, namespaces=namespaces)
        insights.revised.notify_all()


def install() -> None:
    """kopf's namespace observer looks the handler up in its module when it starts watching."""
    observation.process_discovered_namespace_event = process_discovered_namespace_event
