"""The time-lapse soak, short: 3 sessions, four simulated months with every kind of fault
(see tests/soak.py; the longer run is bench/bench_soak.py)."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from soak import run_soak

pytestmark = pytest.mark.integration

KINDS = ("kill -9 in a renewal", "CA root rollover", "CA revocation (new CRL)",
         "damaged state.json", "damaged calife.json", "damaged session TOML",
         "damaged renewal journal", "HTTP 500", "HTTP 503 Retry-After", "garbage answer",
         "dropped answer", "outage (HTTP 500, days)")


def test_months_of_faults_leave_every_session_renewed() -> None:
    report = run_soak(sessions=3, days=120, step=timedelta(days=1), outage_every=40,
                      rollover_every=50, revoke_every=10, fault_rate=0.25)
    print("\n".join(report.lines()))
    assert report.simulated_days >= 119
    for kind in KINDS:
        assert report.faults[kind] >= 1, kind
    if os.geteuid() == 0:  # a small tmpfs of its own is mounted for the gateway
        assert report.faults["disk full (passes)"] >= 1
        assert report.faults["disk full in an outage"] >= 1
    assert sum(report.faults.values()) >= 60
    assert report.renewals >= 3 * 12  # 10-day certificates renewed about every 5 days
    # the oracle
    assert report.expiries_without_alert == 0
    assert report.broken_pairs == 0
    assert report.unchained_pairs == 0
    assert report.silent_failures == 0
    assert report.missing_series == 0  # every session's alerts can fire
    assert report.clean_failures == 0  # no renewal stuck once the faults are gone
    assert report.worst_gap_over_backoff <= 0
    # a CA down for days is asked a few times a day per session, not every pass (the
    # passes come hourly then): the renewals' and the CA-life questions' backoffs hold
    assert report.outage_days >= 6
    assert report.worst_outage_day_attempts >= 1
    assert report.outage_days_over_backoff == 0
    # revocations reach every session's CRL, and a new root every session's trust, in time
    assert report.revocations >= 5 and report.crl_lags_over_bound == 0
    assert report.rollovers >= 2 and report.rollover_lags_over_bound == 0
