"""Issue 11 through the command line: a hostile network or CA, met where a user meets it.

The gateway's session talks to the embedded test CA through :class:`HostileProxy`
(tests/hostile_proxy.py), which attacks the exchanges it is told to. Each test
runs the real ``swcmp`` (a subprocess: ``renew``, ``serve``, ``status``) and
shows, for one attack, that it is refused or survived within the stated bound,
that the live key and certificate are still a matching, valid pair, that nothing
is left ``in_progress``, and that the next clean run renews.

The session's ``--timeout`` is 2 s here, so every bound is a few seconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hostile_proxy import (
    Action,
    HostileProxy,
    drip,
    error_body,
    forge,
    genuine_body,
    hang,
    http_status,
    mutate,
    replay,
    resign,
    with_message_time,
)
from swcmp.cmp import codec, keys
from swcmp.cmp.messages import PollRepEntry
from swcmp.cmp.protection import SignatureProtection
from swcmp.state import StateStore
from swcmp.store import Journal
from testca_site import (
    DUE_NOW,
    CAHolder,
    Serve,
    Site,
    add_session,
    ca_config,
    enroll_aside,
    make_site,
    swcmp_cmd,
    wait_past_floor,
)

pytestmark = pytest.mark.integration

TIMEOUT = 2
#: A longer timeout, for the session whose CA hangs while another CA's session renews.
SLOW = 10
#: Python start-up and the renewal's own work, on a busy two-core machine.
SLACK = 6.0
#: An answer that CA text hostile to terminals: clear the screen, retitle the window.
EVIL_TEXT = "\x1b[2J\x1b]0;owned\x07please call +1-555-0100\x9b31m"


@dataclass
class Field:
    """A gateway whose session ``gw1`` reaches the CA through the hostile proxy."""

    site: Site
    ca: CAHolder
    proxy: HostileProxy

    def cli(self, *args: str, code: int | None = 1) -> tuple[subprocess.CompletedProcess[str],
                                                              float]:
        start = time.monotonic()
        res = subprocess.run(swcmp_cmd(self.site, *args), capture_output=True, text=True,
                             timeout=120, check=False)
        took = time.monotonic() - start
        print(f"$ swcmp {' '.join(args)} ({took:.1f}s)\n{res.stdout}{res.stderr}")
        if code is not None:
            assert res.returncode == code, res.stdout + res.stderr
        assert "Traceback" not in res.stderr
        return res, took

    def renew(self, *, code: int = 1) -> tuple[str, float]:
        res, took = self.cli("renew", "--force", "gw1", code=code)
        return res.stdout + res.stderr, took

    def serial(self, name: str = "gw1") -> int:
        return self.site.cert(name).serial_number

    def state(self, name: str = "gw1") -> Any:
        return StateStore(self.site.paths).load(name)

    def ca_signer(self) -> SignatureProtection:
        """The CA's own key: the proxy playing the malicious CA."""
        auth = self.ca.ca.engine.authority
        return SignatureProtection(key=auth.key, cert=auth.cert)

    def assert_unharmed(self, serial: int) -> None:
        """The live pair is the one from before, matching and valid; nothing in progress."""
        assert self.serial() == serial
        assert self.site.pair_ok()
        assert self.state().state in ("failed", "idle")

    def refused(self, kind: str, action: Action, expect: str) -> str:
        """Attack the next ``kind`` request; the renewal fails saying ``expect``, harmlessly."""
        serial = self.serial()
        self.proxy.on(kind, action)
        out, _ = self.renew()
        assert expect in out
        self.assert_unharmed(serial)
        return out

    def make_due(self, name: str = "gw1", ca: CAHolder | None = None) -> None:
        """Enroll ``name`` again with a certificate that is due at once (for serve)."""
        if self.site.store.path_for(name).exists():
            self.site.store.delete(name)
        enroll_aside(self.site, ca or self.ca, name, validity=DUE_NOW, regenerate=True)
        if ca is None:
            self.site.store.update(name, set_values={"server_url": self.proxy.url,
                                                     "timeout": TIMEOUT})
        wait_past_floor(self.site, name)

    def assert_next_clean_run_renews(self, serial: int) -> None:
        self.proxy.clear()
        out, _ = self.renew(code=0)
        assert "renewed" in out
        assert self.serial() != serial and self.site.pair_ok()
        assert self.state().state == "idle" and self.state().failures == 0
        assert Journal(self.site.paths, "gw1").load() is None


@pytest.fixture
def field(tmp_path: Path) -> Iterator[Field]:
    ca = CAHolder(tmp_path / "ca", ca_config(validity=timedelta(hours=1)))
    proxy = HostileProxy(ca.ca.url)
    try:
        site = make_site(tmp_path / "gw")
        add_session(site, ca.ca, regenerate=True)  # the IR goes straight to the CA
        site.store.update("gw1", set_values={"server_url": proxy.url, "timeout": TIMEOUT})
        yield Field(site, ca, proxy)
    finally:
        proxy.close()
        ca.stop()


# ---------------------------------------------------------------------- the deadline


