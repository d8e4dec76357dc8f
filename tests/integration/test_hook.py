"""`swcmp hook charon-start` waits for a renewal in progress before loading pairs, and
leaves out pairs whose certificate expired or was revoked, saying so."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from pki import make_pki, name, pem_cert, pem_key
from renewal_env import make_gateway
from swcmp import fsutil
from swcmp.calife.state import CaLifeStore
from swcmp.deploy import DeployResult
from swcmp.start_hook import charon_start
from swcmp.store import write_crl


@pytest.fixture
def gw(tmp_path: Path):  # type: ignore[no-untyped-def]
    pki = make_pki(tmp_path / "pki")
    return make_gateway(tmp_path / "gw", pki, "http://127.0.0.1:9/")


class LoadingCharon:
    """The start hook's side of the charon port, recording when the pairs were loaded
    (unit-test fake: the real charon's loads are tested in test_strongswan_integration)."""

    def __init__(self, detail: str = "loaded") -> None:
        self.detail = detail
        self.loaded: list[tuple[float, list[str]]] = []

    def load_current(self, pairs):  # type: ignore[no-untyped-def]
        self.loaded.append((time.monotonic(), [p.session for p in pairs]))
        return DeployResult(True, self.detail.format(n=len(pairs)))

    def load_authorities(self, cas, crls):  # type: ignore[no-untyped-def]
        return "nothing to load"

    def reload_pinned(self, session):  # type: ignore[no-untyped-def]
        return ()


def hold_lock(gw, seconds: float, held: threading.Event) -> threading.Thread:  # type: ignore[no-untyped-def]
    def run() -> None:
        gw.paths.lock_dir.mkdir(parents=True, exist_ok=True)
        with fsutil.exclusive_lock(gw.paths.lock_dir, "gw1"):
            held.set()
            time.sleep(seconds)

    t = threading.Thread(target=run)
    t.start()
    held.wait(5)
    return t


def test_hook_waits_for_a_running_renewal(gw, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    charon = LoadingCharon()
    held = threading.Event()
    start = time.monotonic()
    t = hold_lock(gw, 0.8, held)
    assert charon_start(gw.paths, charon, lock_wait=10) == "loaded"  # type: ignore[arg-type]
    t.join()
    loaded = charon.loaded
    assert loaded and loaded[0][1] == ["gw1"]
    assert loaded[0][0] - start >= 0.7  # it waited for the lock


def test_hook_gives_up_waiting_and_loads_current_files(gw, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                                      caplog: pytest.LogCaptureFixture) -> None:
    charon = LoadingCharon("{n} pair")
    held = threading.Event()
    t = hold_lock(gw, 2.0, held)
    t0 = time.monotonic()
    assert charon_start(gw.paths, charon, lock_wait=0.3) == "1 pair"  # type: ignore[arg-type]
    assert time.monotonic() - t0 < 1.5
    assert "a renewal is running" in caplog.text
    t.join()


class _Recording(LoadingCharon):
    """The pairs the hook loaded, by call (the port's start-hook side)."""

    def __init__(self) -> None:
        super().__init__("{n} pair(s) loaded")

    @property
    def sessions(self) -> list[list[str]]:
        return [names for _, names in self.loaded]


def test_hook_skips_an_expired_pair_and_says_so(gw, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    charon = _Recording()
    pki = make_pki(tmp_path / "pki2")
    old = pki.issue(pki.gw_key, not_before=datetime.now(UTC) - timedelta(days=3), days=1)
    gw.paths.key_file("gw1").write_bytes(pem_key(pki.gw_key))
    gw.paths.cert_file("gw1").write_bytes(pem_cert(old))
    note = charon_start(gw.paths, charon)  # type: ignore[arg-type]
    assert charon.sessions == [[]]
    assert "not loaded: gw1 (its certificate expired on" in note
    assert "swcmp request initial gw1" in note and "gw1: not loaded" in caplog.text


def test_hook_skips_a_revoked_pair_and_says_so(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    charon = _Recording()
    pki = make_pki(tmp_path / "pki")
    gw = make_gateway(tmp_path / "gw", pki, "http://127.0.0.1:9/")
    assert charon_start(gw.paths, charon).startswith("1 pair(s)")  # type: ignore[arg-type]
    cert = gw.cert
    now = datetime.now(UTC)
    # a CRL of another issuer listing the serial changes nothing
    other = make_pki(tmp_path / "other")  # its key signs as "Another CA"
    for issuer_key, issuer, skipped in ((other.root_key, name("Another CA"), False),
                                        (pki.root_key, pki.root.subject, True)):
        crl = (x509.CertificateRevocationListBuilder().issuer_name(issuer)
               .last_update(now).next_update(now + timedelta(days=1))
               .add_revoked_certificate(x509.RevokedCertificateBuilder()
                                        .serial_number(cert.serial_number)
                                        .revocation_date(now).build())
               .sign(issuer_key, hashes.SHA256()))  # type: ignore[arg-type]
        write_crl(gw.paths, "gw1", crl.public_bytes(serialization.Encoding.DER))
        note = charon_start(gw.paths, charon)  # type: ignore[arg-type]
        assert ("listed in its CA's CRL" in note) is skipped, note
        assert charon.sessions[-1] == ([] if skipped else ["gw1"])


def test_hook_skips_a_pair_swcmp_revoked(gw, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    charon = _Recording()
    with CaLifeStore(gw.paths, "gw1").update() as st:
        st.revoked = [{"serial": f"{gw.cert.serial_number:x}", "reason": "keyCompromise",
                       "time": "2026-01-01T00:00:00+00:00", "current": True}]
    note = charon_start(gw.paths, charon)  # type: ignore[arg-type]
    assert charon.sessions == [[]] and "was revoked by swcmp" in note


def test_hook_loads_a_pair_whose_serial_swcmp_revoked_under_another_issuer(gw) -> None:  # type: ignore[no-untyped-def]
    # The session moved to another CA (or its CA was re-keyed under a new name) whose
    # serials happen to meet one swcmp revoked before: serials are unique per issuer
    # only, so the valid current pair must still be loaded at charon's start.
    charon = _Recording()
    with CaLifeStore(gw.paths, "gw1").update() as st:
        st.revoked = [{"serial": f"{gw.cert.serial_number:x}", "reason": "superseded",
                       "time": "2026-01-01T00:00:00+00:00", "current": False,
                       "issuer": "CN=Old CA,O=elsewhere"}]
    note = charon_start(gw.paths, charon)  # type: ignore[arg-type]
    assert charon.sessions == [["gw1"]], note
    with CaLifeStore(gw.paths, "gw1").update() as st:
        st.revoked[0]["issuer"] = gw.cert.issuer.rfc4514_string()
    note = charon_start(gw.paths, charon)  # type: ignore[arg-type]
    assert charon.sessions[-1] == [] and "was revoked by swcmp" in note


def test_hook_that_finishes_a_commit_queues_the_superseded_revocation(
        tmp_path: Path) -> None:
    # A renewal killed after the CA confirmed its certificate is finished by the hook when
    # charon restarts; with --revoke-superseded the replaced certificate's revocation is
    # queued for the next pass (the hook itself never asks the CA).
    from swcmp.cmp import keys
    from swcmp.store import Journal

    pki = make_pki(tmp_path / "pki")
    gw = make_gateway(tmp_path / "gw", pki, "http://127.0.0.1:9/", revoke_superseded=True)
    old = gw.cert
    j = Journal(gw.paths, "gw1")
    new_key = keys.generate_key("ecdsa:p256")
    j.stage_key(new_key)
    new = pki.issue(new_key, serial=old.serial_number + 1)
    j.stage_cert(new, [])
    j.write(phase="confirmed", old_serial=f"{old.serial_number:x}", regenerate=True)
    charon = LoadingCharon()
    note = charon_start(gw.paths, charon)  # type: ignore[arg-type]
    assert "finished interrupted renewals of gw1" in note and gw.cert == new
    pending = CaLifeStore(gw.paths, "gw1").load().pending_revocations
    assert [p["serial"] for p in pending] == [f"{old.serial_number:x}"]
    assert pending[0]["reason"] == 4  # superseded
