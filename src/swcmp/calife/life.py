"""The CA-life steps of a session put together, and when they run."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cryptography import x509

from swcmp.calife.cacerts import CaCerts
from swcmp.calife.crl import Crls
from swcmp.calife.revocation import Revocation
from swcmp.calife.roots import RootUpdate
from swcmp.calife.state import (
    CA_CERTS,
    CHECK_EVERY,
    CRL_STATUS_LIST,
    CURRENT_CRL,
    FAILED_RETRY_START,
    ROOT_UPDATE,
    UNSUPPORTED_RETRY,
    CaLifeState,
    CaLifeStore,
    _current_cert,
    _time,
    reason_code,
)
from swcmp.errors import (
    SwcmpError,
    TransportError,
)
from swcmp.session import Session
from swcmp.sessionfile import SessionStore

if TYPE_CHECKING:
    from swcmp.cmp.template import CertReqTemplate

log = logging.getLogger(__name__)


class CaLife(CaCerts, RootUpdate, Revocation, Crls):
    """The CA-life steps for sessions under ``paths`` (see :class:`~swcmp.calife.base._Base`
    for the arguments)."""

    # ---------------------------------------------------------------- the template

    def cert_req_template(self, session: Session) -> CertReqTemplate | None:
        """The CA's certificate request template (genm certReqTemplate), asked now even
        when the CA was remembered as not knowing the question (what it answers is
        remembered). None: the CA does not know the question."""
        from swcmp.calife.template import ask_template
        from swcmp.enroll import _record_stats

        client = self._client(session)
        try:
            return ask_template(session, self.paths, client, self._protection(session),
                                now=self.clock(), force=True)
        finally:
            _record_stats(self.paths, session.name, client)

    # ---------------------------------------------------------------- the rhythm

    def after_renewal(self, session: Session, old_cert: x509.Certificate | None,
                      new_serial: str | None) -> list[str]:
        """What follows a committed renewal: revoke the superseded certificate (if the
        session says so) and refresh the CA certificates. Failures are reported, and
        never undo the renewal."""
        notes: list[str] = []
        if (session.revoke_superseded and old_cert is not None and new_serial is not None
                and f"{old_cert.serial_number:x}" != new_serial):
            self.queue_revocation(session, old_cert.serial_number, reason_code("superseded"))
            try:
                notes += self.retry_revocations(session)
            except SwcmpError as e:  # never let this end the renewal's report
                notes.append(f"revocation of the superseded certificate failed: {e}")
        if not CaLifeStore(self.paths, session.name).load().is_unsupported(
                CA_CERTS, self.clock()):
            try:
                notes.append(self.refresh_ca_certs(session).message)
            except SwcmpError as e:
                log.warning("%s: CA certificates not refreshed: %s", session.name, e)
                notes.append(f"CA certificates not refreshed: {e}")
        return notes

    def after_refused_certificate(self, session: Session) -> str | None:
        """A certificate the CA issued did not chain to the session's trust anchors: its
        root may have rolled over since the weekly root CA update, and every renewal would
        be refused until that came (a session whose renewals fail is left out of the
        CA-life pass: never). Ask for the root CA update now, at most hourly and never
        during that question's backoff; what it found, or None when not asked."""
        st = CaLifeStore(self.paths, session.name).load()
        now = self.clock()
        last = _time(st.checked.get(ROOT_UPDATE))
        if st.is_unsupported(ROOT_UPDATE, now) or st.backing_off(ROOT_UPDATE, now) or (
                last is not None and now - FAILED_RETRY_START < last <= now):
            return None
        return self.update_root(session).message

    def maintain(self, session: Session) -> list[str]:
        """serve's pass over one session: old roots, retries, and what is due."""
        return self.maintain_then_next_due(session)[0]

    def maintain_then_next_due(self, session: Session) -> tuple[list[str], datetime | None]:
        """:meth:`maintain`, then :meth:`next_due`, reading the certificate and the
        state once when the pass changed nothing (the common case: nothing was due)."""
        notes: list[str] = []
        if _current_cert(self.paths, session.name) is None:
            return notes, None
        steps: list[tuple[str, str, Callable[[], Any]]] = []
        store = CaLifeStore(self.paths, session.name)
        st = store.load()
        now = self.clock()
        # each step sees the session as the steps before left it (late binding of `session`)
        steps.append(("old roots", "", lambda: self.drop_expired_roots(session, st=st)))
        if st.pending_revocations:
            steps.append(("revocations", "", lambda: self.retry_revocations(session)))
        if st.due(ROOT_UPDATE, now):
            steps.append(("root CA update", ROOT_UPDATE,
                          lambda: self.update_root(session).message))
        if st.due(CA_CERTS, now):
            steps.append(("CA certificates", CA_CERTS,
                          lambda: self.refresh_ca_certs(session).message))
        if self.crl_due(session, st):
            steps.append(("CRL", CURRENT_CRL, lambda: self.refresh_crl(session).message))
        out: Any = None
        for i, (what, question, step) in enumerate(steps):
            try:
                out = step()
                if what == "root CA update":  # it may have added trust anchors
                    session = SessionStore(self.paths.config_dir).load(session.name)
            except SwcmpError as e:
                log.warning("%s: %s: %s", session.name, what, e)
                notes.append(f"{what}: {e}")
                if isinstance(e, TransportError):
                    # a CA that cannot be reached is not asked the next questions: they
                    # wait as long as this one (not counted as failures: never asked)
                    with store.update() as now_st:
                        until = now_st.next_try.get(question)
                        for _what, later, _step in steps[i + 1:]:
                            if later and until:
                                now_st.next_try[later] = max(until,
                                                             now_st.next_try.get(later, ""))
                    break
                continue
            if isinstance(out, list):
                notes.extend(out)
            elif out:
                notes.append(str(out))
        # Only "old roots" ran and it dropped nothing: the state read above is current.
        unchanged = len(steps) == 1 and not notes and out is None
        return notes, self._next_due_of(st if unchanged else
                                        CaLifeStore(self.paths, session.name).load())

    def next_due(self, session: Session) -> datetime | None:
        """When :meth:`maintain` has something to do for ``session`` next."""
        if _current_cert(self.paths, session.name) is None:
            return None
        return self._next_due_of(CaLifeStore(self.paths, session.name).load())

    def _next_due_of(self, st: CaLifeState) -> datetime | None:
        times: list[datetime] = []
        for q in (ROOT_UPDATE, CA_CERTS):
            since = _time(st.unsupported.get(q, {}).get("since"))
            if since is not None and st.is_unsupported(q, self.clock()):
                times.append(since + UNSUPPORTED_RETRY)
                continue
            last = _time(st.checked.get(q))
            due = last + CHECK_EVERY if last else self.clock()
            times.append(max(due, _time(st.next_try.get(q)) or due))
        refresh = st.crl_refresh_at(self.clock())
        # a CRL is asked by crlStatusList or currentCRL: due again when either is
        crl_since = [_time(st.unsupported.get(q, {}).get("since"))
                     for q in (CRL_STATUS_LIST, CURRENT_CRL)]
        if all(t is not None for t in crl_since) and all(
                st.is_unsupported(q, self.clock()) for q in (CRL_STATUS_LIST, CURRENT_CRL)):
            times.append(min(t for t in crl_since if t is not None) + UNSUPPORTED_RETRY)
        else:
            due = refresh or self.clock()
            times.append(max(due, _time(st.next_try.get(CURRENT_CRL)) or due))
        times += [t for p in st.pending_revocations if (t := _time(p.get("next_try")))]
        if st.rollover and st.rollover.get("state") != "done":
            t = _time(st.rollover.get("old_not_after"))
            if t is not None:
                times.append(t)
        return min(times) if times else None
