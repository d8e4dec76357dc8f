"""Message protection: PasswordBasedMac, PBMAC1 and signatures; response verification.

A :class:`Protection` produces, per message, the protectionAlg, senderKID,
extraCerts and a function that protects the ProtectedPart bytes. Verification
works on the exact ProtectedPart bytes received (see :mod:`swcmp.cmp.der`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509

from swcmp.cmp import certs, codec, keys, oids, text
from swcmp.cmp.dn import format_dn
from swcmp.cmp.errors import CertificateError, ConfigError, ProtectionError, ProtocolError
from swcmp.cmp.messages import AlgorithmId, PKIMessageInfo

log = logging.getLogger(__name__)

#: Iteration counts accepted from a peer. OpenSSL uses 500; more than this
#: bound would let a hostile server make us burn CPU for every message.
MIN_ITERATIONS = 100
MAX_ITERATIONS = 100_000
DEFAULT_ITERATIONS = 10_000
MIN_SALT = 8
MAX_SALT = 1024

_HMAC_BY_OID = {
    oids.HMAC_SHA1: "sha1",
    oids.HMAC_WITH_SHA1: "sha1",
    oids.HMAC_WITH_SHA256: "sha256",
    oids.HMAC_WITH_SHA384: "sha384",
    oids.HMAC_WITH_SHA512: "sha512",
}
_OWF_BY_OID = {oids.SHA1: "sha1", oids.SHA256: "sha256", oids.SHA384: "sha384",
               oids.SHA512: "sha512"}
#: The ``mac_alg`` of PBMAC1 (RFC 9481 6.1.2) and its key length (HMAC-SHA256's output).
PBMAC1 = "pbmac1"
PBMAC1_KEY_LENGTH = 32
#: The shortest PBKDF2 keyLength accepted in an answer's PBMAC1 (128 bits): with a
#: shorter key anyone could forge the MAC by trying every key, without the secret.
MIN_PBMAC1_KEY_LENGTH = 16
#: The most PBKDF2 work an answer's PBMAC1 may ask: iterations times blocks of the
#: PRF's output (one block of HMAC-SHA512 at 1 000 000 iterations: bench_hostile's
#: worst case).
MAX_PBMAC1_WORK = 1_000_000
#: One-way function and HMAC OIDs of each PasswordBasedMac of swcmp.cmp.MAC_ALGS.
MAC_ALGS: dict[str, tuple[str, str]] = {"hmac-sha256": (oids.SHA256, oids.HMAC_WITH_SHA256),
                                        "hmac-sha1": (oids.SHA1, oids.HMAC_SHA1)}


@dataclass(frozen=True)
class Protected:
    """What one message's protection contributes."""

    alg: AlgorithmId
    sender_kid: bytes | None
    extra_certs: tuple[bytes, ...]
    protect: Callable[[bytes], bytes] = field(repr=False)


class Protection:
    """Base class: how swcmp protects the messages of a transaction."""

    kind = "none"

    def start(self) -> Protected:
        raise NotImplementedError


