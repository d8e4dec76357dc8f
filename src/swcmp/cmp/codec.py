"""Build and parse CMP PKIMessages (RFC 4210, RFC 9480, CRMF RFC 4211).

With :mod:`swcmp.cmp.asn1` (its schemas), the only module that touches pyasn1.
Builders return DER bytes; the parser returns :mod:`swcmp.cmp.messages` dataclasses.
A message is assembled by hand from the encoded header, body, protection and
extraCerts, so that certificates are sent exactly as they were received and the
protection is computed over the very bytes that go on the wire. Certificates, CRLs
and PKCS#10 requests are never decoded here: they travel as bytes, cut out by
:mod:`swcmp.cmp.der` and parsed by cryptography.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pyasn1.codec.der import decoder, encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import char, univ, useful

from swcmp.cmp import asn1, der, oids
from swcmp.cmp.errors import ProtectionError, ProtocolError
from swcmp.cmp.messages import (
    AlgorithmId,
    Body,
    CertRepContent,
    CertRequestInfo,
    CertResponse,
    CertStatusInfo,
    ErrorInfo,
    Header,
    InfoValue,
    OldCertId,
    PKIMessageInfo,
    PollRepEntry,
    RevDetailsInfo,
    RevRepInfo,
    RootCaKeyUpdate,
    StatusInfo,
)

log = logging.getLogger(__name__)

#: Largest message swcmp decodes; CMP messages with a few certificates are a few KiB, a
#: genp with a CA's CRL may hold a CRL of 1 MiB (20,000 entries or more) and its envelope.
MAX_MESSAGE_SIZE = 2 * 1024 * 1024
#: DER elements in a message's header and body that swcmp hands to pyasn1 (a certificate
#: has a few hundred; pyasn1 needs about 4 microseconds each), and how deep they may nest.
#: The values of genm/genp items (CA certificates, a CRL, a root update) are not counted:
#: pyasn1 takes them as ANY (their bytes, in one piece) and cryptography parses them, at a
#: cost bounded by their size (bench/bench_hostile.py measures a 1 MiB CRL).
MAX_ELEMENTS = 50_000
MAX_DEPTH = 48
#: extraCerts one message may carry (more is refused; they are not decoded by pyasn1).
MAX_EXTRA_CERTS = 256
#: Largest checkAfter (seconds) taken from a pollRep; a larger one is taken as this.
MAX_CHECK_AFTER = 7 * 86400
#: Integers that name things (pvno, certReqId, status, errorCode) beyond this are refused.
_MAX_SMALL_INT = 2**63

# PKIBody alternatives by context tag number (RFC 4210 5.1.2, RFC 9480).
BODY_TAGS: dict[int, str] = {
    0: "ir", 1: "ip", 2: "cr", 3: "cp", 4: "p10cr", 5: "popdecc", 6: "popdecr",
    7: "kur", 8: "kup", 9: "krr", 10: "krp", 11: "rr", 12: "rp", 13: "ccr", 14: "ccp",
    15: "ckuann", 16: "cann", 17: "rann", 18: "crlann", 19: "pkiconf", 20: "nested",
    21: "genm", 22: "genp", 23: "error", 24: "certConf", 25: "pollReq", 26: "pollRep",
}
BODY_NUMBERS: dict[str, int] = {name: n for n, name in BODY_TAGS.items()}
CERT_REQ_BODIES = ("ir", "cr", "kur")
CERT_REP_BODIES = ("ip", "cp", "kup")

NULL_DN_DER = b"\x30\x00"


# --------------------------------------------------------------------------- helpers


def _decode(data: bytes, spec: Any, what: str) -> Any:
    try:
        obj, rest = decoder.decode(data, asn1Spec=spec)
    except PyAsn1Error as e:
        log.debug("decoding the %s failed: %s", what, _short(e))
        raise ProtocolError(f"malformed {what}: it does not match the syntax of a {what}"
                            ) from e
    if rest:
        raise ProtocolError(f"malformed {what}: {len(rest)} trailing bytes")
    return obj


def _copy_into(target: Any, source: Any) -> None:
    """Copy a decoded value's components into a (differently tagged) schema slot."""
    if isinstance(source, univ.Choice):
        name = source.getName()
        target.setComponentByName(name, source.getComponent())
    elif isinstance(source, univ.SequenceOf | univ.SetOf):
        for item in source:
            target.append(item)
    else:
        for name in source:
            if source[name].isValue:
                target[name] = source[name]


def _put(obj: Any, name: str, value: Any) -> None:
    """Set a (possibly tagged) scalar component, keeping the schema's tags."""
    obj[name] = obj[name].clone(value)


def _enc(obj: Any) -> bytes:
    return bytes(encoder.encode(obj))


def _alg(target: Any, alg: AlgorithmId) -> None:
    target["algorithm"] = univ.ObjectIdentifier(alg.oid)
    if alg.params_der is not None:
        target["parameters"] = univ.Any(alg.params_der)


def _alg_of(obj: Any) -> AlgorithmId:
    params = obj["parameters"]
    return AlgorithmId(str(obj["algorithm"]), bytes(params) if params.isValue else None)


def _free_text(target: Any, texts: Iterable[str]) -> None:
    for t in texts:
        target.append(char.UTF8String(t))


def _texts(obj: Any) -> tuple[str, ...]:
    if not obj.isValue:
        return ()
    return tuple(str(t) for t in obj)


def _status_info(target: Any, st: StatusInfo) -> None:
    target["status"] = st.status
    if st.text:
        _free_text(target["statusString"], st.text)
    if st.fail_info:
        top = max(st.fail_info)
        bits = "".join("1" if i in st.fail_info else "0" for i in range(top + 1))
        target["failInfo"] = asn1.PKIFailureInfo(binValue=bits)


#: failInfo bits looked at: RFC 9480 names 27; a longer BIT STRING is cut here.
_MAX_FAIL_BITS = 64


def _parse_status(obj: Any) -> StatusInfo:
    fail: set[int] = set()
    if obj["failInfo"].isValue:
        bits = obj["failInfo"]
        n = len(bits)
        value = bits.asInteger() >> max(n - _MAX_FAIL_BITS, 0)  # the first bits only
        n = min(n, _MAX_FAIL_BITS)
        fail = {i for i in range(n) if value >> (n - 1 - i) & 1}
    return StatusInfo(_small_int(obj["status"], "PKIStatus"), frozenset(fail),
                      _texts(obj["statusString"]))


def _gtime(dt: datetime) -> useful.GeneralizedTime:
    return useful.GeneralizedTime(dt.astimezone(UTC).strftime("%Y%m%d%H%M%SZ"))


