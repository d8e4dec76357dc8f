"""A time-lapse soak: many sessions renewed by serve's pass for simulated years.

The clock is injected: the test CA, the renewal engine, the CMP client, the CA-life
steps and the policy all read the simulated time, which moves by ``step`` before each
pass (``RenewalService.run_pass``, what ``swcmp serve`` runs). Faults, at random:

- on the wire (tests/hostile_proxy.py between swcmp and the CA): HTTP 500, HTTP 503
  with Retry-After, garbage, dropped connections, and outages of whole days;
- kill -9: a pass runs in a child process that kills itself at a random step of a
  renewal (the renewer's checkpoints); the next pass, in the parent, goes on from the
  journal;
- disk full: the gateway's directories are a small tmpfs of their own (when run as
  root) that the soak fills for a day or two, then frees;
- the CA: its root rolls over (RFC 4210 4.4, newWithOld and oldWithNew), and it revokes
  certificates, which puts new CRLs out;
- damaged files: state.json, calife.json (bytes and far-future times), the session's
  TOML and the renewal journal; the operator repairs the last two after a day or more
  (what the alert asks for).

The oracle, checked after every pass:

- every session holds a matching pair whose certificate is valid and chains to the
  session's trust anchors, or its alert fired a day or more before the certificate
  expired (``SwcmpRenewalsFailing``: 3 consecutive failures; ``SwcmpSessionFileBroken``;
  ``SwcmpRenewalJournalDamaged``); a damaged file is reported as that session's failure
  by the pass, never raised out of it;
- no session waits longer between attempts than its backoff allows;
- the requests to a CA in an outage per simulated day stay bounded;
- every session holds a CRL naming a revocation within CRL_BOUND of it, and trusts a
  new root within ROLLOVER_BOUND of the rollover.
"""

from __future__ import annotations

import errno
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import yaml
from cryptography import x509

from hostile_proxy import HostileProxy, http_status, mutate
from swcmp.calife import CaLifeStore, crl_file
from swcmp.calife.life import CaLife
from swcmp.calife.state import CHECK_EVERY, CRL_MAX_REFRESH
from swcmp.cmp import certs, keys
from swcmp.enroll import request_initial
from swcmp.errors import SwcmpError
from swcmp.policy import RETRY_CAP, RETRY_START, Plan
from swcmp.renewal import Renewer, damaged_journal
from swcmp.service import HostConfig, RenewalService, SessionReport
from swcmp.session import Session
from swcmp.state import StateStore
from swcmp.store import Journal, load_cert_files, load_trust
from swcmp.testca import TestCA
from swcmp.testca.authority import roll_over
from swcmp.testca.state import CONFIRMED, REVOKED
from testca_site import Site, add_session, ca_config, make_site

T = TypeVar("T")

#: The renewer's steps (its checkpoints) a kill -9 may hit.
KILL_PHASES = ("key-making", "key-ready", "sending", "received", "staged", "confirmed",
               "committing", "cert-written", "secrets-written", "done")
#: A revocation is in every session's CRL within this (the CRL's weekly fetch at most).
CRL_BOUND = CRL_MAX_REFRESH
#: A new root is trusted by every session within this (the weekly root CA update).
ROLLOVER_BOUND = CHECK_EVERY + timedelta(days=1)
#: The gateway's own file system when disk-full faults are on: room for its files.
GATEWAY_FS = "4m"
#: While the CA is down, serve's passes come this often (a day apart they would hide a
#: backoff that does not back off).
OUTAGE_STEP = timedelta(hours=1)
#: CA-life requests one session may send on a day of an outage after the first day its
#: questions failed: the three questions' backoff (1 h doubling to a day) begun the evening
#: before asks each at most 4 times (0, 1, 3 and 7 hours after, +15 h is the next day).
CA_LIFE_DAY_BOUND = 3 * 4


def renewal_day_bound(left: timedelta) -> int:
    """Renewal attempts a session may make on a day of an outage after the first day its
    renewals failed, its certificate having ``left`` of validity: the documented backoff
    (1 minute doubling to RETRY_CAP, at most an eighth of the validity left, at least
    RETRY_START) ends its ramp within RETRY_CAP (5 attempts at most on this day), then
    retries every RETRY_CAP."""
    gap = max(RETRY_START, min(RETRY_CAP, left / 8))
    return math.ceil(timedelta(days=1) / gap) + 1 + 5
