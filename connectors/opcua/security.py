"""OPC UA security: client certificates, the server trust list, and applying a map's policy to a client.

Owns :func:`ensure_client_certificate` (``pq connect cert``), :class:`TrustList` (server
certificates the integrator accepted; a server not in it is refused unless the map says
``trust_unknown_server = true``, in which case its certificate is added and a warning logged) and
:func:`apply_security`. A refused certificate is saved under ``PKI/rejected/`` so the integrator
can inspect it and move it into the trust list. Secrets (passwords, private keys) are never logged.

Layout of the PKI directory (``PQ_PKI_DIR``, default ``PQ_DATA_DIR/pki``)::

    client_cert.der   client_key.pem (mode 600)   trusted/*.der|*.pem   rejected/*.der
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto import security_policies
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from pq.errors import ConfigError, ConnectorError
from connectors.tagmap import SecuritySpec

__all__ = ["APPLICATION_URI_PREFIX", "application_uri", "ensure_client_certificate", "TrustList", "apply_security",
           "fingerprint", "pki_paths"]

logger = logging.getLogger(__name__)

APPLICATION_URI_PREFIX = "urn:pq:connector:"


def application_uri(host: str | None = None) -> str:
    """The connector's OPC UA application URI; it must match the client certificate's SAN URI."""
    return APPLICATION_URI_PREFIX + (host or socket.gethostname())


def pki_paths(pki_dir: Path, sec: SecuritySpec | None = None) -> dict[str, Path]:
    sec = sec or SecuritySpec()
    return {
        "certificate": Path(sec.certificate) if sec.certificate else pki_dir / "client_cert.der",
        "private_key": Path(sec.private_key) if sec.private_key else pki_dir / "client_key.pem",
        "trusted": Path(sec.trust_list) if sec.trust_list else pki_dir / "trusted",
        "rejected": pki_dir / "rejected",
    }


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


async def ensure_client_certificate(cert_path: Path, key_path: Path, *, host: str | None = None,
                                    force: bool = False) -> tuple[Path, Path, bool]:
    """Create a self-signed client certificate (DER) and RSA key (PEM, mode 600) unless valid ones exist.

    Returns (certificate, key, created). The certificate's SAN carries the connector's application
    URI and the host name, as OPC UA servers check them.
    """
    from asyncua.crypto import cert_gen
    from cryptography.x509.oid import ExtendedKeyUsageOID

    cert_path, key_path = Path(cert_path), Path(key_path)
    if force:
        for p in (cert_path, key_path):
            p.unlink(missing_ok=True)
    existed = cert_path.exists() and key_path.exists()
    before = cert_path.read_bytes() if existed else None
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    host = host or socket.gethostname()
    old_umask = os.umask(0o077)  # the key file is created readable by its owner only
    try:
        await cert_gen.setup_self_signed_certificate(
            key_path, cert_path, application_uri(host), host,
            [ExtendedKeyUsageOID.CLIENT_AUTH], {"organizationName": "pq"})
    finally:
        os.umask(old_umask)
    os.chmod(key_path, 0o600)
    created = before is None or cert_path.read_bytes() != before
    return cert_path, key_path, created


def _load_cert(data: bytes) -> x509.Certificate:
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


class TrustList:
    """Trusted server certificates in a directory (DER or PEM), matched by SHA-256 fingerprint.

    A certificate signed by a CA whose certificate is in the directory is trusted too.
    """

    def __init__(self, directory: Path, rejected_dir: Path | None = None):
        self.directory = Path(directory)
        self.rejected_dir = Path(rejected_dir) if rejected_dir else self.directory.parent / "rejected"

    def _certs(self) -> list[x509.Certificate]:
        out = []
        if not self.directory.is_dir():
            return out
        for p in sorted(self.directory.iterdir()):
            if p.suffix.lower() not in (".der", ".pem", ".crt", ".cer"):
                continue
            try:
                out.append(_load_cert(p.read_bytes()))
            except ValueError as exc:
                logger.warning("trust list %s: %s is not a certificate (%s); ignored", self.directory, p.name, exc)
        return out

    def is_trusted(self, cert: x509.Certificate) -> bool:
        certs = self._certs()
        fp = fingerprint(cert)
        if any(fingerprint(c) == fp for c in certs):
            return True
        for ca in certs:  # CA-issued server certificates
            if ca.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(ca)
                return True
            except (ValueError, TypeError, InvalidSignature) as exc:  # not this CA's signature
                logger.debug("certificate not issued by %s: %s", ca.subject.rfc4514_string(), exc)
        return False

    def add(self, cert: x509.Certificate) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{_safe_name(cert)}_{fingerprint(cert)[:16]}.der"
        path.write_bytes(cert.public_bytes(Encoding.DER))
        return path

    def reject(self, cert: x509.Certificate) -> Path:
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        path = self.rejected_dir / f"{_safe_name(cert)}_{fingerprint(cert)[:16]}.der"
        path.write_bytes(cert.public_bytes(Encoding.DER))
        return path

    def check(self, cert: x509.Certificate, endpoint: str, *, trust_unknown: bool) -> None:
        """Raise ConnectorError for an untrusted server, or trust it on first use when allowed."""
        if self.is_trusted(cert):
            return
        subject = cert.subject.rfc4514_string()
        if trust_unknown:
            path = self.add(cert)
            logger.warning("server %s presented an unknown certificate (%s, SHA-256 %s); trusted on first use "
                           "as the tag map allows, saved to %s", endpoint, subject, fingerprint(cert), path)
            return
        path = self.reject(cert)
        raise ConnectorError(
            f"server {endpoint}: certificate {subject} (SHA-256 {fingerprint(cert)}) is not in the trust list "
            f"{self.directory}; if it is the right server, move {path} into {self.directory} "
            "(or set security.trust_unknown_server = true in the tag map)")


def _safe_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    name = str(attrs[0].value) if attrs else "server"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]


async def apply_security(client: Client, sec: SecuritySpec, pki_dir: Path, endpoint: str,
                         username: str | None = None, password: str | None = None) -> None:
    """Configure ``client`` for the map's policy/mode, validating the server certificate first."""
    client.application_uri = application_uri()
    client.name = client.description = "pq connector"
    if username is not None:
        client.set_user(username)
    if password is not None:
        client.set_password(password)
    if sec.policy == "None":
        if password is not None:
            logger.warning("connection %s sends a password with security policy None; the server may refuse "
                           "it and the network can read it unless the server encrypts the user token", endpoint)
        return
    paths = pki_paths(pki_dir, sec)
    for key in ("certificate", "private_key"):
        if not paths[key].exists():
            raise ConfigError(f"security.{key}: {paths[key]} does not exist; create it with `pq connect cert`")
    trust = TrustList(paths["trusted"], paths["rejected"])
    policy_cls = getattr(security_policies, "SecurityPolicy" + sec.policy.replace("_", ""))
    mode = getattr(ua.MessageSecurityMode, sec.mode)
    try:
        endpoints = await client.connect_and_get_server_endpoints()
    except (OSError, TimeoutError, ua.UaError) as exc:
        raise ConnectionError(f"server {endpoint}: cannot list endpoints: {exc}") from exc
    matching = [e for e in endpoints if e.SecurityMode == mode and e.SecurityPolicyUri == policy_cls.URI]
    if not matching:
        offered = sorted({f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/{e.SecurityMode.name}" for e in endpoints})
        raise ConnectorError(f"server {endpoint} offers no endpoint with {sec.policy}/{sec.mode}; "
                             f"it offers: {', '.join(offered)}")
    der = matching[0].ServerCertificate
    cert_len = int.from_bytes(der[2:4], "big") + 4  # the first certificate of a chain
    server_cert = x509.load_der_x509_certificate(der[:cert_len])
    trust.check(server_cert, endpoint, trust_unknown=sec.trust_unknown_server)

    async def _validate_session_cert(cert: x509.Certificate, _app: ua.ApplicationDescription) -> None:
        # The certificate in CreateSession's answer must be the one we trusted for the channel.
        if fingerprint(cert) != fingerprint(server_cert) and not trust.is_trusted(cert):
            raise ua.UaError(f"server {endpoint} answered with an untrusted certificate "
                             f"{cert.subject.rfc4514_string()}")

    client.certificate_validator = _validate_session_cert
    await client.set_security(policy_cls, str(paths["certificate"]), str(paths["private_key"]),
                              server_certificate=server_cert.public_bytes(Encoding.DER), mode=mode)
