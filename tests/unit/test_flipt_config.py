"""Flipt's default.yml: v2 and v1 shapes with the key names Flipt reads, and the env that completes it."""

from __future__ import annotations

import yaml

from flipt_operator.builders.flipt_config import flipt_config, flipt_env
from tests.support.servers import credential, database, env, git, ok_plan, storage

PG = "postgres://flipt@db:5432/flipt?sslmode=disable"


def test_v2_git_storage_has_the_sidecar_as_its_remote():
    p = ok_plan(
        {
            "production": env(storage="flags", directory="production", default=True, displayName="Production"),
            "staging": env(storage="flags", directory="staging"),
        },
        {"flags": git(branch="release", credentialRef={"name": "gh"}, pollInterval="15s", fetchPolicy="lenient")},
        {"gh": credential("accessToken", "gh-token")},
        {"gh-token": {"token"}},
    )
    config = flipt_config(p)
    assert config["version"] == "2.0"
    assert config["server"] == {"protocol": "http", "host": "0.0.0.0", "http_port": 8080, "grpc_port": 9000}
    assert config["log"] == {"level": "INFO", "encoding": "json"}
    # Flipt's remote is the sidecar on loopback: no upstream URL, no credential, a short poll.
    assert config["storage"] == {
        "flags": {"remote": "http://127.0.0.1:8091/flags.git", "branch": "release", "poll_interval": "1s",
                  "fetch_policy": "strict", "backend": {"type": "memory"}}
    }
    assert "credentials" not in config
    assert "git.example" not in yaml.safe_dump(config) and "gh-token" not in yaml.safe_dump(config)
    assert config["environments"] == {
        # the environment's key in Flipt is the object's name; displayName stays on the Kubernetes side
        "production": {"name": "production", "storage": "flags", "directory": "production", "default": True},
        "staging": {"name": "staging", "storage": "flags", "directory": "staging", "default": False},
    }
    assert "db" not in config and "cache" not in config


def test_v2_local_and_memory_storage():
    p = ok_plan(
        {"a": env(storage="files", default=True), "b": env(storage="mem")},
        {"files": storage(local={"path": "/var/opt/flipt/local", "claimName": "flags"}), "mem": storage(memory={})},
    )
    config = flipt_config(p)
    assert config["storage"] == {
        "files": {"backend": {"type": "local", "path": "/var/opt/flipt/local"}},
        "mem": {"backend": {"type": "memory"}},
    }
    assert "directory" not in config["environments"]["a"]


def test_v2_implicit_default_storage_is_written_out():
    # Flipt creates `default` only when no storage is configured at all; spell it out so an
    # environment without spec.storage keeps working next to named storages.
    p = ok_plan({"a": env(storage="g", default=True), "b": env(directory="b")}, {"g": git()})
    config = flipt_config(p)
    assert config["storage"]["default"] == {"backend": {"type": "memory"}}
    assert config["environments"]["b"]["storage"] == "default"


def test_v2_exactly_one_default_environment():
    p = ok_plan({"only": env(storage="g")}, {"g": git()})
    assert flipt_config(p)["environments"]["only"]["default"] is True


def test_v1_database_with_pool_keys():
    p = ok_plan(
        {"a": env(storage="db")},
        {"db": database(url=PG, maxOpenConn=20, maxIdleConn=5, connMaxLifetime="1h", preparedStatementsEnabled=False)},
    )
    config = flipt_config(p)
    assert config["version"] == "1.0"
    assert config["storage"] == {"type": "database"}
    assert config["db"] == {
        "url": PG,
        "max_open_conn": 20,
        "max_idle_conn": 5,
        "conn_max_lifetime": "1h",
        "prepared_statements_enabled": False,
    }
    assert "cache" not in config
    assert "environments" not in config
    assert [e["name"] for e in flipt_env(p)] == ["FLIPT_META_CHECK_FOR_UPDATES", "FLIPT_META_STATE_DIRECTORY"]


def test_v1_secret_url_goes_to_env_not_config():
    p = ok_plan(
        {"a": env(storage="db")}, {"db": database(urlSecretRef={"name": "db-conn", "key": "url"})},
        secrets={"db-conn": {"url"}},
    )
    assert flipt_config(p)["db"] == {}
    assert {"name": "FLIPT_DB_URL", "valueFrom": {"secretKeyRef": {"name": "db-conn", "key": "url"}}} in flipt_env(p)


def test_v1_memory_cache():
    p = ok_plan(
        {"a": env(storage="db")},
        {"db": database(url=PG, cache={"backend": "memory", "ttl": "5m", "memory": {"evictionInterval": "10m"}})},
    )
    assert flipt_config(p)["cache"] == {
        "enabled": True,
        "backend": "memory",
        "ttl": "5m",
        "memory": {"eviction_interval": "10m"},
    }


def test_v1_redis_cache_password_from_secret():
    cache = {
        "backend": "redis",
        "redis": {
            "host": "redis.cache",
            "port": 6380,
            "db": 2,
            "requireTLS": True,
            "prefix": "team-a",
            "passwordSecretRef": {"name": "redis", "key": "password"},
        },
    }
    p = ok_plan({"a": env(storage="db")}, {"db": database(url=PG, cache=cache)}, secrets={"redis": {"password"}})
    assert flipt_config(p)["cache"] == {
        "enabled": True,
        "backend": "redis",
        "redis": {"host": "redis.cache", "port": 6380, "db": 2, "require_tls": True, "prefix": "team-a"},
    }
    assert {
        "name": "FLIPT_CACHE_REDIS_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "redis", "key": "password"}},
    } in flipt_env(p)


def test_v1_sqlite():
    p = ok_plan({"a": env(storage="db")}, {"db": database(url="file:/var/opt/flipt/flipt.db", claimName="data")})
    assert flipt_config(p)["db"] == {"url": "file:/var/opt/flipt/flipt.db"}


def test_same_plan_same_config():
    def build():
        return flipt_config(
            ok_plan(
                {"b": env(storage="g", directory="b"), "a": env(storage="g", directory="a", default=True)},
                {"g": git()},
            )
        )

    assert build() == build()
    assert list(build()["environments"]) == ["a", "b"]