#: The shipped alert rules the oracle evaluates on the metrics file each pass writes, as
#: they read in contrib/prometheus/swcmp-rules.yml (a rule that changes fails the soak until
#: this model follows it).
RULES_FILE = Path(__file__).resolve().parent.parent / "contrib/prometheus/swcmp-rules.yml"
ALERTS = {
    "SwcmpRenewalsFailing": "swcmp_consecutive_failures >= 3",
    "SwcmpSessionFileBroken": "swcmp_session_readable == 0",
    "SwcmpRenewalJournalDamaged": "swcmp_renewal_journal_damaged == 1",
    "SwcmpCertificateExpiringWithoutRenewal":
        "(swcmp_certificate_not_after_timestamp_seconds - time()) < 7 * 86400 "
        "and on (instance, job, session) (time() - swcmp_next_renewal_timestamp_seconds) "
        "> 3600 unless on (instance, job) swcmp_ha_standby == 1",
}


@dataclass
class SoakReport:
    sessions: int = 0
    simulated_days: float = 0.0
    passes: int = 0
    renewals: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    kill_phases: Counter[str] = field(default_factory=Counter)
    expiries_without_alert: int = 0
    broken_pairs: int = 0
    unchained_pairs: int = 0
    silent_failures: int = 0
    #: passes after which a session had no series in the metrics file
    missing_series: int = 0
    #: failed renewals of a session in a pass that met no fault, after a pass that met none
    clean_failures: int = 0
    #: on the days of an outage after its first: the most renewal attempts and CA-life
    #: requests of one session, and the session-days over their bounds
    worst_outage_day_attempts: int = 0
    worst_outage_day_ca_life: int = 0
    outage_days_over_backoff: int = 0
    notes: list[str] = field(default_factory=list)
    worst_gap_over_backoff: float = 0.0
    outage_days: int = 0
    worst_outage_requests_per_day_per_session: float = 0.0
    worst_requests_per_day: int = 0
    revocations: int = 0
    worst_crl_lag: timedelta = timedelta(0)
    crl_lags_over_bound: int = 0
    rollovers: int = 0
    worst_rollover_lag: timedelta = timedelta(0)
    rollover_lags_over_bound: int = 0
    disk_full: str = "on"
    reenrolled: int = 0
    wall_seconds: float = 0.0

    def lines(self) -> list[str]:
        return [
            f"sessions: {self.sessions}, simulated years: {self.simulated_days / 365:.2f} "
            f"({self.passes} passes)",
            f"renewals: {self.renewals}",
            f"faults injected: {sum(self.faults.values())} ({dict(sorted(self.faults.items()))})",
            f"kill -9 at: {dict(sorted(self.kill_phases.items()))}",
            f"disk-full faults: {self.disk_full}",
            f"expiries without an earlier alert: {self.expiries_without_alert}; expired "
            f"sessions enrolled again by the operator: {self.reenrolled}",
            f"broken pairs seen: {self.broken_pairs}",
            f"pairs not chaining to the session's anchors: {self.unchained_pairs}",
            f"damaged files not reported as the session's failure: {self.silent_failures}",
            f"sessions without a series in the metrics after a pass: {self.missing_series}",
            f"renewals failed with no fault in their pass or the one before: "
            f"{self.clean_failures}",
            f"longest wait beyond the backoff: {self.worst_gap_over_backoff:.0f} s",
            f"outage days: {self.outage_days}; worst requests per session per outage day: "
            f"{self.worst_outage_requests_per_day_per_session:.1f}",
            f"worst requests to the CA in one simulated day (all sessions): "
            f"{self.worst_requests_per_day}",
            f"on a day of an outage after its first, one session's most renewal attempts: "
            f"{self.worst_outage_day_attempts}, CA-life requests: "
            f"{self.worst_outage_day_ca_life} (bound {CA_LIFE_DAY_BOUND}); session-days "
            f"beyond the backoff: {self.outage_days_over_backoff}",
            f"revocations: {self.revocations}; worst time until every session's CRL names "
            f"one: {self.worst_crl_lag} (over {CRL_BOUND}: {self.crl_lags_over_bound})",
            f"root rollovers: {self.rollovers}; worst time until every session trusts the "
            f"new root: {self.worst_rollover_lag} (over {ROLLOVER_BOUND}: "
            f"{self.rollover_lags_over_bound})",
            f"wall time: {self.wall_seconds:.1f} s",
            *self.notes[:10],
        ]


# --------------------------------------------------------------------------- alerts


