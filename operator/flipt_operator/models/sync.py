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
    files: list[str] = Field(description="Files of the refused write: those it changed, or those upstream changed "
                             "since the revision it was based on.")
    local_revision: str = Field(description="Flipt's side: the commit upstream refused, or the revision Flipt's "
                                "refused write was based on.")
    remote_revision: str = Field(description="Upstream's head the write was refused against.")
    detected_at: datetime = Field(description="When the refusal was seen.")


class StorageSyncState(ApiModel):
    """One storage as one sidecar sees it."""

    storage: str = Field(description="Storage identifier (the FliptStorage name).")
    remote: str = Field(description="Remote URL, without any credential.")
    branch: str
    fetch_policy: FetchPolicy
    revision: str | None = Field(default=None, description="Commit of the branch the sidecar serves to Flipt (its "
                                 "mirror of upstream).")
    remote_revision: str | None = Field(default=None, description="Remote branch head at the last fetch.")
    flipt_revision: str | None = Field(default=None, description="Commit of the branch this pod's Flipt has last "
                                       "fetched from the sidecar or pushed through it.")
    flipt_fetch_time: datetime | None = Field(default=None, description="Last fetch by this pod's Flipt.")
    last_push_time: datetime | None = Field(default=None, description="Last push of Flipt's that upstream accepted.")
    last_fetch_time: datetime | None = Field(default=None, description="Last successful fetch.")
    last_attempt_time: datetime | None = Field(default=None, description="Last fetch attempt.")
    last_error: str | None = Field(default=None, description="The last git error, cleared by a success.")
    ready: bool = Field(default=False, description="Whether Flipt can be served from this storage.")
    degraded: bool = Field(default=False, description="Serving the last good state while the remote fails.")
    behind: int = Field(default=0, description="Commits of the remote branch this pod's Flipt has not fetched yet.")
    conflict: ConflictInfo | None = None


class SidecarStatus(ApiModel):
    pod: str | None = Field(default=None, description="Pod name of the sidecar, when known.")
    storages: list[StorageSyncState] = Field(default_factory=list)
