"""The CA's own life, seen from one session: its CA certificates, a root CA rollover,
revocation and CRLs.

A gateway loses its tunnels less often because its own certificate expires (renewal
handles that) than because the CA changes around it. This module keeps a session in
step with its CA:

* **CA certificates** (genm caCerts, RFC 9483 4.3.1): after each renewal, on
  ``swcmp request cacerts`` and weekly under ``serve``. An answer is taken only if every
  certificate in it is a CA certificate that chains to the session's trust anchors; it
  then replaces ``x509ca/<session>-caN.crt`` (a stored CA certificate the current
  certificate still chains through is kept) and is loaded into charon.
* **Root CA update** (genm rootCaCert / rootCaKeyUpdate, RFC 9483 4.3.2, RFC 9480 2.4):
  newWithNew is taken only if newWithOld verifies with the current root and carries the
  same key and name (and oldWithNew, when sent, verifies with the new key). Both roots
  are then trust anchors and both are in ``x509ca/<session>-root-<id>.crt`` (loaded into
  charon); the old one is dropped once it has expired.
* **Revocation** (rr, RFC 9483 4.2): signed with the key of the certificate revoked;
  after a key update with ``revoke_superseded`` the replaced certificate is revoked
  (reason superseded). A revocation that fails is kept and retried; it never touches
  the renewed pair.
* **CRLs** (genm currentCRL, RFC 4210 5.3.19.6): fetched when the cached one is due,
  checked to be signed by the issuer of the session's certificate and not older than
  the cached one, stored in ``x509crl/<session>.crl`` and loaded into charon.

What the module remembers is in ``<state_dir>/sessions/<name>/calife.json``: when each
question was last asked, which ones the CA answered with an error (not asked again for
UNSUPPORTED_RETRY), the rollover, pending revocations and the cached CRL's dates.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization

from swcmp import fsutil
from swcmp.cmp import certs, keys
from swcmp.cmp.text import safe
from swcmp.errors import (
    CertificateError,
    CMPErrorResponse,
    ConfigError,
    SwcmpError,
    TransportError,
)
from swcmp.names import validate_session_name
from swcmp.paths import Paths
from swcmp.session import Session
from swcmp.sessionfile import SessionStore
from swcmp.store import (
    crl_file,
    drop_root_cert,
    root_cert_files,
    write_crl,
    write_root_cert,
)

if TYPE_CHECKING:
    from swcmp.cmp.client import CMPClient
    from swcmp.cmp.protection import Protection
    from swcmp.cmp.transport import Transport

log = logging.getLogger(__name__)

STATE_FILE = "calife.json"
#: How often serve asks for CA certificates and a root CA update (cert-enroll's habit).
CHECK_EVERY = timedelta(days=7)
#: A question the CA answered with an error is not asked again for this long.
UNSUPPORTED_RETRY = timedelta(days=30)
#: A CRL without nextUpdate is fetched again after this long.
CRL_DEFAULT_REFRESH = timedelta(days=1)
#: ...and never sooner than this after a fetch (a CRL already past its nextUpdate).
CRL_MIN_REFRESH = timedelta(hours=1)
#: A failed revocation is retried after this, doubling up to REVOKE_RETRY_CAP.
REVOKE_RETRY_START = timedelta(minutes=5)
REVOKE_RETRY_CAP = timedelta(days=1)
#: Revocations remembered for status.
REVOKED_KEEP = 8
#: The questions, as named in the state file and in messages.
CA_CERTS, ROOT_UPDATE, CURRENT_CRL = "caCerts", "rootCaCert", "currentCRL"


class CaLifeError(SwcmpError):
    """An answer about the CA's certificates, root or CRL was refused; nothing was stored."""


def reason_code(name: str) -> int:
    """The CRLReason code of ``name`` (``superseded``, ``keyCompromise``...; any case)."""
    from swcmp.cmp.codec import CRL_REASONS

    for known, code in CRL_REASONS.items():
        if known.lower() == name.strip().lower():
            return code
    raise ConfigError(f"unknown revocation reason {name!r}").with_hint(
        "use one of: " + ", ".join(CRL_REASONS))


