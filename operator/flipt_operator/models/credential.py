"""FliptCredential: how to authenticate to a git remote."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import ApiModel, CommonStatus, LocalObjectReference, ValidationRule, validation_rules

CredentialType = Literal["basic", "accessToken", "ssh"]

# Secret keys each credential type reads; "optional" keys are checked only when present.
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "basic": ("username", "password"),
    "accessToken": ("token",),
    "ssh": ("identity", "known_hosts"),
}
OPTIONAL_KEYS: dict[str, tuple[str, ...]] = {"basic": (), "accessToken": (), "ssh": ("passphrase",)}


SSH_OPTIONS_ONLY_WITH_SSH = ValidationRule(
    "!has(self.ssh) || self.type == 'ssh'",
    "spec.ssh is read only with spec.type ssh: remove spec.ssh, or set spec.type to ssh.",
    reason="FieldValueForbidden",
    field_path=".ssh",
)


class SSHOptions(ApiModel):
    user: str = Field(default="git", min_length=1, description="SSH user name on the git host.")
    insecure_ignore_host_key: bool = Field(
        default=False,
        description=(
            "Skip host key verification. Only for testing: without it the Secret's known_hosts "
            "is enforced and an unknown host key is refused."
        ),
    )


class FliptCredentialSpec(ApiModel):
    type: CredentialType = Field(
        description=(
            "basic: Secret keys username and password. accessToken: Secret key token "
            "(sent as HTTP basic auth, as Flipt does). ssh: Secret keys identity (a private key), "
            "known_hosts, and passphrase when the key is encrypted."
        )
    )
    secret_ref: LocalObjectReference = Field(
        description="The Secret, in the same namespace, that holds the credential's keys."
    )
    ssh: SSHOptions | None = Field(default=None, description="SSH settings; only with type ssh.")

    model_config = {"json_schema_extra": validation_rules(SSH_OPTIONS_ONLY_WITH_SSH)}

    @property
    def ssh_options(self) -> SSHOptions:
        return self.ssh or SSHOptions()

    def required_keys(self) -> tuple[str, ...]:
        keys = REQUIRED_KEYS[self.type]
        if self.type == "ssh" and self.ssh_options.insecure_ignore_host_key:
            keys = tuple(k for k in keys if k != "known_hosts")
        return keys


class FliptCredentialStatus(CommonStatus):
    secret_resource_version: str | None = Field(
        default=None, description="resourceVersion of the Secret last validated (never its content)."
    )


class FliptCredential(ApiModel):
    spec: FliptCredentialSpec
    status: FliptCredentialStatus | None = None
