"""CMP server URLs (RFC 6712 3.6: HTTP or HTTPS, POSTed to), checked before use."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from swcmp.cmp.errors import ConfigError


def _bad(message: str, hint: str) -> ConfigError:
    return ConfigError(message).with_hint(hint, setting="server_url")


def check_server_url(value: str) -> str:
    """Check a CMP server URL: http or https, a host, a valid port, no fragment.

    Returns:
        The URL without surrounding blanks.

    Raises:
        ConfigError: the URL is unusable, with an example of a good one.
    """
    text = value.strip()
    hint = (
        "write it like http://ca.example.net:8080/pkix/ or https://ca.example.net/.well-known/cmp"
    )
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError for a bad port
    except ValueError as e:
        raise _bad(f"invalid server URL {value!r}: {e}", hint) from None
    if parts.scheme.lower() not in ("http", "https"):
        raise _bad(f"invalid server URL {value!r}: the scheme must be http or https", hint)
    if not parts.hostname:
        raise _bad(f"invalid server URL {value!r}: no host", hint)
    if port == 0:
        raise _bad(f"invalid server URL {value!r}: port 0", hint)
    if parts.fragment or "#" in text:
        raise _bad(f"invalid server URL {value!r}: a URL for POST has no #fragment", hint)
    if any(c.isspace() for c in text) or not text.isascii():
        raise _bad(f"invalid server URL {value!r}: spaces or non-ASCII characters", hint)
    host = parts.hostname
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _bad(f"invalid server URL {value!r}: bad IPv6 address", hint) from None
    return text
