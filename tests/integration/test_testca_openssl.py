"""`openssl cmp` as the client against the embedded test CA, each test once with
OpenSSL 3.0 (the machine's) and once with OpenSSL 3.5 (Debian 13's, tests/debian_root.py).

OpenSSL checks every answer strictly (protection, nonces, transactionID,
certificate against its key and trust); each positive flow must end with exit
status 0, the certificate file written and certifying exactly the requested key.
Refusals must make openssl fail and print the failInfo name.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from openssl_mock import OPENSSL, OpenSSL
from pki import name
from swcmp.cmp import certs, keys
from swcmp.cmp.client import CMPClient
from swcmp.cmp.protection import MacProtection, SignatureProtection
from swcmp.cmp.transport import HttpTransport
from swcmp.testca import CAConfig, TestCA

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed"),
]

GW = "gw1.example.net"
REF, SECRET = "1234", "s3cret-for-tests"
MAC_CONFIG = CAConfig(mac_ref=REF.encode(), mac_secret=SECRET.encode())
MAC_ARGS = ["-ref", REF, "-secret", f"pass:{SECRET}"]


#: The OpenSSL release of the running test (set by the autouse fixture below).
_PEER: list[OpenSSL] = []


@pytest.fixture(autouse=True)
def _openssl_release(openssl_peer: OpenSSL) -> Iterator[None]:
    _PEER[:] = [openssl_peer]
    yield
    _PEER.clear()


@pytest.fixture
def ca(tmp_path: Path) -> Iterator[TestCA]:
    with TestCA(tmp_path / "ca", config=MAC_CONFIG) as running:
        yield running


def openssl(ca: TestCA, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run `openssl cmp` of this test's OpenSSL against ``ca``; output is stdout and stderr
    together."""
    cmd = ["cmp", "-server", f"127.0.0.1:{ca.port}", "-path", "pkix/",
           "-msg_timeout", "20", *map(str, args)]
    peer = _PEER[0] if _PEER else OpenSSL("3.0")  # modules that import this: the machine's
    return peer.run(cmd, cwd=ca.directory.parent)


def ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, res.stdout[-2000:]
    return res.stdout


def new_key(ca: TestCA, fname: str, key_type: str = "ecdsa:p256") -> tuple[keys.PrivateKey, Path]:
    key = keys.generate_key(key_type)
    path = ca.directory.parent / fname
    path.write_bytes(keys.private_key_pem(key))
    path.chmod(0o600)
    return key, path


def issued(path: Path, key: keys.PrivateKey) -> x509.Certificate:
    """The certificate openssl saved, checked to certify exactly ``key``."""
    cert = certs.load_certificate(path.read_bytes())
    assert certs.spki_of(cert) == keys.spki_der(key)
    return cert


def swcmp_enroll(ca: TestCA, cn: str = GW) -> tuple[keys.PrivateKey, Path, Path]:
    """A confirmed certificate from the CA (via swcmp's client), saved for openssl."""
    key, key_path = new_key(ca, f"{cn}.key")
    with HttpTransport(ca.url) as tr:
        e = CMPClient(tr, recipient=ca.ca_cert.subject, trust=[ca.ca_cert]).initial(
            key=key, subject=name(cn), sans=[x509.DNSName(cn)],
            protection=MacProtection(reference=REF.encode(), secret=SECRET.encode()))
    cert_path = ca.directory.parent / f"{cn}.crt"
    cert_path.write_bytes(certs.pem_of(e.certificate))
    return key, key_path, cert_path


@pytest.mark.parametrize("mac", ["hmac-sha1", "hmacWithSHA256"])
def test_ir_with_mac(ca: TestCA, mac: str) -> None:
    key, key_path = new_key(ca, "new.key")
    out = ok(openssl(ca, "-cmd", "ir", *MAC_ARGS, "-mac", mac, "-subject", f"/CN={GW}",
                     "-sans", GW, "-newkey", key_path, "-certout", "new.crt",
                     "-cacertsout", "capubs.crt"))
    assert "sending CERTCONF" in out and "received PKICONF" in out
    cert = issued(ca.directory.parent / "new.crt", key)
    assert cert.subject == name(GW)
    assert list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value) \
        == [x509.DNSName(GW)]
    assert certs.load_certificate((ca.directory.parent / "capubs.crt").read_bytes()) == \
        ca.ca_cert
    assert ca.certificate(cert.serial_number).status == "confirmed"  # type: ignore[union-attr]


