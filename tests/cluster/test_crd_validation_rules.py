"""The CRDs' CEL validation rules (x-kubernetes-validations) on a current API server, and the
operator's Stalled fallback on a server without them (crds/pre-1.28/ as documented for servers
before 1.28; installed on the bare cluster, since the oldest release built here is 1.28).

Each rule: the 1.35 server refuses a bad object with the rule's message and field, and accepts the
good object next to it; with the set without rules the same bad object is stored and the operator
reports it Stalled with the reason and field of its own check."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from kubernetes import client

from flipt_operator.builders.crd_cli import WITHOUT_RULES
from flipt_operator.builders.crds import all_crds
from flipt_operator.models.common import VALIDATIONS_KEY
from tests.support.kube_objects import condition, condition_is, create_custom, put_secret
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]

GIT = {"remote": "https://git.example.com/flags.git"}
PG = "postgres://flipt@db:5432/flipt"
SQLITE = "file:/var/opt/flipt/flipt.db"


def _rule(kind, spec, name, good_spec, good_name, field, message):
    return pytest.param(kind, spec, name, good_spec, good_name, field, message, id=f"{kind}-{field}-{message[:24]}")


# (kind, bad spec, bad name, good spec, good name, field the error names, part of the rule's message).
# A rule on the whole object cannot name metadata.name as its field: the server reports "<nil>".
RULES = [
    _rule("FliptStorage", {"git": GIT, "memory": {}}, "two", {"git": GIT}, "one", "spec",
          "set exactly one of spec.database, spec.git, spec.local and spec.memory"),
    _rule("FliptStorage", {}, "none", {"memory": {}}, "one", "spec",
          "set exactly one of spec.database, spec.git, spec.local and spec.memory"),
    _rule("FliptStorage", {"git": GIT, "cache": {"ttl": "5m"}}, "c", {"database": {"url": PG}, "cache": {"ttl": "5m"}},
          "c", "spec.cache", "spec.cache is for database storage only"),
    _rule("FliptStorage", {"database": {"url": PG}, "cache": {"backend": "redis"}}, "r",
          {"database": {"url": PG}, "cache": {"backend": "redis", "redis": {"host": "redis"}}}, "r",
          "spec.cache.redis", "spec.cache.redis is required when spec.cache.backend is redis"),
    _rule("FliptStorage", {"database": {"url": PG, "urlSecretRef": {"name": "db", "key": "url"}}}, "u",
          {"database": {"urlSecretRef": {"name": "db", "key": "url"}}}, "u", "spec.database",
          "set exactly one of spec.database.url and spec.database.urlSecretRef"),
    _rule("FliptStorage", {"database": {"maxOpenConn": 5}}, "n", {"database": {"url": PG, "maxOpenConn": 5}}, "n",
          "spec.database", "set exactly one of spec.database.url and spec.database.urlSecretRef"),
    _rule("FliptStorage", {"database": {"url": "postgres://flipt:hunter2@db/flipt"}}, "p",
          {"database": {"url": "postgres://flipt@db/flipt?sslmode=require"}}, "p", "spec.database.url",
          "spec.database.url must not hold a password"),
    _rule("FliptStorage", {"database": {"url": "mysql://db:3306/flipt?tls=true&password=hunter2"}}, "q",
          {"database": {"url": "mysql://flipt@db:3306/flipt?tls=true"}}, "q", "spec.database.url",
          "spec.database.url must not hold a password"),
    _rule("FliptStorage", {"database": {"url": SQLITE}}, "s", {"database": {"url": SQLITE, "claimName": "data"}}, "s",
          "spec.database.claimName", "spec.database.claimName is required with a SQLite URL"),
    _rule("FliptStorage", {"database": {"url": "file:/data/flipt.db", "claimName": "data"}}, "f",
          {"database": {"url": "sqlite:///var/opt/flipt/data/flipt.db?_fk=1", "claimName": "data"}}, "f",
          "spec.database.url", "the SQLite file must be a path under /var/opt/flipt"),
    _rule("FliptStorage", {"database": {"url": PG, "migrations": {"backup": {"enabled": True}}}}, "k",
          {"database": {"url": PG, "migrations": {"backup": {"enabled": True, "claimName": "backups"}}}}, "k",
          "spec.database.migrations.backup.claimName", "backup.claimName is required to back up a server database"),
    _rule("FliptStorage", {"git": {"remote": "https://flipt:hunter2@git.example.com/flags.git"}}, "g",
          {"git": {"remote": "https://flipt@git.example.com/flags.git"}}, "g", "spec.git.remote",
          "spec.git.remote must not hold a password"),
    _rule("FliptStorage", {"local": {"path": "/var/opt/flipt/repos/flags", "claimName": "c"}}, "l",
          {"local": {"path": "/var/opt/flipt/flags", "claimName": "c"}}, "l", "spec.local.path",
          "spec.local.path must not be Flipt's data directory"),
    _rule("FliptStorage", {"memory": {}}, "flags.v1", {"memory": {}}, "flags-v1", "<nil>",
          "metadata.name becomes a key of Flipt's configuration"),
    _rule("FliptEnvironment", {}, "prod.eu", {}, "prod-eu", "<nil>",
          "metadata.name becomes a key of Flipt's configuration"),
    _rule("FliptCredential", {"type": "basic", "secretRef": {"name": "git"}, "ssh": {"user": "deploy"}}, "b",
          {"type": "ssh", "secretRef": {"name": "git"}, "ssh": {"user": "deploy"}}, "b", "spec.ssh",
          "spec.ssh is read only with spec.type ssh"),
]


def manifest(kind, spec, name):
    return {"apiVersion": "flipt.io/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def _new_namespace(cluster) -> str:
    name = f"t-cel-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(cluster.api_client).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def _installed_rules(cluster) -> int:
    """How many CEL rules our CRDs hold as the server stored them."""
    api = client.ApiextensionsV1Api(cluster.api_client)
    count = 0
    for doc in all_crds().values():
        stored = json.loads(api.read_custom_resource_definition(doc["metadata"]["name"], _preload_content=False).data)
        count += json.dumps(stored).count(f'"{VALIDATIONS_KEY}"')
    return count


def _generated_rules() -> int:
    return sum(json.dumps(doc).count(f'"{VALIDATIONS_KEY}"') for doc in all_crds().values())


def test_the_current_server_takes_every_rule(current_kube_cluster):
    assert _generated_rules() >= 8
    assert _installed_rules(current_kube_cluster) == _generated_rules()


def test_the_first_release_with_rules_takes_every_rule(fallback_kube_cluster):
    """1.28 is where the project's CRDs get their CEL rules (builders.crds.MIN_VERSION_FOR_RULES):
    the fallback cluster's server, v1.28, stores every one."""
    assert _installed_rules(fallback_kube_cluster) == _generated_rules()