@pytest.mark.parametrize("attack", ["drip", "hang"])
def test_a_dripping_or_silent_ca_is_cut_off_at_the_session_timeout(field: Field,
                                                                   attack: str) -> None:
    serial = field.serial()
    field.proxy.on("kur", drip(0.3) if attack == "drip" else hang())
    out, took = field.renew()
    assert f"did not complete the exchange within {TIMEOUT}s" in out
    assert took < TIMEOUT + SLACK, took
    field.assert_unharmed(serial)
    assert field.state().failures == 1
    field.assert_next_clean_run_renews(serial)


def test_serve_is_not_held_by_one_ca(tmp_path: Path, field: Field) -> None:
    """gw1's CA hangs on every message; gw2, at another CA, is renewed meanwhile."""
    other = CAHolder(tmp_path / "ca2", ca_config(validity=timedelta(hours=1)))
    try:
        site = field.site
        field.make_due("gw1")
        field.make_due("gw2", other)
        # gw1's attempt lasts its whole (longer) timeout; serve lists gw1 before gw2
        site.store.update("gw1", set_values={"timeout": SLOW})
        before = {n: field.serial(n) for n in ("gw1", "gw2")}
        field.proxy.on("*", hang(), times=None)

        serve = Serve(site, tmp_path / "serve.log")
        try:
            started = time.monotonic()
            serve.wait_for(lambda: field.serial("gw2") != before["gw2"]
                           and Journal(site.paths, "gw2").load() is None, 30, "gw2 renewed")
            other_done = time.monotonic() - started
            serve.wait_for(lambda: "gw1: renewal failed" in serve.log(), 30, "gw1's failure")
            gw1_done = time.monotonic() - started
            assert serve.proc.poll() is None  # still serving
        finally:
            serve.stop()
        print(f"gw2 (other CA) renewed {other_done:.1f}s after start; gw1 (hanging CA) "
              f"failed after {gw1_done:.1f}s")
        # gw2 did not wait for gw1's CA: it was done long before gw1's attempt ended,
        # and that attempt ended at its bound
        assert other_done < SLOW - 2 < gw1_done < SLOW + SLACK
        assert field.site.pair_ok("gw2")
        field.assert_unharmed(before["gw1"])
        assert f"did not complete the exchange within {SLOW}s" in serve.log()
    finally:
        other.stop()


# ---------------------------------------------------------------------- hostile bytes


def test_serve_survives_an_answer_whose_message_time_overflows(tmp_path: Path,
                                                               field: Field) -> None:
    site = field.site
    field.make_due()
    serial = field.serial()
    # a legal GeneralizedTime that lies beyond year 9999 in UTC (the traceback)
    field.proxy.on("*", mutate(lambda b: with_message_time(b, b"99991231235959-1200")),
                   times=None)
    serve = Serve(site, tmp_path / "serve.log")
    try:
        serve.wait_for(lambda: "gw1: renewal failed" in serve.log(), 30, "the refusal")
        log = serve.log()
        assert "out-of-range messageTime" in log and "Traceback" not in log
        time.sleep(0.5)
        assert serve.proc.poll() is None
        st = field.state()
        assert st.state == "failed" and st.failures == 1 and st.next_attempt
        field.assert_unharmed(serial)
        field.assert_next_clean_run_renews(serial)  # while serve keeps running
    finally:
        assert serve.stop() == 0


def test_a_huge_check_after_is_clamped_and_the_transaction_kept(field: Field) -> None:
    serial = field.serial()
    field.ca.restart(ca_config(validity=timedelta(hours=1), poll=2, check_after=1))
    # the CA (its own key, its own transaction) says: come back in 2**70 seconds
    field.proxy.on("pollReq", resign(lambda body: codec.poll_rep_body([PollRepEntry(0, 2**70)]),
                                     field.ca_signer()))
    out, took = field.renew()
    assert "still processing the kur" in out and "604800s" in out
    assert took < TIMEOUT * 3 + SLACK
    field.assert_unharmed(serial)
    entry = Journal(field.site.paths, "gw1").load()
    assert entry is not None and entry.phase == "waiting"
    field.assert_next_clean_run_renews(serial)
    assert field.proxy.kinds().count("kur") == 1  # the clean run polled the same transaction
    assert len(field.ca.issued()) == 2  # the IR's certificate and this one


# ---------------------------------------------------------------------- who may end a transaction


@pytest.mark.parametrize("attack", ["unprotected", "replayed-nonce"])
def test_an_unattributable_error_leaves_the_waiting_transaction_alone(field: Field,
                                                                      attack: str) -> None:
    serial = field.serial()
    field.ca.restart(ca_config(validity=timedelta(hours=1), poll=2, check_after=400))
    out, _ = field.renew()
    assert "still processing the kur" in out
    j = Journal(field.site.paths, "gw1")
    waiting = j.load()
    assert waiting is not None and waiting.phase == "waiting"

    # someone on the path answers the pollReq with an error: unprotected, or signed by
    # the CA but answering another message (a replay: the recipNonce is not ours)
    field.proxy.on("pollReq", forge(
        lambda ex: error_body("transaction unknown, start again", 2),
        sender_der=field.ca.ca.ca_cert.subject.public_bytes(),
        protection=None if attack == "unprotected" else field.ca_signer(),
        nonce=(lambda ex: os.urandom(16)) if attack == "replayed-nonce" else None))
    out, _ = field.renew()
    assert "transaction unknown, start again" in out
    assert "cannot be attributed to the CA" in out
    # nothing in the journal changed but the count of runs that resumed it (poll_limit)
    assert j.load() == dataclasses.replace(waiting, resumes=waiting.resumes + 1)
    field.assert_unharmed(serial)

    field.ca.restart(ca_config(validity=timedelta(hours=1), poll=2, check_after=1))
    field.assert_next_clean_run_renews(serial)
    assert field.proxy.kinds().count("kur") == 1  # polled the same transaction to the end
    assert len(field.ca.issued()) == 2


