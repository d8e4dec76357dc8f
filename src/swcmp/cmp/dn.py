"""DNs as swcmp prints them: slash form, most significant RDN first (:func:`format_dn`).

The one printed form of a DN, in every message of the CMP library and of the tool
(``swcmp.names`` re-exports it); it is also a form ``--entity`` and ``--ca-name`` take.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

# The one name printed for each OID by format_dn (OpenSSL's short names).
_PREFERRED_NAME: dict[ObjectIdentifier, str] = {
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COMMON_NAME: "CN",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.USER_ID: "UID",
    NameOID.GIVEN_NAME: "GN",
    NameOID.SURNAME: "SN",
    NameOID.TITLE: "title",
    NameOID.INITIALS: "initials",
    NameOID.GENERATION_QUALIFIER: "generationQualifier",
    NameOID.DN_QUALIFIER: "dnQualifier",
    NameOID.PSEUDONYM: "pseudonym",
    NameOID.STREET_ADDRESS: "street",
    NameOID.POSTAL_CODE: "postalCode",
    NameOID.BUSINESS_CATEGORY: "businessCategory",
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
    NameOID.UNSTRUCTURED_NAME: "unstructuredName",
    NameOID.JURISDICTION_COUNTRY_NAME: "jurisdictionC",
    NameOID.JURISDICTION_STATE_OR_PROVINCE_NAME: "jurisdictionST",
    NameOID.JURISDICTION_LOCALITY_NAME: "jurisdictionL",
}

def _escape_value(value: str) -> str:
    out: list[str] = []
    last = len(value) - 1
    for pos, ch in enumerate(value):
        if ch in "\\/+":
            out.append("\\" + ch)
        elif ch == " " and pos in (0, last):
            # Unescaped leading and trailing spaces are dropped by the parser.
            out.append("\\ ")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            # Control characters would garble a terminal; hex keeps them visible.
            out.append(f"\\{ord(ch):02X}")
        else:
            out.append(ch)
    return "".join(out)


def format_dn(name: x509.Name) -> str:
    """Format a name in slash form, most significant RDN first (wire order).

    This is the one order swcmp prints names in: the order of the RDNs in the
    encoded certificate or request, e.g. ``/C=DE/O=Example/CN=gw1``. Attributes
    of a multi-valued RDN are joined with ``+``. ``\\``, ``/`` and ``+`` in
    values are escaped with a backslash, leading/trailing spaces as ``\\ `` and
    control characters as ``\\HH``. :func:`swcmp.names.parse_dn` reads the result back to an
    equal name (for text-valued attributes, which is all X.509 names use in
    practice).

    Args:
        name: the name to format.

    Returns:
        The slash form; ``/`` alone for the empty name.
    """
    parts: list[str] = []
    for rdn in name.rdns:
        avas: list[str] = []
        for attr in rdn:
            label = _PREFERRED_NAME.get(attr.oid, attr.oid.dotted_string)
            value = attr.value
            if isinstance(value, bytes):
                # Only x500UniqueIdentifier (a BIT STRING) is bytes; show it as hex bytes.
                text = "".join(f"\\{b:02X}" for b in value)
            else:
                text = _escape_value(value)
            avas.append(f"{label}={text}")
        parts.append("+".join(avas))
    return "/" + "/".join(parts)
