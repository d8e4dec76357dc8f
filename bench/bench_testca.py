#!/usr/bin/env python3
"""Benchmark: certificates per second the test CA issues for a burst of concurrent KURs.

Each of N threads owns a swcmp CMPClient (implicit confirmation off, so every
KUR is a kur/kup plus certConf/pkiConf exchange: two state writes at the CA)
and updates its own certificate. All threads start together on a barrier; the
figure is successful KURs divided by the wall time from the start to the last
answer. Setup (one IR per client, MAC-protected) is not timed.

Memory is the peak resident set size from ``resource.getrusage``. By default
the CA runs in this process, as asked for an in-process CA, so the peak
includes the client threads; the baseline before the CA starts is printed too.
``--subprocess`` runs ``python -m swcmp.testca serve`` as a child instead and
reports that child's own peak (RUSAGE_CHILDREN after it exits).

Usage::

    python bench/bench_testca.py            # 50 concurrent KURs, in-process CA
    python bench/bench_testca.py -n 200 --new-key --subprocess
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from swcmp.cmp import certs, keys
from swcmp.cmp.client import CMPClient, Enrollment
from swcmp.cmp.protection import MacProtection, SignatureProtection
from swcmp.cmp.transport import HttpTransport
from swcmp.testca import CAConfig, TestCA

REF, SECRET = b"bench", b"bench-secret"


@dataclass
class Endpoint:
    url: str
    ca_cert: x509.Certificate
    #: CPU seconds the CA has used so far (what it measures is said in the output).
    cpu_seconds: Callable[[], float]


def _rss_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


@contextmanager
def in_process_ca(directory: Path) -> Iterator[Endpoint]:
    config = CAConfig(mac_ref=REF, mac_secret=SECRET)
    with TestCA(directory, config=config) as ca:
        # Per-thread CPU time inside the CMP engine: the clients share this process, so
        # process CPU time would count them too. HTTP parsing is not included.
        used = [0.0]
        lock = threading.Lock()
        handle = ca.engine.handle

        def timed(data: bytes) -> bytes:
            start = time.thread_time()
            try:
                return handle(data)
            finally:
                with lock:
                    used[0] += time.thread_time() - start

        setattr(ca.engine, "handle", timed)  # noqa: B010 (instance attribute shadows method)
        yield Endpoint(ca.url, ca.ca_cert, lambda: used[0])


@contextmanager
def child_ca(directory: Path) -> Iterator[Endpoint]:
    secret = directory.parent / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    log = (directory.parent / "ca.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "swcmp.testca", "serve", "--dir", str(directory), "--port", "0",
         "--mac-ref", REF.decode(), "--mac-secret-file", str(secret)],
        stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert proc.stdout is not None
        url = None
        for line in proc.stdout:
            if line.startswith("listening on "):
                url = line.split()[-1]
                break
        if url is None:
            raise SystemExit(f"the CA did not start; see {log.name}")
        yield Endpoint(url, certs.load_certificate((directory / "ca.crt").read_bytes()),
                       lambda: _proc_cpu(proc.pid))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _client(ep: Endpoint, *, implicit: bool) -> CMPClient:
    return CMPClient(HttpTransport(ep.url, total_timeout=120), recipient=ep.ca_cert.subject,
                     trust=[ep.ca_cert], implicit_confirm=implicit)


def _setup(ep: Endpoint, i: int, key_type: str) -> tuple[keys.PrivateKey, Enrollment]:
    key = keys.generate_key(key_type)
    cn = f"gw{i}.bench.example"
    e = _client(ep, implicit=True).initial(
        key=key, subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]),
        sans=[x509.DNSName(cn)],
        protection=MacProtection(reference=REF, secret=SECRET, iterations=1000))
    return key, e


def run(n: int, key_type: str, new_key: bool, child: bool) -> None:
    baseline = _rss_mib(resource.RUSAGE_SELF)
    with tempfile.TemporaryDirectory(prefix="bench-testca-") as tmp:
        directory = Path(tmp) / "ca"
        start_ca = child_ca if child else in_process_ca
        with start_ca(directory) as ep:
            t0 = time.monotonic()
            with ThreadPoolExecutor(max_workers=16) as pool:
                holders = list(pool.map(lambda i: _setup(ep, i, key_type), range(n)))
            setup_s = time.monotonic() - t0
            new_keys = [keys.generate_key(key_type) if new_key else k for k, _ in holders]
            clients = [_client(ep, implicit=False) for _ in range(n)]

            barrier = threading.Barrier(n + 1)
            latencies: list[float] = []
            errors: list[str] = []
            lock = threading.Lock()

            def kur(i: int) -> None:
                key, e = holders[i]
                protection = SignatureProtection(key=key, cert=e.certificate)
                barrier.wait()
                started = time.monotonic()
                try:
                    got = clients[i].key_update(key=new_keys[i], old_cert=e.certificate,
                                                protection=protection)
                    assert certs.spki_of(got.certificate) == keys.spki_der(new_keys[i])
                except Exception as exc:  # report every failure, keep measuring the rest
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    return
                with lock:
                    latencies.append(time.monotonic() - started)

            threads = [threading.Thread(target=kur, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            cpu_before = ep.cpu_seconds()
            barrier.wait()
            burst_start = time.monotonic()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - burst_start
            ca_cpu = ep.cpu_seconds() - cpu_before
            during = _rss_mib(resource.RUSAGE_SELF)
        ca_peak = _rss_mib(resource.RUSAGE_CHILDREN) if child else during

    ok = len(latencies)
    print(f"test CA benchmark: {n} concurrent KURs ({key_type}, "
          f"{'new' if new_key else 'same'} key, implicit confirm off), "
          f"CA {'in a child process' if child else 'in-process'}")
    print(f"  setup: {n} IRs in {setup_s:.2f} s")
    print(f"  burst: {ok}/{n} issued in {elapsed:.2f} s -> {ok / elapsed:.1f} certificates/s")
    if latencies:
        q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
        print(f"  KUR latency: median {statistics.median(latencies) * 1000:.0f} ms, "
              f"p95 {q[18] * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")
    if ok:
        where = "whole CA process" if child else "CMP engine threads, without HTTP parsing"
        per_cert = ca_cpu / ok * 1000
        print(f"  CA CPU per issued certificate (kur + certConf): {per_cert:.1f} ms ({where}) "
              f"-> one core could issue about {1000 / per_cert:.0f}/s")
    if child:
        print(f"  CA process peak RSS: {ca_peak:.1f} MiB")
    else:
        print(f"  peak RSS (CA + {n} client threads, one process): {ca_peak:.1f} MiB "
              f"(before the CA started: {baseline:.1f} MiB)")
    for err in errors[:5]:
        print(f"  error: {err}")
    if errors:
        raise SystemExit(f"{len(errors)} KUR(s) failed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=50, help="concurrent KURs (default 50)")
    ap.add_argument("--key-type", default="ecdsa:p256", choices=keys.KEY_TYPES,
                    help="client key type (default ecdsa:p256)")
    ap.add_argument("--new-key", action="store_true", help="each KUR certifies a fresh key")
    ap.add_argument("--subprocess", action="store_true",
                    help="run the CA as a child process and report its own peak RSS")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run with tiny parameters (CI runs every bench script so)")
    args = ap.parse_args()
    if args.quick:
        args.n = 2
    if args.n < 1:
        ap.error("-n must be at least 1")
    run(args.n, args.key_type, args.new_key, args.subprocess)


if __name__ == "__main__":
    main()
