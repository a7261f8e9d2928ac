"""Flipt's Redis cache: a readiness check and a purge of Flipt's cache entries.

Flipt (v1, `internal/cache/cache.go`) stores every cache entry under
`<prefix>:<md5 hex of the logical key>`, prefix `flipt` unless `cache.redis.prefix` is set.
The purge walks the keyspace with SCAN (never KEYS, which blocks the server) and deletes, in
batches with UNLINK, only keys of exactly that shape, so other data in the same database survives.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import redis
from redis import exceptions as rexc
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..rules.database_url import scrub

DEFAULT_PREFIX = "flipt"
_FLIPT_KEY_SUFFIX = re.compile(rb"[0-9a-f]{32}")

CacheReason = Literal[
    "Ready",
    "AuthenticationFailed",
    "Unreachable",
    "InvalidDatabase",
    "TLSFailed",
    "Timeout",
    "Failed",
]


@dataclass(frozen=True)
class CacheCheck:
    """Result of `preflight`. `message` never holds the password."""

    reason: CacheReason
    message: str
    reachable: bool = False
    server_version: str | None = None

    @property
    def ready(self) -> bool:
        return self.reason == "Ready"


def connect(
    host: str,
    port: int = 6379,
    db: int = 0,
    password: str | None = None,
    tls: bool = False,
    timeout: float = 5.0,
    username: str | None = None,
) -> redis.Redis:
    """A client configured the way Flipt connects (AUTH, then SELECT db) with bounded timeouts."""
    return redis.Redis(
        host=host,
        port=port,
        db=db,
        username=username or None,
        password=password or None,
        ssl=tls,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        protocol=2,  # RESP2: understood by every Redis-compatible server Flipt supports
    )


def preflight(
    host: str,
    port: int = 6379,
    db: int = 0,
    password: str | None = None,
    tls: bool = False,
    timeout: float = 5.0,
    username: str | None = None,
) -> CacheCheck:
    """Connect, authenticate, select `db` and PING, the way Flipt does at start. Blocking."""
    where = f"{host}:{port}/{db}"
    client: redis.Redis | None = None
    try:
        client = connect(host, port, db, password, tls, timeout, username)
        client.ping()
        version = client.info("server").get("redis_version")
        server = f"Redis {version}" if version else "Redis"
        return CacheCheck(reason="Ready", message=f"{server} at {where} answers", reachable=True, server_version=version)
    except Exception as exc:  # noqa: BLE001 - reported as a reason
        reason, reachable = _classify(exc)
        text = scrub(f"{where}: {exc}", [password])
        return CacheCheck(reason=reason, message=text, reachable=reachable)
    finally:
        if client is not None:
            client.close()


async def preflight_async(
    host: str,
    port: int = 6379,
    db: int = 0,
    password: str | None = None,
    tls: bool = False,
    timeout: float = 5.0,
    username: str | None = None,
) -> CacheCheck:
    """`preflight` off the event loop, with a hard deadline."""
    deadline = timeout * 2 + 1.0
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(preflight, host, port, db, password, tls, timeout, username), deadline
        )
    except TimeoutError:
        return CacheCheck(reason="Timeout", message=f"{host}:{port}/{db}: no answer within {deadline:g}s")


def _classify(exc: BaseException) -> tuple[CacheReason, bool]:
    text = str(exc).lower()
    # AuthenticationError subclasses ConnectionError: test it first.
    if isinstance(exc, (rexc.AuthenticationError, rexc.AuthenticationWrongNumberOfArgsError)) or any(
        m in text for m in ("noauth", "wrongpass", "invalid password", "invalid username-password", "auth")
    ):
        return "AuthenticationFailed", True
    if "db index is out of range" in text or "invalid db index" in text:
        return "InvalidDatabase", True
    if "ssl" in text or "tls" in text or "certificate" in text:
        return "TLSFailed", False
    if isinstance(exc, rexc.TimeoutError):
        return "Timeout", False
    if isinstance(exc, rexc.ConnectionError):
        return "Unreachable", False
    return "Failed", True


def _escape_glob(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def flipt_keys(client: redis.Redis, prefix: str = DEFAULT_PREFIX, scan_count: int = 500) -> Iterator[bytes]:
    """Keys of Flipt's cache under `prefix` (`<prefix>:<32 hex>`), found with SCAN."""
    prefix = prefix or DEFAULT_PREFIX
    head = prefix.encode() + b":"
    for key in client.scan_iter(match=_escape_glob(prefix) + ":*", count=scan_count):
        raw = key if isinstance(key, bytes) else str(key).encode()
        if raw.startswith(head) and _FLIPT_KEY_SUFFIX.fullmatch(raw[len(head) :]):
            yield raw


def purge_flag_cache(client: redis.Redis, prefix: str = DEFAULT_PREFIX, batch_size: int = 500) -> int:
    """Delete Flipt's cache entries under `prefix` in batches; returns how many were deleted.

    Flipt hashes every logical key (flags, evaluation rules, auth tokens) with md5, so the entries
    cannot be told apart: all of Flipt's entries under the prefix go; Flipt refills them on
    demand. Keys that do not have Flipt's shape are left alone.
    """
    deleted = 0
    batch: list[bytes] = []
    for key in flipt_keys(client, prefix, scan_count=batch_size):
        batch.append(key)
        if len(batch) >= batch_size:
            deleted += _unlink(client, batch)
            batch = []
    if batch:
        deleted += _unlink(client, batch)
    return deleted


def _unlink(client: redis.Redis, keys: list[bytes]) -> int:
    try:
        return int(client.unlink(*keys))
    except rexc.ResponseError:  # UNLINK needs Redis 4; fall back to DEL
        return int(client.delete(*keys))
