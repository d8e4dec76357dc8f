"""The plumbing of the CA-life steps: the client, the protection, asking one question."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cryptography import x509

from swcmp.calife.state import (
    CA_CERTS,
    CURRENT_CRL,
    ROOT_UPDATE,
    CaLifeError,
    CaLifeStore,
    _current_cert,
    _iso,
)
from swcmp.errors import (
    CMPErrorResponse,
    SwcmpError,
)
from swcmp.paths import Paths
from swcmp.session import Session

if TYPE_CHECKING:
    from swcmp.cmp.client import CMPClient
    from swcmp.cmp.protection import Protection
    from swcmp.cmp.transport import Transport
    from swcmp.deploy import Charon

log = logging.getLogger(__name__)


@dataclass
class _Base:
    """The CA-life steps for sessions under ``paths``.

    Args:
        paths: the directories.
        charon: where CA certificates (PEM) and CRLs (DER) are loaded; None: files only.
        clock: the current time.
        transport: for tests; normally one HttpTransport per step.
    """

    paths: Paths
    charon: Charon | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    transport: Transport | None = None

    # ---------------------------------------------------------------- plumbing

    def _client(self, session: Session) -> CMPClient:
        from swcmp.enroll import make_client

        return make_client(session, transport=self.transport, paths=self.paths,
                           clock=self.clock)

    def _protection(self, session: Session) -> Protection:
        """Signed with the session's certificate when it has one (and it is not revoked),
        else the MAC."""
        from swcmp.enroll import mac_protection, signature_protection

        cur = _current_cert(self.paths, session.name)
        revoked = cur is not None and any(
            r.get("serial") == f"{cur.serial_number:x}"
            for r in CaLifeStore(self.paths, session.name).load().revoked)
        if revoked and session.mac_ref:
            return mac_protection(session)  # a revoked certificate signs nothing the CA takes
        if cur is not None or session.auth_cert:
            try:
                return signature_protection(session, self.paths)
            except SwcmpError as e:
                if not session.mac_ref:
                    raise
                # visible: under the MAC, anyone holding the shared secret may answer
                log.warning("%s: the session's signing credentials are unusable (%s); the CA "
                            "questions are MAC-protected instead", session.name, e)
        return mac_protection(session)

    def _ask(self, session: Session, question: str, work: Callable[[CMPClient], Any], *,
             remember: bool = True) -> Any:
        """Run one genm/rr exchange; remember a CA that refuses ``question`` (a genm the
        CA answers with a protected error is taken as not supported, unless its failInfo
        refuses the message itself: our clock, our signer, the CA down; that backs off)."""
        from swcmp.enroll import _record_stats

        client = self._client(session)
        store = CaLifeStore(self.paths, session.name)
        now = self.clock()
        try:
            answer = work(client)
        except CMPErrorResponse as e:
            with store.update() as st:
                if e.protected and remember and not e.refuses_message:
                    # The CA itself said no: do not ask it every pass.
                    st.unsupported[question] = {"since": _iso(now), "error": str(e)[:300]}
                elif remember:
                    st.failed(question, now, _retry_after(e))
                st.last_error[question] = f"{_iso(now)}: {str(e)[:300]}"
            raise
        except SwcmpError as e:
            with store.update() as st:
                if remember:
                    # unreachable, HTTP errors, a bad answer: asked again after the backoff
                    st.failed(question, now, _retry_after(e))
                st.last_error[question] = f"{_iso(now)}: {str(e)[:300]}"
            raise
        finally:
            _record_stats(self.paths, session.name, client)
        with store.update() as st:
            st.unsupported.pop(question, None)
            st.last_error.pop(question, None)
            st.answered(question)
            if remember:
                st.checked[question] = _iso(now)
        return answer

    def _refused(self, session: Session, question: str, message: str) -> CaLifeError:
        with CaLifeStore(self.paths, session.name).update() as st:
            now = self.clock()
            st.last_error[question] = f"{_iso(now)}: {message[:300]}"
            if question in (CA_CERTS, ROOT_UPDATE, CURRENT_CRL):
                st.failed(question, now, None)  # an answer refused is a failure too
        return CaLifeError(message).with_hint(
            "nothing was stored; the session keeps its current CA certificates, trust "
            "anchors and CRL. If the CA is genuine, ask its operator")

    def _load_into_charon(self, ca_pems: Sequence[bytes], crls: Sequence[bytes]) -> str:
        if self.charon is None:
            return "not loaded into charon (--vici none or --no-deploy)"
        from swcmp.deploy import DeployError

        try:
            return self.charon.load_authorities(ca_pems, crls)
        except DeployError as e:
            log.warning("charon not updated: %s (the files are in place; charon loads them "
                        "when it starts)", e, extra={"in_outcome": True})
            return f"charon not updated: {e}"

    def anchors(self, session: Session) -> list[x509.Certificate]:
        from swcmp.store import load_trust

        return load_trust(session)


def _retry_after(e: BaseException) -> float | None:
    """The Retry-After (seconds) of an HTTP 503/429 behind ``e``, if there is one."""
    from swcmp.errors import HTTPStatusError

    cur: BaseException | None = e
    for _ in range(8):
        if cur is None:
            break
        if isinstance(cur, HTTPStatusError) and cur.retry_after is not None:
            return cur.retry_after
        cur = cur.__cause__
    return None
