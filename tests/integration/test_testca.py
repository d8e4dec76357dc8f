"""swcmp's client (and hand-made requests) against the embedded test CA over real HTTP.

The CA runs in-process on a free loopback port. Every flow issues real
certificates; every refusal is checked by the failInfo name the client gets.
Hand-made requests (built with the codec) cover what the client never sends:
bad POP, forged signatures, replays, wrong nonces, broken headers.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtensionOID

from pki import make_cert, make_pki, name
from swcmp.cmp import certs, codec, keys, oids
from swcmp.cmp.client import CMPClient, Enrollment
from swcmp.cmp.messages import (
    REJECTION,
    AlgorithmId,
    CertRepContent,
    ErrorInfo,
    OldCertId,
    PKIMessageInfo,
    StatusInfo,
)
from swcmp.cmp.protection import (
    MacProtection,
    Protected,
    Protection,
    SignatureProtection,
    verify_response,
)
from swcmp.cmp.protection import pbm_params as parse_pbm_params
from swcmp.cmp.transport import HttpTransport
from swcmp.errors import (
    CertificateRejectedError,
    CMPErrorResponse,
    LockHeldError,
    ProtectionError,
    ProtocolError,
    TimeoutError_,
)
from swcmp.testca import CAConfig, TestCA

pytestmark = pytest.mark.integration

GW = "gw1.example.net"
REF, SECRET = b"1234", b"s3cret-for-tests"
MAC_CONFIG = CAConfig(mac_ref=REF, mac_secret=SECRET)


def mac(secret: bytes = SECRET, ref: bytes = REF, alg: str = "hmac-sha256") -> MacProtection:
    return MacProtection(reference=ref, secret=secret, mac_alg=alg, iterations=1000)


def sig(key: keys.PrivateKey, cert: x509.Certificate) -> SignatureProtection:
    return SignatureProtection(key=key, cert=cert)


class Recorder:
    """A transport that keeps every request and can run a hook after each answer."""

    def __init__(self, url: str, after: Callable[[int], None] | None = None) -> None:
        self.inner = HttpTransport(url, total_timeout=20)
        self.sent: list[bytes] = []
        self.answers: list[bytes] = []
        self.after = after

    def post(self, data: bytes) -> bytes:
        self.sent.append(data)
        answer = self.inner.post(data)
        self.answers.append(answer)
        if self.after is not None:
            self.after(len(self.sent))
        return answer

    def end_transaction(self) -> None:
        self.inner.end_transaction()

    def close(self) -> None:
        self.inner.close()


def client(ca: TestCA, transport: object = None, **kw: object) -> CMPClient:
    tr = transport if transport is not None else HttpTransport(ca.url, total_timeout=20)
    kw.setdefault("trust", [ca.ca_cert])
    kw.setdefault("sleep", lambda s: None)
    return CMPClient(tr, recipient=ca.ca_cert.subject, **kw)  # type: ignore[arg-type]


@pytest.fixture
def ca(tmp_path: Path) -> Iterator[TestCA]:
    with TestCA(tmp_path / "ca", config=MAC_CONFIG) as running:
        yield running


def enroll(ca: TestCA, key_type: str = "ecdsa:p256", cn: str = GW,
           ) -> tuple[keys.PrivateKey, Enrollment]:
    key = keys.generate_key(key_type)
    e = client(ca).initial(key=key, subject=name(cn), sans=[x509.DNSName(cn)],
                           protection=mac())
    return key, e


def fails(ei: pytest.ExceptionInfo[CMPErrorResponse]) -> tuple[str, ...]:
    return ei.value.fail_info


# ---------------------------------------------------------------------- hand-made requests


def request(ca: TestCA, kind: str, body: bytes, protection: Protection | None, *,
            tid: bytes | None = None, nonce: bytes | None = None,
            recip_nonce: bytes | None = None, pvno: int = 2, implicit: bool = False,
            recipient: bytes | None = None, time: dt.datetime | None = None) -> bytes:
    """A PKIMessage as a client would build it, with every header field under test control."""
    prot: Protected | None = protection.start() if protection is not None else None
    header = codec.encode_header(codec.HeaderFields(
        sender_der=name(GW).public_bytes(),
        recipient_der=recipient if recipient is not None else ca.ca_cert.subject.public_bytes(),
        transaction_id=tid if tid is not None else os.urandom(16),
        sender_nonce=nonce if nonce is not None else os.urandom(16),
        recip_nonce=recip_nonce,
        message_time=time or dt.datetime.now(dt.UTC).replace(microsecond=0),
        protection_alg=prot.alg if prot else None,
        sender_kid=prot.sender_kid if prot else None,
        implicit_confirm=implicit, pvno=pvno))
    protection_value = prot.protect(codec.protected_part(header, body)) if prot else None
    return codec.assemble(header, body, protection_value, prot.extra_certs if prot else ())


def post(ca: TestCA, data: bytes) -> PKIMessageInfo:
    with HttpTransport(ca.url) as tr:
        return codec.decode_message(tr.post(data))


def ir_body(key: keys.PrivateKey, *, kind: str = "ir", cn: str = GW,
            pop_key: keys.PrivateKey | None = None, old: x509.Certificate | None = None,
            extensions: bytes | None = None) -> bytes:
    """An ir/cr/kur body; ``pop_key`` signs the POP (the certified key by default)."""
    signer = pop_key or key
    alg = keys.default_signature_algorithm(signer)

    def sign_pop(data: bytes) -> tuple[AlgorithmId, bytes]:
        return AlgorithmId(alg.oid, alg.params_der), keys.sign(signer, alg, data)

    old_id = None
    if old is not None:
        old_id = OldCertId(old.issuer.public_bytes(), old.serial_number)
    spec = codec.CertReqSpec(cert_req_id=0, spki_der=keys.spki_der(key),
                             subject_der=name(cn).public_bytes(), extensions_der=extensions,
                             old_cert_id=old_id, sign_pop=sign_pop)
    return codec.cert_req_body(kind, [spec])


def error_fails(msg: PKIMessageInfo) -> tuple[str, ...]:
    assert msg.body_type == "error", msg.body_type
    assert isinstance(msg.body, ErrorInfo)
    assert msg.body.status.status == REJECTION
    return msg.body.status.fail_names


def cert_hash(cert_der: bytes) -> bytes:
    h = hashes.Hash(hashes.SHA256())
    h.update(cert_der)
    return h.finalize()


class ForgedSignature(Protection):
    """Signs with ``key`` but presents someone else's certificate."""

    kind = "signature"

    def __init__(self, key: keys.PrivateKey, cert: x509.Certificate) -> None:
        self.key, self.cert = key, cert

    def start(self) -> Protected:
        alg = keys.default_signature_algorithm(self.key)
        return Protected(AlgorithmId(alg.oid, alg.params_der), certs.subject_key_id(self.cert),
                         (certs.der_of(self.cert),),
                         lambda data: keys.sign(self.key, alg, data))


