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
from ..clients.kube import ApiTimeout, Kube, load_config
from ..models.plan import supports_native_sidecars

# Importing the handler modules registers their handlers with kopf.
from . import credential, database_triggers, environment, kopf_namespaces, secrets, servers, storage  # noqa: F401
from .context import Context, Peering, operator_defaults
from .deadline import DEFAULT_PASS_DEADLINE, PASS_CLOCK
from .servers import MANAGED_BY as MANAGED_BY_SELECTOR
from .servers import NOT_MANAGED_BY as NOT_MANAGED_BY_SELECTOR

FINALIZER = f"operator.{GROUP}/finalizer"
ANNOTATION_PREFIX = f"operator.{GROUP}"
# Set by main(): with a fixed list of namespaces, kopf needs no cluster-scoped reads.
_FIXED_NAMESPACES = False
# Set by main() with --peering: (identity, priority, clusterwide) for the standby check.
_PEERING: tuple[str, int, bool] | None = None
# Set by main() from --api-connect-timeout, --api-read-timeout and --pass-deadline.
_API_TIMEOUT = ApiTimeout.from_env()
_PASS_DEADLINE = DEFAULT_PASS_DEADLINE


kopf_namespaces.install()


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
    settings.networking.connect_timeout = _API_TIMEOUT.connect
    settings.execution.max_workers = int(os.environ.get("FLIPT_OPERATOR_WORKERS", "8"))
    # kopf keeps a worker (a task, its queue, the last body) per object until it has been idle
    # this long; at 5 s (the default) a listing of thousands of objects kept them all at once.
    settings.queueing.idle_timeout = float(os.environ.get("FLIPT_OPERATOR_WORKER_IDLE_SECONDS", "0.5"))
    settings.peering.name = os.environ.get("FLIPT_OPERATOR_PEERING", "flipt-operator")
    settings.peering.stealth = True
    # Server-side filters: of the Deployments and Jobs of the cluster only ours stream in (a
    # handler's `labels=` filters only after the whole stream has arrived).
    for group, plural in (("apps", "deployments"), ("batch", "jobs")):
        settings.watching.label_selectors[group, "v1", plural] = MANAGED_BY_SELECTOR
    # ConfigMaps matter only as the users' import documents: our servers' own configuration
    # (one per server, written by every pass that changes it) need not stream back to us.
    settings.watching.label_selectors["", "v1", "configmaps"] = NOT_MANAGED_BY_SELECTOR
    # Fixed namespaces: no namespace/CRD watches, so namespaced RBAC (Roles only) suffices.
    settings.scanning.disabled = _FIXED_NAMESPACES


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    configure_settings(settings)
    if getattr(memo, "kube", None) is None:
        memo.kube = Kube(load_config(), _API_TIMEOUT)
    # Native sidecars (init containers with restartPolicy: Always) exist from Kubernetes 1.29;
    # an older API server would drop the field and we would patch the Deployment forever.
    native = supports_native_sidecars(memo.kube.server_git_version())
    memo.servers = Context(kube=memo.kube, defaults=operator_defaults(native_sidecar=native),
                           peering=_PEERING and Peering(settings.peering.name, *_PEERING))
    memo.background = [
        asyncio.create_task(storage.sync_poller(memo.servers)),
        asyncio.create_task(database_triggers.database_recheck(memo.servers)),
        asyncio.create_task(pass_watchdog(_PASS_DEADLINE)),
        asyncio.create_task(servers.resync(memo.servers)),
    ]


async def pass_watchdog(deadline: float) -> None:
    """Log and count an overdue pass when it becomes overdue, whether or not a probe asks."""
    while True:
        await asyncio.sleep(min(30.0, max(1.0, deadline / 4)))
        PASS_CLOCK.overdue(deadline)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for task in getattr(memo, "background", []):
        task.cancel()
    if getattr(memo, "servers", None) is not None:  # queued passes are dropped; a running one ends
        memo.servers.passes.shutdown(wait=False, cancel_futures=True)
        memo.servers.checks.shutdown()


# A failing probe fails at once (PERMANENT): retried inside kopf, the probe request would hang
# through the backoff instead of answering 500.
@kopf.on.probe(id="apiserver", errors=kopf.ErrorsMode.PERMANENT)
def apiserver_probe(memo: kopf.Memo, **_: Any) -> str:
    """Liveness: the API server answers us (a dead client means a stuck operator)."""
    return memo.kube.core.get_api_resources().group_version


@kopf.on.probe(id="passes", errors=kopf.ErrorsMode.PERMANENT)
def passes_probe(**_: Any) -> int:
    """Liveness: no namespace pass has run past the deadline (a stuck pass never ends, and
    every later change of its namespace would wait for it). Returns the oldest pass's age."""
    overdue = PASS_CLOCK.overdue(_PASS_DEADLINE)
    if overdue:
        namespace, seconds = max(overdue.items(), key=lambda item: item[1])
        raise kopf.PermanentError(f"the pass over {namespace} has run for {seconds:.0f}s, "
                                  f"longer than the {_PASS_DEADLINE:g}s deadline")
    return round(PASS_CLOCK.oldest())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", action="append", default=[], help="watch only this namespace (repeatable)")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint URL")
    parser.add_argument("--metrics-port", type=int, default=int(os.environ.get("FLIPT_OPERATOR_METRICS_PORT", "9090")))
    parser.add_argument("--api-connect-timeout", type=float, default=ApiTimeout.from_env().connect,
                        help="seconds to connect to the API server, per request "
                             "($FLIPT_OPERATOR_API_CONNECT_TIMEOUT, default 5)")
    parser.add_argument("--api-read-timeout", type=float, default=ApiTimeout.from_env().read,
                        help="seconds to wait for the API server's answer, per read "
                             "($FLIPT_OPERATOR_API_READ_TIMEOUT, default 30)")
    parser.add_argument("--pass-deadline", type=float, default=DEFAULT_PASS_DEADLINE,
                        help="a namespace pass running longer fails the liveness probe "
                             "($FLIPT_OPERATOR_PASS_DEADLINE_SECONDS, default 300)")
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
    global _FIXED_NAMESPACES, _PEERING, _API_TIMEOUT, _PASS_DEADLINE
    _API_TIMEOUT = ApiTimeout(args.api_connect_timeout, args.api_read_timeout)
    _PASS_DEADLINE = args.pass_deadline
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
        identity=identity,  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
        standalone=not args.peering,
        priority=args.priority,  # argparse applied priority() to the default too
        namespaces=namespaces,
        clusterwide=not namespaces,
        liveness_endpoint=args.liveness or None,
    )
    return 0
