#!/usr/bin/env python3
"""What `swcmp serve` costs when idle, and how long one renewal pass over many sessions takes.

1. N sessions (default 100) enrolled for real (IR with MAC) against the embedded
   test CA, with day-long certificates, so none is due. `swcmp serve` runs as a
   subprocess (`--vici none`); after its first pass (run in a child process, which
   serve logs at debug level when it ended) it is left alone for --seconds (default
   60) and its CPU time (utime + stime from /proc/PID/stat, with those of the pass
   processes it waited for) and memory (VmRSS, VmHWM from /proc/PID/status) are read.
2. `swcmp renew --force` (one process, one pass) renews all N sessions with a
   KUR each against the same CA: wall time and the mean per renewal. The CA runs
   in this process, on other cores than the renew process where there are some.

Run: python3 bench/bench_serve.py [--sessions 100] [--seconds 60] [--key-type ecdsa:p256]
                                  [--regenerate]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from swcmp.testca import TestCA
from testca_site import add_session, ca_config, make_site

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and of the children it waited for (serve's pass
    processes), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICK  # fields 14 to 17 of stat(5)


def cpu_ns(pid: int) -> int:
    """Time on a CPU of all threads of ``pid`` in nanoseconds (/proc/PID/task/*/schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        total += int((task / "schedstat").read_text().split()[0])
    return total


def memory_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=60.0, help="idle measurement window")
    ap.add_argument("--key-type", default="ecdsa:p256")
    ap.add_argument("--regenerate", action="store_true", help="renew with fresh keys")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run with tiny parameters (CI runs every bench script so)")
    args = ap.parse_args()
    if args.quick:
        args.sessions, args.seconds = 2, 1.0

    root = Path(tempfile.mkdtemp(prefix="swcmp-bench-serve-"))
    site = make_site(root / "gw")
    base = [sys.executable, "-m", "swcmp", "--config-dir", str(site.paths.config_dir),
            "--state-dir", str(site.paths.state_dir), "--swanctl-dir",
            str(site.paths.swanctl_dir), "--vici", "none"]
    print(f"swcmp serve / renew benchmark: {args.sessions} sessions, {args.key_type} keys, "
          f"regenerate={'yes' if args.regenerate else 'no'}, {os.cpu_count()} CPUs, in {root}")
    with TestCA(root / "ca", config=ca_config(validity=timedelta(days=1))) as ca:
        t0 = time.perf_counter()
        for i in range(args.sessions):
            add_session(site, ca, f"gw{i:03d}", regenerate=args.regenerate,
                        key_type=args.key_type)
        print(f"setup: {args.sessions} IRs in {time.perf_counter() - t0:.1f} s")

        # ------------------------------------------------------------ idle serve
        log = root / "serve.log"
        with log.open("w") as err:
            proc = subprocess.Popen([*base, "-vv", "serve"], stdout=subprocess.DEVNULL,
                                    stderr=err)
            try:
                start = time.monotonic()
                # the first pass (plans every session) is done when its process has ended
                while "the pass's process" not in log.read_text():
                    if proc.poll() is not None or time.monotonic() - start > 300:
                        raise SystemExit(f"serve's first pass did not end:\n{log.read_text()}")
                    time.sleep(0.05)
                startup_cpu = cpu_seconds(proc.pid)
                mem0 = memory_kib(proc.pid)
                c0, n0, w0 = cpu_seconds(proc.pid), cpu_ns(proc.pid), time.monotonic()
                time.sleep(args.seconds)
                c1, n1, w1 = cpu_seconds(proc.pid), cpu_ns(proc.pid), time.monotonic()
                mem1 = memory_kib(proc.pid)
            finally:
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(30)
        renewed_while_idle = log.read_text().count("renewed:")
        print(f"serve start-up (interpreter, imports, first pass over {args.sessions} sessions): "
              f"{startup_cpu:.2f} CPU s")
        print(f"serve idle: {c1 - c0:.2f} CPU s over {w1 - w0:.0f} s by /proc/PID/stat "
              f"(clock tick {1 / TICK:.2f} s); {(n1 - n0) / 1e6:.1f} ms by schedstat "
              f"({(n1 - n0) / 1e9 / (w1 - w0) * 100:.4f} % of one CPU)")
        print(f"serve memory: RSS {mem0['VmRSS'] / 1024:.1f} MiB at start of window, "
              f"{mem1['VmRSS'] / 1024:.1f} MiB at end, peak {mem1['VmHWM'] / 1024:.1f} MiB")
        print(f"serve exit code after SIGTERM: {code}; renewals while idle: {renewed_while_idle}")

        # ------------------------------------------------------------ one forced pass
        t0 = time.perf_counter()
        res = subprocess.run([*base, "--json", "renew", "--force"], capture_output=True,
                             text=True)
        wall = time.perf_counter() - t0
        results = json.loads(res.stdout)["results"] if res.stdout else []
        ok = sum(1 for r in results if r["result"] == "renewed")
        print(f"swcmp renew --force: {ok}/{args.sessions} renewed in {wall:.2f} s wall "
              f"(exit {res.returncode}), {wall / max(ok, 1) * 1000:.1f} ms per renewal "
              f"including one interpreter start-up")
        if ok != args.sessions:
            print(res.stderr[-2000:], file=sys.stderr)
            raise SystemExit(1)


if __name__ == "__main__":
    main()
