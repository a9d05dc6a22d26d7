"""Server certificate and user handling for the simulator (asyncua crypto helpers only).

Owns: generating a self-signed application certificate + key into a directory, the security-mode
table (none/sign/encrypt/all) and a small username/password user manager. Imports nothing of pq.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole

logger = logging.getLogger(__name__)

APPLICATION_URI = "urn:pq:simulator:server"
CERT_FILE = "server_cert.der"
KEY_FILE = "server_key.pem"

_P = ua.SecurityPolicyType
SIGN = [_P.Basic256Sha256_Sign, _P.Aes128Sha256RsaOaep_Sign, _P.Aes256Sha256RsaPss_Sign]
ENCRYPT = [
    _P.Basic256Sha256_SignAndEncrypt,
    _P.Aes128Sha256RsaOaep_SignAndEncrypt,
    _P.Aes256Sha256RsaPss_SignAndEncrypt,
]
SECURITY_MODES: dict[str, list] = {
    "none": [_P.NoSecurity],
    "sign": SIGN,
    "encrypt": ENCRYPT,
    "all": [_P.NoSecurity] + SIGN + ENCRYPT,
}


def policies_for(security: str) -> list:
    try:
        return SECURITY_MODES[security]
    except KeyError:
        raise ValueError(f"unknown security {security!r}, expected one of: {', '.join(SECURITY_MODES)}") from None


async def ensure_certificate(cert_dir: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """Create ``server_cert.der`` and ``server_key.pem`` in ``cert_dir`` unless valid ones exist."""
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from asyncua.crypto.cert_gen import setup_self_signed_certificate

    cert_dir.mkdir(parents=True, exist_ok=True)
    cert, key = cert_dir / CERT_FILE, cert_dir / KEY_FILE
    fresh = not cert.exists()
    await setup_self_signed_certificate(
        key,
        cert,
        APPLICATION_URI,
        socket.gethostname(),
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        {"countryName": "DE", "organizationName": "pq", "commonName": "pq line simulator"},
    )
    if fresh:
        logger.info("generated self-signed server certificate %s", cert)
    return cert, key


class PasswordUserManager:
    """Accepts exactly the given username/password pairs (anonymous is refused)."""

    def __init__(self, users: dict[str, str]) -> None:
        self._users = dict(users)

    def get_user(self, iserver, username=None, password=None, certificate=None):  # noqa: ANN001 - asyncua protocol
        if username is not None and self._users.get(username) == password:
            return User(role=UserRole.User, name=username)
        logger.info("refused login for user %r", username)
        return None
