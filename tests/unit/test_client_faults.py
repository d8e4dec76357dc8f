"""The client against a scripted CA that breaks the rules one way at a time."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from pki import TestPKI, name
from swcmp.cmp import certs, codec, keys
from swcmp.cmp.client import CMPClient
from swcmp.cmp.messages import CertResponse, PKIMessageInfo, PollRepEntry, StatusInfo
from swcmp.cmp.protection import MacProtection
from swcmp.errors import CertificateRejectedError, CMPErrorResponse, ProtectionError, ProtocolError

SECRET = b"s3cret"


class ScriptedCA:
    """Answers each request with MAC protection; ``fault`` bends one rule."""

    def __init__(self, pki: TestPKI, cert: x509.Certificate, fault: str = "") -> None:
        self.pki, self.cert, self.fault = pki, cert, fault
        self.mac = MacProtection(reference=b"ca", secret=SECRET)
        self.seen: list[PKIMessageInfo] = []
        self.polls_left = 2 if fault.startswith("poll") else 0

    def post(self, data: bytes) -> bytes:
        req = codec.decode_message(data)
        self.seen.append(req)
        kind = req.body_type
        if self.fault == "garbage":
            return b"\x30\x03\x02\x01"
        if kind in ("ir", "pollReq") and self.polls_left:
            self.polls_left -= 1
            if kind == "ir":
                body = codec.cert_rep_body("ip", [CertResponse(0, StatusInfo(3), None)])
            else:
                body = codec.poll_rep_body([PollRepEntry(0, 2)])
        elif kind in ("ir", "pollReq"):
            body = codec.cert_rep_body("ip", [CertResponse(0, StatusInfo(0),
                                                           certs.der_of(self.cert))],
                                       [certs.der_of(self.pki.root)])
        elif kind == "certConf":
            body = codec.pkiconf_body()
        else:
            body = codec.error_body(StatusInfo(2, frozenset({2})))
        if self.fault == "wrong-body" and kind == "ir":
            body = codec.pkiconf_body()
        if self.fault == "error":
            body = codec.error_body(StatusInfo(2, frozenset({25})), details=("db down",))
        prot = self.mac.start()
        h = req.header
        fields = codec.HeaderFields(
            sender_der=self.pki.root.subject.public_bytes(),
            recipient_der=h.sender_der or codec.NULL_DN_DER,
            transaction_id=os.urandom(16) if self.fault == "wrong-tid" else h.transaction_id,  # type: ignore[arg-type]
            sender_nonce=os.urandom(16) if self.fault != "short-nonce" else b"1234",
            recip_nonce=os.urandom(16) if self.fault == "wrong-nonce" else h.sender_nonce,
            protection_alg=None if self.fault == "unprotected" else prot.alg,
            sender_kid=b"ca",
        )
        header = codec.encode_header(fields)
        mac = prot.protect(codec.protected_part(header, body))
        if self.fault == "bad-mac":
            mac = bytes([mac[0] ^ 1]) + mac[1:]
        return codec.assemble(header, body, None if self.fault == "unprotected" else mac)

    def end_transaction(self) -> None:
        pass

    def close(self) -> None:
        pass


def run(pki: TestPKI, fault: str, *, cert: x509.Certificate | None = None,
        key: keys.PrivateKey | None = None,
        sleep: Callable[[float], None] = lambda s: None) -> tuple[ScriptedCA, CMPClient]:
    key = key or pki.gw_key
    ca = ScriptedCA(pki, cert or pki.gw, fault)
    c = CMPClient(ca, recipient=pki.root.subject, sleep=sleep)
    c.initial(key=key, subject=name("gw1.example.net"),
              protection=MacProtection(reference=b"ca", secret=SECRET))
    return ca, c


def test_happy_path(pki: TestPKI) -> None:
    ca, _c = run(pki, "")
    assert [m.body_type for m in ca.seen] == ["ir", "certConf"]
    # header rules the client must follow
    ir, conf = ca.seen
    assert ir.header.pvno == 2 and len(ir.header.transaction_id or b"") == 16
    assert len(ir.header.sender_nonce or b"") == 16 and ir.header.recip_nonce is None
    assert ir.header.recipient_der == pki.root.subject.public_bytes()
    assert ir.header.sender_kid == b"ca" and ir.header.message_time is not None
    assert conf.header.transaction_id == ir.header.transaction_id
    assert conf.header.sender_nonce != ir.header.sender_nonce
    assert conf.header.recip_nonce is not None


@pytest.mark.parametrize(("fault", "exc", "text"), [
    ("wrong-tid", ProtocolError, "transactionID"),
    ("wrong-nonce", ProtocolError, "recipNonce"),
    ("short-nonce", ProtocolError, "senderNonce"),
    ("unprotected", ProtectionError, "not protected"),
    ("bad-mac", ProtectionError, "MAC does not verify"),
    ("garbage", ProtocolError, "malformed|DER"),
    ("wrong-body", ProtocolError, "expected ip"),
    ("error", CMPErrorResponse, "systemFailure"),
])
def test_faults(pki: TestPKI, fault: str, exc: type[Exception], text: str) -> None:
    with pytest.raises(exc, match=text):
        run(pki, fault)


def test_error_message_carries_ca_text_and_hint(pki: TestPKI) -> None:
    with pytest.raises(CMPErrorResponse) as ei:
        run(pki, "error")
    assert ei.value.protected and "db down" in str(ei.value)
    assert "retry later" in str(ei.value)


def test_polling_with_check_after(pki: TestPKI) -> None:
    waits: list[float] = []
    ca, _c = run(pki, "poll", sleep=waits.append)
    assert [m.body_type for m in ca.seen] == ["ir", "pollReq", "pollReq", "certConf"]
    assert waits == [1.0, 2.0]


def test_issued_certificate_checked_before_confirm(pki: TestPKI) -> None:
    other_key = keys.generate_key("ecdsa:p256")
    with pytest.raises(CertificateRejectedError):
        run(pki, "", key=other_key)


def test_secret_never_in_repr_or_errors(pki: TestPKI) -> None:
    m = MacProtection(reference=b"ca", secret=SECRET)
    assert SECRET.decode() not in repr(m)
    with pytest.raises(ProtectionError) as ei:
        run(pki, "bad-mac")
    assert SECRET.decode() not in str(ei.value)


def test_poll_timeout_names_transaction(tmp_path: Path, pki: TestPKI) -> None:
    from swcmp.errors import PollingTimeoutError

    ca = ScriptedCA(pki, pki.gw, "poll")
    c = CMPClient(ca, recipient=pki.root.subject, sleep=lambda s: None, poll_deadline=2.5,
                  monotonic=iter(range(0, 1000, 1)).__next__)
    with pytest.raises(PollingTimeoutError, match="transaction"):
        c.initial(key=pki.gw_key, subject=name("gw1.example.net"),
                  protection=MacProtection(reference=b"ca", secret=SECRET))