# ---------------------------------------------------------------------- flows


def test_ir_with_mac_issues_a_real_certificate(ca: TestCA) -> None:
    key, e = enroll(ca)
    cert = e.certificate
    assert certs.spki_of(cert) == keys.spki_der(key)
    assert cert.subject == name(GW)
    assert cert.issuer == ca.ca_cert.subject
    assert e.ca_pubs == (ca.ca_cert,)  # caPubs under MAC
    assert e.chain == (ca.ca_cert,)
    cert.verify_directly_issued_by(ca.ca_cert)
    ext = cert.extensions
    assert ext.get_extension_for_class(x509.SubjectAlternativeName).value == \
        x509.SubjectAlternativeName([x509.DNSName(GW)])
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    assert ext.get_extension_for_class(x509.SubjectKeyIdentifier).value == \
        x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    assert ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == \
        certs.subject_key_id(ca.ca_cert)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(minutes=59) < lifetime <= dt.timedelta(hours=1, minutes=1)
    rec = ca.certificate(cert.serial_number)
    assert rec is not None and rec.status == "confirmed"
    assert ca.open_transactions() == 0
    assert (ca.directory / "issued" / f"{cert.serial_number:x}.pem").exists()


@pytest.mark.parametrize("alg", ["hmac-sha1", "hmac-sha256"])
def test_ir_mac_answers_follow_the_request_mac(ca: TestCA, alg: str) -> None:
    rec = Recorder(ca.url)
    client(ca, rec).initial(key=keys.generate_key("ecdsa:p256"), subject=name(GW),
                            protection=mac(alg=alg))
    request_alg = codec.decode_message(rec.sent[0]).header.protection_alg
    answer_alg = codec.decode_message(rec.answers[0]).header.protection_alg
    assert request_alg is not None and answer_alg is not None
    assert answer_alg.oid == oids.PASSWORD_BASED_MAC
    assert answer_alg.params_der and request_alg.params_der
    assert answer_alg.params_der != request_alg.params_der  # its own salt
    want = oids.HMAC_SHA1 if alg == "hmac-sha1" else oids.HMAC_WITH_SHA256
    assert parse_pbm_params(answer_alg.params_der).mac_oid == want
    assert codec.decode_message(rec.answers[0]).header.sender_kid == REF


@pytest.mark.parametrize("new_key", [False, True], ids=["same-key", "new-key"])
def test_kur_signed_with_the_old_certificate(ca: TestCA, new_key: bool) -> None:
    key, first = enroll(ca)
    new = keys.generate_key("ecdsa:p384") if new_key else key
    e = client(ca).key_update(key=new, old_cert=first.certificate,
                              protection=sig(key, first.certificate))
    assert certs.spki_of(e.certificate) == keys.spki_der(new)
    assert e.certificate.serial_number != first.certificate.serial_number
    assert e.certificate.subject == first.certificate.subject
    assert ca.certificate(e.certificate.serial_number).status == "confirmed"  # type: ignore[union-attr]


