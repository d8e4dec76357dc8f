"""The client against a scripted CA that breaks the rules one way at a time."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from pki import TestPKI, make_pki, name
from scripted_ca import SECRET, ScriptedCA
from swcmp.cmp import keys
from swcmp.cmp.client import CMPClient
from swcmp.cmp.protection import MacProtection
from swcmp.errors import CertificateRejectedError, CMPErrorResponse, ProtectionError, ProtocolError


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


def test_with_trust_anchors_a_certificate_chaining_only_to_a_capubs_root_is_refused(
        pki: TestPKI, tmp_path: Path) -> None:
    # the CA (MAC-protected) issues under a root it sends in caPubs; the session trusts
    # another root: the certificate must chain to the configured anchor
    other = make_pki(tmp_path / "other")
    ca = ScriptedCA(pki, pki.gw)
    c = CMPClient(ca, recipient=pki.root.subject, sleep=lambda s: None, trust=[other.root])
    with pytest.raises(CertificateRejectedError, match=r"trust anchor|chain|issuer"):
        c.initial(key=pki.gw_key, subject=name("gw1.example.net"),
                  protection=MacProtection(reference=b"ca", secret=SECRET))
    assert [m.body_type for m in ca.seen] == ["ir", "certConf"]  # the certConf rejects it
    # trusting the root the CA uses, the same answer is accepted
    ca = ScriptedCA(pki, pki.gw)
    CMPClient(ca, recipient=pki.root.subject, sleep=lambda s: None, trust=[pki.root]).initial(
        key=pki.gw_key, subject=name("gw1.example.net"),
        protection=MacProtection(reference=b"ca", secret=SECRET))