def check_rules_modelled(path: Path = RULES_FILE) -> None:
    """The shipped rules the oracle models read as ALERTS says (whitespace aside)."""
    shipped = {r["alert"]: " ".join(str(r["expr"]).split())
               for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]
               if "alert" in r}
    for name, expr in ALERTS.items():
        if shipped.get(name) != expr:
            raise AssertionError(f"{path}: {name} is now {shipped.get(name)!r}; the soak "
                                 f"models {expr!r}")


_SAMPLE = re.compile(r'^(\w+)(?:\{(.*)\})? (\S+)$')
_SESSION = re.compile(r'session="((?:[^"\\]|\\.)*)"')


def read_metrics(path: Path) -> dict[str, dict[str, float]]:
    """The textfile's samples: metric -> session -> value (the last series of a session
    for metrics with more labels); {} when there is no file yet."""
    out: dict[str, dict[str, float]] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None or line.startswith("#"):
            continue
        s = _SESSION.search(m.group(2) or "")
        if s is not None:
            out.setdefault(m.group(1), {})[s.group(1)] = float(m.group(3))
    return out


def alerts_firing(metrics: dict[str, dict[str, float]], name: str, now: datetime
                  ) -> list[str]:
    """Which of ALERTS fire for session ``name`` on these metrics at ``now`` (their
    ``for:`` of 15 minutes at most is shorter than any step of the soak)."""
    def value(metric: str) -> float | None:
        return metrics.get(metric, {}).get(name)

    ts = now.timestamp()
    firing = []
    failures, readable = value("swcmp_consecutive_failures"), value("swcmp_session_readable")
    not_after = value("swcmp_certificate_not_after_timestamp_seconds")
    next_renewal = value("swcmp_next_renewal_timestamp_seconds")
    if failures is not None and failures >= 3:
        firing.append("SwcmpRenewalsFailing")
    if readable == 0:
        firing.append("SwcmpSessionFileBroken")
    if value("swcmp_renewal_journal_damaged") == 1:
        firing.append("SwcmpRenewalJournalDamaged")
    if not_after is not None and next_renewal is not None and \
            not_after - ts < 7 * 86400 and ts - next_renewal > 3600:
        firing.append("SwcmpCertificateExpiringWithoutRenewal")
    return firing


# --------------------------------------------------------------------------- faults


def _fast_tmp() -> str | None:
    """A RAM file system for the soak's files when there is one: every write is fsynced,
    and a disk's fsyncs would be most of the soak's time."""
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


def _mount_small_fs(path: Path) -> bool:
    """A tmpfs of GATEWAY_FS on ``path`` (root only): a disk that can be filled."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={GATEWAY_FS},mode=0755",
                          "swcmp-soak", str(path)], capture_output=True, check=False)
    return res.returncode == 0


def _fill(fs: Path) -> Path:
    """Fill the file system of ``fs`` to the last page; the filler's path."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (1 << 16, 1 << 12):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    return filler


def _killed_pass(svc: RenewalService, phase: str, timeout: float = 120.0) -> bool:
    """Run one pass in a child process that kills itself (SIGKILL) when a renewal reaches
    ``phase``; whether it was killed."""
    pid = os.fork()
    if pid == 0:  # the child: nothing of the parent's cleanup runs here
        code = 0
        try:
            def checkpoint(p: str) -> None:
                if p == phase:
                    os.kill(os.getpid(), signal.SIGKILL)

            base = svc.renewer

            def renewer(s: Session) -> Renewer:
                r = base(s)
                r.checkpoint = checkpoint
                return r

            svc.renewer = renewer  # type: ignore[method-assign]
            svc.run_pass()
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"a pass in a child process hung for {timeout} s")
        time.sleep(0.005)


def _damage_calife(path: Path, rng: random.Random) -> None:
    data = path.read_bytes()
    far = "2999-01-01T00:00:00+00:00"
    how = rng.randrange(4)
    if how == 0:
        path.write_bytes(data[: rng.randrange(len(data) + 1)])
    elif how == 1:
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)
        path.write_bytes(bytes(b))
    else:
        try:
            st = json.loads(data)
        except ValueError:
            st = {}
        if not isinstance(st, dict):
            st = {}
        if how == 2:  # times far ahead: a clock put back, or an editor's slip
            st["next_try"] = dict.fromkeys(("caCerts", "rootCaCert", "currentCRL"), far)
            st["failures"] = dict.fromkeys(st["next_try"], 1)
            st["checked"] = dict.fromkeys(("caCerts", "rootCaCert"), far)
            if isinstance(st.get("crl"), dict):
                st["crl"]["refresh_at"] = far
        else:  # values of the wrong type
            for k in list(st)[:3]:
                st[k] = rng.choice([None, 7, "soon", [1], {"x": far}])
        path.write_text(json.dumps(st))


