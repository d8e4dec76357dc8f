"""A CMP CA scripted to break the rules one way at a time (for the client's unit tests)."""

from __future__ import annotations

import os

from cryptography import x509

from pki import TestPKI
from swcmp.cmp import certs, codec
from swcmp.cmp.messages import CertResponse, PKIMessageInfo, PollRepEntry, StatusInfo
from swcmp.cmp.protection import MacProtection

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
