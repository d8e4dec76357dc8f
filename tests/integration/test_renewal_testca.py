"""The staged renewal (KUR) against swcmp's embedded test CA, with short-lived certificates.

Unlike OpenSSL's mock, the test CA issues a real certificate for exactly the key
requested and remembers every certificate it issued (``state.json``), so these
tests renew with a new key, and count what the CA issued to prove that a run
killed at any step is finished by the next one without a needless certificate.

Every session is enrolled for real first (IR, MAC-protected, with
``enroll.request_initial``); that certificate is not counted below.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from swcmp.cmp import certs, keys
from swcmp.enroll import request_initial
from swcmp.errors import (
    CertificateRejectedError,
    CMPErrorResponse,
    ConnectError,
    LockHeldError,
    NeedsInitialRequest,
    PollingTimeoutError,
    ProtectionError,
    ProtocolError,
    StorageError,
    SwcmpError,
)
from swcmp.renewal import Renewer
from swcmp.service import RenewalService
from swcmp.state import StateStore
from swcmp.store import Journal
from testca_site import (
    MAC_SECRET,
    CAHolder,
    Site,
    _now,
    add_session,
    ca_config,
    make_site,
)

pytestmark = pytest.mark.integration

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


def no_sleep(seconds: float) -> None:
    pass


# ---------------------------------------------------------------------- renewals that work


@pytest.mark.parametrize("regenerate", [False, True], ids=["same-key", "new-key"])
def test_renewal(site: Site, ca: CAHolder, regenerate: bool) -> None:
    session = add_session(site, ca.ca, regenerate=regenerate)
    old_cert, old_key = site.cert(), site.key_pem()
    (ir_serial,) = ca.issued()
    assert ca.issued()[ir_serial]["status"] == "confirmed"
    assert site.stats()["ir"] == {"sent": 1, "received": 1, "failed": 0}
    assert site.stats()["certConf"]["sent"] == 1  # the IR's

    out = Renewer(site.paths).renew(session)

    new_cert, new_key = site.cert(), site.key_pem()
    assert out.ok and out.serial == f"{new_cert.serial_number:x}"
    assert new_cert.serial_number != old_cert.serial_number
    assert (new_key != old_key) is regenerate  # a new key really is new, or the same kept
    assert site.pair_ok()
    assert new_cert.subject == old_cert.subject
    assert new_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName) == \
        old_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert oct(site.paths.key_file("gw1").stat().st_mode & 0o777) == "0o600"
    # the CA issued exactly one certificate, for exactly our key, and it is confirmed
    renewed = {s: r for s, r in ca.issued().items() if s != ir_serial}
    assert list(renewed) == [new_cert.serial_number]
    assert renewed[new_cert.serial_number]["status"] == "confirmed"
    # the previous pair is archived for manual rollback, and is the old pair
    j = Journal(site.paths, "gw1")
    (arch_crt,) = j.archive.glob("*.crt")
    assert arch_crt.read_bytes() == certs.pem_of(old_cert)
    assert arch_crt.with_suffix(".key").read_bytes() == old_key
    assert oct(arch_crt.with_suffix(".key").stat().st_mode & 0o777) == "0o600"
    assert j.load() is None
    assert not j.staging.exists() or not any(j.staging.iterdir())
    stats = site.stats()
    assert stats["kur"] == {"sent": 1, "received": 1, "failed": 0}
    assert stats["certConf"] == {"sent": 2, "received": 2, "failed": 0}  # the IR's and ours
    assert stats["ir"]["sent"] == 1 and stats["pollReq"]["sent"] == 0


def test_regenerate_keeps_the_key_type_and_archive_is_bounded(site: Site, ca: CAHolder) -> None:
    session = add_session(site, ca.ca, regenerate=True, key_type="rsa:2048")
    keys_seen = {site.key_pem()}
    for _ in range(5):
        Renewer(site.paths).renew(session)
        assert site.pair_ok()
        keys_seen.add(site.key_pem())
    assert len(keys_seen) == 6  # every renewal made a fresh key
    assert keys.key_type_of(keys.public_key_of(keys.load_private_key(site.key_pem()))) == \
        "rsa:2048"
    assert len(list(Journal(site.paths, "gw1").archive.glob("*.crt"))) == 3  # ARCHIVE_KEEP
    assert len(ca.issued()) == 6 and site.stats()["kur"]["sent"] == 5


def test_ca_waits_then_delivers(site: Site, ca: CAHolder) -> None:
    session = add_session(site, ca.ca, regenerate=True)
    ca.restart(ca_config(poll=2, check_after=1))
    waits: list[float] = []
    out = Renewer(site.paths, sleep=waits.append).renew(session)
    assert out.ok and site.pair_ok()
    assert waits[1:] == [1.0]  # the pollRep's checkAfter was honoured
    stats = site.stats()
    # every message got its answer: the certificate came as the answer to the 2nd pollReq
    assert stats["pollReq"] == {"sent": 2, "received": 2, "failed": 0}
    assert stats["kur"] == {"sent": 1, "received": 1, "failed": 0}
    assert len(ca.issued()) == 2


def test_ca_waits_past_the_deadline_then_next_run_polls_the_same_transaction(
        site: Site, ca: CAHolder) -> None:
    session = add_session(site, ca.ca, regenerate=True)
    old_key = site.key_pem()
    ca.restart(ca_config(poll=3, check_after=30))
    with pytest.raises(PollingTimeoutError, match="still processing the kur") as ei:
        Renewer(site.paths, sleep=no_sleep, poll_deadline=5).renew(session)
    assert "next run polls the same transaction" in (ei.value.hint or "")
    assert site.key_pem() == old_key and site.pair_ok()
    j = Journal(site.paths, "gw1")
    entry = j.load()
    assert entry is not None and entry.phase == "waiting" and j.key_file.exists()
    out = Renewer(site.paths, sleep=no_sleep).renew(session)
    assert out.ok and site.pair_ok() and site.key_pem() != old_key
    # one KUR, one certificate: the second run only polled
    assert site.stats()["kur"]["sent"] == 1 and site.stats()["pollReq"]["sent"] == 3
    assert len(ca.issued()) == 2
    assert keys.spki_der(keys.load_private_key(site.key_pem())) == certs.spki_of(site.cert())


def test_waiting_transaction_the_ca_forgot_is_not_polled_forever(site: Site,
                                                                  ca: CAHolder) -> None:
    import time

    session = add_session(site, ca.ca, regenerate=True)
    (ir_serial,) = ca.issued()
    ca.restart(ca_config(poll=3, check_after=30))
    with pytest.raises(PollingTimeoutError):
        Renewer(site.paths, sleep=no_sleep, poll_deadline=5).renew(session)
    staged_key = Journal(site.paths, "gw1").key_file.read_bytes()
    # the CA gives up on the transaction (as after its timeout, or a restart without state)
    ca.restart(ca_config(transaction_timeout=timedelta(seconds=0.5)))
    time.sleep(0.7)
    with pytest.raises(CMPErrorResponse, match="no open transaction") as ei:
        Renewer(site.paths, sleep=no_sleep).renew(session)
    assert ei.value.fail_info == ("badRequest",)
    assert site.pair_ok()
    # the dead transaction is forgotten with its staged key (a CA enforcing unique
    # public keys would refuse that key for ever): the next run makes a new one
    assert Journal(site.paths, "gw1").load() is None
    assert not Journal(site.paths, "gw1").key_file.exists()
    Renewer(site.paths, sleep=no_sleep).renew(session)
    assert site.pair_ok() and site.key_pem() != staged_key
    statuses = sorted(r["status"] for s, r in ca.issued().items() if s != ir_serial)
    assert statuses == ["confirmed", "rejected"]  # the forgotten one was dropped by the CA


# ---------------------------------------------------------------------- kill -9 at every step

CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from swcmp.paths import Paths
    from swcmp.sessionfile import SessionStore
    from swcmp.renewal import Renewer
    from swcmp.cmp import codec
    from swcmp.cmp.transport import HttpTransport

    root, phase = Path(sys.argv[1]), sys.argv[2]
    paths = Paths(root / "etc", root / "var", root / "swanctl")
    session = SessionStore(paths.config_dir).load("gw1")

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def checkpoint(p):
        if p == phase:
            die()

    class DieOnAnswer(HttpTransport):
        # the KUR reached the CA and its answer reached us, but nothing was written down
        # (the certificate request template is asked before the key is made)
        def post(self, data):
            answer = super().post(data)
            if codec.decode_message(data).body_type != "kur":
                return answer
            die()

    transport = DieOnAnswer(session.server_url) if phase == "answered" else None
    Renewer(paths, checkpoint=checkpoint, transport=transport).renew(session, regenerate=True)
    sys.exit(3)  # the kill did not happen
""")

