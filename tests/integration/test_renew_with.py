"""`--renew-with cr|p10cr` and the polling limit across runs (`--poll-limit`), through the
CLI against OpenSSL's CMP mock servers (3.5's from Debian 13, and the machine's 3.0),
and against swcmp's test CA for renewals with a new key.

OpenSSL's mock answers every request with its fixed `-rsp_cert`, so the renewals here
re-certify the session's key: the certificate issued for it is what the mock returns.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from hostile_proxy import HostileProxy, error_body, forge
from openssl_gateway import GW, MAC_ARGS, SIG_ARGS, Gateway
from openssl_mock import OPENSSL, OpenSSL, mock_server
from renewal_env import renew_killed_at
from swcmp.cmp import certs, keys
from swcmp.errors import (
    CMPErrorResponse,
    PollingTimeoutError,
    SwcmpError,
    TransactionAbandoned,
)
from swcmp.paths import Paths
from swcmp.renewal import Renewer, max_resumes
from swcmp.sessionfile import SessionStore
from swcmp.state import StateStore
from swcmp.store import Journal
from testca_site import CAHolder, Site, add_session, ca_config, make_site

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed"),
]

KINDS = ("cr", "p10cr")


def _enrolled(gw: Gateway, kind: str) -> x509.Certificate:
    """Session gw1 enrolled (IR with MAC) and set to renew with ``kind``; returns the
    certificate the renewal is to get (same key, later notAfter, another serial)."""
    first = gw.pki.issue(gw.key, GW)
    with gw.ca(MAC_ARGS, first) as url:
        gw.create_session(url)
        assert gw.run("request", "initial", "gw1", "--no-deploy").exit_code == 0
    set_ = gw.run("session", "set", "gw1", "--renew-with", kind)
    assert set_.exit_code == 0, set_.output
    assert gw.json("session", "show", "gw1")["renew_with"] == kind
    return gw.pki.issue(gw.key, GW, days=400)


def _stats(gw: Gateway) -> dict[str, dict[str, int]]:
    stats: dict[str, dict[str, int]] = gw.json("stats", "gw1")["sessions"][0]["stats"]
    return stats


def _journal(gw: Gateway) -> Journal:
    return Journal(Paths(gw.config_dir, gw.state_dir, gw.swanctl_dir), "gw1")


def _swcmp(gw: Gateway, *args: str) -> list[str]:
    return [sys.executable, "-m", "swcmp", *gw.options(), *args]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("openssl_peer", ["3.5", "3.0"], indirect=True)
def test_renew_with_cr_or_p10cr_and_delayed_delivery(tmp_path: Path, openssl_peer: OpenSSL,
                                                       kind: str) -> None:
    """`swcmp renew` sends a cr (or p10cr) signed with the current certificate instead of a
    kur, waits out the delayed cp (both mocks) and the delayed pkiConf (3.5's), and commits
    the certificate like a key update."""
    gw = Gateway(tmp_path, openssl_peer)
    renewed = _enrolled(gw, kind)
    before = _stats(gw)
    with gw.ca([*SIG_ARGS, "-poll_count", "1", "-check_after", "1"], renewed):
        out = gw.json("renew", "--force", "--no-deploy", "gw1")
    (result,) = out["results"]
    assert result["result"] == "renewed", result
    assert result["renewal"]["action"] == kind
    assert x509.load_pem_x509_certificate(gw.cert_file.read_bytes()) == renewed
    after = _stats(gw)
    assert _sent(after, kind) == 1 and after[kind]["failed"] == 0
    assert _sent(after, "kur") == 0
    assert _sent(after, "certConf") - _sent(before, "certConf") == 1
    # the cp after one pollReq; 3.5's mock delays the pkiConf (and the genp of the
    # caCerts question after the renewal) by one pollReq more each
    polls = _sent(after, "pollReq") - _sent(before, "pollReq")
    assert polls >= 2 if openssl_peer.newer else polls == 1
    assert _journal(gw).load() is None


def _sent(stats: dict[str, dict[str, int]], what: str) -> int:
    return stats.get(what, {}).get("sent", 0)


def _kill_when(gw: Gateway, proc: subprocess.Popen[bytes], phase: str) -> dict[str, Any]:
    """SIGKILL ``proc`` as soon as its journal shows ``phase`` ("waiting", or
    "confirm-waiting": a certificate received and its certConf answered waiting)."""
    path = _journal(gw).path
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            entry = {}
        seen = ("confirm-waiting" if entry.get("phase") == "received"
                and entry.get("confirm_nonce") else entry.get("phase"))
        if seen == phase:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            return dict(entry)
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"the journal never showed {phase}: {proc.wait(10)}")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("version", "phase"), [
    ("3.5", "waiting"), ("3.5", "confirm-waiting"), ("3.0", "waiting")])
def test_kill_9_while_the_ca_delays_a_cr_or_p10cr_resumes_the_same_transaction(
        tmp_path: Path, version: str, phase: str, kind: str) -> None:
    """`swcmp renew` killed -9 while the mock delays the cp (or, 3.5's, the pkiConf): the
    next `swcmp renew` polls the same transaction and confirms the same certificate; no
    second request, no second certConf."""
    gw = Gateway(tmp_path, OpenSSL.of(version))
    renewed = _enrolled(gw, kind)
    # checkAfter 3 s: time to see the journal and kill before the next pollReq
    with gw.ca([*SIG_ARGS, "-poll_count", "1", "-check_after", "3"], renewed):
        proc = subprocess.Popen(_swcmp(gw, "renew", "--force", "--no-deploy", "gw1"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        killed = _kill_when(gw, proc, phase)
        assert proc.returncode == -signal.SIGKILL
        assert killed["kind"] == kind
        status = gw.json("status", "gw1")["sessions"][0]
        assert status["state"] == ("polling" if phase == "waiting" else "in_progress")
        assert "abandoned if the CA still keeps it waiting at" in status["reason"], status
        assert x509.load_pem_x509_certificate(gw.cert_file.read_bytes()) != renewed
        before = _stats(gw)
        out = gw.json("renew", "--force", "--no-deploy", "gw1")
    (result,) = out["results"]
    assert result["result"] == "renewed", result
    assert x509.load_pem_x509_certificate(gw.cert_file.read_bytes()) == renewed
    after = _stats(gw)
    # the killed run recorded nothing; the resuming run sent no request of its own
    assert _sent(after, kind) == _sent(before, kind) == 0
    assert _sent(after, "pollReq") > _sent(before, "pollReq")
    assert _sent(after, "certConf") - _sent(before, "certConf") == (
        1 if phase == "waiting" else 0)
    assert _journal(gw).load() is None


# ---------------------------------------------------------------------- the test CA


@pytest.fixture
def ca(tmp_path: Path) -> Iterator[CAHolder]:
    holder = CAHolder(tmp_path / "ca", ca_config())
    try:
        yield holder
    finally:
        holder.stop()


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(tmp_path / "gw")


def _no_sleep(seconds: float) -> None:
    pass


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


@pytest.mark.parametrize("kind", KINDS)
def test_the_test_ca_takes_a_cr_or_p10cr_renewal_with_a_new_key(site: Site, ca: CAHolder,
                                                                 kind: str) -> None:
    """swcmp's test CA (unique public keys enforced) certifies a new key asked for in a cr
    or p10cr signed with the certificate it issued, delayed by one pollReq."""
    add_session(site, ca.ca, regenerate=True)
    site.store.update("gw1", set_values={"renew_with": kind})
    old_cert, old_key = site.cert(), site.key_pem()
    ca.restart(ca_config(poll=1, check_after=0))
    out = Renewer(site.paths, sleep=_no_sleep).renew(site.session())
    assert out.ok and out.action == kind
    assert site.pair_ok() and site.key_pem() != old_key and site.cert() != old_cert
    assert site.cert().subject == old_cert.subject
    stats = site.stats()
    assert stats[kind]["sent"] == 1 and stats.get("kur", {}).get("sent", 0) == 0
    assert sorted(r["status"] for r in ca.issued().values()) == ["confirmed", "confirmed"]


# ---------------------------------------------------------------------- the polling limit


def test_a_transaction_waiting_past_the_poll_limit_is_abandoned_and_the_next_run_starts_anew(
        tmp_path: Path) -> None:
    """OpenSSL 3.5's mock answers "waiting" for ever (`-poll_count` far beyond any run):
    with `--poll-limit 3s` the run that reaches the limit abandons the transaction
    (exit 1, `transaction_abandoned`, the journal gone, `status` failed) and the next run
    sends a new kur instead of polling the old transaction again."""
    gw = Gateway(tmp_path, OpenSSL.of("3.5"))
    first = gw.pki.issue(gw.key, GW)
    with gw.ca(MAC_ARGS, first) as url:
        gw.create_session(url)
        assert gw.run("request", "initial", "gw1", "--no-deploy").exit_code == 0
    assert gw.run("session", "set", "gw1", "--poll-limit", "3s").exit_code == 0
    # auto-update on (its checks would need a charon): `status` then reports the failure
    SessionStore(gw.config_dir).update("gw1", set_values={"auto_update": True})
    assert gw.json("session", "show", "gw1")["poll_limit"] == 3
    renewed = gw.pki.issue(gw.key, GW, serial=first.serial_number, days=400)
    with gw.ca([*SIG_ARGS, "-poll_count", "1000", "-check_after", "1"], renewed):
        started = time.monotonic()
        failed = gw.run("--json", "renew", "--force", "--no-deploy", "gw1")
        took = time.monotonic() - started
        assert failed.exit_code == 1, failed.output
        (result,) = json.loads(failed.stdout)["results"]
        assert result["result"] == "failed"
        assert "abandoned" in result["message"] and "poll_limit" in result["message"]
        assert took < 30  # the limit, not the per-run polling deadline of 5 minutes
        assert _journal(gw).load() is None
        status = gw.json("status", "gw1")["sessions"][0]
        assert status["state"] == "failed", status
        assert status["last_result"]["ok"] is False
        assert "is abandoned" in status["last_result"]["message"]
        assert _stats(gw)["kur"]["sent"] == 1

        # the next run starts a new transaction: a second kur, not a pollReq in the old one
        again = gw.run("--json", "renew", "--force", "--no-deploy", "gw1")
    assert again.exit_code == 1
    assert _stats(gw)["kur"]["sent"] == 2
    assert x509.load_pem_x509_certificate(gw.cert_file.read_bytes()) == first


@pytest.mark.parametrize("answers", ["waiting", "unprotected"])
def test_a_transaction_resumed_by_too_many_runs_is_abandoned_with_its_staged_key(
        site: Site, ca: CAHolder, answers: str, stack: ExitStack) -> None:
    """Runs that each resume a waiting transaction and end without the CA's answer (the CA
    still waiting, or answers that are not provably the CA's, which end nothing; runs
    killed again and again count the same) are counted in the journal: past max_resumes
    the transaction is abandoned, its staged key destroyed through the key store, and the
    next run certifies a new key in a new transaction."""
    add_session(site, ca.ca, regenerate=True)
    site.store.update("gw1", set_values={"poll_limit": "1h"})
    # the path to the CA, where someone may later answer in the CA's place (a resumed
    # transaction goes to the URL its request went to)
    proxy = stack.enter_context(HostileProxy(ca.ca.url))
    site.store.update("gw1", set_values={"server_url": proxy.url})
    session = site.session()
    live_key = site.key_pem()
    ca.restart(ca_config(poll=1000, check_after=60))
    j = Journal(site.paths, "gw1")
    with pytest.raises(PollingTimeoutError):
        Renewer(site.paths, sleep=_no_sleep, poll_deadline=1).renew(session)
    staged = j.key_file.read_bytes()
    failure: type[SwcmpError] = PollingTimeoutError
    if answers == "unprotected":
        # someone on the path answers every pollReq with an unprotected error
        proxy.on("pollReq", forge(lambda ex: error_body("transaction unknown", 2),
                                  sender_der=ca.ca.ca_cert.subject.public_bytes()),
                 times=None)
        failure = CMPErrorResponse
    for n in range(1, max_resumes(session) + 1):
        with pytest.raises(failure):
            Renewer(site.paths, sleep=_no_sleep, poll_deadline=1).renew(session)
        entry = j.load()
        assert entry is not None and entry.resumes == n and entry.phase == "waiting"
        assert j.key_file.read_bytes() == staged
    with pytest.raises(TransactionAbandoned, match="resumed by 13 runs"):
        Renewer(site.paths, sleep=_no_sleep, poll_deadline=1).renew(session)
    assert j.load() is None and not j.key_file.exists()
    assert site.key_pem() == live_key and site.pair_ok()
    assert site.stats()["kur"]["sent"] == 1

    ca.restart(ca_config())
    proxy.clear()
    out = Renewer(site.paths, sleep=_no_sleep).renew(session)
    assert out.ok and site.pair_ok()
    assert site.key_pem() not in (live_key, staged)
    assert site.stats()["kur"]["sent"] == 2
    assert keys.spki_der(keys.load_private_key(site.key_pem())) == certs.spki_of(site.cert())


def test_serve_abandons_at_the_poll_limit_and_says_so_in_the_metrics(
        site: Site, ca: CAHolder, tmp_path: Path) -> None:
    """serve's pass: the renewal the CA keeps waiting past the poll_limit fails as
    `abandoned` in swcmp_renewal_failures_total, the session is `failed`, and the next pass
    sends a new request."""
    from swcmp.service import HostConfig, RenewalService

    add_session(site, ca.ca, regenerate=True)
    site.store.update("gw1", set_values={"poll_limit": 2})
    ca.restart(ca_config(poll=1000, check_after=1))
    prom = tmp_path / "swcmp.prom"
    svc = RenewalService(site.paths, host=HostConfig(metrics_file=prom))
    (r,) = svc.run_pass(force=True)
    assert r.result == "failed" and "abandoned" in r.message
    text = prom.read_text()
    assert ('swcmp_renewal_failures_total{session="gw1",error="abandoned",fail_info=""} 1'
            in text), text
    assert 'swcmp_session_state{session="gw1",state="failed"} 1' in text
    assert Journal(site.paths, "gw1").load() is None
    ca.restart(ca_config())
    (r,) = svc.run_pass(force=True)
    assert r.result == "renewed", r.message
    assert site.stats()["kur"]["sent"] == 2 and site.pair_ok()
    assert os.stat(site.paths.key_file("gw1")).st_mode & 0o777 == 0o600




@pytest.mark.parametrize("phase", ["received", "staged"])
def test_a_certificate_received_before_a_kill_is_confirmed_even_past_the_poll_limit(
        tmp_path: Path, phase: str) -> None:
    """A run killed after the CA issued the certificate (received, or staged) and before
    its certConf: the next run confirms that certificate late, also when it comes after
    the poll_limit counted from the request (the CA made the request wait nearly the
    whole limit, then a reboot). The poll_limit bounds how long the CA may keep a request
    waiting; a certificate in hand is not thrown away for it (that would leave it issued
    and unconfirmed and ask the CA for a second one)."""
    from pki import make_pki, pem_cert
    from renewal_env import make_gateway

    pki = make_pki(tmp_path / "pki")
    renewed = pki.issue(pki.gw_key, serial=pki.gw.serial_number, days=400)
    pki.write("rsp.crt", pem_cert(renewed))
    with mock_server([*SIG_ARGS, "-rsp_cert", "rsp.crt"], cwd=pki.dir) as url:
        gw = make_gateway(tmp_path / "gw", pki, url, poll_limit="1h")
        root = gw.paths.config_dir.parent
        renew_killed_at(root, phase)
        j = Journal(gw.paths, "gw1")
        entry = j.load()
        assert entry is not None and entry.phase == "received" and entry.cert
        # the CA had kept the request waiting for most of the hour before it issued
        j.write(tx_started=(datetime.now(UTC) - timedelta(hours=2)).isoformat())
        session = SessionStore(gw.paths.config_dir).load("gw1")
        out = Renewer(gw.paths, sleep=_no_sleep).renew(session)
    assert out.ok
    assert gw.cert == renewed and gw.pair_matches()
    assert j.load() is None
    # no second request: the killed run's kur (not counted: it was killed) was confirmed
    stats = StateStore(gw.paths).load("gw1").stats
    assert stats.get("kur", {}).get("sent", 0) == 0 and stats["certConf"]["sent"] == 1
