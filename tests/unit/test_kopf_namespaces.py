"""The operator serves a namespace that kopf lists, not only one it sees change (handlers/kopf_namespaces.py)."""

import pytest
from kopf._cogs.structs import references
from kopf._core.reactor import observation

from flipt_operator.handlers import kopf_namespaces


def listed(name: str, **metadata) -> dict:
    """A namespace as kopf's watcher passes it from its listing: an event of type None."""
    return {"type": None, "object": {"metadata": {"name": name, **metadata}}}


@pytest.mark.asyncio
async def test_kopf_alone_skips_a_listed_namespace():
    """Why the module exists: if a kopf upgrade serves listed namespaces, drop the module."""
    insights = references.Insights()
    await kopf_namespaces.KOPF_HANDLER(raw_event=listed("team-a"), namespaces=["team-*"], insights=insights)
    assert insights.namespaces == set()


@pytest.mark.asyncio
async def test_a_listed_namespace_matching_the_pattern_is_served():
    insights = references.Insights()
    for name in ("team-a", "other"):
        await kopf_namespaces.process_discovered_namespace_event(
            raw_event=listed(name), namespaces=["team-*"], insights=insights
        )
    assert insights.namespaces == {"team-a"}


@pytest.mark.asyncio
async def test_a_listed_namespace_being_deleted_is_dropped():
    insights = references.Insights()
    insights.namespaces.add("team-a")
    gone = listed("team-a", deletionTimestamp="2026-12-01T00:00:00Z")
    gone["object"]["status"] = {"conditions": [{"type": "NamespaceDeletionContentFailure", "status": "False"}]}
    await kopf_namespaces.process_discovered_namespace_event(raw_event=gone, namespaces=["team-*"], insights=insights)
    assert insights.namespaces == set()


def test_the_operator_installs_it():
    import flipt_operator.handlers.main  # noqa: F401 - importing installs it

    assert observation.process_discovered_namespace_event is kopf_namespaces.process_discovered_namespace_event
