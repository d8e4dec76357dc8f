"""Prometheus metrics: names and values after real renewals against the test CA, parsed with
the Prometheus client's own parser, and served by a real node_exporter (textfile collector)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from swcmp.cmp import certs
from swcmp.errors import CMPErrorResponse, ConnectError, SwcmpError
from swcmp.ha import Role
from swcmp.metrics import failure_key
from swcmp.service import HostConfig, RenewalService
from testca_site import CAHolder, Site, add_session, ca_config, make_site

pytestmark = pytest.mark.integration

NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = float(s.value)
    return out


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


@pytest.fixture
def enrolled(tmp_path: Path) -> Iterator[tuple[Site, CAHolder]]:
    """Session gw1 enrolled (IR) at a running test CA."""
    ca = CAHolder(tmp_path / "ca", ca_config())
    try:
        site = make_site(tmp_path / "gw")
        add_session(site, ca.ca)
        yield site, ca
    finally:
        ca.stop()


def test_metrics_after_success_and_refusals(enrolled: tuple[Site, CAHolder],
        tmp_path: Path) -> None:
    site, ca = enrolled
    prom = tmp_path / "textfile" / "swcmp.prom"
    svc = RenewalService(site.paths, host=HostConfig(metrics_file=prom))
    (r,) = svc.run_pass(force=True)
    assert r.result == "renewed"
    ca.restart(ca_config(reject=("badCertId",)))
    for _ in range(2):
        (r,) = svc.run_pass(force=True)
        assert r.result == "failed" and "badCertId" in r.message
    text = prom.read_text()
    found = samples(text)
    cert = site.cert()
    gw = {"session": "gw1"}
    assert value(found, "swcmp_certificate_not_after_timestamp_seconds", **gw) == \
        int(cert.not_valid_after_utc.timestamp())
    assert value(found, "swcmp_certificate_not_before_timestamp_seconds", **gw) == \
        int(cert.not_valid_before_utc.timestamp())
    assert value(found, "swcmp_renewals_total", **gw, result="success") == 1
    assert value(found, "swcmp_renewals_total", **gw, result="failure") == 2
    assert value(found, "swcmp_renewal_failures_total", **gw, error="ca_refused",
                 fail_info="badCertId") == 2
    assert value(found, "swcmp_consecutive_failures", **gw) == 2
    assert value(found, "swcmp_last_result_success", **gw) == 0
    success = value(found, "swcmp_last_success_timestamp_seconds", **gw)
    assert success is not None and abs(success - time.time()) < 120
    assert value(found, "swcmp_next_renewal_timestamp_seconds", **gw) is not None
    assert value(found, "swcmp_session_state", **gw, state="failed") == 1
    assert value(found, "swcmp_session_state", **gw, state="idle") == 0
    assert value(found, "swcmp_auto_update_enabled", **gw) == 1
    ca_cert = ca.ca.ca_cert
    assert value(found, "swcmp_ca_certificate_not_after_timestamp_seconds", **gw,
                 subject=ca_cert.subject.rfc4514_string(),
                 serial=f"{ca_cert.serial_number:x}") == \
        int(ca_cert.not_valid_after_utc.timestamp())
    # no charon asked, no HA role source: those families are left out, not zero
    assert "swcmp_charon" not in text and "swcmp_ha_" not in text
    # the conventions: counters end in _total, times are _timestamp_seconds
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples)
        assert "expiry" not in family.name
    # the old, unit-less names are gone
    assert "swcmp_certificate_expiry_seconds" not in text
    # written atomically: no temporary file is left beside it
    assert [p.name for p in prom.parent.iterdir()] == ["swcmp.prom"]


def test_unreadable_role_source_is_standby_in_metrics(enrolled: tuple[Site, CAHolder],
        tmp_path: Path) -> None:
    site, _ = enrolled
    prom = tmp_path / "swcmp.prom"
    role_file = tmp_path / "no-such-dir" / "role"
    svc = RenewalService(site.paths, host=HostConfig(metrics_file=prom, role_file=role_file))
    (r,) = svc.run_pass(force=True)
    assert r.result == "standby" and "unreadable" in r.message
    found = samples(prom.read_text())
    assert value(found, "swcmp_ha_standby") == 1
    assert value(found, "swcmp_ha_role_source_ok") == 0
    assert value(found, "swcmp_ha_role_info", role="unknown") == 1
    assert value(found, "swcmp_session_state", session="gw1", state="standby") == 1
    role_file.parent.mkdir()
    role_file.write_text("MASTER\n")
    (r,) = svc.run_pass(force=True)
    assert r.result == "renewed"
    found = samples(prom.read_text())
    assert value(found, "swcmp_ha_standby") == 0
    assert value(found, "swcmp_ha_role_info", role="MASTER") == 1


def test_failure_keys() -> None:
    assert failure_key(CMPErrorResponse(status="rejection", fail_info=("badPOP", "badAlg"))) \
        == "ca_refused:badPOP,badAlg"
    assert failure_key(ConnectError("refused", url="http://x/")) == "transport:"
    assert failure_key(SwcmpError("x")) == "other:"
    assert failure_key(ValueError("x")) == "other:"


def test_failure_keys_are_bounded() -> None:
    from swcmp.state import MAX_FAILURE_KEYS, SessionState

    st = SessionState()
    for i in range(MAX_FAILURE_KEYS + 10):
        st.count_renewal(f"ca_refused:bit{i}")
    assert len(st.renewal_failures) == MAX_FAILURE_KEYS  # the overflow is "other:"
    assert st.renewal_failures["other:"] == 11
    assert SessionState.from_json(st.to_json()).renewal_failures == st.renewal_failures


def test_role_words() -> None:
    from swcmp.ha import read_role

    assert read_role() == Role(None, False)
    assert read_role(role_command="echo master").standby is False
    assert read_role(role_command="echo BACKUP").standby is True
    stop = read_role(role_command="printf 'STOP\\n'")
    assert stop.standby and not stop.problem
    odd = read_role(role_command="echo WHATEVER")
    assert odd.standby and "unknown role" in odd.problem
    failing = read_role(role_command="exit 3")
    assert failing.standby and "exited 3" in failing.problem
    empty = read_role(role_command="true")
    assert empty.standby and "empty" in empty.problem


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(NODE_EXPORTER is None, reason="prometheus-node-exporter is not installed "
                    "(scripts/test installs it)")
def test_node_exporter_serves_the_textfile(enrolled: tuple[Site, CAHolder],
        tmp_path: Path) -> None:
    assert NODE_EXPORTER is not None
    site, _ = enrolled
    directory = tmp_path / "textfile"
    svc = RenewalService(site.paths, host=HostConfig(metrics_file=directory / "swcmp.prom"))
    svc.run_pass(force=True)
    port = _free_port()
    proc = subprocess.Popen(
        [NODE_EXPORTER, "--collector.disable-defaults", "--collector.textfile",
         f"--collector.textfile.directory={directory}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    body = r.read().decode()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(10)
    found = samples(body)
    # node_exporter parsed the file without complaint ...
    assert value(found, "node_textfile_scrape_error") == 0
    assert any(name == "node_textfile_mtime_seconds" for name, _ in found)
    # ... and serves swcmp's metrics with their values
    cert = site.cert()
    assert value(found, "swcmp_certificate_not_after_timestamp_seconds", session="gw1") == \
        int(cert.not_valid_after_utc.timestamp())
    assert value(found, "swcmp_renewals_total", session="gw1", result="success") == 1
    assert datetime.fromtimestamp(
        value(found, "swcmp_last_success_timestamp_seconds", session="gw1") or 0).year >= 2025
    assert certs.describe(cert)  # the certificate on disk is the one the metrics describe


def test_a_broken_session_file_keeps_a_series_that_says_so(enrolled: tuple[Site, CAHolder],
                                                           tmp_path: Path) -> None:
    site, _ = enrolled
    prom = tmp_path / "swcmp.prom"
    svc = RenewalService(site.paths, host=HostConfig(metrics_file=prom))
    svc.run_pass()
    found = samples(prom.read_text())
    assert value(found, "swcmp_session_readable", session="gw1") == 1
    assert value(found, "swcmp_certificate_not_after_timestamp_seconds", session="gw1")
    # one broken character: the session is a failure of the pass, and its series stays
    toml = site.store.path_for("gw1")
    toml.write_text(toml.read_text().replace("expire_time = 50", "expire_time = 5O", 1))
    reports = svc.run_pass()
    assert [(r.session, r.result) for r in reports] == [("gw1", "failed")]
    assert "broken" in reports[0].message
    found = samples(prom.read_text())
    assert value(found, "swcmp_session_readable", session="gw1") == 0
    assert value(found, "swcmp_certificate_not_after_timestamp_seconds", session="gw1") is None


def test_an_unreadable_certificate_leaves_the_series_its_alert_reads(
        enrolled: tuple[Site, CAHolder], tmp_path: Path) -> None:
    # the session file reads, but its certificate file does not parse: the pass fails
    # the session (needs_ir) and no certificate series is left, so neither expiry alert
    # can fire; SwcmpSessionNeedsInitialRequest reads exactly these series
    site, _ = enrolled
    prom = tmp_path / "swcmp.prom"
    svc = RenewalService(site.paths, host=HostConfig(metrics_file=prom))
    svc.run_pass()
    site.paths.cert_file("gw1").write_bytes(b"-----BEGIN CERTIFICATE-----\nbroken\n")
    reports = svc.run_pass()
    assert [(r.session, r.result) for r in reports] == [("gw1", "failed")]
    found = samples(prom.read_text())
    assert value(found, "swcmp_certificate_not_after_timestamp_seconds", session="gw1") is None
    assert value(found, "swcmp_session_state", session="gw1", state="needs_ir") == 1
    assert value(found, "swcmp_auto_update_enabled", session="gw1") == 1