#: GeneralName alternatives by tag (RFC 5280 4.2.1.6): directoryName [4] is explicitly
#: tagged (a Name is a CHOICE); otherName, x400Address and ediPartyName are constructed.
_DIRECTORY_NAME = 0xA4
_GENERAL_NAME_TAGS = frozenset({0xA0, 0x81, 0x82, 0xA3, 0xA5, 0x86, 0x87, 0x88})


def _name_der_of_general_name(gn: Any) -> bytes | None:
    """The DER Name of a GeneralName that is a directoryName, as received; None for the
    other alternatives; ProtocolError when it is no GeneralName."""
    tlv = der.single(bytes(gn))
    if tlv.tag == _DIRECTORY_NAME:
        inner = tlv.children()
        if len(inner) != 1:
            raise ProtocolError("malformed directoryName in a GeneralName")
        name_key(inner[0].raw)  # a Name: SEQUENCE OF SET OF (OID, value), else ProtocolError
        return inner[0].raw
    if tlv.tag not in _GENERAL_NAME_TAGS:
        raise ProtocolError(f"malformed GeneralName (tag 0x{tlv.tag:x})")
    return None


def _directory_name(name_der: bytes) -> univ.Any:
    """A GeneralName directoryName around a DER Name (checked to be one)."""
    _check_name(bytes(name_der))
    return univ.Any(bytes([_DIRECTORY_NAME]) + der.encode_length(len(name_der)) + name_der)


@functools.lru_cache(maxsize=64)
def _check_name(name_der: bytes) -> None:
    # Every message of a transaction names the same sender and recipient: a Name is
    # checked once (only a good one is remembered; a bad one raises every time).
    _decode(name_der, asn1.Name(), "distinguished name")


def _itav(oid: str, value_der: bytes | None) -> Any:
    itav = asn1.InfoTypeAndValue()
    itav["infoType"] = univ.ObjectIdentifier(oid)
    if value_der is not None:
        itav["infoValue"] = univ.Any(value_der)
    return itav


# --------------------------------------------------------------------------- header


@dataclass(frozen=True)
class HeaderFields:
    """What goes into a PKIHeader that swcmp builds.

    ``sender_der``/``recipient_der`` are DER Names (``NULL_DN_DER`` for none);
    ``protection_alg`` and ``sender_kid`` come from the protector.
    """

    sender_der: bytes
    recipient_der: bytes
    transaction_id: bytes
    sender_nonce: bytes
    recip_nonce: bytes | None = None
    message_time: datetime | None = None
    protection_alg: AlgorithmId | None = None
    sender_kid: bytes | None = None
    recip_kid: bytes | None = None
    implicit_confirm: bool = False
    confirm_wait_time: datetime | None = None
    free_text: tuple[str, ...] = ()
    pvno: int = 2
    cert_profile: str | None = None


def encode_header(h: HeaderFields) -> bytes:
    """DER of a PKIHeader."""
    hdr = asn1.PKIHeader()
    hdr["pvno"] = h.pvno
    hdr["sender"] = _directory_name(h.sender_der)
    hdr["recipient"] = _directory_name(h.recipient_der)
    if h.message_time is not None:
        _put(hdr, "messageTime", str(_gtime(h.message_time)))
    if h.protection_alg is not None:
        _alg(hdr["protectionAlg"], h.protection_alg)
    if h.sender_kid is not None:
        _put(hdr, "senderKID", h.sender_kid)
    if h.recip_kid is not None:
        _put(hdr, "recipKID", h.recip_kid)
    _put(hdr, "transactionID", h.transaction_id)
    _put(hdr, "senderNonce", h.sender_nonce)
    if h.recip_nonce is not None:
        _put(hdr, "recipNonce", h.recip_nonce)
    if h.free_text:
        _free_text(hdr["freeText"], h.free_text)
    if h.implicit_confirm or h.confirm_wait_time is not None or h.cert_profile is not None:
        gi = hdr["generalInfo"]
        if h.implicit_confirm:
            gi.append(_itav(oids.IT_IMPLICIT_CONFIRM, b"\x05\x00"))
        if h.confirm_wait_time is not None:
            gi.append(_itav(oids.IT_CONFIRM_WAIT_TIME, _enc(_gtime(h.confirm_wait_time))))
        if h.cert_profile is not None:  # RFC 9483 3.1: SEQUENCE OF UTF8String, one profile
            profile = asn1.CertProfileValue()
            profile.append(char.UTF8String(h.cert_profile))
            gi.append(_itav(oids.IT_CERT_PROFILE, _enc(profile)))
    return _enc(hdr)


def _utc_time(value: Any, what: str) -> datetime:
    """A GeneralizedTime as an aware UTC datetime; ProtocolError when it has none.

    A legal time such as ``99991231235959-1200`` lies beyond year 9999 in UTC:
    Python cannot hold it, and it is refused like any malformed time.
    """
    try:
        t: datetime = value.asDateTime
        return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    except (PyAsn1Error, ValueError, OverflowError) as e:
        raise ProtocolError(f"malformed or out-of-range {what}: {_short(e)}") from e


def _small_int(value: Any, what: str) -> int:
    """An INTEGER that counts or names something; ProtocolError beyond 64 bits."""
    n = int(value)
    if not -_MAX_SMALL_INT <= n < _MAX_SMALL_INT:
        raise ProtocolError(f"{what} out of range ({n.bit_length()}-bit integer)")
    return n


def _short(e: BaseException) -> str:
    """An exception's text, shortened and with control characters escaped."""
    from swcmp.cmp.text import safe

    text = str(e)
    return safe(text if len(text) <= 200 else text[:200] + "...")


def _parse_header(hdr: Any) -> Header:
    def octets(name: str) -> bytes | None:
        v = hdr[name]
        return bytes(v) if v.isValue else None

    general_oids: list[str] = []
    implicit = False
    wait_time = None
    if hdr["generalInfo"].isValue:
        for itav in hdr["generalInfo"]:
            oid = str(itav["infoType"])
            general_oids.append(oid)
            if oid == oids.IT_IMPLICIT_CONFIRM:
                implicit = True
            elif oid == oids.IT_CONFIRM_WAIT_TIME and itav["infoValue"].isValue:
                t = _decode(bytes(itav["infoValue"]), useful.GeneralizedTime(), "confirmWaitTime")
                wait_time = _utc_time(t, "confirmWaitTime")
    msg_time = None
    if hdr["messageTime"].isValue:
        msg_time = _utc_time(hdr["messageTime"], "messageTime")
    return Header(
        pvno=_small_int(hdr["pvno"], "pvno"),
        sender_der=_name_der_of_general_name(hdr["sender"]),
        recipient_der=_name_der_of_general_name(hdr["recipient"]),
        transaction_id=octets("transactionID"),
        sender_nonce=octets("senderNonce"),
        recip_nonce=octets("recipNonce"),
        message_time=msg_time,
        protection_alg=_alg_of(hdr["protectionAlg"]) if hdr["protectionAlg"].isValue else None,
        sender_kid=octets("senderKID"),
        recip_kid=octets("recipKID"),
        free_text=_texts(hdr["freeText"]),
        implicit_confirm=implicit,
        confirm_wait_time=wait_time,
        general_info_oids=tuple(general_oids),
    )


