"""What the CA issues is checked before swcmp keeps it: through the CLI against
OpenSSL's mock server, which answers with whatever certificate it is given (a
buggy or compromised CA). Each refusal is told to the CA and leaves storage as it was.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509

from openssl_mock import OPENSSL
from pki import make_cert, name
from test_cli_requests import GW, MAC_ARGS, SIG_ARGS, Gateway

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed"),
]


@pytest.fixture
def gw(tmp_path: Path) -> Gateway:
    return Gateway(tmp_path)


def ir_refused(gw: Gateway, cert: x509.Certificate, why: str) -> None:
    with gw.ca(MAC_ARGS, cert) as url:
        gw.create_session(url)
        result = gw.run("request", "initial", "gw1")
    assert result.exit_code != 0
    assert why in result.output, result.output
    assert "certConf rejection" in result.output
    assert not gw.cert_file.exists()


def test_ca_certificate_is_refused(gw: Gateway) -> None:
    cert = make_cert(name(GW), gw.key.public_key(), gw.pki.root_key,  # type: ignore[arg-type]
                     gw.pki.root.subject, ca=True, sans=[x509.DNSName(GW)],
                     issuer_cert=gw.pki.root)
    ir_refused(gw, cert, "CA:TRUE")


def test_names_nobody_asked_for_are_refused(gw: Gateway) -> None:
    cert = gw.pki.issue(gw.key, GW, sans=[x509.DNSName(GW), x509.DNSName("www.bank.example")])
    ir_refused(gw, cert, "www.bank.example")


def test_subject_cn_copied_into_a_dns_name_is_fine(gw: Gateway) -> None:
    cert = gw.pki.issue(gw.key, GW, sans=[x509.DNSName(GW)])
    with gw.ca(MAC_ARGS, cert) as url:
        gw.create_session(url)
        gw.run("session", "unset", "gw1", "sans")
        assert gw.run("request", "initial", "gw1").exit_code == 0


def test_an_older_certificate_is_no_renewal(gw: Gateway) -> None:
    now = dt.datetime.now(dt.UTC)
    current = gw.pki.issue(gw.key, GW, not_before=now - dt.timedelta(hours=1), days=365)
    # (the 3.0 mock wants the answer to carry the serial of the certificate updated)
    older = gw.pki.issue(gw.key, GW, serial=current.serial_number,
                         not_before=now - dt.timedelta(days=30), days=300)
    with gw.ca(MAC_ARGS, current) as url:
        gw.create_session(url)
        assert gw.run("request", "initial", "gw1").exit_code == 0
    key_before = (gw.swanctl_dir / "private" / "gw1.key").read_bytes()
    with gw.ca(SIG_ARGS, older):  # still valid, same key: a replay, not a renewal
        result = gw.run("request", "keyupdate", "gw1", "--no-deploy")
    assert result.exit_code != 0
    assert "no renewal" in result.output, result.output
    assert x509.load_pem_x509_certificate(gw.cert_file.read_bytes()) == current
    assert (gw.swanctl_dir / "private" / "gw1.key").read_bytes() == key_before
