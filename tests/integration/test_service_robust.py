"""A renewal that raises something nobody foresaw: recorded as a failure, never fatal.

The safety net of issue 11 point 3, for bugs that no hostile answer is known to
trigger any more: the renewer is replaced by one that raises (a unit test; the
attacks that used to reach this point through the network are in
test_hostile_cli.py), and the service must log it (traceback at debug level),
count it as a failure with backoff, leave no session ``in_progress`` and go on
with the other sessions.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pki import make_pki
from renewal_env import make_gateway
from swcmp.enroll import Outcome
from swcmp.renewal import Renewer
from swcmp.service import RenewalService, Server, SessionReport
from swcmp.session import Session
from swcmp.state import StateStore


@dataclass
class Exploding(Renewer):
    """Raises ``error`` for session gw1; pretends to renew any other."""

    error: BaseException | None = None

    def renew(self, session: Session, *, regenerate: bool | None = None) -> Outcome:
        if session.name == "gw1":
            assert self.error is not None
            raise self.error
        return Outcome(session.name, "kur", True, "renewed (pretend)")


@dataclass
class Service(RenewalService):
    error: BaseException | None = None

    def renewer(self, s: Session) -> Renewer:
        return Exploding(self.paths, error=self.error)


@pytest.mark.parametrize("error", [RecursionError("maximum recursion depth exceeded"),
                                   OverflowError("date value out of range"),
                                   KeyError("x"), AssertionError("bug")],
                         ids=lambda e: type(e).__name__)
def test_an_unexpected_exception_is_a_recorded_failure(tmp_path: Path, error: BaseException,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    pki = make_pki(tmp_path / "pki")
    gw = make_gateway(tmp_path / "gw", pki, "http://127.0.0.1:9/")
    gw.paths.cert_file("gw2").write_bytes(gw.paths.cert_file("gw1").read_bytes())
    gw.paths.key_file("gw2").write_bytes(gw.paths.key_file("gw1").read_bytes())
    gw.store.create("gw2", {**gw.session.values(), "key": "gw2"})
    svc = Service(gw.paths, error=error)
    now = datetime.now(UTC)
    with caplog.at_level(logging.DEBUG, logger="swcmp"):
        reports = svc.run_pass(force=True)
    by_name = {r.session: r for r in reports}
    assert by_name["gw1"].result == "failed"
    assert f"internal error during the renewal: {type(error).__name__}" in by_name["gw1"].message
    assert by_name["gw2"].result == "renewed"  # the other session was not stopped
    st = StateStore(gw.paths).load("gw1")
    assert st.state == "failed" and st.failures == 1
    retry = datetime.fromisoformat(str(st.next_attempt))
    assert timedelta(seconds=50) < retry - now < timedelta(minutes=5)  # backoff's first step
    assert StateStore(gw.paths).load("gw2").state == "idle"
    # the traceback is in the debug log (what `serve -v` shows), the summary in the warning
    assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records)
    assert any(r.levelno >= logging.WARNING and "gw1: renewal failed" in r.getMessage()
               for r in caplog.records)


def test_serve_outlives_a_pass_that_raises(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    pki = make_pki(tmp_path / "pki")
    gw = make_gateway(tmp_path / "gw", pki, "http://127.0.0.1:9/")
    passes: list[int] = []

    class Flaky(RenewalService):
        def run_pass(self, *args: object, **kwargs: object) -> list:  # type: ignore[override]
            passes.append(1)
            if len(passes) == 1:
                raise MemoryError("the first pass ran out of memory")
            return []

    server = Server(Flaky(gw.paths), rescan=0.1, separate_passes=False)  # looks into it
    with caplog.at_level(logging.DEBUG, logger="swcmp"):
        server.wake.set()
        server.run(once_until=datetime.now(UTC) + timedelta(seconds=1.5))
    assert "renewal pass failed unexpectedly: MemoryError" in caplog.text
    assert len(passes) >= 2  # it went on serving


def test_a_damaged_journal_is_a_clear_storage_error(tmp_path: Path) -> None:
    """A journal edited by hand (or damaged) is refused by name, not a ValueError later."""
    from swcmp.errors import StorageError
    from swcmp.store import Journal

    pki = make_pki(tmp_path / "pki")
    gw = make_gateway(tmp_path / "gw", pki, "http://127.0.0.1:9/")
    j = Journal(gw.paths, "gw1")
    j.write(phase="waiting", kind="kur", transaction_id="zz-not-hex", server_nonce="00",
            cert_req_id=0)
    with pytest.raises(StorageError, match=r"journal .* is damaged: transaction_id") as ei:
        j.load()
    assert "removing it abandons" in ei.value.hint
    (r,) = RenewalService(gw.paths).run_pass(force=True)
    assert r.result == "failed" and "is damaged" in r.message
    assert StateStore(gw.paths).load("gw1").state == "failed"


# ---------------------------------------------------------------------- a pass's own process


def test_each_pass_runs_in_a_process_of_its_own(tmp_path: Path) -> None:
    """serve's passes run in child processes (what they import and allocate ends with
    them), and the time of the next look comes back from each."""
    pki = make_pki(tmp_path / "pki")
    gw = make_gateway(tmp_path / "gw", pki, "http://127.0.0.1:9/")
    pids = tmp_path / "pass-pids"
    here: list[int] = []

    class Recording(RenewalService):
        def run_pass(self, *args: object, **kwargs: object) -> list:  # type: ignore[override]
            with pids.open("a") as f:
                f.write(f"{os.getpid()}\n")
            here.append(1)
            self.next_check = self.clock()  # look again at once (serve waits 1 s at least)
            return []

    server = Server(Recording(gw.paths), rescan=30)
    server.run(once_until=datetime.now(UTC) + timedelta(seconds=2.6))
    seen = pids.read_text().split()
    assert str(os.getpid()) not in seen and len(set(seen)) == len(seen)
    assert here == []  # nothing of the pass stayed in serve's process
    assert len(seen) >= 2  # the next look, 1 s later, came back from the first pass


def test_a_pass_whose_process_dies_fails_that_pass_and_serve_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The pass's process killed in the middle of a renewal (SIGKILL, as the out-of-memory
    killer does): serve logs that pass's failure, records the renewal it had begun as that
    session's failed attempt, writes the metrics, and its next pass (PASS_RETRY later)
    renews every session, the interrupted one included."""
    import swcmp.service.serve as serve_mod

    pki = make_pki(tmp_path / "pki")
    gw = make_gateway(tmp_path / "gw", pki, "http://127.0.0.1:9/")
    gw.paths.cert_file("gw2").write_bytes(gw.paths.cert_file("gw1").read_bytes())
    gw.paths.key_file("gw2").write_bytes(gw.paths.key_file("gw1").read_bytes())
    gw.store.create("gw2", {**gw.session.values(), "key": "gw2"})
    metrics = tmp_path / "swcmp.prom"
    (gw.paths.config_dir / "swcmp.toml").write_text(f'[metrics]\ntextfile = "{metrics}"\n')
    killed = tmp_path / "killed"
    before_pass = tmp_path / "metrics-before-pass"

    class Killing(Renewer):
        def renew(self, session: Session, *, regenerate: bool | None = None) -> Outcome:
            if session.name == "gw1" and not killed.exists():
                killed.touch()
                os.kill(os.getpid(), signal.SIGKILL)
            return Outcome(session.name, "kur", True, "renewed (pretend)")

    class Svc(RenewalService):
        def renewer(self, s: Session) -> Renewer:
            return Killing(self.paths)

        def run_pass(self, names: Sequence[str] = (),  # type: ignore[override]
                     **kwargs: bool) -> list[SessionReport]:
            if metrics.exists() and not before_pass.exists():  # as the 2nd pass found it
                before_pass.write_text(metrics.read_text())
            return super().run_pass(names, due_only=True, force=True)

    monkeypatch.setattr(serve_mod, "PASS_RETRY", timedelta(seconds=1))
    server = Server(Svc(gw.paths), rescan=30)
    with caplog.at_level(logging.INFO, logger="swcmp"):
        server.run(once_until=datetime.now(UTC) + timedelta(seconds=3))
    assert killed.exists()
    assert "renewal pass failed: its process" in caplog.text
    assert "was killed by signal 9" in caplog.text
    # the dead pass wrote no metrics (it died first): serve recorded the renewal it
    # had begun as gw1's failed attempt and wrote them; gw2 had not been begun
    found = before_pass.read_text()
    assert 'swcmp_consecutive_failures{session="gw1"} 1' in found
    assert 'swcmp_consecutive_failures{session="gw2"} 0' in found
    assert "gw1: renewal failed: the process of serve's pass was killed by signal 9" \
        in caplog.text
    # the retry (PASS_RETRY later, no signal, no changed file) renewed both sessions
    for name in ("gw1", "gw2"):
        st = StateStore(gw.paths).load(name)
        assert st.state == "idle" and st.failures == 0, (name, st)
    assert 'swcmp_session_state{session="gw1",state="idle"} 1' in metrics.read_text()


