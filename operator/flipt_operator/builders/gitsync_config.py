"""The git-sync sidecar's configuration for one server: where each repository and file lives.

Paths only: the sidecar reads the credential and CA files that the Deployment mounts from
Secrets (see server_manifests), so no Secret value is ever part of this document.
"""

from __future__ import annotations

import posixpath

from ..models.gitsync import CREDENTIALS_ROOT, REPOSITORIES_ROOT, GitSyncConfig, GitSyncCredential, GitSyncStorage
from ..models.plan import CredentialPlan, ServerPlan, StoragePlan

# CA bundles sit beside the credentials: <CA_ROOT>/<storage>/<key>.
CA_ROOT = posixpath.join(posixpath.dirname(CREDENTIALS_ROOT), "ca")

# GitSyncCredential field for each Secret key a FliptCredential may hold.
_KEY_FIELDS = {
    "username": "username_file",
    "password": "password_file",
    "token": "token_file",
    "identity": "identity_file",
    "known_hosts": "known_hosts_file",
    "passphrase": "passphrase_file",
}


def repository_path(storage: str) -> str:
    """The sidecar's mirror of a git storage on the data volume (Flipt reaches it over loopback HTTP)."""
    return posixpath.join(REPOSITORIES_ROOT, storage)


def credential_dir(credential: str) -> str:
    """Where the Secret of a FliptCredential is mounted in the sidecar."""
    return posixpath.join(CREDENTIALS_ROOT, credential)


def ca_cert_dir(storage: str) -> str:
    """Where the CA bundle Secret of a git storage is mounted in the sidecar."""
    return posixpath.join(CA_ROOT, storage)


def gitsync_credential(credential: CredentialPlan) -> GitSyncCredential:
    files = {_KEY_FIELDS[key]: posixpath.join(credential_dir(credential.name), key) for key in credential.keys}
    ssh = credential.spec.ssh_options
    return GitSyncCredential(
        type=credential.spec.type,
        ssh_user=ssh.user,
        insecure_ignore_host_key=credential.spec.type == "ssh" and ssh.insecure_ignore_host_key,
        **files,
    )


def gitsync_storage(plan: ServerPlan, storage: StoragePlan) -> GitSyncStorage:
    git = storage.spec.git
    assert git is not None, "a git storage"
    credential = plan.credential(git.credential_ref.name) if git.credential_ref else None
    ca = git.ca_cert_secret_ref
    return GitSyncStorage(
        name=storage.name,
        remote=git.remote,
        branch=git.branch,
        poll_interval=git.poll_interval,
        fetch_policy=git.fetch_policy,
        repository_path=repository_path(storage.name),
        credential=gitsync_credential(credential) if credential else None,
        ca_cert_file=posixpath.join(ca_cert_dir(storage.name), ca.key) if ca else None,
        insecure_skip_tls=git.insecure_skip_tls,
    )


def gitsync_config(plan: ServerPlan) -> GitSyncConfig | None:
    """The sidecar's config for the server's git storages; None when it has none (no sidecar)."""
    storages = plan.git_storages
    if not storages:
        return None
    return GitSyncConfig(storages=[gitsync_storage(plan, s) for s in storages])