# phase -> (certificates the CA issues in all, KURs the recovering run sends,
#           CA messages the recovering run sends)
KILL_CASES = {
    # A fresh key was generated and journaled; nothing was sent. The next run
    # certifies that same staged key: 1 certificate.
    "key-ready": (1, 1, 2),
    # Killed just before the KUR left (transactionID journaled, nothing on the
    # wire): the CA never heard of it, so the next run's new KUR is the only
    # request: 1 certificate.
    # The new key is made after the certificate request template (genm certReqTemplate)
    # was asked: 3 messages.
    "sending": (1, 1, 3),
    # The KUR reached the CA, which issued a certificate, but the answer died
    # with the process before anything was written down: we never learnt the
    # CA's nonce, so that transaction cannot be continued and a second KUR is
    # necessary: 2 certificates, the first never confirmed (the CA drops it when
    # the transaction times out; no one can ever use it).
    "answered": (2, 1, 3),  # a new key again, so the template is asked again
    # The CA said 'waiting' (poll knob) and the journal has its nonce: the next
    # run polls the same transaction (pollReq, certConf): 1 certificate.
    "waiting": (1, 0, 2),
    # The checked certificate and the CA's nonce are journaled: the next run
    # sends the late certConf in the same transaction: 1 certificate.
    "received": (1, 0, 1),
    # Staged on disk, certConf not sent yet: this CA accepts the late certConf
    # in the same transaction: 1 certificate.
    "staged": (1, 0, 1),
    # certConf answered by pkiConf: only the local commit is left; the next run
    # contacts no one.
    "confirmed": (1, 0, 0),
    "committing": (1, 0, 0),
    # The new key written beside the old one (KEY.key.next), before the
    # certificate; and the certificate written, before the key's rename (see the test).
    "key-written": (1, 0, 0),
    "cert-written": (1, 0, 0),
}


