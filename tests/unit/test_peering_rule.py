from datetime import UTC, datetime, timedelta

from flipt_operator.rules.peering import yields_to_a_peer

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def peer(priority, seen_ago=5, lifetime=60):
    return {"priority": priority, "lifetime": lifetime,
            "lastseen": (NOW - timedelta(seconds=seen_ago)).strftime("%Y-%m-%dT%H:%M:%S.%f")}


def test_alone_or_highest_is_active():
    assert not yields_to_a_peer(None, "me", 10, NOW)
    assert not yields_to_a_peer({"me": peer(10)}, "me", 10, NOW)
    assert not yields_to_a_peer({"me": peer(10), "other": peer(5)}, "me", 10, NOW)


def test_a_live_higher_or_equal_peer_pauses_us():
    assert yields_to_a_peer({"me": peer(10), "other": peer(20)}, "me", 10, NOW)
    assert yields_to_a_peer({"me": peer(10), "other": peer(10)}, "me", 10, NOW)  # kopf freezes both


def test_a_dead_peer_does_not():
    assert not yields_to_a_peer({"other": peer(20, seen_ago=120)}, "me", 10, NOW)
    assert not yields_to_a_peer({"other": {"priority": 20, "lastseen": "garbage"}}, "me", 10, NOW)
