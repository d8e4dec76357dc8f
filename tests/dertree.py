"""DER as an editable tree, for tests that mutate real messages field by field.

A message is split into nodes (tag, children or value); a mutation replaces one
node's value, wraps it in deep nesting or gives it a wrong length, and the tree is
written out again with the lengths of every enclosing element fixed (unless the
mutation is a length lie), so that a mutated field reaches the layers behind the
DER parser instead of being refused at the first byte.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

#: Tags of the universal types the mutations aim at.
INTEGER, BIT_STRING, OCTET_STRING, OID, UTF8, PRINTABLE, GENTIME, SEQUENCE, SET = (
    0x02, 0x03, 0x04, 0x06, 0x0C, 0x13, 0x18, 0x30, 0x31)


@dataclass
class Node:
    tag: bytes
    value: bytes = b""
    children: list[Node] | None = None
    #: a length written as is instead of the true one (a length lie)
    length_override: bytes | None = field(default=None, repr=False)

    @property
    def constructed(self) -> bool:
        return bool(self.tag[0] & 0x20)

    @property
    def tag_byte(self) -> int:
        return self.tag[0]

    def encode(self) -> bytes:
        content = (b"".join(c.encode() for c in self.children)
                   if self.children is not None else self.value)
        length = self.length_override if self.length_override is not None else \
            encode_length(len(content))
        return self.tag + length + content

    def walk(self, path: tuple[int, ...] = ()) -> Iterator[tuple[tuple[int, ...], Node]]:
        yield path, self
        for i, c in enumerate(self.children or ()):
            yield from c.walk((*path, i))


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _read(data: bytes, pos: int) -> tuple[bytes, int, int]:
    start = pos
    first = data[pos]
    pos += 1
    if first & 0x1F == 0x1F:
        while data[pos] & 0x80:
            pos += 1
        pos += 1
    tag = data[start:pos]
    lb = data[pos]
    pos += 1
    if lb < 0x80:
        length = lb
    else:
        n = lb & 0x7F
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    return tag, pos, pos + length


def parse(data: bytes, *, depth: int = 0) -> Node:
    """The tree of one DER element (which must fill ``data``)."""
    tag, start, end = _read(data, 0)
    if end != len(data):
        raise ValueError("trailing bytes")
    return _node(data, tag, start, end, depth)


def _node(data: bytes, tag: bytes, start: int, end: int, depth: int) -> Node:
    content = data[start:end]
    # BIT STRINGs and OCTET STRINGs may wrap DER too, but are kept whole: their
    # bytes are what they are (a signature, a MAC, an extnValue).
    if not tag[0] & 0x20 or depth > 40:
        return Node(tag, content)
    kids = []
    pos = 0
    while pos < len(content):
        t, s, e = _read(content, pos)
        kids.append(_node(content, t, s, e, depth + 1))
        pos = e
    return Node(tag, children=kids)


def find(root: Node, pred: Callable[[Node], bool]) -> list[tuple[int, ...]]:
    """Paths of every node for which ``pred`` holds."""
    return [p for p, n in root.walk() if pred(n)]


def at(root: Node, path: tuple[int, ...]) -> Node:
    n = root
    for i in path:
        assert n.children is not None
        n = n.children[i]
    return n


def replaced(root: Node, path: tuple[int, ...], new: Node) -> Node:
    """A copy of ``root`` with the node at ``path`` replaced by ``new``."""
    if not path:
        return new
    assert root.children is not None
    kids = list(root.children)
    kids[path[0]] = replaced(kids[path[0]], path[1:], new)
    return Node(root.tag, root.value, kids, root.length_override)


def nested(inner: Node, depth: int, tag: bytes = b"\x30") -> Node:
    """``inner`` inside ``depth`` SEQUENCEs (or other constructed ``tag``).

    Built as bytes, without recursion, so that any depth can be had; the result is
    one node whose content is the nesting (its inside is not walked again).
    """
    data = inner.encode()
    for _ in range(depth - 1):
        data = tag + encode_length(len(data)) + data
    return Node(tag, data)


def integer(value: int) -> bytes:
    """The content octets of a DER INTEGER."""
    length = max(1, (value + (value < 0)).bit_length() // 8 + 1)
    return value.to_bytes(length, "big", signed=True)


def oid_content(arcs: list[int]) -> bytes:
    """The content octets of an OBJECT IDENTIFIER with the given arcs (first two merged)."""
    first = arcs[0] * 40 + arcs[1]
    out = bytearray()
    for arc in [first, *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    return bytes(out)