def test_a_stuck_pass_is_killed_and_one_that_makes_progress_is_not(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass whose process begins no session's step for PASS_LIMIT (only a bug can: each
    step has its own bound) is killed; that is the pass's failure, and serve keeps
    serving. A pass that takes longer but begins a step now and then is left alone."""
    import swcmp.service.serve as serve_mod

    pki = make_pki(tmp_path / "pki")
    gw = make_gateway(tmp_path / "gw", pki, "http://127.0.0.1:9/")
    started = tmp_path / "started"
    finished = tmp_path / "finished"

    class Slow(RenewalService):
        def run_pass(self, *args: object, **kwargs: object) -> list:  # type: ignore[override]
            with started.open("a") as f:
                f.write(f"{os.getpid()}\n")
            if len(started.read_text().split()) == 1:
                time.sleep(60)  # the first pass hangs
            for _ in range(6):  # the others take 1.2 s, a step every 0.2 s
                self._step()
                time.sleep(0.2)
            finished.touch()
            return []

    monkeypatch.setattr(serve_mod, "PASS_LIMIT", 0.5)
    monkeypatch.setattr(serve_mod, "PASS_RETRY", timedelta(seconds=1))
    server = Server(Slow(gw.paths), rescan=30)
    t0 = time.monotonic()
    with caplog.at_level(logging.INFO, logger="swcmp"):
        server.run(once_until=datetime.now(UTC) + timedelta(seconds=2.5))
    assert time.monotonic() - t0 < 10  # not the 60 s the first pass would hang
    pids = started.read_text().split()
    assert len(pids) == 2  # the next pass came PASS_RETRY after the killed one
    assert "renewal pass stuck: no progress for 0 s" in caplog.text
    assert f"its process {pids[0]} was killed by signal 9" in caplog.text
    assert finished.exists()  # the second pass, 1.2 s with steps, was not killed
    assert f"its process {pids[1]} was killed" not in caplog.text
    for pid in pids:  # no pass process is left behind
        assert not Path(f"/proc/{pid}").exists()


def test_what_a_pass_starts_does_not_ignore_the_stop_signals(tmp_path: Path) -> None:
    """The pass's process leaves serve's SIGTERM, SIGINT and SIGHUP to serve (it goes on
    through them), but the programs it starts (the hooks, and what they start) must still
    obey them: an ignored signal stays ignored across exec, so systemd's stop would not
    reach a hook."""
    import subprocess

    pki = make_pki(tmp_path / "pki")
    gw = make_gateway(tmp_path / "gw", pki, "http://127.0.0.1:9/")
    seen = tmp_path / "sigign"

    class Starting(RenewalService):
        def run_pass(self, *args: object, **kwargs: object) -> list:  # type: ignore[override]
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                os.kill(os.getpid(), sig)  # as systemd's stop sends to the whole group
            status = subprocess.run(["cat", "/proc/self/status"], capture_output=True,
                                    text=True, check=True).stdout
            seen.write_text(status)
            return []

    def ignored(status: str) -> int:
        line = next(x for x in status.splitlines() if x.startswith("SigIgn:"))
        mask = 0
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            mask |= 1 << (sig - 1)
        return int(line.split()[1], 16) & mask

    server = Server(Starting(gw.paths), rescan=30)
    server.run(once_until=datetime.now(UTC) + timedelta(seconds=0.5))
    assert not server.stopping.is_set()  # the signals were the pass's process's only
    # as this process (pytest) has them: none ignored unless the test runner ignores it
    assert ignored(seen.read_text()) == ignored(Path("/proc/self/status").read_text())


def test_a_dead_pass_does_not_fail_a_renewal_another_run_just_finished(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a pass's process died, serve records each session left ``in_progress`` as a
    failed renewal, under the session's lock. A renewal by hand (``swcmp renew``) that
    held that lock when serve read the state and finished before serve got the lock
    left the session renewed: serve must not record a failure over it."""
    from collections.abc import Iterator
    from contextlib import contextmanager

    import swcmp.fsutil as fsutil_mod

    pki = make_pki(tmp_path / "pki")
    gw = make_gateway(tmp_path / "gw", pki, "http://127.0.0.1:9/")
    states = StateStore(gw.paths)
    with states.update("gw1") as st:
        st.state = "in_progress"  # the renewal by hand, holding gw1's lock
    real_lock = fsutil_mod.exclusive_lock

    @contextmanager
    def lock(lock_dir: Path, name: str, **kwargs: object) -> Iterator[None]:
        if name == "gw1":  # serve read the state; the renewal by hand ends now
            with states.update("gw1") as done:
                done.state = "idle"
                done.record("kur", True, "renewed by hand", now=datetime.now(UTC))
        with real_lock(lock_dir, name, **kwargs):  # type: ignore[arg-type]
            yield

    monkeypatch.setattr(fsutil_mod, "exclusive_lock", lock)
    assert Service(gw.paths).record_dead_pass("the pass's process died") == []
    st = StateStore(gw.paths).load("gw1")
    assert st.state == "idle" and st.failures == 0, st


