#!/usr/bin/env python3
"""What one renewal costs as a whole process, beside `openssl cmp`, and what `swcmp serve`
holds in memory while idle.

1. Key update, whole processes: `swcmp request keyupdate NAME --no-deploy` and
   `openssl cmp -cmd kur`, each against the same `swcmp testca serve` child on
   loopback, each with its own session (ECDSA P-256 by default, the current key
   certified again). Per run the wall time and the client's own CPU time (user +
   system, from os.wait4 on that one child) are taken; medians and the ratio
   swcmp / openssl are printed.
2. `swcmp serve` (`--vici none`) with N sessions (default 100 and 1000; REAL of them
   enrolled for real, IR with MAC, the others copies under their own names) against
   the same CA, none due for renewal: its RSS once the first pass is over (VmRSS and
   the peak VmHWM from /proc/PID/status; serve runs each pass in a process of its
   own, whose peak RSS serve logs at debug level from os.wait4), started twice: first
   when the CA's weekly questions are due for every session (the pass talks to the
   CA), then again when nothing at all is due. The CPU of one pass over the N not-due
   sessions is the CPU of `swcmp renew --due` over them minus that of `swcmp renew
   --due` over none (the interpreter and imports), medians of --pass-rounds each.

The swcmp package is byte-compiled first (as pip does on installation), so that no
child process spends its time compiling swcmp's sources.

Run: python3 bench/bench_renewal.py [--rounds 20] [--sessions 100,1000]
     python3 bench/bench_renewal.py --quick     (a smoke run: 2 rounds, 3 sessions)
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cryptography import x509

from testca_site import MAC_REF, MAC_SECRET, Site, add_session, make_site

OPENSSL = shutil.which("openssl") or "openssl"


@dataclass
class Run:
    wall: float
    cpu: float


def run_child(cmd: list[str], *, cwd: Path | None = None,
              env: dict[str, str] | None = None) -> Run:
    """Run ``cmd`` to its end; its wall time and its own CPU time (os.wait4)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                         f"{out.decode(errors='replace')[-3000:]}")
    return Run(wall, usage.ru_utime + usage.ru_stime)


class CAProcess:
    """`swcmp testca serve` as a child process on a free loopback port."""

    def __init__(self, directory: Path) -> None:
        secret = directory.parent / "ca-mac.secret"
        secret.write_text(MAC_SECRET + "\n")
        secret.chmod(0o600)
        self.log = directory.parent / "ca.log"
        self._log = self.log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "swcmp", "testca", "serve", "--dir", str(directory),
             "--port", "0", "--mac-ref", MAC_REF, "--mac-secret-file", str(secret),
             "--validity", "1d"], stdout=subprocess.PIPE, stderr=self._log, text=True)
        assert self.proc.stdout is not None
        line = ""
        while not line.startswith("listening on "):
            line = self.proc.stdout.readline()
            if not line:
                break
        m = re.search(r":(\d+)/", line)
        port = int(m.group(1)) if m else None
        if port is None:
            self.stop()
            raise SystemExit(f"testca serve did not say its port: {line!r}\n"
                             f"{self.log.read_text()}")
        self.url = f"http://127.0.0.1:{port}/pkix/"
        self.port = port
        self.ca_cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self._log.close()


def swcmp(site: Site, *args: str) -> list[str]:
    p = site.paths
    return [sys.executable, "-m", "swcmp", "--config-dir", str(p.config_dir), "--state-dir",
            str(p.state_dir), "--swanctl-dir", str(p.swanctl_dir), "--vici", "none", *args]


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def bench_kur(root: Path, ca: CAProcess, rounds: int, key_type: str) -> None:
    site = make_site(root / "kur")
    add_session(site, ca, "gw-swcmp", key_type=key_type)  # type: ignore[arg-type]
    add_session(site, ca, "gw-ossl", key_type=key_type)  # type: ignore[arg-type]
    work = root / "ossl"
    work.mkdir()
    key = site.paths.key_file("gw-ossl")
    cert = work / "cur.crt"
    shutil.copy(site.paths.cert_file("gw-ossl"), cert)
    (work / "ca.crt").write_bytes(ca.ca_cert.public_bytes(
        __import__("cryptography.hazmat.primitives.serialization",
                   fromlist=["Encoding"]).Encoding.PEM))
    ossl_cmd = [OPENSSL, "cmp", "-cmd", "kur", "-server", f"127.0.0.1:{ca.port}",
                "-path", "pkix/", "-key", str(key), "-cert", str(cert),
                "-trusted", "ca.crt", "-certout", "new.crt"]
    swcmp_cmd = swcmp(site, "request", "keyupdate", "gw-swcmp", "--no-deploy")
    env = dict(os.environ)
    ossl: list[Run] = []
    ours: list[Run] = []
    for i in range(rounds + 1):  # the first round of each warms the page cache
        r = run_child(ossl_cmd, cwd=work)
        os.replace(work / "new.crt", cert)
        s = run_child(swcmp_cmd, env=env)
        if i:
            ossl.append(r)
            ours.append(s)
    ow, oc = med([r.wall for r in ossl]), med([r.cpu for r in ossl])
    sw, sc = med([r.wall for r in ours]), med([r.cpu for r in ours])
    print(f"whole-process KUR ({key_type}, {rounds} rounds, medians):")
    print(f"  openssl cmp -cmd kur         wall {ow * 1000:7.1f} ms   client CPU "
          f"{oc * 1000:7.1f} ms")
    print(f"  swcmp request keyupdate      wall {sw * 1000:7.1f} ms   client CPU "
          f"{sc * 1000:7.1f} ms")
    print(f"  ratio swcmp/openssl          wall {sw / ow:6.1f}x        client CPU "
          f"{sc / max(oc, 1e-3):6.1f}x   (goal: CPU <= 10x)")


