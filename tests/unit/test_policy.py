"""The pure renewal decisions: due time, jitter, backoff, plan. The clock is passed in."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pki import TestPKI
from swcmp.cmp import keys
from swcmp.policy import (
    JITTER_CAP,
    JITTER_SHARE,
    MIN_AGE_SHARE,
    MIN_RENEW_INTERVAL,
    RETRY_CAP,
    RETRY_START,
    ExpireTime,
    floor_warning,
    jitter_fraction,
    plan,
    renew_at,
    renewal_floor,
    retry_delay,
)
from swcmp.session import Session
from swcmp.state import SessionState

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def session(**kw: object) -> Session:
    return Session(name="gw1", key="gw1", auto_update=True, **kw)  # type: ignore[arg-type]


def test_half_remaining_is_due_at_the_middle_minus_jitter(pki: TestPKI) -> None:
    cert = pki.issue(keys.generate_key("ecdsa:p256"), not_before=T0, days=100)
    at = renew_at(cert, ExpireTime(percent=50), "gw1")
    middle = T0 + dt.timedelta(days=50)
    spread = min(dt.timedelta(days=100) * JITTER_SHARE, JITTER_CAP)
    assert middle - spread <= at <= middle
    # deterministic: same input, same answer; another session name, another time
    assert renew_at(cert, ExpireTime(percent=50), "gw1") == at
    assert renew_at(cert, ExpireTime(percent=50), "gw2") != at


def test_remaining_not_elapsed(pki: TestPKI) -> None:
    # 20% means: renew when only a fifth of the lifetime is left (day 80 of 100)
    cert = pki.issue(keys.generate_key("ecdsa:p256"), not_before=T0, days=100)
    at = renew_at(cert, ExpireTime(percent=20), "gw1")
    assert T0 + dt.timedelta(days=79) < at <= T0 + dt.timedelta(days=80)


def test_absolute_duration(pki: TestPKI) -> None:
    cert = pki.issue(keys.generate_key("ecdsa:p256"), not_before=T0, days=100)
    at = renew_at(cert, ExpireTime.before_expiry(dt.timedelta(days=30)), "gw1")
    assert T0 + dt.timedelta(days=70) - JITTER_CAP <= at <= T0 + dt.timedelta(days=70)


@given(st.text(min_size=1, max_size=30), st.integers(1, 2**159))
def test_jitter_fraction_in_unit_interval(name: str, serial: int) -> None:
    assert 0 <= jitter_fraction(name, serial) < 1


def test_backoff_doubles_to_cap_and_tightens_near_expiry() -> None:
    far = T0 + dt.timedelta(days=365)
    delays = [retry_delay(n, now=T0, not_after=far) for n in range(1, 12)]
    assert delays[0] == RETRY_START and delays[1] == 2 * RETRY_START
    assert delays[-1] == RETRY_CAP and all(a <= b for a, b in itertools.pairwise(delays))
    near = T0 + dt.timedelta(hours=2)
    assert retry_delay(10, now=T0, not_after=near) == dt.timedelta(minutes=15)


def test_plan_states(pki: TestPKI) -> None:
    cert = pki.issue(keys.generate_key("ecdsa:p256"), not_before=T0, days=10)
    s = session()
    assert plan(s, None, SessionState(), T0).state == "needs_ir"
    assert plan(s, cert, SessionState(), T0 + dt.timedelta(days=1)).state == "idle"
    due = plan(s, cert, SessionState(), T0 + dt.timedelta(days=6))
    assert due.due and due.state == "due"
    assert plan(s, cert, SessionState(), T0 + dt.timedelta(days=11)).state == "needs_ir"
    off = plan(Session(name="gw1", key="gw1"), cert, SessionState(), T0 + dt.timedelta(days=6))
    assert off.state == "disabled" and not off.due
    backoff = SessionState(failures=2,
                           next_attempt=(T0 + dt.timedelta(days=6, hours=1)).isoformat())
    p = plan(s, cert, backoff, T0 + dt.timedelta(days=6))
    assert p.state == "failed" and not p.due
    assert plan(s, cert, backoff, T0 + dt.timedelta(days=6, hours=2)).due


def test_expired_is_reported_as_needing_ir(pki: TestPKI, tmp_path: Path) -> None:
    cert = pki.issue(keys.generate_key("ecdsa:p256"), not_before=T0, days=1)
    p = plan(session(), cert, SessionState(), T0 + dt.timedelta(days=2))
    assert "request initial" in p.reason


@pytest.mark.parametrize("policy", [ExpireTime(percent=100),
                                    ExpireTime.before_expiry(dt.timedelta(days=30))])
def test_no_renewal_loop_when_policy_covers_the_whole_lifetime(pki: TestPKI,
                                                             policy: ExpireTime) -> None:
    # 100 % remaining, or 30 days before expiry of a 7-day certificate: due at issuance,
    # which would renew again and again; swcmp waits a tenth of the lifetime first
    cert = pki.issue(keys.generate_key("ecdsa:p256"), not_before=T0, days=7)
    at = renew_at(cert, policy, "gw1")
    assert at == T0 + dt.timedelta(days=7) * MIN_AGE_SHARE
    s = Session(name="gw1", key="gw1", auto_update=True, expire_time=policy)
    assert not plan(s, cert, SessionState(), T0 + dt.timedelta(hours=1)).due
    assert plan(s, cert, SessionState(), T0 + dt.timedelta(days=1)).due


@pytest.mark.parametrize(("retry_after", "left", "expected"), [
    (120.0, dt.timedelta(days=30), dt.timedelta(seconds=120)),  # the CA's time, not 1 min
    (0.0, dt.timedelta(days=30), dt.timedelta(seconds=10)),  # no hammering
    (1e9, dt.timedelta(days=30), dt.timedelta(hours=4)),  # a hostile value is capped
    (3600.0, dt.timedelta(minutes=10), dt.timedelta(minutes=5)),  # before expiry
])
def test_retry_after_replaces_the_backoff_within_bounds(retry_after: float,
                                                       left: dt.timedelta,
                                                       expected: dt.timedelta) -> None:
    from swcmp.policy import retry_delay

    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert retry_delay(5, now=now, not_after=now + left, retry_after=retry_after) == expected


def test_a_backdated_certificate_is_not_due_the_moment_it_arrives(pki: TestPKI) -> None:
    # a 10-minute certificate whose notBefore the CA put 60 s in the past, with
    # expire_time 95%: due 33 s after notBefore, i.e. 27 s before it arrived. Counted
    # from notBefore alone the floor (66 s) lets it be renewed 6 s after arrival, again
    # and again; counted from its arrival, not before a tenth of what was left (60 s).
    arrived = T0 + dt.timedelta(seconds=60)
    cert = pki.issue(keys.generate_key("ecdsa:p256"), not_before=T0,
                     days=11 / (24 * 60))
    s = session(expire_time=ExpireTime(percent=95))
    st = SessionState()
    st.record("kur", True, "renewed", now=arrived, serial=f"{cert.serial_number:x}")
    floor = arrived + (cert.not_valid_after_utc - arrived) * MIN_AGE_SHARE
    assert renew_at(cert, s.expire_time, "gw1", arrived) == floor
    assert floor - arrived == dt.timedelta(seconds=60)
    assert not plan(s, cert, st, arrived + dt.timedelta(seconds=6)).due
    assert not plan(s, cert, st, floor - dt.timedelta(seconds=1)).due
    assert plan(s, cert, st, floor).due
    # a state that records another certificate's arrival does not count for this one
    other = SessionState()
    other.record("kur", True, "renewed", now=arrived, serial="abc")
    assert plan(s, cert, other, arrived + dt.timedelta(seconds=6)).due


@given(lifetime=st.integers(60, 10**9), late=st.integers(0, 10**9),
       percent=st.integers(10, 100))
def test_the_floor_is_at_least_the_minimum_interval_after_arrival(lifetime: int, late: int,
                                                                  percent: int) -> None:
    nb = T0
    na = nb + dt.timedelta(seconds=lifetime)
    arrived = nb + dt.timedelta(seconds=min(late, lifetime - 1))
    floor = renewal_floor(nb, na, arrived)
    assert floor >= arrived + MIN_RENEW_INTERVAL
    assert floor >= nb + (na - nb) * MIN_AGE_SHARE


def test_floor_warning_for_policies_that_ask_for_less_than_the_floor(pki: TestPKI) -> None:
    cert = pki.issue(keys.generate_key("ecdsa:p256"), not_before=T0, days=10)
    assert floor_warning(ExpireTime(percent=95), None) is not None
    assert floor_warning(ExpireTime(percent=90), cert) is None
    assert floor_warning(ExpireTime.before_expiry(dt.timedelta(days=9, hours=12)),
                         cert) is not None
    assert floor_warning(ExpireTime.before_expiry(dt.timedelta(days=9, hours=12)), None) is None
    assert floor_warning(ExpireTime.before_expiry(dt.timedelta(days=5)), cert) is None


def test_an_arrival_time_in_the_future_does_not_hold_the_renewal_past_expiry(
        pki: TestPKI) -> None:
    # a damaged state.json, or a clock that was years ahead when the certificate
    # arrived and was put right since: the floor counted from that arrival lies past
    # the certificate's expiry, and the session would wait, 'idle', until it expired
    cert = pki.issue(keys.generate_key("ecdsa:p256"), not_before=T0, days=10)
    s = session()
    st = SessionState(received={"serial": f"{cert.serial_number:x}",
                                "time": "2099-01-01T00:00:00+00:00"})
    p = plan(s, cert, st, T0 + dt.timedelta(days=9))
    assert p.due, p.reason


def test_a_retry_time_beyond_any_backoff_does_not_stop_renewals(pki: TestPKI) -> None:
    # next_attempt can be at most RETRY_CAP after the failure that set it; one years
    # ahead (a damaged state.json, a clock put back) would keep the session 'failed'
    # without another attempt until its certificate expired
    cert = pki.issue(keys.generate_key("ecdsa:p256"), not_before=T0, days=10)
    st = SessionState(failures=1, next_attempt="2099-01-01T00:00:00+00:00")
    p = plan(session(), cert, st, T0 + dt.timedelta(days=9))
    assert p.due, p.reason