def test_cr_with_signature(ca: TestCA) -> None:
    _, gw_key, gw_crt = swcmp_enroll(ca)
    key, key_path = new_key(ca, "rsa.key", "rsa:2048")
    ok(openssl(ca, "-cmd", "cr", "-cert", gw_crt, "-key", gw_key, "-trusted", ca.ca_cert_path,
               "-subject", "/CN=second.example.net", "-newkey", key_path, "-certout", "cr.crt"))
    cert = issued(ca.directory.parent / "cr.crt", key)
    assert cert.subject == name("second.example.net")


@pytest.mark.parametrize("with_new_key", [False, True], ids=["same-key", "new-key"])
def test_kur_with_signature(ca: TestCA, with_new_key: bool) -> None:
    key, gw_key, gw_crt = swcmp_enroll(ca)
    args: list[str | Path] = ["-cmd", "kur", "-cert", gw_crt, "-key", gw_key,
                              "-trusted", ca.ca_cert_path, "-certout", "kur.crt"]
    if with_new_key:
        key, key_path = new_key(ca, "next.key", "ecdsa:p384")
        args += ["-newkey", key_path]
    ok(openssl(ca, *args))
    old = certs.load_certificate(gw_crt.read_bytes())
    cert = issued(ca.directory.parent / "kur.crt", key)
    assert cert.serial_number != old.serial_number
    assert cert.subject == old.subject
    # openssl repeats the old certificate's SANs in the template
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value == \
        old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_implicit_confirm(ca: TestCA) -> None:
    key, gw_key, gw_crt = swcmp_enroll(ca)
    out = ok(openssl(ca, "-cmd", "kur", "-cert", gw_crt, "-key", gw_key,
                     "-trusted", ca.ca_cert_path, "-implicit_confirm", "-certout", "kur.crt"))
    assert "CERTCONF" not in out
    cert = issued(ca.directory.parent / "kur.crt", key)
    assert ca.certificate(cert.serial_number).status == "confirmed"  # type: ignore[union-attr]
    assert ca.open_transactions() == 0


def test_polling(tmp_path: Path) -> None:
    config = CAConfig(mac_ref=REF.encode(), mac_secret=SECRET.encode(), poll=2, check_after=1)
    with TestCA(tmp_path / "ca", config=config) as ca:
        key, key_path = new_key(ca, "new.key")
        out = ok(openssl(ca, "-cmd", "ir", *MAC_ARGS, "-subject", f"/CN={GW}",
                         "-newkey", key_path, "-certout", "new.crt"))
        assert out.count("sending POLLREQ") == 2
        assert "received POLLREP" in out and "checkAfter = 1" in out
        cert = issued(ca.directory.parent / "new.crt", key)
        assert ca.certificate(cert.serial_number).status == "confirmed"  # type: ignore[union-attr]


def test_rejection_knob(tmp_path: Path) -> None:
    config = CAConfig(mac_ref=REF.encode(), mac_secret=SECRET.encode(), reject=("badPOP",))
    with TestCA(tmp_path / "ca", config=config) as ca:
        _, key_path = new_key(ca, "new.key")
        res = openssl(ca, "-cmd", "ir", *MAC_ARGS, "-subject", f"/CN={GW}",
                      "-newkey", key_path, "-certout", "new.crt")
    assert res.returncode != 0
    assert "PKIStatus: rejection" in res.stdout and "badPOP" in res.stdout
    assert not (tmp_path / "new.crt").exists()


def test_raverified_pop_is_bad_pop(ca: TestCA) -> None:
    _, key_path = new_key(ca, "new.key")
    res = openssl(ca, "-cmd", "ir", *MAC_ARGS, "-popo", "0", "-subject", f"/CN={GW}",
                  "-newkey", key_path, "-certout", "new.crt")
    assert res.returncode != 0
    assert "badPOP" in res.stdout


