"""The staged renewal (see :mod:`swcmp.renewal`) for a session whose key is in a token.

What differs from key files:

* ``--regenerate`` makes the new pair inside the token under a fresh random
  CKA_ID. The journal records that CKA_ID *before* the token is asked
  (``key-making``), so a run killed while the pair is being made leaves at most
  that one object, which the next run destroys before it starts again; once the
  pair exists the journal says ``key-ready`` and the next run certifies it.
* Commit is one atomic write of ``x509/<session>.crt``: from then on the new pair
  is current (the certificate decides). The pair it replaces is written to the
  journal first (``token_old``) so that a run killed after the certificate was
  written still deploys with the right previous pair.
* The replaced pair is retired, and destroyed only once charon no longer holds
  its key (identity mode: right after the swap; pinned mode: once the stale-key
  cleanup unloaded it; after a charon restart: at once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from cryptography import x509

from swcmp import tokenkeys
from swcmp.cmp import certs
from swcmp.deploy import CredentialPair, Deployer, DeployError, DeployUnavailable
from swcmp.enroll import Outcome
from swcmp.errors import ConfigError, StorageError, SwcmpError
from swcmp.pkcs11 import TokenKey, new_key_id
from swcmp.store import (
    JournalEntry,
    ca_certs_pem,
    check_staged,
    read_file,
    write_ca_certs,
    write_cert,
)

if TYPE_CHECKING:
    from swcmp.paths import Paths
    from swcmp.session import Session
    from swcmp.store import Journal

log = logging.getLogger(__name__)


class Renewer(Protocol):
    """What of :class:`swcmp.renewal.Renewer` a token renewal uses (it is called from
    there, and does not import it)."""

    paths: Paths
    deployer: Deployer | None
    charon_untouched: bool

    def clock(self) -> datetime: ...

    def test_checkpoint(self, phase: str) -> None: ...


def held_key_ids(renewer: Renewer) -> set[str] | bool | None:
    """Key ids charon holds: a set; None with no charon (files only); False when unknown,
    as after ``--no-deploy``: charon was not updated and may still sign with the replaced
    pair, which a later ``serve`` pass destroys once charon lets go of it."""
    if renewer.deployer is None:
        return False if renewer.charon_untouched else None
    ask = getattr(renewer.deployer, "loaded_key_ids", None)
    if not callable(ask):
        return False
    return _charon_keys(ask)


def _charon_keys(ask: Callable[[], Iterable[str]]) -> set[str] | bool:
    try:
        return set(ask())
    except DeployError as e:
        log.info("charon not asked which keys it holds (%s); retired token objects stay", e)
        return False


def clean_retired_objects(paths: Paths, session: Session,
                          ask: Callable[[], Iterable[str]] | None) -> None:
    """For ``serve``: destroy the session's retired token objects charon does not hold.

    ``ask`` returns the key ids charon holds (None: no charon on this host).
    """
    if not tokenkeys.uses_token(session):
        return
    try:
        if not tokenkeys.retired(paths, session):
            return
        held = _charon_keys(ask) if ask is not None else None
        if held is False:
            return
        assert not isinstance(held, bool)
        current = tokenkeys.current_key(session, paths)
        tokenkeys.destroy_retired(paths, session, loaded=held,
                                  keep=[current.handle] if current else [])
    except SwcmpError as e:
        log.warning("%s: retired token objects not destroyed: %s", session.name, e)


def clean_retired(renewer: Renewer, session: Session, keep: list[str]) -> None:
    """Destroy retired token objects that charon no longer holds."""
    held = held_key_ids(renewer)
    if held is False:
        return
    assert not isinstance(held, bool)
    try:
        tokenkeys.destroy_retired(renewer.paths, session, loaded=held, keep=keep)
    except SwcmpError as e:  # a token problem here must not stop the renewal
        log.warning("%s: retired token objects not destroyed: %s", session.name, e)


def token_key_to_certify(renewer: Renewer, session: Session, j: Journal,
                         entry: JournalEntry | None, live_key: Any,
                         old_cert: x509.Certificate, regenerate: bool, now: datetime
                         ) -> tuple[TokenKey, JournalEntry | None]:
    """The pair to certify: staged by an interrupted run, made now, or the live one."""
    store = tokenkeys.token_store(session)
    assert store is not None and isinstance(live_key, TokenKey)
    keep = [live_key.handle] + ([entry.token_id] if entry and entry.token_id else [])
    clean_retired(renewer, session, keep)
    if entry and entry.token_id:
        kid = bytes.fromhex(entry.token_id)
        if entry.phase == "key-making":
            n = store.destroy(kid)
            log.warning("%s: a run was killed while the token made a key pair; %d object(s) "
                        "of it destroyed, starting again", session.name, n)
            j.clear()
            entry = None
        else:
            staged = next((k for k in store.pairs() if k.key_id == kid), None)
            if staged is not None:
                return staged, entry
            log.warning("%s: the staged key pair (CKA_ID %s) is no longer in the token; "
                        "starting again", session.name, kid.hex())
            store.destroy(kid)
            j.clear()
            entry = None
    if not regenerate:
        return live_key, entry
    if store.uri.key_id is not None:  # the session refuses this; a hand edit may not
        raise ConfigError(f"session {session.name}: a key URI with id= cannot be renewed "
                          "with a new key pair; nothing was asked of the CA").with_hint(
            "drop id= from the key URI")
    kid = new_key_id()
    entry = j.write(phase="key-making", token_id=kid.hex(),
                    old_serial=f"{old_cert.serial_number:x}",
                    started=now.isoformat(timespec="seconds"), regenerate=True)
    renewer.test_checkpoint("key-making")
    new = store.generate(session.key_type, kid)
    entry = j.write(phase="key-ready")
    renewer.test_checkpoint("key-ready")
    return new, entry


def promote_token(renewer: Renewer, session: Session, j: Journal) -> Outcome:
    """Make the staged certificate live: it names the token pair that becomes current."""
    from swcmp.errors import RenewalError

    paths = renewer.paths
    entry = j.write(phase="committing")
    renewer.test_checkpoint("committing")
    staged_cert = certs.load_certificate(read_file(j.cert_file, "staged certificate"))
    store = tokenkeys.token_store(session)
    assert store is not None
    pairs = store.pairs()
    new_key = next((k for k in pairs if certs.spki_of(staged_cert) == _spki(k)), None)
    if new_key is None:
        raise RenewalError("the staged certificate's key pair is not in the token").with_hint(
            f"inspect {j.dir} and the token; the live pair is untouched. Remove journal.json "
            "there to abandon this renewal")
    cert_path = paths.cert_file(session.name)
    if entry.old_cert_pem is None and entry.token_old is None:
        live_pem = cert_path.read_bytes() if cert_path.exists() else None
        live = certs.load_certificate(live_pem) if live_pem else None
        old = next((k for k in pairs if live is not None and certs.spki_of(live) == _spki(k)),
                   None)
        entry = j.write(token_old=old.handle if old else None,
                        old_cert_pem=live_pem.decode() if live_pem else None)
    old_key = next((k for k in pairs if k.handle == entry.token_old), None)
    old_cert_pem = entry.old_cert_pem.encode() if entry.old_cert_pem else None
    previous: CredentialPair | None = None
    if old_key is not None and old_key.handle != new_key.handle and old_cert_pem:
        previous = tokenkeys.pair_for(session, paths, old_key, old_cert_pem,
                                      ca_certs_pem(session, paths))
    ca_certs = j.staged_ca_certs()
    check_staged(session, staged_cert, ca_certs, now=renewer.clock(), where=j.dir)
    if previous is not None and old_key is not None:
        tokenkeys.retire(paths, session, old_key)
    # The commit: from this write on the new pair is the session's current one.
    write_cert(paths, session, staged_cert)
    renewer.test_checkpoint("cert-written")
    ca_paths = write_ca_certs(session, paths, ca_certs) if ca_certs else ()
    tokenkeys.write_secrets(paths, session, new_key)
    renewer.test_checkpoint("secrets-written")
    new = tokenkeys.pair_for(session, paths, new_key, certs.pem_of(staged_cert),
                             ca_certs_pem(session, paths))
    try:
        detail = (renewer.deployer.deploy(new, previous).detail
                  if renewer.deployer is not None else "files written")
    except DeployUnavailable as e:
        detail = f"charon not updated ({e}); it loads the new pair when it starts"
        log.warning("%s: %s", session.name, detail)
    except DeployError as e:
        if previous is not None and old_key is not None:
            _restore(session, renewer, previous, old_key)
        raise RenewalError(
            f"charon did not take the renewed pair: {e}; the previous certificate is "
            "restored in storage and its key pair stays in the token").with_hint(
            "the new certificate is kept staged; the next run tries to deploy it again") from e
    clean_retired(renewer, session, [new_key.handle])
    j.clear()
    renewer.test_checkpoint("done")
    log.info("%s: renewed: %s, valid until %s, key in token CKA_ID %s (%s)", session.name,
             certs.describe(staged_cert), staged_cert.not_valid_after_utc, new_key.handle,
             detail)
    return Outcome(session.name, "kur", True,
                   f"renewed: {certs.describe(staged_cert)}, valid until "
                   f"{staged_cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z",
                   serial=f"{staged_cert.serial_number:x}",
                   not_after=staged_cert.not_valid_after_utc, cert_path=cert_path,
                   key_path=None, ca_paths=tuple(ca_paths), charon=detail)


def _spki(key: TokenKey) -> bytes:
    from swcmp.cmp import keys

    return keys.spki_der(key.public_key())


def _restore(session: Session, renewer: Renewer, previous: CredentialPair,
             old_key: TokenKey) -> None:
    """Put the previous certificate and secrets entry back; the old pair is current again."""
    try:
        write_cert(renewer.paths, session, certs.load_certificate(previous.cert_pem))
        tokenkeys.write_secrets(renewer.paths, session, old_key)
        tokenkeys.unretire(renewer.paths, session, old_key.handle)
    except (OSError, StorageError, SwcmpError) as e:
        log.error("%s: could not restore the previous certificate: %s; the next run "
                  "commits the staged pair", session.name, e)
