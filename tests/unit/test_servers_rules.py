"""Flipt's cross-object rules: grouping, defaults, directories, generations, references, warnings."""

from __future__ import annotations

import pytest

from flipt_operator.builders.status_decisions import environment_status, storage_status
from flipt_operator.models.plan import DEFAULT_V1_IMAGE, DEFAULT_V2_IMAGE, IMPLICIT_STORAGE, OperatorDefaults
from tests.support.servers import SIDECAR_IMAGE, credential, database, env, git, ok_plan, plan, storage

PG = "postgres://flipt@db:5432/flipt?sslmode=disable"
SQLITE = "file:/var/opt/flipt/flipt.db"


def reasons(result, severity="errors"):
    return sorted({(p.kind, p.name, p.field, p.reason) for p in getattr(result, severity)})


def test_environments_group_by_server_sorted():
    results = plan(
        {
            "b": env(storage="mem", server="beta"),
            "a": env(storage="mem"),
            "c": env(storage="mem", server="beta", directory="c", default=True),
        },
        {"mem": storage(memory={})},
    )
    assert list(results) == ["beta", "flipt"]
    assert results["beta"].environments == ("b", "c")
    assert results["flipt"].environments == ("a",)
    assert results["beta"].plan is not None and results["beta"].plan.default_environment.name == "c"


def test_single_environment_is_default_automatically():
    p = ok_plan({"prod": env(storage="s")}, {"s": storage(memory={})})
    assert p.default_environment.name == "prod"
    assert [e.default for e in p.environments] == [True]


def test_no_default_environment():
    result = plan(
        {"a": env(storage="s", directory="a"), "b": env(storage="s", directory="b")}, {"s": storage(memory={})}
    )["flipt"]
    assert result.plan is None
    assert reasons(result) == [
        ("FliptEnvironment", "a", "spec.default", "NoDefaultEnvironment"),
        ("FliptEnvironment", "b", "spec.default", "NoDefaultEnvironment"),
    ]
    assert "spec.default: true" in result.errors[0].message


def test_multiple_default_environments():
    result = plan(
        {
            "a": env(storage="s", directory="a", default=True),
            "b": env(storage="s", directory="b", default=True),
            "c": env(storage="s", directory="c"),
        },
        {"s": storage(memory={})},
    )["flipt"]
    assert reasons(result) == [
        ("FliptEnvironment", "a", "spec.default", "MultipleDefaultEnvironments"),
        ("FliptEnvironment", "b", "spec.default", "MultipleDefaultEnvironments"),
    ]


def test_duplicate_directory_on_shared_storage():
    result = plan(
        {"a": env(storage="s", default=True, directory="x"), "b": env(storage="s", directory="x")},
        {"s": git()},
    )["flipt"]
    assert reasons(result) == [
        ("FliptEnvironment", "a", "spec.directory", "DuplicateDirectory"),
        ("FliptEnvironment", "b", "spec.directory", "DuplicateDirectory"),
    ]


def test_no_directory_twice_on_shared_storage_is_duplicate():
    result = plan({"a": env(storage="s", default=True), "b": env(storage="s")}, {"s": git()})["flipt"]
    assert {p.reason for p in result.errors} == {"DuplicateDirectory"}


def test_same_directory_on_different_storages_is_fine():
    p = ok_plan(
        {"a": env(storage="s1", default=True), "b": env(storage="s2")},
        {"s1": git(), "s2": git("https://git.example/acme/other.git")},
    )
    assert [s.name for s in p.storages] == ["s1", "s2"]


def test_storage_not_found():
    result = plan({"a": env(storage="nope")})["flipt"]
    assert reasons(result) == [("FliptEnvironment", "a", "spec.storage", "StorageNotFound")]


def test_database_server_has_several_environments():
    result = plan(
        {"a": env(storage="db", default=True, directory="a"), "b": env(storage="db", directory="b")},
        {"db": database(url=PG)},
    )["flipt"]
    assert {p.reason for p in result.errors} == {"DatabaseServerHasSeveralEnvironments"}
    assert {p.field for p in result.errors} == {"spec.server"}