def test_the_set_without_rules_is_taken_and_holds_none(bare_kube_cluster):
    """docs/install.md: servers before 1.28 get crds/pre-1.28/. No such server runs here (the oldest
    is v1.28), so what is checked is that a server takes that set and it holds no rule; the
    fallback tests below run with it, on the bare cluster."""
    taken = bare_kube_cluster.kubectl("apply", "--dry-run=server", "-f", str(ROOT / "crds" / WITHOUT_RULES))
    assert taken.returncode == 0, taken.stderr
    assert _installed_rules(bare_kube_cluster) == 0


@pytest.mark.parametrize("kind,spec,name,good_spec,good_name,field,message", RULES)
def test_current_server_refuses_with_the_rule_message_and_accepts_the_fix(
        current_kube_cluster, kind, spec, name, good_spec, good_name, field, message):
    namespace = _new_namespace(current_kube_cluster)
    bad = current_kube_cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(manifest(kind, spec, name)))
    assert bad.returncode != 0, f"accepted: {spec}"
    assert message in bad.stderr, bad.stderr
    assert f"{field}: " in bad.stderr, bad.stderr
    good = current_kube_cluster.kubectl("create", "-n", namespace, "-f", "-",
                                        input=json.dumps(manifest(kind, good_spec, good_name)))
    assert good.returncode == 0, good.stderr


