"""`flipt-operator git-sync --config FILE`: the sidecar that keeps git storages in step."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from typing import Any

import yaml
from pydantic import ValidationError
from pythonjsonlogger.json import JsonFormatter

from ..models.gitsync import GitSyncConfig
from .git_http import make_git_app
from .loop import StorageSync
from .metrics import SyncMetrics
from .server import make_app

log = logging.getLogger("flipt_operator.gitsync")

EXIT_BAD_CONFIG = 2
EXIT_NOT_SYNCED = 1  # --once: a storage could not be published under its fetch policy
# After SIGTERM, how long cycles whose connections were just cut may take to finish (and leave
# their repository closed cleanly). A cycle still running then is abandoned: its thread is a
# daemon thread, and every stage of a cycle is safe to stop at (as kill -9 is).
STOP_GRACE_SECONDS = 3.0
# Blocking sockets (git:// and ssh's pipes are covered elsewhere) fail instead of hanging.
SOCKET_TIMEOUT_SECONDS = 60.0


class ConfigError(Exception):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="sidecar configuration file (YAML or JSON)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument(
        "--once",
        action="store_true",
        help="sync every storage once and exit: 0 when each is published under its fetch policy, "
        "1 otherwise (the init container of clusters without native sidecars)",
    )


def _location(loc: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))


def load_config(path: str) -> GitSyncConfig:
    try:
        with open(path, encoding="utf-8") as f:
            document = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML or JSON: {exc}") from None
    try:
        return GitSyncConfig.model_validate(document)
    except ValidationError as exc:
        problems = [
            f"{_location(tuple(err['loc'])) or '(top level)'}: {err['msg']}" for err in exc.errors(include_input=False)
        ]
        raise ConfigError(f"invalid config file {path}: " + "; ".join(problems)) from None


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter("{asctime}{levelname}{name}{message}", style="{", rename_fields={"levelname": "level"})
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("dulwich.server").setLevel(logging.WARNING)  # capabilities of every request


def _split_listen_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _stop_storages(tasks: list[asyncio.Task[Any]], syncs: list[StorageSync]) -> None:
    """Cancel the loops (which cuts their cycles' connections), give the cycles a short grace
    to end, close the repositories of those that did."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    running = [s.in_flight for s in syncs if s.in_flight is not None and not s.in_flight.done()]
    if running:
        await asyncio.wait(running, timeout=STOP_GRACE_SECONDS)
    for s in syncs:
        if s.in_flight is None or s.in_flight.done():
            s.close()
        else:
            log.warning("abandoning a sync cycle that did not end", extra={"storage": s.storage.name})


async def serve(config: GitSyncConfig) -> None:
    from aiohttp import web

    metrics = SyncMetrics()
    syncs = [StorageSync(storage, metrics) for storage in config.storages]
    runner = web.AppRunner(make_app(syncs, metrics), access_log=None)
    await runner.setup()
    host, port = _split_listen_address(config.listen_address)
    await web.TCPSite(runner, host, port).start()
    git_runner = web.AppRunner(make_git_app(syncs), access_log=None)
    await git_runner.setup()
    git_host, git_port = _split_listen_address(config.git_listen_address)
    await web.TCPSite(git_runner, git_host, git_port).start()
    log.info("git-sync listening", extra={"address": config.listen_address, "git_address": config.git_listen_address,
                                          "storages": len(syncs)})  # fmt: skip
    stop = _stop_event()
    tasks = [asyncio.create_task(s.run(), name=f"sync-{s.storage.name}") for s in syncs]
    try:
        await stop.wait()
    finally:
        await git_runner.cleanup()
        await _stop_storages(tasks, syncs)
        await runner.cleanup()
    log.info("git-sync stopped")


async def sync_once(config: GitSyncConfig) -> int:
    """One cycle of every storage (concurrently, each within its deadline), then exit.

    Exit 0 when every storage is ready under its fetch policy: strict needs this fetch to have
    succeeded; lenient accepts a revision already on the volume when the fetch failed."""
    metrics = SyncMetrics()
    syncs = [StorageSync(storage, metrics) for storage in config.storages]
    stop = _stop_event()
    tasks = [asyncio.create_task(s.step(), name=f"sync-once-{s.storage.name}") for s in syncs]
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([asyncio.gather(*tasks, return_exceptions=True), stopper],  # type: ignore[type-var]
                       return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    await _stop_storages(tasks, syncs)
    if stop.is_set():
        log.warning("git-sync --once stopped before every storage was synced")
        return EXIT_NOT_SYNCED
    not_ready = {s.storage.name: s.state.last_error or "not synced" for s in syncs if not s.state.ready}
    for name, reason in not_ready.items():
        log.error("storage not synced", extra={"storage": name, "reason": reason})
    for s in syncs:
        if s.state.ready:
            log.info("storage synced", extra={"storage": s.storage.name, "revision": s.state.revision,
                                              "degraded": s.state.degraded})  # fmt: skip
    return EXIT_NOT_SYNCED if not_ready else 0


def main(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        log.error(str(exc))
        return EXIT_BAD_CONFIG
    socket.setdefaulttimeout(SOCKET_TIMEOUT_SECONDS)
    if args.once:
        return asyncio.run(sync_once(config))
    asyncio.run(serve(config))
    return 0
