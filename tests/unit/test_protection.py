"""PasswordBasedMac, PBMAC1 and signature protection, end to end through the codec."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
from pathlib import Path

import pytest
from pyasn1.codec.der import encoder
from pyasn1.type import univ
from pyasn1_alt_modules import rfc8018, rfc9480

from pki import CMC_RA, TestPKI, make_pki
from swcmp.cmp import codec, keys, oids
from swcmp.cmp.messages import AlgorithmId
from swcmp.cmp.protection import (
    MacProtection,
    Protection,
    SignatureProtection,
    verify_mac,
    verify_response,
)
from swcmp.errors import ConfigError, ProtectionError

NOW = dt.datetime.now(dt.UTC)


def message(p: Protection, sender: bytes = codec.NULL_DN_DER) -> bytes:
    prot = p.start()
    h = codec.encode_header(codec.HeaderFields(
        sender_der=sender, recipient_der=codec.NULL_DN_DER, transaction_id=os.urandom(16),
        sender_nonce=os.urandom(16), protection_alg=prot.alg, sender_kid=prot.sender_kid))
    b = codec.pkiconf_body()
    return codec.assemble(h, b, prot.protect(codec.protected_part(h, b)), prot.extra_certs)


@pytest.mark.parametrize("alg", ["hmac-sha256", "hmac-sha1"])
def test_pbm_roundtrip(alg: str) -> None:
    p = MacProtection(reference=b"ref", secret=b"pw", mac_alg=alg, iterations=500)
    m = codec.decode_message(message(p))
    assert m.header.sender_kid == b"ref"
    assert verify_response(m, mac=p, trust=[], now=NOW).kind == "mac"
    with pytest.raises(ProtectionError):
        verify_response(m, mac=MacProtection(reference=b"ref", secret=b"pW"), trust=[], now=NOW)


def _pbm_params(iterations: int, salt: bytes = b"s" * 16) -> AlgorithmId:
    params = rfc9480.PBMParameter()
    params["salt"] = salt
    params["owf"]["algorithm"] = univ.ObjectIdentifier(oids.SHA256)
    params["iterationCount"] = iterations
    params["mac"]["algorithm"] = univ.ObjectIdentifier(oids.HMAC_WITH_SHA256)
    return AlgorithmId(oids.PASSWORD_BASED_MAC, encoder.encode(params))


@pytest.mark.parametrize(("iterations", "salt"), [(10**9, b"s" * 16), (1, b"s" * 16),
                                                  (500, b"")])
def test_absurd_pbm_parameters_refused(iterations: int, salt: bytes) -> None:
    with pytest.raises(ProtectionError, match="refused"):
        verify_mac(b"pw", _pbm_params(iterations, salt), b"data", b"x" * 32)


def test_pbm_matches_rfc_4210_construction() -> None:
    # key = OWF^iterations(secret || salt); MAC = HMAC(key, data)
    alg = _pbm_params(100)
    k = hashlib.sha256(b"pw" + b"s" * 16).digest()
    for _ in range(99):
        k = hashlib.sha256(k).digest()
    verify_mac(b"pw", alg, b"data", hmac.new(k, b"data", "sha256").digest())


def test_pbmac1_verifies() -> None:
    kdf = rfc8018.PBKDF2_params()
    kdf["salt"]["specified"] = b"salt" * 4
    kdf["iterationCount"] = 1000
    kdf["keyLength"] = 32
    kdf["prf"]["algorithm"] = univ.ObjectIdentifier(oids.HMAC_WITH_SHA256)
    params = rfc8018.PBMAC1_params()
    params["keyDerivationFunc"]["algorithm"] = univ.ObjectIdentifier(oids.PBKDF2)
    params["keyDerivationFunc"]["parameters"] = encoder.encode(kdf)
    params["messageAuthScheme"]["algorithm"] = univ.ObjectIdentifier(oids.HMAC_WITH_SHA256)
    alg = AlgorithmId(oids.PBMAC1, encoder.encode(params))
    key = hashlib.pbkdf2_hmac("sha256", b"pw", b"salt" * 4, 1000, 32)
    verify_mac(b"pw", alg, b"data", hmac.new(key, b"data", "sha256").digest())
    with pytest.raises(ProtectionError):
        verify_mac(b"other", alg, b"data", hmac.new(key, b"data", "sha256").digest())


def test_empty_secret_and_unknown_alg_refused() -> None:
    with pytest.raises(ConfigError):
        MacProtection(reference=b"r", secret=b"")
    with pytest.raises(ConfigError):
        MacProtection(reference=b"r", secret=b"x", mac_alg="md5")


@pytest.mark.parametrize(("key_type", "pss"), [("rsa:2048", False), ("rsa:2048", True),
                                               ("ecdsa:p256", False), ("ecdsa:p384", False),
                                               ("ed25519", False)])
def test_signature_roundtrip(pki: TestPKI, key_type: str, pss: bool) -> None:
    key = keys.generate_key(key_type)
    cert = pki.issue(key, "srv2.example.net", eku=[CMC_RA])
    p = SignatureProtection(key=key, cert=cert, pss=pss)
    m = codec.decode_message(message(p, sender=cert.subject.public_bytes()))
    assert m.header.sender_kid is not None  # SKI of the cert
    v = verify_response(m, mac=None, trust=[pki.root], now=NOW)
    assert v.kind == "signature" and v.signer == cert
    # the same message is refused under another trust anchor
    other = make_pki(Path(pki.dir) / "other")
    with pytest.raises(ProtectionError, match="not trusted"):
        verify_response(m, mac=None, trust=[other.root], now=NOW)


def test_sender_must_match_signer(pki: TestPKI) -> None:
    p = SignatureProtection(key=pki.gw_key, cert=pki.gw)
    m = codec.decode_message(message(p, sender=pki.root.subject.public_bytes()))
    with pytest.raises(ProtectionError, match="sender"):
        verify_response(m, mac=None, trust=[pki.root], now=NOW)


def test_key_must_match_cert(pki: TestPKI) -> None:
    with pytest.raises(ConfigError, match="does not belong"):
        SignatureProtection(key=keys.generate_key("ecdsa:p256"), cert=pki.gw)


def test_signature_algorithm_must_fit_key(pki: TestPKI) -> None:
    sig = keys.sign(pki.gw_key, keys.default_signature_algorithm(pki.gw_key), b"x")
    with pytest.raises(ProtectionError):
        keys.verify(pki.gw.public_key(), AlgorithmId(oids.SHA256_WITH_RSA), sig, b"x")