def test_kur_without_sans_in_template_keeps_the_old_sans(ca: TestCA) -> None:
    key, first = enroll(ca)
    e = client(ca).key_update(key=key, old_cert=first.certificate, sans=[],
                              protection=sig(key, first.certificate))
    san = e.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert list(san.value) == [x509.DNSName(GW)]


def test_cr_with_signature_and_p10cr(ca: TestCA) -> None:
    key, first = enroll(ca)
    protection = sig(key, first.certificate)
    rsa_key = keys.generate_key("rsa:2048")
    e = client(ca).certificate(key=rsa_key, subject=name("second.example.net"),
                               sans=[x509.DNSName("second.example.net"),
                                     x509.IPAddress(ipaddress.ip_address("192.0.2.7"))],
                               protection=protection)
    assert certs.spki_of(e.certificate) == keys.spki_der(rsa_key)
    assert len(list(e.certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value)) == 2
    p10_key = keys.generate_key("ed25519")
    csr = (x509.CertificateSigningRequestBuilder().subject_name(name("p10.example.net"))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("p10.example.net")]),
                          critical=False)
           .sign(p10_key, None))
    e2 = client(ca).p10(csr=csr, protection=mac())
    assert certs.spki_of(e2.certificate) == keys.spki_der(p10_key)
    assert e2.certificate.subject == name("p10.example.net")
    # signed: the header's sender is the signer's subject (RFC 9483 3.1), not the CSR's
    e3 = client(ca).p10(csr=csr, protection=protection)
    assert e3.certificate.subject == name("p10.example.net")


def test_genm_ca_certs_and_root_update(ca: TestCA) -> None:
    key, first = enroll(ca)
    c = client(ca)
    assert c.ca_certs(protection=sig(key, first.certificate)) == (ca.ca_cert,)
    assert c.ca_certs(protection=mac()) == (ca.ca_cert,)
    assert c.root_ca_update(protection=mac(), old_root=ca.ca_cert) is None


def test_rr_then_kur_and_second_rr_are_refused_as_revoked(ca: TestCA) -> None:
    key, first = enroll(ca)
    protection = sig(key, first.certificate)
    st = client(ca).revoke(cert=first.certificate, protection=protection, reason=4)
    assert st.granted
    assert ca.certificate(first.certificate.serial_number).status == "revoked"  # type: ignore[union-attr]
    with pytest.raises(CMPErrorResponse) as ei:
        client(ca).key_update(key=key, old_cert=first.certificate, protection=protection)
    assert fails(ei) == ("certRevoked",)
    with pytest.raises(CMPErrorResponse) as ei:
        client(ca).revoke(cert=first.certificate, protection=mac())
    assert fails(ei) == ("certRevoked",)
    state = json.loads((ca.directory / "state.json").read_text())
    assert f"{first.certificate.serial_number:x}" in state["revoked"]


def test_rr_signed_by_another_certificate_is_not_authorized(ca: TestCA) -> None:
    key_a, a = enroll(ca)
    _, b = enroll(ca, cn="other.example.net")
    with pytest.raises(CMPErrorResponse) as ei:
        client(ca).revoke(cert=b.certificate, protection=sig(key_a, a.certificate))
    assert fails(ei) == ("notAuthorized",)


def test_implicit_confirm_granted_when_asked(ca: TestCA) -> None:
    c = client(ca, implicit_confirm=True)
    e = c.initial(key=keys.generate_key("ecdsa:p256"), subject=name(GW), protection=mac())
    assert e.implicit_confirm
    assert c.stats["sent", "certConf"] == 0
    assert ca.certificate(e.certificate.serial_number).status == "confirmed"  # type: ignore[union-attr]
    assert ca.open_transactions() == 0


def test_implicit_confirm_refused_by_flag(tmp_path: Path) -> None:
    config = CAConfig(mac_ref=REF, mac_secret=SECRET, implicit_confirm=False)
    with TestCA(tmp_path / "ca", config=config) as ca:
        c = client(ca, implicit_confirm=True)
        e = c.initial(key=keys.generate_key("ecdsa:p256"), subject=name(GW), protection=mac())
    assert not e.implicit_confirm
    assert c.stats["sent", "certConf"] == 1


