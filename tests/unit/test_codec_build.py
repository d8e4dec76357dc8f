"""Builders round-trip through the parser; hostile bytes give ProtocolError only."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pki import big_crl, make_pki
from swcmp.cmp import certs, codec, der, keys, oids
from swcmp.cmp.messages import (
    AlgorithmId,
    CertRepContent,
    CertRequestInfo,
    CertResponse,
    ErrorInfo,
    InfoValue,
    OldCertId,
    PollRepEntry,
    RevDetailsInfo,
    RevRepInfo,
    StatusInfo,
)
from swcmp.errors import ProtocolError
from testpaths import DATA

ROOT_DER = certs.der_of(certs.load_certificate((DATA / "pki" / "root.crt").read_bytes()))
CN = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "gw1.example.net")]).public_bytes()


def header(**kw: object) -> bytes:
    fields: dict[str, object] = dict(
        sender_der=CN, recipient_der=CN, transaction_id=os.urandom(16),
        sender_nonce=os.urandom(16),
        message_time=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    )
    fields.update(kw)
    return codec.encode_header(codec.HeaderFields(**fields))  # type: ignore[arg-type]


def roundtrip(body: bytes, **kw: object):  # type: ignore[no-untyped-def]
    msg = codec.assemble(header(**kw), body, b"\x01" * 32, [ROOT_DER])
    out = codec.decode_message(msg)
    assert out.extra_certs == (ROOT_DER,)
    assert out.protection == b"\x01" * 32
    return out


def test_header_fields_roundtrip() -> None:
    tid, nonce, rn = os.urandom(16), os.urandom(16), os.urandom(16)
    h = header(transaction_id=tid, sender_nonce=nonce, recip_nonce=rn, sender_kid=b"ref",
               implicit_confirm=True, protection_alg=AlgorithmId(oids.ECDSA_SHA256))
    m = codec.decode_message(codec.assemble(h, codec.pkiconf_body(), None))
    assert m.body_type == "pkiconf" and m.body is None
    got = (m.header.transaction_id, m.header.sender_nonce, m.header.recip_nonce)
    assert got == (tid, nonce, rn)
    assert m.header.implicit_confirm and m.header.sender_kid == b"ref"
    assert m.header.message_time == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert m.header.sender_der == CN and m.header.pvno == 2
    assert m.header.protection_alg == AlgorithmId(oids.ECDSA_SHA256)


@pytest.mark.parametrize("key_type", ["rsa:2048", "ecdsa:p256", "ecdsa:p384", "ed25519"])
@pytest.mark.parametrize("kind", ["ir", "cr", "kur"])
def test_cert_request_roundtrip_with_pop(kind: str, key_type: str) -> None:
    key = keys.generate_key(key_type)
    alg = keys.default_signature_algorithm(key)
    old = OldCertId(CN, 12345) if kind == "kur" else None
    san = x509.SubjectAlternativeName([x509.DNSName("gw1.example.net")]).public_bytes()
    spec = codec.CertReqSpec(
        cert_req_id=0, spki_der=keys.spki_der(key), subject_der=CN,
        extensions_der=codec.extensions_der([(oids.SUBJECT_ALT_NAME, False, san)]),
        old_cert_id=old,
        sign_pop=lambda d: (AlgorithmId(alg.oid, alg.params_der), keys.sign(key, alg, d)))
    m = roundtrip(codec.cert_req_body(kind, [spec]))
    assert m.body_type == kind
    (req,) = m.body  # type: ignore[misc]
    assert isinstance(req, CertRequestInfo)
    assert req.public_key_der == keys.spki_der(key)
    assert req.subject_der == CN and req.old_cert_id == old
    assert req.popo_kind == "signature" and req.popo_alg is not None
    keys.verify(keys.public_key_of(key), req.popo_alg, req.popo_signature, req.request_der)  # type: ignore[arg-type]


def test_rep_bodies_roundtrip() -> None:
    ok = StatusInfo(0)
    rej = StatusInfo(2, frozenset({9, 19}), ("bad pop", "bad template"))
    m = roundtrip(codec.cert_rep_body("kup", [CertResponse(0, ok, ROOT_DER)], [ROOT_DER]))
    assert m.body == CertRepContent((CertResponse(0, ok, ROOT_DER),), (ROOT_DER,))
    m = roundtrip(codec.cert_rep_body("ip", [CertResponse(0, rej, None)]))
    assert isinstance(m.body, CertRepContent)
    assert m.body.responses[0].status.fail_names == ("badPOP", "badCertTemplate")
    m = roundtrip(codec.poll_rep_body([PollRepEntry(0, 7, ("busy",))]))
    assert m.body == (PollRepEntry(0, 7, ("busy",)),)
    m = roundtrip(codec.rp_body([ok]))
    assert m.body == RevRepInfo((ok,))
    m = roundtrip(codec.error_body(rej, error_code=42, details=("x",)))
    assert m.body == ErrorInfo(rej, 42, ("x",))


def test_req_bodies_roundtrip() -> None:
    m = roundtrip(codec.poll_req_body([0]))
    assert m.body == (0,)
    m = roundtrip(codec.genm_body([InfoValue(oids.IT_CA_CERTS, None)]))
    assert m.body == (InfoValue(oids.IT_CA_CERTS, None),)
    seq = codec.cert_seq_der([ROOT_DER])
    m = roundtrip(codec.genm_body([InfoValue(oids.IT_CA_CERTS, seq)], kind="genp"))
    assert codec.parse_ca_certs(m.body[0].value_der) == (ROOT_DER,)  # type: ignore[index,union-attr]
    m = roundtrip(codec.rr_body([(CN, 99, 4)]))
    assert m.body == (RevDetailsInfo(CN, 99, 4),)
    cs = (b"h" * 32, 0, StatusInfo(2, frozenset({7}), ("no",)), AlgorithmId(oids.SHA512))
    m = roundtrip(codec.cert_conf_body([cs]), pvno=3)
    assert m.header.pvno == 3
    assert m.body[0].hash_alg == AlgorithmId(oids.SHA512)  # type: ignore[index,union-attr]


def test_unsupported_version_refused() -> None:
    msg = codec.assemble(header(pvno=1), codec.pkiconf_body(), None)
    with pytest.raises(ProtocolError, match="pvno=1"):
        codec.decode_message(msg)


SAMPLES = [p.read_bytes() for p in sorted(DATA.glob("*.der"))]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SAMPLES), st.integers(0, 10_000), st.integers(1, 255))
def test_mutated_messages_raise_only_protocol_error(data: bytes, pos: int, xor: int) -> None:
    b = bytearray(data)
    b[pos % len(b)] ^= xor
    with contextlib.suppress(ProtocolError):
        codec.decode_message(bytes(b))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_protocol_error(data: bytes) -> None:
    try:
        codec.decode_message(data)
    except ProtocolError:
        pass
    else:  # random bytes are never a valid PKIMessage
        pytest.fail("random bytes decoded as a PKIMessage")


def test_a_genp_with_a_crl_of_1_mib_and_20000_entries_is_accepted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # legitimate data: a CA's CRL of 20,000 entries (140,000 DER elements) just under
    # 1 MiB. The bound is the size (and the CPU it costs, bench/bench_crl.py), not the
    # number of elements inside a value pyasn1 takes in one piece.
    pki = make_pki(tmp_path)
    crl = big_crl(pki.root.subject, pki.root_key, 20_000)
    crl_der = crl.public_bytes(serialization.Encoding.DER)
    assert 1_000_000 < len(crl_der) <= 1024 * 1024
    m = roundtrip(codec.genm_body([InfoValue(oids.IT_CURRENT_CRL, crl_der)], kind="genp"))
    assert m.body == (InfoValue(oids.IT_CURRENT_CRL, crl_der),)
    assert len(x509.load_der_x509_crl(m.body[0].value_der)) == 20_000  # type: ignore[index,union-attr,arg-type]


def test_elements_outside_genp_values_are_still_counted() -> None:
    # the same number of elements as free text of an error is refused before pyasn1
    texts = tuple("x" for _ in range(codec.MAX_ELEMENTS))
    with pytest.raises(ProtocolError, match="DER elements"):
        roundtrip(codec.error_body(StatusInfo(2, frozenset(), texts)))
    # and so is a genp whose items (not their values) are too many
    items = [InfoValue(oids.IT_CA_CERTS, None)] * (codec.MAX_ELEMENTS // 2)
    with pytest.raises(ProtocolError, match="DER elements"):
        roundtrip(codec.genm_body(items, kind="genp"))


def test_crl_status_list_value_decodes_with_pyasn1_alt_modules() -> None:
    from datetime import UTC, datetime

    from cryptography import x509 as cx509
    from cryptography.x509.oid import NameOID
    from pyasn1.codec.der import decoder as der_decoder
    from pyasn1.codec.der import encoder as der_encoder
    from pyasn1_alt_modules import rfc9480

    issuer = cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, "swcmp CRL issuer")])
    when = datetime(2026, 12, 7, 3, 4, 5, tzinfo=UTC)
    for this_update in (when, None, datetime(2051, 1, 1, tzinfo=UTC)):
        value = codec.crl_status_list_value(issuer.public_bytes(), this_update)
        decoded, rest = der_decoder.decode(value, asn1Spec=rfc9480.CRLStatusListValue())
        assert rest == b"" and der_encoder.encode(decoded) == value
        (status,) = list(decoded)
        names = status["source"]["issuer"]
        dn = der_encoder.encode(names[0]["directoryName"])  # [4] EXPLICIT Name
        assert dn[:1] == b"\xa4" and dn[2:] == issuer.public_bytes()
        if this_update is None:
            assert not status["thisUpdate"].isValue
        else:
            assert status["thisUpdate"].getComponent().asDateTime == this_update
    assert codec.parse_crls(None) == ()


def test_a_header_with_a_malformed_name_is_refused_every_time() -> None:
    good = x509.Name.from_rfc4514_string("CN=gw1").public_bytes()
    fields = codec.HeaderFields(sender_der=good, recipient_der=codec.NULL_DN_DER,
                                transaction_id=b"t" * 16, sender_nonce=b"n" * 16)
    assert codec.encode_header(fields) == codec.encode_header(fields)  # a checked name again
    for bad in (b"\x30\x03\x02\x01\x00", b"\x31\x00", good + b"\x00"):
        for _ in range(2):  # only a good name is remembered as checked
            with pytest.raises(ProtocolError, match=r"distinguished name|trailing"):
                codec.encode_header(dataclasses.replace(fields, sender_der=bad))


def _oracle_cert_req_messages(requests: list[codec.CertReqSpec]) -> bytes:
    """The same CertReqMessages built with pyasn1-alt-modules' RFC 4211 schema."""
    from pyasn1.codec.der import decoder, encoder
    from pyasn1.type import univ
    from pyasn1_alt_modules import rfc4211, rfc5280

    def copy_into(target: object, source: object) -> None:
        if isinstance(source, univ.SequenceOf):
            for item in source:
                target.append(item)  # type: ignore[attr-defined]
        else:
            for name in source:  # type: ignore[attr-defined]
                if source[name].isValue:  # type: ignore[index]
                    target[name] = source[name]  # type: ignore[index]

    msgs = rfc4211.CertReqMessages()
    for spec in requests:
        req = rfc4211.CertRequest()
        req["certReqId"] = spec.cert_req_id
        tmpl = req["certTemplate"]
        for slot, name_der in (("issuer", spec.issuer_der), ("subject", spec.subject_der)):
            if name_der is not None:
                tmpl[slot]["rdnSequence"] = decoder.decode(
                    name_der, asn1Spec=rfc5280.Name())[0]["rdnSequence"]
        copy_into(tmpl["publicKey"],
                  decoder.decode(spec.spki_der, asn1Spec=rfc5280.SubjectPublicKeyInfo())[0])
        if spec.extensions_der is not None:
            copy_into(tmpl["extensions"],
                      decoder.decode(spec.extensions_der, asn1Spec=rfc5280.Extensions())[0])
        if spec.old_cert_id is not None:
            cid = rfc4211.CertId()
            cid["issuer"]["directoryName"]["rdnSequence"] = decoder.decode(
                spec.old_cert_id.issuer_der, asn1Spec=rfc5280.Name())[0]["rdnSequence"]
            cid["serialNumber"] = spec.old_cert_id.serial
            ctrl = rfc5280.AttributeTypeAndValue()
            ctrl["type"] = rfc4211.id_regCtrl_oldCertID
            ctrl["value"] = encoder.encode(cid)
            req["controls"].append(ctrl)
        msg = rfc4211.CertReqMsg()
        msg["certReq"] = req
        popo = msg["popo"]
        if spec.sign_pop is None:
            popo["raVerified"] = popo["raVerified"].clone("")
        else:
            alg, sig = spec.sign_pop(encoder.encode(req))
            signed = popo["signature"]
            signed["algorithmIdentifier"]["algorithm"] = univ.ObjectIdentifier(alg.oid)
            if alg.params_der is not None:
                signed["algorithmIdentifier"]["parameters"] = alg.params_der
            signed["signature"] = univ.BitString.fromOctetString(sig)
        msgs.append(msg)
    return bytes(encoder.encode(msgs))