def _damage_toml(original: bytes, rng: random.Random) -> bytes:
    return rng.choice([
        original[: max(1, len(original) // 2)] + b'"',
        original + b"\n[[[\n",
        b"\xff\xfe" + original,
        original + b"\nexpire_time = \"soon\n",
        original.replace(b"=", b"", 1),
    ])


_JOURNAL_DAMAGE = [b"{", b"\xff\xfe", b'{"phase": 7}', b'{"phase": "sending", "tid": []}']


# --------------------------------------------------------------------------- the soak


@dataclass
class _Watch:
    """What the oracle follows of one session."""

    serial: int
    session: Session
    alert_since: datetime | None = None
    broken_toml: tuple[datetime, bytes] | None = None  # repaired at, the original
    broken_journal: datetime | None = None  # removed at
    expired_since: datetime | None = None  # the operator enrols it again a day later
    judged: int | None = None  # the serial whose expiry was judged


def run_soak(*, sessions: int = 4, days: int = 365, step: timedelta = timedelta(hours=12),
             validity: timedelta = timedelta(days=10), fault_rate: float = 0.15,
             outage_every: int = 90, outage_days: int = 3, rollover_every: int = 200,
             revoke_every: int = 15, seed: int = 1, disk_full: bool = True,
             root: Path | None = None) -> SoakReport:
    check_rules_modelled()
    rng = random.Random(seed)
    own_root = root is None
    root = root or Path(tempfile.mkdtemp(prefix="swcmp-soak-", dir=_fast_tmp()))
    start = datetime.now(UTC).replace(microsecond=0)
    sim = [start]
    clock = lambda: sim[0]  # noqa: E731
    report = SoakReport(sessions=sessions)
    t0 = time.monotonic()
    gw = root / "gw"
    gw.mkdir(parents=True, exist_ok=True)
    mounted = disk_full and _mount_small_fs(gw)
    if not disk_full:
        report.disk_full = "off"
    elif not mounted:
        report.disk_full = "skipped (mounting a small tmpfs needs root)"
    ca: TestCA | None = None
    proxy: HostileProxy | None = None
    try:
        ca = TestCA(root / "ca", config=ca_config(validity=validity), clock=clock).start()
        proxy = HostileProxy(ca.url)
        site = make_site(gw)
        names = [f"gw{i}" for i in range(sessions)]
        for n in names:
            add_session(site, ca, n, regenerate=rng.random() < 0.5)
            site.store.update(n, set_values={"server_url": proxy.url, "timeout": 2})
        _Soak(site, ca, proxy, names, rng, report, sim, step=step, days=days,
              fault_rate=fault_rate, outage_every=outage_every, outage_days=outage_days,
              rollover_every=rollover_every, revoke_every=revoke_every,
              disk_full=mounted).run(RenewalService(
                  site.paths, clock=clock,
                  # on the gateway's file system: a full disk leaves the last file
                  host=HostConfig(metrics_file=gw / "metrics" / "swcmp.prom")))
    finally:
        if proxy is not None:
            proxy.close()
        if ca is not None:
            ca.stop()
        if mounted:
            subprocess.run(["umount", "-l", str(gw)], check=False)
        if own_root:
            shutil.rmtree(root, ignore_errors=True)
        report.wall_seconds = time.monotonic() - t0
    return report


class _Soak:
    def __init__(self, site: Site, ca: TestCA, proxy: HostileProxy, names: list[str],
                 rng: random.Random, report: SoakReport, sim: list[datetime], *,
                 step: timedelta, days: int, fault_rate: float, outage_every: int,
                 outage_days: int, rollover_every: int, revoke_every: int,
                 disk_full: bool) -> None:
        self.site, self.ca, self.proxy, self.names = site, ca, proxy, names
        self.rng, self.report, self.sim = rng, report, sim
        self.step, self.days, self.rate = step, days, fault_rate
        self.outage_every, self.outage_days = outage_every, outage_days
        self.rollover_every, self.revoke_every = rollover_every, revoke_every
        self.disk_full = disk_full
        self.start = sim[0]
        self.states = StateStore(site.paths)
        self.watch = {n: _Watch(site.cert(n).serial_number, site.session(n)) for n in names}
        self.outage_until: datetime | None = None
        self.full_until: tuple[datetime, Path] | None = None
        self.day_requests: Counter[int] = Counter()
        self.outage_day_requests: Counter[int] = Counter()
        #: revoked serial -> when; dropped once every session's CRL names it
        self.revoked: dict[int, datetime] = {}
        #: the new root after a rollover and when it was made, until every session trusts it
        self.new_root: tuple[x509.Certificate, datetime] | None = None
        self.rolled_on: set[int] = set()
        self.metrics_file = Path()
        self.day = 0
        #: (session, day) -> requests the session's renewals and CA-life steps sent
        self.attempts: Counter[tuple[str, int]] = Counter()
        self.ca_life_requests: Counter[tuple[str, int]] = Counter()
        #: (session, day) -> the least validity its certificate had left that day
        self.left: dict[tuple[str, int], timedelta] = {}
        #: (session, day) whose backoff a fault started afresh (a damaged state.json)
        self.backoff_reset: set[tuple[str, int]] = set()
        #: the day each session's renewals began failing (while they fail)
        self.failing_since: dict[str, int] = {}
        self.ramp_days: set[tuple[str, int]] = set()
        #: days wholly within an outage, after its first; (session, day) near expiry then
        self.full_outage_days: set[int] = set()
        #: the last pass that met a fault: of every session, and of each session's files
        self.pass_no = 0
        self.messages: dict[str, str] = {}
        #: sessions that have not tried a renewal since the CA's root rolled over: their
        #: first is refused (it does not chain) and asks for the new root at once
        self.before_new_root: set[str] = set()
        self.noisy_pass = -10
        self.noisy_session: dict[str, int] = {}

    @property
    def now(self) -> datetime:
        return self.sim[0]

    def run(self, svc: RenewalService) -> None:
        assert svc.host.metrics_file is not None
        self.metrics_file = svc.host.metrics_file
        self.count_requests(svc)
        end = self.start + timedelta(days=self.days)
        while True:
            # serve's passes come every RESCAN seconds; the soak's come a step apart, and
            # an hour apart while the CA is down (where backoffs are at work)
            step = OUTAGE_STEP if self.outage_until is not None else self.step
            if self.now + step > end:
                break
            self.sim[0] += step
            day = int((self.now - self.start) / timedelta(days=1))
            fresh, self.day = day != self.day, day
            self.pass_no += 1
            if self.proxy.armed() or self.outage_until is not None or \
                    self.full_until is not None:
                self.noisy_pass = self.pass_no  # a fault left from the pass before
            self.wire_faults(day)
            self.ca_events(day)
            self.free_space()
            if self.full_until is None and fresh:  # the operator cannot write either
                # half-way, a kind of damage not met yet is made for sure: each kind is
                # met in every run, whatever the random draws
                self.file_faults(force=day == self.days // 2)
                self.fill_space()
            before = len(self.proxy.seen)
            reports = self.one_pass(svc, fresh=fresh)
            self.report.passes += 1
            sent = len(self.proxy.seen) - before
            self.day_requests[day] += sent
            if self.outage_until is not None:
                self.outage_day_requests[day] += sent
            self.check(reports)
        r = self.report
        r.simulated_days = (self.now - self.start) / timedelta(days=1)
        r.worst_requests_per_day = max(self.day_requests.values(), default=0)
        r.worst_outage_requests_per_day_per_session = max(
            (v / len(self.names) for v in self.outage_day_requests.values()), default=0.0)
        for (n, d), left in self.left.items():
            if d not in self.full_outage_days or (n, d) in self.backoff_reset:
                continue
            tries, asked = self.attempts[(n, d)], self.ca_life_requests[(n, d)]
            if (n, d) in self.ramp_days:
                tries = 0  # its first failing day: the ramp from 1 minute
            if not self.ca_life_requests[(n, d - 1)]:
                asked = 0  # the questions' first failing day
            r.worst_outage_day_attempts = max(r.worst_outage_day_attempts, tries)
            r.worst_outage_day_ca_life = max(r.worst_outage_day_ca_life, asked)
            if tries > renewal_day_bound(left) or asked > CA_LIFE_DAY_BOUND:
                r.outage_days_over_backoff += 1
                r.notes.append(f"beyond the backoff: {n} on day {d}: {tries} renewal "
                               f"attempts ({left} left), {asked} CA-life requests")

    def count_requests(self, svc: RenewalService) -> None:
        """Count each session's renewal attempts, and the requests its CA-life steps send
        (one CA: the pass handles its sessions one after another)."""
        base_renew, base_life = svc.renew_one, svc.ca_life

        def renew_one(s: Session, p: Plan | None = None) -> SessionReport:
            self.attempts[(s.name, self.day)] += 1
            report = base_renew(s, p)
            if report.result != "failed":
                self.failing_since.pop(s.name, None)
            elif self.failing_since.setdefault(s.name, self.day) == self.day:
                self.ramp_days.add((s.name, self.day))  # the backoff starts from 1 minute
            return report

        def counted(name: str, work: Callable[[], T]) -> T:
            before = len(self.proxy.seen)
            try:
                return work()
            finally:
                self.ca_life_requests[(name, self.day)] += len(self.proxy.seen) - before

        def ca_life() -> CaLife:
            life = base_life()
            maintain = life.maintain_then_next_due
            life.maintain_then_next_due = (  # type: ignore[method-assign]
                lambda s: counted(s.name, lambda: maintain(s)))
            return life

        svc.renew_one = renew_one  # type: ignore[method-assign]
        svc.ca_life = ca_life  # type: ignore[method-assign]

    # ------------------------------------------------------------------ one pass

    def one_pass(self, svc: RenewalService, *, fresh: bool) -> dict[str, str] | None:
        """serve's pass, or now and then a child process killed in a renewal (then None:
        its report died with it). serve outlives a pass that raises; the soak counts it."""
        if fresh and self.rng.random() < self.rate:
            self.noisy_pass = self.pass_no
            phase = self.rng.choice(KILL_PHASES)
            if _killed_pass(svc, phase):
                self.report.faults["kill -9 in a renewal"] += 1
                self.report.kill_phases[phase] += 1
                self.check_pairs()  # what the kill left
            return None
        try:
            done = svc.run_pass()
            self.messages = {r.session: r.message for r in done}
            return {r.session: r.result for r in done}
        except Exception:
            self.report.silent_failures += 1
            return None

    # ------------------------------------------------------------------ faults

    def wire_faults(self, day: int) -> None:
        if self.outage_until is None and day and day % self.outage_every == 0 and \
                self.outage_day_requests.get(day) is None:
            self.outage_until = self.now + timedelta(days=self.outage_days)
            self.full_outage_days.update(range(day + 1, day + self.outage_days))
            self.noisy_pass = self.pass_no
            self.proxy.on("*", http_status(500, "Internal Server Error"), times=None)
            self.report.faults["outage (HTTP 500, days)"] += self.outage_days
            self.report.outage_days += self.outage_days
        elif self.outage_until is not None and self.now >= self.outage_until:
            self.outage_until = None
            self.proxy.clear()
        if self.outage_until is None and self.rng.random() < self.rate:
            kind, action = self.rng.choice([
                ("HTTP 500", http_status(500, "Internal Server Error")),
                ("HTTP 503 Retry-After", http_status(503, "Service Unavailable",
                                                     headers={"Retry-After": "3600"})),
                ("garbage answer", mutate(lambda b: b[: len(b) // 2])),
                ("dropped answer", mutate(lambda b: b"")),
            ])
            self.proxy.on(self.rng.choice(["kur", "*"]), action, times=1)
            self.noisy_pass = self.pass_no
            self.report.faults[kind] += 1

    def ca_events(self, day: int) -> None:
        if day and day % self.rollover_every == 0 and self.new_root is None and \
                day not in self.rolled_on:
            self.rolled_on.add(day)
            self.noisy_pass = self.pass_no
            self.before_new_root = set(self.names)  # their next renewal is refused
            roll_over(self.ca.directory, now=self.now)
            new_root = certs.load_certificate((self.ca.directory / "ca.crt").read_bytes())
            self.new_root = (new_root, self.now)
            self.report.rollovers += 1
            self.report.faults["CA root rollover"] += 1
        if day and day % self.revoke_every == 0 and not self.revoked_today(day):
            current = {w.serial for w in self.watch.values()}
            store = self.ca.engine.store
            with store.changing():
                old = [r for r in store.issued.values()
                       if r.status == CONFIRMED and r.serial not in current]
                if not old:
                    return
                rec = self.rng.choice(old)
                rec.status, rec.revoked_at, rec.reason_code = REVOKED, self.now, 4
                rec.reason = "soak"
            self.revoked[rec.serial] = self.now
            self.report.revocations += 1
            self.report.faults["CA revocation (new CRL)"] += 1

    def revoked_today(self, day: int) -> bool:
        return any(int((t - self.start) / timedelta(days=1)) == day
                   for t in self.revoked.values())

    def _draw(self, kind: str, rarity: int, force: bool) -> bool:
        """Whether to make a fault of ``kind`` now: at random (rate / rarity), or for
        sure when ``force`` and none was made yet."""
        return (force and not self.report.faults[kind]) or \
            self.rng.random() < self.rate / rarity

    def file_faults(self, *, force: bool = False) -> None:
        rng, paths = self.rng, self.site.paths
        for n, w in self.watch.items():  # the operator repairs what the alerts name
            if w.expired_since is not None and self.now - w.expired_since >= timedelta(days=1):
                try:
                    self.noisy_session[n] = self.pass_no
                    if request_initial(self.site.store.load(n), paths, store=self.site.store,
                                       clock=lambda: self.now).ok:
                        w.expired_since = None
                        self.report.reenrolled += 1
                except SwcmpError:
                    pass  # the CA is down too: again tomorrow
            if w.broken_toml is not None and self.now >= w.broken_toml[0]:
                self.site.store.path_for(n).write_bytes(w.broken_toml[1])
                w.broken_toml = None
                self.noisy_session[n] = self.pass_no
            if w.broken_journal is not None and self.now >= w.broken_journal:
                Journal(paths, n).path.unlink(missing_ok=True)
                w.broken_journal = None
                self.noisy_session[n] = self.pass_no
        if self._draw("damaged state.json", 3, force):
            n = rng.choice(self.names)
            path = self.states.path(n)
            if path.exists():
                self.noisy_session[n] = self.pass_no
                self.backoff_reset.add((n, self.day))
                damage = rng.choice([b"{", b"\xff\xfe", json.dumps(
                    {**json.loads(path.read_text() or "{}"), "next_attempt": "soon"}
                ).encode()]) if path.read_bytes()[:1] == b"{" else b"{"
                path.write_bytes(damage)
                self.report.faults["damaged state.json"] += 1
        if self._draw("damaged calife.json", 3, force):
            n = rng.choice(self.names)
            path = CaLifeStore(paths, n).path
            if path.exists():
                self.noisy_session[n] = self.pass_no
                _damage_calife(path, rng)
                self.report.faults["damaged calife.json"] += 1
        if self._draw("damaged session TOML", 5, force):
            n = rng.choice(self.names)
            w = self.watch[n]
            toml = self.site.store.path_for(n)
            if w.broken_toml is None:
                original = toml.read_bytes()
                toml.write_bytes(_damage_toml(original, rng))
                try:
                    self.site.store.load(n)
                    toml.write_bytes(original)  # still a valid file: not this fault
                except SwcmpError:
                    self.noisy_session[n] = self.pass_no
                    w.broken_toml = (self.now + timedelta(days=rng.randint(1, 3)), original)
                    self.report.faults["damaged session TOML"] += 1
        if self._draw("damaged renewal journal", 6, force):
            n = rng.choice(self.names)
            w = self.watch[n]
            if w.broken_journal is None:
                path = Journal(paths, n).path
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(rng.choice(_JOURNAL_DAMAGE))
                if damaged_journal(paths, n) is not None:
                    self.noisy_session[n] = self.pass_no
                    w.broken_journal = self.now + timedelta(days=rng.randint(1, 2))
                    self.report.faults["damaged renewal journal"] += 1
                else:
                    path.unlink()

    def free_space(self) -> None:
        if self.full_until is not None and self.now >= self.full_until[0]:
            self.full_until[1].unlink()
            self.full_until = None
            self.noisy_pass = self.pass_no

    def fill_space(self) -> None:
        # once per run, the disk fills in an outage: failures that cannot be written must
        # still back off (serve holds them in memory)
        in_outage = self.day in self.full_outage_days and \
            not self.report.faults["disk full in an outage"]
        if self.disk_full and (in_outage or self.rng.random() < self.rate / 4):
            filler = _fill(self.site.root)
            self.full_until = (self.now + self.step * self.rng.randint(1, 2), filler)
            self.noisy_pass = self.pass_no
            self.report.faults["disk full in an outage" if in_outage
                                else "disk full (passes)"] += 1

    # ------------------------------------------------------------------ the oracle

    def check_pairs(self) -> None:
        """Every certificate's key is in ``private/``: the key file, or (killed between
        the certificate and the key's rename, see store.write_pair) its ``.next``, which
        swanctl loads too."""
        for n in self.names:
            cert = self.site.cert(n)
            path = self.site.paths.key_file(n)
            found = [keys.spki_der(keys.load_private_key(p.read_bytes()))
                     for p in (path, path.with_name(path.name + ".next")) if p.exists()]
            if certs.spki_of(cert) not in found:
                self.report.broken_pairs += 1

    def check(self, reports: dict[str, str] | None) -> None:
        now, r = self.now, self.report
        self.check_pairs()
        metrics = read_metrics(self.metrics_file)
        for n, w in self.watch.items():
            cert = self.site.cert(n)
            if cert.serial_number != w.serial:
                r.renewals += 1
                w.serial = cert.serial_number
            if w.broken_toml is None:
                w.session = self.site.session(n)
            journal_bad = damaged_journal(self.site.paths, n) is not None
            if reports is not None and (w.broken_toml or journal_bad) and \
                    reports.get(n) != "failed":
                r.silent_failures += 1  # a damaged file must be the session's failure
            st = self.states.load(n)
            # the shipped rules (ALERTS) on the metrics file the pass wrote (or the last
            # one, when the disk was full): a session none of whose series are there is
            # one no alert can fire for
            if metrics and not any(n in series for series in metrics.values()):
                r.missing_series += 1
            alerting = bool(alerts_firing(metrics, n, now))
            quiet = max(self.noisy_pass, self.noisy_session.get(n, -10))
            first_after_rollover = n in self.before_new_root and \
                reports is not None and reports.get(n) in ("failed", "renewed")
            if first_after_rollover:
                self.before_new_root.discard(n)
            if reports is not None and reports.get(n) == "failed" and \
                    self.pass_no - quiet > 1 and now < cert.not_valid_after_utc and \
                    not first_after_rollover and w.broken_toml is None and not journal_bad:
                # nothing went wrong in this pass or the one before: a renewal stuck
                r.clean_failures += 1
                r.notes.append(f"failed with no fault: {n} on day {self.day}: "
                               f"{self.messages.get(n, '')[:300]}")
            left = cert.not_valid_after_utc - now
            self.left[(n, self.day)] = min(left, self.left.get((n, self.day), left))
            if alerting:
                w.alert_since = w.alert_since or now
            if now >= cert.not_valid_after_utc:
                w.expired_since = w.expired_since or now
                fired = w.alert_since
                if w.judged != cert.serial_number and (
                        fired is None or cert.not_valid_after_utc - fired < timedelta(days=1)):
                    r.expiries_without_alert += 1
                w.judged = cert.serial_number  # each certificate's expiry is judged once
            elif not alerting and st.failures == 0:
                w.alert_since = None  # resolved (an expired certificate's alert stays)
            if now < cert.not_valid_after_utc:
                try:
                    certs.build_chain(cert, anchors=load_trust(w.session), now=now,
                                      untrusted=load_cert_files(
                                          self.site.paths.ca_cert_files(n), "CA certificate"))
                except SwcmpError:
                    r.unchained_pairs += 1
            if st.next_attempt and st.last_result is not None:
                gap = (datetime.fromisoformat(st.next_attempt)
                       - datetime.fromisoformat(st.last_result.time)).total_seconds()
                r.worst_gap_over_backoff = max(r.worst_gap_over_backoff,
                                               gap - RETRY_CAP.total_seconds())
        self.check_crls()
        self.check_rollover()

    def check_crls(self) -> None:
        # a session whose alert fires has the operator's attention: the bound is the
        # healthy sessions'
        healthy = [n for n, w in self.watch.items() if w.alert_since is None]
        for serial, when in list(self.revoked.items()):
            if all(self._crl_names(n, serial) for n in healthy):
                del self.revoked[serial]
                self._lag(self.now - when, CRL_BOUND, "crl")
            elif self.now - when > CRL_BOUND * 3:
                del self.revoked[serial]  # counted over the bound; no longer followed
                self._lag(self.now - when, CRL_BOUND, "crl")

    def _crl_names(self, name: str, serial: int) -> bool:
        try:
            crl = x509.load_der_x509_crl(crl_file(self.site.paths, name).read_bytes())
        except (OSError, ValueError):
            return False
        return crl.get_revoked_certificate_by_serial_number(serial) is not None

    def check_rollover(self) -> None:
        if self.new_root is None:
            return
        root, when = self.new_root
        if all(root in load_trust(w.session) for w in self.watch.values()
               if w.alert_since is None) or \
                self.now - when > ROLLOVER_BOUND * 3:
            self.new_root = None
            self._lag(self.now - when, ROLLOVER_BOUND, "rollover")

    def _lag(self, lag: timedelta, bound: timedelta, what: str) -> None:
        r = self.report
        if what == "crl":
            r.worst_crl_lag = max(r.worst_crl_lag, lag)
            r.crl_lags_over_bound += lag > bound
        else:
            r.worst_rollover_lag = max(r.worst_rollover_lag, lag)
            r.rollover_lags_over_bound += lag > bound

