"""Who may sign an answer, tried through the CLI against OpenSSL's CMP mock server.

The mock signs its answers with whatever ``-srv_cert`` it is given, and leaves a
self-signed signer out of extraCerts, as OpenSSL's CMP server code does. Each test
enrolls under MAC, then sends a KUR that the mock answers with a signature made by
one kind of certificate: the CA's own root, an RA certificate (id-kp-cmcRA), or a
certificate of the same CA that has no business signing CMP answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from openssl_gateway import GW, MAC_ARGS, Gateway
from openssl_mock import OPENSSL
from pki import make_cert, name, pem_cert, pem_key

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed"),
]

# keyUsage bits in cryptography's order: digital_signature, content_commitment,
# key_encipherment, data_encipherment, key_agreement, key_cert_sign, crl_sign, ...
KU_ROOT_SIGNS = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
KU_CA_ONLY = x509.KeyUsage(False, False, False, False, False, True, True, False, False)


def new_root(gw: Gateway, key_usage: x509.KeyUsage) -> None:
    """Give the gateway's test PKI a fresh root with ``key_usage`` (before any issuing)."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    gw.pki.root_key = root_key
    gw.pki.root = make_cert(name("swcmp Test Root CA"), root_key.public_key(), root_key,
                            ca=True, days=3650, key_usage=key_usage)
    gw.pki.write("root.crt", pem_cert(gw.pki.root))
    gw.pki.write("root.key", pem_key(root_key))


def enroll(gw: Gateway) -> x509.Certificate:
    issued = gw.pki.issue(gw.key, GW)
    with gw.ca(MAC_ARGS, issued) as url:
        gw.create_session(url)
        assert gw.run("request", "initial", "gw1").exit_code == 0
    return issued


def kur(gw: Gateway, signer: Sequence[str], old: x509.Certificate) -> tuple[int, str]:
    renewed = gw.pki.issue(gw.key, GW, serial=old.serial_number, days=400)
    with gw.ca([*signer, "-srv_trusted", "root.crt"], renewed):
        result = gw.run("request", "keyupdate", "gw1", "--no-deploy")
    return result.exit_code, result.output


def current(gw: Gateway) -> x509.Certificate:
    return x509.load_pem_x509_certificate(gw.cert_file.read_bytes())


@pytest.fixture
def gw(tmp_path: Path) -> Gateway:
    return Gateway(tmp_path)


def test_root_that_may_sign_is_found_among_the_anchors(gw: Gateway) -> None:
    new_root(gw, KU_ROOT_SIGNS)
    old = enroll(gw)
    code, out = kur(gw, ["-srv_cert", "root.crt", "-srv_key", "root.key"], old)
    assert code == 0, out
    assert current(gw).not_valid_after_utc > old.not_valid_after_utc


def test_keycertsign_only_root_needs_ignore_keyusage(gw: Gateway) -> None:
    new_root(gw, KU_CA_ONLY)
    old = enroll(gw)
    code, out = kur(gw, ["-srv_cert", "root.crt", "-srv_key", "root.key"], old)
    assert code != 0
    assert "digitalSignature" in out and "--ignore-keyusage" in out, out
    assert current(gw) == old  # storage untouched
    assert gw.run("session", "set", "gw1", "--ignore-keyusage").exit_code == 0
    code, out = kur(gw, ["-srv_cert", "root.crt", "-srv_key", "root.key"], old)
    assert code == 0, out
    assert current(gw) != old


def test_ra_with_cmc_ra_may_sign(gw: Gateway) -> None:
    old = enroll(gw)  # make_pki's srv.crt carries id-kp-cmcRA
    code, out = kur(gw, ["-srv_cert", "srv.crt", "-srv_key", "srv.key"], old)
    assert code == 0, out
    assert current(gw) != old


def test_another_gateway_of_the_same_ca_may_not_sign(gw: Gateway) -> None:
    old = enroll(gw)
    other_key = ec.generate_private_key(ec.SECP256R1())
    gw.pki.write("other.crt", pem_cert(gw.pki.issue(other_key, "gw2.example.net")))
    gw.pki.write("other.key", pem_key(other_key))
    key_before = (gw.swanctl_dir / "private" / "gw1.key").read_bytes()
    code, out = kur(gw, ["-srv_cert", "other.crt", "-srv_key", "other.key"], old)
    assert code != 0
    assert "gw2.example.net" in out and "may not sign" in out, out
    assert current(gw) == old
    assert (gw.swanctl_dir / "private" / "gw1.key").read_bytes() == key_before


def test_pinned_server_certificate_may_sign(gw: Gateway) -> None:
    old = enroll(gw)
    other_key = ec.generate_private_key(ec.SECP256R1())
    pinned = gw.pki.write("pinned.crt", pem_cert(gw.pki.issue(other_key, "cmp.example.net")))
    gw.pki.write("pinned.key", pem_key(other_key))
    assert gw.run("session", "set", "gw1", "--server-cert", str(pinned)).exit_code == 0
    code, out = kur(gw, ["-srv_cert", "pinned.crt", "-srv_key", "pinned.key"], old)
    assert code == 0, out
    assert current(gw) != old
