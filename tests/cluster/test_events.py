"""Events as Kubernetes' recorder posts them, against the real API server: a repeat bumps the
count of the Event already there, and each object's rate of new Events is bounded."""

import pytest
from kubernetes import client

from flipt_operator.clients.kube import Kube
from flipt_operator.handlers.events import EventRecorder
from tests.support.kube_objects import events_for

pytestmark = pytest.mark.cluster


def _involved(api, namespace, name):
    # A ConfigMap: an object no operator of the test session posts Events about.
    obj = client.CoreV1Api(api).create_namespaced_config_map(
        namespace, {"metadata": {"name": name}, "data": {"k": "v"}})
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": api.sanitize_for_serialization(obj.metadata)}


def test_a_repeated_event_bumps_the_count_of_the_one_posted(kube_cluster, namespace):
    api = kube_cluster.api_client
    kube, recorder = Kube(api), EventRecorder()
    involved = _involved(api, namespace, "flappy")
    outcomes = [
        recorder.record(kube, involved, warning=True, reason="SecretNotFound", message="Secret s not found"),
        recorder.record(kube, involved, warning=False, reason="Ready", message="ok"),
        recorder.record(kube, involved, warning=True, reason="SecretNotFound", message="Secret s not found"),
        recorder.record(kube, involved, warning=True, reason="SecretNotFound", message="Secret s not found"),
    ]
    assert outcomes == ["created", "created", "bumped", "bumped"]
    events = {e.reason: e for e in events_for(api, namespace, "flappy")}
    assert set(events) == {"SecretNotFound", "Ready"}
    assert events["SecretNotFound"].count == 3 and events["SecretNotFound"].type == "Warning"
    assert events["Ready"].count == 1
    assert events["SecretNotFound"].last_timestamp >= events["SecretNotFound"].first_timestamp


def test_new_events_per_object_are_bounded_and_other_objects_unaffected(kube_cluster, namespace):
    api = kube_cluster.api_client
    kube = Kube(api)
    now = [0.0]
    recorder = EventRecorder(burst=5, refill_seconds=60.0, clock=lambda: now[0])
    noisy, quiet = _involved(api, namespace, "noisy"), _involved(api, namespace, "quiet")
    outcomes = [recorder.record(kube, noisy, warning=True, reason="R", message=f"change {i}") for i in range(8)]
    assert outcomes == ["created"] * 5 + ["dropped"] * 3
    assert recorder.record(kube, quiet, warning=False, reason="R", message="change 0") == "created"
    now[0] += 60.0  # one token back after a refill period
    assert recorder.record(kube, noisy, warning=True, reason="R", message="change 8") == "created"
    assert recorder.record(kube, noisy, warning=True, reason="R", message="change 9") == "dropped"
    assert len(events_for(api, namespace, "noisy")) == 6
    assert len(events_for(api, namespace, "quiet")) == 1


def test_an_event_deleted_meanwhile_is_posted_anew(kube_cluster, namespace):
    api = kube_cluster.api_client
    kube, recorder = Kube(api), EventRecorder()
    involved = _involved(api, namespace, "gone")
    assert recorder.record(kube, involved, warning=False, reason="Ready", message="ok") == "created"
    (event,) = events_for(api, namespace, "gone")
    kube.core.delete_namespaced_event(event.metadata.name, namespace)
    assert recorder.record(kube, involved, warning=False, reason="Ready", message="ok") == "created"
    (again,) = events_for(api, namespace, "gone")
    assert again.count == 1 and again.metadata.name != event.metadata.name
