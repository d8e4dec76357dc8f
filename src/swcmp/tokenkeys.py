"""A session's keys in a PKCS#11 token: which object is current, what charon and
swanctl are told, and which retired objects may be destroyed.

The current key pair is the token object whose public key the session's
certificate (``x509/<session>.crt``) certifies; before the first certificate it
is the one pair with the URI's label. No private key file is ever written for a
token session. Three things stay in step with the certificate:

* charon gets the key with VICI ``load-token`` (handle = CKA_ID, and the PIN);
* ``conf.d/swcmp-<session>.conf`` under the swanctl directory (0600) holds a
  ``secrets { token-swcmp-<session> { handle, pin } }`` entry, so that a
  ``swanctl --load-creds`` loads the same key instead of unloading it (swanctl
  unloads every VICI key it did not load itself);
* an object replaced by a renewal is *retired* (recorded in the session's state
  directory) and destroyed only once charon no longer holds it (pinned mode
  keeps an old key loaded while old IKE SAs live).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509

from swcmp import fsutil
from swcmp.cmp import certs, keys
from swcmp.deploy import CredentialPair, TokenRef
from swcmp.errors import ConfigError, StorageError
from swcmp.names import swanctl_section_name
from swcmp.paths import Paths
from swcmp.pkcs11 import TokenConfig, TokenKey, TokenStore, TokenUri, is_token_uri
from swcmp.session import Session

log = logging.getLogger(__name__)

SECRETS_PREFIX = "token-swcmp-"


def uses_token(session: Session) -> bool:
    """True when the session's key is a ``pkcs11:`` URI."""
    return is_token_uri(session.key)


def token_config(session: Session) -> TokenConfig:
    """The session's module, URI and PIN file, all required.

    Raises:
        ConfigError: the key is no URI, or the module or PIN file is not set.
    """
    assert session.key is not None and is_token_uri(session.key)
    if session.pkcs11_module is None:
        raise ConfigError(f"session {session.name} keeps its key in a token but has no "
                          "PKCS#11 module").with_hint(
            f"swcmp session set {session.name} --pkcs11-module PATH "
            "(e.g. /usr/lib/softhsm/libsofthsm2.so)")
    if session.pin_file is None:
        raise ConfigError(f"session {session.name} keeps its key in a token but has no PIN "
                          "file").with_hint(
            f"swcmp session set {session.name} --pin-file FILE (mode 0600, only the PIN)")
    return TokenConfig(session.name, TokenUri.parse(session.key), session.pkcs11_module,
                       session.pin_file)


def token_store(session: Session) -> TokenStore | None:
    """The session's token key store, or None for a session with key files."""
    return TokenStore(token_config(session)) if uses_token(session) else None


def _cert(paths: Paths, session: Session) -> x509.Certificate | None:
    p = paths.cert_file(session.name)
    if not p.exists():
        return None
    try:
        return certs.load_certificate(p.read_bytes())
    except OSError as e:
        raise StorageError(f"cannot read the certificate {p}: {e.strerror}") from e


def current_key(session: Session, paths: Paths) -> TokenKey | None:
    """The token pair the session's certificate certifies (or the only pair, before one).

    Raises:
        ConfigError: a certificate exists but no pair in the token matches it, or
            there is no certificate and several pairs carry the label.
    """
    store = TokenStore(token_config(session))
    cert = _cert(paths, session)
    if cert is not None:
        key = store.key_for(certs.spki_of(cert))
        if key is None:
            raise ConfigError(
                f"session {session.name}: no key pair with {store.uri.describe()} matches the "
                f"certificate {paths.cert_file(session.name)}").with_hint(
                "the token may have been reset or the URI changed; enroll again with "
                f"`swcmp request initial {session.name}`")
        return key
    found = store.pairs()
    if len(found) > 1:
        raise ConfigError(
            f"session {session.name}: {len(found)} key pairs carry {store.uri.describe()} and "
            "no certificate says which is current").with_hint(
            "destroy the pairs that are not wanted (pkcs11-tool --delete-object), or add id= "
            "to the URI")
    return found[0] if found else None


def ensure_key(session: Session, paths: Paths) -> tuple[TokenKey, bool]:
    """The current token pair, or a new one made in the token per ``key_type``."""
    key = current_key(session, paths)
    if key is not None:
        return key, False
    store = TokenStore(token_config(session))
    if store.uri.key_id is not None:
        raise ConfigError(f"session {session.name}: the token has no key pair with CKA_ID "
                          f"{store.uri.key_id.hex()}").with_hint(
            "drop id= from the key URI to let swcmp make the key pair in the token")
    from swcmp.pkcs11 import new_key_id

    return store.generate(session.key_type, new_key_id()), True


def pair_for(session: Session, paths: Paths, key: TokenKey, cert_pem: bytes,
             ca_certs_pem: tuple[bytes, ...]) -> CredentialPair:
    """A CredentialPair for a token key and certificate (no key file, no key bytes);
    ``ca_certs_pem`` as the credential store reads them."""
    return CredentialPair(
        session=session.name, key_path=Path(str(session.key)),
        cert_path=paths.cert_file(session.name), key_pem=b"", cert_pem=cert_pem,
        ca_certs_pem=ca_certs_pem,
        token=TokenRef(key.handle, token_config(session).pin()))


