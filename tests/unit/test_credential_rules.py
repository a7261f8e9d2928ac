import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from flipt_operator.models.credential import FliptCredentialSpec
from flipt_operator.rules.credentials import check_credential, known_hosts_problem, spec_problem

SECRET_PASSWORD = b"s3cr3t-Pa55word-do-not-leak"


def ssh_key(passphrase: bytes | None = None, fmt=serialization.PrivateFormat.OpenSSH) -> bytes:
    key = ed25519.Ed25519PrivateKey.generate() if fmt == serialization.PrivateFormat.OpenSSH else \
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
    enc = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, fmt, enc)


def known_hosts_line() -> bytes:
    pub = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return b"[127.0.0.1]:2222 " + pub + b"\n"


def spec(kind, **extra):
    return FliptCredentialSpec.model_validate({"type": kind, "secretRef": {"name": "git"}, **extra})


@pytest.mark.parametrize(
    "kind,data,reason",
    [
        ("basic", None, "SecretNotFound"),
        ("basic", {"username": b"u"}, "MissingKey"),
        ("basic", {"username": b"u", "password": b"  "}, "EmptyKey"),
        ("basic", {"username": b"u", "password": SECRET_PASSWORD}, "Valid"),
        ("accessToken", {"password": b"x"}, "MissingKey"),
        ("accessToken", {"token": SECRET_PASSWORD}, "Valid"),
        ("ssh", {"identity": b"not a key", "known_hosts": b"x"}, "InvalidPrivateKey"),
        ("ssh", {"identity": ssh_key()}, "MissingKey"),
        ("ssh", {"identity": ssh_key(), "known_hosts": b"github.com ssh-ed25519 !!!"}, "InvalidKnownHosts"),
        ("ssh", {"identity": ssh_key(), "known_hosts": known_hosts_line()}, "Valid"),
        ("ssh", {"identity": ssh_key(fmt=serialization.PrivateFormat.TraditionalOpenSSL),
                 "known_hosts": known_hosts_line()}, "Valid"),
        ("ssh", {"identity": ssh_key(SECRET_PASSWORD), "known_hosts": known_hosts_line()}, "PassphraseRequired"),
        ("ssh", {"identity": ssh_key(SECRET_PASSWORD), "known_hosts": known_hosts_line(),
                 "passphrase": SECRET_PASSWORD}, "Valid"),
        ("ssh", {"identity": ssh_key(SECRET_PASSWORD), "known_hosts": known_hosts_line(),
                 "passphrase": b"wrong"}, "InvalidPrivateKey"),
    ],
)
def test_check_credential(kind, data, reason):
    result = check_credential(spec(kind), data)
    assert result.reason == reason
    assert result.valid == (reason == "Valid")
    assert SECRET_PASSWORD.decode() not in result.message
    if not result.valid:
        assert "git" in result.message  # names the Secret


def test_insecure_ignore_host_key_does_not_need_known_hosts():
    s = spec("ssh", ssh={"insecureIgnoreHostKey": True})
    assert check_credential(s, {"identity": ssh_key()}).valid


def test_missing_key_message_names_key_and_fix():
    result = check_credential(spec("basic"), {"username": b"u"})
    assert "'password'" in result.message and "add it" in result.message


def test_known_hosts_from_ssh_keyscan_format_and_bad_lines():
    good = b"# comment\n\n" + known_hosts_line() + b"|1|abc=|def= " + known_hosts_line().split(b" ", 1)[1]
    assert known_hosts_problem(good) is None
    assert known_hosts_problem(known_hosts_line() + b"host ssh-rsa AAAA\n") == 2
    assert known_hosts_problem(b"") == 1  # no entries: nothing would be trusted


def test_ssh_keygen_generated_key_is_accepted(tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "id")], check=True)
    result = check_credential(spec("ssh"), {"identity": (tmp_path / "id").read_bytes(), "known_hosts": known_hosts_line()})
    assert result.valid, result.message


def test_ssh_settings_on_another_type_are_refused_before_the_secret_is_read():
    spec = FliptCredentialSpec.model_validate(
        {"type": "basic", "secretRef": {"name": "git"}, "ssh": {"user": "deploy"}})
    check = check_credential(spec, {"username": b"u", "password": b"p"})
    assert (check.valid, check.reason) == (False, "SSHSettingsWithoutSSHType")
    assert "spec.ssh" in check.message and "spec.type" in check.message
    ssh = FliptCredentialSpec.model_validate({"type": "ssh", "secretRef": {"name": "git"}, "ssh": {"user": "deploy"}})
    assert spec_problem(ssh) is None
