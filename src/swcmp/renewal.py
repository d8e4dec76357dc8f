"""Certificate renewal: when it is due (pure functions) and how it is done safely.

The staged renewal keeps one rule above all: the live key and certificate in
swanctl's directories stay a matching, valid pair until the new pair has been
issued, checked, confirmed to the CA and written to a staging area. A journal
in the session's state directory records each step before it is taken, so a
run killed at any point is finished by the next one, which polls or confirms
the same CA transaction instead of asking for a second certificate.

Steps (journal phases in brackets):
    lock -> key (``key-ready``) -> KUR, CR or p10cr (``sending``, ``waiting``) -> verify
    and stage (``received``) -> certConf (``confirmed``) -> promote (``committing``)
    -> deploy -> clear.

The request is the session's ``renew_with``: a KUR, a CR signed with the current
certificate, or a p10cr (PKCS#10 signed by the new key, the message signed with the
current certificate); a resumed transaction keeps the kind it was started with.

A transaction the CA keeps waiting is resumed by later runs only within the
session's ``poll_limit``, counted from its request, and for a bounded number of
runs (:func:`max_resumes`); past either it is abandoned: its staged key is destroyed,
the run fails with :class:`TransactionAbandoned`, and the next one starts afresh. A
certificate received before a run was killed, not yet confirmed, is not the CA's waiting:
the next run confirms it whatever its request's age (the count of runs still applies).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from cryptography import x509

from swcmp import fsutil, keystore
from swcmp.cmp import certs, keys
from swcmp.cmp.choices import RENEW_WITH
from swcmp.cmp.errors import HTTPStatusError
from swcmp.deploy import Charon, DeployError, DeployUnavailable
from swcmp.enroll import (
    Outcome,
    make_client,
    make_csr,
    request_chain,
    signature_credentials,
)
from swcmp.errors import (
    CertificateError,
    CMPErrorResponse,
    ConfigError,
    NeedsInitialRequest,
    PollingTimeoutError,
    RenewalError,
    StorageError,
    SwcmpError,
    TransactionAbandoned,
)
from swcmp.keystore import KeyStore
from swcmp.paths import Paths
from swcmp.session import Session
from swcmp.state import StateStore
from swcmp.store import (
    Journal,
    JournalEntry,
    check_staged,
    read_file,
    write_ca_certs,
)

if TYPE_CHECKING:
    from swcmp.cmp.client import CMPClient, TxEvent
    from swcmp.cmp.transport import Transport
    from swcmp.cmp.urls import Route

log = logging.getLogger(__name__)

#: Runs that may resume one waiting transaction: this many, plus one per hour of the
#: session's poll_limit (serve's backoff retries a waiting CA about 13 times a day).
RESUMES_BASE = 12


#: How messages name the request a renewal sends, by the session's renew_with.
_REQUEST_NAMES = {"kur": "key update", "cr": "renewal by cr", "p10cr": "renewal by p10cr"}


def max_resumes(session: Session) -> int:
    """How many runs may resume one waiting transaction of ``session``."""
    return RESUMES_BASE + session.poll_limit // 3600


def _resumable(entry: JournalEntry | None) -> bool:
    """A journaled transaction a run would continue (poll, or confirm late)."""
    return (entry is not None and entry.phase in ("waiting", "received")
            and entry.transaction() is not None)


# --------------------------------------------------------------------------- how


@dataclass
class Renewer:
    """Runs one session's renewal.

    Args:
        paths: the directories.
        charon: where the new pair is made live; None writes files only.
        clock: the current time (UTC).
        transport: for tests; normally an HttpTransport per renewal.
        poll_deadline: seconds to wait for a 'waiting' CA within one run.
        sleep: between polls (tests pass a fake).
    """

    paths: Paths
    charon: Charon | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    transport: Transport | None = None
    poll_deadline: float = 300.0
    sleep: Callable[[float], None] | None = None
    #: charon exists but is deliberately not updated (``--no-deploy``): a replaced key
    #: pair it may still use is kept.
    charon_untouched: bool = False
    #: Test hook: called with the phase name at each step (kill -9 tests).
    checkpoint: Callable[[str], None] | None = None

    def test_checkpoint(self, phase: str) -> None:
        """Test hook: tell ``checkpoint`` (kill -9 tests) which step is next."""
        if self.checkpoint is not None:
            self.checkpoint(phase)

    def renew(self, session: Session, *, regenerate: bool | None = None) -> Outcome:
        """Renew ``session`` now with a KUR (or finish an interrupted renewal).

        Raises:
            LockHeldError: another run is renewing this session.
            NeedsInitialRequest: no certificate, or it expired.
            SwcmpError: anything else; the live pair is then unchanged.
        """
        fsutil.ensure_dir(self.paths.lock_dir, mode=0o700)
        with fsutil.exclusive_lock(self.paths.lock_dir, session.name, blocking=False,
                                   what=f"renewal of session {session.name}"):
            return self._renew_locked(session, keystore.open(session, self.paths),
                                      session.regenerate if regenerate is None else regenerate)

    def finish_locked(self, session: Session) -> Outcome:
        """Commit a renewal the CA already confirmed; the caller holds the session lock.

        For the charon start hook, which holds every session's lock while it
        loads pairs. No CA contact.
        """
        return self._promote(session, keystore.open(session, self.paths),
                             Journal(self.paths, session.name))

    def _renew_locked(self, session: Session, store: KeyStore, regenerate: bool) -> Outcome:
        j = Journal(self.paths, session.name)
        entry = j.load()
        if entry and entry.phase in ("confirmed", "committing"):
            return self._finish_confirmed(session, store, j, entry)
        old_cert = self._valid_cert(session)
        live_key = store.live_key()
        if live_key is None:
            raise ConfigError(f"session {session.name} has a certificate but its key "
                              f"{session.key} is missing").with_hint(
                "restore the key from the archive in the state directory, or enroll again")
        auth_key, auth_cert, chain = signature_credentials(session, self.paths, store)
        from swcmp.cmp.protection import SignatureProtection

        protection = SignatureProtection(
            key=auth_key, cert=auth_cert,
            chain=request_chain(session, self.paths, auth_cert, chain))
        self._collect(session, store)
        client = make_client(session, transport=self.transport, poll_deadline=self.poll_deadline,
                             sleep=self.sleep, paths=self.paths, clock=self.clock)
        # what to call once the CA took the request (see calife.template.check_request)
        taken: list[Callable[[], None]] = []
        new_key, entry = self._key_to_certify(
            store, j, entry, live_key, old_cert, regenerate,
            before_new_key=lambda: taken.append(
                self._check_template(session, client, protection, store)))
        entry = self._within_limit(session, store, j, entry)
        # Polling in this run ends at the poll_limit of a transaction the CA keeps waiting.
        left = float(session.poll_limit) - (
            self._age(entry) if entry is not None and entry.held_by_ca() else 0.0)
        client.poll_deadline = deadline = max(0.0, min(self.poll_deadline, left))
        try:
            enrolled = self._transact(session, j, entry, client, new_key, old_cert, protection,
                                      regenerated=new_key is not live_key)
        except PollingTimeoutError as e:
            self._after_failure(store, j, e)
            waiting = j.load()
            if deadline < self.poll_deadline and _resumable(waiting):
                assert waiting is not None
                self._abandon(session, store, j, waiting,
                              f"is still waiting at the end of the session's poll_limit "
                              f"({session.poll_limit}s from its request)", cause=e)
            e.hint = ("the next run polls the same transaction (within the session's "
                      "poll_limit); the CA may need an operator to approve the request")
            raise
        except SwcmpError as e:
            self._after_failure(store, j, e)
            raise
        finally:
            self._record_stats(session.name, client)
        for done in taken:
            done()
        j.stage_cert(enrolled.certificate, [*enrolled.chain])
        j.write(phase="confirmed")
        self.test_checkpoint("confirmed")
        return self._promote(session, store, j)

    def _finish_confirmed(self, session: Session, store: KeyStore, j: Journal,
                          entry: JournalEntry) -> Outcome:
        """Commit a renewal whose certificate the CA already confirmed (a run was killed
        after the certConf)."""
        if not j.cert_file.exists():
            # The certificate it confirmed is gone (a run killed while it cleared the
            # journal after the commit, or a hand deletion): nothing is left to finish,
            # and the live pair is whole (see store.write_pair). Kept, the journal would
            # fail every run for ever.
            if entry.phase == "confirmed" and store.has_staged(j, entry):
                store.discard_staged(j, entry)  # never installed: its certificate is lost
            j.clear()
            raise RenewalError(
                f"the interrupted renewal's staged certificate {j.cert_file} is gone; its "
                "journal is cleared").with_hint(
                "the live key and certificate are unchanged; the next run renews when due")
        log.info("%s: finishing an interrupted renewal (certificate already confirmed)",
                 session.name)
        return self._promote(session, store, j)

    def _age(self, entry: JournalEntry | None) -> float:
        """Seconds since the journaled transaction's request (0 when not known)."""
        if entry is None or entry.tx_started is None:
            return 0.0
        return (self.clock() - datetime.fromisoformat(entry.tx_started)).total_seconds()

    def _within_limit(self, session: Session, store: KeyStore, j: Journal,
                      entry: JournalEntry | None) -> JournalEntry | None:
        """Count a run that resumes the journaled transaction, or abandon it when it has
        waited past the session's poll_limit or was resumed too often."""
        if not _resumable(entry):
            return entry
        assert entry is not None
        if entry.tx_started is None:  # journaled before the limit existed: counted from now
            entry = j.write(tx_started=self.clock().isoformat(timespec="seconds"))
        age = self._age(entry)
        # A certificate received before a kill and not yet confirmed is confirmed late
        # whatever its request's age: abandoning it would leave it issued, unconfirmed,
        # and ask the CA for a second one. Only the count of runs bounds that.
        if entry.held_by_ca() and age >= session.poll_limit:
            self._abandon(session, store, j, entry,
                          f"has waited {age:.0f}s since its request, past the session's "
                          f"poll_limit of {session.poll_limit}s")
        if entry.resumes >= max_resumes(session):
            self._abandon(session, store, j, entry,
                          f"was resumed by {entry.resumes} runs without an answer, the most "
                          f"the session's poll_limit allows ({max_resumes(session)})")
        return j.write(resumes=entry.resumes + 1)

    def _abandon(self, session: Session, store: KeyStore, j: Journal, entry: JournalEntry,
                 why: str, cause: SwcmpError | None = None) -> NoReturn:
        """Forget a transaction that cannot finish in time: destroy its staged key (through
        the key store) and the journal, then fail; the next run starts a new request."""
        fsutil.remove_file(j.cert_file, missing_ok=True)
        if store.has_staged(j, entry):
            store.discard_staged(j, entry)
        j.clear()
        state = ("certificate issued, its confirmation waiting" if entry.phase == "received"
                 else "waiting")
        error = TransactionAbandoned(
            f"the CA transaction {entry.transaction_id} ({entry.kind or 'kur'}, {state}) "
            f"{why}; it is abandoned (a new key made for it is destroyed)").with_hint(
            f"the next run sends a new request; ask the CA operator why the request is not "
            f"answered, or allow longer: `swcmp session set {session.name} --poll-limit "
            f"DURATION`")
        if cause is not None:
            raise error from cause
        raise error

    def _check_template(self, session: Session, client: CMPClient, protection: Any,
                        store: KeyStore) -> Callable[[], None]:
        """genm certReqTemplate before a new key is made: a key type the CA's template
        forbids is refused before the key is made and anything else is sent (a key update
        repeats the certificate's subject, so only the key type is checked)."""
        from swcmp.calife.template import check_request, key_of_session

        try:
            return check_request(session, self.paths, client, protection, now=self.clock(),
                                 key=key_of_session(session), key_is_new=True, subject=None,
                                 what=_REQUEST_NAMES.get(session.renew_with, "key update"),
                                 makeable=store.key_types)
        except SwcmpError:
            self._record_stats(session.name, client)
            raise

    def _valid_cert(self, session: Session) -> x509.Certificate:
        """The session's certificate, which a key update needs unexpired."""
        cert_path = self.paths.cert_file(session.name)
        if not cert_path.exists():
            raise NeedsInitialRequest(f"session {session.name} has no certificate yet").with_hint(
                f"run `swcmp request initial {session.name}`")
        old_cert = certs.load_certificate(read_file(cert_path, "certificate"))
        if self.clock() >= old_cert.not_valid_after_utc:
            raise NeedsInitialRequest(
                f"the certificate of session {session.name} expired "
                f"{old_cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z; a key update needs a valid "
                "one").with_hint(f"enroll again: `swcmp request initial {session.name}`")
        return old_cert

    def _key_to_certify(self, store: KeyStore, j: Journal, entry: JournalEntry | None,
                        live_key: keys.SigningKey, old_cert: x509.Certificate,
                        regenerate: bool, *, before_new_key: Callable[[], None] = lambda: None
                        ) -> tuple[keys.SigningKey, JournalEntry | None]:
        """The key to certify: staged by an interrupted run, made now, or the live one.

        ``before_new_key`` runs once a new key is to be made and the key store agreed to
        make one, before anything is journaled (the certificate request template)."""
        if entry is not None:
            staged, entry = store.recover(j, entry)
            if staged is not None and entry is not None and entry.phase == "sending":
                # its request may have reached the CA, and that transaction cannot be
                # continued: a CA enforcing unique public keys would refuse the key again
                log.warning("%s: the staged key's transaction was interrupted after its "
                            "request was sent; a new key is made", j.dir.name)
                store.discard_staged(j, entry)
                j.clear()
                entry, staged = None, None
            if staged is not None:
                return staged, entry
        if not regenerate:
            return live_key, entry
        # The journal names the new key before it is made: a run killed while it is made
        # leaves only what the next run's recover() cleans up.
        reserved = store.reserve()
        before_new_key()
        entry = j.write(phase="key-making", **reserved,
                        old_serial=f"{old_cert.serial_number:x}",
                        started=self.clock().isoformat(timespec="seconds"), regenerate=True)
        self.test_checkpoint("key-making")
        new_key = store.make_staged(j, entry)
        entry = j.write(phase="key-ready")
        self.test_checkpoint("key-ready")
        return new_key, entry

    def _transact(self, session: Session, j: Journal, entry: JournalEntry | None,
                  client: CMPClient, new_key: keys.SigningKey, old_cert: x509.Certificate,
                  protection: Any, *, regenerated: bool) -> Any:
        """The CA transaction: resumed, confirmed late, or a new key update."""
        note, accept = self._journaling(session, j, old_cert, regenerated=regenerated)
        phase = entry.phase if entry else None
        tx = entry.transaction() if entry else None
        if entry and phase == "waiting" and tx:
            return self._resume(session, entry, tx, client, new_key, old_cert, protection,
                                note, accept)
        if entry and phase == "received" and not j.cert_file.exists() and entry.cert and tx:
            self._stage_journaled(session, j, entry, new_key, old_cert)
        if entry and phase == "received" and j.cert_file.exists() and tx:
            staged = certs.load_certificate(read_file(j.cert_file, "staged certificate"))
            log.info("%s: confirming certificate serial %x received before an interruption",
                     session.name, staged.serial_number)
            try:
                client.confirm_again(
                    transaction_id=tx[0], server_nonce=tx[1],
                    cert_der=certs.der_of(staged), subject=old_cert.subject,
                    protection=protection, cert_req_id=entry.cert_req_id,
                    confirm_nonce=(bytes.fromhex(entry.confirm_nonce)
                                   if entry.confirm_nonce else None),
                    journal=note, kind=entry.kind or "kur", route=_journaled_route(entry))
            except PollingTimeoutError:
                raise  # the CA still delays the pkiConf: the next run polls again
            except SwcmpError as e:
                if entry.confirm_nonce and not (isinstance(e, CMPErrorResponse)
                                                and e.protected):
                    # The CA holds our certConf; only its own (protected) error ends that
                    # transaction. A CA out of reach, or an answer anyone on the path
                    # could send, leaves it for the next run: a new KUR would ask for a
                    # second certificate and lose the one already issued.
                    raise
                log.warning("%s: the CA did not take the late confirmation (%s); requesting "
                            "again", session.name, e)
            else:
                from swcmp.cmp.client import Enrollment
                from swcmp.cmp.messages import StatusInfo

                return Enrollment(staged, certs.der_of(staged), (), (), (), tx[0], False, 0,
                                  StatusInfo(0))
            fsutil.remove_file(j.cert_file, missing_ok=True)
        if phase == "sending":
            log.warning("%s: an earlier run was interrupted after sending its request and "
                        "before any answer; that transaction cannot be continued, so a new "
                        "request is sent", session.name)
        return self._request(session, client, new_key, old_cert, protection, note, accept)

    @staticmethod
    def _resume(session: Session, entry: JournalEntry, tx: tuple[bytes, bytes],
                client: CMPClient, new_key: keys.SigningKey, old_cert: x509.Certificate,
                protection: Any, note: Callable[[TxEvent], None],
                accept: Callable[[x509.Certificate], None]) -> Any:
        """Poll the CA transaction an earlier run left waiting, where it began."""
        kind = entry.kind if entry.kind in RENEW_WITH else "kur"
        log.info("%s: resuming the CA transaction %s (%s) that was waiting", session.name,
                 entry.transaction_id, kind)
        try:
            return client.resume(kind=kind, transaction_id=tx[0], server_nonce=tx[1],
                                 key=new_key, subject=old_cert.subject,
                                 protection=protection, cert_req_id=entry.cert_req_id,
                                 journal=note, accept=accept,
                                 route=_journaled_route(entry))
        except HTTPStatusError as e:
            # The pollReq went where the transaction began, not to the session's URLs
            # now: a hint to change those would change nothing for it.
            e.hint = (f"this run polled the interrupted transaction "
                      f"{entry.transaction_id} at {e.url}, where it began; the "
                      "session's server URL and operation paths do not move it. If the "
                      "CA moved or no longer knows it, each run asks there again until "
                      f"the session's poll_limit ends (`swcmp status {session.name}` "
                      "says when), then a new request goes to the session's URLs; ask "
                      "the CA operator")
            e.setting = ""
            raise

    @staticmethod
    def _request(session: Session, client: CMPClient, new_key: keys.SigningKey,
                 old_cert: x509.Certificate, protection: Any, note: Callable[[TxEvent], None],
                 accept: Callable[[x509.Certificate], None]) -> Any:
        """A new renewal request of the session's kind (renew_with) for ``new_key``, with
        the current certificate's subject and SANs, signed with the current certificate."""
        if session.renew_with == "kur":
            return client.key_update(key=new_key, old_cert=old_cert, protection=protection,
                                     journal=note, accept=accept)
        try:
            sans = list(old_cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            sans = []
        if session.renew_with == "cr":
            return client.certificate(key=new_key, subject=old_cert.subject, sans=sans,
                                      protection=protection, journal=note, accept=accept,
                                      replaces=old_cert)
        try:
            csr = make_csr(new_key, old_cert.subject, sans)
        except ConfigError as e:
            e.hint = (f"renew with a cr instead: `swcmp session set {session.name} "
                      "--renew-with cr`")
            raise
        return client.p10(csr=csr, protection=protection, journal=note, accept=accept,
                          replaces=old_cert)

    def _journaling(self, session: Session, j: Journal, old_cert: x509.Certificate, *,
                    regenerated: bool) -> tuple[Callable[[TxEvent], None],
                                                Callable[[x509.Certificate], None]]:
        """What the client calls at each step (the journal) and for the issued certificate
        (our own checks, then staging)."""
        def note(ev: TxEvent) -> None:
            fields: dict[str, Any] = {"phase": ev.phase, "kind": ev.kind,
                                      "transaction_id": ev.transaction_id.hex(),
                                      "cert_req_id": ev.cert_req_id}
            if ev.server_nonce is not None:
                fields["server_nonce"] = ev.server_nonce.hex()
            # The checked certificate, so that a run killed before staging it can still
            # confirm it late instead of asking for another one.
            fields["cert"] = (certs.pem_of(certs.load_certificate(ev.cert_der)).decode()
                              if ev.phase == "received" and ev.cert_der else None)
            # the CA delays the pkiConf: the next run polls for it in this transaction
            fields["confirm_nonce"] = ev.confirm_nonce.hex() if ev.confirm_nonce else None
            # where the transaction went: its pollReq and certConf go there after a restart
            fields["url"] = ev.route.url if ev.route is not None else None
            fields["url_per_body"] = ev.route.per_body if ev.route is not None else False
            if ev.kind == "certConf":  # a resumed confirmation: the request's kind stays
                del fields["kind"]
            if ev.phase == "sending":  # a new transaction: its poll_limit counts from now
                fields["tx_started"] = self.clock().isoformat(timespec="seconds")
                fields["resumes"] = 0
            fields.setdefault("old_serial", f"{old_cert.serial_number:x}")
            j.write(**fields, regenerate=regenerated)
            self.test_checkpoint("confirm-waiting" if ev.confirm_nonce else ev.phase)

        def accept(cert: x509.Certificate) -> None:
            self._verify_renewed(session, old_cert, cert, now=self.clock())
            j.stage_cert(cert, [])  # CA certificates are staged after the transaction
            self.test_checkpoint("staged")

        return note, accept

    def _stage_journaled(self, session: Session, j: Journal, entry: JournalEntry,
                         new_key: keys.SigningKey, old_cert: x509.Certificate) -> None:
        """Stage the certificate journaled at "received" if it still passes our checks."""
        try:
            cert = certs.load_certificate(str(entry.cert).encode())
            if certs.spki_of(cert) != keys.spki_der(new_key):
                raise CertificateError("the journaled certificate is for another key")
            self._verify_renewed(session, old_cert, cert, now=self.clock())
        except SwcmpError as e:
            log.warning("%s: the certificate received before an interruption is not usable "
                        "(%s); requesting again", session.name, e)
            return
        j.stage_cert(cert, [])

    @staticmethod
    def _after_failure(store: KeyStore, j: Journal, error: SwcmpError | None = None) -> None:
        """Keep from a failed attempt only what the next one can use.

        A transaction the CA left 'waiting' is kept to be polled again, unless
        the CA itself answered with an error (it ended or forgot the transaction:
        polling it again would fail forever). An error that cannot be attributed
        to the CA (unprotected, or with another recipNonce: anyone on the path can
        send one) changes nothing. A staged new key is kept only while its
        transaction can still finish: before anything was sent (``key-ready``).
        Once a transaction ended without a committed certificate, the staged key is
        destroyed and the next attempt makes a new one (a CA that enforces unique
        public keys, like EJBCA by default, refuses a key it has seen, for ever).
        Anything else (a request that got no usable answer, a refused certificate)
        is forgotten, so the next try uses a new transactionID (as the CA's failInfo
        transactionIdInUse asks).
        """
        entry = j.load()
        if not entry:
            return
        ca_said_no = isinstance(error, CMPErrorResponse) and error.protected
        if entry.phase == "waiting" and not ca_said_no:
            return
        if entry.phase == "received" and entry.confirm_nonce and not ca_said_no:
            return  # the certConf is waiting at the CA: the next run polls for the pkiConf
        fsutil.remove_file(j.cert_file, missing_ok=True)
        if store.has_staged(j, entry) and entry.phase == "key-ready":
            return  # nothing was sent: the same key serves the next attempt
        if store.has_staged(j, entry):
            store.discard_staged(j, entry)
        j.clear()

    @staticmethod
    def _verify_renewed(session: Session, old: x509.Certificate, new: x509.Certificate,
                        *, now: datetime) -> None:
        """Our own checks on top of the client's: same names, sane validity."""
        def sans(c: x509.Certificate) -> set[x509.GeneralName]:
            try:
                return set(c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
            except x509.ExtensionNotFound:
                return set()

        if new.subject != old.subject:
            raise CertificateError("the renewed certificate has another subject")
        if sans(new) != sans(old):
            raise CertificateError("the renewed certificate has other subjectAltNames")
        if new.not_valid_after_utc <= now + timedelta(minutes=1):
            raise CertificateError("the renewed certificate is (nearly) expired")
        if new.not_valid_before_utc > now + timedelta(minutes=10):
            raise CertificateError("the renewed certificate is not valid yet (clock skew?)")

    def _promote(self, session: Session, store: KeyStore, j: Journal) -> Outcome:
        """Make the staged pair live in storage, then in charon; roll back on failure."""
        entry = j.write(phase="committing")
        self.test_checkpoint("committing")
        staged_cert = certs.load_certificate(read_file(j.cert_file, "staged certificate"))
        ca_certs = j.staged_ca_certs()
        check_staged(session, staged_cert, ca_certs, now=self.clock(), where=j.dir)
        installed = store.install(j, staged_cert, self.test_checkpoint)
        ca_paths = write_ca_certs(session, self.paths, ca_certs) if ca_certs else ()
        new = store.live_pair()
        assert new is not None
        try:
            detail = (self.charon.deploy(session, new, installed.previous).detail
                      if self.charon is not None else "files written")
        except DeployUnavailable as e:
            detail = f"charon not updated ({e}); it loads the new pair when it starts"
            # in_outcome: a one-shot command prints the detail as its result (shown once)
            log.warning("%s: %s", session.name, detail, extra={"in_outcome": True})
        except DeployError as e:
            store.undo(installed)
            raise RenewalError(
                f"charon did not take the renewed pair: {e}; the previous key and certificate "
                "are restored in storage").with_hint(
                "the new certificate is kept staged; the next run tries to deploy it again"
            ) from e
        replaced = _replaced_serial(installed, entry, staged_cert)
        self._collect(session, store, replaced=replaced)
        j.clear()
        self.test_checkpoint("done")
        log.info("%s: renewed: %s, valid until %s (%s)", session.name,
                 certs.describe(staged_cert), staged_cert.not_valid_after_utc, detail)
        return Outcome(session.name, entry.kind if entry.kind in RENEW_WITH else "kur", True,
                       f"renewed: {certs.describe(staged_cert)}, valid until "
                       f"{staged_cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z",
                       serial=f"{staged_cert.serial_number:x}",
                       not_after=staged_cert.not_valid_after_utc,
                       cert_path=self.paths.cert_file(session.name), key_path=store.key_file,
                       ca_paths=tuple(ca_paths), charon=detail,
                       replaced_serial=f"{replaced:x}" if replaced is not None else None)

    def _collect(self, session: Session, store: KeyStore, *, replaced: int | None = None
                 ) -> None:
        """Let the store forget replaced pairs charon no longer holds, keeping those whose
        certificate a revocation still needs (``replaced``, with revoke_superseded)."""
        if self.charon is None and self.charon_untouched:
            return  # --no-deploy: charon may still sign with a replaced key
        held = self.charon.held_key_ids if self.charon is not None else None
        try:
            keep = set(revocations_waiting(self.paths, session.name))
            if replaced is not None and session.revoke_superseded:
                keep.add(replaced)
            store.collect(held, keep_serials=keep)
        except SwcmpError as e:  # never stops the renewal
            log.warning("%s: replaced key pairs not collected: %s", session.name, e)

    def _record_stats(self, name: str, client: CMPClient) -> None:
        try:
            with StateStore(self.paths).update(name) as st:
                st.add_stats(client.stats)
        except SwcmpError as e:
            log.warning("%s: could not record statistics: %s", name, e)


def _journaled_route(entry: JournalEntry) -> Route | None:
    """Where the journaled transaction sent its request (None: not journaled by older
    versions; the session's URLs now)."""
    from swcmp.cmp.urls import Route

    return Route(entry.url, entry.url_per_body) if entry.url is not None else None


def _replaced_serial(installed: keystore.Installed, entry: JournalEntry,
                     new: x509.Certificate) -> int | None:
    """The serial of the certificate a commit replaced: what the install replaced, or,
    when a killed run had already written the new certificate, the one the journal
    names as live when the renewal began."""
    if installed.replaced_serial is not None:
        return installed.replaced_serial
    try:
        old = int(entry.old_serial, 16) if entry.old_serial else None
    except ValueError:
        return None
    return old if old != new.serial_number else None


def revocations_waiting(paths: Paths, name: str) -> list[int]:
    """Serials of the session's certificates whose revocation is queued (their keys are
    needed to sign it)."""
    from swcmp.calife.state import CaLifeStore

    out = []
    for p in CaLifeStore(paths, name).load().pending_revocations:
        try:
            out.append(int(str(p.get("serial")), 16))
        except ValueError:
            continue
    return out


def interrupted(paths: Paths, name: str) -> str | None:
    """The phase of an interrupted renewal of ``name``, if one is pending."""
    try:
        entry = Journal(paths, name).load()
    except StorageError:
        return "unreadable"
    return entry.phase if entry else None


def damaged_journal(paths: Paths, name: str) -> str | None:
    """What is wrong with the renewal journal of ``name`` (with what to do), or None when
    it is readable or absent. A damaged journal stops the session's renewals (the
    interrupted renewal it describes cannot be finished, nor a new one started) until
    an operator inspects and removes it."""
    try:
        Journal(paths, name).load()
    except StorageError as e:
        return str(e)  # says what to do
    return None
