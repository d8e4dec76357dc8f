"""When to renew and when to retry: pure functions of the certificate, the settings
and the time, with no I/O, so that ``status``, ``serve`` and the tests agree.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from cryptography import x509

from swcmp.values import ExpireTime as ExpireTime

if TYPE_CHECKING:
    from swcmp.session import Session
    from swcmp.state import SessionState

#: No certificate is renewed before this share of its lifetime has passed, counted
#: from its notBefore and also from the moment swcmp received it (of the validity it
#: had left then): a CA that back-dates notBefore cannot make a new certificate due.
MIN_AGE_SHARE = 0.1
#: ...and never sooner than this after swcmp received it, whatever the dates say.
MIN_RENEW_INTERVAL = timedelta(seconds=5)
#: Jitter: up to this share of the lifetime earlier than the nominal due time...
JITTER_SHARE = 0.03
#: ...but never more than this.
JITTER_CAP = timedelta(hours=6)
#: Backoff after failures: first retry after RETRY_START, doubling up to RETRY_CAP.
RETRY_START = timedelta(minutes=1)
RETRY_CAP = timedelta(hours=4)
#: A Retry-After shorter than this is taken as this (no hammering a busy CA).
RETRY_AFTER_MIN = timedelta(seconds=10)

#: What the scheduler does about a session: nothing yet, renew, wait for an initial
#: request, nothing (auto-update off), or wait out the backoff after failures.
PlanState = Literal["idle", "due", "needs_ir", "disabled", "failed"]

# --------------------------------------------------------------------------- when to renew


def jitter_fraction(session_name: str, serial: int) -> float:
    """A stable number in [0, 1) per session and certificate: spreads a fleet's renewals."""
    digest = hashlib.sha256(f"{session_name}/{serial:x}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def renewal_floor(not_before: datetime, not_after: datetime,
                  received: datetime | None) -> datetime:
    """The earliest moment a certificate may be renewed, whatever the policy says.

    A tenth of its lifetime after ``not_before`` and, when swcmp knows when it
    received the certificate, a tenth of the validity it had left then (at least
    MIN_RENEW_INTERVAL) after ``received``. A policy of 100 %, a duration at least
    the lifetime, or a CA that back-dates notBefore would otherwise make every new
    certificate due the moment it arrives: a renewal loop.
    """
    floor = not_before + (not_after - not_before) * MIN_AGE_SHARE
    if received is not None:
        left = max(not_after - received, timedelta(0))
        floor = max(floor, received + max(left * MIN_AGE_SHARE, MIN_RENEW_INTERVAL))
    return floor


def renew_at(cert: x509.Certificate, policy: ExpireTime, session_name: str,
             received: datetime | None = None) -> datetime:
    """When ``cert`` should be renewed: the policy's time, moved earlier by the jitter,
    but not before :func:`renewal_floor` (``received``: when swcmp received ``cert``).

    Pure: depends only on the certificate, the policy, the session name and ``received``.
    """
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    nominal = policy.renew_at(nb, na)
    spread = min((na - nb) * JITTER_SHARE, JITTER_CAP)
    return max(renewal_floor(nb, na, received),
               nominal - spread * jitter_fraction(session_name, cert.serial_number))


def floor_warning(policy: ExpireTime, cert: x509.Certificate | None) -> str | None:
    """Why ``policy`` asks for renewals sooner than :func:`renewal_floor` allows, or None.

    Such a policy is not a loop (the floor holds), but the operator asked for
    something swcmp will not do: ``session set`` says so.
    """
    if policy.percent is not None and policy.percent > 100 - MIN_AGE_SHARE * 100:
        return (f"expire_time {policy} leaves less than {100 - MIN_AGE_SHARE * 100:.0f}% of "
                f"the validity before renewing: swcmp renews no sooner than "
                f"{MIN_AGE_SHARE * 100:.0f}% of the validity after it received a certificate")
    if cert is None or policy.duration is None:
        return None
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    if policy.renew_at(nb, na) < renewal_floor(nb, na, None):
        return (f"expire_time {policy} is {MIN_AGE_SHARE * 100:.0f}% or more of the current "
                f"certificate's validity ({na - nb}): swcmp renews no sooner than "
                f"{MIN_AGE_SHARE * 100:.0f}% of the validity after it received a certificate")
    return None


