"""The staged renewal against `openssl cmp -port`, including kill -9 at every step.

The 3.0 mock returns one fixed certificate, so these runs re-certify the same
key (the mock's KUR also needs the old issuer and serial); renewals with a new
key are tested against swcmp's own test CA.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from openssl_mock import OPENSSL, mock_server
from pki import TestPKI, make_pki, pem_cert
from renewal_env import Gateway, make_gateway, renew_killed_at
from swcmp.renewal import Renewer
from swcmp.state import StateStore
from swcmp.store import Journal

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")]

SIG_ARGS = ["-srv_cert", "srv.crt", "-srv_key", "srv.key", "-srv_trusted", "root.crt"]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[TestPKI, Gateway, object]]:
    pki = make_pki(tmp_path / "pki")
    renewed = pki.issue(pki.gw_key, serial=pki.gw.serial_number, days=400)
    pki.write("rsp.crt", pem_cert(renewed))
    with mock_server([*SIG_ARGS, "-rsp_cert", "rsp.crt"], cwd=pki.dir) as url:
        yield pki, make_gateway(tmp_path / "gw", pki, url), renewed


def test_renewal_same_key(setup: tuple[TestPKI, Gateway, object]) -> None:
    _pki, gw, renewed = setup
    out = Renewer(gw.paths).renew(gw.session)
    assert gw.cert == renewed and gw.pair_matches()
    assert out.serial == f"{renewed.serial_number:x}"  # type: ignore[attr-defined]
    j = Journal(gw.paths, "gw1")
    assert j.load() is None and not j.cert_file.exists()
    assert len(list(j.archive.glob("*.crt"))) == 1  # the previous pair, for rollback
    assert oct(gw.paths.key_file("gw1").stat().st_mode & 0o777) == "0o600"
    stats = StateStore(gw.paths).load("gw1").stats
    assert stats["kur"] == {"sent": 1, "received": 1, "failed": 0}
    assert stats["certConf"]["sent"] == 1


def test_second_concurrent_run_is_refused(setup: tuple[TestPKI, Gateway, object]) -> None:
    from swcmp import fsutil
    from swcmp.errors import LockHeldError

    _, gw, _ = setup
    gw.paths.lock_dir.mkdir(parents=True, exist_ok=True)
    with fsutil.exclusive_lock(gw.paths.lock_dir, "gw1"), \
            pytest.raises(LockHeldError, match="another swcmp run"):
        Renewer(gw.paths).renew(gw.session)
    assert gw.cert != setup[2] and gw.pair_matches()




@pytest.mark.parametrize(("phase", "kur_after"), [
    ("sending", 1),       # killed before the KUR left: the next run sends one
    # certificate received (journaled), or staged; certConf not sent: swcmp confirms
    # late in the old transaction. swcmp opens a connection per message, so the kill
    # does not cut the mock's connection mid-transaction and the 3.0 mock takes the
    # late certConf: no second KUR (when a CA refuses it, a new KUR follows)
    ("received", 0),
    ("staged", 0),
    ("confirmed", 0),     # confirmed: only the commit is left
    ("committing", 0),
    ("key-written", 0),   # killed after the new key went in beside the old one
    ("cert-written", 0),  # killed after the certificate, before the key's rename
])
def test_kill_9_at_each_step_then_recover(setup: tuple[TestPKI, Gateway, object],
                                          phase: str, kur_after: int) -> None:
    _, gw, renewed = setup
    root = gw.paths.config_dir.parent
    renew_killed_at(root, phase)
    # whatever happened, storage holds a matching, valid pair
    assert gw.pair_matches()
    assert Journal(gw.paths, "gw1").load() is not None
    before = StateStore(gw.paths).load("gw1").stats["kur"]["sent"]
    Renewer(gw.paths).renew(gw.session)
    after = StateStore(gw.paths).load("gw1").stats["kur"]["sent"]
    assert after - before == kur_after
    assert gw.cert == renewed and gw.pair_matches()
    assert Journal(gw.paths, "gw1").load() is None


@pytest.mark.parametrize("phase", ["waiting", "confirm-waiting"])
def test_kill_9_while_the_ca_delays_resumes_the_same_transaction(
        tmp_path: Path, phase: str) -> None:
    """OpenSSL 3.5's mock delays the kup and then the pkiConf (RFC 9483 4.4); a run
    killed while waiting for either is finished by the next one in the same transaction:
    no second KUR, no second certConf, the same certificate confirmed."""
    from openssl_mock import OpenSSL

    pki = make_pki(tmp_path / "pki")
    renewed = pki.issue(pki.gw_key, serial=pki.gw.serial_number, days=400)
    pki.write("rsp.crt", pem_cert(renewed))
    args = [*SIG_ARGS, "-rsp_cert", "rsp.crt", "-poll_count", "1", "-check_after", "1"]
    with mock_server(args, cwd=pki.dir, openssl=OpenSSL.of("3.5")) as url:
        gw = make_gateway(tmp_path / "gw", pki, url)
        root = gw.paths.config_dir.parent
        renew_killed_at(root, phase)
        entry = Journal(gw.paths, "gw1").load()
        assert entry is not None and entry.kind == "kur"
        assert (entry.phase, entry.confirm_nonce is not None) == (
            ("waiting", False) if phase == "waiting" else ("received", True))
        assert gw.cert == pki.gw and gw.pair_matches()
        Renewer(gw.paths, sleep=lambda s: None).renew(gw.session)
    stats = StateStore(gw.paths).load("gw1").stats
    assert stats["kur"]["sent"] == 0  # the killed run's KUR is not counted; none new
    assert stats["certConf"]["sent"] == (1 if phase == "waiting" else 0)
    assert stats["pollReq"]["sent"] >= 1
    assert gw.cert == renewed and gw.pair_matches()
    assert Journal(gw.paths, "gw1").load() is None


def test_ca_down_leaves_pair_and_reports(tmp_path: Path) -> None:
    import socket

    from swcmp.errors import ConnectError

    pki = make_pki(tmp_path / "pki")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    gw = make_gateway(tmp_path / "gw", pki, f"http://127.0.0.1:{port}/pkix/")
    with pytest.raises(ConnectError):
        Renewer(gw.paths).renew(gw.session)
    assert gw.cert == pki.gw and gw.pair_matches()


def test_ca_rejects(tmp_path: Path) -> None:
    from swcmp.errors import CMPErrorResponse

    pki = make_pki(tmp_path / "pki")
    pki.write("rsp.crt", pem_cert(pki.issue(pki.gw_key, serial=pki.gw.serial_number)))
    args = [*SIG_ARGS, "-rsp_cert", "rsp.crt", "-pkistatus", "2", "-failure", "23"]
    with mock_server(args, cwd=pki.dir) as url:
        gw = make_gateway(tmp_path / "gw", pki, url)
        with pytest.raises(CMPErrorResponse, match="notAuthorized"):
            Renewer(gw.paths).renew(gw.session)
    assert gw.cert == pki.gw and gw.pair_matches()
    assert StateStore(gw.paths).load("gw1").stats["kur"]["failed"] == 1


def test_disk_full_while_staging_rejects_and_keeps_pair(
        setup: tuple[TestPKI, Gateway, object], monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from swcmp import fsutil
    from swcmp.errors import StorageError

    _, gw, _ = setup
    real = fsutil.atomic_write

    def full(path: Path, data: bytes, **kw: object) -> None:
        if "staging" in str(path) and path.name == "new.crt":
            raise fsutil.storage_error(OSError(errno.ENOSPC, "No space left on device"),
                                       path, "write")
        real(path, data, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(fsutil, "atomic_write", full)
    with pytest.raises(StorageError, match="space"):
        Renewer(gw.paths).renew(gw.session)
    monkeypatch.setattr(fsutil, "atomic_write", real)
    assert gw.cert != setup[2] and gw.pair_matches()
    # the CA was told in certConf that the certificate is not used
    assert StateStore(gw.paths).load("gw1").stats["certConf"]["sent"] == 1




def test_ca_unreachable_while_resuming_a_delayed_confirmation_keeps_the_transaction(
        tmp_path: Path) -> None:
    """A run killed while the CA delayed its pkiConf left a certificate the CA issued and
    a certConf the CA holds. If the next run cannot reach the CA (or gets an answer that
    is not the CA's), it must keep that transaction for the run after: not drop it and
    send a new KUR, which asks for a second certificate and loses the journaled one."""
    from openssl_mock import OpenSSL
    from swcmp.errors import SwcmpError

    pki = make_pki(tmp_path / "pki")
    renewed = pki.issue(pki.gw_key, serial=pki.gw.serial_number, days=400)
    pki.write("rsp.crt", pem_cert(renewed))
    args = [*SIG_ARGS, "-rsp_cert", "rsp.crt", "-poll_count", "1", "-check_after", "1"]
    with mock_server(args, cwd=pki.dir, openssl=OpenSSL.of("3.5")) as url:
        gw = make_gateway(tmp_path / "gw", pki, url)
        root = gw.paths.config_dir.parent
        renew_killed_at(root, "confirm-waiting")
    before = Journal(gw.paths, "gw1").load()
    assert before is not None and before.confirm_nonce is not None
    # the mock is gone: the CA cannot be reached
    with pytest.raises(SwcmpError):
        Renewer(gw.paths, sleep=lambda s: None).renew(gw.session)
    after = Journal(gw.paths, "gw1").load()
    assert after is not None
    assert (after.phase, after.transaction_id, after.confirm_nonce, after.cert) == (
        "received", before.transaction_id, before.confirm_nonce, before.cert)
    assert Journal(gw.paths, "gw1").cert_file.exists()
    assert StateStore(gw.paths).load("gw1").stats.get("kur", {}).get("sent", 0) == 0
    assert gw.cert == pki.gw and gw.pair_matches()