def test_a_refused_database_password_is_not_echoed(current_kube_cluster):
    """CEL errors name the field and its type, never its value (a pattern's error quotes the value:
    a git remote with a password is refused by REMOTE_PATTERN too, and that message shows it)."""
    namespace = _new_namespace(current_kube_cluster)
    spec = {"database": {"url": "postgres://flipt:hunter2@db/flipt"}}
    bad = current_kube_cluster.kubectl("create", "-n", namespace, "-f", "-",
                                       input=json.dumps(manifest("FliptStorage", spec, "p")))
    assert bad.returncode != 0 and "must not hold a password" in bad.stderr, bad.stderr
    assert "hunter2" not in bad.stderr, bad.stderr


# The same mistakes on a server without the rules: stored, then reported by the operator. Storage
# rules are checked for storages a server uses, so each gets an environment. The backup claim of a
# server database is reported when a migration or import Job is built: test_database.py's
# test_import_that_cannot_be_built_is_stalled_naming_the_field runs that mistake on this server.
FALLBACK = [
    ("FliptStorage", "c", {"git": GIT, "cache": {"ttl": "5m"}}, "spec.cache", "CacheWithoutDatabase"),
    ("FliptStorage", "r", {"database": {"url": PG}, "cache": {"backend": "redis"}}, "spec.cache.redis",
     "RedisSettingsMissing"),
    ("FliptStorage", "p", {"database": {"url": "postgres://flipt:hunter2@db/flipt"}}, "spec.database.url",
     "PasswordInDatabaseURL"),
    ("FliptStorage", "s", {"database": {"url": SQLITE}}, "spec.database.claimName", "SQLiteNeedsVolume"),
    ("FliptStorage", "f", {"database": {"url": "file:/data/flipt.db", "claimName": "data"}}, "spec.database.url",
     "SQLitePathNotOnVolume"),
    ("FliptStorage", "l", {"local": {"path": "/var/opt/flipt/repos/flags", "claimName": "c"}}, "spec.local.path",
     "LocalPathConflict"),
    ("FliptStorage", "flags.v1", {"memory": {}}, "metadata.name", "InvalidFliptIdentifier"),
    ("FliptEnvironment", "prod.eu", None, "metadata.name", "InvalidFliptIdentifier"),
    ("FliptCredential", "b", {"type": "basic", "secretRef": {"name": "git"}, "ssh": {"user": "deploy"}}, "spec.ssh",
     "SSHSettingsWithoutSSHType"),
]


@pytest.mark.parametrize("kind,name,spec,field,reason", FALLBACK, ids=[f"{k}-{r}" for k, _, _, _, r in FALLBACK])
def test_operator_reports_stalled_where_the_server_ignores_the_rules(
        bare_kube_cluster, bare_operator, bare_namespace, kind, name, spec, field, reason):
    api, namespace = bare_kube_cluster.api_client, bare_namespace
    if kind == "FliptStorage":
        create_custom(api, namespace, "FliptStorage", name, spec)
        create_custom(api, namespace, "FliptEnvironment", f"env-{uuid.uuid4().hex[:4]}", {"storage": name})
    elif kind == "FliptEnvironment":
        create_custom(api, namespace, "FliptEnvironment", name, {})
    else:
        put_secret(api, namespace, "git", {"username": "flipt", "password": "hunter2"})
        create_custom(api, namespace, kind, name, spec)
    obj = wait_for(lambda: condition_is(api, namespace, kind, name, "Stalled", "True", reason),
                   timeout=30, message=f"{kind}/{name} Stalled {reason}")
    stalled = condition(obj, "Stalled")
    assert field in stalled["message"] or field.rsplit(".", 1)[-1] in stalled["message"], stalled
    assert "hunter2" not in json.dumps(obj["status"])
    assert condition(obj, "Ready")["status"] == "False"