def test_mixed_storage_generations():
    result = plan(
        {"a": env(storage="db", default=True), "b": env(storage="g")},
        {"db": database(url=PG), "g": git()},
    )["flipt"]
    assert reasons(result) == [
        ("FliptEnvironment", "a", "spec.storage", "MixedStorageGenerations"),
        ("FliptEnvironment", "b", "spec.storage", "MixedStorageGenerations"),
    ]


def test_mixed_with_implicit_memory_storage():
    result = plan({"a": env(storage="db", default=True), "b": env()}, {"db": database(url=PG)})["flipt"]
    assert "MixedStorageGenerations" in {p.reason for p in result.errors}


def test_generation_and_default_images():
    v1 = ok_plan({"a": env(storage="db")}, {"db": database(url=PG)})
    v2 = ok_plan({"a": env(storage="g")}, {"g": git()})
    assert (v1.generation, v1.image) == ("v1", DEFAULT_V1_IMAGE)
    assert (v2.generation, v2.image) == ("v2", DEFAULT_V2_IMAGE)
    assert v1.sidecar_image == v2.sidecar_image == SIDECAR_IMAGE
    assert v1.replicas == v2.replicas == 1


def test_deployment_settings_from_default_environment_only():
    p = ok_plan(
        {
            "prod": env(
                storage="g",
                directory="p",
                default=True,
                deployment={"image": "mirror.example/flipt:v2.11.0", "replicas": 3,
                            "resources": {"limits": {"memory": "512Mi"}}},
            ),
            "dev": env(storage="g", directory="d", deployment={"replicas": 9}),
        },
        {"g": git()},
    )
    assert (p.image, p.replicas) == ("mirror.example/flipt:v2.11.0", 3)
    assert p.resources is not None and p.resources.limits == {"memory": "512Mi"}
    assert [(w.name, w.reason) for w in p.warnings] == [("dev", "DeploymentSettingsIgnored")]


def test_operator_defaults_apply():
    defaults = OperatorDefaults(sidecar_image="op:2", v2_image="flipt:v2.99.0", replicas=2, native_sidecar=False)
    p = ok_plan({"a": env(storage="g")}, {"g": git()}, defaults=defaults)
    assert (p.image, p.replicas, p.sidecar_image, p.native_sidecar) == ("flipt:v2.99.0", 2, "op:2", False)


def test_credential_not_found_and_not_ready():
    storages = {"g1": git(credentialRef={"name": "missing"}), "g2": git(credentialRef={"name": "broken"})}
    result = plan(
        {"a": env(storage="g1", default=True), "b": env(storage="g2")},
        storages,
        {"broken": credential("basic", "broken-secret", ready=False)},
        {"broken-secret": {"username"}},
    )["flipt"]
    assert reasons(result) == [
        ("FliptStorage", "g1", "spec.git.credentialRef.name", "CredentialNotFound"),
        ("FliptStorage", "g2", "spec.git.credentialRef.name", "CredentialNotReady"),
    ]


