"""Tests for swcmp.names: DN parsing/formatting, SANs, session names."""

from __future__ import annotations

import ipaddress
import re

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier
from hypothesis import given
from hypothesis import strategies as st

from swcmp.errors import ConfigError
from swcmp.names import (
    common_name,
    format_dn,
    format_san,
    format_sans,
    parse_dn,
    parse_san,
    parse_sans,
    swanctl_section_name,
    validate_session_name,
)


def _name(*rdns: list[tuple[ObjectIdentifier, str]]) -> x509.Name:
    return x509.Name(
        [x509.RelativeDistinguishedName([x509.NameAttribute(o, v) for o, v in rdn]) for rdn in rdns]
    )


GW1 = _name(
    [(NameOID.COUNTRY_NAME, "DE")],
    [(NameOID.ORGANIZATION_NAME, "Example")],
    [(NameOID.COMMON_NAME, "gw1")],
)


class TestParseDn:
    def test_rfc4514_is_reversed_into_wire_order(self) -> None:
        assert parse_dn("CN=gw1,O=Example,C=DE") == GW1

    def test_slash_form_is_wire_order(self) -> None:
        assert parse_dn("/C=DE/O=Example/CN=gw1") == GW1

    def test_both_forms_encode_identically(self) -> None:
        a = parse_dn("CN=gw1,O=Example,C=DE").public_bytes()
        b = parse_dn("/C=DE/O=Example/CN=gw1").public_bytes()
        assert a == b == GW1.public_bytes()

    def test_matches_cryptography_rfc4514_output(self) -> None:
        # cryptography prints RFC 4514: parsing it back must give the same name.
        assert parse_dn(GW1.rfc4514_string()) == GW1

    def test_spaces_around_separators_are_ignored(self) -> None:
        assert parse_dn(" CN = gw1 , O = Example , C = DE ") == GW1
        assert parse_dn("/C = DE/ O=Example /CN=gw1") == GW1

    def test_slash_escape(self) -> None:
        name = parse_dn(r"/C=DE/O=Ex\/ample/CN=gw1")
        assert name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Ex/ample"

    def test_rfc4514_escaped_comma_and_quotes(self) -> None:
        a = parse_dn(r"CN=gw1,O=Example\, Inc.,C=DE")
        b = parse_dn('CN=gw1,O="Example, Inc.",C=DE')
        assert a == b
        assert a.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Example, Inc."

    def test_hex_escapes_form_utf8(self) -> None:
        name = parse_dn(r"CN=M\C3\BCller")
        assert common_name(name) == "Müller"

    def test_escaped_trailing_space_is_kept(self) -> None:
        name = parse_dn(r"CN=gw1\ ")
        assert common_name(name) == "gw1 "

    def test_multi_valued_rdn(self) -> None:
        for text in ("CN=gw1+UID=7,O=Example", "/O=Example/CN=gw1+UID=7"):
            name = parse_dn(text)
            assert len(name.rdns) == 2
            assert {a.oid for a in name.rdns[1]} == {NameOID.COMMON_NAME, NameOID.USER_ID}

    @pytest.mark.parametrize(
        ("label", "oid"),
        [
            ("C", NameOID.COUNTRY_NAME),
            ("ST", NameOID.STATE_OR_PROVINCE_NAME),
            ("L", NameOID.LOCALITY_NAME),
            ("OU", NameOID.ORGANIZATIONAL_UNIT_NAME),
            ("emailAddress", NameOID.EMAIL_ADDRESS),
            ("E", NameOID.EMAIL_ADDRESS),
            ("serialNumber", NameOID.SERIAL_NUMBER),
            ("DC", NameOID.DOMAIN_COMPONENT),
            ("UID", NameOID.USER_ID),
            ("GN", NameOID.GIVEN_NAME),
            ("SN", NameOID.SURNAME),
            ("title", NameOID.TITLE),
            ("cn", NameOID.COMMON_NAME),
            ("2.5.4.3", NameOID.COMMON_NAME),
            ("OID.2.5.4.10", NameOID.ORGANIZATION_NAME),
        ],
    )
    def test_attribute_names(self, label: str, oid: ObjectIdentifier) -> None:
        value = "DE" if oid == NameOID.COUNTRY_NAME else "ab-1.example"
        name = parse_dn(f"{label}={value}")
        assert name.rdns[0].get_attributes_for_oid(oid)[0].value == value

    def test_unknown_dotted_oid_is_accepted(self) -> None:
        name = parse_dn("/1.3.6.1.4.1.99999.1=custom")
        assert name.rdns[0].get_attributes_for_oid(ObjectIdentifier("1.3.6.1.4.1.99999.1"))

    @pytest.mark.parametrize(
        ("text", "why"),
        [
            ("", "empty"),
            ("/", "empty"),
            ("CN", "TYPE=VALUE"),
            ("CN=a,,O=b", "empty RDN"),
            ("/C=DE//CN=a", "empty RDN"),
            ("CN=a,", "empty RDN"),
            ("XX=1", "unknown attribute type"),
            ("=x", "type is missing"),
            ("CN=", "empty"),
            ("C=DEU", "C="),
            ("CN=a\\", "backslash"),
            ('O="unterminated', "quoted"),
            ('O="a"b', "after a quoted"),
            ("CN=#0c03676177", "hex-encoded"),
            ("emailAddress=m\u00fcller@example.net", "ASCII"),
            ("serialNumber=a_b", "PrintableString"),
            ("CN=a+CN=a", "multi-valued"),
            (r"CN=\FF", "UTF-8"),
        ],
    )
    def test_bad_input_is_a_config_error(self, text: str, why: str) -> None:
        with pytest.raises(ConfigError) as info:
            parse_dn(text)
        assert why in str(info.value)
        assert repr(text)[1:-1] in str(info.value) or text == ""
        assert info.value.hint  # tells the user how to write a DN

    def test_not_text(self) -> None:
        with pytest.raises(ConfigError):
            parse_dn(b"CN=x")  # type: ignore[arg-type]


