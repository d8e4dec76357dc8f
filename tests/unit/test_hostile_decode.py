"""Property tests: real CMP messages mutated field by field never crash swcmp.

Two attackers. A man in the middle changes the bytes of real OpenSSL messages
(``data/openssl-3.0``): their times, integers, OIDs, strings, lengths and nesting;
the decoder and the response check must answer with a swcmp error (or a message),
never another exception. A malicious CA does the same to its own answers and then
protects them properly (it holds the MAC secret), so that every mutation reaches the
client's checks behind the protection; the client must end with a swcmp error or a
checked certificate, never a traceback.

Each mutated field is re-encoded with correct enclosing lengths (unless the
mutation is a length lie), so the change is seen by the layer that reads that
field, not refused by the first DER parser.
"""

from __future__ import annotations

import contextlib
import string
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dertree as d
from pki import TestPKI, name
from scripted_ca import SECRET, ScriptedCA
from swcmp.cmp import certs, codec, der, protection
from swcmp.cmp.client import CMPClient
from swcmp.cmp.messages import PKIMessageInfo
from swcmp.cmp.protection import MacProtection, ResponseTrust
from swcmp.errors import ProtocolError, SwcmpError
from testpaths import DATA

VECTORS = {p.name: p.read_bytes() for p in sorted(DATA.glob("*.der"))}
ROOT = certs.load_certificate((DATA / "pki" / "root.crt").read_bytes())
#: inside the validity of the captured messages' certificates
WHEN = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
#: the captures' MAC secret (README of the vectors)
VECTOR_SECRET = b"test"

TRICKY_TIMES = [b"99991231235959-1200", b"00010101000000+1400", b"99991231235959Z",
                b"00000101000000Z", b"20261301000000Z", b"2026", b"", b"20261127170000.1234567Z",
                b"20261127170000+9999", b"2026112717000\x00Z", b"\xff\xfe"]


def _times() -> st.SearchStrategy[bytes]:
    built = st.text(alphabet=string.digits + "+-.Z", min_size=0, max_size=30).map(
        lambda t: t.encode())
    return st.one_of(st.sampled_from(TRICKY_TIMES), built, st.binary(max_size=24))


def _integers() -> st.SearchStrategy[bytes]:
    values = st.one_of(st.integers(-(2**80), 2**80), st.sampled_from(
        [0, -1, 2**31, 2**63, -(2**63) - 1, 2**64, 10**400, -(10**400), 2**5000]))
    raw = st.binary(max_size=12)  # non-minimal and empty encodings too
    return st.one_of(values.map(d.integer), raw)


def _oids() -> st.SearchStrategy[bytes]:
    arcs = st.lists(st.integers(0, 2**70), min_size=2, max_size=12).map(
        lambda a: [min(a[0], 2), a[1] % 40 if a[0] < 2 else a[1], *a[2:]])
    return st.one_of(arcs.map(d.oid_content), st.binary(max_size=16),
                     st.just(b"\x80" * 40), st.just(b"\xff" * 500))


def _strings() -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=64),
                     st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
                     st.just(b"\x1b]0;owned\x07\x1b[2J\xc3"))


FIELD_TAGS = {
    "time": ({d.GENTIME}, _times),
    "integer": ({d.INTEGER}, _integers),
    "oid": ({d.OID}, _oids),
    "string": ({d.UTF8, d.PRINTABLE, 0x16, 0x1E, 0x1C, 0x14}, _strings),
    "octets": ({d.OCTET_STRING, d.BIT_STRING}, lambda: st.binary(max_size=80)),
}


