"""The Kubernetes API, as the handlers need it. Thin and synchronous (kopf runs sync
handlers in its thread pool); every call here is one API request (`secret_keys`: one per name)."""

from __future__ import annotations

import base64
import builtins
import copy
import hashlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity
from prometheus_client import Counter

from .. import GROUP, VERSION
from ..models.kinds import KindInfo

EVENT_COMPONENT = "flipt-operator"
FIELD_MANAGER = "flipt-operator"  # server-side apply: owner of every field the operator renders
APPLIED_HASH_ANNOTATION = "flipt.io/applied-hash"
_EVENT_MESSAGE_LIMIT = 1024
_METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
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

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("_request_timeout") is None:
            kwargs["_request_timeout"] = (self.timeout.connect, self.timeout.read)
        return super().call_api(*args, **kwargs)

    def param_serialize(self, method: Any, resource_path: Any, path_params: Any = None, *args: Any,
                        **kwargs: Any) -> Any:
        # Every generated API method builds its request here, with the path's template at hand.
        API_REQUESTS.labels(*request_label(resource_path, method, path_params or {})).inc()
        return super().param_serialize(method, resource_path, path_params, *args, **kwargs)


# Every request the handlers make (kopf's own watches are not counted): what a pass costs, as
# the benchmarks print it.
API_REQUESTS = Counter("flipt_operator_api_requests_total",
                       "API requests made by the operator's handlers (kopf's watches aside).", ["verb", "resource"])
_VERBS = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}


