"""A damaged file of one session is that session's failure, never the process's.

Three sessions at the embedded test CA: ``good`` is due; ``typo`` has one broken
character in its session file; ``damaged`` has a state.json whose next_attempt is not
a time. `swcmp renew --due` (serve's pass) renews ``good``, reports the others, and
exits 1; `swcmp status` shows every one without a traceback and exits 1 for the
broken session file.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from swcmp.state import StateStore
from testca_site import (
    DUE_NOW,
    CAHolder,
    Site,
    add_session,
    ca_config,
    enroll_aside,
    make_site,
    swcmp_cmd,
    wait_past_floor,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def ca(tmp_path: Path) -> Iterator[CAHolder]:
    holder = CAHolder(tmp_path / "ca", ca_config(validity=timedelta(hours=1)))
    try:
        yield holder
    finally:
        holder.stop()


def _cli(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(swcmp_cmd(site, *args), capture_output=True, text=True, timeout=120,
                         check=False)
    assert "Traceback" not in res.stderr, res.stderr
    return res


def test_one_sessions_damaged_files_do_not_stop_the_others(tmp_path: Path,
                                                           ca: CAHolder) -> None:
    site = make_site(tmp_path / "gw")
    add_session(site, ca.ca, "typo")
    add_session(site, ca.ca, "damaged")
    enroll_aside(site, ca, "good", validity=DUE_NOW)
    wait_past_floor(site, "good")
    before = site.cert("good").serial_number
    # one broken character in a session file
    toml = site.store.path_for("typo")
    toml.write_text(toml.read_text().replace("expire_time = 50", "expire_time = 5O", 1))
    # a state file whose next retry is not a time
    state = StateStore(site.paths).path("damaged")
    data = json.loads(state.read_text())
    data["next_attempt"] = "soon"
    state.write_text(json.dumps(data))

    renew = _cli(site, "--json", "renew", "--due")
    assert renew.returncode == 1, renew.stdout + renew.stderr
    results = {r["session"]: r for r in json.loads(renew.stdout)["results"]}
    assert results["good"]["result"] == "renewed", results
    assert site.cert("good").serial_number != before
    assert results["typo"]["result"] == "failed" and "broken" in results["typo"]["message"]
    assert results["damaged"]["result"] == "skipped", results  # not due: a fresh hour-long one

    status = _cli(site, "--json", "status")
    assert status.returncode == 1
    out = json.loads(status.stdout)
    assert {s["session"] for s in out["sessions"]} == {"good", "damaged"}
    assert [Path(e["path"]).stem for e in out["errors"]] == ["typo"]
    text = _cli(site, "status")
    assert text.returncode == 1 and "typo" in text.stdout + text.stderr


def test_a_damaged_renewal_journal_is_a_failure_in_renew_status_and_metrics(
        tmp_path: Path, ca: CAHolder) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from swcmp.service import HostConfig, RenewalService
    from swcmp.store import Journal

    site = make_site(tmp_path / "gw")
    add_session(site, ca.ca, "calm")  # not due for a while
    enroll_aside(site, ca, "due", validity=DUE_NOW)
    wait_past_floor(site, "due")
    serials = {n: site.cert(n).serial_number for n in ("calm", "due")}
    for n in ("calm", "due"):  # cut short by a full disk, or edited by hand
        j = Journal(site.paths, n)
        j.dir.mkdir(parents=True, exist_ok=True)
        j.path.write_text('{"phase": "sending", "transaction_id": "zz"')

    status = _cli(site, "--json", "status")
    assert status.returncode == 1, status.stdout + status.stderr
    by_name = {s["session"]: s for s in json.loads(status.stdout)["sessions"]}
    for n in ("calm", "due"):
        assert by_name[n]["state"] == "failed" and by_name[n]["journal_damaged"], by_name[n]
        assert "journal" in by_name[n]["reason"] and "removing it" in by_name[n]["reason"]

    renew = _cli(site, "--json", "renew", "--due")
    assert renew.returncode == 1, renew.stdout + renew.stderr
    results = {r["session"]: r for r in json.loads(renew.stdout)["results"]}
    assert {n: r["result"] for n, r in results.items()} == {"calm": "failed", "due": "failed"}
    assert all("journal" in r["message"] for r in results.values())
    named = _cli(site, "renew", "calm")
    assert named.returncode == 1 and "journal" in named.stderr + named.stdout
    # nothing was lost: both pairs are the ones enrolled
    assert {n: site.cert(n).serial_number for n in serials} == serials

    prom = tmp_path / "swcmp.prom"
    svc = RenewalService(site.paths, host=HostConfig(metrics_file=prom))

    def series() -> dict[tuple[str, str, str], float]:
        return {(s.name, s.labels["session"], s.labels.get("state", "")): float(s.value)
                for f in text_string_to_metric_families(prom.read_text())
                for s in f.samples if s.name in ("swcmp_renewal_journal_damaged",
                                                 "swcmp_session_state")}

    svc.write_metrics()
    found = series()
    for n in ("calm", "due"):
        assert found[("swcmp_renewal_journal_damaged", n, "")] == 1
        assert found[("swcmp_session_state", n, "failed")] == 1
    # removed by the operator: the series stays, at 0, and status is clean again
    Journal(site.paths, "calm").path.unlink()
    svc.write_metrics()
    found = series()
    assert found[("swcmp_renewal_journal_damaged", "calm", "")] == 0
    assert found[("swcmp_renewal_journal_damaged", "due", "")] == 1
    calm = _cli(site, "--json", "status", "calm")
    assert calm.returncode == 0 and json.loads(calm.stdout)["sessions"][0]["state"] != "failed"