class TestFormatDn:
    def test_wire_order(self) -> None:
        assert format_dn(GW1) == "/C=DE/O=Example/CN=gw1"
        assert format_dn(parse_dn("CN=gw1,O=Example,C=DE")) == "/C=DE/O=Example/CN=gw1"

    def test_escapes(self) -> None:
        name = _name([(NameOID.ORGANIZATION_NAME, " a/b+c\\d\n ")])
        assert format_dn(name) == r"/O=\ a\/b\+c\\d\0A\ "
        assert parse_dn(format_dn(name)) == name

    def test_unknown_oid_printed_dotted(self) -> None:
        name = _name([(ObjectIdentifier("1.2.3.4"), "x")])
        assert format_dn(name) == "/1.2.3.4=x"
        assert parse_dn("/1.2.3.4=x") == name

    def test_multi_valued(self) -> None:
        name = parse_dn("/O=Example/CN=gw1+UID=7")
        assert format_dn(name) == "/O=Example/CN=gw1+UID=7"

    def test_empty_name(self) -> None:
        assert format_dn(x509.Name([])) == "/"


_OIDS = [
    NameOID.COMMON_NAME,
    NameOID.ORGANIZATION_NAME,
    NameOID.ORGANIZATIONAL_UNIT_NAME,
    NameOID.LOCALITY_NAME,
    NameOID.TITLE,
    NameOID.USER_ID,
    ObjectIdentifier("1.3.6.1.4.1.99999.7"),
]
# Any text that UTF-8 can encode: separators, backslashes, blanks, control characters.
_values = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20)
_rdn = st.lists(st.tuples(st.sampled_from(_OIDS), _values), min_size=1, max_size=3).filter(
    lambda avas: len({o for o, _ in avas}) == len(avas)
)


@given(st.lists(_rdn, min_size=1, max_size=5))
def test_format_parse_round_trip(rdns: list[list[tuple[ObjectIdentifier, str]]]) -> None:
    name = _name(*rdns)
    text = format_dn(name)
    assert parse_dn(text) == name
    assert parse_dn(text).public_bytes() == name.public_bytes()
    # Formatting is a fixed point: one canonical text per name.
    assert format_dn(parse_dn(text)) == text