def request_label(resource_path: str, method: str, path_params: dict[str, Any]) -> tuple[str, str]:
    """(verb, resource) of one request from the client's path template, e.g. `get`/`list` and
    `secrets`, `fliptenvironments/status`."""
    parts = resource_path.rstrip("/").split("/")
    sub = parts.pop() if parts[-1] in ("status", "scale") else ""
    named = parts[-1] == "{name}"
    resource = parts[-2] if named and len(parts) > 1 else parts[-1]
    if resource.startswith("{"):
        resource = str(path_params.get(resource.strip("{}"), resource))
    verb = ("get" if named else "list") if method == "GET" else _VERBS.get(method, method.lower())
    return verb, f"{resource}/{sub}" if sub else resource


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
            return cast(dict[str, Any], self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind: KindInfo, namespace: str) -> builtins.list[dict[str, Any]]:
        result = cast(dict[str, Any], self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural))
        return list(result.get("items", []))

    def patch_status(self, kind: KindInfo, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return cast(dict[str, Any], self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, kind.plural, name, {"status": patch}
        ))

    def peering_status(self, name: str, namespace: str | None) -> dict[str, Any] | None:
        """The status of kopf's peering object (cluster-wide when `namespace` is None)."""
        obj: Any
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

    def _read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return cast(dict[str, Any], self._raw(self.core.read_namespaced_secret, name, namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def get_secret(self, namespace: str, name: str) -> tuple[dict[str, bytes], str] | None:
        """The Secret's decoded data and resourceVersion, or None when it does not exist."""
        secret = self._read_secret(namespace, name)
        if secret is None:
            return None
        data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        return data, secret["metadata"]["resourceVersion"]

    def secret_keys(self, namespace: str, names: Iterable[str]) -> dict[str, tuple[builtins.list[str], str]]:
        """Secret name -> (key names, resourceVersion) for those of `names` that exist. Each is
        read by name (not a LIST of every Secret of the namespace); values are not kept."""
        def keys(name: str) -> tuple[list[str], str] | None:
            secret = self._read_secret(namespace, name)
            if secret is None:
                return None
            return sorted((secret.get("data") or {}).keys()), secret["metadata"]["resourceVersion"]

        wanted = sorted(set(names))
        # Side by side: a namespace with 200 credentials would otherwise wait for 200 round trips.
        return {name: found for name, found in zip(wanted, self._readers.map(keys, wanted), strict=True) if found is not None}

    # -- children: server-side apply, and no request at all when nothing would change -------

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
        """Make the object exactly what `manifest` says, as far as the operator owns it.
        Returns created|patched|unchanged."""
        return self.apply_object(manifest)[0]

    def apply_object(self, manifest: dict[str, Any], existing: Any = _LOOK_UP) -> tuple[str, dict[str, Any]]:
        """`apply`, also returning the object as stored. Pass `existing` (None: known absent)
        when the caller has listed the objects already.

        Server-side apply as FIELD_MANAGER, forcing conflicts: a field the operator stops
        rendering is removed, a field another manager changed is taken back. No write is sent
        when nothing would change: the cheap check (`already_applied`) needs no request; when
        it cannot tell, a dry-run apply compared with the live object decides."""
        kind, meta = manifest["kind"], manifest["metadata"]
        desired = with_applied_hash(manifest)
        if existing is _LOOK_UP:
            existing = self.read_child(kind, meta["namespace"], meta["name"])
        if existing is not None:
            if already_applied(desired, existing):
                return "unchanged", existing
            # The same hash (or none) but a value differs (another manager's edit, the API
            # server's normalisation): only a dry run tells. Another hash is our own manifest
            # changed: a change for certain, no dry run needed.
            if applied_hash_of(existing) in (None, applied_hash_of(desired)) and \
                    same_object(self._server_side_apply(desired, dry_run=True)[1], existing):
                return "unchanged", existing
        created, stored = self._server_side_apply(desired)
        if created:
            return "created", stored
        # Known absent but there (created meanwhile): applied over it, maybe without a change.
        before = (existing or {}).get("metadata", {}).get("resourceVersion")
        return ("unchanged" if stored["metadata"].get("resourceVersion") == before else "patched"), stored

    def _server_side_apply(self, manifest: dict[str, Any], *, dry_run: bool = False) -> tuple[bool, dict[str, Any]]:
        """(whether it created the object, the object as stored or as it would be)."""
        meta = manifest["metadata"]
        api, noun = self._api_for(manifest["kind"])
        response = getattr(api, f"patch_namespaced_{noun}")(
            meta["name"], meta["namespace"], manifest,
            field_manager=FIELD_MANAGER, force=True, _content_type="application/apply-patch+yaml",
            _preload_content=False, **({"dry_run": "All"} if dry_run else {}),
        )
        try:
            return response.status == 201, json.loads(response.data)
        finally:
            response.release_conn()

    def annotate(self, kind: str, namespace: str, name: str, annotations: dict[str, str]) -> None:
        """Add annotations to an existing object (a marker, not desired state): a merge patch, so
        the operator's applied configuration of the object stays what it was."""
        api, noun = self._api_for(kind)
        self._raw(getattr(api, f"patch_namespaced_{noun}"), name, namespace,
                  {"metadata": {"annotations": annotations}},
                  field_manager=FIELD_MANAGER, _content_type="application/merge-patch+json")

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

    def list_children(self, kind: str, namespace: str, label_selector: str) -> builtins.list[dict[str, Any]]:
        api, noun = self._api_for(kind)
        return self._raw(getattr(api, f"list_namespaced_{noun}"), namespace, label_selector=label_selector)["items"]

    def list_children_metadata(self, kind: str, namespace: str, label_selector: str) -> builtins.list[dict[str, Any]]:
        """The metadata of the objects (a PartialObjectMetadataList: no spec, no status)."""
        api, noun = self._api_for(kind)
        return self._raw(getattr(api, f"list_namespaced_{noun}"), namespace, label_selector=label_selector,
                         _headers={"Accept": _METADATA_ONLY})["items"] or []  # an empty one says null

    def list_pods(self, namespace: str, label_selector: str) -> builtins.list[dict[str, Any]]:
        return self._raw(self.core.list_namespaced_pod, namespace, label_selector=label_selector)["items"]

    def post_event(self, involved: dict[str, Any], *, warning: bool, reason: str, message: str) -> str:
        """Create an Event; returns its name (for `bump_event`)."""
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
        created = self._raw(self.core.create_namespaced_event, meta["namespace"], body)
        return str(created["metadata"]["name"])

    def bump_event(self, namespace: str, name: str, count: int) -> None:
        """The same Event happened again: raise its count and lastTimestamp (as client-go does)."""
        patch = {"count": count, "lastTimestamp": _now().strftime("%Y-%m-%dT%H:%M:%SZ")}
        self._raw(self.core.patch_namespaced_event, name, namespace, patch,
                  _content_type="application/merge-patch+json")


def _now() -> datetime:
    return datetime.now(UTC)


def applied_hash(manifest: dict[str, Any]) -> str:
    """The APPLIED_HASH_ANNOTATION value `apply_object` writes for `manifest`."""
    return str(with_applied_hash(manifest)["metadata"]["annotations"][APPLIED_HASH_ANNOTATION])


def applied_hash_of(obj: dict[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(APPLIED_HASH_ANNOTATION)


def with_applied_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with APPLIED_HASH_ANNOTATION: a hash of everything it sets. The same hash on
    the live object says the operator's last apply set exactly these fields, so none is due
    for removal."""
    meta = manifest["metadata"]
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != APPLIED_HASH_ANNOTATION}
    bare = {**manifest, "metadata": {**meta, "annotations": annotations}}
    digest = hashlib.sha256(json.dumps(bare, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return {**manifest, "metadata": {**meta, "annotations": {**annotations, APPLIED_HASH_ANNOTATION: digest[:32]}}}


def already_applied(desired: dict[str, Any], live: dict[str, Any]) -> bool:
    """Whether applying `desired` (carrying its applied hash) would change nothing: the live
    object was last applied from the same manifest and still holds every value it sets (the
    server's defaults and other managers' fields are ignored)."""
    # Items of a LIST carry no apiVersion/kind; neither can differ for the same name anyway.
    body = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind")}
    return is_subset(body, live)


_QUANTITY_KEYS = ("limits", "requests", "sizeLimit")  # resources.limits/requests, emptyDir.sizeLimit


def is_subset(desired: Any, actual: Any, *, quantity: bool = False) -> bool:
    """Whether every field we set is already there. Quantities (`quantity`: `desired` is one, or
    a map of them) compare by value: the API server stores "0.5" as "500m"."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(
            is_subset(v, actual.get(k), quantity=quantity or k in _QUANTITY_KEYS) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(desired) == len(actual)
            and all(is_subset(d, a) for d, a in zip(desired, actual, strict=True))
        )
    if quantity and isinstance(desired, (str, int)) and isinstance(actual, (str, int)) and desired != actual:
        try:
            return parse_quantity(desired) == parse_quantity(actual)
        except ValueError:
            return False
    return desired == actual


_SERVER_BOOKKEEPING = ("managedFields", "resourceVersion", "generation")


def same_object(preview: dict[str, Any], live: dict[str, Any]) -> bool:
    """Whether a dry-run apply's result is the live object: the same content, whoever manages
    which field. (A forced apply of a value someone else set identically moves ownership only.)"""
    def content(obj: dict[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in obj["metadata"].items() if k not in _SERVER_BOOKKEEPING}
        return {**{k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}, "metadata": meta}

    return content(preview) == content(live)
