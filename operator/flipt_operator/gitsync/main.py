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
from .loop import StorageSync
from .metrics import SyncMetrics
from .server import make_app

log = logging.getLogger("flipt_operator.gitsync")

EXIT_BAD_CONFIG = 2
# Blocking sockets (git:// and ssh's pipes are covered elsewhere) fail instead of hanging.
SOCKET_TIMEOUT_SECONDS = 60.0


class ConfigError(Exception):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="sidecar configuration file (YAML or JSON)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


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


def _split_listen_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


async def serve(config: GitSyncConfig) -> None:
    from aiohttp import web

    metrics = SyncMetrics()
    syncs = [StorageSync(storage, metrics) for storage in config.storages]
    runner = web.AppRunner(make_app(syncs, metrics), access_log=None)
    await runner.setup()
    host, port = _split_listen_address(config.listen_address)
    await web.TCPSite(runner, host, port).start()
    log.info("git-sync listening", extra={"address": config.listen_address, "storages": len(syncs)})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(s.run(), name=f"sync-{s.storage.name}") for s in syncs]
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()
        for s in syncs:
            s.close()
    log.info("git-sync stopped")


def main(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        log.error(str(exc))
        return EXIT_BAD_CONFIG
    socket.setdefaulttimeout(SOCKET_TIMEOUT_SECONDS)
    asyncio.run(serve(config))
    return 0