def test_a_credential_not_checked_yet_holds_the_server_as_pending_not_as_a_fault():
    storages = {"g": git(credentialRef={"name": "new"})}
    credentials = {"new": credential("basic", "new-secret", ready=False, checked=False)}
    result = plan({"a": env(storage="g")}, storages, credentials, {"new-secret": {"username", "password"}})["flipt"]
    assert result.plan is None  # what runs keeps running until the check is done
    assert [(p.name, p.reason, p.severity) for p in result.errors] == [("g", "CredentialPending", "Pending")]
    env_decision = environment_status("a", "flipt", result.errors, [], None, "git", None, None)
    assert (env_decision.summary.phase, env_decision.summary.reason) == ("progressing", "CredentialPending")
    decision = storage_status("g", storages["g"], result.errors, [], ["flipt"], False, None, credential_pending=True)
    assert (decision.summary.phase, decision.summary.reason) == ("progressing", "CredentialPending")
    assert [(c.type, c.status) for c in decision.domain] == [("CredentialsValid", None)]
    # A storage no environment uses yet says the same in its condition.
    unused = storage_status("g", storages["g"], [], [], [], False, None, credential_pending=True)
    assert [(c.type, c.status, c.reason) for c in unused.domain][0] == ("CredentialsValid", None, "CredentialPending")
    # Once checked and not Ready it is a fault a person must fix.
    credentials = {"new": credential("basic", "new-secret", ready=False)}
    result = plan({"a": env(storage="g")}, storages, credentials, {"new-secret": {"username", "password"}})["flipt"]
    assert environment_status("a", "flipt", result.errors, [], None, "git", None, None).summary.phase == "stalled"
    decision = storage_status("g", storages["g"], result.errors, [], ["flipt"], False, None)
    assert (decision.summary.phase, [(c.type, c.status) for c in decision.domain]) == (
        "stalled", [("CredentialsValid", False)])


@pytest.mark.parametrize(
    ("secrets", "field", "reason"),
    [
        ({}, "spec.git.caCertSecretRef.name", "SecretNotFound"),
        ({"ca": {"other"}}, "spec.git.caCertSecretRef.key", "SecretKeyNotFound"),
    ],
)
def test_ca_cert_secret(secrets, field, reason):
    result = plan({"a": env(storage="g")}, {"g": git(caCertSecretRef={"name": "ca", "key": "ca.crt"})},
                  secrets=secrets)["flipt"]
    assert reasons(result) == [("FliptStorage", "g", field, reason)]


def test_database_url_secret_missing():
    result = plan({"a": env(storage="db")}, {"db": database(urlSecretRef={"name": "db", "key": "url"})})["flipt"]
    assert reasons(result) == [("FliptStorage", "db", "spec.database.urlSecretRef.name", "SecretNotFound")]
    assert ok_plan({"a": env(storage="db")}, {"db": database(urlSecretRef={"name": "db", "key": "url"})},
                   secrets={"db": {"url"}}).generation == "v1"


def test_database_url_missing_or_ambiguous():
    none = plan({"a": env(storage="db")}, {"db": database()})["flipt"]
    both = plan(
        {"a": env(storage="db")},
        {"db": database(url=PG, urlSecretRef={"name": "db", "key": "url"})},
        secrets={"db": {"url"}},
    )["flipt"]
    assert [p.reason for p in none.errors] == ["DatabaseURLMissing"]
    assert [p.reason for p in both.errors] == ["AmbiguousDatabaseURL"]


def test_redis_password_secret():
    cache = {"backend": "redis", "redis": {"host": "redis", "passwordSecretRef": {"name": "redis", "key": "pw"}}}
    result = plan({"a": env(storage="db")}, {"db": database(url=PG, cache=cache)}, secrets={"redis": set()})["flipt"]
    assert reasons(result) == [
        ("FliptStorage", "db", "spec.cache.redis.passwordSecretRef.key", "SecretKeyNotFound")
    ]


def test_cache_without_database():
    result = plan({"a": env(storage="g")}, {"g": storage(git={"remote": "https://h/r.git"}, cache={})})["flipt"]
    assert reasons(result) == [("FliptStorage", "g", "spec.cache", "CacheWithoutDatabase")]


def test_redis_settings_missing():
    result = plan({"a": env(storage="db")}, {"db": database(url=PG, cache={"backend": "redis"})})["flipt"]
    assert reasons(result) == [("FliptStorage", "db", "spec.cache.redis", "RedisSettingsMissing")]