def _messages_sent(site: Site) -> int:
    return sum(c["sent"] for c in site.stats().values())


@pytest.mark.parametrize("phase", list(KILL_CASES))
def test_kill_9_then_recover_without_a_needless_certificate(site: Site, ca: CAHolder,
                                                            phase: str) -> None:
    total, kurs, messages = KILL_CASES[phase]
    add_session(site, ca.ca, regenerate=True)
    old_cert, old_key = site.cert(), site.key_pem()
    (ir_serial,) = ca.issued()
    if phase == "waiting":
        ca.restart(ca_config(poll=1, check_after=0))

    res = subprocess.run([sys.executable, "-c", CHILD, str(site.root), phase],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]

    j = Journal(site.paths, "gw1")
    entry = j.load()
    assert entry is not None  # an interrupted renewal is on record
    next_key = site.paths.key_file("gw1").with_name("gw1.key.next")
    if phase == "cert-written":
        # The new certificate is live and its key sits beside the old one, in
        # KEY.key.next: storage holds the matching pair (swanctl loads every file in
        # private/), and the journal says "committing", so every next run (renew,
        # serve, the charon start hook) finishes with one rename, without the CA.
        assert entry.phase == "committing"
        staged = certs.load_certificate(j.cert_file.read_bytes())
        assert site.cert() == staged
        assert keys.spki_der(keys.load_private_key(next_key.read_bytes())) == \
            certs.spki_of(staged)
        assert site.key_pem() == old_key
        (arch,) = j.archive.glob("*.crt")
        assert arch.read_bytes() == certs.pem_of(old_cert)
        assert arch.with_suffix(".key").read_bytes() == old_key
    else:
        # the old pair is live, untouched and valid
        assert site.cert() == old_cert and site.key_pem() == old_key and site.pair_ok()
        if phase == "key-written":  # the new key waits beside it
            assert next_key.read_bytes() == j.key_file.read_bytes()
    staged_key = j.key_file.read_bytes() if j.key_file.exists() else None
    assert staged_key is not None  # with regenerate the new key is always staged first

    before = site.stats()
    sent_before = _messages_sent(site)
    out = Renewer(site.paths, sleep=no_sleep).renew(site.session())
    assert out.ok

    # recovered: a matching, valid pair with the key staged by the killed run, unless
    # that key's request may have reached the CA in a transaction that cannot go on
    # (killed while sending: a CA enforcing unique public keys would refuse the key)
    if phase in ("sending", "answered"):
        assert site.pair_ok() and site.key_pem() not in (staged_key, old_key)
    else:
        assert site.pair_ok() and site.key_pem() == staged_key != old_key
    assert site.cert().serial_number == int(out.serial or "0", 16)
    assert j.load() is None and not j.key_file.exists() and not j.cert_file.exists()
    assert not next_key.exists()
    after = site.stats()
    assert after["kur"]["sent"] - before["kur"]["sent"] == kurs
    assert _messages_sent(site) - sent_before == messages
    renewed = {s: r for s, r in ca.issued().items() if s != ir_serial}
    assert len(renewed) == total, renewed
    # exactly one of them is usable: the live one, confirmed
    assert [s for s, r in renewed.items() if r["status"] == "confirmed"] == \
        [site.cert().serial_number]
    # and the old pair is in the archive, once
    assert len(list(j.archive.glob("*.crt"))) == 1


