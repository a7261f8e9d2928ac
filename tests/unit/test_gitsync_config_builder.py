"""The sidecar's GitSyncConfig: repository, credential and CA paths; it parses with the model."""

from __future__ import annotations

import yaml

from flipt_operator.builders.gitsync_config import CA_ROOT, gitsync_config
from flipt_operator.builders.server_manifests import GITSYNC_KEY, config_documents
from flipt_operator.models.gitsync import CREDENTIALS_ROOT, REPOSITORIES_ROOT, GitSyncConfig
from tests.support.servers import credential, env, git, ok_plan, storage


def _plan():
    return ok_plan(
        {
            "prod": env(storage="prod-flags", default=True),
            "staging": env(storage="staging-flags"),
            "scratch": env(storage="mem"),
        },
        {
            "prod-flags": git(
                "https://git.example/acme/prod.git",
                branch="live",
                pollInterval="10s",
                fetchPolicy="lenient",
                credentialRef={"name": "https-user"},
                caCertSecretRef={"name": "corp-ca", "key": "ca.crt"},
                insecureSkipTLS=False,
            ),
            "staging-flags": git("git@git.example:acme/staging.git", credentialRef={"name": "deploy-key"}),
            "mem": storage(memory={}),
        },
        {
            "https-user": credential("basic", "https-secret"),
            "deploy-key": credential("ssh", "ssh-secret", ssh={"user": "gitea"}),
        },
        {
            "https-secret": {"username", "password"},
            "ssh-secret": {"identity", "known_hosts", "passphrase"},
            "corp-ca": {"ca.crt"},
        },
    )


def test_storages_and_paths():
    config = gitsync_config(_plan())
    assert config is not None
    by_name = {s.name: s for s in config.storages}
    assert list(by_name) == ["prod-flags", "staging-flags"]  # memory storage needs no sidecar
    prod, staging = by_name["prod-flags"], by_name["staging-flags"]
    assert prod.repository_path == f"{REPOSITORIES_ROOT}/prod-flags"
    assert (prod.remote, prod.branch, prod.poll_interval, prod.fetch_policy) == (
        "https://git.example/acme/prod.git", "live", "10s", "lenient",
    )
    assert prod.ca_cert_file == f"{CA_ROOT}/prod-flags/ca.crt"
    assert prod.credential is not None
    assert prod.credential.type == "basic"
    assert prod.credential.username_file == f"{CREDENTIALS_ROOT}/https-user/username"
    assert prod.credential.password_file == f"{CREDENTIALS_ROOT}/https-user/password"
    ssh = staging.credential
    assert ssh is not None and ssh.type == "ssh" and ssh.ssh_user == "gitea"
    assert ssh.identity_file == f"{CREDENTIALS_ROOT}/deploy-key/identity"
    assert ssh.known_hosts_file == f"{CREDENTIALS_ROOT}/deploy-key/known_hosts"
    assert ssh.passphrase_file == f"{CREDENTIALS_ROOT}/deploy-key/passphrase"
    assert staging.ca_cert_file is None and staging.fetch_policy == "strict"


def test_access_token_and_insecure_ssh():
    p = ok_plan(
        {"a": env(storage="t", default=True), "b": env(storage="s")},
        {
            "t": git(credentialRef={"name": "tok"}),
            "s": git("ssh://git@git.example/acme/x.git", credentialRef={"name": "lab"}),
        },
        {"tok": credential("accessToken", "tok"), "lab": credential("ssh", "lab", ssh={"insecureIgnoreHostKey": True})},
        {"tok": {"token"}, "lab": {"identity"}},
    )
    config = gitsync_config(p)
    assert config is not None
    creds = {s.name: s.credential for s in config.storages}
    assert creds["t"].token_file == f"{CREDENTIALS_ROOT}/tok/token"
    assert creds["s"].insecure_ignore_host_key and creds["s"].known_hosts_file is None


def test_no_git_storage_no_sidecar_config():
    assert gitsync_config(ok_plan({"a": env(storage="m")}, {"m": storage(memory={})})) is None


def test_rendered_document_parses_with_the_model():
    p = _plan()
    document = yaml.safe_load(config_documents(p)[GITSYNC_KEY])
    parsed = GitSyncConfig.model_validate(document)
    assert parsed == gitsync_config(p)