def reason_name(code: int) -> str:
    from swcmp.cmp.codec import CRL_REASONS

    return next((n for n, c in CRL_REASONS.items() if c == code), str(code))


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds")


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


# --------------------------------------------------------------------------- state


@dataclass
class CaLifeState:
    """What a session remembers about its CA (``calife.json``).

    Attributes:
        checked: per question (caCerts, rootCaCert, currentCRL), when it was last answered.
        unsupported: per question, when the CA answered it with an error, and the error.
        rollover: the root CA rollover in progress: old/new fingerprint, subject and
            notAfter, the time it was taken; None when there is none.
        pending_revocations: revocations to retry: serial (hex), reason code, attempts,
            next try, last error.
        revoked: the last revocations done: serial, reason name, time, whether it was the
            session's current certificate.
        crl: the cached CRL: file, issuer, thisUpdate, nextUpdate, CRL number, entries.
        last_error: per question, the last failure (for status).
    """

    checked: dict[str, str] = field(default_factory=dict)
    unsupported: dict[str, dict[str, str]] = field(default_factory=dict)
    rollover: dict[str, str] | None = None
    pending_revocations: list[dict[str, Any]] = field(default_factory=list)
    revoked: list[dict[str, Any]] = field(default_factory=list)
    crl: dict[str, Any] | None = None
    last_error: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CaLifeState:
        st = cls()
        for name in ("checked", "last_error"):
            v = data.get(name)
            if isinstance(v, dict):
                setattr(st, name, {str(k): str(x) for k, x in v.items()
                                   if isinstance(x, str)})
        v = data.get("unsupported")
        if isinstance(v, dict):
            st.unsupported = {str(k): {"since": str(x.get("since", "")),
                                       "error": str(x.get("error", ""))}
                              for k, x in v.items() if isinstance(x, dict)}
        v = data.get("rollover")
        if isinstance(v, dict):
            st.rollover = {str(k): str(x) for k, x in v.items()}
        for name in ("pending_revocations", "revoked"):
            v = data.get(name)
            if isinstance(v, list):
                setattr(st, name, [dict(x) for x in v if isinstance(x, dict)][:64])
        v = data.get("crl")
        if isinstance(v, dict):
            st.crl = dict(v)
        return st

    def is_unsupported(self, question: str, now: datetime) -> bool:
        since = _time(self.unsupported.get(question, {}).get("since"))
        return since is not None and now < since + UNSUPPORTED_RETRY

    def due(self, question: str, now: datetime) -> bool:
        """Whether serve should ask ``question`` now (weekly, not if recently refused)."""
        if self.is_unsupported(question, now):
            return False
        last = _time(self.checked.get(question))
        return last is None or now >= last + CHECK_EVERY


class CaLifeStore:
    """Reads and writes a session's ``calife.json`` under its own lock."""

    def __init__(self, paths: Paths, name: str) -> None:
        self.paths = paths
        self.name = validate_session_name(name)
        self.path = paths.session_state_dir(name) / STATE_FILE

    def load(self) -> CaLifeState:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return CaLifeState()
        except (OSError, ValueError) as e:
            log.warning("%s: %s is unreadable (%s): starting afresh (CA certificates, root "
                        "and CRL are asked for again)", self.name, self.path, e)
            return CaLifeState()
        return CaLifeState.from_json(data) if isinstance(data, dict) else CaLifeState()

    @contextmanager
    def update(self) -> Iterator[CaLifeState]:
        fsutil.ensure_dir(self.paths.lock_dir, mode=0o700)
        with fsutil.exclusive_lock(self.paths.lock_dir, f"{self.name}.calife",
                                   what=f"CA state of {self.name}"):
            st = self.load()
            yield st
            fsutil.ensure_dir(self.path.parent, mode=0o700)
            fsutil.atomic_write(self.path, json.dumps(asdict(st), indent=1,
                                                      sort_keys=True).encode() + b"\n",
                                mode=0o600)


# --------------------------------------------------------------------------- files


def _read_certs(files: Sequence[Path]) -> list[x509.Certificate]:
    out: list[x509.Certificate] = []
    for p in files:
        try:
            out.extend(certs.load_certificates(p.read_bytes()))
        except (OSError, SwcmpError) as e:
            log.warning("ignoring %s: %s", p, e)
    return out


