"""serve's pass and other processes of the same host: the session lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from swcmp.paths import Paths
from swcmp.service.passes import RenewalService


def test_replaced_keys_are_collected_only_under_the_sessions_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A renewal of another process (holding the session's lock) may be retiring or
    # rolling back a pair: the pass leaves that session's key store alone until later.
    from swcmp import fsutil, keystore
    from swcmp.session import Session
    from swcmp.sessionfile import SessionStore

    paths = Paths(tmp_path / "etc", tmp_path / "var", tmp_path / "swanctl")
    SessionStore(paths.config_dir).save(Session(name="gw1", key="gw1"))  # type: ignore[arg-type]
    collected: list[str] = []

    class Store:
        def __init__(self, s: Session) -> None:
            self.name = s.name

        def collect(self, held: object, *, keep_serials: object = ()) -> list[str]:
            collected.append(self.name)
            return []

    monkeypatch.setattr(keystore, "open", lambda s, p: Store(s))
    service = RenewalService(paths)
    with fsutil.exclusive_lock(paths.lock_dir, "gw1", blocking=False):
        service.collect_replaced_keys()
    assert collected == []
    service.collect_replaced_keys()
    assert collected == ["gw1"]