def test_polling(tmp_path: Path) -> None:
    waits: list[float] = []
    config = CAConfig(mac_ref=REF, mac_secret=SECRET, poll=2, check_after=3)
    with TestCA(tmp_path / "ca", config=config) as ca:
        c = client(ca, sleep=waits.append)
        key = keys.generate_key("ecdsa:p256")
        e = c.initial(key=key, subject=name(GW), protection=mac())
        assert e.polls == 2 and c.stats["sent", "pollReq"] == 2
        assert waits[1:] == [3.0]  # the pollRep's checkAfter
        assert certs.spki_of(e.certificate) == keys.spki_der(key)
        assert ca.certificate(e.certificate.serial_number).status == "confirmed"  # type: ignore[union-attr]
        # with implicit confirmation the delivery after polling ends the transaction
        c2 = client(ca, implicit_confirm=True)
        e2 = c2.initial(key=key, subject=name(GW), protection=mac())
        assert e2.implicit_confirm and c2.stats["sent", "certConf"] == 0
        assert ca.open_transactions() == 0


def test_reject_knob(tmp_path: Path) -> None:
    config = CAConfig(mac_ref=REF, mac_secret=SECRET, reject=("badCertTemplate",))
    with TestCA(tmp_path / "ca", config=config) as ca, pytest.raises(CMPErrorResponse) as ei:
        client(ca).initial(key=keys.generate_key("ecdsa:p256"), subject=name(GW),
                           protection=mac())
    assert ei.value.status == "rejection"
    assert fails(ei) == ("badCertTemplate",)
    assert "--reject" in str(ei.value)


def test_ed25519_ca_and_certconf_with_sha512_hashalg(tmp_path: Path) -> None:
    config = CAConfig(mac_ref=REF, mac_secret=SECRET, key_type="ed25519")
    with TestCA(tmp_path / "ca", config=config) as ca:
        c = client(ca)
        e = c.initial(key=keys.generate_key("ecdsa:p256"), subject=name(GW), protection=mac())
        assert e.certificate.signature_algorithm_oid.dotted_string == oids.ED25519
        assert ca.certificate(e.certificate.serial_number).status == "confirmed"  # type: ignore[union-attr]


# ---------------------------------------------------------------------- faults the client refuses


@pytest.mark.parametrize(("fault", "error", "match"), [
    ("wrong-nonce", ProtocolError, "recipNonce"),
    ("bad-protection", ProtectionError, "MAC does not verify"),
    ("unprotected", ProtectionError, "not protected"),
    ("other-key", CertificateRejectedError, "another public key"),
])
def test_fault_refused_by_client_under_mac(tmp_path: Path, fault: str, error: type[Exception],
                                           match: str) -> None:
    config = CAConfig(mac_ref=REF, mac_secret=SECRET, fault=fault)
    with TestCA(tmp_path / "ca", config=config) as ca:
        c = client(ca)
        with pytest.raises(error, match=match):
            c.initial(key=keys.generate_key("ecdsa:p256"), subject=name(GW), protection=mac())
        if fault == "other-key":
            # the client said so in certConf, and the CA forgot the certificate
            (serial,) = (int(p.stem, 16) for p in (ca.directory / "issued").iterdir())
            rec = ca.certificate(serial)
            assert rec is not None and rec.status == "rejected"
            assert "another public key" in rec.reason
            assert c.stats["received", "certConf"] == 1


@pytest.mark.parametrize(("fault", "error", "match"), [
    ("wrong-nonce", ProtocolError, "recipNonce"),
    ("bad-protection", ProtectionError, "signature does not verify"),
    ("unprotected", ProtectionError, "not protected"),
    ("other-key", CertificateRejectedError, "another public key"),
])
def test_fault_refused_by_client_under_signature(tmp_path: Path, fault: str,
                                                 error: type[Exception], match: str) -> None:
    with TestCA(tmp_path / "ca", config=MAC_CONFIG) as ca:
        key, first = enroll(ca)
    config = CAConfig(mac_ref=REF, mac_secret=SECRET, fault=fault)
    with TestCA(tmp_path / "ca", config=config) as ca, pytest.raises(error, match=match):
        client(ca).key_update(key=key, old_cert=first.certificate,
                              protection=sig(key, first.certificate))


def test_delay_knob_hits_the_client_timeout(tmp_path: Path) -> None:
    config = CAConfig(mac_ref=REF, mac_secret=SECRET, delay=0.8)
    with TestCA(tmp_path / "ca", config=config) as ca, \
            HttpTransport(ca.url, total_timeout=0.3) as tr, pytest.raises(TimeoutError_):
        client(ca, tr).ca_certs(protection=mac())


# ---------------------------------------------------------------------- refusals by failInfo


def test_wrong_secret_is_bad_message_check_signed_by_the_ca(ca: TestCA) -> None:
    with pytest.raises(CMPErrorResponse) as ei:
        client(ca).initial(key=keys.generate_key("ecdsa:p256"), subject=name(GW),
                           protection=mac(secret=b"wrong"))
    assert fails(ei) == ("badMessageCheck",)
    assert "MAC" in str(ei.value)
    # the CA cannot MAC with a secret the client does not share, so it signs: verifiable
    assert ei.value.protected


