"""The objects of one Flipt server: ConfigMap, ServiceAccount, Service, Deployment with the sidecar."""

from __future__ import annotations

import json

import yaml

from flipt_operator.builders.flipt_config import CONFIG_KEY
from flipt_operator.builders.server_manifests import (
    CONFIG_HASH_ANNOTATION,
    GITSYNC_KEY,
    build_server_manifests,
    config_map_name,
)
from flipt_operator.models.gitsync import CONFIG_PATH, CREDENTIALS_ROOT, SIDECAR_PORT
from flipt_operator.models.plan import supports_native_sidecars
from tests.support.servers import SIDECAR_IMAGE, credential, database, env, git, git_server_plan, ok_plan, storage

PG = "postgres://flipt@db:5432/flipt?sslmode=disable"


def git_plan(**defaults):
    return git_server_plan(**defaults)


def pod(manifests):
    return manifests.deployment["spec"]["template"]["spec"]


def container(spec, name):
    return next(c for c in spec.get("containers", []) + spec.get("initContainers", []) if c["name"] == name)


def mounts(c):
    return {m["mountPath"]: m for m in c["volumeMounts"]}


def volumes(spec):
    return {v["name"]: v for v in spec["volumes"]}


def test_objects_names_and_labels():
    m = build_server_manifests(git_plan())
    assert [(o["kind"], o["metadata"]["name"]) for o in m.all()] == [
        ("ConfigMap", "flipt-config"),
        ("ServiceAccount", "flipt"),
        ("Service", "flipt"),
        ("Deployment", "flipt"),
    ]
    for obj in m.all():
        assert obj["metadata"]["namespace"] == "team-a"
        assert "ownerReferences" not in obj["metadata"]
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "flipt"
        assert labels["app.kubernetes.io/instance"] == "flipt"
        assert labels["app.kubernetes.io/managed-by"] == "flipt-operator"
        assert "app.kubernetes.io/part-of" in labels
    selector = m.deployment["spec"]["selector"]["matchLabels"]
    assert selector == m.service["spec"]["selector"]
    assert selector.items() <= m.deployment["spec"]["template"]["metadata"]["labels"].items()
    assert config_map_name("flipt") == "flipt-config"


def test_service_ports():
    ports = build_server_manifests(git_plan()).service["spec"]["ports"]
    assert [(p["name"], p["port"], p["targetPort"]) for p in ports] == [("http", 8080, "http"), ("grpc", 9000, "grpc")]


def test_config_map_holds_both_documents():
    m = build_server_manifests(git_plan())
    data = m.config_map["data"]
    assert sorted(data) == [CONFIG_KEY, GITSYNC_KEY]
    assert yaml.safe_load(data[CONFIG_KEY])["version"] == "2.0"
    assert yaml.safe_load(data[GITSYNC_KEY])["storages"][0]["name"] == "flags"


