"""Distinguished names, subjectAltNames and session names as users type them.

Two spellings of a distinguished name (DN) are accepted:

* RFC 4514, as printed by most LDAP and X.509 tools: ``CN=gw1,O=Example,C=DE``.
  RDNs are listed *least* significant first, i.e. the reverse of the order in
  which they are encoded in a certificate.
* The slash form used by OpenSSL (``-subj``) and by routers:
  ``/C=DE/O=Example/CN=gw1``. RDNs are listed *most* significant first, which
  is the order in which they go on the wire.

Both forms allow multi-valued RDNs with ``+`` (``CN=gw1+UID=7``), attribute
types by short name (see :data:`ATTRIBUTE_NAMES`, case-insensitive) or as
dotted OIDs (``2.5.4.3`` or ``OID.2.5.4.3``), and backslash escapes: ``\\X``
stands for the character ``X`` and ``\\HH`` (two hex digits) for one UTF-8
byte. Unescaped spaces around types and values are ignored, so
``CN=gw1, O=Example`` works. In RFC 4514 form a value may also be
double-quoted (``O="Example, Inc."``).

:func:`format_dn` prints a name back in one order only, the slash (wire)
order, so that what a user sees is what the CA will see.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from typing import NewType
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

from swcmp.cmp.dn import format_dn
from swcmp.errors import ConfigError

__all__ = [
    "ATTRIBUTE_NAMES",
    "SessionName",
    "common_name",
    "format_dn",
    "format_san",
    "format_sans",
    "parse_dn",
    "parse_san",
    "parse_sans",
    "validate_session_name",
]

SessionName = NewType("SessionName", str)

# Short names accepted on input, in lower case, mapped to their OID. Several
# spellings map to one OID (E/email/emailAddress) because users copy DNs from
# OpenSSL, from Windows and from router configurations, which all differ.
ATTRIBUTE_NAMES: dict[str, ObjectIdentifier] = {
    "c": NameOID.COUNTRY_NAME,
    "countryname": NameOID.COUNTRY_NAME,
    "st": NameOID.STATE_OR_PROVINCE_NAME,
    "s": NameOID.STATE_OR_PROVINCE_NAME,
    "stateorprovincename": NameOID.STATE_OR_PROVINCE_NAME,
    "l": NameOID.LOCALITY_NAME,
    "localityname": NameOID.LOCALITY_NAME,
    "o": NameOID.ORGANIZATION_NAME,
    "organizationname": NameOID.ORGANIZATION_NAME,
    "ou": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "organizationalunitname": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "cn": NameOID.COMMON_NAME,
    "commonname": NameOID.COMMON_NAME,
    "emailaddress": NameOID.EMAIL_ADDRESS,
    "email": NameOID.EMAIL_ADDRESS,
    "e": NameOID.EMAIL_ADDRESS,
    "serialnumber": NameOID.SERIAL_NUMBER,
    "dc": NameOID.DOMAIN_COMPONENT,
    "domaincomponent": NameOID.DOMAIN_COMPONENT,
    "uid": NameOID.USER_ID,
    "userid": NameOID.USER_ID,
    "gn": NameOID.GIVEN_NAME,
    "givenname": NameOID.GIVEN_NAME,
    "sn": NameOID.SURNAME,
    "surname": NameOID.SURNAME,
    "title": NameOID.TITLE,
    "initials": NameOID.INITIALS,
    "generationqualifier": NameOID.GENERATION_QUALIFIER,
    "dnqualifier": NameOID.DN_QUALIFIER,
    "pseudonym": NameOID.PSEUDONYM,
    "street": NameOID.STREET_ADDRESS,
    "streetaddress": NameOID.STREET_ADDRESS,
    "postalcode": NameOID.POSTAL_CODE,
    "businesscategory": NameOID.BUSINESS_CATEGORY,
    "organizationidentifier": NameOID.ORGANIZATION_IDENTIFIER,
    "unstructuredname": NameOID.UNSTRUCTURED_NAME,
    "jurisdictionc": NameOID.JURISDICTION_COUNTRY_NAME,
    "jurisdictioncountryname": NameOID.JURISDICTION_COUNTRY_NAME,
    "jurisdictionst": NameOID.JURISDICTION_STATE_OR_PROVINCE_NAME,
    "jurisdictionl": NameOID.JURISDICTION_LOCALITY_NAME,
}

# cryptography encodes these attributes as PrintableString or IA5String (as
# RFC 5280 asks). A character those types cannot hold would only fail when the
# CMP request is built, so we refuse it while parsing, where the user can fix it.
_PRINTABLE_OIDS = frozenset(
    {
        NameOID.COUNTRY_NAME,
        NameOID.JURISDICTION_COUNTRY_NAME,
        NameOID.SERIAL_NUMBER,
        NameOID.DN_QUALIFIER,
    }
)
_IA5_OIDS = frozenset({NameOID.EMAIL_ADDRESS, NameOID.DOMAIN_COMPONENT})
_PRINTABLE_RE = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]*")
_OID_RE = re.compile(r"(?:oid\.)?([0-2](?:\.(?:0|[1-9][0-9]*))+)", re.IGNORECASE)
_HEX = frozenset("0123456789abcdefABCDEF")
# An attribute type followed by '=' (a name such as O or emailAddress, or a dotted OID).
_TYPE_START_RE = re.compile(r" *(?:[A-Za-z][A-Za-z0-9-]*|(?:oid\.)?[0-2](?:\.[0-9]+)+) *=")
# Only spaces surround a DN: a tab or line break is part of a value (RFC 4514 does not
# escape them, so cryptography prints them bare and they must read back the same).
_BLANKS = " "

_DN_EXAMPLE = ("/C=DE/O=Example/CN=gw1.example.net (slash form, most significant first) or "
               "CN=gw1.example.net,O=Example,C=DE (RFC 4514)")


def _dn_error(text: str, why: str) -> ConfigError:
    err = ConfigError(f"invalid distinguished name {text!r}: {why}")
    err.hint = f"write it like {_DN_EXAMPLE}"
    return err


# A parsed attribute before it becomes a NameAttribute: (type text, value).
_RawAva = tuple[str, str]


def _split_dn(text: str, body: str, rdn_sep: str, *, rfc4514: bool) -> list[list[_RawAva]]:
    """Split a DN body into RDNs of (type, value) pairs, resolving escapes.

    Args:
        text: the whole input, for error messages.
        body: the part to parse (the slash form without its leading ``/``).
        rdn_sep: the character that separates RDNs (``/`` or ``,``).
        rfc4514: allow RFC 4514 quoted values and recognise ``#`` hex values.

    Returns:
        RDNs in the order they appear in ``body``.
    """
    rdns: list[list[_RawAva]] = []
    current: list[_RawAva] = []
    i = 0
    n = len(body)
    while True:
        # Attribute type: everything up to the first '='.
        start = i
        while i < n and body[i] not in "=" + rdn_sep + "+":
            i += 1
        attr_type = body[start:i].strip()
        if i >= n or body[i] != "=":
            piece = body[start:i].strip()
            if not piece:
                raise _dn_error(text, "empty RDN (two separators in a row, or one at the end)")
            raise _dn_error(text, f"expected TYPE=VALUE, found {piece!r}")
        if not attr_type:
            raise _dn_error(text, "an attribute type is missing before '='")
        i += 1  # skip '='
        # Leading unescaped spaces belong to no value (RFC 4514 needs them escaped).
        while i < n and body[i] == " ":
            i += 1
        buf = bytearray()
        keep = 0  # length of buf up to the last significant byte (drops trailing spaces)
        if rfc4514 and i < n and body[i] == "#":
            raise _dn_error(
                text,
                f"hex-encoded value for {attr_type!r} (#...) is not supported; "
                "write the value as text",
            )
        if rfc4514 and i < n and body[i] == '"':
            i += 1
            while i < n and body[i] != '"':
                if body[i] == "\\":
                    i = _escape(text, body, i, buf)
                else:
                    buf += body[i].encode("utf-8", "surrogatepass")
                    i += 1
            if i >= n:
                raise _dn_error(text, "a quoted value is not closed")
            i += 1
            keep = len(buf)
            while i < n and body[i] == " ":
                i += 1
            if i < n and body[i] not in rdn_sep + "+":
                raise _dn_error(text, "text after a quoted value")
        else:
            while i < n and body[i] not in rdn_sep + "+":
                if rfc4514 and body[i] in ";/" and _TYPE_START_RE.match(body, i + 1):
                    # CN=gw1;O=Example (RFC 1779's ';') or C=DE/O=... (slash form
                    # without its leading '/'): not one value, and not a form we read.
                    raise _dn_error(
                        text,
                        f"{body[i]!r} before {body[i + 1:].split('=')[0].strip()}= is not an "
                        "RDN separator: RFC 4514 separates RDNs with ',', and the slash form "
                        "starts with '/' (escape it as '\\" + body[i] + "' if it is part of "
                        "the value)",
                    )
                if body[i] == "\\":
                    i = _escape(text, body, i, buf)
                    keep = len(buf)
                else:
                    buf += body[i].encode("utf-8", "surrogatepass")
                    if body[i] != " ":
                        keep = len(buf)
                    i += 1
        try:
            value = bytes(buf[:keep]).decode("utf-8")
        except UnicodeDecodeError:
            raise _dn_error(text, f"value of {attr_type!r} is not valid UTF-8") from None
        current.append((attr_type, value))
        if i >= n:
            rdns.append(current)
            return rdns
        if body[i] == rdn_sep:
            rdns.append(current)
            current = []
        i += 1


def _escape(text: str, body: str, i: int, buf: bytearray) -> int:
    """Resolve the escape at ``body[i]`` (a backslash) into ``buf``; return the next index."""
    if i + 1 >= len(body):
        raise _dn_error(text, "a backslash at the end has nothing to escape")
    if i + 2 < len(body) and body[i + 1] in _HEX and body[i + 2] in _HEX:
        buf.append(int(body[i + 1 : i + 3], 16))
        return i + 3
    buf += body[i + 1].encode("utf-8", "surrogatepass")
    return i + 2


def _oid_for(text: str, attr_type: str) -> ObjectIdentifier:
    oid = ATTRIBUTE_NAMES.get(attr_type.lower())
    if oid is not None:
        return oid
    m = _OID_RE.fullmatch(attr_type)
    if m:
        return ObjectIdentifier(m.group(1))
    raise _dn_error(
        text,
        f"unknown attribute type {attr_type!r}; use one of C, ST, L, O, OU, CN, emailAddress, "
        "serialNumber, DC, UID, GN, SN, title ... or a dotted OID such as 2.5.4.3",
    )


def _attribute(text: str, attr_type: str, value: str) -> x509.NameAttribute[str]:
    oid = _oid_for(text, attr_type)
    if value == "":
        raise _dn_error(text, f"the value of {attr_type} is empty")
    if oid in _PRINTABLE_OIDS and not _PRINTABLE_RE.fullmatch(value):
        raise _dn_error(
            text,
            f"{attr_type}={value!r} may only hold letters, digits, spaces and '()+,-./:=? "
            "(it is encoded as PrintableString)",
        )
    if oid in _IA5_OIDS and not value.isascii():
        raise _dn_error(text, f"{attr_type}={value!r} must be ASCII (it is encoded as IA5String)")
    try:
        return x509.NameAttribute(oid, value)
    except ValueError as e:
        # cryptography checks lengths, e.g. that C is exactly two letters.
        raise _dn_error(text, f"{attr_type}={value!r}: {e}") from None


def parse_dn(text: str) -> x509.Name:
    """Parse a distinguished name in RFC 4514 or slash form.

    A string whose first non-blank character is ``/`` is read as the slash
    form (most significant RDN first); anything else as RFC 4514 (least
    significant first). Either way the result lists its RDNs in wire order.

    Args:
        text: the DN as the user typed it.

    Returns:
        The name, ready to be put into a certificate template or compared
        with a certificate's subject or issuer.

    Raises:
        ConfigError: the text is empty, malformed, names an unknown attribute
            type or holds a value its attribute type cannot encode.
    """
    if not isinstance(text, str):
        raise ConfigError(f"a distinguished name must be text, not {type(text).__name__}")
    return _parse_dn(text)


@functools.lru_cache(maxsize=64)
def _parse_dn(text: str) -> x509.Name:
    # Cached: a session file names its entity and CA, and checking a session parses
    # them more than once (a Name is immutable; failures are not cached).
    # Only real blanks: str.strip() would also eat control characters such as
    # U+001F, which are legal (if odd) in a value.
    stripped = text.strip(_BLANKS)
    unstripped = text.lstrip(_BLANKS)
    if len(stripped) < len(unstripped):
        # Blanks at the end are dropped, except one escaped by a backslash.
        backslashes = len(stripped) - len(stripped.rstrip("\\"))
        if backslashes % 2:
            stripped = unstripped[: len(stripped) + 1]
    if not stripped or stripped == "/":
        raise _dn_error(text, "it is empty")
    if stripped.startswith("/"):
        raw = _split_dn(text, stripped[1:], "/", rfc4514=False)
    else:
        raw = list(reversed(_split_dn(text, stripped, ",", rfc4514=True)))
    rdns: list[x509.RelativeDistinguishedName] = []
    for raw_rdn in raw:
        attrs = [_attribute(text, t, v) for t, v in raw_rdn]
        try:
            rdns.append(x509.RelativeDistinguishedName(attrs))
        except ValueError as e:
            raise _dn_error(text, f"multi-valued RDN: {e}") from None
    return x509.Name(rdns)


def shown_dn(rfc4514: str) -> str:
    """A DN kept in RFC 4514 form (state files, JSON) as swcmp prints DNs (:func:`format_dn`).

    Text that does not parse as a DN is returned as it is.
    """
    try:
        return format_dn(parse_dn(rfc4514))
    except ConfigError:
        return rfc4514


def common_name(name: x509.Name) -> str | None:
    """The most specific common name (the last CN in wire order), or None."""
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not values:
        return None
    value = values[-1].value
    return value if isinstance(value, str) else None


# --- subjectAltName ------------------------------------------------------------------

_DNS_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_SAN_EXAMPLE = "DNS:gw1.example.net, IP:192.0.2.1, IP:2001:db8::1, EMAIL:ops@example.net"


def _san_error(text: str, why: str) -> ConfigError:
    err = ConfigError(f"invalid subjectAltName {text!r}: {why}")
    err.hint = f"write it like {_SAN_EXAMPLE} or URI:https://gw1.example.net/"
    return err


def _check_dns_name(text: str, value: str) -> str:
    if not value.isascii():
        raise _san_error(text, "non-ASCII DNS name; use its xn-- (punycode) form")
    name = value[:-1] if value.endswith(".") else value
    labels = name.split(".")
    if labels and labels[0] == "*":
        # A wildcard is only meaningful as the whole leftmost label.
        labels = labels[1:]
    if not labels or len(name) > 253:
        raise _san_error(text, "not a DNS name")
    for label in labels:
        if not _DNS_LABEL_RE.fullmatch(label):
            raise _san_error(
                text,
                f"bad DNS label {label!r} (letters, digits and inner hyphens, 1-63 characters)",
            )
    # A trailing dot (absolute name) is dropped: certificates carry names without it.
    return name


def _check_email(text: str, value: str) -> str:
    local, sep, domain = value.rpartition("@")
    if not sep or not local or not domain:
        raise _san_error(text, "an e-mail address needs the form local@domain")
    if not value.isascii() or any(c.isspace() or ord(c) < 0x20 for c in value):
        raise _san_error(text, "an e-mail address must be ASCII without spaces")
    _check_dns_name(text, domain)
    return value


def _check_uri(text: str, value: str) -> str:
    if not value.isascii() or any(c.isspace() or ord(c) < 0x20 for c in value):
        raise _san_error(text, "a URI must be ASCII without spaces (percent-encode the rest)")
    parts = urlsplit(value)
    if not parts.scheme or not (parts.netloc or parts.path):
        raise _san_error(text, "a URI needs a scheme, e.g. https://host/path")
    return value


def parse_san(text: str) -> x509.GeneralName:
    """Parse one subjectAltName written as ``TYPE:value``.

    Types (case-insensitive): ``DNS`` (a host name, optionally ``*.`` wildcard),
    ``IP`` (IPv4 or IPv6 address), ``EMAIL`` (also ``RFC822``) and ``URI``.

    Args:
        text: e.g. ``DNS:gw1.example.net`` or ``IP:2001:db8::1``.

    Returns:
        The matching :class:`cryptography.x509.GeneralName`.

    Raises:
        ConfigError: unknown type or a value that type cannot hold.
    """
    kind, sep, value = text.partition(":")
    kind = kind.strip().upper()
    value = value.strip()
    if not sep:
        raise _san_error(text, "missing TYPE: prefix")
    if not value:
        raise _san_error(text, "the value is empty")
    if kind == "DNS":
        return x509.DNSName(_check_dns_name(text, value))
    if kind in ("IP", "IP ADDRESS"):
        try:
            return x509.IPAddress(ipaddress.ip_address(value))
        except ValueError:
            raise _san_error(text, "not an IPv4 or IPv6 address") from None
    if kind in ("EMAIL", "RFC822", "RFC822NAME"):
        return x509.RFC822Name(_check_email(text, value))
    if kind == "URI":
        return x509.UniformResourceIdentifier(_check_uri(text, value))
    raise _san_error(text, f"unknown type {kind!r}; use DNS, IP, EMAIL or URI")


def format_san(general_name: x509.GeneralName) -> str:
    """Format a subjectAltName as ``TYPE:value``, the text :func:`parse_san` reads.

    IPv6 addresses are printed in their compressed form. A directory name is
    printed as ``DIRNAME:`` followed by :func:`format_dn` (display only: it is
    not accepted as input).

    Raises:
        ConfigError: a GeneralName type swcmp does not handle.
    """
    if isinstance(general_name, x509.DNSName):
        return f"DNS:{general_name.value}"
    if isinstance(general_name, x509.IPAddress):
        return f"IP:{general_name.value}"
    if isinstance(general_name, x509.RFC822Name):
        return f"EMAIL:{general_name.value}"
    if isinstance(general_name, x509.UniformResourceIdentifier):
        return f"URI:{general_name.value}"
    if isinstance(general_name, x509.DirectoryName):
        return f"DIRNAME:{format_dn(general_name.value)}"
    raise ConfigError(f"unsupported subjectAltName type {type(general_name).__name__}")


def parse_sans(texts: Iterable[str]) -> tuple[x509.GeneralName, ...]:
    """Parse several subjectAltNames, refusing duplicates."""
    result: list[x509.GeneralName] = []
    for text in texts:
        gn = parse_san(text)
        if gn in result:
            raise _san_error(text, "given twice")
        result.append(gn)
    return tuple(result)


def format_sans(names: Iterable[x509.GeneralName]) -> tuple[str, ...]:
    """Format several subjectAltNames with :func:`format_san`."""
    return tuple(format_san(n) for n in names)


# --- session names -------------------------------------------------------------------

# Not starting with "." (hidden files, "..") nor "-" (it would read as an option).
_FILE_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def validate_session_name(name: str) -> SessionName:
    """Check a session name and return it typed as :data:`SessionName`.

    Session names become file names (``sessions/NAME.toml``, lock and state
    files), so only letters, digits, ``-``, ``_`` and ``.`` are allowed, 1 to 64
    characters, not starting with ``.`` or ``-``: that rules out ``..``, hidden files,
    path separators and anything a shell would need quoted.

    Raises:
        ConfigError: the name is not acceptable.
    """
    if isinstance(name, str) and _FILE_NAME_RE.fullmatch(name):
        return SessionName(name)
    err = ConfigError(f"invalid session name {name!r}")
    err.hint = (
        "use 1-64 letters, digits, '-', '_' or '.', not starting with '.' or '-', "
        "e.g. gw1 or ca-main"
    )
    raise err


def swanctl_section_name(name: str) -> str:
    """``name`` (a session name) as a swanctl.conf section name.

    swanctl.conf reads a ``.`` in a section name as a path separator (a syntax
    error in a ``secrets`` entry: swanctl then loads nothing at all), so a session
    name such as ``gw1.example.net`` cannot be used as it is. The mapping escapes
    ``_`` as ``__`` and ``.`` as ``_2e``: names without either stay as they are, and
    two session names never map to the same section.
    """
    return name.replace("_", "__").replace(".", "_2e")


def validate_key_name(name: str) -> str:
    """Check the name of a session's key pair (``private/NAME.key``): the rules of a
    session name, and no ``.key`` suffix of its own.

    Raises:
        ConfigError: the name is not acceptable.
    """
    if isinstance(name, str) and _FILE_NAME_RE.fullmatch(name) and not name.endswith(".key"):
        return name
    err = ConfigError(f"invalid key name {name!r}")
    err.hint = (
        "the key is private/NAME.key under the swanctl directory: use 1-64 letters, digits, "
        "'-', '_' or '.', not starting with '.' and without the .key suffix"
    )
    raise err
