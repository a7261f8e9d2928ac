"""Is a Secret good for a FliptCredential? Pure checks; messages never quote a value."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization

from ..models.credential import SSH_OPTIONS_ONLY_WITH_SSH, FliptCredentialSpec

KNOWN_HOST_KEY_TYPES = {
    "ssh-rsa",
    "ssh-dss",
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
}


@dataclass(frozen=True)
class CredentialCheck:
    valid: bool
    reason: str
    message: str


def _ok(spec: FliptCredentialSpec, secret_name: str) -> CredentialCheck:
    return CredentialCheck(True, "Valid", f"Secret {secret_name} holds a valid {spec.type} credential.")


def spec_problem(spec: FliptCredentialSpec) -> CredentialCheck | None:
    """What the CRD's CEL rules refuse (models.credential), for API servers that do not apply them."""
    if spec.ssh is not None and spec.type != "ssh":
        return CredentialCheck(False, "SSHSettingsWithoutSSHType", SSH_OPTIONS_ONLY_WITH_SSH.message)
    return None


def check_credential(spec: FliptCredentialSpec, secret: dict[str, bytes] | None) -> CredentialCheck:
    """`secret` is the Secret's decoded data, or None when the Secret does not exist."""
    problem = spec_problem(spec)
    if problem:
        return problem
    name = spec.secret_ref.name
    if secret is None:
        return CredentialCheck(
            False,
            "SecretNotFound",
            f"Secret {name} (spec.secretRef.name) does not exist in this namespace: create it with "
            f"the keys {', '.join(spec.required_keys())}.",
        )
    for key in spec.required_keys():
        if key not in secret:
            return CredentialCheck(
                False,
                "MissingKey",
                f"Secret {name} has no key {key!r}, which a {spec.type} credential needs: add it to the Secret.",
            )
        if not secret[key].strip():
            return CredentialCheck(False, "EmptyKey", f"Key {key!r} of Secret {name} is empty: set a value.")
    if spec.type == "ssh":
        return _check_ssh(spec, secret, name) or _ok(spec, name)
    return _ok(spec, name)


def _check_ssh(spec: FliptCredentialSpec, secret: dict[str, bytes], name: str) -> CredentialCheck | None:
    passphrase = secret.get("passphrase") or None
    problem = private_key_problem(secret["identity"], passphrase)
    if problem:
        reason, detail = problem
        return CredentialCheck(False, reason, f"Key 'identity' of Secret {name} {detail}")
    if "known_hosts" in secret:
        line = known_hosts_problem(secret["known_hosts"])
        if line:
            return CredentialCheck(
                False,
                "InvalidKnownHosts",
                f"Key 'known_hosts' of Secret {name} does not parse at line {line}: each line needs "
                "'host[,host] key-type base64-key' (as `ssh-keyscan host` prints).",
            )
    return None


def private_key_problem(data: bytes, passphrase: bytes | None) -> tuple[str, str] | None:
    """(reason, detail) when `data` is not a usable private key; None when it is."""
    loaders = (serialization.load_ssh_private_key, serialization.load_pem_private_key)
    encrypted = False
    for load in loaders:
        try:
            load(data.strip() + b"\n", password=passphrase)
            return None
        except TypeError:
            # cryptography raises TypeError when a passphrase is missing or not expected.
            encrypted = passphrase is None
        except (ValueError, binascii.Error):
            continue
        except Exception:  # noqa: BLE001 - unsupported key types raise various errors
            continue
    if encrypted:
        return ("PassphraseRequired", "is an encrypted private key: add its passphrase as key 'passphrase'.")
    if passphrase is not None:
        return (
            "InvalidPrivateKey",
            "does not open as a private key with the given 'passphrase': check both keys.",
        )
    return (
        "InvalidPrivateKey",
        "is not a private key in OpenSSH or PEM format: put the key file's content there "
        "(e.g. from `ssh-keygen -t ed25519`).",
    )


def known_hosts_problem(data: bytes) -> int | None:
    """The first bad line number (1-based) of a known_hosts file, or None when it parses."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return 1
    entries = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if fields[0].startswith("@"):  # @cert-authority / @revoked markers
            fields = fields[1:]
        if len(fields) < 3 or fields[1] not in KNOWN_HOST_KEY_TYPES:
            return number
        try:
            blob = base64.b64decode(fields[2], validate=True)
        except (binascii.Error, ValueError):
            return number
        # The key blob starts with its own type name, length-prefixed.
        if len(blob) < 4 or blob[4 : 4 + int.from_bytes(blob[:4], "big")] != fields[1].encode():
            return number
        entries += 1
    return None if entries else 1
