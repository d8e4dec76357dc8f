"""CRLs (genm crlStatusList, or currentCRL for CAs that only know that one): fetched
when due, checked, stored and loaded."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from swcmp.calife.base import _Base
from swcmp.calife.state import (
    CRL_DEFAULT_REFRESH,
    CRL_MAX_REFRESH,
    CRL_MIN_REFRESH,
    CRL_STATUS_LIST,
    CURRENT_CRL,
    CaLifeState,
    CaLifeStore,
    Result,
    _current_cert,
    _iso,
    _read_certs,
    _time,
    fingerprint,
)
from swcmp.cmp import certs
from swcmp.cmp.dn import format_dn
from swcmp.cmp.text import safe
from swcmp.errors import (
    CertificateError,
    CMPErrorResponse,
)
from swcmp.session import Session
from swcmp.store import (
    crl_file,
    root_cert_files,
    write_crl,
)

log = logging.getLogger(__name__)


def _refresh_time(next_update: datetime | None, now: datetime) -> datetime:
    """When to ask for the CRL again: at its nextUpdate (a day when it has none), not
    sooner than CRL_MIN_REFRESH nor later than CRL_MAX_REFRESH from now."""
    return min(max(next_update or (now + CRL_DEFAULT_REFRESH), now + CRL_MIN_REFRESH),
               now + CRL_MAX_REFRESH)


class Crls(_Base):
    """CRLs (genm currentCRL): fetched when due, checked, stored and loaded."""

    # ---------------------------------------------------------------- CRL

    def crl_due(self, session: Session, st: CaLifeState | None = None) -> bool:
        st = st or CaLifeStore(self.paths, session.name).load()
        now = self.clock()
        # crlStatusList is asked first: its failures back the CRL off as currentCRL's do
        if (st.is_unsupported(CURRENT_CRL, now) and st.is_unsupported(CRL_STATUS_LIST, now)) \
                or st.backing_off(CURRENT_CRL, now) or st.backing_off(CRL_STATUS_LIST, now):
            return False
        nxt = st.crl_refresh_at(now)
        return nxt is None or now >= nxt or not crl_file(self.paths, session.name).exists()

    def refresh_crl(self, session: Session) -> Result:
        """genm crlStatusList (RFC 9483 4.3.4) naming the cached CRL's issuer and
        thisUpdate, or currentCRL for a CA that does not know crlStatusList (remembered);
        store and load a CRL signed by the session's issuer.

        Raises:
            CaLifeError: the CRL is signed by someone else or older than the cached one.
        """
        st0 = CaLifeStore(self.paths, session.name).load()
        crl: x509.CertificateRevocationList | None = None
        if not st0.is_unsupported(CRL_STATUS_LIST, self.clock()):
            answer = self._ask_crl_status(session)
            if isinstance(answer, str):
                return self._crl_is_current(session)
            crl = answer
        if crl is None:
            crl = self._ask(session, CURRENT_CRL,
                            lambda c: c.current_crl(protection=self._protection(session)))
        if crl is None:
            with CaLifeStore(self.paths, session.name).update() as st:
                st.unsupported[CURRENT_CRL] = {"since": _iso(self.clock()),
                                               "error": "the CA sent no CRL"}
            return Result(session.name, "crl", False, "the CA sent no CRL")
        issuer = self._crl_signer(session, crl)
        st = CaLifeStore(self.paths, session.name).load()
        cached = st.crl or {}
        now = self.clock()
        this_update = crl.last_update_utc
        number = _crl_number(crl)
        scope = _partial_scope(crl)
        if scope is not None:
            # only a complete CRL replaces the session's one: a delta or a partition
            # would take every revocation outside it out of charon
            raise self._refused(session, CURRENT_CRL, f"CRL refused: it is {scope}, not a "
                                "complete CRL of the issuer")
        # Not older than what is stored, judged by the stored CRL itself (the state file
        # may be lost or damaged) and by the state: an old CRL would un-revoke peers.
        stored = _stored_crl(crl_file(self.paths, session.name))
        old_this = max((t for t in (_time(cached.get("this_update")),
                                    stored.last_update_utc if stored else None)
                        if t is not None), default=None)
        old_number = max((n for n in (cached.get("number") if isinstance(
            cached.get("number"), int) else None, _crl_number(stored) if stored else None)
                          if n is not None), default=None)
        if old_this is not None and this_update < old_this:
            raise self._refused(session, CURRENT_CRL,
                                f"CRL refused: issued {this_update:%Y-%m-%d %H:%M:%S}Z, older "
                                f"than the stored one ({old_this:%Y-%m-%d %H:%M:%S}Z): a "
                                "replay?")
        if old_number is not None and number is not None and number < old_number:
            raise self._refused(session, CURRENT_CRL,
                                f"CRL refused: cRLNumber {number} is lower than the stored "
                                f"one's ({old_number}): a replay?")
        if this_update > now + timedelta(minutes=10):
            raise self._refused(session, CURRENT_CRL,
                                f"CRL refused: issued in the future "
                                f"({this_update:%Y-%m-%d %H:%M:%S}Z; check the clocks)")
        nxt = crl.next_update_utc
        if nxt is not None and nxt < now:
            log.warning("%s: the CA's CRL is past its nextUpdate (%s); stored anyway",
                        session.name, f"{nxt:%Y-%m-%d %H:%M:%S}Z")
        refresh = _refresh_time(nxt, now)
        der = crl.public_bytes(serialization.Encoding.DER)
        path = write_crl(self.paths, session.name, der)
        with CaLifeStore(self.paths, session.name).update() as st2:
            st2.crl = {"file": str(path), "issuer": crl.issuer.rfc4514_string(),
                       "this_update": _iso(this_update),
                       "next_update": _iso(nxt) if nxt else None,
                       "number": number, "entries": len(crl), "refresh_at": _iso(refresh),
                       "signer": fingerprint(issuer)}
        charon = self._load_into_charon([], [der])
        msg = (f"CRL of {safe(format_dn(crl.issuer))} stored ({len(crl)} revoked, "
               f"issued {this_update:%Y-%m-%d %H:%M:%S}Z"
               + (f", next update {nxt:%Y-%m-%d %H:%M:%S}Z" if nxt else "") + ")")
        log.info("%s: %s", session.name, msg)
        return Result(session.name, "crl", True, msg, files=(path,), charon=charon)

    def _ask_crl_status(self, session: Session) -> x509.CertificateRevocationList | str | None:
        """crlStatusList for the cached CRL (its issuer and thisUpdate), or for the
        issuer of the session's certificate when none is cached. Returns the CRL the CA
        sent, "current" when it has none newer, None when it does not know the question
        (then remembered, and currentCRL is asked)."""
        stored = _stored_crl(crl_file(self.paths, session.name))
        if stored is not None:
            issuer, this_update = stored.issuer, stored.last_update_utc
        else:
            cert = _current_cert(self.paths, session.name)
            if cert is None:
                return None
            issuer, this_update = cert.issuer, None
        try:
            crls = self._ask(session, CRL_STATUS_LIST, lambda c: c.crl_status(
                protection=self._protection(session), issuer=issuer, this_update=this_update))
        except CMPErrorResponse as e:
            if not e.protected or e.refuses_message:
                raise  # counted as a failure of crlStatusList: the CRL backs off
            log.info("%s: the CA refuses crlStatusList (%s); asking currentCRL",
                     session.name, e)
            return None  # remembered by _ask as not supported
        if crls is None:
            with CaLifeStore(self.paths, session.name).update() as st:
                st.unsupported[CRL_STATUS_LIST] = {
                    "since": _iso(self.clock()), "error": "the CA's genp has no crls"}
            log.info("%s: the CA does not answer crlStatusList; asking currentCRL",
                     session.name)
            return None
        if not crls:
            return "current" if stored is not None else None
        if len(crls) > 1:
            log.info("%s: the CA sent %d CRLs; the first is taken", session.name, len(crls))
        crl: x509.CertificateRevocationList = crls[0]
        return crl

    def _crl_is_current(self, session: Session) -> Result:
        """The CA has no CRL newer than the cached one: ask again at its nextUpdate."""
        now = self.clock()
        stored = _stored_crl(crl_file(self.paths, session.name))
        nxt = stored.next_update_utc if stored is not None else None
        refresh = _refresh_time(nxt, now)
        with CaLifeStore(self.paths, session.name).update() as st:
            crl = dict(st.crl or {})
            crl["refresh_at"] = _iso(refresh)
            st.crl = crl
        msg = "the stored CRL is current (the CA has none newer)"
        log.info("%s: %s", session.name, msg)
        return Result(session.name, "crl", True, msg)

    def _crl_signer(self, session: Session, crl: x509.CertificateRevocationList
                    ) -> x509.Certificate:
        """The CA certificate of the session that signed ``crl``: its certificate's issuer."""
        from swcmp.store import session_ca_certs

        anchors = self.anchors(session)
        pool = [*session_ca_certs(session, self.paths), *anchors,
                *_read_certs(root_cert_files(self.paths, session.name))]
        cert = _current_cert(self.paths, session.name)
        if cert is not None and crl.issuer != cert.issuer:
            raise self._refused(session, CURRENT_CRL,
                                f"CRL refused: its issuer {safe(format_dn(crl.issuer))}"
                                " is not the issuer of the session's certificate "
                                f"{safe(format_dn(cert.issuer))}")
        for c in certs.unique_candidates(pool):
            if c.subject != crl.issuer:
                continue
            try:
                ok = crl.is_signature_valid(c.public_key())  # type: ignore[arg-type]
            except (TypeError, ValueError, UnsupportedAlgorithm):
                ok = False
            if not ok:
                continue
            ku = _key_usage(c)
            if ku is not None and not ku.crl_sign:
                raise self._refused(session, CURRENT_CRL,
                                    f"CRL refused: its signer {certs.describe(c)} may not sign "
                                    "CRLs (keyUsage without cRLSign)")
            if c not in anchors:
                try:
                    certs.build_chain(c, anchors=anchors, untrusted=pool, now=self.clock())
                except CertificateError as e:
                    raise self._refused(session, CURRENT_CRL, f"CRL refused: {e}") from e
            return c
        raise self._refused(session, CURRENT_CRL,
                            f"CRL refused: its signature does not verify with any CA "
                            f"certificate named {safe(format_dn(crl.issuer))} that "
                            "the session holds (signed by someone else)")


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def _check_signature(cert: x509.Certificate, issuer: x509.Certificate) -> bool | None:
    """Whether ``issuer``'s key signed ``cert``: True, False, or None when it cannot tell
    (a key or signature type this cryptography does not support)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except UnsupportedAlgorithm:
        return None
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    return _check_signature(cert, issuer) is True


def _crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        return None


def _stored_crl(path: Path) -> x509.CertificateRevocationList | None:
    """The CRL stored for the session, if there is one that parses."""
    try:
        return x509.load_der_x509_crl(path.read_bytes())
    except (OSError, ValueError):
        return None


def _partial_scope(crl: x509.CertificateRevocationList) -> str | None:
    """What makes ``crl`` less than the issuer's complete CRL, or None."""
    exts = crl.extensions
    try:
        exts.get_extension_for_class(x509.DeltaCRLIndicator)
        return "a delta CRL"
    except x509.ExtensionNotFound:
        pass
    try:
        idp = exts.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return None
    if (idp.only_contains_user_certs or idp.only_contains_ca_certs
            or idp.only_contains_attribute_certs or idp.only_some_reasons is not None
            or idp.indirect_crl):  # a distribution point name alone is common on full CRLs
        return "a partitioned CRL (issuingDistributionPoint)"
    return None
