"""Which Secrets the Flipt objects name: what the watch filters and a pass's reads use."""

from __future__ import annotations

from flipt_operator.rules.references import credential_secret_name, referenced_secret_names, storage_secret_names


def test_every_secret_a_storage_can_name():
    spec = {
        "database": {"urlSecretRef": {"name": "db-url", "key": "url"}},
        "cache": {"backend": "redis", "redis": {"host": "r", "passwordSecretRef": {"name": "redis", "key": "pw"}}},
    }
    assert storage_secret_names(spec) == {"db-url", "redis"}
    assert storage_secret_names({"git": {"remote": "https://x", "caCertSecretRef": {"name": "ca", "key": "c"}}}) == {"ca"}


def test_storages_without_secrets_and_malformed_specs_name_none():
    for spec in ({"memory": {}}, {"database": {"url": "postgres://db/flipt"}}, None, {}, {"database": "x"},
                 {"database": {"urlSecretRef": {"name": ""}}}, {"git": {"caCertSecretRef": ["ca"]}}):
        assert storage_secret_names(spec) == set(), spec


def test_credentials_and_the_union():
    assert credential_secret_name({"type": "basic", "secretRef": {"name": "creds"}}) == "creds"
    assert credential_secret_name({"type": "basic"}) is None
    storages = [{"spec": {"database": {"urlSecretRef": {"name": "db-url", "key": "url"}}}}, {"spec": {"memory": {}}},
                {"metadata": {"name": "no-spec"}}]
    credentials = [{"spec": {"secretRef": {"name": "creds"}}}, {"spec": {"secretRef": {"name": "db-url"}}}]
    assert referenced_secret_names(storages, credentials) == {"db-url", "creds"}
