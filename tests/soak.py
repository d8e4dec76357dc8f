"""A time-lapse soak: many sessions renewed by serve's pass for simulated years.

The clock is injected: the test CA, the renewal engine, the CMP client, the CA-life
steps and the policy all read the simulated time, which moves by ``step`` before each
pass (``RenewalService.run_pass``, what ``swcmp serve`` runs). Between swcmp and the
CA sits a fault injector (tests/hostile_proxy.py) that, at random, answers HTTP 500,
HTTP 503 with Retry-After, garbage, or drops the connection, and takes the CA down
for whole outages; between passes the soak damages a session's state.json now and
then. The oracle, checked after every pass:

- every session holds a matching pair whose certificate is valid, or its alert
  (``SwcmpRenewalsFailing``: 3 consecutive failures) was raised a day or more before
  the certificate expired;
- no session waits longer between attempts than its backoff allows;
- the requests to a CA in an outage per simulated day stay bounded.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hostile_proxy import HostileProxy, http_status, mutate
from swcmp.cmp import certs, keys
from swcmp.policy import RETRY_CAP
from swcmp.service import RenewalService
from swcmp.state import StateStore
from swcmp.testca import TestCA
from testca_site import add_session, ca_config, make_site


@dataclass
class SoakReport:
    sessions: int = 0
    simulated_days: float = 0.0
    passes: int = 0
    renewals: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    expiries_without_alert: int = 0
    broken_pairs: int = 0
    worst_gap_over_backoff: float = 0.0
    outage_days: int = 0
    worst_outage_requests_per_day_per_session: float = 0.0
    worst_requests_per_day: int = 0
    wall_seconds: float = 0.0

    def lines(self) -> list[str]:
        return [
            f"sessions: {self.sessions}, simulated years: {self.simulated_days / 365:.2f} "
            f"({self.passes} passes)",
            f"renewals: {self.renewals}",
            f"faults injected: {sum(self.faults.values())} ({dict(sorted(self.faults.items()))})",
            f"expiries without an earlier alert: {self.expiries_without_alert}",
            f"broken pairs seen: {self.broken_pairs}",
            f"longest wait beyond the backoff: {self.worst_gap_over_backoff:.0f} s",
            f"outage days: {self.outage_days}; worst requests per session per outage day: "
            f"{self.worst_outage_requests_per_day_per_session:.1f}",
            f"worst requests to the CA in one simulated day (all sessions): "
            f"{self.worst_requests_per_day}",
            f"wall time: {self.wall_seconds:.1f} s",
        ]


def run_soak(*, sessions: int = 4, days: int = 365, step: timedelta = timedelta(hours=12),
             validity: timedelta = timedelta(days=10), fault_rate: float = 0.15,
             outage_every: int = 90, outage_days: int = 3, seed: int = 1,
             root: Path | None = None) -> SoakReport:
    rng = random.Random(seed)
    root = root or Path(tempfile.mkdtemp(prefix="swcmp-soak-"))
    start = datetime.now(UTC).replace(microsecond=0)
    sim = [start]
    clock = lambda: sim[0]  # noqa: E731
    report = SoakReport(sessions=sessions)
    t0 = time.monotonic()
    ca = TestCA(root / "ca", config=ca_config(validity=validity), clock=clock).start()
    proxy = HostileProxy(ca.url)
    try:
        site = make_site(root / "gw")
        names = [f"gw{i}" for i in range(sessions)]
        for n in names:
            add_session(site, ca, n, regenerate=rng.random() < 0.5)
            site.store.update(n, set_values={"server_url": proxy.url, "timeout": 2})
        svc = RenewalService(site.paths, clock=clock)
        states = StateStore(site.paths)
        alert_since: dict[str, datetime | None] = dict.fromkeys(names)
        serials = {n: site.cert(n).serial_number for n in names}
        outage_until: datetime | None = None
        day_requests: Counter[int] = Counter()
        outage_day_requests: Counter[int] = Counter()
        steps = int(timedelta(days=days) / step)
        for _ in range(steps):
            sim[0] += step
            day = int((sim[0] - start) / timedelta(days=1))
            # --- faults
            if outage_until is None and day and day % outage_every == 0 and \
                    outage_day_requests.get(day) is None:
                outage_until = sim[0] + timedelta(days=outage_days)
                proxy.on("*", http_status(500, "Internal Server Error"), times=None)
                report.faults["outage (HTTP 500, days)"] += outage_days
                report.outage_days += outage_days
            elif outage_until is not None and sim[0] >= outage_until:
                outage_until = None
                proxy.clear()
            if outage_until is None and rng.random() < fault_rate:
                kind, action = rng.choice([
                    ("HTTP 500", http_status(500, "Internal Server Error")),
                    ("HTTP 503 Retry-After", http_status(503, "Service Unavailable",
                                                         headers={"Retry-After": "3600"})),
                    ("garbage answer", mutate(lambda b: b[: len(b) // 2])),
                    ("dropped answer", mutate(lambda b: b"")),
                ])
                proxy.on(rng.choice(["kur", "*"]), action, times=1)
                report.faults[kind] += 1
            if rng.random() < fault_rate / 3:
                victim = rng.choice(names)
                path = states.path(victim)
                if path.exists():
                    damage = rng.choice([b"{", b"\xff\xfe", json.dumps(
                        {**json.loads(path.read_text() or "{}"), "next_attempt": "soon"}
                    ).encode()]) if path.read_bytes()[:1] == b"{" else b"{"
                    path.write_bytes(damage)
                    report.faults["damaged state.json"] += 1
            # --- one pass of serve
            before = len(proxy.seen)
            svc.run_pass()
            report.passes += 1
            sent = len(proxy.seen) - before
            day_requests[day] += sent
            if outage_until is not None:
                outage_day_requests[day] += sent
            # --- the oracle
            now = sim[0]
            for n in names:
                cert = site.cert(n)
                key = keys.load_private_key(site.paths.key_file(n).read_bytes())
                if certs.spki_of(cert) != keys.spki_der(key):
                    report.broken_pairs += 1
                if cert.serial_number != serials[n]:
                    report.renewals += 1
                    serials[n] = cert.serial_number
                st = states.load(n)
                if st.failures >= 3:
                    alert_since[n] = alert_since[n] or now
                elif st.failures == 0:
                    alert_since[n] = None
                if now >= cert.not_valid_after_utc:
                    fired = alert_since[n]
                    if fired is None or cert.not_valid_after_utc - fired < timedelta(days=1):
                        report.expiries_without_alert += 1
                if st.next_attempt and st.last_result is not None:
                    gap = (datetime.fromisoformat(st.next_attempt)
                           - datetime.fromisoformat(st.last_result.time)).total_seconds()
                    report.worst_gap_over_backoff = max(
                        report.worst_gap_over_backoff, gap - RETRY_CAP.total_seconds())
        report.simulated_days = (sim[0] - start) / timedelta(days=1)
        report.worst_requests_per_day = max(day_requests.values(), default=0)
        report.worst_outage_requests_per_day_per_session = max(
            (v / sessions for v in outage_day_requests.values()), default=0.0)
    finally:
        proxy.close()
        ca.stop()
        report.wall_seconds = time.monotonic() - t0
    return report
