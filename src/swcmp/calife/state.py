"""What a session remembers of its CA's life (``calife.json``), and the small pieces
the CA-life steps share."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from swcmp import fsutil
from swcmp.cmp import certs
from swcmp.errors import (
    ConfigError,
    SwcmpError,
)
from swcmp.names import validate_session_name
from swcmp.paths import Paths

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
#: ...and never later than this, whatever nextUpdate says (crlStatusList answers "no
#: newer CRL" cheaply): a CA that revokes before its nextUpdate is heard within a week.
CRL_MAX_REFRESH = timedelta(days=7)
#: A CA-life question that failed (the CA unreachable, HTTP errors, a refused answer) is
#: asked again after this, doubling with each consecutive failure up to FAILED_RETRY_CAP,
#: or after the CA's Retry-After when that is longer: a failing CA is asked a few times
#: on the first day per session and question, then once a day.
FAILED_RETRY_START = timedelta(hours=1)
FAILED_RETRY_CAP = timedelta(days=1)
#: A failed revocation is retried after this, doubling up to REVOKE_RETRY_CAP.
REVOKE_RETRY_START = timedelta(minutes=5)
REVOKE_RETRY_CAP = timedelta(days=1)
#: Revocations remembered for status.
REVOKED_KEEP = 8
#: The questions, as named in the state file and in messages.
CA_CERTS, ROOT_UPDATE, CURRENT_CRL = "caCerts", "rootCaCert", "currentCRL"
#: genm crlStatusList (RFC 9483 4.3.4), asked before currentCRL; a CA that does not
#: know it is remembered (``unsupported``) and asked currentCRL instead
CRL_STATUS_LIST = "crlStatusList"
#: genm certReqTemplate (RFC 9483 4.3.3), asked before an IR and before a key update with a
#: new key; a CA that does not know it is remembered (``unsupported``) and not asked again
#: for UNSUPPORTED_RETRY
CERT_REQ_TEMPLATE = "certReqTemplate"


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


_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def _pending(entry: object) -> dict[str, Any] | None:
    """A pending revocation as written by queue_revocation, or None for anything else."""
    if not isinstance(entry, dict):
        return None
    serial, reason, attempts = entry.get("serial"), entry.get("reason", 0), entry.get(
        "attempts", 0)
    if not (isinstance(serial, str) and 0 < len(serial) <= 64
            and all(c in "0123456789abcdefABCDEF" for c in serial)):
        return None
    if isinstance(reason, bool) or not isinstance(reason, int) or not 0 <= reason <= 10:
        return None
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 0 <= attempts < 10**6:
        return None
    out = {"serial": serial, "reason": reason, "attempts": attempts}
    for k in ("next_try", "last_error"):
        if isinstance(entry.get(k), str):
            out[k] = str(entry[k])[:300]
    return out


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    t = t if t.tzinfo is not None else t.replace(tzinfo=UTC)
    # a hand-edited or damaged file: a time that no schedule can add a week to is none
    return t if _EARLIEST <= t <= _LATEST else None


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
        failures: per question, the failures since it was last answered.
        next_try: per question that failed, the time before which it is not asked again.
    """

    checked: dict[str, str] = field(default_factory=dict)
    unsupported: dict[str, dict[str, str]] = field(default_factory=dict)
    rollover: dict[str, str] | None = None
    pending_revocations: list[dict[str, Any]] = field(default_factory=list)
    revoked: list[dict[str, Any]] = field(default_factory=list)
    crl: dict[str, Any] | None = None
    last_error: dict[str, str] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    next_try: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CaLifeState:
        st = cls()
        v = data.get("failures")
        if isinstance(v, dict):
            st.failures = {str(k)[:40]: x for k, x in list(v.items())[:16]
                           if isinstance(x, int) and not isinstance(x, bool) and x >= 0}
        for name in ("checked", "last_error", "next_try"):
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
        v = data.get("pending_revocations")
        if isinstance(v, list):  # each entry checked: a bad one is dropped, not a crash
            st.pending_revocations = [q for q in map(_pending, v[:64]) if q is not None]
        v = data.get("revoked")
        if isinstance(v, list):
            st.revoked = [{str(k): x for k, x in r.items() if isinstance(x, str | int | bool)}
                          for r in v[:64] if isinstance(r, dict)]
        v = data.get("crl")
        if isinstance(v, dict):
            st.crl = dict(v)
        return st

    def is_unsupported(self, question: str, now: datetime) -> bool:
        since = _time(self.unsupported.get(question, {}).get("since"))
        # a time in the future (a damaged calife.json, a clock put back) is no refusal
        return since is not None and since <= now < since + UNSUPPORTED_RETRY

    def backing_off(self, question: str, now: datetime) -> bool:
        """Whether ``question`` failed lately and its next try has not come yet."""
        nxt = _time(self.next_try.get(question))
        # never further ahead than failed() sets it: a later time (a damaged calife.json,
        # a clock put back) would stop the question for good
        return nxt is not None and now < nxt <= now + FAILED_RETRY_CAP

    def failed(self, question: str, now: datetime, retry_after: float | None) -> datetime:
        """Count a failure of ``question``; return (and keep) when to ask it next."""
        n = self.failures.get(question, 0) + 1
        self.failures[question] = n
        delay = min(FAILED_RETRY_START * (1 << min(n - 1, 16)), FAILED_RETRY_CAP)
        if retry_after is not None:  # the CA's time when it is longer, never past the cap
            delay = max(delay, min(timedelta(seconds=retry_after), FAILED_RETRY_CAP))
        nxt = now + delay
        self.next_try[question] = _iso(nxt)
        return nxt

    def answered(self, question: str) -> None:
        """``question`` was answered: its failures and backoff are over."""
        self.failures.pop(question, None)
        self.next_try.pop(question, None)

    def crl_refresh_at(self, now: datetime) -> datetime | None:
        """When the cached CRL is to be fetched again; None when now (none cached, or a
        time further ahead than a fetch ever sets it: a damaged calife.json, a clock put
        back, would stop the CRL fetches for good)."""
        refresh = _time((self.crl or {}).get("refresh_at"))
        if refresh is None or refresh > now + CRL_MAX_REFRESH:
            return None
        return refresh

    def due(self, question: str, now: datetime) -> bool:
        """Whether serve should ask ``question`` now (weekly, not if recently refused,
        not before the backoff after failures ends)."""
        if self.is_unsupported(question, now) or self.backing_off(question, now):
            return False
        last = _time(self.checked.get(question))
        return last is None or last > now or now >= last + CHECK_EVERY