@st.composite
def mutation(draw: st.DrawFn) -> Callable[[d.Node], d.Node]:
    """One change to one field of a message tree (picked when applied)."""
    kind = draw(st.sampled_from([*FIELD_TAGS, "length", "nesting", "drop", "tag"]))
    pick = draw(st.integers(0, 10**6))
    if kind in FIELD_TAGS:
        tags, values = FIELD_TAGS[kind]
        content = draw(values())

        def change(root: d.Node) -> d.Node:
            paths = d.find(root, lambda n: n.tag_byte in tags and n.children is None)
            if not paths:
                return root
            p = paths[pick % len(paths)]
            return d.replaced(root, p, d.Node(d.at(root, p).tag, content))
        return change
    if kind == "length":
        lie = draw(st.sampled_from([b"\x80", b"\x84\xff\xff\xff\xff", b"\x81\x05", b"\x00",
                                    b"\x89" + b"\x01" * 9, b"\x82\x00\x05", b"\x7f"]))

        def change(root: d.Node) -> d.Node:
            paths = [p for p, _ in root.walk() if p]
            p = paths[pick % len(paths)]
            n = d.at(root, p)
            return d.replaced(root, p, d.Node(n.tag, n.value, n.children, lie))
        return change
    if kind == "nesting":
        depth = draw(st.sampled_from([1, 2, 20, 47, 49, 200, 5000]))
        tag = draw(st.sampled_from([b"\x30", b"\x31", b"\xa0", b"\xa1"]))

        def change(root: d.Node) -> d.Node:
            paths = [p for p, _ in root.walk() if p]
            p = paths[pick % len(paths)]
            return d.replaced(root, p, d.nested(d.at(root, p), depth, tag))
        return change
    if kind == "drop":
        def change(root: d.Node) -> d.Node:
            paths = [p for p, n in root.walk() if p and n.children]
            if not paths:
                return root
            p = paths[pick % len(paths)]
            n = d.at(root, p)
            assert n.children is not None
            kids = list(n.children)
            kids.pop(pick % len(kids))
            return d.replaced(root, p, d.Node(n.tag, children=kids))
        return change
    new_tag = draw(st.integers(0, 255))

    def change(root: d.Node) -> d.Node:
        paths = [p for p, _ in root.walk() if p]
        p = paths[pick % len(paths)]
        n = d.at(root, p)
        if n.children is not None and not new_tag & 0x20:
            return d.replaced(root, p, d.Node(bytes([new_tag]), n.encode()[2:]))
        return d.replaced(root, p, d.Node(bytes([new_tag | (n.tag_byte & 0x20)]), n.value,
                                          n.children))
    return change


def _decode_or_refuse(data: bytes) -> PKIMessageInfo | None:
    try:
        return codec.decode_message(data)
    except ProtocolError:
        return None


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vector=st.sampled_from(sorted(VECTORS)), change=mutation())
def test_mutated_vectors_decode_or_are_refused(vector: str,
                                              change: Callable[[d.Node], d.Node]) -> None:
    data = change(d.parse(VECTORS[vector])).encode()
    msg = _decode_or_refuse(data)
    if msg is None:
        return
    # what the client reads of any message must be readable too
    for extra in msg.extra_certs:
        with contextlib.suppress(SwcmpError):
            certs.load_certificate(extra)
    with contextlib.suppress(SwcmpError):
        protection.verify_response(
            msg, mac=MacProtection(reference=b"1234", secret=VECTOR_SECRET),
            trust=ResponseTrust(anchors=(ROOT,), ca_name=ROOT.subject), now=WHEN)


@settings(max_examples=200, deadline=None)
@given(vector=st.sampled_from(sorted(VECTORS)), cut=st.integers(0, 4000),
       junk=st.binary(max_size=8))
def test_truncated_and_padded_vectors_are_refused(vector: str, cut: int, junk: bytes) -> None:
    data = VECTORS[vector]
    cut %= len(data)
    # cut short: refused; cut and padded: refused or (changed bytes inside the MAC or a
    # signature, where only the protection check sees them) decoded
    msg = _decode_or_refuse(data[:cut] + junk)
    assert msg is None or (junk and len(junk) == len(data) - cut)


def test_the_overflowing_message_time_of_issue_11_is_a_protocol_error() -> None:
    root = d.parse(VECTORS["ip_pbm.der"])
    (p,) = d.find(root, lambda n: n.tag_byte == d.GENTIME)
    data = d.replaced(root, p, d.Node(b"\x18", b"99991231235959-1200")).encode()
    with pytest.raises(ProtocolError, match="out-of-range messageTime"):
        codec.decode_message(data)


def test_deep_nesting_is_refused_before_the_full_decoder() -> None:
    root = d.parse(VECTORS["genp.der"])
    body = (1,)
    data = d.replaced(root, body, d.nested(d.at(root, body), 100_000)).encode()
    with pytest.raises(ProtocolError, match="nested deeper"):
        codec.decode_message(data, max_size=len(data))


def test_census_counts_and_bounds() -> None:
    assert der.census(VECTORS["ip_pbm.der"], max_elements=10_000, max_depth=40) > 100
    with pytest.raises(ProtocolError, match="more than 10 DER elements"):
        der.census(VECTORS["ip_pbm.der"], max_elements=10, max_depth=40)


def test_a_huge_check_after_is_clamped() -> None:
    root = d.parse(VECTORS["pollrep1.der"])
    (p,) = [q for q in d.find(root, lambda n: n.tag_byte == d.INTEGER) if q[:2] == (1, 0)][1:]
    data = d.replaced(root, p, d.Node(b"\x02", d.integer(2**4000))).encode()
    msg = codec.decode_message(data)
    assert isinstance(msg.body, tuple)
    assert msg.body[0].check_after == codec.MAX_CHECK_AFTER  # type: ignore[union-attr]


# ---------------------------------------------------------------------- a malicious CA


