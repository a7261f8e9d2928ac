"""Helpers for the sidecar's tests: in-process storage loops and the sidecar as a process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from flipt_operator.gitsync.loop import StorageSync
from flipt_operator.gitsync.metrics import SyncMetrics
from flipt_operator.models.gitsync import GitSyncStorage
from tests.support.git_servers import commit_objects, free_port
from tests.support.waiting import wait_for

SyncFactory = Callable[..., StorageSync]


def storage_config(tmp_path: Path, remote: str, name: str = "flags", **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "remote": remote,
        "repositoryPath": str(tmp_path / "volume" / name),
        "pollInterval": "0.2s",
        **fields,
    }


async def push_through(sync: StorageSync, files: dict[str, str | None], message: str = "flipt write",
                       ref: str = "refs/heads/main") -> tuple[str, str | None]:  # fmt: skip
    """A write of Flipt's as the sidecar gets it: the commit's objects in the mirror, then the
    update forwarded upstream. Returns (commit, why it was refused or None)."""
    old, new = commit_objects(sync.storage.repository_path, files, message, ref.removeprefix("refs/heads/"))
    outcome = await sync.forward([(old, new, ref)])
    return new, outcome[ref]


@pytest.fixture
def make_sync(tmp_path: Path) -> Iterator[SyncFactory]:
    """Build in-process StorageSync objects; tests drive them with `await sync.step()`."""
    made: list[StorageSync] = []

    def factory(remote: str, name: str = "flags", **fields: Any) -> StorageSync:
        storage = GitSyncStorage.model_validate(storage_config(tmp_path, remote, name, **fields))
        sync = StorageSync(storage, SyncMetrics())
        made.append(sync)
        return sync

    yield factory
    for sync in made:
        sync.close()


class Sidecar:
    """`flipt-operator git-sync` as a child process, stopped by its pid."""

    def __init__(self, workdir: Path, storages: list[dict[str, Any]], env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.git_port = free_port()
        self.config_path = workdir / "git-sync.yaml"
        self.config_path.write_text(yaml.safe_dump({"listenAddress": f"127.0.0.1:{self.port}",
                                                    "gitListenAddress": f"127.0.0.1:{self.git_port}",
                                                    "storages": storages}))  # fmt: skip
        self.log_path = workdir / f"sidecar-{self.port}.log"
        self.env = {**os.environ, "POD_NAME": "flipt-0", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, extra_env: dict[str, str] | None = None) -> Sidecar:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flipt_operator", "git-sync", "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, env={**self.env, **(extra_env or {})},
        )  # fmt: skip
        log.close()
        return self

    def git_url(self, storage: str = "flags") -> str:
        """The remote Flipt is given for a storage: the sidecar's smart HTTP."""
        return f"http://127.0.0.1:{self.git_port}/{storage}.git"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def status(self) -> dict[str, Any]:
        return json.loads(self.get("/status")[1])

    def storage(self, name: str = "flags") -> dict[str, Any]:
        return next(s for s in self.status()["storages"] if s["storage"] == name)

    def wait_up(self) -> Sidecar:
        wait_for(lambda: self.get("/healthz")[0] == 200, timeout=20, message="sidecar /healthz")
        return self

    def kill9(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill9()
            return -9

    def logs(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@pytest.fixture
def sidecars(tmp_path: Path) -> Iterator[Callable[..., Sidecar]]:
    started: list[Sidecar] = []

    def factory(storages: list[dict[str, Any]], env: dict[str, str] | None = None) -> Sidecar:
        sidecar = Sidecar(tmp_path, storages, env)
        started.append(sidecar)
        return sidecar

    yield factory
    for sidecar in started:
        sidecar.stop()
