"""A gateway's storage laid out for renewal tests: session, key, certificate, trust."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from pki import TestPKI, pem_cert, pem_key
from swcmp.cmp import certs, keys
from swcmp.paths import Paths
from swcmp.session import Session
from swcmp.sessionfile import SessionStore


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
