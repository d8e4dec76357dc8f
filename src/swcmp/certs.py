"""Certificate helpers: loading, chain building, key comparison.

Chain building is deliberately small: from a leaf, follow issuer names through
the untrusted candidates to one of the trust anchors, checking each signature,
each validity period and that every issuer is a CA. That is what CMP needs for
response protection and issued certificates; it is not a web PKI validator.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from swcmp.errors import CertificateError

MAX_CHAIN_DEPTH = 8


#: What cryptography raises for a malformed certificate, at load time or when a
#: lazily parsed part is first read (an unknown string tag in a name: KeyError).
_MALFORMED = (ValueError, KeyError, x509.InvalidVersion, x509.DuplicateExtension,
              x509.UnsupportedGeneralNameType)


def _parsed(cert: x509.Certificate) -> x509.Certificate:
    # Parse now what cryptography parses lazily, so a malformed certificate (say, an
    # extraCert a man in the middle added) fails here as a CertificateError.
    cert.subject.rfc4514_string()
    cert.issuer.rfc4514_string()
    _ = cert.extensions
    return cert


def load_certificate(data: bytes) -> x509.Certificate:
    """One certificate from DER or the first PEM block."""
    try:
        if b"-----BEGIN" in data:
            return _parsed(x509.load_pem_x509_certificate(data))
        return _parsed(x509.load_der_x509_certificate(data))
    except _MALFORMED as e:
        raise CertificateError(f"not a readable X.509 certificate: {e}") from e


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """All certificates of a PEM bundle, or the single DER certificate."""
    try:
        if b"-----BEGIN" in data:
            certs = [_parsed(c) for c in x509.load_pem_x509_certificates(data)]
        else:
            certs = [_parsed(x509.load_der_x509_certificate(data))]
    except _MALFORMED as e:
        raise CertificateError(f"not readable X.509 certificates: {e}") from e
    return certs


def der_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def public_key_of(cert: x509.Certificate) -> CertificatePublicKeyTypes:
    """The certificate's public key; CertificateError when it is malformed or unsupported."""
    try:
        return cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as e:
        raise CertificateError(f"unusable public key in {describe(cert)}: {e}") from e


def spki_of(cert: x509.Certificate) -> bytes:
    return public_key_of(cert).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def describe(cert: x509.Certificate) -> str:
    """Short text for messages: subject and serial in hex."""
    return f"'{cert.subject.rfc4514_string()}' serial {cert.serial_number:x}"


def subject_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        # A v1 self-signed root has no extensions; accept it as CA only when self-issued.
        return cert.version == x509.Version.v1 and cert.issuer == cert.subject


def check_validity(cert: x509.Certificate, now: datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise CertificateError(
            f"certificate {describe(cert)} is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S}Z",
        )
    if now > cert.not_valid_after_utc:
        raise CertificateError(
            f"certificate {describe(cert)} expired {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z"
        )


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def build_chain(
    leaf: x509.Certificate,
    *,
    anchors: Sequence[x509.Certificate],
    untrusted: Iterable[x509.Certificate] = (),
    now: datetime,
    check_leaf_validity: bool = True,
) -> list[x509.Certificate]:
    """Return the path leaf → ... → anchor, or raise CertificateError saying why not.

    A leaf that is itself one of the anchors (byte for byte) is trusted as is.
    ``check_leaf_validity=False`` leaves the leaf's dates to the caller (the
    session checks report them as an item of their own); every CA certificate
    on the path must still be valid at ``now``.
    """
    if not anchors:
        raise CertificateError(
            "no trust anchor configured to verify "
            f"{describe(leaf)}: set one with `swcmp session set NAME --trust CA.crt`"
        )
    if check_leaf_validity:
        check_validity(leaf, now)
    anchor_ders = {der_of(a) for a in anchors}
    if der_of(leaf) in anchor_ders:
        return [leaf]
    pool = [c for c in untrusted if der_of(c) not in anchor_ders]

    def walk(cert: x509.Certificate, path: list[x509.Certificate]) -> list[x509.Certificate] | None:
        if len(path) > MAX_CHAIN_DEPTH:
            return None
        for a in anchors:
            if a.subject == cert.issuer and _issued_by(cert, a):
                try:
                    check_validity(a, now)
                except CertificateError:
                    continue
                return [*path, a]
        for c in pool:
            if c in path or c.subject != cert.issuer or not is_ca(c):
                continue
            if not _issued_by(cert, c):
                continue
            try:
                check_validity(c, now)
            except CertificateError:
                continue
            found = walk(c, [*path, c])
            if found:
                return found
        return None

    chain = walk(leaf, [leaf])
    if chain is None:
        names = ", ".join(f"'{a.subject.rfc4514_string()}'" for a in anchors)
        raise CertificateError(
            f"certificate {describe(leaf)} (issuer '{leaf.issuer.rfc4514_string()}') does not "
            f"chain to the trust anchor(s) {names}: check the session's --trust file"
        )
    return chain