def test_transaction_id_in_use_makes_the_next_try_use_a_new_one(field: Field) -> None:
    serial = field.serial()
    field.ca.restart(ca_config(validity=timedelta(hours=1), reject=("transactionIdInUse",)))
    out, _ = field.renew()
    assert "transactionIdInUse" in out
    entry = Journal(field.site.paths, "gw1").load()
    assert entry is None or not entry.transaction_id  # the old one is dropped
    field.assert_unharmed(serial)
    field.ca.restart(ca_config(validity=timedelta(hours=1)))
    field.assert_next_clean_run_renews(serial)
    kur_ids = [tid for kind, tid in field.proxy.seen if kind == "kur"]
    assert len(kur_ids) == 2 and kur_ids[0] != kur_ids[1]


# ---------------------------------------------------------------------- forged and replayed


def test_an_answer_signed_with_another_gateways_certificate_is_refused(field: Field) -> None:
    """A man in the middle holding a certificate of the same CA (gw2's) re-signs the
    CA's genuine answer: the certificate in it is real, for our key; the signer is not
    entitled to answer."""
    site = field.site
    add_session(site, field.ca.ca, "gw2")
    gw2 = SignatureProtection(key=keys.load_private_key(site.key_pem("gw2")),
                              cert=site.cert("gw2"))
    serial = field.serial()
    field.refused("kur", forge(genuine_body, sender_der=site.cert("gw2").subject.public_bytes(),
                               protection=gw2),
                  "neither the CA, a pinned server certificate nor an RA")
    field.assert_next_clean_run_renews(serial)


def test_a_replayed_answer_is_refused(field: Field) -> None:
    first = field.serial()
    field.assert_next_clean_run_renews(first)  # records the CA's genuine kup
    serial = field.serial()
    field.refused("kur", replay("kur"), "another transactionID")
    field.assert_next_clean_run_renews(serial)


# ---------------------------------------------------------------------- what the operator sees


def test_ca_text_reaches_the_terminal_with_control_characters_escaped(field: Field) -> None:
    serial = field.serial()
    out = field.refused("kur", forge(lambda ex: error_body(EVIL_TEXT, 25),
                                     sender_der=field.ca.ca.ca_cert.subject.public_bytes(),
                                     protection=field.ca_signer()), "please call +1-555-0100")
    assert "\\x1b[2J\\x1b]0;owned\\x07" in out and "\\x9b31m" in out
    status, _ = field.cli("status", "gw1", code=0)
    as_json, _ = field.cli("--json", "status", "gw1", code=0)
    for text in (out, status.stdout + status.stderr, as_json.stdout):
        assert not any(c in text for c in "\x1b\x07\x9b"), text
    assert "please call" in status.stdout
    last = json.loads(as_json.stdout)["sessions"][0]["last_result"]["message"]
    assert "please call" in last and "\x1b" not in last  # escaped where it was recorded
    field.assert_unharmed(serial)


def test_a_503_with_retry_after_sets_serves_next_try(tmp_path: Path, field: Field) -> None:
    site = field.site
    field.make_due()
    serial = field.serial()
    # 20 s: not the backoff's first step (1 minute), and before half of the 60 s left
    field.proxy.on("kur", http_status(503, "Service Unavailable",
                                      headers={"Retry-After": "20"}), times=None)
    serve = Serve(site, tmp_path / "serve.log")
    try:
        serve.wait_for(lambda: "gw1: renewal failed" in serve.log(), 30, "the 503")
        failed_at = datetime.now(UTC)
        assert serve.proc.poll() is None
    finally:
        serve.stop()
    assert "HTTP 503" in serve.log() and "next try in 0:00:20" in serve.log()
    st = field.state()
    retry = datetime.fromisoformat(st.next_attempt)
    # the CA's time, not the first step of the backoff (1 minute, at most an eighth of
    # the validity left); kept before half of the validity left
    # (timed from the failure as recorded, not from when this test saw the log line)
    recorded = datetime.fromisoformat(st.last_result.time)
    assert recorded <= failed_at
    left = (field.site.cert("gw1").not_valid_after_utc - recorded).total_seconds()
    expected = min(20.0, left / 2)
    assert expected > left / 8 + 3
    assert abs((retry - recorded).total_seconds() - expected) < 3, (retry, recorded, left)
    field.assert_unharmed(serial)
    field.assert_next_clean_run_renews(serial)