# --------------------------------------------------------------------------- bodies (build)


def _content(kind: str) -> Any:
    """An empty schema object for the content of a PKIBody alternative."""
    return asn1.BODY_CONTENT[kind]()


def _body(kind: str, content: Any) -> bytes:
    """DER of a PKIBody: the content (a schema object or DER) under its explicit tag."""
    content_der = content if isinstance(content, bytes) else _enc(content)
    return bytes([0xA0 | BODY_NUMBERS[kind]]) + der.encode_length(len(content_der)) + content_der


@dataclass(frozen=True)
class CertReqSpec:
    """One certificate request to put in an ir, cr or kur.

    ``sign_pop`` signs the DER CertRequest for signature POP (with the key
    being certified) and returns (algorithm, signature); None sends
    raVerified, which only an RA may do.
    """

    cert_req_id: int
    spki_der: bytes
    subject_der: bytes | None = None
    issuer_der: bytes | None = None
    extensions_der: bytes | None = None
    old_cert_id: OldCertId | None = None
    sign_pop: Callable[[bytes], tuple[AlgorithmId, bytes]] | None = None


def cert_id_der(cid: OldCertId) -> bytes:
    """DER of a CRMF CertId (issuer as a directoryName GeneralName)."""
    obj = asn1.CertId()
    obj["issuer"] = _directory_name(cid.issuer_der)
    obj["serialNumber"] = cid.serial
    return _enc(obj)


def cert_req_body(kind: str, requests: Sequence[CertReqSpec]) -> bytes:
    """An ir, cr or kur body with signature POP.

    Written as DER directly around the parts (each checked against its schema first):
    building the schema objects and encoding them cost a quarter of a KUR's CPU.
    tests/unit/test_codec_build.py compares the result with pyasn1-alt-modules' encoding
    of the same request.
    """
    if kind not in CERT_REQ_BODIES:
        raise ValueError(kind)
    msgs: list[bytes] = []
    for spec in requests:
        template: list[bytes] = []
        if spec.issuer_der is not None:  # [3] EXPLICIT: Name is a CHOICE
            _checked(spec.issuer_der, asn1.Name(), "issuer name")
            template.append(_tlv(0xA3, spec.issuer_der))
        if spec.subject_der is not None:  # [5] EXPLICIT
            _checked(spec.subject_der, asn1.Name(), "subject name")
            template.append(_tlv(0xA5, spec.subject_der))
        _checked(spec.spki_der, asn1.SubjectPublicKeyInfo(), "public key")
        template.append(_retagged(0xA6, spec.spki_der))  # [6] IMPLICIT
        if spec.extensions_der is not None:
            _checked(spec.extensions_der, asn1.Extensions(), "extensions")
            template.append(_retagged(0xA9, spec.extensions_der))  # [9] IMPLICIT
        parts = [_der_integer(spec.cert_req_id), der.sequence(*template)]
        if spec.old_cert_id is not None:
            parts.append(der.sequence(der.sequence(  # Controls: one AttributeTypeAndValue
                _der_oid(oids.REG_CTRL_OLD_CERT_ID), cert_id_der(spec.old_cert_id))))
        req_der = der.sequence(*parts)
        if spec.sign_pop is None:
            popo = b"\x80\x00"  # raVerified [0] NULL
        else:
            alg, sig = spec.sign_pop(req_der)
            popo = _tlv(0xA1, _alg_der(alg) + _tlv(0x03, b"\x00" + sig))  # [1] POPOSigningKey
        msgs.append(der.sequence(req_der, popo))
    return _body(kind, der.sequence(*msgs))


def _checked(data: bytes, spec: Any, what: str) -> None:
    """``data`` decodes as ``spec`` (ProtocolError otherwise). The parts come from
    cryptography's and this module's DER encoders and go into the request as they are."""
    _decode(data, spec, what)


def _retagged(tag: int, element: bytes) -> bytes:
    """A SEQUENCE under an IMPLICIT context tag: the same content, the tag replaced."""
    return _tlv(tag, der.single(element).value)


def _der_integer(n: int) -> bytes:
    return _tlv(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True))


def _der_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return _tlv(0x06, bytes(body))


def _alg_der(alg: AlgorithmId) -> bytes:
    return der.sequence(_der_oid(alg.oid),
                        *([alg.params_der] if alg.params_der is not None else []))


def _whole_sequence(data: bytes, what: str) -> bytes:
    """``data`` when it is one DER SEQUENCE (a certificate or request passed as bytes)."""
    try:
        if der.single(data).tag == 0x30:
            return data
    except ProtocolError:
        pass
    raise ProtocolError(f"malformed {what}: not one DER SEQUENCE")


def p10cr_body(csr_der: bytes) -> bytes:
    """A p10cr body around a PKCS#10 request (checked by cryptography, sent as given)."""
    from cryptography import x509

    try:
        x509.load_der_x509_csr(_whole_sequence(csr_der, "PKCS#10 request"))
    except ValueError as e:
        raise ProtocolError("malformed PKCS#10 request") from e
    return _body("p10cr", csr_der)


def cert_conf_body(
    entries: Sequence[tuple[bytes, int, StatusInfo | None, AlgorithmId | None]],
) -> bytes:
    """A certConf: per certificate (certHash, certReqId, statusInfo, hashAlg)."""
    content = _content("certConf")
    for cert_hash, req_id, status, hash_alg in entries:
        cs = asn1.CertStatus()
        cs["certHash"] = cert_hash
        cs["certReqId"] = req_id
        if status is not None:
            _status_info(cs["statusInfo"], status)
        if hash_alg is not None:
            _alg(cs["hashAlg"], hash_alg)
        content.append(cs)
    return _body("certConf", content)


def poll_req_body(cert_req_ids: Sequence[int]) -> bytes:
    """A pollReq for the given certReqIds."""
    content = _content("pollReq")
    for rid in cert_req_ids:
        item = asn1.PollReqEntry()
        item["certReqId"] = rid
        content.append(item)
    return _body("pollReq", content)


def genm_body(items: Sequence[InfoValue], *, kind: str = "genm") -> bytes:
    """A genm (or, for a CA, genp) with the given InfoTypeAndValues."""
    content = _content(kind)
    for item in items:
        content.append(_itav(item.oid, item.value_der))
    return _body(kind, content)


def cert_seq_der(certs: Sequence[bytes]) -> bytes:
    """DER SEQUENCE OF Certificate from raw certificate bytes (kept exact)."""
    return der.sequence(*certs)