def test_upgrading_to_the_rules_keeps_status_writes_of_objects_they_would_refuse():
    """An object stored before the CRDs had rules (an upgrade from crds/pre-1.28/) may break one.
    The operator must still write its Stalled status: the current server ratchets the rules
    (a status write leaves spec as it was). A spec change that keeps the mistake is refused."""
    from flipt_operator.devcluster.cluster import LocalCluster, apply_crds

    with LocalCluster() as local:
        api = local.api_client()
        try:
            apply_crds(ROOT / "crds" / WITHOUT_RULES, api_client=api)
            create_custom(api, "default", "FliptStorage", "c", {"git": GIT, "cache": {"ttl": "5m"}})
            apply_crds(ROOT / "crds", api_client=api)
            custom = client.CustomObjectsApi(api)
            status = {"status": {"conditions": [{
                "type": "Stalled", "status": "True", "reason": "CacheWithoutDatabase", "message": "remove spec.cache",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}
            written = custom.patch_namespaced_custom_object_status("flipt.io", "v1alpha1", "default", "fliptstorages",
                                                                   "c", status)
            assert condition(written, "Stalled")["reason"] == "CacheWithoutDatabase"
            with pytest.raises(client.ApiException) as refused:
                custom.patch_namespaced_custom_object("flipt.io", "v1alpha1", "default", "fliptstorages", "c",
                                                      {"spec": {"git": {"pollInterval": "1m"}}})
            assert refused.value.status == 422 and "spec.cache is for database storage only" in refused.value.body
        finally:
            api.close()


def test_kubectl_explain_states_the_rules_in_words(current_kube_cluster):
    for field, words in (("fliptstorage.spec", "exactly one of spec.database"),
                         ("fliptstorage.spec.cache", "database storage only"),
                         ("fliptcredential.spec.ssh", "only with type ssh"),
                         ("fliptstorage.spec.database.claimName", "required for SQLite")):
        # The API server publishes a new CRD's OpenAPI a moment after it is Established.
        out = wait_for(lambda f=field: (r := current_kube_cluster.kubectl("explain", f)).returncode == 0 and r,
                       timeout=30, message=f"kubectl explain {field}")
        assert words in " ".join(out.stdout.split()), (field, out.stdout)


def test_the_examples_and_the_documented_objects_pass_the_rules(current_kube_cluster):
    from tests.cluster.test_docs_examples import BLOCKS

    namespace = _new_namespace(current_kube_cluster)
    documents = [*BLOCKS, *(p.read_text() for p in sorted((ROOT / "examples").glob("*.yaml")))]
    assert len(documents) > 3
    for document in documents:
        result = current_kube_cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=document)
        assert result.returncode == 0, (document, result.stderr)


def test_the_chart_installs_its_crds_with_the_rules_on_a_current_server(current_kube_cluster):
    """Helm 4 applies the chart's crds/ server-side over the suite's copy (--force-conflicts); the
    result keeps every rule. (On 1.20 the chart tests install with --skip-crds, as documented.)"""
    from tests.support.chart import helm, install

    namespace, _ = install(current_kube_cluster)
    listed = json.loads(helm(current_kube_cluster, "list", "-n", namespace, "-o", "json").stdout)
    # Only the CRDs matter here: no operator of this release should run beside other tests.
    helm(current_kube_cluster, "uninstall", listed[0]["name"], "-n", namespace)
    assert [r["status"] for r in listed] == ["deployed"]
    api = client.ApiextensionsV1Api(current_kube_cluster.api_client)
    storages = json.loads(api.read_custom_resource_definition("fliptstorages.flipt.io", _preload_content=False).data)
    assert any(f["manager"] == "helm" for f in storages["metadata"]["managedFields"]), storages["metadata"]
    assert _installed_rules(current_kube_cluster) == _generated_rules()
