"""What a session's ``key`` setting names: a key file in swanctl's ``private/`` or key
pairs in a PKCS#11 token (an RFC 7512 URI). The session's validators ask here, so that
only the key store knows the two kinds apart.
"""

from __future__ import annotations

from swcmp.keystore.uri import is_token_uri
from swcmp.names import validate_key_name


def names_token(key: str | None) -> bool:
    """True when ``key`` is a key URI (the session's pairs are in a token)."""
    return is_token_uri(key)


def check_key_setting(text: str) -> str:
    """``text`` as the ``key`` setting: a key file name, or a key URI checked now (not at
    the first renewal).

    Raises:
        ConfigError: neither a valid key name nor a usable key URI.
    """
    if names_token(text):
        from swcmp.keystore.pkcs11 import TokenUri

        TokenUri.parse(text)
        return text
    return validate_key_name(text)


def names_one_pair(key: str | None) -> bool:
    """True when ``key`` fixes one key pair for good (a key URI with ``id=``): a new pair
    made at a renewal gets a fresh CKA_ID, which such a URI would not find."""
    if key is None or not names_token(key):
        return False
    from swcmp.keystore.pkcs11 import TokenUri

    return TokenUri.parse(key).key_id is not None


def key_file_name(key: str | None) -> str | None:
    """The name of the key's file in ``private/`` (None: no key set, or it is in a token)."""
    return key if key and not names_token(key) else None