class MacProtection(Protection):
    """PasswordBasedMac with a shared secret and reference value (RFC 4210 5.1.3.1)."""

    kind = "mac"

    def __init__(self, *, reference: bytes, secret: bytes, mac_alg: str = "hmac-sha256",
                 iterations: int = DEFAULT_ITERATIONS) -> None:
        if mac_alg not in (*MAC_ALGS, PBMAC1):
            raise ConfigError(f"unknown MAC algorithm {mac_alg!r}: use hmac-sha256, "
                              "hmac-sha1 or pbmac1")
        if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
            raise ConfigError(f"MAC iteration count {iterations} is out of bounds: use "
                              f"{MIN_ITERATIONS} to {MAX_ITERATIONS}")
        if not secret:
            raise ConfigError("the MAC secret is empty: put the CA's shared secret in the file")
        self.reference = reference
        self._secret = secret
        self.mac_alg = mac_alg
        self.iterations = iterations

    def __repr__(self) -> str:
        return f"MacProtection(reference={self.reference!r}, mac_alg={self.mac_alg!r})"

    def start(self) -> Protected:
        salt = os.urandom(16)
        if self.mac_alg == PBMAC1:
            return self._start_pbmac1(salt)
        owf, mac = MAC_ALGS[self.mac_alg]
        alg = AlgorithmId(oids.PASSWORD_BASED_MAC, codec.encode_pbm_params(
            codec.PbmFields(salt, owf, self.iterations, mac)))
        key = _pbm_key(self._secret, salt, _OWF_BY_OID[owf], self.iterations)
        hname = _HMAC_BY_OID[mac]
        return Protected(alg, self.reference, (),
                         lambda data: hmac.new(key, data, hname).digest())

    def _start_pbmac1(self, salt: bytes) -> Protected:
        """PBMAC1 (RFC 9481 6.1.2): PBKDF2 with HMAC-SHA256 makes a 32-byte key for
        HMAC-SHA256; keyLength is stated."""
        alg = AlgorithmId(oids.PBMAC1, codec.encode_pbmac1_params(codec.Pbmac1Fields(
            oids.PBKDF2, salt, self.iterations, oids.HMAC_WITH_SHA256, PBMAC1_KEY_LENGTH,
            oids.HMAC_WITH_SHA256)))
        key = hashlib.pbkdf2_hmac("sha256", self._secret, salt, self.iterations,
                                  PBMAC1_KEY_LENGTH)
        return Protected(alg, self.reference, (),
                         lambda data: hmac.new(key, data, "sha256").digest())

    def verify(self, alg: AlgorithmId, data: bytes, mac_value: bytes) -> None:
        """Check a received MAC; ProtectionError when wrong or its parameters are absurd."""
        verify_mac(self._secret, alg, data, mac_value)


def _pbm_key(secret: bytes, salt: bytes, owf: str, iterations: int) -> bytes:
    key = hashlib.new(owf, secret + salt).digest()
    for _ in range(iterations - 1):
        key = hashlib.new(owf, key).digest()
    return key


def verify_mac(secret: bytes, alg: AlgorithmId, data: bytes, mac_value: bytes) -> None:
    """Verify PasswordBasedMac or PBMAC1 protection over ``data``."""
    if alg.oid == oids.PASSWORD_BASED_MAC:
        expected = _pbm_compute(secret, alg.params_der, data)
    elif alg.oid == oids.PBMAC1:
        expected = _pbmac1_compute(secret, alg.params_der, data)
    else:
        raise ProtectionError(f"expected MAC protection, got algorithm {alg.oid}")
    if not hmac.compare_digest(expected, mac_value):
        raise ProtectionError(
            "the response's MAC does not verify",
        ).with_hint("the CA used another shared secret: check the MAC secret and reference",
                    setting="mac_secret")


@dataclass(frozen=True)
class PbmParams:
    """PasswordBasedMac parameters, checked; ``owf`` and ``mac`` are hashlib names."""

    salt: bytes = field(repr=False)
    owf_oid: str
    iterations: int
    mac_oid: str

    @property
    def owf(self) -> str:
        return _OWF_BY_OID[self.owf_oid]

    @property
    def mac(self) -> str:
        return _HMAC_BY_OID[self.mac_oid]


def pbm_params(params_der: bytes | None) -> PbmParams:
    """Decode and bound-check PBMParameter; ProtectionError for anything not accepted."""
    if not params_der:
        raise ProtectionError("PasswordBasedMac without parameters")
    f = codec.decode_pbm_params(params_der)
    salt, iterations, owf_oid, mac_oid = f.salt, f.iterations, f.owf_oid, f.mac_oid
    if not MIN_SALT <= len(salt) <= MAX_SALT:
        raise ProtectionError(f"PasswordBasedMac salt of {len(salt)} bytes refused")
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ProtectionError(
            f"PasswordBasedMac iteration count {iterations} refused "
            f"(accepted: {MIN_ITERATIONS}..{MAX_ITERATIONS})"
        )
    if owf_oid not in _OWF_BY_OID:
        raise ProtectionError(f"PasswordBasedMac one-way function {owf_oid} not supported")
    if mac_oid not in _HMAC_BY_OID:
        raise ProtectionError(f"PasswordBasedMac MAC algorithm {mac_oid} not supported")
    return PbmParams(salt, owf_oid, iterations, mac_oid)


