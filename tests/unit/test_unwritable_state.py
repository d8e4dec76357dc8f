"""A state that cannot be written (a full disk) still holds in the process that meant it:
a failure's backoff is kept, so serve does not ask a failing CA every pass."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from swcmp import fsutil
from swcmp.calife import CaLifeStore
from swcmp.calife.state import CURRENT_CRL
from swcmp.errors import SwcmpError
from swcmp.paths import Paths
from swcmp.state import StateStore

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "etc", tmp_path / "var", tmp_path / "swanctl")


@pytest.fixture
def disk_full(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """atomic_write fails as on a full file system while the flag is set."""
    full = [True]
    real = fsutil.atomic_write

    def write(path: Path, data: bytes, **kw: object) -> None:
        if full[0]:
            raise SwcmpError(f"cannot write {path}: No space left on device")
        real(path, data, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(fsutil, "atomic_write", write)
    return full


def test_a_failure_that_cannot_be_recorded_still_backs_off(tmp_path: Path,
                                                          disk_full: list[bool]) -> None:
    paths = _paths(tmp_path)
    states = StateStore(paths)
    with pytest.raises(SwcmpError, match="No space left"), states.update("gw1") as st:
        st.failures = 2
        st.next_attempt = (NOW + timedelta(minutes=2)).isoformat()
    assert states.unwritten("gw1")
    st = states.load("gw1")
    assert (st.failures, st.next_attempt) == (2, (NOW + timedelta(minutes=2)).isoformat())
    disk_full[0] = False  # space again: the next write lands on disk and the file counts
    with states.update("gw1") as st:
        st.failures += 1
    assert not states.unwritten("gw1")
    assert states.load("gw1").failures == 3
    assert '"failures": 3' in states.path("gw1").read_text()


def test_a_state_another_process_wrote_since_is_read_again(tmp_path: Path,
                                                          disk_full: list[bool]) -> None:
    # serve could not write gw1's failure; then space was freed and `swcmp renew gw1` (another
    # process) recorded a success: serve reads that, and never writes its old failures back
    paths = _paths(tmp_path)
    states = StateStore(paths)
    disk_full[0] = False
    with states.update("gw1") as st:
        st.failures = 0
    disk_full[0] = True
    with pytest.raises(SwcmpError), states.update("gw1") as st:
        st.failures = 5
    assert states.load("gw1").failures == 5
    states.path("gw1").write_text('{"failures": 0, "state": "idle"}\n')  # the other process
    assert not states.unwritten("gw1")
    assert states.load("gw1").failures == 0
    store = CaLifeStore(paths, "gw1")
    with pytest.raises(SwcmpError), store.update() as life:
        life.failed(CURRENT_CRL, NOW, None)
    assert store.load().backing_off(CURRENT_CRL, NOW)
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_text("{}\n")
    assert not store.load().backing_off(CURRENT_CRL, NOW)


def test_a_ca_life_failure_that_cannot_be_recorded_still_backs_off(
        tmp_path: Path, disk_full: list[bool]) -> None:
    store = CaLifeStore(_paths(tmp_path), "gw1")
    with pytest.raises(SwcmpError, match="No space left"), store.update() as st:
        st.failed(CURRENT_CRL, NOW, None)
    assert store.load().backing_off(CURRENT_CRL, NOW + timedelta(minutes=30))
    disk_full[0] = False
    with store.update() as st:
        st.answered(CURRENT_CRL)
    assert not store.load().backing_off(CURRENT_CRL, NOW + timedelta(minutes=30))
    assert store.path.exists()


def test_a_metrics_file_that_cannot_be_rewritten_says_when_it_was_written(
        tmp_path: Path, disk_full: list[bool]) -> None:
    # what SwcmpMetricsStale reads: the time of the last write, which a full disk leaves
    from swcmp.service import HostConfig, RenewalService

    prom = tmp_path / "textfile" / "swcmp.prom"
    now = [NOW]
    svc = RenewalService(_paths(tmp_path), clock=lambda: now[0],
                         host=HostConfig(metrics_file=prom))
    disk_full[0] = False
    svc.write_metrics()
    line = f"swcmp_metrics_written_timestamp_seconds {int(NOW.timestamp())}"
    assert line in prom.read_text().splitlines()
    disk_full[0] = True
    now[0] += timedelta(days=2)
    svc.write_metrics()  # logged, not raised: the old file stays, and says how old it is
    assert line in prom.read_text().splitlines()
    disk_full[0] = False
    svc.write_metrics()
    assert f"swcmp_metrics_written_timestamp_seconds {int(now[0].timestamp())}" in \
        prom.read_text().splitlines()


def test_serve_keeps_what_a_pass_could_not_write_for_its_next_pass(
        tmp_path: Path, disk_full: list[bool]) -> None:
    # serve runs each pass in a process of its own: the states a pass could not write come
    # back to serve, and the next pass's process starts with them, so the backoff holds
    import contextlib

    from swcmp.service import RenewalService, Server, SessionReport

    paths = _paths(tmp_path)
    seen = tmp_path / "seen"

    class Svc(RenewalService):
        def run_pass(self, *args: object, **kwargs: object) -> list[SessionReport]:
            states, life = StateStore(self.paths), CaLifeStore(self.paths, "gw1")
            with seen.open("a") as f:
                f.write(f"{states.load('gw1').failures} "
                        f"{life.load().backing_off(CURRENT_CRL, NOW)}\n")
            with contextlib.suppress(SwcmpError), states.update("gw1") as st:
                st.failures += 1
            with contextlib.suppress(SwcmpError), life.update() as cl:
                cl.failed(CURRENT_CRL, NOW, None)
            self.next_check = self.clock()  # the next pass 1 s later
            return []

    Server(Svc(paths), rescan=30).run(once_until=datetime.now(UTC) + timedelta(seconds=2.6))
    passes = seen.read_text().splitlines()
    assert passes[:3] == ["0 False", "1 True", "2 True"]
    assert not StateStore(paths).path("gw1").exists()  # nothing reached the disk
    # serve holds what the last pass meant to write
    assert StateStore(paths).load("gw1").failures == len(passes)