def _current_cert(paths: Paths, name: str) -> x509.Certificate | None:
    try:
        return certs.load_certificate(paths.cert_file(name).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, SwcmpError) as e:
        log.warning("%s: cannot read its certificate: %s", name, e)
        return None


# --------------------------------------------------------------------------- talking


@dataclass(frozen=True)
class Result:
    """What one CA-life step did, for the CLI and the log."""

    session: str
    action: str  # cacerts, rootca, revoke, crl
    changed: bool
    message: str
    files: tuple[Path, ...] = ()
    charon: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"session": self.session, "action": self.action, "ok": True,
                "changed": self.changed, "message": self.message,
                "files": [str(p) for p in self.files], "charon": self.charon}


@dataclass
class CaLife:
    """The CA-life steps for sessions under ``paths``.

    Args:
        paths: the directories.
        loader: loads CA certificates (PEM) and CRLs (DER) into charon and says what it
            did (``service.authorities_loader``); None: files only.
        clock: the current time.
        transport: for tests; normally one HttpTransport per step.
    """

    paths: Paths
    loader: Callable[[Sequence[bytes], Sequence[bytes]], str] | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    transport: Transport | None = None

    # ---------------------------------------------------------------- plumbing

    def _client(self, session: Session) -> CMPClient:
        from swcmp.enroll import make_client

        return make_client(session, transport=self.transport, paths=self.paths)

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
                log.debug("%s: no signing credentials (%s); using the MAC", session.name, e)
        return mac_protection(session)

    def _ask(self, session: Session, question: str, work: Callable[[CMPClient], Any], *,
             remember: bool = True) -> Any:
        """Run one genm/rr exchange; remember a CA that refuses ``question`` (a genm the
        CA answers with a protected error is taken as not supported)."""
        from swcmp.enroll import _record_stats

        client = self._client(session)
        store = CaLifeStore(self.paths, session.name)
        now = self.clock()
        try:
            answer = work(client)
        except CMPErrorResponse as e:
            with store.update() as st:
                if e.protected and remember:
                    # The CA itself said no: do not ask it every pass.
                    st.unsupported[question] = {"since": _iso(now), "error": str(e)[:300]}
                st.last_error[question] = f"{_iso(now)}: {str(e)[:300]}"
            raise
        except SwcmpError as e:
            with store.update() as st:
                st.last_error[question] = f"{_iso(now)}: {str(e)[:300]}"
            raise
        finally:
            _record_stats(self.paths, session.name, client)
        with store.update() as st:
            st.unsupported.pop(question, None)
            st.last_error.pop(question, None)
            if remember:
                st.checked[question] = _iso(now)
        return answer

    def _refused(self, session: Session, question: str, message: str) -> CaLifeError:
        with CaLifeStore(self.paths, session.name).update() as st:
            st.last_error[question] = f"{_iso(self.clock())}: {message[:300]}"
        return CaLifeError(message).with_hint(
            "nothing was stored; the session keeps its current CA certificates, trust "
            "anchors and CRL. If the CA is genuine, ask its operator")

    def _load_into_charon(self, ca_pems: Sequence[bytes], crls: Sequence[bytes]) -> str:
        if self.loader is None:
            return "not loaded into charon (--vici none or --no-deploy)"
        from swcmp.deploy import DeployError

        try:
            return self.loader(ca_pems, crls)
        except DeployError as e:
            log.warning("charon not updated: %s (the files are in place; charon loads them "
                        "when it starts)", e)
            return f"charon not updated: {e}"

    def anchors(self, session: Session) -> list[x509.Certificate]:
        from swcmp.store import load_trust

        return load_trust(session)

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
        files = write_ca_certs(session, self.paths, new_set)
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
        may have made one) keeping its place and content: caCerts never rewrites trust."""
        files = self.paths.ca_cert_files(session.name)
        trust = set(session.trust)
        pinned: dict[int, x509.Certificate] = {}
        for i, p in enumerate(files):
            if p in trust:
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

    def drop_expired_roots(self, session: Session, *, store: SessionStore | None = None
                           ) -> str | None:
        """After a rollover, forget the old root once it has expired."""
        cls = CaLifeStore(self.paths, session.name)
        st = cls.load()
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
        msg = (f"the old root {roll.get('old_subject', '')} expired {roll.get('old_not_after')}:"
               " dropped; the new root remains")
        log.info("%s: %s", session.name, msg)
        return msg

    # ---------------------------------------------------------------- revocation

    def _archived(self, session: Session, serial: int
                  ) -> tuple[x509.Certificate, keys.SigningKey] | None:
        """A certificate of this session with ``serial`` and its key: live or archived."""
        from swcmp.store import Journal, load_session_key

        cert = _current_cert(self.paths, session.name)
        if cert is not None and cert.serial_number == serial:
            key = load_session_key(session, self.paths)
            return (cert, key) if key is not None else None
        archive = Journal(self.paths, session.name).archive
        for p in sorted(archive.glob(f"*-{serial:x}.crt")) if archive.exists() else []:
            k = p.with_suffix(".key")
            try:
                c = certs.load_certificate(p.read_bytes())
                key = keys.load_private_key(k.read_bytes())
            except (OSError, SwcmpError) as e:
                log.warning("%s: archived %s unusable: %s", session.name, p, e)
                continue
            if c.serial_number == serial and certs.spki_of(c) == keys.spki_der(key):
                return c, key
        return None

    def revoke(self, session: Session, *, serial: int | None = None,
               reason: int = 0) -> Result:
        """rr for the current certificate (or ``serial``, live or archived), signed with it.

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
                           "time": _iso(now), "current": current}, *st.revoked][:REVOKED_KEEP]
            st.pending_revocations = [p for p in st.pending_revocations
                                      if p.get("serial") != f"{serial:x}"]
        msg = f"certificate {certs.describe(cert)} revoked (reason {reason_name(reason)})"
        if current:
            msg += ("; it is the session's current certificate: a key update with it will be "
                    f"refused, enroll again with `swcmp request initial {session.name}`")
        log.warning("%s: %s", session.name, msg)
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
            found = self._archived(session, serial) if serial >= 0 else None
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

    # ---------------------------------------------------------------- CRL

    def crl_due(self, session: Session, st: CaLifeState | None = None) -> bool:
        st = st or CaLifeStore(self.paths, session.name).load()
        now = self.clock()
        if st.is_unsupported(CURRENT_CRL, now):
            return False
        nxt = _time((st.crl or {}).get("refresh_at"))
        return nxt is None or now >= nxt or not crl_file(self.paths, session.name).exists()

    def refresh_crl(self, session: Session) -> Result:
        """genm currentCRL; store and load a CRL signed by the session's issuer.

        Raises:
            CaLifeError: the CRL is signed by someone else or older than the cached one.
        """
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
        old_this = _time(cached.get("this_update"))
        if old_this is not None and this_update < old_this and crl_file(
                self.paths, session.name).exists():
            raise self._refused(session, CURRENT_CRL,
                                f"CRL refused: issued {this_update:%Y-%m-%d %H:%M:%S}Z, older "
                                f"than the cached one ({old_this:%Y-%m-%d %H:%M:%S}Z): a "
                                "replay?")
        if this_update > now + timedelta(minutes=10):
            raise self._refused(session, CURRENT_CRL,
                                f"CRL refused: issued in the future "
                                f"({this_update:%Y-%m-%d %H:%M:%S}Z; check the clocks)")
        number = _crl_number(crl)
        nxt = crl.next_update_utc
        if nxt is not None and nxt < now:
            log.warning("%s: the CA's CRL is past its nextUpdate (%s); stored anyway",
                        session.name, f"{nxt:%Y-%m-%d %H:%M:%S}Z")
        refresh = max(nxt or (now + CRL_DEFAULT_REFRESH), now + CRL_MIN_REFRESH)
        der = crl.public_bytes(serialization.Encoding.DER)
        path = write_crl(self.paths, session.name, der)
        with CaLifeStore(self.paths, session.name).update() as st2:
            st2.crl = {"file": str(path), "issuer": crl.issuer.rfc4514_string(),
                       "this_update": _iso(this_update),
                       "next_update": _iso(nxt) if nxt else None,
                       "number": number, "entries": len(crl), "refresh_at": _iso(refresh),
                       "signer": fingerprint(issuer)}
        charon = self._load_into_charon([], [der])
        msg = (f"CRL of '{safe(crl.issuer.rfc4514_string())}' stored ({len(crl)} revoked, "
               f"issued {this_update:%Y-%m-%d %H:%M:%S}Z"
               + (f", next update {nxt:%Y-%m-%d %H:%M:%S}Z" if nxt else "") + ")")
        log.info("%s: %s", session.name, msg)
        return Result(session.name, "crl", True, msg, files=(path,), charon=charon)

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
                                f"CRL refused: its issuer '{safe(crl.issuer.rfc4514_string())}'"
                                " is not the issuer of the session's certificate "
                                f"'{safe(cert.issuer.rfc4514_string())}'")
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
                            f"certificate named '{safe(crl.issuer.rfc4514_string())}' that "
                            "the session holds (signed by someone else)")

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

    def maintain(self, session: Session) -> list[str]:
        """serve's pass over one session: old roots, retries, and what is due."""
        notes: list[str] = []
        if _current_cert(self.paths, session.name) is None:
            return notes
        steps: list[tuple[str, Callable[[], Any]]] = []
        st = CaLifeStore(self.paths, session.name).load()
        now = self.clock()
        # each step sees the session as the steps before left it (late binding of `session`)
        steps.append(("old roots", lambda: self.drop_expired_roots(session)))
        if st.pending_revocations:
            steps.append(("revocations", lambda: self.retry_revocations(session)))
        if st.due(ROOT_UPDATE, now):
            steps.append(("root CA update", lambda: self.update_root(session).message))
        if st.due(CA_CERTS, now):
            steps.append(("CA certificates", lambda: self.refresh_ca_certs(session).message))
        if self.crl_due(session, st):
            steps.append(("CRL", lambda: self.refresh_crl(session).message))
        for what, step in steps:
            try:
                out = step()
                if what == "root CA update":  # it may have added trust anchors
                    session = SessionStore(self.paths.config_dir).load(session.name)
            except SwcmpError as e:
                log.warning("%s: %s: %s", session.name, what, e)
                notes.append(f"{what}: {e}")
                if isinstance(e, TransportError):
                    break  # a CA that cannot be reached is not asked the next question
                continue
            if isinstance(out, list):
                notes.extend(out)
            elif out:
                notes.append(str(out))
        return notes

    def next_due(self, session: Session) -> datetime | None:
        """When :meth:`maintain` has something to do for ``session`` next."""
        if _current_cert(self.paths, session.name) is None:
            return None
        st = CaLifeStore(self.paths, session.name).load()
        times: list[datetime] = []
        for q in (ROOT_UPDATE, CA_CERTS):
            since = _time(st.unsupported.get(q, {}).get("since"))
            if since is not None and st.is_unsupported(q, self.clock()):
                times.append(since + UNSUPPORTED_RETRY)
                continue
            last = _time(st.checked.get(q))
            times.append(last + CHECK_EVERY if last else self.clock())
        refresh = _time((st.crl or {}).get("refresh_at"))
        since = _time(st.unsupported.get(CURRENT_CRL, {}).get("since"))
        if since is not None and st.is_unsupported(CURRENT_CRL, self.clock()):
            times.append(since + UNSUPPORTED_RETRY)
        else:
            times.append(refresh or self.clock())
        times += [t for p in st.pending_revocations if (t := _time(p.get("next_try")))]
        if st.rollover and st.rollover.get("state") != "done":
            t = _time(st.rollover.get("old_not_after"))
            if t is not None:
                times.append(t)
        return min(times) if times else None


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


