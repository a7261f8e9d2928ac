"""The git-sync sidecar's configuration file, rendered by the operator and read by the sidecar."""

from __future__ import annotations

from pydantic import Field, model_validator

from .common import ApiModel, GoDuration
from .credential import CredentialType
from .sync import FetchPolicy

# Where the operator mounts things in a Flipt pod; the sidecar only sees the paths in its config.
REPOSITORIES_ROOT = "/var/opt/flipt/repos"
CREDENTIALS_ROOT = "/etc/flipt-git-sync/credentials"
CONFIG_PATH = "/etc/flipt-git-sync/config.yaml"
SIDECAR_PORT = 8090


class GitSyncCredential(ApiModel):
    """Paths where the credential Secret's keys are mounted; re-read on every sync."""

    type: CredentialType
    username_file: str | None = None
    password_file: str | None = None
    token_file: str | None = None
    identity_file: str | None = None
    known_hosts_file: str | None = None
    passphrase_file: str | None = None
    ssh_user: str = "git"
    insecure_ignore_host_key: bool = False

    @model_validator(mode="after")
    def _files_for_type(self) -> GitSyncCredential:
        needed = {
            "basic": ("username_file", "password_file"),
            "accessToken": ("token_file",),
            "ssh": ("identity_file",) + (() if self.insecure_ignore_host_key else ("known_hosts_file",)),
        }[self.type]
        missing = [f for f in needed if not getattr(self, f)]
        if missing:
            raise ValueError(f"credential of type {self.type} needs {', '.join(missing)}")
        return self


class GitSyncStorage(ApiModel):
    name: str = Field(min_length=1, description="Storage identifier (the FliptStorage name).")
    remote: str = Field(min_length=1)
    branch: str = "main"
    poll_interval: GoDuration = "30s"
    fetch_policy: FetchPolicy = "strict"
    sync_timeout: GoDuration = Field(
        default="120s",
        description="Deadline of one sync cycle (as kubernetes/git-sync's --sync-timeout): its remote "
        "connections are cut when it passes, the cycle fails and is retried.",
    )
    stale_after: GoDuration | None = Field(
        default=None,
        description="How long a strict storage's pod stays ready after its last successful fetch while "
        "fetches fail (default: 3 x pollInterval, at least 60s), so a blip does not take every replica "
        "out of its Service; the storage's status says not Ready at once.",
    )
    repository_path: str = Field(description="Repository on the shared volume that Flipt serves as a local backend.")
    credential: GitSyncCredential | None = None
    ca_cert_file: str | None = None
    insecure_skip_tls: bool = False


class GitSyncConfig(ApiModel):
    listen_address: str = Field(default=f"0.0.0.0:{SIDECAR_PORT}", description="host:port of the HTTP server.")
    storages: list[GitSyncStorage] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> GitSyncConfig:
        names = [s.name for s in self.storages]
        paths = [s.repository_path for s in self.storages]
        if len(set(names)) != len(names):
            raise ValueError("storages[].name must be unique")
        if len(set(paths)) != len(paths):
            raise ValueError("storages[].repositoryPath must be unique")
        return self