def rr_body(entries: Sequence[tuple[bytes, int, int | None]]) -> bytes:
    """An rr: per certificate (issuer Name DER, serial, CRL reason code or None)."""
    content = _content("rr")
    for issuer_der, serial, reason in entries:
        rd = asn1.RevDetails()
        tmpl = rd["certDetails"]
        tmpl["issuer"]["rdnSequence"] = _decode(issuer_der, asn1.Name(), "issuer")[
            "rdnSequence"
        ]
        _put(tmpl, "serialNumber", serial)
        if reason is not None:
            ext = asn1.Extension()
            ext["extnID"] = univ.ObjectIdentifier(oids.CRL_REASON)
            ext["extnValue"] = _enc(univ.Enumerated(reason))
            rd["crlEntryDetails"].append(ext)
        content.append(rd)
    return _body("rr", content)


def error_body(status: StatusInfo, *, error_code: int | None = None,
               details: Sequence[str] = ()) -> bytes:
    """An error message body."""
    content = _content("error")
    _status_info(content["pKIStatusInfo"], status)
    if error_code is not None:
        content["errorCode"] = error_code
    if details:
        _free_text(content["errorDetails"], details)
    return _body("error", content)


def pkiconf_body() -> bytes:
    """A pkiconf body (NULL)."""
    return _body("pkiconf", _enc(univ.Null("")))


def cert_rep_body(kind: str, responses: Sequence[CertResponse],
                  ca_pubs: Sequence[bytes] = ()) -> bytes:
    """An ip, cp or kup body (for the test CA)."""
    if kind not in CERT_REP_BODIES:
        raise ValueError(kind)
    content = _content(kind)
    for cert in ca_pubs:
        content["caPubs"].append(univ.Any(_whole_sequence(cert, "CA certificate")))
    for r in responses:
        cr = asn1.CertResponse()
        cr["certReqId"] = r.cert_req_id
        _status_info(cr["status"], r.status)
        if r.cert_der is not None:
            _put(cr["certifiedKeyPair"]["certOrEncCert"], "certificate",
                 _whole_sequence(r.cert_der, "certificate"))
        content["response"].append(cr)
    return _body(kind, content)


def poll_rep_body(entries: Sequence[PollRepEntry]) -> bytes:
    """A pollRep (for the test CA)."""
    content = _content("pollRep")
    for e in entries:
        item = asn1.PollRepEntry()
        item["certReqId"] = e.cert_req_id
        item["checkAfter"] = e.check_after
        if e.reason:
            _free_text(item["reason"], e.reason)
        content.append(item)
    return _body("pollRep", content)


def rp_body(statuses: Sequence[StatusInfo]) -> bytes:
    """An rp (for the test CA)."""
    content = _content("rp")
    for st in statuses:
        item = asn1.PKIStatusInfo()
        _status_info(item, st)
        content["status"].append(item)
    return _body("rp", content)


# --------------------------------------------------------------------------- algorithm parameters
# The parameters of the MAC and signature algorithms, encoded and decoded here so that
# the protection and key code never touch pyasn1. Decoders only decode; the bounds on
# what is accepted (sizes, counts) are the caller's.


@dataclass(frozen=True)
class PbmFields:
    """PBMParameter (RFC 4210 5.1.3.1) as plain values."""

    salt: bytes
    owf_oid: str
    iterations: int
    mac_oid: str


@dataclass(frozen=True)
class Pbmac1Fields:
    """PBMAC1-params with a PBKDF2 key derivation (RFC 8018, RFC 9481 6.1.2)."""

    kdf_oid: str
    salt: bytes
    iterations: int
    prf_oid: str | None  # None: absent, which means HMAC-SHA1
    key_length: int | None
    mac_oid: str


def encode_pbm_params(f: PbmFields) -> bytes:
    params = asn1.PBMParameter()
    params["salt"] = f.salt
    params["owf"]["algorithm"] = univ.ObjectIdentifier(f.owf_oid)
    params["iterationCount"] = f.iterations
    params["mac"]["algorithm"] = univ.ObjectIdentifier(f.mac_oid)
    return _enc(params)


def decode_pbm_params(params_der: bytes) -> PbmFields:
    """ProtectionError when the DER is not one PBMParameter."""
    try:
        params, rest = decoder.decode(params_der, asn1Spec=asn1.PBMParameter())
        if rest:
            raise ProtectionError("PasswordBasedMac parameters have trailing bytes")
        return PbmFields(bytes(params["salt"]), str(params["owf"]["algorithm"]),
                         int(params["iterationCount"]),
                         str(params["mac"]["algorithm"]))
    except PyAsn1Error as e:
        raise ProtectionError("malformed PasswordBasedMac parameters") from e


def encode_pbmac1_params(f: Pbmac1Fields) -> bytes:
    """PBMAC1-params with PBKDF2 (salt specified, the PRF and the MAC with NULL
    parameters, as RFC 8018's HMAC algorithm identifiers have)."""
    null = _enc(univ.Null(""))
    kdf = asn1.PBKDF2Params()
    kdf["salt"]["specified"] = f.salt
    kdf["iterationCount"] = f.iterations
    if f.key_length is not None:
        kdf["keyLength"] = f.key_length
    if f.prf_oid is not None:
        kdf["prf"]["algorithm"] = univ.ObjectIdentifier(f.prf_oid)
        kdf["prf"]["parameters"] = univ.Any(null)
    params = asn1.PBMAC1Params()
    params["keyDerivationFunc"]["algorithm"] = univ.ObjectIdentifier(f.kdf_oid)
    params["keyDerivationFunc"]["parameters"] = univ.Any(_enc(kdf))
    params["messageAuthScheme"]["algorithm"] = univ.ObjectIdentifier(f.mac_oid)
    params["messageAuthScheme"]["parameters"] = univ.Any(null)
    return _enc(params)


def decode_pbmac1_params(params_der: bytes) -> Pbmac1Fields:
    """ProtectionError when the DER is not PBMAC1-params (its KDF's are decoded only
    when the KDF is PBKDF2, the only one RFC 9481 names)."""
    try:
        params, rest = decoder.decode(params_der, asn1Spec=asn1.PBMAC1Params())
        if rest:
            raise ProtectionError("PBMAC1 parameters have trailing bytes")
        kdf = params["keyDerivationFunc"]
        kdf_oid = str(kdf["algorithm"])
        mac_oid = str(params["messageAuthScheme"]["algorithm"])
        if kdf_oid != oids.PBKDF2:
            return Pbmac1Fields(kdf_oid, b"", 0, None, None, mac_oid)
        kparams, _ = decoder.decode(bytes(kdf["parameters"]), asn1Spec=asn1.PBKDF2Params())
        return Pbmac1Fields(
            kdf_oid,
            bytes(kparams["salt"]["specified"]),
            int(kparams["iterationCount"]),
            str(kparams["prf"]["algorithm"]) if kparams["prf"].isValue else None,
            int(kparams["keyLength"]) if kparams["keyLength"].isValue else None,
            mac_oid,
        )
    except PyAsn1Error as e:
        raise ProtectionError("malformed PBMAC1 parameters") from e


