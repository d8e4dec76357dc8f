"""What the client requires of an issued certificate, and how it confirms one.

The client has already checked that the certificate is for the requested key and
subject and chains to the trust anchors; these are the further rules for a gateway
certificate, and the certConf hash (RFC 9480 2.10).
"""

from __future__ import annotations

import logging

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from swcmp.cmp import certs, oids, text
from swcmp.cmp.dn import format_dn
from swcmp.cmp.errors import CertificateError
from swcmp.cmp.messages import AlgorithmId

log = logging.getLogger(__name__)


def modifications(cert: x509.Certificate, *, spki_der: bytes, subject_der: bytes,
                  expect_sans: frozenset[x509.GeneralName] | None) -> list[str]:
    """What a certificate granted with modifications changed of what was asked: its
    subject, its subjectAltNames (None: not known) or its key; [] when none of those."""
    changes: list[str] = []
    if certs.spki_of(cert) != spki_der:
        changes.append("another public key")
    if cert.subject.public_bytes() != subject_der:
        changes.append(f"subject {text.safe(format_dn(cert.subject))}")
    if expect_sans is not None:
        try:
            got = frozenset(cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            got = frozenset()
        if got - expect_sans:
            changes.append("subjectAltNames added: " + ", ".join(
                sorted(text.safe(str(g.value)) for g in got - expect_sans)))
        if expect_sans - got:
            changes.append("subjectAltNames left out: " + ", ".join(
                sorted(text.safe(str(g.value)) for g in expect_sans - got)))
    return changes


def check_issued_content(cert: x509.Certificate, *,
                         expect_sans: frozenset[x509.GeneralName] | None,
                         replaces: x509.Certificate | None) -> None:
    """What a gateway certificate may not be: a CA, a holder of names nobody asked
    for, or (for a renewal) no newer than the certificate it replaces.

    ``expect_sans``: the subjectAltNames requested (None: not known, e.g. a resumed
    transaction); ``replaces``: the certificate a kur replaces.
    """
    if certs.is_ca(cert):
        raise CertificateError(
            f"the issued certificate {certs.describe(cert)} is a CA certificate "
            "(basicConstraints CA:TRUE); a gateway certificate must not be one")
    if expect_sans is not None:
        try:
            got = frozenset(cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            got = frozenset()
        # CA profiles commonly copy the subject's CN into a dNSName: that name was
        # asked for, in the subject (which is checked to be the requested one).
        cns = {a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
        extra = {g for g in got - expect_sans
                 if not (isinstance(g, x509.DNSName) and g.value in cns)}
        if extra:
            names = ", ".join(sorted(text.safe(str(g.value)) for g in extra))
            raise CertificateError(
                f"the issued certificate carries subjectAltNames nobody asked for: {names}")
        missing = expect_sans - got
        if missing:
            log.warning("the issued certificate lacks requested subjectAltNames: %s",
                        ", ".join(sorted(text.safe(str(g.value)) for g in missing)))
    old = replaces
    if old is not None and (
            cert == old or cert.not_valid_after_utc < old.not_valid_after_utc):
        # Refused: an older certificate for the same key, replayed as a "renewal".
        # (An equal notAfter is fine: a CA may renew twice within one second.)
        raise CertificateError(
            f"the issued certificate {certs.describe(cert)} (valid "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S}Z to "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z) is not newer than "
            f"{certs.describe(old)}, which it should replace: it is no renewal")


def cert_hash_algorithm(cert: x509.Certificate
                        ) -> tuple[hashes.HashAlgorithm, AlgorithmId | None]:
    """The hash of a certificate for certConf (RFC 9480 2.10), and the hashAlg to name.

    The hash of the certificate's signature algorithm (RSA-PSS: the one in its
    parameters); for EdDSA, which has none to take, SHA-512 for Ed25519 and SHAKE256
    (512-bit output) for Ed448 (RFC 9481 2.1), named in hashAlg.
    """
    oid = cert.signature_algorithm_oid.dotted_string
    if oid == oids.ED25519:
        return hashes.SHA512(), AlgorithmId(oids.SHA512)
    if oid == oids.ED448:
        return hashes.SHAKE256(digest_size=64), AlgorithmId(oids.SHAKE256)
    digest = cert.signature_hash_algorithm
    if digest is None:
        raise CertificateError(f"no hash for certConf known for signature algorithm {oid}")
    return digest, None