def test_unknown_reference_and_mac_alg_refused(ca: TestCA) -> None:
    with pytest.raises(CMPErrorResponse) as ei:
        client(ca).initial(key=keys.generate_key("ecdsa:p256"), subject=name(GW),
                           protection=mac(ref=b"9999"))
    assert fails(ei) == ("badMessageCheck",) and "reference" in str(ei.value)


def test_mac_without_configured_secret_is_wrong_integrity(tmp_path: Path) -> None:
    with TestCA(tmp_path / "ca") as ca, pytest.raises(CMPErrorResponse) as ei:
        client(ca).initial(key=keys.generate_key("ecdsa:p256"), subject=name(GW),
                           protection=mac())
    assert fails(ei) == ("wrongIntegrity",)


def test_forged_signature_is_bad_message_check(ca: TestCA) -> None:
    _, victim = enroll(ca)
    thief = keys.generate_key("ecdsa:p256")
    with pytest.raises(CMPErrorResponse) as ei:
        client(ca).certificate(key=thief, subject=name(GW),
                               protection=ForgedSignature(thief, victim.certificate))
    assert fails(ei) == ("badMessageCheck",)


def test_certificate_of_another_ca_is_signer_not_trusted(ca: TestCA, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other")
    with pytest.raises(CMPErrorResponse) as ei:
        client(ca).certificate(key=keys.generate_key("ecdsa:p256"), subject=name(GW),
                               protection=sig(other.gw_key, other.gw))
    assert fails(ei) == ("signerNotTrusted",)


def test_certificate_never_confirmed_is_signer_not_trusted(ca: TestCA) -> None:
    key = keys.generate_key("ecdsa:p256")
    ip = post(ca, request(ca, "ir", ir_body(key), mac()))
    assert ip.body_type == "ip"
    assert isinstance(ip.body, CertRepContent)
    pending = certs.load_certificate(ip.body.responses[0].cert_der or b"")
    with pytest.raises(CMPErrorResponse) as ei:
        client(ca).key_update(key=key, old_cert=pending, protection=sig(key, pending))
    assert fails(ei) == ("signerNotTrusted",) and "pending" in str(ei.value)


def test_bad_pop_is_refused(ca: TestCA) -> None:
    key = keys.generate_key("ecdsa:p256")
    body = ir_body(key, pop_key=keys.generate_key("ecdsa:p256"))
    answer = post(ca, request(ca, "ir", body, mac()))
    assert error_fails(answer) == ("badPOP",)
    # refused requests leave nothing behind
    assert ca.open_transactions() == 0
    assert not list((ca.directory / "issued").iterdir())


def test_kur_refusals(ca: TestCA, tmp_path: Path) -> None:
    key_a, a = enroll(ca)
    key_b, b = enroll(ca, cn="b.example.net")
    c = client(ca)
    # MAC is not enough to update a certificate
    with pytest.raises(CMPErrorResponse) as ei:
        c.key_update(key=key_a, old_cert=a.certificate, protection=mac())
    assert fails(ei) == ("wrongIntegrity",)
    # oldCertID naming a certificate this CA never issued
    stranger = make_cert(name(GW), key_a.public_key(), keys.generate_key("ecdsa:p256"),
                         ca.ca_cert.subject)
    with pytest.raises(CMPErrorResponse) as ei:
        c.key_update(key=key_a, old_cert=stranger, protection=sig(key_a, a.certificate))
    assert fails(ei) == ("badCertId",)
    # updating b while signed with a
    with pytest.raises(CMPErrorResponse) as ei:
        c.key_update(key=key_b, old_cert=b.certificate, protection=sig(key_a, a.certificate))
    assert fails(ei) == ("notAuthorized",)
    # a kur without oldCertID
    body = ir_body(key_a, kind="kur")
    assert error_fails(post(ca, request(ca, "kur", body, sig(key_a, a.certificate)))) == \
        ("badRequest",)


def test_expired_signer_is_not_trusted(tmp_path: Path) -> None:
    now = [dt.datetime.now(dt.UTC)]

    def clock() -> dt.datetime:
        return now[0]

    with TestCA(tmp_path / "ca", config=MAC_CONFIG, clock=clock) as ca:
        key, first = enroll(ca)
        now[0] += dt.timedelta(hours=2)
        with pytest.raises(CMPErrorResponse) as ei:
            client(ca, clock=clock).key_update(key=key, old_cert=first.certificate,
                                               protection=sig(key, first.certificate))
    assert fails(ei) == ("signerNotTrusted",) and "not valid now" in str(ei.value)


def test_header_rules(ca: TestCA) -> None:
    key = keys.generate_key("ecdsa:p256")
    body = ir_body(key)
    cases: list[tuple[dict[str, object], str]] = [
        ({"tid": os.urandom(8)}, "badRequest"),
        ({"nonce": os.urandom(8)}, "badSenderNonce"),
        ({"recip_nonce": os.urandom(16)}, "badRecipientNonce"),
        ({"time": dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)}, "badTime"),
        ({"recipient": name("Some Other CA").public_bytes()}, "wrongAuthority"),
        ({"pvno": 1}, "unsupportedVersion"),
        ({"pvno": 5}, "unsupportedVersion"),
    ]
    for kw, fail in cases:
        answer = post(ca, request(ca, "ir", body, mac(), **kw))  # type: ignore[arg-type]
        assert error_fails(answer) == (fail,), kw
    unprotected = post(ca, request(ca, "ir", body, None))
    assert error_fails(unprotected) == ("badMessageCheck",)
    # signed by a certificate whose subject is not the header's sender
    signer_key, signer = enroll(ca, cn="someone.example.net")
    spoofed = post(ca, request(ca, "cr", ir_body(key, kind="cr"),
                               sig(signer_key, signer.certificate)))
    assert error_fails(spoofed) == ("badMessageCheck",)
    # pvno 3 is fine
    assert post(ca, request(ca, "ir", body, mac(), pvno=3)).body_type == "ip"


