#!/usr/bin/env python3
"""The cost of a KUR signed in a PKCS#11 token beside one signed with a key file.

One KUR transaction (kur, kup, certConf, pkiConf) against `openssl cmp -port` on
loopback, signed (protection of kur and certConf, and the POP) by:

* a key in memory (what a PEM file under private/ gives);
* the same kind of key made in a SoftHSM2 token (each signature opens a token
  session and logs in, as swcmp does);
* with ``--tpm``, a key in a software TPM 2.0 (swtpm + tpm2-abrmd + tpm2-pkcs11).

Also: the time to make a key pair in the token, and one signature alone.

Run (as root, with softhsm2 installed): python3 bench/bench_token.py [--rounds N]
    [--key-type ecdsa:p256|rsa:2048|...] [--tpm]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import softhsm
import tpm
from openssl_mock import mock_server
from pki import make_pki, pem_cert
from swcmp.cmp import keys
from swcmp.cmp.client import CMPClient
from swcmp.cmp.protection import SignatureProtection
from swcmp.cmp.transport import HttpTransport
from swcmp.keystore.pkcs11 import TokenConfig, TokenStore, TokenUri, new_key_id


def timed(rounds: int, f: Callable[[], object]) -> list[float]:
    f()  # warm-up
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        f()
        out.append(time.perf_counter() - t0)
    return out


def line(name: str, samples: list[float], base: float | None = None) -> float:
    med = statistics.median(samples)
    p90 = sorted(samples)[max(int(len(samples) * 0.9) - 1, 0)]
    ratio = f"  {med / base:5.2f}x file key" if base else ""
    print(f"{name:<52} median {med * 1000:8.2f} ms   p90 {p90 * 1000:8.2f} ms{ratio}")
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--key-type", default="ecdsa:p256")
    ap.add_argument("--tpm", action="store_true", help="also a software TPM 2.0")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run with tiny parameters (CI runs every bench script so)")
    args = ap.parse_args()
    if args.quick:
        args.rounds = 2
    d = Path(tempfile.mkdtemp(prefix="swcmp-bench-token-"))
    pki = make_pki(d, key_type=args.key_type)
    file_key = pki.gw_key
    kinds: list[tuple[str, softhsm.Token]] = [("SoftHSM2", softhsm.new_token(d))]
    if args.tpm:
        kinds.append(("TPM 2.0 (swtpm, tpm2-pkcs11)", tpm.new_token(d)))
    print(f"key type {args.key_type}, {args.rounds} rounds, openssl cmp mock on loopback")
    stores = []
    for name, token in kinds:
        store = TokenStore(TokenConfig("bench", TokenUri.parse(token.uri()), token.module,
                                       token.pin_file))
        line(f"make (and destroy) a key pair in {name}",
             timed(max(args.rounds // 5, 3),
                   lambda s=store: s.destroy(s.generate(args.key_type, new_key_id()).key_id)))
        stores.append((name, store, store.generate(args.key_type, new_key_id())))

    alg = keys.default_signature_algorithm(file_key)
    base = line("one signature, key in memory", timed(args.rounds,
                                                     lambda: keys.sign(file_key, alg, b"x")))
    for name, _, tk in stores:
        line(f"one signature in {name}", timed(args.rounds, lambda k=tk: keys.sign(k, alg, b"x")),
             base)

    # The 3.0 mock answers a KUR only with the old certificate's issuer and serial, and
    # returns one fixed certificate: one per key, served by one mock each.
    def kur_samples(key: keys.SigningKey) -> list[float]:
        cert = pki.issue(key.public_key(), serial=0x4242)
        pki.write("rsp.crt", pem_cert(pki.issue(key.public_key(), serial=0x4242, days=400)))
        srv = ["-srv_cert", "srv.crt", "-srv_key", "srv.key", "-srv_trusted", "root.crt",
               "-rsp_cert", "rsp.crt"]
        with mock_server(srv, cwd=d) as url, HttpTransport(url) as tr:
            client = CMPClient(tr, recipient=pki.root.subject, trust=[pki.root])
            prot = SignatureProtection(key=key, cert=cert)
            return timed(args.rounds, lambda: client.key_update(key=key, old_cert=cert,
                                                                protection=prot))

    base = line("KUR transaction, key in memory (file)", kur_samples(file_key))
    for name, _, tk in stores:
        line(f"KUR transaction, key in {name}", kur_samples(tk), base)


if __name__ == "__main__":
    main()
