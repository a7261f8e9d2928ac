"""Pydantic API types: the single source of truth for the CRDs (no I/O here)."""

from .common import Condition, parse_duration
from .credential import FliptCredential, FliptCredentialSpec, FliptCredentialStatus
from .environment import FliptEnvironment, FliptEnvironmentSpec, FliptEnvironmentStatus
from .storage import FliptStorage, FliptStorageSpec, FliptStorageStatus
from .sync import SidecarStatus, StorageSyncState

__all__ = [
    "Condition",
    "FliptCredential",
    "FliptCredentialSpec",
    "FliptCredentialStatus",
    "FliptEnvironment",
    "FliptEnvironmentSpec",
    "FliptEnvironmentStatus",
    "FliptStorage",
    "FliptStorageSpec",
    "FliptStorageStatus",
    "SidecarStatus",
    "StorageSyncState",
    "parse_duration",
]