def test_error_answers_echo_ids_and_are_signed(ca: TestCA) -> None:
    tid, nonce = os.urandom(16), os.urandom(16)
    answer = post(ca, request(ca, "ir", ir_body(keys.generate_key("ecdsa:p256")),
                              mac(secret=b"x"), tid=tid, nonce=nonce))
    assert answer.header.transaction_id == tid and answer.header.recip_nonce == nonce
    assert answer.header.sender_nonce is not None and len(answer.header.sender_nonce) == 16
    assert answer.extra_certs == (certs.der_of(ca.ca_cert),)
    assert verify_response(answer, mac=None, trust=[ca.ca_cert],
                           now=dt.datetime.now(dt.UTC)).kind == "signature"
    # also when the request does not decode at all (here: pvno 1)
    tid, nonce = os.urandom(16), os.urandom(16)
    answer = post(ca, request(ca, "ir", ir_body(keys.generate_key("ecdsa:p256")), mac(),
                              tid=tid, nonce=nonce, pvno=1))
    assert error_fails(answer) == ("unsupportedVersion",)
    assert answer.header.transaction_id == tid and answer.header.recip_nonce == nonce


def test_replayed_request_is_transaction_id_in_use(ca: TestCA) -> None:
    rec = Recorder(ca.url)
    client(ca, rec).initial(key=keys.generate_key("ecdsa:p256"), subject=name(GW),
                            protection=mac())
    assert error_fails(post(ca, rec.sent[0])) == ("transactionIdInUse",)
    assert len(list((ca.directory / "issued").iterdir())) == 1


def test_certconf_rules(ca: TestCA) -> None:
    key = keys.generate_key("ecdsa:p256")
    tid = os.urandom(16)
    ip = post(ca, request(ca, "ir", ir_body(key), mac(), tid=tid))
    assert isinstance(ip.body, CertRepContent)
    cert_der = ip.body.responses[0].cert_der
    assert cert_der is not None
    good = codec.cert_conf_body([(cert_hash(cert_der), 0, None, None)])
    # a certConf that does not answer our last nonce changes nothing
    wrong = post(ca, request(ca, "certConf", good, mac(), tid=tid, recip_nonce=os.urandom(16)))
    assert error_fails(wrong) == ("badRecipientNonce",)
    # neither does one signed by a stranger (here: an unknown MAC reference)
    assert error_fails(post(ca, request(ca, "certConf", good, mac(ref=b"x"), tid=tid,
                                        recip_nonce=ip.header.sender_nonce))) == \
        ("badMessageCheck",)
    assert ca.open_transactions() == 1
    answer = post(ca, request(ca, "certConf", good, mac(), tid=tid,
                              recip_nonce=ip.header.sender_nonce))
    assert answer.body_type == "pkiconf"
    assert answer.header.recip_nonce is not None
    # the transaction is over: a second certConf is refused
    again = post(ca, request(ca, "certConf", good, mac(), tid=tid,
                             recip_nonce=answer.header.sender_nonce))
    assert error_fails(again) == ("badRequest",)


def test_certconf_with_wrong_hash_ends_the_transaction(ca: TestCA) -> None:
    tid = os.urandom(16)
    ip = post(ca, request(ca, "ir", ir_body(keys.generate_key("ecdsa:p256")), mac(), tid=tid))
    bad = codec.cert_conf_body([(b"\x00" * 32, 0, None, None)])
    answer = post(ca, request(ca, "certConf", bad, mac(), tid=tid,
                              recip_nonce=ip.header.sender_nonce))
    assert error_fails(answer) == ("badCertId",)
    assert ca.open_transactions() == 0
    (path,) = (ca.directory / "issued").iterdir()
    assert ca.certificate(int(path.stem, 16)).status == "rejected"  # type: ignore[union-attr]


