"""A session's keys in a PKCS#11 token: which object is current, what charon and
swanctl are told, and which replaced objects may be destroyed.

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
  directory, its certificate in the archive) and destroyed only once charon no longer
  holds it (pinned mode keeps an old key loaded while old IKE SAs live) and no
  revocation of its certificate waits for its key.

A key update makes the new pair inside the token under a fresh random CKA_ID. The
journal records that CKA_ID *before* the token is asked (``key-making``), so a run
killed while the pair is being made leaves at most that one object, which the next
run destroys before it starts again. Commit is one atomic write of the certificate:
from then on the new pair is current. The pair it replaces is written to the journal
first (``token_old``) so that a run killed after the certificate was written still
deploys with the right previous pair.

The token is opened through one :class:`~swcmp.keystore.pkcs11.TokenStore` per run,
which reads the PIN file once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from cryptography import x509

from swcmp import fsutil
from swcmp.checkresult import CheckResult
from swcmp.cmp import certs, keys
from swcmp.deploy import CredentialPair, DeployError, TokenRef
from swcmp.errors import ConfigError, RenewalError, StorageError, SwcmpError
from swcmp.keystore.base import HeldKeys, Installed
from swcmp.keystore.pkcs11 import (
    TOKEN_KEY_TYPES,
    TokenConfig,
    TokenKey,
    TokenStore,
    TokenUri,
    new_key_id,
)
from swcmp.keystore.token_checks import secrets_file
from swcmp.names import swanctl_section_name
from swcmp.paths import Paths
from swcmp.session import Session
from swcmp.store import Journal, JournalEntry, archive_pair, ca_certs_pem, write_cert

log = logging.getLogger(__name__)

SECRETS_PREFIX = "token-swcmp-"


def token_config(session: Session) -> TokenConfig:
    """The session's module, URI and PIN file, all required.

    Raises:
        ConfigError: the module or PIN file is not set.
    """
    assert session.key is not None
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


class TokenKeys:
    """The key store of a session whose key is a ``pkcs11:`` URI (see the module
    docstring)."""

    collects = True  # retired objects are destroyed once nothing needs them
    key_types: tuple[str, ...] = TOKEN_KEY_TYPES

    def __init__(self, session: Session, paths: Paths) -> None:
        self.session = session
        self.paths = paths
        self._store: TokenStore | None = None

    def __repr__(self) -> str:
        return f"TokenKeys({self.session.name!r})"

    @property
    def store(self) -> TokenStore:
        """The session's token (its settings are checked at the first use)."""
        if self._store is None:
            self._store = TokenStore(token_config(self.session))
        return self._store

    @property
    def key_file(self) -> Path | None:
        return None

    # -- the live pair

    def _cert(self) -> x509.Certificate | None:
        p = self.paths.cert_file(self.session.name)
        if not p.exists():
            return None
        try:
            return certs.load_certificate(p.read_bytes())
        except OSError as e:
            raise StorageError(f"cannot read the certificate {p}: {e.strerror}") from e

    def live_key(self) -> TokenKey | None:
        """The token pair the session's certificate certifies (or the only pair, before one).

        Raises:
            ConfigError: a certificate exists but no pair in the token matches it, or
                there is no certificate and several pairs carry the label.
        """
        store, name = self.store, self.session.name
        cert = self._cert()
        if cert is not None:
            key = store.key_for(certs.spki_of(cert))
            if key is None:
                raise ConfigError(
                    f"session {name}: no key pair with {store.uri.describe()} matches the "
                    f"certificate {self.paths.cert_file(name)}").with_hint(
                    "the token may have been reset or the URI changed; enroll again with "
                    f"`swcmp request initial {name}`")
            return key
        found = store.pairs()
        if len(found) > 1:
            raise ConfigError(
                f"session {name}: {len(found)} key pairs carry {store.uri.describe()} and "
                "no certificate says which is current").with_hint(
                "destroy the pairs that are not wanted (pkcs11-tool --delete-object), or add "
                "id= to the URI")
        return found[0] if found else None

    def _pair(self, key: TokenKey, cert_pem: bytes) -> CredentialPair:
        """A CredentialPair for a token key and certificate (no key file, no key bytes)."""
        return CredentialPair(
            self.session.name, TokenRef(key.handle, self.store.pin(), self.store.uri.describe()),
            self.paths.cert_file(self.session.name), cert_pem,
            ca_certs_pem(self.session, self.paths))

    def live_pair(self) -> CredentialPair | None:
        cp = self.paths.cert_file(self.session.name)
        if not cp.exists():
            return None
        key = self.live_key()
        if key is None:
            return None
        return self._pair(key, cp.read_bytes())

    # -- enrolment

    def ensure_key(self) -> tuple[TokenKey, bool]:
        """The current token pair, or a new one made in the token per ``key_type``."""
        key = self.live_key()
        if key is not None:
            return key, False
        if self.store.uri.key_id is not None:
            raise ConfigError(f"session {self.session.name}: the token has no key pair with "
                              f"CKA_ID {self.store.uri.key_id.hex()}").with_hint(
                "drop id= from the key URI to let swcmp make the key pair in the token")
        return self.store.generate(self.session.key_type, new_key_id()), True

    def enrolled(self) -> None:
        """The secrets entry names the pair the new certificate certifies."""
        key = self.live_key()
        assert key is not None
        self._write_secrets(key)

    def _write_secrets(self, key: TokenKey) -> Path:
        """Write the ``secrets { token-swcmp-<session> { ... } }`` entry for ``key`` (0600).

        swanctl.conf must include ``conf.d/*.conf`` (Debian's does) for swanctl to
        read it; ``session check`` says so when it does not.
        """
        text = secrets_text(self.session.name, key.handle, self.store.pin())
        path = secrets_file(self.paths, self.session)
        fsutil.ensure_dir(path.parent, mode=0o755)
        fsutil.atomic_write(path, text.encode(), mode=0o600)
        return path

    # -- a key update

    def recover(self, j: Journal, entry: JournalEntry
                ) -> tuple[TokenKey | None, JournalEntry | None]:
        if not entry.token_id:
            return None, entry
        kid = bytes.fromhex(entry.token_id)
        if entry.phase == "key-making":
            n = self._destroy_staged(kid)
            log.warning("%s: a run was killed while the token made a key pair; %d object(s) "
                        "of it destroyed, starting again", self.session.name, n)
            j.clear()
            return None, None
        staged = next((k for k in self.store.pairs() if k.key_id == kid), None)
        if staged is not None:
            return staged, entry
        log.warning("%s: the staged key pair (CKA_ID %s) is no longer in the token; "
                    "starting again", self.session.name, kid.hex())
        self.store.destroy(kid)
        j.clear()
        return None, None

    def reserve(self) -> dict[str, Any]:
        if self.store.uri.key_id is not None:  # the session refuses this; a hand edit may not
            raise ConfigError(f"session {self.session.name}: a key URI with id= cannot be "
                              "renewed with a new key pair; nothing was asked of the CA"
                              ).with_hint("drop id= from the key URI")
        return {"token_id": new_key_id().hex()}

    def make_staged(self, j: Journal, entry: JournalEntry) -> TokenKey:
        assert entry.token_id is not None
        return self.store.generate(self.session.key_type, bytes.fromhex(entry.token_id))

    def has_staged(self, j: Journal, entry: JournalEntry) -> bool:
        return entry.token_id is not None

    def discard_staged(self, j: Journal, entry: JournalEntry) -> None:
        if entry.token_id:
            self._destroy_staged(bytes.fromhex(entry.token_id))

    def _destroy_staged(self, kid: bytes) -> int:
        """Destroy the staged pair ``kid``, unless it is the current pair (a journal
        damaged or edited to name it): that one the live certificate needs."""
        try:
            current = self.live_key()
        except ConfigError:
            current = None  # no live pair to protect
        if current is not None and current.key_id == kid:
            log.error("%s: the journal's staged key pair (CKA_ID %s) is the current one; "
                      "it is kept", self.session.name, kid.hex())
            return 0
        return self.store.destroy(kid)

    def install(self, j: Journal, cert: x509.Certificate,
                checkpoint: Callable[[str], None]) -> Installed:
        """The certificate write is the commit: from then on the pair it certifies is
        current. The replaced pair is retired (and its certificate archived) first."""
        pairs = self.store.pairs()
        spki = certs.spki_of(cert)
        new_key = next((k for k in pairs if keys.spki_der(k.public_key()) == spki), None)
        if new_key is None:
            raise RenewalError("the staged certificate's key pair is not in the token"
                               ).with_hint(
                f"inspect {j.dir} and the token; the live pair is untouched. Remove "
                "journal.json there to abandon this renewal")
        entry = j.load()
        assert entry is not None
        if entry.old_cert_pem is None and entry.token_old is None:
            live = self._cert()
            old = next((k for k in pairs if live is not None
                        and certs.spki_of(live) == keys.spki_der(k.public_key())), None)
            entry = j.write(token_old=old.handle if old else None,
                            old_cert_pem=certs.pem_of(live).decode() if live else None)
        old_key = next((k for k in pairs if k.handle == entry.token_old), None)
        old_cert_pem = entry.old_cert_pem.encode() if entry.old_cert_pem else None
        installed = Installed(None)
        if old_key is not None and old_key.handle != new_key.handle and old_cert_pem:
            old_serial = certs.load_certificate(old_cert_pem).serial_number
            installed = Installed(self._pair(old_key, old_cert_pem), old_serial,
                                  {"handle": old_key.handle})
            archive_pair(j, old_cert_pem, None)
            self._retire(old_key, old_serial)
        write_cert(self.paths, self.session, cert)
        checkpoint("cert-written")
        self._write_secrets(new_key)
        checkpoint("secrets-written")
        return installed

    def undo(self, installed: Installed) -> None:
        """The previous certificate and secrets entry back; the old pair is current again."""
        previous = installed.previous
        if previous is None or installed.undo_data is None:
            return
        handle = str(installed.undo_data["handle"])
        try:
            write_cert(self.paths, self.session, certs.load_certificate(previous.cert_pem))
            old_key = next(k for k in self.store.pairs() if k.handle == handle)
            self._write_secrets(old_key)
            self._unretire(handle)
        except (OSError, StopIteration, SwcmpError) as e:
            log.error("%s: could not restore the previous certificate: %s; the next run "
                      "commits the staged pair", self.session.name, e)

    # -- retired pairs

    def _retired_file(self) -> Path:
        return self.paths.session_state_dir(self.session.name) / "token-retired.json"

    def retired(self) -> dict[str, dict[str, str]]:
        """Retired objects: CKA_ID hex -> charon's key id of the pair (``key_id``) and the
        serial (hex) of its certificate (``serial``)."""
        p = self._retired_file()
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise StorageError(f"{p} is unreadable: {e}").with_hint(
                "remove it; retired token objects are then left in the token") from e
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            raise StorageError(f"{p} is damaged").with_hint(
                "remove it; retired token objects are then left in the token")
        out: dict[str, dict[str, str]] = {}
        for handle, v in data.items():
            if isinstance(v, str):  # written by swcmp before the serial was kept
                out[handle] = {"key_id": v}
            elif isinstance(v, dict) and all(isinstance(x, str) for x in v.values()):
                out[handle] = dict(v)
            else:
                raise StorageError(f"{p} is damaged").with_hint(
                    "remove it; retired token objects are then left in the token")
        return out

    def _save_retired(self, data: dict[str, dict[str, str]]) -> None:
        p = self._retired_file()
        if data:
            fsutil.ensure_dir(p.parent, mode=0o700)
            fsutil.atomic_write(p, json.dumps(data).encode(), mode=0o600)
        else:
            fsutil.remove_file(p, missing_ok=True)

    def _retire(self, key: TokenKey, serial: int) -> None:
        """Record that ``key`` is replaced: destroy it once charon lets go of it."""
        data = self.retired()
        data[key.handle] = {"key_id": keys.subject_key_id(key.public_key()).hex(),
                            "serial": f"{serial:x}"}
        self._save_retired(data)

    def _unretire(self, handle: str) -> None:
        """``handle`` is current again (a failed deploy was undone): never destroy it."""
        data = self.retired()
        if data.pop(handle, None) is not None:
            self._save_retired(data)

    def collect(self, held: HeldKeys, *, keep_serials: Collection[int] = ()) -> list[str]:
        """Destroy retired objects that charon does not hold; return their CKA_IDs.

        ``held`` is asked only when there is something to destroy; None (no charon on
        this host) lets every retired object go; a charon that cannot be asked keeps
        them all. The current pair and a staged one are never destroyed, nor the pair of
        a certificate in ``keep_serials``.
        """
        data = self.retired()
        if not data:
            return []
        try:
            loaded = set(held()) if held is not None else set()
        except DeployError as e:
            log.info("charon not asked which keys it holds (%s); retired token objects stay",
                     e)
            return []
        keep = {f"{s:x}" for s in keep_serials}
        current = self.live_key()
        entry = Journal(self.paths, self.session.name).load()
        never = {h for h in (current.handle if current else None,
                             entry.token_id if entry else None) if h}
        gone: list[str] = []
        for handle, info in sorted(data.items()):
            if handle in never:
                gone.append(handle)  # current again (a rollback): no longer retired
                continue
            if info.get("key_id") in loaded or info.get("serial") in keep:
                continue
            self.store.destroy(bytes.fromhex(handle))
            gone.append(handle)
        self._save_retired({h: i for h, i in data.items() if h not in gone})
        return gone

    # -- revocation and checks

    def key_for(self, cert: x509.Certificate) -> TokenKey | None:
        """The pair in the token whose public key ``cert`` certifies (live or retired)."""
        return self.store.key_for(certs.spki_of(cert))

    def checks(self) -> list[CheckResult]:
        from swcmp.keystore.token_checks import token_checks

        try:
            store = self.store
        except SwcmpError as e:
            return token_checks(self.session, self.paths, e)
        return token_checks(self.session, self.paths, store)


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
