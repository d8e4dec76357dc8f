"""A minimal DER walker that returns the exact bytes of nested elements.

Protection must be verified over the bytes that were received, and
certificate signatures over the TBS bytes the CA signed. pyasn1 decodes into
objects and does not promise to re-encode them byte for byte, so the parts
that are hashed or signature-checked are cut out of the original message with
this walker instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from swcmp.cmp.errors import ProtocolError


@dataclass(frozen=True)
class TLV:
    """One DER element: its tag octet(s), and the raw bytes of the whole and of the value."""

    tag: int
    constructed: bool
    raw: bytes
    value: bytes

    def children(self) -> list[TLV]:
        """The elements inside a constructed element, in order."""
        if not self.constructed:
            raise ProtocolError("DER: expected a constructed element")
        return split(self.value)


def read_tlv(data: bytes, pos: int = 0) -> tuple[TLV, int]:
    """Read one element at ``pos``; return it and the position after it."""
    n = len(data)
    if pos >= n:
        raise ProtocolError("DER: unexpected end of data")
    start = pos
    first = data[pos]
    pos += 1
    constructed = bool(first & 0x20)
    tag = first
    if first & 0x1F == 0x1F:  # high tag number form
        tag_num = 0
        for _ in range(4):
            if pos >= n:
                raise ProtocolError("DER: truncated tag")
            b = data[pos]
            pos += 1
            tag_num = (tag_num << 7) | (b & 0x7F)
            if not b & 0x80:
                break
        else:
            raise ProtocolError("DER: tag number too large")
        tag = (first << 24) | tag_num
    if pos >= n:
        raise ProtocolError("DER: truncated length")
    lb = data[pos]
    pos += 1
    if lb < 0x80:
        length = lb
    elif lb == 0x80:
        raise ProtocolError("DER: indefinite length is not allowed")
    else:
        count = lb & 0x7F
        if count > 4 or pos + count > n:
            raise ProtocolError("DER: bad length field")
        length = int.from_bytes(data[pos : pos + count], "big")
        if length < 0x80 or data[pos] == 0:
            raise ProtocolError("DER: length not in minimal form")
        pos += count
    end = pos + length
    if end > n:
        raise ProtocolError("DER: element longer than the data")
    return TLV(tag, constructed, data[start:end], data[pos:end]), end


def split(data: bytes) -> list[TLV]:
    """All consecutive elements in ``data`` (which must be consumed exactly)."""
    out: list[TLV] = []
    pos = 0
    while pos < len(data):
        tlv, pos = read_tlv(data, pos)
        out.append(tlv)
    return out


def single(data: bytes) -> TLV:
    """Exactly one element filling all of ``data``."""
    tlv, end = read_tlv(data)
    if end != len(data):
        raise ProtocolError(f"DER: {len(data) - end} bytes left over after the message")
    return tlv


#: The longest subidentifier :func:`oid_text` reads, in octets: 140 bits, room for
#: the 128-bit UUID arcs under 2.25. Summing an arc costs time quadratic in its
#: length, and a hostile CA could send one arc filling a whole message.
MAX_OID_ARC_OCTETS = 20


def oid_text(value: bytes) -> str:
    """The dotted form of an OBJECT IDENTIFIER's content octets (DER: every
    subidentifier in its shortest form, none longer than :data:`MAX_OID_ARC_OCTETS`);
    ProtocolError when malformed."""
    if not value or value[-1] & 0x80:
        raise ProtocolError("DER: malformed OBJECT IDENTIFIER")
    arcs: list[int] = []
    n = 0
    start = True
    octets = 0
    for b in value:
        if start and b == 0x80:
            raise ProtocolError("DER: OBJECT IDENTIFIER arc not in minimal form")
        octets += 1
        if octets > MAX_OID_ARC_OCTETS:
            raise ProtocolError(
                f"DER: OBJECT IDENTIFIER arc longer than {MAX_OID_ARC_OCTETS} octets")
        n = (n << 7) | (b & 0x7F)
        start = not b & 0x80
        if start:
            arcs.append(n)
            n = 0
            octets = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


def encode_length(length: int) -> bytes:
    """DER length octets."""
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def sequence(*raw_elements: bytes) -> bytes:
    """A DER SEQUENCE around already-encoded elements."""
    content = b"".join(raw_elements)
    return b"\x30" + encode_length(len(content)) + content


def census(data: bytes, *, max_elements: int, max_depth: int) -> int:
    """Count the elements of the DER in ``data`` (all nesting levels), without recursion.

    Raises ProtocolError as soon as there are more than ``max_elements`` or they
    nest deeper than ``max_depth``: a hostile message must not make a full
    decoder spend seconds, or the interpreter's stack, on it.
    """
    count = 0
    stack: list[tuple[bytes, int]] = [(data, 0)]
    while stack:
        chunk, depth = stack.pop()
        if depth > max_depth:
            raise ProtocolError(f"DER nested deeper than {max_depth} levels")
        pos = 0
        while pos < len(chunk):
            tlv, pos = read_tlv(chunk, pos)
            count += 1
            if count > max_elements:
                raise ProtocolError(f"more than {max_elements} DER elements in one message")
            if tlv.constructed:
                stack.append((tlv.value, depth + 1))
    return count
