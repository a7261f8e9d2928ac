"""The API server itself refuses bad objects, naming the field (schema from the models)."""

import json

import pytest
import yaml

pytestmark = pytest.mark.cluster

STORAGE_GIT = {"git": {"remote": "https://git.example.com/flags.git"}}

INVALID = [
    # (kind, spec, a field the error must name)
    ("FliptCredential", {"type": "password", "secretRef": {"name": "s"}}, "spec.type"),
    ("FliptCredential", {"type": "basic"}, "spec.secretRef"),
    ("FliptCredential", {"type": "basic", "secretRef": {}}, "spec.secretRef.name"),
    ("FliptCredential", {"type": "basic", "secretRef": {"name": "Not_A_Name"}}, "spec.secretRef.name"),
    ("FliptCredential", {"type": "ssh", "secretRef": {"name": "s"}, "ssh": {"insecureIgnoreHostKey": "yes"}},
     "spec.ssh.insecureIgnoreHostKey"),
    ("FliptStorage", {}, "spec"),
    ("FliptStorage", {**STORAGE_GIT, "memory": {}}, "spec"),
    ("FliptStorage", {"git": {"remote": "ftp://example.com/x.git"}}, "spec.git.remote"),
    ("FliptStorage", {"git": {"remote": "https://user:pw@"}}, "spec.git.remote"),
    # a password in the remote would sit in the sidecar's ConfigMap
    ("FliptStorage", {"git": {"remote": "https://user:s3cret@git.example.com/f.git"}}, "spec.git.remote"),
    ("FliptStorage", {"git": {"remote": "ssh://git:s3cret@git.example.com/f.git"}}, "spec.git.remote"),
    ("FliptStorage", {"git": {"remote": "https://git.example.com/f.git", "pollInterval": "30 seconds"}},
     "spec.git.pollInterval"),
    # Flipt's own schema has no decimals in durations (Go's ParseDuration would take 1.5m)
    ("FliptStorage", {"database": {"url": "file:/a.db"}, "cache": {"ttl": "1.5m"}}, "spec.cache.ttl"),
    ("FliptStorage", {"git": {"remote": "https://git.example.com/f.git", "fetchPolicy": "eager"}},
     "spec.git.fetchPolicy"),
    ("FliptStorage", {"git": {"remote": "https://git.example.com/f.git", "credentialRef": {}}},
     "spec.git.credentialRef.name"),
    ("FliptStorage", {"database": {}}, "spec.database"),
    ("FliptStorage", {"database": {"url": "file:/a.db", "urlSecretRef": {"name": "s", "key": "k"}}},
     "spec.database"),
    ("FliptStorage", {"database": {"url": "oracle://db/flipt"}}, "spec.database.url"),
    ("FliptStorage", {"database": {"urlSecretRef": {"name": "s"}}}, "spec.database.urlSecretRef.key"),
    ("FliptStorage", {"database": {"url": "file:/a.db", "migrations": {"policy": "Sometimes"}}},
     "spec.database.migrations.policy"),
    ("FliptStorage", {"database": {"url": "file:/a.db", "maxOpenConn": -1}}, "spec.database.maxOpenConn"),
    ("FliptStorage", {"database": {"url": "file:/a.db"}, "cache": {"backend": "memcached"}}, "spec.cache.backend"),
    ("FliptStorage", {"database": {"url": "file:/a.db"}, "cache": {"redis": {"host": "r", "port": 70000}}},
     "spec.cache.redis.port"),
    ("FliptStorage", {"local": {"path": "relative/path", "claimName": "c"}}, "spec.local.path"),
    ("FliptStorage", {"local": {"path": "/flags"}}, "spec.local.claimName"),
    ("FliptEnvironment", {"server": "Flipt_Server"}, "spec.server"),
    ("FliptEnvironment", {"default": "sometimes"}, "spec.default"),
    ("FliptEnvironment", {"deployment": {"replicas": -1}}, "spec.deployment.replicas"),
    ("FliptEnvironment", {"directory": "/abs"}, "spec.directory"),
]


def manifest(kind, spec, name="bad"):
    return {"apiVersion": "flipt.io/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}


@pytest.mark.parametrize("kind,spec,field", INVALID, ids=[f"{k}-{f}-{i}" for i, (k, _, f) in enumerate(INVALID)])
def test_server_rejects_invalid_object_naming_the_field(kube_cluster, namespace, kind, spec, field):
    # --validate=false: the API server, not kubectl, must refuse it.
    result = kube_cluster.kubectl("create", "--validate=false", "-n", namespace, "-f", "-",
                                  input=json.dumps(manifest(kind, spec)))
    assert result.returncode != 0, f"accepted: {spec}"
    assert "is invalid" in result.stderr
    assert field in result.stderr, result.stderr


@pytest.mark.parametrize(
    "kind,spec",
    [
        ("FliptCredential", {"type": "ssh", "secretRef": {"name": "git-ssh"}}),
        ("FliptStorage", {"git": {"remote": "git@github.com:acme/flags.git", "pollInterval": "1m30s"}}),
        ("FliptStorage", {"git": {"remote": "ssh://git@example.com:2222/flags.git"}}),
        ("FliptStorage", {"database": {"urlSecretRef": {"name": "db", "key": "url"}},
                          "cache": {"backend": "redis", "ttl": "5m", "redis": {"host": "redis"}}}),
        ("FliptStorage", {"memory": {}}),
        ("FliptEnvironment", {"storage": "flags", "default": True,
                              "deployment": {"replicas": 2, "resources": {"limits": {"cpu": 1, "memory": "256Mi"}}}}),
    ],
)
def test_server_accepts_valid_objects(kube_cluster, namespace, kind, spec):
    result = kube_cluster.kubectl("create", "-n", namespace, "-o", "yaml", "-f", "-",
                                  input=json.dumps(manifest(kind, spec, "good")))
    assert result.returncode == 0, result.stderr
    stored = yaml.safe_load(result.stdout)["spec"]
    for key in spec:
        assert key in stored


def test_server_applies_defaults_from_the_models(kube_cluster, namespace):
    result = kube_cluster.kubectl("create", "-n", namespace, "-o", "json", "-f", "-",
                                  input=json.dumps(manifest("FliptStorage", STORAGE_GIT, "defaults")))
    git = json.loads(result.stdout)["spec"]["git"]
    assert git["branch"] == "main" and git["pollInterval"] == "30s" and git["fetchPolicy"] == "strict"


def test_kubectl_explain_prints_model_descriptions(kube_cluster):
    result = kube_cluster.kubectl("explain", "fliptstorage.spec.git.fetchPolicy")
    assert result.returncode == 0, result.stderr
    assert "lenient" in result.stdout and "strict" in result.stdout


def test_flipt_category_lists_all_kinds(kube_cluster, namespace):
    for kind, spec in [("FliptStorage", {"memory": {}}), ("FliptEnvironment", {})]:
        kube_cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(manifest(kind, spec, "x")),
                             check=True)
    out = kube_cluster.kubectl("get", "flipt", "-n", namespace, check=True).stdout
    assert "fliptstorage.flipt.io/x" in out and "fliptenvironment.flipt.io/x" in out
