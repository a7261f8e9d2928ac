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
# Flipt's git remote: the sidecar's smart HTTP, on loopback only (Flipt is in the same pod).
GIT_SERVE_PORT = 8091
GIT_SERVE_HOST = "127.0.0.1"


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
    repository_path: str = Field(description="The sidecar's mirror of upstream; Flipt fetches from and pushes to it "
                                 "over the sidecar's smart HTTP.")
    credential: GitSyncCredential | None = None
    ca_cert_file: str | None = None
    insecure_skip_tls: bool = False


class GitSyncConfig(ApiModel):
    listen_address: str = Field(default=f"0.0.0.0:{SIDECAR_PORT}", description="host:port of /healthz, /readyz, "
                                "/status and /metrics.")
    git_listen_address: str = Field(
        default=f"{GIT_SERVE_HOST}:{GIT_SERVE_PORT}",
        description="host:port of the git smart HTTP server Flipt uses as its remote (keep it on loopback: it "
        "forwards pushes upstream with the storage's credential).",
    )
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
