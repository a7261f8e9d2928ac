"""`flipt-operator run`: the operator process (kopf) with deliberate settings."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import socket
import zlib
from typing import Any

import kopf
import prometheus_client

from .. import GROUP
from ..clients.kube import Kube, load_config
from ..models.plan import supports_native_sidecars

# Importing the handler modules registers their handlers with kopf.
from . import credential, database, environment, secrets, storage  # noqa: F401
from .context import Context, Peering, operator_defaults

FINALIZER = f"operator.{GROUP}/finalizer"
ANNOTATION_PREFIX = f"operator.{GROUP}"
# Set by main(): with a fixed list of namespaces, kopf needs no cluster-scoped reads.
_FIXED_NAMESPACES = False
# Set by main() with --peering: (identity, priority, clusterwide) for the standby check.
_PEERING: tuple[str, int, bool] | None = None


def configure_settings(settings: kopf.OperatorSettings) -> None:
    # Our handlers are stateless watch events, so kopf writes no progress, diff-base or
    # finalizer to our objects; should a stateful handler be added, it uses our own names.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # Status carries what users need; kopf's own per-handler events would be noise.
    settings.posting.level = logging.WARNING
    settings.posting.loggers = False
    # Watches that hang silently are kopf's best-known failure: bound every stream.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.execution.max_workers = int(os.environ.get("FLIPT_OPERATOR_WORKERS", "8"))
    settings.peering.name = os.environ.get("FLIPT_OPERATOR_PEERING", "flipt-operator")
    settings.peering.stealth = True
    # Fixed namespaces: no namespace/CRD watches, so namespaced RBAC (Roles only) suffices.
    settings.scanning.disabled = _FIXED_NAMESPACES


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    configure_settings(settings)
    if getattr(memo, "kube", None) is None:
        memo.kube = Kube(load_config())
    # Native sidecars (init containers with restartPolicy: Always) exist from Kubernetes 1.29;
    # an older API server would drop the field and we would patch the Deployment forever.
    native = supports_native_sidecars(memo.kube.server_git_version())
    memo.servers = Context(kube=memo.kube, defaults=operator_defaults(native_sidecar=native),
                           peering=_PEERING and Peering(settings.peering.name, *_PEERING))
    memo.background = [
        asyncio.create_task(storage.sync_poller(memo.servers)),
        asyncio.create_task(database.database_recheck(memo.servers)),
    ]


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for task in getattr(memo, "background", []):
        task.cancel()


@kopf.on.probe(id="apiserver")
def apiserver_probe(memo: kopf.Memo, **_: Any) -> str:
    """Liveness: the API server answers us (a dead client means a stuck operator)."""
    return memo.kube.core.get_api_resources().group_version


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", action="append", default=[], help="watch only this namespace (repeatable)")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint URL")
    parser.add_argument("--metrics-port", type=int, default=int(os.environ.get("FLIPT_OPERATOR_METRICS_PORT", "9090")))
    parser.add_argument("--peering", action="store_true", help="run with peering (several replicas, one active)")
    parser.add_argument("--priority", type=priority, default=os.environ.get("FLIPT_OPERATOR_PRIORITY", "0"),
                        help="peering priority, or `auto`: derived from the pod name (distinct per replica)")
    parser.add_argument("--log-format", choices=["json", "plain"], default="json")
    parser.add_argument("--verbose", action="store_true")


def priority(value: str) -> int:
    """An int, or `auto`: a stable number from $POD_NAME (or the host name), so replicas differ."""
    if value != "auto":
        return int(value)
    name = os.environ.get("POD_NAME") or socket.gethostname()
    return 1 + zlib.crc32(name.encode()) % 1_000_000_000


def main(args: argparse.Namespace) -> int:
    global _FIXED_NAMESPACES, _PEERING
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    if args.metrics_port:
        prometheus_client.start_http_server(args.metrics_port)
    from_env = [n.strip() for n in os.environ.get("WATCH_NAMESPACES", "").split(",")]
    namespaces = args.namespace or [n for n in from_env if n]
    _FIXED_NAMESPACES = bool(namespaces) and not any(c in n for n in namespaces for c in "*?[!")
    # Our own peer identity (kopf's rule: POD_ID, else a unique user@host/...), so the background
    # tasks can tell themselves apart from the other replicas in the peering object.
    identity = os.environ.get("POD_ID") or f"{getpass.getuser()}@{socket.gethostname()}/{os.getpid()}"
    if args.peering:
        _PEERING = (identity, args.priority, not namespaces)
    kopf.run(
        identity=identity,
        standalone=not args.peering,
        priority=args.priority,  # argparse applied priority() to the default too
        namespaces=namespaces,
        clusterwide=not namespaces,
        liveness_endpoint=args.liveness or None,
    )
    return 0
