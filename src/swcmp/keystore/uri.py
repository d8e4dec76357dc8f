"""Whether a session's ``key`` setting is a PKCS#11 key URI (RFC 7512): a module of its
own, so that asking costs no import of the token code (a renewal with a key file never
loads :mod:`swcmp.keystore.pkcs11`)."""

from __future__ import annotations

#: What starts a key URI (the scheme is matched case-insensitively).
URI_SCHEME = "pkcs11:"


def is_token_uri(value: str | None) -> bool:
    """True when a session's ``key`` names a PKCS#11 object instead of a key file."""
    return value is not None and value.lower().startswith(URI_SCHEME)
