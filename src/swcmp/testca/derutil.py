"""Small DER readers the CA needs beyond what the codec offers.

They work on :mod:`swcmp.cmp.der` elements, so that the test CA needs no
pyasn1 of its own: OIDs, names from certificate templates, template
extensions and a best-effort look at the header
of a message that does not decode.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.name import _ASN1Type

from swcmp.cmp import der
from swcmp.errors import ProtocolError

_STRING_TYPES = {t.value: t for t in _ASN1Type}
_TAG_OID = 0x06
_TAG_BOOLEAN = 0x01
_TAG_INTEGER = 0x02
_TAG_OCTETS = 0x04


def oid_of(tlv: der.TLV) -> str:
    """The dotted form of an OBJECT IDENTIFIER element."""
    if tlv.tag != _TAG_OID or not tlv.value or tlv.value[-1] & 0x80:
        raise ProtocolError("expected an OBJECT IDENTIFIER")
    arcs: list[int] = []
    acc = 0
    for b in tlv.value:
        if acc == 0 and b == 0x80:
            raise ProtocolError("OBJECT IDENTIFIER arc not in minimal form")
        acc = (acc << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(acc)
            acc = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in (first, arcs[0] - 40 * first, *arcs[1:]))


def name_from_der(name_der: bytes) -> x509.Name:
    """Rebuild a Name as a cryptography object that encodes to exactly ``name_der``.

    The client compares the issued certificate's subject with the bytes it
    asked for, so a name is refused rather than silently re-encoded.

    Raises:
        ProtocolError: the name is malformed or cannot be reproduced byte for byte.
    """
    seq = der.single(name_der)
    if seq.tag != 0x30:
        raise ProtocolError("a Name must be a SEQUENCE")
    rdns: list[x509.RelativeDistinguishedName] = []
    for rdn in seq.children():
        if rdn.tag != 0x31:
            raise ProtocolError("a relative distinguished name must be a SET")
        attrs: list[x509.NameAttribute[str]] = []
        for atv in rdn.children():
            fields = atv.children() if atv.tag == 0x30 else []
            if len(fields) != 2:
                raise ProtocolError("malformed attribute in a Name")
            oid = oid_of(fields[0])
            kind = _STRING_TYPES.get(fields[1].tag)
            if kind is None:
                raise ProtocolError(f"attribute {oid} has a value type this CA does not copy")
            attrs.append(x509.NameAttribute(x509.ObjectIdentifier(oid),
                                            _decode_string(kind, fields[1].value), _type=kind))
        if not attrs:
            raise ProtocolError("empty relative distinguished name")
        rdns.append(x509.RelativeDistinguishedName(attrs))
    try:
        name = x509.Name(rdns)
        same = name.public_bytes() == name_der
    except ValueError as e:
        raise ProtocolError(f"unacceptable name: {e}") from e
    if not same:
        raise ProtocolError("the name cannot be reproduced exactly (unusual encoding)")
    return name


def _decode_string(kind: _ASN1Type, value: bytes) -> str:
    try:
        if kind == _ASN1Type.BMPString:
            return value.decode("utf-16-be")
        if kind == _ASN1Type.UniversalString:
            return value.decode("utf-32-be")
        if kind in (_ASN1Type.UTF8String, _ASN1Type.T61String):
            # cryptography writes T61String from its UTF-8 text, so decode it the same way.
            return value.decode("utf-8")
        return value.decode("ascii")
    except UnicodeDecodeError as e:
        raise ProtocolError(f"badly encoded {kind.name} in a Name") from e


@dataclass(frozen=True)
class RawExtension:
    """One Extension of a certificate template: OID, criticality and the extnValue contents."""

    oid: str
    critical: bool
    value: bytes


def parse_extensions(exts_der: bytes) -> list[RawExtension]:
    """The extensions of a ``SEQUENCE OF Extension``.

    Raises:
        ProtocolError: malformed.
    """
    seq = der.single(exts_der)
    if seq.tag != 0x30:
        raise ProtocolError("Extensions must be a SEQUENCE")
    out: list[RawExtension] = []
    for ext in seq.children():
        fields = ext.children() if ext.tag == 0x30 else []
        if len(fields) not in (2, 3):
            raise ProtocolError("malformed Extension")
        critical = False
        if len(fields) == 3:
            if fields[1].tag != _TAG_BOOLEAN or len(fields[1].value) != 1:
                raise ProtocolError("malformed Extension criticality")
            critical = fields[1].value != b"\x00"
        if fields[-1].tag != _TAG_OCTETS:
            raise ProtocolError("malformed extnValue")
        out.append(RawExtension(oid_of(fields[0]), critical, fields[-1].value))
    return out


def basic_constraints_ca(value: bytes) -> bool:
    """Whether a BasicConstraints extnValue asks for a CA certificate."""
    fields = der.single(value).children()
    return bool(fields) and fields[0].tag == _TAG_BOOLEAN and fields[0].value != b"\x00"


@dataclass(frozen=True)
class HeaderPeek:
    """What could be read from the header of a message that did not decode."""

    pvno: int | None = None
    sender_der: bytes | None = None
    transaction_id: bytes | None = None
    sender_nonce: bytes | None = None
    body_tag: int | None = None


def peek_header(data: bytes) -> HeaderPeek:
    """Read pvno, sender, transactionID, senderNonce and the body's tag number, best effort.

    An answer to a broken message should still carry the client's
    transactionID and echo its nonce, so that the client can match it.
    Anything unreadable is left None; this never raises.
    """
    pvno = sender = tid = nonce = tag = None
    try:
        parts = der.single(data).children()
        header = parts[0].children()
        if header and header[0].tag == _TAG_INTEGER:
            pvno = int.from_bytes(header[0].value, "big", signed=True)
        if len(header) > 1 and header[1].tag == 0xA4:
            sender = header[1].children()[0].raw
        # After pvno, sender and recipient (whose directoryName is also a [4]) come the
        # optional fields, each under its own context tag: [4] transactionID, [5] senderNonce.
        for field in header[3:]:
            if field.tag == 0xA4:
                tid = field.children()[0].value
            elif field.tag == 0xA5:
                nonce = field.children()[0].value
        if len(parts) > 1 and parts[1].tag & 0xE0 == 0xA0:
            tag = parts[1].tag & 0x1F
    except (ProtocolError, IndexError):
        pass
    return HeaderPeek(pvno, sender, tid, nonce, tag)