def encode_pss_params(hash_oid: str, salt_length: int) -> bytes:
    """RSASSA-PSS-params with MGF1 over the same hash (RFC 4055)."""
    params = asn1.RSASSAPSSParams()
    params["hashAlgorithm"]["algorithm"] = univ.ObjectIdentifier(hash_oid)
    params["maskGenAlgorithm"]["algorithm"] = univ.ObjectIdentifier(oids.MGF1)
    mgf_hash = asn1.AlgorithmIdentifier()
    mgf_hash["algorithm"] = univ.ObjectIdentifier(hash_oid)
    params["maskGenAlgorithm"]["parameters"] = encoder.encode(mgf_hash)
    params["saltLength"] = salt_length
    return _enc(params)


def decode_pss_params(params_der: bytes) -> tuple[str, str | None, int]:
    """(hash OID, MGF1 hash OID or None when absent, salt length) of RSASSA-PSS-params."""
    try:
        params, rest = decoder.decode(params_der, asn1Spec=asn1.RSASSAPSSParams())
        if rest:
            raise ProtectionError("RSASSA-PSS parameters have trailing bytes")
        mgf_params = params["maskGenAlgorithm"]["parameters"]
        mgf_hash = None
        if mgf_params.isValue:
            mgf_alg, _ = decoder.decode(bytes(mgf_params), asn1Spec=asn1.AlgorithmIdentifier())
            mgf_hash = str(mgf_alg["algorithm"])
        return (str(params["hashAlgorithm"]["algorithm"]), mgf_hash,
                int(params["saltLength"]))
    except PyAsn1Error as e:
        raise ProtectionError("RSASSA-PSS parameters do not decode") from e


# --------------------------------------------------------------------------- envelope


def protected_part(header_der: bytes, body_der: bytes) -> bytes:
    """DER of ProtectedPart ::= SEQUENCE { header, body }: what protection covers."""
    return der.sequence(header_der, body_der)


def assemble(header_der: bytes, body_der: bytes, protection: bytes | None,
             extra_certs: Sequence[bytes] = ()) -> bytes:
    """A whole PKIMessage from its encoded parts."""
    parts = [header_der, body_der]
    if protection is not None:
        bits = b"\x03" + der.encode_length(len(protection) + 1) + b"\x00" + protection
        parts.append(b"\xa0" + der.encode_length(len(bits)) + bits)
    if extra_certs:
        seq = der.sequence(*extra_certs)
        parts.append(b"\xa1" + der.encode_length(len(seq)) + seq)
    return der.sequence(*parts)


# --------------------------------------------------------------------------- parsing


def decode_message(data: bytes, *, max_size: int = MAX_MESSAGE_SIZE) -> PKIMessageInfo:
    """Decode a PKIMessage strictly; ProtocolError for anything malformed or unsupported."""
    if len(data) > max_size:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the {max_size}-byte limit")
    try:
        return _decode_message(data)
    except ProtocolError:
        raise
    except (PyAsn1Error, ValueError, TypeError, LookupError, AttributeError, ArithmeticError,
            RecursionError) as e:
        # pyasn1 raises a zoo of exceptions on hostile input (UnicodeError is a
        # ValueError, OverflowError an ArithmeticError); none may escape raw, and
        # pyasn1's own wording (schema dumps) is for the debug log only.
        log.debug("decoding a CMP message failed: %s: %s", type(e).__name__, _short(e))
        raise ProtocolError(
            "malformed CMP message: its content does not match the CMP syntax "
            f"(RFC 4210/9480) ({type(e).__name__})").with_hint(
            "the answer was damaged on the way or the server is not a CMP server; "
            "-v shows details") from e


def _pyasn1_view(body_tlv: der.TLV) -> bytes:
    """The body as pyasn1 walks it, for counting its elements.

    In a genm or genp, each InfoTypeAndValue's value is an ANY: pyasn1 takes its
    bytes without looking inside, so it stands here as one element (a NULL). Any
    other body is counted as it is.
    """
    if BODY_TAGS.get(body_tlv.tag - 0xA0) not in ("genm", "genp") or body_tlv.tag & 0xE0 != 0xA0:
        return body_tlv.raw
    inner_tlvs = body_tlv.children()
    if len(inner_tlvs) != 1 or inner_tlvs[0].tag != 0x30:
        return body_tlv.raw  # refused by the decoder; counted as it is meanwhile
    items = []
    for item in inner_tlvs[0].children():
        fields = item.children() if item.constructed else []
        items.append(der.sequence(*(f.raw for f in fields[:1]), *([b"\x05\x00"] * (
            len(fields) > 1)), *(f.raw for f in fields[2:])))
    inner = der.sequence(*items)
    return bytes([body_tlv.tag]) + der.encode_length(len(inner)) + inner


