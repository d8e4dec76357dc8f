"""The CA's own key and certificate, and issuing certificates with them."""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from swcmp.cmp import certs, keys
from swcmp.errors import ConfigError
from swcmp.fsutil import PRIVATE_MODE, PUBLIC_MODE, atomic_write

log = logging.getLogger(__name__)

CA_KEY_FILE = "ca.key"
CA_CERT_FILE = "ca.crt"
#: The CA certificate outlives anything it issues by far; a test CA is thrown away long before.
CA_LIFETIME = timedelta(days=3650)
#: Issued certificates start a little in the past so that a client whose clock lags
#: behind ours does not find them "not yet valid".
BACKDATE = timedelta(minutes=1)


class Authority:
    """The CA key and self-signed certificate in a directory.

    Args:
        key: the CA's private key.
        cert: its self-signed certificate.
    """

    def __init__(self, key: keys.PrivateKey, cert: x509.Certificate) -> None:
        if certs.spki_of(cert) != keys.spki_der(key):
            raise ConfigError(
                f"the CA key does not belong to CA certificate {certs.describe(cert)}")
        self.key = key
        self.cert = cert
        self.cert_der = certs.der_of(cert)
        self.subject_der = cert.subject.public_bytes()
        self.key_id = certs.subject_key_id(cert) or keys.subject_key_id(key)
        self._hash = _signing_hash(key)

    @classmethod
    def load_or_create(cls, directory: Path, *, key_type: str, now: datetime) -> Authority:
        """Load ``ca.key`` and ``ca.crt`` from ``directory``, creating both on the first run.

        Raises:
            ConfigError: only one of the two files exists, or they do not match.
            StorageIOError: they cannot be read or written.
        """
        key_path, cert_path = directory / CA_KEY_FILE, directory / CA_CERT_FILE
        if key_path.exists() and cert_path.exists():
            mode = key_path.stat().st_mode & 0o777
            if mode & 0o077:
                log.warning("%s is readable by others (mode %o): chmod 600 it", key_path, mode)
            key = keys.load_private_key(key_path.read_bytes())
            return cls(key, certs.load_certificate(cert_path.read_bytes()))
        if key_path.exists() or cert_path.exists():
            raise ConfigError(
                f"{directory} holds only one of {CA_KEY_FILE} and {CA_CERT_FILE}: "
                "restore the other or remove both to start a new CA")
        key = keys.generate_key(key_type)
        cert = _self_signed(key, now)
        # Key first: a crash between the two writes leaves a key without a certificate,
        # which the check above reports instead of silently making a second CA.
        atomic_write(key_path, keys.private_key_pem(key), mode=PRIVATE_MODE, exclusive=True)
        atomic_write(cert_path, certs.pem_of(cert), mode=PUBLIC_MODE)
        log.info("created test CA %s (%s key) in %s", certs.describe(cert), key_type, directory)
        return cls(key, cert)

    def issued_here(self, cert: x509.Certificate) -> bool:
        """Whether ``cert`` names this CA as issuer and carries its valid signature."""
        if cert.issuer != self.cert.subject:
            return False
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            return False
        return True

    def issue(self, *, public_key: keys.PublicKey, subject: x509.Name,
              san: x509.ExtensionType | None, serial: int, now: datetime,
              validity: timedelta) -> x509.Certificate:
        """Sign an end-entity certificate for exactly ``public_key``.

        ``san`` may be an ``UnrecognizedExtension`` holding a template's raw
        subjectAltName value; it is copied verbatim (the caller checks that it
        parses afterwards). The certificate never outlives the CA's own.
        """
        not_after = min(now + validity, self.cert.not_valid_after_utc)
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=True, content_commitment=False,
                              key_encipherment=False, data_encipherment=False,
                              key_agreement=False, key_cert_sign=False, crl_sign=False,
                              encipher_only=False, decipher_only=False),
                critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier(self.key_id, None, None), critical=False)
        )
        if san is not None:
            # RFC 5280 4.2.1.6: with an empty subject the SANs carry the identity: critical.
            b = b.add_extension(san, critical=len(subject) == 0)
        return b.sign(self.key, self._hash)


def _signing_hash(key: keys.PrivateKey) -> hashes.SHA256 | hashes.SHA384 | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None  # EdDSA has its hash built in
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _self_signed(key: keys.PrivateKey, now: datetime) -> x509.Certificate:
    # A random suffix keeps the names of two test CAs apart, so that a client that trusts
    # one does not mistake the other's certificates for its issuer's.
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "swcmp"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"swcmp Test CA {secrets.token_hex(4)}"),
    ])
    pub = keys.public_key_of(key)
    ski = x509.SubjectKeyIdentifier.from_public_key(pub)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=True, crl_sign=True, encipher_only=False,
                          decipher_only=False),
            critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier(ski.digest, None, None), critical=False)
        .sign(key, _signing_hash(key))
    )


def is_supported_key(pub: object) -> bool:
    """Keys the CA certifies: RSA of at least 2048 bits, ECDSA P-256/P-384, Ed25519."""
    if isinstance(pub, rsa.RSAPublicKey):
        return pub.key_size >= 2048
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return pub.curve.name in ("secp256r1", "secp384r1")
    return isinstance(pub, ed25519.Ed25519PublicKey)


__all__ = ["CA_CERT_FILE", "CA_KEY_FILE", "Authority", "is_supported_key"]