def test_wrong_secret_is_bad_message_check(ca: TestCA) -> None:
    _, key_path = new_key(ca, "new.key")
    # the CA signs its refusal: with the CA certificate as trust anchor openssl reads it
    res = openssl(ca, "-cmd", "ir", "-ref", REF, "-secret", "pass:wrong",
                  "-trusted", ca.ca_cert_path, "-subject", f"/CN={GW}", "-newkey", key_path,
                  "-certout", "new.crt")
    assert res.returncode != 0
    assert "badMessageCheck" in res.stdout


def test_unprotected_request_is_refused(ca: TestCA) -> None:
    _, key_path = new_key(ca, "new.key")
    res = openssl(ca, "-cmd", "ir", "-unprotected_requests", "-trusted", ca.ca_cert_path,
                  "-subject", f"/CN={GW}", "-newkey", key_path, "-certout", "new.crt")
    assert res.returncode != 0
    assert "badMessageCheck" in res.stdout


def test_p10cr_rr_and_kur_of_revoked(ca: TestCA) -> None:
    _, gw_key, gw_crt = swcmp_enroll(ca)
    key, _ = new_key(ca, "p10.key")
    csr = (x509.CertificateSigningRequestBuilder().subject_name(name("p10.example.net"))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("p10.example.net")]),
                          critical=False)
           .sign(key, hashes.SHA256()))
    (ca.directory.parent / "p10.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    ok(openssl(ca, "-cmd", "p10cr", "-cert", gw_crt, "-key", gw_key,
               "-trusted", ca.ca_cert_path, "-csr", "p10.csr", "-certout", "p10.crt"))
    issued(ca.directory.parent / "p10.crt", key)

    out = ok(openssl(ca, "-cmd", "rr", "-cert", gw_crt, "-key", gw_key, "-oldcert", gw_crt,
                     "-trusted", ca.ca_cert_path, "-revreason", "4"))
    assert "revocation accepted" in out
    serial = certs.load_certificate(gw_crt.read_bytes()).serial_number
    assert ca.certificate(serial).status == "revoked"  # type: ignore[union-attr]
    res = openssl(ca, "-cmd", "kur", "-cert", gw_crt, "-key", gw_key,
                  "-trusted", ca.ca_cert_path, "-certout", "kur.crt")
    assert res.returncode != 0
    assert "certRevoked" in res.stdout


def test_genm(ca: TestCA) -> None:
    key, gw_key, gw_crt = swcmp_enroll(ca)
    out = ok(openssl(ca, "-cmd", "genm", "-cert", gw_crt, "-key", gw_key,
                     "-trusted", ca.ca_cert_path, "-infotype", "signKeyPairTypes"))
    assert "received GENP" in out
    # the swcmp client, signing with the same certificate, gets the CA certificate
    with HttpTransport(ca.url) as tr:
        got = CMPClient(tr, recipient=ca.ca_cert.subject, trust=[ca.ca_cert]).ca_certs(
            protection=SignatureProtection(key=key,
                                           cert=certs.load_certificate(gw_crt.read_bytes())))
    assert got == (ca.ca_cert,)


