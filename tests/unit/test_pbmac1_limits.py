"""Audit: a response's PBMAC1 parameters are checked before any work is done.

The PBKDF2 keyLength of a PBMAC1-protected answer was used as given: an
absurd one (2**70) came out as an OverflowError traceback instead of a
ProtectionError, and a large one (tens of millions of bytes) made the client
grind PBKDF2 for hours before the MAC was even compared. Anyone on the path
of an http:// CMP URL can send such an answer without knowing the secret.
"""

from __future__ import annotations

import time

import pytest
from pyasn1.codec.der import encoder
from pyasn1.type import univ
from pyasn1_alt_modules import rfc8018

from pki import TestPKI, name
from scripted_ca import SECRET, ScriptedCA
from swcmp.cmp import oids
from swcmp.cmp.client import CMPClient
from swcmp.cmp.messages import AlgorithmId
from swcmp.cmp.protection import MacProtection, Protected
from swcmp.errors import ProtectionError


def pbmac1(key_length: int, *, salt: bytes = b"salt" * 4) -> AlgorithmId:
    kdf = rfc8018.PBKDF2_params()
    kdf["salt"]["specified"] = salt
    kdf["iterationCount"] = 1000
    der = encoder.encode(kdf)  # prf left at its default (hmacWithSHA1)
    # keyLength is then the last field: append it by hand (pyasn1 would refuse
    # absurd values, a hostile CA does not care).
    body = der[2:] if der[1] < 0x80 else der[3:]
    n = key_length.to_bytes((key_length.bit_length() + 8) // 8, "big")
    body += b"\x02" + bytes([len(n)]) + n
    kdf_der = b"\x30" + bytes([len(body)]) + body
    params = rfc8018.PBMAC1_params()
    params["keyDerivationFunc"]["algorithm"] = univ.ObjectIdentifier(oids.PBKDF2)
    params["keyDerivationFunc"]["parameters"] = kdf_der
    params["messageAuthScheme"]["algorithm"] = univ.ObjectIdentifier(oids.HMAC_WITH_SHA256)
    return AlgorithmId(oids.PBMAC1, encoder.encode(params))


class HostilePBMAC1(MacProtection):
    def __init__(self, alg: AlgorithmId) -> None:
        super().__init__(reference=b"ca", secret=SECRET)
        self.alg = alg

    def start(self) -> Protected:
        return Protected(self.alg, b"ca", (), lambda data: b"\0" * 32)


@pytest.mark.parametrize("key_length", [2**70, 10**9, 0x7FFFFFFF], ids=["2e70", "1e9", "2e31"])
def test_hostile_pbmac1_key_length_is_refused_fast(pki: TestPKI, key_length: int) -> None:
    ca = ScriptedCA(pki, pki.gw)
    ca.mac = HostilePBMAC1(pbmac1(key_length))
    client = CMPClient(ca, recipient=pki.root.subject, sleep=lambda s: None)
    started = time.monotonic()
    with pytest.raises(ProtectionError):
        client.initial(key=pki.gw_key, subject=name("gw1.example.net"),
                       protection=MacProtection(reference=b"ca", secret=SECRET))
    assert time.monotonic() - started < 5



def test_pbmac1_requests_verify_and_iterations_are_bounded() -> None:
    from swcmp.cmp import codec as cmp_codec
    from swcmp.cmp import oids as cmp_oids
    from swcmp.cmp.protection import MacProtection, verify_mac
    from swcmp.errors import ConfigError, ProtectionError

    prot = MacProtection(reference=b"ref", secret=b"s3cret", mac_alg="pbmac1", iterations=1234)
    started = prot.start()
    assert started.alg.oid == cmp_oids.PBMAC1
    assert started.alg.params_der is not None
    f = cmp_codec.decode_pbmac1_params(started.alg.params_der)
    assert (f.kdf_oid, f.iterations, f.prf_oid, f.key_length, f.mac_oid) == (
        cmp_oids.PBKDF2, 1234, cmp_oids.HMAC_WITH_SHA256, 32, cmp_oids.HMAC_WITH_SHA256)
    assert len(f.salt) == 16
    mac = started.protect(b"protected part")
    verify_mac(b"s3cret", started.alg, b"protected part", mac)  # our own verifier agrees
    with pytest.raises(ProtectionError):
        verify_mac(b"other", started.alg, b"protected part", mac)
    for bad in (99, 100_001):
        with pytest.raises(ConfigError, match="out of bounds"):
            MacProtection(reference=b"ref", secret=b"s", mac_alg="pbmac1", iterations=bad)


def test_pbmac1_short_key_length_in_an_answer_is_refused() -> None:
    """A PBMAC1 keyLength of one byte leaves 256 possible HMAC keys: anyone on the
    path forges a MAC-protected answer without the secret by trying them all. The
    answer's keyLength must give a key of at least 128 bits."""
    import hmac

    from swcmp.cmp.protection import verify_mac

    data = b"a forged answer's protected part"
    forged = 0
    for guess in range(256):
        mac = hmac.new(bytes([guess]), data, "sha256").digest()
        try:
            verify_mac(SECRET, pbmac1(1), data, mac)
        except ProtectionError:
            continue
        forged += 1
    assert forged == 0
    with pytest.raises(ProtectionError, match="key length 15 refused"):
        verify_mac(SECRET, pbmac1(15), data, b"x" * 32)


def _pbmac1_sha1_prf(iterations: int, key_length: int) -> AlgorithmId:
    kdf = rfc8018.PBKDF2_params()
    kdf["salt"]["specified"] = b"salt" * 4
    kdf["iterationCount"] = iterations
    kdf["keyLength"] = key_length  # prf left at its default, hmacWithSHA1 (20 bytes)
    params = rfc8018.PBMAC1_params()
    params["keyDerivationFunc"]["algorithm"] = univ.ObjectIdentifier(oids.PBKDF2)
    params["keyDerivationFunc"]["parameters"] = encoder.encode(kdf)
    params["messageAuthScheme"]["algorithm"] = univ.ObjectIdentifier(oids.HMAC_WITH_SHA256)
    return AlgorithmId(oids.PBMAC1, encoder.encode(params))


def test_pbmac1_work_counts_every_pbkdf2_block() -> None:
    """PBKDF2 runs its iterations once per block of the PRF's output: 1 000 000
    iterations of hmacWithSHA1 for a 64-byte key are 4 000 000, four times the worst
    case bench_hostile measures. Such an answer (anyone on an http:// path can send it)
    is refused before any derivation; the bound is on iterations times blocks."""
    import hashlib
    import hmac

    from swcmp.cmp.protection import verify_mac

    with pytest.raises(ProtectionError, match="refused"):
        verify_mac(SECRET, _pbmac1_sha1_prf(1_000_000, 64), b"data", b"x" * 32)
    # an ordinary one (two blocks of SHA-1 for a 32-byte key) still verifies
    alg = _pbmac1_sha1_prf(10_000, 32)
    key = hashlib.pbkdf2_hmac("sha1", SECRET, b"salt" * 4, 10_000, 32)
    verify_mac(SECRET, alg, b"data", hmac.new(key, b"data", "sha256").digest())