@given(st.lists(_rdn, min_size=1, max_size=5))
def test_rfc4514_from_cryptography_parses_back(
    rdns: list[list[tuple[ObjectIdentifier, str]]],
) -> None:
    name = _name(*rdns)
    assert parse_dn(name.rfc4514_string()) == name


class TestCommonName:
    def test_last_cn_wins(self) -> None:
        assert common_name(parse_dn("/CN=outer/CN=inner")) == "inner"

    def test_none(self) -> None:
        assert common_name(parse_dn("/O=Example")) is None


class TestSan:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("DNS:gw1.example.net", x509.DNSName("gw1.example.net")),
            ("dns:*.example.net", x509.DNSName("*.example.net")),
            ("DNS:gw1.example.net.", x509.DNSName("gw1.example.net")),
            ("IP:192.0.2.1", x509.IPAddress(ipaddress.ip_address("192.0.2.1"))),
            ("IP:2001:db8::1", x509.IPAddress(ipaddress.ip_address("2001:db8::1"))),
            ("EMAIL:ops@example.net", x509.RFC822Name("ops@example.net")),
            ("email: ops@example.net", x509.RFC822Name("ops@example.net")),
            (
                "URI:https://gw1.example.net/",
                x509.UniformResourceIdentifier("https://gw1.example.net/"),
            ),
        ],
    )
    def test_parse(self, text: str, expected: x509.GeneralName) -> None:
        assert parse_san(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            "gw1.example.net",
            "DNS:",
            "DNS:bad_label.example",
            "DNS:-x.example",
            "DNS:a..b",
            "DNS:m\u00fcller.example",
            "IP:300.1.1.1",
            "IP:gw1",
            "EMAIL:no-at-sign",
            "EMAIL:a b@example.net",
            "URI:no-scheme",
            "RID:1.2.3",
        ],
    )
    def test_bad(self, text: str) -> None:
        with pytest.raises(ConfigError, match="invalid subjectAltName"):
            parse_san(text)

    def test_format_round_trip(self) -> None:
        texts = ("DNS:gw1.example.net", "IP:2001:db8::1", "EMAIL:ops@example.net", "URI:urn:x:y")
        assert format_sans(parse_sans(texts)) == texts

    def test_ipv6_printed_compressed(self) -> None:
        assert format_san(parse_san("IP:2001:0db8:0:0:0:0:0:1")) == "IP:2001:db8::1"

    def test_duplicates_refused(self) -> None:
        with pytest.raises(ConfigError, match="twice"):
            parse_sans(["DNS:a.example", "dns:a.example"])

    def test_directory_name_display(self) -> None:
        assert format_san(x509.DirectoryName(GW1)) == "DIRNAME:/C=DE/O=Example/CN=gw1"

    def test_unsupported_type(self) -> None:
        with pytest.raises(ConfigError):
            format_san(x509.RegisteredID(ObjectIdentifier("1.2.3")))


class TestSessionName:
    @pytest.mark.parametrize("name", ["gw1", "a", "ca-main_2.prod", "_x", "A" * 64])
    def test_good(self, name: str) -> None:
        assert validate_session_name(name) == name

    @pytest.mark.parametrize(
        "name",
        ["", ".", "..", "../x", "a/b", ".hidden", "a b", "A" * 65, "gw1\n", "x;rm", "é", "a\\b",
         "-x", "--help"],
    )
    def test_bad(self, name: str) -> None:
        with pytest.raises(ConfigError, match="invalid session name"):
            validate_session_name(name)


@given(st.lists(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True),
                min_size=2, max_size=2, unique=True))
def test_swanctl_section_names_are_distinct_and_dot_free(pair: list[str]) -> None:
    a, b = (swanctl_section_name(n) for n in pair)
    assert a != b
    assert "." not in a + b
    assert re.fullmatch(r"[A-Za-z0-9_-]+", a + b)
    assert swanctl_section_name("gw1") == "gw1"
    assert swanctl_section_name("gw1.example.net") == "gw1_2eexample_2enet"
