"""A gateway's swcmp directories beside swcmp's embedded test CA, enrolled for real:
the setting most renewal, service and CLI tests start from."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from cryptography import x509

from swcmp.cmp import certs, keys
from swcmp.enroll import request_initial
from swcmp.names import format_dn
from swcmp.paths import Paths
from swcmp.policy import renewal_floor
from swcmp.session import Session
from swcmp.sessionfile import SessionStore
from swcmp.state import StateStore
from swcmp.testca import CAConfig, TestCA

MAC_REF = "4711"
MAC_SECRET = "renewal-secret-not-for-logs"
#: Short-lived, but longer than the renewal's own sanity check (more than a minute left).
VALIDITY = timedelta(minutes=5)
#: A certificate with this validity is due at once under expire_time 50 (BACKDATE is 60 s).
DUE_NOW = timedelta(seconds=60)


def ca_config(**knobs: Any) -> CAConfig:
    knobs.setdefault("validity", VALIDITY)
    return CAConfig(mac_ref=MAC_REF.encode(), mac_secret=MAC_SECRET.encode(), **knobs)


# ---------------------------------------------------------------------- a gateway and its CA


@dataclass
class Site:
    """A gateway's three swcmp directories under ``root`` (etc, var, swanctl)."""

    root: Path
    paths: Paths
    store: SessionStore
    secret_file: Path

    def session(self, name: str = "gw1") -> Session:
        return self.store.load(name)

    def cert(self, name: str = "gw1") -> x509.Certificate:
        return certs.load_certificate(self.paths.cert_file(name).read_bytes())

    def key_pem(self, name: str = "gw1") -> bytes:
        return self.paths.key_file(name).read_bytes()

    def pair_ok(self, name: str = "gw1") -> bool:
        """The live key and certificate match, and the certificate is valid now."""
        key = keys.load_private_key(self.key_pem(name))
        cert = self.cert(name)
        return (keys.spki_der(key) == certs.spki_of(cert)
                and cert.not_valid_before_utc <= _now() < cert.not_valid_after_utc)

    def stats(self, name: str = "gw1") -> dict[str, dict[str, int]]:
        return StateStore(self.paths).load(name).stats


def _now() -> datetime:
    return datetime.now(UTC)


def make_site(root: Path) -> Site:
    paths = Paths(root / "etc", root / "var", root / "swanctl")
    secret = root / "mac.secret"
    root.mkdir(parents=True, exist_ok=True)
    secret.write_text(MAC_SECRET + "\n")
    secret.chmod(0o600)
    return Site(root, paths, SessionStore(paths.config_dir), secret)


def add_session(site: Site, ca: TestCA, name: str = "gw1", *, regenerate: bool = False,
                expire_time: object = 50, key_type: str = "ecdsa:p256",
                auto_update: bool = True) -> Session:
    """Create session ``name`` for ``ca`` and enroll it for real (IR with MAC)."""
    cn = f"{name}.example.net"
    site.store.create(name, {
        "entity": f"CN={cn}", "sans": (f"DNS:{cn}",), "ca_name": format_dn(ca.ca_cert.subject),
        "server_url": ca.url, "ir_auth": "mac", "mac_ref": MAC_REF,
        "mac_secret_file": str(site.secret_file), "key": name, "key_type": key_type,
        "regenerate": regenerate, "expire_time": expire_time, "auto_update": auto_update,
    })
    out = request_initial(site.store.load(name), site.paths, store=site.store)
    assert out.ok
    return site.store.load(name)  # the IR set the trust anchor from caPubs


def issued(ca_dir: Path) -> dict[int, dict[str, Any]]:
    """Every certificate the CA ever issued, by serial, from its state file."""
    state = json.loads((ca_dir / "state.json").read_text())
    return {int(s, 16): r for s, r in state["issued"].items()}


class CAHolder:
    """A test CA that can be restarted on the same directory and port with other knobs."""

    def __init__(self, directory: Path, config: CAConfig) -> None:
        self.directory = directory
        self.ca = TestCA(directory, config=config).start()
        self.port = self.ca.port

    def restart(self, config: CAConfig) -> TestCA:
        self.ca.stop()
        self.ca = TestCA(self.directory, config=config, port=self.port).start()
        return self.ca

    def stop(self) -> None:
        self.ca.stop()

    def issued(self) -> dict[int, dict[str, Any]]:
        return issued(self.directory)


# ---------------------------------------------------------------------- swcmp as a process


def swcmp_cmd(site: Site, *args: str) -> list[str]:
    p = site.paths
    return [sys.executable, "-m", "swcmp", "--config-dir", str(p.config_dir),
            "--state-dir", str(p.state_dir), "--swanctl-dir", str(p.swanctl_dir),
            "--vici", "none", *args]


def swcmp_json(site: Site, *args: str) -> Any:
    res = subprocess.run(swcmp_cmd(site, "--json", *args), capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


class Serve:
    """`swcmp -v serve` in the background, its log in a file."""

    def __init__(self, site: Site, log: Path, *, verbose: str = "-v") -> None:
        self.log_path = log
        self._log: IO[str] = log.open("w")
        self.proc = subprocess.Popen(swcmp_cmd(site, verbose, "serve"),
                                     stdout=subprocess.DEVNULL, stderr=self._log)
        self.wait_for(lambda: "swcmp serve: watching" in self.log(), 30, "start-up")

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, cond: Callable[[], bool], timeout: float, what: str) -> float:
        """Wait for ``cond``; return the time.time() at which it was seen true."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return time.time()
            assert self.proc.poll() is None, f"serve exited {self.proc.returncode}:\n{self.log()}"
            time.sleep(0.05)
        raise AssertionError(f"no {what} within {timeout}s; serve log:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def wait_past_floor(site: Site, name: str) -> None:
    """Sleep until ``name``'s certificate may be renewed (swcmp's renewal floor: a
    tenth of the validity left when it arrived), so that serve renews it at once."""
    cert = certs.load_certificate(site.paths.cert_file(name).read_bytes())
    st = StateStore(site.paths).load(name)
    floor = renewal_floor(cert.not_valid_before_utc, cert.not_valid_after_utc,
                          st.received_at(f"{cert.serial_number:x}"))
    time.sleep(max(0.0, (floor - datetime.now(UTC)).total_seconds()) + 0.2)


def enroll_aside(site: Site, ca: CAHolder, name: str, *, validity: timedelta,
                 **settings: Any) -> None:
    """Enroll session ``name`` with certificates of ``validity``, then publish its file.

    The session file is written and the IR made in a side configuration
    directory (same swanctl and state directories), then renamed into the
    served one, so that serve never sees the session without its certificate.
    The CA is set back to hour-long certificates afterwards.
    """
    side = Site(site.root, Paths(site.root / "side-etc", site.paths.state_dir,
                                 site.paths.swanctl_dir),
                SessionStore(site.root / "side-etc"), site.secret_file)
    ca.restart(ca_config(validity=validity))
    add_session(side, ca.ca, name, **settings)
    ca.restart(ca_config(validity=timedelta(hours=1)))
    site.paths.sessions_dir.mkdir(parents=True, exist_ok=True)
    os.replace(side.store.path_for(name), site.store.path_for(name))