# --------------------------------------------------------------------------- status


def status_info(session: Session, paths: Paths, now: datetime) -> dict[str, Any]:
    """The CA side of ``status`` and ``session check``: roots, rollover, CRL, revocations."""
    st = CaLifeStore(paths, session.name).load()
    roots = []
    seen: set[str] = set()
    trust_files = [*session.trust, *root_cert_files(paths, session.name)]
    for p in trust_files:
        for c in _read_certs([p]):
            fp = fingerprint(c)
            if c.subject != c.issuer or fp in seen:
                continue
            seen.add(fp)
            roots.append({"subject": c.subject.rfc4514_string(), "sha256": fp,
                          "not_after": _iso(c.not_valid_after_utc),
                          "expired": now > c.not_valid_after_utc, "file": str(p),
                          "trusted": p in session.trust})
    roll = st.rollover
    rollover = None
    if roll:
        done = roll.get("state") == "done"
        old_until = _time(roll.get("old_not_after"))
        rollover = {**roll, "state": "done" if done else (
            "old root expired" if old_until and now >= old_until else "both roots trusted")}
    revoked_current = next((r for r in st.revoked if r.get("current")), None)
    cur = _current_cert(paths, session.name)
    if revoked_current and cur is not None and revoked_current.get("serial") != \
            f"{cur.serial_number:x}":
        revoked_current = None
    return {"roots": roots, "rollover": rollover, "crl": st.crl,
            "unsupported": st.unsupported, "checked": st.checked,
            "pending_revocations": st.pending_revocations, "revoked": st.revoked,
            "current_revoked": revoked_current, "last_error": st.last_error}