def test_crl_status_list(ca: TestCA) -> None:
    """OpenSSL 3.5's client asks the test CA for its CRL by crlStatusList (RFC 9483 4.3.4)
    and takes the genp with id-it-crls; with that CRL as -oldcrl the CA has none newer."""
    if not _PEER[0].newer:
        pytest.skip("OpenSSL 3.0's client does not know crlStatusList")
    _, gw_key, gw_crt = swcmp_enroll(ca)
    ok(openssl(ca, "-cmd", "rr", "-cert", gw_crt, "-key", gw_key, "-oldcert", gw_crt,
               "-trusted", ca.ca_cert_path, "-revreason", "4"))
    out = ok(openssl(ca, "-cmd", "genm", *MAC_ARGS, "-trusted", ca.ca_cert_path,
                     "-infotype", "crlStatusList", "-crlcert", gw_crt, "-crlout", "new.crl"))
    assert "received GENP" in out
    crl = x509.load_der_x509_crl((ca.directory.parent / "new.crl").read_bytes())
    assert crl.is_signature_valid(ca.ca_cert.public_key())  # type: ignore[arg-type]
    serial = certs.load_certificate(gw_crt.read_bytes()).serial_number
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    # the swcmp client asks the same by issuer name and its CRL's thisUpdate
    with HttpTransport(ca.url) as tr:
        got = CMPClient(tr, recipient=ca.ca_cert.subject, trust=[ca.ca_cert]).crl_status(
            protection=MacProtection(reference=REF.encode(), secret=SECRET.encode()),
            issuer=ca.ca_cert.subject, this_update=crl.last_update_utc)
    assert got == ()


def test_cert_req_template(tmp_path: Path) -> None:
    """OpenSSL 3.5's client asks the test CA for its certificate request template (genm
    certReqTemplate, RFC 9483 4.3.3) and writes its certTemplate and keySpec; the swcmp
    client reads the same template."""
    from pyasn1.codec.der import decoder
    from pyasn1_alt_modules import rfc4211, rfc5480, rfc9480

    if not _PEER[0].newer:
        # 3.0's client can send the question but cannot save the answer (-template and
        # -keyspec came with OpenSSL 3.4)
        assert "-template" not in _PEER[0].run(["cmp", "-help"], cwd=tmp_path).stdout
        pytest.skip("OpenSSL 3.0's client has no -template option")
    config = CAConfig(mac_ref=REF.encode(), mac_secret=SECRET.encode(),
                      template_key_types=("ecdsa:p384", "rsa:4096"),
                      template_subject="/O=Example/CN=gw1.example.net")
    with TestCA(tmp_path / "ca", config=config) as ca:
        out = ok(openssl(ca, "-cmd", "genm", *MAC_ARGS, "-trusted", ca.ca_cert_path,
                         "-infotype", "certReqTemplate", "-template", "tmpl.der",
                         "-keyspec", "keyspec.der"))
        assert "received GENP" in out
        tmpl, rest = decoder.decode((tmp_path / "tmpl.der").read_bytes(),
                                    asn1Spec=rfc4211.CertTemplate())
        assert not rest
        subject = [(str(atv["type"]), bytes(atv["value"]))
                   for rdn in tmpl["subject"]["rdnSequence"] for atv in rdn]
        assert subject == [("2.5.4.10", b"\x0c\x07Example"),
                           ("2.5.4.3", b"\x0c\x0fgw1.example.net")]
        spec, rest = decoder.decode((tmp_path / "keyspec.der").read_bytes(),
                                    asn1Spec=rfc9480.Controls())
        assert not rest and [str(c["type"]) for c in spec] == [
            str(rfc9480.id_regCtrl_algId), str(rfc9480.id_regCtrl_rsaKeyLen)]
        alg, _ = decoder.decode(bytes(spec[0]["value"]), asn1Spec=rfc9480.AlgIdCtrl())
        assert alg["algorithm"] == rfc5480.id_ecPublicKey
        curve, _ = decoder.decode(bytes(alg["parameters"]), asn1Spec=rfc5480.ECParameters())
        assert curve["namedCurve"] == rfc5480.secp384r1
        bits, _ = decoder.decode(bytes(spec[1]["value"]), asn1Spec=rfc9480.RsaKeyLenCtrl())
        assert int(bits) == 4096
        with HttpTransport(ca.url) as tr:
            got = CMPClient(tr, recipient=ca.ca_cert.subject, trust=[ca.ca_cert]
                            ).cert_req_template(protection=MacProtection(
                                reference=REF.encode(), secret=SECRET.encode()))
    assert got is not None and [k.describe() for k in got.key_spec] == ["ecdsa:p384",
                                                                        "rsa:4096"]
    assert got.subject is not None and [r.describe() for r in got.subject] == [
        "O=Example", "CN=gw1.example.net"]
