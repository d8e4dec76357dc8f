"""swcmp's client against the real OpenSSL CMP mock servers (`openssl cmp -port`) of
OpenSSL 3.0 (Debian 12) and 3.5 (Debian 13), each test once per release.

Every request swcmp sends here is accepted by OpenSSL's server side and decodes
with `openssl asn1parse`; every answer is checked by swcmp's client.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from openssl_mock import OPENSSL, OpenSSL, mock_server
from pki import TestPKI, make_pki, name, pem_cert
from swcmp.cmp import keys
from swcmp.cmp.client import CMPClient
from swcmp.cmp.protection import MacProtection, SignatureProtection
from swcmp.cmp.transport import HttpTransport
from swcmp.errors import (
    CertificateRejectedError,
    CMPErrorResponse,
    ConnectError,
    PollingTimeoutError,
    ProtectionError,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed"),
]

MAC_ARGS = ["-srv_ref", "1234", "-srv_secret", "pass:test"]
SIG_ARGS = ["-srv_cert", "srv.crt", "-srv_key", "srv.key", "-srv_trusted", "root.crt"]
GW = "gw1.example.net"


class Recorder:
    """Wraps a transport and keeps every request sent."""

    def __init__(self, inner: HttpTransport) -> None:
        self.inner = inner
        self.sent: list[bytes] = []

    def post(self, data: bytes) -> bytes:
        self.sent.append(data)
        return self.inner.post(data)

    def end_transaction(self) -> None:
        self.inner.end_transaction()

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def pki(tmp_path: Path, openssl_peer: OpenSSL) -> TestPKI:
    made = make_pki(tmp_path)
    made.openssl = openssl_peer  # type: ignore[attr-defined]
    return made


def peer(pki: TestPKI) -> OpenSSL:
    """The OpenSSL release this test runs against."""
    return pki.openssl  # type: ignore[attr-defined,no-any-return]


@contextmanager
def client(pki: TestPKI, args: list[str], **kw: object) -> Iterator[tuple[CMPClient, Recorder]]:
    with mock_server(args, cwd=pki.dir, openssl=peer(pki)) as url:
        rec = Recorder(HttpTransport(url, total_timeout=20))
        c = CMPClient(rec, recipient=pki.root.subject, trust=kw.pop("trust", [pki.root]),
                      sleep=lambda s: None, **kw)  # type: ignore[arg-type]
        try:
            yield c, rec
        finally:
            rec.close()
    # every request we sent must also decode with OpenSSL's own ASN.1 parser
    for i, data in enumerate(rec.sent):
        p = pki.dir / f"req{i}.der"
        p.write_bytes(data)
        res = subprocess.run([str(OPENSSL), "asn1parse", "-inform", "DER", "-in", str(p)],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr


def rsp(pki: TestPKI, cert: x509.Certificate) -> list[str]:
    pki.write("rsp.crt", pem_cert(cert))
    return ["-rsp_cert", "rsp.crt"]


def mac(secret: bytes = b"test", alg: str = "hmac-sha256") -> MacProtection:
    return MacProtection(reference=b"1234", secret=secret, mac_alg=alg)


def sig(pki: TestPKI) -> SignatureProtection:
    return SignatureProtection(key=pki.gw_key, cert=pki.gw)


@pytest.mark.parametrize("alg", ["hmac-sha256", "hmac-sha1"])
def test_ir_with_mac_takes_capubs_as_anchor(pki: TestPKI, alg: str) -> None:
    key = keys.generate_key("ecdsa:p256")
    issued = pki.issue(key)
    args = [*MAC_ARGS, *rsp(pki, issued), "-rsp_capubs", "root.crt"]
    with client(pki, args, trust=[]) as (c, _):
        e = c.initial(key=key, subject=name(GW), sans=[x509.DNSName(GW)], protection=mac(alg=alg))
    assert e.certificate == issued
    assert e.ca_pubs == (pki.root,)
    assert e.chain == (pki.root,)
    assert c.stats["sent", "ir"] == 1 and c.stats["sent", "certConf"] == 1
    assert c.stats["received", "certConf"] == 1


def test_ir_with_external_signature(pki: TestPKI) -> None:
    key = keys.generate_key("rsa:2048")
    issued = pki.issue(key)
    with client(pki, [*SIG_ARGS, *rsp(pki, issued)]) as (c, _):
        e = c.initial(key=key, subject=name(GW), protection=sig(pki))
    assert e.certificate == issued and not e.implicit_confirm


def test_cr_with_signature(pki: TestPKI) -> None:
    key = keys.generate_key("ecdsa:p384")
    issued = pki.issue(key)
    with client(pki, [*SIG_ARGS, *rsp(pki, issued)]) as (c, _):
        e = c.certificate(key=key, subject=name(GW), protection=sig(pki))
    assert e.certificate == issued


@pytest.mark.parametrize("new_key", [False, True], ids=["same-key", "new-key"])
def test_kur(pki: TestPKI, new_key: bool) -> None:
    # The 3.0 mock answers a KUR only when -rsp_cert has the old cert's issuer and serial.
    key = keys.generate_key("ecdsa:p256") if new_key else pki.gw_key
    issued = pki.issue(key, serial=pki.gw.serial_number, days=400)
    with client(pki, [*SIG_ARGS, *rsp(pki, issued)]) as (c, _):
        e = c.key_update(key=key, old_cert=pki.gw, protection=sig(pki))
    assert e.certificate == issued
    assert e.certificate.not_valid_after_utc > pki.gw.not_valid_after_utc
    assert c.stats["sent", "kur"] == 1 and c.stats["received", "kur"] == 1


def test_kur_with_wrong_certid_reports_openssl_text(pki: TestPKI) -> None:
    key = keys.generate_key("ecdsa:p256")
    if peer(pki).newer:
        pytest.skip("OpenSSL 3.5's mock takes a KUR for any oldCertId (-ref_cert or not)")
    issued = pki.issue(key)  # another serial: the mock refuses
    with client(pki, [*SIG_ARGS, *rsp(pki, issued)]) as (c, _), \
            pytest.raises(CMPErrorResponse) as ei:
        c.key_update(key=key, old_cert=pki.gw, protection=sig(pki))
    assert ei.value.protected
    assert "wrong certid" in str(ei.value)
    assert c.stats["failed", "kur"] == 1


def test_implicit_confirm(pki: TestPKI) -> None:
    key = keys.generate_key("ecdsa:p256")
    issued = pki.issue(key)
    args = [*SIG_ARGS, *rsp(pki, issued), "-grant_implicitconf"]
    with client(pki, args, implicit_confirm=True) as (c, _):
        e = c.certificate(key=key, subject=name(GW), protection=sig(pki))
    assert e.implicit_confirm
    assert c.stats["sent", "certConf"] == 0


def test_implicit_confirm_not_granted_falls_back_to_certconf(pki: TestPKI) -> None:
    key = keys.generate_key("ecdsa:p256")
    with client(pki, [*SIG_ARGS, *rsp(pki, pki.issue(key))], implicit_confirm=True) as (c, _):
        e = c.certificate(key=key, subject=name(GW), protection=sig(pki))
    assert not e.implicit_confirm and c.stats["sent", "certConf"] == 1


def test_polling(pki: TestPKI) -> None:
    key = keys.generate_key("ecdsa:p256")
    issued = pki.issue(key)
    waits: list[float] = []
    args = [*SIG_ARGS, *rsp(pki, issued), "-poll_count", "2", "-check_after", "3"]
    with mock_server(args, cwd=pki.dir, openssl=peer(pki)) as url, HttpTransport(url) as tr:
        c = CMPClient(tr, recipient=pki.root.subject, trust=[pki.root], sleep=waits.append)
        e = c.certificate(key=key, subject=name(GW), protection=sig(pki))
    assert e.certificate == issued and e.polls == 2
    assert waits[1:2] == [3.0]  # the second wait is the pollRep's checkAfter
    if peer(pki).newer:
        # OpenSSL 3.5's mock also delays the pkiConf: the certConf is answered with an
        # error of status waiting and polled for with certReqId -1 (RFC 9483 4.4)
        assert c.stats["sent", "pollReq"] == 4 and c.stats["sent", "certConf"] == 1
        assert waits[2:] == [1.0, 3.0]
    else:
        assert c.stats["sent", "pollReq"] == 2


def test_delayed_genm_and_rr(pki: TestPKI) -> None:
    if not peer(pki).newer:
        pytest.skip("OpenSSL 3.0's mock delays only certificate requests")
    args = [*SIG_ARGS, *rsp(pki, pki.gw), "-ref_cert", "rsp.crt", "-rsp_capubs", "root.crt",
            "-poll_count", "1", "-check_after", "1"]
    with client(pki, args) as (c, _):
        assert c.ca_certs(protection=sig(pki)) == (pki.root,)
        st = c.revoke(cert=pki.gw, protection=sig(pki), reason=4)
    assert st.granted
    assert c.stats["sent", "genm"] == 1 and c.stats["sent", "rr"] == 1
    assert c.stats["sent", "pollReq"] == 2 and c.stats["received", "pollReq"] == 2


def test_polling_deadline(pki: TestPKI) -> None:
    key = keys.generate_key("ecdsa:p256")
    args = [*SIG_ARGS, *rsp(pki, pki.issue(key)), "-poll_count", "5", "-check_after", "30"]
    with client(pki, args, poll_deadline=10) as (c, _), pytest.raises(PollingTimeoutError):
        c.certificate(key=key, subject=name(GW), protection=sig(pki))


def test_rejection_reported_by_failinfo_name(pki: TestPKI) -> None:
    key = keys.generate_key("ecdsa:p256")
    args = [*SIG_ARGS, *rsp(pki, pki.issue(key)), "-pkistatus", "2", "-failure", "9"]
    with client(pki, args) as (c, _), pytest.raises(CMPErrorResponse) as ei:
        c.certificate(key=key, subject=name(GW), protection=sig(pki))
    assert ei.value.status == "rejection"
    assert ei.value.fail_info == ("badPOP",)
    assert "proof of possession" in str(ei.value)


def test_unprotected_response_refused(pki: TestPKI) -> None:
    key = keys.generate_key("ecdsa:p256")
    args = [*SIG_ARGS, *rsp(pki, pki.issue(key)), "-send_unprotected"]
    with client(pki, args) as (c, _), pytest.raises(ProtectionError, match="not protected"):
        c.certificate(key=key, subject=name(GW), protection=sig(pki))


def test_response_mac_with_other_secret_refused(pki: TestPKI) -> None:
    key = keys.generate_key("ecdsa:p256")
    args = ["-srv_ref", "1234", "-srv_secret", "pass:other", "-accept_unprotected",
            *rsp(pki, pki.issue(key)), "-rsp_capubs", "root.crt"]
    with client(pki, args, trust=[]) as (c, _), pytest.raises(ProtectionError, match="MAC"):
        c.initial(key=key, subject=name(GW), protection=mac())


def test_wrong_secret_rejected_by_ca(pki: TestPKI) -> None:
    key = keys.generate_key("ecdsa:p256")
    with client(pki, [*MAC_ARGS, *rsp(pki, pki.issue(key))], trust=[]) as (c, _), \
            pytest.raises(CMPErrorResponse) as ei:
        c.initial(key=key, subject=name(GW), protection=mac(secret=b"wrong"))
    # the CA's error is MAC-protected with the right secret, which we cannot verify
    assert not ei.value.protected


def test_certificate_for_another_key_is_rejected_in_certconf(pki: TestPKI) -> None:
    key = keys.generate_key("ecdsa:p256")
    other = pki.issue(keys.generate_key("ecdsa:p256"))
    with client(pki, [*SIG_ARGS, *rsp(pki, other)]) as (c, _), \
            pytest.raises(CertificateRejectedError, match="another public key"):
        c.certificate(key=key, subject=name(GW), protection=sig(pki))
    assert c.stats["sent", "certConf"] == 1 and c.stats["received", "certConf"] == 1


def test_certificate_with_other_subject_is_rejected(pki: TestPKI) -> None:
    key = keys.generate_key("ecdsa:p256")
    with client(pki, [*SIG_ARGS, *rsp(pki, pki.issue(key, "evil.example.net"))]) as (c, _), \
            pytest.raises(CertificateRejectedError, match="subject"):
        c.certificate(key=key, subject=name(GW), protection=sig(pki))


def test_expired_issued_certificate_is_rejected(pki: TestPKI) -> None:
    key = keys.generate_key("ecdsa:p256")
    old = pki.issue(key, not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC), days=1)
    with client(pki, [*SIG_ARGS, *rsp(pki, old)]) as (c, _), \
            pytest.raises(CertificateRejectedError, match="expired"):
        c.certificate(key=key, subject=name(GW), protection=sig(pki))


def test_p10cr(pki: TestPKI) -> None:
    from cryptography.hazmat.primitives import hashes

    key = keys.generate_key("ecdsa:p256")
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GW)]))
           .sign(key, hashes.SHA256()))  # type: ignore[arg-type]
    issued = pki.issue(key)
    with client(pki, [*SIG_ARGS, *rsp(pki, issued)]) as (c, _):
        e = c.p10(csr=csr, protection=sig(pki))
    assert e.certificate == issued


def test_genm_and_rr(pki: TestPKI) -> None:
    with client(pki, [*SIG_ARGS, *rsp(pki, pki.gw)]) as (c, _):
        # the 3.0 mock echoes the request's ITAV: a caCerts without value
        assert c.ca_certs(protection=sig(pki)) == ()
        assert c.root_ca_update(protection=sig(pki)) is None
        st = c.revoke(cert=pki.gw, protection=sig(pki), reason=4)
    assert st.granted
    assert c.stats["sent", "genm"] == 2 and c.stats["sent", "rr"] == 1


def test_dead_ca_is_a_connect_error(pki: TestPKI) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with HttpTransport(f"http://127.0.0.1:{port}/pkix/") as tr:
        c = CMPClient(tr, recipient=pki.root.subject, trust=[pki.root])
        with pytest.raises(ConnectError, match="cannot connect"):
            c.certificate(key=pki.gw_key, subject=name(GW), protection=sig(pki))


def _crl(pki: TestPKI, this_update: dt.datetime) -> x509.CertificateRevocationList:
    from cryptography.hazmat.primitives import hashes

    return (x509.CertificateRevocationListBuilder().issuer_name(pki.root.subject)
            .last_update(this_update).next_update(this_update + dt.timedelta(days=7))
            .sign(pki.root_key, hashes.SHA256()))  # type: ignore[arg-type]


def test_crl_status_list(pki: TestPKI) -> None:
    """genm crlStatusList (RFC 9483 4.3.4): OpenSSL 3.5's mock answers it with -rsp_crl."""
    if not peer(pki).newer:
        pytest.skip("OpenSSL 3.0's mock does not know crlStatusList")
    from cryptography.hazmat.primitives import serialization

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    crl = _crl(pki, now - dt.timedelta(hours=1))
    pki.write("crl.pem", crl.public_bytes(serialization.Encoding.PEM))
    with client(pki, [*SIG_ARGS, *rsp(pki, pki.gw), "-rsp_crl", "crl.pem"]) as (c, _):
        got = c.crl_status(protection=sig(pki), issuer=pki.root.subject,
                           this_update=now - dt.timedelta(days=1))
        # the CRL we hold is as new as the CA's: it has nothing newer to send
        same = c.crl_status(protection=sig(pki), issuer=pki.root.subject,
                            this_update=crl.last_update_utc)
    assert got == (crl,)
    assert same == ()