def status_rows(info: dict[str, Any]) -> list[tuple[str, str]]:
    """``status`` text rows for :func:`status_info`'s dictionary."""
    rows: list[tuple[str, str]] = []
    for r in info.get("roots", []):
        rows.append(("root", f"{r['subject']} sha256 {r['sha256'][:16]}... until "
                             f"{r['not_after']}" + (" (EXPIRED)" if r.get("expired") else "")))
    roll = info.get("rollover")
    if roll:
        rows.append(("root rollover", f"{roll['state']}: new {roll.get('new', '')[:16]}... "
                                      f"(taken {roll.get('taken')}), old "
                                      f"{roll.get('old', '')[:16]}... until "
                                      f"{roll.get('old_not_after')}"))
    crl = info.get("crl")
    if crl:
        rows.append(("CRL", f"{crl.get('entries')} revoked, issued {crl.get('this_update')}, "
                            f"next fetch {crl.get('refresh_at')}"))
    rc = info.get("current_revoked")
    if rc:
        rows.append(("REVOKED", f"the current certificate serial {rc['serial']} was revoked "
                                f"({rc['reason']}) at {rc['time']}: key updates with it are "
                                "refused; run `swcmp request initial`"))
    for p in info.get("pending_revocations", []):
        rows.append(("revocation due", f"serial {p.get('serial')} ({p.get('attempts', 0)} "
                                       f"attempts; {p.get('last_error', 'not tried yet')})"))
    for q, u in info.get("unsupported", {}).items():
        rows.append(("CA lacks", f"{q} (answered {u.get('since')}: {u.get('error')})"))
    return rows


