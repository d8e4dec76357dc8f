"""`swcmp hook charon-start` waits for a renewal in progress before loading pairs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from pki import make_pki
from renewal_env import make_gateway
from swcmp import fsutil
from swcmp.deploy import DeployResult
from swcmp.start_hook import charon_start


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
