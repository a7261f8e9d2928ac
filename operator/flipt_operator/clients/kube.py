"""The Kubernetes API, as the handlers need it. Thin and synchronous (kopf runs sync
handlers in its thread pool); every call here is one API request (`secret_keys`: one per name)."""

from __future__ import annotations

import base64
import copy
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from .. import GROUP, VERSION
from ..models.kinds import KindInfo

EVENT_COMPONENT = "flipt-operator"
_EVENT_MESSAGE_LIMIT = 1024
_LOOK_UP: Any = object()  # apply_object's default: read the existing object first


@dataclass(frozen=True)
class ApiTimeout:
    """Bounds of one API request, in seconds: establishing the connection, and waiting for
    each read of the answer (urllib3's read timeout: the longest silence, not the total)."""

    connect: float = 5.0
    read: float = 30.0

    @classmethod
    def from_env(cls) -> ApiTimeout:
        return cls(float(os.environ.get("FLIPT_OPERATOR_API_CONNECT_TIMEOUT", cls.connect)),
                   float(os.environ.get("FLIPT_OPERATOR_API_READ_TIMEOUT", cls.read)))


class BoundedApiClient(kubernetes.client.ApiClient):
    """An ApiClient whose every request carries (connect, read) timeouts unless the call sets
    its own: the generated API methods default to none, and one silent connection would hold
    a pass for good."""

    def __init__(self, configuration: kubernetes.client.Configuration, timeout: ApiTimeout) -> None:
        super().__init__(configuration)
        self.timeout = timeout

    def call_api(self, *args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
        bound = _request_timeout if _request_timeout is not None else (self.timeout.connect, self.timeout.read)
        return super().call_api(*args, _request_timeout=bound, **kwargs)


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


def api_error_text(exc: BaseException) -> str:
    """What the API server said (e.g. `services is forbidden: User ... cannot create ...`),
    else the exception's type. Never the request: an API message names objects, not values."""
    if isinstance(exc, ApiException):
        try:
            message = json.loads(exc.body or "{}").get("message")
        except (ValueError, AttributeError):
            message = None
        return f"{exc.status} {message or exc.reason}"
    return type(exc).__name__


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the API server is busy, restarting or unreachable."""
    if isinstance(exc, ApiException):
        return exc.status in (0, 429, 500, 502, 503, 504)
    return isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))


class Kube:
    def __init__(self, api_client: kubernetes.client.ApiClient, timeout: ApiTimeout | None = None) -> None:
        """Requests go through a client of `api_client`'s configuration with `timeout` on each
        (default: `ApiTimeout.from_env()`)."""
        configuration = copy.copy(api_client.configuration)
        # One attempt per call: urllib3's default of three retries would make the bound four
        # times as long. A failed call fails the pass, which is retried as a whole.
        configuration.retries = 0
        self.api_client = BoundedApiClient(configuration, timeout or ApiTimeout.from_env())
        api_client = self.api_client
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.apps = kubernetes.client.AppsV1Api(api_client)
        self.batch = kubernetes.client.BatchV1Api(api_client)
        # Reads fanned out by name (its own threads: callers may already run in a shared pool).
        self._readers = ThreadPoolExecutor(8, thread_name_prefix="kube-read")

    @staticmethod
    def _raw(call: Any, *args: Any, **kwargs: Any) -> Any:
        """Call without the client's model deserialization: plain JSON is several times
        faster and lighter, and the operator works with dicts anyway."""
        response = call(*args, _preload_content=False, **kwargs)
        try:
            return json.loads(response.data) if response.data else None
        finally:
            response.release_conn()

    def server_git_version(self) -> str:
        """The API server's version as /version reports it, e.g. v1.30.2-eks-1."""
        return kubernetes.client.VersionApi(self.api_client).get_code().git_version

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

    def peering_status(self, name: str, namespace: str | None) -> dict[str, Any] | None:
        """The status of kopf's peering object (cluster-wide when `namespace` is None)."""
        try:
            if namespace is None:
                obj = self.custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", name)
            else:
                obj = self.custom.get_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj.get("status")

    # -- core objects ----------------------------------------------------------------------

    def get_secret(self, namespace: str, name: str) -> tuple[dict[str, bytes], str] | None:
        """The Secret's decoded data and resourceVersion, or None when it does not exist."""
        try:
            secret = self._raw(self.core.read_namespaced_secret, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        return data, secret["metadata"]["resourceVersion"]

    def secret_keys(self, namespace: str, names: Iterable[str]) -> dict[str, tuple[list[str], str]]:
        """Secret name -> (key names, resourceVersion) for those of `names` that exist. Each is
        read by name (not a LIST of every Secret of the namespace); values are not kept."""
        def keys(name: str) -> tuple[list[str], str] | None:
            try:
                secret = self._raw(self.core.read_namespaced_secret, name, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return sorted((secret.get("data") or {}).keys()), secret["metadata"]["resourceVersion"]

        wanted = sorted(set(names))
        # Side by side: a namespace with 200 credentials would otherwise wait for 200 round trips.
        return {name: found for name, found in zip(wanted, self._readers.map(keys, wanted)) if found is not None}

    # -- children: create, or patch when what we set differs; nothing when it matches ------

    def _api_for(self, kind: str) -> tuple[Any, str]:
        return {
            "ConfigMap": (self.core, "config_map"),
            "ServiceAccount": (self.core, "service_account"),
            "Service": (self.core, "service"),
            "Deployment": (self.apps, "deployment"),
            "Job": (self.batch, "job"),
        }[kind]

    def read_child(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        api, noun = self._api_for(kind)
        try:
            return self._raw(getattr(api, f"read_namespaced_{noun}"), name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def apply(self, manifest: dict[str, Any]) -> str:
        """Make the object match `manifest` in every field it sets. Returns created|patched|unchanged."""
        return self.apply_object(manifest)[0]

    def apply_object(self, manifest: dict[str, Any], existing: Any = _LOOK_UP) -> tuple[str, dict[str, Any]]:
        """`apply`, also returning the object as stored. Pass `existing` (None: known absent)
        when the caller has listed the objects already."""
        kind, meta = manifest["kind"], manifest["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        api, noun = self._api_for(kind)
        if existing is _LOOK_UP:
            existing = self.read_child(kind, namespace, name)
        if existing is None:
            try:
                return "created", self._raw(getattr(api, f"create_namespaced_{noun}"), namespace, manifest)
            except ApiException as exc:
                if exc.status != 409:  # created meanwhile: fall through to compare
                    raise
                existing = self.read_child(kind, namespace, name)
        # Items of a LIST carry no apiVersion/kind; neither can differ for the same name anyway.
        body = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind")}
        if is_subset(body, existing):
            return "unchanged", existing
        # A JSON merge patch replaces lists whole, so removed containers, ports or env go too.
        patched = self._raw(
            getattr(api, f"patch_namespaced_{noun}"), name, namespace, body,
            _content_type="application/merge-patch+json",
        )
        return "patched", patched

    def delete_child(self, kind: str, namespace: str, name: str) -> bool:
        api, noun = self._api_for(kind)
        try:
            # The response is not read: the client fails to parse some delete responses (Service).
            response = getattr(api, f"delete_namespaced_{noun}")(
                name, namespace, propagation_policy="Background", _preload_content=False
            )
            response.release_conn()
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def list_children(self, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        api, noun = self._api_for(kind)
        return self._raw(getattr(api, f"list_namespaced_{noun}"), namespace, label_selector=label_selector)["items"]

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return self._raw(self.core.list_namespaced_pod, namespace, label_selector=label_selector)["items"]

    def post_event(self, involved: dict[str, Any], *, warning: bool, reason: str, message: str) -> None:
        meta = involved["metadata"]
        stamp = _now().strftime("%Y-%m-%dT%H:%M:%SZ")
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
        self._raw(self.core.create_namespaced_event, meta["namespace"], body)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def is_subset(desired: Any, actual: Any) -> bool:
    """Whether every field we set is already there (the server adds defaults we don't set)."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(is_subset(v, actual.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(desired) == len(actual)
            and all(is_subset(d, a) for d, a in zip(desired, actual))
        )
    return desired == actual
