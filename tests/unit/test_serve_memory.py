"""serve hands back the heap a pass freed (the RSS figures: bench/bench_renewal.py)."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from pathlib import Path

import pytest

from swcmp.paths import Paths
from swcmp.service import serve as serve_mod
from swcmp.service.passes import RenewalService


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_memory_is_given_back_on_glibc() -> None:
    assert serve_mod.give_back_freed_memory() is True


def test_serve_gives_memory_back_after_each_pass(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(serve_mod, "give_back_freed_memory", lambda: calls.append(1) or True)
    paths = Paths(tmp_path / "etc", tmp_path / "var", tmp_path / "swanctl")
    server = serve_mod.Server(RenewalService(paths), rescan=0.05)
    server.run(once_until=datetime.now(UTC))
    assert calls == [1]



def test_paths_built_during_a_pass_are_dropped_after_it(tmp_path: Path) -> None:
    from swcmp import paths as paths_mod
    from swcmp import sessionfile
    from swcmp.sessionfile import SessionStore

    paths = Paths(tmp_path / "etc", tmp_path / "var", tmp_path / "swanctl")
    assert paths.cert_file("gw1") is paths.cert_file("gw1")  # built once while a pass runs
    SessionStore(paths.config_dir).path_for("gw1")
    paths.session_state_dir("gw1")
    caches = (paths_mod._cert_file, paths_mod._session_state_dir, sessionfile._session_file)
    assert all(c.cache_info().currsize for c in caches)
    serve_mod.give_back_freed_memory()
    assert [c.cache_info().currsize for c in caches] == [0, 0, 0]