def _decode_message(data: bytes) -> PKIMessageInfo:
    outer = der.single(data)
    if outer.tag != 0x30:
        raise ProtocolError("not a CMP message (expected a SEQUENCE)")
    parts = outer.children()
    if len(parts) < 2:
        raise ProtocolError("CMP message without header or body")
    header_tlv, body_tlv = parts[0], parts[1]
    protection: bytes | None = None
    extra: tuple[bytes, ...] = ()
    for p in parts[2:]:
        if p.tag == 0xA0 and protection is None and not extra:
            (bits,) = p.children()
            if bits.tag != 0x03 or not bits.value or bits.value[0] != 0:
                raise ProtocolError("malformed protection BIT STRING")
            protection = bits.value[1:]
        elif p.tag == 0xA1 and not extra:
            (seq,) = p.children()
            if seq.tag != 0x30:
                raise ProtocolError("extraCerts is not a SEQUENCE")
            extra = tuple(c.raw for c in seq.children())
            if not extra:
                raise ProtocolError("extraCerts present but empty")
            if len(extra) > MAX_EXTRA_CERTS:
                raise ProtocolError(f"{len(extra)} extraCerts, more than the "
                                    f"{MAX_EXTRA_CERTS} accepted")
            if any(c[:1] != b"\x30" for c in extra):
                raise ProtocolError("an extraCert is not a SEQUENCE")
        else:
            raise ProtocolError(f"unexpected element (tag 0x{p.tag:x}) in CMP message")

    # pyasn1 sees only the header and the body, and only after they were counted:
    # its cost grows with the number of elements, and extraCerts (outside the
    # protection, so anyone's to add) are left to cryptography, a few at a time.
    core = der.sequence(header_tlv.raw, _pyasn1_view(body_tlv))
    der.census(core, max_elements=MAX_ELEMENTS, max_depth=MAX_DEPTH)
    if header_tlv.tag != 0x30:
        raise ProtocolError("malformed CMP message: the header is not a SEQUENCE")
    header = _parse_header(_decode(header_tlv.raw, asn1.PKIHeader(), "CMP message"))
    # The PKIBody is a CHOICE of explicitly tagged alternatives: [n] around the content.
    number = body_tlv.tag - 0xA0
    kind = BODY_TAGS.get(number, "") if body_tlv.tag & 0xE0 == 0xA0 else ""
    inner_tlvs = body_tlv.children() if kind else []
    if len(inner_tlvs) != 1:
        raise ProtocolError("malformed CMP message: its body is not a PKIBody")
    # Some CAs answer with pvno 1 (cmp1999) in error messages; their status and text
    # are still worth showing. Anything else must be CMPv2 (2) or v3 (3).
    if header.pvno not in (2, 3) and not (header.pvno == 1 and kind == "error"):
        raise ProtocolError(f"unsupported CMP version pvno={header.pvno}")
    spec = asn1.BODY_CONTENT.get(kind)
    if spec is None:
        raise ProtocolError(f"unsupported CMP message type {kind}")
    inner = inner_tlvs[0]
    content = _decode(inner.raw, spec(), "CMP message")
    parsed: Body
    if kind in CERT_REQ_BODIES:
        parsed = _parse_cert_req(content, inner)
    elif kind in CERT_REP_BODIES:
        parsed = _parse_cert_rep(content, inner)
    elif kind == "p10cr":
        parsed = _whole_sequence(inner.raw, "PKCS#10 request")
    elif kind == "certConf":
        parsed = tuple(
            CertStatusInfo(
                cert_hash=bytes(cs["certHash"]),
                cert_req_id=_small_int(cs["certReqId"], "certReqId"),
                status=_parse_status(cs["statusInfo"]) if cs["statusInfo"].isValue else None,
                hash_alg=_alg_of(cs["hashAlg"]) if cs["hashAlg"].isValue else None,
            )
            for cs in content
        )
    elif kind == "pollReq":
        parsed = tuple(_small_int(item["certReqId"], "certReqId") for item in content)
    elif kind == "pollRep":
        parsed = tuple(
            PollRepEntry(_small_int(i["certReqId"], "certReqId"),
                         min(max(int(i["checkAfter"]), 0), MAX_CHECK_AFTER),
                         _texts(i["reason"]))
            for i in content
        )
    elif kind in ("genm", "genp"):
        parsed = _parse_itavs(inner)
    elif kind == "rr":
        parsed = tuple(_parse_rev_details(rd) for rd in content)
    elif kind == "rp":
        parsed = RevRepInfo(tuple(_parse_status(s) for s in content["status"]))
    elif kind == "error":
        parsed = ErrorInfo(
            status=_parse_status(content["pKIStatusInfo"]),
            error_code=(_small_int(content["errorCode"], "errorCode")
                        if content["errorCode"].isValue else None),
            details=_texts(content["errorDetails"]),
        )
    elif kind == "pkiconf":
        parsed = None
    else:
        raise ProtocolError(f"unsupported CMP message type {kind}")
    return PKIMessageInfo(
        header=header,
        body_type=kind,
        body=parsed,
        protection=protection,
        extra_certs=extra,
        protected_part=protected_part(header_tlv.raw, body_tlv.raw),
        raw=data,
    )


def _parse_cert_req(content: Any, inner: der.TLV) -> tuple[CertRequestInfo, ...]:
    raws = inner.children()
    out: list[CertRequestInfo] = []
    for msg, raw_msg in zip(content, raws, strict=True):
        req = msg["certReq"]
        tmpl = req["certTemplate"]
        subject_der = None
        if tmpl["subject"].isValue:
            name = asn1.Name()
            name["rdnSequence"] = tmpl["subject"]["rdnSequence"]
            subject_der = _enc(name)
        spki_der = None
        if tmpl["publicKey"].isValue:
            spki = asn1.SubjectPublicKeyInfo()
            _copy_into(spki, tmpl["publicKey"])
            spki_der = _enc(spki)
        ext_der = None
        if tmpl["extensions"].isValue:
            exts = asn1.Extensions()
            _copy_into(exts, tmpl["extensions"])
            ext_der = _enc(exts)
        old = None
        if req["controls"].isValue:
            for ctrl in req["controls"]:
                if str(ctrl["type"]) == oids.REG_CTRL_OLD_CERT_ID:
                    cid = _decode(bytes(ctrl["value"]), asn1.CertId(), "oldCertID")
                    issuer = _name_der_of_general_name(cid["issuer"])
                    if issuer is None:
                        raise ProtocolError("oldCertID issuer is not a directoryName")
                    old = OldCertId(issuer, int(cid["serialNumber"]))
        popo = msg["popo"]
        kind = popo.getName() if popo.isValue else "none"
        alg = sig = None
        has_input = False
        if kind == "signature":
            ps = popo["signature"]
            alg = _alg_of(ps["algorithmIdentifier"])
            sig = ps["signature"].asOctets()
            has_input = ps["poposkInput"].isValue
        out.append(
            CertRequestInfo(
                cert_req_id=_small_int(req["certReqId"], "certReqId"),
                request_der=raw_msg.children()[0].raw,
                subject_der=subject_der,
                public_key_der=spki_der,
                extensions_der=ext_der,
                old_cert_id=old,
                popo_kind=kind,
                popo_alg=alg,
                popo_signature=sig,
                popo_has_input=has_input,
            )
        )
    return tuple(out)


def _parse_cert_rep(content: Any, inner: der.TLV) -> CertRepContent:
    kids = inner.children()
    ca_pubs: tuple[bytes, ...] = ()
    if kids and kids[0].tag == 0xA1:
        ca_pubs = tuple(c.raw for c in kids[0].children()[0].children())
        kids = kids[1:]
    raw_responses = kids[0].children()
    responses: list[CertResponse] = []
    for cr, raw in zip(content["response"], raw_responses, strict=True):
        cert_der = None
        if cr["certifiedKeyPair"].isValue:
            ckp = cr["certifiedKeyPair"]
            coe = ckp["certOrEncCert"]
            if coe.getName() != "certificate":
                raise ProtocolError(
                    "the CA returned an encrypted certificate, which swcmp does not support"
                )
            if ckp["privateKey"].isValue:
                raise ProtocolError(
                    "the CA returned a private key (central key generation is not supported)"
                )
            raw_fields = raw.children()
            if len(raw_fields) < 3 or raw_fields[2].tag != 0x30:
                raise ProtocolError("malformed CertResponse")
            raw_coe = raw_fields[2].children()[0]
            cert_slot = raw_coe.children() if raw_coe.tag == 0xA0 else []
            # [0] CMPCertificate: exactly one element, a SEQUENCE (cryptography reads it).
            if len(cert_slot) != 1:
                raise ProtocolError("malformed certOrEncCert: not one certificate")
            cert_der = _whole_sequence(cert_slot[0].raw, "certificate in certOrEncCert")
        responses.append(
            CertResponse(_small_int(cr["certReqId"], "certReqId"), _parse_status(cr["status"]),
                         cert_der)
        )
    return CertRepContent(tuple(responses), ca_pubs)


