"""Revocation (rr, RFC 9483 4.2), now or queued and retried."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from cryptography import x509

from swcmp.calife.base import _Base
from swcmp.calife.state import (
    REVOKE_RETRY_CAP,
    REVOKE_RETRY_START,
    REVOKED_KEEP,
    CaLifeStore,
    Result,
    _current_cert,
    _iso,
    _time,
    reason_name,
)
from swcmp.cmp import certs, keys
from swcmp.errors import (
    CMPErrorResponse,
    ConfigError,
    SwcmpError,
)
from swcmp.session import Session

log = logging.getLogger(__name__)


class Revocation(_Base):
    """Revocation (rr, RFC 9483 4.2), now or queued and retried."""

    # ---------------------------------------------------------------- revocation

    def _archived(self, session: Session, serial: int, *, valid_at: datetime | None = None
                  ) -> tuple[x509.Certificate, keys.SigningKey] | None:
        """A certificate of this session with ``serial`` and its key: live or replaced
        (the archive keeps replaced certificates; the session's key store their keys).
        With ``valid_at``: only a certificate not expired then (the key store is not asked
        for an expired one).

        Raises:
            SwcmpError: the key store could not be asked (a token that cannot be opened
                now): the certificate is not known to be gone.
        """
        from swcmp import keystore
        from swcmp.store import Journal, archived_pairs

        cur = _current_cert(self.paths, session.name)
        found = ([cur] if cur is not None and cur.serial_number == serial else
                 [c for c, _ in archived_pairs(Journal(self.paths, session.name), serial)])
        if valid_at is not None:
            found = [c for c in found if c.not_valid_after_utc > valid_at]
        if not found:
            return None
        store = keystore.open(session, self.paths)
        problem: SwcmpError | None = None
        for cert in found:
            try:
                key = store.key_for(cert)
            except SwcmpError as e:
                log.warning("%s: no key for certificate serial %x: %s", session.name, serial, e)
                problem = e
                continue
            if key is not None:
                return cert, key
        if problem is not None:
            raise problem
        return None

    def revoke(self, session: Session, *, serial: int | None = None,
               reason: int = 0, advise: bool = True) -> Result:
        """rr for the current certificate (or ``serial``, live or archived), signed with it.

        ``advise``: say how to enroll again when the current certificate was revoked
        (not when the session is being deleted).

        Raises:
            ConfigError: no such certificate (or no key for it) in storage.
            SwcmpError: the CA refused (CMPErrorResponse names why) or the exchange failed.
        """
        from swcmp.cmp.protection import SignatureProtection
        from swcmp.enroll import request_chain

        cur = _current_cert(self.paths, session.name)
        if serial is None:
            if cur is None:
                raise ConfigError(f"session {session.name} has no certificate to revoke")
            serial = cur.serial_number
        found = self._archived(session, serial)
        if found is None:
            raise ConfigError(f"session {session.name} holds no certificate with serial "
                              f"{serial:x} (with its key)").with_hint(
                f"see `swcmp status {session.name}` for the current serial; the archive in "
                "the state directory keeps the last replaced ones")
        cert, key = found
        prot = SignatureProtection(key=key, cert=cert,
                                   chain=request_chain(session, self.paths, cert, []))
        self._ask(session, "rr", lambda c: c.revoke(cert=cert, protection=prot, reason=reason),
                  remember=False)
        now = self.clock()
        current = cur is not None and cur.serial_number == serial
        with CaLifeStore(self.paths, session.name).update() as st:
            st.revoked = [{"serial": f"{serial:x}", "reason": reason_name(reason),
                           "time": _iso(now), "current": current,
                           "issuer": cert.issuer.rfc4514_string()},
                          *st.revoked][:REVOKED_KEEP]
            st.pending_revocations = [p for p in st.pending_revocations
                                      if p.get("serial") != f"{serial:x}"]
        msg = f"certificate {certs.describe(cert)} revoked (reason {reason_name(reason)})"
        if current and advise:
            msg += ("; it is the session's current certificate: a key update with it will be "
                    f"refused, enroll again with `swcmp request initial {session.name}`")
        log.warning("%s: %s", session.name, msg, extra={"in_outcome": True})
        return Result(session.name, "revoke", True, msg)

    def queue_revocation(self, session: Session, serial: int, reason: int) -> None:
        with CaLifeStore(self.paths, session.name).update() as st:
            if not any(p.get("serial") == f"{serial:x}" for p in st.pending_revocations):
                st.pending_revocations.append({"serial": f"{serial:x}", "reason": reason,
                                               "attempts": 0, "next_try": _iso(self.clock())})

    def retry_revocations(self, session: Session) -> list[str]:
        """Try the pending revocations that are due; return what happened, in words."""
        notes: list[str] = []
        store = CaLifeStore(self.paths, session.name)
        now = self.clock()
        for p in list(store.load().pending_revocations):
            nxt = _time(p.get("next_try"))
            if nxt is not None and now < nxt:
                continue
            try:
                serial = int(str(p.get("serial")), 16)
                reason = int(p.get("reason", 0))
            except ValueError:
                serial, reason = -1, 0
            try:
                found = self._archived(session, serial, valid_at=now) if serial >= 0 else None
            except SwcmpError as e:  # e.g. the token cannot be opened now: try again later
                notes.append(self._postpone(session, p, e))
                continue
            if found is None or found[0].not_valid_after_utc <= now:
                self._drop_pending(session, p, "the certificate is gone or expired")
                notes.append(f"revocation of serial {p.get('serial')} abandoned: the "
                             "certificate is no longer stored or has expired")
                continue
            try:
                self.revoke(session, serial=serial, reason=reason)
                notes.append(f"serial {serial:x} revoked ({reason_name(reason)})")
            except CMPErrorResponse as e:
                if "certRevoked" in e.fail_info:
                    self._drop_pending(session, p, "already revoked")
                    notes.append(f"serial {serial:x} was already revoked")
                    continue
                notes.append(self._postpone(session, p, e))
            except SwcmpError as e:
                notes.append(self._postpone(session, p, e))
        return notes

    def _drop_pending(self, session: Session, p: dict[str, Any], why: str) -> None:
        with CaLifeStore(self.paths, session.name).update() as st:
            st.pending_revocations = [q for q in st.pending_revocations
                                      if q.get("serial") != p.get("serial")]
        log.info("%s: revocation of serial %s dropped: %s", session.name, p.get("serial"), why)

    def _postpone(self, session: Session, p: dict[str, Any], e: SwcmpError) -> str:
        now = self.clock()
        with CaLifeStore(self.paths, session.name).update() as st:
            for q in st.pending_revocations:
                if q.get("serial") == p.get("serial"):
                    attempts = int(q.get("attempts", 0)) + 1
                    delay = min(REVOKE_RETRY_START * 2 ** min(attempts - 1, 20),
                                REVOKE_RETRY_CAP)
                    q.update(attempts=attempts, next_try=_iso(now + delay),
                             last_error=str(e)[:300])
        msg = (f"revocation of the superseded certificate serial {p.get('serial')} failed: "
               f"{e}; retried later (the renewed certificate is in use regardless)")
        log.warning("%s: %s", session.name, msg)
        return msg