def test_certconf_rejection_forgets_the_certificate(ca: TestCA) -> None:
    tid = os.urandom(16)
    ip = post(ca, request(ca, "ir", ir_body(keys.generate_key("ecdsa:p256")), mac(), tid=tid))
    assert isinstance(ip.body, CertRepContent) and ip.body.responses[0].cert_der
    cert_der = ip.body.responses[0].cert_der
    status = StatusInfo(REJECTION, frozenset({7}), ("not what I asked for",))
    body = codec.cert_conf_body([(cert_hash(cert_der), 0, status, None)])
    answer = post(ca, request(ca, "certConf", body, mac(), tid=tid,
                              recip_nonce=ip.header.sender_nonce))
    assert answer.body_type == "pkiconf"
    rec = ca.certificate(certs.load_certificate(cert_der).serial_number)
    assert rec is not None and rec.status == "rejected" and "not what I asked" in rec.reason


def test_other_bodies_and_garbage_get_cmp_errors(ca: TestCA) -> None:
    assert error_fails(post(ca, request(ca, "pkiconf", codec.pkiconf_body(), mac()))) == \
        ("badRequest",)
    assert error_fails(post(ca, request(ca, "pollReq", codec.poll_req_body([0]), mac(),
                                        recip_nonce=os.urandom(16)))) == ("badRequest",)
    assert error_fails(post(ca, b"\x30\x03\x02\x01\x02")) == ("badDataFormat",)


def test_template_policy(ca: TestCA) -> None:
    key = keys.generate_key("ecdsa:p256")
    ca_flag = x509.BasicConstraints(ca=True, path_length=None).public_bytes()
    body = ir_body(key, extensions=codec.extensions_der(
        [(ExtensionOID.BASIC_CONSTRAINTS.dotted_string, True, ca_flag)]))
    assert error_fails(post(ca, request(ca, "ir", body, mac()))) == ("badCertTemplate",)
    body = ir_body(key, extensions=codec.extensions_der([("1.2.3.4", True, b"\x05\x00")]))
    assert error_fails(post(ca, request(ca, "ir", body, mac()))) == ("unacceptedExtension",)
    # a keyUsage wish is replaced by the CA's policy: granted with modifications
    ku = x509.KeyUsage(True, True, True, False, False, False, False, False, False).public_bytes()
    body = ir_body(key, extensions=codec.extensions_der(
        [(ExtensionOID.KEY_USAGE.dotted_string, True, ku)]))
    ip = post(ca, request(ca, "ir", body, mac()))
    assert isinstance(ip.body, CertRepContent)
    assert ip.body.responses[0].status.status_name == "grantedWithMods"


# ---------------------------------------------------------------------- state and restarts


def test_restart_keeps_certificates_revocations_and_ca(tmp_path: Path) -> None:
    directory = tmp_path / "ca"
    with TestCA(directory, config=MAC_CONFIG) as ca:
        ca_cert = ca.ca_cert
        key, first = enroll(ca)
        key2, second = enroll(ca, cn="gone.example.net")
        client(ca).revoke(cert=second.certificate, protection=sig(key2, second.certificate))
    assert (directory / "ca.key").stat().st_mode & 0o777 == 0o600
    with TestCA(directory, config=MAC_CONFIG) as ca:
        assert ca.ca_cert == ca_cert
        e = client(ca).key_update(key=key, old_cert=first.certificate,
                                  protection=sig(key, first.certificate))
        assert certs.spki_of(e.certificate) == keys.spki_der(key)
        with pytest.raises(CMPErrorResponse) as ei:
            client(ca).key_update(key=key2, old_cert=second.certificate,
                                  protection=sig(key2, second.certificate))
        assert fails(ei) == ("certRevoked",)


@pytest.mark.parametrize("poll", [0, 2], ids=["before-certConf", "while-polling"])
def test_restart_in_the_middle_of_a_transaction(tmp_path: Path, poll: int) -> None:
    """The CA is stopped and started again (same port) after its first answer."""
    directory = tmp_path / "ca"
    config = CAConfig(mac_ref=REF, mac_secret=SECRET, poll=poll, check_after=0)
    holder: dict[str, TestCA] = {}
    holder["ca"] = TestCA(directory, config=config).start()
    port = holder["ca"].port

    def restart(count: int) -> None:
        if count == 1:
            holder["ca"].stop()
            holder["ca"] = TestCA(directory, config=config, port=port).start()

    try:
        rec = Recorder(holder["ca"].url, after=restart)
        c = client(holder["ca"], rec)
        e = c.initial(key=keys.generate_key("ecdsa:p256"), subject=name(GW), protection=mac())
        assert e.polls == poll
        assert holder["ca"].certificate(e.certificate.serial_number).status == "confirmed"  # type: ignore[union-attr]
        assert len(rec.sent) == 2 + poll
        assert holder["ca"].open_transactions() == 0
    finally:
        holder["ca"].stop()


