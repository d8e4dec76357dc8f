"""``swcmp hook charon-start``: after charon (re)starts, finish any renewal a crash
interrupted, then load every session's current pair into it (except pairs whose certificate
expired or was revoked: those are skipped and named).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime

from swcmp import fsutil, keystore
from swcmp.deploy import Charon, CredentialPair
from swcmp.errors import SwcmpError
from swcmp.paths import Paths
from swcmp.renewal import Renewer
from swcmp.session import Session
from swcmp.sessionfile import SessionStore
from swcmp.state import StateStore

log = logging.getLogger(__name__)


@contextmanager
def _session_lock(paths: Paths, name: str, timeout: float) -> Iterator[bool]:
    """Hold ``name``'s renewal lock, waiting up to ``timeout`` s; yield whether it is held."""
    from swcmp.errors import LockHeldError

    fsutil.ensure_dir(paths.lock_dir, mode=0o700)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with fsutil.exclusive_lock(paths.lock_dir, name, blocking=False,
                                       what=f"renewal of session {name}"):
                yield True
                return
        except LockHeldError:
            if time.monotonic() >= deadline:
                yield False
                return
            time.sleep(0.2)


def charon_start(paths: Paths, charon: Charon, *, lock_wait: float = 20.0) -> str:
    """What ``swcmp hook charon-start`` does: finish commits, then load every pair.

    Each session's renewal lock is held from finishing an interrupted commit to
    loading its pair, so that a renewal running at the same moment cannot slip
    its new pair into charon before this hook loads the older one over it. A
    renewal still holding its lock after ``lock_wait`` seconds deploys its own
    pair when it finishes; the files as they are now are loaded meanwhile.
    """
    from swcmp.store import Journal

    finished: list[str] = []
    skipped: list[str] = []
    pairs = []
    sessions = SessionStore(paths.config_dir).list().sessions
    with ExitStack() as locks:
        for s in sessions:
            if not locks.enter_context(_session_lock(paths, s.name, lock_wait)):
                log.warning("%s: a renewal is running; loading the current files (the "
                            "renewal loads its new pair when it finishes)", s.name)
            else:
                try:
                    entry = Journal(paths, s.name).load()
                except SwcmpError as e:
                    log.error("%s: %s", s.name, e)
                    entry = None
                if entry and entry.phase in ("confirmed", "committing"):
                    try:
                        # no deployer: this hook loads the result itself, below
                        outcome = Renewer(paths).finish_locked(s)
                        finished.append(s.name)
                    except SwcmpError as e:
                        log.error("%s: could not finish the interrupted renewal: %s",
                                  s.name, e)
                    else:
                        with StateStore(paths).update(s.name) as st:
                            st.failures = 0
                            st.next_attempt = None
                            st.state = "idle"
                            st.record("kur", True, "finished by the charon start hook: "
                                      + outcome.message, now=datetime.now(UTC),
                                      serial=outcome.serial)
                            st.count_renewal()
                        _queue_superseded(paths, s, outcome.replaced_serial)
            try:
                pair = keystore.open(s, paths).live_pair()
            except SwcmpError as e:  # e.g. a token that is not there: load the others
                log.error("%s: not loaded: %s", s.name, e)
                pair = None
            why = _unusable(paths, s, pair, datetime.now(UTC)) if pair is not None else None
            if why is not None:
                log.error("%s: not loaded: %s", s.name, why)
                skipped.append(f"{s.name} ({why})")
            elif pair is not None:
                pairs.append(pair)
        result = charon.load_current(pairs)
        crls = _stored_crls(paths, sessions)
        if crls:
            try:
                charon.load_authorities([], crls)
            except SwcmpError as e:
                log.error("could not load the stored CRLs: %s", e)
        resent: list[str] = []
        for s in sessions:
            # pinned connections carry the certificate in their config: re-send them
            try:
                resent += charon.reload_pinned(s)
            except SwcmpError as e:
                log.error("%s: could not re-send its pinned connections: %s", s.name, e)
    note = f"; finished interrupted renewals of {', '.join(finished)}" if finished else ""
    if resent:
        note += f"; re-sent pinned connection(s) {', '.join(resent)}"
    if skipped:
        note += f"; not loaded: {'; '.join(skipped)}"
    return f"{result.detail}{note}"


def _queue_superseded(paths: Paths, session: Session, serial: str | None) -> None:
    """With revoke_superseded: queue the revocation of the certificate a finished commit
    replaced; the next pass of ``serve`` (or ``renew``) sends it (this hook never asks the
    CA, and the replaced key pair is kept while the revocation waits)."""
    if not session.revoke_superseded or serial is None:
        return
    from swcmp.calife import CaLife
    from swcmp.calife.state import reason_code

    try:
        CaLife(paths).queue_revocation(session, int(serial, 16), reason_code("superseded"))
    except SwcmpError as e:
        log.error("%s: the revocation of the superseded certificate serial %s was not "
                  "queued: %s", session.name, serial, e)


def _unusable(paths: Paths, session: Session, pair: CredentialPair,
              now: datetime) -> str | None:
    """Why ``pair`` must not go into charon (expired, revoked), or None.

    Revoked means: swcmp revoked this certificate itself (``calife.json``), or the
    stored CRL of its issuer lists its serial. A peer would refuse such a
    certificate anyway; loading it only hides that the session needs a new one.
    """
    from cryptography import x509

    from swcmp.calife.state import CaLifeStore, revoked_record
    from swcmp.cmp import certs
    from swcmp.store import crl_file

    try:
        cert = certs.load_certificate(pair.cert_pem)
    except SwcmpError as e:
        return f"its certificate is unreadable: {e}"
    fix = f"get a new one: swcmp request initial {session.name}"
    if now > cert.not_valid_after_utc:
        return f"its certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; {fix}"
    serial = f"{cert.serial_number:x}"
    if revoked_record(CaLifeStore(paths, session.name).load().revoked, cert) is not None:
        return f"its certificate (serial {serial}) was revoked by swcmp; {fix}"
    try:
        crl = x509.load_der_x509_crl(crl_file(paths, session.name).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("%s: cannot read its CRL: %s", session.name, e)
        return None
    if crl.issuer == cert.issuer and \
            crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
        return f"its certificate (serial {serial}) is listed in its CA's CRL; {fix}"
    return None


def _stored_crls(paths: Paths, sessions: Sequence[Session]) -> list[bytes]:
    """The CRLs stored by swcmp for ``sessions`` (x509crl/<session>.crl)."""
    from swcmp.store import crl_file

    out = []
    for s in sessions:
        try:
            out.append(crl_file(paths, s.name).read_bytes())
        except FileNotFoundError:
            continue
        except OSError as e:
            log.warning("%s: cannot read its CRL: %s", s.name, e)
    return out
