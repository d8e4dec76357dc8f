#!/usr/bin/env python3
"""What reading a certificate request template costs (genm certReqTemplate, RFC 9483 4.3.3).

A template comes from the network before every IR and every key update with a new key.
This measures swcmp.cmp.template.parse on an ordinary template, on the largest ones it
accepts (a subject of 64 attributes, 32 keySpec entries; elements just under the bound)
and on the ones it refuses (too many elements, too large): CPU per read, best of N.

    python3 bench/bench_template.py [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from cryptography import x509
from cryptography.x509.oid import NameOID

from swcmp.cmp import codec, der, oids, template
from swcmp.cmp.errors import ProtocolError
from swcmp.cmp.messages import AlgorithmId


def _value(attributes: int, controls: int, width: int = 8) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME,
                                            f"unit {i}".ljust(width, "x"))
                         for i in range(attributes - 1)]
                        + [x509.NameAttribute(NameOID.COMMON_NAME, "gw1.example.net")])
    spec = [(oids.REG_CTRL_ALG_ID, codec.algorithm_der(AlgorithmId(oids.EC_PUBLIC_KEY)))
            if i % 2 else (oids.REG_CTRL_RSA_KEY_LEN, codec.rsa_key_len_der(2048 + i))
            for i in range(controls)]
    return codec.cert_req_template_value(subject.public_bytes(), spec)


def _many_elements(count: int) -> bytes:
    body = b"\x05\x00" * count
    return b"\x30" + der.encode_length(len(body)) + body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="a smoke run (CI runs every bench so)")
    args = ap.parse_args()
    rounds = 3 if args.quick else args.rounds
    cases: list[tuple[str, Callable[[], bytes]]] = [
        ("ordinary: subject of 2 attributes, 2 key types", lambda: _value(2, 2)),
        ("largest accepted: 64 attributes, 32 key types", lambda: _value(64, 32)),
        ("largest accepted: the same with 60 KiB of subject text",
         lambda: _value(64, 32, width=950)),
        ("refused: 2 001 elements", lambda: _many_elements(template.MAX_TEMPLATE_ELEMENTS + 1)),
        ("refused: 64 KiB + 1 byte", lambda: b"\x04\x83\x01\x00\x00" + b"\x00" * 0x10000),
    ]
    print(f"{'bytes':>7} {'CPU ms':>8}  template -> result")
    for label, make in cases:
        value = make()
        best = float("inf")
        said = ""
        for _ in range(rounds):
            start = time.process_time()
            try:
                t = template.parse(value)
                said = f"read: {len(t.key_spec)} key types, " \
                       f"{len(t.subject or ())} subject attributes"
            except ProtocolError as e:
                said = f"refused: {str(e)[:70]}"
            best = min(best, time.process_time() - start)
        print(f"{len(value):>7} {best * 1000:>7.2f} ms  {label} -> {said}")


if __name__ == "__main__":
    main()