class MutatingCA(ScriptedCA):
    """A CA that breaks answer ``which`` with ``change`` and then protects it properly."""

    def __init__(self, pki: TestPKI, change: Callable[[d.Node], d.Node], which: int,
                 part: int, fault: str) -> None:
        super().__init__(pki, pki.gw, fault)
        self.change, self.which, self.part, self.answers = change, which, part, 0

    def post(self, data: bytes) -> bytes:
        answer = super().post(data)
        self.answers += 1
        if self.answers != self.which:
            return answer
        alg = codec.decode_message(answer).header.protection_alg
        assert alg is not None
        root = d.parse(answer)
        assert root.children is not None
        header, body = root.children[0], root.children[1]
        if self.part == 0:
            header = self.change(header)
        else:
            body = self.change(body)
        h, b = header.encode(), body.encode()
        mac = protection._pbm_compute(SECRET, alg.params_der, codec.protected_part(h, b))
        return codec.assemble(h, b, mac)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(change=mutation(), which=st.integers(1, 4), part=st.integers(0, 1),
       fault=st.sampled_from(["", "poll"]))
def test_a_malicious_ca_never_crashes_the_client(pki: TestPKI, change: Callable[[d.Node], d.Node],
                                                which: int, part: int, fault: str) -> None:
    ca = MutatingCA(pki, change, which, part, fault)
    client = CMPClient(ca, recipient=pki.root.subject, sleep=lambda s: None, poll_deadline=30)
    with contextlib.suppress(SwcmpError):  # refusing is fine, anything else is not
        client.initial(key=pki.gw_key, subject=name("gw1.example.net"),
                       protection=MacProtection(reference=b"ca", secret=SECRET))


def test_a_name_attribute_tagged_bit_string_is_a_certificate_error() -> None:
    # Found by the mutation test above: a commonName whose string tag became BIT STRING
    # makes cryptography raise TypeError when the name is first read.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from swcmp.errors import CertificateError

    key = ec.generate_private_key(ec.SECP256R1())
    dn = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Root CA")])
    cert = (x509.CertificateBuilder().subject_name(dn).issuer_name(dn)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(datetime(2026, 1, 1, tzinfo=UTC))
            .not_valid_after(datetime(2027, 1, 1, tzinfo=UTC))
            .sign(key, hashes.SHA256()))
    der = cert.public_bytes(serialization.Encoding.DER)
    at = der.index(b"Test Root CA") - 2
    assert der[at] in (0x0C, 0x13)  # UTF8String or PrintableString
    mutated = der[:at] + b"\x03" + der[at + 1:]
    with pytest.raises(CertificateError, match=r"not a readable X\.509 certificate"):
        certs.load_certificate(mutated)


def test_a_name_attribute_type_with_a_huge_arc_is_a_protocol_error() -> None:
    # The attribute types of the header's directoryNames are read by der.oid_text: a CA
    # that sends one arc of thousands of octets gets a ProtocolError (not the ValueError
    # of an integer too long to print), and the arc is refused before it is summed up
    # (the sum grows quadratically with its length).
    root = d.parse(VECTORS["ip_pbm.der"])
    sender_oids = [p for p in d.find(root, lambda n: n.tag_byte == d.OID) if p[:2] == (0, 1)]
    assert sender_oids
    for arc_octets in (5000, 30):
        huge = d.Node(b"\x06", b"\x55" + b"\xff" * arc_octets + b"\x7f")
        data = d.replaced(root, sender_oids[0], huge).encode()
        with pytest.raises(ProtocolError, match="OBJECT IDENTIFIER"):
            codec.decode_message(data)


@pytest.mark.parametrize("inside", ["cert+junk", "integer", "two certs"])
def test_the_certificate_slot_holds_exactly_one_sequence(inside: str) -> None:
    # certOrEncCert certificate [0] is one CMPCertificate, kept as bytes: an element
    # after it (not covered by certHash, never looked at) or a non-SEQUENCE in its
    # place is refused at decoding, as the full schema refused it.
    root = d.parse(VECTORS["ip_pbm.der"])
    (p,) = d.find(root, lambda n: n.tag == b"\xa0" and len(n.children or []) == 1
                  and len(n.children[0].children or []) == 3
                  and n.children[0].children[0].tag == b"\x30")
    cert = d.at(root, (*p, 0))
    content = {"cert+junk": [cert, d.Node(b"\x02", b"\x01")],
               "integer": [d.Node(b"\x02", b"\x01")],
               "two certs": [cert, cert]}[inside]
    data = d.replaced(root, p, d.Node(b"\xa0", b"", content)).encode()
    with pytest.raises(ProtocolError, match="certOrEncCert"):
        codec.decode_message(data)
