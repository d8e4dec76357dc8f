"""genm caCerts (RFC 9483 4.3.1): the CA certificates of a session."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from cryptography import x509

from swcmp.calife.base import _Base
from swcmp.calife.state import CA_CERTS, Result, _current_cert, _read_certs
from swcmp.cmp import certs
from swcmp.errors import (
    CertificateError,
)
from swcmp.session import Session

log = logging.getLogger(__name__)


class CaCerts(_Base):
    """genm caCerts (RFC 9483 4.3.1): the CA certificates of a session."""

    # ---------------------------------------------------------------- caCerts

    def refresh_ca_certs(self, session: Session) -> Result:
        """genm caCerts; store and load what chains to the trust anchors.

        Raises:
            CaLifeError: a certificate in the answer is no CA certificate or does not
                chain (nothing is stored).
            SwcmpError: the exchange failed.
        """
        from swcmp.store import session_ca_certs, write_ca_certs

        got: tuple[x509.Certificate, ...] = self._ask(
            session, CA_CERTS, lambda c: c.ca_certs(protection=self._protection(session)))
        if not got:
            return Result(session.name, "cacerts", False, "the CA sent no CA certificates")
        now = self.clock()
        anchors = self.anchors(session)
        checked = certs.unique_candidates(got)
        if len(checked) < len(set(got)):
            raise self._refused(session, CA_CERTS,
                                f"the CA sent more than {certs.MAX_CANDIDATES} CA certificates")
        for c in checked:
            why = certs.may_sign_certificates(c)
            if why is not None:
                raise self._refused(session, CA_CERTS, f"caCerts answer refused: {why}")
            try:
                certs.build_chain(c, anchors=anchors, untrusted=checked, now=now)
            except CertificateError as e:
                raise self._refused(session, CA_CERTS, f"caCerts answer refused: {e}") from e
        stored = session_ca_certs(session, self.paths)
        keep = self._in_use(session, stored, anchors, checked)
        new_set = self._arrange(session, [*checked, *keep])
        if set(new_set) == set(stored):
            return Result(session.name, "cacerts", False,
                          f"CA certificates unchanged ({len(new_set)})",
                          files=self.paths.ca_cert_files(session.name))
        files = write_ca_certs(session, self.paths, new_set, keep=session.trust)
        charon = self._load_into_charon([certs.pem_of(c) for c in new_set], [])
        added = [c for c in new_set if c not in stored]
        log.info("%s: CA certificates updated: %s", session.name,
                 ", ".join(certs.describe(c) for c in added) or "some dropped")
        return Result(session.name, "cacerts", True,
                      f"{len(new_set)} CA certificate(s) stored ({len(added)} new"
                      + (f", {len(keep)} kept in use" if keep else "") + ")",
                      files=files, charon=charon)

    def _arrange(self, session: Session, wanted: Sequence[x509.Certificate]
                 ) -> list[x509.Certificate]:
        """``wanted`` in x509ca order, a file that is a trust anchor of the session (an IR
        may have made one) keeping its place and content: caCerts never rewrites trust
        (``write_ca_certs`` is told which files those are)."""
        files = self.paths.ca_cert_files(session.name)
        trust = {t.resolve() for t in session.trust}
        pinned: dict[int, x509.Certificate] = {}
        for i, p in enumerate(files):
            if p.resolve() in trust:
                got = _read_certs([p])
                if got:
                    pinned[i] = got[0]
        rest = [c for c in dict.fromkeys(wanted) if c not in pinned.values()]
        out: list[x509.Certificate] = []
        for i in range(len(pinned) + len(rest)):
            if i in pinned:
                out.append(pinned[i])
            elif rest:
                out.append(rest.pop(0))
        return [*out, *rest]

    def _in_use(self, session: Session, stored: Sequence[x509.Certificate],
                anchors: Sequence[x509.Certificate],
                fresh: Sequence[x509.Certificate]) -> list[x509.Certificate]:
        """Stored CA certificates on the chain of the current certificate but not in ``fresh``."""
        cert = _current_cert(self.paths, session.name)
        if cert is None:
            return []
        try:
            chain = certs.build_chain(cert, anchors=anchors, untrusted=[*stored, *fresh],
                                      now=self.clock(), check_leaf_validity=False)
        except CertificateError:
            return []
        return [c for c in chain[1:] if c in stored and c not in fresh]
