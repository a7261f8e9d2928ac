"""`gogit_flipt_standin`: a stand-in for Flipt v2's git client (go-git), built once per machine.

The Flipt binary cannot be built here (the Go module proxy refuses go.flipt.io), so the tests talk
to the sidecar with a small program of our own on go-git v5 (the module proxy serves it) that does
what Flipt's storage does on the wire: see `gogit_flipt_standin/main.go`. It is built from the
module in this directory into the machine's cache (keyed by the module's content), under a file
lock, as the dev cluster builds Kubernetes; the first build takes about 30 s.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flipt_operator.devcluster.paths import bin_dir, file_lock

MODULE = Path(__file__).with_name("gogit_flipt_standin")
GO = Path("/usr/local/go/bin/go")
EXIT_CONFLICT = 3


def _module_digest() -> str:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((MODULE / name).read_bytes())
    return digest.hexdigest()[:16]


def _go() -> str:
    found = str(GO) if GO.is_file() else shutil.which("go")
    if found is None:
        raise RuntimeError("no Go toolchain: the go-git stand-in is built from Go modules (Go >= 1.24)")
    return found


def standin_binary() -> Path:
    """The cached binary, built first when missing or when the module changed."""
    target = bin_dir() / f"gogit_flipt_standin-{_module_digest()}"
    if target.is_file():
        return target
    with file_lock("build-gogit-flipt-standin"):
        if target.is_file():
            return target
        env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly -buildvcs=false", "CGO_ENABLED": "0"}
        staging = target.with_suffix(".building")
        result = subprocess.run([_go(), "build", "-trimpath", "-o", str(staging), "."], cwd=MODULE, env=env,
                                capture_output=True, text=True, check=False)  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"building gogit_flipt_standin failed: {result.stderr.strip()}")
        os.replace(staging, target)
    return target


@dataclass
class StandinResult:
    code: int
    result: str
    commit: str | None
    head: str | None
    attempts: int | None
    error: str | None


class GoGitFliptStandin:
    """One Flipt-like git client: its own repository in `directory`, talking to `url`."""

    def __init__(self, binary: Path, directory: Path, url: str) -> None:
        self.binary, self.directory, self.url = binary, directory, url

    def run(self, command: str, timeout: float = 60, **flags: Any) -> StandinResult:
        args = [str(self.binary), command, "--dir", str(self.directory), "--url", self.url]
        for key, value in flags.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
        try:
            document = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            raise AssertionError(f"stand-in printed no result (exit {done.returncode}): {done.stderr}") from None
        return StandinResult(done.returncode, document["result"], document.get("commit"), document.get("head"),
                             document.get("attempts"), document.get("error"))  # fmt: skip

    def fetch(self, branch: str = "main") -> str:
        result = self.run("fetch", branch=branch)
        assert result.code == 0, result
        assert result.head is not None
        return result.head

    def write(self, file: str, content: str, branch: str = "main", **flags: Any) -> StandinResult:
        return self.run("write", branch=branch, file=file, content=content, **flags)