#: calife.json files this process could not write (a full disk): a failing question's
#: backoff holds.
_UNWRITTEN: fsutil.HeldWrites[CaLifeState] = fsutil.HeldWrites()


class CaLifeStore:
    """Reads and writes a session's ``calife.json`` under its own lock."""

    def __init__(self, paths: Paths, name: str) -> None:
        self.paths = paths
        self.name = validate_session_name(name)
        self.path = paths.session_state_dir(name) / STATE_FILE

    def load(self) -> CaLifeState:
        held = _UNWRITTEN.get(self.path)
        if held is not None:
            return held
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
            try:
                fsutil.ensure_dir(self.path.parent, mode=0o700)
                fsutil.atomic_write(self.path, json.dumps(asdict(st), indent=1,
                                                          sort_keys=True).encode() + b"\n",
                                    mode=0o600)
            except SwcmpError:
                _UNWRITTEN.hold(self.path, st)
                raise
            _UNWRITTEN.written(self.path)


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


def revoked_record(revoked: Sequence[Mapping[str, object]],
                   cert: x509.Certificate) -> Mapping[str, object] | None:
    """The record of ``cert``'s revocation by swcmp, if any: the same serial and, when
    the record names one (older records do not), the same issuer (serials are unique
    per issuer only: a session that moved to another CA can meet a revoked serial)."""
    serial, issuer = f"{cert.serial_number:x}", cert.issuer.rfc4514_string()
    return next((r for r in revoked if r.get("serial") == serial
                 and r.get("issuer", issuer) == issuer), None)
