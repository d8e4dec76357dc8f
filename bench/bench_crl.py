#!/usr/bin/env python3
"""Cost of accepting a CA's large CRL: genm currentCRL answered with a CRL of N entries.

A legitimate CRL is bounded by its size (1 MiB, about 20,000 entries with a reason
code each) and by the CPU it costs, not by its number of DER elements. Printed per
size: the CRL's bytes, the answer's bytes, and the CPU and wall time (the worst of
``--rounds`` runs) from the answer arriving to the CRL checked and in hand (MAC and
signature verified), then to a serial looked up in it.

Run: python3 bench/bench_crl.py [--rounds N] [--entries N ...] [--quick]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_hostile import SECRET, Answers, answer
from cryptography.hazmat.primitives import serialization

from pki import big_crl, make_pki
from swcmp.cmp import codec, oids
from swcmp.cmp.client import CMPClient
from swcmp.cmp.messages import InfoValue
from swcmp.cmp.protection import MacProtection


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--entries", type=int, nargs="*", default=[1_000, 8_000, 20_000])
    ap.add_argument("--quick", action="store_true", help="a smoke run: one round, 2 000 entries")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.entries = 1, [2_000]
    pki = make_pki(Path(tempfile.mkdtemp(prefix="swcmp-bench-")))
    print(f"{'entries':>8} {'CRL bytes':>10} {'answer':>10} {'CPU ms':>8} {'wall ms':>8} "
          f"{'lookup ms':>9}")
    worst = 0.0
    for n in args.entries:
        crl_der = big_crl(pki.root.subject, pki.root_key, n).public_bytes(
            serialization.Encoding.DER)
        body = codec.genm_body([InfoValue(oids.IT_CURRENT_CRL, crl_der)], kind="genp")
        cpu_max = wall_max = look_max = 0.0
        size = 0
        for _ in range(args.rounds):
            ca = Answers(lambda req, body=body: answer(req, body, mac=True))
            client = CMPClient(ca, recipient=pki.root.subject, trust=[pki.root],
                               sleep=lambda s: None)
            crl = client.current_crl(protection=MacProtection(reference=b"ca", secret=SECRET))
            assert crl is not None and len(crl) == n
            assert crl.is_signature_valid(pki.root.public_key())  # type: ignore[arg-type]
            cpu = time.process_time() - ca.handed_cpu
            wall = time.perf_counter() - ca.handed_at
            t = time.perf_counter()
            assert crl.get_revoked_certificate_by_serial_number(1) is None
            look = time.perf_counter() - t
            cpu_max, wall_max, look_max = max(cpu_max, cpu), max(wall_max, wall), \
                max(look_max, look)
            size = ca.size
        worst = max(worst, cpu_max)
        print(f"{n:>8} {len(crl_der):>10} {size:>10} {cpu_max * 1000:>8.1f} "
              f"{wall_max * 1000:>8.1f} {look_max * 1000:>9.2f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"worst CPU time to accept one CRL: {worst * 1000:.0f} ms; peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