def _parse_itavs(inner: der.TLV) -> tuple[InfoValue, ...]:
    out: list[InfoValue] = []
    for item in inner.children():
        fields = item.children()
        if not fields or fields[0].tag != 0x06:
            raise ProtocolError("malformed InfoTypeAndValue")
        oid = str(_decode(fields[0].raw, univ.ObjectIdentifier(), "infoType"))
        out.append(InfoValue(oid, fields[1].raw if len(fields) > 1 else None))
    return tuple(out)


def _parse_rev_details(rd: Any) -> RevDetailsInfo:
    tmpl = rd["certDetails"]
    issuer = None
    if tmpl["issuer"].isValue:
        name = asn1.Name()
        name["rdnSequence"] = tmpl["issuer"]["rdnSequence"]
        issuer = _enc(name)
    serial = int(tmpl["serialNumber"]) if tmpl["serialNumber"].isValue else None
    reason = None
    if rd["crlEntryDetails"].isValue:
        for ext in rd["crlEntryDetails"]:
            if str(ext["extnID"]) == oids.CRL_REASON:
                reason = int(_decode(bytes(ext["extnValue"]), univ.Enumerated(), "reason"))
    return RevDetailsInfo(issuer, serial, reason)


# --------------------------------------------------------------------------- genp values


def parse_ca_certs(value_der: bytes | None) -> tuple[bytes, ...]:
    """The certificates of an id-it-caCerts value (SEQUENCE OF CMPCertificate)."""
    if value_der is None:
        return ()
    seq = der.single(value_der)
    if seq.tag != 0x30:
        raise ProtocolError("caCerts value is not a SEQUENCE")
    return tuple(c.raw for c in seq.children())


def parse_root_ca_key_update(value_der: bytes | None) -> RootCaKeyUpdate | None:
    """An id-it-rootCaKeyUpdate value; None when the CA has no update."""
    if value_der is None:
        return None
    seq = der.single(value_der)
    kids = seq.children()
    if not kids or kids[0].tag != 0x30:
        raise ProtocolError("malformed RootCaKeyUpdateContent")
    new_with_old = old_with_new = None
    for k in kids[1:]:
        if k.tag == 0xA0:
            new_with_old = k.children()[0].raw
        elif k.tag == 0xA1:
            old_with_new = k.children()[0].raw
    return RootCaKeyUpdate(kids[0].raw, new_with_old, old_with_new)


def _tlv(tag: int, content: bytes) -> bytes:
    """One DER element of a one-octet ``tag`` around ``content``."""
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + content


def _time_der(when: datetime) -> bytes:
    """RFC 5280 Time: UTCTime through 2049, GeneralizedTime after."""
    when = when.astimezone(UTC)
    if when.year < 2050:
        return _tlv(0x17, when.strftime("%y%m%d%H%M%SZ").encode())
    return _tlv(0x18, when.strftime("%Y%m%d%H%M%SZ").encode())


def crl_status_list_value(issuer_der: bytes, this_update: datetime | None) -> bytes:
    """An id-it-crlStatusList value (RFC 9483 4.3.4) asking for the CRL of the issuer
    named ``issuer_der`` (a Name's DER), newer than ``this_update`` when given.

    CRLStatusListValue ::= SEQUENCE SIZE (1..MAX) OF CRLStatus; CRLStatus ::= SEQUENCE {
    source CRLSource, thisUpdate Time OPTIONAL }; the source is ``issuer [1] GeneralNames``
    holding one directoryName (CHOICE types under tags are tagged explicitly).
    """
    source = _tlv(0xA1, _tlv(0x30, _tlv(0xA4, issuer_der)))
    status = _tlv(0x30, source + (_time_der(this_update) if this_update is not None else b""))
    return _tlv(0x30, status)


def parse_crl_status_list(value_der: bytes | None
                          ) -> tuple[tuple[bytes | None, datetime | None], ...]:
    """What an id-it-crlStatusList value asks: per CRLStatus, the issuer's Name DER (None
    for a source given as distributionPoint) and the thisUpdate of the CRL held."""
    if value_der is None:
        raise ProtocolError("crlStatusList without a value")
    seq = der.single(value_der)
    if seq.tag != 0x30 or not seq.children():
        raise ProtocolError("crlStatusList value is not a non-empty SEQUENCE")
    out: list[tuple[bytes | None, datetime | None]] = []
    for status in seq.children():
        fields = status.children() if status.tag == 0x30 else []
        if not fields or fields[0].tag not in (0xA0, 0xA1):
            raise ProtocolError("malformed CRLStatus")
        issuer = None
        if fields[0].tag == 0xA1:
            names = fields[0].children()
            dns = [g for g in (names[0].children() if names and names[0].tag == 0x30 else [])
                   if g.tag == 0xA4]
            issuer = dns[0].children()[0].raw if dns else None
        when = None
        if len(fields) > 1:
            t = fields[1]
            text = t.value.decode("ascii", "replace")
            try:
                if t.tag == 0x17:
                    when = datetime.strptime(text, "%y%m%d%H%M%SZ").replace(tzinfo=UTC)
                elif t.tag == 0x18:
                    when = datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)
                else:
                    raise ProtocolError("CRLStatus thisUpdate is not a Time")
            except ValueError as e:
                raise ProtocolError(f"CRLStatus thisUpdate does not parse: {e}") from e
        out.append((issuer, when))
    return tuple(out)


def parse_crls(value_der: bytes | None) -> tuple[bytes, ...]:
    """The CRLs of an id-it-crls value (SEQUENCE SIZE (1..MAX) OF CertificateList), as
    DER; () when the value is absent (the CA has no newer CRL than the one named)."""
    if value_der is None:
        return ()
    seq = der.single(value_der)
    if seq.tag != 0x30:
        raise ProtocolError("crls value is not a SEQUENCE")
    crls = tuple(c.raw for c in seq.children())
    if any(not c.startswith(b"\x30") for c in crls):
        raise ProtocolError("crls value holds something that is not a CRL")
    return crls


@dataclass(frozen=True)
class TemplateParts:
    """A CertReqTemplateContent (RFC 9480 2.9) as pieces: the subject's attributes as
    (OID, the value's DER) or None without a subject, the extensions' OIDs, the names of
    the other CertTemplate fields present, and the keySpec controls as (OID, value DER)."""

    subject: tuple[tuple[str, bytes], ...] | None
    extensions: tuple[str, ...]
    fields: tuple[str, ...]
    controls: tuple[tuple[str, bytes], ...]