def status_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0])
    return out


#: serve's debug line when a pass's process has ended (its peak RSS from os.wait4).
PASS_ENDED = re.compile(r"the pass's process \d+ ended: [0-9.]+ s CPU, peak RSS ([0-9.]+) MiB")


def serve_rss(site: Site, root: Path) -> dict[str, int]:
    """Start serve on ``site``, wait until its first pass is over, read its memory: serve's
    own (VmRSS, VmHWM) and the peak of the process that ran the pass (``PassPeak``)."""
    log = root / "serve.log"
    with log.open("w") as err:
        proc = subprocess.Popen(swcmp(site, "-vv", "serve"), stdout=subprocess.DEVNULL,
                                stderr=err)
        try:
            start = time.monotonic()
            while not (ended := PASS_ENDED.search(log.read_text())):
                if proc.poll() is not None or time.monotonic() - start > 600:
                    raise SystemExit(f"serve's first pass did not end:\n{log.read_text()}")
                time.sleep(0.05)
            time.sleep(1.0)
            return {**status_kib(proc.pid), "PassPeak": int(float(ended[1]) * 1024)}
        finally:
            proc.terminate()
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


#: Sessions enrolled for real; the others are copies of these under their own names.
REAL = 10


def enroll_many(site: Site, ca: CAProcess, have: int, want: int, key_type: str) -> None:
    """Sessions gw0000.. up to ``want``: the first REAL enrolled for real (IR with MAC),
    the others copies of one of them (its session file, key and certificate) under
    their own names, which serve reads and plans alike."""
    p = site.paths
    for i in range(have, want):
        name = f"gw{i:04d}"
        if i < REAL:
            add_session(site, ca, name, key_type=key_type)  # type: ignore[arg-type]
            continue
        model = f"gw{i % REAL:04d}"
        text = site.store.path_for(model).read_text()
        site.store.path_for(name).write_text(
            text.replace(f'key = "{model}"', f'key = "{name}"'))
        for src, dst in ((p.key_file(model), p.key_file(name)),
                         (p.cert_file(model), p.cert_file(name))):
            shutil.copy(src, dst)
            os.chmod(dst, src.stat().st_mode & 0o777)


def bench_serve(root: Path, ca: CAProcess, counts: list[int], key_type: str,
                pass_rounds: int) -> None:
    site = make_site(root / "serve")
    empty = make_site(root / "empty")
    have = 0
    print("swcmp serve, idle, none due (RSS after the first pass; pass CPU from renew --due):")
    base = [run_child(swcmp(empty, "renew", "--due")).cpu for _ in range(pass_rounds)]
    for n in counts:
        t0 = time.perf_counter()
        enroll_many(site, ca, have, n, key_type)
        have = n
        setup = time.perf_counter() - t0
        # The first start asks the CA its weekly questions (CA certificates, root
        # update, CRL) for every session, with the CMP stack; the second finds
        # nothing due at all.
        mem = serve_rss(site, root)
        quiet = serve_rss(site, root)
        runs = [run_child(swcmp(site, "renew", "--due")).cpu for _ in range(pass_rounds)]
        print(f"  {n:5d} sessions: RSS {mem['VmRSS'] / 1024:6.1f} MiB after a first pass "
              f"that asked the CA (serve's peak {mem['VmHWM'] / 1024:6.1f} MiB, the pass's "
              f"process {mem['PassPeak'] / 1024:6.1f} MiB), "
              f"{quiet['VmRSS'] / 1024:6.1f} MiB after one with nothing due; "
              f"one pass over {n} not-due sessions {(med(runs) - med(base)) * 1000:7.1f} ms "
              f"CPU (renew --due {med(runs):.2f} s minus {med(base):.2f} s with none)   "
              f"[setup {setup:.0f} s]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20, help="KUR runs of each client")
    ap.add_argument("--sessions", default="100,1000",
                    help="comma-separated session counts for serve's memory")
    ap.add_argument("--pass-rounds", type=int, default=3)
    ap.add_argument("--key-type", default="ecdsa:p256")
    ap.add_argument("--skip-serve", action="store_true")
    ap.add_argument("--skip-kur", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 2 KUR rounds, 3 sessions, 1 pass round")
    args = ap.parse_args()
    logging.getLogger("swcmp").setLevel(logging.ERROR)  # enrolment notes are not figures
    if args.quick:
        args.rounds, args.sessions, args.pass_rounds = 2, "3", 1
    counts = [int(n) for n in args.sessions.split(",") if n]
    import swcmp

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(swcmp.__file__).parent)],
                   check=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""})
    root = Path(tempfile.mkdtemp(prefix="swcmp-bench-renewal-"))
    print(f"swcmp renewal benchmark in {root}; {os.cpu_count()} CPUs; "
          f"{subprocess.run([OPENSSL, 'version'], capture_output=True, text=True).stdout.strip()}")
    ca = CAProcess(root / "ca")
    try:
        if not args.skip_kur:
            bench_kur(root, ca, args.rounds, args.key_type)
        if not args.skip_serve:
            bench_serve(root, ca, counts, args.key_type, args.pass_rounds)
    finally:
        ca.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"(benchmark process peak RSS {peak:.0f} MiB)")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
