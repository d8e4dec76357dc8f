#!/usr/bin/env python3
"""The time-lapse soak, long: many sessions for simulated years (tests/soak.py).

serve's pass (``RenewalService.run_pass``) with an injected clock against the test CA
behind a fault injector: HTTP 500, 503 with Retry-After, garbage and dropped answers,
multi-day CA outages, kill -9 in renewals, a full disk (as root: the gateway's files on
a small tmpfs), CA root rollovers and revocations (new CRLs), damaged state.json,
calife.json, session TOML and renewal journals. Prints simulated years, renewals, faults
per kind, expiries without an earlier alert (must be 0), broken and unchained pairs,
the longest wait beyond the backoff, the worst request rates, and how long revocations
and new roots took to reach every session.

Run: python3 bench/bench_soak.py [--sessions N] [--years Y] [--seed S] [--quick]
(as root for the disk-full faults)
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from soak import run_soak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--years", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fault-rate", type=float, default=0.2)
    ap.add_argument("--rollover-every", type=int, default=150, metavar="DAYS")
    ap.add_argument("--revoke-every", type=int, default=10, metavar="DAYS")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 2 sessions for 30 simulated days")
    args = ap.parse_args()
    if args.quick:
        args.sessions, args.years = 2, 30 / 365
    logging.disable(logging.WARNING)  # the faults are expected: their warnings are noise here
    report = run_soak(sessions=args.sessions, days=max(1, int(args.years * 365)),
                      step=timedelta(days=1), fault_rate=args.fault_rate, seed=args.seed,
                      rollover_every=args.rollover_every, revoke_every=args.revoke_every)
    print("\n".join(report.lines()))
    failed = (report.expiries_without_alert or report.broken_pairs or report.unchained_pairs
              or report.silent_failures or report.missing_series or report.clean_failures
              or report.outage_days_over_backoff
              or report.worst_gap_over_backoff > 0
              or report.crl_lags_over_bound or report.rollover_lags_over_bound)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
