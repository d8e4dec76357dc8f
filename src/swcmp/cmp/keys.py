"""Key pairs and signature algorithms: generation, signing, verification.

Only RSA (PKCS#1 v1.5 and PSS), ECDSA (P-256, P-384) and Ed25519 are
supported, the set that strongSwan and the CAs swcmp targets have in common.
"""

from __future__ import annotations

import functools
import hashlib
from typing import NamedTuple, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

from swcmp.cmp.choices import KEY_TYPES as KEY_TYPES
from swcmp.cmp.errors import ConfigError, ProtectionError
from swcmp.cmp.messages import AlgorithmId

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class Signer(Protocol):
    """A private key held elsewhere (a PKCS#11 token, a TPM): its public half and a
    signing operation. Wherever swcmp signs (protection, POP) such an object may
    stand in for a private key in memory."""

    def public_key(self) -> PublicKey:
        """The public half."""
        ...

    def sign(self, data: bytes, alg: AlgorithmId) -> bytes:
        """The signature over ``data`` under ``alg`` (DER-encoded for ECDSA)."""
        ...


#: What can sign a request: a key in memory or a :class:`Signer`.
SigningKey = PrivateKey | Signer

DEFAULT_KEY_TYPE = "rsa:3072"

class _Tables(NamedTuple):
    hash_by_oid: dict[str, type[hashes.HashAlgorithm]]
    rsa_pkcs1: dict[str, type[hashes.HashAlgorithm]]
    ecdsa: dict[str, type[hashes.HashAlgorithm]]


@functools.cache
def _tables() -> _Tables:
    # Built on first use: the OIDs come from pyasn1-alt-modules, whose import
    # costs ~0.4 s, and `swcmp status` (which imports this module) signs nothing.
    from swcmp.cmp import oids

    return _Tables(
        hash_by_oid={
            oids.SHA1: hashes.SHA1,
            oids.SHA256: hashes.SHA256,
            oids.SHA384: hashes.SHA384,
            oids.SHA512: hashes.SHA512,
        },
        rsa_pkcs1={
            oids.SHA1_WITH_RSA: hashes.SHA1,
            oids.SHA256_WITH_RSA: hashes.SHA256,
            oids.SHA384_WITH_RSA: hashes.SHA384,
            oids.SHA512_WITH_RSA: hashes.SHA512,
        },
        ecdsa={
            oids.ECDSA_SHA256: hashes.SHA256,
            oids.ECDSA_SHA384: hashes.SHA384,
            oids.ECDSA_SHA512: hashes.SHA512,
        },
    )


def generate_key(key_type: str) -> PrivateKey:
    """Generate a private key of one of :data:`KEY_TYPES`."""
    if key_type.startswith("rsa:"):
        bits = int(key_type[4:])
        if bits not in (2048, 3072, 4096):
            raise ConfigError(f"unsupported RSA size {bits}: use 2048, 3072 or 4096")
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if key_type == "ecdsa:p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ecdsa:p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ConfigError(f"unknown key type {key_type!r}: use one of {', '.join(KEY_TYPES)}")


