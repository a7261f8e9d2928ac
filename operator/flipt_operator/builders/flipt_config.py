"""Flipt's `default.yml` for one server, and the environment variables that complete it.

The config goes into a ConfigMap, so it never holds a Secret value: a database URL or a
Redis password kept in a Secret reaches Flipt as an env var from that Secret (`flipt_env`).
A git storage's remote is the git-sync sidecar in the same pod (smart HTTP on loopback), never
the upstream URL: Flipt holds no upstream URL and no credentials, polls the sidecar and pushes its
writes to it; the sidecar does all upstream traffic (see docs/decisions.md).
"""

from __future__ import annotations

from typing import Any

from ..models.gitsync import GIT_SERVE_HOST, GIT_SERVE_PORT
from ..models.plan import GRPC_PORT, HTTP_PORT, STATE_DIR, ServerPlan, StoragePlan

CONFIG_KEY = "default.yml"
# How often Flipt polls the sidecar (loopback; a poll that finds nothing new is one small GET).
# Flipt's validation wants at least 1s.
FLIPT_POLL_INTERVAL = "1s"
# Flipt keeps its repository in memory: the persistent copy is the sidecar's mirror on the volume,
# which Flipt clones over loopback at start (see docs/decisions.md; to re-measure with the real binary).
FLIPT_GIT_BACKEND = "memory"


def sidecar_remote(storage: str) -> str:
    """The remote Flipt is given for a git storage: the sidecar's smart HTTP on loopback."""
    return f"http://{GIT_SERVE_HOST}:{GIT_SERVE_PORT}/{storage}.git"


def _common(version: str) -> dict[str, Any]:
    return {
        "version": version,
        "log": {"level": "INFO", "encoding": "json"},
        "server": {"protocol": "http", "host": "0.0.0.0", "http_port": HTTP_PORT, "grpc_port": GRPC_PORT},
    }


def v2_storage(storage: StoragePlan) -> dict[str, Any]:
    """`storage.<id>` of a v2 config."""
    spec = storage.spec
    if spec.git is not None:
        return {
            "remote": sidecar_remote(storage.name),
            "branch": spec.git.branch,
            "poll_interval": FLIPT_POLL_INTERVAL,
            # Toward the sidecar: it answers only once it serves a revision under the storage's own policy.
            "fetch_policy": "strict",
            "backend": {"type": FLIPT_GIT_BACKEND},
        }
    if spec.local is not None:
        return {"backend": {"type": "local", "path": spec.local.path}}
    if spec.memory is not None:
        return {"backend": {"type": "memory"}}
    raise ValueError(f"storage {storage.name}: {spec.backend} storage has no place in a Flipt v2 config")


def _v2(plan: ServerPlan) -> dict[str, Any]:
    config = _common("2.0")
    config["storage"] = {s.name: v2_storage(s) for s in plan.storages}
    environments: dict[str, Any] = {}
    for env in plan.environments:
        # `name` is the environment's key in Flipt (API routing, branch prefix, store key; two equal
        # names replace each other), not a label: the FliptEnvironment's name, unique per namespace.
        entry: dict[str, Any] = {"name": env.name, "storage": env.storage, "default": env.default}
        if env.directory:
            entry["directory"] = env.directory
        environments[env.name] = entry
    config["environments"] = environments
    return config


def _v1(plan: ServerPlan) -> dict[str, Any]:
    storage = plan.database
    assert storage is not None and storage.spec.database is not None, "a v1 plan has database storage"
    spec = storage.spec.database
    config = _common("1.0")
    config["storage"] = {"type": "database"}
    db: dict[str, Any] = {}
    if spec.url is not None and spec.url_secret_ref is None:
        db["url"] = spec.url  # a plain URL carries no password (the CRD says so); else FLIPT_DB_URL
    for key, value in (
        ("max_open_conn", spec.max_open_conn),
        ("max_idle_conn", spec.max_idle_conn),
        ("conn_max_lifetime", spec.conn_max_lifetime),
        ("prepared_statements_enabled", spec.prepared_statements_enabled),
    ):
        if value is not None:
            db[key] = value
    config["db"] = db
    cache = storage.spec.cache
    if cache is not None:
        section: dict[str, Any] = {"enabled": True, "backend": cache.backend}
        if cache.ttl is not None:
            section["ttl"] = cache.ttl
        if cache.memory is not None and cache.memory.eviction_interval is not None:
            section["memory"] = {"eviction_interval": cache.memory.eviction_interval}
        if cache.redis is not None:
            redis: dict[str, Any] = {
                "host": cache.redis.host,
                "port": cache.redis.port,
                "db": cache.redis.db,
                "require_tls": cache.redis.require_tls,
            }
            if cache.redis.prefix is not None:
                redis["prefix"] = cache.redis.prefix
            section["redis"] = redis  # the password: FLIPT_CACHE_REDIS_PASSWORD, from its Secret
        config["cache"] = section
    return config


def flipt_config(plan: ServerPlan) -> dict[str, Any]:
    """Flipt's `default.yml` as a dict (snake_case keys, as Flipt reads them)."""
    return _v1(plan) if plan.generation == "v1" else _v2(plan)


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def flipt_env(plan: ServerPlan) -> list[dict[str, Any]]:
    """Env vars of the Flipt container (and of a Job running `flipt migrate` with the same config)."""
    env: list[dict[str, Any]] = [
        {"name": "FLIPT_META_CHECK_FOR_UPDATES", "value": "0"},
        {"name": "FLIPT_META_STATE_DIRECTORY", "value": STATE_DIR},
    ]
    storage = plan.database
    if storage is not None:
        db = storage.spec.database
        assert db is not None
        if db.url_secret_ref is not None:
            env.append(_secret_env("FLIPT_DB_URL", db.url_secret_ref.name, db.url_secret_ref.key))
        cache = storage.spec.cache
        if cache is not None and cache.redis is not None and cache.redis.password_secret_ref is not None:
            ref = cache.redis.password_secret_ref
            env.append(_secret_env("FLIPT_CACHE_REDIS_PASSWORD", ref.name, ref.key))
    return sorted(env, key=lambda e: e["name"])
