"""Redis preflight and Flipt cache purge against real redis-server processes."""

from __future__ import annotations

import hashlib
import socket
import time

import pytest

from flipt_operator.clients.redis_cache import connect, flipt_keys, preflight, preflight_async, purge_flag_cache
from tests.support.redis_fixtures import RedisServer

pytestmark = pytest.mark.integration


def _flipt_key(prefix: str, logical: str) -> str:
    # internal/cache/cache.go: fmt.Sprintf("%s:%x", prefix, md5.Sum(key))
    return f"{prefix}:{hashlib.md5(logical.encode()).hexdigest()}"


def _assert_no_secret(text: str, password: str) -> None:
    assert password not in text


def test_preflight_ready(shared_redis: RedisServer) -> None:
    check = preflight(shared_redis.host, shared_redis.port, db=1, timeout=2)
    assert check.ready and check.reachable and check.server_version


def test_preflight_with_password(password_redis: RedisServer) -> None:
    check = preflight(password_redis.host, password_redis.port, password=password_redis.password, timeout=2)
    assert check.ready


@pytest.mark.parametrize("password", [None, "wrong-password-Xy9"])
def test_preflight_auth_failure_is_scrubbed(password_redis: RedisServer, password: str | None) -> None:
    check = preflight(password_redis.host, password_redis.port, password=password, timeout=2)
    assert check.reason == "AuthenticationFailed" and not check.ready
    assert password_redis.password not in check.message
    if password:
        _assert_no_secret(check.message, password)
        _assert_no_secret(repr(check), password)


def test_preflight_invalid_database(password_redis: RedisServer) -> None:
    check = preflight(password_redis.host, password_redis.port, db=99, password=password_redis.password, timeout=2)
    assert check.reason == "InvalidDatabase"
    _assert_no_secret(check.message, password_redis.password or "")


def test_preflight_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    check = preflight("127.0.0.1", port, password="secret-unreachable", timeout=1)
    assert check.reason == "Unreachable" and not check.reachable
    _assert_no_secret(check.message, "secret-unreachable")


async def test_preflight_async(shared_redis: RedisServer) -> None:
    check = await preflight_async(shared_redis.host, shared_redis.port, timeout=2)
    assert check.ready


def test_purge_deletes_only_flipt_keys_under_the_prefix(shared_redis: RedisServer, redis_prefix: str) -> None:
    client = shared_redis.client(db=2)
    other_prefix = redis_prefix + "-other"
    ours = [_flipt_key(redis_prefix, f"s:f:default:flag-{i}") for i in range(1234)]
    survivors = [
        _flipt_key(other_prefix, "s:f:default:flag-1"),  # another Flipt's prefix
        f"{redis_prefix}:not-an-md5",  # not Flipt's key shape
        f"{redis_prefix}x:{hashlib.md5(b'a').hexdigest()}",  # prefix is only a string prefix of it
        f"unrelated:{redis_prefix}",
    ]
    try:
        with client.pipeline(transaction=False) as pipe:
            for key in ours + survivors:
                pipe.set(key, b"v", ex=300)
            pipe.execute()
        assert len(list(flipt_keys(client, redis_prefix))) == len(ours)
        assert purge_flag_cache(client, redis_prefix, batch_size=100) == len(ours)
        assert client.exists(*ours) == 0
        assert client.exists(*survivors) == len(survivors)
        assert purge_flag_cache(client, redis_prefix) == 0
    finally:
        client.delete(*(ours + survivors))
        client.close()


def test_purge_default_prefix_and_glob_characters(password_redis: RedisServer) -> None:
    client = connect(password_redis.host, password_redis.port, db=3, password=password_redis.password, timeout=2)
    try:
        client.flushdb()
        default = [_flipt_key("flipt", f"k{i}") for i in range(10)]
        globby = [_flipt_key("fl*pt[1]", f"k{i}") for i in range(3)]
        for key in default + globby:
            client.set(key, "v")
        # The glob characters in the prefix are literal: "fl*pt[1]" must not match "flipt".
        assert purge_flag_cache(client, "fl*pt[1]") == 3
        assert client.exists(*default) == 10
        assert purge_flag_cache(client) == 10
        assert client.dbsize() == 0
    finally:
        client.flushdb()
        client.close()


def test_preflight_silent_server_times_out() -> None:
    # A stand-in for a hung Redis: accepts the connection, never answers.
    from tests.support.silent_peers import silent_listener

    with silent_listener() as port:
        started = time.monotonic()
        check = preflight("127.0.0.1", port, password="secret-silent", timeout=1)
        elapsed = time.monotonic() - started
    assert check.reason == "Timeout" and not check.reachable, check
    assert elapsed < 3
    _assert_no_secret(check.message, "secret-silent")