# ---------------------------------------------------------------------- refusals and garbage


def test_ca_rejects_keeps_the_pair_and_names_the_failinfo(site: Site, ca: CAHolder) -> None:
    session = add_session(site, ca.ca, regenerate=True)
    old_cert, old_key = site.cert(), site.key_pem()
    ca.restart(ca_config(reject=("badCertTemplate",)))
    with pytest.raises(CMPErrorResponse) as ei:
        Renewer(site.paths).renew(session)
    e = ei.value
    assert e.status == "rejection" and e.fail_info == ("badCertTemplate",)
    assert "badCertTemplate" in str(e) and "request rejected by the test CA" in str(e)
    assert site.cert() == old_cert and site.key_pem() == old_key and site.pair_ok()
    assert site.stats()["kur"] == {"sent": 1, "received": 1, "failed": 1}
    assert len(ca.issued()) == 1  # nothing issued
    # the transaction ended without a certificate: its staged key is destroyed (a CA
    # enforcing unique public keys would refuse it for ever); the next attempt makes one
    j = Journal(site.paths, "gw1")
    assert j.load() is None and not j.key_file.exists()

    # through the service, the error is recorded with its failInfo and a retry is planned
    (r,) = RenewalService(site.paths).run_pass(force=True)
    assert r.result == "failed" and "badCertTemplate" in r.message
    st = StateStore(site.paths).load("gw1")
    assert st.state == "failed" and st.failures == 1 and st.next_attempt
    assert st.last_result is not None and "badCertTemplate" in st.last_result.message

    ca.restart(ca_config())
    Renewer(site.paths).renew(session)
    assert site.key_pem() != old_key and site.pair_ok()
    assert len(ca.issued()) == 2


@pytest.mark.parametrize(("fault", "error", "match", "status"), [
    ("wrong-nonce", ProtocolError, "recipNonce", "pending"),
    ("bad-protection", ProtectionError, "signature does not verify", "pending"),
    ("unprotected", ProtectionError, "not protected", "pending"),
    ("other-key", CertificateRejectedError, "another public key", "rejected"),
])
def test_ca_fault_keeps_the_pair(site: Site, ca: CAHolder, fault: str,
                                 error: type[Exception], match: str, status: str) -> None:
    session = add_session(site, ca.ca, regenerate=True)
    old_cert, old_key = site.cert(), site.key_pem()
    (ir_serial,) = ca.issued()
    ca.restart(ca_config(fault=fault))
    with pytest.raises(error, match=match):
        Renewer(site.paths).renew(session)
    assert site.cert() == old_cert and site.key_pem() == old_key and site.pair_ok()
    assert site.stats()["kur"]["failed"] == 1
    # The CA did issue one (it injects the fault into its answer); the client
    # refused the answer. A certificate for another key is refused in certConf
    # (the CA marks it rejected); the others stay pending and are dropped when the
    # transaction times out: never confirmed, never usable.
    (serial,) = (s for s in ca.issued() if s != ir_serial)
    assert ca.issued()[serial]["status"] == status
    # nothing is kept for the next run: the transaction ended, its key is destroyed
    j = Journal(site.paths, "gw1")
    assert j.load() is None and not j.cert_file.exists() and not j.key_file.exists()
    ca.restart(ca_config())
    Renewer(site.paths).renew(session)
    assert site.pair_ok() and site.cert() != old_cert


