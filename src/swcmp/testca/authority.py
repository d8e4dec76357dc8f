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
from swcmp.fsutil import PRIVATE_MODE, PUBLIC_MODE, atomic_write, ensure_dir

log = logging.getLogger(__name__)

CA_KEY_FILE = "ca.key"
CA_CERT_FILE = "ca.crt"
#: After ``swcmp testca rollover``: the previous root's key and certificate ...
OLD_KEY_FILE = "old-ca.key"
OLD_CERT_FILE = "old-ca.crt"
#: ... and the rollover certificates (RFC 4210 4.4), with DONE written last.
ROLLOVER_DIR = "rollover"
NEW_WITH_OLD_FILE = "new-with-old.crt"
OLD_WITH_NEW_FILE = "old-with-new.crt"
ROLLOVER_DONE = "done"
#: Lifetime of the CA's CRLs (nextUpdate - thisUpdate).
CRL_LIFETIME = timedelta(hours=1)
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

    def __init__(self, key: keys.PrivateKey, cert: x509.Certificate, *,
                 previous: Authority | None = None,
                 new_with_old: x509.Certificate | None = None,
                 old_with_new: x509.Certificate | None = None) -> None:
        if certs.spki_of(cert) != keys.spki_der(key):
            raise ConfigError(
                f"the CA key does not belong to CA certificate {certs.describe(cert)}")
        self.key = key
        self.cert = cert
        #: The root before the last rollover (it still vouches for what it issued).
        self.previous = previous
        self.new_with_old = new_with_old
        self.old_with_new = old_with_new
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
            cert = certs.load_certificate(cert_path.read_bytes())
            previous, new_with_old, old_with_new = _rollover_files(directory)
            return cls(key, cert, previous=previous, new_with_old=new_with_old,
                       old_with_new=old_with_new)
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
        """Whether ``cert`` names this CA as issuer and carries its valid signature (or
        that of the root before the last rollover)."""
        if cert.issuer != self.cert.subject:
            return False
        return self.signed(cert) or (self.previous is not None and self.previous.signed(cert))

    def signed(self, cert: x509.Certificate) -> bool:
        """Whether this CA's current key signed ``cert``."""
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            return False
        return True

    @classmethod
    def impostor(cls, real: Authority, *, now: datetime) -> Authority:
        """A self-signed CA with ``real``'s name and a fresh key (for fault knobs)."""
        key = keys.generate_key("ecdsa:p256")
        pub = keys.public_key_of(key)
        ski = x509.SubjectKeyIdentifier.from_public_key(pub)
        cert = (x509.CertificateBuilder()
                .subject_name(real.cert.subject).issuer_name(real.cert.subject)
                .public_key(pub).serial_number(x509.random_serial_number())
                .not_valid_before(now - BACKDATE).not_valid_after(now + CA_LIFETIME)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(_CA_KEY_USAGE, critical=True)
                .add_extension(ski, critical=False)
                .sign(key, _signing_hash(key)))
        return cls(key, cert)

    def cross_sign(self, cert: x509.Certificate) -> x509.Certificate:
        """``cert`` again, with the same names and key, signed by this CA's key."""
        b = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
             .public_key(cert.public_key())
             .serial_number(cert.serial_number)
             .not_valid_before(cert.not_valid_before_utc)
             .not_valid_after(cert.not_valid_after_utc))
        for ext in cert.extensions:
            b = b.add_extension(ext.value, critical=ext.critical)
        return b.sign(self.key, self._hash)

    def crl(self, revoked: list[tuple[int, datetime, int | None]], *, now: datetime,
            number: int) -> x509.CertificateRevocationList:
        """A CRL signed by the current key: (serial, revocation time, reason code) each."""
        from swcmp.cmp.codec import CRL_REASONS

        flags = {code: x509.ReasonFlags(name) for name, code in CRL_REASONS.items()
                 if name in {f.value for f in x509.ReasonFlags}}
        b = (x509.CertificateRevocationListBuilder()
             .issuer_name(self.cert.subject)
             .last_update(now - BACKDATE)
             .next_update(now + CRL_LIFETIME)
             .add_extension(x509.CRLNumber(number), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier(self.key_id, None, None),
                            critical=False))
        for serial, when, reason in revoked:
            entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
            if reason is not None and reason in flags and reason != 0:
                entry = entry.add_extension(x509.CRLReason(flags[reason]), critical=False)
            b = b.add_revoked_certificate(entry.build())
        return b.sign(self.key, self._hash)

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


