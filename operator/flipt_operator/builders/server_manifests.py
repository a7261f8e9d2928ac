"""The Kubernetes objects of one Flipt server: ConfigMap, ServiceAccount, Service, Deployment.

Plain dicts in the API's camelCase, deterministic for a given plan. Owner references are the
handler's business. Secret values never appear: Secrets reach the pod as env `secretKeyRef`s
and Secret volumes, and only their resourceVersions (given by the caller) enter the config hash.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from ..models.gitsync import CONFIG_PATH, SIDECAR_PORT
from ..models.plan import CONFIG_FILE, DATA_DIR, GRPC_PORT, HTTP_PORT, STATE_DIR, ServerPlan
from .flipt_config import CONFIG_KEY, flipt_config, flipt_env
from .gitsync_config import ca_cert_dir, credential_dir, gitsync_config

GITSYNC_KEY = "git-sync.yaml"
CONFIG_HASH_ANNOTATION = "flipt.io/config-hash"
MANAGED_BY = "flipt-operator"
SIDECAR_NAME = "git-sync"
SIDECAR_COMMAND = ["flipt-operator", "git-sync", "--config", CONFIG_PATH]
# The Flipt image runs as user flipt (uid 100); group 1000 owns the shared volume in both containers.
RUN_AS_USER = 100
RUN_AS_GROUP = 1000


def labels(server: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/component": "server",
        "app.kubernetes.io/instance": server,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/name": "flipt",
        "app.kubernetes.io/part-of": "flipt",
    }


def selector_labels(server: str) -> dict[str, str]:
    """Immutable Deployment selector; managed-by keeps it apart from a Helm-installed Flipt."""
    return {
        "app.kubernetes.io/instance": server,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/name": "flipt",
    }


def config_map_name(server: str) -> str:
    return f"{server}-config"


def _metadata(plan: ServerPlan, name: str) -> dict[str, Any]:
    return {"name": name, "namespace": plan.namespace, "labels": labels(plan.name)}


def _dump(document: Any) -> str:
    return yaml.safe_dump(document, sort_keys=True, default_flow_style=False)


def config_documents(plan: ServerPlan) -> dict[str, str]:
    """ConfigMap data: Flipt's default.yml, plus the sidecar's config when there is git storage."""
    data = {CONFIG_KEY: _dump(flipt_config(plan))}
    sidecar = gitsync_config(plan)
    if sidecar is not None:
        data[GITSYNC_KEY] = _dump(sidecar.to_api())
    return data


def config_hash(documents: Mapping[str, str], resource_versions: Mapping[str, str] | None = None) -> str:
    """sha256 over the rendered documents and the versions (not contents) of what they reference.

    `resource_versions` maps e.g. "Secret/<name>" to its metadata.resourceVersion; see
    ServerPlan.referenced_secrets() for which objects matter.
    """
    payload = json.dumps(
        {"documents": dict(documents), "resourceVersions": dict(resource_versions or {})},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _volume_name(prefix: str, name: str) -> str:
    """A DNS-1123 label, unique per name: object names may have dots and 253 characters."""
    candidate = f"{prefix}-{name}"
    if len(candidate) <= 63 and re.fullmatch(r"[a-z0-9-]+", candidate):
        return candidate
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    cleaned = re.sub(r"[^a-z0-9-]", "-", name)[: 63 - len(prefix) - 10].strip("-")
    return f"{prefix}-{cleaned}-{digest}"


def _security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }


def _http_probe(path: str, port: str, **extra: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, **extra}


def _resources(plan: ServerPlan) -> dict[str, Any]:
    return quantities_as_strings(plan.resources.to_api()) if plan.resources is not None else {}


def quantities_as_strings(resources: dict[str, Any]) -> dict[str, Any]:
    """`cpu: 1` as "1": server-side apply on Kubernetes 1.20 refuses a number where the schema
    says Quantity (a 500, "expected string"), although a create or merge patch takes it."""
    return {group: {name: str(value) for name, value in (amounts or {}).items()}
            for group, amounts in resources.items()}


def _data_volume(plan: ServerPlan) -> str:
    """The data volume's name says its source. Server-side apply on 1.20 does not record an
    empty `emptyDir: {}` as the operator's, so a volume of the same name switching to a claim
    would keep the emptyDir next to it (refused: two volume types). Under another name the old
    volume is removed whole."""
    return "data-claim" if plan.data_claim else "data"


def _volumes(plan: ServerPlan) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": config_map_name(plan.name)}},
        {"name": "state", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    if plan.data_claim:
        volumes.append({"name": _data_volume(plan), "persistentVolumeClaim": {"claimName": plan.data_claim}})
    else:
        volumes.append({"name": _data_volume(plan), "emptyDir": {}})
    for claim in sorted({s.spec.local.claim_name for s in plan.local_storages if s.spec.local}):
        volumes.append({"name": _volume_name("claim", claim), "persistentVolumeClaim": {"claimName": claim}})
    if plan.git_storages:
        volumes.append({"name": "git-sync-tmp", "emptyDir": {}})
    for cred in plan.credentials:
        volumes.append(
            {
                "name": _volume_name("cred", cred.name),
                "secret": {
                    "secretName": cred.secret_name,
                    "defaultMode": 0o400,
                    "items": [{"key": k, "path": k} for k in cred.keys],
                },
            }
        )
    for storage in plan.git_storages:
        ref = storage.spec.git.ca_cert_secret_ref if storage.spec.git else None
        if ref is not None:
            volumes.append(
                {
                    "name": _volume_name("ca", storage.name),
                    "secret": {"secretName": ref.name, "defaultMode": 0o400, "items": [{"key": ref.key, "path": ref.key}]},
                }
            )
    return sorted(volumes, key=lambda v: v["name"])


def flipt_container(plan: ServerPlan) -> dict[str, Any]:
    mounts = [
        {"name": "config", "mountPath": CONFIG_FILE, "subPath": CONFIG_KEY, "readOnly": True},
        {"name": _data_volume(plan), "mountPath": DATA_DIR},
        {"name": "state", "mountPath": STATE_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    for storage in plan.local_storages:
        local = storage.spec.local
        assert local is not None
        mounts.append({"name": _volume_name("claim", local.claim_name), "mountPath": local.path})
    container: dict[str, Any] = {
        "name": "flipt",
        "image": plan.image,
        "imagePullPolicy": plan.image_pull_policy,
        "command": ["/flipt"] if plan.generation == "v1" else ["/flipt", "server"],
        # Explicit: without it Flipt prefers ~/.config/flipt/config.yml over the mounted file.
        "args": ["--config", CONFIG_FILE],
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        "env": flipt_env(plan),
        "readinessProbe": _http_probe("/health", "http", initialDelaySeconds=3, periodSeconds=10),
        "livenessProbe": _http_probe("/health", "http", initialDelaySeconds=3, periodSeconds=10),
        "resources": _resources(plan),
        "securityContext": _security_context(),
        "volumeMounts": sorted(mounts, key=lambda m: m["mountPath"]),
    }
    return container


def _sidecar_mounts(plan: ServerPlan) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_PATH, "subPath": GITSYNC_KEY, "readOnly": True},
        # The whole data volume (not a subPath: a kubelet-made subPath is root-owned); the mirrors
        # live at REPOSITORIES_ROOT.
        {"name": _data_volume(plan), "mountPath": DATA_DIR},
        {"name": "git-sync-tmp", "mountPath": "/tmp"},
    ]
    for cred in plan.credentials:
        mounts.append({"name": _volume_name("cred", cred.name), "mountPath": credential_dir(cred.name), "readOnly": True})
    for storage in plan.git_storages:
        if storage.spec.git is not None and storage.spec.git.ca_cert_secret_ref is not None:
            mounts.append(
                {"name": _volume_name("ca", storage.name), "mountPath": ca_cert_dir(storage.name), "readOnly": True}
            )
    return sorted(mounts, key=lambda m: m["mountPath"])


def _sidecar_base(plan: ServerPlan, name: str, command: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "image": plan.sidecar_image,
        "imagePullPolicy": plan.image_pull_policy,
        "command": command,
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ],
        "resources": quantities_as_strings(dict(plan.sidecar_resources)),
        "securityContext": _security_context(),
        "volumeMounts": _sidecar_mounts(plan),
    }


def sidecar_container(plan: ServerPlan) -> dict[str, Any]:
    """The long-running git-sync sidecar (a native sidecar when plan.native_sidecar)."""
    container = _sidecar_base(plan, SIDECAR_NAME, list(SIDECAR_COMMAND))
    container["ports"] = [{"name": SIDECAR_NAME, "containerPort": SIDECAR_PORT, "protocol": "TCP"}]
    container["readinessProbe"] = _http_probe("/readyz", SIDECAR_NAME, periodSeconds=5)
    container["livenessProbe"] = _http_probe("/healthz", SIDECAR_NAME, periodSeconds=10, failureThreshold=3)
    if plan.native_sidecar:
        # An init container that keeps running: the kubelet starts Flipt only once its startup
        # probe passes, i.e. once every repository is published (/readyz).
        container["restartPolicy"] = "Always"
        container["startupProbe"] = _http_probe("/readyz", SIDECAR_NAME, periodSeconds=2, failureThreshold=150)
    return container


def sidecar_init_container(plan: ServerPlan) -> dict[str, Any]:
    """Without native sidecars: a one-shot sync before Flipt starts (needs `git-sync --once`)."""
    return _sidecar_base(plan, f"{SIDECAR_NAME}-init", [*SIDECAR_COMMAND, "--once"])


def pod_spec(plan: ServerPlan) -> dict[str, Any]:
    containers = [flipt_container(plan)]
    init_containers: list[dict[str, Any]] = []
    if plan.git_storages:
        if plan.native_sidecar:
            init_containers.append(sidecar_container(plan))
        else:
            init_containers.append(sidecar_init_container(plan))
            containers.append(sidecar_container(plan))
    spec: dict[str, Any] = {
        "serviceAccountName": plan.name,
        # Service links would add FLIPT_*-looking variables (a Service named flipt-storage-x gives
        # FLIPT_STORAGE_X_SERVICE_HOST), which Flipt's env binding reads as config keys.
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_GROUP,
            "fsGroup": RUN_AS_GROUP,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": containers,
        "volumes": _volumes(plan),
    }
    if init_containers:
        spec["initContainers"] = init_containers
    return spec


def uses_volume_claim(plan: ServerPlan) -> bool:
    return bool(plan.data_claim or plan.local_storages)


def build_config_map(plan: ServerPlan, documents: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(plan, config_map_name(plan.name)),
        "data": dict(sorted((documents or config_documents(plan)).items())),
    }


def build_service_account(plan: ServerPlan) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(plan, plan.name)}


def build_service(plan: ServerPlan) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(plan, plan.name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(plan.name),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
            ],
        },
    }


def build_deployment(plan: ServerPlan, hash_value: str) -> dict[str, Any]:
    # SQLite has a single writer, and a ReadWriteOnce claim cannot follow a surged pod to
    # another node: stop the old pod before starting the new one.
    if plan.is_sqlite or uses_volume_claim(plan):
        strategy: dict[str, Any] = {"type": "Recreate"}
    else:
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(plan, plan.name),
        "spec": {
            "replicas": plan.replicas,
            "selector": {"matchLabels": selector_labels(plan.name)},
            "strategy": strategy,
            "template": {
                "metadata": {"labels": labels(plan.name), "annotations": {CONFIG_HASH_ANNOTATION: hash_value}},
                "spec": pod_spec(plan),
            },
        },
    }


@dataclass(frozen=True)
class ServerManifests:
    config_map: dict[str, Any]
    service_account: dict[str, Any]
    service: dict[str, Any]
    deployment: dict[str, Any]
    config_hash: str

    def all(self) -> list[dict[str, Any]]:
        """In the order to apply them: what the Deployment needs first."""
        return [self.config_map, self.service_account, self.service, self.deployment]


def build_server_manifests(plan: ServerPlan, resource_versions: Mapping[str, str] | None = None) -> ServerManifests:
    """Every object of one server. `resource_versions`: "Secret/<name>" -> resourceVersion for
    plan.referenced_secrets() (and any other object whose change must roll the pods)."""
    documents = config_documents(plan)
    hash_value = config_hash(documents, resource_versions)
    return ServerManifests(
        config_map=build_config_map(plan, documents),
        service_account=build_service_account(plan),
        service=build_service(plan),
        deployment=build_deployment(plan, hash_value),
        config_hash=hash_value,
    )
