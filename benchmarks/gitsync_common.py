"""Shared pieces of the git-sync benchmarks: a git daemon and the sidecar as processes."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.gitsync.conftest import Sidecar  # noqa: E402
from tests.support.git_servers import GitDaemon, free_port  # noqa: E402


def start_daemon(workdir: Path) -> GitDaemon:
    root = workdir / "daemon-root"
    root.mkdir()
    port = free_port()
    daemon = GitDaemon(root=root, base_url=f"git://127.0.0.1:{port}", port=port)
    daemon.start()
    return daemon


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="gitsync-bench-"))


def storage(work: Path, name: str, remote: str, interval: str) -> dict[str, Any]:
    return {"name": name, "remote": remote, "repositoryPath": str(work / "volume" / name), "pollInterval": interval}


def status(sidecar: Sidecar) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{sidecar.port}/status", timeout=5) as resp:
        return json.loads(resp.read())


def _status_mb(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def rss_mb(pid: int) -> float:
    return _status_mb(pid, "VmRSS")


def peak_mb(pid: int) -> float:
    """The kernel's high-water mark of resident memory: a peak no sampling can miss."""
    return _status_mb(pid, "VmHWM")


__all__ = ["Sidecar", "os", "peak_mb", "rss_mb", "start_daemon", "status", "storage", "workdir"]