def retry_delay(failures: int, *, now: datetime, not_after: datetime,
                retry_after: float | None = None) -> timedelta:
    """Wait before the next attempt after ``failures`` consecutive failures.

    Doubles from RETRY_START to RETRY_CAP, but never more than an eighth of the
    validity left, so retries come faster as expiry nears. ``retry_after`` is the
    time the CA asked for (HTTP 503 Retry-After, seconds): the next try is then at
    that time instead, but as the value comes from the network it is kept between
    RETRY_AFTER_MIN and RETRY_CAP and before half of the validity left (a CA, or a
    man in the middle, cannot put the next try past the certificate's expiry).
    """
    remaining = not_after - now
    if retry_after is not None:
        delay = min(max(timedelta(seconds=retry_after), RETRY_AFTER_MIN), RETRY_CAP)
        if remaining > timedelta(0):
            delay = max(RETRY_AFTER_MIN, min(delay, remaining / 2))
        return timedelta(seconds=round(delay.total_seconds()))
    delay = min(RETRY_START * 2 ** max(min(failures, 32) - 1, 0), RETRY_CAP)
    if remaining > timedelta(0):
        delay = max(RETRY_START, min(delay, remaining / 8))
    return timedelta(seconds=round(delay.total_seconds()))


def attempt_bound(session: Session, poll_deadline: float) -> float:
    """Longest wall time, in seconds, one renewal attempt spends waiting for the CA.

    Every exchange ends within the session's ``timeout`` (the transport's
    watchdog) and polling ends within ``poll_deadline`` plus one exchange. The
    worst attempt: a late certConf that fails (1) or the certificate request template
    before a new key (1, never polled; a run that confirms late makes no new key), a
    KUR (1), the polls (the deadline + 1), the certConf or the rejection (1).
    """
    return poll_deadline + 4 * session.timeout


@dataclass(frozen=True)
class Plan:
    """What the scheduler should do about a session now."""

    state: PlanState
    due: bool
    renew_at: datetime | None
    expires: datetime | None
    next_check: datetime | None
    reason: str


def plan(session: Session, cert: x509.Certificate | None, st: SessionState,
         now: datetime) -> Plan:
    """Decide, without side effects, whether ``session`` is to be renewed at ``now``."""
    if cert is None:
        return Plan("needs_ir", False, None, None, None,
                    f"no certificate yet: run `swcmp request initial {session.name}`")
    expires = cert.not_valid_after_utc
    if now >= expires:
        return Plan("needs_ir", False, None, expires, None,
                    f"certificate expired {expires:%Y-%m-%d %H:%M}Z; a key update cannot work: "
                    f"run `swcmp request initial {session.name}`")
    received = st.received_at(f"{cert.serial_number:x}")
    if received is not None and received > now:
        # an arrival in the future (a damaged state.json, a clock put back since) would
        # put the floor past the expiry: counted from notBefore alone instead
        received = None
    at = renew_at(cert, session.expire_time, session.name, received)
    if not session.auto_update:
        return Plan("disabled", False, at, expires, None, "auto-update is off")
    if st.next_attempt:
        retry = datetime.fromisoformat(st.next_attempt)
        # no backoff sets a retry further than RETRY_CAP ahead: a later one (a damaged
        # state.json, a clock put back since) would stop renewals until expiry
        if now < retry <= now + RETRY_CAP:
            return Plan("failed", False, at, expires, retry,
                        f"retrying after {retry:%Y-%m-%d %H:%M:%S}Z ({st.failures} failures)")
    if now >= at:
        return Plan("due", True, at, expires, now, "due")
    return Plan("idle", False, at, expires, at, f"next renewal {at:%Y-%m-%d %H:%M:%S}Z")
