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
from pyasn1.codec.der import decoder, encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import univ
from pyasn1_alt_modules import rfc8018, rfc9480

from swcmp import certs, keys
from swcmp.cmp import oids
from swcmp.errors import CertificateError, ConfigError, ProtectionError
from swcmp.models import AlgorithmId, PKIMessageInfo

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
MAC_ALGS = {"hmac-sha256": (oids.SHA256, oids.HMAC_WITH_SHA256),
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
        if mac_alg not in MAC_ALGS:
            raise ConfigError(f"unknown MAC algorithm {mac_alg!r}: use hmac-sha256 or hmac-sha1")
        if not secret:
            raise ConfigError("the MAC secret is empty: put the CA's shared secret in the file")
        self.reference = reference
        self._secret = secret
        self.mac_alg = mac_alg
        self.iterations = iterations

    def __repr__(self) -> str:
        return f"MacProtection(reference={self.reference!r}, mac_alg={self.mac_alg!r})"

    def start(self) -> Protected:
        owf, mac = MAC_ALGS[self.mac_alg]
        salt = os.urandom(16)
        params = rfc9480.PBMParameter()
        params["salt"] = salt
        params["owf"]["algorithm"] = univ.ObjectIdentifier(owf)
        params["iterationCount"] = self.iterations
        params["mac"]["algorithm"] = univ.ObjectIdentifier(mac)
        alg = AlgorithmId(oids.PASSWORD_BASED_MAC, bytes(encoder.encode(params)))
        key = _pbm_key(self._secret, salt, _OWF_BY_OID[owf], self.iterations)
        hname = _HMAC_BY_OID[mac]
        return Protected(alg, self.reference, (),
                         lambda data: hmac.new(key, data, hname).digest())

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
        ).with_hint("the CA used another shared secret: check the session's MAC secret file "
                    "and reference")


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
    try:
        params, rest = decoder.decode(params_der, asn1Spec=rfc9480.PBMParameter())
    except PyAsn1Error as e:
        raise ProtectionError("malformed PasswordBasedMac parameters") from e
    if rest:
        raise ProtectionError("PasswordBasedMac parameters have trailing bytes")
    salt = bytes(params["salt"])
    iterations = int(params["iterationCount"])
    owf_oid = str(params["owf"]["algorithm"])
    mac_oid = str(params["mac"]["algorithm"])
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
    try:
        params, rest = decoder.decode(params_der, asn1Spec=rfc8018.PBMAC1_params())
        if rest:
            raise ProtectionError("PBMAC1 parameters have trailing bytes")
        kdf = params["keyDerivationFunc"]
        if str(kdf["algorithm"]) != oids.PBKDF2:
            raise ProtectionError("PBMAC1 with a KDF other than PBKDF2 is not supported")
        kparams, _ = decoder.decode(bytes(kdf["parameters"]), asn1Spec=rfc8018.PBKDF2_params())
        salt = bytes(kparams["salt"]["specified"])
        iterations = int(kparams["iterationCount"])
        prf = str(kparams["prf"]["algorithm"]) if kparams["prf"].isValue else oids.HMAC_WITH_SHA1
        mac_oid = str(params["messageAuthScheme"]["algorithm"])
        key_len = int(kparams["keyLength"]) if kparams["keyLength"].isValue else None
    except PyAsn1Error as e:
        raise ProtectionError("malformed PBMAC1 parameters") from e
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS * 10:
        raise ProtectionError(f"PBMAC1 iteration count {iterations} refused")
    if prf not in _HMAC_BY_OID or mac_oid not in _HMAC_BY_OID:
        raise ProtectionError("PBMAC1 with an unsupported PRF or MAC")
    if key_len is not None and not 1 <= key_len <= 64:
        # the MAC key of an HMAC needs no more than a block; a hostile answer must not
        # make us derive gigabytes (or overflow) before its MAC is even compared
        raise ProtectionError(f"PBMAC1 key length {key_len} refused (accepted: 1..64)")
    hname = _HMAC_BY_OID[mac_oid]
    length = key_len or hashlib.new(hname).digest_size
    key = hashlib.pbkdf2_hmac(_HMAC_BY_OID[prf], secret, salt, iterations, length)
    return hmac.new(key, data, hname).digest()


class SignatureProtection(Protection):
    """Signature with a certificate's key; extraCerts begin with that certificate."""

    kind = "signature"

    def __init__(self, *, key: keys.PrivateKey, cert: x509.Certificate,
                 chain: Sequence[x509.Certificate] = (), pss: bool = False) -> None:
        if certs.spki_of(cert) != keys.spki_der(key):
            raise ConfigError(
                f"the signing key does not belong to certificate {certs.describe(cert)}"
            )
        self.key = key
        self.cert = cert
        self.chain = tuple(chain)
        self.alg = keys.default_signature_algorithm(key, pss=pss)

    def __repr__(self) -> str:
        return f"SignatureProtection(cert={certs.describe(self.cert)})"

    def start(self) -> Protected:
        kid = certs.subject_key_id(self.cert)
        extra = (certs.der_of(self.cert), *(certs.der_of(c) for c in self.chain))
        alg = AlgorithmId(self.alg.oid, self.alg.params_der)
        return Protected(alg, kid, extra, lambda data: keys.sign(self.key, self.alg, data))


# --------------------------------------------------------------------------- responses


@dataclass(frozen=True)
class Verified:
    """How a response was authenticated."""

    kind: str  # "mac" or "signature"
    signer: x509.Certificate | None = None


def verify_response(
    msg: PKIMessageInfo,
    *,
    mac: MacProtection | None,
    trust: Sequence[x509.Certificate],
    now: datetime,
) -> Verified:
    """Check the protection of a response from the CA.

    Under MAC protection the shared secret authenticates the CA. Otherwise the
    signer is taken from extraCerts (by senderKID, else the first), must sign
    the ProtectedPart and chain to ``trust`` with the other extraCerts as
    untrusted intermediates.
    """
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
    signer = find_signer(msg)
    keys.verify(certs.public_key_of(signer), keys.SignatureAlgorithm(alg.oid, alg.params_der),
                msg.protection, msg.protected_part)
    sender = msg.header.sender_der
    if sender not in (None, b"\x30\x00") and signer.subject.public_bytes() != sender:
        raise ProtectionError(
            "the response's sender does not match the subject of its signing certificate"
        )
    others = [certs.load_certificate(c) for c in msg.extra_certs]
    try:
        certs.build_chain(signer, anchors=trust, untrusted=others, now=now)
    except CertificateError as e:
        raise ProtectionError(f"the CA's signing certificate is not trusted: {e}") from e
    return Verified("signature", signer)


def find_signer(msg: PKIMessageInfo) -> x509.Certificate:
    """The certificate that protects ``msg``: the extraCert matching senderKID, else the first."""
    if not msg.extra_certs:
        raise ProtectionError("signature-protected response without extraCerts")
    loaded = [certs.load_certificate(c) for c in msg.extra_certs]
    kid = msg.header.sender_kid
    if kid is not None:
        for c in loaded:
            if certs.subject_key_id(c) == kid:
                return c
    return loaded[0]
