"""The time-lapse soak, short: 3 sessions, four simulated months with two CA outages
(see tests/soak.py; the longer run is bench/bench_soak.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from soak import run_soak

pytestmark = pytest.mark.integration


def test_months_of_faults_leave_every_session_renewed(tmp_path: Path) -> None:
    report = run_soak(sessions=3, days=120, step=timedelta(days=1), outage_every=40,
                      fault_rate=0.25, root=tmp_path)
    print("\n".join(report.lines()))
    assert report.simulated_days >= 119
    assert sum(report.faults.values()) >= 20
    assert report.renewals >= 3 * 15  # 10-day certificates renewed about every 5 days
    assert report.expiries_without_alert == 0
    assert report.broken_pairs == 0
    assert report.worst_gap_over_backoff <= 0
    # a CA down for days is asked a few times a day per session, not every pass
    assert report.outage_days >= 6
    assert report.worst_outage_requests_per_day_per_session <= 6
