"""Mutual TLS (issue 10): a CA behind an https front that demands a client certificate.

The front is Python's own ``ssl`` server (CERT_REQUIRED) forwarding to the embedded
test CA. Through the CLI: without ``--tls-client-cert`` the request fails and says
what to set; a key readable by others is refused; with the certificate and key the
IR and a key update work; a client certificate from another CA is refused by the
server, and swcmp says so.
"""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from swcmp.names import format_dn
from testca_site import MAC_REF, CAHolder, ca_config, make_site, swcmp_cmd

pytestmark = pytest.mark.integration


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(cn: str, key: ec.EllipticCurvePrivateKey,
          issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, *, ca: bool = False,
          ip: str | None = None, eku: x509.ObjectIdentifier | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer or (_name(cn), key)
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                            critical=False)
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path: Path, *objs: x509.Certificate | ec.EllipticCurvePrivateKey) -> Path:
    out = b""
    for o in objs:
        if isinstance(o, x509.Certificate):
            out += o.public_bytes(serialization.Encoding.PEM)
        else:
            out += o.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
    path.write_bytes(out)
    return path


@dataclass
class Front:
    url: str
    server_ca: Path
    client_cert: Path
    client_key: Path
    foreign_cert: Path
    foreign_key: Path
    seen_clients: list[str]


def _front_handler(upstream: str, seen: list[str]) -> type[BaseHTTPRequestHandler]:
    up = urlsplit(upstream)

    class Forward(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            peer = self.connection.getpeercert()  # type: ignore[attr-defined]
            seen.append(dict(x[0] for x in peer["subject"])["commonName"])
            data = self.rfile.read(int(self.headers["Content-Length"]))
            conn = http.client.HTTPConnection(up.hostname or "", up.port, timeout=20)
            conn.request("POST", up.path, body=data,
                         headers={"Content-Type": "application/pkixcmp"})
            answer = conn.getresponse().read()
            conn.close()
            self.send_response(200)
            self.send_header("Content-Type", "application/pkixcmp")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    return Forward


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients refused in the handshake are expected here


@pytest.fixture
def front(tmp_path: Path) -> Iterator[tuple[Front, CAHolder]]:
    ca = CAHolder(tmp_path / "ca", ca_config())
    d = tmp_path / "tls"
    d.mkdir()
    keys = {n: ec.generate_private_key(ec.SECP256R1())
            for n in ("sca", "srv", "cca", "cli", "fca", "fcli")}
    sca = _cert("front server CA", keys["sca"], None, ca=True)
    srv = _cert("front", keys["srv"], (sca.subject, keys["sca"]), ip="127.0.0.1",
                eku=ExtendedKeyUsageOID.SERVER_AUTH)
    cca = _cert("client CA", keys["cca"], None, ca=True)
    cli = _cert("gw1 client", keys["cli"], (cca.subject, keys["cca"]),
                eku=ExtendedKeyUsageOID.CLIENT_AUTH)
    fca = _cert("other CA", keys["fca"], None, ca=True)
    fcli = _cert("stranger", keys["fcli"], (fca.subject, keys["fca"]),
                 eku=ExtendedKeyUsageOID.CLIENT_AUTH)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(_write(d / "srv.pem", srv, keys["srv"]))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(_write(d / "cca.pem", cca))
    seen: list[str] = []
    srv_http = _TLSServer(("127.0.0.1", 0), _front_handler(ca.ca.url, seen))
    srv_http.socket = ctx.wrap_socket(srv_http.socket, server_side=True)
    t = threading.Thread(target=srv_http.serve_forever, daemon=True)
    t.start()
    f = Front(f"https://127.0.0.1:{srv_http.server_address[1]}/pkix/", _write(d / "sca.pem", sca),
              _write(d / "cli.pem", cli), _write(d / "cli.key", keys["cli"]),
              _write(d / "fcli.pem", fcli), _write(d / "fcli.key", keys["fcli"]), seen)
    for k in (f.client_key, f.foreign_key):
        k.chmod(0o600)
    try:
        yield f, ca
    finally:
        srv_http.shutdown()
        srv_http.server_close()
        ca.stop()


def test_mutual_tls_through_the_cli(tmp_path: Path, front: tuple[Front, CAHolder]) -> None:
    import subprocess

    f, ca = front
    site = make_site(tmp_path / "gw")

    def swcmp(*args: str, code: int = 0) -> str:
        res = subprocess.run(swcmp_cmd(site, *args), capture_output=True, text=True, timeout=60,
                             check=False)
        out = res.stdout + res.stderr
        print(f"$ swcmp {' '.join(args)}\n{out}")
        assert res.returncode == code, out
        assert "Traceback" not in out
        return out

    swcmp("session", "create", "gw1", "--entity", "CN=gw1.example.net",
          "--san", "DNS:gw1.example.net", "--ca-name", format_dn(ca.ca.ca_cert.subject),
          "--server-url", f.url, "--tls-ca-bundle", str(f.server_ca), "--mac-ref", MAC_REF,
          "--mac-secret-file", str(site.secret_file), "--key-type", "ecdsa:p256")
    out = swcmp("request", "initial", "gw1", code=1)
    assert "a client certificate" in out  # "requires", or "may require" when it hung up
    assert "--tls-client-cert FILE --tls-client-key FILE" in out
    assert not site.paths.cert_file("gw1").exists()

    f.client_key.chmod(0o644)
    out = swcmp("session", "set", "gw1", "--tls-client-cert", str(f.client_cert),
                "--tls-client-key", str(f.client_key), code=1)
    assert "lets others read the key" in out and "chmod 600" in out
    f.client_key.chmod(0o600)
    swcmp("session", "set", "gw1", "--tls-client-cert", str(f.client_cert),
          "--tls-client-key", str(f.client_key))
    assert "issued" in swcmp("request", "initial", "gw1")
    assert "renewed" in swcmp("renew", "--force", "gw1")
    assert f.seen_clients and set(f.seen_clients) == {"gw1 client"}

    # a key loosened after it was set is refused when it is used
    f.client_key.chmod(0o640)
    out = swcmp("renew", "--force", "gw1", code=1)
    assert "others may read it" in out and f"chmod 600 {f.client_key}" in out
    f.client_key.chmod(0o600)

    swcmp("session", "set", "gw1", "--tls-client-cert", str(f.foreign_cert),
          "--tls-client-key", str(f.foreign_key))
    out = swcmp("renew", "--force", "gw1", code=1)
    assert "the server refused our client certificate" in out
    assert site.pair_ok()
