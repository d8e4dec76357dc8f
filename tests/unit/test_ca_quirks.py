"""What deployed CAs are documented to send, and swcmp must take.

None of these CAs runs here, so a scripted CA reproduces each habit byte for byte
through the library's codec: EJBCA and Nokia NCM answer a p10cr with certReqId 0
(RFC 4210 wants -1); EJBCA once sent signed answers whose sender had its RDNs in
reverse order; some CAs send error messages with pvno 1. The refusals beside them
show where tolerance stops.
"""

from __future__ import annotations

import logging
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pki import TestPKI, make_cert
from swcmp.cmp import certs, codec, keys
from swcmp.cmp.client import CMPClient
from swcmp.cmp.messages import CertResponse, StatusInfo
from swcmp.cmp.protection import MacProtection, ResponseTrust, SignatureProtection
from swcmp.enroll import make_csr
from swcmp.errors import CMPErrorResponse, ProtectionError, ProtocolError

SECRET = b"quirk-secret"
CA_NAME = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
                     x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
                     x509.NameAttribute(NameOID.COMMON_NAME, "Quirky CMP Signer")])


class QuirkyCA:
    """Answers one enrollment (and its certConf); ``quirk`` picks the habit."""

    def __init__(self, pki: TestPKI, cert: x509.Certificate, quirk: str,
                 signer: tuple[keys.PrivateKey, x509.Certificate] | None = None) -> None:
        self.pki, self.cert, self.quirk, self.signer = pki, cert, quirk, signer

    def post(self, data: bytes) -> bytes:
        req = codec.decode_message(data)
        pvno = 2
        if req.body_type == "certConf":
            body = codec.pkiconf_body()
        elif self.quirk == "error-pvno-1":
            body = codec.error_body(StatusInfo(2, frozenset({25})),
                                    details=("database unavailable",))
            pvno = 1
        elif self.quirk == "pvno-1":
            body = codec.cert_rep_body("cp", [CertResponse(-1, StatusInfo(0),
                                                           certs.der_of(self.cert))])
            pvno = 1
        else:
            req_id = 0 if self.quirk in ("p10-id-0", "p10-id-0-twice") else -1
            if self.quirk == "p10-id-5":
                req_id = 5
            kind = "cp" if req.body_type == "p10cr" else "ip"
            if req.body_type == "ir":
                req_id = 0
            body = codec.cert_rep_body(kind, [CertResponse(req_id, StatusInfo(0),
                                                           certs.der_of(self.cert))])
        h = req.header
        if self.signer is not None:
            key, cert = self.signer
            prot = SignatureProtection(key=key, cert=cert).start()
            sender = cert.subject
            if self.quirk == "reversed-sender":
                sender = x509.Name(list(reversed(list(cert.subject))))
            elif self.quirk == "other-sender":
                sender = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone else")])
            sender_der = sender.public_bytes()
            kid = certs.subject_key_id(cert)
        else:
            prot = MacProtection(reference=b"ca", secret=SECRET).start()
            sender_der, kid = self.pki.root.subject.public_bytes(), b"ca"
        fields = codec.HeaderFields(
            sender_der=sender_der, recipient_der=h.sender_der or codec.NULL_DN_DER,
            transaction_id=h.transaction_id or b"", sender_nonce=os.urandom(16),
            recip_nonce=h.sender_nonce, protection_alg=prot.alg, sender_kid=kid, pvno=pvno)
        header = codec.encode_header(fields)
        return codec.assemble(header, body, prot.protect(codec.protected_part(header, body)),
                              prot.extra_certs)

    def end_transaction(self) -> None:
        pass

    def close(self) -> None:
        pass


def mac() -> MacProtection:
    return MacProtection(reference=b"ca", secret=SECRET)


def p10(pki: TestPKI, quirk: str) -> x509.Certificate:
    ca = QuirkyCA(pki, pki.gw, quirk)
    client = CMPClient(ca, recipient=pki.root.subject, trust=[pki.root])
    csr = make_csr(pki.gw_key, pki.gw.subject, [x509.DNSName("gw1.example.net")])
    return client.p10(csr=csr, protection=mac()).certificate


def test_p10cr_answer_with_cert_req_id_0_is_taken(pki: TestPKI) -> None:
    assert p10(pki, "p10-id-0") == pki.gw


def test_p10cr_answer_with_rfc_cert_req_id_is_taken(pki: TestPKI) -> None:
    assert p10(pki, "p10-id-minus-1") == pki.gw


def test_p10cr_answer_with_another_cert_req_id_is_refused(pki: TestPKI) -> None:
    with pytest.raises(ProtocolError, match="certReqId"):
        p10(pki, "p10-id-5")


def test_error_with_pvno_1_still_shows_the_ca_text(pki: TestPKI) -> None:
    ca = QuirkyCA(pki, pki.gw, "error-pvno-1")
    client = CMPClient(ca, recipient=pki.root.subject, trust=[pki.root])
    with pytest.raises(CMPErrorResponse) as e:
        client.initial(key=pki.gw_key, subject=pki.gw.subject, protection=mac())
    assert "database unavailable" in str(e.value) and "systemFailure" in str(e.value)


def test_a_certificate_answer_with_pvno_1_is_refused(pki: TestPKI) -> None:
    csr = make_csr(pki.gw_key, pki.gw.subject, [])
    client = CMPClient(QuirkyCA(pki, pki.gw, "pvno-1"), recipient=pki.root.subject,
                       trust=[pki.root])
    with pytest.raises(ProtocolError, match="pvno"):
        client.p10(csr=csr, protection=mac())


def signer(pki: TestPKI) -> tuple[keys.PrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_cert(CA_NAME, key.public_key(), pki.root_key, pki.root.subject,
                     issuer_cert=pki.root)
    return key, cert


def signed_ir(pki: TestPKI, quirk: str) -> x509.Certificate:
    s = signer(pki)
    ca = QuirkyCA(pki, pki.gw, quirk, signer=s)
    trust = ResponseTrust(anchors=(pki.root,), ca_name=pki.root.subject, pinned=(s[1],))
    client = CMPClient(ca, recipient=pki.root.subject, trust=trust)
    return client.initial(key=pki.gw_key, subject=pki.gw.subject, protection=mac()).certificate


def test_sender_with_reversed_rdns_is_taken_with_a_warning(
        pki: TestPKI, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert signed_ir(pki, "reversed-sender") == pki.gw
    assert any("reverse" in r.getMessage() for r in caplog.records), caplog.text


def test_sender_naming_someone_else_is_refused(pki: TestPKI) -> None:
    with pytest.raises(ProtectionError, match="sender"):
        signed_ir(pki, "other-sender")
