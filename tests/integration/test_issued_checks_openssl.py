"""What the CA issues is checked before swcmp keeps it: through the CLI against
OpenSSL's mock server, which answers with whatever certificate it is given (a
buggy or compromised CA). Each refusal is told to the CA and leaves storage as it was.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509

from openssl_gateway import GW, MAC_ARGS, SIG_ARGS, Gateway
from openssl_mock import OPENSSL
from pki import make_cert, name

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


def ir_with_ca_pubs(gw: Gateway, ca_pubs: Path, *, trust: bool) -> str:
    from openssl_mock import mock_server
    from pki import pem_cert

    cert = gw.pki.issue(gw.key, GW)
    gw.pki.write("rsp.crt", pem_cert(cert))
    with mock_server([*MAC_ARGS, "-rsp_cert", "rsp.crt", "-rsp_capubs", ca_pubs],
                     cwd=gw.pki.dir) as url:
        gw.create_session(url)
        if not trust:
            assert gw.run("session", "unset", "gw1", "trust").exit_code == 0
        result = gw.run("request", "initial", "gw1")
    assert result.exit_code == 0, result.output
    return result.output


def x509ca(gw: Gateway) -> list[x509.Certificate]:
    return [x509.load_pem_x509_certificate(p.read_bytes())
            for p in sorted((gw.swanctl_dir / "x509ca").glob("*.crt"))]


def test_ca_pubs_that_do_not_chain_to_the_anchor_are_not_kept(gw: Gateway) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from pki import pem_cert

    other_key = ec.generate_private_key(ec.SECP256R1())
    foreign = make_cert(name("Foreign Root"), other_key.public_key(), other_key, ca=True)
    both = gw.pki.write("capubs.pem", pem_cert(gw.pki.root) + pem_cert(foreign))
    out = ir_with_ca_pubs(gw, both, trust=True)
    assert "Foreign Root" in out  # the warning says what was ignored
    assert x509ca(gw) == [gw.pki.root]


def test_first_ir_trusts_only_self_signed_ca_pubs_and_prints_fingerprints(gw: Gateway) -> None:
    from cryptography.hazmat.primitives import hashes

    from pki import pem_cert

    not_a_ca = gw.pki.issue(gw.key, "intruder.example.net")
    both = gw.pki.write("capubs.pem", pem_cert(gw.pki.root) + pem_cert(not_a_ca))
    out = ir_with_ca_pubs(gw, both, trust=False)
    assert gw.pki.root.fingerprint(hashes.SHA256()).hex(":") in out
    assert "not a CA certificate" in out
    assert x509ca(gw) == [gw.pki.root]
    shown = gw.json("session", "show", "gw1")
    assert [Path(t).name for t in shown["trust"]] == ["gw1-ca1.crt"]
