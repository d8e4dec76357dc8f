"""The codec against 36 real OpenSSL 3.0 captures (tests/data/openssl-3.0/NOTE.md)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pyasn1.codec.der import decoder, encoder
from pyasn1_alt_modules import rfc9480

from swcmp.cmp import certs, codec, der, oids, protection
from swcmp.cmp.messages import CertRepContent, CertRequestInfo, ErrorInfo, PollRepEntry, RevRepInfo
from swcmp.errors import ProtectionError, ProtocolError
from testpaths import DATA

VECTORS = sorted(DATA.glob("*.der"))
ROOT = certs.load_certificate((DATA / "pki" / "root.crt").read_bytes())
WHEN = dt.datetime(2026, 11, 27, 17, 0, tzinfo=dt.UTC)  # inside the captures' validity


def mac() -> protection.MacProtection:
    return protection.MacProtection(reference=b"1234", secret=b"test")


def test_there_are_36_vectors() -> None:
    assert len(VECTORS) == 36


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_decode_nothing_left_and_reencode_identical(path: Path) -> None:
    data = path.read_bytes()
    msg = codec.decode_message(data)
    # our raw split agrees with pyasn1 and covers every byte
    tlv = der.single(data)
    assert tlv.raw == data
    obj, rest = decoder.decode(data, asn1Spec=rfc9480.PKIMessage())
    assert rest == b""
    assert encoder.encode(obj) == data
    assert msg.body_type == obj["body"].getName()
    assert msg.protected_part == der.sequence(*(c.raw for c in tlv.children()[:2]))


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_protection_verifies_with_our_code(path: Path) -> None:
    msg = codec.decode_message(path.read_bytes())
    # The captures' signers (OpenSSL's test server and client) carry no cmcRA/cmcCA
    # extendedKeyUsage; naming the signer as the CA authorises it. That a signer
    # without such a name is refused is test_plain_end_entity_may_not_sign_answers.
    ca_name = (certs.load_certificate(msg.extra_certs[0]).subject if msg.extra_certs
               else None)
    policy = protection.ResponseTrust(anchors=(ROOT,), ca_name=ca_name)
    v = protection.verify_response(msg, mac=mac(), trust=policy, now=WHEN)
    assert v.kind == ("mac" if msg.header.protection_alg.oid == oids.PASSWORD_BASED_MAC  # type: ignore[union-attr]
                      else "signature")


def test_plain_end_entity_may_not_sign_answers() -> None:
    # kup_sig is signed by OpenSSL's 'Test CMP Server': an end entity of the same root
    msg = codec.decode_message((DATA / "kup_sig.der").read_bytes())
    with pytest.raises(ProtectionError, match="neither the CA"):
        protection.verify_response(msg, mac=None, trust=[ROOT], now=WHEN)
    pinned = protection.ResponseTrust(
        anchors=(ROOT,), pinned=(certs.load_certificate(msg.extra_certs[0]),))
    assert protection.verify_response(msg, mac=None, trust=pinned, now=WHEN).kind == "signature"


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_one_flipped_protected_byte_is_caught(path: Path) -> None:
    data = bytearray(path.read_bytes())
    msg = codec.decode_message(bytes(data))
    # flip a byte inside the transactionID: still decodes, protection must fail
    tid = msg.header.transaction_id
    assert tid is not None
    i = bytes(data).index(tid)
    data[i] ^= 0x01
    tampered = codec.decode_message(bytes(data))
    with pytest.raises(ProtectionError):
        protection.verify_response(tampered, mac=mac(), trust=[ROOT], now=WHEN)


def test_wrong_secret_is_refused() -> None:
    msg = codec.decode_message((DATA / "ip_pbm.der").read_bytes())
    wrong = protection.MacProtection(reference=b"1234", secret=b"tesT")
    with pytest.raises(ProtectionError, match="MAC does not verify"):
        protection.verify_response(msg, mac=wrong, trust=[], now=WHEN)


def test_signed_response_from_untrusted_root_is_refused(tmp_path: Path) -> None:
    from pki import make_pki

    other = make_pki(tmp_path)
    msg = codec.decode_message((DATA / "kup_sig.der").read_bytes())
    with pytest.raises(ProtectionError, match="not trusted"):
        protection.verify_response(msg, mac=None, trust=[other.root], now=WHEN)


def test_ip_fields() -> None:
    msg = codec.decode_message((DATA / "ip_pbm.der").read_bytes())
    assert isinstance(msg.body, CertRepContent)
    (resp,) = msg.body.responses
    assert resp.cert_req_id == 0 and resp.status.granted
    assert resp.cert_der is not None
    cert = certs.load_certificate(resp.cert_der)
    assert cert.subject.rfc4514_string() == "CN=vpn-gw.example.com"
    assert [certs.load_certificate(c).subject for c in msg.body.ca_pubs] == [ROOT.subject]
    assert msg.header.sender_kid == b"1234"


def test_kur_fields_old_cert_id_and_pop() -> None:
    msg = codec.decode_message((DATA / "kur_sig.der").read_bytes())
    old = certs.load_certificate((DATA / "pki" / "old.crt").read_bytes())
    assert isinstance(msg.body, tuple)
    (req,) = msg.body
    assert isinstance(req, CertRequestInfo)
    assert req.old_cert_id is not None
    assert req.old_cert_id.serial == old.serial_number
    assert req.old_cert_id.issuer_der == old.issuer.public_bytes()
    assert req.popo_kind == "signature" and req.popo_alg is not None
    # the POP signature verifies over the raw CertRequest with the requested key
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    from swcmp.cmp import keys

    pub = load_der_public_key(req.public_key_der)  # type: ignore[arg-type]
    keys.verify(pub, req.popo_alg,
                req.popo_signature, req.request_der)  # type: ignore[arg-type]
    assert msg.header.sender_kid == certs.subject_key_id(old)


def test_error_fields() -> None:
    msg = codec.decode_message((DATA / "kup_err_wrongid.der").read_bytes())
    assert isinstance(msg.body, ErrorInfo)
    assert msg.body.status.status_name == "rejection"
    assert msg.body.status.fail_names == ("badRequest",)
    assert "wrong certid" in msg.body.details


def test_poll_and_rp_and_implicit_confirm() -> None:
    poll = codec.decode_message((DATA / "pollrep1.der").read_bytes())
    assert poll.body == (PollRepEntry(0, 1, ()),)
    rp = codec.decode_message((DATA / "rp.der").read_bytes())
    assert isinstance(rp.body, RevRepInfo) and rp.body.statuses[0].granted
    kup = codec.decode_message((DATA / "kup_implicit.der").read_bytes())
    assert kup.header.implicit_confirm
    waiting = codec.decode_message((DATA / "kup_waiting.der").read_bytes())
    assert isinstance(waiting.body, CertRepContent)
    assert waiting.body.responses[0].status.status_name == "waiting"


def test_certconf_hash_matches_the_certificate() -> None:
    from cryptography.hazmat.primitives import hashes

    kup = codec.decode_message((DATA / "kup_sig.der").read_bytes())
    conf = codec.decode_message((DATA / "certconf_sig.der").read_bytes())
    assert isinstance(kup.body, CertRepContent) and isinstance(conf.body, tuple)
    cert_der = kup.body.responses[0].cert_der
    assert cert_der is not None
    h = hashes.Hash(hashes.SHA256())
    h.update(cert_der)
    assert conf.body[0].cert_hash == h.finalize()  # type: ignore[union-attr]


@pytest.mark.parametrize("cut", [1, 10, 100])
def test_truncated_messages_raise_protocol_error(cut: int) -> None:
    data = (DATA / "kup_sig.der").read_bytes()
    with pytest.raises(ProtocolError):
        codec.decode_message(data[:-cut])


def test_trailing_garbage_is_refused() -> None:
    data = (DATA / "kup_sig.der").read_bytes()
    with pytest.raises(ProtocolError, match="left over"):
        codec.decode_message(data + b"\x00")


def test_size_limit() -> None:
    data = (DATA / "kup_sig.der").read_bytes()
    with pytest.raises(ProtocolError, match="limit"):
        codec.decode_message(data, max_size=len(data) - 1)
