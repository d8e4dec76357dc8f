#!/usr/bin/env python3
"""The swcmp demo, narrated. Run it through ``scripts/demo``, which installs what it needs.

What happens (as root, with network namespaces):
  1. swcmp's embedded CMP test CA starts on loopback (`swcmp testca serve`).
  2. Two strongSwan charon daemons start in two network namespaces, A and B,
     with connections but no credentials.
  3. Both gateways enroll with `swcmp request initial` (IR, MAC-protected); the
     key and certificate land in swanctl's directories and are hot-loaded into
     each charon over VICI.
  4. A establishes an IKE SA with B; B shows which certificate A presented.
  5. A's session gets auto-update with a short certificate lifetime, the
     checks pass, and `swcmp serve` runs.
  6. The certificate becomes due; swcmp sends a KUR with a new key, verifies,
     confirms, commits and hot-loads the new pair.
  7. The first IKE SA is still up (same SPIs); a new IKE SA authenticates A
     with the new certificate (B shows the new serial); charon's loaded key
     is the one in A's key file.

Without root or network namespaces it says so and runs steps 1, 3, 5 and 6
for gateway A into files only (`--vici none`).

Exit status 0 only if every step happened. ``--keep`` leaves everything
running; ``--result FILE`` writes the outcome as JSON (the tests read it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
LIFETIME = "10m"  # of every certificate the demo CA issues
RENEW_WHEN = "9m30s"  # of validity left: A is due at most 30 s after it enrolls


class DemoFailed(Exception):
    """A step did not happen."""


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def detail(text: str) -> None:
    print(f"   {text}", flush=True)


def wait_for(what: str, check: Any, timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise DemoFailed(f"{what} did not happen within {timeout:g} s")


class Gateway:
    """One gateway as swcmp sees it: its directories and charon's VICI socket."""

    def __init__(self, name: str, base: Path, swanctl_dir: Path, vici: str) -> None:
        self.name = name
        self.etc = base / "etc"
        self.var = base / "var"
        self.swanctl_dir = swanctl_dir
        self.vici = vici

    def argv(self, *args: str) -> list[str]:
        return [PY, "-m", "swcmp", "--config-dir", str(self.etc), "--state-dir", str(self.var),
                "--swanctl-dir", str(self.swanctl_dir), "--vici", self.vici, *args]

    def swcmp(self, *args: str, show: bool = True) -> str:
        res = subprocess.run(self.argv(*args), capture_output=True, text=True)
        if show:
            print(f"   $ swcmp {' '.join(args)}")
            for line in (res.stdout + res.stderr).strip().splitlines():
                print(f"     {line}")
        if res.returncode != 0:
            raise DemoFailed(f"`swcmp {' '.join(args)}` failed (exit {res.returncode})")
        return res.stdout

    def status(self) -> dict[str, Any]:
        out = self.swcmp("--json", "status", self.name, show=False)
        sessions: list[dict[str, Any]] = json.loads(out)["sessions"]
        return sessions[0]

    def env_lines(self) -> str:
        return (f"export SWCMP_CONFIG_DIR={self.etc} SWCMP_STATE_DIR={self.var} "
                f"SWCMP_SWANCTL_DIR={self.swanctl_dir} SWCMP_VICI={self.vici}")


