#!/usr/bin/env python3
"""Time one KUR transaction end to end: swcmp (warm, in-process; cold, a new
Python process) beside `openssl cmp -cmd kur`, all against the same
`openssl cmp -port` mock server on loopback.

Run: python3 bench/bench_kur.py [--rounds N] [--quick]
Prints the median and p90 per transaction and the ratio to OpenSSL, by wall time and
by CPU time (openssl's and the cold process's own, from os.wait4; the warm client's
from time.process_time; the mock server's CPU is in none of them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from openssl_mock import OPENSSL, mock_server
from pki import make_pki, pem_cert
from swcmp.cmp.client import CMPClient
from swcmp.cmp.protection import SignatureProtection
from swcmp.cmp.transport import HttpTransport

COLD = """
import sys
from pathlib import Path
from swcmp.cmp import certs, keys
from swcmp.cmp.client import CMPClient
from swcmp.cmp.protection import SignatureProtection
from swcmp.cmp.transport import HttpTransport
d = Path(sys.argv[2])
key = keys.load_private_key((d / "gw.key").read_bytes())
cert = certs.load_certificate((d / "gw.crt").read_bytes())
root = certs.load_certificate((d / "root.crt").read_bytes())
with HttpTransport(sys.argv[1]) as t:
    CMPClient(t, recipient=root.subject, trust=[root]).key_update(
        key=key, old_cert=cert, protection=SignatureProtection(key=key, cert=cert))
"""


def stats(name: str, samples: list[float], base: float | None, cpu: list[float],
          cpu_base: float | None) -> tuple[float, float]:
    med = statistics.median(samples)
    p90 = sorted(samples)[max(int(len(samples) * 0.9) - 1, 0)]
    cmed = statistics.median(cpu)
    ratio = f"  {med / base:5.2f}x openssl" if base else ""
    cratio = f"  {cmed / max(cpu_base, 1e-4):5.2f}x openssl" if cpu_base else ""
    print(f"{name:<34} median {med * 1000:7.1f} ms   p90 {p90 * 1000:7.1f} ms{ratio}   "
          f"CPU {cmed * 1000:6.1f} ms{cratio}")
    return med, cmed


def run_timed(cmd: list[str], cwd: Path | None = None) -> tuple[float, float]:
    """Wall and own CPU (user + system) of one child process run to its end."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[:3]} failed")
    return time.perf_counter() - t0, usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--key-type", default="ecdsa:p256")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 rounds")
    args = ap.parse_args()
    if args.quick:
        args.rounds = 3
    d = Path(tempfile.mkdtemp(prefix="swcmp-bench-"))
    pki = make_pki(d, key_type=args.key_type)
    # The 3.0 mock answers KUR only with the old certificate's issuer and serial.
    pki.write("rsp.crt", pem_cert(pki.issue(pki.gw_key, serial=pki.gw.serial_number)))
    srv = ["-srv_cert", "srv.crt", "-srv_key", "srv.key", "-srv_trusted", "root.crt",
           "-rsp_cert", "rsp.crt"]
    with mock_server(srv, cwd=d) as url:
        ossl: list[float] = []
        ossl_cpu: list[float] = []
        cmd = [str(OPENSSL), "cmp", "-cmd", "kur", "-server", url.split("//")[1].split("/")[0],
               "-path", "pkix/", "-cert", "gw.crt", "-key", "gw.key", "-trusted", "root.crt",
               "-certout", "out.crt", "-recipient", "/CN=swcmp Test Root CA"]
        for _ in range(args.rounds):
            wall, cpu = run_timed(cmd, cwd=d)
            ossl.append(wall)
            ossl_cpu.append(cpu)

        warm: list[float] = []
        warm_cpu: list[float] = []
        prot = SignatureProtection(key=pki.gw_key, cert=pki.gw)
        with HttpTransport(url) as tr:
            c = CMPClient(tr, recipient=pki.root.subject, trust=[pki.root])
            c.key_update(key=pki.gw_key, old_cert=pki.gw, protection=prot)  # warm-up
            for _ in range(args.rounds):
                t0, c0 = time.perf_counter(), time.process_time()
                c.key_update(key=pki.gw_key, old_cert=pki.gw, protection=prot)
                warm.append(time.perf_counter() - t0)
                warm_cpu.append(time.process_time() - c0)

        cold: list[float] = []
        cold_cpu: list[float] = []
        for _ in range(max(3 if args.quick else 5, args.rounds // 3)):
            wall, cpu = run_timed([sys.executable, "-c", COLD, url, str(d)])
            cold.append(wall)
            cold_cpu.append(cpu)

    print(f"KUR transaction (kur, kup, certConf, pkiConf), {args.key_type}, "
          f"{args.rounds} rounds, openssl cmp -port on loopback")
    base, cpu_base = stats("openssl cmp -cmd kur (process)", ossl, None, ossl_cpu, None)
    stats("swcmp in-process (warm)", warm, base, warm_cpu, cpu_base)
    stats("swcmp new Python process (cold)", cold, base, cold_cpu, cpu_base)


if __name__ == "__main__":
    main()
