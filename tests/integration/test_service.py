"""Renewal passes and the serve loop: due/not due, standby, dry run, backoff, metrics, hooks."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from openssl_mock import OPENSSL, mock_server
from pki import TestPKI, make_pki, pem_cert
from renewal_env import Gateway, make_gateway
from swcmp.service import HostConfig, RenewalService, Server
from swcmp.state import StateStore

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")]

SIG_ARGS = ["-srv_cert", "srv.crt", "-srv_key", "srv.key", "-srv_trusted", "root.crt"]
NOW = dt.datetime.now(dt.UTC)


def _gateway(tmp: Path, *, due: bool) -> Iterator[tuple[TestPKI, Gateway]]:
    pki = make_pki(tmp / "pki")
    if due:  # two hours of validity, one gone: past 50% remaining, so due
        pki.gw = pki.issue(pki.gw_key, not_before=NOW - dt.timedelta(hours=1), days=2 / 24)
    # the renewal the mock hands out starts now: a renewal must not be older than the
    # certificate it replaces (pki's default start is when pki.py was imported, which in
    # a whole test run is seconds before this module's NOW)
    pki.write("rsp.crt", pem_cert(pki.issue(pki.gw_key, serial=pki.gw.serial_number,
                                            not_before=NOW)))
    with mock_server([*SIG_ARGS, "-rsp_cert", "rsp.crt"], cwd=pki.dir) as url:
        yield pki, make_gateway(tmp / "gw", pki, url)


@pytest.fixture
def due(tmp_path: Path) -> Iterator[tuple[TestPKI, Gateway]]:
    yield from _gateway(tmp_path, due=True)


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[TestPKI, Gateway]]:
    yield from _gateway(tmp_path, due=False)


def kur_sent(gw: Gateway) -> int:
    return StateStore(gw.paths).load("gw1").stats["kur"]["sent"]


def test_not_due_is_skipped_and_force_renews(fresh: tuple[TestPKI, Gateway]) -> None:
    pki, gw = fresh
    svc = RenewalService(gw.paths)
    (r,) = svc.run_pass()
    assert r.result == "skipped" and "next renewal" in r.message and kur_sent(gw) == 0
    (r,) = svc.run_pass(force=True)
    assert r.result == "renewed" and kur_sent(gw) == 1
    assert gw.cert != pki.gw and gw.pair_matches()


def test_due_is_renewed_and_dry_run_contacts_nothing(due: tuple[TestPKI, Gateway]) -> None:
    pki, gw = due
    svc = RenewalService(gw.paths)
    (r,) = svc.run_pass(dry_run=True)
    assert r.result == "dry-run" and kur_sent(gw) == 0 and gw.cert == pki.gw
    (r,) = svc.run_pass()
    assert r.result == "renewed"
    st = StateStore(gw.paths).load("gw1")
    assert st.state == "idle" and st.last_result and st.last_result.ok


def test_standby_requests_nothing(due: tuple[TestPKI, Gateway], tmp_path: Path) -> None:
    _, gw = due
    role = tmp_path / "role"
    role.write_text("BACKUP\n")
    svc = RenewalService(gw.paths, host=HostConfig(role_file=role))
    (r,) = svc.run_pass()
    assert r.result == "standby" and "skipped: standby" in r.message and kur_sent(gw) == 0
    assert StateStore(gw.paths).load("gw1").state == "standby"
    role.write_text("MASTER\n")
    (r,) = svc.run_pass()
    assert r.result == "renewed"


def test_failure_backs_off(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    pki.gw = pki.issue(pki.gw_key, not_before=NOW - dt.timedelta(hours=1), days=2 / 24)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    gw = make_gateway(tmp_path / "gw", pki, f"http://127.0.0.1:{port}/")
    svc = RenewalService(gw.paths)
    (r,) = svc.run_pass()
    assert r.result == "failed" and "cannot connect" in r.message
    st = StateStore(gw.paths).load("gw1")
    assert st.failures == 1 and st.state == "failed" and st.next_attempt
    (r,) = svc.run_pass()  # within the backoff: no new attempt
    assert r.result == "skipped" and "retrying after" in r.message
    assert gw.cert == pki.gw and gw.pair_matches()


def test_metrics_and_hooks(due: tuple[TestPKI, Gateway], tmp_path: Path) -> None:
    _, gw = due
    out = tmp_path / "hook.out"
    metrics = tmp_path / "swcmp.prom"
    host = HostConfig(post_renew=(f'echo "$SWCMP_SESSION $SWCMP_SERIAL" > {out}',),
                      metrics_file=metrics)
    (r,) = RenewalService(gw.paths, host=host).run_pass()
    assert r.result == "renewed"
    assert out.read_text().split() == ["gw1", f"{gw.cert.serial_number:x}"]
    text = metrics.read_text()
    for m in ("swcmp_certificate_not_after_timestamp_seconds",
              "swcmp_next_renewal_timestamp_seconds", "swcmp_last_success_timestamp_seconds",
              "swcmp_last_result_success", "swcmp_consecutive_failures"):
        assert f'{m}{{session="gw1"}}' in text
    assert 'swcmp_last_result_success{session="gw1"} 1' in text


def test_host_config_file(tmp_path: Path) -> None:
    from swcmp.errors import ConfigError
    from swcmp.paths import Paths

    paths = Paths(tmp_path, tmp_path / "var", tmp_path / "sw")
    assert HostConfig.load(paths) == HostConfig()
    (tmp_path / "swcmp.toml").write_text(
        '[ha]\nrole_file = "/run/r"\n[hooks]\npost_renew = ["x"]\n')
    assert HostConfig.load(paths) == HostConfig(role_file=Path("/run/r"), post_renew=("x",))
    (tmp_path / "swcmp.toml").write_text("[ha\n")
    with pytest.raises(ConfigError, match=r"swcmp\.toml"):
        HostConfig.load(paths)


def test_serve_renews_when_due(due: tuple[TestPKI, Gateway]) -> None:
    pki, gw = due
    server = Server(RenewalService(gw.paths), rescan=0.2)
    server.run(once_until=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2))
    assert gw.cert != pki.gw and kur_sent(gw) == 1  # renewed once, not again


def test_serve_refreshes_metrics_while_idle(fresh: tuple[TestPKI, Gateway], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import swcmp.service.serve

    _, gw = fresh
    metrics = tmp_path / "swcmp.prom"
    role = tmp_path / "role"
    role.write_text("MASTER\n")
    (gw.paths.config_dir / "swcmp.toml").write_text(
        f'[metrics]\ntextfile = "{metrics}"\n[ha]\nrole_file = "{role}"\n')
    monkeypatch.setattr(swcmp.service.serve, "REFRESH", 0.3)
    server = Server(RenewalService(gw.paths), rescan=0.1)
    until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=4)
    thread = threading.Thread(target=server.run, kwargs={"once_until": until})
    thread.start()
    try:
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
        while not metrics.exists() and dt.datetime.now(dt.UTC) < deadline:
            threading.Event().wait(0.05)
        assert "swcmp_ha_standby 0" in metrics.read_text()
        # nothing is due and nothing changes (no pass): the refresh writes the file again
        metrics.unlink()
        while not metrics.exists() and dt.datetime.now(dt.UTC) < until:
            threading.Event().wait(0.05)
        assert "swcmp_ha_standby 0" in metrics.read_text()
    finally:
        server.stopping.set()
        server.wake.set()
        thread.join(10)
    assert kur_sent(gw) == 0
