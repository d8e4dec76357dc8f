"""A gateway's storage laid out for renewal tests: session, key, certificate, trust."""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from pki import TestPKI, pem_cert, pem_key
from swcmp.cmp import certs, keys
from swcmp.paths import Paths
from swcmp.session import Session
from swcmp.sessionfile import SessionStore
from testpaths import TESTS


@dataclass
class Gateway:
    paths: Paths
    store: SessionStore
    session: Session

    @property
    def cert(self) -> x509.Certificate:
        return certs.load_certificate(self.paths.cert_file("gw1").read_bytes())

    @property
    def key(self) -> keys.PrivateKey:
        return keys.load_private_key(self.paths.key_file("gw1").read_bytes())

    def pair_matches(self) -> bool:
        return keys.spki_der(self.key) == certs.spki_of(self.cert)


def make_gateway(root: Path, pki: TestPKI, url: str, **settings: object) -> Gateway:
    paths = Paths(root / "etc", root / "var", root / "swanctl")
    for d in (paths.private_dir, paths.x509_dir, paths.x509ca_dir):
        d.mkdir(parents=True, exist_ok=True)
    paths.key_file("gw1").write_bytes(pem_key(pki.gw_key))
    paths.key_file("gw1").chmod(0o600)
    paths.cert_file("gw1").write_bytes(pem_cert(pki.gw))
    trust = pki.dir / "root.crt"
    store = SessionStore(paths.config_dir)
    values: dict[str, object] = {
        "entity": "CN=gw1.example.net", "sans": ("DNS:gw1.example.net",),
        "ca_name": "CN=swcmp Test Root CA", "server_url": url, "ir_auth": "signature",
        "trust": (str(trust),), "key": "gw1", "auto_update": True,
    }
    values.update(settings)
    session = store.create("gw1", values)
    return Gateway(paths, store, session)


_KILLED_AT = """
import os, signal, sys
sys.path.insert(0, sys.argv[3])
from pathlib import Path
from swcmp.paths import Paths
from swcmp.sessionfile import SessionStore
from swcmp.renewal import Renewer
root = Path(sys.argv[1])
paths = Paths(root / "etc", root / "var", root / "swanctl")
def checkpoint(p):
    if p == sys.argv[2]:
        os.kill(os.getpid(), signal.SIGKILL)
Renewer(paths, checkpoint=checkpoint).renew(SessionStore(paths.config_dir).load("gw1"))
sys.exit(3)
"""


def renew_killed_at(root: Path, phase: str) -> None:
    """Renew session gw1 of the gateway under ``root`` in a process of its own that is
    killed (SIGKILL) at the renewal's checkpoint ``phase``, as a power cut would."""
    res = subprocess.run([sys.executable, "-c", _KILLED_AT, str(root), phase, str(TESTS)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
