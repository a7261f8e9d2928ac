"""Where the dev cluster keeps its binaries and state: outside the checkout, once per machine."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

CACHE_ENV = "FLIPT_OPERATOR_CACHE"


def cache_dir() -> Path:
    """`$FLIPT_OPERATOR_CACHE`, else `~/.cache/flipt-operator`."""
    env = os.environ.get(CACHE_ENV)
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "flipt-operator"
    path.mkdir(parents=True, exist_ok=True)
    return path


def bin_dir() -> Path:
    path = cache_dir() / "bin"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_state_dir() -> Path:
    return cache_dir() / "dev-cluster"


@contextlib.contextmanager
def file_lock(name: str) -> Iterator[None]:
    """An exclusive advisory lock on `<cache>/<name>.lock`, held for the block (blocks until free)."""
    path = cache_dir() / f"{name}.lock"
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