def test_sqlite_needs_volume_and_path_on_volume():
    no_claim = plan({"a": env(storage="db")}, {"db": database(url=SQLITE)})["flipt"]
    assert reasons(no_claim) == [("FliptStorage", "db", "spec.database.claimName", "SQLiteNeedsVolume")]
    elsewhere = plan({"a": env(storage="db")}, {"db": database(url="file:/data/flipt.db", claimName="c")})["flipt"]
    assert reasons(elsewhere) == [("FliptStorage", "db", "spec.database.url", "SQLitePathNotOnVolume")]
    relative = plan({"a": env(storage="db")}, {"db": database(url="file:flipt.db", claimName="c")})["flipt"]
    assert [p.reason for p in relative.errors] == ["SQLitePathNotOnVolume"]
    p = ok_plan({"a": env(storage="db")}, {"db": database(url="sqlite:///var/opt/flipt/f.db?x=1", claimName="c")})
    assert p.is_sqlite and p.data_claim == "c"


def test_sqlite_with_replicas_warns():
    p = ok_plan(
        {"a": env(storage="db", deployment={"replicas": 2})}, {"db": database(url=SQLITE, claimName="c")}
    )
    assert [(w.kind, w.name, w.reason, w.severity) for w in p.warnings] == [
        ("FliptStorage", "db", "SQLiteSingleInstance", "Warning")
    ]


def test_memory_cache_with_replicas_warns():
    p = ok_plan(
        {"a": env(storage="db", deployment={"replicas": 3})},
        {"db": database(url=PG, cache={"backend": "memory", "ttl": "5m"})},
    )
    assert [w.reason for w in p.warnings] == ["MemoryCacheMultipleReplicas"]
    single = ok_plan({"a": env(storage="db")}, {"db": database(url=PG, cache={"backend": "memory"})})
    assert single.warnings == ()


def test_environment_without_storage_uses_implicit_memory_storage():
    result = plan({"a": env()})["flipt"]
    assert result.plan is not None
    assert [(s.name, s.backend, s.implicit) for s in result.plan.storages] == [(IMPLICIT_STORAGE, "memory", True)]
    assert result.plan.environments[0].storage == IMPLICIT_STORAGE
    assert reasons(result, "warnings") == [("FliptEnvironment", "a", "spec.storage", "FlagsNotPersisted")]


def test_implicit_storage_name_taken_by_a_fliptstorage():
    result = plan(
        {"a": env(storage="default", default=True), "b": env(directory="b")}, {"default": git()}
    )["flipt"]
    assert reasons(result) == [("FliptEnvironment", "b", "spec.storage", "ImplicitStorageNameTaken")]


def test_unused_fliptstorage_named_default_does_not_matter():
    p = ok_plan({"a": env()}, {"default": database(url=PG)})
    assert p.storages[0].implicit and p.generation == "v2"


def test_memory_storage_with_replicas_warns():
    p = ok_plan({"a": env(storage="m", deployment={"replicas": 2})}, {"m": storage(memory={})})
    assert [w.reason for w in p.warnings] == ["MemoryStorageMultipleReplicas"]


def test_dotted_names_are_not_flipt_identifiers():
    result = plan({"prod.eu": env(storage="s.x")}, {"s.x": git()})["flipt"]
    assert reasons(result) == [
        ("FliptEnvironment", "prod.eu", "metadata.name", "InvalidFliptIdentifier"),
        ("FliptStorage", "s.x", "metadata.name", "InvalidFliptIdentifier"),
    ]


def test_database_storage_used_by_two_servers():
    results = plan(
        {"a": env(storage="db"), "b": env(storage="db", server="other")}, {"db": database(url=PG)}
    )
    for server in ("flipt", "other"):
        assert [p.reason for p in results[server].errors] == ["StorageUsedBySeveralServers"]


def test_git_storage_may_serve_two_servers():
    results = plan({"a": env(storage="g"), "b": env(storage="g", server="other")}, {"g": git()})
    assert results["flipt"].ok and results["other"].ok


