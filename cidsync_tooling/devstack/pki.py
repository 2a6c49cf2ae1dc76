"""A throwaway CA made on the spot: server, client and signing certificates for the tests, the bench and the
embedded stack's DICT API chain (never a real secret)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: str,
    key: PrivateKey,
    issuer: tuple[x509.Name, PrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
    days: int = 1,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(root: Path) -> Pki:
    """A CA, a server certificate for localhost and 127.0.0.1, and a client certificate, as PEM files."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _cert("cidsync test CA", ca_key, None, ca=True)
    files = {}
    for role in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(f"cidsync {role}", key, (ca_cert.subject, ca_key), server=role == "server")
        (root / f"{role}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (root / f"{role}.key").write_bytes(_key_pem(key))
        files[role] = (root / f"{role}.pem", root / f"{role}.key")
    (root / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return Pki(root / "ca.pem", *files["server"], *files["client"])


@dataclass(frozen=True)
class Signer:
    """An RSA certificate and key for XML signatures (DICT signs with RSA-SHA256), as PEM bytes."""

    cert_pem: bytes
    key_pem: bytes


def make_signer(subject: str, *, days: int = 1, issuer: str = "cidsync test signing CA") -> Signer:
    """A self-contained RSA signing certificate (issued by a throwaway CA of its own name)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, subject),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cidsync tests"),
                ]
            )
        )
        .issuer_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer), x509.NameAttribute(NameOID.COUNTRY_NAME, "BR")])
        )
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(min(now - dt.timedelta(minutes=5), now + dt.timedelta(days=days - 1)))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Signer(cert.public_bytes(serialization.Encoding.PEM), key_pem)


@dataclass(frozen=True)
class DictPki:
    """Everything a DICT API v2 test needs, as files: the TLS CA and DICT's server certificate, the
    participant's RSA certificate (mutual TLS and request signatures), DICT's signing certificate, and a
    stranger's client certificate from another CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    participant_cert: Path
    participant_key: Path
    dict_signer_cert: Path
    dict_signer_key: Path
    stranger_cert: Path
    stranger_key: Path

    def connector_env(self, url: str) -> dict[str, str]:
        """The `CIDSYNC_DICT_*` settings of a participant reaching the DICT API at `url` with these files."""
        return {
            "CIDSYNC_DICT_URL": url,
            "CIDSYNC_DICT_CLIENT_CERT": str(self.participant_cert),
            "CIDSYNC_DICT_CLIENT_KEY": str(self.participant_key),
            "CIDSYNC_DICT_CA": str(self.ca),
            "CIDSYNC_DICT_SIGNER_CERT": str(self.dict_signer_cert),
        }

    def simulator_flags(self, api_port: int) -> list[str]:
        """`cidsync bridge-sim`'s flags to serve DICT API v2 on `api_port` with these certificates."""
        flags = {
            "--dict-api-port": str(api_port),
            "--dict-api-tls-cert": str(self.server_cert),
            "--dict-api-tls-key": str(self.server_key),
            "--dict-api-client-ca": str(self.ca),
            "--dict-api-signer-cert": str(self.dict_signer_cert),
            "--dict-api-signer-key": str(self.dict_signer_key),
            "--dict-api-client-signers": str(self.participant_cert),
        }
        return [item for pair in flags.items() for item in pair]


_DICT_PKI_NAMES = ("server", "participant", "dict-signer", "stranger")


def _dict_pki_at(root: Path) -> DictPki:
    files = [root / f"{name}.{ext}" for name in _DICT_PKI_NAMES for ext in ("pem", "key")]
    return DictPki(root / "ca.pem", *files)


def make_dict_pki(root: Path, *, days: int = 1) -> DictPki:
    """A CA, DICT's server and signing certificates, the participant's, and a stranger's from another CA:
    RSA keys, as DICT uses, valid for `days`."""

    def rsa_key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    ca_key, other_ca_key = rsa_key(), rsa_key()
    ca = _cert("RSFN test CA", ca_key, None, ca=True, days=days)
    other_ca = _cert("somebody else's CA", other_ca_key, None, ca=True, days=days)
    issuers = {"stranger": (other_ca.subject, other_ca_key)}
    for name in _DICT_PKI_NAMES:
        key = rsa_key()
        issuer = issuers.get(name, (ca.subject, ca_key))
        cert = _cert(f"cidsync {name}", key, issuer, server=name == "server", days=days)
        (root / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (root / f"{name}.key").write_bytes(_key_pem(key))
    (root / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return _dict_pki_at(root)


STACK_PKI_DAYS = 365


def kept_dict_pki(root: Path) -> DictPki:
    """The embedded stack's DICT PKI: made at its first `up` and kept in `root` (0700), so a simulator and a
    `bridge serve` restarted apart still trust each other; made anew when a file is missing or a certificate
    expires within a day (then `cidsync dev down` and `up` restart both on it)."""
    pki = _dict_pki_at(root)
    paths = [pki.ca, pki.server_cert, pki.server_key, pki.participant_cert, pki.participant_key]
    paths += [pki.dict_signer_cert, pki.dict_signer_key, pki.stranger_cert, pki.stranger_key]
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    if all(path.exists() for path in paths) and all(
        x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc > soon
        for path in paths
        if path.suffix == ".pem"
    ):
        return pki
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return make_dict_pki(root, days=STACK_PKI_DAYS)
