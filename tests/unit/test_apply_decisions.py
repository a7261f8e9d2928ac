"""Pure parts of the apply path and of a server's failure: when an object needs no request,
and how an error becomes Stalled or retrying on the server's environments."""

import json

import urllib3
from kubernetes.client.exceptions import ApiException

from flipt_operator.clients.kube import (
    APPLIED_HASH_ANNOTATION,
    already_applied,
    api_error_text,
    is_subset,
    is_transient,
    same_object,
    with_applied_hash,
)
from flipt_operator.handlers.servers import ServerFailure

CONFIG_MAP = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "flipt-config", "namespace": "ns", "labels": {"app": "flipt"}},
              "data": {"default.yml": "a: 1\n"}}


def live(manifest, **extra_meta):
    """The object as a LIST returns it: no apiVersion/kind, the server's own metadata added."""
    body = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind")}
    return {**body, "metadata": {**body["metadata"], "resourceVersion": "7", "uid": "u", **extra_meta}}


def test_the_applied_hash_covers_everything_the_manifest_sets():
    desired = with_applied_hash(CONFIG_MAP)
    assert with_applied_hash(desired) == desired  # idempotent: the hash leaves itself out
    fewer = with_applied_hash({**CONFIG_MAP, "data": {}})
    assert fewer["metadata"]["annotations"][APPLIED_HASH_ANNOTATION] != desired["metadata"]["annotations"][
        APPLIED_HASH_ANNOTATION]


def test_a_key_no_longer_rendered_is_not_already_applied():
    two_keys = with_applied_hash({**CONFIG_MAP, "data": {"default.yml": "a: 1\n", "git-sync.yaml": "x"}})
    stored = live(two_keys)
    assert already_applied(two_keys, stored)
    # Still a subset of what is stored, but last applied from another manifest: not vouched for.
    one_key = with_applied_hash(CONFIG_MAP)
    assert is_subset({"data": one_key["data"]}, stored)
    assert not already_applied(one_key, stored)


def test_quantities_compare_by_value_only_where_quantities_live():
    assert is_subset({"resources": {"limits": {"cpu": "1", "memory": "1024Mi"}, "requests": {"cpu": "0.5"}}},
                     {"resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}})
    assert not is_subset({"resources": {"limits": {"cpu": "2"}}}, {"resources": {"limits": {"cpu": "1"}}})
    assert is_subset({"emptyDir": {"sizeLimit": "1Gi"}}, {"emptyDir": {"sizeLimit": "1024Mi"}})
    assert not is_subset({"replicas": "1"}, {"replicas": 1})  # elsewhere a value is a value
    assert not is_subset({"resources": {"limits": {"cpu": "lots"}}}, {"resources": {"limits": {"cpu": "1"}}})


def test_a_dry_run_result_is_the_same_object_whoever_manages_the_fields():
    stored = live(with_applied_hash(CONFIG_MAP), managedFields=[{"manager": "kubectl"}], generation=1)
    preview = {**stored, "apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {**stored["metadata"], "managedFields": [{"manager": "flipt-operator"}]}}
    assert same_object(preview, stored)
    assert not same_object({**preview, "data": {}}, stored)


def api_error(status, message):
    exc = ApiException(status=status, reason="reason")
    exc.body = json.dumps({"message": message})
    return exc


def test_a_person_must_act_on_a_refusal_and_a_transient_error_is_retried():
    refused = api_error(422, 'Deployment.apps "b" is invalid: spec.selector: field is immutable')
    failure = ServerFailure(f"applying Deployment b failed: {api_error_text(refused)}", is_transient(refused))
    stalled = failure.summary("b")
    assert (stalled.phase, stalled.reason) == ("stalled", "ApplyFailed")
    assert "422" in stalled.message and "field is immutable" in stalled.message
    assert [c.type for c in stalled.conditions()] == ["Ready", "Stalled"]
    assert not is_transient(api_error(403, "deployments.apps is forbidden"))
    for transient in (api_error(503, "unavailable"), api_error(429, "slow down"),
                      urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out")):
        retrying = ServerFailure(api_error_text(transient), is_transient(transient)).summary("b")
        assert retrying.phase == "retrying"
        assert [(c.type, c.reason) for c in retrying.conditions()] == [
            ("Ready", "ApplyFailed"), ("Reconciling", "ProgressingWithRetry")]