def key_type_of(key: PrivateKey | PublicKey) -> str:
    """The :data:`KEY_TYPES` name that describes ``key`` (best effort for odd sizes)."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return f"rsa:{key.key_size}"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return {"secp256r1": "ecdsa:p256", "secp384r1": "ecdsa:p384"}.get(
            key.curve.name, f"ecdsa:{key.curve.name}"
        )
    return "ed25519"


def load_private_key(data: bytes) -> PrivateKey:
    """Load an unencrypted PEM or DER private key of a supported type."""
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise ConfigError(
            "cannot read the private key (it must be an unencrypted PEM or DER key)"
        ) from e
    if not isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise ConfigError(f"unsupported private key type {type(key).__name__}")
    return key


def private_key_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM, the form charon's load-key and swanctl's private/ take."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def spki_der(key: SigningKey | PublicKey) -> bytes:
    """The DER SubjectPublicKeyInfo of a key (private keys and signers give their public part)."""
    pub: PublicKey
    if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        pub = key
    else:
        pub = public_key_of(key)
    return pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_of(key: SigningKey) -> PublicKey:
    """The public half of ``key``."""
    pub = key.public_key()
    assert isinstance(pub, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey)
    return pub


def public_key_bits(spki: bytes) -> bytes:
    """The subjectPublicKey BIT STRING contents of a DER SubjectPublicKeyInfo.

    That is what RFC 5280's key identifier and charon's key id hash: the
    PKCS#1 RSAPublicKey, the EC point, or the raw Ed25519 key.

    Raises:
        ProtocolError: ``spki`` is not a SubjectPublicKeyInfo.
    """
    from swcmp.cmp.der import single
    from swcmp.cmp.errors import ProtocolError

    outer = single(spki)
    fields = outer.children() if outer.tag == 0x30 else []
    if len(fields) != 2 or fields[0].tag != 0x30 or fields[1].tag != 0x03:
        raise ProtocolError("not a SubjectPublicKeyInfo")
    bits = fields[1].value
    if not bits or bits[0] != 0:
        raise ProtocolError("subjectPublicKey has unused bits")
    return bits[1:]


def subject_key_id(key: PrivateKey | PublicKey) -> bytes:
    """SHA-1 over the subjectPublicKey bits (RFC 5280 4.2.1.2 method 1)."""
    return hashlib.sha1(public_key_bits(spki_der(key))).digest()


def default_signature_algorithm(key: SigningKey, *, pss: bool = False) -> AlgorithmId:
    """The algorithm swcmp signs with for ``key``: SHA-256 (SHA-384 for P-384)."""
    from swcmp.cmp import codec, oids

    pub = public_key_of(key)
    if isinstance(pub, rsa.RSAPublicKey):
        if pss:
            return AlgorithmId(oids.RSASSA_PSS, codec.encode_pss_params(oids.SHA256, 32))
        return AlgorithmId(oids.SHA256_WITH_RSA, b"\x05\x00")
    if isinstance(pub, ec.EllipticCurvePublicKey):
        if pub.curve.key_size >= 384:
            return AlgorithmId(oids.ECDSA_SHA384)
        return AlgorithmId(oids.ECDSA_SHA256)
    return AlgorithmId(oids.ED25519)


def _pss_from_params(params_der: bytes | None) -> tuple[hashes.HashAlgorithm, int]:
    from swcmp.cmp import codec, oids

    if not params_der:
        raise ProtectionError("RSASSA-PSS without parameters is not accepted")
    hash_oid, mgf_hash, salt_length = codec.decode_pss_params(params_der)
    if hash_oid not in _tables().hash_by_oid or hash_oid == oids.SHA1:
        raise ProtectionError(f"RSASSA-PSS with hash {hash_oid} is not accepted")
    if mgf_hash is not None and mgf_hash != hash_oid:
        raise ProtectionError("RSASSA-PSS with a different MGF1 hash is not accepted")
    return _tables().hash_by_oid[hash_oid](), salt_length


def pss_parameters(params_der: bytes | None) -> tuple[hashes.HashAlgorithm, int]:
    """Hash and salt length of accepted RSASSA-PSS parameters (ProtectionError otherwise)."""
    return _pss_from_params(params_der)


def sign(key: SigningKey, alg: AlgorithmId, data: bytes) -> bytes:
    """Sign ``data`` with ``key`` under ``alg`` (a :class:`Signer` signs it itself)."""
    from swcmp.cmp import oids

    if isinstance(key, rsa.RSAPrivateKey):
        if alg.oid == oids.RSASSA_PSS:
            h, salt = _pss_from_params(alg.params_der)
            return key.sign(data, padding.PSS(padding.MGF1(h), salt), h)
        return key.sign(data, padding.PKCS1v15(), _tables().rsa_pkcs1[alg.oid]())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(_tables().ecdsa[alg.oid]()))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    return key.sign(data, alg)


def verify(pub: object, alg: AlgorithmId, signature: bytes, data: bytes) -> None:
    """Check ``signature`` over ``data``; raise ProtectionError when it is wrong.

    The algorithm must fit the key: an ECDSA OID with an RSA key is refused,
    as is SHA-1 (no CA that swcmp targets needs it for new messages).
    """
    from swcmp.cmp import oids

    try:
        if isinstance(pub, rsa.RSAPublicKey):
            if alg.oid == oids.RSASSA_PSS:
                h, salt = _pss_from_params(alg.params_der)
                pub.verify(signature, data, padding.PSS(padding.MGF1(h), salt), h)
                return
            if alg.oid in _tables().rsa_pkcs1 and alg.oid != oids.SHA1_WITH_RSA:
                pub.verify(signature, data, padding.PKCS1v15(), _tables().rsa_pkcs1[alg.oid]())
                return
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            if alg.oid in _tables().ecdsa:
                pub.verify(signature, data, ec.ECDSA(_tables().ecdsa[alg.oid]()))
                return
        elif (isinstance(pub, ed25519.Ed25519PublicKey) and alg.oid == oids.ED25519) or (
                isinstance(pub, ed448.Ed448PublicKey) and alg.oid == oids.ED448):
            pub.verify(signature, data)
            return
    except InvalidSignature as e:
        raise ProtectionError("signature does not verify") from e
    raise ProtectionError(
        f"signature algorithm {alg.oid} does not fit a {type(pub).__name__} key or is not accepted"
    )


def hash_for_cert_signature(sig_oid: str) -> hashes.HashAlgorithm | None:
    """The hash of a certificate's signature algorithm (for certConf), None for EdDSA."""

    if sig_oid in _tables().rsa_pkcs1:
        return _tables().rsa_pkcs1[sig_oid]()
    if sig_oid in _tables().ecdsa:
        return _tables().ecdsa[sig_oid]()
    return None


def hash_by_oid(oid: str) -> hashes.HashAlgorithm:
    """A hash by its OID; ProtectionError for unknown ones."""
    if oid not in _tables().hash_by_oid:
        raise ProtectionError(f"unsupported hash algorithm {oid}")
    return _tables().hash_by_oid[oid]()


