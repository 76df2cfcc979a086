"""A development certificate authority, the SuperLink's TLS certificate, SuperNode keys.

For trying a federation between a few machines without a hospital PKI: a self-signed CA,
a SuperLink server certificate signed by it (SANs for every host name/IP the sites dial,
plus loopback, which the SuperLink's own ServerApp process dials), and one ECDSA P-384 key
pair per site in OpenSSH format (what `flower-supernode --auth-supernode-private-key` and
`flwr supernode register` read). Production brings its own PKI.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_NAMES = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class TlsFiles:
    """Where the TLS material lives inside a certs folder."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def under(cls, folder: Path) -> TlsFiles:
        return cls(
            ca_cert=folder / "ca.pem",
            ca_key=folder / "ca.key",
            server_cert=folder / "superlink.pem",
            server_key=folder / "superlink.key",
        )

    def check_server_side(self) -> None:
        """The three files a TLS SuperLink needs must exist (named so the fix is obvious)."""
        for path in (self.ca_cert, self.server_cert, self.server_key):
            if not path.is_file():
                raise ValueError(
                    f"{path} not found: create it with 'orthofed certs --out {path.parent}' "
                    "or pass the folder that holds ca.pem, superlink.pem and superlink.key"
                )


@dataclass(frozen=True)
class SiteKeyFiles:
    """One site's SuperNode authentication key pair (OpenSSH format)."""

    private_key: Path
    public_key: Path

    @classmethod
    def under(cls, folder: Path, site_id: str) -> SiteKeyFiles:
        return cls(private_key=folder / f"{site_id}.key", public_key=folder / f"{site_id}.pub")


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _subject_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hosts, *LOOPBACK_NAMES]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if not host or not all(c.isalnum() or c in "-." for c in host):
            raise ValueError(
                f"--host {host!r} is not a host name or IP address (give it without port or scheme)"
            )
        names.append(x509.DNSName(host))
    return names


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    if days < 1:
        raise ValueError(f"--days must be at least 1 (got {days})")
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)


def _ca_certificate(key: ec.EllipticCurvePrivateKey, *, days: int) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "orthofed development CA")])
    start, end = _validity(days)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _server_certificate(
    *,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    hosts: list[str],
    days: int,
) -> x509.Certificate:
    start, end = _validity(days)
    common_name = x509.NameAttribute(NameOID.COMMON_NAME, (hosts or ["localhost"])[0])
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([common_name]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(_subject_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def create_tls_files(out: Path, *, hosts: list[str], days: int = 365) -> TlsFiles:
    """Write a new CA and a SuperLink certificate valid for `hosts` (+ loopback) under `out`."""
    files = TlsFiles.under(out)
    if files.ca_key.exists():
        raise ValueError(
            f"{files.ca_key} already exists: a new CA would invalidate the certificates the "
            "sites hold; pick another --out or delete the folder on purpose"
        )
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = _ca_certificate(ca_key, days=days)
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = _server_certificate(
        ca_cert=ca_cert, ca_key=ca_key, key=server_key, hosts=hosts, days=days
    )
    out.mkdir(parents=True, exist_ok=True)
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(files.ca_key, _pem_key(ca_key))
    _write_private(files.server_key, _pem_key(server_key))
    return files


def check_site_id(site_id: str) -> str:
    if not site_id or not all(c.isalnum() or c in "-_." for c in site_id) or site_id[0] == ".":
        raise ValueError(
            f"site id {site_id!r} must be letters, digits, '-', '_' or '.', e.g. knee-3t"
        )
    return site_id


def create_site_keys(folder: Path, site_id: str) -> SiteKeyFiles:
    """Write an ECDSA P-384 key pair (OpenSSH format) for one site's SuperNode."""
    files = SiteKeyFiles.under(folder, check_site_id(site_id))
    if files.private_key.exists():
        raise ValueError(f"{files.private_key} already exists: keep it or delete it on purpose")
    key = ec.generate_private_key(ec.SECP384R1())
    _write_private(
        files.private_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    files.public_key.write_bytes(public + f" {site_id}\n".encode())
    return files


def check_public_key(path: Path) -> None:
    """A site's SITE.pub as Flower's node authentication needs it (an OpenSSH elliptic-curve
    public key), checked here so a wrong file is named in one line before anything is sent."""
    if not path.is_file():
        raise ValueError(f"{path}: no such public key file")
    try:
        key = serialization.load_ssh_public_key(path.read_bytes().strip())
    except (ValueError, UnsupportedAlgorithm, OSError):
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError(
            f"{path}: not an OpenSSH elliptic-curve public key (give the site's SITE.pub from "
            "'orthofed site-key', never its private key)"
        )
