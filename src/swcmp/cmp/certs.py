"""Certificate helpers: loading, chain building, key comparison.

Chain building is deliberately small: from a leaf, follow issuer names through
the untrusted candidates to one of the trust anchors, checking each signature,
each validity period, that every issuer is a CA allowed to sign certificates and
every pathLenConstraint. That is what CMP needs for response protection and
issued certificates; it is not a web PKI validator (no name constraints, no
policies, no revocation).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from swcmp.cmp.dn import format_dn
from swcmp.cmp.errors import CertificateError, NoChainError
from swcmp.cmp.text import safe

MAX_CHAIN_DEPTH = 8
#: Distinct (subject, key) certificates considered as intermediates of one chain.
MAX_CANDIDATES = 32
#: Signature verifications one chain search may spend (a hostile answer's extraCerts
#: must not buy minutes of CPU).
MAX_SIGNATURE_CHECKS = 64


#: What cryptography raises for a malformed certificate, at load time or when a
#: lazily parsed part is first read (an unknown string tag in a name: KeyError; a BIT
#: STRING value for an attribute other than x500UniqueIdentifier: TypeError).
_MALFORMED = (ValueError, KeyError, TypeError, x509.InvalidVersion, x509.DuplicateExtension,
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
    return _load_certificate(bytes(data))


@functools.lru_cache(maxsize=16)
def _load_certificate(data: bytes) -> x509.Certificate:
    # Cached (a few): a renewal pass reads a session's certificate file more than once,
    # and a Certificate is immutable. Only successes are cached.
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


def _spki_or_none(cert: x509.Certificate) -> bytes | None:
    try:
        return spki_of(cert)
    except CertificateError:
        return None


def describe(cert: x509.Certificate) -> str:
    """Short text for messages: subject and serial in hex."""
    return f"{safe(format_dn(cert.subject))} serial {cert.serial_number:x}"


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


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def _path_len(cert: x509.Certificate) -> int | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
    except x509.ExtensionNotFound:
        return None


def may_sign_certificates(cert: x509.Certificate) -> str | None:
    """Why ``cert`` may not issue certificates (None: it may): CA flag and keyUsage."""
    if not is_ca(cert):
        return f"{describe(cert)} is not a CA certificate (basicConstraints CA:FALSE or absent)"
    ku = _key_usage(cert)
    if ku is not None and not ku.key_cert_sign:
        return f"{describe(cert)} has a keyUsage without keyCertSign"
    return None


class _Budget:
    """Counts the signature checks of one chain search; raises when spent."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def issued_by(self, cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        if self.left <= 0:
            raise CertificateError(
                f"gave up building a chain for {describe(cert)} after {MAX_SIGNATURE_CHECKS} "
                "signature checks (too many look-alike CA certificates)")
        self.left -= 1
        return _issued_by(cert, issuer)


def unique_candidates(candidates: Iterable[x509.Certificate]) -> list[x509.Certificate]:
    """``candidates`` without repeats: one certificate per (subject, public key), at most
    MAX_CANDIDATES of them; every other copy only adds signature checks, not paths."""
    seen: set[tuple[bytes, bytes]] = set()
    out: list[x509.Certificate] = []
    for c in candidates:
        try:
            ident = (c.subject.public_bytes(), spki_of(c))
        except (CertificateError, ValueError):
            continue
        if ident in seen:
            continue
        seen.add(ident)
        out.append(c)
        if len(out) == MAX_CANDIDATES:
            break
    return out


# The path rules are written out here rather than delegated to
# cryptography.x509.verification: that verifier implements the CA/Browser Forum's Web
# PKI profile, which refuses Ed25519 and Ed448 keys and signatures (the Siemens Mock
# CA's root is Ed25519; RFC 9481 allows EdDSA for CMP), RSA keys under 2048 bits, and
# roots without basicConstraints, all of which CMP deployments meet. What is checked
# is RFC 5280 6.1 as far as a CMP client needs it: signatures, validity of every link,
# basicConstraints CA and pathLenConstraint, keyUsage keyCertSign on every issuer.
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

    The cost is bounded whatever the candidates: at most MAX_CANDIDATES distinct
    (subject, key) intermediates, MAX_CHAIN_DEPTH links, no key twice on one path and
    MAX_SIGNATURE_CHECKS signature verifications in all.
    """
    if not anchors:
        raise CertificateError(f"no trust anchor configured to verify {describe(leaf)}").with_hint(
            "configure the CA certificate as a trust anchor", setting="trust")
    if check_leaf_validity:
        check_validity(leaf, now)
    anchor_list = unique_candidates(anchors)
    anchor_ders = {der_of(a) for a in anchors}
    if der_of(leaf) in anchor_ders:
        return [leaf]
    anchor_keys = {spki_of(a) for a in anchor_list}
    # Certificates with keys swcmp cannot use (a CA may send post-quantum ones beside
    # the classic chain) are not candidates; unique_candidates drops them.
    pool = unique_candidates(c for c in untrusted if der_of(c) not in anchor_ders
                             and _spki_or_none(c) not in anchor_keys)
    budget = _Budget(MAX_SIGNATURE_CHECKS)
    refused: list[str] = []

    def usable_issuer(c: x509.Certificate, below: int, *, anchor: bool) -> bool:
        # ``below``: the non-self-issued intermediates between ``c`` and the leaf
        why = None
        if not (anchor and c.version == x509.Version.v1):
            why = may_sign_certificates(c)
        if why is None:
            limit = _path_len(c)
            if limit is not None and below > limit:
                why = (f"{describe(c)} allows {limit} intermediate CA(s) below it "
                       f"(pathLenConstraint), the path has {below}")
        if why is None:
            try:
                check_validity(c, now)
            except CertificateError as e:
                why = str(e)
        if why is not None:
            refused.append(why)
            return False
        return True

    def walk(cert: x509.Certificate, path: list[x509.Certificate], keys_on_path: set[bytes],
             below: int) -> list[x509.Certificate] | None:
        if len(path) > MAX_CHAIN_DEPTH:
            return None
        for a in anchor_list:
            if (a.subject == cert.issuer and budget.issued_by(cert, a)
                    and usable_issuer(a, below, anchor=True)):
                return [*path, a]
        for c in pool:
            if c.subject != cert.issuer or c in path:
                continue
            key = spki_of(c)
            if key in keys_on_path:
                continue
            if not budget.issued_by(cert, c) or not usable_issuer(c, below, anchor=False):
                continue
            self_issued = c.subject == c.issuer
            found = walk(c, [*path, c], keys_on_path | {key}, below + (0 if self_issued else 1))
            if found:
                return found
        return None

    chain = walk(leaf, [leaf], {spki_of(leaf)}, 0)
    if chain is None:
        names = ", ".join(safe(format_dn(a.subject)) for a in anchor_list)
        detail = f" ({'; '.join(dict.fromkeys(refused))})" if refused else ""
        raise NoChainError(
            f"certificate {describe(leaf)} (issuer {safe(format_dn(leaf.issuer))}) "
            f"does not chain to the trust anchor(s) {names}{detail}"
        ).with_hint("check the trust anchors and the CA's certificates", setting="trust")
    return chain