def test_local_path_conflicts():
    storages = {
        "l1": storage(local={"path": "/var/opt/flipt/local", "claimName": "c"}),
        "l2": storage(local={"path": "/var/opt/flipt/local/sub", "claimName": "c"}),
        "l3": storage(local={"path": "/var/opt/flipt/repos/x", "claimName": "c"}),
        "l4": storage(local={"path": "/srv/flags", "claimName": "d"}),
    }
    result = plan(
        {"a": env(storage="l1", default=True), "b": env(storage="l2"), "c": env(storage="l3"), "d": env(storage="l4")},
        storages,
    )["flipt"]
    assert reasons(result) == [
        ("FliptStorage", "l1", "spec.local.path", "LocalPathConflict"),
        ("FliptStorage", "l2", "spec.local.path", "LocalPathConflict"),
        ("FliptStorage", "l3", "spec.local.path", "LocalPathConflict"),
    ]


def test_image_generation_mismatch_warns():
    p = ok_plan(
        {"a": env(storage="g", deployment={"image": "docker.flipt.io/flipt/flipt:v1.61.1"})}, {"g": git()}
    )
    assert [w.reason for w in p.warnings] == ["ImageGenerationMismatch"]


def test_credential_plans_carry_present_keys_only():
    storages = {"g": git("git@git.example:acme/flags.git", credentialRef={"name": "deploy"})}
    creds = {"deploy": credential("ssh", "deploy-key")}
    plain = ok_plan({"a": env(storage="g")}, storages, creds, {"deploy-key": {"identity", "known_hosts", "extra"}})
    assert plain.credentials[0].keys == ("identity", "known_hosts")
    with_pass = ok_plan(
        {"a": env(storage="g")}, storages, creds, {"deploy-key": {"identity", "known_hosts", "passphrase"}}
    )
    assert with_pass.credentials[0].keys == ("identity", "known_hosts", "passphrase")
    assert with_pass.referenced_secrets() == ("deploy-key",)
    assert with_pass.referenced_credentials() == ("deploy",)


def test_messages_say_how_to_fix():
    result = plan({"a": env(storage="nope")})["flipt"]
    assert "create it" in result.errors[0].message


def test_password_in_database_url_is_refused():
    for url in ("postgres://flipt:hunter2@db:5432/flipt", "mysql://db:3306/flipt?password=hunter2"):
        result = plan({"a": env(storage="db")}, {"db": database(url=url)})["flipt"]
        assert reasons(result) == [("FliptStorage", "db", "spec.database.url", "PasswordInDatabaseURL")]
        assert all("hunter2" not in p.message for p in result.errors)
    assert ok_plan({"a": env(storage="db")}, {"db": database(url="postgres://flipt@db/flipt")}).generation == "v1"


@pytest.mark.parametrize("path", [
    "/", "//", "/var", "/var/", "/var/opt/flipt", "/var/opt/flipt/", "/var/opt/flipt/repos",
    "/var/opt/flipt/repos/flags", "/var//opt/flipt/repos/a/b/", "/var/opt/flipt/repos/.git",
    "/var/opt/flipt/local", "/var/opt/flipt/repos/../local", "/var/opt/flipt/reposx", "/data/flags",
    "/var/opt/flipt/./repos", "/varx",
])
def test_what_the_local_path_rule_refuses_the_operator_refuses_too(path):
    """The CEL rule refuses a subset of what the operator's check refuses (it cannot normalise a
    path), so a server with the rules never refuses an object the operator would accept."""
    import re

    from flipt_operator.models.storage import LOCAL_PATH_TAKEN_PATTERN

    result = plan({"a": env(storage="l")}, {"l": storage(local={"path": path, "claimName": "c"})})["flipt"]
    refused_by_operator = ("FliptStorage", "l", "spec.local.path", "LocalPathConflict") in reasons(result)
    if re.match(LOCAL_PATH_TAKEN_PATTERN, path):
        assert refused_by_operator, path
    elif path in ("/var/opt/flipt/local", "/var/opt/flipt/repos/../local", "/var/opt/flipt/reposx", "/data/flags"):
        assert not refused_by_operator, path
