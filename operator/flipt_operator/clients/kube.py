"""The Kubernetes API, as the handlers need it. Thin and synchronous (kopf runs sync
handlers in its thread pool); every call here is one API request."""

from __future__ import annotations

import base64
import os
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from .. import GROUP, VERSION
from ..models.kinds import KindInfo

EVENT_COMPONENT = "flipt-operator"
_EVENT_MESSAGE_LIMIT = 1024


def load_config() -> kubernetes.client.ApiClient:
    """In a pod: the ServiceAccount. Elsewhere: $KUBECONFIG or ~/.kube/config."""
    configuration = kubernetes.client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    else:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    # Enough connections for kopf's worker threads to call concurrently.
    configuration.connection_pool_maxsize = 32
    return kubernetes.client.ApiClient(configuration)


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 404


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 409


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the API server is busy, restarting or unreachable."""
    if isinstance(exc, ApiException):
        return exc.status in (0, 429, 500, 502, 503, 504)
    return isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))


class Kube:
    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self.api_client = api_client
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.apps = kubernetes.client.AppsV1Api(api_client)
        self.batch = kubernetes.client.BatchV1Api(api_client)

    # -- our kinds -------------------------------------------------------------------------

    def get(self, kind: KindInfo, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind: KindInfo, namespace: str) -> list[dict[str, Any]]:
        result = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural)
        return list(result.get("items", []))

    def patch_status(self, kind: KindInfo, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, kind.plural, name, {"status": patch}
        )

    # -- core objects ----------------------------------------------------------------------

    def get_secret(self, namespace: str, name: str) -> tuple[dict[str, bytes], str] | None:
        """The Secret's decoded data and resourceVersion, or None when it does not exist."""
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
        return data, secret.metadata.resource_version

    def post_event(self, involved: dict[str, Any], *, warning: bool, reason: str, message: str) -> None:
        meta = involved["metadata"]
        stamp = kubernetes.client.ApiClient().sanitize_for_serialization(_now())
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": "Warning" if warning else "Normal",
            "reason": reason,
            "message": message[:_EVENT_MESSAGE_LIMIT],
            "source": {"component": EVENT_COMPONENT},
            "reportingComponent": EVENT_COMPONENT,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        self.core.create_namespaced_event(meta["namespace"], body)


def _now():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)
