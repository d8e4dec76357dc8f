"""`swcmp serve` as a real process against the embedded test CA, with certificates of seconds.

The test CA runs in this process; `swcmp serve` runs as a subprocess on the same
directories (`--vici none`: files only). Certificates live 100 s (plus the CA's
one minute of backdating), so `expire_time 50` makes them due about 20 s after
issue; sessions that must be due at once are enrolled with 60 s certificates
(then already at 50 %), and the CA then issues hour-long ones, so that the
renewed certificate is not due again during the test.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from swcmp.cmp import certs
from swcmp.policy import JITTER_SHARE, MIN_AGE_SHARE, renew_at
from swcmp.store import Journal
from swcmp.testca.authority import BACKDATE
from testca_site import (
    DUE_NOW,
    CAHolder,
    Serve,
    Site,
    _now,
    add_session,
    ca_config,
    enroll_aside,
    issued,
    make_site,
    swcmp_json,
)

pytestmark = pytest.mark.integration

#: Lifetime of the certificates renewed on schedule.
SHORT = timedelta(seconds=100)
#: How late after its due time a renewal may come (serve wakes at the due time, +1 s at most).
LATE = timedelta(seconds=4)


@pytest.fixture
def ca(tmp_path: Path) -> Iterator[CAHolder]:
    holder = CAHolder(tmp_path / "ca", ca_config(validity=SHORT))
    try:
        yield holder
    finally:
        holder.stop()


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(tmp_path / "gw")


@pytest.fixture
def serving(site: Site, tmp_path: Path) -> Iterator[list[Serve]]:
    """Started serve processes, killed at the end whatever happened."""
    started: list[Serve] = []
    yield started
    for s in started:
        s.kill()


def serial_of(site: Site, name: str) -> int:
    return certs.load_certificate(site.paths.cert_file(name).read_bytes()).serial_number


def assert_clean_exit(code: int, serve: Serve) -> str:
    log = serve.log()
    assert code == 0, log
    assert "Traceback" not in log and "ERROR" not in log, log
    assert "stopping (signal 15)" in log
    return log


# ---------------------------------------------------------------------- on time


def test_serve_renews_on_time_with_and_without_regenerate(site: Site, ca: CAHolder,
                                                          serving: list[Serve],
                                                          tmp_path: Path) -> None:
    names = {"same": False, "fresh": True}  # session -> regenerate
    before: dict[str, tuple[int, bytes, datetime]] = {}
    for name, regen in names.items():
        s = add_session(site, ca.ca, name, regenerate=regen, expire_time=50)
        cert = site.cert(name)
        due = renew_at(cert, s.expire_time, name)
        # expire_time 50 is *remaining* validity: half of it, earlier by the jitter only
        nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
        nominal = na - (na - nb) / 2
        assert nominal - (na - nb) * JITTER_SHARE <= due <= nominal
        assert due > _now() + timedelta(seconds=5)  # not due yet when serve starts
        before[name] = (cert.serial_number, site.key_pem(name), due)

    serve = Serve(site, tmp_path / "serve.log")
    serving.append(serve)
    # nothing is due at start: nothing renewed
    time.sleep(1)
    assert all(serial_of(site, n) == before[n][0] for n in names)

    seen: dict[str, datetime] = {}
    for name in sorted(names, key=lambda n: before[n][2]):
        # done = the new certificate is live and the commit has finished (journal gone)
        t = serve.wait_for(lambda n=name: serial_of(site, n) != before[n][0]
                           and Journal(site.paths, n).load() is None, 60,
                           f"renewal of {name}")
        seen[name] = datetime.fromtimestamp(t, tz=before[name][2].tzinfo)

    for name, regen in names.items():
        _old_serial, old_key, due = before[name]
        cert = site.cert(name)
        # on time: not before it was due (serve saw it after the due time; the CA issued
        # it at notBefore + BACKDATE, to the second) and not long after
        issued_at = cert.not_valid_before_utc + BACKDATE
        assert issued_at >= due - timedelta(seconds=1), (name, issued_at, due)
        assert seen[name] >= due
        assert seen[name] <= due + LATE, (name, seen[name], due)
        assert site.pair_ok(name)
        assert (site.key_pem(name) != old_key) is regen
        assert Journal(site.paths, name).load() is None

    # status and stats, asked while serve still runs
    status = {e["session"]: e for e in swcmp_json(site, "status")["sessions"]}
    stats = {e["session"]: e["stats"] for e in swcmp_json(site, "stats")["sessions"]}
    for name in names:
        cert = site.cert(name)
        st = status[name]
        assert st["state"] == "idle" and st["failures"] == 0 and st["auto_update"]
        assert st["certificate"]["serial"] == f"{cert.serial_number:x}"
        assert st["last_result"]["ok"] is True and st["last_result"]["action"] == "kur"
        assert st["last_result"]["serial"] == f"{cert.serial_number:x}"
        assert datetime.fromisoformat(st["last_result"]["time"]) >= \
            before[name][2] - timedelta(seconds=1)
        assert datetime.fromisoformat(st["next_renewal"]) == \
            renew_at(cert, site.session(name).expire_time, name)
        assert stats[name]["kur"] == {"sent": 1, "received": 1, "failed": 0}
        assert stats[name]["ir"] == {"sent": 1, "received": 1, "failed": 0}
        assert stats[name]["certConf"]["sent"] == 2  # the IR's and the KUR's
    # two IRs, two KURs, all confirmed: nothing renewed twice
    assert sorted(r["status"] for r in issued(ca.directory).values()) == ["confirmed"] * 4

    log = assert_clean_exit(serve.stop(), serve)
    assert log.count("renewed:") == 2


# ---------------------------------------------------------------------- reloading, stopping


def test_a_backdated_certificate_with_expire_time_95_is_not_renewed_in_a_loop(
        site: Site, ca: CAHolder, serving: list[Serve], tmp_path: Path) -> None:
    # 10-minute certificates back-dated 60 s: under 95 % each one is due 27 s before it
    # arrives; with the floor counted from notBefore, serve renewed every 6 s
    ca.restart(ca_config(validity=timedelta(minutes=10)))
    add_session(site, ca.ca, "gw1", expire_time=95)
    first = serial_of(site, "gw1")
    serve = Serve(site, tmp_path / "serve.log")
    serving.append(serve)
    time.sleep(15)
    assert serial_of(site, "gw1") == first, serve.log()
    assert site.stats("gw1")["kur"]["sent"] == 0
    entry = swcmp_json(site, "status", "gw1")["sessions"][0]
    cert = certs.load_certificate(site.paths.cert_file("gw1").read_bytes())
    # not before a tenth of the validity left at arrival (540 s -> 54 s) has passed
    assert datetime.fromisoformat(entry["next_renewal"]) >= \
        cert.not_valid_before_utc + BACKDATE + timedelta(seconds=50), entry
    assert_clean_exit(serve.stop(), serve)


def test_serve_picks_up_new_sessions_on_sighup_and_on_its_own(site: Site, ca: CAHolder,
                                                               serving: list[Serve],
                                                               tmp_path: Path) -> None:
    serve = Serve(site, tmp_path / "serve.log")  # no sessions yet: it sleeps 30 s
    serving.append(serve)
    time.sleep(0.5)

    enroll_aside(site, ca, "hup", validity=DUE_NOW)
    first = serial_of(site, "hup")
    # the renewal floor: a tenth of the validity left when the certificate arrived
    arrived = site.paths.cert_file("hup").stat().st_mtime
    not_after = certs.load_certificate(site.paths.cert_file("hup").read_bytes()
                                       ).not_valid_after_utc.timestamp()
    floor = arrived + (not_after - arrived) * MIN_AGE_SHARE
    time.sleep(1.5)
    assert serial_of(site, "hup") == first  # asleep: it has not looked yet
    hup_at = time.time()
    serve.proc.send_signal(signal.SIGHUP)
    done = serve.wait_for(lambda: serial_of(site, "hup") != first
                          and Journal(site.paths, "hup").load() is None, 15,
                          "renewal after SIGHUP")
    assert done - max(hup_at, floor) < 5
    assert "SIGHUP: re-reading the sessions" in serve.log()
    assert site.pair_ok("hup")

    # a session file that appears without a signal is found by the periodic look (30 s)
    enroll_aside(site, ca, "quiet", validity=DUE_NOW)
    second = serial_of(site, "quiet")
    serve.wait_for(lambda: serial_of(site, "quiet") != second
                   and Journal(site.paths, "quiet").load() is None, 40,
                   "renewal without SIGHUP")
    assert "configuration changed" in serve.log()
    assert site.pair_ok("quiet")
    # the renewed certificates are hour-long: nothing else is due, nothing renewed twice
    assert site.stats("hup")["kur"]["sent"] == 1 and site.stats("quiet")["kur"]["sent"] == 1
    assert_clean_exit(serve.stop(), serve)


def test_sigterm_in_the_middle_of_a_renewal_finishes_it_then_exits(
        site: Site, ca: CAHolder, serving: list[Serve], tmp_path: Path) -> None:
    enroll_aside(site, ca, "gw1", validity=DUE_NOW, regenerate=True)
    old_serial, old_key = serial_of(site, "gw1"), site.key_pem("gw1")
    ca.restart(ca_config(validity=timedelta(hours=1), delay=1.5))  # a slow CA
    serve = Serve(site, tmp_path / "serve.log")
    serving.append(serve)
    j = Journal(site.paths, "gw1")
    serve.wait_for(lambda: getattr(j.load(), "phase", None) == "sending", 20, "a KUR in flight")
    started = time.monotonic()
    code = serve.stop(signal.SIGTERM)
    assert time.monotonic() - started < 10
    assert_clean_exit(code, serve)
    # it did not drop the transaction: the renewal was finished and committed
    assert serial_of(site, "gw1") != old_serial and site.key_pem("gw1") != old_key
    assert site.pair_ok("gw1") and j.load() is None
    assert site.stats("gw1")["kur"] == {"sent": 1, "received": 1, "failed": 0}
    st = swcmp_json(site, "status", "gw1")["sessions"][0]
    assert st["state"] == "idle" and st["last_result"]["ok"] is True


def test_a_pass_killed_in_the_middle_of_a_renewal_is_that_pass_failure(
        site: Site, ca: CAHolder, serving: list[Serve], tmp_path: Path) -> None:
    """Each pass runs in a process of its own: serve itself never loads what a CA exchange
    needs (TLS, whose _ssl extension http.client loads), and a pass killed in the middle
    of a KUR (SIGKILL, as the out-of-memory killer sends) fails that pass only: serve
    says so, records the session's failed attempt (backoff: its next try is a minute
    away) and goes on; the next attempt finishes the renewal from the journal."""
    enroll_aside(site, ca, "gw1", validity=DUE_NOW, regenerate=True)
    old_serial = serial_of(site, "gw1")
    ca.restart(ca_config(validity=timedelta(hours=1), delay=1.5))  # a slow CA
    serve = Serve(site, tmp_path / "serve.log")
    serving.append(serve)
    j = Journal(site.paths, "gw1")
    serve.wait_for(lambda: getattr(j.load(), "phase", None) == "sending", 20, "a KUR in flight")
    children = Path(f"/proc/{serve.proc.pid}/task/{serve.proc.pid}/children").read_text()
    (child,) = [int(c) for c in children.split()]
    os.kill(child, signal.SIGKILL)
    serve.wait_for(lambda: f"its process {child} was killed by signal 9" in serve.log(), 10,
                   "the killed pass reported")
    assert serve.proc.poll() is None  # serve itself goes on
    assert serial_of(site, "gw1") == old_serial and j.load() is not None
    st = swcmp_json(site, "status", "gw1")["sessions"][0]
    assert st["failures"] == 1 and st["last_result"]["ok"] is False, st
    assert "killed by signal 9" in st["last_result"]["message"]
    # the next attempt (here by hand, not a minute later) finishes it from the journal
    swcmp_json(site, "renew", "--force", "gw1")
    assert serial_of(site, "gw1") != old_serial and j.load() is None
    assert site.pair_ok("gw1")
    assert "/_ssl." not in Path(f"/proc/{serve.proc.pid}/maps").read_text()
    assert serve.stop() == 0
    log = serve.log()
    assert "Traceback" not in log and "stopping (signal 15)" in log
    st = swcmp_json(site, "status", "gw1")["sessions"][0]
    assert st["state"] == "idle" and st["last_result"]["ok"] is True