def test_concurrent_kurs(ca: TestCA) -> None:
    holders = [enroll(ca, cn=f"gw{i}.example.net") for i in range(8)]
    results: list[Enrollment | BaseException] = [ValueError()] * len(holders)

    def kur(i: int) -> None:
        key, e = holders[i]
        try:
            results[i] = client(ca).key_update(key=key, old_cert=e.certificate,
                                               protection=sig(key, e.certificate))
        except BaseException as exc:  # collected and asserted below
            results[i] = exc

    threads = [threading.Thread(target=kur, args=(i,)) for i in range(len(holders))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(isinstance(r, Enrollment) for r in results), results
    state = json.loads((ca.directory / "state.json").read_text())
    assert sum(1 for r in state["issued"].values() if r["status"] == "confirmed") == 16
    assert state["transactions"] == {}


def test_unconfirmed_transaction_expires(tmp_path: Path) -> None:
    now = [dt.datetime.now(dt.UTC)]
    with TestCA(tmp_path / "ca", config=MAC_CONFIG, clock=lambda: now[0]) as ca:
        tid = os.urandom(16)
        ip = post(ca, request(ca, "ir", ir_body(keys.generate_key("ecdsa:p256")), mac(),
                              tid=tid, time=now[0]))
        assert isinstance(ip.body, CertRepContent) and ip.body.responses[0].cert_der
        cert_der = ip.body.responses[0].cert_der
        now[0] += dt.timedelta(minutes=11)
        body = codec.cert_conf_body([(cert_hash(cert_der), 0, None, None)])
        late = post(ca, request(ca, "certConf", body, mac(), tid=tid,
                                recip_nonce=ip.header.sender_nonce, time=now[0]))
        assert error_fails(late) == ("badRequest",)
        rec = ca.certificate(certs.load_certificate(cert_der).serial_number)
        assert rec is not None and rec.status == "rejected"


def test_one_ca_per_directory(ca: TestCA) -> None:
    with pytest.raises(LockHeldError):
        TestCA(ca.directory).start()


# ---------------------------------------------------------------------- HTTP


def test_http_rules(ca: TestCA) -> None:
    base = ca.url.removesuffix("pkix/")
    cmp_type = {"Content-Type": "application/pkixcmp"}
    assert requests.post(base + "other", data=b"x", headers=cmp_type, timeout=5).status_code \
        == 404
    assert requests.post(ca.url, data=b"x", headers={"Content-Type": "text/plain"},
                         timeout=5).status_code == 415
    assert requests.post(ca.url, data=b"\x00" * (70 * 1024), headers=cmp_type,
                         timeout=5).status_code == 413
    assert requests.get(ca.url, timeout=5).status_code == 405
    # "/" serves CMP too
    r = requests.post(base, data=b"\x30\x00", headers=cmp_type, timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/pkixcmp"
    assert error_fails(codec.decode_message(r.content)) == ("badDataFormat",)


# ---------------------------------------------------------------------- the command line


def test_cli_serve_and_init(tmp_path: Path) -> None:
    directory = tmp_path / "ca"
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(SECRET + b"\n")
    secret_file.chmod(0o600)
    init = subprocess.run([sys.executable, "-m", "swcmp.testca", "init", "--dir", str(directory)],
                          capture_output=True, text=True, timeout=30)
    assert init.returncode == 0, init.stderr
    assert "ca.crt" in init.stdout
    ca_cert = certs.load_certificate((directory / "ca.crt").read_bytes())
    proc = subprocess.Popen(
        [sys.executable, "-m", "swcmp.testca", "serve", "--dir", str(directory), "--port", "0",
         "--mac-ref", REF.decode(), "--mac-secret-file", str(secret_file),
         "--validity", "2h"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = None
        for line in proc.stdout:
            m = re.match(r"listening on (http://\S+)", line)
            if m:
                url = m.group(1)
                break
        assert url is not None and url.endswith("/pkix/")
        with HttpTransport(url) as tr:
            c = CMPClient(tr, recipient=ca_cert.subject, trust=[ca_cert])
            e = c.initial(key=keys.generate_key("ecdsa:p256"), subject=name(GW),
                          protection=mac())
        lifetime = e.certificate.not_valid_after_utc - e.certificate.not_valid_before_utc
        assert lifetime > dt.timedelta(hours=1, minutes=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "issued serial" in err and "ir tx=" in err  # one log line per cert and request
    assert SECRET.decode() not in err


def test_cli_refuses_bad_options(tmp_path: Path) -> None:
    from swcmp.testca.cli import main

    assert main(["serve", "--dir", str(tmp_path / "x"), "--reject", "noSuchThing"]) == 2
    assert main(["serve", "--dir", str(tmp_path / "x"), "--mac-ref", "1"]) == 1
    assert main(["serve", "--dir", str(tmp_path / "x"), "--validity", "soon"]) == 1