def _rollover_files(directory: Path) -> tuple[
        Authority | None, x509.Certificate | None, x509.Certificate | None]:
    """The previous root and the rollover certificates, when a rollover was made."""
    old_key, old_cert = directory / OLD_KEY_FILE, directory / OLD_CERT_FILE
    roll = directory / ROLLOVER_DIR
    if not (old_key.exists() and old_cert.exists() and (roll / ROLLOVER_DONE).exists()):
        return None, None, None
    previous = Authority(keys.load_private_key(old_key.read_bytes()),
                         certs.load_certificate(old_cert.read_bytes()))
    return (previous, certs.load_certificate((roll / NEW_WITH_OLD_FILE).read_bytes()),
            certs.load_certificate((roll / OLD_WITH_NEW_FILE).read_bytes()))


def rollover_stamp(directory: Path) -> int:
    """Changes whenever a rollover completes (the engine reloads the CA then)."""
    try:
        return (directory / ROLLOVER_DIR / ROLLOVER_DONE).stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def roll_over(directory: Path, *, now: datetime) -> Authority:
    """A new root key for the CA in ``directory`` (RFC 4210 4.4): newWithNew, newWithOld
    and oldWithNew, all with the CA's name; the old root is kept as ``old-ca.*``.

    From then on the CA issues with the new key and announces the new root in answer to
    genm rootCaCert; certificates of the old root stay valid (and revocable). A second
    rollover replaces the first one's old root.
    """
    current = Authority.load_or_create(directory, key_type="ecdsa:p256", now=now)
    old_key, old = current.key, current.cert
    new_key = keys.generate_key(keys.key_type_of(old_key))
    new_pub = keys.public_key_of(new_key)
    new_ski = x509.SubjectKeyIdentifier.from_public_key(new_pub)
    old_ski = certs.subject_key_id(old) or keys.subject_key_id(old_key)

    def cert(pub: keys.PublicKey, ski: bytes, signer: keys.PrivateKey, aki: bytes,
             not_after: datetime) -> x509.Certificate:
        return (x509.CertificateBuilder()
                .subject_name(old.subject).issuer_name(old.subject).public_key(pub)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - BACKDATE).not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(_CA_KEY_USAGE, critical=True)
                .add_extension(x509.SubjectKeyIdentifier(ski), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier(aki, None, None), critical=False)
                .sign(signer, _signing_hash(signer)))

    new_with_new = cert(new_pub, new_ski.digest, new_key, new_ski.digest, now + CA_LIFETIME)
    # The links live no longer than the old root: past that, nobody trusts it to follow.
    new_with_old = cert(new_pub, new_ski.digest, old_key, old_ski, old.not_valid_after_utc)
    old_with_new = cert(keys.public_key_of(old_key), old_ski, new_key, new_ski.digest,
                        old.not_valid_after_utc)
    roll = directory / ROLLOVER_DIR
    ensure_dir(roll, mode=0o700)
    done = roll / ROLLOVER_DONE
    if done.exists():  # a second rollover: the engine waits until this one is complete
        done.unlink()
    atomic_write(directory / OLD_KEY_FILE, keys.private_key_pem(old_key), mode=PRIVATE_MODE)
    atomic_write(directory / OLD_CERT_FILE, certs.pem_of(old), mode=PUBLIC_MODE)
    atomic_write(roll / NEW_WITH_OLD_FILE, certs.pem_of(new_with_old), mode=PUBLIC_MODE)
    atomic_write(roll / OLD_WITH_NEW_FILE, certs.pem_of(old_with_new), mode=PUBLIC_MODE)
    atomic_write(directory / CA_KEY_FILE, keys.private_key_pem(new_key), mode=PRIVATE_MODE)
    atomic_write(directory / CA_CERT_FILE, certs.pem_of(new_with_new), mode=PUBLIC_MODE)
    atomic_write(roll / ROLLOVER_DONE, now.isoformat().encode() + b"\n", mode=PUBLIC_MODE)
    log.info("rolled the test CA over to a new root %s (old %s)",
             certs.describe(new_with_new), certs.describe(old))
    return Authority.load_or_create(directory, key_type="ecdsa:p256", now=now)


_CA_KEY_USAGE = x509.KeyUsage(digital_signature=True, content_commitment=False,
                              key_encipherment=False, data_encipherment=False,
                              key_agreement=False, key_cert_sign=True, crl_sign=True,
                              encipher_only=False, decipher_only=False)


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


__all__ = ["CA_CERT_FILE", "CA_KEY_FILE", "Authority", "is_supported_key", "roll_over",
           "rollover_stamp"]
