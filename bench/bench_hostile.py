#!/usr/bin/env python3
"""Worst-case cost of one refused hostile answer (issue 11: goal < 1 s CPU for < 1 MiB).

Each case is one answer, built to be expensive, that swcmp's CMP client receives
(through an in-memory transport, so only swcmp's own work is measured) and must
refuse. Printed per case: the answer's size, the CPU time and wall time from the
answer arriving to the refusal (the worst of ``--rounds`` runs), and what swcmp
said. The last line is the worst CPU time over all cases.

The cases: a man in the middle (no key, no secret) and a malicious CA (it holds
the MAC secret, so its answers pass the protection check and reach the deeper
checks). The chain cases include the one of the issue: extraCerts with 9 CA
certificates that share a name and a key, whose chain search used to try every
order of them.

Run: python3 bench/bench_hostile.py [--rounds N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import SignatureAlgorithmOID
from pyasn1.codec.der import encoder
from pyasn1.type import univ
from pyasn1_alt_modules import rfc8018, rfc9480

import dertree as d
from pki import make_pki, name
from swcmp.cmp import certs, codec, keys, oids
from swcmp.cmp.client import CMPClient
from swcmp.cmp.messages import AlgorithmId, CertResponse, PKIMessageInfo, StatusInfo
from swcmp.cmp.protection import MacProtection, SignatureProtection
from swcmp.errors import SwcmpError

NOW = dt.datetime.now(dt.UTC)
SECRET = b"bench-secret"
MIB = 1024 * 1024


def _ca_cert(subject: str, pub: object, signer: ec.EllipticCurvePrivateKey, issuer: str,
             serial: int, *, ca: bool = True) -> x509.Certificate:
    b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
         .public_key(pub).serial_number(serial)  # type: ignore[arg-type]
         .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False))  # type: ignore[arg-type]
    return b.sign(signer, hashes.SHA256())


class Answers:
    """An in-memory CA: ``make(request) -> answer bytes``; timed from answer to refusal."""

    def __init__(self, make: Callable[[PKIMessageInfo], bytes]) -> None:
        self.make = make
        self.size = 0
        self.handed_at = 0.0
        self.handed_cpu = 0.0
        self.first = True

    def post(self, data: bytes) -> bytes:
        req = codec.decode_message(data)
        if not self.first:  # a certConf rejecting a refused certificate: acknowledge
            return answer(req, codec.pkiconf_body(), mac=True)
        self.first = False
        out = self.make(req)
        self.size = len(out)
        self.handed_at, self.handed_cpu = time.perf_counter(), time.process_time()
        return out

    def end_transaction(self) -> None:
        pass

    def close(self) -> None:
        pass


def answer(req: PKIMessageInfo, body: bytes, *, mac: bool = False,
           signer: tuple[keys.PrivateKey, x509.Certificate] | None = None,
           extra: tuple[bytes, ...] = (), alg: AlgorithmId | None = None,
           sender: x509.Name | None = None, free_text: tuple[str, ...] = (),
           protection_value: bytes | None = None) -> bytes:
    prot = None
    if mac:
        prot = MacProtection(reference=b"ca", secret=SECRET).start()
    elif signer is not None:
        prot = SignatureProtection(key=signer[0], cert=signer[1]).start()
    header = codec.encode_header(codec.HeaderFields(
        sender_der=(sender or (signer[1].subject if signer else name("bench CA"))).public_bytes(),
        recipient_der=req.header.sender_der or codec.NULL_DN_DER,
        transaction_id=req.header.transaction_id or b"", sender_nonce=os.urandom(16),
        recip_nonce=req.header.sender_nonce, message_time=NOW.replace(microsecond=0),
        protection_alg=alg or (prot.alg if prot else None),
        sender_kid=(prot.sender_kid if prot else None), free_text=free_text))
    value = protection_value
    if value is None and prot is not None:
        value = prot.protect(codec.protected_part(header, body))
    return codec.assemble(header, body, value, extra)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run with tiny parameters (CI runs every bench script so)")
    args = ap.parse_args()
    if args.quick:
        args.rounds = 1
    pki = make_pki(Path(tempfile.mkdtemp(prefix="swcmp-bench-")))
    gw_prot = SignatureProtection(key=pki.gw_key, cert=pki.gw)

    # --- the issue's case: 9 CA certificates, one name, one key, all issuing each other
    evil_key = ec.generate_private_key(ec.SECP256R1())
    same = [certs.der_of(_ca_cert("Evil CA", evil_key.public_key(), evil_key, "Evil CA", 100 + i))
            for i in range(9)]
    signer_key = ec.generate_private_key(ec.SECP256R1())
    signer = _ca_cert("Evil Signer", signer_key.public_key(), evil_key, "Evil CA", 7, ca=False)

    # --- 8 keys under one name, each certified by 4 of the others: a dense graph of paths
    ring = [ec.generate_private_key(ec.SECP256R1()) for _ in range(8)]
    dense = [certs.der_of(_ca_cert("Evil CA", ring[i].public_key(), ring[(i + j) % 8],
                                   "Evil CA", 1000 + 10 * i + j))
             for i in range(8) for j in range(1, 5)][:31]
    dense_signer = _ca_cert("Evil Signer", signer_key.public_key(), ring[0], "Evil CA", 8,
                            ca=False)

    # --- RSA public keys that are costly to use: a 16384-bit modulus, a 3072-bit exponent
    def rsa_pub(bits: int, e: int) -> rsa.RSAPublicKey:
        n = int.from_bytes(os.urandom(bits // 8), "big") | (1 << (bits - 1)) | 1
        return rsa.RSAPublicNumbers(e, n).public_key()

    big_rsa = [certs.der_of(_ca_cert("Evil Signer", rsa_pub(16384, 65537), evil_key, "Evil CA",
                                     20 + i, ca=False)) for i in range(2)]
    try:
        fat_e = [certs.der_of(_ca_cert("Evil Signer", rsa_pub(3072, (1 << 3071) | 1), evil_key,
                                       "Evil CA", 30 + i, ca=False)) for i in range(2)]
    except ValueError:
        fat_e = []

    # --- PBM/PBMAC1 parameters at their accepted maximum (the MAC is wrong)
    def pbm_alg(iterations: int) -> AlgorithmId:
        p = rfc9480.PBMParameter()
        p["salt"] = os.urandom(16)
        p["owf"]["algorithm"] = univ.ObjectIdentifier(oids.SHA256)
        p["iterationCount"] = iterations
        p["mac"]["algorithm"] = univ.ObjectIdentifier(oids.HMAC_WITH_SHA256)
        return AlgorithmId(oids.PASSWORD_BASED_MAC, bytes(encoder.encode(p)))

    def pbmac1_alg(iterations: int) -> AlgorithmId:
        kdf = rfc8018.PBKDF2_params()
        kdf["salt"]["specified"] = os.urandom(16)
        kdf["iterationCount"] = iterations
        kdf["keyLength"] = 64
        kdf["prf"]["algorithm"] = univ.ObjectIdentifier(oids.HMAC_WITH_SHA512)
        p = rfc8018.PBMAC1_params()
        p["keyDerivationFunc"]["algorithm"] = univ.ObjectIdentifier(oids.PBKDF2)
        p["keyDerivationFunc"]["parameters"] = univ.Any(bytes(encoder.encode(kdf)))
        p["messageAuthScheme"]["algorithm"] = univ.ObjectIdentifier(oids.HMAC_WITH_SHA512)
        return AlgorithmId(oids.PBMAC1, bytes(encoder.encode(p)))

    # --- big and deep answers
    def texts_of(n: int) -> tuple[str, ...]:
        return tuple("x" for _ in range(n))

    # --quick: answers only as big as it takes to cross the same limit (the same refusal),
    # since building the 1 MiB ones is most of a run's time (the attacker's side)
    free_texts = codec.MAX_ELEMENTS + 1_000 if args.quick else 300_000
    nest_levels = 4 * codec.MAX_DEPTH if args.quick else 200_000

    def deep(req: PKIMessageInfo) -> bytes:
        # as many SEQUENCEs inside each other as fit under 1 MiB (--quick: a few limits' worth)
        levels = nest_levels
        while True:
            body = d.nested(d.Node(b"\x05", b""), levels).encode()
            if len(body) < MIB - 4096:
                return answer(req, b"\xa8" + d.encode_length(len(body)) + body, mac=True)
            levels = levels * 9 // 10

    root_der = certs.der_of(pki.root)
    ca_pubs_many = [root_der] * 300
    wrong_key_cert = pki.issue(keys.generate_key("ecdsa:p256"), serial=pki.gw.serial_number)
    # every answer that gets past its protection still carries a certificate to refuse
    ip_ok = codec.cert_rep_body("kup", [CertResponse(0, StatusInfo(0),
                                                     certs.der_of(wrong_key_cert))])
    rsa_sha256 = AlgorithmId(SignatureAlgorithmOID.RSA_WITH_SHA256.dotted_string, b"\x05\x00")

    cases: list[tuple[str, str, Callable[[PKIMessageInfo], bytes]]] = [
        ("MITM", "extraCerts: 9 CA certificates, same name and key (the issue's case)",
         lambda r: answer(r, ip_ok, signer=(signer_key, signer),
                          extra=(certs.der_of(signer), *same))),
        ("MITM", "extraCerts: 31 CA certificates, one name, 8 keys certifying each other",
         lambda r: answer(r, ip_ok, signer=(signer_key, dense_signer),
                          extra=(certs.der_of(dense_signer), *dense))),
        ("MITM", "extraCerts: 256 certificates, senderKID names none of them",
         lambda r: answer(r, ip_ok, signer=(signer_key, signer),
                          extra=(*(same[i % 9] for i in range(255)), root_der),
                          sender=name("nobody"))),
        ("MITM", "signers with RSA-16384 keys (and a bad signature)",
         lambda r: answer(r, ip_ok, extra=tuple(big_rsa), sender=name("Evil Signer"),
                          alg=rsa_sha256,
                          protection_value=os.urandom(2048))),
        ("MITM", "signers with RSA-3072 keys with a 3072-bit exponent",
         lambda r: answer(r, ip_ok, extra=tuple(fat_e) or tuple(big_rsa),
                          sender=name("Evil Signer"),
                          alg=rsa_sha256,
                          protection_value=os.urandom(384))),
        ("MITM", f"PasswordBasedMac with {100_000} iterations (wrong MAC)",
         lambda r: answer(r, ip_ok, alg=pbm_alg(100_000), protection_value=os.urandom(32))),
        ("MITM", f"PBMAC1 with {1_000_000} PBKDF2-SHA512 iterations (wrong MAC)",
         lambda r: answer(r, ip_ok, alg=pbmac1_alg(1_000_000), protection_value=os.urandom(64))),
        ("malicious CA", f"freeText of {free_texts:_} elements".replace("_", " "),
         lambda r: answer(r, ip_ok, mac=True, free_text=texts_of(free_texts))),
        ("malicious CA", "freeText just under the element limit (49 600 elements)",
         lambda r: answer(r, ip_ok, mac=True, free_text=texts_of(codec.MAX_ELEMENTS - 400))),
        ("malicious CA", f"nesting up to {nest_levels:_} levels".replace("_", " "),
         deep),
        ("MITM", "messageTime 99991231235959-1200 (overflows in UTC)",
         lambda r: __import__("hostile_proxy").with_message_time(
             answer(r, ip_ok, mac=True), b"99991231235959-1200")),
        ("malicious CA", "MAC-valid kup with 300 caPubs and a certificate for another key",
         lambda r: answer(r, codec.cert_rep_body(
             "kup", [CertResponse(0, StatusInfo(0), certs.der_of(wrong_key_cert))],
             ca_pubs_many), mac=True)),
        ("malicious CA", "MAC-valid rejection whose statusString is 900 000 ESC characters",
         lambda r: answer(r, codec.cert_rep_body(
             "kup", [CertResponse(0, StatusInfo(2, frozenset({25}), ("\x1b" * 900_000,)),
                                  None)]), mac=True)),
    ]

    print(f"{'attacker':<13} {'answer':>9} {'CPU ms':>8} {'wall ms':>8}  case -> refusal")
    worst = 0.0
    for who, label, make in cases:
        cpu_max = wall_max = 0.0
        size = 0
        said = ""
        for _ in range(args.rounds):
            ca = Answers(make)
            mac = who == "malicious CA" or "messageTime" in label or "Mac" in label \
                or "PBMAC1" in label
            client = CMPClient(ca, recipient=pki.root.subject, trust=[pki.root],
                               sleep=lambda s: None)
            try:
                if mac:
                    client.key_update(key=pki.gw_key, old_cert=pki.gw,
                                      protection=MacProtection(reference=b"ca", secret=SECRET))
                else:
                    client.key_update(key=pki.gw_key, old_cert=pki.gw, protection=gw_prot)
                said = "ACCEPTED (!)"
            except SwcmpError as e:
                said = f"{type(e).__name__}: {str(e)[:90]}"
            cpu = time.process_time() - ca.handed_cpu
            wall = time.perf_counter() - ca.handed_at
            cpu_max, wall_max, size = max(cpu_max, cpu), max(wall_max, wall), ca.size
        worst = max(worst, cpu_max)
        print(f"{who:<13} {size:>9} {cpu_max * 1000:>8.1f} {wall_max * 1000:>8.1f}  "
              f"{label} -> {said}")
    print(f"worst CPU time for one refused answer: {worst * 1000:.0f} ms "
          f"(goal: under 1000 ms for any answer under 1 MiB: {'met' if worst < 1 else 'MISSED'})")


if __name__ == "__main__":
    main()