def start_ca(base: Path, secret_file: Path) -> tuple[subprocess.Popen[str], str, Path]:
    log = (base / "ca.log").open("w")
    proc = subprocess.Popen(
        [PY, "-m", "swcmp", "testca", "serve", "--dir", str(base / "ca"), "--port", "0",
         "--mac-ref", "demo-ref", "--mac-secret-file", str(secret_file),
         "--validity", LIFETIME],
        stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if "listening on" in line:
            return proc, line.split("listening on", 1)[1].strip(), base / "ca" / "ca.crt"
    proc.kill()
    raise DemoFailed(f"the test CA did not start; see {base / 'ca.log'}")


def ca_name(ca_cert: Path) -> str:
    from swcmp.cmp import certs
    from swcmp.names import format_dn

    return format_dn(certs.load_certificate(ca_cert.read_bytes()).subject)


def enroll(gw: Gateway, identity: str, url: str, ca: str, secret_file: Path,
           *, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    create = ("session", "create", gw.name, "--entity", f"/O=swcmp demo/CN={identity}",
              "--san", f"DNS:{identity}", "--ca-name", ca, "--server-url", url,
              "--mac-ref", "demo-ref", "--mac-secret-file", str(secret_file),
              "--key-type", "ecdsa:p256", *extra)
    gw.swcmp(*create, show=False)
    detail(f"$ swcmp {' '.join(create)}")
    out = gw.swcmp("--json", "request", "initial", gw.name, show=False)
    result: dict[str, Any] = json.loads(out)
    detail(f"$ swcmp request initial {gw.name}")
    detail(f"  {result['message']}")
    detail(f"  key {result['key_path']} (0600), certificate {result['cert_path']}")
    detail(f"  charon: {result['charon']}")
    return result


def run_serve(gw: Gateway, log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("wb")
    return subprocess.Popen(gw.argv("-v", "serve"), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_renewed(gw: Gateway, old_serial: str, serve_log: Path, timeout: float) -> dict[str, Any]:
    shown = 0

    def renewed() -> dict[str, Any] | None:
        nonlocal shown
        lines = serve_log.read_text(errors="replace").splitlines()
        for line in lines[shown:]:
            print(f"     serve: {line}")
        shown = len(lines)
        st = gw.status()
        cert = st.get("certificate") or {}
        last = st.get("last_result") or {}
        # done once the renewal is recorded: after the commit and the load into charon
        if (cert.get("serial") and cert["serial"] != old_serial and last.get("action") == "kur"
                and last.get("ok") and last.get("serial") == cert["serial"]):
            return st
        if st.get("state") in ("failed", "needs_ir"):
            raise DemoFailed(f"the renewal failed: {st.get('last_result')}")
        return None

    result: dict[str, Any] = wait_for("the automatic renewal", renewed, timeout, interval=1.0)
    return result


def files_only(args: argparse.Namespace, base: Path, why: str) -> dict[str, Any]:
    say(f"No two-gateway part: {why}. Running what works here: the CA and a renewal "
        "into files (--vici none).")
    secret = base / "secret"
    secret.write_text("demo-secret\n")
    secret.chmod(0o600)
    ca_proc, url, ca_cert = start_ca(base, secret)
    try:
        say(f"1. The embedded CMP test CA listens on {url}")
        gw = Gateway("gwa", base / "a", base / "a" / "swanctl", "none")
        say("3. Gateway A enrolls: IR protected by the shared secret")
        first = enroll(gw, "a.swcmp.test", url, ca_name(ca_cert), secret,
                       extra=("--regenerate", "--expire-time", RENEW_WHEN))
        gw.swcmp("session", "enable-auto-update", gw.name)
        say("5./6. swcmp serve renews A when due")
        serve = run_serve(gw, base / "serve.log")
        try:
            st = wait_renewed(gw, first["serial"], base / "serve.log", 90)
        finally:
            serve.send_signal(signal.SIGTERM)
            serve.wait(10)
        new = st["certificate"]["serial"]
        detail(f"old serial {first['serial']}, new serial {new}")
        return {"ok": True, "mode": "files", "old_serial": first["serial"], "new_serial": new}
    finally:
        if not args.keep:
            ca_proc.terminate()
            ca_proc.wait(10)


def full(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "tests"))  # the two-charon lab lives with the tests
    from charon_net import CharonNet
    from swcmp.strongswan import key_id_from_cert_pem, loaded_key_ids

    secret = base / "secret"
    secret.write_text("demo-secret\n")
    secret.chmod(0o600)
    ca_proc, url, ca_cert = start_ca(base, secret)
    net = CharonNet(base / "net", credentials=False)
    serve: subprocess.Popen[bytes] | None = None
    try:
        say(f"1. The embedded CMP test CA listens on {url}")
        detail(f"it trusts requests MAC-protected with reference 'demo-ref' and the secret "
               f"in {secret}; its certificates live {LIFETIME}")
        say("2. Two strongSwan gateways start in network namespaces, with no credentials yet")
        net.setup()
        detail(f"A: {net.a.address} in {net.a.netns}, VICI {net.a.uri}")
        detail(f"B: {net.b.address} in {net.b.netns}, VICI {net.b.uri}")
        detail("connections in identity mode: local.id = a.swcmp.test / b.swcmp.test")
        ca = ca_name(ca_cert)
        a = Gateway("gwa", base / "swcmp-a", net.a.swanctl_dir, net.a.uri)
        b = Gateway("gwb", base / "swcmp-b", net.b.swanctl_dir, net.b.uri)

        say("3. Both gateways enroll with swcmp (IR, MAC-protected) and charon loads the pair")
        enroll(b, "b.swcmp.test", url, ca, secret)
        first = enroll(a, "a.swcmp.test", url, ca, secret,
                       extra=("--regenerate", "--expire-time", RENEW_WHEN))

        say("4. A establishes an IKE SA with B")
        old_seen = net.serial_b_saw_for_a()
        sa = next(s for s in net.a.list_sas() if s.state == "ESTABLISHED")
        detail(f"IKE SA #{sa.uniqueid} up, SPIs {sa.initiator_spi}/{sa.responder_spi}")
        detail(f"B verified A's certificate serial {old_seen:x}")
        if f"{old_seen:x}" != first["serial"]:
            raise DemoFailed("B saw another certificate than the one swcmp enrolled")

        say(f"5. A's session: auto-update on, renew when {RENEW_WHEN} of validity remain "
            "(a new key each time)")
        a.swcmp("session", "enable-auto-update", a.name)
        st = a.status()
        detail(f"next renewal {st['next_renewal']} (certificate valid until "
               f"{st['certificate']['not_after']})")

        say("6. swcmp serve runs; it sleeps until the certificate is due, then renews it")
        serve = run_serve(a, base / "serve.log")
        st = wait_renewed(a, first["serial"], base / "serve.log", 90)
        new_serial = st["certificate"]["serial"]
        detail(f"renewed: serial {first['serial']} -> {new_serial}; charon: {st['charon']}")

        say("7. What charon on A and B say now")
        still = [s for s in net.a.list_sas() if s.uniqueid == sa.uniqueid]
        if not still or still[0].spis != sa.spis or still[0].state != "ESTABLISHED":
            raise DemoFailed("the IKE SA established before the renewal is gone")
        detail(f"the first IKE SA #{sa.uniqueid} is still up with the same SPIs "
               f"{sa.initiator_spi}/{sa.responder_spi}")
        new_seen = net.serial_b_saw_for_a()
        detail(f"a new IKE SA: B verified A's certificate serial {new_seen:x}")
        if f"{new_seen:x}" != new_serial:
            raise DemoFailed(f"B saw serial {new_seen:x}, not the renewed {new_serial}")
        cert_pem = (net.a.swanctl_dir / "x509" / "gwa.crt").read_bytes()
        want = key_id_from_cert_pem(cert_pem)
        loaded = loaded_key_ids(net.a.uri)
        if want not in loaded or len(loaded) != 1:
            raise DemoFailed(f"charon on A holds keys {loaded}, expected only {want}")
        detail(f"charon on A holds exactly one private key, {want[:16]}..., the one in "
               "private/gwa.key that matches the new certificate")
        a.swcmp("stats", a.name)
        return {"ok": True, "mode": "charon", "old_serial": first["serial"],
                "new_serial": new_serial, "b_saw_before": f"{old_seen:x}",
                "b_saw_after": f"{new_seen:x}", "sa_kept": True,
                "charon_keys": list(loaded), "expected_key": want}
    finally:
        if args.keep:
            say("--keep: everything stays up. To explore:")
            detail(a.env_lines() if "a" in locals() else "")
            detail("swcmp status; swcmp stats; swcmp session show gwa")
            detail(f"stop: kill {ca_proc.pid} {serve.pid if serve else ''}; "
                   f"ip netns del {net.a.netns}; ip netns del {net.b.netns}")
        else:
            if serve is not None:
                serve.send_signal(signal.SIGTERM)
                try:
                    serve.wait(10)
                except subprocess.TimeoutExpired:
                    serve.kill()
            net.close()
            ca_proc.terminate()
            ca_proc.wait(10)


def can_run_charons() -> str | None:
    if os.geteuid() != 0:
        return "not running as root"
    if not Path("/usr/lib/ipsec/charon").exists() or shutil.which("swanctl") is None:
        return "strongSwan (charon, swanctl) is not installed"
    probe = f"swcmp-probe-{os.getpid()}"
    res = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if res.returncode != 0:
        return f"network namespaces are not available ({res.stderr.strip()})"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description="swcmp demo: enroll, renew, hot-load.")
    ap.add_argument("--keep", action="store_true", help="leave everything running")
    ap.add_argument("--result", type=Path, help="write the outcome as JSON to this file")
    ap.add_argument("--files-only", action="store_true",
                    help="skip the charon part even where it could run")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="swcmp-demo-"))
    started = time.monotonic()
    print(f"swcmp demo (working directory {base})")
    why = "--files-only given" if args.files_only else can_run_charons()
    try:
        outcome = full(args, base) if why is None else files_only(args, base, why)
    except Exception as e:  # every failure ends the demo with its reason
        say(f"FAILED: {e}")
        print(f"   logs and files are in {base}")
        if args.result:
            args.result.write_text(json.dumps({"ok": False, "error": str(e)}))
        return 1
    outcome["seconds"] = round(time.monotonic() - started, 1)
    say(f"Done in {outcome['seconds']} s: the certificate was renewed "
        f"({outcome['old_serial']} -> {outcome['new_serial']})"
        + (" and charon used it without dropping the IKE SA." if outcome["mode"] == "charon"
           else "."))
    if args.result:
        args.result.write_text(json.dumps(outcome, indent=1))
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