def test_v2_flipt_container():
    spec = pod(build_server_manifests(git_plan()))
    flipt = container(spec, "flipt")
    assert flipt["command"] == ["/flipt", "server"]
    assert flipt["args"] == ["--config", "/etc/flipt/config/default.yml"]  # the mounted file, explicitly
    assert flipt["image"] == "docker.flipt.io/flipt/flipt:v2.11.0"
    assert {p["name"]: p["containerPort"] for p in flipt["ports"]} == {"http": 8080, "grpc": 9000}
    m = mounts(flipt)
    assert m["/etc/flipt/config/default.yml"] == {
        "name": "config", "mountPath": "/etc/flipt/config/default.yml", "subPath": "default.yml", "readOnly": True,
    }
    assert m["/var/opt/flipt"]["name"] == "data" and not m["/var/opt/flipt"].get("readOnly")
    assert volumes(spec)["data"] == {"name": "data", "emptyDir": {}}
    env_vars = {e["name"]: e for e in flipt["env"]}
    assert env_vars["FLIPT_META_CHECK_FOR_UPDATES"]["value"] == "0"
    assert env_vars["FLIPT_META_STATE_DIRECTORY"]["value"] == "/home/flipt/.config/flipt"
    assert m["/home/flipt/.config/flipt"]["name"] == "state"
    for probe in ("readinessProbe", "livenessProbe"):
        assert flipt[probe]["httpGet"] == {"path": "/health", "port": "http"}
    sc = flipt["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["runAsNonRoot"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["serviceAccountName"] == "flipt"
    assert spec["enableServiceLinks"] is False
    # Flipt never gets the credential or CA volumes: the sidecar does all remote traffic.
    assert not any(p.startswith("/etc/flipt-git-sync") for p in m)


def test_native_sidecar_wiring():
    spec = pod(build_server_manifests(git_plan()))
    assert [c["name"] for c in spec["containers"]] == ["flipt"]
    assert [c["name"] for c in spec["initContainers"]] == ["git-sync"]
    sidecar = container(spec, "git-sync")
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == SIDECAR_IMAGE
    assert sidecar["command"] == ["flipt-operator", "git-sync", "--config", CONFIG_PATH]
    assert sidecar["ports"] == [{"name": "git-sync", "containerPort": SIDECAR_PORT, "protocol": "TCP"}]
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env_vars = {e["name"]: e for e in sidecar["env"]}
    assert env_vars["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    m = mounts(sidecar)
    assert m[CONFIG_PATH] == {"name": "config", "mountPath": CONFIG_PATH, "subPath": GITSYNC_KEY, "readOnly": True}
    assert m["/var/opt/flipt"]["name"] == "data"  # the same volume Flipt serves the repositories from
    assert m[f"{CREDENTIALS_ROOT}/deploy"]["readOnly"]
    assert m["/etc/flipt-git-sync/ca/flags"]["readOnly"]
    vols = volumes(spec)
    cred = vols[m[f"{CREDENTIALS_ROOT}/deploy"]["name"]]["secret"]
    assert cred == {
        "secretName": "deploy-key",
        "defaultMode": 0o400,
        "items": [{"key": "identity", "path": "identity"}, {"key": "known_hosts", "path": "known_hosts"}],
    }
    ca = vols[m["/etc/flipt-git-sync/ca/flags"]["name"]]["secret"]
    assert ca == {"secretName": "corp-ca", "defaultMode": 0o400, "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True


def test_classic_sidecar_with_one_shot_init():
    spec = pod(build_server_manifests(git_plan(native_sidecar=False)))
    assert [c["name"] for c in spec["containers"]] == ["flipt", "git-sync"]
    assert [c["name"] for c in spec["initContainers"]] == ["git-sync-init"]
    init = spec["initContainers"][0]
    assert init["command"][-1] == "--once" and "restartPolicy" not in init
    assert "restartPolicy" not in container(spec, "git-sync")
    assert mounts(init).keys() == mounts(container(spec, "git-sync")).keys()


def test_mounted_files_match_sidecar_config_paths():
    m = build_server_manifests(git_plan())
    sidecar = container(pod(m), "git-sync")
    vols = volumes(pod(m))
    files = set()
    for mount in sidecar["volumeMounts"]:
        secret = vols[mount["name"]].get("secret")
        if secret:
            files |= {f"{mount['mountPath']}/{item['path']}" for item in secret["items"]}
    cfg = yaml.safe_load(m.config_map["data"][GITSYNC_KEY])["storages"][0]
    wanted = {cfg["caCertFile"], cfg["credential"]["identityFile"], cfg["credential"]["knownHostsFile"]}
    assert wanted <= files


def test_no_sidecar_without_git_storage():
    p = ok_plan({"a": env(storage="m")}, {"m": storage(memory={})})
    m = build_server_manifests(p)
    assert "initContainers" not in pod(m)
    assert list(m.config_map["data"]) == [CONFIG_KEY]


def test_v1_database_deployment():
    p = ok_plan(
        {"a": env(storage="db", deployment={"replicas": 3, "resources": {"requests": {"cpu": "100m"}}})},
        {"db": database(urlSecretRef={"name": "db-conn", "key": "url"},
                        cache={"backend": "redis", "redis": {"host": "r", "passwordSecretRef": {"name": "r", "key": "pw"}}})},
        secrets={"db-conn": {"url"}, "r": {"pw"}},
    )
    m = build_server_manifests(p)
    flipt = container(pod(m), "flipt")
    assert flipt["command"] == ["/flipt"]
    assert flipt["args"] == ["--config", "/etc/flipt/config/default.yml"]
    assert flipt["image"] == "docker.flipt.io/flipt/flipt:v1.61.1"
    assert flipt["resources"] == {"requests": {"cpu": "100m"}}
    env_vars = {e["name"]: e for e in flipt["env"]}
    assert env_vars["FLIPT_DB_URL"]["valueFrom"]["secretKeyRef"] == {"name": "db-conn", "key": "url"}
    assert env_vars["FLIPT_CACHE_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "r", "key": "pw"}
    assert m.deployment["spec"]["replicas"] == 3
    assert m.deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert p.referenced_secrets() == ("db-conn", "r")


def test_sqlite_uses_claim_and_recreate():
    p = ok_plan({"a": env(storage="db")}, {"db": database(url="file:/var/opt/flipt/flipt.db", claimName="flipt-data")})
    m = build_server_manifests(p)
    # Named after its source: an emptyDir "data" is replaced whole under server-side apply.
    assert volumes(pod(m))["data-claim"] == {"name": "data-claim", "persistentVolumeClaim": {"claimName": "flipt-data"}}
    assert m.deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_local_storage_claim_mounted_at_its_path():
    p = ok_plan({"a": env(storage="files")},
                {"files": storage(local={"path": "/var/opt/flipt/local", "claimName": "flags.v1"})})
    m = build_server_manifests(p)
    mount = mounts(container(pod(m), "flipt"))["/var/opt/flipt/local"]
    volume = volumes(pod(m))[mount["name"]]
    assert volume["persistentVolumeClaim"] == {"claimName": "flags.v1"}
    assert "." not in volume["name"] and len(volume["name"]) <= 63
    assert m.deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_long_and_dotted_names_give_valid_volume_names():
    long = "c" * 200
    p = ok_plan(
        {"a": env(storage="g")},
        {"g": git(credentialRef={"name": long})},
        {long: credential("accessToken", "tok")},
        {"tok": {"token"}},
    )
    for v in pod(build_server_manifests(p))["volumes"]:
        assert len(v["name"]) <= 63 and all(ch.isalnum() or ch == "-" for ch in v["name"])


def test_deterministic_and_hash_follows_resource_versions():
    versions = {"Secret/deploy-key": "100", "Secret/corp-ca": "7"}
    a = build_server_manifests(git_plan(), versions)
    b = build_server_manifests(git_plan(), dict(reversed(versions.items())))
    assert json.dumps(a.all(), sort_keys=False) == json.dumps(b.all(), sort_keys=False)
    assert a.config_hash == b.config_hash
    annotation = a.deployment["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
    assert annotation == a.config_hash and len(annotation) == 64
    rotated = build_server_manifests(git_plan(), {**versions, "Secret/deploy-key": "101"})
    assert rotated.config_hash != a.config_hash
    assert rotated.config_map == a.config_map


def test_hash_follows_config():
    base = build_server_manifests(git_plan()).config_hash
    other = ok_plan(
        {"prod": env(storage="flags", directory="prod", default=True, deployment={"replicas": 2}),
         "dev": env(storage="flags", directory="dev2")},
        {"flags": git(credentialRef={"name": "deploy"}, caCertSecretRef={"name": "corp-ca", "key": "ca.crt"})},
        {"deploy": credential("ssh", "deploy-key")},
        {"deploy-key": {"identity", "known_hosts"}, "corp-ca": {"ca.crt"}},
    )
    assert build_server_manifests(other).config_hash != base


SECRET_VALUES = ("TOKEN-d34db33f", "PASSWORD-c0ffee", "-----BEGIN OPENSSH PRIVATE KEY-----", "DBPASS-f00d")


def test_no_secret_value_reaches_any_manifest():
    # What the API server would hold: Secret data with recognisable values. The rules and
    # builders only ever get the key names, as the handler passes them.
    namespace_secrets = {
        "gh": {"token": SECRET_VALUES[0]},
        "https": {"username": "bot", "password": SECRET_VALUES[1]},
        "ssh": {"identity": SECRET_VALUES[2] + "\nabc\n", "known_hosts": "host ssh-ed25519 AAAA"},
        "db": {"url": f"postgres://flipt:{SECRET_VALUES[3]}@db/flipt"},
        "redis": {"password": SECRET_VALUES[1]},
    }
    keys = {name: set(data) for name, data in namespace_secrets.items()}
    # Fields a user might stuff a value into that the models do not have are dropped.
    git_storages = {
        "a": git(credentialRef={"name": "gh"}, token=SECRET_VALUES[0]),
        "b": git(credentialRef={"name": "https"}),
        "c": git("git@git.example:x/y.git", credentialRef={"name": "ssh"}),
    }
    creds = {
        "gh": credential("accessToken", "gh", token=SECRET_VALUES[0]),
        "https": credential("basic", "https"),
        "ssh": credential("ssh", "ssh"),
    }
    v2 = ok_plan(
        {"a": env(storage="a", default=True), "b": env(storage="b"), "c": env(storage="c")},
        git_storages, creds, keys,
    )
    v1 = ok_plan(
        {"db": env(storage="db", server="v1")},
        {"db": database(urlSecretRef={"name": "db", "key": "url"},
                        cache={"backend": "redis", "redis": {"host": "r", "password": SECRET_VALUES[1],
                                                             "passwordSecretRef": {"name": "redis", "key": "password"}}})},
        secrets=keys,
        server="v1",
    )
    for p in (v2, v1):
        m = build_server_manifests(p, {f"Secret/{n}": "1" for n in p.referenced_secrets()})
        text = json.dumps(m.all())
        for value in SECRET_VALUES:
            assert value not in text
        for obj in m.all():
            assert obj["kind"] != "Secret"


def test_native_sidecar_support_by_server_version():
    assert supports_native_sidecars("v1.29.0")
    assert supports_native_sidecars("v1.35.2-eks-1")
    assert supports_native_sidecars("v2.0.0")
    assert not supports_native_sidecars("v1.28.9")
    assert not supports_native_sidecars("v1.20.2")
    assert not supports_native_sidecars("unknown")