def test_a_pass_that_writes_back_too_much_fails_and_serve_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass's process that writes back more than serve reads (_RESULT_MAX; a bug) fails
    that pass at once: serve reads up to the bound in time linear in it (bytes += would
    copy everything read for each 64 KiB chunk: minutes for the bound) and goes on."""
    import swcmp.service.serve as serve_mod

    pki = make_pki(tmp_path / "pki")
    gw = make_gateway(tmp_path / "gw", pki, "http://127.0.0.1:9/")
    passes = tmp_path / "passes"
    limit = 32 * 1024 * 1024

    class Flooding(RenewalService):
        def run_pass(self, *args: object, **kwargs: object) -> list:  # type: ignore[override]
            with passes.open("a") as f:
                f.write(f"{os.getpid()}\n")
            if len(passes.read_text().split()) == 1:  # the first pass's result is a flood
                monkeypatch.setattr(serve_mod.pickle, "dumps",
                                    lambda obj: b"x" * (2 * limit))
            return []

    monkeypatch.setattr(serve_mod, "_RESULT_MAX", limit)
    monkeypatch.setattr(serve_mod, "PASS_RETRY", timedelta(seconds=1))
    server = Server(Flooding(gw.paths), rescan=30)
    with caplog.at_level(logging.INFO, logger="swcmp"):
        server.run(once_until=datetime.now(UTC) + timedelta(seconds=6))
    pids = passes.read_text().split()
    # the retry, PASS_RETRY after the failed pass (bytes += took about 12 s for 32 MiB
    # here, so no retry came within the 6 s)
    assert len(pids) == 2, pids
    assert f"its process {pids[0]} exited with code 70 without a result" in caplog.text
    assert f"its process {pids[1]} exited" not in caplog.text


def test_a_pass_whose_result_serve_cannot_read_is_killed_and_reaped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """serve failing while it reads a pass's process (say MemoryError) kills and reaps
    that process, fails the pass and retries it: no pass left running, no zombie."""
    import swcmp.service.serve as serve_mod

    pki = make_pki(tmp_path / "pki")
    gw = make_gateway(tmp_path / "gw", pki, "http://127.0.0.1:9/")
    passes = tmp_path / "passes"
    parent = os.getpid()

    class Slow(RenewalService):
        def run_pass(self, *args: object, **kwargs: object) -> list:  # type: ignore[override]
            with passes.open("a") as f:
                f.write(f"{os.getpid()}\n")
            if len(passes.read_text().split()) == 1:
                assert self.on_step is not None
                self.on_step()  # something for serve to read while the pass goes on
                time.sleep(30)
            return []

    real_read = os.read
    failed: list[int] = []

    def read(fd: int, n: int) -> bytes:
        if os.getpid() == parent and not failed:
            failed.append(fd)
            raise MemoryError
        return real_read(fd, n)

    monkeypatch.setattr(serve_mod.os, "read", read)
    monkeypatch.setattr(serve_mod, "PASS_RETRY", timedelta(seconds=1))
    server = Server(Slow(gw.paths), rescan=30)
    with caplog.at_level(logging.INFO, logger="swcmp"):
        server.run(once_until=datetime.now(UTC) + timedelta(seconds=6))
    pids = passes.read_text().split()
    assert len(pids) == 2, pids  # the first killed at once, then the retry
    assert f"cannot read what its process {pids[0]} says: MemoryError" in caplog.text
    assert f"its process {pids[0]} was killed by signal 9" in caplog.text
    for pid in pids:  # every pass's process was reaped
        with pytest.raises(ChildProcessError):
            os.waitpid(int(pid), os.WNOHANG)