def parse_cert_req_template(value_der: bytes) -> TemplateParts:
    """The pieces of an id-it-certReqTemplate value (its size and elements are the
    caller's to bound: a genp value is not counted with the message)."""
    content = _decode(value_der, asn1.CertReqTemplateContent(), "CertReqTemplateContent")
    tmpl = content["certTemplate"]

    def present(seq: Any, name: str) -> Any:
        # without instantiating it: an absent SEQUENCE of optional fields would read as set
        value = seq.getComponentByName(name, instantiate=False)
        return value if value is not univ.noValue and value.isValue else None

    subject_value = present(tmpl, "subject")
    subject = None
    if subject_value is not None:
        subject = tuple((str(atv["type"]), bytes(atv["value"]))
                        for rdn in subject_value["rdnSequence"] for atv in rdn)
    ext_value = present(tmpl, "extensions")
    extensions = tuple(str(e["extnID"]) for e in ext_value) if ext_value is not None else ()
    fields = tuple(n for n in ("version", "serialNumber", "signingAlg", "issuer", "validity",
                               "publicKey", "issuerUID", "subjectUID")
                   if present(tmpl, n) is not None)
    spec = present(content, "keySpec")
    controls = (tuple((str(c["type"]), bytes(c["value"])) for c in spec)
                if spec is not None else ())
    return TemplateParts(subject, extensions, fields, controls)


def cert_req_template_value(subject_der: bytes | None,
                            controls: Sequence[tuple[str, bytes]]) -> bytes:
    """An id-it-certReqTemplate value, for a CA: a CertTemplate with only a subject (a
    Name's DER) or nothing, and keySpec controls as (OID, value DER); none: no keySpec."""
    content = asn1.CertReqTemplateContent()
    tmpl = content["certTemplate"]
    if subject_der is not None:
        name = _decode(subject_der, asn1.Name(), "Name")
        _copy_into(tmpl["subject"], name)
    else:
        tmpl.setComponents()  # an empty CertTemplate: every field is the requester's
    for oid, value_der in controls:
        atv = asn1.AttributeTypeAndValue()
        atv["type"] = univ.ObjectIdentifier(oid)
        atv["value"] = univ.Any(value_der)
        content["keySpec"].append(atv)
    return _enc(content)


def rsa_key_len_der(bits: int) -> bytes:
    """An id-regCtrl-rsaKeyLen value."""
    return _enc(asn1.RsaKeyLenCtrl(bits))


def oid_der(oid: str) -> bytes:
    """An OBJECT IDENTIFIER's DER (e.g. a named curve as id-ecPublicKey parameters)."""
    return _enc(univ.ObjectIdentifier(oid))


def algorithm_der(alg: AlgorithmId) -> bytes:
    """An AlgorithmIdentifier's DER (e.g. an id-regCtrl-algId value)."""
    obj = asn1.AlgorithmIdentifier()
    _alg(obj, alg)
    return _enc(obj)


def parse_rsa_key_len(value_der: bytes) -> int:
    """An id-regCtrl-rsaKeyLen value (RsaKeyLenCtrl, INTEGER (1..MAX))."""
    return int(_decode(value_der, asn1.RsaKeyLenCtrl(), "RsaKeyLenCtrl"))


def parse_algorithm(value_der: bytes) -> AlgorithmId:
    """An AlgorithmIdentifier on its own (e.g. an id-regCtrl-algId value)."""
    return _alg_of(_decode(value_der, asn1.AlgorithmIdentifier(), "AlgorithmIdentifier"))


#: CRLReason codes by name (RFC 5280 5.3.1: unspecified 0, keyCompromise 1, ...), from
#: the schema (checked against pyasn1-alt-modules' transcription by the tests).
CRL_REASONS: dict[str, int] = {str(name): int(value)
                               for name, value in asn1.CRLReason.namedValues.items()}


def root_ca_key_update_der(update: RootCaKeyUpdate) -> bytes:
    """An id-it-rootCaKeyUpdate value (RootCaKeyUpdateContent, RFC 9480 2.4), for a CA:
    newWithNew, then [0] newWithOld and [1] oldWithNew, each explicitly tagged."""
    parts = [update.new_with_new]
    for tag, cert in ((0xA0, update.new_with_old), (0xA1, update.old_with_new)):
        if cert is not None:
            parts.append(bytes([tag]) + der.encode_length(len(cert)) + cert)
    return der.sequence(*parts)


def extensions_der(entries: Sequence[tuple[str, bool, bytes]]) -> bytes:
    """DER Extensions from (OID, critical, extnValue DER) triples."""
    exts = asn1.Extensions()
    for oid, critical, value in entries:
        ext = asn1.Extension()
        ext["extnID"] = univ.ObjectIdentifier(oid)
        if critical:
            ext["critical"] = True
        ext["extnValue"] = value
        exts.append(ext)
    return _enc(exts)


# --------------------------------------------------------------------------- names

_NAME_STRING_CODECS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1",
                       0x1E: "utf-16-be", 0x1C: "utf-32-be"}

NameKey = tuple[tuple[tuple[str, str], ...], ...]


def name_key(name_der: bytes) -> NameKey:
    """A Name in a form that compares as names do (RFC 5280 7.1), not as bytes.

    Per RDN the set of (attribute OID, value) pairs, string values case-folded with
    runs of white space collapsed, whatever string type carried them; other values
    by their encoding. ProtocolError for a malformed Name.
    """
    try:
        seq = der.single(name_der)
        if seq.tag != 0x30:
            raise ProtocolError("a Name must be a SEQUENCE")
        rdns = []
        for rdn in seq.children():
            if rdn.tag != 0x31:
                raise ProtocolError("a relative distinguished name must be a SET")
            pairs = []
            for atv in rdn.children():
                fields = atv.children() if atv.tag == 0x30 else []
                if len(fields) != 2 or fields[0].tag != 0x06:
                    raise ProtocolError("malformed attribute in a Name")
                oid = der.oid_text(fields[0].value)
                codec_name = _NAME_STRING_CODECS.get(fields[1].tag)
                if codec_name is None:
                    value = "#" + fields[1].raw.hex()
                else:
                    value = " ".join(fields[1].value.decode(codec_name).split()).casefold()
                pairs.append((oid, value))
            rdns.append(tuple(sorted(pairs)))
    except (ValueError, UnicodeError) as e:
        raise ProtocolError(f"malformed Name: {e}") from e
    return tuple(rdns)


def compare_names(a_der: bytes, b_der: bytes) -> str | None:
    """``"same"`` when two Names are equal as names, ``"reversed"`` when they are equal
    with the RDNs in opposite order (as some CAs send them), else None."""
    a, b = name_key(a_der), name_key(b_der)
    if a == b:
        return "same"
    if len(a) > 1 and a == tuple(reversed(b)):
        return "reversed"
    return None
