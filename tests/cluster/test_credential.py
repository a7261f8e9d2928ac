"""FliptCredential end to end: the real operator against the real API server."""

import base64
import subprocess
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from kubernetes import client

from tests.support.kube_objects import (
    condition,
    condition_is,
    create_custom,
    dump_namespace,
    events_for,
    get_custom,
    put_secret,
)
from tests.support.operator_fixtures import metric_value, start_operator
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster

PASSWORD = "pw-7c1e5d-never-print-me"
TOKEN = "tok-93ab0f-never-print-me"


def ready_with(api, ns, name, status, reason=None, timeout=20):
    return wait_for(lambda: condition_is(api, ns, "FliptCredential", name, "Ready", status, reason),
                    timeout=timeout, message=f"{name} Ready={status} {reason or ''}")


def test_missing_secret_stalls_then_kubectl_wait_returns_once_created(kube_cluster, operator, namespace):
    api = kube_cluster.api_client
    create_custom(api, namespace, "FliptCredential", "git-basic", {"type": "basic", "secretRef": {"name": "git"}})
    obj = ready_with(api, namespace, "git-basic", "False", "SecretNotFound")
    stalled = condition(obj, "Stalled")
    assert stalled["status"] == "True" and "spec.secretRef.name" in stalled["message"]
    assert condition(obj, "CredentialsValid")["reason"] == "SecretNotFound"
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]

    waiter = subprocess.Popen(
        [str(kube_cluster.kubectl_path), "--kubeconfig", str(kube_cluster.kubeconfig), "wait", "-n", namespace,
         "--for=condition=Ready", "fliptcredential/git-basic", "--timeout=30s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    assert waiter.poll() is None  # still waiting: not Ready yet
    started = time.monotonic()
    put_secret(api, namespace, "git", {"username": "flipt", "password": PASSWORD})
    out, err = waiter.communicate(timeout=40)
    assert waiter.returncode == 0, err
    assert time.monotonic() - started < 10  # the Secret watch, not a timer
    obj = get_custom(api, namespace, "FliptCredential", "git-basic")
    assert condition(obj, "Stalled") is None and condition(obj, "Reconciling") is None

    table = kube_cluster.kubectl("get", "fliptcredential", "git-basic", "-n", namespace, check=True).stdout
    header, row = table.splitlines()[:2]
    assert header.split()[:5] == ["NAME", "TYPE", "SECRET", "READY", "STATUS"]
    assert row.split()[:4] == ["git-basic", "basic", "git", "True"]


def test_key_rotation_and_removal_reevaluate_without_restart(kube_cluster, operator, namespace):
    api = kube_cluster.api_client
    put_secret(api, namespace, "token", {"token": TOKEN})
    create_custom(api, namespace, "FliptCredential", "gh", {"type": "accessToken", "secretRef": {"name": "token"}})
    ready_with(api, namespace, "gh", "True")
    put_secret(api, namespace, "token", {"tokn": TOKEN})  # a typo'd key
    obj = ready_with(api, namespace, "gh", "False", "MissingKey", timeout=10)
    assert "'token'" in condition(obj, "Ready")["message"]
    put_secret(api, namespace, "token", {"token": TOKEN + "-rotated"})
    obj = ready_with(api, namespace, "gh", "True", timeout=10)
    # A repeated Event bumps the count of the one already posted, as Kubernetes' recorder does
    # (Events follow the status write: wait for them).
    def counts() -> dict[str, int]:
        out: dict[str, int] = {}
        for e in events_for(api, namespace, "gh"):
            out[e.reason] = out.get(e.reason, 0) + (e.count or 1)
        return out

    seen = wait_for(lambda: (c := counts()).get("CredentialsValid") == 2 and c, timeout=10,
                    message="CredentialsValid posted twice")
    assert seen["MissingKey"] == 1
    # Deleting the Secret is seen at once too.
    from kubernetes import client
    client.CoreV1Api(api).delete_namespaced_secret("token", namespace)
    obj = ready_with(api, namespace, "gh", "False", "SecretNotFound", timeout=10)
    assert obj["status"].get("secretResourceVersion") is None
    assert any(e.type == "Warning" for e in events_for(api, namespace, "gh"))


def test_ssh_identity_and_known_hosts_are_parsed(kube_cluster, operator, namespace):
    api = kube_cluster.api_client
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    put_secret(api, namespace, "ssh", {"identity": b"garbage", "known_hosts": b"git.example.com " + pub})
    create_custom(api, namespace, "FliptCredential", "ssh", {"type": "ssh", "secretRef": {"name": "ssh"}})
    ready_with(api, namespace, "ssh", "False", "InvalidPrivateKey")
    put_secret(api, namespace, "ssh", {"identity": pem, "known_hosts": b"git.example.com not-a-key AAAA"})
    ready_with(api, namespace, "ssh", "False", "InvalidKnownHosts", timeout=10)
    put_secret(api, namespace, "ssh", {"identity": pem, "known_hosts": b"git.example.com " + pub})
    ready_with(api, namespace, "ssh", "True", timeout=10)


def test_restarted_operator_writes_nothing_for_unchanged_objects(kube_cluster, operator, namespace, tmp_path):
    api = kube_cluster.api_client
    put_secret(api, namespace, "quiet", {"token": TOKEN})
    create_custom(api, namespace, "FliptCredential", "quiet", {"type": "accessToken", "secretRef": {"name": "quiet"}})
    version = ready_with(api, namespace, "quiet", "True")["metadata"]["resourceVersion"]
    # A second operator resumes every existing object: a full resync with nothing to change.
    second = start_operator(kube_cluster.kubeconfig, tmp_path / "second.log")
    try:
        # Its handler has run for this very credential (a barrier, not a sleep): whatever it
        # would write, it has written by then.
        wait_for(lambda: any("'credential_event' succeeded" in line and namespace in line and '"quiet"' in line
                             for line in second.logs().splitlines()),
                 timeout=30, message="second operator resumed this credential")
        assert metric_value(second.metrics(), "flipt_operator_reconciles_total", 'kind="FliptCredential"') >= 1
        # (Its write counter covers every namespace of this shared cluster, where other tests'
        # objects may legitimately change; benchmarks/operator_scale.py counts them on a clean one.)
    finally:
        second.stop()
    assert get_custom(api, namespace, "FliptCredential", "quiet")["metadata"]["resourceVersion"] == version


def test_no_secret_value_in_objects_events_or_logs(kube_cluster, operator, namespace):
    api = kube_cluster.api_client
    put_secret(api, namespace, "leak", {"username": "flipt", "password": PASSWORD})
    create_custom(api, namespace, "FliptCredential", "leak", {"type": "basic", "secretRef": {"name": "leak"}})
    ready_with(api, namespace, "leak", "True")
    put_secret(api, namespace, "leak", {"username": PASSWORD})  # the password lands under a wrong key
    ready_with(api, namespace, "leak", "False", "MissingKey", timeout=10)
    text = dump_namespace(kube_cluster.kubectl, namespace) + operator.logs()
    for secret in (PASSWORD, TOKEN):
        assert secret not in text
        assert base64.b64encode(secret.encode()).decode() not in text


def test_a_credential_created_with_its_storage_is_waited_for_not_reported_as_a_fault(kube_cluster, operator,
                                                                                       namespace):
    """Created together, a storage's first pass may run before its credential's first check:
    that is progress (CredentialPending, Reconciling), never a CredentialNotReady Warning."""
    api = kube_cluster.api_client
    sets = 8
    for i in range(sets):
        put_secret(api, namespace, f"token-{i}", {"token": TOKEN})
        create_custom(api, namespace, "FliptCredential", f"cred-{i}",
                      {"type": "accessToken", "secretRef": {"name": f"token-{i}"}})
        create_custom(api, namespace, "FliptStorage", f"flags-{i}",
                      {"git": {"remote": "https://git.example.com/flags.git", "credentialRef": {"name": f"cred-{i}"}}})
        create_custom(api, namespace, "FliptEnvironment", f"env-{i}", {"storage": f"flags-{i}", "server": f"srv-{i}"})
    for i in range(sets):
        wait_for(lambda i=i: condition_is(api, namespace, "FliptStorage", f"flags-{i}", "CredentialsValid", "True"),
                 timeout=60, message=f"flags-{i} sees cred-{i} Ready")
    events = client.CoreV1Api(api).list_namespaced_event(namespace).items
    faults = sorted({(e.involved_object.name, e.reason, e.message) for e in events if e.type == "Warning"
                     and e.reason in ("CredentialNotReady", "ServerBlocked")})
    assert not faults, f"a credential not checked yet was reported as a fault: {faults}"
