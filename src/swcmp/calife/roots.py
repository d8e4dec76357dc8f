"""Root CA update (RFC 9483 4.3.2, RFC 9480 2.4): a new root beside the old one."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from swcmp.calife.base import _Base
from swcmp.calife.crl import _check_signature, _signed_by
from swcmp.calife.state import (
    ROOT_UPDATE,
    CaLifeState,
    CaLifeStore,
    Result,
    _current_cert,
    _iso,
    _time,
    fingerprint,
)
from swcmp.cmp import certs
from swcmp.errors import (
    CertificateError,
    ConfigError,
    SwcmpError,
)
from swcmp.names import shown_dn
from swcmp.session import Session
from swcmp.sessionfile import SessionStore
from swcmp.store import (
    drop_root_cert,
    write_root_cert,
)

log = logging.getLogger(__name__)


class RootUpdate(_Base):
    """Root CA update (RFC 9483 4.3.2, RFC 9480 2.4): a new root beside the old one."""

    # ---------------------------------------------------------------- root CA update

    def current_root(self, session: Session) -> x509.Certificate | None:
        """The self-signed anchor the session's certificate chains to (else the first)."""
        anchors = self.anchors(session)
        roots = [a for a in anchors if a.subject == a.issuer]
        cert = _current_cert(self.paths, session.name)
        if cert is not None and roots:
            from swcmp.store import session_ca_certs

            try:
                chain = certs.build_chain(cert, anchors=roots,
                                          untrusted=session_ca_certs(session, self.paths),
                                          now=self.clock(), check_leaf_validity=False)
                return chain[-1]
            except CertificateError:
                pass
        state = CaLifeStore(self.paths, session.name).load()
        if state.rollover:  # prefer the newest root once a rollover is taken
            for r in roots:
                if fingerprint(r) == state.rollover.get("new"):
                    return r
        return roots[0] if roots else None

    def update_root(self, session: Session, *, store: SessionStore | None = None) -> Result:
        """genm rootCaCert; take a verified new root beside the old one.

        Raises:
            CaLifeError: the update does not verify (nothing is stored).
            ConfigError: the session has no self-signed trust anchor to ask about.
        """
        old = self.current_root(session)
        if old is None:
            raise ConfigError(f"session {session.name} has no self-signed trust anchor, so "
                              "there is no root to ask about").with_hint(
                f"swcmp session set {session.name} --trust ROOT.crt")
        update = self._ask(session, ROOT_UPDATE, lambda c: c.root_ca_update(
            protection=self._protection(session), old_root=old))
        if update is None:
            return Result(session.name, "rootca", False,
                          f"no root CA update announced for {certs.describe(old)}")
        new = self._verify_root_update(session, old, update)
        anchors = self.anchors(session)
        if any(certs.der_of(a) == certs.der_of(new) for a in anchors):
            return Result(session.name, "rootca", False,
                          f"the new root {certs.describe(new)} is already trusted")
        old_path = write_root_cert(self.paths, session.name, old)
        new_path = write_root_cert(self.paths, session.name, new)
        # Both roots by files of their own: whatever later happens to the file the old
        # anchor came from (an x509ca/ file a caCerts answer may rewrite), both stay.
        trust = [str(p) for p in session.trust]
        added = [str(p) for p in (old_path, new_path) if str(p) not in trust]
        if added:
            (store or SessionStore(self.paths.config_dir)).update(
                session.name, set_values={"trust": (*trust, *added)})
        now = self.clock()
        with CaLifeStore(self.paths, session.name).update() as st:
            st.rollover = {
                "old": fingerprint(old), "old_subject": old.subject.rfc4514_string(),
                "old_not_after": _iso(old.not_valid_after_utc), "old_file": str(old_path),
                "new": fingerprint(new), "new_subject": new.subject.rfc4514_string(),
                "new_not_after": _iso(new.not_valid_after_utc), "new_file": str(new_path),
                "taken": _iso(now)}
        charon = self._load_into_charon([certs.pem_of(old), certs.pem_of(new)], [])
        log.warning("%s: root CA rollover: now trusting the new root %s (SHA-256 %s) beside "
                    "%s until that expires %s", session.name, certs.describe(new),
                    new.fingerprint(hashes.SHA256()).hex(":"), certs.describe(old),
                    f"{old.not_valid_after_utc:%Y-%m-%d}")
        return Result(session.name, "rootca", True,
                      f"new root {certs.describe(new)} (valid until "
                      f"{new.not_valid_after_utc:%Y-%m-%d}) trusted beside "
                      f"{certs.describe(old)} (until {old.not_valid_after_utc:%Y-%m-%d})",
                      files=(old_path, new_path), charon=charon)

    def _verify_root_update(self, session: Session, old: x509.Certificate,
                            update: Any) -> x509.Certificate:
        """The new root of a RootCaKeyUpdateContent, after every check RFC 4210 allows."""
        def load(der: bytes | None, what: str) -> x509.Certificate:
            if der is None:
                raise self._refused(session, ROOT_UPDATE,
                                    f"root CA update refused: it has no {what}")
            try:
                return certs.load_certificate(der)
            except SwcmpError as e:
                raise self._refused(session, ROOT_UPDATE,
                                    f"root CA update refused: its {what} does not parse: "
                                    f"{e}") from e

        new = load(update.new_with_new, "newWithNew")
        link = load(update.new_with_old, "newWithOld")
        owner = (load(update.old_with_new, "oldWithNew")
                 if update.old_with_new is not None else None)
        fail = None
        # First the signatures: they say whether the update comes from the holder of the
        # current root's key at all; then what the new root may be used for.
        if not _signed_by(link, old):
            fail = (f"newWithOld is not signed by the current root {certs.describe(old)} "
                    "(the CA, or someone on the path, sent a root we cannot link to it)")
        elif certs.spki_of(link) != certs.spki_of(new):
            fail = "newWithOld certifies another key than newWithNew"
        elif new.subject != new.issuer or link.subject != new.subject:
            fail = (f"newWithNew {certs.describe(new)} is not self-issued, or newWithOld "
                    "names another subject")
        elif _check_signature(new, new) is False:
            fail = "newWithNew's self-signature does not verify"
        elif owner is not None and certs.spki_of(owner) != certs.spki_of(old):
            fail = "oldWithNew certifies another key than the current root's"
        elif owner is not None and _check_signature(owner, new) is False:
            fail = "oldWithNew does not verify with the new root's key"
        elif owner is not None and owner.subject != old.subject:
            fail = "oldWithNew names another subject than the current root"
        elif not _valid_at(link, self.clock()):
            # an old, withdrawn rollover replayed by whoever can still answer
            fail = (f"newWithOld is not valid now (valid {link.not_valid_before_utc:%Y-%m-%d}"
                    f" to {link.not_valid_after_utc:%Y-%m-%d})")
        elif owner is not None and not _valid_at(owner, self.clock()):
            fail = "oldWithNew is not valid now"
        if fail is None:
            if _check_signature(new, new) is None:
                log.warning("%s: cannot check the self-signature of the new root %s (its key "
                            "type is not supported here); trusting it on newWithOld, which "
                            "verifies with the current root", session.name,
                            certs.describe(new))
            verified = ("newWithOld verifies with the current root"
                        + (" and oldWithNew with the new key" if owner is not None else ""))
            why = certs.may_sign_certificates(new)
            if why is not None:
                fail = f"{verified}, but newWithNew cannot be a trust anchor: {why}"
            elif self.clock() > new.not_valid_after_utc:
                fail = f"{verified}, but newWithNew {certs.describe(new)} has expired"
        if fail is not None:
            raise self._refused(session, ROOT_UPDATE, f"root CA update refused: {fail}")
        return new

    def drop_expired_roots(self, session: Session, *, store: SessionStore | None = None,
                           st: CaLifeState | None = None) -> str | None:
        """After a rollover, forget the old root once it has expired (``st``: the
        session's CA-life state when the caller has just read it)."""
        cls = CaLifeStore(self.paths, session.name)
        st = st or cls.load()
        roll = st.rollover
        if not roll or roll.get("state") == "done":
            return None
        old_until = _time(roll.get("old_not_after"))
        if old_until is None or self.clock() < old_until:
            return None
        old_file = roll.get("old_file", "")
        trust = [str(p) for p in session.trust]
        keep = [t for t in trust if t != old_file]
        if keep != trust:
            (store or SessionStore(self.paths.config_dir)).update(
                session.name, set_values={"trust": tuple(keep)})
        if old_file:
            drop_root_cert(self.paths, Path(old_file))
        with cls.update() as st2:
            if st2.rollover is not None:
                st2.rollover["state"] = "done"
        msg = (f"the old root {shown_dn(roll.get('old_subject', ''))} expired "
               f"{roll.get('old_not_after')}: dropped; the new root remains")
        log.info("%s: %s", session.name, msg)
        return msg


def _valid_at(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc - timedelta(minutes=10) <= now <= cert.not_valid_after_utc