class _Garbage(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = b"\x30\x03\x02\x01\x05 this is not a PKIMessage"
        self.send_response(200)
        self.send_header("Content-Type", "application/pkixcmp")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_garbage_answer_and_ca_down_keep_the_pair(site: Site, ca: CAHolder) -> None:
    session = add_session(site, ca.ca)
    old_cert, old_key = site.cert(), site.key_pem()
    ca.stop()
    with pytest.raises(ConnectError):
        Renewer(site.paths).renew(session)
    assert site.cert() == old_cert and site.key_pem() == old_key and site.pair_ok()

    server = ThreadingHTTPServer(("127.0.0.1", ca.port), _Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ProtocolError) as ei:
            Renewer(site.paths).renew(session)
    finally:
        server.shutdown()
        server.server_close()
    assert str(ei.value)  # says what is wrong with the answer
    assert site.cert() == old_cert and site.key_pem() == old_key and site.pair_ok()
    assert Journal(site.paths, "gw1").load() is None
    assert site.stats()["kur"]["failed"] == 2


def test_disk_full_while_committing_keeps_a_matching_pair(
        site: Site, ca: CAHolder, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from swcmp import fsutil

    session = add_session(site, ca.ca, regenerate=True)
    old_cert, old_key = site.cert(), site.key_pem()
    (ir_serial,) = ca.issued()
    real = fsutil.atomic_write
    live_cert = site.paths.cert_file("gw1")

    def full(path: Path, data: bytes, **kw: Any) -> None:
        if Path(path) == live_cert:  # the new key is written, the certificate is not
            raise fsutil.storage_error(OSError(errno.ENOSPC, "No space left on device"),
                                       Path(path), "write")
        real(path, data, **kw)

    monkeypatch.setattr(fsutil, "atomic_write", full)
    with pytest.raises(StorageError, match="space"):
        Renewer(site.paths).renew(session)
    monkeypatch.setattr(fsutil, "atomic_write", real)
    # the new key was put back: the old pair is live and matching
    assert site.cert() == old_cert and site.key_pem() == old_key and site.pair_ok()
    # the confirmed certificate and its key stay staged; the next run commits them
    j = Journal(site.paths, "gw1")
    assert getattr(j.load(), "phase", None) == "committing"
    staged_key = j.key_file.read_bytes()
    sent = _messages_sent(site)
    Renewer(site.paths).renew(session)
    assert site.pair_ok() and site.key_pem() == staged_key
    assert _messages_sent(site) == sent  # no CA contact
    assert len([s for s in ca.issued() if s != ir_serial]) == 1


def test_charon_refuses_then_disk_full_during_rollback_keeps_a_matching_pair(
        site: Site, ca: CAHolder, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rollback after a refused deploy uses the same safe order as the commit."""
    import errno

    from swcmp import fsutil
    from swcmp.deploy import DeployError
    from swcmp.errors import RenewalError

    session = add_session(site, ca.ca, regenerate=True)
    old_key = site.key_pem()
    real = fsutil.atomic_write
    live_cert = site.paths.cert_file("gw1")
    writes = {"cert": 0}

    class Refusing:
        def deploy(self, session: Any, new: Any, previous: Any) -> Any:
            raise DeployError("charon refused the key (test)")

        def held_key_ids(self) -> tuple[str, ...]:
            return ()

    def full_on_restore(path: Path, data: bytes, **kw: Any) -> None:
        if Path(path) == live_cert:
            writes["cert"] += 1
            if writes["cert"] == 2:  # the commit's write worked; the restore's does not
                raise fsutil.storage_error(OSError(errno.ENOSPC, "No space left on device"),
                                           Path(path), "write")
        real(path, data, **kw)

    monkeypatch.setattr(fsutil, "atomic_write", full_on_restore)
    with pytest.raises(RenewalError, match="charon did not take"):
        Renewer(site.paths, charon=Refusing()).renew(session)  # type: ignore[arg-type]
    monkeypatch.setattr(fsutil, "atomic_write", real)
    assert writes["cert"] == 2
    # the restore stopped half-way, yet the live key and certificate match (the new
    # pair), and the old key waits beside them for the rename that never came
    assert site.pair_ok() and site.key_pem() != old_key
    next_key = site.paths.key_file("gw1").with_name("gw1.key.next")
    assert next_key.read_bytes() == old_key


# ---------------------------------------------------------------------- concurrency, expiry


def test_concurrent_renewals_in_two_threads(site: Site, ca: CAHolder) -> None:
    session = add_session(site, ca.ca, regenerate=True)
    ca.restart(ca_config(delay=0.5))  # keeps the first renewal busy for a while
    inside = threading.Event()
    results: dict[str, object] = {}

    def first() -> None:
        def checkpoint(phase: str) -> None:
            if phase == "sending":
                inside.set()
        try:
            results["first"] = Renewer(site.paths, checkpoint=checkpoint).renew(session)
        except BaseException as e:  # asserted below
            results["first"] = e
        finally:
            inside.set()

    t = threading.Thread(target=first)
    t.start()
    assert inside.wait(30)
    try:
        Renewer(site.paths).renew(session)
    except LockHeldError as e:
        results["second"] = e
    t.join(60)
    assert not isinstance(results["first"], BaseException), results["first"]
    assert isinstance(results.get("second"), LockHeldError)
    assert "another swcmp run" in str(results["second"])
    assert site.pair_ok() and Journal(site.paths, "gw1").load() is None
    assert len(ca.issued()) == 2 and site.stats()["kur"]["sent"] == 1


def test_concurrent_renew_commands_in_two_processes(site: Site, ca: CAHolder) -> None:
    add_session(site, ca.ca, regenerate=True)
    ca.restart(ca_config(delay=1.5))
    old_cert = site.cert()
    cmd = [sys.executable, "-m", "swcmp", "--config-dir", str(site.paths.config_dir),
           "--state-dir", str(site.paths.state_dir), "--swanctl-dir",
           str(site.paths.swanctl_dir), "--vici", "none", "renew", "--force", "gw1"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [(p.wait(60), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in outs)
    assert codes == [0, 1], outs
    text = "".join(o + e for _, o, e in outs)
    assert "gw1: renewed" in text and "another swcmp run" in text, text
    assert "Traceback" not in text
    assert site.pair_ok() and site.cert() != old_cert
    assert Journal(site.paths, "gw1").load() is None
    assert len(ca.issued()) == 2 and site.stats()["kur"]["sent"] == 1
    # a lost race for the lock is not a failure of the session
    st = StateStore(site.paths).load("gw1")
    assert st.failures == 0 and st.last_result is not None and st.last_result.ok


def test_expired_certificate_needs_an_ir_and_is_not_retried(site: Site, ca: CAHolder) -> None:
    import time

    ca.restart(ca_config(validity=timedelta(seconds=2)))
    session = add_session(site, ca.ca, regenerate=True)
    time.sleep(max((site.cert().not_valid_after_utc - _now()).total_seconds(), 0) + 0.2)
    ca.restart(ca_config())
    with pytest.raises(NeedsInitialRequest, match="expired") as ei:
        Renewer(site.paths).renew(session)
    assert "swcmp request initial gw1" in (ei.value.hint or "")
    svc = RenewalService(site.paths)
    for force in (False, True, False):
        (r,) = svc.run_pass(force=force)
        assert r.result == "failed" and "request initial gw1" in r.message
    st = StateStore(site.paths).load("gw1")
    assert st.state == "needs_ir"
    assert site.stats()["kur"]["sent"] == 0  # the CA was never asked
    assert len(ca.issued()) == 1
    assert Journal(site.paths, "gw1").load() is None  # not even a key was made
    # a new IR fixes it, and then renewals work again
    request_initial(session, site.paths, store=site.store)
    (r,) = svc.run_pass(force=True)
    assert r.result == "renewed" and site.pair_ok()


def test_errors_never_show_the_mac_secret(site: Site, ca: CAHolder,
                                          caplog: pytest.LogCaptureFixture) -> None:
    session = add_session(site, ca.ca)
    ca.restart(ca_config(reject=("notAuthorized",)))
    with pytest.raises(SwcmpError) as ei:
        Renewer(site.paths).renew(session)
    assert MAC_SECRET not in str(ei.value) and MAC_SECRET not in caplog.text
    assert os.stat(site.paths.key_file("gw1")).st_mode & 0o077 == 0


def test_a_forged_staged_pair_is_not_committed(site: Site, ca: CAHolder, tmp_path: Path) -> None:
    """A journal at 'confirmed' with a pair from elsewhere: verified again, refused."""
    import json as _json

    from pki import make_pki, pem_cert, pem_key
    from swcmp.errors import RenewalError

    session = add_session(site, ca.ca, regenerate=True)
    old_cert, old_key = site.cert(), site.key_pem()
    evil = make_pki(tmp_path / "evil")
    forged = evil.issue(evil.gw_key, "gw1.example.net")
    j = Journal(site.paths, "gw1")
    j.staging.mkdir(parents=True, exist_ok=True)
    j.key_file.write_bytes(pem_key(evil.gw_key))
    j.cert_file.write_bytes(pem_cert(forged))
    j.path.write_text(_json.dumps({"phase": "confirmed"}))
    with pytest.raises(RenewalError, match="fails verification"):
        Renewer(site.paths).renew(session)
    assert site.cert() == old_cert and site.key_pem() == old_key and site.pair_ok()


class _Recording:
    """An HttpTransport that keeps every answer it received."""

    def __init__(self, url: str) -> None:
        from swcmp.cmp.transport import HttpTransport

        self.inner = HttpTransport(url)
        self.answers: list[bytes] = []

    def post(self, data: bytes) -> bytes:
        answer = self.inner.post(data)
        self.answers.append(answer)
        return answer

    def end_transaction(self) -> None:
        self.inner.end_transaction()


@pytest.mark.parametrize("poll", [0, 1], ids=["direct", "polled"])
def test_ca_signing_with_its_root_left_out_of_extracerts(site: Site, ca: CAHolder,
                                                         poll: int) -> None:
    """Like OpenSSL's CMP server with a self-signed signer: answers carry no extraCerts;
    swcmp finds the signer among its trust anchors and renews."""
    from swcmp.cmp import codec

    session = add_session(site, ca.ca, regenerate=True)
    ca.restart(ca_config(signer_in_extra_certs=False, poll=poll, check_after=0))
    wire = _Recording(session.server_url or "")
    out = Renewer(site.paths, transport=wire, sleep=no_sleep).renew(session)
    assert out.ok and site.pair_ok()
    # the template's genp (a new key is made), kup or pollRep then kup, and pkiConf
    assert len(wire.answers) == 3 + poll
    root_der = certs.der_of(ca.ca.ca_cert)
    for answer in wire.answers:
        assert root_der not in codec.decode_message(answer).extra_certs


def test_the_test_ca_enforces_unique_public_keys(site: Site, ca: CAHolder) -> None:
    # like EJBCA by default: a key certified for one subject is refused for another
    add_session(site, ca.ca, "gw1")
    site.store.create("gw2", {**{k: v for k, v in site.store.load("gw1").describe().items()
                                 if k in ("ca_name", "server_url", "ir_auth", "mac_ref",
                                          "mac_secret_file")},
                              "entity": "CN=gw2.example.net", "key": "gw2"})
    # gw2's key file holds gw1's key (copied by hand)
    site.paths.key_file("gw2").write_bytes(site.paths.key_file("gw1").read_bytes())
    site.paths.key_file("gw2").chmod(0o600)
    with pytest.raises(CMPErrorResponse, match="already defined") as ei:
        request_initial(site.store.load("gw2"), site.paths, store=site.store)
    assert ei.value.fail_info == ("badCertTemplate",)
    # the same subject's confirmed key may be certified again (a key update, same key)
    Renewer(site.paths).renew(site.store.load("gw1"))
    assert site.pair_ok("gw1")
    # off: the same request is taken
    ca.restart(ca_config(unique_public_keys=False))
    assert request_initial(site.store.load("gw2"), site.paths, store=site.store).ok
