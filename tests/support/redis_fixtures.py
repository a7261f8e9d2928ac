"""Redis fixtures: the machine's Redis on 127.0.0.1:6379, and a private one with a password."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

SHARED_HOST, SHARED_PORT = "127.0.0.1", 6379


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int
    password: str | None

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, db=db, password=self.password)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def shared_redis() -> RedisServer:
    """The Redis every engineer's tests share: use a unique key prefix (see `redis_prefix`)."""
    server = RedisServer(SHARED_HOST, SHARED_PORT, None)
    try:
        server.client().ping()
    except redis.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    return server


@pytest.fixture
def redis_prefix() -> str:
    return f"flipt-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def password_redis() -> Iterator[RedisServer]:
    """A private redis-server with --requirepass on a free port, stopped after the session."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    password = "pw-" + secrets.token_urlsafe(16)
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="redis-test-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--requirepass", password,
         "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = RedisServer("127.0.0.1", port, password)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                server.client().ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the password-protected redis-server did not start") from None
                time.sleep(0.05)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