def roots_check(session: Session, paths: Paths, now: datetime) -> Any:
    """``session check`` item ``ca-roots``: the trusted roots and the rollover state."""
    from swcmp.checks import CheckResult

    info = status_info(session, paths, now)
    roots = info["roots"]
    if not roots:
        return CheckResult("ca-roots", "ok", "no self-signed trust anchor (nothing to roll "
                           "over)")
    parts = [f"{r['subject']} until {r['not_after'][:10]}" + (" EXPIRED" if r["expired"] else "")
             for r in roots]
    detail = "roots: " + "; ".join(parts)
    if info["rollover"]:
        detail += f"; rollover: {info['rollover']['state']}"
    if info["current_revoked"]:
        rc = info["current_revoked"]
        return CheckResult("ca-roots", "fail", detail + f"; the current certificate serial "
                           f"{rc['serial']} is revoked",
                           f"swcmp request initial {session.name}")
    if all(r["expired"] for r in roots):
        return CheckResult("ca-roots", "warn", detail, "ask the CA for its new root: "
                           f"swcmp request rootca {session.name}")
    return CheckResult("ca-roots", "ok", detail)


roots_check.check_name = "ca-roots"  # type: ignore[attr-defined]


__all__ = ["CaLife", "CaLifeError", "CaLifeState", "CaLifeStore", "Result", "crl_file",
           "reason_code", "root_cert_files", "status_info", "status_rows"]