def current_pair(session: Session, paths: Paths, ca_certs_pem: tuple[bytes, ...]
                 ) -> CredentialPair | None:
    """The session's live token key and certificate, if both exist."""
    cp = paths.cert_file(session.name)
    if not cp.exists():
        return None
    key = current_key(session, paths)
    if key is None:
        return None
    return pair_for(session, paths, key, cp.read_bytes(), ca_certs_pem)


# --------------------------------------------------------------------------- swanctl


def secrets_file(paths: Paths, session: Session) -> Path:
    """``conf.d/swcmp-<session>.conf`` under the swanctl directory."""
    return paths.swanctl_dir / "conf.d" / f"swcmp-{session.name}.conf"


def write_secrets(paths: Paths, session: Session, key: TokenKey) -> Path:
    """Write the ``secrets { token-swcmp-<session> { ... } }`` entry for ``key`` (0600).

    swanctl.conf must include ``conf.d/*.conf`` (Debian's does) for swanctl to
    read it; ``session check`` says so when it does not.
    """
    text = secrets_text(session.name, key.handle, token_config(session).pin())
    path = secrets_file(paths, session)
    fsutil.ensure_dir(path.parent, mode=0o755)
    fsutil.atomic_write(path, text.encode(), mode=0o600)
    return path


def secrets_text(session_name: str, handle: str, pin: str) -> str:
    """The ``secrets`` entry of a token session as swanctl.conf text.

    The section is ``token-swcmp-`` and the session name as swanctl can read it
    (:func:`swcmp.names.swanctl_section_name`: ``gw1.example.net`` becomes
    ``token-swcmp-gw1_2eexample_2enet``).

    Raises:
        ConfigError: the PIN holds a character swanctl.conf cannot quote.
    """
    if any(c in pin for c in '"\\\n'):
        raise ConfigError("the PIN contains a quote, backslash or line break, which "
                          "swanctl.conf cannot hold").with_hint(
            "use a PIN without them, or write the secrets entry by hand")
    return (f"# Written by swcmp for session {session_name}: the key is in a PKCS#11 token\n"
            "# (CKA_ID below). Rewritten at each renewal; do not edit.\n"
            "secrets {\n"
            f"  {SECRETS_PREFIX}{swanctl_section_name(session_name)} {{\n"
            f"    handle = {handle}\n"
            f'    pin = "{pin}"\n'
            "  }\n"
            "}\n")


def swanctl_includes_conf_d(swanctl_conf: Path) -> bool:
    """True when swanctl.conf has an ``include conf.d/*.conf`` line (or an absolute one)."""
    try:
        text = swanctl_conf.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) == 2 and words[0] == "include" and words[1].endswith("conf.d/*.conf"):
            return True
    return False


# --------------------------------------------------------------------------- retired


def _retired_file(paths: Paths, session: Session) -> Path:
    return paths.session_state_dir(session.name) / "token-retired.json"


def retired(paths: Paths, session: Session) -> dict[str, str]:
    """Retired objects: CKA_ID hex -> charon key id of the pair."""
    p = _retired_file(paths, session)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise StorageError(f"{p} is unreadable: {e}").with_hint(
            "remove it; retired token objects are then left in the token") from e
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise StorageError(f"{p} is damaged").with_hint(
            "remove it; retired token objects are then left in the token")
    return data


def retire(paths: Paths, session: Session, key: TokenKey) -> None:
    """Record that ``key`` is replaced: destroy it once charon lets go of it."""
    data = retired(paths, session)
    data[key.handle] = keys.subject_key_id(key.public_key()).hex()
    p = _retired_file(paths, session)
    fsutil.ensure_dir(p.parent, mode=0o700)
    fsutil.atomic_write(p, json.dumps(data).encode(), mode=0o600)


def unretire(paths: Paths, session: Session, handle: str) -> None:
    """``handle`` is current again (a failed deploy was undone): never destroy it."""
    data = retired(paths, session)
    if data.pop(handle, None) is None:
        return
    p = _retired_file(paths, session)
    if data:
        fsutil.atomic_write(p, json.dumps(data).encode(), mode=0o600)
    else:
        fsutil.remove_file(p, missing_ok=True)


def destroy_retired(paths: Paths, session: Session, *, loaded: Iterable[str] | None,
                    keep: Iterable[str] = ()) -> list[str]:
    """Destroy retired objects that charon does not hold; return their CKA_IDs.

    ``loaded`` are the key ids charon holds (``get-keys``); None when there is no
    charon to ask about (``--vici none``): then every retired object goes.
    ``keep`` are CKA_IDs never destroyed (the current and a staged pair).
    """
    data = retired(paths, session)
    if not data:
        return []
    store = TokenStore(token_config(session))
    held = set(loaded) if loaded is not None else set()
    keep_set = set(keep)
    gone: list[str] = []
    for handle, key_id in sorted(data.items()):
        if handle in keep_set:
            gone.append(handle)  # became current again (a rollback): no longer retired
            continue
        if key_id in held:
            continue
        store.destroy(bytes.fromhex(handle))
        gone.append(handle)
    left = {h: k for h, k in data.items() if h not in gone}
    p = _retired_file(paths, session)
    if left:
        fsutil.atomic_write(p, json.dumps(left).encode(), mode=0o600)
    else:
        fsutil.remove_file(p, missing_ok=True)
    return gone
