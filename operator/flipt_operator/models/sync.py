"""The git-sync sidecar's state: the /status document it serves and the operator reads.

This is the contract between the sidecar and the operator; both import it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from .common import ApiModel

FetchPolicy = Literal["strict", "lenient"]


class ConflictInfo(ApiModel):
    files: list[str] = Field(description="Flag files changed both locally and on the remote.")
    local_revision: str = Field(description="The local commit that was not pushed.")
    remote_revision: str = Field(description="The remote commit it conflicts with.")
    detected_at: datetime = Field(description="When the conflict was first seen.")


class StorageSyncState(ApiModel):
    """One storage as one sidecar sees it."""

    storage: str = Field(description="Storage identifier (the FliptStorage name).")
    remote: str = Field(description="Remote URL, without any credential.")
    branch: str
    fetch_policy: FetchPolicy
    revision: str | None = Field(default=None, description="Commit published to Flipt.")
    remote_revision: str | None = Field(default=None, description="Remote branch head at the last fetch.")
    last_fetch_time: datetime | None = Field(default=None, description="Last successful fetch.")
    last_attempt_time: datetime | None = Field(default=None, description="Last fetch attempt.")
    last_error: str | None = Field(default=None, description="The last git error, cleared by a success.")
    ready: bool = Field(default=False, description="Whether Flipt can be served from this storage.")
    degraded: bool = Field(default=False, description="Serving the last good state while the remote fails.")
    ahead: int = Field(default=0, description="Local commits not yet on the remote.")
    behind: int = Field(default=0, description="Remote commits not yet published.")
    conflict: ConflictInfo | None = None


class SidecarStatus(ApiModel):
    pod: str | None = Field(default=None, description="Pod name of the sidecar, when known.")
    storages: list[StorageSyncState] = Field(default_factory=list)