def _pbm_compute(secret: bytes, params_der: bytes | None, data: bytes) -> bytes:
    p = pbm_params(params_der)
    key = _pbm_key(secret, p.salt, p.owf, p.iterations)
    return hmac.new(key, data, p.mac).digest()


def _pbmac1_compute(secret: bytes, params_der: bytes | None, data: bytes) -> bytes:
    if not params_der:
        raise ProtectionError("PBMAC1 without parameters")
    f = codec.decode_pbmac1_params(params_der)
    if f.kdf_oid != oids.PBKDF2:
        raise ProtectionError("PBMAC1 with a KDF other than PBKDF2 is not supported")
    salt, iterations, mac_oid, key_len = f.salt, f.iterations, f.mac_oid, f.key_length
    prf = f.prf_oid or oids.HMAC_WITH_SHA1
    if not MIN_ITERATIONS <= iterations <= MAX_PBMAC1_WORK:
        raise ProtectionError(f"PBMAC1 iteration count {iterations} refused")
    if prf not in _HMAC_BY_OID or mac_oid not in _HMAC_BY_OID:
        raise ProtectionError("PBMAC1 with an unsupported PRF or MAC")
    if key_len is not None and not MIN_PBMAC1_KEY_LENGTH <= key_len <= 64:
        # the MAC key of an HMAC needs no more than a block; a hostile answer must not
        # make us derive gigabytes (or overflow) before its MAC is even compared, nor
        # name a key so short that the MAC can be forged by trying every key
        raise ProtectionError(f"PBMAC1 key length {key_len} refused "
                              f"(accepted: {MIN_PBMAC1_KEY_LENGTH}..64)")
    hname = _HMAC_BY_OID[mac_oid]
    length = key_len or hashlib.new(hname).digest_size
    # PBKDF2 runs all its iterations once per block of the PRF's output: a short PRF
    # and a long key multiply the work the iteration bound alone allows
    blocks = -(-length // hashlib.new(_HMAC_BY_OID[prf]).digest_size)
    if iterations * blocks > MAX_PBMAC1_WORK:
        raise ProtectionError(
            f"PBMAC1 iteration count {iterations} for a {length}-byte key ({blocks} PBKDF2 "
            f"blocks) refused (accepted: iterations times blocks up to {MAX_PBMAC1_WORK})")
    key = hashlib.pbkdf2_hmac(_HMAC_BY_OID[prf], secret, salt, iterations, length)
    return hmac.new(key, data, hname).digest()


class SignatureProtection(Protection):
    """Signature with a certificate's key; extraCerts begin with that certificate.

    ``send_cert=False`` leaves the certificate itself out (the chain is still sent):
    what CAs do when they sign with a self-signed root the client already trusts.
    """

    kind = "signature"

    def __init__(self, *, key: keys.SigningKey, cert: x509.Certificate,
                 chain: Sequence[x509.Certificate] = (), pss: bool = False,
                 send_cert: bool = True) -> None:
        if certs.spki_of(cert) != keys.spki_der(key):
            raise ConfigError(
                f"the signing key does not belong to certificate {certs.describe(cert)}"
            )
        self.key = key
        self.cert = cert
        self.chain = tuple(chain)
        self.send_cert = send_cert
        self.alg = keys.default_signature_algorithm(key, pss=pss)

    def __repr__(self) -> str:
        return f"SignatureProtection(cert={certs.describe(self.cert)})"

    def start(self) -> Protected:
        kid = certs.subject_key_id(self.cert)
        first = (certs.der_of(self.cert),) if self.send_cert else ()
        extra = (*first, *(certs.der_of(c) for c in self.chain))
        alg = AlgorithmId(self.alg.oid, self.alg.params_der)
        return Protected(alg, kid, extra, lambda data: keys.sign(self.key, self.alg, data))


# --------------------------------------------------------------------------- responses


@dataclass(frozen=True)
class Verified:
    """How a response was authenticated."""

    kind: str  # "mac" or "signature"
    signer: x509.Certificate | None = None


#: Candidates for the signer of one answer whose signature is tried (each costs a
#: verification; a hostile answer must not make us try dozens).
MAX_SIGNER_CANDIDATES = 4
#: extraCerts of one answer that swcmp looks at (RFC 9483 answers carry a chain of a
#: few certificates plus caPubs-like extras; more is only cost).
MAX_EXTRA_CERTS = 32


@dataclass(frozen=True)
class ResponseTrust:
    """Whom swcmp believes about a signed answer (RFC 9483 3.5, RFC 6402 2.10).

    Attributes:
        anchors: the trust anchors; the signer must chain to them.
        ca_name: the CA the session talks to; a signer with this subject is the CA.
        pinned: server certificates the operator pinned (``--server-cert``): trusted
            as signers directly, like ``openssl cmp -srvcert``.
        untrusted: further certificates (the session's CA certificates) that may
            complete the signer's chain.
        ignore_keyusage: accept a signer whose keyUsage lacks digitalSignature.
    """

    anchors: tuple[x509.Certificate, ...] = ()
    ca_name: x509.Name | None = None
    pinned: tuple[x509.Certificate, ...] = ()
    untrusted: tuple[x509.Certificate, ...] = ()
    ignore_keyusage: bool = False


def verify_response(
    msg: PKIMessageInfo,
    *,
    mac: MacProtection | None,
    trust: Sequence[x509.Certificate] | ResponseTrust,
    now: datetime,
    known_signer: x509.Certificate | None = None,
) -> Verified:
    """Check the protection of a response from the CA.

    Under MAC protection the shared secret authenticates the CA. A signature is
    accepted only from a certificate found as :func:`signer_candidates` describes
    whose signature over the ProtectedPart verifies, that is named by the header's
    sender, and that is authorised by :func:`authorise_signer`. ``known_signer`` is
    the signer already validated on an earlier answer of the same transaction.
    """
    policy = trust if isinstance(trust, ResponseTrust) else ResponseTrust(tuple(trust))
    alg = msg.header.protection_alg
    if msg.protection is None or alg is None:
        raise ProtectionError("the response is not protected").with_hint(
            "swcmp never acts on unprotected responses; ask the CA operator to enable protection"
        )
    if alg.oid in (oids.PASSWORD_BASED_MAC, oids.PBMAC1):
        if mac is None:
            raise ProtectionError(
                "the response is MAC-protected but this request was signed"
            ).with_hint("the CA must answer a signed request with a signature")
        mac.verify(alg, msg.protected_part, msg.protection)
        return Verified("mac")
    extra = _extra_certs(msg)
    sig_alg = alg
    signer = None
    for cand in signer_candidates(msg, extra, policy, known_signer):
        try:
            keys.verify(certs.public_key_of(cand), sig_alg, msg.protection, msg.protected_part)
        except (ProtectionError, CertificateError):
            continue
        signer = cand
        break
    if signer is None:
        raise ProtectionError(
            "the response's signature does not verify with the certificate it names"
        ).with_hint("the answer was altered on the way, or the CA signs with a key swcmp "
                    "was not given: pin the CA's signing certificate", setting="server_cert")
    _check_sender(msg, signer)
    if signer == known_signer:
        return Verified("signature", signer)
    if any(signer == p for p in policy.pinned):
        certs.check_validity(signer, now)
        return Verified("signature", signer)
    try:
        certs.build_chain(signer, anchors=policy.anchors,
                          untrusted=[*extra, *policy.untrusted], now=now)
    except CertificateError as e:
        raise ProtectionError(f"the CA's signing certificate is not trusted: {e}").with_hint(
            e.hint or "check the trust anchors", setting="trust") from e
    authorise_signer(signer, policy)
    return Verified("signature", signer)


def _extra_certs(msg: PKIMessageInfo) -> list[x509.Certificate]:
    out = []
    for der in msg.extra_certs[:MAX_EXTRA_CERTS]:
        try:
            out.append(certs.load_certificate(der))
        except CertificateError as e:
            raise ProtectionError(f"the response's extraCerts hold a malformed certificate: "
                                  f"{e}") from e
    return out


def _sender_name(msg: PKIMessageInfo) -> bytes | None:
    der = msg.header.sender_der
    if der in (None, codec.NULL_DN_DER):
        return None
    return der


def _same_name(name: x509.Name, other_der: bytes) -> str | None:
    try:
        return codec.compare_names(name.public_bytes(), other_der)
    except ProtocolError:
        return None


def signer_candidates(msg: PKIMessageInfo, extra: Sequence[x509.Certificate],
                      policy: ResponseTrust,
                      known_signer: x509.Certificate | None) -> list[x509.Certificate]:
    """The certificates that may have signed ``msg``, most likely first.

    With a senderKID: the extraCerts whose subjectKeyIdentifier it is, then the
    transaction's known signer, the pinned server certificates and the trust
    anchors with that identifier; a senderKID that matches none of them is an
    error. Without one: the same lists by the header's sender name; a NULL sender
    names the first extraCert (or the known signer).
    """
    kid = msg.header.sender_kid
    known = (known_signer,) if known_signer is not None else ()
    pools = (extra, known, policy.pinned, policy.anchors)
    out: list[x509.Certificate] = []

    def add(c: x509.Certificate) -> None:
        if c not in out:
            out.append(c)

    if kid is not None:
        for pool in pools:
            for c in pool:
                if certs.subject_key_id(c) == kid:
                    add(c)
        if not out:
            raise ProtectionError(
                f"the response's senderKID {kid.hex()} names no certificate swcmp knows "
                "(extraCerts, pinned server certificates, trust anchors)"
            ).with_hint("pin the CA's signing certificate, or ask the CA to send it in "
                        "extraCerts", setting="server_cert")
    else:
        sender = _sender_name(msg)
        for pool in pools:
            for c in pool:
                if sender is not None and _same_name(c.subject, sender) is not None:
                    add(c)
        if sender is None and not out:
            out.extend([*extra[:1], *known])
        if not out:
            raise ProtectionError(
                "signature-protected response whose signer swcmp cannot find: no senderKID, "
                "no extraCerts and no known certificate for its sender"
            ).with_hint("pin the CA's signing certificate", setting="server_cert")
    return out[:MAX_SIGNER_CANDIDATES]


def _check_sender(msg: PKIMessageInfo, signer: x509.Certificate) -> None:
    sender = _sender_name(msg)
    if sender is None:
        return
    match = _same_name(signer.subject, sender)
    if match is None:
        raise ProtectionError(
            "the response's sender does not match the subject of its signing certificate")
    if match == "reversed":
        log.warning("the CA's sender name lists the RDNs of its certificate's subject %s in "
                    "reverse order; accepted", text.safe(format_dn(signer.subject)))


def authorise_signer(signer: x509.Certificate, policy: ResponseTrust) -> None:
    """Refuse a signer that chains to the anchors but is not entitled to answer.

    Entitled: a trust anchor itself, the CA (subject = the session's CA name), a
    pinned server certificate, or a certificate with extendedKeyUsage id-kp-cmcCA or
    id-kp-cmcRA (RFC 6402 2.10). Another end entity of the same CA (a gateway!) is
    not. A keyUsage extension must include digitalSignature unless ignore_keyusage.
    """
    entitled = (signer in policy.anchors or signer in policy.pinned
                or (policy.ca_name is not None
                    and _same_name(signer.subject, policy.ca_name.public_bytes()) is not None))
    if not entitled:
        try:
            eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            usages = {u.dotted_string for u in eku}
        except x509.ExtensionNotFound:
            usages = set()
        entitled = bool(usages & {oids.KP_CMC_CA, oids.KP_CMC_RA})
    if not entitled:
        raise ProtectionError(
            f"the response is signed by {certs.describe(signer)}, which chains to the trust "
            "anchor but may not sign CMP answers: it is neither the CA, a pinned server "
            "certificate nor an RA or CA certificate (extendedKeyUsage cmcRA/cmcCA)"
        ).with_hint("if this certificate is really the CA's CMP signer, pin it",
                    setting="server_cert")
    if policy.ignore_keyusage:
        return
    try:
        ku = signer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not ku.digital_signature:
        raise ProtectionError(
            f"the response is signed by {certs.describe(signer)}, whose keyUsage does not "
            "include digitalSignature"
        ).with_hint("some CAs sign with a keyCertSign-only certificate; that can be "
                    "accepted", setting="ignore_keyusage")