@pytest.mark.parametrize("key_type", ["rsa:2048", "ecdsa:p256", "ed25519"])
def test_a_cert_request_is_the_der_pyasn1_alt_modules_writes(key_type: str) -> None:
    key = keys.generate_key(key_type)
    alg = keys.default_signature_algorithm(key)
    san = x509.SubjectAlternativeName([x509.DNSName("gw1.example.net")]).public_bytes()
    issuer = x509.Name.from_rfc4514_string("CN=CA,O=Ex").public_bytes()
    full = codec.CertReqSpec(
        cert_req_id=0, spki_der=keys.spki_der(key), subject_der=CN, issuer_der=issuer,
        extensions_der=codec.extensions_der([(oids.SUBJECT_ALT_NAME, False, san)]),
        old_cert_id=OldCertId(issuer, 2**70 + 5),
        sign_pop=lambda d: (AlgorithmId(alg.oid, alg.params_der), keys.sign(key, alg, d)))
    bare = codec.CertReqSpec(cert_req_id=300, spki_der=keys.spki_der(key))
    for requests in ([full], [bare], [full, dataclasses.replace(bare, cert_req_id=-1)]):
        body = codec.cert_req_body("kur", requests)
        content = der.single(body).value  # the body's [n] around CertReqMessages
        # ECDSA signatures are randomised: the oracle gets the signature swcmp made over
        # the same CertRequest bytes (a KeyError when its CertRequest differs)
        sig_of = dict(zip(*_pops(content), strict=True))

        oracle = [r if r.sign_pop is None else _signed_as(r, alg.oid, alg.params_der, sig_of)
                  for r in requests]
        assert _oracle_cert_req_messages(oracle) == content


def _signed_as(spec: codec.CertReqSpec, oid: str, params: bytes | None,
               sig_of: dict[bytes, bytes]) -> codec.CertReqSpec:
    return dataclasses.replace(spec, sign_pop=lambda d: (AlgorithmId(oid, params), sig_of[d]))


def _pops(messages_der: bytes) -> tuple[list[bytes], list[bytes]]:
    """Each CertRequest's DER and its POP signature, from CertReqMessages."""
    reqs, sigs = [], []
    for msg in der.single(messages_der).children():
        req, *rest = msg.children()
        if rest and rest[0].tag == 0xA1:
            reqs.append(req.raw)
            sigs.append(rest[0].children()[1].value[1:])
    return reqs, sigs
